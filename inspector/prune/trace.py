"""Dependency groups on an ONNX graph: which channels are tied together, and which can go.

Every output channel of a plain conv (``group == 1``) gets an id. The ids flow
with the channels through the graph, one ``Carrier`` per tensor: its channel
axis, the id of each position along that axis (Concat joins them, Split cuts
them, Transpose moves the axis, Flatten/Reshape into a dense layer repeats each
channel over its spatial positions in the layout's order), and the value that
channel holds when it is a constant (a zero-weight filter outputs its bias
everywhere; NaN means a live channel). Residual Adds and other elementwise ops
between two traced tensors tie the ids they line up (union-find): a tied group
goes as a whole or not at all, as in Torch-Pruning's DepGraph.

A group can be removed exactly when nothing the rules do not understand sees it
(unknown ops, model outputs, grouped convs, a tensor from outside) and every
layer that sums over channels (conv, Gemm, MatMul) sees it as zero, or as a
constant it can fold into its bias: a conv without zero padding over that
input, a dense layer. Depthwise convs shrink with their channel, so they are
not sums: their output channel simply carries the input's id.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..audit.weights import negligible_filters
from ..graph import index_nodes
from . import computed
from . import values as fn

STANDARD = ("", "ai.onnx")
_POOLS = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool"}
_BINARY = {"Add", "Sub", "Mul", "Div"}
# Ops that only compute shapes: a Shape of a traced tensor may reach them on its way to a Reshape.
_SHAPE_MATH = {"Gather", "Slice", "Cast", "Concat", "Unsqueeze", "Squeeze", "Identity", "Mul", "Div", "Add",
               "Sub", "ReduceProd", "Expand"}


@dataclass
class Carrier:
    """The traced channels of one tensor."""

    axis: int
    rank: int
    ids: np.ndarray  # (channels,) int64
    values: np.ndarray  # (channels,) float64, NaN where the channel is not a known constant


@dataclass
class Source:
    """A plain conv: its filters start channels."""

    node: int
    name: str  # the layer's name (graph.Layer.name)
    output: str
    ids: np.ndarray
    zero_weights: np.ndarray  # (filters,) bool


@dataclass
class Use:
    """A place where removing channels changes the graph (surgery acts on each)."""

    kind: str  # conv_in | depthwise | dense | const | batchnorm | split | reshape
    node: int
    tensor: str  # the traced tensor this use reads (for split: the input)
    extra: dict = field(default_factory=dict)


class UnionFind:
    def __init__(self):
        self.parent: list[int] = []

    def new(self, count: int) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + count))
        return np.arange(start, start + count, dtype=np.int64)

    def find(self, i: int) -> int:
        parent = self.parent
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:
            parent[i], i = root, parent[i]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(int(a)), self.find(int(b))
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def roots(self, ids: np.ndarray) -> np.ndarray:
        return np.fromiter((self.find(int(i)) for i in ids), dtype=np.int64, count=len(ids))


def _attr(node, name, default=None):
    return fn._attr(node, name, default)


def _node_label(node, index: int) -> str:
    return f"{node.op_type} '{node.name or '#' + str(index)}'"


def _subgraph_reads(nodes) -> dict[str, str]:
    """Tensors that If/Loop/Scan bodies read from the outer graph (by name, without listing them as inputs)."""
    reads: dict[str, str] = {}

    def visit(graph, where: str) -> None:
        for node in graph.node:
            for name in node.input:
                if name:
                    reads.setdefault(name, where)
            for attr in node.attribute:
                for sub in ([attr.g] if attr.type == attr.GRAPH else list(attr.graphs)):
                    visit(sub, where)

    for index, node in enumerate(nodes):
        for attr in node.attribute:
            for sub in ([attr.g] if attr.type == attr.GRAPH else list(attr.graphs)):
                visit(sub, _node_label(node, index))
    return reads


class Tracer:
    """Trace channels through the graph of a light model (``OnnxFile``) and decide what can go."""

    def __init__(self, onnx_file, layer_names: dict[int, str], shapes: dict[str, list], overrides=None,
                 dead_by_weights: dict[int, np.ndarray] | None = None):
        self.file = onnx_file
        self.graph = onnx_file.model.graph
        self.nodes = list(self.graph.node)
        self.layer_names = layer_names  # conv node index -> layer name
        self.shapes = shapes  # tensor -> dims (int, or None when unknown), from shape inference
        self.overrides = overrides or {}  # tensor -> channel indices to treat as zero (audit, --channels)
        self.dead_by_weights = dead_by_weights or {}  # conv node -> the audit's dead-by-weights mask
        self.exact_zero: dict[str, set[int]] = {}  # of those, the ones that were exactly zero anyway
        self.uf = UnionFind()
        self.carriers: dict[str, Carrier] = {}
        self.sources: list[Source] = []
        self.uses: list[Use] = []
        self.blocks: list[tuple[np.ndarray, str]] = []
        self._shape_reads: list = []
        self.lost: list[tuple[np.ndarray, str]] = []  # constant channels that stop being constant, and where
        self.producer, self.consumers = index_nodes(self.nodes)
        self.initializers = onnx_file.initializers
        self._const_cache: dict[str, np.ndarray | None] = {}

    # ------------------------------------------------------------------ helpers

    def const(self, name: str, _depth: int = 0):
        """The value of a constant tensor, or None: an initializer, a Constant node, or one computed from those
        by the ops exporters put on weights (Cast -> Mul of int8 weights, DequantizeLinear, Identity,
        reshapes, arithmetic), whatever its size: pruning reads a layer's weights whole anyway."""
        if not name:
            return None
        if name in self._const_cache:
            return self._const_cache[name]
        value = None
        if name in self.initializers:
            value = np.asarray(self.file.tensor_array(self.initializers[name]))
        elif name in self.producer and _depth <= 16:
            node = self.nodes[self.producer[name]]
            if node.op_type == "Constant":
                from ..graph import _constant_node_value

                value = np.asarray(_constant_node_value(node, self.file))
            elif node.domain in STANDARD and node.op_type in computed.OPS and len(node.output) == 1:
                inputs = [self.const(t, _depth + 1) if t else None for t in node.input]
                if all(v is not None for v, t in zip(inputs, node.input) if t):
                    value = computed.evaluate(node, inputs)
        self._const_cache[name] = value
        return value

    def computed(self, name: str) -> bool:
        """``name`` is a constant computed by nodes (not an initializer): an edit writes a new initializer."""
        return (name not in self.initializers and self._const_cache.get(name) is not None
                and self.nodes[self.producer[name]].op_type != "Constant")

    def block(self, carrier: Carrier | None, reason: str) -> None:
        if carrier is not None:
            self.blocks.append((carrier.ids, reason))

    def block_all(self, node, index: int, ins, reason: str) -> None:
        for carrier in ins:
            self.block(carrier, f"{_node_label(node, index)}: {reason}")

    def set_carrier(self, tensor: str, carrier: Carrier) -> None:
        if tensor in self.overrides:
            chosen = [i for i in self.overrides[tensor] if i < len(carrier.values)]
            self.exact_zero[tensor] = {i for i in chosen if carrier.values[i] == 0}
            carrier.values = carrier.values.copy()
            carrier.values[chosen] = 0.0
        self.carriers[tensor] = carrier

    # ------------------------------------------------------------------ tracing

    def run(self) -> "Tracer":
        for index in self._order():
            node = self.nodes[index]
            ins = [self.carriers.get(t) if t else None for t in node.input]
            if node.domain in STANDARD and node.op_type == "Conv":
                self._conv(index, node, ins)
                continue
            if not any(c is not None for c in ins):
                continue
            handler = getattr(self, "_op_" + node.op_type, None)
            if node.domain not in STANDARD:
                self.block_all(node, index, ins, f"custom op (domain {node.domain}) not covered by the pruning rules")
            elif node.op_type in fn.UNARY or node.op_type == "Clip":
                self._unary(index, node, ins)
            elif node.op_type in _BINARY:
                self._binary(index, node, ins)
            elif node.op_type in _POOLS:
                self._pool(index, node, ins)
            elif handler is None:
                self.block_all(node, index, ins, "op not covered by the pruning rules")
            else:
                handler(index, node, ins)
        for index, node, data in self._shape_reads:
            self._judge_shape(index, node, data)
        for tensor, where in _subgraph_reads(self.nodes).items():
            if tensor in self.carriers:
                self.block(self.carriers[tensor], f"read inside the subgraph of {where}")
        for output in self.graph.output:
            if output.name in self.carriers:
                self.block(self.carriers[output.name], f"'{output.name}' is a model output")
        return self

    def _order(self) -> list[int]:
        known = {i.name for i in self.graph.input} | set(self.initializers)
        waiting = []
        users: dict[int, list[int]] = {}
        for i, node in enumerate(self.nodes):
            needs = {self.producer[t] for t in node.input if t and t not in known and t in self.producer}
            waiting.append(len(needs))
            for j in needs:
                users.setdefault(j, []).append(i)
        ready = [i for i, n in enumerate(waiting) if n == 0][::-1]
        order = []
        while ready:
            i = ready.pop()
            order.append(i)
            for j in users.get(i, ()):
                waiting[j] -= 1
                if waiting[j] == 0:
                    ready.append(j)
        return order

    # -------------------------------------------------------------------- convs

    def _conv(self, index, node, ins) -> None:
        for carrier in ins[1:]:
            self.block(carrier, f"{_node_label(node, index)}: weights computed from the traced channels")
        data = ins[0]
        weights = self.const(node.input[1]) if len(node.input) > 1 else None
        bias_name = node.input[2] if len(node.input) > 2 else ""
        bias = self.const(bias_name) if bias_name else None
        if weights is None or weights.ndim < 3 or (bias_name and bias is None):
            self.block(data, f"{_node_label(node, index)}: weights are not plain constants (quantized or computed)")
            return
        filters = weights.shape[0]
        if bias is not None and bias.size != filters:
            self.block(data, f"{_node_label(node, index)}: its bias does not match its {filters} filters")
            return
        bias = np.zeros(filters) if bias is None else np.asarray(bias, np.float64).reshape(-1)
        group = int(_attr(node, "group", 1) or 1)
        rank = weights.ndim
        if data is not None and (data.axis != 1 or data.rank != rank):
            self.block(data, f"{_node_label(node, index)}: channels arrive on axis {data.axis}, not 1")
            data = None
            if group != 1:
                return
        if data is not None and weights.shape[1] * group != len(data.ids):
            self.block(data, f"{_node_label(node, index)}: its weights read {weights.shape[1] * group} channels, "
                             f"the input has {len(data.ids)}")
            data = None
            if group != 1:
                return
        flat = weights.reshape(filters, -1)
        # Zero or effectively zero (below float32 resolution next to the layer's, the audit's rule): the map is the
        # bias, a constant channel, up to rounding.
        zero_weights = self.dead_by_weights.get(index)
        if zero_weights is None or len(zero_weights) != filters:
            zero_weights = negligible_filters(weights, group)
        no_padding = self._no_padding(node)
        if group == 1:
            if data is not None:
                self.uses.append(Use("conv_in", index, node.input[0], {"fold_ok": no_padding}))
            ids = self.uf.new(filters)
            self.sources.append(Source(index, self.layer_names.get(index, node.name), node.output[0], ids,
                                       zero_weights))
            self.set_carrier(node.output[0], Carrier(1, rank, ids, np.where(zero_weights, bias, np.nan)))
            return
        if data is not None and weights.shape[1] == 1 and group == len(data.ids) and filters % group == 0:
            # Depthwise: output channel o reads input channel o // m only; the two go together.
            m = filters // group
            incoming = np.repeat(data.values, m)
            sums = flat.astype(np.float64).sum(axis=1)
            through = np.where(incoming == 0, bias, incoming * sums + bias if no_padding else np.nan)
            out_values = np.where(zero_weights, bias, through)
            lost = ~np.isnan(incoming) & np.isnan(out_values)
            if lost.any():
                self.lost.append((np.repeat(data.ids, m)[lost], f"constant before {_node_label(node, index)}, whose "
                                                                "zero padding makes it vary at the borders"))
            self.uses.append(Use("depthwise", index, node.input[0], {"multiplier": m}))
            self.set_carrier(node.output[0], Carrier(1, rank, np.repeat(data.ids, m), out_values))
            return
        self.block(data, f"{_node_label(node, index)}: grouped conv (groups={group}) ties its channels in "
                         "groups that must stay equal")

    @staticmethod
    def _no_padding(node) -> bool:
        auto_pad = _attr(node, "auto_pad", "NOTSET")
        if auto_pad not in ("NOTSET", "VALID", b"NOTSET", b"VALID"):
            return False
        return not any(_attr(node, "pads", []) or [])

    def _op_ConvTranspose(self, index, node, ins) -> None:
        """Reads channels like a conv (input channel c is weight row c); its outputs are not traced."""
        data = ins[0]
        weights = self.const(node.input[1]) if len(node.input) > 1 else None
        if (data is None or any(c is not None for c in ins[1:]) or weights is None or weights.ndim < 3
                or int(_attr(node, "group", 1) or 1) != 1 or data.axis != 1 or weights.shape[0] != len(data.ids)):
            self.block_all(node, index, ins, "only a plain ConvTranspose (group 1, constant weights) is covered")
            return
        # A constant input does not give a constant output (taps overlap unevenly): only zeros can go.
        self.uses.append(Use("convT_in", index, node.input[0], {"fold_ok": False}))

    # ------------------------------------------------------------ dense layers

    def _op_Gemm(self, index, node, ins) -> None:
        a = ins[0]
        if any(c is not None for c in ins[1:]) or a is None:
            self.block_all(node, index, ins, "traced channels as weights")
            return
        b = self.const(node.input[1])
        c_name = node.input[2] if len(node.input) > 2 else ""
        if (_attr(node, "transA", 0) or b is None or b.ndim != 2 or a.rank != 2 or a.axis != 1
                or (c_name and self.const(c_name) is None)):
            self.block(a, f"{_node_label(node, index)}: only A (N, features) x constant B is covered")
            return
        if b.shape[1 if _attr(node, "transB", 0) else 0] != len(a.ids):
            self.block(a, f"{_node_label(node, index)}: its weights do not match its {len(a.ids)} input features")
            return
        self.uses.append(Use("dense", index, node.input[0], {"transB": int(_attr(node, "transB", 0)),
                                                             "fold_ok": True, "bias": ("gemm", index)}))

    def _op_MatMul(self, index, node, ins) -> None:
        a = ins[0]
        if ins[1] is not None or a is None:
            self.block_all(node, index, ins, "traced channels as the right-hand matrix")
            return
        b = self.const(node.input[1])
        if b is None or b.ndim != 2 or a.axis != a.rank - 1:
            self.block(a, f"{_node_label(node, index)}: only (..., features) x constant matrix is covered")
            return
        if b.shape[0] != len(a.ids):
            self.block(a, f"{_node_label(node, index)}: its weights do not match its {len(a.ids)} input features")
            return
        bias = None
        users = self.consumers.get(node.output[0], [])
        if len(users) == 1 and node.output[0] not in {o.name for o in self.graph.output}:
            add = self.nodes[users[0]]
            if add.op_type == "Add" and len(add.input) == 2:
                other = add.input[1] if add.input[0] == node.output[0] else add.input[0]
                value = self.const(other)
                if value is not None and value.size == b.shape[1] and value.shape[-1] == b.shape[1]:
                    bias = ("add", users[0], other)
        self.uses.append(Use("dense", index, node.input[0], {"transB": 0, "fold_ok": bias is not None,
                                                             "bias": bias}))

    # --------------------------------------------------------- elementwise ops

    def _unary(self, index, node, ins) -> None:
        data = ins[0]
        if any(c is not None for c in ins[1:]) or data is None:
            self.block_all(node, index, ins, "traced channels as a parameter")
            return
        if node.op_type == "Clip":
            low = self.const(node.input[1]) if len(node.input) > 1 and node.input[1] else _attr(node, "min")
            high = self.const(node.input[2]) if len(node.input) > 2 and node.input[2] else _attr(node, "max")
            if (len(node.input) > 1 and node.input[1] and low is None) or (
                    len(node.input) > 2 and node.input[2] and high is None):
                self.block(data, f"{_node_label(node, index)}: bounds computed at run time")
                return
            out_values = fn.clip(data.values, None if low is None else float(np.asarray(low).reshape(-1)[0]),
                                 None if high is None else float(np.asarray(high).reshape(-1)[0]))
        else:
            out_values = fn.UNARY[node.op_type](node, data.values)
        self.set_carrier(node.output[0], Carrier(data.axis, data.rank, data.ids, np.asarray(out_values, np.float64)))
        if node.op_type == "Dropout" and len(node.output) > 1 and node.output[1] in self.consumers:
            self.block(data, f"{_node_label(node, index)}: its mask is used")

    def _binary(self, index, node, ins) -> None:
        a, b = ins[0], ins[1]
        op = node.op_type
        if a is not None and b is not None:
            if a.axis != b.axis or a.rank != b.rank or len(a.ids) != len(b.ids):
                self.block_all(node, index, ins, "operands carry channels on different axes or counts")
                return
            for x, y in zip(a.ids, b.ids):
                self.uf.union(x, y)
            out_values = fn.binary(op, a.values, b.values)
            lost = (~np.isnan(a.values) | ~np.isnan(b.values)) & np.isnan(out_values)
            if lost.any():
                self.lost.append((a.ids[lost], f"tied to a live channel by {_node_label(node, index)}"))
            self.set_carrier(node.output[0], Carrier(a.axis, a.rank, a.ids, out_values))
            return
        carrier, position = (a, 0) if a is not None else (b, 1)
        other_name = node.input[1 - position]
        other = self.const(other_name)
        if other is None:
            self.block(carrier, f"{_node_label(node, index)}: meets a tensor computed outside the traced channels")
            return
        rank = max(carrier.rank, other.ndim)
        axis = carrier.axis + rank - carrier.rank
        const_axis = axis - (rank - other.ndim)
        dim = other.shape[const_axis] if const_axis >= 0 else 1
        channels = len(carrier.ids)
        if dim == channels and channels != 1:
            per_channel = np.moveaxis(other, const_axis, 0).reshape(channels, -1)
            self.uses.append(Use("const", index, node.input[position],
                                 {"input": 1 - position, "axis": const_axis}))
        elif dim == 1:
            per_channel = np.broadcast_to(other.reshape(1, -1), (channels, other.size))
        else:
            self.block(carrier, f"{_node_label(node, index)}: a constant that does not line up with the channels")
            return
        per_channel = per_channel.astype(np.float64)
        if per_channel.shape[1] == 1:
            value = per_channel[:, 0]
        else:  # varies over positions: only 0 * anything stays a known constant
            value = np.where(np.all(per_channel == per_channel[:, :1], axis=1), per_channel[:, 0], np.nan)
        pair = (carrier.values, value) if position == 0 else (value, carrier.values)
        self.set_carrier(node.output[0], Carrier(axis, rank, carrier.ids, fn.binary(op, *pair)))

    def _op_BatchNormalization(self, index, node, ins) -> None:
        data = ins[0]
        params = [self.const(t) for t in node.input[1:5]]
        if (data is None or any(c is not None for c in ins[1:]) or any(p is None for p in params)
                or _attr(node, "training_mode", 0) or data.axis != 1 or len(node.output) > 1 and any(node.output[1:])):
            self.block_all(node, index, ins, "BatchNormalization in training mode or with computed parameters")
            return
        scale, bias, mean, var = (np.asarray(p, np.float64).reshape(-1) for p in params)
        if any(len(p) != len(data.ids) for p in (scale, bias, mean, var)):
            self.block(data, f"{_node_label(node, index)}: its parameters do not match {len(data.ids)} channels")
            return
        out_values = fn.batch_norm(data.values, scale, bias, mean, var, _attr(node, "epsilon", 1e-5))
        self.uses.append(Use("batchnorm", index, node.input[0]))
        self.set_carrier(node.output[0], Carrier(1, data.rank, data.ids, out_values))

    def _pool(self, index, node, ins) -> None:
        data = ins[0]
        if data.axis != 1 or (len(node.output) > 1 and node.output[1] in self.consumers):
            self.block(data, f"{_node_label(node, index)}: pooling over the channel axis or its indices used")
            return
        out_values = data.values
        if node.op_type == "AveragePool" and _attr(node, "count_include_pad", 0) and not self._no_padding(node):
            out_values = np.where(data.values == 0, 0.0, np.nan)  # padding zeros dilute constants
        if node.op_type in ("LpPool", "GlobalLpPool"):
            out_values = np.where(data.values == 0, 0.0, np.nan)
        self.set_carrier(node.output[0], Carrier(1, data.rank, data.ids, out_values))

    def _reduce(self, index, node, ins) -> None:
        """ReduceMean & co over positions only (squeeze-and-excite's pooling): channels pass through."""
        data = ins[0]
        if any(c is not None for c in ins[1:]):
            self.block_all(node, index, ins, "traced channels as axes")
            return
        axes = self.const(node.input[1]) if len(node.input) > 1 and node.input[1] else _attr(node, "axes")
        if axes is None:
            if _attr(node, "noop_with_empty_axes", 0):
                self.set_carrier(node.output[0], Carrier(data.axis, data.rank, data.ids, data.values))
            else:
                self.block(data, f"{_node_label(node, index)}: reduces every axis, channels included")
            return
        axes = sorted({int(a) + data.rank if int(a) < 0 else int(a) for a in np.asarray(axes).reshape(-1)})
        if data.axis in axes:
            self.block(data, f"{_node_label(node, index)}: reduces over the channel axis")
            return
        keep_dims = int(_attr(node, "keepdims", 1))
        axis = data.axis if keep_dims else data.axis - sum(a < data.axis for a in axes)
        rank = data.rank if keep_dims else data.rank - len(axes)
        same = node.op_type in ("ReduceMean", "ReduceMax", "ReduceMin")
        out_values = data.values if same else np.where(data.values == 0, 0.0, np.nan)
        self.set_carrier(node.output[0], Carrier(axis, rank, data.ids, out_values))

    _op_ReduceMean = _op_ReduceMax = _op_ReduceMin = _op_ReduceSum = _op_ReduceL1 = _op_ReduceL2 = _reduce

    def _op_Transpose(self, index, node, ins) -> None:
        data = ins[0]
        perm = _attr(node, "perm") or list(range(data.rank))[::-1]
        if sorted(perm) != list(range(data.rank)):
            self.block(data, f"{_node_label(node, index)}: perm {perm} does not fit rank {data.rank}")
            return
        self.set_carrier(node.output[0], Carrier(perm.index(data.axis), data.rank, data.ids, data.values))

    def _op_Resize(self, index, node, ins) -> None:
        data = ins[0]
        if any(c is not None for c in ins[1:]):
            self.block_all(node, index, ins, "traced channels as a parameter")
            return
        # Resize-10 and Upsample: (X, scales); Resize-11+: (X, roi, scales, sizes).
        scales_name = node.input[2] if len(node.input) > 2 else (node.input[1] if len(node.input) == 2 else "")
        sizes_name = node.input[3] if len(node.input) > 3 else ""
        scales = self.const(scales_name) if scales_name else _attr(node, "scales")
        if sizes_name or scales is None or len(np.asarray(scales).reshape(-1)) != data.rank \
                or float(np.asarray(scales).reshape(-1)[data.axis]) != 1.0:
            self.block(data, f"{_node_label(node, index)}: resized by sizes, or scaled along the channel axis")
            return
        self.set_carrier(node.output[0], Carrier(data.axis, data.rank, data.ids, data.values))

    _op_Upsample = _op_Resize

    def _op_Pad(self, index, node, ins) -> None:
        data = ins[0]
        pads = self.const(node.input[1]) if len(node.input) > 1 and node.input[1] else _attr(node, "pads")
        axes = self.const(node.input[3]) if len(node.input) > 3 and node.input[3] else None
        if any(c is not None for c in ins[1:]) or pads is None or axes is not None:
            self.block_all(node, index, ins, "pads computed at run time or given per axis")
            return
        pads = np.asarray(pads).reshape(-1)
        if len(pads) != 2 * data.rank or pads[data.axis] or pads[data.axis + data.rank]:
            self.block(data, f"{_node_label(node, index)}: pads the channel axis")
            return
        mode = _attr(node, "mode", "constant")
        fill = self.const(node.input[2]) if len(node.input) > 2 and node.input[2] else _attr(node, "value", 0.0)
        out_values = data.values
        if mode == "constant":
            fill = float(np.asarray(fill).reshape(-1)[0]) if fill is not None else 0.0
            out_values = np.where(data.values == fill, fill, np.nan)
        self.set_carrier(node.output[0], Carrier(data.axis, data.rank, data.ids, out_values))

    def _op_Concat(self, index, node, ins) -> None:
        present = [c for c in ins if c is not None]
        first = present[0]
        axis = int(_attr(node, "axis", 0))
        axis = axis + first.rank if axis < 0 else axis
        if len(present) != len(ins) or any(c.rank != first.rank for c in present):
            self.block_all(node, index, ins, "concatenates traced channels with tensors from elsewhere")
            return
        if all(c.axis == axis for c in present):
            self.set_carrier(node.output[0], Carrier(axis, first.rank, np.concatenate([c.ids for c in present]),
                                                     np.concatenate([c.values for c in present])))
            return
        if any(c.axis == axis or c.axis != first.axis or len(c.ids) != len(first.ids) for c in present):
            self.block_all(node, index, ins, "concatenation that mixes channel axes")
            return
        for c in present[1:]:
            for x, y in zip(first.ids, c.ids):
                self.uf.union(x, y)
        values = np.where(np.all([c.values == first.values for c in present], axis=0), first.values, np.nan)
        self.set_carrier(node.output[0], Carrier(first.axis, first.rank, first.ids, values))

    def _op_Split(self, index, node, ins) -> None:
        data = ins[0]
        axis = int(_attr(node, "axis", 0))
        axis = axis + data.rank if axis < 0 else axis
        outputs = list(node.output)
        if axis != data.axis:
            for out in outputs:
                if out:
                    self.set_carrier(out, Carrier(data.axis, data.rank, data.ids, data.values))
            return
        if len(node.input) > 1 and node.input[1]:
            sizes = self.const(node.input[1])
            source = "input"
        else:
            sizes = _attr(node, "split")
            source = "attribute" if sizes is not None else "equal"
        channels = len(data.ids)
        if sizes is None:
            if channels % len(outputs):
                self.block(data, f"{_node_label(node, index)}: uneven split without sizes")
                return
            sizes = [channels // len(outputs)] * len(outputs)
        sizes = [int(s) for s in np.asarray(sizes).reshape(-1)]
        if sum(sizes) != channels or len(sizes) != len(outputs):
            self.block(data, f"{_node_label(node, index)}: split sizes {sizes} do not fit {channels} channels")
            return
        start = 0
        for out, size in zip(outputs, sizes):
            if out:
                self.set_carrier(out, Carrier(axis, data.rank, data.ids[start:start + size],
                                              data.values[start:start + size]))
            start += size
        self.uses.append(Use("split", index, node.input[0], {"source": source}))

    # ------------------------------------------------- flatten into dense layers

    def _flatten(self, index, node, data: Carrier, output: str) -> bool:
        shape = self.shapes.get(node.input[0])
        if not shape or len(shape) != data.rank or any(not isinstance(d, int) or d <= 0 for d in shape[1:]):
            self.block(data, f"{_node_label(node, index)}: the shape it flattens is not known")
            return False
        inner = list(shape[1:])
        channel_axis = data.axis - 1
        if channel_axis < 0 or inner[channel_axis] != len(data.ids):
            self.block(data, f"{_node_label(node, index)}: flattens the batch axis")
            return False
        view = [1] * len(inner)
        view[channel_axis] = len(data.ids)
        ids = np.broadcast_to(data.ids.reshape(view), inner).reshape(-1)
        vals = np.broadcast_to(data.values.reshape(view), inner).reshape(-1)
        self.set_carrier(output, Carrier(1, 2, np.ascontiguousarray(ids), np.ascontiguousarray(vals)))
        return True

    def _op_Flatten(self, index, node, ins) -> None:
        data = ins[0]
        if int(_attr(node, "axis", 1)) != 1:
            self.block(data, f"{_node_label(node, index)}: flattens from axis {_attr(node, 'axis', 1)}, not 1")
            return
        self._flatten(index, node, data, node.output[0])

    def _op_Reshape(self, index, node, ins) -> None:
        data = ins[0]
        if ins[1] is not None or data is None:
            self.block_all(node, index, ins, "traced channels as a shape")
            return
        in_shape, out_shape = self.shapes.get(node.input[0]), self.shapes.get(node.output[0])
        inner = in_shape[1:] if in_shape else None
        shape_of_shape = self.shapes.get(node.input[1]) or []
        out_rank = len(out_shape) if out_shape else (shape_of_shape[0] if len(shape_of_shape) == 1 else None)
        features = int(np.prod(inner)) if inner and all(isinstance(d, int) for d in inner) else None
        if features is None or out_rank != 2 or (out_shape and out_shape[1] not in (None, features)):
            self.block(data, f"{_node_label(node, index)}: a reshape other than flattening into (N, features)")
            return
        entries = self._shape_constant(node.input[1], features, (index, 1))
        if entries is None:
            self.block(data, f"{_node_label(node, index)}: cannot find the feature count in its shape constant")
            return
        if self._flatten(index, node, data, node.output[0]):
            self.uses.append(Use("reshape", index, node.output[0], {"entries": entries, "features": features}))

    def _shape_constant(self, name: str, features: int, consumer: tuple[int, int], depth: int = 0):
        """[(constant, flat position, (node, input))] holding a Reshape's feature count; [] when it is -1."""
        if depth > 8:
            return None
        value = self.const(name)
        if value is not None:
            flat = np.asarray(value).reshape(-1)
            if np.any(flat == -1) and not np.any(flat == features):
                return []
            hits = np.flatnonzero(flat == features)
            return [(name, int(hits[0]), consumer)] if len(hits) == 1 else None
        producer = self.producer.get(name)
        if producer is None:
            return None
        node = self.nodes[producer]
        if node.op_type in ("Cast", "Identity"):
            return self._shape_constant(node.input[0], features, (producer, 0), depth + 1)
        if node.op_type == "Concat":
            found = [self._shape_constant(t, features, (producer, i), depth + 1)
                     for i, t in enumerate(node.input) if self.const(t) is not None]
            found = [f for f in found if f]
            return found[0] if len(found) == 1 else None
        return None

    def _op_Shape(self, index, node, ins) -> None:
        self._shape_reads.append((index, node, ins[0]))  # judged once every carrier is known

    def _judge_shape(self, index, node, data) -> None:
        """A Shape that only feeds the shape of a traced Reshape (tf2onnx's Flatten) reads no channel data."""
        pending, seen = [node.output[0]], set()
        while pending:
            tensor = pending.pop()
            if tensor in seen:
                continue
            seen.add(tensor)
            for user in self.consumers.get(tensor, []):
                consumer = self.nodes[user]
                if consumer.op_type == "Reshape" and consumer.input[1] == tensor and consumer.input[0] in self.carriers:
                    continue
                if consumer.op_type in _SHAPE_MATH:
                    pending.extend(consumer.output)
                    continue
                self.block(data, f"{_node_label(node, index)}: reads the channel count")
                return

    # ----------------------------------------------------------------- verdict

    def plan(self) -> "Plan":
        return Plan(self)


class Plan:
    """Which channel groups go, and why the dead ones that stay do."""

    def __init__(self, tracer: Tracer):
        self.tracer = tracer
        uf = tracer.uf
        self.blocked: dict[int, str] = {}
        for ids, reason in tracer.blocks:
            for root in set(uf.roots(ids).tolist()):
                self.blocked.setdefault(root, reason)
        self.kept: dict[int, str] = {}  # root -> why a group with a constant channel stays
        lost: dict[int, str] = {}
        for ids, reason in tracer.lost:
            for root in set(uf.roots(ids).tolist()):
                lost.setdefault(root, reason)
        live: set[int] = set()
        for use in tracer.uses:
            if use.kind not in ("conv_in", "convT_in", "dense"):
                continue
            carrier = tracer.carriers[use.tensor]
            roots = uf.roots(carrier.ids)
            where = _node_label(tracer.nodes[use.node], use.node)
            unknown = np.isnan(carrier.values)
            live.update(roots[unknown].tolist())
            for root in set(roots[unknown].tolist()):
                self.kept.setdefault(root, lost.get(root) or f"not constant where {where} reads it")
            constant = ~unknown & (carrier.values != 0)
            if constant.any() and not use.extra.get("fold_ok"):
                why = {"conv_in": "zero padding over a constant channel (folding would not be exact)",
                       "convT_in": "a transposed conv spreads a constant unevenly (folding would not be exact)"
                       }.get(use.kind, "no bias to fold a constant channel into")
                for root in set(roots[constant].tolist()):
                    self.kept.setdefault(root, f"constant channel at {where}: {why}")
        for root, reason in self.blocked.items():
            self.kept[root] = reason
        all_roots = set()
        for source in tracer.sources:
            all_roots.update(uf.roots(source.ids).tolist())
        self.removed = {r for r in all_roots if r not in self.kept}

    def keep(self, tensor: str) -> np.ndarray:
        """Boolean mask over the channels of a traced tensor: True where the channel stays."""
        carrier = self.tracer.carriers[tensor]
        roots = self.tracer.uf.roots(carrier.ids)
        return ~np.isin(roots, list(self.removed))

    def reason(self, channel_id: int) -> str | None:
        return self.kept.get(self.tracer.uf.find(int(channel_id)))
