"""One layer's maps of both models side by side for one image: A, B and |A - B|, one row per channel.

Per row, A and B share one colour scale (the range of both), and |A - B| is drawn on a scale
from 0 to that same range, so a pale difference tile is a small error and a bright one an error
as large as the signal.
"""

from __future__ import annotations

import numpy as np

from ..render import Grid, _apply_lut, _drawable, colormap_lut

DEFAULT_ROWS = 4


def picture_rows(stats, rows: int = DEFAULT_ROWS) -> list[int]:
    """Half the rows for the lowest-SQNR channels, the rest for the channels carrying the most error."""
    worst = [c["channel"] for c in stats.worst_channels(max(1, rows // 2))]
    loud = [c for c in stats.loudest_error_channels(rows) if c not in worst]
    return (worst + loud)[:rows]


def side_by_side(map_a: np.ndarray, map_b: np.ndarray, channels: list[int], *, layer_name: str,
                 name_a: str, name_b: str, sqnr_text: str, image_name: str = "", cmap: str = "viridis",
                 diff_cmap: str = "magma") -> Grid:
    """``map_a``, ``map_b``: (C, H, W) of one image; ``channels``: the rows to show (worst first)."""
    lut, diff_lut = colormap_lut(cmap), colormap_lut(diff_cmap)
    tiles, labels = [], []
    for channel in channels:
        a, b = _drawable(map_a[channel]), _drawable(map_b[channel])
        lo = float(min(a.min(), b.min())) if a.size else 0.0
        hi = float(max(a.max(), b.max())) if a.size else 0.0
        span = hi - lo if hi > lo else 1.0
        tiles += [_apply_lut(np.clip((a - lo) / span, 0, 1), lut), _apply_lut(np.clip((b - lo) / span, 0, 1), lut),
                  _apply_lut(np.clip(np.abs(a - b) / span, 0, 1), diff_lut)]
        labels += [f"ch {channel}: A", f"ch {channel}: B", f"ch {channel}: |A-B|"]
    title = f"{layer_name}  ·  A {name_a}  against  B {name_b}"
    subtitle = (f"SQNR {sqnr_text} dB" + (f"  ·  {image_name}" if image_name else "")
                + "  ·  rows: lowest-SQNR, then largest-error channels")
    return Grid(np.stack(tiles) if tiles else np.zeros((0, 1, 1, 3), np.uint8), labels, title, subtitle, 3,
                ("|A-B|: 0", "the row's A/B range"), diff_lut)


def save_side_by_side(grid: Grid, path) -> tuple[int, int]:
    from ..render import save_png

    return save_png(grid, path, min_tile=96, max_tile=200)
