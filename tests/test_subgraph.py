"""Sessions hold only what the requested maps depend on (inspector.subgraph.cut).

Each builder returns (model, the layer names requested, the op types the cut
must keep, in graph order) with a diagram of the graph above it. Every cut
session's maps are compared with onnxruntime on the UNCUT model with the same
tensors added as outputs, and the head's weights are shown never to be read.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import builders as b
import inspector
from inspector import execution, subgraph
from inspector.errors import InspectorError


def _init(name, *shape, seed=0, scale=0.3):
    return numpy_helper.from_array((b.rng(seed).standard_normal(shape) * scale).astype(np.float32), name)


def _head(source, channels, classes=5, seed=9):
    """source -> GlobalAveragePool -> Flatten -> Gemm(head.w, head.b) -> Softmax -> y"""
    nodes = [helper.make_node("GlobalAveragePool", [source], ["gap"], name="head/gap"),
             helper.make_node("Flatten", ["gap"], ["flat"], name="head/flatten"),
             helper.make_node("Gemm", ["flat", "head.w", "head.b"], ["logits"], name="head/fc", transB=1),
             helper.make_node("Softmax", ["logits"], ["y"], name="head/softmax")]
    inits = [_init("head.w", classes, channels, seed=seed), _init("head.b", classes, seed=seed + 1)]
    return nodes, inits


def residual_add():
    """
    x -> Conv c1 -> Relu r1 -> Conv c2 -> Add(r1, c2) -> Relu r2 -> Conv c3 -> [head: GAP, Flatten, Gemm, Softmax] -> y
                          \\_________________/
    Requested: c1's and c2's maps. Kept: c1, Relu, c2 (the Add and all after it go).
    """
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="c1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="r1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="c2", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["r1", "c2"], ["sum"], name="add"),
             helper.make_node("Relu", ["sum"], ["r2"], name="r2"),
             helper.make_node("Conv", ["r2", "w3"], ["c3"], name="c3")]
    head, head_inits = _head("c3", 6)
    inits = [_init("w1", 4, 3, 3, 3, seed=1), _init("w2", 4, 4, 3, 3, seed=2), _init("w3", 6, 4, 1, 1, seed=3)]
    m = b.model(nodes + head, [b.image_input(shape=(1, 3, 8, 8))], [b.out("y")], inits + head_inits)
    return m, ["c1", "c2"], ["Conv", "Relu", "Conv"]


def concat_branches():
    """
    x -> Conv a --\\
    x -> Conv b ---> Concat -> Conv c -> Relu -> [head] -> y
    Requested: c (its map is after the Relu). Kept: both branches, Concat, c, Relu; the head goes.
    """
    nodes = [helper.make_node("Conv", ["x", "wa"], ["a"], name="a", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "wb"], ["bb"], name="b"),
             helper.make_node("Concat", ["a", "bb"], ["cat"], name="cat", axis=1),
             helper.make_node("Conv", ["cat", "wc", "bc"], ["c"], name="c"),
             helper.make_node("Relu", ["c"], ["rc"], name="rc")]
    head, head_inits = _head("rc", 5)
    inits = [_init("wa", 2, 3, 3, 3, seed=4), _init("wb", 3, 3, 1, 1, seed=5), _init("wc", 5, 5, 1, 1, seed=6),
             _init("bc", 5, seed=7)]
    m = b.model(nodes + head, [b.image_input(shape=(1, 3, 8, 8))], [b.out("y")], inits + head_inits)
    return m, ["c"], ["Conv", "Conv", "Concat", "Conv", "Relu"]


def if_reads_outer_scope():
    """
    x -> Conv c1 -> Relu r1 ...................
    cond (initializer) -> If { then: Sigmoid(r1)  else: Neg(r1) } -> Conv c2 -> [head] -> y
    The If lists only `cond` as input; its branches read r1 from the outer scope.
    Requested: c2 only. Kept: c1, Relu (reached through the branches only), If, c2.
    """
    then_graph = helper.make_graph([helper.make_node("Sigmoid", ["r1"], ["t"])], "then", [],
                                   [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    else_graph = helper.make_graph([helper.make_node("Neg", ["r1"], ["e"])], "else", [],
                                   [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="c1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="r1"),
             helper.make_node("If", ["cond"], ["branch"], name="if", then_branch=then_graph,
                              else_branch=else_graph),
             helper.make_node("Conv", ["branch", "w2"], ["c2"], name="c2")]
    head, head_inits = _head("c2", 4)
    inits = [_init("w1", 4, 3, 3, 3, seed=8), _init("w2", 4, 4, 1, 1, seed=9),
             numpy_helper.from_array(np.array(True), "cond")]
    m = b.model(nodes + head, [b.image_input(shape=(1, 3, 8, 8))], [b.out("y")], inits + head_inits)
    return m, ["c2"], ["Conv", "Relu", "If", "Conv"]


def constant_nodes_and_optional_inputs():
    """
    Constant(w1) --\
    x ------------> Conv c1 -> Clip(min: "" (omitted), max: Constant 6) -> Conv c2 -> Mul(Constant 2)
        -> [head: GAP, Flatten, Gemm, Div(Constant 10), Softmax] -> y
    Requested: c1 and c2 (c1's map is after the Clip, c2's after the Mul by a constant).
    Kept: the trunk's three Constants, Conv, Clip, Conv, Mul; the head's Constant goes with the head.
    """
    w1 = b.rng(10).standard_normal((4, 3, 3, 3)).astype(np.float32)

    def constant(name, value):
        return helper.make_node("Constant", [], [name], name=name,
                                value=numpy_helper.from_array(np.asarray(value, np.float32)))

    nodes = [constant("w1", w1), constant("six", 6.0),
             helper.make_node("Conv", ["x", "w1"], ["c1"], name="c1", pads=[1, 1, 1, 1]),
             helper.make_node("Clip", ["c1", "", "six"], ["r1"], name="clip"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="c2"),
             constant("two", 2.0),
             helper.make_node("Mul", ["c2", "two"], ["doubled"], name="mul"),
             helper.make_node("GlobalAveragePool", ["doubled"], ["gap"], name="head/gap"),
             helper.make_node("Flatten", ["gap"], ["flat"], name="head/flatten"),
             helper.make_node("Gemm", ["flat", "head.w", "head.b"], ["logits"], name="head/fc", transB=1),
             constant("ten", 10.0),
             helper.make_node("Div", ["logits", "ten"], ["cooled"], name="head/temperature"),
             helper.make_node("Softmax", ["cooled"], ["y"], name="head/softmax")]
    inits = [_init("w2", 4, 4, 1, 1, seed=11), _init("head.w", 5, 4, seed=17), _init("head.b", 5, seed=18)]
    m = b.model(nodes, [b.image_input(shape=(1, 3, 8, 8))], [b.out("y")], inits)
    return m, ["c1", "c2"], ["Constant", "Constant", "Conv", "Clip", "Conv", "Constant", "Mul"]


def old_opset_inputs_are_initializers():
    """
    opset 8, IR 3: every initializer is also listed as a graph input (as old exporters wrote).
    x -> Conv c1 -> Relu -> Conv c2 -> [Flatten, Gemm(head.w, head.b)] -> y
    Requested: c1. Kept: Conv, Relu; the inputs w2, head.w, head.b go with their initializers.
    """
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="c1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="r1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="c2"),
             helper.make_node("Flatten", ["c2"], ["flat"], name="flatten"),
             helper.make_node("Gemm", ["flat", "head.w", "head.b"], ["y"], name="fc", transB=1)]
    inits = [_init("w1", 4, 3, 3, 3, seed=12), _init("b1", 4, seed=13), _init("w2", 2, 4, 1, 1, seed=14),
             _init("head.w", 3, 2 * 8 * 8, seed=15), _init("head.b", 3, seed=16)]
    listed = [helper.make_tensor_value_info(t.name, TensorProto.FLOAT, list(t.dims)) for t in inits]
    m = b.model(nodes, [b.image_input(shape=(1, 3, 8, 8)), *listed], [b.out("y")], inits, opset=8)
    m.ir_version = 3
    return m, ["c1"], ["Conv", "Relu"]


BUILDERS = [residual_add, concat_branches, if_reads_outer_scope, constant_nodes_and_optional_inputs,
            old_opset_inputs_are_initializers]


def _reference(path, tensors, x):
    """onnxruntime on the uncut model (weights inline), with ``tensors`` added as outputs by onnx's own
    helper (not the inspector's add_outputs, which the cut sessions use)."""
    whole = onnx.load(str(path))
    for name in tensors:
        whole.graph.output.append(helper.make_empty_tensor_value_info(name))
    session = ort.InferenceSession(whole.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip(tensors, session.run(tensors, {"x": x})))


@pytest.mark.parametrize("builder", BUILDERS, ids=lambda f: f.__name__)
def test_cut_session_keeps_only_the_ancestors_and_gives_the_uncut_models_maps(builder, save):
    m, requested, kept_ops = builder()
    path = save(m)
    model = inspector.load(path)
    layers = model.select(requested)
    assert [layer.name for layer in layers] == requested
    tensors = [layer.output for layer in layers]

    cut = subgraph.cut(model.file.model, tensors, keep_inputs=["x"])
    assert [node.op_type for node in cut.graph.node] == kept_ops
    assert [o.name for o in cut.graph.output] == tensors
    assert not {"head.w", "head.b"} & {t.name for t in cut.graph.initializer}
    assert not {"head.w", "head.b"} & {i.name for i in cut.graph.input}

    x = b.rng(20).standard_normal((1, 3, 8, 8)).astype(np.float32)
    session = model.session(layers, device="cpu")
    maps = session.run(x)
    expected = _reference(path, tensors, x)
    for layer in layers:
        np.testing.assert_allclose(maps[layer.name], expected[layer.output], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("builder", BUILDERS, ids=lambda f: f.__name__)
def test_model_outputs_keep_the_head(builder, save):
    m, requested, _ = builder()
    path = save(m)
    model = inspector.load(path)
    layers = model.select(requested)
    x = b.rng(21).standard_normal((1, 3, 8, 8)).astype(np.float32)
    maps, own = model.session(layers, device="cpu", model_outputs=True).run_with_outputs(x)
    plain = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(["y"], {"x": x})[0]
    np.testing.assert_allclose(own["y"], plain, rtol=1e-6, atol=1e-6)
    expected = _reference(path, [layer.output for layer in layers], x)
    for layer in layers:
        np.testing.assert_allclose(maps[layer.name], expected[layer.output], rtol=1e-6, atol=1e-6)


def test_cut_keeps_the_fed_input_and_declared_output_types():
    m, _, _ = residual_add()
    # The fed input stays even when nothing asked for reads it (onnxruntime refuses a feed for an unknown input).
    cut = subgraph.cut(m, ["w1"], keep_inputs=["x"])
    assert [i.name for i in cut.graph.input] == ["x"] and not cut.graph.node
    both = subgraph.cut(m, ["c1", "y"])
    assert both.graph.output[1] == m.graph.output[0]  # the model's own output keeps its declared type
    assert len(both.graph.node) == len(m.graph.node)


# ------------------------------------------------------------- the later weights are never read

def _external(folder, name, array) -> TensorProto:
    """An initializer whose bytes are the whole file ``name`` in ``folder``."""
    with open(os.path.join(folder, name), "wb") as handle:
        handle.write(array.tobytes())
    tensor = TensorProto(name=name.split(".")[0], data_type=TensorProto.FLOAT, dims=list(array.shape),
                         data_location=TensorProto.EXTERNAL)
    for key, value in (("location", name), ("offset", "0"), ("length", str(array.nbytes))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def test_the_weights_of_later_layers_are_never_read(tmp_path):
    """block1's maps come from a model whose later weights are unreadable (their files cut
    to nothing after the model was opened); asking for the model's output reads them and fails."""
    r = b.rng(30)
    w1 = r.standard_normal((4, 3, 3, 3)).astype(np.float32)
    w2 = r.standard_normal((8, 4, 3, 3)).astype(np.float32)
    head = r.standard_normal((3, 8 * 8 * 8)).astype(np.float32)
    inits = [_external(tmp_path, "w1.bin", w1), _external(tmp_path, "w2.bin", w2),
             _external(tmp_path, "head.bin", head)]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="block1_conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="block1_relu"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="block2_conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"], name="block2_relu"),
             helper.make_node("Flatten", ["r2"], ["flat"], name="flatten"),
             helper.make_node("Gemm", ["flat", "head"], ["y"], name="fc", transB=1)]
    path = tmp_path / "m.onnx"
    path.write_bytes(b.model(nodes, [b.image_input(shape=(1, 3, 8, 8))], [b.out("y")], inits).SerializeToString())
    x = r.standard_normal((1, 3, 8, 8)).astype(np.float32)

    model = inspector.load(path)  # checks every external location while the files are whole
    for later in ("w2.bin", "head.bin"):
        (tmp_path / later).write_bytes(b"")
    maps = model.session(model.select(["block1_conv1"]), device="cpu").run(x)
    np.testing.assert_allclose(maps["block1_conv1"], b.relu(b.conv2d(x, w1, pad=1)), rtol=1e-4, atol=1e-4)

    # The control: a session that needs the later weights does read them, and fails.
    with pytest.raises(InspectorError, match="onnxruntime cannot load the model"):
        model.session(model.select(["block2_conv1"]), device="cpu")
    with pytest.raises(InspectorError, match="onnxruntime cannot load the model"):
        model.session(model.select(["block1_conv1"]), device="cpu", model_outputs=True)
