"""Stamp metadata, then write an ONNX file atomically after checking it.

The file is written beside its destination under a temporary name, checked
(``onnx.checker``, and the caller's own check, e.g. parity), and only then
renamed into place, so a failure or Ctrl-C never leaves a partial model.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Callable

from inspector import metadata as md
from inspector.errors import InspectorError

TWO_GB = 2**31 - 1


def converter_version() -> str:
    import inspector

    return f"inspector-converters {inspector.__version__}"


def stamp(model, values: dict[str, object]) -> None:
    """Set ``metadata_props`` (replacing keys already there); lists/dicts are JSON."""
    wanted = {}
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (list, tuple, dict)):
            value = json.dumps(value)
        wanted[key] = str(value)
    kept = [p for p in model.metadata_props if p.key not in wanted]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in wanted.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def common_metadata(framework: str, source_version: str, converter: str, model_name: str, layout: str,
                    preprocess, class_names, trained: bool, weights_source: str) -> dict:
    return {
        md.SOURCE_FRAMEWORK: framework,
        md.SOURCE_VERSION: source_version,
        md.CONVERTER: converter,
        md.CONVERTER_VERSION: converter_version(),
        md.MODEL_NAME: model_name,
        md.INPUT_LAYOUT: layout,
        md.PREPROCESS: preprocess.to_json() if preprocess is not None else json.dumps({"mode": "unknown"}),
        md.CLASS_NAMES: class_names,
        md.WEIGHTS_TRAINED: trained,
        md.WEIGHTS_SOURCE: weights_source,
    }


def check_opset(model, minimum: int = 17) -> None:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx") and entry.version < minimum:
            raise InspectorError(f"the converted model has opset {entry.version}; use --opset {minimum} or newer")


def write_model(model, out: str, verify: Callable[[str], None] | None = None, stages=None) -> str:
    """Save ``model`` to ``out`` through a checked temp file; returns ``out``.

    Models over 2 GB get their tensors in ``<out>.data`` beside the file.
    ``verify(temp_path)`` may raise to stop the file from being put in place.
    """
    import onnx

    from .measure import NoStages

    stages = stages or NoStages()
    out = os.fspath(out)
    folder = os.path.dirname(os.path.abspath(out)) or "."
    if not os.path.isdir(folder):
        raise InspectorError(f"output folder does not exist: {folder}")
    if os.path.isdir(out):
        raise InspectorError(f"output path is a directory: {out}; give a file name like {out.rstrip('/')}/model.onnx")
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(out)}.", suffix=".tmp.onnx", dir=folder)
    os.close(fd)
    data_name = os.path.basename(out) + ".data"
    data_tmp = os.path.join(folder, data_name)
    external = model.ByteSize() > TWO_GB if _cheap_size(model) > TWO_GB // 2 else False
    try:
        with stages("write"):
            if external:
                onnx.save_model(model, tmp, save_as_external_data=True, all_tensors_to_one_file=True,
                                location=data_name, size_threshold=1024)
            else:
                with open(tmp, "wb") as handle:
                    handle.write(model.SerializeToString())
        with stages("onnx.checker"):
            try:
                onnx.checker.check_model(tmp, full_check=False)
            except onnx.checker.ValidationError as exc:
                raise InspectorError(f"the converted model does not pass onnx.checker: {str(exc).splitlines()[0]}") from None
        if verify is not None:
            verify(tmp)
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if external:
            with contextlib.suppress(OSError):
                os.unlink(data_tmp)
        raise
    return out


def _cheap_size(model) -> int:
    """Initializer bytes without serialising the whole model."""
    total = 0
    for init in model.graph.initializer:
        total += len(init.raw_data) if init.raw_data else init.ByteSize()
    return total
