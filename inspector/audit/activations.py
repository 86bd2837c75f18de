"""Activation-level statistics: running per-channel figures of one layer's maps, fed batch by batch."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..errors import InspectorError

# Activations whose output is never negative: the mean is already the mean magnitude.
NON_NEGATIVE_ACTIVATIONS = frozenset({"Relu", "Sigmoid", "HardSigmoid", "Softplus", "ThresholdedRelu"})


class MapFigures(NamedTuple):
    """One batch of one layer, reduced per (image, channel): each array (N, C)."""

    per_map: int  # positions in one map
    maximum: np.ndarray
    minimum: np.ndarray
    sums: np.ndarray  # float32
    abs_sums: np.ndarray | None  # float32; None for non-negative layers (the sums are)
    squares: np.ndarray  # float32
    zeros: np.ndarray  # exact zeros (+0 and -0), int64

    def first(self, images: int) -> MapFigures:
        """The figures of the first ``images`` maps (the rest pad a fixed batch dimension)."""
        return self._replace(**{name: value[:images] for name, value in self._asdict().items()
                                if isinstance(value, np.ndarray)})


def non_negative(rectifier: bool, activation: str | None) -> bool:
    """Whether a layer's outputs are never negative (then its sums are its absolute sums)."""
    return rectifier or activation in NON_NEGATIVE_ACTIVATIONS


# Rows of maps reduced together: every figure of a chunk is taken while it is in the core's cache. A
# batch of VGG16's maps is 1 GB; one pass per figure over all of it cost more than the arithmetic.
_CHUNK_ELEMENTS = 1 << 18  # 1 MB of float32


def map_figures(maps: np.ndarray, non_negative: bool) -> MapFigures:
    """The figures of ``maps`` (N, C, ...) float32, in NumPy.

    Per map (row): the maximum; the float32 sum, pairwise along the map as ``ndarray.sum`` adds it;
    the sum of squares as a float32 dot product; the exact zeros (+0 and -0). The minimum of a
    non-negative layer's map that holds a zero and no NaN is 0 (its ``+0.0``, where NumPy's may be
    ``-0.0``: the same number); the other rows' minimum is NumPy's.
    """
    n, c = maps.shape[0], maps.shape[1]
    flat = maps.reshape(n * c, -1)
    rows, per_map = flat.shape
    maximum, minimum, sums, squares = (np.empty(rows, flat.dtype) for _ in range(4))
    abs_sums = None if non_negative else np.empty(rows, flat.dtype)
    zeros = np.empty(rows, np.int64)
    step = max(1, _CHUNK_ELEMENTS // max(1, per_map))
    is_zero = np.empty((min(rows, step), per_map), bool)
    absolute = None if non_negative else np.empty((min(rows, step), per_map), flat.dtype)
    for start in range(0, rows, step):
        stop = min(rows, start + step)
        part, size = flat[start:stop], stop - start
        np.maximum.reduce(part, axis=1, out=maximum[start:stop])
        np.add.reduce(part, axis=1, out=sums[start:stop])
        squares[start:stop] = _dot_rows(part)
        zeros[start:stop] = _count_zeros(part[None], np.equal(part, 0, out=is_zero[:size])[None])[0]
        if abs_sums is not None:
            np.add.reduce(np.abs(part, out=absolute[:size]), axis=1, out=abs_sums[start:stop])
        low = minimum[start:stop]
        if non_negative:  # every value >= 0: a zero is the minimum, unless a NaN is (then the sum is NaN)
            scan = (zeros[start:stop] == 0) | np.isnan(sums[start:stop])
            low[~scan] = 0
            if scan.all():
                np.minimum.reduce(part, axis=1, out=low)
            elif scan.any():
                low[scan] = np.minimum.reduce(part[scan], axis=1)
        else:
            np.minimum.reduce(part, axis=1, out=low)

    def by_channel(values):
        return None if values is None else values.reshape(n, c)

    return MapFigures(per_map=per_map, maximum=by_channel(maximum), minimum=by_channel(minimum),
                      sums=by_channel(sums), abs_sums=by_channel(abs_sums), squares=by_channel(squares),
                      zeros=by_channel(zeros))


def _dot_rows(rows: np.ndarray) -> np.ndarray:
    """Each row's dot product with itself (its sum of squares), without a squared copy."""
    if hasattr(np, "vecdot"):  # NumPy 2: BLAS's dot, three times einsum's speed
        return np.vecdot(rows, rows)
    return np.einsum("rm,rm->r", rows, rows)


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
        self.silent = np.zeros(channels, np.int64)  # images on which the channel's map is all exactly zero
        self.maximum = np.full(channels, -np.inf, np.float64)
        self.minimum = np.full(channels, np.inf, np.float64)
        self.image_means_squared = np.zeros(channels, np.float64)  # sum over images of (map mean)^2

    def add(self, maps: np.ndarray) -> None:
        """``maps``: (N, C, ...) float32, one batch of this layer's outputs."""
        self.add_figures(map_figures(maps, self.non_negative))

    def add_figures(self, figures: MapFigures) -> None:
        """One batch of this layer's per-(image, channel) figures, from NumPy or from the graph (ingraph.py).

        The batch becomes a partial (``from_figures``) merged into these statistics: the single-process
        audit and any distributed one (partials made on workers, merged by the driver) run the same code.
        """
        self.merge_in(ActivationStats.from_figures(figures, self.non_negative, self.channels))

    @classmethod
    def from_figures(cls, figures: MapFigures, non_negative: bool, channels: int | None = None) -> ActivationStats:
        """The partial statistics of one batch: every figure a sum, a count, a minimum or a maximum over
        its images, so that partials merge (``merge``) into the statistics of all their images."""
        n, c = figures.sums.shape
        if channels is not None and c != channels:
            raise InspectorError(f"a layer's output has {c} channels where its weights have {channels}")
        part = cls(c, non_negative)
        if not n:
            return part
        per_map = figures.per_map
        part.images, part.elements_per_map = n, per_map
        part.maximum = figures.maximum.max(axis=0).astype(np.float64)
        part.minimum = figures.minimum.min(axis=0).astype(np.float64)
        # float32 per map, float64 across maps, batches and partials.
        sums = figures.sums
        # The between-image response's moments: per channel, the sum over images of (map mean)^2
        # (with ``total``, the first moment): no list of every image's means is kept.
        part.image_means_squared = np.square(sums.astype(np.float64) / per_map).sum(axis=0)
        part.total = sums.sum(axis=0, dtype=np.float64)
        abs_sums = sums if non_negative else figures.abs_sums
        part.abs_total = abs_sums.sum(axis=0, dtype=np.float64)
        part.squares = figures.squares.sum(axis=0, dtype=np.float64)
        part.zeros = figures.zeros.sum(axis=0, dtype=np.int64)
        part.silent = np.count_nonzero(figures.zeros == per_map, axis=0).astype(np.int64)
        return part

    def merge_in(self, other: ActivationStats) -> None:
        """Add ``other``'s images to these statistics, in place (see ``merge``)."""
        if other.channels != self.channels or other.non_negative != self.non_negative:
            raise InspectorError(f"cannot merge statistics of {other.channels} channels into {self.channels}")
        if not other.images:
            return
        if self.images and other.elements_per_map != self.elements_per_map:
            raise InspectorError("feature map sizes changed between batches; pass a fixed --size")
        self.elements_per_map = other.elements_per_map
        np.maximum(self.maximum, other.maximum, out=self.maximum)
        np.minimum(self.minimum, other.minimum, out=self.minimum)
        self.total += other.total
        self.abs_total += other.abs_total
        self.squares += other.squares
        self.image_means_squared += other.image_means_squared
        self.zeros += other.zeros
        self.silent += other.silent
        self.images += other.images

    def copy(self) -> ActivationStats:
        twin = ActivationStats(self.channels, self.non_negative)
        twin.images, twin.elements_per_map = self.images, self.elements_per_map
        for name in _ARRAYS:
            setattr(twin, name, getattr(self, name).copy())
        return twin

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

    def channel_mean_abs(self) -> np.ndarray:
        return self.abs_total / max(1, self.images * self.elements_per_map)

    def channel_rms(self) -> np.ndarray:
        return np.sqrt(self.squares / max(1, self.images * self.elements_per_map))

    def channel_image_response(self) -> np.ndarray:
        """Per channel, how much its map's mean changes from image to image, over its RMS.

        The standard deviation over images of the per-image map mean, divided by the channel's
        root mean square over all images and positions: 0 for a channel that gives every image the
        same answer, unchanged when the channel is multiplied by any s > 0. 0 for all-zero channels.
        """
        images = max(1, self.images)
        mean = self.total / max(1, images * self.elements_per_map)
        between = np.sqrt(np.maximum(self.image_means_squared / images - mean * mean, 0.0))
        rms = self.channel_rms()
        return np.where(rms > 0, between / np.where(rms > 0, rms, 1.0), 0.0)

    def constant_channels(self, rtol: float) -> np.ndarray:
        """Channels whose every value, over all images and positions, is the same (to ``rtol``)."""
        span = self.maximum - self.minimum
        size = np.maximum(np.abs(self.maximum), np.abs(self.minimum))
        return (span <= rtol * size) | (span == 0)

    def zero_fraction(self) -> float | None:
        return float(self.zeros.sum() / self.count) if self.count else None

    def channel_zero_fraction(self) -> np.ndarray:
        return self.zeros / max(1, self.images * self.elements_per_map)

    def channel_silent_fraction(self) -> np.ndarray:
        return self.silent / max(1, self.images)

    def all_zero_channels(self) -> np.ndarray:
        """Channels exactly zero on every image and position."""
        return self.zeros == self.images * self.elements_per_map


_ARRAYS = ("total", "abs_total", "squares", "zeros", "silent", "maximum", "minimum", "image_means_squared")


def merge(a: ActivationStats, b: ActivationStats) -> ActivationStats:
    """The statistics of ``a``'s images and ``b``'s together, neither changed.

    Associative and commutative: exact for the counts (images, zeros, silent maps), the minimum and
    the maximum; the float64 sums (total, absolute, squares, squared image means) to their summation
    order's rounding. An empty partial (no image) is the identity.
    """
    merged = a.copy()
    merged.merge_in(b)
    return merged


def _count_zeros(flat: np.ndarray, is_zero: np.ndarray | None = None) -> np.ndarray:
    """Exact zeros along the last axis of (N, C, M), as (N, C); ``is_zero``: ``flat == 0`` if already made."""
    if is_zero is None:
        is_zero = flat == 0
    if hasattr(np, "bitwise_count") and flat.shape[2] % 8 == 0:
        # Eight one-byte booleans per 64-bit word: a popcount per word, a sum over 8x fewer numbers.
        return np.bitwise_count(is_zero.view(np.uint64)).sum(axis=2, dtype=np.int64)
    return np.add.reduce(is_zero, axis=2, dtype=np.int64)
