"""QONNX/Brevitas Quant nodes (a custom domain onnxruntime cannot load) read as the arithmetic they define.

Found by the wild corpus (docs/wild.md): qonnx's Brevitas ESPCN models were refused by every command
but `layers`. The reference here is independent of inspector's lowering: the same network written with
the standard QuantizeLinear/DequantizeLinear pair (which a signed 8-bit Quant with zero point 0 equals),
run by onnxruntime, and NumPy for the weights and for the narrow and unsigned bounds.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from inspector.api import load
from inspector.errors import InspectorError

RNG = np.random.default_rng(7)
W1 = RNG.normal(0, 0.4, (6, 3, 3, 3)).astype(np.float32)
W2 = RNG.normal(0, 0.3, (4, 6, 3, 3)).astype(np.float32)
W_SCALE, A_SCALE = np.float32(0.02), np.float32(0.05)


def _quant(x, scale, out, signed=1, narrow=0, bits=8.0, zero=0.0, domain="onnx.brevitas", tag=""):
    inits = [numpy_helper.from_array(np.array(scale, np.float32), f"s{tag}"),
             numpy_helper.from_array(np.array(zero, np.float32), f"z{tag}"),
             numpy_helper.from_array(np.array(bits, np.float32), f"b{tag}")]
    node = helper.make_node("Quant", [x, f"s{tag}", f"z{tag}", f"b{tag}"], [out], domain=domain, name=f"Quant{tag}",
                            signed=signed, narrow=narrow, rounding_mode="ROUND")
    return node, inits


def _qdq(x, scale, out, tag):
    inits = [numpy_helper.from_array(np.array(scale, np.float32), f"s{tag}"),
             numpy_helper.from_array(np.array(0, np.int8), f"z{tag}")]
    return [helper.make_node("QuantizeLinear", [x, f"s{tag}", f"z{tag}"], [f"q{tag}"]),
            helper.make_node("DequantizeLinear", [f"q{tag}", f"s{tag}", f"z{tag}"], [out])], inits


def _model(custom: bool, act=None, domain="onnx.brevitas", opset=13):
    """conv1(Quant(W1)) -> Relu -> Quant -> conv2(Quant(W2)); with custom=False the standard QDQ twin."""
    nodes, inits = [], [numpy_helper.from_array(W1, "w1"), numpy_helper.from_array(W2, "w2")]
    for tag, (x, scale, out) in enumerate([("w1", W_SCALE, "qw1"), ("r1", A_SCALE, "qa1"), ("w2", W_SCALE, "qw2")]):
        if custom:
            options = dict(act or {}) if x == "r1" else {}
            node, more = _quant(x, scale, out, domain=domain, tag=str(tag), **options)
            nodes.append(node)
        else:
            more_nodes, more = _qdq(x, scale, out, str(tag))
            nodes += more_nodes
        inits += more
    nodes += [helper.make_node("Conv", ["x", "qw1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
              helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
              helper.make_node("Conv", ["qa1", "qw2"], ["c2"], pads=[1, 1, 1, 1], name="conv2")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 12])],
                              [helper.make_tensor_value_info("c2", TensorProto.FLOAT, None)], inits)
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if custom else [])
    return helper.make_model(graph, opset_imports=imports)


def _sorted(model):
    """Nodes in an order that reads every input after it is made (what exporters write)."""
    made = {i.name for i in model.graph.initializer} | {"x"}
    pending, ordered = list(model.graph.node), []
    while pending:
        node = next(n for n in pending if all(i in made for i in n.input))
        ordered.append(node)
        made |= set(node.output)
        pending.remove(node)
    del model.graph.node[:]
    model.graph.node.extend(ordered)
    return model


def _fake_quant(w, scale, low, high):
    return ((np.round(np.clip(w / scale, low, high))) * scale).astype(np.float32)


def test_brevitas_quant_model_runs_and_matches_its_standard_twin(tmp_path):
    path = str(tmp_path / "brevitas.onnx")
    onnx.save(_sorted(_model(custom=True)), path)
    with pytest.raises(Exception):  # the premise: onnxruntime cannot load the custom domain itself
        ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    twin = _sorted(_model(custom=False))
    twin.graph.output.append(helper.make_empty_tensor_value_info("r1"))
    session = ort.InferenceSession(twin.SerializeToString(), providers=["CPUExecutionProvider"])
    image = RNG.uniform(-1, 1, (1, 3, 12, 12)).astype(np.float32)
    want_c2, want_r1 = session.run(["c2", "r1"], {"x": image})

    model = load(path)
    assert [layer.name for layer in model.layers] == ["conv1", "conv2"]
    np.testing.assert_array_equal(model.filters("conv1"), _fake_quant(W1, W_SCALE, -128, 127))
    np.testing.assert_array_equal(model.filters("conv2"), _fake_quant(W2, W_SCALE, -128, 127))
    maps = model.run(image, ["conv1", "conv2"])
    np.testing.assert_allclose(maps["conv1"], want_r1, rtol=0, atol=1e-6)
    np.testing.assert_allclose(maps["conv2"], want_c2, rtol=0, atol=1e-5)


@pytest.mark.parametrize("signed, narrow, bits, low, high", [(0, 1, 4, 0, 14), (1, 1, 4, -7, 7), (0, 0, 3, 0, 7)])
def test_bounds_follow_signed_narrow_and_bit_width(tmp_path, signed, narrow, bits, low, high):
    from inspector.execution import create_session

    path = str(tmp_path / "bounds.onnx")
    onnx.save(_sorted(_model(custom=True, act=dict(signed=signed, narrow=narrow, bits=float(bits)),
                             domain="qonnx.custom_op.general")), path)
    model = load(path)
    assert not any(node.domain for node in model.file.model.graph.node)
    image = RNG.uniform(-3, 3, (1, 3, 12, 12)).astype(np.float32)
    relu = model.run(image, ["conv1"])["conv1"]
    lowered = onnx.ModelProto()
    lowered.CopyFrom(model.file.model)
    lowered.graph.output.append(helper.make_empty_tensor_value_info("qa1"))
    session, _ = create_session(model.file.serialized(lowered), model.file.folder)
    got = session.run(["qa1"], {"x": image})[0]
    want = np.round(np.clip(relu / A_SCALE, low, high)) * A_SCALE  # the QONNX spec, zero point 0
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert got.min() >= low * A_SCALE - 1e-7 and got.max() <= high * A_SCALE + 1e-7


def test_a_quant_with_run_time_bounds_stays_and_is_refused_by_name(tmp_path):
    model = _sorted(_model(custom=True))
    bits = next(i for i in model.graph.initializer if i.name == "b1")
    model.graph.initializer.remove(bits)  # the activation Quant's bit width now comes from the input
    model.graph.input.append(helper.make_tensor_value_info("b1", TensorProto.FLOAT, []))
    path = str(tmp_path / "runtime.onnx")
    onnx.save(model, path)
    loaded = load(path)
    assert any(node.op_type == "Quant" for node in loaded.file.model.graph.node)
    with pytest.raises(InspectorError, match="Quant"):
        loaded.run(RNG.uniform(-1, 1, (1, 3, 12, 12)).astype(np.float32), ["conv2"])
