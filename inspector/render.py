"""Pictures: filter and feature-map grids as PNG, drawn with NumPy and Pillow.

A grid is one image: a title bar (model, layer, shape, normalisation), tiles
with their channel indices, and a colour bar. Composing the mosaic in NumPy
rather than a matplotlib subplot per tile keeps a 13-layer VGG16 run to well
under a second of drawing; matplotlib supplies only the colour maps.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from .atomic import atomic_path
from .errors import InspectorError

BACKGROUND = (250, 250, 250)
INK = (30, 30, 30)
MUTED = (110, 110, 110)
WARNING = (190, 30, 30)
GAP = 4
MARGIN = 12


def colormap_lut(name: str) -> np.ndarray:
    """(256, 3) uint8 lookup table for a matplotlib colour map name."""
    from matplotlib import colormaps

    try:
        cmap = colormaps[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, list(colormaps), n=4)
        hint = f"; did you mean {', '.join(close)}?" if close else " (e.g. viridis, gray, magma, RdBu)"
        raise InspectorError(f"unknown colour map '{name}'{hint}") from None
    return (cmap(np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)


def normalise(values: np.ndarray, per_tile: bool) -> tuple[np.ndarray, float, float]:
    """Scale to [0, 1] per tile (first axis) or over the whole array; (scaled, lo, hi).

    A constant tile maps to 0, not to NaN: a dead filter shows as flat colour.
    """
    values = values.astype(np.float32, copy=False)
    axes = tuple(range(1, values.ndim))
    if per_tile:
        lo = values.min(axis=axes, keepdims=True)
        hi = values.max(axis=axes, keepdims=True)
    else:
        lo = np.asarray(values.min(), np.float32) if values.size else np.float32(0)
        hi = np.asarray(values.max(), np.float32) if values.size else np.float32(0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    scaled = np.clip((values - lo) / span, 0.0, 1.0)
    return scaled, float(np.min(lo)) if values.size else 0.0, float(np.max(hi)) if values.size else 0.0


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


# Width a grid of few tiles may grow to: a laptop screen's worth.
WIDE = 880


@dataclass
class Grid:
    """Tiles (N, h, w, 3) uint8 plus what the picture says about them."""

    tiles: np.ndarray
    labels: list[str]
    title: str
    subtitle: str
    columns: int
    scale_text: tuple[str, str] | None
    lut: np.ndarray | None
    warning: str = ""

    def to_image(self, min_tile: int, max_tile: int):
        from PIL import Image, ImageDraw

        count, tile_h, tile_w = self.tiles.shape[:3]
        factor = max(1, math.ceil(min_tile / max(tile_h, tile_w)))
        shown_h, shown_w = tile_h * factor, tile_w * factor
        cols = max(1, min(self.columns, count))
        # Few tiles may be drawn bigger (up to their own size) while the grid stays screen-wide.
        max_tile = max(max_tile, min(max(shown_h, shown_w), WIDE // cols - GAP))
        shrink = min(1.0, max_tile / max(shown_h, shown_w))
        shown_h, shown_w = max(1, int(shown_h * shrink)), max(1, int(shown_w * shrink))
        rows = max(1, math.ceil(count / cols))
        label_font, title_font, small_font = _font(11), _font(16), _font(12)
        label_h = 14
        cell_w, cell_h = shown_w + GAP, shown_h + label_h + GAP
        title_h = 50 + (18 if self.warning else 0)
        bar_h = 34 if self.lut is not None or self.scale_text else 0
        measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        text_w = max(measure.textlength(self.title, font=title_font),
                     measure.textlength(self.subtitle, font=small_font),
                     measure.textlength(self.warning, font=small_font))
        width = int(max(MARGIN * 2 + cols * cell_w, text_w + 2 * MARGIN, 420))
        height = title_h + rows * cell_h + bar_h + MARGIN
        canvas = Image.new("RGB", (width, height), BACKGROUND)
        draw = ImageDraw.Draw(canvas)
        draw.text((MARGIN, 8), self.title, fill=INK, font=title_font)
        draw.text((MARGIN, 30), self.subtitle, fill=MUTED, font=small_font)
        if self.warning:
            draw.text((MARGIN, 48), self.warning, fill=WARNING, font=small_font)
        resample = Image.Resampling.NEAREST if shrink >= 1.0 else Image.Resampling.BILINEAR
        for i in range(count):
            row, col = divmod(i, cols)
            x = MARGIN + col * cell_w
            y = title_h + row * cell_h
            draw.text((x, y), self.labels[i], fill=MUTED, font=label_font)
            tile = Image.fromarray(self.tiles[i], "RGB")
            if tile.size != (shown_w, shown_h):
                tile = tile.resize((shown_w, shown_h), resample)
            canvas.paste(tile, (x, y + label_h))
        if bar_h:
            self._colour_bar(canvas, draw, title_h + rows * cell_h + 4, width, small_font)
        return canvas

    def _colour_bar(self, canvas, draw, top: int, width: int, font) -> None:
        from PIL import Image

        low, high = self.scale_text or ("", "")
        x = MARGIN
        draw.text((x, top + 2), low, fill=MUTED, font=font)
        x += int(draw.textlength(low, font=font)) + 8
        if self.lut is not None:
            bar_w = 256
            ramp = self.lut[np.linspace(0, 255, bar_w).astype(int)][None, :, :].repeat(12, axis=0)
            canvas.paste(Image.fromarray(np.ascontiguousarray(ramp), "RGB"), (x, top + 3))
            x += bar_w + 8
        draw.text((x, top + 2), high, fill=MUTED, font=font)


_DRAWABLE_LIMIT = 1e30  # far from float32's 3.4e38: sums and spans of clamped values cannot overflow


def _drawable(values: np.ndarray) -> np.ndarray:
    """Values safe to scale: NaN as 0 and infinite or huge values clamped, so that
    a broken model's weights or maps draw (and warn about nothing) instead of
    turning the whole grid into numpy overflow warnings and garbage."""
    values = np.asarray(values, dtype=np.float32)
    if values.size and not np.abs(values).max() <= _DRAWABLE_LIMIT:  # also true for NaN
        values = np.clip(np.nan_to_num(values, nan=0.0), -_DRAWABLE_LIMIT, _DRAWABLE_LIMIT)
    return values


def _apply_lut(scaled: np.ndarray, lut: np.ndarray) -> np.ndarray:
    return lut[(scaled * 255).round().astype(np.uint8)]


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def filter_grid(weights: np.ndarray, layer, model_name: str, *, norm: str = "layer", cmap: str = "viridis",
                max_filters: int = 64, channels: int | None = None, bgr: bool = False,
                untrained: bool = False) -> Grid:
    """Grid of a conv layer's filters (O, I, kH, kW).

    A layer with 3 input channels is drawn as RGB tiles (input channels
    reordered to RGB when the model takes BGR); deeper layers as one tile per
    filter, the mean over its input channels, or with ``channels`` the first
    N input slices of each filter in a row.
    """
    if norm not in ("filter", "layer"):
        raise InspectorError(f"unknown --norm '{norm}': use filter or layer")
    total = weights.shape[0]
    shown = _drawable(weights[: max(1, max_filters)])
    lut = None
    per_tile = norm == "filter"
    if channels is None and shown.shape[1] == 3:
        rgb = shown[:, ::-1] if bgr else shown
        scaled, lo, hi = normalise(rgb.transpose(0, 2, 3, 1), per_tile)
        tiles = (scaled * 255).round().astype(np.uint8)
        labels = [str(i) for i in range(len(tiles))]
        columns = math.ceil(math.sqrt(len(tiles)))
        how = "RGB tiles" + (" (BGR input channels shown as RGB)" if bgr else "")
    elif channels is None:
        lut = colormap_lut(cmap)
        scaled, lo, hi = normalise(shown.mean(axis=1), per_tile)
        tiles = _apply_lut(scaled, lut)
        labels = [str(i) for i in range(len(tiles))]
        columns = math.ceil(math.sqrt(len(tiles)))
        how = f"mean over {shown.shape[1]} input channels"
    else:
        lut = colormap_lut(cmap)
        n_in = max(1, min(channels, shown.shape[1]))
        slices = shown[:, :n_in]  # (F, n_in, kh, kw)
        if per_tile:  # one normalisation per filter, shared by its slices
            scaled, lo, hi = normalise(slices, True)
        else:
            scaled, lo, hi = normalise(slices, False)
        tiles = _apply_lut(scaled.reshape(-1, *slices.shape[2:]), lut)
        labels = [f"{f}:{c}" for f in range(slices.shape[0]) for c in range(n_in)]
        columns = n_in if n_in >= 3 else max(n_in, 2 * n_in)
        how = f"filter:input-channel, first {n_in} of {shown.shape[1]} input channels"
    shape = "x".join(str(d) for d in layer.weight_shape)
    title = f"{model_name}  ·  {layer.name}  ({layer.op}{', ' + layer.quantization if layer.quantization else ''})"
    subtitle = (f"weights {shape}  ·  showing {len(shown)} of {total} filters  ·  {how}  ·  "
                f"norm: {norm}" + ("" if lut is None else f"  ·  cmap {cmap}"))
    scale_text = (f"min {_fmt(lo)}", f"max {_fmt(hi)}") if not per_tile else ("low (per filter)", "high")
    warning = "UNTRAINED MODEL: random weights, these filters mean nothing" if untrained else ""
    return Grid(tiles, labels, title, subtitle, columns, scale_text, lut, warning)


def map_grid(maps: np.ndarray, layer, model_name: str, *, image_name: str = "", preprocess: str = "",
             cmap: str = "viridis", max_maps: int = 64, norm: str = "map", untrained: bool = False) -> Grid:
    """Grid of one layer's feature maps (C, H, W), one tile per channel."""
    if norm not in ("map", "layer"):
        raise InspectorError(f"unknown --norm '{norm}' for maps: use map or layer")
    if maps.ndim == 2:
        maps = maps[None]
    if maps.ndim != 3:
        raise InspectorError(f"layer '{layer.name}' output has shape {maps.shape}; expected (C, H, W)")
    total = maps.shape[0]
    shown = _drawable(maps[: max(1, max_maps)])
    lut = colormap_lut(cmap)
    scaled, lo, hi = normalise(shown, per_tile=(norm == "map"))
    tiles = _apply_lut(scaled, lut)
    zero = float((maps == 0).mean()) if maps.size else 0.0
    title = f"{model_name}  ·  {layer.name}  feature maps"
    source = f"  ·  image {image_name}" if image_name else ""
    prep = f"  ·  preprocess {preprocess}" if preprocess else ""
    subtitle = (f"{total}x{maps.shape[1]}x{maps.shape[2]}  ·  showing {len(shown)} of {total} channels"
                f"{source}{prep}  ·  zeros {zero:.0%}  ·  norm: {norm}")
    scale_text = (f"min {_fmt(lo)}", f"max {_fmt(hi)}") if norm == "layer" else ("low (per map)", "high")
    warning = "UNTRAINED MODEL: random weights, these maps mean nothing" if untrained else ""
    labels = [str(i) for i in range(len(tiles))]
    return Grid(tiles, labels, title, subtitle, math.ceil(math.sqrt(len(tiles))), scale_text, lut, warning)


def save_png(grid: Grid, path: str | os.PathLike, *, min_tile: int, max_tile: int) -> tuple[int, int]:
    """Draw and write atomically; returns the picture's (width, height)."""
    image = grid.to_image(min_tile=min_tile, max_tile=max_tile)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", compress_level=3)
    return image.size


def save_filters_png(grid: Grid, path) -> tuple[int, int]:
    return save_png(grid, path, min_tile=48, max_tile=96)


def save_maps_png(grid: Grid, path) -> tuple[int, int]:
    return save_png(grid, path, min_tile=64, max_tile=112)
