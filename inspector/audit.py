"""Audit a CNN: dead and duplicate filters from the weights, silent channels and collapse from activations.

Weight level (no images needed), per conv layer:

- per-filter L1 and L2 norms of the filter's weights and its bias together;
- ``dead_filters``: weights and bias all exactly zero, or L2 norm below
  ``DEAD_NORM_RATIO`` (1e-3) times the layer's median filter L2 norm;
- near-duplicate pairs: cosine similarity of the flattened weights above
  ``DUPLICATE_COSINE`` (0.99), dead filters left out;
- ``near_zero_weight_fraction``: weights with ``|w| <= NEAR_ZERO_RATIO`` (1e-6)
  times the layer's largest ``|w|`` (exact zeros included).

Activation level (images given), streamed in batches, every layer's output
from ONE onnxruntime run per batch, float64 accumulators, memory flat in the
number of images:

- a channel does not fire on an image when its map's maximum is ``<= 0``:
  after a ReLU that is "all exactly zero", for signed outputs "never positive";
- ``dead_channels``: channels that fire on no image;
- per layer: mean and max activation, mean absolute activation, fraction of
  exact zeros, and per channel the zero fraction and the fraction of images
  on which it does not fire;
- collapse: the first layer whose zero fraction exceeds
  ``COLLAPSE_ZERO_FRACTION`` (0.99), or else the first layer from which the
  spread of the activations (the mean over channels of each channel's
  standard deviation over images and positions) stays below
  ``COLLAPSE_RATIO`` (1%) of the largest spread before it on every later
  layer: activations that die out carry no information any more, whatever
  a bias does to their mean, and a dip that recovers is not a collapse.
  Gates and global-context branches are left out of both rules, neither
  flagged nor used as the reference: layers whose activation is bounded
  (Sigmoid, HardSigmoid, Tanh, Softsign: attention gates, whose values sit
  in [0, 1] beside main-path activations in the tens) and layers whose maps
  are 1x1 (squeeze-and-excite and other pooled branches).

The dead fraction (``--fail-on-dead``) counts each filter once when it is a
dead filter, a dead channel, or both, over all filters of all conv layers.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import numpy as np

from .errors import InspectorError

SCHEMA_VERSION = "1"

DEAD_NORM_RATIO = 1e-3
DUPLICATE_COSINE = 0.99
DUPLICATE_EXAMPLES = 5
NEAR_ZERO_RATIO = 1e-6
COLLAPSE_RATIO = 0.01
COLLAPSE_ZERO_FRACTION = 0.99
# Bounded activations: the layer is a gate, not the main path (see collapse above).
GATE_ACTIVATIONS = frozenset({"Sigmoid", "HardSigmoid", "Tanh", "Softsign"})
DEFAULT_BATCH = 16
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")

# Activations whose output is never negative: the mean is already the mean magnitude.
NON_NEGATIVE_ACTIVATIONS = frozenset({"Relu", "Sigmoid", "HardSigmoid", "Softplus", "ThresholdedRelu"})

# Elements of one similarity block (rows x filters), so that wide layers stay small in memory.
_SIMILARITY_BLOCK = 1 << 22


# ----------------------------------------------------------------------------- weights

@dataclass
class WeightStats:
    """Weight-level statistics of one conv layer."""

    filters: int
    l1: np.ndarray  # (filters,) L1 norm of weights + bias
    l2: np.ndarray  # (filters,) L2 norm of weights + bias
    median_l2: float
    dead_filters: list[int]
    duplicate_pairs: int
    duplicate_examples: list[tuple[int, int, float]]  # (a, b, cosine), most similar first
    near_zero_weight_fraction: float

    def to_dict(self) -> dict:
        return {
            "filter_l1": [_number(v) for v in self.l1],
            "filter_l2": [_number(v) for v in self.l2],
            "median_filter_l2": _number(self.median_l2),
            "dead_filters": list(self.dead_filters),
            "near_duplicates": {
                "pairs": self.duplicate_pairs,
                "examples": [{"a": a, "b": b, "cosine": round(float(c), 6)} for a, b, c in self.duplicate_examples],
            },
            "near_zero_weight_fraction": _number(self.near_zero_weight_fraction),
        }


def weight_stats(weights: np.ndarray, bias: np.ndarray | None = None) -> WeightStats:
    """Statistics of one layer's filters: ``weights`` is (filters, ...), ``bias`` (filters,) or None."""
    weights = np.asarray(weights, dtype=np.float32)
    count = weights.shape[0] if weights.ndim else 0
    flat = weights.reshape(count, -1)
    with_bias = flat if bias is None else np.concatenate(
        [flat, np.asarray(bias, np.float32).reshape(count, 1)], axis=1)
    wide = with_bias.astype(np.float64)
    l1 = np.abs(wide).sum(axis=1)
    l2 = np.sqrt(np.square(wide).sum(axis=1))
    median = float(np.median(l2)) if count else 0.0
    all_zero = ~np.any(with_bias != 0, axis=1)
    dead = all_zero | (l2 < DEAD_NORM_RATIO * median)
    largest = float(np.max(np.abs(flat))) if flat.size else 0.0
    near_zero = float(np.mean(np.abs(flat) <= NEAR_ZERO_RATIO * largest)) if flat.size else 0.0
    pairs, examples = _near_duplicates(flat, keep=~dead)
    return WeightStats(count, l1, l2, median, [int(i) for i in np.flatnonzero(dead)], pairs, examples, near_zero)


def _near_duplicates(flat: np.ndarray, keep: np.ndarray) -> tuple[int, list[tuple[int, int, float]]]:
    """Pairs (a < b) of kept filters with cosine similarity above DUPLICATE_COSINE, by blocks of rows."""
    index = np.flatnonzero(keep)
    if len(index) < 2:
        return 0, []
    vectors = flat[index].astype(np.float32)
    norms = np.linalg.norm(vectors.astype(np.float64), axis=1)
    usable = np.isfinite(norms) & (norms > 0)  # NaN/inf weights (a broken model) have no direction
    index, vectors, norms = index[usable], vectors[usable], norms[usable]
    unit = (vectors / norms[:, None]).astype(np.float32)
    rows = max(1, _SIMILARITY_BLOCK // max(1, len(index)))
    pairs = 0
    examples: list[tuple[int, int, float]] = []
    for start in range(0, len(index), rows):
        # Only pairs a < b: each block of rows against itself and the filters after it (half the products).
        block = unit[start:start + rows] @ unit[start:].T  # (rows, n - start)
        row_ids = np.arange(block.shape[0])[:, None]
        col_ids = np.arange(block.shape[1])[None, :]
        hits = (block > DUPLICATE_COSINE) & (col_ids > row_ids)
        found = np.argwhere(hits)
        pairs += len(found)
        if len(found):
            sims = block[hits]
            order = np.argsort(-sims, kind="stable")[:DUPLICATE_EXAMPLES]
            for k in order:
                r, c = found[k]
                examples.append((int(index[start + r]), int(index[start + c]), min(1.0, float(sims[k]))))
            examples = sorted(examples, key=lambda e: (-e[2], e[0], e[1]))[:DUPLICATE_EXAMPLES]
    return pairs, examples


# ------------------------------------------------------------------------- activations

class ActivationStats:
    """Running per-channel statistics of one layer's maps, fed batch by batch.

    Each batch costs one max, one float32 sum per map (accumulated in float64)
    and one zero count, plus an absolute sum for layers with signed outputs.
    """

    def __init__(self, channels: int, non_negative: bool):
        self.channels = channels
        self.non_negative = non_negative
        self.images = 0
        self.elements_per_map = 0
        self.total = np.zeros(channels, np.float64)
        self.abs_total = np.zeros(channels, np.float64)
        self.squares = np.zeros(channels, np.float64)
        self.zeros = np.zeros(channels, np.int64)
        self.silent = np.zeros(channels, np.int64)  # images on which the channel does not fire
        self.maximum = np.full(channels, -np.inf, np.float64)

    def add(self, maps: np.ndarray) -> None:
        """``maps``: (N, C, ...) float32, one batch of this layer's outputs."""
        n, c = maps.shape[0], maps.shape[1]
        if c != self.channels:
            raise InspectorError(f"a layer's output has {c} channels where its weights have {self.channels}")
        flat = maps.reshape(n, c, -1)
        per_map = flat.shape[2]
        if self.images and per_map != self.elements_per_map:
            raise InspectorError("feature map sizes changed between batches; pass a fixed --size")
        self.elements_per_map = per_map
        peak = flat.max(axis=2)  # (N, C)
        self.silent += np.count_nonzero(peak <= 0, axis=0)
        np.maximum(self.maximum, peak.max(axis=0), out=self.maximum)
        # Pairwise float32 sums along each contiguous map, then float64 across maps and batches.
        sums = flat.sum(axis=2)
        self.total += sums.sum(axis=0, dtype=np.float64)
        if self.non_negative:
            self.abs_total += sums.sum(axis=0, dtype=np.float64)
        else:
            self.abs_total += np.abs(flat).sum(axis=2).sum(axis=0, dtype=np.float64)
        # Sum of squares per map without a squared copy of the batch.
        self.squares += np.einsum("ncm,ncm->nc", flat, flat).sum(axis=0, dtype=np.float64)
        self.zeros += _count_zeros(flat).sum(axis=0, dtype=np.int64)
        self.images += n

    # Derived figures (None before any image).
    @property
    def count(self) -> int:
        """Activations seen in all: images x channels x elements per map."""
        return self.images * self.channels * self.elements_per_map

    def mean(self) -> float | None:
        return float(self.total.sum() / self.count) if self.count else None

    def mean_abs(self) -> float | None:
        return float(self.abs_total.sum() / self.count) if self.count else None

    def max(self) -> float | None:
        return float(self.maximum.max()) if self.images and self.channels else None

    def channel_std(self) -> np.ndarray:
        """Per channel, the standard deviation over all images and positions."""
        count = max(1, self.images * self.elements_per_map)
        mean = self.total / count
        return np.sqrt(np.maximum(self.squares / count - mean * mean, 0.0))

    def spread(self) -> float | None:
        """How much the layer's activations vary: the mean over channels of ``channel_std``.

        A layer whose outputs no longer vary carries no information, whatever
        its mean (a bias alone keeps the mean up); this is what "activations
        die out" measures.
        """
        return float(self.channel_std().mean()) if self.count else None

    def zero_fraction(self) -> float | None:
        return float(self.zeros.sum() / self.count) if self.count else None

    def channel_zero_fraction(self) -> np.ndarray:
        return self.zeros / max(1, self.images * self.elements_per_map)

    def channel_silent_fraction(self) -> np.ndarray:
        return self.silent / max(1, self.images)

    def dead_channels(self) -> list[int]:
        if not self.images:
            return []
        return [int(i) for i in np.flatnonzero(self.silent == self.images)]


def _count_zeros(flat: np.ndarray) -> np.ndarray:
    """Exact zeros along the last axis of (N, C, M), as (N, C)."""
    is_zero = flat == 0
    if hasattr(np, "bitwise_count") and flat.shape[2] % 8 == 0:
        # Eight one-byte booleans per 64-bit word: a popcount per word, a sum over 8x fewer numbers.
        return np.bitwise_count(is_zero.view(np.uint64)).sum(axis=2, dtype=np.int64)
    return np.add.reduce(is_zero, axis=2, dtype=np.int64)


# ------------------------------------------------------------------------------ result

@dataclass
class LayerAudit:
    index: int
    name: str
    op: str
    activation: str | None
    weight_shape: tuple[int, ...]
    weights: WeightStats
    activations: ActivationStats | None = None

    @property
    def filters(self) -> int:
        return self.weights.filters

    @property
    def dead_channels(self) -> list[int]:
        return self.activations.dead_channels() if self.activations else []

    @property
    def dead_units(self) -> list[int]:
        """Filters dead by their weights, or silent on every image, each counted once."""
        return sorted(set(self.weights.dead_filters) | set(self.dead_channels))

    def to_dict(self, collapse_index: int | None = None) -> dict:
        acts = self.activations
        measured = acts is not None and acts.images > 0
        return {
            "index": self.index,
            "name": self.name,
            "op": self.op,
            "activation": self.activation,
            "weight_shape": list(self.weight_shape),
            "filters": self.filters,
            **self.weights.to_dict(),
            "dead_channels": self.dead_channels if measured else None,
            "zero_fraction": _number(acts.zero_fraction()) if measured else None,
            "mean_activation": _number(acts.mean()) if measured else None,
            "mean_abs_activation": _number(acts.mean_abs()) if measured else None,
            "max_activation": _number(acts.max()) if measured else None,
            "activation_std": _number(acts.spread()) if measured else None,
            "channel_zero_fraction": [_number(v) for v in acts.channel_zero_fraction()] if measured else None,
            "channel_silent_fraction": [_number(v) for v in acts.channel_silent_fraction()] if measured else None,
            "collapse": collapse_index == self.index,
        }


@dataclass
class AuditResult:
    model_name: str
    model_path: str
    weights_trained: bool | None
    layers: list[LayerAudit]
    images: int = 0
    images_requested: int = 0
    skipped: list[dict] = field(default_factory=list)
    batch: int | None = None
    input_size: tuple[int, int] | None = None
    preprocess: str | None = None
    provider: str | None = None

    @property
    def total_filters(self) -> int:
        return sum(layer.filters for layer in self.layers)

    @property
    def dead_filter_count(self) -> int:
        return sum(len(layer.weights.dead_filters) for layer in self.layers)

    @property
    def dead_channel_count(self) -> int:
        return sum(len(layer.dead_channels) for layer in self.layers)

    @property
    def dead_unit_count(self) -> int:
        return sum(len(layer.dead_units) for layer in self.layers)

    def add_maps(self, maps: dict[str, np.ndarray], real: int | None = None) -> None:
        """Stream one batch of every layer's maps ``{name: (N, C, ...)}`` into the activation statistics.

        ``real``: how many of the N are images (the rest pad a fixed batch dimension).
        ``images`` is the caller's to count.
        """
        work = []
        for layer_audit in self.layers:
            if layer_audit.activations is None:
                layer_audit.activations = ActivationStats(layer_audit.filters,
                                                          layer_audit.activation in NON_NEGATIVE_ACTIVATIONS)
            values = maps[layer_audit.name]
            work.append((layer_audit.activations, values if real is None or real == len(values) else values[:real]))
        if sum(values.size for _, values in work) < _PARALLEL_ELEMENTS:
            for stats, values in work:
                stats.add(values)
            return
        # onnxruntime is idle between runs and numpy's reductions release the GIL: one layer per core.
        for future in [_stats_pool().submit(stats.add, values) for stats, values in work]:
            future.result()

    @property
    def dead_fraction(self) -> float:
        """Dead filters, plus dead channels when images were given (each once), over all filters."""
        total = self.total_filters
        return self.dead_unit_count / total if total else 0.0

    def collapse(self) -> dict | None:
        """The layer where activations die out (see module docstring), or None."""
        if not self.images:
            return None
        main: list[tuple[LayerAudit, float]] = []
        for layer in self.layers:
            acts = layer.activations
            if acts is None or not acts.images:
                continue
            if layer.activation in GATE_ACTIVATIONS or acts.elements_per_map == 1:
                continue  # a gate or a pooled branch, not the main path
            zeros = acts.zero_fraction()
            if zeros is not None and zeros > COLLAPSE_ZERO_FRACTION:
                return {"index": layer.index, "name": layer.name,
                        "reason": f"{zeros:.1%} of its activations are exactly zero"}
            spread = acts.spread()
            if spread is not None and math.isfinite(spread):
                main.append((layer, spread))
        # Die out = fall under the ratio and never come back on the rest of the main path.
        peak_before = 0.0
        for i, (layer, spread) in enumerate(main):
            if peak_before > 0 and all(later < COLLAPSE_RATIO * peak_before for _, later in main[i:]):
                return {"index": layer.index, "name": layer.name,
                        "reason": f"the spread of its activations (mean per-channel std {spread:.3g}) is "
                                  f"{spread / peak_before:.2%} of the largest before it ({peak_before:.3g}), "
                                  "and no later layer recovers"}
            peak_before = max(peak_before, spread)
        return None

    def to_dict(self) -> dict:
        from . import __version__

        collapse = self.collapse()
        collapse_index = collapse["index"] if collapse else None
        return {
            "schema_version": SCHEMA_VERSION,
            "inspector_version": __version__,
            "model": {"name": self.model_name, "path": self.model_path, "weights_trained": self.weights_trained},
            "images": {
                "count": self.images,
                "requested": self.images_requested,
                "skipped": list(self.skipped),
                "batch": self.batch,
                "input_size": list(self.input_size) if self.input_size else None,
                "preprocess": self.preprocess,
                "provider": self.provider,
            },
            "rules": {
                "dead_norm_ratio": DEAD_NORM_RATIO,
                "duplicate_cosine": DUPLICATE_COSINE,
                "near_zero_ratio": NEAR_ZERO_RATIO,
                "collapse_ratio": COLLAPSE_RATIO,
                "collapse_zero_fraction": COLLAPSE_ZERO_FRACTION,
            },
            "layers": [layer.to_dict(collapse_index) for layer in self.layers],
            "summary": {
                "layers": len(self.layers),
                "filters": self.total_filters,
                "dead_filters": self.dead_filter_count,
                "dead_channels": self.dead_channel_count if self.images else None,
                "dead_units": self.dead_unit_count,
                "dead_fraction": self.dead_fraction,
                "near_duplicate_pairs": sum(layer.weights.duplicate_pairs for layer in self.layers),
                "collapse_layer": collapse,
            },
        }

    def table(self) -> str:
        """The human-readable table the CLI prints."""
        measured = self.images > 0
        collapse = self.collapse()
        head = ["#", "layer", "filters", "dead", "dup pairs", "near-0 w"]
        if measured:
            head += ["dead ch", "zero act", "mean", "max", "spread", ""]
        rows = [head]
        for layer in self.layers:
            w = layer.weights
            row = [str(layer.index), layer.name, str(layer.filters), str(len(w.dead_filters)),
                   str(w.duplicate_pairs), f"{w.near_zero_weight_fraction:.1%}"]
            if measured and layer.activations is not None:
                a = layer.activations
                row += [str(len(layer.dead_channels)), f"{a.zero_fraction():.1%}", f"{a.mean():.3g}",
                        f"{a.max():.3g}", f"{a.spread():.3g}",
                        "<- collapse" if collapse and collapse["index"] == layer.index else ""]
            rows.append(row)
        widths = [max(len(r[i]) for r in rows if i < len(r)) for i in range(len(head))]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
        lines.append("")
        summary = (f"{len(self.layers)} conv layers, {self.total_filters:,} filters: "
                   f"{self.dead_filter_count} dead by weights")
        if measured:
            summary += (f", {self.dead_channel_count} channels silent on all {self.images} images "
                        f"({self.dead_unit_count} dead in all)")
        summary += f"; dead fraction {self.dead_fraction:.4f}"
        lines.append(summary)
        if self.skipped:
            lines.append(f"{len(self.skipped)} image(s) skipped (unreadable)")
        if measured:
            lines.append(f"activations collapse at layer {collapse['index']} {collapse['name']}: {collapse['reason']}"
                         if collapse else "activations do not collapse with depth")
        return "\n".join(lines)


def _number(value) -> float | None:
    """A JSON-safe float: NaN and infinities become null."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


# ------------------------------------------------------------------------------- images

def collect_images(paths: Iterable[str | os.PathLike]) -> list[str]:
    """Files as given; directories expanded to their image files (sorted, not recursive)."""
    found: list[str] = []
    for path in paths:
        path = os.fspath(path)
        if os.path.isdir(path):
            try:
                names = sorted(entry.name for entry in os.scandir(path)
                               if entry.is_file() and entry.name.lower().endswith(IMAGE_EXTENSIONS))
            except OSError as exc:
                raise InspectorError(f"cannot list image directory {path} ({exc.strerror or exc})") from None
            if not names:
                raise InspectorError(
                    f"no images in directory {path} (looked for {', '.join(IMAGE_EXTENSIONS)}); "
                    "pass image files or another directory")
            found.extend(os.path.join(path, name) for name in names)
        elif os.path.exists(path):
            found.append(path)
        else:
            raise InspectorError(f"image not found: {path}")
    return found


def batch_size(model, requested: int | None) -> int:
    """Batch for the model: its fixed batch dimension, else ``requested`` (default 16)."""
    fixed = model.input.batch
    if fixed is None:
        return requested or DEFAULT_BATCH
    if requested is not None and requested != fixed:
        raise InspectorError(
            f"--batch {requested} does not fit: the model's input '{model.input.name}' has a fixed batch "
            f"dimension of {fixed}; leave --batch out (or pass --batch {fixed})")
    return fixed


def _batches(model, files: Sequence[str], spec, size, per_batch: int, skipped: list[dict],
             warn) -> Iterator[tuple[np.ndarray, int]]:
    """(preprocessed batch, real images in it); unreadable images are reported and skipped."""
    pending: list[np.ndarray] = []
    for path in files:
        try:
            pending.append(model.image_batch([path], spec, size))
        except InspectorError as exc:
            skipped.append({"path": path, "reason": str(exc)})
            warn(f"inspector: warning: skipped {path}: {exc}")
            continue
        if len(pending) == per_batch:
            yield np.concatenate(pending), per_batch
            pending = []
    if pending:
        real = len(pending)
        if model.input.batch is not None:  # a fixed batch dimension: pad, and ignore the padding
            pending += [pending[-1]] * (per_batch - real)
        yield np.concatenate(pending), real


# -------------------------------------------------------------------------------- audit

def audit(model, images: Sequence[str | os.PathLike] | None = None, *, batch: int | None = None,
          preprocess=None, size: tuple[int, int] | None = None, device: str = "auto",
          quiet: bool = False, verbose: bool = False) -> AuditResult:
    """Audit ``model`` (an ``inspector.Model`` or a path): weights always, activations over ``images``."""
    from .api import Model, load
    from .progress import progress

    if not isinstance(model, Model):
        model = load(model)
    layers = model.require_layers()
    audits = []
    for layer in layers:
        weights, bias = _layer_weights(model, layer)
        audits.append(LayerAudit(layer.index, layer.name, layer.op, layer.activation,
                                 tuple(layer.weight_shape), weight_stats(weights, bias)))
    result = AuditResult(model.name, os.fspath(model.path), _weights_trained(model), audits)
    if not images:
        return result

    files = collect_images(images)
    per_batch = batch_size(model, batch)
    spec = model.preprocessing(preprocess)
    input_size = model.input_size(size, spec)
    # Fails now (wrong channel count, oversize input) rather than once per image.
    model.image_batch([np.zeros((*input_size, model.input.channels or 3), np.uint8)], spec, input_size)
    session = model.session(layers, device=device, verbose=verbose)
    result.images_requested = len(files)
    result.batch, result.input_size, result.preprocess = per_batch, tuple(input_size), spec.mode
    result.provider = session.provider

    def warn(message: str) -> None:
        print(message, file=sys.stderr)

    # On CUDA the host cores idle while the GPU runs: do one batch's statistics while the next one runs.
    # On the CPU onnxruntime already uses every core, so the statistics run in turn (and half the memory).
    overlap = _OVERLAP if _OVERLAP is not None else session.provider == "CUDAExecutionProvider"
    stream = _batches(model, files, spec, input_size, per_batch, result.skipped, warn)
    with _Pipeline(result.add_maps, overlap) as pipeline:
        for inputs, real in progress(stream, total=math.ceil(len(files) / per_batch), desc="audit",
                                     unit="batch", quiet=quiet):
            try:
                maps = session.run(inputs)
            except InspectorError as exc:
                if per_batch > 1:
                    raise InspectorError(f"{exc}; the model may not take batches of {per_batch}: "
                                         "try --batch 1") from None
                raise
            pipeline.submit(maps, real)
            del maps  # else this batch's maps stay alive through the next run: two batches in memory
            result.images += real
    if not result.images:
        raise InspectorError(f"none of the {len(files)} images could be read (see the warnings above)")
    return result


# None: overlap statistics with inference on CUDA only; True/False force it (tests).
_OVERLAP: bool | None = None
# Batches of maps at least this many values get their layers' statistics on all cores.
_PARALLEL_ELEMENTS = 4_000_000
_POOL = None


def _stats_pool():
    global _POOL
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1), thread_name_prefix="inspector-stats")
    return _POOL


class _Pipeline:
    """Runs ``work(*args)`` for each batch in order: inline, or on one worker thread one batch behind."""

    def __init__(self, work, overlap: bool):
        self.work, self.overlap = work, overlap
        self.pool = self.pending = None

    def __enter__(self):
        if self.overlap:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inspector-audit")
        return self

    def submit(self, *args) -> None:
        if self.pool is None:
            self.work(*args)
            return
        self.wait()  # at most one batch of maps waits, so memory stays at two batches
        self.pending = self.pool.submit(self.work, *args)

    def wait(self) -> None:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending.result()  # re-raises the worker's exception here

    def __exit__(self, kind, value, traceback):
        try:
            if kind is None:
                self.wait()
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=True, cancel_futures=True)
        return False


def _weights_trained(model) -> bool | None:
    """What the converter said about the weights: True, False (random), or None (not said)."""
    from . import metadata as md

    said = model.metadata.get(md.WEIGHTS_TRAINED, "").strip().lower()
    return {"true": True, "false": False}.get(said)


def _layer_weights(model, layer) -> tuple[np.ndarray, np.ndarray | None]:
    """(filters first, bias); 3-D convs, which cannot be drawn, are audited all the same."""
    try:
        return model.filters_and_bias(layer)
    except InspectorError:
        if layer.op != "Conv":
            raise
        weights, bias = model.graph.weights(layer)
        return np.asarray(weights, np.float32), bias
