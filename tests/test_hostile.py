"""Hostile and broken inputs: every one ends in exit 2 with a message that says what is wrong.

Models, external data, images, output folders, interrupts and memory limits,
through the real CLI entry point (in-process where a signal is not needed).
"""

import contextlib
import io
import os
import signal
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

import builders as b
from inspector.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args):
    """(exit code, stdout, stderr) of the real entry point, in-process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def assert_input_error(code, err, *words):
    assert code == 2, err
    assert err.startswith("inspector: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and "unexpected" not in err, err
    for word in words:
        assert word.lower() in err.lower(), err


@pytest.fixture
def tiny(save):
    m, weights = b.conv_relu_nchw(size=16)
    return save(m), weights


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)
    return str(path)


def commands(model, image, out, every=False):
    """The commands that read MODEL (with ``every``, audit and report too)."""
    runs = [("layers", model), ("filters", model, "-o", out),
            ("maps", model, image, "--preprocess", "raw", "--device", "cpu", "-o", out)]
    if every:
        runs += [("audit", model, image, "--preprocess", "raw", "--device", "cpu", "--quiet",
                  "--json", os.path.join(out, "audit.json")),
                 ("report", model, image, "--preprocess", "raw", "--device", "cpu",
                  "-o", os.path.join(out, "report.html"))]
    return runs


# ------------------------------------------------------------------ model files

def _one_conv(opset=b.OPSET, input_shape=(1, 3, 16, 16), nodes=None, outputs=("c",)):
    w = numpy_helper.from_array(np.ones((2, 3, 3, 3), np.float32), "w")
    nodes = nodes or [helper.make_node("Conv", ["x", "w"], ["c"], name="conv")]
    return b.model(nodes, [b.image_input(shape=input_shape)], [b.out(o) for o in outputs], [w], opset=opset)


def _broken_models(good: bytes):
    cycle = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Add", ["c", "r"], ["e"], name="add"),
             helper.make_node("Relu", ["e"], ["r"], name="relu")]
    dangling = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
                helper.make_node("Add", ["c", "nowhere"], ["e"], name="add")]
    tensor = numpy_helper.from_array(np.zeros(4, np.float32), "t").SerializeToString()
    return {
        "random": (np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(), ["not a valid onnx"]),
        "empty": (b"", ["empty"]),
        "truncated_half": (good[: len(good) // 2], ["not a valid onnx"]),
        "truncated_tail": (good[:-3], ["not a valid onnx"]),
        "tensor_not_model": (tensor, ["not", "onnx"]),
        "text": (b"this is not a model\n" * 20, ["not a valid onnx"]),
        "cycle": (_one_conv(nodes=cycle, outputs=("e",)).SerializeToString(), ["cycle", "add"]),
        "dangling": (_one_conv(nodes=dangling, outputs=("e",)).SerializeToString(), ["dangling", "nowhere"]),
        "no_producer": (_one_conv(outputs=("c", "ghost")).SerializeToString(), ["ghost", "produced by no node"]),
    }


@pytest.mark.parametrize("kind", ["random", "empty", "truncated_half", "truncated_tail", "tensor_not_model",
                                  "text", "cycle", "dangling", "no_producer"])
def test_broken_model_files_exit_2_saying_what_is_wrong(tmp_path, tiny, image, kind):
    with open(tiny[0], "rb") as handle:
        data, words = _broken_models(handle.read())[kind]
    path = tmp_path / f"{kind}.onnx"
    path.write_bytes(data)
    for args in commands(path, image, tmp_path / "out", every=True):
        code, _, err = cli(*args)
        assert_input_error(code, err, *words)
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")


def test_missing_model_and_directory(tmp_path):
    assert_input_error(*cli("layers", tmp_path / "nope.onnx")[::2], "not found")
    assert_input_error(*cli("layers", tmp_path)[::2], "directory")


def test_unreleased_opset_refused_before_onnxruntime(save, image, tmp_path):
    path = save(_one_conv(opset=onnx.defs.onnx_opset_version() + 50))
    code, _, err = cli("maps", path, image, "--preprocess", "raw", "-o", tmp_path / "o")
    assert_input_error(code, err, "opset", str(onnx.defs.onnx_opset_version() + 50))
    assert "onnxruntime_src" not in err


@pytest.mark.parametrize("shape", [(3, 16), (1, 3, 4, 16, 16), (1, 48)])
def test_input_not_4d(save, image, tmp_path, shape):
    m = _one_conv()
    del m.graph.input[0].type.tensor_type.shape.dim[:]
    for d in shape:
        m.graph.input[0].type.tensor_type.shape.dim.add().dim_value = d
    code, _, err = cli("maps", save(m), image, "--preprocess", "raw", "-o", tmp_path / "o")
    assert_input_error(code, err, f"{len(shape)}-D", "4-D")


def test_onnxruntime_messages_are_one_clean_line(save, image, tmp_path):
    """A graph that passes our checks but not onnxruntime's: one line, no C++ source path.

    The unknown op feeds the conv: maps run only what the conv's output depends on, so an
    unknown op after it (in a head) would not be loaded at all (see the next test)."""
    nodes = [helper.make_node("NoSuchOp", ["x"], ["pre"], name="mystery"),
             helper.make_node("Conv", ["pre", "w"], ["c"], name="conv")]
    code, _, err = cli("maps", save(_one_conv(nodes=nodes, outputs=("c",))), image, "--preprocess", "raw",
                       "-o", tmp_path / "o")
    assert_input_error(code, err, "onnxruntime", "NoSuchOp")
    assert "onnxruntime_src" not in err


def test_an_op_onnxruntime_lacks_after_the_last_conv_does_not_stop_the_maps(save, image, tmp_path):
    """The session holds only the maps' ancestors: a head with an op onnxruntime cannot load is never loaded."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("NoSuchOp", ["c"], ["d"], name="mystery")]
    code, _, err = cli("maps", save(_one_conv(nodes=nodes, outputs=("d",))), image, "--preprocess", "raw",
                       "-o", tmp_path / "o")
    assert code == 0, err
    assert len(os.listdir(tmp_path / "o")) == 1


# Found by tests/test_fuzz.py: each was an "unexpected" error (a bug) or numpy warnings on stderr.

def test_node_with_fewer_inputs_than_its_schema_is_named(save, image, tmp_path):
    """QLinearConv's weights are its input 3: a node cut short was an IndexError."""
    nodes = [helper.make_node("QLinearConv", ["x", "w", "w"], ["c"], name="short")]
    path = save(_one_conv(nodes=nodes))
    for args in commands(path, image, tmp_path / "out", every=True):
        assert_input_error(*cli(*args)[::2], "QLinearConv node 'short' has 3 inputs", "8..9")


def test_node_cut_short_under_an_opset_older_than_its_op_is_named(save, image, tmp_path):
    """QLinearConv (opset 10) in an opset-1 file has no schema there; its newest one still bounds it."""
    nodes = [helper.make_node("QLinearConv", ["x", "w", "w"], ["c"], name="short")]
    path = save(_one_conv(opset=1, nodes=nodes))
    for args in commands(path, image, tmp_path / "out", every=True):
        assert_input_error(*cli(*args)[::2], "QLinearConv node 'short' has 3 inputs", "8..9")


def test_transpose_with_a_bad_perm_after_a_conv_is_not_followed(save):
    """A perm that is no permutation was an IndexError; the conv's own output is shown instead."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Transpose", ["c"], ["t"], perm=[0, 7, 1, 2]),
             helper.make_node("Relu", ["t"], ["r"])]
    code, out, err = cli("layers", save(_one_conv(nodes=nodes, outputs=("r",))), "--json")
    assert code == 0, err
    import json

    assert json.loads(out)[0]["output"] == "c"


def test_bias_that_does_not_match_the_filters_is_refused(save, image, tmp_path):
    m = _one_conv(nodes=[helper.make_node("Conv", ["x", "w", "bias"], ["c"], name="conv")])
    m.graph.initializer.append(numpy_helper.from_array(np.zeros(5, np.float32), "bias"))  # 2 filters
    path = save(m)
    for args in (("filters", path, "-o", tmp_path / "o"), ("audit", path, "--quiet")):  # audit reads weights its own way
        assert_input_error(*cli(*args)[::2], "2 filters but 5 bias values")


def test_initializer_of_unknown_data_type_is_refused(save, tmp_path):
    m = _one_conv()
    m.graph.initializer[0].data_type = 99
    m.graph.initializer[0].ClearField("raw_data")
    m.graph.initializer[0].float_data.extend([1.0] * 54)
    code, _, err = cli("filters", save(m), "-o", tmp_path / "o")
    assert_input_error(code, err, "tensor 'w'")


@pytest.mark.parametrize("dims", [[0], [3, 4, 3, 4], [2, 2, 3, 3]])
def test_weights_whose_data_does_not_fill_their_shape_are_refused_on_opening(save, tmp_path, dims):
    """Found by tests/test_fuzz.py: prune on a ConvTranspose whose weight dims were set to [0] (its 432
    bytes kept) was an IndexError. Sizes are checked once, when the file is opened, for every command."""
    m = b.conv_transpose()[0]
    w = next(t for t in m.graph.initializer if t.name == "w")
    del w.dims[:]
    w.dims.extend(dims)
    path = save(m)
    for args in (("layers", path), ("prune", path, "-o", tmp_path / "p.onnx"), ("audit", path, "--quiet")):
        assert_input_error(*cli(*args)[::2], "tensor 'w' should hold", "432 bytes")
    assert not (tmp_path / "p.onnx").exists()


def test_typed_field_weights_of_the_wrong_count_are_refused(save):
    m = _one_conv()
    w = m.graph.initializer[0]
    values = numpy_helper.to_array(w).ravel()[:-1]
    w.ClearField("raw_data")
    w.float_data.extend(values.tolist())
    assert_input_error(*cli("layers", save(m))[::2], "tensor 'w' should hold 54 values but has 53")


def test_conv_weights_of_rank_below_3_are_refused(save, tmp_path):
    """Found by tests/test_fuzz.py: the same weights reshaped to 1-D (the size agrees) were read as a layer."""
    m = b.conv_transpose()[0]
    w = next(t for t in m.graph.initializer if t.name == "w")
    del w.dims[:]
    w.dims.extend([108])
    path = save(m)
    for args in (("layers", path), ("prune", path, "-o", tmp_path / "p.onnx")):
        assert_input_error(*cli(*args)[::2], "inconsistent", "shape (108,)", "at least 3 dimensions")


@pytest.mark.parametrize("special", [np.nan, np.inf, -np.inf, 3e38])
def test_nan_and_infinite_weights_draw_without_warnings(save, image, tmp_path, special):
    """Broken weights still give a picture (the finite filters as usual) and a clean stderr, not numpy warnings."""
    import warnings

    w = np.random.default_rng(5).standard_normal((4, 3, 3, 3)).astype(np.float32)
    w[1, 0, 1, 1] = special
    w[2] = special
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1])]
    m = b.model(nodes, [b.image_input(shape=(1, 3, 16, 16))], [b.out("c")], [numpy_helper.from_array(w, "w")])
    path = save(m)
    for args in (("filters", path, "-o", tmp_path / "o"), ("filters", path, "--norm", "filter", "-o", tmp_path / "o"),
                 ("filters", path, "--channels", "2", "-o", tmp_path / "o"), *commands(path, image, tmp_path / "o", every=True)[2:]):
        with warnings.catch_warnings():
            warnings.simplefilter("always")  # shown on stderr, as a user would see them
            code, _, err = cli(*args)
        assert code == 0 and "Warning" not in err and "error" not in err, (args, err)
    from inspector.render import _drawable

    shown = _drawable(w)
    assert np.isfinite(shown).all()
    np.testing.assert_array_equal(shown[0], w[0])  # finite filters are drawn from their own values


def test_constant_node_external_data_is_checked_like_initializers(tmp_path, monkeypatch):
    """A Constant's tensor read through numpy_helper resolved its location against the working directory,
    outside the model's folder: now every external location goes through the same check."""
    w = np.arange(54, dtype=np.float32).reshape(2, 3, 3, 3)
    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / "secret.bin").write_bytes(w.tobytes())  # beside the working directory, not the model

    def save_with(location):
        tensor = onnx.TensorProto(name="w", data_type=onnx.TensorProto.FLOAT, dims=w.shape,
                                  data_location=onnx.TensorProto.EXTERNAL)
        for key, value in (("location", location), ("offset", "0"), ("length", str(w.nbytes))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        nodes = [helper.make_node("Constant", [], ["w"], value=tensor), helper.make_node("Conv", ["x", "w"], ["c"])]
        m = b.model(nodes, [b.image_input(shape=(1, 3, 8, 8))], [b.out("c")])
        path = folder / f"{location.replace('/', '_')}.onnx"
        path.write_bytes(m.SerializeToString())
        return path

    monkeypatch.chdir(tmp_path)
    assert_input_error(*cli("filters", save_with("secret.bin"), "-o", tmp_path / "o")[::2],
                       "external data file missing", "secret.bin")
    assert_input_error(*cli("filters", save_with("../secret.bin"), "-o", tmp_path / "o")[::2],
                       "external data", "outside the model's folder")
    os.replace(tmp_path / "secret.bin", folder / "secret.bin")  # beside the model: read, and right
    import inspector

    np.testing.assert_array_equal(inspector.load(save_with("secret.bin")).filters(0), w)


# --------------------------------------------------------------- external data

def _external_model(folder, location_for_conv_weight=None):
    """conv_relu_nchw with every weight in weights.bin; optionally w1's location rewritten."""
    m, weights = b.conv_relu_nchw(size=16)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "m.onnx"
    b.save_external(m, path)
    if location_for_conv_weight is not None:
        m = onnx.load(str(path), load_external_data=False)
        for tensor in m.graph.initializer:
            if tensor.name == "w1":
                for entry in tensor.external_data:
                    if entry.key == "location":
                        entry.value = location_for_conv_weight
        onnx.save(m, str(path))
    return str(path), weights


def test_external_data_model_works(tmp_path, image):
    path, weights = _external_model(tmp_path / "ok")
    code, out, err = cli("layers", path, "--json")
    assert code == 0, err
    import inspector

    model = inspector.load(path)
    np.testing.assert_array_equal(model.filters(0), weights["w1"])
    x = np.random.default_rng(2).standard_normal((1, 3, 16, 16)).astype(np.float32)
    reference = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(model.run(x, [1], device="cpu")["features.2"], reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("location", ["/etc/passwd", "../../../../etc/passwd", "../outside/fifo",
                                      "sub/../../outside/fifo", "C:\\Windows\\win.ini"])
def test_external_data_escaping_the_folder_is_refused_before_any_read(tmp_path, image, location):
    """The escape target is a FIFO: opening it for reading would block, so a pass proves it was never opened."""
    outside = tmp_path / "outside"
    outside.mkdir()
    os.mkfifo(outside / "fifo")
    path, _ = _external_model(tmp_path / "model", location)
    for args in commands(path, image, tmp_path / "out"):
        result = subprocess.run([sys.executable, "-m", "inspector", *map(str, args)], capture_output=True,
                                text=True, timeout=60, cwd=REPO)
        assert_input_error(result.returncode, result.stderr, "external data", "refused")


def test_external_data_symlink_out_of_the_folder_is_refused(tmp_path, image):
    path, _ = _external_model(tmp_path / "model")
    elsewhere = tmp_path / "elsewhere.bin"
    os.replace(tmp_path / "model" / "weights.bin", elsewhere)
    os.symlink(elsewhere, tmp_path / "model" / "weights.bin")
    for args in commands(path, image, tmp_path / "out"):
        assert_input_error(*cli(*args)[::2], "external data", "outside")


def test_missing_or_short_external_file_is_named(tmp_path, image):
    path, _ = _external_model(tmp_path / "model")
    weights = tmp_path / "model" / "weights.bin"
    data = weights.read_bytes()
    weights.unlink()
    for args in commands(path, image, tmp_path / "out"):
        assert_input_error(*cli(*args)[::2], "external data file missing", "weights.bin")
    weights.write_bytes(data[: len(data) // 2])
    assert_input_error(*cli("filters", path, "--all", "-o", tmp_path / "out")[::2], "external data", "truncated")


# ---------------------------------------------------------------------- images

def _png_header_only(width, height):
    """A PNG whose header claims width x height pixels and whose data is a few bytes: a decompression bomb."""
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("width,height", [(100_000, 100_000), (9_000, 8_000)])  # over 2x the limit; just over it
def test_decompression_bombs_are_refused_from_the_header(tiny, tmp_path, width, height):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_only(width, height))  # 100k x 100k RGB would be 30 GB decoded
    code, _, err = cli("maps", tiny[0], bomb, "--preprocess", "raw", "-o", tmp_path / "o")
    assert_input_error(code, err, "decompression bomb")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_images_fail_cleanly_or_lose_nothing(tiny, tmp_path, fmt):
    """Cut short, an image fails with exit 2, unless every pixel was still there (PNG's last bytes are a trailer)."""
    from inspector.preprocess import load_image

    pixels = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    whole = tmp_path / f"whole.{fmt.lower()}"
    Image.fromarray(pixels).save(whole, fmt)
    data = whole.read_bytes()
    failures = 0
    for cut in (len(data) // 3, len(data) // 2, len(data) - 20, len(data) - 8):
        broken = tmp_path / f"cut{cut}.{fmt.lower()}"
        broken.write_bytes(data[:cut])
        code, _, err = cli("maps", tiny[0], broken, "--preprocess", "raw", "-o", tmp_path / "o")
        if code == 0:
            np.testing.assert_array_equal(load_image(broken, (64, 64)), load_image(whole, (64, 64)))
        else:
            assert_input_error(code, err, "image", str(broken.name))
            failures += 1
    assert failures >= 2  # the cuts into the pixel data


@pytest.mark.parametrize("content", [b"hello, I am text\n", b"\xff\xd8\xff\xe0 not really a jpeg", b""])
def test_text_named_jpg(tiny, tmp_path, content):
    fake = tmp_path / "photo.jpg"
    fake.write_bytes(content)
    code, _, err = cli("maps", tiny[0], fake, "--preprocess", "raw", "-o", tmp_path / "o")
    assert_input_error(code, err, "photo.jpg")


def test_input_size_over_the_pixel_limit_is_refused(save, image, tmp_path):
    m = _one_conv(input_shape=(1, 3, 20_000, 20_000))
    code, _, err = cli("maps", save(m), image, "--preprocess", "raw", "--max-memory", "100G", "-o", tmp_path / "o")
    assert_input_error(code, err, "20000x20000", "too large")


# Peak resident memory of this process (VmHWM: unlike ru_maxrss it starts afresh at exec,
# so the parent's size does not leak into the figure).
_PEAK = textwrap.dedent("""
    import sys
    import numpy as np
    from PIL import Image
    from inspector.preprocess import load_image
    def peak():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    before = peak()
    out = load_image(sys.argv[1], (224, 224))
    print(out.shape, out.dtype, int(out.mean()), peak() - before)
""")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="peak memory read from Linux /proc")
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_huge_legal_image_is_resized_with_at_most_one_full_size_copy(tmp_path, fmt):
    """An 8000x7900 (63 Mpx, just under the limit) picture: Pillow holds it decoded in 253 MB (4 bytes a pixel).

    Peak memory growth of load_image is measured in a fresh process. PNG
    cannot be decoded smaller, so one full copy is the floor (the naive
    convert-then-resize path peaked at two, 510 MB); a JPEG is decoded at
    1/8 scale by ``draft``.
    """
    height, width = 7900, 8000
    rows = np.linspace(0, 255, height, dtype=np.uint8)[:, None, None]
    pixels = np.broadcast_to(rows, (height, width, 3))
    path = tmp_path / f"huge.{fmt.lower()}"
    image = Image.fromarray(np.ascontiguousarray(pixels))
    image.save(path, fmt, **({"compress_level": 1} if fmt == "PNG" else {"quality": 80}))
    del image, pixels
    full = height * width * 4  # Pillow stores RGB as RGBX
    result = subprocess.run([sys.executable, "-c", _PEAK, str(path)], capture_output=True, text=True,
                            timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("(224, 224, 3) uint8"), result.stdout
    mean, grown = map(int, result.stdout.split()[-2:])
    assert 120 <= mean <= 135  # the vertical gradient survived, averaged about mid-grey
    limit = 1.3 * full if fmt == "PNG" else 0.25 * full
    print(f"{fmt} {width}x{height}: load_image peak grew {grown / 1e6:.0f} MB; full decode {full / 1e6:.0f} MB")
    assert grown < limit, f"{fmt}: grew {grown / 1e6:.0f} MB for a {full / 1e6:.0f} MB image"


# ---------------------------------------------------------------------- output

def test_unwritable_output_fails_before_the_work(tiny, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    missing_image = tmp_path / "there_is_no_such_image.png"
    # The output check comes first: the error is about -o, not about the image.
    code, _, err = cli("maps", tiny[0], missing_image, "--preprocess", "raw", "-o", blocker / "sub")
    assert_input_error(code, err, "output directory", "-o")
    code, _, err = cli("filters", tiny[0], "-o", blocker)
    assert_input_error(code, err, "output directory")
    code, _, err = cli("maps", tiny[0], missing_image, "--preprocess", "raw", "--no-png", "--npz", blocker / "m.npz")
    assert_input_error(code, err, "cannot be created or written")
    code, _, err = cli("audit", tiny[0], missing_image, "--preprocess", "raw", "--json", blocker / "a.json")
    assert_input_error(code, err, "cannot be created or written")
    code, _, err = cli("report", tiny[0], missing_image, "--preprocess", "raw", "-o", blocker / "r.html")
    assert_input_error(code, err, "cannot be created or written")


_INTERRUPT_ON_RENAME = textwrap.dedent("""
    import os, sys
    import inspector.atomic as atomic
    calls = []
    real_replace = os.replace
    def replace(src, dst):
        calls.append(dst)
        if len(calls) == int(sys.argv[1]):
            raise KeyboardInterrupt  # Ctrl-C with the temp file written, just before the rename
        return real_replace(src, dst)
    atomic.os = type(os)("os_shim")
    atomic.os.__dict__.update(os.__dict__)
    atomic.os.replace = replace
    from inspector.cli import main
    sys.exit(main(sys.argv[2:]))
""")


def _outputs_are_whole(folder):
    names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    assert not [n for n in names if n.endswith(".part") or n.startswith(".")], names
    for name in names:
        if name.endswith(".png"):
            with Image.open(os.path.join(folder, name)) as png:
                png.load()
        elif name.endswith(".npz"):
            with np.load(os.path.join(folder, name)) as npz:
                [npz[k] for k in npz.files]
    return names


@pytest.mark.parametrize("interrupt_at,expect", [(1, []), (2, ["maps.npz"]), (3, ["maps.npz", "maps_00_features.0.png"])])
def test_ctrl_c_between_write_and_rename_leaves_nothing_partial(tiny, image, tmp_path, interrupt_at, expect):
    out = tmp_path / "out"
    args = ["maps", tiny[0], image, "--all", "--preprocess", "raw", "--device", "cpu", "-o", out, "--npz", out / "maps.npz"]
    result = subprocess.run([sys.executable, "-c", _INTERRUPT_ON_RENAME, str(interrupt_at), *map(str, args)],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 130, result.stderr
    assert "interrupted" in result.stderr and "Traceback" not in result.stderr
    # Layers are drawn on several threads: the rename interrupted may be either PNG's, and the
    # other, already being drawn, may still land. Every file is whole; the run stopped short.
    names = _outputs_are_whole(out)
    assert len(names) == len(expect) or (expect and len(names) == len(expect) + 1), names
    assert set(names) >= {"maps.npz"} & set(expect)
    assert len(names) < 3, names  # the tiny model: maps.npz and two PNGs when nothing stops it


@pytest.mark.parametrize("command,name", [("audit", "audit.json"), ("report", "report.html")])
def test_ctrl_c_before_the_rename_leaves_no_json_or_html(tiny, image, tmp_path, command, name):
    """audit --json and report write one file each: interrupted with it written under its temp name,
    nothing is left; uninterrupted, the file is whole."""
    out = tmp_path / "out"
    target = out / name
    args = [command, tiny[0], image, "--preprocess", "raw", "--device", "cpu",
            *(["--quiet", "--json", target] if command == "audit" else ["-o", target])]
    interrupted = subprocess.run([sys.executable, "-c", _INTERRUPT_ON_RENAME, "1", *map(str, args)],
                                 capture_output=True, text=True, timeout=120, cwd=REPO)
    assert interrupted.returncode == 130, interrupted.stderr
    assert "interrupted" in interrupted.stderr and "Traceback" not in interrupted.stderr
    assert not out.exists() or os.listdir(out) == []
    whole = subprocess.run([sys.executable, "-c", _INTERRUPT_ON_RENAME, "0", *map(str, args)],
                           capture_output=True, text=True, timeout=120, cwd=REPO)
    assert whole.returncode == 0, whole.stderr
    assert os.listdir(out) == [name]
    text = target.read_text()
    if command == "audit":
        import json

        assert json.loads(text)["layers"]
    else:
        assert text.rstrip().endswith("</html>")


def _deep_model(layers=40, size=96, channels=16):
    r = b.rng(7)
    nodes, inits, prev, c_in = [], [], "x", 3
    for i in range(layers):
        w = (r.standard_normal((channels, c_in, 3, 3)) * 0.2).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], name=f"conv{i}", pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        prev, c_in = f"r{i}", channels
    return b.model(nodes, [b.image_input(shape=(1, 3, size, size))], [b.out(prev)], inits)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_real_signal_mid_run_exits_130_with_only_whole_files(save, image, tmp_path, sig):
    path = save(_deep_model())
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "inspector", "maps", path, image, "--all", "--preprocess", "raw", "--device", "cpu",
         "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        # A job started in the background (`make test &`) inherits SIGINT ignored, and Python then keeps it
        # ignored, as it should for `nohup inspector ... &`: the child here gets the default disposition.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    first = process.stdout.readline()  # one PNG written: the run is under way
    assert first.startswith(str(out)), process.stderr.read()
    process.send_signal(sig)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    written = _outputs_are_whole(out)
    assert 1 <= len(written) < 40


# -------------------------------------------------------------------- resources

def test_maps_all_over_the_memory_limit_is_refused_before_running(tiny, image, tmp_path):
    # features.0: 8x16x16 float32 = 8 KiB, features.2: 16x7x7 = 3136 B.
    code, _, err = cli("maps", tiny[0], image, "--all", "--preprocess", "raw", "--max-memory", "10K", "-o",
                       tmp_path / "o")
    assert_input_error(code, err, "11.1 KB", "--layer", "--max-memory", "features.0 8.0 KB")
    assert not (tmp_path / "o").exists()
    code, out, err = cli("maps", tiny[0], image, "--layer", "1", "--preprocess", "raw", "--max-memory", "10K",
                         "-o", tmp_path / "o")
    assert code == 0, err


def test_memory_estimate_matches_the_maps_actually_returned(save):
    import inspector
    from inspector.resources import check_maps_memory

    m, _ = b.tf2onnx_like_nhwc(size=12)
    dims = m.graph.input[0].type.tensor_type.shape.dim
    dims[1].dim_param, dims[2].dim_param = "height", "width"  # open size: the estimate must use the size fed
    model = inspector.load(save(m))
    x = np.zeros((1, 20, 28, 3), np.float32)
    maps = model.run(x, device="cpu")
    estimate = check_maps_memory(model, model.layers, (20, 28), limit=1 << 30)
    assert estimate == sum(v.nbytes for v in maps.values())


@pytest.mark.parametrize("text,value", [("8G", 8 << 30), ("512M", 512 << 20), ("1.5GB", 3 << 29), ("4GiB", 4 << 30),
                                        ("1000", 1000), ("64k", 64 << 10)])
def test_memory_sizes(text, value):
    from inspector.resources import parse_size

    assert parse_size(text) == value


def test_bad_memory_size_is_a_usage_error(tiny, image):
    with contextlib.redirect_stderr(io.StringIO()) as err:
        assert main(["maps", tiny[0], image, "--max-memory", "lots"]) == 2
    assert "--max-memory" in err.getvalue()


# ----------------------------------------------------------------------- device

@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA provider present")
def test_device_cuda_without_cuda_provider_names_what_is_missing(tiny, image, tmp_path):
    code, _, err = cli("maps", tiny[0], image, "--preprocess", "raw", "--device", "cuda", "-o", tmp_path / "o")
    assert_input_error(code, err, "CUDAExecutionProvider", "onnxruntime-gpu", "--device cpu")
    assert not (tmp_path / "o").exists() or not os.listdir(tmp_path / "o")


def test_names_and_metadata_that_are_not_utf8_are_refused_or_skipped(save, image, tmp_path):
    """Protobuf hands invalid UTF-8 strings over as bytes: a node name was a TypeError (found by the fuzzer)."""
    good = _one_conv().SerializeToString()
    broken = good.replace(b"conv", b"c\xffnv", 1)
    assert broken != good
    path = tmp_path / "bad.onnx"
    path.write_bytes(broken)
    for args in commands(str(path), image, tmp_path / "out", every=True):
        assert_input_error(*cli(*args)[::2], "not valid UTF-8")
    model = _one_conv()
    entry = model.metadata_props.add()
    entry.key, entry.value = "inspector.model_name", "tag"
    data = model.SerializeToString().replace(b"tag", b"t\xffg", 1)
    (tmp_path / "meta.onnx").write_bytes(data)
    code, out, err = cli("layers", tmp_path / "meta.onnx")
    assert code == 0, err


# ---------------------------------------------- preprocessing specs and exporter metadata

def _open_size_model(metadata):
    """conv_relu with an open input height and width, so that metadata decides the size."""
    m = b.conv_relu_nchw(size=16)[0]
    for dim in m.graph.input[0].type.tensor_type.shape.dim[2:]:
        dim.dim_param = "side"
    for key, value in metadata.items():
        entry = m.metadata_props.add()
        entry.key, entry.value = key, value
    return m


@pytest.mark.parametrize("spec, words", [
    ("mean=nan", "finite"), ("std=nan", "finite"), ("scale=inf", "finite"), ("std=0,1,1", "std must not be 0"),
    ("scale=1e38", "infinities"), ("std=1e-40", "infinities"),
    ('{"mean": [NaN, 0, 0]}', "finite"), ('{"std": [0, 0, 0]}', "std must not be 0"),
    ('{"std": [1, 2]}', "1 or 3 numbers"), ('{"scale": 1e400}', "finite"),
    ("scale=1/0", "divides by zero"), ("mean=1/3,1/0,2", "divides by zero"),  # were unexpected ZeroDivisionErrors
    ('{"std": [1e300, 1e300, 1e300]}', "float32")])
def test_custom_preprocess_specs_with_hostile_numbers_exit_2(tiny, image, tmp_path, spec, words):
    """NaN means, huge scales and tiny stds used to pass and turn every pixel into NaN or infinity;
    a fraction over zero was an unexpected ZeroDivisionError (found by fuzzing parse_preprocess)."""
    for command in (("maps", "-o", tmp_path / "o"), ("audit", "--quiet"), ("cam", "-o", tmp_path / "c")):
        code, _, err = cli(command[0], tiny[0], image, "--preprocess", spec, "--device", "cpu", *command[1:])
        assert_input_error(code, err, words)
    assert not [p for p in (*tmp_path.glob("o/**/*"), *tmp_path.glob("c/**/*")) if p.is_file()]


@pytest.mark.parametrize("value, words", [
    ('{"mode": "custom", "std": [1, 1]}', "1 or 3 numbers"),  # was an unexpected ValueError (broadcast)
    ('[1]', "JSON object"),  # was an unexpected AttributeError
    ('{"mode": "custom", "std": [0, 0, 0]}', "std must not be 0"),
    ('{"mode": "custom", "mean": [NaN, 1, 1]}', "finite"),
    ('{"mode": "custom", "input_size": [-3, 8]}', "input size -3x8"),  # was an unexpected ValueError in audit
    ('{"mode": "custom", "input_size": [100000, 100000]}', "input size 100000x100000")])
def test_hostile_preprocess_metadata_exits_2_naming_it(save, image, tmp_path, value, words):
    path = save(_open_size_model({"inspector.preprocess": value}))
    for command in (("maps", "-o", tmp_path / "o"), ("audit", "--quiet"), ("cam", "-o", tmp_path / "c"),
                    ("report", "-o", tmp_path / "r.html")):
        code, _, err = cli(command[0], path, image, "--device", "cpu", *command[1:])
        assert_input_error(code, err, words)
        assert "metadata" in err and "--preprocess" in err or "--size" in err, err


@pytest.mark.parametrize("imgsz, expect", [
    ("[100000, 100000]", "refused"), ("[10000, 10000]", "refused"),  # 100 Mpx: over the image pixel limit
    ("[-1, 5]", (224, 224)), ("abc", (224, 224)), ("True", (224, 224)), ("[0, 0]", (224, 224)),
    ("[1e9, 2]", (224, 224)), ("48", (48, 48))])
def test_hostile_ultralytics_imgsz_is_refused_or_ignored_before_any_allocation(save, image, tmp_path, imgsz,
                                                                              expect):
    """A 100000x100000 imgsz used to reach np.zeros in the audit (a 120 GB float batch) and "out of
    memory"; "True" was read as 1x1. The input size is bounded in Model.input_size, for every command."""
    import inspector

    meta = {"author": "Ultralytics", "imgsz": imgsz, "stride": "32", "names": "{0: 'a'}"}
    path = save(_open_size_model(meta))
    model = inspector.load(path)
    if expect == "refused":
        for command in (("maps", "--all", "-o", tmp_path / "o"), ("audit", "--quiet"), ("cam", "-o", tmp_path / "c"),
                        ("report", "-o", tmp_path / "r.html")):
            code, _, err = cli(command[0], path, image, "--device", "cpu", *command[1:])
            assert_input_error(code, err, f"input size {imgsz[1:-1].replace(', ', 'x')}", "metadata", "--size")
        assert not any(tmp_path.glob("o/*")) and not (tmp_path / "r.html").exists()
    else:
        assert model.input_size(None, model.preprocessing()) == expect


def test_class_names_with_gaps_or_unhashable_keys_are_ignored(save, image, tmp_path):
    """Ultralytics ``names`` {1000000000: 'a'} became a list of a billion names in report ("out of memory");
    {[1]: 2} was an unexpected TypeError in cam. Only keys 0..n-1 make a list of names."""
    from inspector.cam.targets import class_names as cam_names
    from inspector.preprocess import class_names

    assert class_names({"names": "{3: 'a'}"}) is None
    assert class_names({"names": "{1: 'b', 0: 'a'}"}) == ["a", "b"]
    assert cam_names({"names": "{[1]: 2}"}) is None
    path = save(_open_size_model({"imgsz": "[16, 16]", "stride": "32", "names": "{[1]: 2}"}))
    code, _, err = cli("cam", path, image, "--method", "eigencam", "--device", "cpu", "-o", tmp_path / "c")
    assert code == 0, err


# ------------------------------------------------------------------------ prune

def test_prune_cutting_every_filter_of_an_unread_conv_writes_a_valid_model(save, tmp_path):
    """Found by fuzzing prune (a Relu rewired away from its conv): every filter of a conv whose output
    nothing reads is dead, and writing its zero-size weight was an unexpected memoryview TypeError."""
    w1 = np.ones((4, 3, 3, 3), np.float32)
    w2 = np.random.default_rng(2).standard_normal((2, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["unread"], name="unread_conv"),
             helper.make_node("Conv", ["x", "w2"], ["y"], name="conv")]
    m = b.model(nodes, [b.image_input(shape=(1, 3, 8, 8))], [b.out("y")],
                [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    out = tmp_path / "p.onnx"
    code, stdout, err = cli("prune", save(m), "-o", out)
    assert code == 0, err
    assert "4->0" in stdout
    x = np.random.default_rng(3).standard_normal((1, 3, 8, 8)).astype(np.float32)
    ours = ort.InferenceSession(str(out)).run(["y"], {"x": x})[0]
    reference = ort.InferenceSession(m.SerializeToString()).run(["y"], {"x": x})[0]
    np.testing.assert_allclose(ours, reference, rtol=1e-6)


def test_conv_reading_a_scalar_as_its_weights_is_refused_where_weights_are_read(save, image, tmp_path):
    """Found by fuzzing prune --channels --check (a QuantizeLinear turned into a Conv reading its scale):
    the audit's weight statistics were an unexpected "cannot reshape array of size 1 into shape (0,newaxis)".
    A scalar's shape () looks like "unknown" to the layer finder, so Graph.weights checks the values read."""
    nodes = [helper.make_node("Conv", ["x", "s"], ["c"], name="conv")]
    m = b.model(nodes, [b.image_input(shape=(1, 3, 8, 8))], [b.out("c")],
                [numpy_helper.from_array(np.array(0.5, np.float32), "s")])
    path = save(m)
    for args in (("audit", path, "--quiet"), ("filters", path, "-o", tmp_path / "f"),
                 ("prune", path, "--channels", "--check", image, "-o", tmp_path / "p.onnx")):
        assert_input_error(*cli(*args)[::2], "inconsistent", "shape ()", "at least 3 dimensions")
    assert not (tmp_path / "p.onnx").exists()


def test_prune_output_that_is_the_model_itself_is_refused_and_leaves_it_intact(tiny, tmp_path, monkeypatch):
    path = tiny[0]
    before = open(path, "rb").read()
    monkeypatch.chdir(os.path.dirname(path))
    for out in (path, "./" + os.path.basename(path), os.path.join(tmp_path, "..", tmp_path.name, "m.onnx")):
        assert_input_error(*cli("prune", path, "-o", out)[::2], "-o must not be the model itself")
    assert open(path, "rb").read() == before
    assert sorted(os.listdir(os.path.dirname(path))) == ["m.onnx"]


def test_prune_unwritable_outputs_fail_before_the_work(tiny, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    for args in (("-o", blocker / "p.onnx"), ("-o", tmp_path / "p.onnx", "--json", blocker / "p.json"),
                 ("-o", tmp_path)):
        code, _, err = cli("prune", tiny[0], *args)
        assert_input_error(code, err, "-o" if args[-1] != blocker / "p.json" else "--json")
    assert sorted(os.listdir(tmp_path)) == ["file", "m.onnx"]


@pytest.mark.parametrize("content, words", [
    ("{nope", "not JSON"), (b"\xff\xfe{", "not JSON"), ("[" * 100000 + "]" * 100000, "not JSON"),  # RecursionError
    ('[1, 2]', "no 'layers' list"), ('{"layers": "abc"}', "no 'layers' list"),
    ('{"layers": [5]}', "no name"), ('{"layers": [{"name": 5}]}', "no name"),
    ('{"layers": [{"name": "features.0", "dead_filters": "x"}]}', "not a list of indices"),
    ('{"layers": [{"name": "features.0", "dead_filters": [true, 3]}]}', "not a list of indices"),  # was a TypeError
    ('{"layers": [{"name": "features.0", "dead_filters": [-1]}]}', "not a list of indices"),
    ('{"layers": [{"name": "features.0", "dead_channels": [1.5]}]}', "not a list of indices"),
    ('{"layers": [{"name": "features.0", "dead_filters": [1000000000000]}]}', "has 8 filters"),  # was ignored
    ('{"layers": [{"name": "nope", "dead_filters": [1]}]}', "does not have")])
def test_prune_from_audit_files_that_are_not_an_audit_exit_2(tiny, image, tmp_path, content, words):
    """Found by fuzzing --from-audit by hand: booleans among the indices were an unexpected TypeError, arrays
    nested 100,000 deep an unexpected RecursionError, and indices beyond the layer's filters were ignored."""
    audit = tmp_path / "audit.json"
    audit.write_bytes(content if isinstance(content, bytes) else content.encode())
    for extra in ((), ("--channels", "--check", image)):
        code, _, err = cli("prune", tiny[0], "--from-audit", audit, *extra, "-o", tmp_path / "p.onnx")
        assert_input_error(code, err, words)
    assert not (tmp_path / "p.onnx").exists()


@pytest.mark.parametrize("interrupt_at", [1, 2])
def test_ctrl_c_during_prune_leaves_nothing_partial(save, tmp_path, interrupt_at):
    """prune writes the model then its JSON, each through a temp name: Ctrl-C before either rename
    leaves no temp file, and whatever was renamed is whole."""
    import json

    w1 = np.random.default_rng(1).standard_normal((4, 3, 3, 3)).astype(np.float32)
    w1[1] = 0  # one dead filter, so that the model really changes
    w2 = np.random.default_rng(2).standard_normal((2, 4, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="c1"), helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["y"], name="c2")]
    m = b.model(nodes, [b.image_input(shape=(1, 3, 8, 8))], [b.out("y")],
                [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    path = save(m)
    out = tmp_path / "out"
    args = ["prune", path, "-o", out / "p.onnx", "--json", out / "p.json"]
    run = subprocess.run([sys.executable, "-c", _INTERRUPT_ON_RENAME, str(interrupt_at), *map(str, args)],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert run.returncode == 130, run.stderr
    assert "interrupted" in run.stderr and "Traceback" not in run.stderr
    names = sorted(os.listdir(out)) if out.exists() else []
    assert len(names) == interrupt_at - 1, names  # only the files renamed before the interrupt
    for name in names:
        if name.endswith(".onnx"):
            onnx.checker.check_model(str(out / name))
            assert ort.InferenceSession(str(out / name)).get_inputs()[0].name == "x"
        else:
            assert json.loads((out / name).read_text())
    whole = subprocess.run([sys.executable, "-c", _INTERRUPT_ON_RENAME, "0", *map(str, args)],
                           capture_output=True, text=True, timeout=120, cwd=REPO)
    assert whole.returncode == 0, whole.stderr
    assert sorted(os.listdir(out)) == ["p.json", "p.onnx"]


def test_cam_unwritable_npz_fails_before_the_work_and_writes_nothing(tiny, image, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, _, err = cli("cam", tiny[0], image, "--method", "eigencam", "--device", "cpu", "-o", tmp_path / "out",
                       "--npz", blocker / "cam.npz")
    assert_input_error(code, err, "--npz")
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.name not in ("file", "img.png", "m.onnx")]


@pytest.mark.parametrize("op, attr, value", [("Concat", "axis", [1]), ("Relu", None, None), ("Conv", "group", [1]),
                                             ("Conv", "pads", 1), ("Transpose", "perm", 1)])
def test_attributes_of_the_wrong_type_are_refused_on_opening(save, tmp_path, op, attr, value):
    """Found by fuzzing prune: a Concat whose axis was a list (INTS) was an unexpected TypeError in prune's
    tracer. Attribute types are checked against the ONNX schema once, with the node arities."""
    w = numpy_helper.from_array(np.ones((2, 3, 3, 3), np.float32), "w")
    conv_attrs = {attr: value} if op == "Conv" else {}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", **conv_attrs),
             helper.make_node("Relu", ["c"], ["r"], name="relu")]
    if op == "Concat":
        nodes.append(helper.make_node("Concat", ["r", "r"], ["y"], name="cat", axis=value))
    elif op == "Transpose":
        nodes.append(helper.make_node("Transpose", ["r"], ["y"], name="t", perm=value))
    else:
        nodes.append(helper.make_node("Identity", ["r"], ["y"], name="id"))
    path = save(b.model(nodes, [b.image_input(shape=(1, 3, 8, 8))], [b.out("y")], [w]))
    for args in (("layers", path), ("prune", path, "-o", tmp_path / "p.onnx")):
        code, _, err = cli(*args)
        if attr is None:  # the control: the same graph with well-typed attributes works
            assert code == 0, err
        else:
            assert_input_error(code, err, f"attribute '{attr}' of type", "re-export")


def test_audit_and_cam_apply_the_maps_memory_limit_before_running(save, image, tmp_path):
    """An Ultralytics imgsz of 8000x8000 is within the image pixel limit but not within memory: audit
    and cam used to hand it to onnxruntime (which failed to allocate, or took gigabytes); they now
    estimate their maps like maps and report do and refuse over --max-memory (default 4G)."""
    path = save(_open_size_model({"author": "Ultralytics", "imgsz": "[8000, 8000]"}))
    for command in (("audit", "--quiet"), ("cam", "--method", "eigencam", "-o", tmp_path / "c")):
        code, _, err = cli(command[0], path, image, "--device", "cpu", "--max-memory", "64M", *command[1:])
        assert_input_error(code, err, "would need about", "--max-memory limit of 64.0 MB")
    small = save(_open_size_model({"author": "Ultralytics", "imgsz": "[16, 16]"}), "small.onnx")
    for command in (("audit", "--quiet"), ("cam", "--method", "eigencam", "-o", tmp_path / "c")):
        code, _, err = cli(command[0], small, image, "--device", "cpu", "--max-memory", "64M", *command[1:])
        assert code == 0, err


def test_json_nested_100000_deep_in_metadata_or_preprocess_is_not_a_recursion_error(save, image, tmp_path):
    """Found by fuzzing the metadata readers: json.loads raises RecursionError, which is no ValueError,
    so inspector.class_names and inspector.preprocess nested 100,000 deep were unexpected errors."""
    deep = "[" * 100000 + "]" * 100000
    path = save(_open_size_model({"inspector.class_names": deep}), "names.onnx")
    assert cli("maps", path, image, "--preprocess", "raw", "--size", "16x16", "-o", tmp_path / "o")[0] == 0
    path = save(_open_size_model({"inspector.preprocess": deep}), "pre.onnx")
    assert_input_error(*cli("maps", path, image, "-o", tmp_path / "o")[::2], "inspector.preprocess", "not valid")
    code, _, err = cli("maps", path, image, "--preprocess", '{"mean": ' + deep + "}", "-o", tmp_path / "o")
    assert_input_error(code, err, "--preprocess JSON is not valid")


@pytest.mark.parametrize("value", ["[1]", "3", "null", '"BGR"', "{nope"])
def test_filters_with_preprocess_metadata_that_is_not_an_object_draws_in_rgb(save, tmp_path, value):
    """Found by tests/test_fuzz.py (its metadata mutation): filters read inspector.preprocess's colour order
    with .get on whatever JSON it held, an unexpected AttributeError for a list."""
    m = b.constant_weights()[0]
    entry = m.metadata_props.add()
    entry.key, entry.value = "inspector.preprocess", value
    code, _, err = cli("filters", save(m), "--all", "-o", tmp_path / "o")
    assert code == 0, err
    assert any(name.endswith(".png") for name in os.listdir(tmp_path / "o"))
