"""Keras 2 files that Keras 3 refuses: read through ``tf_keras`` (the Keras 2 that TensorFlow 2.16+ ships
apart), safely.

Three kinds of file:

- a Keras 2 ``.h5``/``.hdf5`` model (``model_config`` attribute plus weights): Keras 3 is tried first (it
  reads many Keras 2.2+ files); when it refuses (Keras 2.0's list-shaped Sequential configs, old layer
  arguments), ``tf_keras`` loads it;
- a JSON architecture with its weights beside it (``model.json`` + ``model.h5``, Keras 2's
  ``model.to_json()`` + ``save_weights``): ``tf_keras.models.model_from_json`` then ``load_weights``; a
  weights-only ``.h5`` given alone is answered with the JSON file to give instead;
- anything else: Keras 3 only (``.keras`` archives).

Safety: a Lambda layer stores its function as marshalled Python bytecode, which Keras 2 (and tf_keras
reading an .h5) runs while loading, whatever ``safe_mode`` says. So before anything is deserialized, the
configuration (plain JSON read with h5py or from the file) is searched for Lambda layers, nested models
included; one found without ``--unsafe`` refuses the file in one line naming the layer and the flag.

``tf_keras`` models convert through the same path as Keras 3 ones (``keras_convert.keras_to_onnx``:
both trace to a TensorFlow graph); ``parity.check_keras`` probes them with ``tf_keras.Model``.
"""

from __future__ import annotations

import json
import os

from inspector.errors import InspectorError

H5_SUFFIXES = (".h5", ".hdf5")


def h5_attributes(path: str) -> dict:
    """The root attributes of an HDF5 file (``model_config``, ``keras_version``...), decoded; no code runs."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            attributes = {}
            for key, value in handle.attrs.items():
                attributes[key] = value.decode("utf-8") if isinstance(value, bytes) else value
            return attributes
    except OSError as exc:
        raise InspectorError(f"{path} is not a readable HDF5 file ({' '.join(str(exc).split())[:160]})") from None


def lambda_layers(config) -> list[str]:
    """Names of the Lambda layers anywhere in a Keras model configuration (nested models included)."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("class_name") == "Lambda":
                inner = node.get("config") if isinstance(node.get("config"), dict) else {}
                found.append(str(inner.get("name") or node.get("name") or "?"))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return found


def refuse_lambdas(config, path: str) -> None:
    names = lambda_layers(config)
    if names:
        more = f" (and {len(names) - 1} more)" if len(names) > 1 else ""
        raise InspectorError(
            f"{path}: layer '{names[0]}'{more} is a Lambda layer whose Python code would run when the file is "
            "loaded; pass --unsafe only if you trust the file")


def weights_beside(architecture: str) -> str | None:
    stem = os.path.splitext(architecture)[0]
    return next((stem + suffix for suffix in H5_SUFFIXES if os.path.isfile(stem + suffix)), None)


def architecture_beside(weights: str) -> str | None:
    candidate = os.path.splitext(weights)[0] + ".json"
    return candidate if os.path.isfile(candidate) else None


def keras_major(version) -> int | None:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return None


def import_tf_keras():
    try:
        import tf_keras
    except ImportError:
        raise InspectorError("this is a Keras 2 file that Keras 3 cannot load; reading it needs tf_keras: "
                             "pip install --no-deps tf_keras==VERSION, VERSION that of your TensorFlow (plain "
                             "'pip install tf_keras' would add a second TensorFlow)") from None
    return tf_keras


def load_json_architecture(path: str, unsafe: bool, custom_objects: dict | None):
    """A Keras 2 JSON architecture and the .h5 weights of the same name beside it, through tf_keras."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        config = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InspectorError(f"{path} is not a Keras JSON architecture ({exc.__class__.__name__})") from None
    if not isinstance(config, dict) or "class_name" not in config:
        raise InspectorError(f"{path} is not a Keras JSON architecture (no class_name at its top)")
    if not unsafe:
        refuse_lambdas(config, path)
    weights = weights_beside(path)
    if weights is None:
        stem = os.path.splitext(path)[0]
        raise InspectorError(f"{path} is an architecture without weights; put them beside it as {stem}.h5")
    tf_keras = import_tf_keras()
    try:
        model = tf_keras.models.model_from_json(text, custom_objects=custom_objects)
        model.load_weights(weights)
    except Exception as exc:  # tf_keras raises ValueError, TypeError, KeyError... for what it cannot read
        raise InspectorError(f"{path} with {os.path.basename(weights)}: tf_keras cannot load them "
                             f"({exc.__class__.__name__}: {' '.join(str(exc).split())[:200]})") from None
    return model


def load_legacy_h5(path: str, unsafe: bool, custom_objects: dict | None, keras3_error: str):
    """A Keras 2 .h5 model that Keras 3 refused (``keras3_error``), through tf_keras."""
    tf_keras = import_tf_keras()
    try:
        return tf_keras.models.load_model(path, compile=False, custom_objects=custom_objects)
    except Exception as exc:  # tf_keras raises ValueError, TypeError, KeyError... for what it cannot read
        raise InspectorError(f"{path} is a Keras 2 file that neither Keras 3 ({keras3_error[:120]}) nor tf_keras "
                             f"can load ({exc.__class__.__name__}: {' '.join(str(exc).split())[:160]})") from None
