"""State dicts as third-party code saves them, and TorchScript archives: each converts with its own weights."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

import converters  # noqa: E402
from converters import cli  # noqa: E402
from inspector import load  # noqa: E402

pytestmark = pytest.mark.torch
TOLERANCE = 1e-4


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(6)
        self.fc = torch.nn.Linear(6, 4)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(x.mean((2, 3)))


def make():
    torch.manual_seed(0)
    return Net()


def _trained():
    net = make()
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.add_(0.5)  # not what the factory builds
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 1.5)
    return net.eval()


def _save_plain(state, path):
    torch.save(state, path)


def _save_data_parallel(state, path):
    torch.save({f"module.{k}": v for k, v in state.items()}, path)


def _save_fp16(state, path):
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, path)


def _save_checkpoint_state_dict(state, path):
    torch.save({"epoch": 12, "state_dict": state, "optimizer": {"lr": 0.1}}, path)


def _save_checkpoint_model(state, path):
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "best_acc": 0.9}, path)


def _save_legacy_pickle(state, path):
    torch.save(state, path, _use_new_zipfile_serialization=False)


SAVERS = [_save_plain, _save_data_parallel, _save_fp16, _save_checkpoint_state_dict, _save_checkpoint_model,
          _save_legacy_pickle]


@pytest.mark.parametrize("save", SAVERS, ids=[s.__name__[len("_save_"):] for s in SAVERS])
def test_state_dict_as_it_comes_converts_with_its_weights(save, tmp_path):
    trained = _trained()
    weights = tmp_path / "weights.pth"
    save(trained.state_dict(), weights)
    if save is _save_fp16:  # what the file holds is what the converted model must hold
        with torch.no_grad():
            for parameter in trained.parameters():
                parameter.copy_(parameter.half().float())
            for buffer in trained.buffers():
                if buffer.is_floating_point():
                    buffer.copy_(buffer.half().float())
    out = tmp_path / "net.onnx"
    result = converters.convert_torch(make, (1, 3, 16, 16), str(out), weights=str(weights), check=True)
    assert result.parity and all(d.relative <= TOLERANCE for d in result.parity)
    # the parity above compares against the module the file filled; compare to the trained one too
    import onnxruntime as ort

    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        want = trained(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert load(str(out)).filters("conv").shape == (6, 3, 3, 3)


def test_missing_and_unexpected_keys_are_named(tmp_path, capsys):
    state = _trained().state_dict()
    state.pop("fc.bias")
    state["head.weight"] = torch.zeros(2)
    weights = tmp_path / "w.pt"
    torch.save(state, weights)
    factory = tmp_path / "net.py"
    factory.write_text("import torch\n\n\nclass Net(torch.nn.Module):\n    def __init__(self):\n"
                       "        super().__init__()\n        self.conv = torch.nn.Conv2d(3, 6, 3, padding=1)\n"
                       "        self.bn = torch.nn.BatchNorm2d(6)\n        self.fc = torch.nn.Linear(6, 4)\n\n"
                       "    def forward(self, x):\n        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))\n")
    out = tmp_path / "x.onnx"
    code = cli.main(["torch", f"{factory}:Net", "--input-shape", "1,3,16,16", "--weights", str(weights),
                     "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert "missing 1 key(s): fc.bias" in err and "unexpected 1 key(s): head.weight" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_checkpoint_without_a_state_dict_says_its_keys(tmp_path, capsys):
    weights = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, "args": {"lr": 0.1}}, weights)
    with pytest.raises(Exception) as raised:
        converters.convert_torch(make, (1, 3, 16, 16), str(tmp_path / "x.onnx"), weights=str(weights))
    assert "keys: args, epoch" in str(raised.value)


@pytest.mark.parametrize("how", ["trace", "script"])
def test_torchscript_archive_converts_without_its_class(how, tmp_path, capsys):
    trained = _trained()
    x = torch.randn(1, 3, 16, 16)
    archive = torch.jit.trace(trained, x) if how == "trace" else torch.jit.script(trained)
    path = tmp_path / "model.pt"
    torch.jit.save(archive, str(path))
    out = tmp_path / "ts.onnx"
    code = cli.main(["torch", str(path), "--input-shape", "1,3,16,16", "--check", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    import onnxruntime as ort

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        want = trained(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    model = load(str(out))
    assert [layer.name for layer in model.layers] == ["conv"]
    # the file's conv holds the archive's conv with its BatchNorm folded in
    scale = (trained.bn.weight / torch.sqrt(trained.bn.running_var + trained.bn.eps)).detach()
    np.testing.assert_allclose(model.filters("conv"), (trained.conv.weight * scale[:, None, None, None]).detach().numpy(),
                               rtol=1e-5, atol=1e-6)


def test_a_state_dict_given_as_an_archive_says_what_to_do(tmp_path, capsys):
    path = tmp_path / "weights.pt"
    torch.save(_trained().state_dict(), path)
    code = cli.main(["torch", str(path), "--input-shape", "1,3,16,16", "-o", str(tmp_path / "x.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and "FILE.py:FACTORY" in err and "--weights" in err and "Traceback" not in err
