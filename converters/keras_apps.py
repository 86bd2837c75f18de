"""What we know about ``keras.applications`` models: names, preprocessing, weights.

Preprocessing is recognised from the application name (``VGG16``) or from the
name a saved model carries (``vgg16``, ``mobilenetv2_1.00_224``...).
"""

from __future__ import annotations

import difflib
import os
import re

from inspector.errors import InspectorError
from inspector.preprocess import Preprocess, preset

DOWNLOAD_TIMEOUT_S = 30  # per socket operation while Keras fetches ImageNet weights

# Models that normalise inside the graph (Rescaling/Normalization layers): they want 0..255 RGB.
PIXELS = Preprocess("pixels", "RGB", 1.0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), None,
                    "0..255 RGB as is; the model normalises inside")

# (normalised-name prefix, preprocessing mode); first match wins, so V2 names come before V1.
_FAMILIES = (
    ("vgg16", "caffe"), ("vgg19", "caffe"),
    ("resnet50v2", "tf"), ("resnet101v2", "tf"), ("resnet152v2", "tf"),
    ("resnet50", "caffe"), ("resnet101", "caffe"), ("resnet152", "caffe"),
    ("mobilenetv3", "pixels"), ("mobilenetv2", "tf"), ("mobilenet", "tf"),
    ("inceptionresnetv2", "tf"), ("inceptionv3", "tf"), ("xception", "tf"), ("nasnet", "tf"),
    ("densenet", "torch"), ("efficientnet", "pixels"), ("convnext", "pixels"),
)


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def preprocessing_for(name: str, input_size: tuple[int, int] | None) -> Preprocess | None:
    """Known preprocessing for an application or a saved model's name, else None."""
    key = _normalise(name)
    for prefix, mode in _FAMILIES:
        if key.startswith(prefix):
            spec = PIXELS if mode == "pixels" else preset(mode)
            return spec.with_size(input_size)
    return None


def application_names() -> list[str]:
    import keras

    return sorted(n for n in dir(keras.applications) if n[:1].isupper() and callable(getattr(keras.applications, n)))


def application(name: str):
    """The ``keras.applications`` constructor called ``name`` (case-insensitive)."""
    import keras

    names = application_names()
    by_lower = {n.lower(): n for n in names}
    real = by_lower.get(name.lower())
    if real is None:
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise InspectorError(f"unknown Keras application '{name}'{hint}; valid names: {', '.join(names)}")
    return real, getattr(keras.applications, real)


def keras_cache_dir() -> str:
    base = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(base, "models")


def build_application(name: str, weights: str, include_top: bool, warn=None):
    """Build the application with 'imagenet' (Keras's own download), 'none' or a weights file."""
    real, constructor = application(name)
    if weights.lower() == "none":
        if warn:
            warn(f"{real} gets random weights (--weights none): its filters and maps show an untrained "
                 "network, and the model's metadata says so")
        return real, constructor(weights=None, include_top=include_top), "random", False
    if weights.lower() == "imagenet":
        import socket

        # Keras's download has no timeout of its own: a firewall that drops packets would hang it.
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(previous or DOWNLOAD_TIMEOUT_S)
        try:
            return real, constructor(weights="imagenet", include_top=include_top), "imagenet", True
        except Exception as exc:  # Keras raises a bare Exception for a failed download
            text = str(exc)
            url = re.search(r"https?://\S+?\.h5", text)
            if url is None and "fetch" not in text.lower() and "url" not in text.lower():
                raise
            file = os.path.basename(url.group(0)) if url else f"the {real} weights file"
            where = os.path.join(keras_cache_dir(), file).replace(os.path.expanduser("~"), "~", 1)
            origin = f" from {url.group(0)}" if url else ""
            raise InspectorError(
                f"could not download the ImageNet weights of {real} (offline?); fetch the file{origin} "
                f"and put it at {where}, or pass --weights PATH (or --weights none for random weights)") from None
        finally:
            socket.setdefaulttimeout(previous)
    path = os.path.expanduser(weights)
    if not os.path.isfile(path):
        raise InspectorError(f"weights file not found: {weights} (use --weights imagenet, none or an existing .h5 path)")
    try:
        model = constructor(weights=path, include_top=include_top)
    except Exception as exc:
        raise InspectorError(
            f"could not load {weights} as {real} weights{' without the top' if not include_top else ''} "
            f"({exc.__class__.__name__}: {str(exc).splitlines()[0][:200]}); pass a weights file saved from "
            f"the same application") from None
    return real, model, os.path.basename(path), True


def imagenet_class_names() -> list[str] | None:
    """The 1000 ImageNet class names from Keras's cached index, or None when it cannot be had."""
    import json

    try:
        from keras.src.applications import imagenet_utils
        from keras.utils import get_file

        path = get_file("imagenet_class_index.json", imagenet_utils.CLASS_INDEX_PATH, cache_subdir="models")
        with open(path) as handle:
            index = json.load(handle)
        return [index[str(k)][1] for k in range(len(index))]
    except Exception:
        return None
