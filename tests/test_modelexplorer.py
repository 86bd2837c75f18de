"""audit/diff --model-explorer: Google Model Explorer node data that lands on the ONNX adapter's nodes.

The format is checked by ``check_node_data`` below, a mirror of the dataclasses of
``model_explorer/node_data_builder.py`` in ai-edge-model-explorer 0.1.34 (``ModelNodeData``: graph id ->
``GraphNodeData``; ``NodeDataResult``, ``ThresholdItem``, ``GradientItem``), with their required fields and
types; the node ids against the rules of model-explorer-onnx 0.4.2 and onnx-ir 1.1.0's ``NameFixPass``
(the expected ids below were also read from the real adapter's ``convert`` once, by hand, see
docs/audit.md). The figures are checked against the audit's and diff's own JSON, read back from disk.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

import builders as b
import inspector
from inspector import modelexplorer
from inspector.audit import audit
from inspector.cli import main
from inspector.errors import InspectorError

CONV_OPS = {"Conv", "ConvTranspose", "QLinearConv", "ConvInteger"}


# ------------------------------------------------------------------ the format (node_data_builder 0.1.34)

def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _optional_str(value) -> bool:
    return value is None or isinstance(value, str)


def _check_fields(item, where: str, required: dict, optional: dict) -> list[str]:
    """``required``/``optional``: field -> predicate on its value."""
    if not isinstance(item, dict):
        return [f"{where}: not an object"]
    errors = [f"{where}: missing '{name}'" for name in required if name not in item]
    for name, value in item.items():
        check = required.get(name) or optional.get(name)
        if check is None:
            errors.append(f"{where}: unknown field '{name}'")
        elif not check(value):
            errors.append(f"{where}.{name}: wrong type or value {value!r}")
    return errors


NODE_DATA_RESULT = ({"value": _number}, {"bgColor": _optional_str, "textColor": _optional_str})
THRESHOLD_ITEM = ({"value": _number, "bgColor": lambda v: isinstance(v, str)}, {"textColor": _optional_str})
GRADIENT_ITEM = ({"stop": lambda v: _number(v) and 0 <= v <= 1},
                 {"bgColor": _optional_str, "textColor": _optional_str})
AGGREGATED_STATS = {"min", "max", "sum", "avg"}


def check_node_data(data) -> list[str]:
    """Everything in ``data`` that ``ModelNodeData``/``GraphNodeData`` (node_data_builder 0.1.34) would not
    hold, plus the web app's reading of thresholds (the first item whose value is >= the node's wins, so
    they must ascend). Empty when valid."""
    if not isinstance(data, dict) or not data:
        return ["top level: not a non-empty object of graph id -> GraphNodeData"]
    errors = []
    boolean = lambda v: isinstance(v, bool)  # noqa: E731
    graph_fields = (
        {"results": lambda v: isinstance(v, dict)},
        {"name": _optional_str, "thresholds": lambda v: isinstance(v, list), "gradient": lambda v: isinstance(v, list),
         "hideInAggregatedStatsTable": boolean, "hideInChildrenStatsTable": boolean,
         "hideAggregatedStats": lambda v: v is None or (isinstance(v, list) and set(v) <= AGGREGATED_STATS),
         "showExpandedSummaryOnGroupNode": boolean, "showLabelCountColumnsInChildrenStatsTable": boolean})
    for graph, graph_data in data.items():
        where = f"graph {graph!r}"
        if not isinstance(graph, str):
            errors.append(f"{where}: id is not a string")
        errors += _check_fields(graph_data, where, *graph_fields)
        if not isinstance(graph_data, dict):
            continue
        for key, result in (graph_data.get("results") or {}).items():
            errors += _check_fields(result, f"{where} result {key!r}", *NODE_DATA_RESULT)
        thresholds = graph_data.get("thresholds") or []
        for i, item in enumerate(thresholds):
            errors += _check_fields(item, f"{where} threshold {i}", *THRESHOLD_ITEM)
        values = [item.get("value") for item in thresholds if isinstance(item, dict)]
        if all(_number(v) for v in values) and values != sorted(values):
            errors.append(f"{where}: thresholds do not ascend")
        gradient = graph_data.get("gradient") or []
        for i, item in enumerate(gradient):
            errors += _check_fields(item, f"{where} gradient {i}", *GRADIENT_ITEM)
        if gradient and {0, 1} - {item.get("stop") for item in gradient if isinstance(item, dict)}:
            errors.append(f"{where}: a gradient needs stops 0 and 1")
    return errors


def colour(graph_data, value):
    """The background Model Explorer gives a node of this value (web app's getBgColor, thresholds only)."""
    for item in graph_data["thresholds"]:
        if value <= item["value"]:
            return item["bgColor"]
    return "transparent"


@pytest.mark.parametrize("bad", [
    {},
    {"g": {}},
    {"g": {"results": {"n": {}}}},
    {"g": {"results": {"n": {"value": "0.5"}}}},
    {"g": {"results": {"n": {"value": True}}}},
    {"g": {"results": {"n": {"value": 1, "colour": "red"}}}},
    {"g": {"results": {}, "thresholds": [{"value": 1}]}},
    {"g": {"results": {}, "thresholds": [{"value": 2, "bgColor": "red"}, {"value": 1, "bgColor": "blue"}]}},
    {"g": {"results": {}, "gradient": [{"stop": 0, "bgColor": "red"}]}},
    {"g": {"results": {}, "hideAggregatedStats": ["median"]}},
])
def test_the_validator_refuses_what_the_builder_would_not_hold(bad):
    assert check_node_data(bad)


def test_the_validator_accepts_the_builders_own_example_shape():
    data = {"main": {"results": {"a": {"value": 1}, "b": {"value": 2.5, "bgColor": "#ff0000"}},
                     "thresholds": [{"value": 10, "bgColor": "red"}, {"value": 50, "bgColor": "blue"}],
                     "gradient": [{"stop": 0, "bgColor": "#000000"}, {"stop": 1, "bgColor": "#ffffff"}]}}
    assert check_node_data(data) == []


# ------------------------------------------------------------------ node ids


def _branch(tag):
    """If branch: a nameless node, two named 'dup', a nameless one (its own taken names, shared counters)."""
    return helper.make_graph([
        helper.make_node("Identity", ["x"], [f"{tag}_a"]),
        helper.make_node("Identity", [f"{tag}_a"], [f"{tag}_b"], name="dup"),
        helper.make_node("Identity", [f"{tag}_b"], [f"{tag}_c"], name="dup"),
        helper.make_node("Identity", [f"{tag}_c"], [f"{tag}_out"]),
    ], tag, [], [helper.make_tensor_value_info(f"{tag}_out", TensorProto.FLOAT, None)])


def _awkward_graph():
    """x -> Conv() -> Relu(node) -> Conv(dup) -> Conv(dup) -> Add(If(), ) -> Conv() -> Conv(dup_1) -> y

    Expected ids, read from model-explorer-onnx 0.4.2's convert of this graph: the nameless Conv takes
    'node', so the Relu *named* 'node' becomes 'node_1'; the second 'dup' is 'dup_1'; the If 'node_2'; its
    branches (else_branch first: onnx.helper sorts attributes) count 'dup' and 'node' on, so the Add after
    it is 'node_5'; the Conv named 'dup_1', a name already given, becomes 'dup_1_1'.
    """
    r = b.rng(0)
    inits = [numpy_helper.from_array(r.standard_normal((4, c, 3, 3)).astype(np.float32) * 0.2, f"w{i}")
             for i, c in enumerate((3, 4, 4, 4, 4))]
    pad = dict(pads=[1, 1, 1, 1])
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["c1"], **pad),
        helper.make_node("Relu", ["c1"], ["r1"], name="node"),
        helper.make_node("Conv", ["r1", "w1"], ["c2"], name="dup", **pad),
        helper.make_node("Conv", ["c2", "w2"], ["c3"], name="dup", **pad),
        helper.make_node("If", ["cond"], ["branch"], then_branch=_branch("then"), else_branch=_branch("else")),
        helper.make_node("Add", ["c3", "branch"], ["s"]),
        helper.make_node("Conv", ["s", "w3"], ["c4"], **pad),
        helper.make_node("Conv", ["c4", "w4"], ["y"], name="dup_1", **pad),
    ]
    return helper.make_graph(nodes, "awkward", [b.image_input(shape=(1, 3, 8, 8)),
                                                helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                             [b.out("y")], inits)


def test_node_ids_follow_the_onnx_adapters_naming():
    graph = _awkward_graph()
    assert modelexplorer.node_ids(graph) == ["node", "node_1", "dup", "dup_1", "node_2", "node_5", "node_6",
                                             "dup_1_1"]


def test_graph_id_is_the_graph_name_or_main():
    m = b.model([helper.make_node("Relu", ["x"], ["y"])], [b.image_input()], [b.out("y")])
    assert modelexplorer.graph_id(m) == "g"
    m.graph.name = ""  # set, empty: the adapter keeps it
    assert modelexplorer.graph_id(m) == ""
    m.graph.ClearField("name")
    assert modelexplorer.graph_id(m) == "<main>"
    m2 = onnx.ModelProto()
    m2.ParseFromString(m.SerializeToString())  # as a file reads
    assert modelexplorer.graph_id(m2) == "<main>"


# ------------------------------------------------------------------ audit


def _nameless_net(dead_filters=(1, 5)):
    """Conv() -> Relu() -> Conv(block) -> Relu() -> Conv() -> Sigmoid(): nameless convs (onnxruntime refuses
    duplicate node names, so those are test_node_ids_follow_the_onnx_adapters_naming's alone).

    The first conv's filters ``dead_filters`` are zero (weights and bias)."""
    r = b.rng(3)
    shapes = [(8, 3), (8, 8), (6, 8)]
    inits, nodes, tensor = [], [], "x"
    for i, (out, cin) in enumerate(shapes):
        w = (r.standard_normal((out, cin, 3, 3)) * np.sqrt(2 / (9 * cin))).astype(np.float32)
        w -= w.mean(axis=(1, 2, 3), keepdims=True)
        bias = np.full(out, 0.3, np.float32)
        if i == 0:
            w[list(dead_filters)], bias[list(dead_filters)] = 0, 0
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(bias, f"b{i}")]
        name = "block" if i == 1 else ""
        act = "Sigmoid" if i == 2 else "Relu"
        nodes += [helper.make_node("Conv", [tensor, f"w{i}", f"b{i}"], [f"c{i}"], name=name, pads=[1, 1, 1, 1]),
                  helper.make_node(act, [f"c{i}"], [f"a{i}"])]
        tensor = f"a{i}"
    m = b.model(nodes, [b.image_input(shape=("N", 3, 12, 12))], [b.out(tensor)], inits)
    # ids: Conv 'node', Relu 'node_1', Conv 'block', Relu 'node_2', Conv 'node_3', Sigmoid 'node_4'
    return m, ["node", "block", "node_3"]


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    r = np.random.default_rng(1)
    for i in range(12):
        Image.fromarray(r.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(folder / f"img{i:02d}.png")
    return str(folder)


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _read(path):
    with open(path) as handle:
        return json.load(handle)


def _layer_dead_fraction(layer: dict) -> float:
    """A layer's dead fraction from the audit JSON's lists, as its summary's dead_fraction counts units."""
    dead = set(layer["dead_filters"])
    if layer["channels_judged"]:
        dead |= set(layer["dead_channels"]) - set(layer["not_confirmed_channels"])
    return len(dead) / layer["filters"]


def test_audit_writes_each_conv_nodes_dead_fraction(save, images, tmp_path, capsys):
    m, ids = _nameless_net()
    path = save(m)
    overlay, report = tmp_path / "overlay.json", tmp_path / "audit.json"
    code, out, err = run_cli(capsys, "audit", path, images, "--preprocess", "raw", "--json", report,
                             "--model-explorer", overlay, "-q")
    assert code == 0, err
    data, audit = _read(overlay), _read(report)
    assert check_node_data(data) == []
    assert list(data) == ["g"]
    graph_data = data["g"]
    assert list(graph_data["results"]) == ids  # conv nodes in file order, by the adapter's ids
    figures = [_layer_dead_fraction(layer) for layer in audit["layers"]]
    assert [graph_data["results"][key]["value"] for key in ids] == figures
    assert figures[0] == pytest.approx(2 / 8)  # the two planted dead filters, at least
    filters = [layer["filters"] for layer in audit["layers"]]
    assert sum(f * n for f, n in zip(figures, filters)) / sum(filters) == pytest.approx(
        audit["summary"]["dead_fraction"])
    assert colour(graph_data, figures[0]) != colour(graph_data, 0.0)  # dead and healthy look different
    assert f"{overlay}  (Model Explorer node data: 3 conv node(s) of graph 'g')" in err


def test_audit_without_images_counts_dead_filters(save, tmp_path, capsys):
    m, ids = _nameless_net(dead_filters=(0, 1, 2, 3, 4, 5, 6))
    overlay = tmp_path / "overlay.json"
    code, _, err = run_cli(capsys, "audit", save(m), "--model-explorer", overlay)
    assert code == 0, err
    results = _read(overlay)["g"]["results"]
    assert {key: results[key]["value"] for key in ids} == {"node": 7 / 8, "block": 0.0, "node_3": 0.0}


def test_python_api_and_the_wrong_model(save, tmp_path):
    m, ids = _nameless_net()
    model = inspector.load(save(m))
    result = audit(model)
    data = modelexplorer.audit_node_data(result, model)
    assert list(data["g"]["results"]) == ids
    other = inspector.load(save(b.conv_relu_nchw()[0], "other.onnx"))
    with pytest.raises(InspectorError, match="pass the model it was computed on"):
        modelexplorer.audit_node_data(result, other)


def test_ids_come_from_the_file_not_the_lowered_graph(tmp_path):
    """QONNX Quant nodes are rewritten in memory into several standard nodes; nameless nodes are named by
    their place in the file, which is what Model Explorer reads."""
    from test_customquant import _model, _sorted

    m = _sorted(_model(custom=True))
    for node in m.graph.node:
        node.name = ""
    path = str(tmp_path / "qonnx.onnx")
    onnx.save(m, path)
    model = inspector.load(path)
    assert len(model.file.model.graph.node) != len(m.graph.node)  # the case this test is about
    on_disk = ["node" if i == 0 else f"node_{i}" for i in range(len(m.graph.node))]
    expected = [on_disk[i] for i, node in enumerate(m.graph.node) if node.op_type == "Conv"]
    data = modelexplorer.audit_node_data(audit(model), model)
    assert list(data["g"]["results"]) == expected


def test_hostile_names_are_data(save, tmp_path, capsys):
    m, _ = _nameless_net()
    names = ['"quoted"\n</script><b>', "\u202eevil\u0000"]
    convs = [node for node in m.graph.node if node.op_type == "Conv"]
    convs[0].name, convs[1].name = names
    m.graph.name = "graph \"with\" \x1b[31mescapes"
    overlay = tmp_path / "overlay.json"
    code, _, err = run_cli(capsys, "audit", save(m), "--model-explorer", overlay)
    assert code == 0, err
    data = _read(overlay)
    assert check_node_data(data) == []
    assert list(data) == [m.graph.name]
    assert list(data[m.graph.name]["results"]) == [*names, "node_2"]
    assert "\x1b" not in err  # the graph name is shown escaped on the terminal


# ------------------------------------------------------------------ diff


def _perturbed(m, name, scale, seed=5):
    m2 = onnx.ModelProto()
    m2.CopyFrom(m)
    for init in m2.graph.initializer:
        if init.name == name:
            values = numpy_helper.to_array(init)
            noise = b.rng(seed).standard_normal(values.shape).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(values + scale * np.abs(values).mean() * noise, name))
    return m2


def test_diff_writes_each_compared_nodes_sqnr_on_model_as_graph(save, images, tmp_path, capsys):
    m, ids = _nameless_net()
    a = save(m, "a.onnx")
    bpath = save(_perturbed(_perturbed(m, "w0", 0.003), "w2", 0.3, seed=6), "b.onnx")  # ~50 dB, then ~10 dB
    overlay, report = tmp_path / "overlay.json", tmp_path / "diff.json"
    code, _, err = run_cli(capsys, "diff", a, bpath, images, "--preprocess", "raw", "--json", report,
                           "--model-explorer", overlay, "--fail-under", "25", "-q")
    report_data = _read(report)
    data = _read(overlay)  # written before the gate's verdict
    assert code in (0, 1), err
    assert check_node_data(data) == []
    graph_data = data["g"]
    by_index = {layer["index"]: layer for layer in report_data["layers"]}
    finite = {i: layer for i, layer in by_index.items() if isinstance(layer["sqnr_db"], (int, float))}
    assert len(finite) >= 2
    assert {ids[i]: layer["sqnr_db"] for i, layer in finite.items()} == {
        key: value["value"] for key, value in graph_data["results"].items()}
    for i, layer in finite.items():  # red exactly where diff says below the threshold
        assert (colour(graph_data, layer["sqnr_db"]) == modelexplorer.RED) == layer["below_threshold"]
        assert colour(graph_data, layer["sqnr_db"]) != "transparent"
    assert any(layer["below_threshold"] for layer in finite.values())
    assert not all(layer["below_threshold"] for layer in finite.values())
    assert code == 1


def test_thresholds_at_the_threshold_itself():
    """diff's test is strict (below 20 dB); Model Explorer's thresholds are <=: 20.0 must not be red."""
    graph_data = {"thresholds": [{"value": v, "bgColor": c} for v, c in modelexplorer.sqnr_thresholds(20.0, [45.0])]}
    assert colour(graph_data, 20.0) == modelexplorer.AMBER
    assert colour(graph_data, 19.999) == modelexplorer.RED
    assert colour(graph_data, 30.0) == modelexplorer.AMBER
    assert colour(graph_data, 30.001) == modelexplorer.GREEN
    assert colour(graph_data, 45.0) == modelexplorer.GREEN


def test_diff_of_a_model_with_itself_leaves_identical_layers_out(save, images, tmp_path, capsys):
    m, _ = _nameless_net()
    a = save(m, "a.onnx")
    overlay = tmp_path / "overlay.json"
    code, _, err = run_cli(capsys, "diff", a, a, images, "--preprocess", "raw", "--model-explorer", overlay, "-q")
    assert code == 0, err
    data = _read(overlay)
    assert check_node_data(data) == []
    assert data["g"]["results"] == {}
    assert "left out 3 layer(s) with no finite SQNR" in err and "SQNR inf" in err


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize("command", ["audit", "diff"])
def test_unwritable_file_is_exit_2_before_any_work(save, images, tmp_path, capsys, command):
    m, _ = _nameless_net()
    path = save(m)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    models = [path] if command == "audit" else [path, path]
    for target, says in ((blocker / "overlay.json", "cannot be created or written"), (tmp_path, "is a directory"),
                         ("-", "writes a file")):
        code, out, err = run_cli(capsys, command, *models, images, "--model-explorer", target, "-q")
        assert code == 2
        assert out == ""
        assert len(err.strip().splitlines()) == 1 and says in err
    assert sorted(os.listdir(tmp_path)) == ["a_file", "images", "m.onnx"]


def test_diff_needs_images(save, capsys, tmp_path):
    path = save(_nameless_net()[0])
    code, _, err = run_cli(capsys, "diff", path, path, "--model-explorer", tmp_path / "o.json")
    assert code == 2 and "needs images" in err
    assert not (tmp_path / "o.json").exists()


def test_a_failed_write_leaves_nothing(save, tmp_path, capsys, monkeypatch):
    path = save(_nameless_net()[0])
    overlay = tmp_path / "out" / "overlay.json"

    def fail(*_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    code, _, err = run_cli(capsys, "audit", path, "--model-explorer", overlay)
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("inspector: error: cannot write") and "No space left" in err
    assert os.listdir(tmp_path / "out") == []


# ------------------------------------------------------------------ real models


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vgg16_tumor", "ppocrv4_det"])
def test_trained_models_keys_are_their_conv_node_names(name, tmp_path, capsys):
    """tf2onnx's VGG16 and paddle2onnx's PP-OCRv4 detector (342 nameless nodes, none of them a conv):
    every conv node has a unique name there, so the adapter's id is that name."""
    import trained

    path, _ = trained.model(name)
    overlay = tmp_path / "overlay.json"
    code, _, err = run_cli(capsys, "audit", path, "--model-explorer", overlay, "-q")
    assert code == 0, err
    data = _read(overlay)
    assert check_node_data(data) == []
    proto = onnx.load(path, load_external_data=False)
    names = [node.name for node in proto.graph.node if node.op_type in CONV_OPS]
    assert len(set(names)) == len(names) and all(names)
    assert data == {proto.graph.name: data[proto.graph.name]}
    assert sorted(data[proto.graph.name]["results"]) == sorted(names)
