"""Small ONNX graph passes that make converted files clean.

The Keras path converts the *structure* with the big weights left as graph
inputs, so the passes here are what turn it into a finished model: attach the
weights as initializers, fold the layout ops that converters put on weights
(Transpose, Cast, Reshape...), fold the NHWC flatten order into the first
Dense kernel, pin dynamic Reshape shapes, drop dead nodes, and name conv
nodes and outputs after their source layers. Weights live in a plain
``{name: np.ndarray}`` while folding and become TensorProtos once, at the end.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Callable, Iterable

import numpy as np

CONV_OPS = ("Conv", "ConvTranspose")


# ----------------------------------------------------------------- helpers

def _attr(node, name, default=None):
    import onnx

    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return default


def contiguous(value) -> np.ndarray:
    """``value`` in C order with its shape kept: ``np.ascontiguousarray`` turns a 0-d array into shape (1,),
    and a scalar that becomes a 1-element vector changes the rank of everything it reaches (a Gather
    index of torch's ``x.view(x.shape[0], -1)`` then yields a vector, and the shape's Concat fails)."""
    return np.require(np.asarray(value), requirements="C")


def outer_names(node) -> set[str]:
    """Names that a node's subgraphs (the branches of an If, a Loop's body) read from the graph around them: the
    node's inputs too, though not in ``node.input`` (timm's Hiera resizes its window position embedding in an If
    whose branches read shapes computed outside)."""
    import onnx

    names: set[str] = set()
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            bodies = [attribute.g]
        elif attribute.type == onnx.AttributeProto.GRAPHS:
            bodies = list(attribute.graphs)
        else:
            continue
        for body in bodies:
            inner = {i.name for i in body.input} | {i.name for i in body.initializer}
            for inside in body.node:
                names.update(n for n in [*inside.input, *outer_names(inside)] if n and n not in inner)
                inner.update(inside.output)
    return names


def node_inputs(node) -> list[str]:
    """A node's inputs, with the names its subgraphs read from outside (``outer_names``)."""
    named = [name for name in node.input if name]
    return named + sorted(outer_names(node) - set(named)) if node.attribute else named


def consumers(graph) -> dict[str, list]:
    out = defaultdict(list)
    for node in graph.node:
        for name in node_inputs(node):
            out[name].append(node)
    return out


def producers(graph) -> dict[str, object]:
    return {name: node for node in graph.node for name in node.output}


def op_counts(model) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for node in model.graph.node:
        counts[node.op_type] += 1
    return dict(counts)


def static_shapes(model) -> dict[str, tuple]:
    """Tensor name -> shape (ints, or strings for symbolic dims, None unknown) by ONNX shape inference."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes = {}
    for info in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        tensor_type = info.type.tensor_type
        if not tensor_type.HasField("shape"):
            continue
        shapes[info.name] = tuple(
            d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor_type.shape.dim)
    for init in model.graph.initializer:
        shapes[init.name] = tuple(init.dims)
    return shapes


# ------------------------------------------------------------ reshape pins

def pin_reshape_shapes(model, shapes: dict[str, tuple]) -> int:
    """Replace computed Reshape targets (Shape->Gather->Concat chains) by constants.

    Applies when inference knows every output dim except the batch, and the
    batch is passed through unchanged: the target becomes ``[0, d1, ...]``.
    Returns how many Reshapes were pinned; the dead chains go in ``prune``.
    """
    import onnx

    graph = model.graph
    init_names = {i.name for i in graph.initializer}
    pinned = 0
    for node in graph.node:
        if node.op_type != "Reshape" or node.input[1] in init_names:
            continue
        src, dst = shapes.get(node.input[0]), shapes.get(node.output[0])
        if not src or not dst or len(src) < 1 or len(dst) < 1:
            continue
        if any(not isinstance(d, int) or d <= 0 for d in dst[1:]):
            continue
        if src[0] != dst[0] or src[0] is None:
            continue
        name = f"{node.output[0]}__shape"
        graph.initializer.append(onnx.numpy_helper.from_array(np.array([0, *dst[1:]], np.int64), name))
        init_names.add(name)
        node.input[1] = name
        pinned += 1
    return pinned


# ------------------------------------------------------------ constant folding

def _np_dtype(onnx_type: int):
    import onnx

    return onnx.helper.tensor_dtype_to_np_dtype(onnx_type)


def _fold_numpy(node, values: list[np.ndarray | None]):
    op = node.op_type
    x = values[0] if values else None
    if op == "Identity":
        return [x]
    if op == "Transpose":
        perm = _attr(node, "perm")
        return [np.ascontiguousarray(np.transpose(x, perm))]
    if op == "Cast":
        dtype = _np_dtype(_attr(node, "to"))
        return [x if x.dtype == dtype else x.astype(dtype)]
    if op == "Reshape":
        shape = [int(d) for d in values[1]]
        if not _attr(node, "allowzero", 0):
            shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
        return [x.reshape(shape)]
    if op == "Squeeze":
        axes = values[1] if len(values) > 1 and values[1] is not None else _attr(node, "axes")
        return [np.squeeze(x, axis=tuple(int(a) for a in axes)) if axes is not None else np.squeeze(x)]
    if op == "Unsqueeze":
        axes = values[1] if len(values) > 1 and values[1] is not None else _attr(node, "axes")
        out = x
        for axis in sorted(int(a) % (x.ndim + len(axes)) for a in axes):
            out = np.expand_dims(out, axis)
        return [out]
    return None


def _fold_reference(node, values, opset: int):
    """Any other op with constant inputs: run it with ONNX's reference evaluator."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    # an omitted optional input (None: Clip(x, "", max) from torch.clamp(x, max=...)) stays omitted in its
    # place; dropping it would shift the next input into its slot (max read as min)
    inputs = [onnx.helper.make_tensor_value_info(f"i{k}", onnx.helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
              for k, v in enumerate(values) if v is not None]
    outputs = [onnx.helper.make_tensor_value_info(f"o{k}", onnx.TensorProto.UNDEFINED, None)
               for k in range(len(node.output))]
    single = onnx.helper.make_node(node.op_type, [f"i{k}" if v is not None else "" for k, v in enumerate(values)],
                                   [o.name for o in outputs], domain=node.domain)
    single.attribute.extend(node.attribute)
    graph = onnx.helper.make_graph([single], "fold", inputs, outputs)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
    return list(ReferenceEvaluator(model).run(None, {f"i{k}": v for k, v in enumerate(values) if v is not None}))


NOT_FOLDED = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
              "Bernoulli", "If", "Loop", "Scan"}


def fold_constants(graph, consts: dict[str, np.ndarray], opset: int,
                   max_reference_elements: int = 1 << 22) -> int:
    """Evaluate every node whose inputs are all constants; the node goes, its outputs join ``consts``.

    A constant is dropped as soon as its last reader is folded, so a weight
    and its transposed copy are not both held for the whole pass.
    """
    readers: dict[str, int] = defaultdict(int)
    for node in graph.node:
        for name in node_inputs(node):
            readers[name] += 1
    for output in graph.output:
        readers[output.name] += 1
    kept, folded = [], 0
    for node in graph.node:
        inputs = [name for name in node.input if name]
        if (node.domain not in ("", "ai.onnx") or node.op_type in NOT_FOLDED or not inputs
                or not all(name in consts for name in inputs) or outer_names(node)):
            kept.append(node)
            continue
        values = [consts[name] if name else None for name in node.input]
        result = _fold_numpy(node, values)
        if result is None and sum(v.size for v in values if v is not None) <= max_reference_elements:
            try:
                result = _fold_reference(node, values, opset)
            except Exception:  # an op the reference evaluator cannot run: keep the node
                result = None
        if result is None:
            kept.append(node)
            continue
        for name, value in zip(node.output, result):
            consts[name] = np.asarray(value)
        del values, result
        for name in node.input:
            if name:
                readers[name] -= 1
                if readers[name] <= 0:
                    consts.pop(name, None)
        folded += 1
    del graph.node[:]
    graph.node.extend(kept)
    return folded


# -------------------------------------------------- flatten order into Dense

def fold_flatten_transpose(graph, consts: dict[str, np.ndarray], shapes: dict[str, tuple]) -> int:
    """Transpose(NCHW->NHWC) -> Reshape(N, -1) -> MatMul(W): permute W's rows instead.

    Keras flattens channels-last; after the converter makes the convs
    channels-first, this Transpose is the only reason to go back. Permuting
    the rows of the first Dense kernel gives the same numbers without it.
    """
    uses = consumers(graph)
    graph_outputs = {o.name for o in graph.output}
    removed = 0
    for transpose in list(graph.node):
        if transpose.op_type != "Transpose" or list(_attr(transpose, "perm") or []) != [0, 2, 3, 1]:
            continue
        src = shapes.get(transpose.input[0])
        if not src or len(src) != 4 or any(not isinstance(d, int) for d in src[1:]):
            continue
        t_uses = uses.get(transpose.output[0], [])
        if len(t_uses) != 1 or t_uses[0].op_type != "Reshape" or transpose.output[0] in graph_outputs:
            continue
        reshape = t_uses[0]
        target = consts.get(reshape.input[1])
        if target is None or len(target) != 2:
            continue
        r_uses = uses.get(reshape.output[0], [])
        if not r_uses or any(u.op_type != "MatMul" or u.input[0] != reshape.output[0]
                             or u.input[1] not in consts for u in r_uses):
            continue
        _, channels, height, width = src
        for matmul in r_uses:
            kernel = consts[matmul.input[1]]
            if kernel.shape[0] != channels * height * width:
                break
        else:
            for matmul in r_uses:
                kernel = consts[matmul.input[1]]
                new_name = f"{matmul.input[1]}__nchw"
                consts[new_name] = np.ascontiguousarray(
                    kernel.reshape(height, width, channels, -1).transpose(2, 0, 1, 3).reshape(kernel.shape))
                old_name, matmul.input[1] = matmul.input[1], new_name
                if not any(old_name in n.input for n in graph.node) and old_name not in graph_outputs:
                    del consts[old_name]  # the NHWC-order kernel is not needed any more
            reshape.input[0] = transpose.input[0]
            graph.node.remove(transpose)
            removed += 1
    return removed


# ------------------------------------------------- BatchNorm into the conv

def _channel_vector(value: np.ndarray | None, channels: int) -> np.ndarray | None:
    """A constant that broadcasts along the channel axis of an (N, C, H, W) tensor, as a (C,) vector."""
    if value is None:
        return None
    value = np.asarray(value)
    if value.size == 1:
        return np.full(channels, value.reshape(()), dtype=np.float64)
    shape = list(value.shape)
    while shape and shape[0] == 1 and len(shape) > 3:  # (1, C, 1, 1) -> (C, 1, 1)
        shape.pop(0)
    if len(shape) == 3 and shape[0] == channels and shape[1:] == [1, 1]:
        return value.reshape(channels).astype(np.float64)
    return None


def fold_conv_batchnorm(graph, consts: dict[str, np.ndarray], allow: Callable | None = None) -> int:
    """Conv -> Mul(per-channel) -> Add(per-channel), or Conv -> BatchNormalization: one Conv.

    The weights here reach the graph as inputs, so the exporter could not fuse
    a BatchNormalization into the conv before it; without this the conv's
    output would feed the BN, not the activation, and the inspector would show
    the pre-BN map. The scale goes into the kernel, the shift into the bias;
    the conv then writes the last folded node's output tensor.

    ``allow(conv, node)`` says whether ``node`` may be folded into ``conv``: a
    converter that knows the source layers folds only the conv's own bias and
    BatchNormalization, so that a constant scale of another layer (Inception-
    ResNet's residual scale, a LayerScale) stays a node and the conv's tensor
    keeps meaning what the source layer computes.
    """
    uses = consumers(graph)
    graph_outputs = {o.name for o in graph.output}
    removed: set[int] = set()
    folded = 0

    def only_reader(tensor: str):
        readers = uses.get(tensor, [])
        if len(readers) != 1 or tensor in graph_outputs or id(readers[0]) in removed:
            return None
        return readers[0]

    def constant_operand(node, tensor: str):
        others = [name for name in node.input if name != tensor]
        return consts.get(others[0]) if len(others) == 1 and len(node.input) == 2 else None

    for conv in list(graph.node):
        if conv.op_type != "Conv" or id(conv) in removed or len(conv.input) < 2 or conv.input[1] not in consts:
            continue
        kernel = consts[conv.input[1]]
        channels = kernel.shape[0]
        bias = consts.get(conv.input[2]) if len(conv.input) > 2 and conv.input[2] else np.zeros(channels, kernel.dtype)
        if bias is None:
            continue
        scale = np.ones(channels)
        shift = np.asarray(bias, np.float64).copy()
        tensor, chain = conv.output[0], []
        while True:
            node = only_reader(tensor)
            if node is None or (allow is not None and not allow(conv, node)):
                break
            if node.op_type == "BatchNormalization" and len(node.output) == 1 and node.input[0] == tensor \
                    and all(name in consts for name in node.input[1:5]):
                gamma, beta, mean, var = (np.asarray(consts[n], np.float64) for n in node.input[1:5])
                factor = gamma / np.sqrt(var + float(_attr(node, "epsilon", 1e-5)))
                step_scale, step_shift = factor, beta - mean * factor
            elif node.op_type in ("Mul", "Add", "Sub") and node.input[0] == tensor or \
                    node.op_type in ("Mul", "Add") and len(node.input) == 2 and node.input[1] == tensor:
                vector = _channel_vector(constant_operand(node, tensor), channels)
                if vector is None:
                    break
                if node.op_type == "Mul":
                    step_scale, step_shift = vector, np.zeros(channels)
                else:
                    step_scale, step_shift = np.ones(channels), vector if node.op_type == "Add" else -vector
            else:
                break
            scale, shift = scale * step_scale, shift * step_scale + step_shift
            chain.append(node)
            tensor = node.output[0]
        if not chain:
            continue
        shape = (channels,) + (1,) * (kernel.ndim - 1)
        kernel_name, bias_name = f"{conv.name or conv.output[0]}__folded_kernel", f"{conv.name or conv.output[0]}__folded_bias"
        consts[kernel_name] = (kernel.astype(np.float64) * scale.reshape(shape)).astype(kernel.dtype)
        consts[bias_name] = shift.astype(kernel.dtype)
        conv.input[1] = kernel_name
        if len(conv.input) > 2:
            conv.input[2] = bias_name
        else:
            conv.input.append(bias_name)
        conv.output[0] = tensor
        removed.update(id(node) for node in chain)
        folded += len(chain)
    kept = [node for node in graph.node if id(node) not in removed]
    del graph.node[:]
    graph.node.extend(kept)
    return folded


# ------------------------------------------- channels-last islands to NCHW

_UNARY = {"Erf", "Relu", "Sigmoid", "Tanh", "Neg", "Sqrt", "Reciprocal", "Abs", "Exp", "Gelu", "Identity"}
_BINARY = {"Add", "Sub", "Mul", "Div", "Pow"}


def channels_first_islands(graph, consts: dict[str, np.ndarray], opset: int = 17) -> int:
    """Transpose(NCHW->NHWC) -> per-position ops -> Transpose(NHWC->NCHW): the same ops in NCHW.

    ConvNeXt runs LayerNorm over the channels and its pointwise convs as
    Linear layers on a channels-last map, between two Transposes per block.
    Here such an island is rewritten channels-first: a MatMul by a constant
    (Cin, Cout) matrix becomes a 1x1 Conv (same node name), LayerNormalization
    over the last axis becomes reductions over axis 1, per-channel constants
    are reshaped to (C, 1, 1); elementwise ops stay. Islands with any other op,
    or whose tensors leave it elsewhere than through the closing Transposes,
    are left alone. Returns the Transposes removed.
    """
    import onnx

    helper = onnx.helper
    removed = 0
    for start in [n for n in graph.node if n.op_type == "Transpose" and list(_attr(n, "perm") or []) == [0, 2, 3, 1]]:
        uses = consumers(graph)
        graph_outputs = {o.name for o in graph.output}
        nodes = list(graph.node)
        if start not in nodes:
            continue
        inside, island, ends, ok = {start.output[0]}, [], [], True
        for node in nodes[nodes.index(start) + 1:]:
            if not any(name in inside for name in node.input):
                continue
            if node.op_type == "Transpose" and list(_attr(node, "perm") or []) == [0, 3, 1, 2]:
                ends.append(node)
                continue
            if any(name and name not in inside and name not in consts for name in node.input) or \
                    not _island_op_ok(node, inside, consts):
                ok = False
                break
            island.append(node)
            inside.update(node.output)
        if not ok or not ends or not island:
            continue
        members = {id(n) for n in island} | {id(n) for n in ends}
        if any(t in graph_outputs or any(id(u) not in members for u in uses.get(t, [])) for t in inside):
            continue
        new_nodes = {}
        for node in island:
            new_nodes[id(node)] = _island_rewrite(node, inside, consts, opset, helper)
        source = start.input[0]
        kept = []
        for node in graph.node:
            if node is start:
                continue
            if id(node) in new_nodes:
                kept.extend(new_nodes[id(node)])
                continue
            if node in ends:
                continue
            kept.append(node)
        end_outputs = {e.output[0]: e.input[0] for e in ends}
        for node in kept:
            for k, name in enumerate(node.input):
                if name == start.output[0]:
                    node.input[k] = source
                elif name in end_outputs:
                    node.input[k] = end_outputs[name]
        del graph.node[:]
        graph.node.extend(kept)
        removed += 1 + len(ends)
    return removed


def _channel_constant(value: np.ndarray) -> np.ndarray | None:
    """A constant that broadcasts over the last axis of (N, H, W, C), for (N, C, H, W)."""
    if value.size == 1:
        return value.reshape(())
    shape = [d for d in value.shape]
    while len(shape) > 1 and shape[0] == 1:
        shape.pop(0)
    if len(shape) == 1:
        return value.reshape(shape[0], 1, 1)
    return None


def _island_op_ok(node, inside, consts) -> bool:
    if node.op_type in _UNARY:
        return True
    if node.op_type in _BINARY:
        return all(name in inside or _channel_constant(consts[name]) is not None for name in node.input)
    if node.op_type == "LayerNormalization":
        return _attr(node, "axis", -1) in (-1, 3) and len(node.output) == 1 and \
            all(name in consts for name in node.input[1:])
    if node.op_type == "MatMul":
        return node.input[0] in inside and node.input[1] in consts and consts[node.input[1]].ndim == 2
    return False


def _island_rewrite(node, inside, consts, opset, helper) -> list:
    name = node.name or node.output[0]

    def const(suffix, value):
        key = f"{name}__{suffix}"
        consts[key] = contiguous(value)
        return key

    if node.op_type in _UNARY:
        return [node]
    if node.op_type in _BINARY:
        for k, tensor in enumerate(node.input):
            if tensor not in inside:
                node.input[k] = const(f"nchw{k}", _channel_constant(consts[tensor]))
        return [node]
    if node.op_type == "MatMul":
        weight = consts[node.input[1]]
        kernel = const("kernel", weight.T.reshape(weight.shape[1], weight.shape[0], 1, 1))
        conv = helper.make_node("Conv", [node.input[0], kernel], list(node.output), name=node.name)
        return [conv]
    # LayerNormalization over the channels: (x - mean) / sqrt(var + eps) * scale + bias, on axis 1
    x, out = node.input[0], node.output[0]
    eps = float(_attr(node, "epsilon", 1e-5))

    def reduce_mean(src, dst):
        if opset >= 18:
            return helper.make_node("ReduceMean", [src, const("axes", np.array([1], np.int64))], [dst],
                                    name=f"{name}/{dst.rsplit('/', 1)[-1]}", keepdims=1)
        return helper.make_node("ReduceMean", [src], [dst], name=f"{name}/{dst.rsplit('/', 1)[-1]}",
                                axes=[1], keepdims=1)

    t = lambda part: f"{out}/{part}"  # noqa: E731
    dtype = consts[node.input[1]].dtype
    nodes = [reduce_mean(x, t("mean")),
             helper.make_node("Sub", [x, t("mean")], [t("centred")], name=f"{name}/centred"),
             helper.make_node("Mul", [t("centred"), t("centred")], [t("squared")], name=f"{name}/squared"),
             reduce_mean(t("squared"), t("var")),
             helper.make_node("Add", [t("var"), const("eps", np.array(eps, dtype))], [t("var_eps")],
                              name=f"{name}/var_eps"),
             helper.make_node("Sqrt", [t("var_eps")], [t("std")], name=f"{name}/std"),
             helper.make_node("Div", [t("centred"), t("std")], [t("normed")], name=f"{name}/normed")]
    scale = const("scale", consts[node.input[1]].reshape(-1, 1, 1))
    if len(node.input) > 2 and node.input[2]:
        nodes.append(helper.make_node("Mul", [t("normed"), scale], [t("scaled")], name=f"{name}/scaled"))
        nodes.append(helper.make_node("Add", [t("scaled"), const("bias", consts[node.input[2]].reshape(-1, 1, 1))],
                                      [out], name=f"{name}/shifted"))
    else:
        nodes.append(helper.make_node("Mul", [t("normed"), scale], [out], name=f"{name}/scaled"))
    return nodes


# ------------------------------------------------------------ hard-swish

def fuse_hard_swish(graph) -> int:
    """``x * (relu6(x + 3) * (1/6))`` (Keras's hard_swish written out, MobileNetV3): one HardSwish node.

    The same numbers (HardSwish is x * max(0, min(1, x/6 + 1/2))); as one
    activation op the inspector shows the map after it, as for every other
    activation. The node keeps the last Mul's name and output tensor.
    """
    import onnx
    from onnx import numpy_helper

    inits = {i.name: i for i in graph.initializer}

    def scalar(name):
        if name not in inits:
            return None
        value = numpy_helper.to_array(inits[name])
        return float(value.reshape(-1)[0]) if value.size == 1 else None

    uses = consumers(graph)
    graph_outputs = {o.name for o in graph.output}

    def single(tensor):
        readers = uses.get(tensor, [])
        return readers[0] if len(readers) == 1 and tensor not in graph_outputs else None

    fused, removed = 0, set()
    replacements = {}
    for add in graph.node:
        if add.op_type != "Add" or len(add.input) != 2 or id(add) in removed:
            continue
        for k in (0, 1):
            x, three = add.input[k], add.input[1 - k]
            if x in inits or scalar(three) is None or abs(scalar(three) - 3.0) > 1e-6:
                continue
            clip = single(add.output[0])
            if clip is None or clip.op_type != "Clip" or len(clip.input) < 3 or \
                    scalar(clip.input[1]) != 0.0 or scalar(clip.input[2]) != 6.0:
                continue
            sixth = single(clip.output[0])
            if sixth is None or sixth.op_type != "Mul":
                continue
            other = [t for t in sixth.input if t != clip.output[0]]
            if len(other) != 1 or scalar(other[0]) is None or abs(scalar(other[0]) - 1 / 6) > 1e-6:
                continue
            gate = single(sixth.output[0])
            if gate is None or gate.op_type != "Mul" or sorted(gate.input) != sorted([x, sixth.output[0]]):
                continue
            node = onnx.helper.make_node("HardSwish", [x], [gate.output[0]], name=gate.name)
            replacements[id(gate)] = node
            removed.update({id(add), id(clip), id(sixth)})
            fused += 1
            break
    if fused:
        kept = [replacements.get(id(n), n) for n in graph.node if id(n) not in removed]
        del graph.node[:]
        graph.node.extend(kept)
        prune(graph)
    return fused


# --------------------------------------------------------------- dead code

def prune(graph) -> int:
    """Drop nodes whose outputs nobody reads (graph outputs are read)."""
    needed = {o.name for o in graph.output}
    kept = []
    for node in reversed(graph.node):
        if any(name in needed for name in node.output):
            kept.append(node)
            needed.update(node_inputs(node))
    removed = len(graph.node) - len(kept)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    return removed


def used_names(graph) -> set[str]:
    names = {o.name for o in graph.output}
    for node in graph.node:
        names.update(node_inputs(node))
    return names


# ---------------------------------------------------------------- weights

def attach_weights(model, weights: dict[str, Callable[[], np.ndarray]], opset: int,
                   shapes: dict[str, tuple] | None = None, inline_limit: int = 1024,
                   fold_allowed: Callable | None = None, islands: bool = False) -> tuple[dict, dict]:
    """Turn weight graph inputs into initializers, folding the ops on them.

    ``weights`` maps a graph input name to a callable giving its array (called
    once, when needed). Initializers up to ``inline_limit`` bytes get their
    data; bigger ones only their name, type and shape, their arrays returned in
    ``payloads`` for ``writer.write_model`` to stream to disk, so that no
    TensorProto copy of the weights is ever made. Returns (counts of what was
    folded and removed, payloads).
    """
    import onnx

    graph = model.graph
    consts: dict[str, np.ndarray] = {}
    for init in graph.initializer:
        consts[init.name] = onnx.numpy_helper.to_array(init)
    del graph.initializer[:]
    needed = used_names(graph)
    for name, load in weights.items():
        if name in needed:
            consts[name] = np.asarray(load())
    kept_inputs = [i for i in graph.input if i.name not in weights]
    del graph.input[:]
    graph.input.extend(kept_inputs)

    constant_nodes = [n for n in graph.node if n.op_type == "Constant" and _attr(n, "value") is not None]
    for node in constant_nodes:  # Constant nodes are constants too: they become initializers
        consts[node.output[0]] = onnx.numpy_helper.to_array(_attr(node, "value"))
        graph.node.remove(node)

    stats = {"folded": fold_constants(graph, consts, opset)}
    if islands:
        stats["island_transposes_removed"] = channels_first_islands(graph, consts, opset)
    stats["batchnorm_nodes_folded"] = fold_conv_batchnorm(graph, consts, fold_allowed)
    stats["flatten_transposes_folded"] = fold_flatten_transpose(graph, consts, shapes or {})
    stats["pruned"] = prune(graph)

    needed = used_names(graph)
    payloads: dict[str, np.ndarray] = {}
    for name in list(consts):
        value = consts.pop(name)
        if name not in needed:
            continue
        value = contiguous(value)
        if value.nbytes <= inline_limit or value.dtype == object:
            graph.initializer.append(onnx.numpy_helper.from_array(value, name))
            continue
        header = graph.initializer.add()
        header.name = name
        header.data_type = onnx.helper.np_dtype_to_tensor_dtype(value.dtype)
        header.dims.extend(value.shape)
        payloads[name] = value
    return stats, payloads


# ----------------------------------------------------------------- naming

def rename_tensor(graph, old: str, new: str) -> None:
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name == old:
                node.input[k] = new
        for k, name in enumerate(node.output):
            if name == old:
                node.output[k] = new
    for collection in (graph.input, graph.output, graph.value_info):
        for info in collection:
            if info.name == old:
                info.name = new
    for init in graph.initializer:
        if init.name == old:
            init.name = new


def clean_name(name: str) -> str:
    """Node and tensor names without '/', which the inspector would read as a scope."""
    return re.sub(r"[/\\:\s]+", "_", name).strip("_") or "layer"


def name_layers(graph, node_layer: dict[str, str], renamed: dict[str, str] | None = None) -> list[str]:
    """Name conv nodes and layer outputs after the source layers.

    ``node_layer`` maps an ONNX node name to the source layer it came from.
    The conv node of a layer gets the layer's name; the tensor that leaves the
    layer (its post-activation output) gets it too. Returns conv layer names
    in graph order. Tensor renames are recorded in ``renamed`` (old -> new).
    """
    groups: dict[str, list] = defaultdict(list)
    for node in graph.node:
        layer = node_layer.get(node.name)
        if layer:
            groups[layer].append(node)
    uses = consumers(graph)
    graph_outputs = {o.name for o in graph.output}
    taken = {t for node in graph.node for t in list(node.input) + list(node.output)}
    taken |= {i.name for i in graph.input} | {i.name for i in graph.initializer}
    node_names = {node.name for node in graph.node}
    conv_layers = []
    for layer, nodes in groups.items():
        convs = [n for n in nodes if n.op_type in CONV_OPS]
        if not convs:
            continue
        clean = clean_name(layer)
        if len(convs) == 2 and _attr(convs[0], "group", 1) > 1 and _attr(convs[1], "group", 1) == 1:
            wanted_names = [f"{clean}.depthwise", f"{clean}.pointwise"]  # a separable conv's two halves
        else:  # otherwise the last one carries the name
            wanted_names = [clean if k == len(convs) - 1 else f"{clean}.{conv.op_type.lower()}{k}"
                            for k, conv in enumerate(convs)]
        for conv, wanted in zip(convs, wanted_names):
            if wanted != conv.name and wanted in node_names:
                continue
            node_names.discard(conv.name)
            conv.name = wanted
            node_names.add(wanted)
            if wanted.endswith((".depthwise", ".pointwise")):
                conv_layers.append(wanted)
        if not wanted_names[-1].endswith(".pointwise"):
            conv_layers.append(clean)
        members = {id(n) for n in nodes}
        leaving = [n.output[0] for n in nodes
                   if n.output and (n.output[0] in graph_outputs
                                    or any(id(u) not in members for u in uses.get(n.output[0], [])))]
        if len(leaving) == 1 and leaving[0] != clean and clean not in taken and leaving[0] not in graph_outputs:
            rename_tensor(graph, leaving[0], clean)
            taken.add(clean)
            if renamed is not None:
                renamed[leaving[0]] = clean
    order = {name: k for k, name in enumerate(n.name for n in graph.node)}
    return sorted(conv_layers, key=lambda name: order.get(name, 1 << 30))


def layer_of_conv(name: str) -> str:
    """The source layer of a conv node name: a separable conv's halves belong to their layer."""
    for suffix in (".depthwise", ".pointwise"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def name_shown_outputs(graph, conv_layers: Iterable[str], renamed: dict[str, str] | None = None) -> int:
    """Give each named conv's shown tensor (its activation's output, else its own) the layer's name.

    For convs whose layer-output tensor lost that name, e.g. after a
    BatchNormalization was folded in. Returns how many tensors were renamed.
    """
    from inspector.graph import ACTIVATIONS

    wanted = set(conv_layers)
    uses = consumers(graph)
    graph_outputs = {o.name for o in graph.output}
    taken = {t for node in graph.node for t in list(node.input) + list(node.output)}
    taken |= {i.name for i in graph.input} | {i.name for i in graph.initializer}
    count = 0
    for conv in list(graph.node):
        target = layer_of_conv(conv.name)
        if conv.op_type not in CONV_OPS or conv.name not in wanted or target in taken \
                or conv.name.endswith(".depthwise"):
            continue
        tensor = conv.output[0]
        readers = uses.get(tensor, [])
        if len(readers) == 1 and readers[0].op_type in ACTIVATIONS and readers[0].input[0] == tensor \
                and tensor not in graph_outputs:
            tensor = readers[0].output[0]
        if tensor in graph_outputs:
            continue
        rename_tensor(graph, tensor, target)
        taken.add(target)
        if renamed is not None:
            renamed[tensor] = target
        count += 1
    return count


def name_conv_weights(graph, payloads: dict) -> int:
    """Each named conv's kernel and bias initializers become ``<conv>.kernel`` / ``<conv>.bias``.

    tf2onnx leaves scoped names on them (``model_1/block2_sepconv1_1/separable_conv2d/depthwise__27:0``)
    from which a reader would take the layer's name, with Keras's scope suffixes and without
    saying which half of a separable conv it is. Only initializers read by that conv alone.
    """
    uses = consumers(graph)
    inits = {i.name: i for i in graph.initializer}
    taken = set(inits) | {t for node in graph.node for t in list(node.input) + list(node.output)}
    count = 0
    for conv in graph.node:
        if conv.op_type not in CONV_OPS or not conv.name:
            continue
        for k, suffix in ((1, "kernel"), (2, "bias")):
            if len(conv.input) <= k or conv.input[k] not in inits:
                continue
            old, new = conv.input[k], f"{conv.name}.{suffix}"
            if old == new or new in taken or len(uses.get(old, [])) != 1:
                continue
            inits[old].name = new
            conv.input[k] = new
            if old in payloads:
                payloads[new] = payloads.pop(old)
            taken.add(new)
            count += 1
    return count


def remove_transpose_pairs(graph) -> int:
    """Transpose -> Transpose: one Transpose with the composed perm, or none when it is the identity."""
    producer = producers(graph)
    graph_outputs = {o.name for o in graph.output}
    removed = 0
    for node in list(graph.node):
        if node.op_type != "Transpose":
            continue
        first = producer.get(node.input[0])
        if first is None or first.op_type != "Transpose":
            continue
        inner, outer = list(_attr(first, "perm") or []), list(_attr(node, "perm") or [])
        if not inner or len(inner) != len(outer):
            continue
        composed = [inner[a] for a in outer]
        if composed == list(range(len(composed))):
            if node.output[0] in graph_outputs:
                continue
            source = first.input[0]
            for user in graph.node:
                for k, name in enumerate(user.input):
                    if name == node.output[0]:
                        user.input[k] = source
            graph.node.remove(node)
        else:
            import onnx

            node.input[0] = first.input[0]
            for attribute in node.attribute:
                if attribute.name == "perm":
                    attribute.CopyFrom(onnx.helper.make_attribute("perm", composed))
        removed += 1
    prune(graph)
    return removed


def transpose_count(model) -> int:
    return sum(1 for node in model.graph.node if node.op_type == "Transpose")
