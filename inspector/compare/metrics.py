"""Streamed agreement figures between two models' maps of one layer.

Per channel, accumulated in float64 over every image: the signal power ``sum(a^2)`` of model A
(the reference), the error power ``sum((a - b)^2)``, and ``sum(b^2)``; over the layer, the
largest ``|a - b|`` and ``|a|``. Nothing of the maps is kept between batches, so memory does not
grow with the number of images. From these:

- SQNR in dB: ``10 log10(sum a^2 / sum (a - b)^2)`` over all images, channels and positions
  (signal-to-quantization-noise ratio, the figure onnxruntime's ``qdq_loss_debug`` and the
  quantization literature report); +inf when the maps are identical;
- per channel the same ratio, so the worst channels can be named;
- cosine similarity of the whole layer's maps: ``sum ab / sqrt(sum a^2 sum b^2)``, with
  ``sum ab = (sum a^2 + sum b^2 - sum (a - b)^2) / 2``;
- the largest absolute error, and the relative error: that error over the largest ``|a|``.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InspectorError
from ..execution import dequantize_into

WORST_CHANNELS = 5


def sqnr_db(signal: float, error: float) -> float:
    """10 log10(signal / error): +inf for no error, -inf for an error on a zero signal."""
    if error <= 0:
        return math.inf
    if signal <= 0:
        return -math.inf
    return 10.0 * math.log10(signal / error)


class LayerStats:
    """Running agreement figures of one layer's maps (A the reference, B the other)."""

    def __init__(self, channels: int):
        self.channels = channels
        self.images = 0
        self.elements_per_map = 0
        self.signal = np.zeros(channels, np.float64)  # sum a^2 per channel
        self.error = np.zeros(channels, np.float64)  # sum (a - b)^2 per channel
        self.other = np.zeros(channels, np.float64)  # sum b^2 per channel
        self.max_abs_error = 0.0
        self.max_abs_signal = 0.0
        self.nonfinite = False
        self._difference: np.ndarray | None = None
        self._dequantized: np.ndarray | None = None

    def add(self, a: np.ndarray, b: np.ndarray, dequantize: tuple | None = None) -> None:
        """One batch: ``a`` and ``b`` (N, C, ...) float32, the same layer of both models.

        ``dequantize``: (scale, zero) when ``b`` is still the integers of a fused int8 kernel; each
        image is dequantized in turn into a buffer reused across images and batches (the same
        float32 values as dequantizing the whole batch, without a batch-sized float copy).
        """
        if a.shape != b.shape:
            raise InspectorError(f"the two models' maps differ in shape: {tuple(a.shape[1:])} against "
                                 f"{tuple(b.shape[1:])} per image")
        n, c = a.shape[0], a.shape[1]
        if c != self.channels:
            raise InspectorError(f"a layer's output has {c} channels where {self.channels} were expected")
        a = a.reshape(n, c, -1)
        b = b.reshape(n, c, -1)
        self.elements_per_map = a.shape[2]
        if self._difference is None or self._difference.shape != a.shape[1:]:
            self._difference = np.empty(a.shape[1:], np.float32)
        d = self._difference  # one image's a - b, reused: no batch-sized temporary to allocate and free
        if dequantize is not None and (self._dequantized is None or self._dequantized.shape != a.shape[1:]):
            self._dequantized = np.empty(a.shape[1:], np.float32)
        biggest = 0.0
        for i in range(n):
            b_i = b[i] if dequantize is None else dequantize_into(b[i], *dequantize, out=self._dequantized)
            np.subtract(a[i], b_i, out=d)
            # Sums of squares per map without squared copies (float32 per map, float64 across maps).
            self.error += np.einsum("cm,cm->c", d, d)
            self.signal += np.einsum("cm,cm->c", a[i], a[i])
            self.other += np.einsum("cm,cm->c", b_i, b_i)
            if d.size:
                high, low = float(d.max()), float(d.min())  # NaN in, NaN out: caught below
                biggest = max(biggest, high, -low) if math.isfinite(high) and math.isfinite(low) else math.inf
        if a.size:
            high, low = float(a.max()), float(a.min())
            signal = max(high, -low) if math.isfinite(high) and math.isfinite(low) else math.inf
            if not (math.isfinite(biggest) and math.isfinite(signal)):
                self.nonfinite = True
            self.max_abs_error = max(self.max_abs_error, biggest) if math.isfinite(biggest) else math.inf
            self.max_abs_signal = max(self.max_abs_signal, signal) if math.isfinite(signal) else math.inf
        self.images += n

    # ------------------------------------------------------------------ figures

    @property
    def exact(self) -> bool:
        return self.images > 0 and not self.nonfinite and float(self.error.sum()) == 0.0

    def sqnr_db(self) -> float | None:
        if not self.images or self.nonfinite:
            return None
        return sqnr_db(float(self.signal.sum()), float(self.error.sum()))

    def channel_sqnr_db(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = 10.0 * np.log10(self.signal / self.error)
        ratio[self.error == 0] = np.inf
        ratio[(self.error > 0) & (self.signal == 0)] = -np.inf
        return ratio

    def worst_channels(self, count: int = WORST_CHANNELS) -> list[dict]:
        """The channels with the lowest SQNR, worst first (none when the layer is exact)."""
        if not self.images or self.nonfinite:
            return []
        per_channel = self.channel_sqnr_db()
        order = np.argsort(per_channel, kind="stable")
        return [{"channel": int(i), "sqnr_db": _db(per_channel[i])} for i in order[:count]
                if math.isfinite(per_channel[i]) or per_channel[i] < 0]

    def loudest_error_channels(self, count: int) -> list[int]:
        """The channels that carry the most error power, largest first (where most of the noise is)."""
        if not self.images or self.nonfinite:
            return []
        order = np.argsort(-self.error, kind="stable")
        return [int(i) for i in order[:count] if self.error[i] > 0]

    def cosine(self) -> float | None:
        if not self.images or self.nonfinite:
            return None
        a2, b2, d2 = float(self.signal.sum()), float(self.other.sum()), float(self.error.sum())
        if a2 == 0.0 and b2 == 0.0:
            return 1.0
        if a2 == 0.0 or b2 == 0.0:
            return 0.0
        return max(-1.0, min(1.0, (a2 + b2 - d2) / (2.0 * math.sqrt(a2 * b2))))

    def max_rel_error(self) -> float | None:
        if not self.images or self.nonfinite:
            return None
        if self.max_abs_error == 0.0:
            return 0.0
        return self.max_abs_error / self.max_abs_signal if self.max_abs_signal > 0 else math.inf


def _db(value: float):
    """A dB figure for JSON: a number, or the strings "inf" / "-inf"."""
    value = float(value)
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return round(value, 3)


def db_json(value: float | None):
    return None if value is None else _db(value)
