"""Weight-level rules: filter norms, dead filters (all weights exactly zero), near-duplicate filters within a
group (each input channel's weights normalised over the group, so no rescaling can move a pair), near-zero
weights. No images needed."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEAD_NORM_RATIO = 1e-3
DUPLICATE_COSINE = 0.99
DUPLICATE_EXAMPLES = 5
NEAR_ZERO_RATIO = 1e-6

# Elements of one similarity block (rows x filters), so that wide layers stay small in memory.
_SIMILARITY_BLOCK = 1 << 22


@dataclass
class WeightStats:
    """Weight-level statistics of one conv layer."""

    filters: int
    l1: np.ndarray  # (filters,) L1 norm of weights + bias
    l2: np.ndarray  # (filters,) L2 norm of weights + bias
    median_l2: float
    dead_filters: list[int]  # weights all exactly zero: the map is the bias alone, whatever the input
    weak_filters: list[int]  # L2 under DEAD_NORM_RATIO x the median: information, not a verdict
    duplicate_pairs: int
    duplicate_examples: list[tuple[int, int, float]]  # (a, b, cosine), most similar first
    near_zero_weight_fraction: float
    groups: int = 1

    def to_dict(self) -> dict:
        return {
            "filter_l1": [_number(v) for v in self.l1],
            "filter_l2": [_number(v) for v in self.l2],
            "median_filter_l2": _number(self.median_l2),
            "dead_filters": list(self.dead_filters),
            "weak_filters": list(self.weak_filters),
            "near_duplicates": {
                "pairs": self.duplicate_pairs,
                "examples": [{"a": a, "b": b, "cosine": round(float(c), 6)} for a, b, c in self.duplicate_examples],
            },
            "near_zero_weight_fraction": _number(self.near_zero_weight_fraction),
        }


def weight_stats(weights: np.ndarray, bias: np.ndarray | None = None, groups: int = 1) -> WeightStats:
    """Statistics of one layer's filters: ``weights`` is (filters, in_per_group, ...), ``bias`` (filters,) or None.

    ``groups``: the conv's groups; only filters of one group read the same input channels, so only
    they can duplicate each other (never two depthwise filters).
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
    dead = ~np.any(flat != 0, axis=1)
    weak = ~dead & (l2 < DEAD_NORM_RATIO * median)
    largest = float(np.max(np.abs(flat))) if flat.size else 0.0
    near_zero = float(np.mean(np.abs(flat) <= NEAR_ZERO_RATIO * largest)) if flat.size else 0.0
    pairs, examples = grouped_duplicates(weights, groups, ~dead)
    return WeightStats(count, l1, l2, median, [int(i) for i in np.flatnonzero(dead)],
                       [int(i) for i in np.flatnonzero(weak)], pairs, examples, near_zero, groups)


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
