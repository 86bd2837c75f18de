"""Stamp metadata, then write an ONNX file atomically after checking it.

The file is written beside its destination under a temporary name, checked
(``onnx.checker``, and the caller's own check, e.g. parity), and only then
renamed into place, so a failure or Ctrl-C never leaves a partial model.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Callable

from inspector import metadata as md
from inspector.atomic import atomic_path
from inspector.errors import InspectorError
from inspector.onnxfile import GRAPH_INITIALIZER, MODEL_GRAPH, TENSOR_RAW_DATA, encode_varint

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


_CHUNK = 16 << 20


def _key(field: int) -> bytes:
    return encode_varint((field << 3) | 2)


class _Payload:
    """Where an initializer's bytes come from: an array (``payloads``) or a region of another file."""

    def __init__(self, size: int, array=None, path: str | None = None, offset: int = 0):
        self.size, self.array, self.path, self.offset = size, array, path, offset

    def write_to(self, handle) -> None:
        if self.array is not None:
            import numpy as np

            array = np.ascontiguousarray(self.array)
            if array.dtype.byteorder == ">":
                array = array.astype(array.dtype.newbyteorder("<"))
            if array.size:  # memoryview cannot cast a zero-size array (prune cutting every filter of an unread conv)
                handle.write(memoryview(array).cast("B"))
            return
        with open(self.path, "rb") as source:
            source.seek(self.offset)
            left = self.size
            while left:
                block = source.read(min(left, _CHUNK))
                if not block:
                    raise InspectorError(f"{self.path} ended early while copying weights")
                handle.write(block)
                left -= len(block)


def _split_initializers(model, payloads: dict, source_folder: str | None):
    """(header TensorProto without data, _Payload or None) per initializer, in order."""
    import onnx

    out = []
    for tensor in model.graph.initializer:
        payload = None
        if tensor.name in payloads:
            array = payloads[tensor.name]
            payload = _Payload(int(array.nbytes), array=array)
        elif tensor.data_location == onnx.TensorProto.EXTERNAL:
            info = {e.key: e.value for e in tensor.external_data}
            if source_folder is None or os.path.basename(info.get("location", "")) != info.get("location"):
                raise InspectorError(f"initializer '{tensor.name}' refers to external data the writer cannot copy")
            payload = _Payload(int(info["length"]), path=os.path.join(source_folder, info["location"]),
                               offset=int(info.get("offset", 0)))
        if payload is None:
            out.append((tensor, None))
            continue
        header = onnx.TensorProto()
        header.CopyFrom(tensor)
        header.ClearField("raw_data")
        del header.external_data[:]
        header.ClearField("data_location")
        out.append((header, payload))
    return out


def _copy_without(source, target, skipped: str):
    """``target`` = ``source`` less one field (the big one), without copying that field."""
    for field, value in source.ListFields():
        if field.name == skipped:
            continue
        if hasattr(value, "extend"):  # repeated
            getattr(target, field.name).extend(value)
        elif hasattr(value, "CopyFrom"):  # message
            getattr(target, field.name).CopyFrom(value)
        else:
            setattr(target, field.name, value)
    return target


def _stream(model, handle, initializers, data_handle=None, data_name: str = "") -> None:
    """Serialise ``model`` with its initializers' bytes written straight from their source.

    Protobuf accepts a message's fields in any order, so the model without its
    graph, then the graph without its initializers, then each initializer
    (header, then raw_data) is the same model. Only one chunk of weights is in
    flight at a time. With ``data_handle`` the bytes go to that file instead
    (ONNX external data, for models over 2 GB).
    """
    import onnx

    head = _copy_without(model, onnx.ModelProto(), "graph")
    graph_head = _copy_without(model.graph, onnx.GraphProto(), "initializer")

    entries = []
    offset = 0
    for header, payload in initializers:
        if payload is not None and data_handle is not None:
            for key, value in (("location", data_name), ("offset", str(offset)), ("length", str(payload.size))):
                entry = header.external_data.add()
                entry.key, entry.value = key, value
            header.data_location = onnx.TensorProto.EXTERNAL
            offset += payload.size
        body = header.SerializeToString()
        inline = payload is not None and data_handle is None
        size = len(body) + (len(_key(TENSOR_RAW_DATA)) + len(encode_varint(payload.size)) + payload.size if inline else 0)
        entries.append((body, payload, size))
    graph_bytes = graph_head.SerializeToString()
    graph_size = len(graph_bytes) + sum(len(_key(GRAPH_INITIALIZER)) + len(encode_varint(size)) + size
                                        for _, _, size in entries)
    handle.write(head.SerializeToString())
    handle.write(_key(MODEL_GRAPH) + encode_varint(graph_size))
    handle.write(graph_bytes)
    for body, payload, size in entries:
        handle.write(_key(GRAPH_INITIALIZER) + encode_varint(size))
        handle.write(body)
        if payload is None:
            continue
        if data_handle is None:
            handle.write(_key(TENSOR_RAW_DATA) + encode_varint(payload.size))
            payload.write_to(handle)
        else:
            payload.write_to(data_handle)


def write_model(model, out: str, verify: Callable[[str], None] | None = None, stages=None,
                payloads: dict | None = None, source_folder: str | None = None) -> str:
    """Save ``model`` to ``out`` through a checked temp file; returns ``out``.

    ``payloads`` maps initializer names to arrays holding their data (the
    model's initializers then carry only name, type and shape); the dict is
    emptied once the file is written, to free them early. Initializers
    with external data in ``source_folder`` are copied from there. Nothing
    serialises the whole model in memory. Models over 2 GB get their tensors
    in ``<out>.data`` beside the file. ``verify(temp_path)`` may raise to stop
    the file from being put in place.
    """
    import onnx

    from .measure import NoStages

    stages = stages or NoStages()
    payloads = payloads or {}
    out = os.fspath(out)
    folder = os.path.dirname(os.path.abspath(out)) or "."
    if not os.path.isdir(folder):
        raise InspectorError(f"output folder does not exist: {folder}")
    if os.path.isdir(out):
        raise InspectorError(f"output path is a directory: {out}; give a file name like {out.rstrip('/')}/model.onnx")
    initializers = _split_initializers(model, payloads, source_folder)
    weight_bytes = sum(p.size for _, p in initializers if p is not None)
    # ByteSize counts inline data only (payload initializers carry none): cheap on a light model.
    external = weight_bytes + model.ByteSize() > TWO_GB
    data_name = os.path.basename(out) + ".data"
    data_path = os.path.join(folder, data_name)
    data_written = False
    try:
        with atomic_path(out) as tmp:  # renamed into place only when every check passed
            with stages("write"):
                with open(tmp, "wb") as handle:
                    if external:
                        with atomic_path(data_path) as data_tmp, open(data_tmp, "wb") as data_handle:
                            _stream(model, handle, initializers, data_handle, data_name)
                        data_written = True  # under its final name: the checks below read it there
                    else:
                        _stream(model, handle, initializers)
            # Written: the arrays are not needed for the checks, which read the file.
            payloads.clear()
            del initializers
            with stages("onnx.checker"):
                _check(tmp)
            if verify is not None:
                verify(tmp)
    except BaseException:
        if data_written:
            with contextlib.suppress(OSError):
                os.unlink(data_path)
        raise
    return out


def _check(path: str) -> None:
    """onnx.checker on the written file, without loading its weights.

    ``check_model(path)`` reads the file into a string and parses it: twice
    the weights at once (+1 GB for VGG16, more than the whole torch export).
    So the file is read back as a skeleton: its protobuf framing is walked on
    disk and each initializer's ``raw_data`` is skipped (seeked past), its
    length checked against the tensor's dims and type, the one thing the
    checker checks about those bytes; the initializers left without data
    become typed graph inputs, and the checker runs on that skeleton. Files
    with external data are small already and are checked by path.
    """
    import onnx

    try:
        skeleton, raw_sizes = _read_skeleton(path)
        if not raw_sizes:
            onnx.checker.check_model(path, full_check=False)
            return
        _initializers_as_inputs(skeleton, raw_sizes)
        onnx.checker.check_model(skeleton, full_check=False)
    except onnx.checker.ValidationError as exc:
        raise InspectorError(f"the converted model does not pass onnx.checker: {str(exc).splitlines()[0]}") from None


# Protobuf wire types.
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


def _read_varint(handle) -> int | None:
    """The next varint, or None at the end of the file."""
    value = shift = 0
    while True:
        byte = handle.read(1)
        if not byte:
            if shift:
                raise InspectorError(f"{handle.name} ends inside a field; the converted file is broken")
            return None
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
        shift += 7


def _read_fields(handle, end: int, level: str, raw_sizes: dict) -> bytes:
    """The message between here and ``end`` re-encoded, its initializers' raw_data left out.

    ``level`` is model, graph or tensor: the graph (model field 7) and its
    initializers (graph field 5) are descended into; every other field is
    copied as it is. A tensor's skipped raw_data length goes to ``raw_sizes``
    under the tensor's name.
    """
    import onnx

    out = bytearray()
    raw_length = None
    while handle.tell() < end:
        tag = _read_varint(handle)
        if tag is None:
            break  # the file ended inside this message: reported below
        field, wire = tag >> 3, tag & 7
        if wire == _VARINT:
            value = _read_varint(handle)
            if value is None:
                break
            out += encode_varint(tag) + encode_varint(value)
        elif wire in (_FIXED64, _FIXED32):
            out += encode_varint(tag) + handle.read(8 if wire == _FIXED64 else 4)
        elif wire == _LENGTH:
            length = _read_varint(handle)
            if length is None:
                break
            if level == "tensor" and field == TENSOR_RAW_DATA:
                raw_length = length
                handle.seek(length, os.SEEK_CUR)
                continue
            inner = {("model", MODEL_GRAPH): "graph", ("graph", GRAPH_INITIALIZER): "tensor"}.get((level, field))
            body = (_read_fields(handle, handle.tell() + length, inner, raw_sizes) if inner
                    else handle.read(length))
            if len(body) < length and not inner:
                break
            out += encode_varint(tag) + encode_varint(len(body)) + body
        else:
            raise InspectorError(f"{handle.name} has a protobuf field of wire type {wire}; "
                                 "the converted file is broken")
    if handle.tell() != end:
        raise InspectorError(f"{handle.name}: a {level} message does not end where its length says; "
                             "the converted file is broken")
    if level == "tensor" and raw_length is not None:
        header = _parse(onnx.TensorProto(), bytes(out), handle.name)
        raw_sizes[header.name] = raw_length
    return bytes(out)


def _parse(message, body: bytes, path: str):
    from google.protobuf.message import DecodeError

    try:
        message.ParseFromString(body)
    except DecodeError as exc:
        raise InspectorError(f"{path} does not parse as ONNX ({exc}); the converted file is broken") from None
    return message


def _read_skeleton(path: str):
    """(ModelProto of ``path`` without initializer raw_data, {initializer name: raw_data length})."""
    import onnx

    raw_sizes: dict[str, int] = {}
    with open(path, "rb") as handle:
        body = _read_fields(handle, os.fstat(handle.fileno()).st_size, "model", raw_sizes)
    return _parse(onnx.ModelProto(), body, path), raw_sizes


def _initializers_as_inputs(model, raw_sizes: dict) -> None:
    """Check each skipped raw_data length, then turn those initializers into typed graph inputs."""
    import numpy as np
    import onnx

    packed = {getattr(onnx.TensorProto, name) for name in ("INT4", "UINT4", "FLOAT4E2M1")
              if hasattr(onnx.TensorProto, name)}
    graph = model.graph
    inputs = {i.name for i in graph.input}
    kept = []
    for tensor in graph.initializer:
        if tensor.name not in raw_sizes:
            kept.append(tensor)
            continue
        count = int(np.prod(tensor.dims, dtype=np.int64))
        try:
            width = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
        except (KeyError, TypeError, ValueError):
            width = None  # a type NumPy lacks: the checker still checks the type itself
        expected = (count + 1) // 2 if tensor.data_type in packed else None if width is None else count * width
        if expected is not None and raw_sizes[tensor.name] != expected:
            raise onnx.checker.ValidationError(
                f"initializer '{tensor.name}' has {raw_sizes[tensor.name]} bytes of raw_data; "
                f"its shape and type need {expected}")
        if tensor.name not in inputs:
            graph.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
    del graph.initializer[:]
    graph.initializer.extend(kept)
