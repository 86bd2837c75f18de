"""Third-party PyTorch code as it is written (issue 20): each forward idiom of the last ten years, in a tiny
module, converted through our passes with ``--check``; the file must pass ``onnx.checker`` (full check) and
load in onnxruntime, and its outputs must equal torch's on a batch of two (the batch stays open, so a
flatten that pinned it would show).

The first case is issue 19's face detector refinement net (``x.permute(0, 3, 2, 1).contiguous();
x.view(x.shape[0], -1)``, PReLU, ``MaxPool2d(ceil_mode=True)``): our weight pass once turned the scalar
Gather index of ``x.shape[0]`` into a one-element vector, and onnxruntime refused the shape's Concat.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from converters import api, onnx_passes  # noqa: E402


class RefineNet(nn.Module):
    """MTCNN's RNet, shrunk: conv/PReLU/ceil-mode pools, then permute-then-view into a Linear and PReLU."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 6, 3), nn.PReLU(6)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(6, 8, 3), nn.PReLU(8)
        self.dense, self.prelu3 = nn.Linear(8 * 3 * 3, 16), nn.PReLU(16)
        self.box, self.score = nn.Linear(16, 4), nn.Linear(16, 2)

    def forward(self, x):
        x = self.prelu2(self.conv2(self.pool1(self.prelu1(self.conv1(x)))))
        x = x.permute(0, 3, 2, 1).contiguous()
        x = x.view(x.shape[0], -1)
        x = self.prelu3(self.dense(x))
        return self.box(x), F.softmax(self.score(x), dim=1)


class _Trunk(nn.Module):
    def __init__(self, classes=3):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 6 * 6, classes)


class ViewSize(_Trunk):
    def forward(self, x):
        x = F.relu(self.conv(x))
        return self.fc(x.view(x.size(0), -1))


class ViewShape(_Trunk):
    def forward(self, x):
        x = F.relu(self.conv(x))
        return self.fc(x.view(x.shape[0], -1))


class TorchFlatten(_Trunk):
    def forward(self, x):
        return self.fc(torch.flatten(F.relu(self.conv(x)), 1))


class PermuteReshape(_Trunk):
    def forward(self, x):
        x = F.relu(self.conv(x)).permute(0, 2, 3, 1)
        return self.fc(x.reshape(x.size(0), -1))


class PReLUShared(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3)
        self.act = nn.PReLU()  # one slope for every channel

    def forward(self, x):
        return self.act(self.conv2(self.act(self.conv1(x))))


class CeilPool(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 2)
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True)

    def forward(self, x):  # 7x7 -> 5x5 -> 3x3 (ceil) -> 2x2
        return self.conv2(self.pool(F.relu(self.conv1(x))))


class Interpolate(nn.Module):
    def __init__(self):
        super().__init__()
        self.down, self.up = nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.Conv2d(4, 2, 1)

    def forward(self, x):
        x = F.relu(self.down(x))
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = self.up(x)
        return F.interpolate(x, scale_factor=(0.5, 0.5), mode="bilinear", align_corners=False)


class DictOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        features = torch.relu(self.conv(x))
        return {"heat": torch.sigmoid(self.head(features)), "pooled": features.mean(dim=(2, 3))}


class ListOut(DictOut):
    def forward(self, x):
        features = torch.relu(self.conv(x))
        return [self.head(features), (features.amax(dim=(2, 3)), features.amin(dim=(2, 3)))]


class SoftmaxInForward(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3)
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x):
        return self.softmax(self.conv(x)), torch.softmax(self.conv(x).mean(dim=(2, 3)), dim=-1)


class InPlace(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        x = self.relu(self.conv1(x))
        y = self.conv2(x)
        y += x
        y.mul_(0.5)
        F.relu_(y)
        return y.clamp_(max=6.0)


# (module class, input shape (N, C, H, W))
IDIOMS = [
    (RefineNet, (1, 3, 12, 12)),  # permute-then-view(x.shape[0], -1), PReLU, ceil_mode, tuple out
    (ViewSize, (1, 3, 6, 6)),
    (ViewShape, (1, 3, 6, 6)),
    (TorchFlatten, (1, 3, 6, 6)),
    (PermuteReshape, (1, 3, 6, 6)),
    (PReLUShared, (1, 3, 8, 8)),
    (CeilPool, (1, 3, 7, 7)),
    (Interpolate, (1, 3, 8, 8)),
    (DictOut, (1, 3, 6, 6)),
    (ListOut, (1, 3, 6, 6)),
    (SoftmaxInForward, (1, 3, 6, 6)),
    (InPlace, (1, 3, 6, 6)),
]


@pytest.mark.parametrize("factory, shape", IDIOMS, ids=[f.__name__ for f, _ in IDIOMS])
def test_idiom_converts_valid_and_matches_torch(factory, shape, tmp_path):
    torch.manual_seed(0)
    module = factory().eval()
    with torch.no_grad():  # slopes away from PReLU's 0.25 default, so a wrong axis would show
        for p in module.parameters():
            if p.ndim <= 1:
                p.uniform_(-0.5, 0.5)
    out = str(tmp_path / "m.onnx")
    result = api.convert_torch_module(module, shape, out, model_name=factory.__name__, check=True)
    assert result.parity and all(d.ok() for d in result.parity)

    onnx.checker.check_model(onnx.load(out), full_check=True)  # types and shapes inferred through
    session = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    batch = np.random.default_rng(1).normal(size=(2, *shape[1:])).astype(np.float32)
    got = session.run(None, {session.get_inputs()[0].name: batch})
    with torch.no_grad():
        expected = [t.numpy() for t in _flat(module(torch.from_numpy(batch)))]
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)


def _flat(result):
    if isinstance(result, dict):
        return [t for v in result.values() for t in _flat(v)]
    if isinstance(result, (list, tuple)):
        return [t for v in result for t in _flat(v)]
    return [result]


def test_weight_pass_keeps_scalar_constants_scalar():
    """The cause of the RefineNet failure, directly: attach_weights wrote a 0-d constant as shape (1,)."""
    helper = onnx.helper
    graph = helper.make_graph(
        [helper.make_node("Shape", ["x"], ["shape"]),
         helper.make_node("Constant", [], ["index"], value=onnx.numpy_helper.from_array(np.array(0, np.int64))),
         helper.make_node("Gather", ["shape", "index"], ["batch"], axis=0)],
        "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("batch", onnx.TensorProto.INT64, [])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx_passes.attach_weights(model, {}, 17)
    index = next(i for i in model.graph.initializer if i.name == "index")
    assert list(index.dims) == []
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert session.run(None, {"x": np.zeros((5, 3), np.float32)})[0].shape == ()


class InPlaceFunctionalReluThenPool(nn.Module):
    """GoogLeNet's BasicConv2d: conv, BatchNorm, ``F.relu(x, inplace=True)`` in forward, then a pool module that
    reads the very tensor object the BatchNorm returned (stride 1 keeps its shape; stride 2 does not)."""

    def __init__(self, stride):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(3, stride, padding=1)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.head(self.pool(F.relu(self.bn(self.conv(x)), inplace=True)))


@pytest.mark.parametrize("stride", [1, 2])
def test_functional_inplace_activation_is_compared_not_the_pool(stride, tmp_path):
    torch.manual_seed(0)
    module = InPlaceFunctionalReluThenPool(stride).eval()
    with torch.no_grad():
        module.bn.running_mean.uniform_(-0.5, 0.5)
    result = api.convert_torch_module(module, (1, 3, 8, 8), str(tmp_path / "m.onnx"), model_name="m", check=True)
    by_name = {d.name.split(" ")[0]: d for d in result.parity}
    assert "conv" in by_name and "Relu in forward" in by_name["conv"].name  # compared, after the relu
    assert all(d.ok() for d in result.parity), result.parity


class ClampMaxOfParameter(nn.Module):
    """Swin V2's ``torch.clamp(self.logit_scale, max=log(100)).exp()``: Clip(x, "", max) on a weight, folded."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.scale = nn.Parameter(torch.tensor([[[0.5]], [[1.0]], [[2.0]], [[3.0]]]))

    def forward(self, x):
        return self.conv(x) * torch.clamp(self.scale, max=1.5).exp() + torch.clamp(self.scale, min=1.2)


def test_folded_clip_with_an_omitted_min_keeps_its_max(tmp_path):
    torch.manual_seed(0)
    module = ClampMaxOfParameter().eval()
    out = str(tmp_path / "m.onnx")
    result = api.convert_torch_module(module, (1, 3, 6, 6), out, model_name="m", check=True)
    assert result.parity and all(d.ok() for d in result.parity), result.parity
    model = onnx.load(out)
    assert not [n for n in model.graph.node if n.op_type == "Clip"]  # folded: the weights are constants
    session = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    batch = np.random.default_rng(1).normal(size=(2, 3, 6, 6)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(session.run(None, {session.get_inputs()[0].name: batch})[0], expected,
                               rtol=1e-5, atol=1e-5)


class ConvFeedsNormAndShortcut(nn.Module):
    """MaxViT's stem into MBConv: the conv's output goes to a BatchNorm (eps 1e-3) and to a shortcut, so the
    BatchNorm cannot be folded into the conv: the conv's map is the conv's own output."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pre_norm = nn.BatchNorm2d(4, eps=1e-3)
        self.inner = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        x = self.conv(x)
        return x + self.inner(self.pre_norm(x))


def test_a_batchnorm_the_file_keeps_is_not_the_conv_reference(tmp_path):
    torch.manual_seed(0)
    module = ConvFeedsNormAndShortcut().eval()
    with torch.no_grad():
        module.pre_norm.running_var.uniform_(2.0, 3.0)  # far from identity: a wrong reference shows
    out = str(tmp_path / "m.onnx")
    result = api.convert_torch_module(module, (1, 3, 6, 6), out, model_name="m", check=True)
    assert [n.op_type for n in onnx.load(out).graph.node].count("BatchNormalization") == 1
    labels = [d.name for d in result.parity]
    assert "conv" in labels and all(d.ok() for d in result.parity), result.parity


class AttentionBlock(nn.Module):
    """torchvision's ViT encoder block: nn.MultiheadAttention, whose eval-mode fast path
    (aten::_native_multi_head_attention) torch.onnx cannot export, after a patchify conv."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, 8, 2, stride=2)
        self.norm = nn.LayerNorm(8)
        self.attention = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        y = self.norm(x)
        x = x + self.attention(y, y, y, need_weights=False)[0]
        return self.head(x.mean(1))


def test_multihead_attention_exports_off_its_fast_path(tmp_path):
    torch.manual_seed(0)
    module = AttentionBlock().eval()
    out = str(tmp_path / "m.onnx")
    result = api.convert_torch_module(module, (1, 3, 8, 8), out, model_name="m", check=True)
    assert result.parity and all(d.ok() for d in result.parity), result.parity
    assert torch.backends.mha.get_fastpath_enabled()  # the switch is put back
    session = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    batch = np.random.default_rng(1).normal(size=(2, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(session.run(None, {session.get_inputs()[0].name: batch})[0], expected,
                               rtol=1e-4, atol=1e-5)


class BatchNormAct(nn.BatchNorm2d):
    """timm's BatchNormAct2d: a BatchNorm that holds its activation as a child module."""

    def __init__(self, channels):
        super().__init__(channels)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(super().forward(x))


class ConvNormActBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1, bias=False), BatchNormAct(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 1, bias=False), BatchNormAct(4)

    def forward(self, x):
        x = self.bn(self.conv(x))
        return x + self.bn2(self.conv2(x))


def test_a_norm_holding_its_activation_is_the_conv_reference(tmp_path):
    torch.manual_seed(0)
    module = ConvNormActBlock().eval()
    with torch.no_grad():
        for bn in (module.bn, module.bn2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.weight.uniform_(0.5, 1.5)
    result = api.convert_torch_module(module, (1, 3, 6, 6), str(tmp_path / "m.onnx"), model_name="m", check=True)
    labels = " ".join(d.name for d in result.parity)
    assert "conv" in labels and "conv2" in labels
    assert all(d.ok() for d in result.parity), result.parity
