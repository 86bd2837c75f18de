"""Effectively-zero filters (issue 19 item 6): weights below float32 resolution next to their layer's are dead by
weights, whatever the scale of the layer or of the channels before it; exact prune removes them (a zero-weight
filter with a bias is a constant channel, folded) and the outputs stay within --check's 1e-5.

Trained detectors end with such filters: PP-OCRv5's small detector has filters with max |w| around 1e-27 next to
filter norms of 0.5 to 30, which the all-exactly-zero rule never saw.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

import prune_builders as pb
import trained
from builders import random_photo

from inspector.api import load
from inspector.audit.weights import EFFECTIVELY_ZERO, negligible_filters, weight_stats
from inspector.audit import audit
from inspector.cli import main
from inspector.prune import prune

TINY = 1e-30  # a trained filter's denormal-ish weights, relative to the layer's


# x -> c1 (8; 3: weights x 1e-30, bias 0; 5: weights x 1e-30, bias 0.4; 1: weights x 1e-5) -> Relu
#   -> dw (depthwise 8; 6: weights x 1e-30) -> Relu -> c2 (6; 2: weights x 1e-30) -> Relu -> c3 (4) -> y
# c1[3] is a zero channel, c1[5] the constant 0.4, c1[1] is small but alive (1e-5 is far above float32 resolution);
# dw[6] and c2[2] are constant channels (their biases), and c1[6] feeds only dw[6]: what it contributes downstream
# is below float32 resolution too.
def planted():
    n = pb.Net(21)
    r1 = n.op("Relu", [n.conv("c1", "x", 3, 8, pad=0)], "r1")
    r2 = n.op("Relu", [n.conv("dw", r1, 8, 8, group=8, pad=0)], "r2")
    r3 = n.op("Relu", [n.conv("c2", r2, 8, 6, k=1)], "r3")
    y = n.conv("c3", r3, 6, 4)
    m = n.model(y)
    inits = {t.name: t for t in m.graph.initializer}

    def edit(name, fn):
        value = numpy_helper.to_array(inits[name]).copy()
        fn(value)
        inits[name].CopyFrom(numpy_helper.from_array(value, name))

    def c1_weights(w):
        w[3] *= TINY
        w[5] *= TINY
        w[1] *= 1e-5

    def c1_bias(b):
        b[3], b[5] = 0.0, 0.4

    edit("c1.weight", c1_weights)
    edit("c1.bias", c1_bias)
    edit("dw.weight", lambda w: w.__setitem__(6, w[6] * TINY))
    edit("c2.weight", lambda w: w.__setitem__(2, w[2] * TINY))
    return m


EXPECTED = {"c1": [3, 5, 6], "dw": [6], "c2": [2], "c3": []}


def _dead(model_proto, tmp_path, name="m.onnx") -> dict[str, list[int]]:
    """The audit's dead filters (weights only, no images) per layer."""
    path = str(tmp_path / name)
    onnx.save(model_proto, path)
    return {layer["name"]: layer["dead_filters"] for layer in audit(load(path), quiet=True).to_dict()["layers"]}


def _run(model_proto, x):
    session = ort.InferenceSession(model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"x": one[None]})[0] for one in x])  # batch 1 declared


def _scaled(model_proto, edits: dict):
    """A copy with initializers multiplied by broadcastable factors."""
    m = onnx.ModelProto()
    m.CopyFrom(model_proto)
    for t in m.graph.initializer:
        if t.name in edits:
            value = numpy_helper.to_array(t).astype(np.float64) * edits[t.name]
            t.CopyFrom(numpy_helper.from_array(value.astype(np.float32), t.name))
    return m


def test_rule_on_one_layer():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    w[2] *= np.float32(1e-36)  # denormals, as trained models leave them
    w[4] *= np.float32(1e-4)  # small, alive
    w[5] = 0
    stats = weight_stats(w, np.array([0, 0, 0.5, 0, 0, 0.1], np.float32))
    assert stats.dead_filters == [2, 5] and stats.effectively_zero == [2]
    assert 4 in stats.weak_filters
    assert stats.to_dict()["effectively_zero_filters"] == [2]
    # The threshold is float32's resolution: just above it a filter is alive, just below dead.
    w = np.ones((3, 2, 1, 1))
    w[1] *= EFFECTIVELY_ZERO * 2
    w[2] *= EFFECTIVELY_ZERO / 2
    assert negligible_filters(w).tolist() == [False, False, True]
    # A layer all of one tiny scale is not dead by this rule (scaling the whole layer is no verdict) ...
    assert not negligible_filters(np.full((4, 2, 3, 3), 1e-30)).any()
    # ... and NaN weights judge nothing but exact zeros.
    broken = np.ones((3, 2, 1, 1))
    broken[0] = np.nan
    broken[2] = 0
    assert negligible_filters(broken).tolist() == [False, False, True]


def test_planted_verdicts(tmp_path):
    assert _dead(planted(), tmp_path) == EXPECTED


def _per_channel(seed, count):
    return np.exp(np.random.default_rng(seed).uniform(np.log(1e-3), np.log(1e3), count))


# name -> (edits, layers whose verdicts must not move)
def _rescalings(s: float):
    c1, dw, c2 = _per_channel(2, 8), _per_channel(3, 8), _per_channel(4, 6)
    every = list(EXPECTED)
    return {
        f"c1 x {s:g}, dw / {s:g}": ({"c1.weight": s, "c1.bias": s, "dw.weight": 1 / s}, every),
        f"dw x {s:g}, c2 / {s:g}": ({"dw.weight": s, "dw.bias": s, "c2.weight": 1 / s}, every),
        "dw per channel, c2's inputs back": ({"dw.weight": dw.reshape(8, 1, 1, 1), "dw.bias": dw,
                                             "c2.weight": (1 / dw).reshape(1, 8, 1, 1)}, every),
        "c2 per channel, c3's inputs back": ({"c2.weight": c2.reshape(6, 1, 1, 1), "c2.bias": c2,
                                             "c3.weight": (1 / c2).reshape(1, 6, 1, 1)}, every),
        # A depthwise filter has no other filter reading its input channel to be compared with: its own verdict
        # may move when the channel before it is rescaled alone (not at these scales); every other layer's holds.
        "c1 per channel, the depthwise filters back": ({"c1.weight": c1.reshape(8, 1, 1, 1), "c1.bias": c1,
                                                       "dw.weight": (1 / c1).reshape(8, 1, 1, 1)},
                                                      ["c1", "c2", "c3"]),
    }


@pytest.mark.parametrize("s", [1e-3, 37.5, 1e4])
@pytest.mark.parametrize("case", range(5))
def test_invariant_to_function_preserving_rescaling(s, case, tmp_path):
    """Through the Relus, each rescaling computes the same function; the verdicts of the layers named stay."""
    m = planted()
    name, (edits, layers) = list(_rescalings(s).items())[case]
    rescaled = _scaled(m, edits)
    x = np.random.default_rng(1).standard_normal((2, 3, 12, 12)).astype(np.float32)
    np.testing.assert_allclose(_run(rescaled, x), _run(m, x), rtol=1e-4, atol=1e-5 * float(np.abs(_run(m, x)).max()))
    dead = _dead(rescaled, tmp_path, "scaled.onnx")
    assert {k: dead[k] for k in layers} == {k: EXPECTED[k] for k in layers}, name


def test_exact_prune_removes_them_and_check_passes(tmp_path, capsys):
    m = planted()
    source = str(tmp_path / "planted.onnx")
    onnx.save(m, source)
    photos = [random_photo(str(tmp_path / f"p{i}.png"), 12, 12, seed=i) for i in range(4)]
    audit_json, report = tmp_path / "audit.json", tmp_path / "prune.json"
    assert main(["audit", source, "--json", str(audit_json), "-q"]) == 0
    audited = {layer["name"]: layer for layer in json.loads(audit_json.read_text())["layers"]}
    assert {name: audited[name]["dead_filters"] for name in EXPECTED} == EXPECTED
    assert "5 dead by weights" in capsys.readouterr().out
    out = tmp_path / "pruned.onnx"
    assert main(["prune", source, "-o", str(out), "--check", *photos, "--preprocess", "raw", "--json",
                 str(report)]) == 0
    data = json.loads(report.read_text())
    assert data["exact"] and data["check"]["max_rel_diff"] <= 1e-5
    removed = {layer["name"]: layer["removed"] for layer in data["layers"] if layer["removed"]}
    # c1[3] and c1[5] go with their depthwise channels (5's constant 0.4 through the unpadded depthwise conv is
    # folded into c2's bias); dw[6] is a constant channel that takes c1[6] with it (c1[6] served only dw[6]).
    # c2[2] stays: c3 pads its constant with zeros, so folding it would not be exact.
    assert removed["c1"] == [3, 5, 6] and removed["dw"] == [3, 5, 6]
    kept = {(k["layer"], k["filter"]): k["reason"] for k in data["dead_filters_kept"]}
    assert "padding" in kept[("c2", 2)]
    # Independently of --check: random inputs far from the photos.
    x = np.random.default_rng(4).standard_normal((3, 3, 12, 12)).astype(np.float32)
    pruned = onnx.load(str(out))
    onnx.checker.check_model(pruned, full_check=True)
    np.testing.assert_allclose(_run(pruned, x), _run(m, x), rtol=1e-5, atol=1e-5 * float(np.abs(_run(m, x)).max()))


def test_trained_ppocrv5_effectively_zero(tmp_path):
    """The real detector: its effectively-zero filters are dead by weights, and exact prune removes them with the
    outputs unchanged to 1e-5 on its photos."""
    path, entry = trained.model("ppocrv5_det_small")
    model = load(path)
    layers = audit(model, quiet=True).to_dict()["layers"]
    assert sum(len(layer["effectively_zero_filters"]) for layer in layers) > 100
    result = prune(model)
    out = result.write(str(tmp_path / "pruned.onnx"))
    batch = model.image_batch(trained.photos(entry), entry["preprocess"])
    before = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    after = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    for image in batch:
        a = before.run(None, {before.get_inputs()[0].name: image[None]})[0]
        b = after.run(None, {after.get_inputs()[0].name: image[None]})[0]
        assert float(np.abs(a - b).max()) <= 1e-5 * float(np.abs(a).max())
