"""Images in, model-ready arrays out: loading, presets, and the metadata that names them.

The transform is always ``(pixel_in_colour_order * scale - mean) / std`` on
0..255 pixels, so the four presets below, and any custom one a converter
stamps into the model, are data rather than code paths.
"""

from __future__ import annotations

import io
import json
import math
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

PRESET_NAMES = ("caffe", "torch", "tf", "raw", "bgr255")
# What a file that says nothing about its preprocessing is run with (disclosed on every output):
# ImageNet mean/std on /255 RGB pixels, the most common convention of the CNNs one meets.
GUESSED_PRESET = "torch"
SOURCES = ("flag", "metadata", "exporter", "inferred", "guessed")  # in the order inspector.inputs tries them


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
    def from_json(cls, text: str, what: str | None = None) -> "Preprocess":
        label = what or f"the model's '{md.PREPROCESS}' metadata"
        hint = "" if what else "; pass --preprocess caffe|torch|tf|raw to override it"
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise TypeError(f"a JSON object is needed, not {type(data).__name__}")
            size = data.get("input_size")
            spec = cls(
                mode=str(data["mode"]),
                color_order=str(data.get("color_order", "RGB")).upper(),
                scale=float(data.get("scale", 1.0)),
                mean=tuple(float(v) for v in data.get("mean", (0.0, 0.0, 0.0))),
                std=tuple(float(v) for v in data.get("std", (1.0, 1.0, 1.0))),
                input_size=(int(size[0]), int(size[1])) if size else None,
                description=str(data.get("description", "")),
            )
        except (ValueError, KeyError, TypeError, IndexError, OverflowError, RecursionError) as exc:
            raise InspectorError(f"{label} is not valid ({exc}){hint}") from None
        # Metadata is untrusted like the rest of the file: the same checks as a --preprocess flag.
        return spec if spec.mode == "unknown" else _checked(spec, label, hint)

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
    if name == "bgr255":
        return Preprocess("bgr255", "BGR", 1.0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0),
                          input_size, "BGR pixels 0..255, no mean")
    raise InspectorError(f"unknown preprocessing '{name}': choose one of {', '.join(PRESET_NAMES)}, "
                         "or give your own as 'order=BGR;scale=1;mean=0,0,0;std=1' (see --help)")


_KEYS = {"order": "color_order", "color_order": "color_order", "scale": "scale", "mean": "mean", "std": "std"}


def parse_preprocess(text: str) -> Preprocess:
    """A preset name, a preset with overrides, ``key=value`` pairs, or a JSON object.

    ``caffe``; ``torch;order=BGR``; ``order=BGR;scale=1;mean=0,0,0;std=1`` (pairs separated by ``;``
    or spaces, numbers of mean and std by commas, unset keys from ``raw``); ``{"color_order": "BGR",
    "scale": 1, "mean": [0, 0, 0], "std": [1, 1, 1]}``.
    """
    text = text.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise InspectorError(f"--preprocess JSON is not valid ({exc})") from None
        if not isinstance(data, dict):
            raise InspectorError("--preprocess JSON must be an object such as {\"scale\": 1}")
        data.setdefault("mode", "custom")
        return _checked(Preprocess.from_json(json.dumps(data), what="--preprocess"))
    parts = [p for chunk in text.replace(" ", ";").split(";") for p in [chunk.strip()] if p]
    if not parts:
        raise InspectorError("--preprocess is empty; choose a preset (" + ", ".join(PRESET_NAMES) + ")")
    if "=" not in parts[0]:
        base, parts = preset(parts[0]), parts[1:]
        if not parts:
            return base
    else:
        base = preset("raw")
    values = {"color_order": base.color_order, "scale": base.scale, "mean": base.mean, "std": base.std}
    for part in parts:
        key, _, value = part.partition("=")
        field_name = _KEYS.get(key.strip().lower())
        if field_name is None or not value:
            raise InspectorError(f"--preprocess: '{part}' is not key=value with a key among order, scale, mean, std")
        try:
            if field_name == "color_order":
                values[field_name] = value.strip().upper()
            elif field_name == "scale":
                values[field_name] = _number(value)
            else:
                numbers = tuple(_number(v) for v in value.split(","))
                values[field_name] = numbers * 3 if len(numbers) == 1 else numbers
        except ValueError as exc:
            raise InspectorError(f"--preprocess: '{part}' has a value that is not a number ({exc}; "
                                 "fractions such as 1/255 work)") from None
    return _checked(Preprocess("custom", values["color_order"], values["scale"], tuple(values["mean"]),
                               tuple(values["std"]), None,
                               f"custom: {values['color_order']} x {values['scale']:g}, mean "
                               f"{', '.join(f'{v:g}' for v in values['mean'])}, std "
                               f"{', '.join(f'{v:g}' for v in values['std'])}"))


def _number(text: str) -> float:
    text = text.strip()
    if "/" in text:
        top, _, bottom = text.partition("/")
        if float(bottom) == 0:  # ZeroDivisionError is no ValueError: '1/0' was an unexpected error
            raise ValueError(f"'{text}' divides by zero")
        return float(top) / float(bottom)
    return float(text)


def _checked(spec: Preprocess, label: str = "--preprocess", hint: str = "") -> Preprocess:
    """Refuse what would make every pixel NaN or infinite (NaN, 0 std, overflow) or cannot apply."""
    if spec.color_order not in ("RGB", "BGR"):
        raise InspectorError(f"{label}: colour order must be RGB or BGR, not '{spec.color_order}'{hint}")
    if len(spec.mean) not in (1, 3) or len(spec.std) not in (1, 3):
        raise InspectorError(f"{label}: mean and std take 1 or 3 numbers{hint}")
    values = (spec.scale, *spec.mean, *spec.std)
    if any(v == 0 for v in spec.std) or not all(math.isfinite(v) and abs(v) <= _FLOAT32_MAX for v in values):
        raise InspectorError(f"{label}: std must not be 0 and every value must be a finite number "
                             f"(within float32's +-3e38){hint}")
    mean = spec.mean * 3 if len(spec.mean) == 1 else spec.mean
    std = spec.std * 3 if len(spec.std) == 1 else spec.std
    if any((255 * abs(spec.scale) + abs(m)) / abs(d) > _FLOAT32_MAX for m, d in zip(mean, std)):
        raise InspectorError(f"{label}: scale, mean and std would turn pixels into infinities (beyond float32); "
                             f"use values near the usual 1/255, 0..255, 0.2..255{hint}")
    return Preprocess(spec.mode, spec.color_order, spec.scale, tuple(mean), tuple(std), spec.input_size,
                      spec.description)


_FLOAT32_MAX = 3.0e38


# --------------------------------------------------------------------- what exporters say

def from_exporter(props: dict[str, str], model_proto=None) -> Preprocess | None:
    """Preprocessing that a well-known exporter's own metadata implies, or None.

    - Ultralytics (YOLOv5u/v8/11, RT-DETR exports: ``author`` Ultralytics or ``imgsz`` + ``stride`` +
      ``names``): RGB / 255 at ``imgsz``, letterboxed by Ultralytics itself (here: resized).
    - RapidOCR / PaddleOCR recognisers (paddle2onnx, a ``character`` key listing the alphabet):
      (x / 255 - 0.5) / 0.5 at height 48, the width following the image's aspect ratio.
    """
    if props.get("author", "").strip().lower() == "ultralytics" or {"imgsz", "stride", "names"} <= set(props):
        size = _literal(props.get("imgsz"))
        if isinstance(size, int):
            size = [size, size]
        input_size = None
        if isinstance(size, (list, tuple)) and len(size) == 2 and all(type(v) is int and v > 0 for v in size):
            input_size = (int(size[0]), int(size[1]))
        return Preprocess("raw", "RGB", 1 / 255.0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), input_size,
                          "/255 RGB (Ultralytics export metadata)")
    if "character" in props:
        return Preprocess("tf", "RGB", 1 / 127.5, (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), (48, 0),
                          "(x/255 - 0.5)/0.5 at height 48 (PaddleOCR recogniser: 'character' metadata)")
    return None


def class_names(props: dict[str, str]) -> list[str] | None:
    """Class names from our converters' metadata or an exporter's (Ultralytics ``names``), or None."""
    names = md.json_value(props, md.CLASS_NAMES)
    if isinstance(names, list) and all(isinstance(n, str) for n in names):
        return names
    raw = _literal(props.get("names"))
    # Keys 0..n-1 exactly: a hostile {10**9: 'a'} must not become a list of a billion names.
    if isinstance(raw, dict) and raw and set(raw) == set(range(len(raw))):
        return [str(raw[i]) for i in range(len(raw))]
    if isinstance(raw, list) and all(isinstance(n, str) for n in raw):
        return list(raw)
    return None


def _literal(text):
    """A Python/JSON literal from metadata, parsed safely (ast.literal_eval, size-capped), or None."""
    import ast

    if not text or len(text) > 1_000_000:
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return None


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

class EncodedImage(str):
    """An image that is not a file of its own (a tar shard's member): its label, and ``read()`` its bytes.

    A ``str`` (its label) so that lists of images, skip reports and JSON take it as they take a path;
    only ``_open`` reads it, through ``read()``: it is never opened, joined or extracted as a path.
    """

    def read(self) -> bytes:
        raise NotImplementedError


def _open(path: str | os.PathLike) -> "PILImage.Image":
    from PIL import Image, ImageFile

    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    # Images held in memory (the explorer's uploads, a tar shard's members): no file to check.
    if isinstance(path, io.BytesIO):
        source, path = path, "uploaded image"
    elif isinstance(path, EncodedImage):
        source = None  # its bytes are read inside the try below: a read error is the image's, said in one line
    else:
        source = path = os.fspath(path)
        if not os.path.exists(path):
            raise InspectorError(f"image not found: {path}")
        if os.path.isdir(path):
            raise InspectorError(f"image path is a directory, not an image: {path}")
    try:
        with warnings.catch_warnings():
            # At or above the limit Pillow only warns; make it the refusal it should be.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(path.read()) if source is None else source)
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


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(H, W) of an image as shown (EXIF rotation applied), from its header."""
    img = _open(path)
    try:
        width, height = img.size
        if _orientation(img) in (5, 6, 7, 8):
            width, height = height, width
    finally:
        img.close()
    return height, width


def _label(path) -> str:
    return "uploaded image" if isinstance(path, io.BytesIO) else os.fspath(path)


def load_image(path: "str | os.PathLike | io.BytesIO", size: tuple[int, int], channels: int = 3) -> np.ndarray:
    """Decode ``path`` (or an image held in an ``io.BytesIO``) to a (H, W, channels) uint8 array of the given
    (H, W) size, under the same decompression-bomb limits.

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
        raise InspectorError(f"image refused as a possible decompression bomb: {_label(path)} ({exc})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InspectorError(
            f"image could not be decoded (truncated or corrupt?): {_label(path)} ({exc})"
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
