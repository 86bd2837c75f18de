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
