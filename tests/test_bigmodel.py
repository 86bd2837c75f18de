"""A model over 2 GB (weights in external data) through `layers`, `filters` and `maps`.

Protobuf cannot hold a message over 2 GB, so this only works if the weights
are never serialised into one: the inspector must read the graph without its
weights, `filters` must read only the tensors it draws (and of them only the
filters it shows), and onnxruntime must load the weights from the path.

The model (2.3 GB) is written in 64 MB chunks, never held in memory whole:
x (1, 3, 2, 2) -> conv0 3->4096 -> Relu -> wide1 4096->70000 (1.15 GB) -> Relu
-> wide2 70000->4096 (1.15 GB). 1x1 kernels on a 2x2 input keep the
arithmetic to seconds while the weights are huge.

Each command runs in a fresh process that reports the growth of its peak
resident memory (VmHWM) over its size after the imports, so the figure is
what the command itself costs.

When it runs: marked ``slow`` and ``bigdisk``; it skips itself unless the temp
folder's file system has at least 6 GB free (shutil.disk_usage), so
``make test`` / CI runs it wherever disk allows and ``-m "not bigdisk"``
leaves it out. About 1 minute on 2 cores.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest
from onnx import TensorProto, helper
from PIL import Image

import builders as b

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NEEDED_FREE = 6 << 30
CHANNELS = (3, 4096, 70000, 4096)  # input, conv0, wide1, wide2
CHUNK_ROWS = 4096

pytestmark = [
    pytest.mark.slow,
    pytest.mark.bigdisk,
    pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="peak memory read from Linux /proc"),
]


def _weights(layer: int, start: int, rows: int) -> np.ndarray:
    """Rows start..start+rows of layer ``layer``'s (out, in) weights: reproducible chunk by chunk."""
    c_in = CHANNELS[layer]
    rng = np.random.default_rng([layer, start])
    return ((rng.random((rows, c_in), dtype=np.float32) - 0.5) * np.float32(3.0 / np.sqrt(c_in)))


def _write_model(folder: str) -> tuple[str, dict[str, tuple[int, int]]]:
    """Write big.onnx + weights.bin; returns the model path and each weight's (offset, length) in weights.bin."""
    names = ("conv0", "wide1", "wide2")
    places: dict[str, tuple[int, int]] = {}
    initializers, nodes, previous = [], [], "x"
    with open(os.path.join(folder, "weights.bin"), "wb") as data:
        for layer, name in enumerate(names):
            c_in, c_out = CHANNELS[layer], CHANNELS[layer + 1]
            offset = data.tell()
            for start in range(0, c_out, CHUNK_ROWS):
                data.write(_weights(layer, start, min(CHUNK_ROWS, c_out - start)).tobytes())
            length = data.tell() - offset
            places[name] = (offset, length)
            tensor = TensorProto(name=f"{name}.w", data_type=TensorProto.FLOAT, dims=[c_out, c_in, 1, 1],
                                 data_location=TensorProto.EXTERNAL)
            for key, value in (("location", "weights.bin"), ("offset", str(offset)), ("length", str(length))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
            initializers.append(tensor)
            nodes.append(helper.make_node("Conv", [previous, tensor.name], [f"{name}.conv"], name=name))
            if layer < len(names) - 1:
                nodes.append(helper.make_node("Relu", [f"{name}.conv"], [f"{name}.relu"]))
                previous = f"{name}.relu"
    model = b.model(nodes, [b.image_input(shape=(1, 3, 2, 2))], [b.out("wide2.conv")], initializers)
    path = os.path.join(folder, "big.onnx")
    with open(path, "wb") as handle:
        handle.write(model.SerializeToString())  # a few KB: the weights stay in weights.bin
    return path, places


_RUN = textwrap.dedent("""
    import io, sys, contextlib
    import numpy, onnx, onnxruntime, PIL.Image, matplotlib  # the imports every command pays, before the baseline
    from inspector.cli import main

    def status(key):
        with open("/proc/self/status") as lines:
            return next(int(line.split()[1]) * 1024 for line in lines if line.startswith(key + ":"))

    baseline = status("VmRSS")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(sys.argv[1:])
    sys.stderr.write(f"PEAK_GROWTH {status('VmHWM') - baseline}\\n")
    sys.stdout.write(out.getvalue())
    sys.exit(code)
""")


_BARE = textwrap.dedent("""
    import sys
    import numpy, onnx, onnxruntime as ort, PIL.Image, matplotlib

    def status(key):
        with open("/proc/self/status") as lines:
            return next(int(line.split()[1]) * 1024 for line in lines if line.startswith(key + ":"))

    baseline = status("VmRSS")
    session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
    session.run(None, {"x": numpy.zeros((1, 3, 2, 2), numpy.float32)})
    sys.stderr.write(f"PEAK_GROWTH {status('VmHWM') - baseline}\\n")
""")


def _run(*args, script=_RUN) -> tuple[str, int]:
    """(stdout, peak RSS growth in bytes) of one CLI command in a fresh process; fails on a non-zero exit."""
    result = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                            timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr
    growth = next(int(line.split()[1]) for line in result.stderr.splitlines() if line.startswith("PEAK_GROWTH"))
    return result.stdout, growth


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    base = tempfile.gettempdir()
    free = shutil.disk_usage(base).free
    if free < NEEDED_FREE:
        pytest.skip(f"needs {NEEDED_FREE >> 30} GB free in {base}, has {free / 2**30:.1f} GB")
    folder = tmp_path_factory.mktemp("bigmodel")
    path, places = _write_model(str(folder))
    size = os.path.getsize(path) + os.path.getsize(folder / "weights.bin")
    assert size > 2**31  # over protobuf's 2 GB limit
    yield path, places, size
    shutil.rmtree(folder, ignore_errors=True)  # 2.3 GB: do not leave it for pytest's temp retention


def _report(what: str, growth: int, size: int) -> None:
    print(f"\n{what}: peak RSS grew {growth / 2**20:.0f} MiB for a {size / 2**30:.2f} GiB model "
          f"({growth / size:.1%})")


def test_layers_of_a_model_over_2gb(big):
    path, _, size = big
    out, growth = _run("layers", path, "--json")
    _report("layers", growth, size)
    layers = json.loads(out)
    assert [(layer["name"], layer["weight_shape"]) for layer in layers] == [
        ("conv0", [4096, 3, 1, 1]), ("wide1", [70000, 4096, 1, 1]), ("wide2", [4096, 70000, 1, 1])]
    assert layers[1]["params"] == 70000 * 4096 and layers[1]["output"] == "wide1.relu"
    assert growth < 0.05 * size


@pytest.mark.parametrize("layer", ["wide1", "wide2"])
def test_filters_read_only_the_filters_shown(big, tmp_path, layer):
    """64 filters of one 1.15 GB tensor are drawn: memory follows those (1 or 18 MB), not the layer or the model."""
    path, places, size = big
    out, growth = _run("filters", path, "--layer", layer, "-o", tmp_path)
    _report(f"filters --layer {layer}", growth, size)
    png = tmp_path / f"filters_{['conv0', 'wide1', 'wide2'].index(layer):02d}_{layer}.png"
    assert str(png) in out
    with Image.open(png) as picture:
        assert picture.width > 200 and picture.height > 200
    tensor_bytes = places[layer][1]
    assert growth < 0.25 * size
    assert growth < 0.25 * tensor_bytes  # not even the selected tensor was read whole

    import inspector

    index = ("conv0", "wide1", "wide2").index(layer)
    shown = inspector.load(path).filters(layer)[:64, :, 0, 0]
    np.testing.assert_array_equal(shown, _weights(index, 0, 64))


def _reference_maps() -> dict[str, np.ndarray]:
    """NumPy, chunk by chunk from the formula (not from the file): the first 64 channels of each layer, (C, 2, 2)."""
    x = np.asarray(_image_pixels(), np.float32).transpose(2, 0, 1).reshape(3, 4) / 255.0  # raw: /255
    r0 = np.maximum(_weights(0, 0, CHANNELS[1]) @ x, 0)
    r1 = np.concatenate([np.maximum(_weights(1, start, min(CHUNK_ROWS, CHANNELS[2] - start)) @ r0, 0)
                         for start in range(0, CHANNELS[2], CHUNK_ROWS)])
    y2 = _weights(2, 0, 64).astype(np.float64) @ r1.astype(np.float64)  # the first rows of chunk 0
    return {"conv0": r0[:64].reshape(64, 2, 2), "wide1": r1[:64].reshape(64, 2, 2),
            "wide2": y2.reshape(64, 2, 2)}


def _image_pixels() -> np.ndarray:
    return np.arange(2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 3) * 20


def test_maps_load_weights_from_the_path(big, tmp_path):
    """One onnxruntime run with every conv output added: it would fail outright if the weights were
    serialised into the modified model (over 2 GB), and its memory stays near one copy of the weights."""
    path, _, size = big
    image = tmp_path / "img.png"
    Image.fromarray(_image_pixels()).save(image)  # 2x2: fed as it is, no resize
    npz = tmp_path / "maps.npz"
    out, growth = _run("maps", path, image, "--all", "--preprocess", "raw", "--device", "cpu",
                       "--npz", npz, "-o", tmp_path / "out")
    _report("maps --all", growth, size)
    _, bare = _run(path, script=_BARE)
    _report("bare onnxruntime session on the path, one run", bare, size)
    # onnxruntime's own peak is the floor (its layout optimisations copy the conv weights);
    # the inspector adds no copy of its own: a serialised or read-in copy would add 2.1 GiB.
    assert growth < bare + 256 * 2**20
    reference = _reference_maps()
    with np.load(npz) as maps:
        assert maps["wide1"].shape == (70000, 2, 2) and maps["wide2"].shape == (4096, 2, 2)
        for name, expected in reference.items():
            np.testing.assert_allclose(maps[name][:64], expected, rtol=2e-3, atol=2e-3, err_msg=name)
