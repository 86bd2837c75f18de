"""Conv layers of an ONNX graph: which tensors they are, what they are called, where their weights live.

One pass over the graph builds a list of ``Layer`` objects that every command
uses. Weights are not read here, only located; ``Graph.weights`` reads them on
demand from initializers, ``Constant`` nodes, ``DequantizeLinear`` chains or
external data.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

import numpy as np

from .errors import InspectorError

CONV_OPS = ("Conv", "ConvTranspose", "QLinearConv", "ConvInteger")

# Single-input elementwise activations whose output Keras calls the layer's output.
ACTIVATIONS = {
    "Relu", "LeakyRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu",
    "Selu", "PRelu", "Softplus", "Softsign", "Gelu", "Mish", "ThresholdedRelu", "Celu",
}
# x * gate(x) activations (Swish/SiLU, hard-swish written out).
GATES = {"Sigmoid", "HardSigmoid"}
# Per-channel affine steps that exporters leave unfolded between a conv and its
# activation (Paddle, torch in training mode, tf2onnx without its optimizers):
# followed, so that every exporter of one model shows the same tensor.
AFFINE = {"BatchNormalization", "Add", "Sub", "Mul", "Div"}


@dataclass
class Layer:
    index: int
    name: str
    op: str
    node_name: str
    weight_shape: tuple[int, ...]
    groups: int
    params: int
    output: str  # the tensor shown as feature map (post-activation when there is one)
    conv_output: str
    activation: str | None = None
    affine: tuple[str, ...] = ()  # unfolded BatchNormalization / constant bias or scale between conv and output
    output_perm: tuple[int, ...] | None = None  # axes of `output` relative to the conv's NCHW
    quantization: str | None = None  # "qdq" | "qlinear" | None
    weight_input: str = ""
    bias_input: str | None = None
    node_index: int = 0
    extras: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "name": self.name,
            "op": self.op,
            "node": self.node_name,
            "weight_shape": list(self.weight_shape),
            "groups": self.groups,
            "params": self.params,
            "output": self.output,
            "conv_output": self.conv_output,
            "activation": self.activation,
            "affine": list(self.affine),
            "quantization": self.quantization,
        }

    @property
    def filters(self) -> int:
        """Number of output channels (filters) of the layer."""
        if not self.weight_shape:
            return 0
        if self.op == "ConvTranspose":
            return self.weight_shape[1] * self.groups
        return self.weight_shape[0]


_TF_OP_SUFFIX = re.compile(r"_(\d+)$")
_TF_WRAPPERS = re.compile(r"^(StatefulPartitionedCall|PartitionedCall)(_\d+)?$")


def scoped_layer(name: str) -> str | None:
    """The layer a scoped exporter name belongs to, or None when the name carries no scope.

    torch.onnx (names start with ``/``): the module's qualified name, as in its
    state dict: ``/features/features.0/Conv`` -> ``features.0``,
    ``/layer1/layer1.0/conv1/Conv`` -> ``layer1.0.conv1``.
    tf2onnx (``model/layer/op...``, saved-model wrappers skipped): the layer
    scope under the model's: ``vgg16_1/block1_conv1_1/BiasAdd`` -> ``block1_conv1``
    (Keras 3 suffixes the scopes it re-enters with ``_1``, model and layer
    alike), ``tiny_1/block1_conv2_1/convolution/merged_input:0`` -> ``block1_conv2``.
    """
    if name.startswith("/"):
        parts = [p for p in name.split("/") if p][:-1]  # the last part is the op
        qualified = ""
        for part in parts:
            qualified = part if not qualified or part.startswith(qualified + ".") else f"{qualified}.{part}"
        return qualified or None
    parts = [p for p in name.split(":")[0].split("/") if p]
    while parts and _TF_WRAPPERS.match(parts[0]):
        parts = parts[1:]
    if len(parts) == 2:
        return parts[0]
    if len(parts) < 3:
        return None
    layer = parts[1]
    model_suffix = _TF_OP_SUFFIX.search(parts[0])
    if model_suffix:
        suffix = "_" + model_suffix.group(1)
        if layer.endswith(suffix) and len(layer) > len(suffix):
            layer = layer[: -len(suffix)]
    return layer


def source_name(node_name: str) -> str:
    """The source framework's layer name recovered from an exporter's node name.

    See ``scoped_layer``; names without a scope (ours, and most other
    exporters) are kept as they are.
    """
    return scoped_layer(node_name) or node_name


class Graph:
    """The conv layers of a model and the means to read their weights."""

    def __init__(self, onnx_file):
        self.file = onnx_file
        graph = onnx_file.model.graph
        self.nodes = list(graph.node)
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[int]] = {}
        for i, node in enumerate(self.nodes):
            for out in node.output:
                if out:
                    self.producer[out] = i
            for inp in node.input:
                if inp:
                    self.consumers.setdefault(inp, []).append(i)
        self.graph_outputs = {o.name for o in graph.output}
        self.initializer_names = set(onnx_file.initializers)
        self.layers = self._find_layers()

    # ------------------------------------------------------------- discovery

    def _find_layers(self) -> list[Layer]:
        layers: list[Layer] = []
        taken: set[str] = set()
        for node_index, node in enumerate(self.nodes):
            if node.op_type not in CONV_OPS or node.domain not in ("", "ai.onnx"):
                continue
            if node.op_type == "QLinearConv":
                weight_input, bias_input = node.input[3], (node.input[8] if len(node.input) > 8 else None)
                quant = "qlinear"
            else:
                weight_input = node.input[1] if len(node.input) > 1 else ""
                bias_input = node.input[2] if len(node.input) > 2 and node.input[2] else None
                quant = "qdq" if self._producer_op(weight_input) == "DequantizeLinear" else None
                if node.op_type == "ConvInteger":
                    quant = "integer"
            weight_shape = self.shape_of(weight_input)
            if 0 < len(weight_shape) < 3:  # () = computed at run time; a known 1-D or 2-D weight is no conv's
                raise InspectorError(f"conv node '{node.name or node.output[0]}' is inconsistent: its weights "
                                     f"have shape {tuple(weight_shape)}, a conv's have at least 3 dimensions; "
                                     "re-export the model")
            groups = 1
            for attr in node.attribute:
                if attr.name == "group":
                    groups = int(attr.i) or 1
            params = int(np.prod(weight_shape)) if weight_shape else 0
            if bias_input:
                bias_shape = self.shape_of(bias_input)
                params += int(np.prod(bias_shape)) if bias_shape else 0
            conv_output = node.output[0]
            output, activation, perm, affine = self._follow_activation(conv_output, weight_shape)
            name = self._unique(self._name_for(node, output), node, taken, len(layers))
            taken.add(name)
            layers.append(Layer(
                index=len(layers), name=name, op=node.op_type, node_name=node.name,
                weight_shape=tuple(int(d) for d in weight_shape), groups=groups, params=params,
                output=output, conv_output=conv_output, activation=activation, affine=affine,
                output_perm=perm, quantization=quant, weight_input=weight_input,
                bias_input=bias_input, node_index=node_index,
            ))
        return layers

    def _name_for(self, node, output: str) -> str:
        """The source layer's name: tf2onnx names a conv node after whatever it fused last (a
        BatchNorm's ``batchnorm/mul_1``, or ``Conv__26``), while the weights and bias it reads keep
        the conv layer's scope; torch.onnx names the node by its module path."""
        inputs = [t for t in node.input[1:3] if t] if node.op_type != "QLinearConv" else []
        for tensor in inputs:
            if not tensor.startswith("/") and tensor.count("/") >= 2:  # tf-style scoped tensor
                layer = scoped_layer(tensor)
                if layer:
                    return layer
        if node.name:
            return source_name(node.name)
        return output

    @staticmethod
    def _unique(name: str, node, taken: set[str], index: int) -> str:
        if name not in taken:
            return name
        if node.name and node.name not in taken:
            return node.name
        candidate = f"{name}#{index}"
        while candidate in taken:
            candidate += "_"
        return candidate

    def _producer_op(self, tensor: str) -> str | None:
        i = self.producer.get(tensor)
        return self.nodes[i].op_type if i is not None else None

    def _single_consumer(self, tensor: str):
        users = self.consumers.get(tensor, [])
        if tensor in self.graph_outputs or len(users) != 1:
            return None
        return self.nodes[users[0]]

    def _follow_activation(self, conv_output: str, weight_shape=()):
        """(tensor to show, activation op or None, axis permutation of that tensor, affine steps).

        From the conv's output, through layout Transposes and unfolded per-channel
        affine steps (BatchNormalization, bias or scale by a small constant), to
        the one elementwise activation that follows, if any. Without an
        activation the tensor shown is the end of the affine chain: what the
        conv gives once an exporter folds those steps into it.
        """
        tensor = conv_output
        perm: tuple[int, ...] | None = None
        affine: list[str] = []
        settled = (conv_output, None)  # (tensor, perm) to show when no activation follows
        channels = max(weight_shape[:2]) if len(weight_shape) >= 2 else 0
        for _ in range(8):
            users = [self.nodes[i] for i in self.consumers.get(tensor, [])]
            if tensor in self.graph_outputs or not users:
                break
            gate = self._gated(tensor, users)
            if gate is not None:
                return gate[0], gate[1], perm, tuple(affine)
            if len(users) != 1:
                break
            user = users[0]
            if user.op_type == "Transpose":
                step = next((tuple(a.ints) for a in user.attribute if a.name == "perm"), None)
                if step is None or sorted(step) != list(range(len(step))) or (perm and len(perm) != len(step)):
                    break  # no perm, or not a permutation that composes with the last one
                base = perm or tuple(range(len(step)))
                perm = tuple(base[a] for a in step)
                tensor = user.output[0]
                continue
            if user.op_type in ACTIVATIONS and user.input[0] == tensor:
                return user.output[0], user.op_type, perm, tuple(affine)
            if self._is_affine_step(user, tensor, channels):
                affine.append(user.op_type)
                tensor = user.output[0]
                settled = (tensor, perm)
                continue
            break
        if affine:
            return settled[0], None, settled[1], tuple(affine)
        return conv_output, None, None, ()

    def _is_affine_step(self, node, tensor: str, channels: int) -> bool:
        """A per-channel affine op on ``tensor`` whose other operands are small constants."""
        if node.op_type not in AFFINE or node.domain not in ("", "ai.onnx") or len(node.output) != 1:
            return False
        if node.op_type == "BatchNormalization":
            training = any(a.name == "training_mode" and a.i for a in node.attribute)
            return node.input[0] == tensor and not training and all(self._is_small_constant(t, channels)
                                                                    for t in node.input[1:5])
        if len(node.input) != 2 or tensor not in node.input:
            return False
        if node.op_type in ("Sub", "Div") and node.input[0] != tensor:
            return False  # constant - x or constant / x is not a bias or a scale of x
        other = node.input[1] if node.input[0] == tensor else node.input[0]
        return other != tensor and self._is_small_constant(other, channels)

    def _is_small_constant(self, tensor: str, channels: int) -> bool:
        i = self.producer.get(tensor)
        if tensor not in self.initializer_names and (i is None or self.nodes[i].op_type != "Constant"):
            return False
        shape = self.shape_of(tensor)
        return int(np.prod(shape)) <= max(channels, 1) if shape else True

    @staticmethod
    def _gated(tensor: str, users):
        """x * sigmoid(x) (SiLU/Swish) and x * hardsigmoid(x) (hard-swish) written out."""
        if len(users) != 2:
            return None
        gate = next((u for u in users if u.op_type in GATES), None)
        mul = next((u for u in users if u.op_type == "Mul"), None)
        if gate is None or mul is None or gate is mul:
            return None
        if set(mul.input) == {tensor, gate.output[0]}:
            name = "Swish" if gate.op_type == "Sigmoid" else "HardSwish"
            return mul.output[0], name
        return None

    # ---------------------------------------------------------------- shapes

    def shape_of(self, tensor: str) -> tuple[int, ...]:
        """Static shape of a constant-ish tensor, without reading its values."""
        init = self.file.initializers.get(tensor)
        if init is not None:
            return tuple(int(d) for d in init.dims)
        i = self.producer.get(tensor)
        if i is None:
            return ()
        node = self.nodes[i]
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    return tuple(int(d) for d in attr.t.dims)
            return ()
        if node.op_type in ("DequantizeLinear", "Identity", "Cast"):
            return self.shape_of(node.input[0])
        return ()

    # ---------------------------------------------------------------- values

    def constant(self, tensor: str, _depth: int = 0) -> np.ndarray:
        """Values of a tensor computable without running the model.

        Initializers (inline or external data), Constant nodes, and
        DequantizeLinear / Identity / Cast chains over those.
        """
        if _depth > 16:
            raise InspectorError(f"tensor '{tensor}' is computed by too deep a chain to read as weights")
        init = self.file.initializers.get(tensor)
        if init is not None:
            return self.file.tensor_array(init)
        i = self.producer.get(tensor)
        if i is None:
            raise InspectorError(f"tensor '{tensor}' is neither an initializer nor a node output")
        node = self.nodes[i]
        if node.op_type == "Constant":
            return _constant_node_value(node, self.file)
        if node.op_type in ("Identity", "Cast"):
            return self.constant(node.input[0], _depth + 1)
        if node.op_type == "DequantizeLinear":
            q = self.constant(node.input[0], _depth + 1)
            scale = self.constant(node.input[1], _depth + 1)
            zero = self.constant(node.input[2], _depth + 1) if len(node.input) > 2 and node.input[2] else None
            axis = next((int(a.i) for a in node.attribute if a.name == "axis"), 1)
            return dequantize(q, scale, zero, axis)
        raise InspectorError(
            f"tensor '{tensor}' is computed at run time by a {node.op_type} node; "
            "its weights cannot be read from the file")

    def weights(self, layer: Layer) -> tuple[np.ndarray, np.ndarray | None]:
        """(weights in ONNX order, bias or None), dequantized to float32 for quantized convs."""
        w = self.constant(layer.weight_input)
        if np.ndim(w) < 3:  # a scalar or a vector where a conv's weights go: every reader indexes filters
            raise InspectorError(f"layer '{layer.name}' is inconsistent: its weights have shape {np.shape(w)}, a "
                                 "conv's have at least 3 dimensions; re-export the model")
        if layer.op == "QLinearConv":
            node = self.nodes[layer.node_index]
            w_scale = self.constant(node.input[4])
            w_zero = self.constant(node.input[5]) if node.input[5] else None
            x_scale = self.constant(node.input[1])
            w = dequantize(w, w_scale, w_zero, 0)
            bias = None
            if layer.bias_input:
                bias = self.constant(layer.bias_input).astype(np.float32) * (
                    np.asarray(x_scale, np.float32) * np.asarray(w_scale, np.float32).reshape(-1))
            return w.astype(np.float32), _checked_bias(layer, w, bias)
        bias = self.constant(layer.bias_input).astype(np.float32) if layer.bias_input else None
        return np.asarray(w, dtype=np.float32), _checked_bias(layer, w, bias)

    # ------------------------------------------------------------- selection

    def select(self, selector: str | int) -> Layer:
        """One layer by index, name, node name, output tensor, or unique substring."""
        if isinstance(selector, int) or (isinstance(selector, str) and selector.strip().lstrip("-").isdigit()):
            index = int(selector)
            if -len(self.layers) <= index < len(self.layers):
                return self.layers[index]
            raise InspectorError(
                f"layer index {index} out of range: the model has {len(self.layers)} conv layers "
                f"(0..{len(self.layers) - 1}); see 'inspector layers MODEL'")
        text = str(selector)
        for key in ("name", "node_name", "output", "conv_output"):
            exact = [layer for layer in self.layers if getattr(layer, key) == text]
            if len(exact) == 1:
                return exact[0]
        lowered = text.lower()
        hits = [layer for layer in self.layers if lowered in layer.name.lower()]
        if len(hits) > 1:
            # A whole trailing part of one name wins over a mere substring of others
            # ("conv.1" is p2o.Conv.1, not p2o.Conv.10; "block1_conv1" beats "block1_conv10").
            whole = [layer for layer in hits if layer.name.lower() == lowered
                     or re.search(r"(^|[./_:#-])" + re.escape(lowered) + "$", layer.name.lower())]
            if len(whole) == 1:
                return whole[0]
        if not hits:
            hits = [layer for layer in self.layers
                    if lowered in layer.node_name.lower() or lowered in layer.output.lower()]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            names = ", ".join(layer.name for layer in hits[:8]) + (" ..." if len(hits) > 8 else "")
            raise InspectorError(f"layer '{text}' is ambiguous: it matches {names}; give a longer name or an index")
        close = difflib.get_close_matches(text, [layer.name for layer in self.layers], n=5, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see 'inspector layers MODEL'"
        raise InspectorError(f"no conv layer matches '{text}'{hint}")


def _checked_bias(layer: Layer, w: np.ndarray, bias: np.ndarray | None) -> np.ndarray | None:
    """One bias value per output channel, or the model is inconsistent (every reader indexes by filter)."""
    if bias is None or w.ndim < 2:
        return bias
    filters = w.shape[1] * layer.groups if layer.op == "ConvTranspose" else w.shape[0]
    if bias.size != filters:
        raise InspectorError(f"layer '{layer.name}' is inconsistent: {filters} filters but {bias.size} "
                             "bias values; re-export the model")
    return bias


def _constant_node_value(node, onnx_file) -> np.ndarray:
    for attr in node.attribute:
        if attr.name == "value":
            # Through the file, never numpy_helper directly: a Constant may point at external
            # data too, and its location must be checked against the model's folder like any other.
            return onnx_file.tensor_array(attr.t)
        if attr.name == "value_float":
            return np.asarray(attr.f, np.float32)
        if attr.name == "value_floats":
            return np.asarray(list(attr.floats), np.float32)
        if attr.name == "value_int":
            return np.asarray(attr.i, np.int64)
        if attr.name == "value_ints":
            return np.asarray(list(attr.ints), np.int64)
    raise InspectorError(f"Constant node '{node.name}' holds no tensor value")


def dequantize(q: np.ndarray, scale, zero, axis: int) -> np.ndarray:
    """(q - zero_point) * scale, per tensor or per channel along ``axis``."""
    q = np.asarray(q).astype(np.float32)
    scale = np.asarray(scale, dtype=np.float32)
    zero = np.zeros_like(scale) if zero is None else np.asarray(zero).astype(np.float32)
    if scale.ndim == 1 and scale.size > 1:
        shape = [1] * q.ndim
        shape[axis % q.ndim] = scale.size
        scale = scale.reshape(shape)
        zero = zero.reshape(shape)
    return (q - zero) * scale
