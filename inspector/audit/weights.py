"""Weight-level rules: filter norms, dead filters (weights zero, or below float32 resolution next to their layer's),
near-duplicate filters within a group (each input channel's weights normalised over the group, so no rescaling can
move a pair), near-zero weights. No images needed."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEAD_NORM_RATIO = 1e-3
DUPLICATE_COSINE = 0.99
DUPLICATE_EXAMPLES = 5
NEAR_ZERO_RATIO = 1e-6
# A filter whose weights are this small next to its layer's (float32's resolution, 2**-23) contributes nothing a
# float32 sum can hold: its map is its bias, as if the weights were zero (trained models end with denormals there).
EFFECTIVELY_ZERO = float(np.finfo(np.float32).eps)

# Elements of one similarity block (rows x filters), so that wide layers stay small in memory.
_SIMILARITY_BLOCK = 1 << 22


@dataclass
class WeightStats:
    """Weight-level statistics of one conv layer."""

    filters: int
    l1: np.ndarray  # (filters,) L1 norm of weights + bias
    l2: np.ndarray  # (filters,) L2 norm of weights + bias
    median_l2: float
    dead_filters: list[int]  # weights zero or effectively zero: the map is the bias alone, whatever the input
    weak_filters: list[int]  # L2 under DEAD_NORM_RATIO x the median: information, not a verdict
    duplicate_pairs: int
    duplicate_examples: list[tuple[int, int, float]]  # (a, b, cosine), most similar first
    near_zero_weight_fraction: float
    groups: int = 1
    effectively_zero: list[int] = ()  # of the dead filters, those whose weights are not exactly zero

    def to_dict(self) -> dict:
        return {
            "filter_l1": [_number(v) for v in self.l1],
            "filter_l2": [_number(v) for v in self.l2],
            "median_filter_l2": _number(self.median_l2),
            "dead_filters": list(self.dead_filters),
            "effectively_zero_filters": list(self.effectively_zero),
            "weak_filters": list(self.weak_filters),
            "near_duplicates": {
                "pairs": self.duplicate_pairs,
                "examples": [{"a": a, "b": b, "cosine": round(float(c), 6)} for a, b, c in self.duplicate_examples],
            },
            "near_zero_weight_fraction": _number(self.near_zero_weight_fraction),
        }


def weight_stats(weights: np.ndarray, bias: np.ndarray | None = None, groups: int = 1,
                 dead: np.ndarray | None = None) -> WeightStats:
    """Statistics of one layer's filters: ``weights`` is (filters, in_per_group, ...), ``bias`` (filters,) or None.

    ``groups``: the conv's groups; only filters of one group read the same input channels, so only
    they can duplicate each other (never two depthwise filters). ``dead``: the layer's dead-by-weights mask from
    ``dead_filter_masks`` (which sees the layers that read it); by default the layer's own weights judge.
    """
    weights = np.asarray(weights, dtype=np.float32)
    count = weights.shape[0] if weights.ndim else 0
    flat = weights.reshape(count, -1)
    with_bias = flat if bias is None else np.concatenate(
        [flat, np.asarray(bias, np.float32).reshape(count, 1)], axis=1)
    wide = with_bias.astype(np.float64)
    l1 = np.abs(wide).sum(axis=1)
    l2 = np.sqrt(np.square(wide).sum(axis=1))
    median = float(np.median(l2)) if count else 0.0
    exact = ~np.any(flat != 0, axis=1)
    dead = negligible_filters(weights, groups) if dead is None or len(dead) != count else np.asarray(dead, bool)
    weak = ~dead & (l2 < DEAD_NORM_RATIO * median)
    largest = float(np.max(np.abs(flat))) if flat.size else 0.0
    near_zero = float(np.mean(np.abs(flat) <= NEAR_ZERO_RATIO * largest)) if flat.size else 0.0
    pairs, examples = grouped_duplicates(weights, groups, ~dead)
    return WeightStats(count, l1, l2, median, [int(i) for i in np.flatnonzero(dead)],
                       [int(i) for i in np.flatnonzero(weak)], pairs, examples, near_zero, groups,
                       [int(i) for i in np.flatnonzero(dead & ~exact)])


def negligible_filters(weights: np.ndarray, groups: int = 1, importance: np.ndarray | None = None) -> np.ndarray:
    """(filters,) bool: weights exactly zero, or a contribution below float32 resolution next to the layer's
    largest (the map is then its bias, up to rounding: a constant channel, or a zero one where the bias is zero).

    ``importance``: per filter, what its channel weighs downstream (``dead_filter_masks``), where the channel can
    be rescaled alone. Each filter is multiplied by it, then each input channel's weights are divided by their norm
    over the filters of its group (as for duplicates), and each filter's norm is compared with the largest. A
    filter times s (weights and bias) with the weights reading it over s leaves the product alone; a rescaled
    input channel is normalised away; scaling the whole layer moves nothing. Where a group holds one filter
    (depthwise) the input channel has nothing to be compared with: the (weighted) filters' own norms are used.
    """
    weights = np.asarray(weights, np.float64)
    count = weights.shape[0] if weights.ndim else 0
    if count == 0:
        return np.zeros(0, bool)
    exact = ~np.any(weights.reshape(count, -1) != 0, axis=1)
    block = weights if weights.ndim >= 2 else weights.reshape(count, -1)
    if importance is not None and len(importance) == count and np.all(np.isfinite(importance)):
        block = block * np.asarray(importance, np.float64).reshape((count,) + (1,) * (block.ndim - 1))
    groups = max(1, int(groups or 1))
    per_group = count // groups if count % groups == 0 else count
    if per_group >= 2 and block.ndim >= 2:
        parts = []
        for g in range(count // per_group):
            part = block[g * per_group:(g + 1) * per_group]
            with np.errstate(all="ignore"):
                columns = np.sqrt(np.square(part).sum(axis=(0,) + tuple(range(2, part.ndim)), keepdims=True))
                parts.append(np.divide(part, columns, out=np.zeros_like(part), where=columns > 0))
        block = np.concatenate(parts)
    with np.errstate(all="ignore"):
        scores = np.sqrt(np.square(block.reshape(count, -1)).sum(axis=1))
    if not np.isfinite(scores).all() or not scores.any():  # NaN/inf weights or an all-zero layer: exact zeros only
        return exact
    return exact | (scores <= EFFECTIVELY_ZERO * float(scores.max()))


# Activations through which a filter (weights and bias) times s, and the weights reading it over s, is the same
# function: there a filter's own norm says nothing alone.
HOMOGENEOUS = (None, "Relu", "LeakyRelu")


def dead_filter_masks(model, read) -> dict[int, np.ndarray]:
    """{conv node index: (filters,) bool dead by weights} for every layer; ``read`` is [(layer, filters-first
    weights, bias)].

    A channel's importance is the norm of the weights that read it, each reader's filters weighted by their own
    importance (from the last layer back, through the ops a rescaling passes: ``routing.outgoing_norms``), so
    that a rescaling anywhere along a chain of linear, Relu or LeakyRelu layers cancels out. It starts afresh
    (none) at anything else: a Sigmoid, an Add, a graph output, an unfolded BatchNorm.
    """
    from . import routing

    weighted = {layer.node_index: (np.asarray(w), max(1, int(layer.groups or 1))) for layer, w, _ in read}
    masks = {}
    for layer, w, _ in sorted(read, key=lambda entry: -entry[0].node_index):  # readers before what they read
        importance = None
        if layer.activation in HOMOGENEOUS and not layer.affine and layer.op == "Conv":
            importance = routing.outgoing_norms(model, layer, len(w), weighted)
        masks[layer.node_index] = negligible_filters(w, layer.groups, importance)
        if importance is not None and np.all(np.isfinite(importance)):
            w = np.asarray(w, np.float64)
            weighted[layer.node_index] = (w * importance.reshape((len(w),) + (1,) * (w.ndim - 1)),
                                          max(1, int(layer.groups or 1)))
    return masks


def grouped_duplicates(weights: np.ndarray, groups: int, keep: np.ndarray) -> tuple[int, list[tuple[int, int, float]]]:
    """Near-duplicate pairs among the filters of each group (filter indices are the layer's).

    Each input channel's weights are first divided by their norm over the group's filters: a
    function-preserving rescaling of the layer before multiplies input channel c by s and divides
    exactly these weights by s, so without this step it could make or break a pair.
    """
    count = weights.shape[0] if weights.ndim else 0
    groups = max(1, int(groups or 1))
    if count == 0 or count % groups:
        return 0, []
    per_group = count // groups
    if per_group < 2:
        return 0, []  # depthwise: every filter reads its own input channel
    pairs, examples = 0, []
    for g in range(groups):
        rows = slice(g * per_group, (g + 1) * per_group)
        block = np.asarray(weights[rows], np.float64)
        if block.ndim >= 2:
            columns = np.sqrt(np.square(block).sum(axis=(0,) + tuple(range(2, block.ndim)), keepdims=True))
            block = np.divide(block, columns, out=np.zeros_like(block), where=columns > 0)
        found, found_examples = _near_duplicates(block.reshape(per_group, -1).astype(np.float32), keep[rows])
        pairs += found
        examples += [(a + g * per_group, b + g * per_group, c) for a, b, c in found_examples]
    examples = sorted(examples, key=lambda e: (-e[2], e[0], e[1]))[:DUPLICATE_EXAMPLES]
    return pairs, examples


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



def _number(value) -> float | None:
    """A JSON-safe float: NaN and infinities become null."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
