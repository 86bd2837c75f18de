"""The zoo converters: keras.applications patterns (separable convs, squeeze-excite with hard-sigmoid,
constant residual scales, grouped convs, exact GELU), torchvision and timm by name, the smallest model of
each family end to end with --check, and the offline messages with the network blocked."""

import os
import socket

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

TOLERANCE = 1e-4


def _ops(path):
    return [n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node]


def _onnxruntime_output(path, x):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _assert_same_output(got, expected):
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= TOLERANCE * np.abs(expected).max()


def _assert_keras_output(model, path, seed=0):
    """onnxruntime on the written file against Keras's own output for a random input: a reference that does
    not go through the converter's parity check (which the other assertions read)."""
    x = np.random.default_rng(seed).uniform(-1, 1, (1, *model.input_shape[1:])).astype(np.float32)
    _assert_same_output(_onnxruntime_output(path, x.transpose(0, 3, 1, 2)), np.asarray(model(x)))


def _assert_torch_output(factory_file, path, shape, seed=0):
    """onnxruntime on the written file against torch's own forward pass of the factory's module."""
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("factory_under_test", str(factory_file))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.make().eval()
    x = np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    _assert_same_output(_onnxruntime_output(path, x), expected)


def _randomise(model, keras, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if weights:
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(w.dtype)
                               if isinstance(layer, keras.layers.BatchNormalization)
                               else rng.normal(0, 0.3, w.shape).astype(w.dtype) for w in weights])
    return model


# ------------------------------------------------------------------ Keras patterns

@pytest.fixture(scope="module")
def keras():
    pytest.importorskip("tensorflow")
    pytest.importorskip("tf2onnx")
    return pytest.importorskip("keras")


def _convert(keras_model, out, capfd=None, **kwargs):
    from converters import api

    messages = []
    result = api.convert_keras_model(keras_model, str(out), preprocess="tf", check=True, echo=messages.append,
                                     **kwargs)
    return result, messages


@pytest.mark.keras
def test_separable_conv_halves_named_and_both_checked(keras, tmp_path):
    L = keras.layers
    inputs = keras.Input((16, 16, 3), name="pixels")
    x = L.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = L.SeparableConv2D(12, 3, padding="same", strides=2, name="block2_sepconv1")(x)
    x = L.BatchNormalization(name="block2_sepconv1_bn")(x)
    x = L.ReLU(name="block2_sepconv2_act")(x)
    x = L.SeparableConv2D(6, 3, padding="same", use_bias=False, name="block2_sepconv2")(x)
    outputs = L.GlobalAveragePooling2D(name="gap")(x)
    model = _randomise(keras.Model(inputs, outputs, name="sep"), keras)
    out = tmp_path / "sep.onnx"
    result, _ = _convert(model, out)
    assert result.conv_layers == ["stem", "block2_sepconv1.depthwise", "block2_sepconv1.pointwise",
                                  "block2_sepconv2.depthwise", "block2_sepconv2.pointwise"]
    labels = [d.name for d in result.parity]
    assert "block2_sepconv1.depthwise (depthwise op of block2_sepconv1)" in labels
    assert "block2_sepconv1.pointwise (block2_sepconv2_act)" in labels
    assert len(result.parity) == 6 and all(d.relative <= TOLERANCE for d in result.parity)
    _assert_keras_output(model, out)
    import inspector

    layers = {layer.name: layer for layer in inspector.load(str(out)).layers}
    assert list(layers) == result.conv_layers  # the inspector reads the same names
    assert layers["block2_sepconv1.depthwise"].groups == 8 and layers["block2_sepconv1.pointwise"].groups == 1
    # the kernels are named after their conv, not after TensorFlow's scopes
    np.testing.assert_allclose(inspector.load(str(out)).filters("block2_sepconv2.depthwise")[:, 0],
                               np.asarray(model.get_layer("block2_sepconv2").depthwise_kernel).transpose(2, 3, 0, 1)[:, 0],
                               rtol=1e-6)
    assert _ops(out).count("Transpose") == 0


def _hard_sigmoid(x, L):
    return L.ReLU(6.0)(x + 3.0) * (1.0 / 6.0)


def _squeeze_excite_net(keras):
    """MobileNetV3's pattern: hard-swish after a conv, and a squeeze-excite gate ending in hard-sigmoid."""
    L = keras.layers
    inputs = keras.Input((16, 16, 3), name="pixels")
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="conv")(inputs)
    x = L.BatchNormalization(name="conv_bn")(x)
    x = L.Activation("hard_swish", name="conv_hswish")(x)
    se = L.GlobalAveragePooling2D(keepdims=True, name="se_pool")(x)
    se = L.Conv2D(4, 1, name="se_conv")(se)
    se = L.ReLU(name="se_relu")(se)
    se = L.Conv2D(8, 1, use_bias=False, name="se_conv_1")(se)  # as grappler leaves a zero bias
    se = _hard_sigmoid(se, L)
    x = L.Multiply(name="se_mul")([x, se])
    x = L.Conv2D(4, 1, name="project")(x)
    return _randomise(keras.Model(inputs, L.GlobalAveragePooling2D(name="gap")(x), name="se_net"), keras)


@pytest.mark.keras
def test_squeeze_excite_and_hard_sigmoid_leave_no_transpose_and_no_traceback(keras, tmp_path, capfd):
    out = tmp_path / "se.onnx"
    model = _squeeze_excite_net(keras)
    result, _ = _convert(model, out)
    _assert_keras_output(model, out)
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err and "Failed to apply" not in captured.err
    assert result.transposes == 0 and _ops(out).count("Transpose") == 0
    assert {"se_conv", "se_conv_1", "project"} <= set(result.conv_layers)
    import inspector

    # hard-swish written out (Add 3, Clip 0..6, Mul 1/6, Mul) is one HardSwish: the map is after it
    layers = {layer.name: layer for layer in inspector.load(str(out)).layers}
    assert layers["conv"].activation == "HardSwish" and "conv (conv_hswish)" in [d.name for d in result.parity]
    assert layers["se_conv_1"].activation == "Clip"  # hard-sigmoid's ReLU(6)(x + 3): Keras's re_lu layer
    assert all(d.relative <= TOLERANCE for d in result.parity)
    assert len(result.parity) == len(result.conv_layers) + 1  # every conv compared, and the output


@pytest.mark.keras
def test_a_failing_tf2onnx_optimizer_is_retried_quietly(keras, tmp_path, capfd, monkeypatch):
    """Without the scalar fix tf2onnx's transpose optimizer crashes: no traceback, the file still checks out."""
    from converters import keras_convert

    monkeypatch.setattr(keras_convert, "_scalar_addends_as_vectors", lambda graph_def, tf: 0)
    retried = []
    original = keras_convert._tf2onnx_structure

    def spy(*args, **kwargs):
        import tf2onnx.optimizer as opt

        real = opt.optimize_graph

        def watch(graph, catch_errors=True, optimizers=None):
            retried.append(None if optimizers is None else sorted(optimizers))
            return real(graph, catch_errors, optimizers)

        monkeypatch.setattr(opt, "optimize_graph", watch)
        return original(*args, **kwargs)

    monkeypatch.setattr(keras_convert, "_tf2onnx_structure", spy)
    out = tmp_path / "se.onnx"
    model = _squeeze_excite_net(keras)
    result, _ = _convert(model, out)
    _assert_keras_output(model, out)
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err and "Failed to apply" not in captured.err
    assert len(retried) == 2 and retried[0] is None and "optimize_transpose" not in retried[1]
    assert all(d.relative <= TOLERANCE for d in result.parity)


@pytest.mark.keras
def test_residual_scale_is_not_folded_into_the_conv(keras, tmp_path):
    """Inception-ResNet: conv -> x0.17 (another layer) -> add. The conv's tensor stays Keras's conv output."""
    import onnxruntime as ort

    L = keras.layers
    inputs = keras.Input((12, 12, 3), name="pixels")
    branch = L.Conv2D(3, 1, name="block35_1_conv")(inputs)

    class CustomScaleLayer(L.Layer):  # as keras.applications' Inception-ResNet: x + branch * scale
        def call(self, pair):
            return pair[0] + pair[1] * 0.17

    x = CustomScaleLayer(name="block35_1")([inputs, branch])
    x = L.ReLU(name="block35_1_ac")(x)
    model = _randomise(keras.Model(inputs, x, name="irv2ish"), keras)
    out = tmp_path / "res.onnx"
    result, _ = _convert(model, out)
    label = next(d.name for d in result.parity if d.name.startswith("block35_1_conv"))
    assert "then Mul by 0.17" in label  # the map shown is after the scale, and the check says so
    assert all(d.relative <= TOLERANCE for d in result.parity)
    # the tensor named after the conv is the conv layer's own output, unscaled
    graph = onnx.load(str(out))
    conv = next(n for n in graph.graph.node if n.name == "block35_1_conv")
    assert "Mul" in _ops(out)
    graph.graph.output.append(onnx.helper.make_tensor_value_info(conv.output[0], onnx.TensorProto.FLOAT, None))
    x = np.random.default_rng(1).normal(size=(2, 12, 12, 3)).astype(np.float32)
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run([conv.output[0]], {"pixels": x.transpose(0, 3, 1, 2).copy()})[0]
    reference = np.asarray(keras.Model(inputs, branch)(x)).transpose(0, 3, 1, 2)
    assert np.abs(got - reference).max() <= TOLERANCE * np.abs(reference).max()


@pytest.mark.keras
def test_grouped_conv_layernorm_and_exact_gelu_convert(keras, tmp_path):
    """ConvNeXt's block: depthwise 7x7 as a grouped Conv2D, LayerNormalization, Dense, exact GELU, LayerScale."""
    L = keras.layers
    inputs = keras.Input((14, 14, 3), name="pixels")
    stem = L.Conv2D(8, 2, strides=2, name="stem")(inputs)
    x = L.Conv2D(8, 7, padding="same", groups=8, name="stage_0_block_0_depthwise_conv")(stem)
    x = L.LayerNormalization(epsilon=1e-6, name="stage_0_block_0_layernorm")(x)
    x = L.Dense(16, name="stage_0_block_0_pointwise_conv_1")(x)
    x = L.Activation("gelu", name="stage_0_block_0_gelu")(x)
    x = L.Dense(8, name="stage_0_block_0_pointwise_conv_2")(x)
    x = L.Add(name="add")([stem, x])
    model = _randomise(keras.Model(inputs, x, name="convnextish"), keras)
    result, _ = _convert(model, tmp_path / "cx.onnx")
    # the Dense layers on the map are 1x1 convs in the file: no channels-last island, no Transpose
    assert result.conv_layers == ["stem", "stage_0_block_0_depthwise_conv", "stage_0_block_0_pointwise_conv_1",
                                  "stage_0_block_0_pointwise_conv_2"]
    graph = onnx.load(str(tmp_path / "cx.onnx")).graph
    transposes = [n for n in graph.node if n.op_type == "Transpose"]  # only the NHWC output's layout
    assert len(transposes) == 1 and transposes[0].output[0] == graph.output[0].name
    assert "MatMul" not in _ops(tmp_path / "cx.onnx")
    assert all(d.relative <= TOLERANCE for d in result.parity) and len(result.parity) == 5
    _assert_keras_output(model, tmp_path / "cx.onnx")


# ------------------------------------------------------------------ the zoo, smallest of each family

@pytest.mark.keras
def test_keras_app_mobilenetv3small_small_input(keras, tmp_path, capfd):
    """The keras.applications model that had 109 Transposes and a traceback: at 64x64, random weights."""
    from converters import api

    model = keras.applications.MobileNetV3Small(weights=None, input_shape=(64, 64, 3))
    out = tmp_path / "m3.onnx"
    result = api.convert_keras_model(model, str(out), model_name="mobilenetv3small", check=True,
                                     weights_trained=False, weights_source="random")
    assert "Traceback" not in capfd.readouterr().err
    assert result.transposes <= 2
    assert len(result.parity) == len(result.conv_layers) + 1
    assert all(d.relative <= TOLERANCE for d in result.parity)
    _assert_keras_output(model, out)


@pytest.fixture(scope="module")
def torch():
    pytest.importorskip("torchvision")
    pytest.importorskip("timm")
    return pytest.importorskip("torch")


@pytest.mark.torch
@pytest.mark.parametrize("library, name", [("torchvision", "mobilenet_v3_small"), ("timm", "resnet18")])
def test_torch_zoo_by_name_with_check(torch, tmp_path, capsys, library, name):
    from converters import cli
    from inspector import metadata as md

    out = tmp_path / f"{name}.onnx"
    code = cli.main([library, name, "--weights", "none", "--input-shape", "1,3,64,64", "--check", "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "random weights" in captured.err and "Traceback" not in captured.err
    assert _ops(out).count("Transpose") <= 2
    compared = [line.split()[0] for line in captured.out.splitlines() if line.rstrip().endswith(" ok")]
    model = onnx.load(str(out))
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    assert set(convs) <= set(compared) and "output" in compared  # every conv compared
    state = {"torchvision": lambda: __import__("torchvision").models.get_model(name),
             "timm": lambda: __import__("timm").create_model(name)}[library]().state_dict()
    assert all(f"{c}.weight" in state for c in convs)  # names as the state dict's
    props = {p.key: p.value for p in model.metadata_props}
    assert props[md.WEIGHTS_TRAINED] == "false" and props[md.MODEL_NAME] == f"{library}/{name}"
    import json

    spec = json.loads(props[md.PREPROCESS])
    assert spec["input_size"] == [64, 64] and spec["mean"] == pytest.approx([0.485, 0.456, 0.406])


@pytest.mark.torch
def test_torchvision_preprocessing_and_classes_from_its_weight_enum(torch):
    from converters import torch_zoo
    from torchvision.models import get_model_weights

    found = torch_zoo.torchvision_model("efficientnet_b1", "none")
    transforms = get_model_weights("efficientnet_b1").DEFAULT.transforms()
    assert found.preprocess.input_size == (transforms.crop_size[0], transforms.crop_size[0]) == (240, 240)
    assert found.preprocess.mean == pytest.approx(tuple(transforms.mean))
    assert found.class_names is None and not found.trained  # random weights have no class names


@pytest.mark.torch
def test_timm_preprocessing_from_pretrained_cfg(torch):
    import timm

    from converters import torch_zoo

    spec, tag = torch_zoo.timm_preprocess("inception_v3")  # mean/std 0.5: not ImageNet's
    cfg = timm.models.get_pretrained_cfg(tag).to_dict()
    assert tag.startswith("inception_v3.") and spec.input_size == tuple(cfg["input_size"][1:]) == (299, 299)
    assert spec.mean == pytest.approx(cfg["mean"]) and spec.mean != pytest.approx((0.485, 0.456, 0.406))
    assert spec.mode == "timm"


CNBLOCK = """
import torch
from torch import nn


class Block(nn.Module):
    \"\"\"torchvision's ConvNeXt block: depthwise conv, then LayerNorm and two Linear layers channels-last.\"\"\"

    def __init__(self, dim=8):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.layer_scale = nn.Parameter(torch.rand(dim, 1, 1) + 0.5)

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y)))).permute(0, 3, 1, 2)
        return x + self.layer_scale * y


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 2, stride=2)
        self.block = Block()

    def forward(self, x):
        return self.block(self.stem(x)).mean((2, 3))


def make():
    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():
        net.block.norm.weight.uniform_(0.5, 1.5)
        net.block.norm.bias.uniform_(-0.5, 0.5)
    return net
"""


@pytest.mark.torch
def test_torch_channels_last_island_becomes_nchw(torch, tmp_path):
    """ConvNeXt's block: the Linear layers become 1x1 convs, LayerNorm runs over axis 1, no Transpose."""
    from converters import api

    (tmp_path / "cn.py").write_text(CNBLOCK)
    out = tmp_path / "cn.onnx"
    result = api.convert_torch(f"{tmp_path / 'cn.py'}:make", "1,3,16,16", str(out), check=True)
    assert result.conv_layers == ["stem", "block.dwconv", "block.pwconv1", "block.pwconv2"]
    ops = _ops(out)
    assert "Transpose" not in ops and "MatMul" not in ops and "LayerNormalization" not in ops
    labels = [d.name for d in result.parity]
    assert any(label.startswith("block.pwconv2 then Mul") for label in labels)  # layer_scale: not folded
    assert "block.pwconv1 (block.act)" in labels  # torch.onnx's written-out GELU is shown, against nn.GELU's output
    assert len(result.parity) == 5 and all(d.relative <= TOLERANCE for d in result.parity)
    _assert_torch_output(tmp_path / "cn.py", out, (1, 3, 16, 16))


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """Every connection refused at once, and empty caches: the hubs' own download code runs and fails."""
    def refuse(*args, **kwargs):
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return tmp_path


@pytest.mark.torch
@pytest.mark.parametrize("library, name, needles", [
    ("torchvision", "resnet18", ["resnet18-f37072fd.pth", os.path.join("checkpoints", "resnet18-f37072fd.pth")]),
    ("timm", "resnet18", ["timm/resnet18.a1_in1k", "model.safetensors"]),
])
def test_default_weights_offline_one_line_naming_the_file(torch, no_network, capsys, library, name, needles):
    from converters import cli

    out = no_network / "x.onnx"
    code = cli.main([library, name, "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert all(needle in err for needle in needles) and "--weights PATH" in err, err
    assert not out.exists()


@pytest.mark.torch
@pytest.mark.parametrize("argv, needle", [
    (["torchvision", "resnet19", "-o", "{tmp}/x.onnx"], "did you mean"),
    (["timm", "resnet_18x", "-o", "{tmp}/x.onnx"], "unknown timm model"),
    (["torchvision", "resnet18", "--weights", "{tmp}/nope.pth", "-o", "{tmp}/x.onnx"], "not found"),
])
def test_torch_zoo_bad_input_exit_2(torch, tmp_path, capsys, argv, needle):
    from converters import cli

    assert cli.main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1
    assert os.listdir(tmp_path) == []


@pytest.mark.torch
def test_torchvision_weights_path_are_the_files_tensors(torch, tmp_path):
    import inspector
    import torchvision

    from converters import api

    net = torchvision.models.get_model("resnet18", num_classes=1000)
    with torch.no_grad():
        net.conv1.weight.mul_(3.0)
    path = tmp_path / "r18.pth"
    torch.save(net.state_dict(), path)
    out = tmp_path / "r18.onnx"
    result = api.convert_torchvision("resnet18", str(out), weights=str(path), input_shape="1,3,32,32")
    assert result.metadata["inspector.weights_source"] == "r18.pth"
    assert result.conv_layers[0] == "conv1"
    bn = net.bn1  # folded into conv1: the kernel is scaled by gamma / sqrt(var + eps) per filter
    factor = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().numpy()[:, None, None, None]
    np.testing.assert_allclose(inspector.load(str(out)).filters("conv1"),
                               net.conv1.weight.detach().numpy() * factor, rtol=1e-5, atol=1e-7)


def test_transpose_pairs_collapse_and_compose():
    """The fallback pass after a failed tf2onnx optimizer: inverse pairs go, others become one Transpose."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from converters import onnx_passes

    nodes = [helper.make_node("Transpose", ["x"], ["a"], perm=[0, 2, 3, 1]),
             helper.make_node("Transpose", ["a"], ["b"], perm=[0, 3, 1, 2]),
             helper.make_node("Relu", ["b"], ["c"]),
             helper.make_node("Transpose", ["c"], ["d"], perm=[0, 2, 3, 1]),
             helper.make_node("Transpose", ["d"], ["y"], perm=[0, 2, 1, 3])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    x = np.random.default_rng(0).normal(size=(1, 2, 3, 4)).astype(np.float32)
    before = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert onnx_passes.remove_transpose_pairs(model.graph) == 2
    assert [n.op_type for n in model.graph.node] == ["Relu", "Transpose"]
    after = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(after, before)
    np.testing.assert_array_equal(after, np.maximum(x, 0).transpose(0, 2, 3, 1).transpose(0, 2, 1, 3))


@pytest.mark.keras
def test_tf2onnx_failure_is_one_line_naming_the_layer(keras, tmp_path, capsys, monkeypatch):
    import tf2onnx.convert

    from converters import cli

    def unsupported(graph_def, **kwargs):
        node = next(n.name for n in graph_def.node if "block1_conv2" in n.name)
        raise ValueError(f"tf2onnx: Unsupported ops: Counter({{'FancyOp': 1}}) in node {node}")

    monkeypatch.setattr(tf2onnx.convert, "_convert_common", unsupported)
    L = keras.layers
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, name="block1_conv1")(inputs)
    x = L.Conv2D(4, 3, name="block1_conv2")(x)
    path = tmp_path / "m.keras"
    keras.Model(inputs, x, name="m").save(path)
    assert cli.main(["keras", str(path), "--preprocess", "raw", "-o", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "in layer 'block1_conv2'" in err and "FancyOp" in err
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.torch
@pytest.mark.parametrize("name, shape, outputs", [("lraspp_mobilenet_v3_large", "1,3,64,64", 1),
                                                  ("ssdlite320_mobilenet_v3_large", "1,3,160,160", 6)])
def test_torchvision_segmentation_and_detection_features(torch, tmp_path, capsys, name, shape, outputs):
    """The CI's share of `make zoo` beyond classification: a segmentation model whole, a detection model's
    backbone+neck (its six feature maps), each with every conv compared."""
    from converters import cli

    out = tmp_path / f"{name}.onnx"
    code = cli.main(["torchvision", name, "--weights", "none", "--input-shape", shape, "--check", "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Traceback" not in captured.err
    model = onnx.load(str(out))
    assert len(model.graph.output) == outputs
    compared = [line.split()[0] for line in captured.out.splitlines() if line.rstrip().endswith(" ok")]
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    assert convs and set(convs) <= set(compared)
    assert ("backbone+neck" in captured.err) == (outputs > 1)
    import torchvision

    built = torchvision.models.get_model(name, weights=None, weights_backbone=None).eval()
    x = torch.randn(1, 3, *[int(v) for v in shape.split(",")[2:]])
    with torch.no_grad():
        want = built(x)["out"] if outputs == 1 else list(built.backbone(x).values())
    import onnxruntime as ort

    # another random init: shapes here; the values were compared by --check against the module converted
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert [g.shape for g in got] == [tuple(w.shape) for w in ([want] if outputs == 1 else want)]
