"""Fuzz the real CLI entry point with mutated models and images.

Small valid models (every kind the builders make, inline and external
weights) and small images are mutated at the byte level (flips, truncation,
insertions) and at the protobuf field level (dims, data types, op types,
attribute values, inputs, input shapes, opsets, external data entries, and
metadata that zero-config preprocessing and class names read). Every
command runs through its defaults (no --preprocess, --size or --method), so
the metadata readers, the input resolver and cam's choice of method are
reached; diff compares the mutated model with itself, prune checks itself on
the image, and convert converts a torch factory with a mutated state dict. Each
case runs ``inspector.cli.main`` in-process and must end with exit 0, or exit
2 and a one-line message, never a traceback or an "unexpected" error. No case
has a time limit: speed belongs in `make bench`, and a limit fails healthy cases
on a loaded machine.

``make test`` runs a fixed-seed, bounded set; ``make fuzz`` sets
INSPECTOR_FUZZ_EXAMPLES (per test) for a longer run. INSPECTOR_FUZZ_LOG=FILE
appends every case's command, exit code and stderr to FILE;
INSPECTOR_FUZZ_KEEP=DIR copies each failing case's files into DIR.

Python warnings are shown on the redirected stderr, as a user would see them:
a warning raised in inspector's own code (numpy overflow on NaN weights, say)
or a leaked file fails the case too.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import tempfile
import warnings
from collections import Counter

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import AttributeProto, helper, numpy_helper
from PIL import Image

import builders as b
from inspector.cli import main

EXAMPLES = int(os.environ.get("INSPECTOR_FUZZ_EXAMPLES", "500"))
LOG = os.environ.get("INSPECTOR_FUZZ_LOG")  # a file to append every case's outcome to, for reading
KEEP = os.environ.get("INSPECTOR_FUZZ_KEEP")  # a folder to copy each failing case's files into
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
TALLY: Counter = Counter()


def run_cli(kind: str, args: list[str]) -> int:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            warnings.catch_warnings():
        warnings.simplefilter("always")  # shown on the redirected stderr, as a user would see them
        code = main(args)
    message = err.getvalue()
    TALLY[f"{kind} exit {code}"] += 1
    if LOG:
        with open(LOG, "a") as log:
            log.write(f"{kind}\t{args[0]}\t{code}\t{message.strip()!r}\n")
    assert code in (0, 2), (args, code, message)
    assert "Traceback" not in message, (args, message)
    assert "error: unexpected" not in message, (args, message)  # the CLI's last-resort handler
    # numpy warnings out of our own code (NaN weights, overflow) and leaked files are
    # defects; a library's warning about a corrupt file before the clean error is not.
    assert not re.search(r"inspector/[\w/]+\.py:\d+: \w*Warning", message), (args, message)
    assert "ResourceWarning" not in message, (args, message)
    if code == 2:
        errors = [line for line in message.splitlines() if re.match(r"inspector( convert)?: error: ", line)]
        assert len(errors) == 1 and len(errors[0]) > 30, (args, message)
    return code


@pytest.fixture(scope="module", autouse=True)
def report(request):
    yield
    total = sum(TALLY.values())
    summary = ", ".join(f"{k}: {v}" for k, v in sorted(TALLY.items()))
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\nfuzz: {total} CLI runs ({summary})")


# ---------------------------------------------------------------- seed inputs

SEEDS = {
    "conv_relu": lambda: b.conv_relu_nchw(size=8)[0],
    "nhwc": lambda: b.tf2onnx_like_nhwc(size=8)[0],
    "constant": lambda: b.constant_weights()[0],
    "grouped": lambda: b.grouped_and_depthwise()[0],
    "transpose": lambda: b.conv_transpose()[0],
    "qdq": lambda: b.qdq_conv()[0],
    "qlinear": lambda: b.qlinear_conv()[0],
}
OPS = ["Conv", "ConvTranspose", "QLinearConv", "ConvInteger", "Relu", "Transpose", "Sigmoid", "Mul", "Add",
       "DequantizeLinear", "Identity", "Cast", "Constant", "MaxPool", "Reshape", "If", "Loop", "NoSuchOp", ""]
# Metadata that zero-config preprocessing, class names and the report read: hostile values and shapes.
METADATA = [("author", "Ultralytics"), ("imgsz", "[100000, 100000]"), ("imgsz", "[-1, 5]"), ("imgsz", "abc"),
            ("imgsz", "[8, 8]"), ("imgsz", "True"), ("stride", "32"), ("names", "{1000000000: 'a'}"),
            ("names", "{[1]: 2}"), ("names", "{0: 'a', 1: 'b'}"), ("names", "(" * 300), ("character", "abc"),
            ("inspector.class_names", '["a", 1]'), ("inspector.class_names", "[" * 5000),
            ("inspector.preprocess", '{"mode": "custom", "std": [0, 0, 0]}'),
            ("inspector.preprocess", '{"mode": "custom", "mean": [NaN, 1, 1]}'),
            ("inspector.preprocess", '{"mode": "custom", "std": [1, 1]}'), ("inspector.preprocess", "[1]"),
            ("inspector.preprocess", '{"mode": "raw", "scale": 0.004, "input_size": [-3, 8]}'),
            ("inspector.preprocess", '{"mode": "raw", "scale": 0.004, "input_size": [8, 8]}'),
            ("inspector.weights_trained", "false"), ("inspector.model_name", "<b>&x</b>")]
INTS = st.one_of(st.integers(-3, 40), st.sampled_from([0, -1, 2**31 - 1, 2**40, -(2**62), 10**6]))


def _image_bytes(fmt: str) -> bytes:
    # Large enough that most bytes are pixel data, small enough to stay fast.
    pixels = np.random.default_rng(4).integers(0, 256, (40, 36, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")
IMAGES = {fmt: _image_bytes(fmt) for fmt in IMAGE_FORMATS}


COMMANDS = ["layers", "filters", "maps", "audit", "report", "prune", "cam", "diff"]
IMAGE_COMMANDS = ("maps", "audit", "report", "cam", "diff", "prune")  # prune: --check IMAGE


def commands(model: str, image: str, out: str, which: str) -> list[str]:
    """Each command through its defaults (no --preprocess, no --size, no --method): the metadata readers,
    the input resolver and cam's choice of method are what the mutations reach."""
    if which == "layers":
        return ["layers", model, "--json"]
    if which == "filters":
        return ["filters", model, "--all", "-o", out]
    if which == "audit":
        return ["audit", model, image, "--device", "cpu", "--quiet",
                "--json", os.path.join(out, "audit.json")]
    if which == "prune":
        return ["prune", model, "-o", os.path.join(out, "pruned.onnx"), "--check", image,
                "--json", os.path.join(out, "prune.json")]
    if which == "cam":
        return ["cam", model, image, "--device", "cpu", "--batch", "4", "-o", out, "--npz", os.path.join(out, "cam.npz")]
    if which == "report":
        return ["report", model, image, "--device", "cpu", "--max-memory", "64M",
                "-o", os.path.join(out, "report.html")]
    if which == "diff":
        return ["diff", model, model, image, "--device", "cpu", "--quiet", "--json", os.path.join(out, "diff.json")]
    return ["maps", model, image, "--all", "--device", "cpu", "--max-memory", "64M",
            "-o", out, "--npz", os.path.join(out, "m.npz")]


def run_model(kind: str, data: bytes, which: str, external: bytes | None = None,
              image: bytes | None = None) -> int:
    with tempfile.TemporaryDirectory(prefix="fuzz-") as folder:
        model = os.path.join(folder, "m.onnx")
        with open(model, "wb") as handle:
            handle.write(data)
        if external is not None:
            with open(os.path.join(folder, "weights.bin"), "wb") as handle:
                handle.write(external)
        picture = os.path.join(folder, "img.png")
        with open(picture, "wb") as handle:
            handle.write(image if image is not None else IMAGES["PNG"])
        try:
            code = run_cli(kind, commands(model, picture, os.path.join(folder, "out"), which))
        except BaseException:
            if KEEP:  # the failing inputs, to rerun by hand with --verbose
                shutil.copytree(folder, tempfile.mkdtemp(prefix="case-", dir=KEEP), dirs_exist_ok=True)
            raise
        leftovers = [n for _, _, files in os.walk(folder) for n in files if n.endswith(".part")]
        assert not leftovers, leftovers
    return code


@pytest.mark.parametrize("seed", sorted(SEEDS))
@pytest.mark.parametrize("which", COMMANDS)
def test_every_seed_runs_clean(seed, which):
    """Unmutated, every seed model works: the fuzz cases start from valid inputs,
    and the harness itself (watchdog, stderr checks) passes a clean run."""
    code = run_model("seed", SEEDS[seed]().SerializeToString(), which)
    # The grouped seed takes 4 input channels: no image can feed it, by design.
    assert code == (2 if seed == "grouped" and which in IMAGE_COMMANDS else 0)


# -------------------------------------------------------------- byte mutations

@st.composite
def mutated_bytes(draw, data: bytes, focus: tuple[int, int] | None = None):
    """Flips, truncation, insertion, deletion; half the positions fall in ``focus``
    (the weights of a model, the pixels of an image) so that mutations also reach
    past the parsers into the values."""
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "flip", "truncate", "insert", "delete"]))
        if not data:
            break
        low, high = 0, len(data) - 1
        if focus is not None and focus[0] < min(focus[1], len(data)) and draw(st.booleans()):
            low, high = focus[0], min(focus[1], len(data)) - 1
        pos = draw(st.integers(low, high))
        if action == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif action == "truncate":
            del data[pos:]
        elif action == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[pos:pos + draw(st.integers(1, 16))]
    return bytes(data)


@FUZZ
@given(data=st.data(), seed=st.sampled_from(sorted(SEEDS)), which=st.sampled_from(COMMANDS))
def test_byte_mutated_models(data, seed, which):
    model = SEEDS[seed]()
    original = model.SerializeToString()
    raw = max((t.raw_data for t in model.graph.initializer), key=len, default=b"")
    start = original.find(raw) if raw else -1
    focus = (start, start + len(raw)) if start >= 0 else None
    run_model("model bytes", data.draw(mutated_bytes(original, focus)), which)


# ------------------------------------------------------------- field mutations

def _mutate_fields(model: onnx.ModelProto, draw) -> None:
    graph = model.graph
    names = [t.name for t in graph.initializer] + [o for n in graph.node for o in n.output] + ["x", "", "ghost"]
    for _ in range(draw(st.integers(1, 3))):
        target = draw(st.sampled_from(["dims", "data_type", "op_type", "attribute", "input", "input_shape",
                                       "opset", "drop_node", "drop_initializer", "elem_type", "raw_data",
                                       "values", "values", "metadata"]))
        if target == "dims" and graph.initializer:
            tensor = draw(st.sampled_from(list(graph.initializer)))
            dims = draw(st.lists(INTS, max_size=5))
            del tensor.dims[:]
            tensor.dims.extend(dims)
        elif target == "data_type" and graph.initializer:
            draw(st.sampled_from(list(graph.initializer))).data_type = draw(st.integers(-1, 30))
        elif target == "op_type" and graph.node:
            draw(st.sampled_from(list(graph.node))).op_type = draw(st.sampled_from(OPS))
        elif target == "attribute" and graph.node:
            node = draw(st.sampled_from(list(graph.node)))
            name = draw(st.sampled_from(["pads", "strides", "dilations", "group", "perm", "axis", "alpha",
                                         "kernel_shape", "auto_pad", "value"]))
            kind = draw(st.sampled_from(["int", "ints", "float", "string"]))
            value = {"int": lambda: draw(INTS), "ints": lambda: draw(st.lists(INTS, max_size=6)),
                     "float": lambda: draw(st.floats(allow_nan=True)),
                     "string": lambda: draw(st.sampled_from(["SAME_UPPER", "VALID", "NOTSET", "bogus"]))}[kind]()
            kept = [a for a in node.attribute if a.name != name]
            del node.attribute[:]
            attr_type = {"int": AttributeProto.INT, "ints": AttributeProto.INTS, "float": AttributeProto.FLOAT,
                         "string": AttributeProto.STRING}[kind]
            node.attribute.extend(kept + [helper.make_attribute(name, value, attr_type=attr_type)])
        elif target == "input" and graph.node:
            node = draw(st.sampled_from(list(graph.node)))
            if node.input and draw(st.booleans()):
                node.input[draw(st.integers(0, len(node.input) - 1))] = draw(st.sampled_from(names))
            else:
                node.input.append(draw(st.sampled_from(names)))
        elif target == "input_shape":
            dims = graph.input[0].type.tensor_type.shape.dim
            if dims and draw(st.booleans()):
                dim = dims[draw(st.integers(0, len(dims) - 1))]
                if draw(st.booleans()):
                    dim.dim_value = draw(st.integers(-2, 5000))
                else:
                    dim.dim_param = draw(st.sampled_from(["N", "height", ""]))
            else:
                del dims[:]
                for size in draw(st.lists(st.integers(0, 64), max_size=6)):
                    dims.add().dim_value = size
        elif target == "opset":
            model.opset_import[0].version = draw(st.integers(-1, 40))
        elif target == "drop_node" and graph.node:
            del graph.node[draw(st.integers(0, len(graph.node) - 1))]
        elif target == "drop_initializer" and graph.initializer:
            del graph.initializer[draw(st.integers(0, len(graph.initializer) - 1))]
        elif target == "elem_type":
            graph.input[0].type.tensor_type.elem_type = draw(st.integers(0, 30))
        elif target == "metadata":
            pairs = st.lists(st.sampled_from(METADATA), min_size=1, max_size=3, unique_by=lambda kv: kv[0])
            for key, value in draw(pairs):
                if key not in {p.key for p in model.metadata_props}:
                    entry = model.metadata_props.add()
                    entry.key, entry.value = key, value
        elif target == "raw_data" and graph.initializer:
            tensor = draw(st.sampled_from(list(graph.initializer)))
            if tensor.raw_data:
                tensor.raw_data = tensor.raw_data[: draw(st.integers(0, len(tensor.raw_data)))]
        elif target == "values" and graph.initializer:
            # Legal tensors with hostile values: NaN, infinities, extremes, all zero.
            tensor = draw(st.sampled_from(list(graph.initializer)))
            try:
                values = numpy_helper.to_array(tensor).copy()
            except Exception:  # an earlier mutation broke it already
                continue
            if values.size == 0:
                continue
            if values.dtype.kind == "f":
                special = draw(st.sampled_from([np.nan, np.inf, -np.inf, 3e38, -3e38, 1e-45, 0.0]))
            elif values.dtype.kind in "iu":
                info = np.iinfo(values.dtype)
                special = draw(st.sampled_from([info.min, info.max, 0]))
            else:
                continue
            if draw(st.booleans()):
                values[...] = special
            else:
                values.flat[draw(st.integers(0, values.size - 1))] = special
            tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))


@FUZZ
@given(data=st.data(), seed=st.sampled_from(sorted(SEEDS)), which=st.sampled_from(COMMANDS))
def test_field_mutated_models(data, seed, which):
    model = SEEDS[seed]()
    _mutate_fields(model, data.draw)
    run_model("model fields", model.SerializeToString(), which)


@FUZZ
@given(data=st.data(), which=st.sampled_from(COMMANDS))
def test_mutated_external_data(data, which):
    """Weights in weights.bin: mutate the external_data entries, or the weights file itself."""
    model = b.conv_relu_nchw(size=8)[0]
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "m.onnx")
        b.save_external(model, path)
        light = onnx.load(path, load_external_data=False)
        with open(os.path.join(folder, "weights.bin"), "rb") as handle:
            weights = handle.read()
    tensor = data.draw(st.sampled_from(list(light.graph.initializer)))
    entry = data.draw(st.sampled_from(list(tensor.external_data)))
    entry.value = data.draw(st.one_of(
        st.sampled_from(["/etc/passwd", "../weights.bin", "weights.bin/..", ".", "", "-1", "99999999999",
                         "0x10", "1e3", "weights.bin\x00", "nope.bin"]),
        st.integers(-10, 2000).map(str)))
    if data.draw(st.booleans()):
        weights = data.draw(mutated_bytes(weights))
    run_model("external data", light.SerializeToString(), which, external=weights)


# --------------------------------------------------------------------- images

@FUZZ
@given(data=st.data(), fmt=st.sampled_from(IMAGE_FORMATS), which=st.sampled_from(IMAGE_COMMANDS))
def test_mutated_images(data, fmt, which):
    original = IMAGES[fmt]
    image = data.draw(mutated_bytes(original, focus=(min(64, len(original) // 4), len(original))))
    run_model("images", b.conv_relu_nchw(size=8)[0].SerializeToString(), which, image=image)


# -------------------------------------------------------------------- convert

TORCH_FACTORY = """
import torch


def make():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1))
"""
# Each conversion runs the torch exporter (about a second once torch is loaded): fewer cases than the others.
CONVERT_EXAMPLES = max(3, EXAMPLES // 25)


@pytest.fixture(scope="module")
def torch_factory(tmp_path_factory):
    """A factory file and its state dict (bytes), saved by torch itself."""
    torch = pytest.importorskip("torch")
    folder = tmp_path_factory.mktemp("convert")
    factory = folder / "factory.py"
    factory.write_text(TORCH_FACTORY)
    namespace: dict = {}
    exec(compile(TORCH_FACTORY, str(factory), "exec"), namespace)
    buffer = io.BytesIO()
    torch.save(namespace["make"]().state_dict(), buffer)
    return str(factory), buffer.getvalue()


def run_convert(factory: str, weights: bytes | None) -> int:
    with tempfile.TemporaryDirectory(prefix="fuzz-convert-") as folder:
        args = ["convert", "torch", f"{factory}:make", "--input-shape", "1,3,8,8",
                "-o", os.path.join(folder, "out.onnx")]
        if weights is not None:
            path = os.path.join(folder, "weights.pt")
            with open(path, "wb") as handle:
                handle.write(weights)
            args += ["--weights", path]
        code = run_cli("convert", args)
        leftovers = [n for _, _, files in os.walk(folder) for n in files if n.endswith(".part")]
        assert not leftovers, leftovers
        if code == 0:  # what it wrote is a model every command reads
            assert run_cli("convert output", ["layers", os.path.join(folder, "out.onnx"), "--json"]) == 0
    return code


def test_convert_runs_clean_through_its_defaults(torch_factory):
    factory, weights = torch_factory
    assert run_convert(factory, weights) == 0
    assert run_convert(factory, None) == 0  # random weights, said in the metadata


@settings(FUZZ, max_examples=CONVERT_EXAMPLES)
@given(data=st.data())
def test_mutated_state_dicts_convert(data, torch_factory):
    """The state dict (a zip of pickles and tensor bytes, loaded weights_only) mutated at the byte level."""
    factory, weights = torch_factory
    run_convert(factory, data.draw(mutated_bytes(weights, focus=(len(weights) // 2, len(weights)))))
