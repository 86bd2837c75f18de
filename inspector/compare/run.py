"""``diff``: two models over the same images, layer by layer, streamed.

Per batch each model runs ONCE with every compared layer's output added (the tensor the next
layer consumes: post-activation, dequantized in QDQ models, channel-first whatever the layout),
and each pair of maps feeds a ``LayerStats``; then the maps are dropped. Memory is one batch of
both models' maps (plus, for the pictures, the first image's maps), whatever the number of images.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..errors import InspectorError
from ..execution import dequantize_into
from ..resources import DEFAULT_MAX_MEMORY
from .matching import MATCH_KINDS, Pair, pair_layers, require_pairs
from .metrics import LayerStats, db_json
from .weights import weight_change

SCHEMA_VERSION = "1"
# Without --fail-under, the table marks the first layer under this SQNR. Around 20 dB the
# error is a tenth of the signal's amplitude; int8 post-training quantization of a healthy CNN
# typically keeps its conv layers above it.
DEFAULT_THRESHOLD_DB = 20.0
# Layers of maps at least this many values in a batch get their statistics on all cores.
_PARALLEL_ELEMENTS = 4_000_000


@dataclass
class LayerDiff:
    pair: Pair
    weights: dict | None
    stats: LayerStats | None = None
    note: str = ""

    @property
    def compared(self) -> bool:
        return self.stats is not None and self.stats.images > 0

    def sqnr(self) -> float | None:
        return self.stats.sqnr_db() if self.compared else None

    def to_dict(self, threshold: float) -> dict:
        s = self.stats if self.compared else None
        sqnr = s.sqnr_db() if s else None
        a, b = self.pair.a, self.pair.b
        return {
            "index": a.index,
            "name": a.name,
            "index_b": b.index,
            "name_b": b.name,
            "match": self.pair.match,
            "confidence": self.pair.confidence,
            "match_evidence": self.pair.evidence(),
            "comparable": self.pair.not_comparable is None,
            "output_a": a.output,
            "output_b": b.output,
            "compared": s is not None,
            "note": self.note or None,
            "sqnr_db": db_json(sqnr),
            "exact": bool(s.exact) if s else None,
            "below_threshold": bool(sqnr is not None and sqnr < threshold),
            "cosine": _number(s.cosine()) if s else None,
            "max_abs_error": _number(s.max_abs_error) if s else None,
            "max_rel_error": _number(s.max_rel_error()) if s else None,
            "worst_channels": s.worst_channels() if s else [],
            "weight_change": self.weights,
        }


@dataclass
class DiffResult:
    name_a: str
    name_b: str
    path_a: str
    path_b: str
    layers: list[LayerDiff]
    unmatched_a: list[str]
    unmatched_b: list[str]
    threshold_db: float = DEFAULT_THRESHOLD_DB
    images: int = 0
    images_requested: int = 0
    skipped: list[dict] = field(default_factory=list)
    batch: int | None = None
    input_size: tuple[int, int] | None = None
    preprocess: tuple[str, str] | None = None
    providers: tuple[str, str] | None = None
    first_image: str | None = None
    first_maps: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    unmatched_reasons: tuple[list[dict], list[dict]] = ([], [])
    feeding: tuple[dict, dict] | None = None  # how each model was fed (inspector.inputs.Feeding.to_dict)

    # ---------------------------------------------------------------- verdicts

    def compared(self) -> list[LayerDiff]:
        return [layer for layer in self.layers if layer.compared]

    def worst_layer(self) -> LayerDiff | None:
        """The compared layer with the lowest SQNR (None when every layer is exact or nothing ran)."""
        candidates = [(layer.sqnr(), i, layer) for i, layer in enumerate(self.compared())
                      if layer.sqnr() is not None and layer.sqnr() != math.inf]
        return min(candidates, key=lambda c: (c[0], c[1]))[2] if candidates else None

    def first_below(self, threshold: float | None = None) -> LayerDiff | None:
        threshold = self.threshold_db if threshold is None else threshold
        for layer in self.compared():
            sqnr = layer.sqnr()
            if sqnr is not None and sqnr < threshold:
                return layer
        return None

    def below(self, threshold: float) -> list[LayerDiff]:
        return [layer for layer in self.compared() if layer.sqnr() is not None and layer.sqnr() < threshold]

    def unmeasurable(self) -> list[LayerDiff]:
        """Compared layers whose maps were not finite (NaN or inf in either model): no SQNR."""
        return [layer for layer in self.compared() if layer.sqnr() is None]

    def worst_for_pictures(self, count: int) -> list[LayerDiff]:
        ranked = sorted((layer for layer in self.compared() if layer.sqnr() is not None and not layer.stats.exact),
                        key=lambda layer: layer.sqnr())
        return ranked[:count]

    # ------------------------------------------------------------------ output

    def to_dict(self) -> dict:
        from .. import __version__

        worst = self.worst_layer()
        first = self.first_below()
        compared = self.compared()
        finite = [layer.sqnr() for layer in compared if layer.sqnr() is not None]
        return {
            "schema_version": SCHEMA_VERSION,
            "inspector_version": __version__,
            "models": {"a": {"name": self.name_a, "path": self.path_a},
                       "b": {"name": self.name_b, "path": self.path_b}},
            "images": {
                "count": self.images,
                "requested": self.images_requested,
                "skipped": list(self.skipped),
                "batch": self.batch,
                "input_size": list(self.input_size) if self.input_size else None,
                "preprocess": list(self.preprocess) if self.preprocess else None,
                "providers": list(self.providers) if self.providers else None,
                "preprocess_source": [f["preprocess_source"] for f in self.feeding] if self.feeding else None,
                "input": {"a": self.feeding[0], "b": self.feeding[1]} if self.feeding else None,
            },
            "threshold_db": self.threshold_db,
            "layers": [layer.to_dict(self.threshold_db) for layer in self.layers],
            "unmatched": {"a": list(self.unmatched_a), "b": list(self.unmatched_b)},
            "unmatched_reasons": {"a": list(self.unmatched_reasons[0]), "b": list(self.unmatched_reasons[1])},
            "worst_layer": _ref(worst),
            "first_below_threshold": _ref(first),
            "summary": {
                "pairs": len(self.layers),
                "compared": len(compared),
                "exact": sum(1 for layer in compared if layer.stats.exact),
                "min_sqnr_db": db_json(min(finite)) if finite else None,
                "below_threshold": len(self.below(self.threshold_db)),
                "unmeasurable": [layer.pair.a.name for layer in self.unmeasurable()],
                "matched_by": {kind: sum(1 for layer in self.layers if layer.pair.match == kind)
                               for kind in MATCH_KINDS},
            },
        }

    def table(self) -> str:
        measured = self.images > 0
        first = self.first_below()
        head = ["#", "layer", "match", "weights rel", "weights dB"]
        if measured:
            head += ["SQNR dB", "cosine", "max abs err", "max rel err", "worst channels", ""]
        rows = [head]
        for layer in self.layers:
            pair, w = layer.pair, layer.weights or {}
            name = pair.a.name if pair.a.name == pair.b.name else f"{pair.a.name} = {pair.b.name}"
            row = [str(pair.a.index), name, f"{pair.match} ({pair.confidence})",
                   _fmt(w.get("relative"), "{:.2e}") if w.get("comparable") else "-",
                   _dbtext(w.get("sqnr_db")) if w.get("comparable") else "-"]
            if measured:
                if layer.compared:
                    s = layer.stats
                    sqnr = s.sqnr_db()
                    worst = ", ".join(f"{c['channel']} ({_dbtext(c['sqnr_db'])})" for c in s.worst_channels(3))
                    row += [_sqnr_text(sqnr, s.exact), _fmt(s.cosine(), "{:.6f}"), _fmt(s.max_abs_error, "{:.3g}"),
                            _fmt(s.max_rel_error(), "{:.3g}"), worst or "-",
                            "<- first below %g dB" % self.threshold_db if first is layer else ""]
                else:
                    row += ["-", "-", "-", "-", layer.note or "not compared", ""]
            rows.append(row)
        widths = [max(len(r[i]) for r in rows if i < len(r)) for i in range(len(head))]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
        lines.append("")
        kinds = self.to_dict()["summary"]["matched_by"] if self.layers else {}
        lines.append(f"{len(self.layers)} conv layers paired ("
                     + ", ".join(f"{n} by {k}" for k, n in kinds.items() if n) + ")"
                     + (f"; only in A: {_names(self.unmatched_a)}" if self.unmatched_a else "")
                     + (f"; only in B: {_names(self.unmatched_b)}" if self.unmatched_b else ""))
        for side, reasons in zip("AB", self.unmatched_reasons):
            for entry in reasons[:6]:
                lines.append(f"  unpaired in {side}: {entry['name']}: {entry['reason']}")
            if len(reasons) > 6:
                lines.append(f"  ... and {len(reasons) - 6} more unpaired in {side} (see --json)")
        if measured:
            compared = self.compared()
            exact = sum(1 for layer in compared if layer.stats.exact)
            worst = self.worst_layer()
            text = f"{self.images} images"
            if not compared:
                text += ": no layer could be compared (see the notes above)"
            elif exact == len(compared):
                text += f": every layer's maps are identical (SQNR inf on all {exact})"
            else:
                text += (f": worst layer {worst.pair.a.index} {worst.pair.a.name} at "
                         f"{_sqnr_text(worst.sqnr(), False)} dB" if worst else "")
                text += (f"; first below {self.threshold_db:g} dB: {first.pair.a.index} {first.pair.a.name}"
                         if first else f"; no layer below {self.threshold_db:g} dB")
            lines.append(text)
            if self.unmeasurable():
                lines.append("maps with NaN or inf (no SQNR): " + _names([l.pair.a.name for l in self.unmeasurable()]))
            if self.skipped:
                lines.append(f"{len(self.skipped)} image(s) skipped (unreadable)")
        return "\n".join(lines)


def _names(names: list[str], limit: int = 6) -> str:
    return ", ".join(names[:limit]) + (f" ... ({len(names) - limit} more)" if len(names) > limit else "")


def _ref(layer: LayerDiff | None) -> dict | None:
    if layer is None:
        return None
    return {"index": layer.pair.a.index, "name": layer.pair.a.name, "sqnr_db": db_json(layer.sqnr())}


def _number(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _fmt(value, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def _dbtext(value) -> str:
    if value is None:
        return "-"
    return value if isinstance(value, str) else f"{value:.1f}"


def _sqnr_text(value: float | None, exact: bool) -> str:
    if value is None:
        return "nan"
    if math.isinf(value):
        return "inf (exact)" if value > 0 else "-inf"
    return f"{value:.2f}"


# ------------------------------------------------------------------------------------- the run

# Images per run of each model: both models' maps of one batch are in memory at once (and onnxruntime's
# copy of them), so half the audit's 16; onnxruntime is no faster per image at larger batches on a CPU.
DEFAULT_BATCH = 8


def _batch_size(model_a, model_b, requested: int | None) -> int:
    fixed = {m.input.batch for m in (model_a, model_b)} - {None}
    if len(fixed) > 1:
        raise InspectorError(f"the two models have different fixed batch sizes {sorted(fixed)}; they cannot "
                             "run the same batches")
    if fixed:
        (value,) = fixed
        if requested is not None and requested != value:
            raise InspectorError(f"--batch {requested} does not fit: a model's input has a fixed batch dimension "
                                 f"of {value}; leave --batch out")
        return value
    return requested or DEFAULT_BATCH


def _fitting_batch(model_a, model_b, compared, size, per_batch: int, open_choice: bool, keep_first: bool,
                   limit: int) -> int:
    """Images per run such that both models' maps of a batch (and the first image's copies kept for the
    pictures) stay within ``limit``, estimated from the graph's shapes: an open default batch shrinks (a
    1024x1024 U-Net's 95 maps are 840 MB an image and model: 8 a batch were killed at 10 GB); a batch that
    cannot shrink, or one image over the limit, is refused before any run."""
    from ..resources import human, layer_map_bytes

    per_image = (sum(layer_map_bytes(model_a, [layer.pair.a for layer in compared], size).values())
                 + sum(layer_map_bytes(model_b, [layer.pair.b for layer in compared], size).values()))
    kept = 1 if keep_first else 0
    can_shrink = open_choice and not model_a.input.batch and not model_b.input.batch
    wanted = per_image * ((1 if can_shrink else per_batch) + kept)
    if wanted > limit:
        raise InspectorError(
            f"the compared layers' maps of both models would need about {human(wanted)} of memory, over the "
            f"--max-memory limit of {human(limit)}; compare fewer layers with --layer"
            + ("" if can_shrink or model_a.input.batch or model_b.input.batch else ", a smaller --batch")
            + ", or raise the limit, e.g. --max-memory "
            f"{-(-wanted // 1024**3)}G")
    if can_shrink and per_image:
        return max(1, min(per_batch, limit // per_image - kept))
    return per_batch


def diff(model_a, model_b, images: Sequence[str | os.PathLike] | None = None, *,
         layers: Sequence[str | int] | None = None, batch: int | None = None, preprocess=None,
         size: tuple[int, int] | None = None, devices: Sequence[str] = ("auto", "auto"),
         threshold_db: float = DEFAULT_THRESHOLD_DB, keep_first: bool = False, quiet: bool = False,
         verbose: bool = False, on_notes=None, max_memory: int | None = None) -> DiffResult:
    """Compare ``model_b`` against ``model_a`` (the reference): weights always, maps over ``images``.

    ``layers``: selectors of model A's layers to compare (default every matched layer).
    ``devices``: one device for both models or one per model ("auto", "cpu", "cuda").
    ``keep_first``: keep the first image's maps of every compared layer (for the pictures).
    ``on_notes``: called with how the models are fed (``inspector.inputs``: a guess, a borrowed
    preprocessing, a fixed batch filled), a list of lines; default: printed on stderr.
    """
    from ..api import Model, load
    from ..audit import collect_images
    from ..progress import progress

    model_a = model_a if isinstance(model_a, Model) else load(model_a)
    model_b = model_b if isinstance(model_b, Model) else load(model_b)
    devices = list(devices) if not isinstance(devices, str) else [devices]
    if len(devices) == 1:
        devices = devices * 2
    if len(devices) != 2:
        raise InspectorError("give one device for both models or one per model (--device A [--device B])")
    layers_a, layers_b = model_a.require_layers(), model_b.require_layers()
    matching = pair_layers(model_a, model_b)
    all_pairs = require_pairs(matching.pairs, os.path.basename(model_a.path),
                              os.path.basename(model_b.path), len(layers_a), len(layers_b))
    pairs = all_pairs
    if layers:
        chosen = {model_a.layer(selector).index for selector in layers}
        missing = sorted(chosen - {pair.a.index for pair in pairs})
        if missing:
            raise InspectorError(f"layer {layers_a[missing[0]].name} of {os.path.basename(model_a.path)} has no "
                                 "counterpart in the other model; see the table without --layer")
        pairs = [pair for pair in pairs if pair.a.index in chosen]
    matched_a, matched_b = {pair.a.index for pair in all_pairs}, {pair.b.index for pair in all_pairs}
    result = DiffResult(
        model_a.name, model_b.name, os.fspath(model_a.path), os.fspath(model_b.path),
        [LayerDiff(pair, _weights(model_a, model_b, pair)) for pair in pairs],
        [layer.name for layer in layers_a if layer.index not in matched_a],
        [layer.name for layer in layers_b if layer.index not in matched_b], threshold_db,
        unmatched_reasons=tuple([{"name": layer.name, "reason": reason} for layer, reason in unpaired]
                                for unpaired in (matching.unpaired_a, matching.unpaired_b)))
    for layer in result.layers:
        if layer.pair.a.filters != layer.pair.b.filters:
            layer.note = f"{layer.pair.a.filters} filters against {layer.pair.b.filters}"
        elif layer.pair.not_comparable:
            layer.note = layer.pair.not_comparable
    if not images:
        return result

    from ..inputs import resolve_pair

    files = collect_images(images)
    feeding_a, feeding_b = resolve_pair(model_a, model_b, preprocess, size, files)
    spec_a, spec_b, input_size = feeding_a.preprocess, feeding_b.preprocess, feeding_a.size
    notes = list(dict.fromkeys([*feeding_a.notes(), *feeding_b.notes()]))
    if on_notes is not None:
        on_notes(notes)
    else:
        for line in notes:
            print(line, file=sys.stderr)
    result.feeding = (feeding_a.to_dict(), feeding_b.to_dict())
    per_batch = _batch_size(model_a, model_b, batch)
    for model, spec in ((model_a, spec_a), (model_b, spec_b)):  # wrong channel count or dtype: fail before work
        model.image_batch([np.zeros((*input_size, model.input.channels or 3), np.uint8)], spec, input_size)
    compared = [layer for layer in result.layers if not layer.note]
    per_batch = _fitting_batch(model_a, model_b, compared, input_size, per_batch, batch is None, keep_first,
                               DEFAULT_MAX_MEMORY if max_memory is None else max_memory)
    session_a = model_a.session([layer.pair.a for layer in compared], device=devices[0], verbose=verbose)
    session_b = model_b.session([layer.pair.b for layer in compared], device=devices[1], verbose=verbose)
    for layer in compared:
        layer.stats = LayerStats(layer.pair.a.filters)
    result.images_requested = len(files)
    result.batch, result.input_size = per_batch, input_size
    result.preprocess = (spec_a.mode, spec_b.mode)
    result.providers = (session_a.provider, session_b.provider)

    def warn(message: str) -> None:
        print(message, file=sys.stderr)

    stream = _batches(model_a, model_b, files, spec_a, spec_b, input_size, per_batch, result.skipped, warn)
    for inputs_a, inputs_b, real, first_path in progress(stream, total=math.ceil(len(files) / per_batch),
                                                         desc="diff", unit="batch", quiet=quiet):
        try:
            maps_a = session_a.run(inputs_a)
            maps_b = session_b.run(inputs_b, dequantize=False)  # int8 maps: dequantized image by image
        except InspectorError as exc:
            if per_batch > 1:
                raise InspectorError(f"{exc}; a model may not take batches of {per_batch}: try --batch 1") from None
            raise
        for layer in list(compared):
            shape_a, shape_b = maps_a[layer.pair.a.name].shape[1:], maps_b[layer.pair.b.name].shape[1:]
            if shape_a != shape_b:  # e.g. other padding or stride: the maps cannot be compared element-wise
                layer.note = f"maps {'x'.join(map(str, shape_a))} against {'x'.join(map(str, shape_b))}"
                layer.stats = None
                compared.remove(layer)
        work = [(layer.stats, maps_a[layer.pair.a.name][:real], maps_b[layer.pair.b.name][:real],
                 session_b.dequantizers.get(layer.pair.b.name)) for layer in compared]
        if keep_first and not result.first_maps:
            result.first_image = first_path
            result.first_maps = {layer.pair.a.name: (a[0].copy(), b[0].copy() if dq is None else dequantize_into(
                b[0], *dq, out=np.empty(b[0].shape, np.float32))) for layer, (_, a, b, dq) in zip(compared, work)}
        _accumulate(work)
        del maps_a, maps_b, work
        result.images += real
    if not result.images:
        raise InspectorError(f"none of the {len(files)} images could be read (see the warnings above)")
    return result


def _weights(model_a, model_b, pair: Pair) -> dict | None:
    scaled_a, scaled_b = (_scaling_steps(layer) for layer in (pair.a, pair.b))
    if scaled_a != scaled_b and not (scaled_a and scaled_b):
        # One side scales each channel after the conv (BatchNorm not folded), the other has it folded in:
        # the weights differ by that scale, which is no drift (the maps after both are still compared).
        side, steps = ("A", scaled_a) if scaled_a else ("B", scaled_b)
        return {"comparable": False, "reason": f"{side} scales each channel after the conv "
                f"({', '.join(steps)} not folded into its weights), the other side has it folded"}
    try:
        wa, ba = model_a.filters_and_bias(pair.a)
        wb, bb = model_b.filters_and_bias(pair.b)
    except InspectorError as exc:  # weights computed at run time, 3-D convs: the maps are still compared
        return {"comparable": False, "reason": str(exc)}
    return weight_change(wa, ba, wb, bb)


def _batches(model_a, model_b, files, spec_a, spec_b, size, per_batch, skipped, warn):
    """(batch for A, batch for B, real images, first path) from each image decoded once."""
    from ..preprocess import load_image

    channels = model_a.input.channels or 3
    same_channels = channels == (model_b.input.channels or 3)
    pending_a, pending_b, paths = [], [], []

    def flush(real):
        fixed = model_a.input.batch is not None or model_b.input.batch is not None
        a, b = list(pending_a), list(pending_b)
        if fixed and len(a) < per_batch:  # a fixed batch dimension: pad, and ignore the padding
            a += [a[-1]] * (per_batch - len(a))
            b += [b[-1]] * (per_batch - len(b))
        return np.concatenate(a), np.concatenate(b), real, paths[0]

    for path in files:
        try:
            pixels = load_image(path, size, channels)
            batch_a = model_a.image_batch([pixels], spec_a, size)
            batch_b = model_b.image_batch([pixels if same_channels else path], spec_b, size)
        except InspectorError as exc:
            skipped.append({"path": path, "reason": str(exc)})
            warn(f"inspector: warning: skipped {path}: {exc}")
            continue
        pending_a.append(batch_a)
        pending_b.append(batch_b)
        paths.append(path)
        if len(pending_a) == per_batch:
            yield flush(per_batch)
            pending_a, pending_b, paths = [], [], []
    if pending_a:
        yield flush(len(pending_a))


_POOL = None


def _accumulate(work) -> None:
    if sum(a.size for _, a, _, _ in work) < _PARALLEL_ELEMENTS or (os.cpu_count() or 1) < 2:
        for stats, a, b, dequantize in work:
            stats.add(a, b, dequantize)
        return
    global _POOL
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="inspector-diff")
    # onnxruntime idles between runs and numpy's reductions release the GIL: one layer per core.
    for future in [_POOL.submit(stats.add, a, b, dequantize) for stats, a, b, dequantize in work]:
        future.result()


def _scaling_steps(layer) -> tuple[str, ...]:
    """The per-channel steps after a conv that scale its output (an unfolded BatchNorm's Mul...)."""
    steps = getattr(layer, "affine", None) or ()
    return tuple(step for step in steps if step in ("BatchNormalization", "Mul", "Div"))
