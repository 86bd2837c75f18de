"""Models exported by the frameworks' own tools, not by our converters: tf2onnx with its default
settings, and torch.onnx with and without constant folding. The inspector must recover the source
layer names and show, for every conv layer, the tensor the framework itself computes."""

import numpy as np
import pytest

import builders as b
import inspector

TOLERANCE = 1e-4


def assert_close(got, reference, name):
    scale = max(float(np.abs(reference).max()), 1e-6)
    worst = float(np.abs(got - reference).max()) / scale
    assert worst <= TOLERANCE, f"{name}: relative difference {worst:.2e}"


@pytest.mark.keras
def test_tf2onnx_default_export_of_a_keras_model(tmp_path):
    pytest.importorskip("tensorflow")
    tf2onnx = pytest.importorskip("tf2onnx")
    import keras
    import tensorflow as tf

    layers = keras.layers
    inputs = keras.Input((24, 24, 3), name="pixels")
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="block1_conv1")(inputs)
    x = layers.Conv2D(8, 3, padding="same", name="block1_conv2")(x)
    x = layers.BatchNormalization(name="block1_bn")(x)
    x = layers.ReLU(name="block1_relu")(x)
    x = layers.MaxPooling2D(name="block1_pool")(x)
    x = layers.DepthwiseConv2D(3, padding="same", activation="relu6", name="block2_dw")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(5, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, outputs, name="tiny")
    rng = np.random.default_rng(0)
    for layer in model.layers:  # non-trivial biases and BN statistics
        weights = layer.get_weights()
        if weights:
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(w.dtype) if "bn" in layer.name
                               else rng.normal(0, 0.3, w.shape).astype(w.dtype) for w in weights])
    path = tmp_path / "tf2onnx_default.onnx"
    spec = (tf.TensorSpec((1, 24, 24, 3), tf.float32, name="pixels"),)
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=17, output_path=str(path))

    onnx_model = inspector.load(path)
    names = [layer.name for layer in onnx_model.layers]
    assert names == ["block1_conv1", "block1_conv2", "block2_dw"]
    assert onnx_model.input.layout == "NHWC"
    x = rng.uniform(-1, 1, (1, 24, 24, 3)).astype(np.float32)
    maps = onnx_model.run(x, device="cpu")
    shown = {"block1_conv1": "block1_conv1", "block1_conv2": "block1_relu", "block2_dw": "block2_dw"}
    probe = keras.Model(model.inputs, [model.get_layer(v).output for v in shown.values()])
    for name, reference in zip(shown, probe(x)):
        assert_close(maps[name], np.asarray(reference).transpose(0, 3, 1, 2), name)


class _Features:
    """torchvision-style naming: features.N in an nn.Sequential, a classifier after it."""

    @staticmethod
    def build():
        import torch
        from torch import nn

        torch.manual_seed(0)
        net = nn.Sequential()
        net.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU6(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 1), nn.Hardswish(),
        )
        net.pool = nn.AdaptiveAvgPool2d(1)
        net.flatten = nn.Flatten()
        net.classifier = nn.Linear(16, 4)
        with torch.no_grad():
            bn = net.features[1]
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
        return net.eval()


@pytest.mark.torch
@pytest.mark.parametrize("folding", [True, False], ids=["folded", "batchnorm-unfolded"])
def test_torch_onnx_export_of_a_module(tmp_path, folding):
    torch = pytest.importorskip("torch")

    net = _Features.build()
    x = torch.randn(1, 3, 16, 16)
    path = tmp_path / "torch_export.onnx"
    torch.onnx.export(net, (x,), str(path), opset_version=17, dynamo=False, do_constant_folding=folding,
                      input_names=["x"], output_names=["logits"])

    model = inspector.load(path)
    assert [layer.name for layer in model.layers] == ["features.0", "features.3", "features.6"]
    if not folding:
        assert model.layers[0].affine == ("BatchNormalization",)
    maps = model.run(x.numpy(), device="cpu")
    references, out = {}, x
    with torch.no_grad():
        for index, module in enumerate(net.features):
            out = module(out)
            references[index] = out.numpy()
    # What the inspector shows: after BN and the activation, as the block's output.
    for name, index in (("features.0", 2), ("features.3", 4), ("features.6", 7)):
        assert_close(maps[name], references[index], name)
