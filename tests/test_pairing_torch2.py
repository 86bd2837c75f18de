"""torch 2.x exports (opennsfw's torch 2.13 file) wrap each step in a Cast to float and leave BatchNorm
unfolded as Sub -> Mul -> Add in NHWC: the activation follower walks through those Casts, structural pairing
confirms the weights whatever the sign of the BatchNorm's scale, and the weight drift is not reported against
a side with the BatchNorm folded (the two weights differ by that scale)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import TensorProto, helper

import builders as b
import inspector
from inspector.cli import main
from inspector.compare.matching import pair_layers
from test_pairing import EPS, SIZE, _inits, photos

FLOAT = TensorProto.FLOAT


def weights(seed=0):
    r = b.rng(seed)
    gamma = r.uniform(0.5, 2.0, 8).astype(np.float32)
    gamma[::2] *= -1  # a negative BatchNorm scale flips those filters once folded
    return {
        "w1": r.standard_normal((8, 3, 3, 3)).astype(np.float32), "b1": r.standard_normal(8).astype(np.float32),
        "gamma": gamma, "beta": r.standard_normal(8).astype(np.float32),
        "mean": r.standard_normal(8).astype(np.float32) * 0.1, "var": r.uniform(0.5, 2.0, 8).astype(np.float32),
        "w2": (r.standard_normal((16, 8, 3, 3)) * 0.2).astype(np.float32), "b2": r.standard_normal(16).astype(np.float32),
    }


# A, folded (tf2onnx-like, NCHW):   x -> Conv c1' -> Relu -> Conv c2 -> Relu -> GlobalAveragePool -> y
def folded_network(w):
    scale = w["gamma"] / np.sqrt(w["var"] + EPS)
    w1 = (w["w1"] * scale[:, None, None, None]).astype(np.float32)
    b1 = ((w["b1"] - w["mean"]) * scale + w["beta"]).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "k1", "c1b"], ["c1"], name="Conv__1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="Relu__1"),
        helper.make_node("Conv", ["r1", "k2", "c2b"], ["c2"], name="Conv__2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="Relu__2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["y"], name="pool"),
    ]
    return b.model(nodes, [b.image_input(shape=(1, 3, SIZE, SIZE))], [b.out("y")],
                   _inits({"k1": w1, "c1b": b1, "k2": w["w2"], "c2b": w["b2"]}))


# B, torch 2.x style: the conv without bias, then NHWC and Casts around an unfolded bias and BatchNorm:
#
#   x -> Conv c1 -> T(NHWC) -> Cast -> Add b1 -> Cast -> Sub mean -> Mul scale -> Add beta -> Cast -> Cast
#     -> Relu -> Cast -> T(NCHW) -> Conv c2 -> Relu -> GlobalAveragePool -> y
def torch2_network(w):
    scale = w["gamma"] / np.sqrt(w["var"] + EPS)
    nhwc = lambda v: np.asarray(v, np.float32).reshape(1, 1, 1, -1)  # noqa: E731
    cast = lambda src, dst: helper.make_node("Cast", [src], [dst], to=FLOAT, name=f"/{dst}")  # noqa: E731
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Transpose", ["c1"], ["t1"], perm=[0, 2, 3, 1], name="/Transpose"),
        cast("t1", "k1"),
        helper.make_node("Add", ["k1", "b1"], ["a1"], name="/Add"),
        cast("a1", "k2"),
        helper.make_node("Sub", ["k2", "mean"], ["s1"], name="/Sub"),
        helper.make_node("Mul", ["s1", "scale"], ["m1"], name="/Mul"),
        helper.make_node("Add", ["m1", "beta"], ["a2"], name="/Add_1"),
        cast("a2", "k3"), cast("k3", "k4"),
        helper.make_node("Relu", ["k4"], ["r1"], name="/Relu"),
        cast("r1", "k5"),
        helper.make_node("Transpose", ["k5"], ["t2"], perm=[0, 3, 1, 2], name="/Transpose_1"),
        helper.make_node("Conv", ["t2", "w2", "b2"], ["c2"], name="/Conv_1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="/Relu_1"),
        helper.make_node("GlobalAveragePool", ["r2"], ["y"], name="/pool"),
    ]
    return b.model(nodes, [b.image_input(shape=(1, 3, SIZE, SIZE))], [b.out("y")],
                   _inits({"w1": w["w1"], "b1": nhwc(w["b1"]), "mean": nhwc(w["mean"]), "scale": nhwc(scale),
                           "beta": nhwc(w["beta"]), "w2": w["w2"], "b2": w["b2"]}))


def test_casts_between_floats_do_not_stop_the_activation_follower(save):
    layer = inspector.load(save(torch2_network(weights()), "torch2.onnx")).layers[0]
    assert layer.activation == "Relu" and layer.output == "r1"
    assert layer.affine == ("Add", "Sub", "Mul", "Add") and layer.output_perm == (0, 2, 3, 1)


def test_cast_to_an_integer_type_stops_it(save):
    m = torch2_network(weights())
    for node in m.graph.node:
        if node.op_type == "Cast" and node.output[0] == "k2":
            node.attribute[0].i = TensorProto.INT32  # not the same quantity any more
    layer = inspector.load(save(m, "int.onnx")).layers[0]
    assert layer.activation is None and layer.affine == ("Add",)


def test_torch2_export_pairs_with_the_folded_one_and_its_sqnr_matches_numpy(save, tmp_path):
    w = weights()
    path_a, path_b = save(folded_network(w), "a.onnx"), save(torch2_network(w), "b.onnx")
    matching = pair_layers(inspector.load(path_a), inspector.load(path_b))
    # The negative scales flip half of c1's filters: the sign-free correlation still confirms the pair.
    assert [(p.match, p.confidence) for p in matching.pairs] == [("structure", "high")] * 2
    assert matching.pairs[0].weight_correlation == pytest.approx(1.0, abs=1e-6)
    assert all(p.not_comparable is None for p in matching.pairs)

    images = photos(tmp_path, 3)
    out = tmp_path / "d.json"
    assert main(["diff", path_a, path_b, *images, "--preprocess", "raw", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    first, second = data["layers"]
    assert first["weight_change"]["comparable"] is False and "Mul" in first["weight_change"]["reason"]
    assert second["weight_change"]["comparable"] is True and second["weight_change"]["exact"] is True
    # Both exports compute the same maps: float rounding only (NumPy's own two computations agree as well).
    x = np.stack([np.asarray(__import__("PIL.Image").Image.open(p).convert("RGB"), np.float64).transpose(2, 0, 1)
                  / 255.0 for p in images])
    scale = w["gamma"] / np.sqrt(w["var"] + EPS)
    c = lambda v: np.asarray(v, np.float64)[None, :, None, None]  # noqa: E731
    unfolded = b.relu((b.conv2d(x, w["w1"], w["b1"], pad=1) - c(w["mean"])) * c(scale) + c(w["beta"]))
    fold_w = w["w1"] * scale[:, None, None, None]
    folded = b.relu(b.conv2d(x, fold_w, (w["b1"] - w["mean"]) * scale + w["beta"], pad=1))
    expected = 10 * np.log10(np.sum(unfolded ** 2) / np.sum((unfolded - folded) ** 2))
    assert expected > 90 and first["sqnr_db"] > 90


def test_one_name_on_convs_of_other_shapes_is_not_a_pair(save):
    """basic-pitch's tf2onnx file names a CQT conv conv2d_5 while the TFLite build's conv2d_5 is the last
    conv: a shared name never pairs two convs whose signatures differ; their weights pair them instead."""
    w = weights()
    swapped = folded_network(w)
    first, second = (node for node in swapped.graph.node if node.op_type == "Conv")
    first.name, second.name = second.name, first.name
    matching = pair_layers(inspector.load(save(folded_network(w), "a.onnx")), inspector.load(save(swapped, "b.onnx")))
    assert [(p.a.name, p.b.name, p.match) for p in matching.pairs] == \
        [("Conv__1", "Conv__2", "structure"), ("Conv__2", "Conv__1", "structure")]
    assert all(p.same_shape for p in matching.pairs)
