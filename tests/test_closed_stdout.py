"""A closed stdout (`inspector diff ... --fail-under 100 --json out.json | true`) changes nothing a script
relies on: every command that gates or writes files keeps its exit code and writes its files.

Each case runs the real CLI twice in a subprocess: once with stdout captured (the reference: what the
command prints, its exit code, its files), once with stdout the write end of a pipe whose reader is
already gone. Printing there raises BrokenPipeError; the command must carry on as if nothing happened.
"""

import json
import os
import subprocess
import sys

import onnx
import pytest
from onnx import numpy_helper

import builders as b
import prune_builders as pb

INSPECTOR = [sys.executable, "-m", "inspector"]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def captured(args, cwd):
    return subprocess.run([*INSPECTOR, *map(str, args)], capture_output=True, text=True, cwd=cwd)


def reader_gone(args, cwd):
    """The command with stdout a pipe nobody reads any more (`| true` after `true` has exited)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([*INSPECTOR, *map(str, args)], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, cwd=cwd)
    finally:
        os.close(write_end)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Models and photos shared by every case (each case writes only into its own output names)."""
    root = tmp_path_factory.mktemp("closed_stdout")
    onnx.save(b.conv_relu_nchw(seed=0, size=32)[0], str(root / "a.onnx"))
    onnx.save(b.conv_relu_nchw(seed=1, size=32)[0], str(root / "b.onnx"))  # other weights: diff's SQNR is low
    dead, _ = pb.conv_chain()  # c1's filters 2 and 5 are all zero: exactly prunable, and the audit's dead
    onnx.save(dead, str(root / "dead.onnx"))
    # A channel silent on the photos (bias -1000 before a Relu), then the same model where it fires a little:
    # removing it per the first model's audit moves the second's outputs, so prune --check refuses.
    init = {t.name: t for t in dead.graph.initializer}
    bias = numpy_helper.to_array(init["c1.bias"]).copy()
    bias[0] = -1000.0
    init["c1.bias"].CopyFrom(numpy_helper.from_array(bias, "c1.bias"))
    onnx.save(dead, str(root / "silent.onnx"))
    bias[0] = -0.05
    init["c1.bias"].CopyFrom(numpy_helper.from_array(bias, "c1.bias"))
    onnx.save(dead, str(root / "live.onnx"))
    for i in range(8):  # the audit judges channels from 8 images on
        b.random_photo(str(root / f"p{i}.png"), 16, 16, seed=i)
    result = captured(["audit", "silent.onnx", *[f"p{i}.png" for i in range(8)], "--preprocess", "raw",
                       "--json", "silent_audit.json", "-q"], root)
    assert result.returncode == 0, result.stderr
    return root


PHOTOS = [f"p{i}.png" for i in range(8)]

# (case, argv, exit code, files the command writes: JSON files are compared, others must exist)
CASES = [
    ("audit gate, JSON file", ["audit", "dead.onnx", *PHOTOS, "--preprocess", "raw", "--json", "out.json",
                               "--fail-on-dead", "0"], 1, ["out.json"]),
    ("audit gate, JSON on stdout", ["audit", "dead.onnx", *PHOTOS, "--preprocess", "raw", "--json", "-",
                                    "--fail-on-dead", "0"], 1, []),
    ("audit passing gate", ["audit", "a.onnx", *PHOTOS, "--preprocess", "raw", "--json", "out.json",
                            "--fail-on-dead", "0.5"], 0, ["out.json"]),
    ("diff gate", ["diff", "a.onnx", "b.onnx", "p0.png", "--preprocess", "raw", "--fail-under", "100",
                   "--json", "out.json", "-o", "pictures"], 1, ["out.json", "pictures"]),
    ("diff JSON on stdout", ["diff", "a.onnx", "a.onnx", "p0.png", "--preprocess", "raw", "--fail-under", "100",
                             "--json", "-"], 0, []),
    ("prune --check passes", ["prune", "dead.onnx", "-o", "pruned.onnx", "--check", "p0.png", "--preprocess",
                              "raw", "--json", "out.json"], 0, ["out.json", "pruned.onnx"]),
    ("prune --check refuses", ["prune", "live.onnx", "-o", "pruned.onnx", "--from-audit", "silent_audit.json",
                               "--channels", "--check", *PHOTOS, "--preprocess", "raw", "--tolerance", "1e-9",
                               "--json", "out.json"], 1, ["out.json"]),
    ("layers --json", ["layers", "a.onnx", "--json"], 0, []),
    ("filters --json", ["filters", "a.onnx", "--all", "-o", "pictures", "--json"], 0, ["pictures"]),
    ("maps --json", ["maps", "a.onnx", "p0.png", "--all", "--preprocess", "raw", "-o", "pictures", "--json"], 0,
     ["pictures"]),
    ("report", ["report", "a.onnx", "p0.png", "--preprocess", "raw", "-o", "report.html"], 0, ["report.html"]),
]


def _clean(folder, outputs):
    import shutil

    for name in outputs:
        path = folder / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _written(folder, outputs) -> dict:
    found = {}
    for name in outputs:
        path = folder / name
        assert path.exists(), f"{name} not written"
        if name.endswith(".json"):
            found[name] = json.loads(path.read_text())
        elif path.is_dir():
            found[name] = sorted(os.listdir(path))
            assert found[name], f"nothing written into {name}"
        else:
            found[name] = path.stat().st_size > 0
    return found


def _without_timings(data):
    """JSON as a value, less what differs between two runs of the same command (seconds, providers)."""
    if isinstance(data, dict):
        return {k: _without_timings(v) for k, v in data.items()
                if not any(word in k for word in ("seconds", "time", "elapsed", "provider"))}
    if isinstance(data, list):
        return [_without_timings(v) for v in data]
    return data


@pytest.mark.parametrize("case, argv, code, outputs", CASES, ids=[c[0] for c in CASES])
def test_a_closed_stdout_keeps_the_exit_code_and_the_files(folder, case, argv, code, outputs):
    _clean(folder, ["pruned.onnx", *outputs])
    reference = captured(argv, folder)
    assert reference.returncode == code, reference.stderr
    assert reference.stdout, "the command prints on stdout, so the closed pipe is met"
    expected = _written(folder, outputs)
    _clean(folder, ["pruned.onnx", *outputs])

    closed = reader_gone(argv, folder)
    assert closed.returncode == code, closed.stderr
    assert "Traceback" not in closed.stderr and "unexpected" not in closed.stderr, closed.stderr
    written = _written(folder, outputs)
    assert {k: _without_timings(v) for k, v in written.items()} == \
        {k: _without_timings(v) for k, v in expected.items()}


@pytest.mark.torch
def test_convert_check_with_a_closed_stdout_writes_the_model(tmp_path):
    pytest.importorskip("torch")
    nets = tmp_path / "nets.py"
    nets.write_text("import torch\n\n\ndef make():\n    torch.manual_seed(0)\n"
                    "    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())\n")
    argv = ["convert", "torch", f"{nets}:make", "--input-shape", "1,3,16,16", "-o", "net.onnx", "--check"]
    reference = captured(argv, tmp_path)
    assert reference.returncode == 0 and reference.stdout, reference.stderr
    os.unlink(tmp_path / "net.onnx")
    closed = reader_gone(argv, tmp_path)
    assert closed.returncode == 0, closed.stderr
    assert onnx.load(str(tmp_path / "net.onnx")).graph.node[0].op_type == "Conv"


def test_a_closed_stdout_does_not_hide_an_error(folder):
    """Usage errors still exit 2 with their message when nobody reads stdout."""
    closed = reader_gone(["audit", "missing.onnx", "p0.png"], folder)
    assert closed.returncode == 2 and "missing.onnx" in closed.stderr


def test_the_pipe_in_these_tests_is_really_closed(folder):
    """The harness itself: a plain Python print to this stdout fails (so the cases above meet a closed pipe)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run([sys.executable, "-c", "print('x' * 100000)"], stdout=write_end,
                                stderr=subprocess.PIPE, text=True)
    finally:
        os.close(write_end)
    assert result.returncode != 0 and "BrokenPipeError" in result.stderr
