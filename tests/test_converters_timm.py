"""Constructs of timm's architecture modules (issue 20: the smallest model of every module with ``--check``),
each in a tiny in-memory module converted through our passes: the file must pass ``onnx.checker`` and load
in onnxruntime, its outputs equal torch's on a batch of two, and ``--check`` must pass (each conv layer as
the inspector shows it against torch's own tensor)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from torch import nn  # noqa: E402

from converters import api  # noqa: E402


def _convert_and_compare(module, shape, tmp_path):
    """Convert with --check; then the checker, onnxruntime and torch on a batch of two. Returns the result."""
    out = str(tmp_path / "m.onnx")
    result = api.convert_torch_module(module, shape, out, model_name="m", check=True)
    assert result.parity and all(d.ok() for d in result.parity), result.parity
    onnx.checker.check_model(onnx.load(out), full_check=True)
    session = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    batch = np.random.default_rng(1).normal(size=(2, *shape[1:])).astype(np.float32)
    got = session.run(None, {session.get_inputs()[0].name: batch})
    with torch.no_grad():
        expected = module(torch.from_numpy(batch))
    np.testing.assert_allclose(got[0], expected.numpy(), rtol=1e-4, atol=1e-5)
    return result


def _randomise_norms(module):
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)


class ConvNormLayerScale(nn.Module):
    """EfficientFormerV2's MLP end: a conv, its BatchNorm (folded into the conv), then LayerScale2d (a per-channel
    parameter reshaped in forward), added to the shortcut. The inspector shows the scaled tensor; the reference
    is the BatchNorm's output times the same scale."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.conv, self.bn = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)
        self.gamma = nn.Parameter(torch.full((4,), 1e-2) + torch.arange(4.0) * 1e-3)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        return x + self.bn(self.conv(x)) * self.gamma.view(1, -1, 1, 1)


def test_layer_scale_after_a_folded_batchnorm_is_in_the_reference(tmp_path):
    torch.manual_seed(0)
    module = ConvNormLayerScale().eval()
    _randomise_norms(module)
    result = _convert_and_compare(module, (1, 3, 6, 6), tmp_path)
    labels = [d.name for d in result.parity]
    assert any(label.startswith("conv (bn) then Mul") for label in labels), labels


class BatchNormGelu(nn.BatchNorm2d):
    """timm's BatchNormAct2d with GELU: the norm applies its activation (a child module) in its own forward."""

    def __init__(self, channels):
        super().__init__(channels)
        self.act = nn.GELU()

    def forward(self, x):
        return self.act(super().forward(x))


class ConvNormGelu(nn.Module):
    """timm's ConvNormAct (EfficientFormerV2's MLP, stems): conv, then a BatchNormAct2d holding GELU."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 3, padding=1), BatchNormGelu(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 3, padding=1, groups=4), BatchNormGelu(4)

    def forward(self, x):
        x = self.bn1(self.conv1(x))
        return x + self.bn2(self.conv2(x))


def test_a_norm_applying_gelu_itself_is_compared(tmp_path):
    """Before: GELU is no functional activation the check can apply, so both convs were left uncompared."""
    torch.manual_seed(0)
    module = ConvNormGelu().eval()
    _randomise_norms(module)
    result = _convert_and_compare(module, (1, 3, 6, 6), tmp_path)
    labels = [d.name for d in result.parity]
    assert "conv1 (bn1)" in labels and "conv2 (bn2)" in labels, labels


class SharedConv(nn.Module):
    """CoaT's ConvPosEnc: one conv module called in several blocks (here twice, on different tensors)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.proj = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.mix = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = self.proj(x) + x
        x = self.mix(x) * 3.0
        return self.proj(x) + x


def test_a_conv_module_called_twice_is_compared_with_the_call_the_file_names(tmp_path):
    """The file names the last call's node after the module; before, its reference was the first call."""
    torch.manual_seed(0)
    module = SharedConv().eval()
    result = _convert_and_compare(module, (1, 3, 6, 6), tmp_path)
    assert "proj" in [d.name for d in result.parity]


class PadThenUnfold(nn.Module):
    """timm's HaloAttn: overlapping windows by ``F.pad`` then ``Tensor.unfold`` twice (the padded length is
    unknown to torch.onnx at that point: "ONNX export of operator Unfold, input size not accessible")."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.out = nn.Conv2d(4 * 16, 4, 1)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        windows = nn.functional.pad(x, [1, 1, 1, 1]).unfold(2, 4, 2).unfold(3, 4, 2)  # B, C, 3, 3, 4, 4
        b, c, h, w = windows.shape[:4]
        windows = windows.permute(0, 1, 4, 5, 2, 3).reshape(b, c * 16, h, w)
        return self.out(windows)


def test_unfold_after_pad_exports(tmp_path):
    torch.manual_seed(0)
    _convert_and_compare(PadThenUnfold().eval(), (1, 3, 6, 6), tmp_path)


class ReshapeThenAdaptivePool(nn.Module):
    """timm's CSATv2: a space-to-depth reshape to sizes computed from ``x.shape`` (the batch open), then
    ``AdaptiveAvgPool2d`` to a size above 1 ("adaptive_avg_pool2d, input size not accessible")."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(12, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d((3, 3))
        self.head = nn.Conv2d(4, 2, 3)

    def forward(self, x):
        b, c, h, w = x.shape
        x = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, c * 4, h // 2, w // 2)
        return self.head(self.pool(torch.relu(self.conv(x))))


def test_adaptive_pool_after_a_reshape_of_computed_sizes_exports(tmp_path):
    torch.manual_seed(0)
    _convert_and_compare(ReshapeThenAdaptivePool().eval(), (1, 3, 12, 12), tmp_path)


class UnfoldFold(nn.Module):
    """VOLO's outlooker: ``nn.Unfold``, a per-window op, then ``F.fold`` back to the size taken from ``x.shape``
    (``aten::col2im``: no ONNX translation before opset 18, and a computed output size)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.unfold = nn.Unfold(3, padding=1)
        self.out = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        _, _, h, w = x.shape
        x = nn.functional.fold(self.unfold(x) * 0.5, output_size=(h, w), kernel_size=3, padding=1)
        return self.out(x)


def test_fold_is_written_at_the_opset_that_has_it(tmp_path, capsys):
    torch.manual_seed(0)
    _convert_and_compare(UnfoldFold().eval(), (1, 3, 6, 6), tmp_path)
    opsets = {o.domain: o.version for o in onnx.load(str(tmp_path / "m.onnx")).opset_import}
    assert opsets[""] == 18
    assert "aten::col2im has no ONNX translation before opset 18" in capsys.readouterr().err


def test_values_read_only_inside_an_if_branch_survive_the_passes():
    """timm's Hiera (sam2_hiera_tiny): torch.onnx writes an If whose branches read a shape computed outside it;
    our passes saw no reader of that value, pruned its producer, and the file failed onnx.checker."""
    from converters import onnx_passes

    helper, TensorProto = onnx.helper, onnx.TensorProto
    then_branch = helper.make_graph(
        [helper.make_node("Reshape", ["x", "outer_shape"], ["then_out"])], "then", [],
        [helper.make_tensor_value_info("then_out", TensorProto.FLOAT, ["n", 4, 1])])
    else_branch = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["negated"]), helper.make_node("Reshape", ["negated", "outer_shape"], ["else_out"])],
        "else", [], [helper.make_tensor_value_info("else_out", TensorProto.FLOAT, ["n", 4, 1])])
    graph = helper.make_graph(
        [helper.make_node("Shape", ["x"], ["shape"]),
         helper.make_node("Concat", ["shape", "extra"], ["outer_shape"], axis=0),  # read only by the branch
         helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
         helper.make_node("Greater", ["total", "zero"], ["cond"]),
         helper.make_node("If", ["cond"], ["y"], then_branch=then_branch, else_branch=else_branch)],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4]),
              helper.make_tensor_value_info("extra", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 1])],
        initializer=[onnx.numpy_helper.from_array(np.array(0, dtype=np.float32), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx_passes.attach_weights(model, {"extra": lambda: np.array([1], dtype=np.int64)}, 17)
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.abs(np.random.default_rng(0).normal(size=(3, 4))).astype(np.float32)
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], x.reshape(3, 4, 1))


class UnevenAdaptivePool(nn.Module):
    """CSATv2's spatial attention: ``AdaptiveAvgPool2d((7, 7))`` of a map whose size 7 does not divide (windows
    of unequal sizes: "adaptive_avg_pool2d, output size that are not factor of input size")."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d((3, 4))
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.head(self.pool(torch.relu(self.conv(x))))


@pytest.mark.parametrize("factory, shape", [(UnevenAdaptivePool, (1, 3, 8, 10)),
                                            (ReshapeThenAdaptivePool, (1, 3, 10, 14))])
def test_adaptive_pool_to_a_size_that_does_not_divide_exports(factory, shape, tmp_path):
    torch.manual_seed(0)
    _convert_and_compare(factory().eval(), shape, tmp_path)


class InPlaceOnShape(nn.Module):
    """timm's Hiera: an in-place op on a value from ``x.shape``, which torch.onnx's C++ pass reports on the
    process's stderr ("In-place op on output of tensor.shape")."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        x = self.conv(x)
        b, c, h, w = x.shape
        b *= 4  # Hiera's unroll: B *= math.prod(strides)
        return x.reshape(b, c, h // 2, w // 2)


def test_native_notices_of_the_exporter_come_out_as_our_warnings(tmp_path, capfd):
    torch.manual_seed(0)
    _convert_and_compare(InPlaceOnShape().eval(), (1, 3, 8, 8), tmp_path)
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert err and all(line.startswith("inspector convert: warning: ") for line in err), err


class ResizedPositionTable(nn.Module):
    """timm's NaFlexViT: a learned position table (16 x 16) resized to the grid of the input (14 x 14) with
    ``F.interpolate(mode="bicubic", antialias=True)`` (``aten::_upsample_bicubic2d_aa``), added to the patches."""

    def __init__(self, size=(14, 14)):
        super().__init__()
        self.size = size
        self.conv = nn.Conv2d(3, 8, 1)
        self.table = nn.Parameter(torch.randn(1, 8, 16, 16))

    def forward(self, x):
        size = self.size if self.size else (x.shape[2], x.shape[3])  # NaFlexViT: the grid from x.shape
        table = nn.functional.interpolate(self.table, size=size, mode="bicubic", antialias=True)
        return torch.relu(self.conv(x)) + table


@pytest.mark.parametrize("size, from_shape", [((14, 14), False), ((9, 12), False), ((20, 20), False),
                                              ((14, 14), True)])
def test_antialiased_bicubic_resize_exports_at_opset_18(size, from_shape, tmp_path, capfd):
    torch.manual_seed(0)
    module = ResizedPositionTable(None if from_shape else size).eval()
    _convert_and_compare(module, (1, 3, *size), tmp_path)
    assert onnx.load(str(tmp_path / "m.onnx")).opset_import[0].version >= 18
    assert "opset 18" in capfd.readouterr().err


class RmsNormOnTokens(nn.Module):
    """Gemma 4's ViT (timm's RmsNorm): ``F.rms_norm`` over the channels of the tokens, with and without a
    weight and with torch's default eps (None), then back to a map for a conv."""

    def __init__(self, weight=True, eps=1e-6):
        super().__init__()
        self.conv, self.out = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 1)
        self.norm = nn.RMSNorm(8, eps=eps, elementwise_affine=weight)
        if weight:
            with torch.no_grad():
                self.norm.weight.uniform_(0.5, 1.5)

    def forward(self, x):
        x = self.conv(x) * 3.0
        tokens = self.norm(x.permute(0, 2, 3, 1))
        return self.out(tokens.permute(0, 3, 1, 2))


@pytest.mark.parametrize("weight, eps", [(True, 1e-6), (False, None)])
def test_rms_norm_exports_as_its_definition(weight, eps, tmp_path):
    torch.manual_seed(0)
    _convert_and_compare(RmsNormOnTokens(weight, eps).eval(), (1, 3, 6, 6), tmp_path)
