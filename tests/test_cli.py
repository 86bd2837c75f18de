"""The CLI through its real entry point in a subprocess: exit codes, messages, PNGs, --npz."""

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from PIL import Image

import builders as b

INSPECTOR = [sys.executable, "-m", "inspector"]


def cli(*args, cwd=None):
    return subprocess.run([*INSPECTOR, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.fixture
def tiny(save):
    m, w = b.conv_relu_nchw(size=32)
    return save(m), w


@pytest.fixture
def photo(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    path = tmp_path / "photo.jpg"
    Image.fromarray(pixels).save(path)
    return str(path)


def test_help_and_version():
    result = cli("--help")
    assert result.returncode == 0 and "filters" in result.stdout and "maps" in result.stdout
    result = cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("inspector ")
    for command in ("layers", "filters", "maps"):
        assert cli(command, "--help").returncode == 0


def test_help_does_not_import_heavy_modules():
    code = ("import sys; from inspector.cli import build_parser; build_parser(); "
            "heavy = [m for m in ('onnx', 'onnxruntime', 'numpy', 'matplotlib', 'tensorflow', 'torch', 'PIL') "
            "if m in sys.modules]; print(heavy)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]"


def test_no_command_is_a_usage_error():
    assert cli().returncode == 2


def test_layers_json(tiny):
    result = cli("layers", tiny[0], "--json")
    assert result.returncode == 0, result.stderr
    layers = json.loads(result.stdout)
    assert [layer["name"] for layer in layers] == ["features.0", "features.2"]
    assert set(layers[0]) >= {"index", "name", "op", "weight_shape", "groups", "params", "output"}
    assert layers[1]["weight_shape"] == [16, 8, 3, 3] and layers[1]["output"] == "y"


def test_filters_writes_one_png_per_layer(tiny, tmp_path):
    out = tmp_path / "out"
    result = cli("filters", tiny[0], "--all", "-o", out, "--norm", "filter", "--cmap", "magma")
    assert result.returncode == 0, result.stderr
    pngs = sorted(os.listdir(out))
    assert pngs == ["filters_00_features.0.png", "filters_01_features.2.png"]
    with Image.open(out / pngs[1]) as image:
        assert image.format == "PNG" and image.width >= 4 * 48 and image.height >= 4 * 48
    result = cli("filters", tiny[0], "--layer", "1", "--channels", "4", "--max", "2", "-o", out)
    assert result.returncode == 0, result.stderr


def test_maps_npz_holds_channel_first_maps(tiny, photo, tmp_path):
    out, npz = tmp_path / "maps", tmp_path / "maps.npz"
    result = cli("maps", tiny[0], photo, "--all", "--preprocess", "raw", "--npz", npz, "-o", out, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    with np.load(npz) as data:
        assert sorted(data.files) == ["features.0", "features.2"]
        assert data["features.0"].shape == (8, 32, 32) and data["features.2"].shape == (16, 15, 15)
        x = np.asarray(Image.open(photo).convert("RGB").resize((32, 32), Image.Resampling.BILINEAR),
                       np.float32) / 255.0
        expected = b.relu(b.conv2d(x.transpose(2, 0, 1)[None], tiny[1]["w1"], tiny[1]["b1"], pad=1))[0]
        np.testing.assert_allclose(data["features.0"], expected, rtol=1e-4, atol=1e-4)
    assert sorted(os.listdir(out)) == ["maps_00_features.0.png", "maps_01_features.2.png"]
    with Image.open(out / "maps_00_features.0.png") as image:
        assert image.width >= 3 * 64 and image.height >= 3 * 64


def test_maps_uses_preprocessing_from_metadata(tmp_path, photo):
    from inspector.preprocess import preset

    m, _ = b.conv_relu_nchw(size=32)
    entry = m.metadata_props.add()
    entry.key, entry.value = "inspector.preprocess", preset("caffe").to_json()
    path = tmp_path / "meta.onnx"
    onnx.save(m, str(path))
    result = cli("maps", path, photo, "--npz", tmp_path / "a.npz", "--no-png")
    assert result.returncode == 0, result.stderr
    forced = cli("maps", path, photo, "--preprocess", "caffe", "--npz", tmp_path / "b.npz", "--no-png")
    assert forced.returncode == 0
    with np.load(tmp_path / "a.npz") as a, np.load(tmp_path / "b.npz") as c:
        np.testing.assert_array_equal(a["features.0"], c["features.0"])


def test_device_cuda_without_provider_fails_clearly(tiny, photo):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has a CUDA provider")
    result = cli("maps", tiny[0], photo, "--preprocess", "raw", "--device", "cuda", "--no-png", "--npz", "x.npz")
    assert result.returncode == 2
    assert "CUDAExecutionProvider" in result.stderr and "Traceback" not in result.stderr


def _not_4d(path):
    m = b.model([onnx.helper.make_node("Conv", ["x", "w"], ["y"])],
                [b.image_input(shape=(1, 3, 8))], [b.out("y")],
                [onnx.numpy_helper.from_array(np.ones((2, 3, 3), np.float32), "w")])
    onnx.save(m, str(path))


def _no_conv(path):
    onnx.save(b.model([onnx.helper.make_node("Relu", ["x"], ["y"])], [b.image_input()], [b.out("y")]), str(path))


@pytest.mark.parametrize("case, args, message", [
    ("missing model", ["layers", "{tmp}/nope.onnx"], "model not found"),
    ("not onnx", ["layers", "{tmp}/text.onnx"], "not a valid ONNX model"),
    ("truncated", ["layers", "{tmp}/truncated.onnx"], "ONNX model"),
    ("no conv", ["layers", "{tmp}/noconv.onnx"], "no conv layers"),
    ("unknown layer", ["filters", "{model}", "--layer", "block9"], "no conv layer matches"),
    ("ambiguous layer", ["filters", "{model}", "--layer", "features"], "ambiguous"),
    ("image missing", ["maps", "{model}", "{tmp}/none.jpg", "--preprocess", "raw"], "image not found"),
    ("not an image", ["maps", "{model}", "{tmp}/text.jpg", "--preprocess", "raw"], "not an image"),
    ("input not 4-D", ["maps", "{tmp}/3d.onnx", "{photo}", "--preprocess", "raw"], "4-D"),
    ("bad size", ["maps", "{model}", "{photo}", "--size", "big"], "HxW"),
    ("bad cmap", ["filters", "{model}", "--cmap", "viridiss"], "colour map"),
])
def test_bad_input_exits_2_with_a_message(case, args, message, tiny, photo, tmp_path):
    (tmp_path / "text.onnx").write_text("hello, I am not a model")
    (tmp_path / "text.jpg").write_text("hello, I am not a picture")
    data = open(tiny[0], "rb").read()
    (tmp_path / "truncated.onnx").write_bytes(data[: len(data) // 2])
    _no_conv(tmp_path / "noconv.onnx")
    _not_4d(tmp_path / "3d.onnx")
    out = tmp_path / "out"
    argv = [a.format(tmp=tmp_path, model=tiny[0], photo=photo) for a in args]
    result = cli(*argv, "-o", out) if argv[0] in ("filters", "maps") else cli(*argv)
    assert result.returncode == 2, (case, result.stdout, result.stderr)
    assert message in result.stderr, (case, result.stderr)
    assert "Traceback" not in result.stderr
    assert not out.exists() or not os.listdir(out)


def test_written_files_get_the_usual_permissions(tmp_path):
    """Atomic writes go through a private temp file; the result must not stay 0600."""
    from inspector import atomic

    previous = os.umask(0o022)
    try:
        atomic.write_text(tmp_path / "a.json", "{}")
        assert (os.stat(tmp_path / "a.json").st_mode & 0o777) == 0o644
        os.umask(0o077)
        atomic.write_text(tmp_path / "b.json", "{}")
        assert (os.stat(tmp_path / "b.json").st_mode & 0o777) == 0o600
    finally:
        os.umask(previous)


def test_json_summaries_of_filters_and_maps(tiny, photo, tmp_path):
    result = cli("filters", tiny[0], "--all", "-o", tmp_path / "f", "--json")
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)["layers"]
    assert [r["name"] for r in records] == ["features.0", "features.2"]
    assert records[1]["weight_shape"] == [16, 8, 3, 3]
    assert records[1]["min"] == pytest.approx(float(tiny[1]["w2"].min()))
    assert all(os.path.isfile(r["png"]) for r in records)

    result = cli("maps", tiny[0], photo, "--all", "--preprocess", "raw", "-o", tmp_path / "m", "--json",
                 "--device", "cpu")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["provider"] == "CPUExecutionProvider" and summary["preprocess"] == "raw"
    first = summary["layers"][0]
    assert first["shape"] == [8, 32, 32] and first["min"] >= 0.0  # post-ReLU
    assert 0.0 <= first["zero_fraction"] < 1.0 and os.path.isfile(first["png"])


def test_layers_table_shows_unfolded_steps(save):
    m, _ = b.unfolded_bn()
    result = cli("layers", save(m))
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[1:4]]
    assert [row[2] for row in rows] == ["Conv+BN/Relu", "Conv+Add+Mul", "Conv"]


def test_an_option_value_that_starts_with_a_minus_sign_is_taken_as_the_value():
    """``--target -1:max`` and ``-l -2:`` reach the command as their values, as ``--target=-1:max`` does;
    argparse alone would call them a missing argument, taking them for options."""
    from inspector.cli import _join_negative_values, build_parser

    parser, _ = build_parser("cam")
    argv = ["m.onnx", "i.png", "--target", "-1:max", "-l", "-2", "--method", "eigencam", "--", "-3:"]
    joined = _join_negative_values(parser, "cam", argv)
    assert joined == ["m.onnx", "i.png", "--target=-1:max", "-l-2", "--method", "eigencam", "--", "-3:"]
    args = parser.parse_args(["cam", *joined[:-2]])
    assert (args.target, args.layer, args.method) == ("-1:max", "-2", "eigencam")
    with pytest.raises(SystemExit):  # what argparse does without the join
        parser.parse_args(["cam", *argv[:-2]])
