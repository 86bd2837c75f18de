"""The audit's statistics reduced inside the ONNX graph (inspector/audit/ingraph.py) against NumPy over the maps.

Each builder gives a tiny model; the figures the statistics session returns are compared with
``map_figures`` over the maps that a session of the unmodified model returns (max, min, zero counts
and sizes exactly; sums, squares and absolute sums to float32 rounding), and the whole audit with the
map path forced (``ingraph._IN_GRAPH = False``).
"""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import builders as b
import inspector
from inspector.audit import audit, ingraph
from inspector.audit.activations import _count_zeros, map_figures
from test_audit import assert_same_audit, images, small_net  # noqa: F401 - images: test_audit's fixture


@pytest.fixture(autouse=True)
def reduced_in_the_graph(monkeypatch):
    """The graph's path on every device (by default the CPU reduces the maps with NumPy); tests that
    want the map path set ``_IN_GRAPH = False`` themselves."""
    monkeypatch.setattr(ingraph, "_IN_GRAPH", True)


def test_the_graph_reduces_on_cuda_and_numpy_on_the_cpu_by_default(save, monkeypatch):
    m, _ = small_net()
    model = inspector.load(save(m))
    layers = model.require_layers()
    monkeypatch.setattr(ingraph, "_IN_GRAPH", None)
    assert ingraph.statistics_session(model, layers, set(), device="cpu").in_graph == []
    monkeypatch.setattr(ingraph, "_IN_GRAPH", True)
    assert len(ingraph.statistics_session(model, layers, set(), device="cpu").in_graph) == len(layers)
    from inspector.execution import wants_cuda

    assert wants_cuda("cuda") and not wants_cuda("cpu")
    assert not wants_cuda("auto", ["CPUExecutionProvider"])
    assert wants_cuda("auto", ["CUDAExecutionProvider", "CPUExecutionProvider"])


# ------------------------------------------------------------------------------ models

def signed_net(opset=17):
    """x -> conv "relu1" -> Relu -> conv "plain" (no activation: signed outputs).

        x (1,3,10,10) -> Conv relu1 -> Relu -> Conv plain -> y
    """
    r = b.rng(3)
    w1 = r.standard_normal((6, 3, 3, 3)).astype(np.float32)
    w2 = r.standard_normal((5, 6, 3, 3)).astype(np.float32) * 0.3
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="relu1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["y"], name="plain")]
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")]
    return b.model(nodes, [b.image_input(shape=(1, 3, 10, 10))], [b.out("y")], inits, opset=opset)


def conv1d_net():
    """A 1-D conv (rank 3 maps) behind a Reshape of the 4-D image input.

        x (1,3,1,16) -> Reshape (N,3,16) -> Conv conv1d (4,3,3) -> Relu -> y
    """
    w = b.rng(4).standard_normal((4, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["x1"]),
             helper.make_node("Conv", ["x1", "w"], ["c"], name="conv1d"),
             helper.make_node("Relu", ["c"], ["y"])]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([0, 3, -1], np.int64), "shape")]
    return b.model(nodes, [b.image_input(shape=(1, 3, 1, 16))], [b.out("y")], inits)


def float16_net():
    """Input, weights and maps in float16 (cast to float32 for the statistics, on both paths).

        x fp16 (1,3,8,8) -> Conv conv16 -> Relu -> Conv signed16 -> y
    """
    r = b.rng(5)
    w1 = r.standard_normal((4, 3, 3, 3)).astype(np.float16)
    w2 = r.standard_normal((3, 4, 1, 1)).astype(np.float16)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], name="conv16"),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["y"], name="signed16")]
    return b.model(nodes, [b.image_input(shape=(1, 3, 8, 8), elem=TensorProto.FLOAT16)],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT16, None)],
                   [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])


def nan_net():
    """Sqrt(x - 0.5) before the conv: NaN wherever a pixel is under 0.5, so some maps hold NaN.

        x -> Sub 0.5 -> Sqrt -> Conv conv -> Relu -> y
    """
    w = b.rng(6).standard_normal((4, 3, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Sub", ["x", "half"], ["shifted"]), helper.make_node("Sqrt", ["shifted"], ["root"]),
             helper.make_node("Conv", ["root", "w"], ["c"], name="conv"), helper.make_node("Relu", ["c"], ["y"])]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(0.5, np.float32), "half")]
    return b.model(nodes, [b.image_input(shape=(1, 3, 6, 6))], [b.out("y")], inits)


def dynamic_batch(m):
    """The builders fix the batch at 1: open it, so that batches of several images run."""
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    return m


MODELS = {
    "relu_net": lambda: b.conv_relu_nchw()[0],
    "signed_opset11": lambda: signed_net(opset=11),
    "signed_opset17": lambda: signed_net(opset=17),
    "signed_opset18": lambda: signed_net(opset=18),
    "nhwc_output_perm": lambda: b.tf2onnx_like_nhwc()[0],
    "conv1d_rank3": conv1d_net,
    "grouped_depthwise": lambda: b.grouped_and_depthwise()[0],
    "conv_transpose": lambda: b.conv_transpose()[0],
    "unfolded_bn": lambda: b.unfolded_bn()[0],
}


def batch_for(model, images=3, seed=0):
    shape = [images if i == 0 else d for i, d in enumerate(model.input.shape)]
    return b.rng(seed).uniform(-1, 1, shape).astype(model.input.dtype)


def both_ways(model, x):
    """(figures from the statistics session, map_figures over a plain session's maps), by layer name."""
    layers = model.require_layers()
    signed = {layer.name for layer in layers}  # absolute sums for every layer: all compared
    session = ingraph.statistics_session(model, layers, signed, device="cpu")
    figures, maps = session.run(x)
    plain = model.session(layers, device="cpu").run(x)
    return session, figures, maps, {name: map_figures(values, False) for name, values in plain.items()}


def assert_same_figures(found, expected):
    assert found.per_map == expected.per_map
    np.testing.assert_array_equal(found.maximum, expected.maximum)
    np.testing.assert_array_equal(found.minimum, expected.minimum)
    np.testing.assert_array_equal(found.zeros, expected.zeros)
    for key in ("sums", "abs_sums", "squares"):
        got, want = getattr(found, key), getattr(expected, key)
        if want is None:  # non-negative layers keep no absolute sums
            assert got is None
            continue
        scale = max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * scale, err_msg=key)


# ------------------------------------------------------------------------------ figures

@pytest.mark.parametrize("name", list(MODELS))
def test_figures_reduced_in_the_graph_equal_numpy_over_the_maps(name, save):
    model = inspector.load(save(dynamic_batch(MODELS[name]()), f"{name}.onnx"))
    session, figures, maps, expected = both_ways(model, batch_for(model))
    assert not maps and set(figures) == set(expected)  # every layer reduced in the graph
    for layer_name, found in figures.items():
        assert found.sums.shape == expected[layer_name].sums.shape  # (N, C) whatever the layout
        assert_same_figures(found, expected[layer_name])


@pytest.mark.parametrize("opset", [11, 17, 18])
def test_axes_follow_the_opset(opset, save):
    """axes: an attribute before opset 13 (ReduceSum) or 18 (the others), an input from then on."""
    model = inspector.load(save(dynamic_batch(signed_net(opset)), "signed.onnx"))
    session = ingraph.statistics_session(model, model.require_layers(), {"plain"}, device="cpu")
    assert len(session.in_graph) == 2
    # The figures were checked above; here, that the graph is valid as this opset defines it.
    layers = model.require_layers()
    tensors = {layer.output: (4, 0, 1, True) for layer in layers}
    m = onnx.ModelProto()
    m.CopyFrom(model.file.model)
    ingraph.append_statistics(m, tensors, opset)
    context = onnx.checker.C.CheckerContext()
    context.ir_version, context.opset_imports = m.ir_version, {"": opset}
    for node in m.graph.node:
        onnx.checker.check_node(node, context)  # an axes attribute at opset 18 fails here


def test_output_names_never_collide_with_the_model_s(save):
    """A model that already has a tensor called like the first figure keeps it; ours gets another name."""
    m = signed_net()
    m.graph.node[1].output[0] = "inspector_stats_0_maximum"
    m.graph.node[2].input[0] = "inspector_stats_0_maximum"
    model = inspector.load(save(dynamic_batch(m)))
    session, figures, maps, expected = both_ways(model, batch_for(model))
    for layer_name, found in figures.items():
        assert_same_figures(found, expected[layer_name])
    names = [name for outputs in session.figure_outputs.values() for name in outputs.values()]
    assert len(set(names)) == len(names) and "inspector_stats_0_maximum" not in names


def test_zero_count_takes_minus_zero_as_zero_and_nan_as_nonzero():
    """The Cast-to-bool count: +0 and -0 are zeros, NaN, infinities and subnormals are not (NumPy's ==)."""
    import onnxruntime as ort

    values = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1e-45, -1e-45, 2.0, -3.0, 0.0, 0.0, -0.0],
                      np.float32).reshape(1, 2, 2, 3)
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["t"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 2, 3])],
                              [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8  # as tests/builders.py: onnx 1.23's default (IR 14) is newer than some onnxruntime-gpu builds read
    outputs = ingraph.append_statistics(m, {"t": (4, 0, 1, True)}, 17)["t"]
    m.graph.output.extend(helper.make_empty_tensor_value_info(name) for name in outputs.values())
    session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    nonzero = session.run([outputs["nonzero"]], {"x": values})[0]
    zeros = 6 - nonzero.astype(np.int64)
    np.testing.assert_array_equal(zeros, _count_zeros(values.reshape(1, 2, 6)))
    assert zeros.tolist() == [[2, 3]]


def test_a_batch_with_nan_maps_takes_the_map_path(save, tmp_path):
    """ReduceMax skips NaN where NumPy's max keeps it: such a batch is reduced from its maps instead."""
    model = inspector.load(save(dynamic_batch(nan_net())))
    x = b.rng(2).uniform(0, 1, (2, 3, 6, 6)).astype(np.float32)
    session, figures, maps, expected = both_ways(model, x)
    assert not figures and set(maps) == {"conv"}
    assert np.isnan(maps["conv"]).any()
    clean = np.full_like(x, 0.75)
    figures, maps = session.run(clean)
    assert set(figures) == {"conv"} and not maps


# ------------------------------------------------------------------------------ which layers

def test_float16_maps_keep_the_map_path(save):
    """On the CPU onnxruntime runs float16 convs in float32 and would hand the graph's reductions the
    values before their rounding to float16: such layers come out as maps."""
    model = inspector.load(save(dynamic_batch(float16_net()), "float16.onnx"))
    session, figures, maps, expected = both_ways(model, batch_for(model))
    assert not figures and set(maps) == {"conv16", "signed16"}
    plain = model.session(model.require_layers(), device="cpu").run(batch_for(model))
    for name in maps:
        np.testing.assert_array_equal(maps[name], plain[name])


def test_qlinear_layers_keep_the_map_path_beside_reduced_ones(save):
    """Integer layers come out as maps (the float layers of the same model reduced in the graph)."""
    model = inspector.load(save(dynamic_batch(b.qlinear_conv()[0])))
    layers = model.require_layers()
    session = ingraph.statistics_session(model, layers, set(), device="cpu")
    qlinear = {layer.name for layer in layers if layer.op == "QLinearConv"}
    assert qlinear and not qlinear & {layer.name for layer in session.in_graph}
    figures, maps = session.run(batch_for(model))
    assert qlinear <= set(maps)
    plain = model.session(layers, device="cpu").run(batch_for(model))
    for name in maps:
        np.testing.assert_array_equal(maps[name], plain[name])


def test_fused_qdq_layers_keep_the_map_path(save, tmp_path, monkeypatch):
    """A QDQ model from onnxruntime's quantizer, on the CPU: its maps come from the fused int8 kernels
    (inspector.fused) and are dequantized in NumPy, so its layers stay maps; the audit is the same either way."""
    from test_diff import _quantize, photos

    float_path = save(b.conv_relu_nchw(seed=4, size=16)[0], "float.onnx")
    images = photos(tmp_path, 8, (16, 16), seed=10)
    model = inspector.load(_quantize(float_path, str(tmp_path / "qdq.onnx"), images[:4], (16, 16)))
    layers = model.require_layers()
    session = ingraph.statistics_session(model, layers, set(), device="cpu")
    assert set(session.dequantizers) == {layer.name for layer in layers} and not session.in_graph
    x = model.image_batch(images[:1], "raw")
    figures, maps = session.run(x)
    plain = model.session(layers, device="cpu").run(x)
    assert not figures and set(maps) == set(plain)
    for name in maps:
        np.testing.assert_array_equal(maps[name], plain[name])
    maps_audit, reduced = audits_both_ways(model, images, monkeypatch, preprocess="raw")
    assert_same_audit(maps_audit, reduced)


def test_the_switch_sends_every_layer_through_the_maps(save, monkeypatch):
    model = inspector.load(save(dynamic_batch(b.conv_relu_nchw()[0])))
    monkeypatch.setattr(ingraph, "_IN_GRAPH", False)
    session = ingraph.statistics_session(model, model.require_layers(), set(), device="cpu")
    figures, maps = session.run(batch_for(model))
    assert not figures and set(maps) == {layer.name for layer in model.require_layers()}


# ------------------------------------------------------------------------------ the whole audit

def audits_both_ways(model, images, monkeypatch, **kwargs):
    monkeypatch.setattr(ingraph, "_IN_GRAPH", False)
    maps = audit(model, images, device="cpu", quiet=True, **kwargs).to_dict()
    monkeypatch.setattr(ingraph, "_IN_GRAPH", True)
    reduced = audit(model, images, device="cpu", quiet=True, **kwargs).to_dict()
    return maps, reduced


EITHER_WAY = {name: MODELS[name] for name in ("relu_net", "signed_opset11", "signed_opset18", "nhwc_output_perm",
                                               "conv1d_rank3", "unfolded_bn")}
EITHER_WAY["float16"] = float16_net


@pytest.mark.parametrize("name", list(EITHER_WAY))
def test_the_audit_is_the_same_either_way(name, save, images, monkeypatch):
    model = inspector.load(save(dynamic_batch(EITHER_WAY[name]()), f"{name}.onnx"))
    maps, reduced = audits_both_ways(model, [images], monkeypatch, batch=3, preprocess="tf")
    assert maps["images"]["count"] == 8
    assert_same_audit(maps, reduced)


def test_fixed_batch_padding_is_ignored_either_way(save, images, monkeypatch):
    """8 images in batches of 3: the last batch has 2 images and a padding copy, counted by neither path."""
    model = inspector.load(save(small_net(batch=3)[0], "fixed.onnx"))
    maps, reduced = audits_both_ways(model, [images], monkeypatch, preprocess="tf")
    assert reduced["images"]["batch"] == 3 and reduced["images"]["count"] == 8
    assert_same_audit(maps, reduced)
    # And the padding really is dropped: the same as one image a batch.
    dynamic = inspector.load(save(small_net()[0], "dynamic.onnx"))
    one = audit(dynamic, [images], batch=1, preprocess="tf", device="cpu", quiet=True).to_dict()
    assert_same_audit(one, reduced)


def test_nan_maps_give_the_audit_of_the_map_path(save, images, monkeypatch):
    model = inspector.load(save(dynamic_batch(nan_net())))
    maps, reduced = audits_both_ways(model, [images], monkeypatch, batch=4, preprocess="tf")
    assert_same_audit(maps, reduced)


def test_prefetched_batches_give_the_same_audit(save, images, monkeypatch):
    """On CUDA the next batch is decoded on a worker thread while one runs (forced here on the CPU)."""
    from inspector.audit import run as audit_run

    model = inspector.load(save(small_net()[0]))
    monkeypatch.setattr(audit_run, "PREFETCH", False)
    serial = audit(model, [images, images], batch=3, preprocess="tf", device="cpu",
                   quiet=True, hold_out=False).to_dict()
    monkeypatch.setattr(audit_run, "PREFETCH", True)
    ahead = audit(model, [images, images], batch=3, preprocess="tf", device="cpu", quiet=True,
                  hold_out=False).to_dict()
    assert ahead["images"]["count"] == 16
    assert_same_audit(serial, ahead)


def test_prefetched_keeps_order_and_reraises():
    from inspector.audit.images import prefetched

    assert list(prefetched(iter(range(5)))) == [0, 1, 2, 3, 4]

    def failing():
        yield 1
        raise ValueError("bad batch")

    stream = prefetched(failing())
    assert next(stream) == 1
    with pytest.raises(ValueError, match="bad batch"):
        next(stream)


def test_cli_statistics_option_chooses_the_path_and_gives_the_same_audit(save, tmp_path, images, monkeypatch):
    import json

    from inspector.cli import main

    monkeypatch.setattr(ingraph, "_IN_GRAPH", None)  # what a user gets
    m, _ = small_net(dead={"conv2": [4]})
    path = save(m)
    photos = [str(images)]  # eight images: enough for channel verdicts
    chosen = []
    real = ingraph.StatisticsSession.finish_graph

    def spy(self, model):
        out = real(self, model)
        chosen.append(bool(self.in_graph))
        return out

    monkeypatch.setattr(ingraph.StatisticsSession, "finish_graph", spy)
    found = {}
    for way in ("graph", "maps", "auto"):
        target = tmp_path / f"{way}.json"
        assert main(["audit", path, *photos, "--preprocess", "tf", "--device", "cpu", "--statistics", way,
                     "-q", "--json", str(target)]) == 0
        found[way] = json.loads(target.read_text())
    assert chosen == [True, False, False]  # auto on the CPU: NumPy over the maps
    assert_same_audit(found["graph"], found["maps"])
    assert found["graph"]["layers"][1]["dead_channels"] == [4]
    assert main(["audit", path, *photos, "--statistics", "numpy"]) == 2
