"""Open an ONNX file without copying its weights.

``onnx.load`` reads the whole file into memory and then parses every weight
into a second copy. For a 550 MB VGG16 that is over a gigabyte before anything
is shown, and more again when the model is serialised for onnxruntime. Here
the file is memory-mapped and walked at the protobuf wire level: every large
initializer keeps its metadata but its ``raw_data`` is replaced by an external
data reference (``location`` = the model file itself, ``offset`` = where the
bytes sit in it). The resulting ``ModelProto`` is a few kilobytes; weights are
read one tensor at a time when a picture needs them, and onnxruntime reads them
straight from the original file.

External data is untrusted: every ``location`` must name a regular file inside
the model's folder (no absolute paths, no ``..``, no symlinks out, no second hard link) and is
checked before any byte of it is read.
"""

from __future__ import annotations

import math
import mmap
import os
from dataclasses import dataclass

import numpy as np

from .errors import InspectorError

# Initializers smaller than this stay inline; moving them buys nothing.
_INLINE_LIMIT = 1024
# Weights at least this large are memory-mapped rather than read (see tensor_array).
_MAP_LIMIT = 16 * 1024 * 1024

# Field numbers from onnx.proto (stable since ONNX 1.0).
MODEL_GRAPH = 7
GRAPH_INITIALIZER = 5
TENSOR_RAW_DATA = 9
_TENSOR_EXTERNAL_DATA = 13
_TENSOR_DATA_LOCATION = 14
_EXTERNAL = 1
# INT4, UINT4, FLOAT4E2M1, UINT2, INT2: packed below a byte per value.
_PACKED_TYPES = {21, 22, 23, 25, 26}


class _Malformed(Exception):
    pass


def _varint(buf, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise _Malformed("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _Malformed("varint too long")


def _fields(buf, start: int, end: int):
    """Yield (field, wire_type, key_start, value_start, value_end) for one message."""
    pos = start
    while pos < end:
        key_start = pos
        key, pos = _varint(buf, pos, end)
        field, wire_type = key >> 3, key & 7
        if field == 0:
            raise _Malformed("field number 0")
        value_start = pos
        if wire_type == 0:
            _, pos = _varint(buf, pos, end)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 2:
            length, value_start = _varint(buf, pos, end)
            pos = value_start + length
        elif wire_type == 5:
            pos += 4
        else:
            raise _Malformed(f"unsupported wire type {wire_type}")
        if pos > end:
            raise _Malformed("field runs past the end of the file (truncated?)")
        yield field, wire_type, key_start, value_start, pos


def encode_varint(value: int) -> bytes:
    """Protobuf base-128 varint (also used by converters/writer.py to stream models)."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return encode_varint((field << 3) | 2) + encode_varint(len(payload)) + payload


def _entry(key: str, value: str) -> bytes:
    body = _length_delimited(1, key.encode()) + _length_delimited(2, value.encode())
    return _length_delimited(_TENSOR_EXTERNAL_DATA, body)


def _strip_tensor(buf, start: int, end: int, location: str) -> bytes:
    """A TensorProto whose raw_data is replaced by a reference into the model file."""
    parts: list[bytes] = []
    raw: tuple[int, int] | None = None
    for field, wire_type, key_start, value_start, value_end in _fields(buf, start, end):
        if field == TENSOR_RAW_DATA and wire_type == 2:
            raw = (value_start, value_end - value_start)
        else:
            parts.append(bytes(buf[key_start:value_end]))
    if raw is None:
        return bytes(buf[start:end])
    offset, length = raw
    parts.append(_entry("location", location))
    parts.append(_entry("offset", str(offset)))
    parts.append(_entry("length", str(length)))
    parts.append(encode_varint((_TENSOR_DATA_LOCATION << 3) | 0) + encode_varint(_EXTERNAL))
    return b"".join(parts)


def _strip_model(buf, location: str) -> bytes:
    out: list[bytes] = []
    saw_graph = False
    for field, wire_type, key_start, value_start, value_end in _fields(buf, 0, len(buf)):
        if field == MODEL_GRAPH and wire_type == 2:
            saw_graph = True
            graph_parts: list[bytes] = []
            for g_field, g_type, g_key, g_start, g_end in _fields(buf, value_start, value_end):
                if g_field == GRAPH_INITIALIZER and g_type == 2 and g_end - g_start > _INLINE_LIMIT:
                    graph_parts.append(_length_delimited(
                        GRAPH_INITIALIZER, _strip_tensor(buf, g_start, g_end, location)))
                else:
                    graph_parts.append(bytes(buf[g_key:g_end]))
            out.append(_length_delimited(MODEL_GRAPH, b"".join(graph_parts)))
        else:
            out.append(bytes(buf[key_start:value_end]))
    if not saw_graph:
        raise _Malformed("no graph in the file")
    return b"".join(out)


def _check_arity(graph, model_name: str, opset: int | None) -> None:
    """Every standard node has as many inputs and outputs as its ONNX schema allows, and its
    attributes the types the schema gives them (an ``axis`` that is a list was a TypeError in prune).

    The layer finder reads inputs by position (QLinearConv's weights are input
    3); a node cut short by a broken exporter or a hostile file is refused here
    with its name, not met later as an IndexError.
    """
    import onnx

    newest = onnx.defs.onnx_opset_version()
    version = opset if opset is not None and 1 <= opset <= newest else newest
    schemas: dict[str, object] = {}
    for index, node in enumerate(graph.node):
        if node.domain not in ("", "ai.onnx"):
            continue
        if node.op_type not in schemas:
            schemas[node.op_type] = None  # unknown op: onnxruntime names it when it loads the model
            # An op newer than the declared opset (QLinearConv at opset 1) has no schema there;
            # its newest schema still says how many inputs the layer finder may read.
            for at in (version, newest):
                try:
                    schemas[node.op_type] = onnx.defs.get_schema(node.op_type, at, "")
                    break
                except onnx.defs.SchemaError:
                    continue
        schema = schemas[node.op_type]
        if schema is None:
            continue
        inputs, outputs = len(node.input), len(node.output)
        if not (schema.min_input <= inputs <= schema.max_input and schema.min_output <= outputs <= schema.max_output):
            raise InspectorError(
                f"{model_name} is broken: {node.op_type} node '{node.name or '#' + str(index)}' has {inputs} "
                f"inputs and {outputs} outputs; ONNX {node.op_type} takes {schema.min_input}..{schema.max_input} "
                f"inputs and {schema.min_output}..{schema.max_output} outputs; re-export the model")
        for attr in node.attribute:  # readers (layer finder, prune's tracer, cam's cut) trust attribute types
            spec = schema.attributes.get(attr.name)
            if spec is not None and attr.type != int(spec.type):
                kind = onnx.AttributeProto.AttributeType
                given = kind.Name(attr.type) if attr.type in kind.values() else str(attr.type)
                raise InspectorError(
                    f"{model_name} is broken: {node.op_type} node '{node.name or '#' + str(index)}' has attribute "
                    f"'{attr.name}' of type {given}; ONNX {node.op_type} takes {kind.Name(int(spec.type))}; "
                    "re-export the model")


def _check_text(graph, model_name: str) -> None:
    """Names and op types are text: protobuf hands invalid UTF-8 over as bytes, which no reader expects."""
    named = [*graph.input, *graph.output, *graph.initializer, *graph.value_info]
    for index, node in enumerate(graph.node):
        for value in (node.op_type, node.name, node.domain, *node.input, *node.output):
            if not isinstance(value, str):
                raise InspectorError(f"{model_name} is broken: node #{index} has a name or op type that is not "
                                     "valid UTF-8 text; re-export the model")
    for item in named:
        if not isinstance(item.name, str):
            raise InspectorError(f"{model_name} is broken: a graph input, output or initializer has a name that "
                                 "is not valid UTF-8 text; re-export the model")


def check_topology(graph, model_name: str = "the model", opset: int | None = None) -> None:
    """Refuse graphs onnxruntime would reject, with a message that names the culprit.

    Every standard node has the number of inputs and outputs its schema allows
    (``opset``: the model's ai.onnx version), every node input must be a graph
    input, an initializer or another node's output (no dangling names), every
    graph output must be produced, and the nodes must form no cycle (their
    order in the file does not matter).
    """
    _check_text(graph, model_name)
    _check_arity(graph, model_name, opset)
    known = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    known |= {t.values.name for t in graph.sparse_initializer}
    producer: dict[str, int] = {}
    for index, node in enumerate(graph.node):
        for name in node.output:
            if name:
                producer[name] = index

    def describe(index: int) -> str:
        node = graph.node[index]
        return f"{node.op_type} node '{node.name or '#' + str(index)}'"

    waiting_on: list[set[int]] = []
    for index, node in enumerate(graph.node):
        needs = set()
        for name in node.input:
            if not name or name in known:
                continue
            if name not in producer:
                raise InspectorError(
                    f"{model_name} is broken: {describe(index)} reads '{name}', which is no graph input, "
                    "initializer or node output (dangling input); re-export the model")
            needs.add(producer[name])
        waiting_on.append(needs)
    for output in graph.output:
        if output.name not in known and output.name not in producer:
            raise InspectorError(
                f"{model_name} is broken: graph output '{output.name}' is produced by no node; re-export the model")
    # Kahn's algorithm: whatever cannot be scheduled sits on a cycle (or after one).
    users: dict[int, list[int]] = {}
    for index, needs in enumerate(waiting_on):
        for source in needs:
            users.setdefault(source, []).append(index)
    remaining = [len(needs) for needs in waiting_on]
    ready = [i for i, count in enumerate(remaining) if count == 0]
    done = 0
    while ready:
        index = ready.pop()
        done += 1
        for user in users.get(index, ()):
            remaining[user] -= 1
            if remaining[user] == 0:
                ready.append(user)
    if done < len(graph.node):
        stuck = next(i for i, count in enumerate(remaining) if count)
        raise InspectorError(
            f"{model_name} is broken: its graph has a cycle (through {describe(stuck)}); "
            "ONNX graphs must be acyclic; re-export the model")


@dataclass(frozen=True)
class ExternalRef:
    path: str  # resolved, validated
    offset: int
    length: int | None


class OnnxFile:
    """An ONNX model on disk: a light ``ModelProto`` plus lazy access to its weights."""

    def __init__(self, path: str | os.PathLike):
        import onnx
        from google.protobuf.message import DecodeError

        self.path = os.path.abspath(os.fspath(path))
        # A model opened through a symlink (a Hugging Face cache, a linked models/ folder) is read where
        # it lives: the light model refers to its own weights by that file's name, in that folder, and
        # its external data (if any) must sit there too.
        self.real_path = os.path.realpath(self.path)
        self.folder = os.path.dirname(self.real_path)
        if not os.path.exists(self.path):
            raise InspectorError(f"model not found: {os.fspath(path)}")
        if os.path.isdir(self.path):
            raise InspectorError(f"model path is a directory, not an .onnx file: {os.fspath(path)}")
        try:
            size = os.path.getsize(self.path)
            handle = open(self.path, "rb")
        except OSError as exc:
            raise InspectorError(f"model cannot be read: {os.fspath(path)} ({exc.strerror})") from None
        if size == 0:
            handle.close()
            raise InspectorError(f"model file is empty: {os.fspath(path)}")
        self.size = size
        with handle:
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                try:
                    light = _strip_model(buf, os.path.basename(self.real_path))
                except _Malformed as exc:
                    raise InspectorError(
                        f"not a valid ONNX model: {os.fspath(path)} ({exc}); "
                        "is the file complete and really .onnx?") from None
        model = onnx.ModelProto()
        try:
            model.ParseFromString(light)
        except (DecodeError, RuntimeError, ValueError) as exc:
            raise InspectorError(
                f"not a valid ONNX model: {os.fspath(path)} (protobuf: {exc}); "
                "is the file complete and really .onnx?") from None
        if not model.HasField("graph") or not model.opset_import:
            raise InspectorError(f"not an ONNX model (no graph or opset): {os.fspath(path)}")
        self.model = model
        self.initializers = {t.name: t for t in model.graph.initializer}
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
        check_topology(model.graph, os.path.basename(self.path), opset)
        # Check every external location now, before anything (ours or onnxruntime) reads one,
        # and that every initializer's data fills its declared shape (readers trust the dims).
        for tensor in model.graph.initializer:
            self.check_tensor(tensor)
        from .customquant import lower  # QONNX/Brevitas Quant nodes as standard ONNX arithmetic

        lower(self)

    # ------------------------------------------------------------------ weights

    def external_ref(self, tensor) -> ExternalRef:
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        if not location:
            raise InspectorError(f"external data of tensor '{tensor.name}' has no location")
        if any(ord(ch) < 32 for ch in location):
            raise InspectorError(
                f"external data of tensor '{tensor.name}' has a location with control characters "
                f"({location!r}); refused")
        if os.path.isabs(location) or location.startswith(("/", "\\")) or ":" in location[:3]:
            raise InspectorError(
                f"external data of tensor '{tensor.name}' uses an absolute path ({location!r}); "
                "refused: external data must sit beside the model")
        target = os.path.realpath(os.path.join(self.folder, location))
        folder = os.path.realpath(self.folder)
        if os.path.commonpath([target, folder]) != folder:
            raise InspectorError(
                f"external data of tensor '{tensor.name}' points outside the model's folder "
                f"({location!r}); refused: external data must sit beside the model")
        if not os.path.isfile(target):
            raise InspectorError(
                f"external data file missing for tensor '{tensor.name}': {location} "
                f"(expected in {self.folder})")
        if _hard_links(target) > 1 and not _same_file(target, self.path):
            # As onnx (1.21+) does: a second hard link can make a file outside the model's folder
            # look as if it were inside it, and no path check can tell which name is the original.
            raise InspectorError(
                f"external data file {location!r} of tensor '{tensor.name}' has more than one hard link; "
                "refused (a hard link can point at a file outside the model's folder): copy the file "
                "instead of linking it")
        try:
            offset = int(info.get("offset", "0"))
            length = int(info["length"]) if "length" in info else None
        except ValueError:
            raise InspectorError(f"external data of tensor '{tensor.name}' has a bad offset or length") from None
        file_size = os.path.getsize(target)
        if offset < 0 or (length is not None and (length < 0 or offset + length > file_size)):
            raise InspectorError(
                f"external data of tensor '{tensor.name}' lies beyond the end of {location} (truncated?)")
        return ExternalRef(target, offset, length)

    def declared(self, tensor) -> tuple[np.dtype, tuple[int, ...], int]:
        """A tensor's dtype, shape and byte size as declared, refused when they cannot hold together."""
        import onnx

        try:
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type))
        except (KeyError, TypeError, ValueError):
            raise InspectorError(f"tensor '{tensor.name}' has an unsupported data type {tensor.data_type}") from None
        shape = tuple(int(d) for d in tensor.dims)
        if any(d < 0 for d in shape):
            raise InspectorError(f"tensor '{tensor.name}' has negative dimensions {shape}")
        count = math.prod(shape)  # Python ints: no silent int64 overflow on hostile dims
        return dtype, shape, count * dtype.itemsize

    def check_tensor(self, tensor) -> None:
        """Refuse a tensor whose data does not fill its declared shape exactly, reading no data.

        Run on every initializer when the file is opened, so that no reader (layers, prune's
        channel tracer, the audit's weight rules) ever sees a weight whose shape lies about its
        values: found by the fuzzer as an IndexError in prune and a reshape error in audit.
        """
        import onnx

        dtype, shape, nbytes = self.declared(tensor)
        if tensor.data_type in _PACKED_TYPES or dtype == object:
            return  # sub-byte packing, strings: onnx decodes them, sizes are not byte counts
        if tensor.data_location == _EXTERNAL:
            ref = self.external_ref(tensor)
            if ref.length is not None and ref.length != nbytes:
                raise InspectorError(
                    f"tensor '{tensor.name}' should hold {nbytes} bytes but its data is {ref.length} bytes")
            if ref.offset + nbytes > os.path.getsize(ref.path):
                raise InspectorError(f"external data of tensor '{tensor.name}' is truncated")
            return
        if tensor.HasField("raw_data"):
            if len(tensor.raw_data) != nbytes:
                raise InspectorError(
                    f"tensor '{tensor.name}' should hold {nbytes} bytes but its data is "
                    f"{len(tensor.raw_data)} bytes")
            return
        count = math.prod(shape)
        try:
            field = onnx.helper.tensor_dtype_to_field(tensor.data_type)
        except (KeyError, TypeError, ValueError):
            return
        held = len(getattr(tensor, field))
        if dtype.kind == "c":
            held //= 2
        if held != count:
            raise InspectorError(f"tensor '{tensor.name}' should hold {count} values but has {held}")

    def tensor_array(self, tensor) -> np.ndarray:
        """The values of a TensorProto from this file, reading only that tensor's bytes."""
        from onnx import numpy_helper

        if tensor.data_location != _EXTERNAL:
            try:
                return numpy_helper.to_array(tensor)
            except (ValueError, TypeError, KeyError) as exc:  # KeyError: an unknown data_type
                raise InspectorError(f"cannot decode tensor '{tensor.name}': {exc}") from None
        ref = self.external_ref(tensor)
        dtype, shape, nbytes = self.declared(tensor)
        if ref.length is not None and ref.length != nbytes:
            raise InspectorError(
                f"tensor '{tensor.name}' should hold {nbytes} bytes but its data is {ref.length} bytes")
        if ref.offset + nbytes > os.path.getsize(ref.path):
            raise InspectorError(f"external data of tensor '{tensor.name}' is truncated")
        if nbytes >= _MAP_LIMIT and dtype.byteorder != ">":
            # Mapped, not read: a picture of the first 64 filters of a 1 GB layer
            # pages in those filters only, so memory follows what is shown.
            return np.memmap(ref.path, dtype=dtype, mode="r", offset=ref.offset, shape=shape)
        with open(ref.path, "rb") as handle:
            handle.seek(ref.offset)
            data = handle.read(nbytes)
        if len(data) != nbytes:
            raise InspectorError(f"external data of tensor '{tensor.name}' is truncated")
        array = np.frombuffer(data, dtype=dtype).reshape(shape)
        return array.astype(array.dtype.newbyteorder("<")) if dtype.byteorder == ">" else array

    # ----------------------------------------------------------------- sessions

    def serialized(self, model=None) -> bytes:
        """Bytes of the light model (or a modified copy of it) for onnxruntime.

        onnxruntime resolves every external location against ``self.folder``
        (see ``execution.session_options``) and reads the weights from disk.
        """
        return (model or self.model).SerializeToString()


def _hard_links(path: str) -> int:
    try:
        return os.stat(path).st_nlink
    except OSError:
        return 1


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
