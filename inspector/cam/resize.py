"""Bilinear resizing of maps as two small matrix products, and min-max scaling.

Pixel centres are aligned as Pillow and OpenCV align them (half-pixel: source
coordinate ``(i + 0.5) * in / out - 0.5``, clamped at the borders), so a map
upsampled to the input lies over the photo the way the photo was resized.
"""

from __future__ import annotations

import numpy as np


def interpolation_matrix(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) float32 matrix M with ``M @ x`` the bilinear resize of a 1-D signal x."""
    matrix = np.zeros((size_out, size_in), np.float32)
    source = (np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5
    source = np.clip(source, 0, size_in - 1)
    low = np.floor(source).astype(int)
    high = np.minimum(low + 1, size_in - 1)
    frac = (source - low).astype(np.float32)
    rows = np.arange(size_out)
    np.add.at(matrix, (rows, low), 1 - frac)
    np.add.at(matrix, (rows, high), frac)
    return matrix


def upsample(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(C, h, w) or (h, w) -> (C, H, W) or (H, W) float32, bilinear."""
    rows = interpolation_matrix(maps.shape[-2], size[0])
    cols = interpolation_matrix(maps.shape[-1], size[1])
    values = np.asarray(maps, np.float32)
    if values.ndim == 2:
        return rows @ values @ cols.T
    return np.einsum("Hh,chw,Ww->cHW", rows, values, cols, optimize=True).astype(np.float32, copy=False)


def min_max(values: np.ndarray, axis=None) -> np.ndarray:
    """Scaled to [0, 1] over ``axis`` (all by default); a constant array becomes zeros, never NaN."""
    values = np.asarray(values, np.float32)
    low = values.min(axis=axis, keepdims=True)
    span = values.max(axis=axis, keepdims=True) - low
    return np.where(span > 0, (values - low) / np.where(span > 0, span, 1), 0).astype(np.float32)
