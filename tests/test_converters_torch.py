"""PyTorch -> ONNX converter: tiny modules written to a file, checked against torch itself."""

import builtins
import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

import converters  # noqa: E402
from converters import cli, torch_convert  # noqa: E402
import builders as b  # noqa: E402
from inspector import metadata as md  # noqa: E402

pytestmark = pytest.mark.torch
TOLERANCE = 1e-4

NETS = '''
import torch
from torch import nn


class Net(nn.Module):
    """torchvision-like: features.N convs (plain, conv+BN, grouped, depthwise, transposed), a classifier."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True),                                   # 0, 1
            nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True),   # 2, 3, 4
            nn.MaxPool2d(2),                                                                          # 5
            nn.Conv2d(16, 16, 3, padding=1, groups=4), nn.ReLU(),                                    # 6, 7
            nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.ReLU6(),                                  # 8, 9
            nn.ConvTranspose2d(16, 8, 2, stride=2), nn.ReLU(),                                       # 10, 11
            nn.Conv2d(8, 4, 1),                                                                       # 12
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(4, 10))

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)))


def make():
    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():  # BN statistics that do not fold away by accident
        bn = net.features[3]
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 1.5)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    return net


def not_a_module():
    return 42


NOT_CALLABLE = 3
'''

CONV_LAYERS = ["features.0", "features.2", "features.6", "features.8", "features.10", "features.12"]
# What the inspector shows for each conv layer: the module whose output that tensor is.
SHOWN = {"features.0": "features.1", "features.2": "features.4", "features.6": "features.7",
         "features.8": "features.9", "features.10": "features.11", "features.12": "features.12"}


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    folder = tmp_path_factory.mktemp("torchnets")
    path = folder / "nets.py"
    path.write_text(NETS)
    return str(path)


def _load_factory(nets):
    return torch_convert.resolve_factory(f"{nets}:make")


@pytest.fixture(scope="module")
def converted(nets, tmp_path_factory):
    """One conversion through the real CLI entry point, with --check."""
    import contextlib
    import io

    out = str(tmp_path_factory.mktemp("torchout") / "net.onnx")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = cli.main(["torch", f"{nets}:make", "--input-shape", "1,3,32,32", "-o", out, "--check"])
    return code, out, printed.getvalue()


def test_cli_converts_with_check_and_names_layers(converted):
    code, out, printed = converted
    assert code == 0, printed
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    convs = [n.name for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    assert convs == CONV_LAYERS
    ops = [n.op_type for n in model.graph.node]
    assert "BatchNormalization" not in ops and "Transpose" not in ops
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    import inspector

    layers = inspector.load(out).layers
    assert [layer.name for layer in layers] == CONV_LAYERS
    assert [layer.groups for layer in layers] == [1, 1, 4, 16, 1, 1]
    assert [layer.activation for layer in layers][:5] == ["Relu", "Relu", "Relu", "Clip", "Relu"]
    # --check printed one line per conv layer and one for the output, each with both figures
    for name in CONV_LAYERS + ["output"]:
        line = next(line for line in printed.splitlines() if line.strip().startswith(name + " ")
                    or line.strip().startswith(name + "\t") or line.split()[:1] == [name])
        assert line.rstrip().endswith("ok") and len(line.split()) >= 4, line


def test_metadata(converted):
    _, out, _ = converted
    props = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert props[md.SOURCE_FRAMEWORK] == "torch"
    assert props[md.SOURCE_VERSION] == f"torch {torch.__version__}"
    assert props[md.INPUT_LAYOUT] == "NCHW"
    assert props[md.MODEL_NAME] == "make"
    assert "torch.onnx" in props[md.CONVERTER] and md.CONVERTER_VERSION in props
    spec = json.loads(props[md.PREPROCESS])
    assert spec["mode"] == "torch" and spec["input_size"] == [32, 32] and spec["color_order"] == "RGB"
    assert props[md.WEIGHTS_SOURCE] == "factory"


def test_inspector_maps_npz_match_torch(converted, nets, tmp_path):
    """Through `inspector maps --npz`: every conv layer's map equals torch's own module output, torch fed
    by torchvision's own transforms (not the inspector's preprocessing under test)."""
    from PIL import Image
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as tvf

    _, out, _ = converted
    image = b.random_photo(tmp_path / "photo.png", 40, 36, seed=5)
    maps = b.maps_through_cli(out, image, tmp_path)
    assert sorted(maps) == sorted(CONV_LAYERS)

    net = _load_factory(nets)().eval()
    with Image.open(image) as photo:
        resized = tvf.resize(photo.convert("RGB"), [32, 32], interpolation=InterpolationMode.BILINEAR)
    x = tvf.normalize(tvf.to_tensor(resized), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])[None].numpy()
    outputs = {}
    modules = dict(net.named_modules())
    hooks = [modules[name].register_forward_hook(
        lambda _m, _i, result, _n=name: outputs.__setitem__(_n, result.detach().clone()))
        for name in set(SHOWN.values())]
    with torch.no_grad():
        net(torch.from_numpy(x))
    for hook in hooks:
        hook.remove()
    for layer, module_name in SHOWN.items():
        reference = outputs[module_name].numpy()[0]
        got = maps[layer]
        assert got.shape == reference.shape, layer
        assert np.abs(got - reference).max() <= TOLERANCE * np.abs(reference).max(), layer
    assert (maps["features.2"] >= 0).all()  # after the folded BatchNorm's ReLU, not before it


def test_api_with_state_dict_weights_only(nets, tmp_path):
    factory = _load_factory(nets)
    trained = factory()
    with torch.no_grad():
        for parameter in trained.parameters():
            parameter.add_(1.0)  # different from what the factory builds
    weights = tmp_path / "trained.pt"
    torch.save(trained.state_dict(), weights)
    out = tmp_path / "api.onnx"
    result = converters.convert_torch(factory, (1, 3, 32, 32), str(out), weights=str(weights), check=True)
    assert result.conv_layers == CONV_LAYERS
    assert all(d.relative <= TOLERANCE for d in result.parity) and len(result.parity) == len(CONV_LAYERS) + 1
    import inspector

    drawn = inspector.load(str(out)).filters("features.0")
    np.testing.assert_array_equal(drawn, trained.features[0].weight.detach().numpy())
    props = result.metadata
    assert props[md.WEIGHTS_TRAINED] == "true" and props[md.WEIGHTS_SOURCE] == "trained.pt"


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_runs(nets, tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"features.0.weight": _Evil(marker)}, evil)
    out = tmp_path / "x.onnx"
    code = cli.main(["torch", f"{nets}:make", "--input-shape", "1,3,32,32", "--weights", str(evil), "-o", str(out)])
    assert code == 2
    assert "weights_only" in capsys.readouterr().err
    assert not marker.exists() and not out.exists()
    # The file really is hostile: an unsafe load runs its payload.
    torch.load(evil, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("spec, shape, needle", [
    ("{nets}:nope", "1,3,32,32", "'nope' not found"),
    ("{nets}:not_a_module", "1,3,32,32", "not a torch.nn.Module"),
    ("{nets}:NOT_CALLABLE", "1,3,32,32", "not callable"),
    ("{tmp}/missing.py:make", "1,3,32,32", "factory file not found"),
    ("{nets}", "1,3,32,32", "names no factory"),
    ("{nets}:make", "1,3,32", "malformed --input-shape"),
    ("{nets}:make", "1,3,a,32", "malformed --input-shape"),
    ("{nets}:make", "1,3,-4,32", "malformed --input-shape"),
])
def test_bad_input_exit_2_and_nothing_written(nets, tmp_path, capsys, spec, shape, needle):
    argv = ["torch", spec.format(nets=nets, tmp=tmp_path), "--input-shape", shape, "-o", str(tmp_path / "x.onnx")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err
    assert os.listdir(tmp_path) == []


def test_check_fails_with_exit_1_on_a_tampered_weight(nets, tmp_path, monkeypatch, capsys):
    """A weight changed on its way to the file: --check must catch it, and nothing is written."""
    original = torch_convert.export

    def tampered(*args, **kwargs):
        model, layers, payloads = original(*args, **kwargs)
        kernel = payloads["features.6.weight"].copy()  # a copy: the payload is a view of the module's own weight
        kernel[0] *= np.float32(1.01)  # the first filter of features.6
        payloads["features.6.weight"] = kernel
        return model, layers, payloads

    monkeypatch.setattr(torch_convert, "export", tampered)
    out = tmp_path / "bad.onnx"
    code = cli.main(["torch", f"{nets}:make", "--input-shape", "1,3,32,32", "-o", str(out), "--check"])
    captured = capsys.readouterr()
    assert code == 1
    assert "parity check failed" in captured.err
    failing = [line for line in captured.out.splitlines() if "FAIL" in line]
    assert failing and failing[0].split()[0] == "features.6"
    assert not any(line.split()[0] in ("features.0", "features.2") for line in failing)
    assert os.listdir(tmp_path) == []


def test_torch_missing_names_the_extra(monkeypatch, tmp_path, capsys, nets):
    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"No module named '{name}'", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    argv = ["torch", f"{nets}:make", "--input-shape", "1,3,32,32", "-o", str(tmp_path / "x.onnx")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "pip install 'inspector-cnn[torch]'" in err
    assert os.listdir(tmp_path) == []
