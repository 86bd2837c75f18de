"""Images in, model-ready arrays out: loading, presets, and the metadata that names them.

The transform is always ``(pixel_in_colour_order * scale - mean) / std`` on
0..255 pixels, so the four presets below, and any custom one a converter
stamps into the model, are data rather than code paths.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .errors import InspectorError
from . import metadata as md

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image as PILImage

# Pillow's own default is about 89 Mpx with a warning at that size and an
# error at twice it. We set the limit deliberately and make it an error at
# the limit itself: a 64-Mpx RGB image is 192 MB decoded, enough for any photo.
MAX_IMAGE_PIXELS = 64_000_000

PRESET_NAMES = ("caffe", "torch", "tf", "raw")


@dataclass(frozen=True)
class Preprocess:
    """How a model wants its pixels. Serialised as JSON under ``inspector.preprocess``."""

    mode: str
    color_order: str = "RGB"
    scale: float = 1.0
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    input_size: tuple[int, int] | None = None  # (H, W) the model was trained at
    description: str = field(default="", compare=False)

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """``rgb``: (H, W, 3) or (H, W, 1) uint8/float 0..255. Returns float32 HWC."""
        x = rgb.astype(np.float32)
        if x.shape[-1] == 3 and self.color_order.upper() == "BGR":
            x = x[..., ::-1]
        channels = x.shape[-1]
        mean = np.asarray(self.mean, dtype=np.float32)[:channels]
        std = np.asarray(self.std, dtype=np.float32)[:channels]
        if channels == 1:  # a grayscale model: use the first (or only) statistic
            mean, std = mean[:1], std[:1]
        return ((x * np.float32(self.scale) - mean) / std).astype(np.float32)

    def to_json(self) -> str:
        data = asdict(self)
        data["mean"] = list(self.mean)
        data["std"] = list(self.std)
        data["input_size"] = list(self.input_size) if self.input_size else None
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Preprocess":
        try:
            data = json.loads(text)
            size = data.get("input_size")
            return cls(
                mode=str(data["mode"]),
                color_order=str(data.get("color_order", "RGB")).upper(),
                scale=float(data.get("scale", 1.0)),
                mean=tuple(float(v) for v in data.get("mean", (0.0, 0.0, 0.0))),
                std=tuple(float(v) for v in data.get("std", (1.0, 1.0, 1.0))),
                input_size=(int(size[0]), int(size[1])) if size else None,
                description=str(data.get("description", "")),
            )
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise InspectorError(
                f"the model's '{md.PREPROCESS}' metadata is not valid ({exc}); "
                "pass --preprocess caffe|torch|tf|raw to override it"
            ) from None

    def with_size(self, size: tuple[int, int] | None) -> "Preprocess":
        return Preprocess(self.mode, self.color_order, self.scale, self.mean, self.std,
                          size, self.description)


def preset(name: str, input_size: tuple[int, int] | None = None) -> Preprocess:
    """The named preset: caffe, torch, tf or raw (the Keras ``preprocess_input`` modes)."""
    name = name.lower()
    if name == "caffe":
        return Preprocess("caffe", "BGR", 1.0, (103.939, 116.779, 123.68), (1.0, 1.0, 1.0),
                          input_size, "RGB->BGR, subtract the ImageNet BGR mean")
    if name == "torch":
        return Preprocess("torch", "RGB", 1 / 255.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                          input_size, "/255, then ImageNet mean/std")
    if name == "tf":
        return Preprocess("tf", "RGB", 1 / 127.5, (1.0, 1.0, 1.0), (1.0, 1.0, 1.0),
                          input_size, "scale to [-1, 1]")
    if name == "raw":
        return Preprocess("raw", "RGB", 1 / 255.0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0),
                          input_size, "/255")
    raise InspectorError(f"unknown preprocessing '{name}': choose one of {', '.join(PRESET_NAMES)}")


def from_metadata(props: dict[str, str]) -> Preprocess | None:
    """The preprocessing a converter stamped into the model, or None if it did not."""
    raw = props.get(md.PREPROCESS)
    if raw is None:
        return None
    spec = Preprocess.from_json(raw)
    if spec.mode == "unknown":
        return None
    return spec


# --------------------------------------------------------------------------- images

def _open(path: str | os.PathLike) -> "PILImage.Image":
    from PIL import Image, ImageFile

    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InspectorError(f"image not found: {path}")
    if os.path.isdir(path):
        raise InspectorError(f"image path is a directory, not an image: {path}")
    try:
        with warnings.catch_warnings():
            # At or above the limit Pillow only warns; make it the refusal it should be.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
            img.size  # noqa: B018  (header parsed: size known before any decode)
    except Image.DecompressionBombError as exc:
        raise InspectorError(f"image refused as a possible decompression bomb: {path} ({exc})") from None
    except Image.DecompressionBombWarning as exc:
        raise InspectorError(f"image refused as a possible decompression bomb: {path} ({exc})") from None
    except PermissionError:
        raise InspectorError(f"image cannot be read (permission denied): {path}") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise InspectorError(f"not an image Pillow can read: {path} ({exc.__class__.__name__}: {exc})") from None
    return img


def load_image(path: str | os.PathLike, size: tuple[int, int], channels: int = 3) -> np.ndarray:
    """Decode ``path`` to a (H, W, channels) uint8 array of the given (H, W) size.

    Grayscale, 16-bit, palette, RGBA, CMYK, EXIF-rotated and animated images
    all work (first frame, rotation applied). A huge photo never sits in
    memory at full size more than once: JPEGs are decoded at a reduced scale
    (``draft``), RGB and gray images are resized before any conversion, and
    the EXIF rotation is applied to the small result.
    """
    from PIL import Image

    height, width = size
    if height * width > MAX_IMAGE_PIXELS:
        raise InspectorError(
            f"input size {height}x{width} is too large (over {MAX_IMAGE_PIXELS:,} pixels); "
            "pass a smaller --size or check the model's input shape")
    img = source = _open(path)
    mode = "RGB" if channels == 3 else "L"
    try:
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)
        orientation = _orientation(img)
        # Size to resize to before the rotation: a quarter turn (5..8) swaps the axes.
        stored = (width, height) if orientation in (5, 6, 7, 8) else (height, width)
        if img.format == "JPEG":
            # Decode at the smallest 1/2^k scale still at least the target size.
            img.draft(mode, (stored[1], stored[0]))
        img = _to_8bit(img)
        if img.mode not in ("RGB", "L"):  # palette, alpha, CMYK...: convert at full size first
            img = img.convert(mode)
        if img.size != (stored[1], stored[0]):
            img = img.resize((stored[1], stored[0]), Image.Resampling.BILINEAR)
        if img.mode != mode:
            img = img.convert(mode)
        if _exif_transpose(orientation) is not None:
            img = img.transpose(_exif_transpose(orientation))
        arr = np.asarray(img, dtype=np.uint8)
    except Image.DecompressionBombError as exc:
        raise InspectorError(f"image refused as a possible decompression bomb: {path} ({exc})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InspectorError(
            f"image could not be decoded (truncated or corrupt?): {os.fspath(path)} ({exc})"
        ) from None
    finally:
        img.close()
        source.close()  # img may be a converted copy; the file is held by the source
    if arr.ndim == 2:
        arr = arr[..., None]
    return arr


def _orientation(img: "PILImage.Image") -> int:
    try:
        return int(img.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF block must not stop the picture
        return 1


def _exif_transpose(orientation: int):
    """The Pillow transpose that shows an image with this EXIF orientation upright (None: as stored)."""
    from PIL import Image

    t = Image.Transpose
    return {2: t.FLIP_LEFT_RIGHT, 3: t.ROTATE_180, 4: t.FLIP_TOP_BOTTOM, 5: t.TRANSPOSE,
            6: t.ROTATE_270, 7: t.TRANSVERSE, 8: t.ROTATE_90}.get(orientation)


def _to_8bit(img: "PILImage.Image") -> "PILImage.Image":
    """16-bit and float images scaled to 0..255 (Pillow's convert would clip them)."""
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16"):
            arr = arr / 257.0
        elif arr.size and arr.max() > 255:
            arr = arr * (255.0 / (65535.0 if arr.max() <= 65535 else arr.max()))
        return Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8), mode="L")
    return img
