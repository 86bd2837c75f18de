"""Every kind of image a person might pass decodes to the pixels they see."""

import numpy as np
import pytest
from PIL import Image

from inspector.preprocess import load_image

SIZE = (12, 16)  # (H, W)


def gradient():
    y, x = np.mgrid[0:SIZE[0], 0:SIZE[1]]
    return np.stack([x * 15, y * 20, (x + y) * 8], -1).astype(np.uint8)


def test_rgb_png_round_trips(tmp_path):
    path = tmp_path / "rgb.png"
    Image.fromarray(gradient()).save(path)
    np.testing.assert_array_equal(load_image(path, SIZE), gradient())


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = gradient()[..., 0]
    path = tmp_path / "gray.png"
    Image.fromarray(gray, "L").save(path)
    out = load_image(path, SIZE)
    assert out.shape == (*SIZE, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)
    assert load_image(path, SIZE, channels=1).shape == (*SIZE, 1)


def test_16bit_is_scaled_not_clipped(tmp_path):
    wide = (gradient()[..., 0].astype(np.uint16) * 257)
    path = tmp_path / "deep.png"
    Image.fromarray(wide).save(path)
    with Image.open(path) as check:
        assert check.mode.startswith("I")
    out = load_image(path, SIZE)
    np.testing.assert_array_equal(out[..., 0], gradient()[..., 0])


def test_rgba_palette_and_cmyk(tmp_path):
    rgb = gradient()
    rgba = np.dstack([rgb, np.full(SIZE, 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(load_image(tmp_path / "a.png", SIZE), rgb)
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(tmp_path / "p.png")
    assert np.abs(load_image(tmp_path / "p.png", SIZE).astype(int) - rgb).mean() < 8
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    assert np.abs(load_image(tmp_path / "c.jpg", SIZE).astype(int) - rgb).mean() < 12


def test_exif_rotation_is_applied(tmp_path):
    upright = gradient()  # 12 x 16
    stored = np.rot90(upright, k=1)  # stored rotated 90 deg counter-clockwise: 16 x 12
    image = Image.fromarray(np.ascontiguousarray(stored))
    exif = image.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    image.save(tmp_path / "rot.jpg", exif=exif, quality=100)
    out = load_image(tmp_path / "rot.jpg", SIZE)
    assert np.abs(out.astype(int) - upright).mean() < 6


def test_animated_gif_uses_first_frame(tmp_path):
    frames = [Image.fromarray(np.full((*SIZE, 3), v, np.uint8)) for v in (10, 200)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    out = load_image(tmp_path / "anim.gif", SIZE)
    assert abs(int(out.mean()) - 10) <= 2


def test_resize_to_requested_size(tmp_path):
    Image.fromarray(gradient()).save(tmp_path / "g.png")
    assert load_image(tmp_path / "g.png", (224, 200)).shape == (224, 200, 3)


@pytest.mark.parametrize("content", [b"", b"GIF89a\x00", b"not an image at all"])
def test_garbage_is_an_input_error(tmp_path, content):
    from inspector.errors import InspectorError

    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(InspectorError):
        load_image(path, SIZE)
