"""The audit's verdicts as properties: unchanged by every function-preserving rescaling, exact on planted defects.

A ReLU, linear or LeakyRelu layer followed by a conv can be rescaled without changing what the
network computes: multiply filter c (weights and bias) by s_c > 0 and divide the next conv's
input-channel-c weights by s_c (positive homogeneity). Each test checks that the model's output
really is unchanged (onnxruntime on both files) and that every verdict of the JSON is the same.

The chain (NCHW, 16x16, 8 noise images):

    x -> conv1 -> Relu -> MaxPool -> conv2 (linear) -> conv3 -> LeakyRelu -> conv4 -> x*sigmoid(x)
      -> dw (depthwise 3x3, linear) -> head (1x1, linear, bias -10: negative logits) -> y
"""

import json

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper
from PIL import Image

import builders as b
import inspector
from inspector.audit import audit, weight_stats

WIDTHS = {"conv1": (12, 3, 3), "conv2": (10, 12, 3), "conv3": (10, 10, 3), "conv4": (8, 10, 3), "head": (6, 8, 1)}
VERDICT_KEYS = ("dead_filters", "dead_channels", "constant_channels", "dormant_channels", "near_duplicates",
                "collapse", "rectifier")


def make_params(seed=0, plant=True):
    """Weights per layer; with ``plant``, the defects the audit must find exactly."""
    r = b.rng(seed)
    params = {}
    for name, (c_out, c_in, k) in WIDTHS.items():
        w = r.standard_normal((c_out, c_in, k, k)) * np.sqrt(2.0 / (c_in * k * k))
        w = w - w.mean(axis=(1, 2, 3), keepdims=True)  # zero-sum: answers variation, never silent by chance
        params[name] = [w, np.full(c_out, 0.2)]
    params["dw"] = [r.standard_normal((8, 1, 3, 3)) * 0.5, np.zeros(8)]
    params["dw"][0][5] = params["dw"][0][2]  # the same 3x3 pattern on two channels: not a duplicate
    params["head"][1][:] = -10.0  # logits negative everywhere
    params["conv4"][1][2] = -3.0  # a SiLU channel negative almost everywhere: still answering its input
    if plant:
        params["conv1"][0][1], params["conv1"][1][1] = 0, 0  # dead filter (and dead channel)
        params["conv1"][1][4] = -1000.0                       # channel killed by its bias
        params["conv2"][0][3] = 0                             # weights zero, bias kept: constant channel
        params["conv2"][1][3] = 0.7
        params["conv2"][0][6] *= 1e-4                         # dormant: 1e-4 of its siblings, nothing compensates
        params["conv2"][1][6] *= 1e-4
        params["conv3"][0][7] = 2.5 * params["conv3"][0][2]   # a near-duplicate pair (cosine 1)
    return {name: [np.asarray(w, np.float32), np.asarray(bias, np.float32)] for name, (w, bias) in params.items()}


PLANTED = {"dead_filters": {"conv1": [1], "conv2": [3]},
           "dead_channels": {"conv1": [1, 4], "conv2": [3, 6]},
           "constant_channels": {"conv2": [3]},
           "dormant_channels": {"conv2": [6]},
           "duplicates": {"conv3": 1}}


def build(params):
    nodes = [
        helper.make_node("Conv", ["x", "conv1/w", "conv1/b"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "conv2/w", "conv2/b"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["c2", "conv3/w", "conv3/b"], ["c3"], name="conv3", pads=[1, 1, 1, 1]),
        helper.make_node("LeakyRelu", ["c3"], ["r3"], alpha=0.1),
        helper.make_node("Conv", ["r3", "conv4/w", "conv4/b"], ["c4"], name="conv4", pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c4"], ["s4"]),
        helper.make_node("Mul", ["c4", "s4"], ["r4"]),
        helper.make_node("Conv", ["r4", "dw/w", "dw/b"], ["d5"], name="dw", pads=[1, 1, 1, 1], group=8),
        helper.make_node("Conv", ["d5", "head/w", "head/b"], ["y"], name="head"),
    ]
    inits = [numpy_helper.from_array(v, f"{name}/{part}") for name, (w, bias) in params.items()
             for part, v in (("w", w), ("b", bias))]
    return b.model(nodes, [b.image_input(shape=("N", 3, 16, 16))], [b.out("y")], inits)


def rescale(params, layer, reader, factors):
    """Filter c of ``layer`` times factors[c] (weights and bias), ``reader``'s input channel c divided by it."""
    out = {name: [w.copy(), bias.copy()] for name, (w, bias) in params.items()}
    factors = np.asarray(factors, np.float64)
    out[layer][0] = (out[layer][0] * factors[:, None, None, None]).astype(np.float32)
    out[layer][1] = (out[layer][1] * factors).astype(np.float32)
    out[reader][0] = (out[reader][0] / factors[None, :, None, None]).astype(np.float32)
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    r = b.rng(1)
    for i in range(8):
        Image.fromarray(r.integers(0, 256, (16 + 2 * i, 20, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return str(folder)


def run_audit(path, images):
    return audit(inspector.load(path), [images], preprocess="tf", device="cpu", quiet=True).to_dict()


def verdicts(data):
    """Every verdict of an audit's JSON: what no rescaling may change."""
    layers = {}
    for layer in data["layers"]:
        entry = {key: layer[key] for key in VERDICT_KEYS}
        entry["near_duplicates"] = sorted((e["a"], e["b"]) for e in layer["near_duplicates"]["examples"]) + \
            [layer["near_duplicates"]["pairs"]]
        layers[layer["name"]] = entry
    summary = {key: data["summary"][key] for key in ("dead_filters", "dead_channels", "constant_channels",
                                                     "dormant_channels", "dead_units", "dead_fraction",
                                                     "near_duplicate_pairs", "collapse_layer", "channels_judged")}
    return {"layers": layers, "summary": summary}


def outputs(path, images):
    model = inspector.load(path)
    batch = model.image_batch(sorted(str(p) for p in __import__("pathlib").Path(images).iterdir()), "tf")
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": batch})[0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, images):
    folder = tmp_path_factory.mktemp("reference")
    params = make_params()
    path = str(folder / "reference.onnx")
    import onnx

    onnx.save(build(params), path)
    return params, path, run_audit(path, images)


def test_planted_defects_are_found_exactly(reference):
    _, _, data = reference
    by_name = {layer["name"]: layer for layer in data["layers"]}
    for key in ("dead_filters", "dead_channels", "constant_channels", "dormant_channels"):
        found = {name: layer[key] for name, layer in by_name.items() if layer[key]}
        assert found == PLANTED[key], key
    assert {name: layer["near_duplicates"]["pairs"] for name, layer in by_name.items()
            if layer["near_duplicates"]["pairs"]} == PLANTED["duplicates"]
    assert by_name["conv3"]["near_duplicates"]["examples"][0]["a"] == 2
    assert by_name["conv3"]["near_duplicates"]["examples"][0]["b"] == 7
    # Negative logits are answers, not silence; identical depthwise patterns read different channels.
    assert by_name["head"]["dead_channels"] == [] and by_name["head"]["max_activation"] < 0
    assert by_name["conv4"]["dead_channels"] == []
    assert by_name["dw"]["near_duplicates"]["pairs"] == 0
    assert [name for name, layer in by_name.items() if layer["rectifier"]] == ["conv1"]
    assert data["summary"]["dead_units"] == 4 and data["summary"]["collapse_layer"] is None
    assert data["summary"]["dead_fraction"] == pytest.approx(4 / (12 + 10 + 10 + 8 + 8 + 6))


RESCALINGS = {
    # (layer, the conv that reads it, factors): per layer and per channel, across 12 decades
    "relu layer x100": ("conv1", "conv2", np.full(12, 100.0)),
    "relu layer per channel": ("conv1", "conv2", 10.0 ** np.linspace(-3, 3, 12)),
    "linear layer x1e-3": ("conv2", "conv3", np.full(10, 1e-3)),
    "linear layer per channel": ("conv2", "conv3", 10.0 ** b.rng(7).uniform(-4, 4, 10)),
    "linear layer, the dormant channel woken by scale": ("conv2", "conv3", np.where(np.arange(10) == 6, 1e4, 1.0)),
    "leaky relu layer per channel": ("conv3", "conv4", 10.0 ** b.rng(8).uniform(-3, 3, 10)),
    "leaky relu layer, the duplicate pair split by scale": ("conv3", "conv4", np.where(np.arange(10) == 7, 50.0, 1.0)),
}


@pytest.mark.parametrize("case", list(RESCALINGS))
def test_a_function_preserving_rescaling_changes_no_verdict(case, reference, tmp_path, images, save):
    params, path, data = reference
    layer, reader, factors = RESCALINGS[case]
    scaled_path = save(build(rescale(params, layer, reader, factors)), "scaled.onnx")
    before, after = outputs(path, images), outputs(scaled_path, images)
    np.testing.assert_allclose(after, before, rtol=1e-3, atol=1e-3 * np.abs(before).max())  # the same function
    scaled = run_audit(scaled_path, images)
    assert verdicts(scaled) == verdicts(data)
    # The raw magnitudes did move: the verdicts hold despite them, not for want of a change. In every case
    # the most rescaled filter's norm moved by its factor; where many channels moved, the layer's peak too.
    after_layer = next(entry for entry in scaled["layers"] if entry["name"] == layer)
    before_layer = next(entry for entry in data["layers"] if entry["name"] == layer)
    most = int(np.argmax(np.abs(np.log10(factors))))
    assert after_layer["filter_l2"][most] / before_layer["filter_l2"][most] == pytest.approx(factors[most], rel=1e-3)
    if np.count_nonzero(factors != 1) > 1:
        assert abs(np.log10(after_layer["max_activation"] / before_layer["max_activation"])) > 0.3


def test_depthwise_filters_with_one_pattern_are_not_duplicates_but_grouped_ones_are():
    r = b.rng(3)
    pattern = r.standard_normal((1, 3, 3)).astype(np.float32)
    depthwise = np.repeat(pattern[None], 16, axis=0)  # 16 channels, the same 3x3 everywhere
    assert weight_stats(depthwise, groups=16).duplicate_pairs == 0
    assert weight_stats(depthwise, groups=1).duplicate_pairs == 16 * 15 // 2  # as if they read one input
    grouped = r.standard_normal((8, 4, 3, 3)).astype(np.float32)  # 2 groups of 4 filters
    grouped[3] = grouped[1]        # same group (0): a duplicate
    grouped[5] = grouped[0]        # another group: reads other channels, not a duplicate
    stats = weight_stats(grouped, groups=2)
    assert stats.duplicate_pairs == 1 and stats.duplicate_examples[0][:2] == (1, 3)


def test_duplicates_are_unmoved_by_rescaling_the_input_channels():
    r = b.rng(4)
    w = r.standard_normal((20, 16, 3, 3)).astype(np.float32)
    w[11] = 3 * w[4] + 0.001 * r.standard_normal((16, 3, 3)).astype(np.float32)
    plain = weight_stats(w)
    for factors in (10.0 ** r.uniform(-3, 3, 16), np.full(16, 1e-2)):
        scaled = weight_stats((w / factors[None, :, None, None]).astype(np.float32))
        assert (scaled.duplicate_pairs, scaled.duplicate_examples[0][:2]) == (plain.duplicate_pairs, (4, 11))


def test_a_layer_whose_weights_are_zeroed_is_constant_and_collapses_there(tmp_path, images, save):
    params = make_params(plant=False)
    params["conv3"][0][:] = 0  # bias kept: the same output for every image
    data = run_audit(save(build(params), "zeroed.onnx"), images)
    by_name = {layer["name"]: layer for layer in data["layers"]}
    assert by_name["conv3"]["dead_filters"] == list(range(10))
    assert by_name["conv3"]["constant_channels"] == list(range(10))
    assert data["summary"]["collapse_layer"]["name"] == "conv3"
    assert "100.0% of its channels are dead" in data["summary"]["collapse_layer"]["reason"]
    assert [layer["collapse"] for layer in data["layers"]] == [name == "conv3" for name in by_name]


def test_an_untouched_chain_has_no_findings(tmp_path, images, save):
    data = run_audit(save(build(make_params(plant=False)), "clean.onnx"), images)
    summary = data["summary"]
    assert (summary["dead_units"], summary["dead_channels"], summary["near_duplicate_pairs"],
            summary["collapse_layer"]) == (0, 0, 0, None)
    json.dumps(data)  # serialisable


@pytest.mark.parametrize("low, rectifier", [(0.0, True), (-1.0, False)])
def test_relu6_is_a_rectifier_and_a_signed_clip_is_not(low, rectifier, save, images):
    """Clip(0, 6) (Relu6) outputs exact zeros wherever its input is <= 0: a channel silent everywhere is dead.
    Clip(-1, 1) is signed: a channel pinned at -1 everywhere is constant, which is dead too, by the other rule."""
    r = b.rng(5)
    w = r.standard_normal((4, 3, 3, 3)).astype(np.float32)
    bias = np.array([0.1, -1000.0, 0.1, 0.1], np.float32)  # channel 1 far below zero
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Clip", ["c", "lo", "hi"], ["y"])]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(bias, "b"),
             numpy_helper.from_array(np.array(low, np.float32), "lo"), numpy_helper.from_array(np.array(6.0, np.float32), "hi")]
    m = b.model(nodes, [b.image_input(shape=("N", 3, 16, 16))], [b.out("y")], inits)
    layer = run_audit(save(m), images)["layers"][0]
    assert layer["activation"] == "Clip" and layer["rectifier"] is rectifier
    assert layer["dead_channels"] == [1]
    assert layer["constant_channels"] == ([] if rectifier else [1])


def test_pooled_branches_need_more_images(tmp_path, save):
    """A squeeze unit (1x1 map after global pooling) gives one value per image: silent on 8 images is
    reported, not judged; on 32 it is dead."""
    from inspector.audit.verdicts import MIN_IMAGES_POOLED

    r = b.rng(6)
    w1 = r.standard_normal((6, 3, 3, 3)).astype(np.float32)
    ws = r.standard_normal((4, 6, 1, 1)).astype(np.float32)
    bs = np.array([-1000.0, 0.5, 0.5, 0.5], np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="main", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("GlobalAveragePool", ["r1"], ["pooled"]),
             helper.make_node("Conv", ["pooled", "ws", "bs"], ["cs"], name="squeeze"),
             helper.make_node("Relu", ["cs"], ["y"])]
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (ws, "ws"), (bs, "bs"))]
    path = save(b.model(nodes, [b.image_input(shape=("N", 3, 16, 16))], [b.out("y")], inits))
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(MIN_IMAGES_POOLED):
        Image.fromarray(b.rng(100 + i).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    files = sorted(str(p) for p in folder.iterdir())
    eight = audit(inspector.load(path), files[:8], preprocess="tf", device="cpu", quiet=True)
    squeeze = eight.to_dict()["layers"][1]
    assert squeeze["dead_channels"] == [0] and squeeze["channels_judged"] is False
    assert eight.dead_unit_count == 0 and "1x1 maps" in " ".join(eight.notes())
    assert "*: reported, not judged" in eight.table()
    # All 32 judged (none held out for the verification, which test_audit_verify checks).
    many = audit(inspector.load(path), files, preprocess="tf", device="cpu", quiet=True, hold_out=False)
    assert many.to_dict()["layers"][1]["channels_judged"] is True and many.dead_unit_count == 1


@pytest.mark.parametrize("stride, judged_on_eight", [(4, False), (3, True)])
def test_small_maps_need_the_pooled_image_count(tmp_path, save, stride, judged_on_eight):
    """A map of 4x4 = 16 positions (a 16x16 input at stride 4: the last stage of a small input) gives a
    handful of values per image, like a pooled branch: silent on 8 images is reported, not judged, and on
    32 it is dead. At stride 3 (6x6 = 36 positions) 8 images judge it."""
    from inspector.audit.verdicts import MIN_IMAGES_POOLED, POOLED_POSITIONS

    r = b.rng(7)
    w1 = r.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b1 = np.array([-1000.0, 0.5, 0.5, 0.5], np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="small", pads=[1, 1, 1, 1],
                              strides=[stride, stride]),
             helper.make_node("Relu", ["c1"], ["y"])]
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"))]
    path = save(b.model(nodes, [b.image_input(shape=("N", 3, 16, 16))], [b.out("y")], inits), f"s{stride}.onnx")
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(MIN_IMAGES_POOLED):
        Image.fromarray(b.rng(200 + i).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    files = sorted(str(p) for p in folder.iterdir())
    eight = audit(inspector.load(path), files[:8], preprocess="tf", device="cpu", quiet=True)
    layer = eight.to_dict()["layers"][0]
    positions = 16 if stride == 4 else 36
    assert eight.layers[0].activations.elements_per_map == positions and (positions <= POOLED_POSITIONS) != judged_on_eight
    assert layer["dead_channels"] == [0] and layer["channels_judged"] is judged_on_eight
    assert eight.dead_unit_count == (1 if judged_on_eight else 0)
    assert eight.to_dict()["rules"]["pooled_positions"] == POOLED_POSITIONS
    many = audit(inspector.load(path), files, preprocess="tf", device="cpu", quiet=True, hold_out=False)
    assert many.to_dict()["layers"][0]["channels_judged"] is True and many.dead_unit_count == 1
