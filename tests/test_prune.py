"""`inspector prune`: dead filters removed with every weight that only served them, outputs unchanged.

Every pruned model is checked against onnxruntime on the planted-but-unpruned model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jsonschema
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

import prune_builders as pb
import trained
from builders import random_photo

from inspector.api import load
from inspector.cli import main
from inspector.prune import prune


SCHEMA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "inspector", "schemas",
                      "prune.schema.json")


def _valid(data: dict) -> dict:
    with open(SCHEMA) as handle:
        jsonschema.validate(data, json.load(handle))
    return data


def _save(m, folder, name="planted.onnx") -> str:
    path = os.path.join(str(folder), name)
    onnx.save(m, path)
    return path


def _outputs(path: str, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})


def _max_rel(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.max(np.abs(u.astype(np.float64) - v))) / max(float(np.max(np.abs(u))), 1e-30)
               for u, v in zip(a, b))


def _random_input(path: str, seed=0) -> np.ndarray:
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    shape = [d if isinstance(d, int) else 1 for d in session.get_inputs()[0].shape]
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _weight_nodes(m) -> set[str]:
    """Names of the nodes whose inputs are all constants (computed weights)."""
    constant = {t.name for t in m.graph.initializer}
    names = set()
    for node in m.graph.node:
        if node.op_type != "If" and all(not i or i in constant for i in node.input):
            constant.update(node.output)
            names.add(node.name)
    return names


@pytest.mark.parametrize("builder", pb.BUILDERS, ids=lambda b: b.__name__)
def test_dependency_kinds(builder, tmp_path):
    m, expected = builder()
    source = _save(m, tmp_path)
    result = prune(source)
    removed = {r.name: r.removed for r in result.rows if r.removed}
    assert removed == expected["removed"]
    out = result.write(str(tmp_path / "pruned.onnx"))
    pruned = onnx.load(out)
    onnx.checker.check_model(pruned, full_check=True)
    shapes = {t.name: tuple(t.dims) for t in pruned.graph.initializer}
    for name, shape in expected.get("shapes", {}).items():
        assert shapes[name] == shape, name
    assert sum(r.folded for r in result.rows) == expected.get("folded", 0)
    kept = {(k["layer"], k["filter"]): k["reason"] for k in result.kept_dead}
    for key, word in expected.get("kept", {}).items():
        words = word if isinstance(word, tuple) else (word,)
        assert any(w in kept[key] for w in words), kept[key]
    for seed in range(3):
        x = _random_input(source, seed)
        assert _max_rel(_outputs(source, x), _outputs(out, x)) < 1e-5
    # Names and metadata kept; what was removed is recorded.
    props = {p.key: p.value for p in pruned.metadata_props}
    assert props["inspector.model_name"] == "planted"
    # Nodes that only compute weights (Constant, Cast -> Mul, DequantizeLinear) may become initializers.
    assert [n.name for n in pruned.graph.node if n.name not in _weight_nodes(pruned)] == \
        [n.name for n in m.graph.node if n.name not in _weight_nodes(m)]
    if expected["removed"] or expected.get("folded"):
        record = json.loads(props["inspector.pruned"])
        assert record["removed_filters"] == expected["removed"] and record["exact"]
    else:
        assert "inspector.pruned" not in props
        original = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
        for t in pruned.graph.initializer:
            np.testing.assert_array_equal(numpy_helper.to_array(t), original[t.name])


def test_params_and_macs_counted_independently(tmp_path):
    m, _ = pb.conv_chain()
    result = prune(_save(m, tmp_path))
    row = {r.name: r for r in result.rows}
    # c1: 8x3x3x3 + 8 -> 6x3x3x3 + 6 on a 12x12 output; c2 loses two input channels.
    assert (row["c1"].params_before, row["c1"].params_after) == (8 * 27 + 8, 6 * 27 + 6)
    assert (row["c2"].params_before, row["c2"].params_after) == (16 * 72 + 16, 16 * 54 + 16)
    assert (row["c1"].macs_before, row["c1"].macs_after) == (144 * 8 * 27, 144 * 6 * 27)
    assert result.params_before - result.params_after == 2 * 28 + 16 * 18


def test_weight_rule_needs_exact_zeros(tmp_path):
    """A filter the audit calls dead by its tiny norm is not exactly zero: kept unless --channels."""
    m, _ = pb.nothing_dead()
    init = {t.name: t for t in m.graph.initializer}
    w = numpy_helper.to_array(init["c1.weight"]).copy()
    w[3] *= 1e-6
    init["c1.weight"].CopyFrom(numpy_helper.from_array(w, "c1.weight"))
    path = _save(m, tmp_path)
    dead = {"c1": {"filters": [3], "channels": []}, "c2": {"filters": [], "channels": []}}
    exact = prune(path, dead=dead)
    assert exact.removed_filters == 0 and "not exactly zero" in exact.kept_dead[0]["reason"]
    loose = prune(path, dead=dead, channels=True)
    assert loose.removed_filters == 1 and not loose.exact and loose.approximate == {"c1": [3]}


# ----------------------------------------------------------------------------------- CLI


def _cli(*args) -> int:
    return main([str(a) for a in args])


def test_cli_writes_checks_and_reports(tmp_path, capsys):
    m, _ = pb.flatten_gemm_nchw()
    source = _save(m, tmp_path)
    photo = random_photo(str(tmp_path / "p.png"), 20, 20)
    out, report = tmp_path / "out.onnx", tmp_path / "prune.json"
    assert _cli("prune", source, "-o", out, "--check", photo, "--preprocess", "raw", "--json", report) == 0
    text = capsys.readouterr().out
    assert "4->3" in text and "max relative" in text
    data = _valid(json.loads(report.read_text()))
    assert data["removed_filters"] == 1 and data["check"]["max_rel_diff"] < 1e-5 and data["output"] == str(out)
    assert os.path.exists(out)


def test_cli_dry_run_writes_nothing(tmp_path, capsys):
    m, _ = pb.conv_chain()
    source = _save(m, tmp_path)
    before = sorted(os.listdir(tmp_path))
    assert _cli("prune", source, "--dry-run", "--json", "-") == 0
    captured = capsys.readouterr()
    assert _valid(json.loads(captured.out))["removed_filters"] == 2 and "8->6" in captured.err
    assert sorted(os.listdir(tmp_path)) == before


@pytest.mark.parametrize("args, message", [
    ((), "-o OUT.onnx"),
    (("-o", "{dir}/o.onnx", "--channels"), "--check"),
    (("-o", "{model}"), "must not be the model"),
    (("-o", "{dir}/o.onnx", "--from-audit", "{dir}/missing.json"), "cannot read"),
    (("-o", "{dir}/o.onnx", "--from-audit", "{dir}/other.json"), "does not have"),
    (("-o", "{dir}/o.onnx", "--from-audit", "{dir}/garbage.json"), "not JSON"),
])
def test_cli_usage_errors(tmp_path, capsys, args, message):
    m, _ = pb.conv_chain()
    source = _save(m, tmp_path)
    (tmp_path / "other.json").write_text(json.dumps({"layers": [{"name": "conv9", "dead_filters": [1]}]}))
    (tmp_path / "garbage.json").write_text("{not json")
    args = [a.format(dir=tmp_path, model=source) for a in args]
    assert _cli("prune", source, *args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not os.path.exists(tmp_path / "o.onnx")


def test_audit_then_prune_channels(tmp_path, capsys):
    """--channels: a channel silent on every image (strongly negative bias before a Relu) goes, and --check
    measures the change (none here: it is zero on those images); the audit's JSON drives it."""
    m, _ = pb.conv_chain()
    init = {t.name: t for t in m.graph.initializer}
    b = numpy_helper.to_array(init["c1.bias"]).copy()
    b[0] = -1000.0
    init["c1.bias"].CopyFrom(numpy_helper.from_array(b, "c1.bias"))
    source = _save(m, tmp_path)
    photos = [random_photo(str(tmp_path / f"p{i}.png"), 16, 16, seed=i) for i in range(8)]  # the audit's minimum
    out, report = tmp_path / "out.onnx", tmp_path / "r.json"
    # Silent on 3 images is not judged dead by the audit: --channels keeps it and says why.
    few_json = tmp_path / "few.json"
    assert _cli("audit", source, *photos[:3], "--preprocess", "raw", "--json", few_json, "-q") == 0
    assert 0 in next(layer for layer in json.loads(few_json.read_text())["layers"] if layer["name"] == "c1")["dead_channels"]
    capsys.readouterr()
    assert _cli("prune", source, "-o", out, "--from-audit", few_json, "--channels", "--check", *photos[:3],
                "--preprocess", "raw", "--json", report) == 0
    assert json.loads(report.read_text())["layers"][0]["removed"] == [2, 5]
    assert "too few images to be judged" in capsys.readouterr().err
    audit_json = tmp_path / "audit.json"
    assert _cli("audit", source, *photos, "--preprocess", "raw", "--json", audit_json, "-q") == 0
    audited = json.loads(audit_json.read_text())
    c1 = next(layer for layer in audited["layers"] if layer["name"] == "c1")
    assert 0 in c1["dead_channels"] and c1["channels_judged"]
    # Without --channels the silent channel stays (not exactly zero), the planted zeros go.
    assert _cli("prune", source, "-o", out, "--from-audit", audit_json, "--json", report) == 0
    data = json.loads(report.read_text())
    assert data["exact"] and data["layers"][0]["removed"] == [2, 5]
    assert _cli("prune", source, "-o", out, "--from-audit", audit_json, "--channels", "--check", *photos,
                "--preprocess", "raw", "--json", report) == 0
    data = _valid(json.loads(report.read_text()))
    assert not data["exact"] and data["layers"][0]["removed"] == [0, 2, 5] and data["approximate"] == {"c1": [0]}
    assert data["check"]["max_rel_diff"] < 1e-6
    # --channels without --from-audit audits the --check images itself.
    assert _cli("prune", source, "-o", out, "--channels", "--check", *photos, "--preprocess", "raw", "--json",
                report) == 0
    data = _valid(json.loads(report.read_text()))
    assert data["layers"][0]["removed"] == [0, 2, 5] and data["check"]["max_rel_diff"] < 1e-6
    # A tolerance the change cannot meet: exit 1 and nothing written.
    b[0] = -0.05  # now fires on some pixels: removing it moves the outputs
    init["c1.bias"].CopyFrom(numpy_helper.from_array(b, "c1.bias"))
    source = _save(m, tmp_path, "live.onnx")
    os.unlink(out)
    assert _cli("prune", source, "-o", out, "--from-audit", audit_json, "--channels", "--check", *photos,
                "--preprocess", "raw", "--tolerance", "1e-9") == 1
    assert "nothing written" in capsys.readouterr().err and not os.path.exists(out)


def test_help_lists_prune():
    out = subprocess.run([sys.executable, "-m", "inspector", "prune", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--from-audit" in out.stdout


# ---------------------------------------------------------------------------- real models


def _plant(path: str, plan: dict, folder) -> str:
    """Zero the weights and bias of the given filters of a real model; save it beside the test."""
    m = onnx.load(path)
    layers = {layer.name: layer for layer in load(path).layers}
    init = {t.name: t for t in m.graph.initializer}
    for name, filters in plan.items():
        layer = layers[name]
        for tensor in (layer.weight_input, layer.bias_input):
            array = numpy_helper.to_array(init[tensor]).copy()
            array[filters] = 0
            init[tensor].CopyFrom(numpy_helper.from_array(array, tensor))
    return _save(m, folder)


def _photos_batch(path: str, entry: dict, preprocess: str) -> np.ndarray:
    model = load(path)
    return model.image_batch(trained.photos(entry)[:2], preprocess)


def test_trained_vgg16_tf2onnx(tmp_path):
    path, entry = trained.model("vgg16_tumor")
    plan = {"block1_conv2": [1, 7, 30], "block3_conv2": [0, 100], "block5_conv3": [5, 6, 511]}
    source = _plant(path, plan, tmp_path)
    result = prune(source)
    assert {r.name: r.removed for r in result.rows if r.removed} == plan
    assert result.kept_dead == []
    out = result.write(str(tmp_path / "pruned.onnx"))
    onnx.checker.check_model(out, full_check=True)
    record = json.loads({p.key: p.value for p in onnx.load(out).metadata_props}["inspector.pruned"])
    assert record["removed_filters"] == plan and record["exact"]
    pruned = {t.name: tuple(t.dims) for t in onnx.load(out, load_external_data=False).graph.initializer}
    original = {t.name: tuple(t.dims) for t in onnx.load(source, load_external_data=False).graph.initializer}
    changed = {name: (original[name], shape) for name, shape in pruned.items() if original[name] != shape}
    # Each planted filter's weights and bias, the next conv's input channels, and through
    # Transpose + Flatten (NHWC: channel c is every 512th feature) the first dense layer's rows.
    model = load(source)
    layers = {layer.name: layer for layer in model.layers}
    expect = {}
    for name, following in (("block1_conv2", "block2_conv1"), ("block3_conv2", "block3_conv3"),
                            ("block5_conv3", None)):
        w, b = layers[name].weight_input, layers[name].bias_input
        expect[w] = (original[w], (original[w][0] - len(plan[name]),) + original[w][1:])
        expect[b] = (original[b], (original[b][0] - len(plan[name]),))
        if following:
            fw = layers[following].weight_input
            expect[fw] = (original[fw], (original[fw][0], original[fw][1] - len(plan[name])) + original[fw][2:])
    dense = "functional_1/dense_1/Cast/ReadVariableOp:0"
    expect[dense] = ((25088, 64), (25088 - 3 * 49, 64))
    assert changed == expect
    batch = _photos_batch(source, entry, "raw")
    assert _max_rel(_outputs(source, batch), _outputs(out, batch)) < 1e-5
    x = np.random.default_rng(0).random((2, 240, 240, 3)).astype(np.float32)
    assert _max_rel(_outputs(source, x), _outputs(out, x)) < 1e-5


def test_trained_yolov8_c2f(tmp_path):
    path, entry = trained.model("yolov8n_doclaynet")
    # Inside a bottleneck (m.0.cv1 feeds only m.0.cv2), and a conv feeding both the next conv
    # (model.5) and the neck's Concat (model.15); model.2.cv1 filter 20 sits in the Split half that a
    # residual Add ties to a live filter: kept; its filter 1 sits in the half that only the Concat reads.
    plan = {"model.4.m.0.cv1.conv": [3, 9], "model.4.cv2.conv": [2, 40], "model.2.cv1.conv": [1, 20]}
    source = _plant(path, plan, tmp_path)
    result = prune(source)
    removed = {r.name: r.removed for r in result.rows if r.removed}
    assert removed == {"model.4.m.0.cv1.conv": [3, 9], "model.4.cv2.conv": [2, 40], "model.2.cv1.conv": [1]}
    assert [(k["layer"], k["filter"]) for k in result.kept_dead] == [("model.2.cv1.conv", 20)]
    assert "tied to a live channel" in result.kept_dead[0]["reason"]
    touched = {r.name for r in result.rows if r.params_after != r.params_before}
    assert touched == {"model.2.cv1.conv", "model.2.cv2.conv", "model.4.m.0.cv1.conv", "model.4.m.0.cv2.conv",
                       "model.4.cv2.conv", "model.5.conv", "model.15.cv1.conv"}
    out = result.write(str(tmp_path / "pruned.onnx"))
    onnx.checker.check_model(out)
    split = next(n for n in onnx.load(out).graph.node if n.name == "/model.2/Split")
    assert list(next(a for a in split.attribute if a.name == "split").ints) == [15, 16]
    batch = _photos_batch(source, entry, "raw")[:1]
    assert _max_rel(_outputs(source, batch), _outputs(out, batch)) < 1e-5


# ------------------------------------------------------------------ constant channels through ops

@pytest.mark.parametrize("op, attrs", [
    ("Relu", {}), ("LeakyRelu", {"alpha": 0.2}), ("Sigmoid", {}), ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}),
    ("HardSwish", {}), ("Tanh", {}), ("Elu", {"alpha": 0.7}), ("Selu", {}), ("Celu", {"alpha": 1.5}),
    ("Softplus", {}), ("Softsign", {}), ("Gelu", {}), ("Gelu", {"approximate": "tanh"}), ("Mish", {}),
    ("ThresholdedRelu", {"alpha": 0.4}), ("Neg", {}), ("Abs", {}), ("Erf", {}),
])
def test_constant_channel_values_match_onnxruntime(op, attrs):
    """What the tracer believes a constant channel becomes, against onnxruntime running the op."""
    from onnx import TensorProto, helper

    from inspector.prune import values

    x = np.array([-3.0, -1.0, -0.25, 0.0, 0.3, 0.5, 2.0, 7.0])
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    opset = 20 if op == "Gelu" else 18
    m = helper.make_model(helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8])],
                                            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8])]),
                          opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 9
    session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])  # every op runs
    expected = session.run(None, {"x": x.astype(np.float32)})[0]
    got = values.UNARY[op](node, x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert np.isnan(values.UNARY[op](node, np.array([np.nan]))).all()  # a live channel stays live


# ------------------------------------------------------------ every listed unit: removed or kept with a reason


def _account(result, dead) -> None:
    """Each filter or channel the audit lists is removed (in its layer's row) or kept with a reason, never both,
    never neither; the printed counts are these."""
    removed = {r.name: set(r.removed) for r in result.rows}
    kept = {(k["layer"], k["filter"]): k["reason"] for k in result.kept_dead}
    listed = {(name, i) for name, found in dead.items() for i in set(found["filters"]) | set(found["channels"])}
    for name, index in listed:
        gone = index in removed.get(name, set())
        assert gone != ((name, index) in kept), (name, index)
        assert gone or kept[(name, index)].strip()
    went = sum(index in removed.get(name, set()) for name, index in listed)
    assert result.audit == {"listed": len(listed), "removed": went, "kept": len(listed) - went}
    assert f"the audit lists {len(listed)} dead filters and channels: removed {went}, kept {len(listed) - went}" \
        in result.table()


@pytest.mark.parametrize("builder", pb.BUILDERS, ids=lambda b: b.__name__)
@pytest.mark.parametrize("channels", [False, True], ids=["exact", "channels"])
def test_every_listed_unit_removed_or_kept(builder, channels, tmp_path):
    """An audit listing the first and last channel of every layer (and the planted zeros): nothing is silent."""
    m, expected = builder()
    source = _save(m, tmp_path)
    model = load(source)
    dead = {layer.name: {"filters": sorted(expected["removed"].get(layer.name, [])),
                         "channels": sorted({0, layer.filters - 1})} for layer in model.layers}
    result = prune(source, dead=dead, channels=channels)
    _account(result, dead)
    if channels and result.changed:
        out = result.write(str(tmp_path / "pruned.onnx"))
        onnx.checker.check_model(out, full_check=True)


def test_trained_ppocrv5_channels_accounted(tmp_path):
    """Issue 19's text detector: its audit's dead filters and channels, each removed or kept with a reason."""
    from inspector.audit import audit

    path, entry = trained.model("ppocrv5_det_small")
    photos = trained.photos(entry)
    audited = audit(load(path), photos * 3, preprocess=entry["preprocess"], quiet=True, device="cpu").to_dict()
    from inspector.prune.audit_input import dead_by_layer

    dead = dead_by_layer(audited)
    result = prune(path, dead=dead, channels=True)
    _account(result, dead)
    assert result.audit["removed"] > 500 and result.removed_filters > 500
    out = result.write(str(tmp_path / "pruned.onnx"))
    onnx.checker.check_model(out, full_check=True)


def test_noise_floor_is_the_model_against_itself(tmp_path):
    """noise_floor: the original run by two onnxruntime sessions with other conv kernels; on a tiny model it is
    float32 rounding (well under the 1e-5 exact tolerance), and the same figure as comparing two such sessions
    by hand."""
    import onnxruntime as ort

    from inspector.prune.check import noise_floor

    m, _ = pb.conv_chain()
    source = _save(m, tmp_path)
    model = load(source)
    photo = random_photo(str(tmp_path / "p.png"), 20, 20)
    batch = model.image_batch([photo], "raw")
    floor = noise_floor(model.file, iter(batch))
    outputs = []
    for level in (ort.GraphOptimizationLevel.ORT_ENABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED):
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        outputs.append(session.run(None, {session.get_inputs()[0].name: batch})[0].astype(np.float64))
    by_hand = np.max(np.abs(outputs[0] - outputs[1])) / np.max(np.abs(outputs[0]))
    assert 0 <= floor < 1e-5
    assert floor == pytest.approx(by_hand, abs=1e-9)


@pytest.mark.parametrize("noise, accepted", [(1e-5, True), (1e-7, False)])
def test_exact_check_past_1e5_is_judged_against_the_models_own_noise(tmp_path, capsys, monkeypatch, noise, accepted):
    """Exact pruning whose outputs move 2e-5: accepted where the original model's own float32 noise on the same
    images is 1e-5 (within 4x), refused (exit 1, nothing written) where it is 1e-7; both said, both in the JSON."""
    import inspector.prune.check as check

    real_compare = check.compare

    def moved(*args, **kwargs):
        result = real_compare(*args, **kwargs)
        result["max_rel_diff"] = 2e-5
        return result

    monkeypatch.setattr(check, "compare", moved)
    monkeypatch.setattr(check, "noise_floor", lambda *args, **kwargs: noise)
    m, _ = pb.flatten_gemm_nchw()
    source = _save(m, tmp_path)
    photo = random_photo(str(tmp_path / "p.png"), 20, 20)
    out, report = tmp_path / "out.onnx", tmp_path / "prune.json"
    code = _cli("prune", source, "-o", out, "--check", photo, "--preprocess", "raw", "--json", report)
    captured = capsys.readouterr()
    assert code == (0 if accepted else 1)
    assert os.path.exists(out) == accepted
    assert f"own float32 noise on those images (onnxruntime with other conv kernels) is {noise:.3g}" in captured.out
    data = _valid(json.loads(report.read_text()))
    assert data["check"]["noise_floor"] == noise and data["check"]["tolerance"] == pytest.approx(4 * noise if accepted else 1e-5)


# x (1, 2, 50) -> Conv1d c1 (filter 1 all zero) -> Relu -> Conv1d c2 -> y      (an audio/sensor model)
def test_one_d_convs_are_refused_as_such(tmp_path, capsys):
    """prune follows 2-D maps: a model of 1-D convs is refused in one line that says so (exit 2), not with a
    question whether onnxruntime runs it (it does: checked here)."""
    from onnx import helper

    import builders

    w = builders.rng(0).standard_normal((4, 2, 3)).astype(np.float32)
    w[1] = 0
    w2 = builders.rng(1).standard_normal((3, 4, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="c1", pads=[1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["y"], name="c2", pads=[1, 1])]
    m = builders.model(nodes, [builders.image_input(shape=(1, 2, 50))], [builders.out("y")],
                       [numpy_helper.from_array(w, "w"), numpy_helper.from_array(w2, "w2")])
    source = _save(m, tmp_path)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    assert session.run(None, {"x": np.ones((1, 2, 50), np.float32)})[0].shape == (1, 3, 50)
    assert _cli("prune", source, "--dry-run") == 2
    err = capsys.readouterr().err
    assert "1-D" in err and "'c1'" in err and "does onnxruntime run it" not in err and len(err.strip().splitlines()) == 1


def test_channels_the_audit_did_not_confirm_are_listed_as_kept(tmp_path, capsys):
    """An audit whose verification refused a silent channel (``not_confirmed_channels``): --channels removes
    the confirmed one, lists the refused one as kept with the reason, and counts both as the audit's."""
    m, _ = pb.conv_chain()
    source = _save(m, tmp_path)
    audit = {"layers": [{"name": "c1", "dead_filters": [], "dead_channels": [0, 1], "channels_judged": True,
                         "not_confirmed_channels": [1]}]}
    audit_json = tmp_path / "audit.json"
    audit_json.write_text(json.dumps(audit))
    photo = random_photo(str(tmp_path / "p.png"), 16, 16)
    report = tmp_path / "r.json"
    code = _cli("prune", source, "--dry-run", "--from-audit", audit_json, "--channels", "--check", photo,
                "--preprocess", "raw", "--json", report)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    data = _valid(json.loads(report.read_text()))
    removed = {(layer["name"], f) for layer in data["layers"] for f in layer["removed"]}
    assert ("c1", 0) in removed and ("c1", 1) not in removed
    kept = {(k["layer"], k["filter"]): k for k in data["dead_filters_kept"]}
    assert "not confirmed" in kept[("c1", 1)]["reason"] and kept[("c1", 1)]["unit"] == "channel"
    assert data["audit"]["listed"] == data["audit"]["removed"] + data["audit"]["kept"]
    assert ("c1", 1) in {(k["layer"], k["filter"]) for k in data["dead_filters_kept"]}
    assert "did not confirm" in captured.err
