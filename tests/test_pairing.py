"""diff's structural pairing: layers paired when their names say nothing, from the conv signatures and the
weights, across layouts, folded BatchNorm and quantization; never across shapes; never across architectures.

Every network is built here with onnx.helper from one set of weights; the SQNR references come from a
plain NumPy forward pass (tests/builders.conv2d) and onnxruntime on the unmodified files, never inspector.
"""

import json
import math
import os

import jsonschema
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

import builders as b
import inspector
from inspector.cli import main
from inspector.compare import diff
from inspector.compare.matching import pair_layers

SCHEMA_PATH = os.path.join(os.path.dirname(inspector.__file__), "schemas", "diff.schema.json")
SIZE = 12
EPS = 1e-5


def weights(seed=0):
    """One network's weights: c1 with its BatchNorm, a depthwise c2, a pointwise c3, a strided c4."""
    r = b.rng(seed)
    return {
        "w1": r.standard_normal((8, 3, 3, 3)).astype(np.float32), "b1": r.standard_normal(8).astype(np.float32),
        "gamma": r.uniform(0.5, 2.0, 8).astype(np.float32), "beta": r.standard_normal(8).astype(np.float32),
        "mean": r.standard_normal(8).astype(np.float32) * 0.1, "var": r.uniform(0.5, 2.0, 8).astype(np.float32),
        "w2": r.standard_normal((8, 1, 3, 3)).astype(np.float32), "b2": r.standard_normal(8).astype(np.float32),
        "w3": (r.standard_normal((8, 8, 1, 1)) * 0.4).astype(np.float32), "b3": r.standard_normal(8).astype(np.float32),
        "w4": (r.standard_normal((16, 8, 3, 3)) * 0.2).astype(np.float32),
        "b4": r.standard_normal(16).astype(np.float32),
    }


def folded(w):
    """c1's weights and bias with its BatchNorm folded in, as tf2onnx and onnxruntime write them."""
    scale = w["gamma"] / np.sqrt(w["var"] + EPS)
    return (w["w1"] * scale[:, None, None, None]).astype(np.float32), \
        ((w["b1"] - w["mean"]) * scale + w["beta"]).astype(np.float32)


def _inits(values: dict):
    return [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in values.items()]


# torch-style NCHW export, BatchNorm unfolded, a residual Add:
#
#   x -> Conv c1 -> BatchNormalization -> Relu -+-> Conv c2 (depthwise) -> Relu -> Conv c3 (1x1) -> Add -> Relu
#                                               +---------------------------------------------------^      |
#        y <- GlobalAveragePool <- Relu <- Conv c4 (3x3, stride 2) <--------------------------------------+
def nchw_network(w, prefix="/layers", act4="Relu", dynamic=True):
    n = lambda s: f"{prefix}/{s}"  # noqa: E731
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name=n("conv1/Conv"), pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "gamma", "beta", "mean", "var"], ["n1"], name=n("bn1/BN"),
                         epsilon=EPS),
        helper.make_node("Relu", ["n1"], ["r1"], name=n("act1/Relu")),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name=n("conv2/Conv"), pads=[1, 1, 1, 1], group=8),
        helper.make_node("Relu", ["c2"], ["r2"], name=n("act2/Relu")),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], name=n("conv3/Conv")),
        helper.make_node("Add", ["c3", "r1"], ["s3"], name=n("add/Add")),
        helper.make_node("Relu", ["s3"], ["r3"], name=n("act3/Relu")),
        helper.make_node("Conv", ["r3", "w4", "b4"], ["c4"], name=n("conv4/Conv"), pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node(act4, ["c4"], ["r4"], name=n(f"act4/{act4}")),
        helper.make_node("GlobalAveragePool", ["r4"], ["y"], name=n("pool/GlobalAveragePool")),
    ]
    m = b.model(nodes, [b.image_input(shape=(1, 3, SIZE, SIZE))], [b.out("y")], _inits(w))
    if dynamic:
        m.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    return m


# The same network as tf2onnx writes a Keras model: NHWC input, Transposes around each conv, c1's
# BatchNorm folded into its weights, Keras 3 scope names (layers conv2d_1 .. conv2d_4):
#
#   x (NHWC) -> T -> Conv c1' -> T -> Relu -+-> T -> Conv c2 -> T -> Relu -> T -> Conv c3 -> T -> Add -> Relu
#                                           +---------------------------------------------------^        |
#        y <- ReduceMean(1, 2) <- Relu <- T <- Conv c4 <- T <--------------------------------------------+
def nhwc_network(w):
    w1, b1 = folded(w)
    s = lambda layer, op: f"model_1/{layer}_1/{op}"  # noqa: E731
    t = lambda src, dst, perm, name: helper.make_node("Transpose", [src], [dst], perm=perm, name=name)  # noqa: E731
    to_nchw, to_nhwc = [0, 3, 1, 2], [0, 2, 3, 1]
    nodes = [
        t("x", "x1", to_nchw, s("conv2d", "convolution__5")),
        helper.make_node("Conv", ["x1", "model_1/conv2d_1/kernel", "model_1/conv2d_1/bias"], ["k1"],
                         name=s("conv2d", "BiasAdd"), pads=[1, 1, 1, 1]),
        t("k1", "k1t", to_nhwc, s("conv2d", "BiasAdd__7")),
        helper.make_node("Relu", ["k1t"], ["a1"], name=s("conv2d", "Relu")),
        t("a1", "a1t", to_nchw, s("conv2d_2", "convolution__9")),
        helper.make_node("Conv", ["a1t", "model_1/conv2d_2/kernel", "model_1/conv2d_2/bias"], ["k2"],
                         name=s("conv2d_2", "BiasAdd"), pads=[1, 1, 1, 1], group=8),
        t("k2", "k2t", to_nhwc, s("conv2d_2", "BiasAdd__11")),
        helper.make_node("Relu", ["k2t"], ["a2"], name=s("conv2d_2", "Relu")),
        t("a2", "a2t", to_nchw, s("conv2d_3", "convolution__13")),
        helper.make_node("Conv", ["a2t", "model_1/conv2d_3/kernel", "model_1/conv2d_3/bias"], ["k3"],
                         name=s("conv2d_3", "BiasAdd")),
        t("k3", "k3t", to_nhwc, s("conv2d_3", "BiasAdd__15")),
        helper.make_node("Add", ["k3t", "a1"], ["s3"], name="model_1/add_1/Add"),
        helper.make_node("Relu", ["s3"], ["a3"], name="model_1/re_lu_1/Relu"),
        t("a3", "a3t", to_nchw, s("conv2d_4", "convolution__17")),
        helper.make_node("Conv", ["a3t", "model_1/conv2d_4/kernel", "model_1/conv2d_4/bias"], ["k4"],
                         name=s("conv2d_4", "BiasAdd"), pads=[1, 1, 1, 1], strides=[2, 2]),
        t("k4", "k4t", to_nhwc, s("conv2d_4", "BiasAdd__19")),
        helper.make_node("Relu", ["k4t"], ["a4"], name=s("conv2d_4", "Relu")),
        helper.make_node("ReduceMean", ["a4"], ["y"], axes=[1, 2], keepdims=0, name="model_1/pool_1/Mean"),
    ]
    inits = _inits({"model_1/conv2d_1/kernel": w1, "model_1/conv2d_1/bias": b1,
                    "model_1/conv2d_2/kernel": w["w2"], "model_1/conv2d_2/bias": w["b2"],
                    "model_1/conv2d_3/kernel": w["w3"], "model_1/conv2d_3/bias": w["b3"],
                    "model_1/conv2d_4/kernel": w["w4"], "model_1/conv2d_4/bias": w["b4"]})
    m = b.model(nodes, [b.image_input(shape=(1, SIZE, SIZE, 3))], [b.out("y")], inits, opset=13)
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    return m


# Two parallel branches of one signature, written in the other order in B:
#
#   x -> Conv stem -+-> Conv left  (8x8x3x3) -+-> Add -> y        A: stem, left, right
#                   +-> Conv right (8x8x3x3) -+                   B: stem, right, left (node order)
def branches(w_left, w_right, swap=False, seed=5):
    stem = b.rng(seed).standard_normal((8, 3, 3, 3)).astype(np.float32)
    left = helper.make_node("Conv", ["s", "wl"], ["l"], name="left" if not swap else "n2", pads=[1, 1, 1, 1])
    right = helper.make_node("Conv", ["s", "wr"], ["r"], name="right" if not swap else "n1", pads=[1, 1, 1, 1])
    nodes = [helper.make_node("Conv", ["x", "ws"], ["s"], name="stem" if not swap else "n0", pads=[1, 1, 1, 1]),
             *([right, left] if swap else [left, right]),
             helper.make_node("Add", ["l", "r"], ["y"])]
    return b.model(nodes, [b.image_input(shape=(1, 3, SIZE, SIZE))], [b.out("y")],
                   _inits({"ws": stem, "wl": w_left, "wr": w_right}))


# A different architecture that happens to hold a conv of c1's signature (8x3x3x3, stride 1):
#
#   x -> Conv (8x3x3x3) -> Relu -> Conv (4x8x1x1) -> Sigmoid -> y        (other weights)
def other_architecture(seed=11):
    r = b.rng(seed)
    nodes = [helper.make_node("Conv", ["x", "v1"], ["c"], name="/net/first/Conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="/net/act/Relu"),
             helper.make_node("Conv", ["r", "v2"], ["d"], name="/net/second/Conv"),
             helper.make_node("Sigmoid", ["d"], ["y"], name="/net/out/Sigmoid")]
    return b.model(nodes, [b.image_input(shape=(1, 3, SIZE, SIZE))], [b.out("y")],
                   _inits({"v1": r.standard_normal((8, 3, 3, 3)), "v2": r.standard_normal((4, 8, 1, 1))}))


W = weights()
W_LEFT, W_RIGHT = (b.rng(s).standard_normal((8, 8, 3, 3)).astype(np.float32) for s in (21, 22))
NCHW_NAMES = ["layers.conv1", "layers.conv2", "layers.conv3", "layers.conv4"]
KERAS_NAMES = ["conv2d", "conv2d_2", "conv2d_3", "conv2d_4"]

# Each case: (model A, model B, [(A's layer, B's layer, match, confidence)], layers of A left unpaired).
PAIRING_CASES = {
    # the same network exported twice with other node names: every conv by structure
    "renamed": (lambda: nchw_network(W), lambda: nchw_network(W, prefix="/exported"),
                [(a, a.replace("layers", "exported"), "structure", "high") for a in NCHW_NAMES], []),
    # NHWC tf2onnx with BatchNorm folded against NCHW torch with it unfolded
    "nhwc_vs_nchw": (lambda: nhwc_network(W), lambda: nchw_network(W),
                     [(k, n, "structure", "high") for k, n in zip(KERAS_NAMES, NCHW_NAMES)], []),
    # parallel branches listed in the other order: the weights, not the order, pair them
    "branches": (lambda: branches(W_LEFT, W_RIGHT), lambda: branches(W_LEFT, W_RIGHT, swap=True),
                 [("stem", "n0", "structure", "high"), ("left", "n2", "structure", "high"),
                  ("right", "n1", "structure", "high")], []),
    # the same conv sequence with unrelated weights (two trainings of one architecture): by position only
    "retrained": (lambda: nchw_network(W), lambda: nchw_network(weights(seed=99), prefix="/other"),
                  [(a, a.replace("layers", "other"), "position", "medium") for a in NCHW_NAMES], []),
    # another architecture: the conv of the same shape has unrelated weights, nothing pairs
    "other_architecture": (lambda: nchw_network(W), other_architecture, [], NCHW_NAMES),
}


@pytest.mark.parametrize("case", sorted(PAIRING_CASES))
def test_pairing(case, save):
    build_a, build_b, expected, unpaired = PAIRING_CASES[case]
    a = inspector.load(save(build_a(), "a.onnx"))
    other = inspector.load(save(build_b(), "b.onnx"))
    matching = pair_layers(a, other)
    assert [(p.a.name, p.b.name, p.match, p.confidence) for p in matching.pairs] == expected
    assert [layer.name for layer, _ in matching.unpaired_a] == unpaired
    for pair in matching.pairs:
        assert pair.same_shape and pair.not_comparable is None
        assert pair.inputs_agree is True
        if pair.match == "structure":
            assert pair.weight_correlation > 0.99
    if case == "other_architecture":
        reasons = dict((layer.name, why) for layer, why in matching.unpaired_a)
        assert "do not confirm" in reasons["layers.conv1"]  # the same signature, unrelated weights
        assert "no conv of B has its signature" in reasons["layers.conv3"]


def test_correlation_ignores_a_folded_batchnorm_and_rejects_other_shapes(save):
    """c1's folded weights are each filter scaled: the per-filter correlation stays 1; convs whose shapes
    differ are never paired even with a correlated slice of weights."""
    a = inspector.load(save(nhwc_network(W), "a.onnx"))
    other = inspector.load(save(nchw_network(W), "b.onnx"))
    pair = pair_layers(a, other).pairs[0]
    w1, _ = folded(W)
    assert not np.allclose(w1, W["w1"]) and pair.weight_correlation == pytest.approx(1.0, abs=1e-6)
    # B's c4 cut to 12 filters: same first 12 filters, other shape: unpaired, with the reason
    cut = nchw_network({**W, "w4": W["w4"][:12], "b4": W["b4"][:12]})
    matching = pair_layers(a, inspector.load(save(cut, "cut.onnx")))
    assert [p.a.name for p in matching.pairs] == KERAS_NAMES[:3]
    (layer, why), = matching.unpaired_a
    assert layer.name == "conv2d_4" and "no conv of B has its signature (16x8x3x3, kernel 3x3, stride 2x2)" in why


def test_activation_on_one_side_only_is_not_comparable(save, tmp_path):
    """B's last conv is followed by a Sigmoid where A's has a Relu: paired (same weights), not compared."""
    path_a = save(nchw_network(W), "a.onnx")
    path_b = save(nchw_network(W, prefix="/other", act4="Sigmoid"), "b.onnx")
    images = photos(tmp_path, 2)
    result = diff(path_a, path_b, images, preprocess="raw", devices=["cpu"])
    last = result.layers[-1]
    assert last.pair.match == "structure" and not last.compared
    assert last.note.startswith("not comparable") and "Relu" in last.note and "Sigmoid" in last.note
    assert all(layer.compared for layer in result.layers[:-1])


# ------------------------------------------------------------------------------ SQNR against NumPy

def photos(folder, count, seed=0):
    from PIL import Image

    paths = []
    for i in range(count):
        path = os.path.join(str(folder), f"img{i:02d}.png")
        Image.fromarray(b.rng(seed + i).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def numpy_maps(w, x):
    """Each conv's compared tensor (after its activation, BatchNorm applied; c3 before the Add) in NCHW."""
    scale = w["gamma"] / np.sqrt(w["var"] + EPS)
    c1 = b.conv2d(x, w["w1"], w["b1"], pad=1)
    r1 = b.relu((c1 - w["mean"][None, :, None, None]) * scale[None, :, None, None] + w["beta"][None, :, None, None])
    r2 = b.relu(b.conv2d(r1, w["w2"], w["b2"], pad=1, groups=8))
    c3 = b.conv2d(r2, w["w3"], w["b3"])
    r4 = b.relu(b.conv2d(b.relu(c3 + r1), w["w4"], w["b4"], pad=1, stride=2))
    return [r1, r2, c3, r4]


def reference_sqnr(a, other):
    return 10 * math.log10(np.sum(a * a) / np.sum((a - other) ** 2))


def test_nhwc_against_nchw_sqnr_per_pair_matches_numpy(save, tmp_path, capsys):
    """A = the NHWC export, B = the NCHW export of the network with c3's weights nudged: every conv paired
    by structure, each pair's SQNR equal to NumPy's on the two sets of weights."""
    nudged = {**W, "w3": W["w3"] + b.rng(3).standard_normal(W["w3"].shape).astype(np.float32) * 0.05}
    path_a, path_b = save(nhwc_network(W), "keras.onnx"), save(nchw_network(nudged), "torch.onnx")
    images = photos(tmp_path, 5, seed=4)
    out = tmp_path / "d.json"
    assert main(["diff", path_a, path_b, *images, "--preprocess", "raw", "--batch", "2", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "structure (high)" in table and "4 conv layers paired (4 by structure)" in table
    data = json.loads(out.read_text())
    jsonschema.validate(data, json.load(open(SCHEMA_PATH)))
    x = np.stack([np.asarray(__import__("PIL.Image").Image.open(p).convert("RGB"), np.float64).transpose(2, 0, 1)
                  / 255.0 for p in images])
    maps_a, maps_b = numpy_maps(W, x), numpy_maps(nudged, x)
    assert [layer["match"] for layer in data["layers"]] == ["structure"] * 4
    assert data["summary"]["matched_by"]["structure"] == 4
    for layer, ref_a, ref_b in zip(data["layers"], maps_a, maps_b):
        assert layer["comparable"] is True and layer["confidence"] == "high"
        if np.array_equal(ref_a, ref_b):  # upstream of the nudge: float rounding only
            assert layer["sqnr_db"] == "inf" or layer["sqnr_db"] > 90
        else:
            expected = reference_sqnr(ref_a, ref_b)
            assert 10 < expected < 60
            assert layer["sqnr_db"] == pytest.approx(expected, abs=0.05)


def _quantize(float_path, out_path, images):
    from PIL import Image

    inputs = np.stack([np.asarray(Image.open(p).convert("RGB"), np.float32).transpose(2, 0, 1) / 255.0
                       for p in images])
    return b.quantize_qdq(float_path, out_path, inputs)


def _dequantized_after_each_conv(path):
    """For each Conv in order: the last DequantizeLinear output of the chain that follows it alone
    (QuantizeLinear -> DequantizeLinear pairs, a BatchNormalization, a Relu the quantizer kept)."""
    graph = onnx.load(path).graph
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    found = []
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        tensor, last_dequantized = node.output[0], None
        while len(consumers.get(tensor, [])) == 1 and consumers[tensor][0].op_type in (
                "QuantizeLinear", "DequantizeLinear", "BatchNormalization", "Relu"):
            user = consumers[tensor][0]
            tensor = user.output[0]
            if user.op_type == "DequantizeLinear":
                last_dequantized = tensor
        assert last_dequantized is not None
        found.append(last_dequantized)
    return found


def test_nhwc_float_against_qdq_int8_of_the_nchw_export(save, tmp_path):
    """A = the NHWC float export, B = onnxruntime's QDQ int8 of the NCHW export (other names, BatchNorm
    folded by the quantizer, Relus dropped before QuantizeLinear): all four pair by structure, and each
    pair's SQNR equals NumPy's float maps against onnxruntime's dequantized tensors of the QDQ file."""
    images = photos(tmp_path, 6, seed=7)
    path_a = save(nhwc_network(W), "keras.onnx")
    qdq = _quantize(save(nchw_network(W, dynamic=False), "torch.onnx"), str(tmp_path / "qdq.onnx"), images[:4])
    result = diff(path_a, qdq, images, preprocess="raw", batch=1, devices=["cpu"])
    assert [(layer.pair.match, layer.pair.b.quantization) for layer in result.layers] == [("structure", "qdq")] * 4
    assert all(layer.pair.weight_correlation > 0.99 for layer in result.layers)

    x = np.stack([np.asarray(__import__("PIL.Image").Image.open(p).convert("RGB"), np.float32).transpose(2, 0, 1)
                  / 255.0 for p in images])
    model = onnx.load(qdq)
    tensors = _dequantized_after_each_conv(qdq)
    for name in tensors:
        model.graph.output.append(helper.make_empty_tensor_value_info(name))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    runs = [session.run(tensors, {"x": x[i:i + 1]}) for i in range(len(x))]
    quantized = [np.concatenate([run[k] for run in runs]).astype(np.float64) for k in range(len(tensors))]
    for layer, ref_a, ref_b in zip(result.layers, numpy_maps(W, x.astype(np.float64)), quantized):
        assert layer.compared, layer.note
        expected = reference_sqnr(ref_a, ref_b)
        assert 15 < expected < 60
        assert layer.sqnr() == pytest.approx(expected, abs=0.05)


def test_other_architecture_exits_2_with_the_reason(save, capsys):
    path_a, path_b = save(nchw_network(W), "a.onnx"), save(other_architecture(), "b.onnx")
    assert main(["diff", path_a, path_b]) == 2
    err = capsys.readouterr().err
    assert "no conv layer in common" in err and "Traceback" not in err
