"""Activation-level statistics: running per-channel figures of one layer's maps, fed batch by batch."""

from __future__ import annotations

import numpy as np

from ..errors import InspectorError

# Activations whose output is never negative: the mean is already the mean magnitude.
NON_NEGATIVE_ACTIVATIONS = frozenset({"Relu", "Sigmoid", "HardSigmoid", "Softplus", "ThresholdedRelu"})


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

