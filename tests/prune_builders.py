"""Tiny models with planted dead filters, one per dependency kind that `inspector prune` follows.

Each builder returns ``(model, expected)``: ``expected["removed"]`` maps a conv
node name to the filters that must go, ``expected["shapes"]`` maps initializer
names to their shapes after pruning, ``expected["folded"]`` counts constant
channels folded into a bias, ``expected["kept"]`` maps ``(layer, filter)`` of a
dead filter that must stay to a word its reason contains. A diagram above each
builder shows the graph ("x" marks the planted dead filters).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class Net:
    """A small graph under construction: convs with random weights, planted zeros, and plain ops."""

    def __init__(self, seed: int, shape=(1, 3, 12, 12)):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits = [], []
        self.input_shape = shape

    def const(self, name: str, array) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def conv(self, name, x, cin, cout, k=3, pad=None, group=1, dead=(), constant=None, bias=True) -> str:
        w = (self.rng.standard_normal((cout, cin // group, k, k)) / np.sqrt(cin * k * k / group)).astype(np.float32)
        b = self.rng.standard_normal(cout).astype(np.float32) * 0.1
        for f in dead:
            w[f], b[f] = 0, 0
        for f, value in (constant or {}).items():
            w[f], b[f] = 0, value
        pad = k // 2 if pad is None else pad
        inputs = [x, self.const(name + ".weight", w)] + ([self.const(name + ".bias", b)] if bias else [])
        self.nodes.append(helper.make_node("Conv", inputs, [name], name=name, pads=[pad] * 4, group=group))
        return name

    def op(self, op_type, inputs, name, outputs=1, **attrs):
        outs = [name] if outputs == 1 else [f"{name}_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=name, **attrs))
        return outs[0] if outputs == 1 else outs

    def silu(self, x, name):
        return self.op("Mul", [x, self.op("Sigmoid", [x], name + "_sig")], name)

    def model(self, output: str, input_shape=None) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "g", [helper.make_tensor_value_info(
            "x", TensorProto.FLOAT, list(input_shape or self.input_shape))],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)], self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        m.ir_version = 8
        entry = m.metadata_props.add()
        entry.key, entry.value = "inspector.model_name", "planted"
        inferred = onnx.shape_inference.infer_shapes(m)  # typed outputs: the checker wants their shapes
        del m.graph.output[:]
        m.graph.output.extend(inferred.graph.output)
        return m


# x -> c1 (8, x: 2 5) -> Relu -> c2 (16) -> Relu -> y
def conv_chain():
    n = Net(0)
    y = n.op("Relu", [n.conv("c2", n.op("Relu", [n.conv("c1", "x", 3, 8, dead=(2, 5))], "r1"), 8, 16)], "y")
    return n.model(y), {"removed": {"c1": [2, 5]}, "shapes": {"c1.weight": (6, 3, 3, 3), "c2.weight": (16, 6, 3, 3)}}


# x -> c1 (8, x: 3) -> Relu -> dw (depthwise 8, x: 6) -> Relu -> pw (1x1, 10) -> y
# Channel 3 is dead before the depthwise conv; depthwise filter 6 kills channel 6 after it,
# so c1's filter 6 served nothing any more and goes too. The depthwise conv keeps 6 groups.
def depthwise():
    n = Net(1)
    r1 = n.op("Relu", [n.conv("c1", "x", 3, 8, dead=(3,))], "r1")
    r2 = n.op("Relu", [n.conv("dw", r1, 8, 8, group=8, dead=(6,))], "r2")
    y = n.conv("pw", r2, 8, 10, k=1)
    return n.model(y), {"removed": {"c1": [3, 6], "dw": [3, 6]}, "shapes": {"dw.weight": (6, 1, 3, 3), "pw.weight": (10, 6, 1, 1)}}


# x -> a (8, x: 1 4) -> Relu ---------------+
#                       \-> b (8, x: 4) -> Relu -> Add -> c (6) -> y
# The Add ties a[i] to b[i]: channel 4 is dead in both and goes; a[1] meets a live b[1] and stays.
def residual_add():
    n = Net(2)
    ra = n.op("Relu", [n.conv("a", "x", 3, 8, dead=(1, 4))], "ra")
    rb = n.op("Relu", [n.conv("b", ra, 8, 8, dead=(4,))], "rb")
    y = n.conv("c", n.op("Add", [ra, rb], "add"), 8, 6)
    return n.model(y), {"removed": {"a": [4], "b": [4]}, "kept": {("a", 1): "tied"},
                        "shapes": {"b.weight": (7, 7, 3, 3), "c.weight": (6, 7, 3, 3)}}


# x -> a (4, x: 1) -> Relu --+
# x -> b (6, x: 5) -> Relu --+-> Concat(axis 1) -> c (5) -> y      c loses inputs 1 and 4 + 5 = 9
def concat():
    n = Net(3)
    ra = n.op("Relu", [n.conv("a", "x", 3, 4, dead=(1,))], "ra")
    rb = n.op("Relu", [n.conv("b", "x", 3, 6, dead=(5,))], "rb")
    y = n.conv("c", n.op("Concat", [ra, rb], "cat", axis=1), 10, 5)
    return n.model(y), {"removed": {"a": [1], "b": [5]}, "shapes": {"c.weight": (5, 8, 3, 3)}}


# x -> a (8, x: 1 6) -> SiLU -> Split [3, 5] -> b (4) on part 0, c (4) on part 1 -> Add -> y
# Channel 1 is in part 0, channel 6 is channel 3 of part 1: the split becomes [2, 4].
def split():
    n = Net(4)
    parts = n.op("Split", [n.silu(n.conv("a", "x", 3, 8, dead=(1, 6)), "sa"), n.const("sizes", np.array([3, 5]))],
                 "split", outputs=2, axis=1)
    y = n.op("Add", [n.conv("b", parts[0], 3, 4), n.conv("c", parts[1], 5, 4)], "y")
    return n.model(y), {"removed": {"a": [1, 6]}, "shapes": {"sizes": (2,), "b.weight": (4, 2, 3, 3),
                                                              "c.weight": (4, 4, 3, 3)}}


# x -> c (4, x: 2) -> Relu -> MaxPool 2x2 -> Flatten -> Gemm (transB, 4*6*6 -> 5) -> y
# NCHW flattening: channel 2 owns features 72..107, 36 rows of the dense weights.
def flatten_gemm_nchw():
    n = Net(5)
    pooled = n.op("MaxPool", [n.op("Relu", [n.conv("c", "x", 3, 4, dead=(2,))], "r")], "pool",
                  kernel_shape=[2, 2], strides=[2, 2])
    weights = n.const("fc.weight", (n.rng.standard_normal((5, 144)) * 0.1).astype(np.float32))
    y = n.op("Gemm", [n.op("Flatten", [pooled], "flat", axis=1), weights, n.const("fc.bias", np.ones(5, np.float32))],
             "fc", transB=1)
    return n.model(y), {"removed": {"c": [2]}, "shapes": {"fc.weight": (5, 108)}}


# x (NHWC) -> Transpose -> c (4, x: 1, constant 0.5: 3) -> Transpose to NHWC -> Relu -> Reshape (-1, 6*6*4)
#   -> MatMul (144 -> 5) -> Add bias -> y
# NHWC flattening, as tf2onnx writes Keras's Flatten: channel 1 owns every 4th feature from 1.
# Filter 3 outputs a constant 0.5: its dense rows are folded into the bias, then removed.
def flatten_matmul_nhwc():
    n = Net(6, shape=(1, 6, 6, 3))
    nchw = n.op("Transpose", ["x"], "to_nchw", perm=[0, 3, 1, 2])
    nhwc = n.op("Transpose", [n.conv("c", nchw, 3, 4, dead=(1,), constant={3: 0.5})], "to_nhwc", perm=[0, 2, 3, 1])
    flat = n.op("Reshape", [n.op("Relu", [nhwc], "r"), n.const("shape", np.array([-1, 144]))], "flat")
    matmul = n.op("MatMul", [flat, n.const("fc.weight", (n.rng.standard_normal((144, 5)) * 0.1).astype(np.float32))],
                  "fc")
    y = n.op("Add", [matmul, n.const("fc.bias", np.ones(5, np.float32))], "y")
    return n.model(y), {"removed": {"c": [1, 3]}, "folded": 1, "shapes": {"fc.weight": (72, 5)}}


# x -> c1 (8, no bias, x: 2 5) -> BatchNormalization -> Relu -> c2 (1x1, 6) -> y
# After the BN a zero filter is the constant beta - mean*gamma/sqrt(var+eps): channel 2's is positive,
# a constant after the Relu, folded into c2's bias; channel 5's is negative, zero after the Relu.
def batchnorm_unfolded():
    n = Net(7)
    c1 = n.conv("c1", "x", 3, 8, dead=(2, 5), bias=False)
    gamma, beta = np.ones(8, np.float32), np.zeros(8, np.float32)
    mean, var = np.full(8, 0.5, np.float32), np.full(8, 4.0, np.float32)
    beta[2], mean[2] = 1.0, 0.2  # channel 2: 1 - 0.2/2 = 0.9
    mean[5] = 3.0  # channel 5: -1.5
    bn = n.op("BatchNormalization", [c1, n.const("g", gamma), n.const("bt", beta), n.const("m", mean),
                                     n.const("v", var)], "bn")
    y = n.conv("c2", n.op("Relu", [bn], "r"), 8, 6, k=1)
    return n.model(y), {"removed": {"c1": [2, 5]}, "folded": 1, "shapes": {"g": (6,), "c2.weight": (6, 6, 1, 1)}}


# x -> c1 (8, constant 0.3: 4) -> Sigmoid -> c2 (3x3, zero padding) -> y
# Sigmoid(0.3) is a constant channel, but c2 pads it with zeros: folding it would not be exact, so it stays.
def constant_before_padding():
    n = Net(8)
    y = n.conv("c2", n.op("Sigmoid", [n.conv("c1", "x", 3, 8, constant={4: 0.3})], "s"), 8, 6)
    return n.model(y), {"removed": {}, "kept": {("c1", 4): "padding"}}


# x -> c1 (8, x: 1 2) -> LeakyRelu -> Softmax(axis 1) -> y       (Softmax mixes channels: not covered)
#                            \-> g (grouped conv, 2 groups) -> ... (grouped: not covered)
def uncovered_ops():
    n = Net(9)
    act = n.op("LeakyRelu", [n.conv("c1", "x", 3, 8, dead=(1, 2))], "act")
    grouped = n.conv("g", act, 8, 4, group=2)
    y = n.op("Add", [n.op("Softmax", [act], "soft", axis=1), n.op("ReduceMean", [grouped], "mean", axes=[1])], "y")
    return n.model(y), {"removed": {}, "kept": {("c1", 1): ("Softmax", "grouped"), ("c1", 2): ("Softmax", "grouped")}}


# x -> c1 (8, x: 2) -> HardSwish as x*Clip(x+3, 0, 6)/6 --------------------------+
#        \-> ReduceMean(H, W) -> r (1x1, 4) -> Relu -> e (1x1, 8) -> HardSigmoid -> Mul -> Resize x2 -> c2 (6) -> y
# Squeeze-and-excite: the gate's channel 2 (e's filter 2) multiplies a zero channel, so it goes too.
def squeeze_excite():
    n = Net(11)
    c1 = n.conv("c1", "x", 3, 8, dead=(2,))
    clipped = n.op("Clip", [n.op("Add", [c1, n.const("three", np.float32(3))], "plus3"),
                            n.const("lo", np.float32(0)), n.const("hi", np.float32(6))], "clip")
    act = n.op("Div", [n.op("Mul", [c1, clipped], "hsw_mul"), n.const("six", np.float32(6))], "hswish")
    pooled = n.op("ReduceMean", [act], "squeeze", axes=[2, 3], keepdims=1)
    gate = n.op("HardSigmoid", [n.conv("e", n.op("Relu", [n.conv("r", pooled, 8, 4, k=1)], "rr"), 4, 8, k=1)], "hs")
    scaled = n.op("Resize", [n.op("Mul", [act, gate], "excite"), "", n.const("scales", np.array(
        [1, 1, 2, 2], np.float32))], "up", mode="nearest")
    y = n.conv("c2", scaled, 8, 6)
    return n.model(y), {"removed": {"c1": [2], "e": [2]}, "shapes": {"r.weight": (4, 7, 1, 1), "e.weight": (7, 4, 1, 1),
                                                                   "c2.weight": (6, 7, 3, 3)}}


# x -> c (4, constant 0.5: 1) -> Relu -> GlobalAveragePool -> Flatten -> Gemm without bias (4 -> 3) -> y
# The constant channel's contribution 0.5 * W[:, 1] becomes the Gemm's new bias.
def constant_into_gemm():
    n = Net(12)
    pooled = n.op("GlobalAveragePool", [n.op("Relu", [n.conv("c", "x", 3, 4, constant={1: 0.5})], "r")], "gap")
    weights = n.const("fc.weight", n.rng.standard_normal((4, 3)).astype(np.float32))
    y = n.op("Gemm", [n.op("Flatten", [pooled], "flat"), weights], "fc")
    return n.model(y), {"removed": {"c": [1]}, "folded": 1, "shapes": {"fc.weight": (3, 3)}}


# x -> c1 (8, x: 3 6) -> Relu -> dw (depthwise, multiplier 2: 16, x: 9) -> Relu -> pw (1x1, 5) -> y
# Each input channel owns two depthwise filters: 3 -> 6, 7 and 6 -> 12, 13 go with it. Depthwise
# filter 9 alone leaves its sibling 8 alive, so channel 4 stays.
def depthwise_multiplier():
    n = Net(13)
    r1 = n.op("Relu", [n.conv("c1", "x", 3, 8, dead=(3, 6))], "r1")
    r2 = n.op("Relu", [n.conv("dw", r1, 8, 16, group=8, dead=(9,))], "r2")
    y = n.conv("pw", r2, 16, 5, k=1)
    return n.model(y), {"removed": {"c1": [3, 6], "dw": [6, 7, 12, 13]},
                        "shapes": {"dw.weight": (12, 1, 3, 3), "pw.weight": (5, 12, 1, 1)}}


# x -> c1 (4, x: 1) -> Relu = r1;  If (true) { Identity(r1) } -> c2 (3) -> y
# The If body reads r1 by name, not as a node input: the channel must stay.
def read_in_subgraph():
    n = Net(14)
    r1 = n.op("Relu", [n.conv("c1", "x", 3, 4, dead=(1,))], "r1")
    branch = helper.make_graph([helper.make_node("Identity", [r1], ["branch_out"])], "body", [],
                               [helper.make_tensor_value_info("branch_out", TensorProto.FLOAT, [1, 4, 12, 12])])
    picked = n.op("If", [n.const("cond", np.array(True))], "if", then_branch=branch, else_branch=branch)
    y = n.conv("c2", picked, 4, 3)
    return n.model(y), {"removed": {}, "kept": {("c1", 1): "subgraph"}}


# x -> c1 (6, x: 0 4, constant 0.2: 2) -> Relu -> ConvTranspose (stride 2, 6 -> 3) -> y
# Zero channels leave the transposed conv's weight rows; the constant one stays (spread unevenly).
def into_conv_transpose():
    n = Net(15)
    r = n.op("Relu", [n.conv("c1", "x", 3, 6, dead=(0, 4), constant={2: 0.2})], "r")
    w = n.const("up.weight", (n.rng.standard_normal((6, 3, 2, 2)) * 0.3).astype(np.float32))
    y = n.op("ConvTranspose", [r, w], "up", strides=[2, 2])
    return n.model(y), {"removed": {"c1": [0, 4]}, "shapes": {"up.weight": (4, 3, 2, 2)},
                        "kept": {("c1", 2): "transposed conv"}}


# x -> c1 (8) -> Relu -> c2 (8) -> Relu -> y        nothing dead: the model comes out unchanged
def nothing_dead():
    n = Net(10)
    y = n.op("Relu", [n.conv("c2", n.op("Relu", [n.conv("c1", "x", 3, 8)], "r1"), 8, 8)], "y")
    return n.model(y), {"removed": {}}


BUILDERS = [conv_chain, depthwise, residual_add, concat, split, flatten_gemm_nchw, flatten_matmul_nhwc,
            batchnorm_unfolded, constant_before_padding, uncovered_ops, squeeze_excite, constant_into_gemm,
            depthwise_multiplier, read_in_subgraph, into_conv_transpose, nothing_dead]


def _as_constant_nodes(m: onnx.ModelProto) -> onnx.ModelProto:
    """Every initializer moved into a Constant node at the front of the graph, as legacy paddle2onnx writes."""
    consts = [helper.make_node("Constant", [], [t.name], name=f"const_{t.name}", value=t) for t in m.graph.initializer]
    nodes = consts + list(m.graph.node)
    del m.graph.node[:], m.graph.initializer[:]
    m.graph.node.extend(nodes)
    return m


# x -> c1 (8, x: 2 5) -> Relu -> c2 (16) -> Relu -> y, every weight in a Constant node (legacy paddle2onnx)
def constant_node_weights():
    m, expected = conv_chain()
    return _as_constant_nodes(m), {"removed": expected["removed"]}


def _int8_chain(n: Net, name: str, weights: np.ndarray, how: str) -> str:
    """``weights`` stored as int8 with a per-filter scale, dequantized in the graph: Cast -> Mul (int8 weight-only
    exports) or DequantizeLinear (onnxruntime's QDQ). The float weights the conv reads are exactly
    int8 * scale."""
    scale = (np.abs(weights).reshape(len(weights), -1).max(axis=1) / 127).astype(np.float32)
    scale[scale == 0] = 1.0
    q = np.round(weights / scale[:, None, None, None]).astype(np.int8)
    stored = n.const(name + ".weight_q", q)
    if how == "cast_mul":
        cast = n.op("Cast", [stored], name + ".weight_f", to=TensorProto.FLOAT)
        return n.op("Mul", [cast, n.const(name + ".scale", scale.reshape(-1, 1, 1, 1))], name + ".weight")
    return n.op("DequantizeLinear", [stored, n.const(name + ".scale", scale),
                                     n.const(name + ".zero", np.zeros(len(scale), np.int8))], name + ".weight", axis=0)


def _quantized_chain(how: str):
    """x -> c1 (8, x: 1 6) -> Relu -> c2 (12, int8 weights, x: 3) -> Relu -> c3 (5, int8 weights) -> y"""
    n = Net(16)
    r1 = n.op("Relu", [n.conv("c1", "x", 3, 8, dead=(1, 6))], "r1")
    w2 = n.rng.standard_normal((12, 8, 3, 3)).astype(np.float32) / 8
    w2[3] = 0
    c2 = n.op("Conv", [r1, _int8_chain(n, "c2", w2, how), n.const("c2.bias", np.zeros(12, np.float32))], "c2",
              pads=[1] * 4)
    w3 = n.rng.standard_normal((5, 12, 3, 3)).astype(np.float32) / 10
    c3 = n.op("Conv", [n.op("Relu", [c2], "r2"), _int8_chain(n, "c3", w3, how)], "c3", pads=[1] * 4)
    return n.model(c3), {"removed": {"c1": [1, 6], "c2": [3]}}


# x -> c1 (8, x: 1 6) -> Relu -> c2 (int8 -> Cast -> Mul scale, x: 3) -> Relu -> c3 (int8 -> Cast -> Mul) -> y
def cast_mul_weights():
    return _quantized_chain("cast_mul")


# x -> c1 (8, x: 1 6) -> Relu -> c2 (int8 -> DequantizeLinear, x: 3) -> Relu -> c3 (int8 -> DequantizeLinear) -> y
def dequantized_weights():
    return _quantized_chain("dequantize")


# Legacy paddle2onnx (issue 19's text detectors): weights in Constant nodes, each conv without a bias input and its
# bias added as Add(conv, Reshape(Constant bias, Constant [1, C, 1, 1])), HardSwish written out as
# Div(Mul(x, Clip(Add(x, 3), 0, 6)), 6):
# x -> c1 (8, x: 2 5) -> +bias -> HardSwish -> c2 (8, x: 6) -> +bias -> Relu -> c3 (4) -> +bias -> y
def paddle_legacy():
    n = Net(17)

    def conv_bias(name, x, cin, cout, dead=()):
        y = n.conv(name, x, cin, cout, dead=dead, bias=False)
        bias = n.rng.standard_normal(cout).astype(np.float32) * 0.1
        bias[list(dead)] = 0
        shaped = n.op("Reshape", [n.const(name + ".b", bias), n.const(name + ".b_shape", np.array([1, cout, 1, 1]))],
                      name + ".b_reshaped")
        return n.op("Add", [y, shaped], name + ".biased")

    c1 = conv_bias("c1", "x", 3, 8, dead=(2, 5))
    gate = n.op("Clip", [n.op("Add", [c1, n.const("three", np.float32(3))], "plus3"),
                         n.const("lo", np.float32(0)), n.const("hi", np.float32(6))], "relu6")
    act = n.op("Div", [n.op("Mul", [c1, gate], "hsw"), n.const("six", np.float32(6))], "hswish")
    r2 = n.op("Relu", [conv_bias("c2", act, 8, 8, dead=(6,))], "r2")
    y = conv_bias("c3", r2, 8, 4)
    return _as_constant_nodes(n.model(y)), {"removed": {"c1": [2, 5], "c2": [6]}}


BUILDERS += [constant_node_weights, cast_mul_weights, dequantized_weights, paddle_legacy]
