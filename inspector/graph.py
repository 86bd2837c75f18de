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

from . import written
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
# TensorProto element types of float tensors (FLOAT, FLOAT16, DOUBLE, BFLOAT16): a Cast between them
# changes the precision, not the quantity.
FLOAT_TYPES = {1, 10, 11, 16}
# Ops folded over constants (a bias reshaped to (1, C, 1, 1), a scale times a constant...), so that
# constants an exporter computes in the graph count as constants. Only results of at most
# FOLD_LIMIT elements are folded: never a model's large weights.
RESHAPES = {"Reshape", "Unsqueeze", "Squeeze", "Flatten"}
ARITHMETIC = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}
PASS_THROUGH = {"DequantizeLinear", "QuantizeLinear", "Identity", "Cast"}
FOLD_LIMIT = 1 << 16


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


def index_nodes(nodes) -> tuple[dict[str, int], dict[str, list[int]]]:
    """(tensor -> index of the node that writes it, tensor -> indices of the nodes that read it)."""
    producer: dict[str, int] = {}
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        for out in node.output:
            if out:
                producer[out] = i
        for inp in node.input:
            if inp:
                consumers.setdefault(inp, []).append(i)
    return producer, consumers


class Graph:
    """The conv layers of a model and the means to read their weights."""

    def __init__(self, onnx_file):
        self.file = onnx_file
        graph = onnx_file.model.graph
        self.nodes = list(graph.node)
        self.producer, self.consumers = index_nodes(self.nodes)
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
        the one elementwise activation that follows, if any (an op, or one written out: x*sigmoid(x),
        HardSwish, and GELU or x*sigmoid(beta*x) in any spelling, see ``written``). Without an
        activation the tensor shown is the end of the affine chain: what the
        conv gives once an exporter folds those steps into it.

        In a QDQ model the tensor the next layer consumes is the dequantized one,
        after the activation's QuantizeLinear -> DequantizeLinear pair; onnxruntime's
        quantizer even removes a Relu after a conv and lets that pair clip instead,
        so the conv's raw output still holds the negatives the Relu removed.
        Such a pair is passed through, before or after the activation.
        """
        tensor = conv_output
        perm: tuple[int, ...] | None = None
        affine: list[str] = []
        quantized = False
        settled = (conv_output, None)  # (tensor, perm) to show when no activation follows
        channels = max(weight_shape[:2]) if len(weight_shape) >= 2 else 0
        for _ in range(16):
            users = [self.nodes[i] for i in self.consumers.get(tensor, [])]
            if tensor in self.graph_outputs or not users:
                break
            gate = (self._gated(tensor, users) or self._written_hard_swish(tensor, users)
                    or written.recognize(self, tensor))
            if gate is not None:
                return self._through_qdq(gate[0]), gate[1], perm, tuple(affine)
            if len(users) != 1:
                break
            user = users[0]
            dequantized = self._through_qdq(tensor)
            if dequantized != tensor:
                tensor, quantized = dequantized, True
                settled = (tensor, perm)
                continue
            if user.op_type == "Transpose":
                step = next((tuple(a.ints) for a in user.attribute if a.name == "perm"), None)
                if step is None or sorted(step) != list(range(len(step))) or (perm and len(perm) != len(step)):
                    break  # no perm, or not a permutation that composes with the last one
                base = perm or tuple(range(len(step)))
                perm = tuple(base[a] for a in step)
                tensor = user.output[0]
                continue
            if user.op_type in ACTIVATIONS and user.input[0] == tensor:
                return self._through_qdq(user.output[0]), user.op_type, perm, tuple(affine)
            if user.op_type == "Identity" and user.input[0] == tensor:
                # paddle2onnx 2.x writes each step's result through an Identity (Conv -> Add -> Identity ->
                # Relu): the same tensor under another name.
                tensor = user.output[0]
                if affine or quantized:
                    settled = (tensor, perm)
                continue
            if user.op_type == "Cast" and _cast_to(user) in FLOAT_TYPES:
                # torch 2.x exports wrap each step in Cast-to-float (Conv -> Transpose -> Cast -> Add ->
                # Cast -> Relu): a cast between float types holds the same quantity, so walk through it.
                tensor = user.output[0]
                if affine or quantized:
                    settled = (tensor, perm)
                continue
            if self._is_affine_step(user, tensor, channels):
                affine.append(user.op_type)
                tensor = user.output[0]
                settled = (tensor, perm)
                continue
            break
        if affine or quantized:
            return settled[0], None, settled[1], tuple(affine)
        return conv_output, None, None, ()

    def _through_qdq(self, tensor: str) -> str:
        """The DequantizeLinear output when ``tensor`` goes only through a QuantizeLinear -> DequantizeLinear
        pair (QDQ activation quantization), else ``tensor`` itself."""
        quantize = self._single_consumer(tensor)
        if quantize is None or quantize.op_type != "QuantizeLinear" or quantize.input[0] != tensor:
            return tensor
        dequantize_node = self._single_consumer(quantize.output[0]) if quantize.output else None
        if dequantize_node is None or dequantize_node.op_type != "DequantizeLinear" or not dequantize_node.output:
            return tensor
        return dequantize_node.output[0]

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
        if not self._is_constant(tensor):
            return False
        shape = self._static_shape(tensor)
        return shape is not None and int(np.prod(shape)) <= max(channels, 1)

    def _is_constant(self, tensor: str, depth: int = 0) -> bool:
        """An initializer, a Constant, a (De)QuantizeLinear / Identity / Cast chain over constants (a QDQ
        model's BatchNormalization parameters and biases are quantized like its weights), or a reshape or
        arithmetic of constants (Paddle adds a conv's bias as Reshape(bias, (1, C, 1, 1)))."""
        if tensor in self.initializer_names:
            return True
        i = self.producer.get(tensor)
        if i is None or depth > 8:
            return False
        node = self.nodes[i]
        if node.domain not in ("", "ai.onnx"):
            return False
        if node.op_type == "Constant":
            return True
        if node.op_type in PASS_THROUGH or node.op_type in RESHAPES or node.op_type in ARITHMETIC:
            return bool(node.input) and all(self._is_constant(t, depth + 1) for t in node.input if t)
        return False

    def uniform_value(self, tensor: str) -> float | None:
        """The value of a constant that holds one number (a scalar, or a one-element tensor that broadcasts
        per tensor), else None. Read only when it is that small."""
        if not self._is_constant(tensor):
            return None
        shape = self._static_shape(tensor)
        if shape is None or int(np.prod(shape)) != 1:
            return None
        try:
            value = np.asarray(self.constant(tensor), dtype=np.float64).reshape(-1)
        except (InspectorError, ValueError, TypeError):
            return None
        return float(value[0]) if value.size == 1 and np.isfinite(value[0]) else None

    def _operand_is(self, node, tensor: str, expected: float, first: bool = False) -> bool:
        """``node`` is a binary op of ``tensor`` (its first operand when ``first``) and the constant ``expected``."""
        if len(node.input) != 2 or node.domain not in ("", "ai.onnx") or len(node.output) != 1:
            return False
        if first and node.input[0] != tensor or tensor not in node.input or node.input[0] == node.input[1]:
            return False
        other = node.input[1] if node.input[0] == tensor else node.input[0]
        value = self.uniform_value(other)
        return value is not None and bool(np.isclose(value, expected, rtol=1e-5, atol=1e-7))

    def _is_sixth(self, node, tensor: str) -> bool:
        """``node`` divides ``tensor`` by 6 or multiplies it by 1/6."""
        if node is None:
            return False
        if node.op_type == "Div":
            return self._operand_is(node, tensor, 6.0, first=True)
        return node.op_type == "Mul" and self._operand_is(node, tensor, 1.0 / 6.0)

    def _clip_bounds(self, node) -> tuple[float, float] | None:
        """(min, max) of a Clip whose bounds are constants (inputs since opset 11, attributes before)."""
        low = next((a.f for a in node.attribute if a.name == "min"), None)
        high = next((a.f for a in node.attribute if a.name == "max"), None)
        for index in (1, 2):
            if len(node.input) > index and node.input[index]:
                value = self.uniform_value(node.input[index])
                if value is None:
                    return None
                low, high = (value, high) if index == 1 else (low, value)
        return None if low is None or high is None else (float(low), float(high))

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
            return mul.output[0], "Swish" if gate.op_type == "Sigmoid" else _hard_sigmoid_gate(gate)
        return None

    def _written_hard_swish(self, tensor: str, users):
        """``x * relu6(x + 3) / 6`` written out, as Paddle (``Mul(x, Clip(Add(x, 3), 0, 6))`` then ``Div(., 6)``)
        and torch.onnx before opset 14 write HardSwish, or with the 1/6 on the gate (``x * (relu6(x + 3) / 6)``),
        or as a Mul by 1/6: (the tensor after it, "HardSwish"). The constants must be 3, 0, 6 and 6 or 1/6,
        each one number; anything else is not a HardSwish and is not followed."""
        if len(users) != 2:
            return None
        add = next((u for u in users if u.op_type == "Add"), None)
        mul = next((u for u in users if u.op_type == "Mul"), None)
        if add is None or mul is None or not self._operand_is(add, tensor, 3.0):
            return None
        clip = self._single_consumer(add.output[0])
        if clip is None or clip.op_type != "Clip" or clip.input[0] != add.output[0] or len(clip.output) != 1:
            return None
        bounds = self._clip_bounds(clip)
        if bounds is None or not np.allclose(bounds, (0.0, 6.0), rtol=1e-5, atol=1e-7):
            return None
        gate = clip.output[0]
        after_gate = self._single_consumer(gate)
        scaled = after_gate is not mul and self._is_sixth(after_gate, gate)
        if scaled:
            gate = after_gate.output[0]
            if self._single_consumer(gate) is not mul:
                return None
        elif after_gate is not mul:
            return None
        if len(mul.input) != 2 or set(mul.input) != {tensor, gate} or len(mul.output) != 1:
            return None
        if scaled:
            return mul.output[0], "HardSwish"
        divide = self._single_consumer(mul.output[0])
        return (divide.output[0], "HardSwish") if self._is_sixth(divide, mul.output[0]) else None

    # ---------------------------------------------------------------- shapes

    def shape_of(self, tensor: str) -> tuple[int, ...]:
        """Static shape of a constant-ish tensor, without reading its values; () when unknown."""
        shape = self._static_shape(tensor)
        return () if shape is None else shape

    def _static_shape(self, tensor: str, depth: int = 0) -> tuple[int, ...] | None:
        """Shape of a constant-ish tensor, or None when it cannot be known without running the model.
        Reads no values but the few of a Reshape's shape or an Unsqueeze's axes."""
        init = self.file.initializers.get(tensor)
        if init is not None:
            return tuple(int(d) for d in init.dims)
        i = self.producer.get(tensor)
        if i is None or depth > 8:
            return None
        node = self.nodes[i]
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    return tuple(int(d) for d in attr.t.dims)
                if attr.name in ("value_float", "value_int"):
                    return ()
                if attr.name in ("value_floats", "value_ints"):
                    return (len(attr.floats) if attr.name == "value_floats" else len(attr.ints),)
            return None
        if node.op_type in PASS_THROUGH:
            return self._static_shape(node.input[0], depth + 1)
        if node.op_type in ARITHMETIC and len(node.input) == 2:
            shapes = [self._static_shape(t, depth + 1) for t in node.input]
            if any(shape is None for shape in shapes):
                return None
            try:
                return tuple(int(d) for d in np.broadcast_shapes(*shapes))
            except ValueError:
                return None
        if node.op_type in RESHAPES:
            return self._reshaped(node, depth)
        return None

    def _reshaped(self, node, depth: int) -> tuple[int, ...] | None:
        data = self._static_shape(node.input[0], depth + 1) if node.input else None
        if data is None:
            return None
        size = int(np.prod(data))
        if node.op_type == "Flatten":
            axis = next((int(a.i) for a in node.attribute if a.name == "axis"), 1) % (len(data) + 1)
            return (int(np.prod(data[:axis])), int(np.prod(data[axis:])))
        if node.op_type == "Reshape":
            target = self._small_ints(node.input[1] if len(node.input) > 1 else "", depth)
            if target is None:
                return None
            allow_zero = any(a.name == "allowzero" and a.i for a in node.attribute)
            shape = [data[k] if d == 0 and not allow_zero and k < len(data) else d for k, d in enumerate(target)]
            if shape.count(-1) > 1 or any(d < -1 for d in shape):
                return None
            if -1 in shape:
                known = int(np.prod([d for d in shape if d != -1]))
                if known == 0 or size % known:
                    return None
                shape[shape.index(-1)] = size // known
            return tuple(shape) if int(np.prod(shape)) == size else None
        axes = next((list(a.ints) for a in node.attribute if a.name == "axes"), None)  # opset < 13
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = self._small_ints(node.input[1], depth)
            if axes is None:
                return None
        if node.op_type == "Unsqueeze":
            if axes is None:
                return None
            rank = len(data) + len(axes)
            axes = sorted(a % rank for a in axes)
            shape = list(data)
            for axis in axes:
                shape.insert(axis, 1)
            return tuple(shape)
        if axes is None:  # Squeeze without axes: every axis of length 1
            return tuple(d for d in data if d != 1)
        drop = {a % len(data) for a in axes} if data else set()
        if any(data[a] != 1 for a in drop):
            return None
        return tuple(d for k, d in enumerate(data) if k not in drop)

    def _small_ints(self, tensor: str, depth: int) -> list[int] | None:
        """The values of a small constant integer vector (a shape, axes), or None."""
        if not tensor or not self._is_constant(tensor, depth + 1):
            return None
        shape = self._static_shape(tensor, depth + 1)
        if shape is None or len(shape) > 1 or int(np.prod(shape)) > 16:
            return None
        try:
            value = np.asarray(self.constant(tensor, depth + 1))
        except InspectorError:
            return None
        if not np.issubdtype(value.dtype, np.integer):
            return None
        return [int(v) for v in value.reshape(-1)]

    # ---------------------------------------------------------------- values

    def constant(self, tensor: str, _depth: int = 0, limit: int | None = FOLD_LIMIT) -> np.ndarray:
        """Values of a tensor computable without running the model.

        Initializers (inline or external data), Constant nodes, and
        DequantizeLinear / Identity / Cast chains over those, and reshapes or arithmetic
        (Add, Sub, Mul, Div) of those whose result has at most ``limit`` elements (None: any size, for a
        layer's weights, which int8 exports dequantize in the graph with Cast -> Mul).
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
        if node.op_type == "Identity":
            return self.constant(node.input[0], _depth + 1, limit)
        if node.op_type == "Cast":  # int8 weights cast to float before their scale: the values in the new type
            import onnx

            to = next((int(a.i) for a in node.attribute if a.name == "to"), 1)
            return np.asarray(self.constant(node.input[0], _depth + 1, limit)).astype(
                onnx.helper.tensor_dtype_to_np_dtype(to))
        if node.op_type in RESHAPES or (node.op_type in ARITHMETIC and len(node.input) == 2):
            return self._folded(node, tensor, _depth, limit)
        if node.op_type == "DequantizeLinear":
            q = self.constant(node.input[0], _depth + 1, limit)
            scale = self.constant(node.input[1], _depth + 1, limit)
            zero = self.constant(node.input[2], _depth + 1, limit) if len(node.input) > 2 and node.input[2] else None
            axis = next((int(a.i) for a in node.attribute if a.name == "axis"), 1)
            return dequantize(q, scale, zero, axis)
        if node.op_type == "QuantizeLinear":  # float weights quantized in the graph (onnxruntime's quantizer does it)
            x = self.constant(node.input[0], _depth + 1)
            scale = self.constant(node.input[1], _depth + 1)
            zero = self.constant(node.input[2], _depth + 1) if len(node.input) > 2 and node.input[2] else None
            axis = next((int(a.i) for a in node.attribute if a.name == "axis"), 1)
            return quantize(x, scale, zero, axis)
        raise InspectorError(
            f"tensor '{tensor}' is computed at run time by a {node.op_type} node; "
            "its weights cannot be read from the file")

    def _folded(self, node, tensor: str, depth: int, limit: int | None = FOLD_LIMIT) -> np.ndarray:
        shape = self._static_shape(tensor)
        if shape is None or not all(self._is_constant(t) for t in node.input if t):
            raise InspectorError(
                f"tensor '{tensor}' is computed at run time by a {node.op_type} node; "
                "its weights cannot be read from the file")
        if limit is not None and int(np.prod(shape)) > limit:
            raise InspectorError(f"tensor '{tensor}' is a {node.op_type} of constants too large to fold "
                                 f"({int(np.prod(shape)):,} values)")
        if node.op_type in RESHAPES:
            return np.asarray(self.constant(node.input[0], depth + 1, limit)).reshape(shape)
        left, right = (np.asarray(self.constant(t, depth + 1, limit)) for t in node.input)
        if node.op_type == "Div" and np.issubdtype(left.dtype, np.integer) and np.issubdtype(right.dtype, np.integer):
            return np.trunc(left / right).astype(np.result_type(left, right))  # ONNX integer Div truncates
        return np.asarray(ARITHMETIC[node.op_type](left, right)).reshape(shape)

    def weights(self, layer: Layer) -> tuple[np.ndarray, np.ndarray | None]:
        """(weights in ONNX order, bias or None), dequantized to float32 for quantized convs."""
        w = self.constant(layer.weight_input, limit=None)
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
        bias = self.constant(layer.bias_input, limit=None).astype(np.float32) if layer.bias_input else None
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


def _hard_sigmoid_gate(node) -> str:
    """x * hardsigmoid(x) is HardSwish when the HardSigmoid is relu6(x + 3) / 6 (alpha 1/6, beta 1/2); with
    other slopes (ONNX's default alpha is 0.2) it is a gate of its own, named as written."""
    alpha = next((a.f for a in node.attribute if a.name == "alpha"), 0.2)
    beta = next((a.f for a in node.attribute if a.name == "beta"), 0.5)
    if np.isclose(alpha, 1.0 / 6.0, rtol=1e-5) and np.isclose(beta, 0.5, rtol=1e-5):
        return "HardSwish"
    return "x*HardSigmoid"


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
    scale, zero = _quantization_params(scale, zero, q.ndim, axis)
    return (q - zero) * scale


def _quantization_params(scale, zero, ndim: int, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Scale and zero point as float32, shaped to broadcast along ``axis`` when per channel."""
    scale = np.asarray(scale, dtype=np.float32)
    zero = np.zeros_like(scale) if zero is None else np.asarray(zero).astype(np.float32)
    if scale.ndim == 1 and scale.size > 1:
        shape = [1] * ndim
        shape[axis % ndim] = scale.size
        scale = scale.reshape(shape)
        zero = zero.reshape(shape)
    return scale, zero


def quantize(x: np.ndarray, scale, zero, axis: int) -> np.ndarray:
    """ONNX QuantizeLinear: saturate(round_half_even(x / scale) + zero_point), in the zero point's integer type."""
    x = np.asarray(x, dtype=np.float32)
    dtype = np.dtype(np.uint8) if zero is None else np.asarray(zero).dtype
    scale, zero = _quantization_params(scale, zero, x.ndim, axis)
    if not np.issubdtype(dtype, np.integer):
        raise InspectorError(f"QuantizeLinear to {dtype} weights is not supported; only integer types")
    info = np.iinfo(dtype)
    return np.clip(np.rint(x / scale) + zero, info.min, info.max).astype(dtype)


def _cast_to(node) -> int | None:
    """The element type a Cast node converts to."""
    return next((a.i for a in node.attribute if a.name == "to"), None)
