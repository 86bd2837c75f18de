"""Weights the graph computes (issue 19 item 5): int8 weights dequantized by Cast -> Mul or DequantizeLinear, and
weights in Constant nodes, work wherever initializers work: reading them (filters, audit), and pruning.

The conv here is larger than the graph's folding limit for small constants (65,536 values): a layer's weights are
read whole whatever their size.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

import prune_builders as pb

from inspector.api import load
from inspector.audit import audit
from inspector.graph import FOLD_LIMIT
from inspector.prune import prune


# x -> c1 (16) -> Relu -> c2 (128 x 16 x 6 x 6 = 73,728 weights, int8 dequantized in the graph; x: 5 77) -> Relu
#   -> c3 (8) -> y
def _model(how: str):
    n = pb.Net(31)
    r1 = n.op("Relu", [n.conv("c1", "x", 3, 16)], "r1")
    w2 = (n.rng.standard_normal((128, 16, 6, 6)) / 24).astype(np.float32)
    w2[[5, 77]] = 0
    if how == "constant":
        weight = n.op("Constant", [], "c2.weight", value=numpy_helper.from_array(w2, "c2.weight"))
    else:
        weight = pb._int8_chain(n, "c2", w2, how)
    c2 = n.op("Conv", [r1, weight, n.const("c2.bias", np.zeros(128, np.float32))], "c2", pads=[3, 3, 2, 2])
    y = n.conv("c3", n.op("Relu", [c2], "r2"), 128, 8, k=1)
    return n.model(y)


def _expected_weights(m) -> np.ndarray:
    """c2's float weights computed independently: int8 x scale, or the Constant's value."""
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    if "c2.weight_q" not in inits:
        node = next(n for n in m.graph.node if n.output[0] == "c2.weight")
        return numpy_helper.to_array(node.attribute[0].t)
    scale = inits["c2.scale"].astype(np.float32)
    return inits["c2.weight_q"].astype(np.float32) * scale.reshape(-1, 1, 1, 1)


@pytest.mark.parametrize("how", ["cast_mul", "dequantize", "constant"])
def test_read_audited_and_pruned(how, tmp_path):
    m = _model(how)
    source = str(tmp_path / f"{how}.onnx")
    onnx.save(m, source)
    model = load(source)
    layer = next(layer for layer in model.layers if layer.name == "c2")
    assert int(np.prod(layer.weight_shape)) > FOLD_LIMIT
    weights, _ = model.graph.weights(layer)
    np.testing.assert_array_equal(weights, _expected_weights(m))
    dead = {entry["name"]: entry["dead_filters"] for entry in audit(model, quiet=True).to_dict()["layers"]}
    assert dead["c2"] == [5, 77]
    result = prune(model)
    assert {r.name: r.removed for r in result.rows if r.removed} == {"c2": [5, 77]}
    assert result.surgery.computed == ([] if how == "constant" else ["c2.weight"])
    out = result.write(str(tmp_path / "pruned.onnx"))
    pruned = onnx.load(out)
    onnx.checker.check_model(pruned, full_check=True)
    assert not [n.op_type for n in pruned.graph.node if n.op_type in ("Cast", "Mul", "DequantizeLinear", "Constant")]
    x = np.random.default_rng(0).standard_normal((1, 3, 12, 12)).astype(np.float32)
    before = ort.InferenceSession(source, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    after = ort.InferenceSession(out, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6 * float(np.abs(before).max()))
