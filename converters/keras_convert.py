"""Keras model -> clean ONNX, converting structure and weights separately.

Why not ``tf2onnx.convert.from_keras``: it freezes every variable into the
TensorFlow graph and grappler then copies those constants several times
(the full VGG16, 553 MB of weights, passes 14 GB). Here the traced graph's
big variable reads become Placeholders, so TensorFlow and tf2onnx only ever
see a graph of a few kilobytes; the weights go straight from the Keras
variables into ONNX initializers (``onnx_passes.attach_weights``), with the
layout Transposes on them folded in NumPy. Small tensors (biases, BatchNorm
statistics) stay constants so that tf2onnx can still fuse them into convs.

Only this module (and keras_apps, torch_convert, parity) import TensorFlow,
and only inside functions.
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass, field

import numpy as np

from inspector.errors import InspectorError

from . import onnx_passes
from .measure import NoStages

# Variables up to this size stay TF constants (biases, BN statistics): cheap, and
# tf2onnx fuses them into the conv. Bigger ones, and every kernel, become
# placeholders: a kernel placeholder also keeps the layer's scope in the conv's
# weight input, which names the conv even where tf2onnx renames the node.
SMALL_CONSTANT_BYTES = 1 << 16
DEFAULT_OPSET = 17


@dataclass
class KerasConversion:
    model: object  # onnx.ModelProto
    conv_layers: list[str]
    input_name: str
    input_layout: str
    output_names: list[str]
    stats: dict = field(default_factory=dict)
    # ONNX tensor -> Keras layer whose output it equals (parity compares these)
    tensor_layers: dict = field(default_factory=dict)
    # initializer name -> its array; the model's initializers hold only name, type and shape
    payloads: dict = field(default_factory=dict)


def import_tensorflow():
    """TensorFlow, tf2onnx and Keras 3, or an InspectorError naming the extra to install."""
    import os

    # Before TensorFlow loads: its C++ log level, and oneDNN off, whose start-up
    # notice absl prints whatever the log level (and TF's Eigen kernels are
    # exact enough for the 1e-4 parity bound either way).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    try:
        import tensorflow as tf
        import keras
        import tf2onnx  # noqa: F401
    except ImportError as exc:
        raise InspectorError(
            f"converting Keras models needs TensorFlow, Keras 3 and tf2onnx ({exc.name or exc} is missing); "
            "install them with: pip install 'inspector-cnn[keras]'") from None
    tf.get_logger().setLevel("ERROR")  # retracing notices and the like: not the user's business
    if not keras.__version__.startswith("3"):
        raise InspectorError(f"Keras {keras.__version__} found; the converter needs Keras 3: "
                             "pip install 'inspector-cnn[keras]'")
    return tf, keras


def all_layers(model) -> list:
    return [layer for layer in model._flatten_layers(include_self=False)]


def _record_scopes(model, tf):
    """Wrap every layer's ``call`` to note the TF name scope it runs under (undo with the returned fn)."""
    scopes: dict[str, list[str]] = {}
    undo = []
    for layer in all_layers(model):
        original = layer.call
        had_own = "call" in layer.__dict__

        def wrapper(*args, __original=original, __name=layer.name, **kwargs):
            scopes.setdefault(__name, []).append(tf.compat.v1.get_default_graph().get_name_scope())
            return __original(*args, **kwargs)

        layer.call = wrapper
        undo.append((layer, original, had_own))

    def restore():
        for layer, original, had_own in undo:
            if had_own:
                layer.call = original
            else:
                del layer.call

    return scopes, restore


def _input_spec(model, tf):
    if len(model.inputs) != 1:
        raise InspectorError(
            f"model '{model.name}' has {len(model.inputs)} inputs; the inspector needs a model with one image input")
    tensor = model.inputs[0]
    shape = (None,) + tuple(tensor.shape[1:])
    history = getattr(tensor, "_keras_history", None)
    input_layer = getattr(history, "operation", None) or getattr(history, "layer", None)  # Keras 3, tf_keras
    name = onnx_passes.clean_name(getattr(input_layer, "name", None) or "input")
    return tf.TensorSpec(shape, tf.as_dtype(tensor.dtype or "float32"), name=name), name


def _output_names(model) -> list[str]:
    names = []
    for k, tensor in enumerate(model.outputs):
        history = getattr(tensor, "_keras_history", None)
        layer = getattr(history, "operation", None) or getattr(history, "layer", None)
        names.append(onnx_passes.clean_name(getattr(layer, "name", None) or f"output_{k}"))
    return names


def _placeholder_weights(graph_def, captures: dict[str, object], tf):
    """Replace variable reads by Const (small) or Placeholder (big) nodes.

    Returns the new GraphDef and {placeholder name: variable} for the big ones.
    """
    from tensorflow.core.framework import graph_pb2

    out = graph_pb2.GraphDef()
    out.versions.CopyFrom(graph_def.versions)
    out.library.CopyFrom(graph_def.library)
    big: dict[str, object] = {}
    for node in graph_def.node:
        if node.op == "Placeholder" and node.name in captures:
            continue  # the resource handle itself
        if node.op == "ReadVariableOp" and node.input and node.input[0] in captures:
            variable = captures[node.input[0]]
            new = out.node.add()
            new.name = node.name
            dtype = tf.as_dtype(variable.dtype)
            new.attr["dtype"].type = dtype.as_datatype_enum
            nbytes = int(np.prod(variable.shape, dtype=np.int64)) * dtype.size
            kernel = "kernel" in str(getattr(variable, "path", variable.name)).rsplit("/", 1)[-1]
            if nbytes <= SMALL_CONSTANT_BYTES and not kernel:
                new.op = "Const"
                new.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(np.asarray(variable.numpy())))
            else:
                new.op = "Placeholder"
                new.attr["shape"].shape.CopyFrom(tf.TensorShape(variable.shape).as_proto())
                big[node.name] = variable
            continue
        if node.op in ("Placeholder",) and node.attr["dtype"].type == tf.resource.as_datatype_enum:
            raise InspectorError(f"the model reads a TensorFlow resource the converter cannot map ({node.name})")
        if node.op in ("AssignVariableOp", "AssignAddVariableOp", "AssignSubVariableOp"):
            raise InspectorError(
                f"the model updates a variable while predicting ({node.name}); the converter needs a pure inference graph")
        out.node.add().CopyFrom(node)
    return out, big


def keras_to_onnx(model, opset: int = DEFAULT_OPSET, stages=None) -> KerasConversion:
    """Convert a built Keras 3 model; the big weights never pass through TensorFlow graphs."""
    tf, keras = import_tensorflow()
    stages = stages or NoStages()
    import onnx
    from tf2onnx import tf_loader
    from tf2onnx.convert import _convert_common

    if opset < 17:
        raise InspectorError(f"--opset {opset} is too old: the inspector writes opset 17 or newer")

    with stages("trace"):
        spec, input_name = _input_spec(model, tf)
        scopes, restore = _record_scopes(model, tf)
        try:
            with _plain_grouped_convs(tf), _dense_on_maps_as_1x1_convs(tf):
                concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
        finally:
            restore()
        handle_to_variable = {}
        for variable in model.weights:
            tf_variable = getattr(variable, "value", variable)
            if callable(tf_variable) and not hasattr(tf_variable, "handle"):
                tf_variable = variable  # a tf_keras (Keras 2) weight is the tf.Variable itself
            handle_to_variable[id(getattr(tf_variable, "handle", tf_variable))] = variable
        captures = {}
        for external, internal in concrete.graph.captures:
            variable = handle_to_variable.get(id(external))
            if variable is None:
                if external.dtype == tf.resource:
                    raise InspectorError("the model captures a TensorFlow variable that is not one of its "
                                         "weights; the converter cannot map it")
                continue
            captures[internal.op.name] = variable
        graph_def = concrete.graph.as_graph_def(add_shapes=True)
        graph_def, big = _placeholder_weights(graph_def, captures, tf)
        output_names = [t.name for t in concrete.outputs]
        tf_input = concrete.inputs[0].name

    with stages("grappler"):
        input_names = [tf_input] + [f"{name}:0" for name in big]
        with tf.Graph().as_default():
            optimized = tf_loader.tf_optimize(input_names, output_names, graph_def)

    with stages("tf2onnx structure"):
        rank = len(spec.shape)
        nchw = [tf_input] if rank == 4 else None
        _scalar_addends_as_vectors(optimized, tf)
        _erfc_as_erf(optimized, tf)
        structure = _tf2onnx_structure(_convert_common, optimized, name=model.name, opset=opset,
                                       input_names=input_names, output_names=output_names, nchw=nchw,
                                       layer_of=_scope_matcher(scopes))
        del optimized, graph_def

    with stages("tidy structure"):
        graph = structure.graph
        onnx_passes.rename_tensor(graph, tf_input, input_name)
        keras_outputs = _output_names(model)
        for tensor, name in zip(list(graph.output), keras_outputs):
            onnx_passes.rename_tensor(graph, tensor.name, name)
        shapes = onnx_passes.static_shapes(structure)
        pinned = onnx_passes.pin_reshape_shapes(structure, shapes)
        by_name, for_naming = _node_layers(graph, scopes)
        containers = {layer.name for layer in all_layers(model) if hasattr(layer, "layers")}
        by_name = {k: v for k, v in by_name.items() if v not in containers}
        tensor_layers = _tensor_layers(graph, by_name)
        renamed: dict[str, str] = {}
        conv_layers = onnx_passes.name_layers(graph, {k: v for k, v in for_naming.items() if v not in containers},
                                              renamed)
        tensor_layers = {renamed.get(t, t): layer for t, layer in tensor_layers.items()}
        shapes = onnx_passes.static_shapes(structure)

    with stages("attach weights"):
        weight_inputs = {f"{name}:0": (lambda v=variable: np.asarray(v.numpy())) for name, variable in big.items()}
        kinds = {onnx_passes.clean_name(layer.name): type(layer).__name__ for layer in all_layers(model)}
        node_layer = {name: onnx_passes.clean_name(layer) for name, layer in by_name.items()}

        def fold_allowed(conv, node) -> bool:
            """A conv's own bias and a BatchNormalization fold; another layer's constant scale does not."""
            layer = node_layer.get(node.name)
            return layer is None or layer == onnx_passes.layer_of_conv(conv.name) or \
                kinds.get(layer) == "BatchNormalization"

        stats, payloads = onnx_passes.attach_weights(structure, weight_inputs, opset, shapes,
                                                     fold_allowed=fold_allowed)
        stats["reshapes_pinned"] = pinned
        onnx_passes.prune(structure.graph)
        stats["hard_swish_fused"] = onnx_passes.fuse_hard_swish(structure.graph)
        renamed = {}
        stats["outputs_named"] = onnx_passes.name_shown_outputs(structure.graph, conv_layers, renamed)
        tensor_layers = {renamed.get(t, t): layer for t, layer in tensor_layers.items()}
        stats["weights_named"] = onnx_passes.name_conv_weights(structure.graph, payloads)
        del structure.graph.value_info[:]  # stale after folding; the runtime infers its own
        structure.producer_name = "inspector-converters (tf2onnx structure)"
        structure.graph.name = onnx_passes.clean_name(model.name)

    layout = "NCHW" if rank == 4 else "NHWC"
    return KerasConversion(structure, conv_layers, input_name, layout, keras_outputs, stats, tensor_layers, payloads)


@contextlib.contextmanager
def _plain_grouped_convs(tf):
    """While tracing: grouped convolutions (ConvNeXt's depthwise 7x7) as one plain Conv2D op.

    Keras's TensorFlow backend wraps a grouped conv in an XLA-compiled nested
    function (TensorFlow's CPU kernel cannot run it), which the frozen graph
    cannot import ("Non-existent input ..."). In the graph we only convert,
    the plain op is right: tf2onnx reads the groups off its shapes.
    """
    try:
        from keras.src.backend.tensorflow import nn as backend_nn
    except ImportError:
        yield
        return
    original = backend_nn.conv

    def conv(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
        from keras.src import backend

        fmt = backend.standardize_data_format(data_format)
        channels = inputs.shape[-1] if fmt == "channels_last" else inputs.shape[1]
        if channels == kernel.shape[-2] or len(inputs.shape) != 4:
            return original(inputs, kernel, strides, padding, data_format, dilation_rate)
        return tf.nn.convolution(inputs, kernel, strides, padding.upper(),
                                 data_format="NHWC" if fmt == "channels_last" else "NCHW",
                                 dilations=dilation_rate)

    backend_nn.conv = conv
    try:
        yield
    finally:
        backend_nn.conv = original


@contextlib.contextmanager
def _dense_on_maps_as_1x1_convs(tf):
    """While tracing: a Dense layer on an (N, H, W, C) map (ConvNeXt's pointwise convs) as a 1x1 Conv2D.

    The same numbers; as a MatMul over the last axis, tf2onnx must keep the map
    channels-last around it (two Transposes per ConvNeXt block), as a conv its
    layout optimizer works it into the NCHW graph like any other conv.
    """
    try:
        from keras.src import ops
    except ImportError:
        yield
        return
    original = ops.matmul

    def matmul(x1, x2):
        if len(getattr(x1, "shape", ())) == 4 and len(getattr(x2, "shape", ())) == 2 and tf.is_tensor(x1):
            kernel = tf.reshape(x2, (1, 1, x2.shape[0], x2.shape[1]))
            return tf.nn.conv2d(x1, tf.cast(kernel, x1.dtype), strides=1, padding="VALID")
        return original(x1, x2)

    ops.matmul = matmul
    try:
        yield
    finally:
        ops.matmul = original


def _scalar_addends_as_vectors(graph_def, tf) -> int:
    """Scalar constants added to a tensor become shape-(1,) constants (same broadcast).

    tf2onnx's transpose optimizer crashes on ``conv + 3.0`` (hard-sigmoid,
    hard-swish: ``max(())`` of a scalar's shape), and falls back to leaving a
    Transpose pair around every conv (109 in MobileNetV3Small).
    """
    from tensorflow.core.framework import tensor_shape_pb2

    consts = {n.name: n for n in graph_def.node if n.op == "Const"}
    ranks = {}
    for node in graph_def.node:
        shapes = node.attr["_output_shapes"].list.shape if "_output_shapes" in node.attr else []
        if shapes:
            ranks[node.name] = -1 if shapes[0].unknown_rank else len(shapes[0].dim)
    changed = set()
    for node in graph_def.node:
        if node.op not in ("Add", "AddV2", "Sub", "Mul") or len(node.input) != 2:
            continue
        for k, name in enumerate(node.input):
            const = consts.get(name.split(":")[0])
            other = node.input[1 - k].split(":")[0].lstrip("^")
            if const is None or ranks.get(other, -1) == 0:  # (grappler's output has no shapes: unknown)
                continue
            value = const.attr["value"].tensor
            if len(value.tensor_shape.dim) != 0 or const.name in changed or \
                    value.dtype not in (tf.float32.as_datatype_enum, tf.float16.as_datatype_enum):
                continue
            array = tf.make_ndarray(value).reshape(1)
            const.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(array))
            if "_output_shapes" in const.attr:
                del const.attr["_output_shapes"].list.shape[:]
                const.attr["_output_shapes"].list.shape.add().CopyFrom(
                    tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=1)]))
            changed.add(const.name)
    return len(changed)


def _erfc_as_erf(graph_def, tf) -> int:
    """``Erfc(x)`` (exact GELU, ConvNeXt) as ``1 - Erf(x)``: tf2onnx passes Erfc on, and ONNX has no Erfc."""
    count = 0
    for node in list(graph_def.node):
        if node.op != "Erfc":
            continue
        dtype = node.attr["T"].type
        erf = graph_def.node.add()
        erf.name, erf.op = f"{node.name}/inspector_erf", "Erf"
        erf.input.extend(node.input)
        erf.attr["T"].type = dtype
        one = graph_def.node.add()
        one.name, one.op = f"{node.name}/inspector_one", "Const"
        one.attr["dtype"].type = dtype
        one.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(
            np.ones((1,), dtype=tf.dtypes.as_dtype(dtype).as_numpy_dtype)))
        node.op = "Sub"
        del node.input[:]
        node.input.extend([one.name, erf.name])
        count += 1
    return count


class _Captured(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@contextlib.contextmanager
def captured_tf2onnx_logs():
    """tf2onnx's log records (its caught optimizer tracebacks included) go to a list, not stderr."""
    logger = logging.getLogger("tf2onnx")
    handler = _Captured()
    saved = (logger.handlers[:], logger.propagate, logger.level)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.WARNING)
    try:
        yield handler.records
    finally:
        logger.handlers[:], logger.propagate = saved[0], saved[1]
        logger.setLevel(saved[2])


def _tf2onnx_structure(convert_common, graph_def, *, name, opset, input_names, output_names, nchw,
                       layer_of=lambda _name: None):
    """tf2onnx on the weightless graph; if one of its optimizers fails, again without that one.

    tf2onnx catches an optimizer's exception itself, prints its traceback and
    goes on with the graph as it was; here that traceback is captured, the
    failing optimizer left out of a second run, and the Transpose pairs it
    would have removed are removed by ``onnx_passes.remove_transpose_pairs``.
    """
    from tf2onnx import optimizer

    def run(optimizers=None):
        with captured_tf2onnx_logs() as records:
            try:
                structure, _ = convert_common(graph_def, name=name, continue_on_error=False, opset=opset,
                                              input_names=input_names, output_names=output_names,
                                              inputs_as_nchw=nchw, optimizers=optimizers)
            except Exception as exc:
                text = " ".join(str(exc).split())
                layers = [layer for layer in (layer_of(word.strip("'\",:;()[]").split(":")[0] + "/x")
                                              for word in text.split()) if layer]
                where = f" in layer '{layers[0]}'" if layers else ""
                raise InspectorError(f"tf2onnx could not convert the model{where} ({exc.__class__.__name__}: "
                                     f"{text[:200]})") from None
        failed = sorted({m.group(1) for r in records
                         for m in [re.match(r"Failed to apply (\w+)", r.getMessage())] if m})
        return structure, failed

    structure, failed = run()
    if failed:
        kept = {k: v for k, v in optimizer._get_optimizers().items() if k not in failed}
        structure, again = run(kept)
        if again:
            raise InspectorError(f"tf2onnx's optimizers {', '.join(again)} fail on this model even when "
                                 f"{', '.join(failed)} is left out")
    onnx_passes.remove_transpose_pairs(structure.graph)
    return structure


def _scope_matcher(scopes: dict[str, list[str]]):
    by_scope = sorted(((scope, layer) for layer, found in scopes.items() for scope in found if scope),
                      key=lambda item: -len(item[0]))

    def layer_of(name: str) -> str | None:
        for scope, layer in by_scope:
            if name.startswith(scope + "/"):
                return layer
        return None

    return layer_of


def _node_layers(graph, scopes: dict[str, list[str]]) -> tuple[dict[str, str], dict[str, str]]:
    """Two maps ONNX node name -> innermost Keras layer whose name scope holds it.

    The first names each node by its own name; when tf2onnx fuses a
    BatchNormalization into the conv before it, the fused node keeps the BN's
    name, so the second map places conv nodes by their weight's name instead:
    the conv node is then named after the conv layer, while its value is the
    BN layer's output (what the parity check compares it with).
    """
    layer_of = _scope_matcher(scopes)
    producer = onnx_passes.producers(graph)

    def weight_layer(tensor: str, depth: int = 0) -> str | None:
        """Follow the weight back through Reshape/Transpose/Mul... to a scoped name."""
        found = layer_of(tensor)
        if found or depth > 8 or tensor not in producer:
            return found
        node = producer[tensor]
        return layer_of(node.name) or next(
            (hit for hit in (weight_layer(t, depth + 1) for t in node.input if t) if hit), None)

    by_name, for_naming = {}, {}
    for node in graph.node:
        layer = layer_of(node.name)
        if layer:
            by_name[node.name] = layer
        if node.op_type in onnx_passes.CONV_OPS and len(node.input) > 1:
            layer = weight_layer(node.input[1]) or layer
        if layer:
            for_naming[node.name] = layer
    return by_name, for_naming


def _tensor_layers(graph, by_name: dict[str, str]) -> dict[str, str]:
    """ONNX tensor -> the Keras layer whose output it is (it leaves that layer's nodes)."""
    uses = onnx_passes.consumers(graph)
    graph_outputs = {o.name for o in graph.output}
    out = {}
    for node in graph.node:
        layer = by_name.get(node.name)
        if not layer:
            continue
        for tensor in node.output:
            readers = uses.get(tensor, [])
            if tensor in graph_outputs or any(by_name.get(r.name) != layer for r in readers):
                out[tensor] = layer
    return out
