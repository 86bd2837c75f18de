"""TensorFlow's own formats to ONNX through tf2onnx: a SavedModel directory (what TF Hub and TF Serving hand
out) or a TF1 frozen graph ``.pb``.

The graph is frozen (``tf2onnx.tf_loader``), its inputs and outputs found from the graph (a SavedModel's
serving signature; a frozen graph's Placeholders and the tensors nobody reads) unless given, converted by
``tf2onnx.convert.from_graph_def``, and each conv node renamed after its Keras layer as ``convert tflite``
does (from its weights' and its own TF scope). ``--check`` runs the frozen graph in TensorFlow and
compares every conv map whose tensor TensorFlow also has, and the outputs.

TensorFlow and tf2onnx are imported inside functions only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from inspector.errors import InspectorError

# TF ops that are never a model's output.
_NOT_OUTPUTS = {"NoOp", "Const", "Assert", "Placeholder", "PlaceholderWithDefault", "SaveV2", "RestoreV2",
                "VarHandleOp", "VariableV2", "Identity_n", "StringJoin", "ShardedFilename", "MergeV2Checkpoints"}
FLOAT_TOLERANCE = 1e-4


@dataclass
class TFConversion:
    model: object  # onnx.ModelProto
    graph_def: object  # the frozen tf.compat.v1.GraphDef
    inputs: list[str]
    outputs: list[str]
    conv_layers: list[str]
    kind: str  # "saved_model" | "frozen_graph"


def _names(text: str | None) -> list[str] | None:
    if not text:
        return None
    return [n if ":" in n else f"{n}:0" for n in (p.strip() for p in text.split(",")) if n]


def load_graph(path: str, inputs=None, outputs=None, tag=None, signature=None):
    """(frozen GraphDef, input tensor names, output tensor names, kind)."""
    from tf2onnx import tf_loader

    if not os.path.exists(path):
        raise InspectorError(f"model not found: {path}")
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, "saved_model.pb")):
            raise InspectorError(f"{path} is a folder without saved_model.pb; give a SavedModel folder or a frozen .pb")
        try:
            found = tf_loader.from_saved_model(path, inputs, outputs, tag=tag,
                                               signatures=[signature] if signature else None)
        except Exception as exc:  # TensorFlow's loader raises many types
            raise InspectorError(f"{path}: TensorFlow cannot load this SavedModel "
                                 f"({exc.__class__.__name__}: {' '.join(str(exc).split())[:200]})") from None
        graph_def, found_inputs, found_outputs = found[:3]
        return graph_def, found_inputs, found_outputs, "saved_model"
    if not path.endswith(".pb"):
        raise InspectorError(f"{path}: expected a SavedModel folder or a frozen graph .pb")
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    try:
        with open(path, "rb") as handle:
            graph_def.ParseFromString(handle.read())
    except Exception:  # protobuf's DecodeError
        raise InspectorError(f"{path} is not a TensorFlow GraphDef (.pb); a SavedModel's saved_model.pb is "
                             "read by giving its folder") from None
    inputs = inputs or [f"{n.name}:0" for n in graph_def.node if n.op == "Placeholder"]
    if not outputs:
        read = {i.split(":")[0].lstrip("^") for n in graph_def.node for i in n.input}
        outputs = [f"{n.name}:0" for n in graph_def.node if n.name not in read and n.op not in _NOT_OUTPUTS]
    if not inputs or not outputs:
        raise InspectorError(f"{path}: could not find the graph's {'inputs' if not inputs else 'outputs'}; "
                             "give them with --inputs / --outputs NAME[,NAME]")
    try:
        graph_def = tf_loader.from_graphdef(path, inputs, outputs)[0] if hasattr(tf_loader, "from_graphdef") \
            else graph_def
    except Exception as exc:
        raise InspectorError(f"{path}: TensorFlow cannot freeze this graph with inputs {inputs} and outputs "
                             f"{outputs} ({' '.join(str(exc).split())[:160]}); give --inputs / --outputs") from None
    return graph_def, inputs, outputs, "frozen_graph"


def _scope_source(node) -> str:
    """The TF names that say which layer a conv node is: its weights', its own and its bias's."""
    names = [node.input[1] if len(node.input) > 1 else "", node.name, node.input[2] if len(node.input) > 2 else ""]
    return ";".join(n for n in names if n.count("/") >= 1)


def tf_to_onnx(path: str, opset: int = 17, inputs=None, outputs=None, tag=None, signature=None) -> TFConversion:
    from .keras_convert import captured_tf2onnx_logs, import_tensorflow
    from .tflite_convert import _ONNX_DOMAINS, _ops_in_logs, _refuse_ops, _rename_convs

    import_tensorflow()
    import tf2onnx

    with captured_tf2onnx_logs() as records:
        graph_def, inputs, outputs, kind = load_graph(path, inputs, outputs, tag, signature)
        try:
            model, _ = tf2onnx.convert.from_graph_def(graph_def, input_names=inputs, output_names=outputs,
                                                      opset=opset)
        except Exception as exc:
            _refuse_ops(_ops_in_logs(records), path)
            raise InspectorError(f"tf2onnx could not convert {os.path.basename(path.rstrip('/'))} "
                                 f"({exc.__class__.__name__}: {' '.join(str(exc).split())[:200]})") from None
    _refuse_ops(_ops_in_logs(records), path)
    _refuse_ops([n.op_type for n in model.graph.node if n.domain not in _ONNX_DOMAINS + ("com.microsoft",)], path)
    layers, _ = _rename_convs(model, source=_scope_source)
    return TFConversion(model, graph_def, list(inputs), list(outputs), layers, kind)


def check_tf(conversion: TFConversion, onnx_path: str, preprocess, image=None, echo=print) -> list:
    """Every conv map TensorFlow also has, and the outputs, from the frozen graph against onnxruntime."""
    import inspector
    import onnxruntime as ort
    import tensorflow as tf
    from inspector.errors import CheckFailed

    from .parity import pixel_batch

    model = inspector.load(onnx_path)
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    onnx_input = session.get_inputs()[0]
    dims = onnx_input.shape
    if len(dims) != 4 or not isinstance(dims[1], int) or not isinstance(dims[2], int):
        raise InspectorError(f"--check takes models with one fixed-size image input (N, H, W, C); "
                             f"this one takes {dims}")
    batch = pixel_batch((dims[1], dims[2]), dims[3], preprocess, image=image)
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(conversion.graph_def, name="")
    available = {t.name for op in graph.get_operations() for t in op.outputs}
    layers = [layer for layer in model.layers if layer.output in available]
    fetches = [layer.output for layer in layers] + list(conversion.outputs)
    with tf.compat.v1.Session(graph=graph) as tf_session:
        reference = tf_session.run(fetches, {conversion.inputs[0]: batch})
    maps = model.run(batch, layers) if layers else {}
    finals = session.run(None, {onnx_input.name: batch})
    rows = []
    for layer, value in zip(layers, reference):
        value = np.asarray(value)
        if value.ndim == 4 and value.transpose(0, 3, 1, 2).shape == maps[layer.name].shape:
            value = value.transpose(0, 3, 1, 2)
        rows.append(_difference(layer.name, value, maps[layer.name]))
    for k, value in enumerate(reference[len(layers):]):
        rows.append(_difference("output" if len(finals) == 1 else f"output {k}", value, finals[k]))
    echo("parity check (TensorFlow vs onnxruntime):")
    width = max([len(r[0]) for r in rows] + [5])
    echo(f"  {'layer':<{width}}  {'max abs':>10}  {'relative':>10}")
    for name, max_abs, relative in rows:
        verdict = "ok" if relative <= FLOAT_TOLERANCE else f"FAIL (> {FLOAT_TOLERANCE:g})"
        echo(f"  {name:<{width}}  {max_abs:10.3g}  {relative:10.3g}  {verdict}")
    unchecked = len(model.layers) - len(layers)
    if unchecked:
        echo(f"  ({unchecked} conv layer(s) whose tensor TensorFlow does not name: not checked)")
    failed = [row for row in rows if row[2] > FLOAT_TOLERANCE]
    if failed:
        raise CheckFailed(f"parity check failed: {len(failed)} of {len(rows)} tensors differ from TensorFlow's by "
                          f"more than {FLOAT_TOLERANCE:g} relative (first {failed[0][0]}: {failed[0][2]:.3g}); nothing "
                          "was written, rerun without --check to keep the file anyway")
    return rows


def _difference(name: str, reference, got) -> tuple[str, float, float]:
    reference, got = np.asarray(reference, np.float64), np.asarray(got, np.float64)
    if reference.shape != got.shape:
        return name, float("inf"), float("inf")
    max_abs = float(np.max(np.abs(reference - got))) if reference.size else 0.0
    scale = float(np.max(np.abs(reference))) if reference.size else 0.0
    return name, max_abs, (max_abs / max(scale, 1e-12) if max_abs else 0.0)
