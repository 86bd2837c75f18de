"""The ONNX ``metadata_props`` keys that our converters write and the inspector reads.

Every key is namespaced ``inspector.``; values are strings, JSON where noted.
The README documents them; converters/ and the inspector both import the names
from here so that they cannot drift apart.
"""

from __future__ import annotations

import json
from typing import Any

PREFIX = "inspector."

SOURCE_FRAMEWORK = "inspector.source_framework"  # "keras" | "torch"
SOURCE_VERSION = "inspector.source_version"  # e.g. "keras 3.15.1; tensorflow 2.21.0"
CONVERTER = "inspector.converter"  # e.g. "tf2onnx 1.17.0" or "torch.onnx 2.13.0"
CONVERTER_VERSION = "inspector.converter_version"  # inspector's own version
MODEL_NAME = "inspector.model_name"  # e.g. "vgg16"
INPUT_LAYOUT = "inspector.input_layout"  # "NHWC" | "NCHW"
PREPROCESS = "inspector.preprocess"  # JSON, see inspector.preprocess.Preprocess
CLASS_NAMES = "inspector.class_names"  # JSON list of strings, index = class id
WEIGHTS_TRAINED = "inspector.weights_trained"  # "true" | "false"
WEIGHTS_SOURCE = "inspector.weights_source"  # "imagenet", a file name, or "random"
INPUT_QUANTIZATION = "inspector.input_quantization"  # JSON {scale, zero_point, dtype}: a TFLite int8 file's input
OUTPUT_QUANTIZATION = "inspector.output_quantization"  # JSON [{output, scale, zero_point, dtype}]
TFLITE_PRECISION = "inspector.tflite_precision"  # "float32" | "float16" | "int8" | "int8 weights (dynamic range)"

ALL_KEYS = (
    SOURCE_FRAMEWORK,
    SOURCE_VERSION,
    CONVERTER,
    CONVERTER_VERSION,
    MODEL_NAME,
    INPUT_LAYOUT,
    PREPROCESS,
    CLASS_NAMES,
    WEIGHTS_TRAINED,
    WEIGHTS_SOURCE,
    INPUT_QUANTIZATION,
    OUTPUT_QUANTIZATION,
    TFLITE_PRECISION,
)


def json_value(props: dict[str, str], key: str) -> Any | None:
    """The JSON-decoded value of ``key``, or None when absent or not valid JSON."""
    raw = props.get(key)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
        return None


def json_object(props: dict[str, str], key: str) -> dict:
    """The JSON object under ``key``; {} when absent, not JSON, or another JSON value (a list, a number)."""
    value = json_value(props, key)
    return value if isinstance(value, dict) else {}


def weights_untrained(props: dict[str, str]) -> bool:
    """True when the converter said the weights are random (pictures must say so)."""
    return props.get(WEIGHTS_TRAINED, "").strip().lower() == "false"
