"""TFLite flatbuffers to ONNX through tf2onnx's TFLite path (``tf2onnx.convert.from_tflite``).

float32, float16 (weights stored as fp16, dequantized in the graph) and int8 models (full-integer: QDQ
ONNX, which ``layers``, ``maps`` and ``diff`` read as int8; weight-only: DequantizeLinear on the weights).

What this module adds to tf2onnx's graph:

- layer names: TFLite names each tensor after the TF ops fused into it, joined by ';'
  (``model_1/activation_3_1/Relu;model_1/batch_normalization_3_1/batchnorm/add_1;model_1/conv2d_3_1/convolution``);
  each conv node is renamed after the conv layer among them (``conv2d_3``; ``separable_conv2d_1.depthwise``
  and ``.pointwise`` as ``convert keras`` names them), and its weight and bias tensors get names that
  do not carry another layer's scope;
- a float input: a uint8/int8 input becomes a float32 one followed by the model's own QuantizeLinear
  (scale and zero point from the file), so that images are preprocessed as for the float model; a
  quantized output gets its DequantizeLinear. Both quantizations are stamped into the metadata
  (``inspector.input_quantization``, ``inspector.output_quantization``);
- custom ops tf2onnx cannot convert are refused in one line naming them.

TensorFlow and tf2onnx are imported inside functions only.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from inspector import metadata as md
from inspector.errors import InspectorError
from inspector.graph import scoped_layer

# The TF op (last part of a scope) that makes a semicolon part the conv layer's own.
_CONV_OP = re.compile(r"^(convolution|depthwise|separable_conv2d|conv2d_transpose|conv1d|Conv2D|DepthwiseConv2dNative|"
                      r"Conv2DBackpropInput|BiasAdd|conv2d|Conv)\d*(_prequant)?$", re.IGNORECASE)
_NOT_CONV_LAYER = re.compile(r"(batch_normalization|activation|re_lu|relu|add|multiply|dropout)(_\d+)?$")
INPUT_QUANTIZATION, OUTPUT_QUANTIZATION, TFLITE_PRECISION = \
    md.INPUT_QUANTIZATION, md.OUTPUT_QUANTIZATION, md.TFLITE_PRECISION
_ONNX_DOMAINS = ("", "ai.onnx")


@dataclass
class TFLiteConversion:
    model: object  # onnx.ModelProto
    conv_layers: list[str]
    tflite_tensors: dict[str, str]  # conv node name -> the TFLite tensor of its conv op's output
    input_quantization: dict | None
    output_quantization: list[dict] = field(default_factory=list)
    precision: str = "float32"


def read_tflite(path: str) -> bytes:
    if not os.path.exists(path):
        raise InspectorError(f"model file not found: {path}")
    if os.path.isdir(path):
        raise InspectorError(f"{path} is a directory; give a .tflite file")
    with open(path, "rb") as handle:
        head = handle.read(8)
    if len(head) < 8 or head[4:8] != b"TFL3":
        raise InspectorError(f"{path} is not a TFLite flatbuffer (no 'TFL3' identifier); give a .tflite file")
    return head


def layer_of(op_list: str) -> str:
    """The conv layer a TFLite tensor name belongs to: among the ';'-joined TF op names, the one whose op is a
    convolution (``model_1/conv2d_3_1/convolution`` -> ``conv2d_3``), named ``LAYER.depthwise`` /
    ``LAYER.pointwise`` inside a separable conv as ``convert keras`` names them."""
    parts = [p for p in op_list.split(";") if p]
    scored = []
    for rank, part in enumerate(parts):
        scope = [s for s in part.split(":")[0].split("/") if s]
        layer = scoped_layer(part) or (scope[0] if scope else part)
        op = scope[-1] if scope else ""
        score = 0 if _CONV_OP.match(op) or any(_CONV_OP.match(s) for s in scope[2:]) else 1
        score += 1 if _NOT_CONV_LAYER.search(layer) else 0
        scored.append((score, rank, layer, scope))
    if not scored:
        return op_list
    _, _, layer, scope = min(scored)
    if "separable" in layer:
        return f"{layer}.depthwise" if any(s.startswith("depthwise") for s in scope[2:]) else f"{layer}.pointwise"
    return layer


def _strip(name: str) -> str:
    """tf2onnx's node name back to the TFLite tensor it came from."""
    for suffix in ("_prequant",):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def _refuse_ops(names, path: str) -> None:
    names = sorted(set(names))
    if names:
        raise InspectorError(
            f"{os.path.basename(path)} uses the custom op{'s' if len(names) > 1 else ''} {', '.join(names)}, which "
            "tf2onnx cannot convert to ONNX; the model cannot be converted")


def tflite_to_onnx(path: str, opset: int = 17) -> TFLiteConversion:
    from .keras_convert import captured_tf2onnx_logs, import_tensorflow

    read_tflite(path)
    import_tensorflow()
    import tf2onnx

    with captured_tf2onnx_logs() as records:
        try:
            model, _ = tf2onnx.convert.from_tflite(path, opset=opset)
        except Exception as exc:  # tf2onnx raises plain exceptions for ops it has no handler for
            text = " ".join(str(exc).split())
            ops = _ops_in_logs(records) or re.findall(r"(?:custom op|Unsupported ops?)[:\s]+'?([A-Za-z_][\w.]*)", text)
            _refuse_ops(ops, path)
            if "DENSIFY" in _builtin_ops(path):
                # Sparse weights (MediaPipe's *_sparse models, pose_detection): tf2onnx reads the stored
                # values as if they were dense and fails reshaping them.
                raise InspectorError(f"{os.path.basename(path)} uses the op DENSIFY (sparse weights), which tf2onnx "
                                     "cannot convert to ONNX; the model cannot be converted") from None
            raise InspectorError(f"tf2onnx could not convert {os.path.basename(path)} "
                                 f"({exc.__class__.__name__}: {text[:200]})") from None
    _refuse_ops(_ops_in_logs(records), path)
    _refuse_ops([n.op_type for n in model.graph.node if n.domain not in _ONNX_DOMAINS + ("com.microsoft",)
                 or n.op_type.startswith("TFL_")], path)
    precision = _tflite_precision(path) or _precision(model)
    input_quantization = _float_input(model)
    output_quantization = _float_outputs(model)
    layers, tensors = _rename_convs(model)
    return TFLiteConversion(model, layers, tensors, input_quantization, output_quantization, precision)


def _ops_in_logs(records) -> list[str]:
    ops = []
    for record in records:
        text = record.getMessage() if hasattr(record, "getMessage") else str(record)
        match = re.search(r"Unsupported ops: Counter\((\{.*\})\)", text)
        if match:
            ops += re.findall(r"'([^']+)'", match.group(1))
        match = re.search(r"[Uu]nsupported (?:custom )?op[^:]*: ?'?([A-Za-z_][\w.]*)", text)
        if match and "Counter" not in text:
            ops.append(match.group(1))
    return [op[4:] if op.startswith("TFL_") else op for op in ops]


def _builtin_ops(path: str) -> set[str]:
    """The op names TFLite's interpreter lists for the file (empty when it cannot read it)."""
    import tensorflow as tf

    try:
        return {op["op_name"] for op in _quiet_interpreter(tf, path)._get_ops_details()}
    except (ValueError, RuntimeError, AttributeError):
        return set()


def _tflite_precision(path: str) -> str | None:
    """float32, float16 (fp16 weights), int8 (full-integer: the convs compute in int8) or int8 weights
    (dynamic range: int8 weights, float maps), from the TFLite file itself; None when its interpreter
    cannot read it (custom ops)."""
    import tensorflow as tf

    try:
        interpreter = _quiet_interpreter(tf, path)
        tensors = {t["index"]: np.dtype(t["dtype"]).name for t in interpreter.get_tensor_details()}
        ops = interpreter._get_ops_details()
    except (ValueError, RuntimeError, AttributeError):
        return None
    kinds = set(tensors.values())
    conv_outputs = {tensors.get(op["outputs"][0]) for op in ops if "CONV" in op["op_name"] and len(op["outputs"])}
    if conv_outputs & {"int8", "uint8", "int16"}:
        return "int8"
    if kinds & {"int8", "uint8"}:
        return "int8 weights (dynamic range)"
    return "float16" if "float16" in kinds else "float32"


def _precision(model) -> str:
    from onnx import TensorProto

    quantized_activations = any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    if quantized_activations:
        return "int8"
    if any(n.op_type == "DequantizeLinear" for n in model.graph.node):
        return "int8 weights (dynamic range)"
    if any(init.data_type == TensorProto.FLOAT16 for init in model.graph.initializer):
        return "float16"
    return "float32"


def _constant(model, name: str):
    from onnx import numpy_helper

    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return numpy_helper.to_array(node.attribute[0].t)
    return None


def _quantization(model, node) -> dict | None:
    scale = _constant(model, node.input[1])
    zero = _constant(model, node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if scale is None or np.size(scale) != 1:
        return None
    return {"scale": float(np.reshape(scale, -1)[0]),
            "zero_point": int(np.reshape(zero, -1)[0]) if zero is not None else 0,
            "dtype": str(zero.dtype) if zero is not None else "uint8"}


def _float_input(model) -> dict | None:
    """A uint8/int8 input becomes float32 followed by a QuantizeLinear with the scale and zero point of the
    DequantizeLinear that reads it (directly, or through a layout Transpose)."""
    from onnx import TensorProto, helper

    graph = model.graph
    if len(graph.input) != 1:
        return None
    source = graph.input[0]
    readers = [n for n in graph.node if source.name in n.input]
    if source.type.tensor_type.elem_type == TensorProto.FLOAT:  # an int8 model with float I/O quantizes it itself
        if len(readers) == 1 and readers[0].op_type == "QuantizeLinear" and readers[0].input[0] == source.name:
            found = _quantization(model, readers[0])
            return {**found, "in_graph": True} if found else None
        return None
    if source.type.tensor_type.elem_type not in (TensorProto.UINT8, TensorProto.INT8) or not readers:
        return None
    dequantize = _first_dequantize(graph, source.name)
    quantization = _quantization(model, dequantize) if dequantize is not None else None
    wanted = "uint8" if source.type.tensor_type.elem_type == TensorProto.UINT8 else "int8"
    if quantization is None or quantization["dtype"] != wanted:
        return None
    quantized = source.name + "_quantized"
    for node in readers:
        for i, name in enumerate(node.input):
            if name == source.name:
                node.input[i] = quantized
    graph.node.insert(0, helper.make_node("QuantizeLinear", [source.name, dequantize.input[1], dequantize.input[2]],
                                          [quantized], name=quantized))
    source.type.tensor_type.elem_type = TensorProto.FLOAT
    return quantization


def _first_dequantize(graph, tensor: str):
    """The DequantizeLinear that reads ``tensor`` directly or through layout ops (uint8 inputs go straight to
    one; int8 inputs through a Transpose first): its scale and zero point are the input's."""
    layout = {"Transpose", "Reshape", "Identity", "Squeeze", "Unsqueeze"}
    pending, seen = [tensor], set()
    while pending:
        current = pending.pop(0)
        if current in seen:
            continue
        seen.add(current)
        for node in graph.node:
            if current in node.input[:1]:
                if node.op_type == "DequantizeLinear":
                    return node
                if node.op_type in layout:
                    pending.extend(node.output)
    return None


def _float_outputs(model) -> list[dict]:
    """Each uint8/int8 graph output written by a QuantizeLinear gets a DequantizeLinear (same name)."""
    from onnx import TensorProto, helper

    graph = model.graph
    found = []
    for output in graph.output:
        if output.type.tensor_type.elem_type not in (TensorProto.UINT8, TensorProto.INT8):
            continue
        producer = next((n for n in graph.node if output.name in n.output), None)
        if producer is None or producer.op_type != "QuantizeLinear":
            continue
        quantization = _quantization(model, producer)
        if quantization is None:
            continue
        quantized = output.name + "_quantized"
        for node in graph.node:
            for i, name in enumerate(node.input):
                if name == output.name:
                    node.input[i] = quantized
        producer.output[0] = quantized
        graph.node.append(helper.make_node("DequantizeLinear", [quantized, *producer.input[1:3]], [output.name],
                                           name=output.name + "_dequantized"))
        output.type.tensor_type.elem_type = TensorProto.FLOAT
        found.append({"output": output.name, **quantization})
    return found


def _looks_scoped(name: str) -> bool:
    return ";" in name or name.count("/") >= 2


def _rename_convs(model, source=None) -> tuple[list[str], dict[str, str]]:
    """Name each conv node after its source layer; give its weight and bias inputs neutral names.
    ``source(node)``: the ';'-joined TF op names that say which layer the node is (default: its TFLite
    tensor's, the node's own name)."""
    from onnx import helper

    graph = model.graph
    readers = Counter(name for node in graph.node for name in node.input)
    taken: set[str] = set()
    layers, tensors, extra = [], {}, []
    for node in graph.node:
        if node.op_type not in ("Conv", "ConvTranspose") or node.domain not in _ONNX_DOMAINS:
            continue
        tflite_name = _strip(node.name or node.output[0])
        said = source(node) if source else tflite_name
        if not said:
            continue
        name = layer_of(said)
        if name in taken:  # not a Keras name (TF1, MediaPipe): the conv op's scope, e.g. expanded_conv_1/expand
            scope = min(said.split(";"), key=lambda part: 0 if _CONV_OP.match(part.split("/")[-1]) else 1)
            name = "/".join(scope.split(":")[0].split("/")[:-1]) or name
        if name in taken:
            count = 2
            while f"{name}#{count}" in taken:
                count += 1
            name = f"{name}#{count}"
        taken.add(name)
        for index, role in ((1, "kernel"), (2, "bias")):
            if len(node.input) <= index or not node.input[index] or not _looks_scoped(node.input[index]):
                continue
            neutral = f"{name}.{role}"
            if readers[node.input[index]] == 1:
                _rename_tensor(graph, node.input[index], neutral)
            else:  # shared with another node (TFLite shares equal constants): a copy of our own
                producer = next((n for n in graph.node if node.input[index] in n.output), None)
                if producer is not None and producer.op_type == "DequantizeLinear":  # stays a quantized weight
                    copy = helper.make_node("DequantizeLinear", list(producer.input), [neutral], name=neutral)
                    copy.attribute.extend(producer.attribute)
                else:
                    copy = helper.make_node("Identity", [node.input[index]], [neutral], name=neutral)
                extra.append((producer, copy))
                node.input[index] = neutral
        node.name = name
        layers.append(name)
        tensors[name] = tflite_name
    for producer, copy in extra:  # right after what they copy: the graph stays topologically sorted
        nodes = list(graph.node)
        at = nodes.index(producer) + 1 if producer is not None else 0
        graph.node.insert(at, copy)
    return layers, tensors


def _rename_tensor(graph, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = new
    for init in graph.initializer:
        if init.name == old:
            init.name = new
    for info in graph.value_info:
        if info.name == old:
            info.name = new


def preprocessing_from_quantization(quantization: dict | None, size):
    """What a uint8 input's quantization says of the float model's input range: scale 1/255 and zero point 0
    is pixels / 255 ('raw'), 1/127.5 around 127.5 is [-1, 1] ('tf'); anything else says nothing."""
    from inspector.preprocess import preset

    if not quantization or quantization.get("dtype") not in ("uint8", "int8"):
        return None
    scale, zero = quantization["scale"], quantization["zero_point"]
    offset = 128 if quantization["dtype"] == "int8" else 0  # int8 pixels are uint8 pixels - 128
    if abs(scale * 255 - 1) < 0.02 and zero + offset == 0:
        return preset("raw", size)
    if abs(scale * 127.5 - 1) < 0.02 and abs(zero + offset - 127.5) <= 1:
        return preset("tf", size)
    return None


def metadata_extra(conversion: TFLiteConversion) -> dict:
    return {INPUT_QUANTIZATION: json.dumps(conversion.input_quantization) if conversion.input_quantization else None,
            OUTPUT_QUANTIZATION: json.dumps(conversion.output_quantization) if conversion.output_quantization else None,
            TFLITE_PRECISION: conversion.precision}


# ------------------------------------------------------------------------------------- --check

# Float models: the conv maps and outputs agree with TFLite's to float rounding (the keras check's 1e-4).
FLOAT_TOLERANCE = 1e-4
# ... or, in a deep float network (MediaPipe's pose_landmark_full: 100 convs), the rounding of two runtimes
# that sum in other orders grows to a few 1e-4 of the largest value: still this far above the error (an
# error a thousandth of the signal's amplitude), where a wrong op or layout sits below 20 dB.
FLOAT_MIN_SQNR_DB = 60.0
# int8 models: onnxruntime and TFLite round some products differently by one step, and a step moves
# what follows; measured as the maps' SQNR against TFLite's (dB), a healthy conversion stays far above.
INT8_MIN_SQNR_DB = 30.0


def check_tflite(tflite_path: str, onnx_path: str, conversion: TFLiteConversion, preprocess, image=None,
                 echo=print) -> list:
    """Every conv layer's map and every output against TFLite's interpreter, on random pixels (and ``image``)."""
    import inspector
    from inspector.errors import CheckFailed

    from .keras_convert import import_tensorflow
    from .parity import pixel_batch

    tf, _ = import_tensorflow()
    interpreter = _interpreter(tf, tflite_path)
    details = interpreter.get_input_details()[0]
    shape = [int(d) for d in details["shape"]]
    if len(shape) == 4:
        batch = pixel_batch((shape[1], shape[2]), shape[3], preprocess, image=image)
    elif np.dtype(details["dtype"]).kind == "f" or details["quantization"][0]:
        # Not an image (basic-pitch's audio, (1, samples, 1)): a signal in [-1, 1] exercises every layer.
        batch = np.random.default_rng(0).uniform(-1, 1, (2, *shape[1:])).astype(np.float32)
    else:
        raise InspectorError(f"--check feeds images or float signals; this model's input is {shape} of "
                             f"{np.dtype(details['dtype']).name}")
    by_tensor = {t["name"]: t for t in interpreter.get_tensor_details()}
    activated = _activation_outputs(interpreter)
    model = inspector.load(onnx_path)
    chosen = [layer for layer in model.layers if layer.node_name in conversion.tflite_tensors]
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    # TFLite files fix the batch at 1 (MediaPipe's all do), and so does their ONNX: one image per run then.
    fixed = session.get_inputs()[0].shape[0] == 1
    runs = [batch[i:i + 1] for i in range(len(batch))] if fixed else [batch]
    run_maps = model.run if len(shape) == 4 else lambda part, layers: _signal_maps(onnx_path, part, layers)
    parts = [run_maps(part, chosen) if chosen else {} for part in runs]
    onnx_maps = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    final_parts = [session.run(None, {session.get_inputs()[0].name: part}) for part in runs]
    onnx_finals = [np.concatenate([part[k] for part in final_parts]) for k in range(len(final_parts[0]))]
    references: dict[str, list] = {}
    finals: list[list] = [[] for _ in interpreter.get_output_details()]
    for image_index in range(len(batch)):
        interpreter.set_tensor(details["index"], _quantize(batch[image_index:image_index + 1], details))
        interpreter.invoke()
        for layer in chosen:
            tensor = _tensor_for(layer, conversion.tflite_tensors[layer.node_name], by_tensor, activated)
            if tensor is not None:
                value = _dequantized(interpreter.get_tensor(tensor["index"]), tensor)
                references.setdefault(layer.name, []).append(value.transpose(0, 3, 1, 2) if value.ndim == 4 else value)
        for k, output in enumerate(interpreter.get_output_details()):
            finals[k].append(_dequantized(interpreter.get_tensor(output["index"]), output))
    quantized = conversion.precision not in ("float32", "float16")  # int8, or TFLite's hybrid int8 kernels
    rows = []
    for layer in chosen:
        if layer.name in references:
            rows.append(_compare(layer.name, np.concatenate(references[layer.name]), onnx_maps[layer.name]))
    for k, values in enumerate(finals):
        rows.append(_compare("output" if len(finals) == 1 else f"output {k}", np.concatenate(values), onnx_finals[k]))
    echo("parity check (TFLite interpreter vs onnxruntime):")
    width = max([len(r["name"]) for r in rows] + [5])
    echo(f"  {'layer':<{width}}  {'max abs':>10}  {'relative':>10}  {'SQNR dB':>8}")
    failed = []
    for row in rows:
        ok = row["sqnr_db"] >= INT8_MIN_SQNR_DB if quantized else \
            row["relative"] <= FLOAT_TOLERANCE or row["sqnr_db"] >= FLOAT_MIN_SQNR_DB
        verdict = "ok" if ok else (f"FAIL (< {INT8_MIN_SQNR_DB:g} dB)" if quantized else
                                   f"FAIL (> {FLOAT_TOLERANCE:g} and < {FLOAT_MIN_SQNR_DB:g} dB)")
        echo(f"  {row['name']:<{width}}  {row['max_abs']:10.3g}  {row['relative']:10.3g}  "
             f"{row['sqnr_db']:8.1f}  {verdict}")
        if not ok:
            failed.append(row)
    unchecked = len(model.layers) - (len(rows) - len(finals))
    if unchecked:
        echo(f"  ({unchecked} conv layer(s) without a TFLite tensor to compare: not checked)")
    if failed:
        worst = failed[0]
        raise CheckFailed(f"parity check failed: {len(failed)} of {len(rows)} tensors differ from TFLite's "
                          f"(first {worst['name']}: SQNR {worst['sqnr_db']:.1f} dB, relative {worst['relative']:.3g}); "
                          "nothing was written, rerun without --check to keep the file anyway")
    return rows


def _signal_maps(onnx_path: str, batch: np.ndarray, layers) -> dict:
    """Conv maps (channel-first) of a model whose input is no image (``Model.run`` feeds images only):
    onnxruntime on the file with the shown tensors added as outputs."""
    import onnx
    import onnxruntime as ort

    from inspector.execution import to_channel_first

    proto = onnx.load(onnx_path)
    present = {o.name for o in proto.graph.output}
    proto.graph.output.extend(onnx.helper.make_empty_tensor_value_info(layer.output) for layer in layers
                              if layer.output not in present)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    values = session.run([layer.output for layer in layers], {session.get_inputs()[0].name: batch})
    return {layer.name: to_channel_first(value, layer.output_perm) for layer, value in zip(layers, values)}


def _interpreter(tf, path: str):
    try:
        interpreter = _quiet_interpreter(tf, path, experimental_preserve_all_tensors=True)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        match = re.search(r"unresolved custom op: ([\w.]+)", str(exc))
        if match:
            raise InspectorError(f"--check: TFLite's interpreter cannot run the custom op "
                                 f"{match.group(1).rstrip('.')}; convert without --check") from None
        raise InspectorError(f"--check: TFLite's interpreter cannot load the model ({' '.join(str(exc).split())[:200]})"
                             ) from None
    return interpreter


def _quiet_interpreter(tf, path: str, **options):
    """tf.lite.Interpreter without its deprecation and debugging warnings on stderr."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tf.lite.Interpreter(model_path=path, **options)


def _quantize(batch: np.ndarray, details: dict) -> np.ndarray:
    dtype = details["dtype"]
    if np.issubdtype(dtype, np.floating):
        return batch.astype(dtype)
    scale, zero = details["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(batch / scale) + zero, info.min, info.max).astype(dtype)


def _dequantized(value: np.ndarray, details: dict) -> np.ndarray:
    if np.issubdtype(value.dtype, np.floating):
        return value.astype(np.float64)
    scale, zero = details["quantization"]
    return (value.astype(np.float64) - zero) * scale


def _tensor_for(layer, conv_tensor: str, by_tensor: dict, activated: dict | None = None):
    """The TFLite tensor holding what inspector shows for ``layer``: the conv op's output (TFLite fuses the
    activation into it), or the separate activation op's output when inspector followed one."""
    for candidate in (layer.output.split(":")[0], _strip(layer.output.split(":")[0]),
                      re.sub(r"(_dequant|_dequantized)$", "", layer.output.split(":")[0])):
        if candidate in by_tensor and candidate != conv_tensor:
            return by_tensor[candidate]
    if layer.activation and conv_tensor in (activated or {}):
        # An activation TFLite keeps as its own op (LOGISTIC after a conv whose output is the model's):
        # the ONNX tensor shown is after it, renamed to the graph output, so follow the op instead.
        return by_tensor.get(activated[conv_tensor], by_tensor.get(conv_tensor))
    return by_tensor.get(conv_tensor)


# TFLite ops that are one elementwise activation (what inspector follows after a conv).
_ACTIVATION_OPS = {"LOGISTIC", "RELU", "RELU6", "RELU_N1_TO_1", "RELU_0_TO_1", "TANH", "HARD_SWISH", "LEAKY_RELU",
                   "ELU", "GELU", "PRELU"}


def _activation_outputs(interpreter) -> dict[str, str]:
    """Tensor name -> the output of the single activation op that reads it."""
    names = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    readers: dict[int, list] = {}
    try:
        ops = interpreter._get_ops_details()
    except AttributeError:
        return {}
    for op in ops:
        if op["op_name"] == "DELEGATE":  # XNNPACK's stand-in for the ops it took over, listed after them
            continue
        for index in op["inputs"]:
            readers.setdefault(int(index), []).append(op)
    found = {}
    for index, users in readers.items():
        if len(users) == 1 and users[0]["op_name"] in _ACTIVATION_OPS and len(users[0]["outputs"]) == 1:
            found[names.get(index)] = names.get(int(users[0]["outputs"][0]))
    return found


def _compare(name: str, reference: np.ndarray, got: np.ndarray) -> dict:
    reference, got = np.asarray(reference, np.float64), np.asarray(got, np.float64)
    if reference.shape != got.shape:
        return {"name": name, "max_abs": float("inf"), "relative": float("inf"), "sqnr_db": float("-inf")}
    error = reference - got
    max_abs = float(np.max(np.abs(error))) if error.size else 0.0
    scale = float(np.max(np.abs(reference))) if reference.size else 0.0
    signal, noise = float(np.sum(reference ** 2)), float(np.sum(error ** 2))
    sqnr = float("inf") if noise == 0 else (10 * np.log10(signal / noise) if signal > 0 else float("-inf"))
    return {"name": name, "max_abs": max_abs, "relative": max_abs / max(scale, 1e-12) if max_abs else 0.0,
            "sqnr_db": sqnr}
