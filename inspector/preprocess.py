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
    all work (first frame, rotation applied). Large JPEGs are decoded at a
    reduced scale (``draft``) so that a huge photo never sits in memory at
    full size several times over.
    """
    from PIL import Image, ImageOps

    img = _open(path)
    height, width = size
    try:
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)
        if img.format == "JPEG":
            # Decode at the smallest 1/2^k scale still at least the target size.
            img.draft("RGB" if channels == 3 else "L", (width, height))
        img = ImageOps.exif_transpose(img) or img
        img = _to_8bit(img)
        img = img.convert("RGB" if channels == 3 else "L")
        if img.size != (width, height):
            img = img.resize((width, height), Image.Resampling.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
    except Image.DecompressionBombError as exc:
        raise InspectorError(f"image refused as a possible decompression bomb: {path} ({exc})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InspectorError(
            f"image could not be decoded (truncated or corrupt?): {os.fspath(path)} ({exc})"
        ) from None
    finally:
        img.close()
    if arr.ndim == 2:
        arr = arr[..., None]
    return arr


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
