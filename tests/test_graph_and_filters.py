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
