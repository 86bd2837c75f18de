"""The fast drawing path gives the same pictures: stored colour tables, chunked colouring, our PNG writer."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from PIL import Image

import builders as b
from inspector import colormaps, render
from inspector.errors import InspectorError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_stored_colour_tables_are_matplotlibs():
    """Every table in colormaps.npz equals what the installed matplotlib computes, and none is missing
    (else: python -m inspector.colormaps)."""
    from matplotlib import colormaps as registered

    with np.load(colormaps.TABLE) as data:
        stored = set(data.files)
    assert stored == set(registered)
    for name in sorted(stored):
        reference = (registered[name](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)
        np.testing.assert_array_equal(colormaps.lut(name), reference, err_msg=name)


def test_unknown_colour_map_names_close_ones():
    with pytest.raises(InspectorError, match="unknown colour map 'viridiss'; did you mean viridis"):
        colormaps.lut("viridiss")


def _reference_tiles(values, lut, per_tile):
    """What the drawing did before: normalise, then lut[(scaled * 255).round()], written out in NumPy."""
    values = values.astype(np.float32)
    axes = tuple(range(1, values.ndim))
    lo = values.min(axis=axes, keepdims=True) if per_tile else values.min()
    hi = values.max(axis=axes, keepdims=True) if per_tile else values.max()
    span = np.where(hi - lo > 0, hi - lo, np.float32(1.0)).astype(np.float32)
    scaled = np.clip((values - lo) / span, 0.0, 1.0)
    return lut[(scaled * 255).round().astype(np.uint8)]


@pytest.mark.parametrize("per_tile", [True, False])
@pytest.mark.parametrize("shape", [(64, 224, 224), (3, 5, 7), (1, 1, 1), (40, 2, 3)])
def test_chunked_colouring_gives_the_same_colours(per_tile, shape):
    values = b.rng(1).standard_normal(shape).astype(np.float32) * 7
    values[0] = 3.0  # a constant tile: flat colour, not NaN
    lut = colormaps.lut("magma")
    tiles, lo, hi = render.coloured(values, lut, per_tile)
    np.testing.assert_array_equal(tiles, _reference_tiles(values, lut, per_tile))
    assert (lo, hi) == (float(values.min()), float(values.max()))


@pytest.mark.parametrize("size", [(1, 1), (7, 3), (300, 901)])
def test_png_writer_round_trips_through_pillow(size):
    pixels = b.rng(2).integers(0, 256, (*size, 3), dtype=np.uint8)
    data = render.png_bytes(pixels)
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        assert image.format == "PNG" and image.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(image), pixels)


def test_png_writer_falls_back_to_zlib(monkeypatch):
    import zlib

    pixels = b.rng(4).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    for data in (render.png_bytes(pixels, deflate=zlib), render.png_bytes(pixels, 6, deflate=zlib)):
        with Image.open(io.BytesIO(data)) as image:
            np.testing.assert_array_equal(np.asarray(image), pixels)
    monkeypatch.setattr(render, "_deflate", lambda: zlib)  # zlib-ng not installed
    with Image.open(io.BytesIO(render.png_bytes(pixels))) as image:
        np.testing.assert_array_equal(np.asarray(image), pixels)


def test_png_writer_refuses_what_it_cannot_write():
    with pytest.raises(ValueError, match="uint8"):
        render.png_bytes(np.zeros((2, 2, 3), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        render.png_bytes(np.zeros((2, 2), np.uint8))


def test_draw_all_keeps_the_order_and_uses_threads():
    seen = set()

    def draw(item):
        seen.add(threading.current_thread().name)
        return item * 2

    assert list(render.draw_all(draw, range(20), workers=3)) == [i * 2 for i in range(20)]
    assert all(name.startswith("draw") for name in seen)
    assert list(render.draw_all(draw, [5], workers=4)) == [10]
    assert list(render.draw_all(draw, [], workers=4)) == []


def test_maps_does_not_import_matplotlib(tmp_path, save):
    m, _ = b.conv_relu_nchw()
    path = save(m)
    photo = b.random_photo(tmp_path / "p.png")
    script = ("import sys; from inspector.cli import main; "
              "code = main(['maps', sys.argv[1], sys.argv[2], '--all', '--preprocess', 'raw', '-o', sys.argv[3]]); "
              "print(code, 'matplotlib' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script, path, photo, str(tmp_path / "out")], capture_output=True,
                          text=True, timeout=120, cwd=REPO)
    assert done.stdout.split()[-2:] == ["0", "False"], done.stderr
    assert len(os.listdir(tmp_path / "out")) == 2


@pytest.mark.parametrize("norm", ["map", "layer"])
def test_saved_map_grid_is_the_picture_drawn_the_old_way(tmp_path, norm):
    """save_maps_png's file decodes to the grid that the old colouring (fancy-indexed LUT) draws."""
    from inspector.graph import Layer

    maps = b.rng(3).standard_normal((20, 30, 30)).astype(np.float32)
    maps[maps < 0] = 0
    layer = Layer(0, "conv", "Conv", "conv", (20, 3, 3, 3), 1, 540, "y", "y")
    grid = render.map_grid(maps, layer, "m", cmap="viridis", norm=norm)
    lut = colormaps.lut("viridis")
    np.testing.assert_array_equal(grid.tiles, _reference_tiles(maps, lut, norm == "map"))
    path = tmp_path / "g.png"
    size = render.save_maps_png(grid, path)
    with Image.open(path) as image:
        assert image.size == size
        np.testing.assert_array_equal(np.asarray(image), np.asarray(grid.to_image(min_tile=64, max_tile=112)))


def _draw_text_labels(monkeypatch):
    """Labels drawn the plain way, ``ImageDraw.text`` for every tile: the reference for the cached patches."""
    from PIL import ImageDraw

    def plain(canvas, x, y, text, font):
        ImageDraw.Draw(canvas).text((x, y), text, fill=render.MUTED, font=font)

    monkeypatch.setattr(render, "_draw_label", plain)


@pytest.mark.parametrize("labels, shape", [
    ([str(i) for i in range(70)], (70, 6, 5)),            # channel numbers, nearest-neighbour upscaling
    ([f"{f}:{c}" for f in range(4) for c in range(3)], (12, 150, 90)),  # filter:channel, bilinear shrink
    (["", "W", "ÿ", "1023", "-0.5e-3", "ggjpq"], (6, 9, 9)),  # nothing drawn; wide, accented, descenders
])
def test_cached_label_patches_draw_what_draw_text_draws(monkeypatch, labels, shape):
    tiles = b.rng(5).integers(0, 256, (*shape, 3), dtype=np.uint8)
    grid = render.Grid(tiles, labels, "title", "subtitle", 8, ("low", "high"), colormaps.lut("viridis"), "warning")
    render._LABELS.clear()
    cached = [np.asarray(grid.to_image(min_tile=64, max_tile=112)) for _ in range(2)]  # rendered, then from the cache
    with monkeypatch.context() as patch:
        _draw_text_labels(patch)
        plain = np.asarray(grid.to_image(min_tile=64, max_tile=112))
    assert any(len(label) and render._LABELS[(label, 11)][2] is not None for label in labels)
    np.testing.assert_array_equal(cached[0], plain)
    np.testing.assert_array_equal(cached[1], plain)
