"""The CAM picture: the photo as the model saw it, and the heatmap over it, under a title."""

from __future__ import annotations

import io

import numpy as np

from ..render import BACKGROUND, INK, MARGIN, MUTED, WARNING, _font, colormap_lut

PANEL_MIN, PANEL_MAX = 256, 448
ALPHA = 0.5  # heatmap weight in the overlay
CMAP = "jet"


def overlay(photo: np.ndarray, cam: np.ndarray, alpha: float = ALPHA, cmap: str = CMAP) -> np.ndarray:
    """(H, W, 3) uint8: the heatmap of ``cam`` in [0, 1] blended over ``photo``."""
    heat = colormap_lut(cmap)[(np.clip(cam, 0, 1) * 255).round().astype(np.uint8)].astype(np.float32)
    return (photo.astype(np.float32) * (1 - alpha) + heat * alpha).round().astype(np.uint8)


def title(result) -> tuple[str, str]:
    target = f"target {result.target_label}" if result.target_label else "class-agnostic (no target)"
    score = f"  ·  score {result.score:.4g}" if result.score is not None else ""
    line1 = f"{result.model_name}  ·  {result.layer}  ·  {result.method}"
    c, h, w = result.layer_shape
    image = f"image {result.image_name}  ·  " if result.image_name else ""
    line2 = f"{target}{score}  ·  {image}maps {c}x{h}x{w}"
    return line1, line2


def draw(result):
    from PIL import Image, ImageDraw

    height, width = result.cam.shape
    longest = max(height, width)
    factor = min(max(1.0, PANEL_MIN / longest), PANEL_MAX / longest) if longest < PANEL_MIN or longest > PANEL_MAX else 1.0
    shown = (max(1, round(width * factor)), max(1, round(height * factor)))
    photo = Image.fromarray(result.photo, "RGB").resize(shown, Image.Resampling.BILINEAR)
    blended = Image.fromarray(overlay(result.photo, result.cam), "RGB").resize(shown, Image.Resampling.BILINEAR)
    line1, line2 = title(result)
    warnings = []
    if result.untrained:
        warnings.append("UNTRAINED MODEL: random weights, this map means nothing")
    warnings += result.notes
    big, small = _font(16), _font(12)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = max([measure.textlength(line1, font=big), *(measure.textlength(t, font=small) for t in [line2, *warnings])])
    top = 50 + 18 * len(warnings)
    bar_h = 30
    canvas_w = int(max(2 * shown[0] + 3 * MARGIN, text_w + 2 * MARGIN))
    canvas = Image.new("RGB", (canvas_w, top + shown[1] + bar_h + MARGIN), BACKGROUND)
    draw_ = ImageDraw.Draw(canvas)
    draw_.text((MARGIN, 8), line1, fill=INK, font=big)
    draw_.text((MARGIN, 30), line2, fill=MUTED, font=small)
    for i, text in enumerate(warnings):
        draw_.text((MARGIN, 48 + 18 * i), text, fill=WARNING, font=small)
    canvas.paste(photo, (MARGIN, top))
    canvas.paste(blended, (2 * MARGIN + shown[0], top))
    y = top + shown[1] + 8
    draw_.text((MARGIN, y), "low", fill=MUTED, font=small)
    ramp = colormap_lut(CMAP)[np.linspace(0, 255, 256).astype(int)][None].repeat(12, axis=0)
    canvas.paste(Image.fromarray(np.ascontiguousarray(ramp), "RGB"), (MARGIN + 34, y + 2))
    draw_.text((MARGIN + 34 + 264, y), "high attribution (scaled to [0, 1])", fill=MUTED, font=small)
    return canvas


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def save(result, path) -> tuple[int, int]:
    from ..atomic import atomic_path

    image = draw(result)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", compress_level=6)
    return image.size
