"""inspector audit: planted dead filters found exactly, streamed statistics checked against NumPy, the CLI gate."""

import json
import os
import subprocess
import sys

import jsonschema
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

import builders as b
import inspector
from inspector import audit as audit_module
from inspector.audit import audit, weight_stats
from inspector.cli import main

SCHEMA_PATH = os.path.join(os.path.dirname(inspector.__file__), "schemas", "audit.schema.json")
VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


# ------------------------------------------------------------------------------ models

def conv_stack(specs, size, seed=0, batch="N", dead=None, scale=None, bias=0.3, pool_after=()):
    """Conv layers named ``specs[i][0]`` with ``specs[i][1]`` filters, optional Relu, 3x3 pad 1.

    He-scaled zero-sum random weights and a small positive bias, so that every
    channel fires on noise images. ``dead`` {layer: [filters]} zeroes those filters'
    weights and bias; ``scale`` {layer: factor or {filter: factor}} scales weights.
    """
    r = np.random.default_rng(seed)
    nodes, inits, weights = [], [], {}
    tensor, channels = "x", 3
    for i, (name, width, relu) in enumerate(specs):
        w = r.standard_normal((width, channels, 3, 3)) * np.sqrt(2.0 / (9 * channels))
        # Zero-sum filters answer the variation of their input, not its (post-Relu, positive) mean,
        # so that no random filter ends up negative everywhere and silent.
        w = (w - w.mean(axis=(1, 2, 3), keepdims=True)).astype(np.float32)
        bias_values = np.full(width, bias, np.float32)
        factor = (scale or {}).get(name)
        if isinstance(factor, dict):
            for f, k in factor.items():
                w[f] *= k
                bias_values[f] *= k
        elif factor is not None:
            w *= factor
            bias_values *= factor
        for f in (dead or {}).get(name, ()):
            w[f] = 0
            bias_values[f] = 0
        weights[name] = (w, bias_values)
        inits += [numpy_helper.from_array(w, f"{name}/w"), numpy_helper.from_array(bias_values, f"{name}/b")]
        conv_out = f"{name}/conv" if relu else name
        nodes.append(helper.make_node("Conv", [tensor, f"{name}/w", f"{name}/b"], [conv_out], name=name,
                                      pads=[1, 1, 1, 1]))
        if relu:
            nodes.append(helper.make_node("Relu", [conv_out], [name], name=f"{name}/Relu"))
        tensor, channels = name, width
        if i in pool_after:
            nodes.append(helper.make_node("MaxPool", [tensor], [f"{name}/pool"], kernel_shape=[2, 2], strides=[2, 2]))
            tensor = f"{name}/pool"
    graph = helper.make_graph(nodes, "stack", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, size, size])],
                              [helper.make_tensor_value_info(tensor, TensorProto.FLOAT, None)], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m, weights


def set_initializer(m, name, change):
    """Replace initializer ``name`` of model ``m`` by ``change(values)`` (float32)."""
    for tensor in m.graph.initializer:
        if tensor.name == name:
            values = np.asarray(change(numpy_helper.to_array(tensor).astype(np.float64)), np.float32)
            tensor.CopyFrom(numpy_helper.from_array(values, name))
            return
    raise KeyError(name)


SMALL = (("conv1", 8, True), ("conv2", 16, True), ("head", 12, False))  # the head has signed outputs


def small_net(**kwargs):
    return conv_stack(SMALL, size=12, **kwargs)


def vgg16_shaped(**kwargs):
    """VGG16's 13 convs and 4 inner pools, channels / 4, 32x32 input (block5 maps are 2x2)."""
    specs, pools = [], []
    for block, widths in enumerate(VGG16_BLOCKS, start=1):
        for conv, width in enumerate(widths, start=1):
            specs.append((f"block{block}_conv{conv}", width // 4, True))
        if block < 5:
            pools.append(len(specs) - 1)
    return conv_stack(specs, size=32, pool_after=tuple(pools), **kwargs)


@pytest.fixture
def images(tmp_path):
    """Eight noise images of assorted sizes in a folder (the minimum for channel verdicts)."""
    folder = tmp_path / "images"
    folder.mkdir()
    r = np.random.default_rng(1)
    for i in range(8):
        pixels = r.integers(0, 256, (20 + 3 * i, 24, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i}.png")
    return str(folder)


def files_in(folder):
    return [os.path.join(folder, name) for name in sorted(os.listdir(folder))]


def schema():
    with open(SCHEMA_PATH) as handle:
        return json.load(handle)


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ------------------------------------------------------------------------ weight rules

def test_weight_stats_norms_dead_weak_and_near_zero():
    r = np.random.default_rng(0)
    w = r.standard_normal((10, 4, 3, 3)).astype(np.float32)
    bias = r.standard_normal(10).astype(np.float32)
    w[1], bias[1] = 0, 0                    # dead: all zero
    w[3] *= 1e-4; bias[3] *= 1e-4           # weak (under 1e-3 x median), not dead: a rescaling can make any filter so
    w[4] *= 0.05; bias[4] *= 0.05           # weak but alive
    w[6] = 0                                # weights zero, the bias is not: a constant map, whatever the input: dead
    bias[6] = 5.0
    stats = weight_stats(w, bias)
    full = np.concatenate([w.reshape(10, -1), bias[:, None]], axis=1).astype(np.float64)
    np.testing.assert_allclose(stats.l2, np.linalg.norm(full, axis=1), rtol=1e-12)
    np.testing.assert_allclose(stats.l1, np.abs(full).sum(axis=1), rtol=1e-12)
    assert stats.median_l2 == pytest.approx(np.median(np.linalg.norm(full, axis=1)))
    assert stats.dead_filters == [1, 6] and stats.weak_filters == [3]
    # Filters 1 and 6 hold 72 exact zeros of 360 weights; a few of filter 3's tiny weights count too.
    expected = np.count_nonzero(np.abs(w) <= 1e-6 * np.abs(w).max()) / w.size
    assert stats.near_zero_weight_fraction == pytest.approx(expected)
    assert 72 / 360 <= expected < 80 / 360


def test_weight_stats_without_bias_and_a_layer_mostly_dead():
    w = np.zeros((4, 2, 1, 1), np.float32)
    w[2] = 1.0
    stats = weight_stats(w)  # median norm is 0: only the exact-zero rule can apply
    assert stats.dead_filters == [0, 1, 3]
    assert stats.duplicate_pairs == 0


def test_near_duplicates_found_exactly_across_blocks(monkeypatch):
    r = np.random.default_rng(2)
    w = r.standard_normal((64, 27)).astype(np.float32)
    w[40] = 3.0 * w[2]                                  # same direction, other scale: cosine 1
    w[63] = w[5] + 0.01 * r.standard_normal(27).astype(np.float32)  # nearly the same
    w[7] = -w[8]                                        # opposite: not a duplicate
    w[9] = 0                                            # dead: left out, not paired with anything
    w[10] = 0
    unit = w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-30)
    similarity = unit @ unit.T
    alive = np.linalg.norm(w, axis=1) > 0
    expected = {(i, j) for i in range(64) for j in range(i + 1, 64)
                if alive[i] and alive[j] and similarity[i, j] > 0.99}
    assert expected == {(2, 40), (5, 63)}
    monkeypatch.setattr(audit_module.weights, "_SIMILARITY_BLOCK", 64 * 5)  # 5 rows per block: pairs span blocks
    stats = weight_stats(w.reshape(64, 3, 3, 3))
    assert stats.duplicate_pairs == 2
    assert {(a, b) for a, b, _ in stats.duplicate_examples} == expected
    assert stats.duplicate_examples[0][:2] == (2, 40) and stats.duplicate_examples[0][2] == pytest.approx(1.0)


def test_near_duplicates_of_a_wide_layer():
    r = np.random.default_rng(3)
    w = r.standard_normal((512, 512, 3, 3)).astype(np.float32)
    w[500] = w[17]
    stats = weight_stats(w)
    assert stats.duplicate_pairs == 1 and stats.duplicate_examples[0][:2] == (17, 500)


# ---------------------------------------------------------------- planted dead filters

def test_small_net_finds_exactly_the_planted_dead_filters_and_channels(save, images):
    planted = {"conv1": [2, 5], "head": [7]}
    m, _ = small_net(dead=planted)
    model = inspector.load(save(m))
    weights_only = audit(model)
    assert [layer.weights.dead_filters for layer in weights_only.layers] == [[2, 5], [], [7]]
    assert weights_only.dead_fraction == pytest.approx(3 / 36)
    result = audit(model, [images], preprocess="tf", device="cpu", quiet=True)
    assert result.images == 8 and result.channels_judged
    # conv1's dead filters give all-zero channels after the Relu; the linear head's zero filter is constant.
    assert [layer.dead_channels for layer in result.layers] == [[2, 5], [], [7]]
    assert result.dead_fraction == pytest.approx(3 / 36)
    silent = result.layers[0].activations.channel_silent_fraction()
    assert silent[2] == silent[5] == 1.0 and silent[[0, 1, 3, 4, 6, 7]].max() == 0.0


def test_untouched_models_report_nothing_dead(save, images):
    for m, _ in (small_net(), vgg16_shaped()):
        result = audit(inspector.load(save(m)), [images], preprocess="tf", device="cpu", quiet=True)
        data = result.to_dict()
        assert all(layer["dead_filters"] == [] and layer["dead_channels"] == [] for layer in data["layers"])
        assert data["summary"]["dead_fraction"] == 0.0 and data["summary"]["near_duplicate_pairs"] == 0
        assert data["summary"]["collapse_layer"] is None


def test_vgg16_shaped_model_finds_exactly_the_planted_dead_filters(save, images):
    planted = {"block1_conv1": [3], "block2_conv2": [0, 31], "block3_conv3": [10], "block5_conv3": [5, 6]}
    m, _ = vgg16_shaped(dead=planted)
    result = audit(inspector.load(save(m)), [images], preprocess="tf", device="cpu", quiet=True)
    assert len(result.layers) == 13 and result.layers[12].filters == 128
    found = {layer.name: layer.weights.dead_filters for layer in result.layers if layer.weights.dead_filters}
    assert found == planted
    # Each planted filter's channel is zero on every image; the zero inputs create no false positives downstream.
    channels = {layer.name: layer.dead_channels for layer in result.layers if layer.dead_channels}
    assert channels == planted
    total = sum(width for block in VGG16_BLOCKS for width in block) // 4
    assert result.total_filters == total
    assert result.dead_fraction == pytest.approx(6 / total)


def test_weak_filter_is_not_dead_and_still_fires(save, images):
    m, _ = small_net(scale={"conv2": {4: 0.05}})
    result = audit(inspector.load(save(m)), [images], preprocess="tf", device="cpu", quiet=True)
    conv2 = result.layers[1]
    assert conv2.weights.l2[4] < 0.1 * conv2.weights.median_l2
    assert conv2.weights.dead_filters == [] and conv2.dead_channels == []


# ----------------------------------------------------------- statistics against NumPy

def reference_stats(maps):
    """The audit's activation figures computed plainly, in float64, from whole (N, C, H, W) maps."""
    x = np.asarray(maps, np.float64)
    n, c = x.shape[:2]
    return {
        "mean": x.mean(), "mean_abs": np.abs(x).mean(), "max": x.max(), "zero_fraction": np.mean(x == 0),
        "channel_zero_fraction": (x == 0).mean(axis=(0, 2, 3)),
        "channel_silent_fraction": (x == 0).reshape(n, c, -1).all(axis=2).mean(axis=0),
        "all_zero_channels": list(np.flatnonzero((x == 0).all(axis=(0, 2, 3)))),
        "spread": x.std(axis=(0, 2, 3)).mean(),
        # Between-image std of each channel's map mean over the channel's RMS, 0 for an all-zero channel.
        "image_response": np.mean(np.where(
            np.sqrt((x ** 2).mean(axis=(0, 2, 3))) > 0,
            x.mean(axis=(2, 3)).std(axis=0) / np.maximum(np.sqrt((x ** 2).mean(axis=(0, 2, 3))), 1e-300), 0.0)),
        "constant": list(np.flatnonzero(x.max(axis=(0, 2, 3)) == x.min(axis=(0, 2, 3)))),
    }


def check_against(result, references, rtol):
    for layer in result.layers:
        ref, acts = reference_stats(references[layer.name]), layer.activations
        assert acts.mean() == pytest.approx(ref["mean"], rel=rtol)
        assert acts.mean_abs() == pytest.approx(ref["mean_abs"], rel=rtol)
        assert acts.max() == pytest.approx(ref["max"], rel=rtol)
        assert acts.zero_fraction() == pytest.approx(ref["zero_fraction"], abs=1e-3)
        np.testing.assert_allclose(acts.channel_zero_fraction(), ref["channel_zero_fraction"], atol=1e-3)
        np.testing.assert_allclose(acts.channel_silent_fraction(), ref["channel_silent_fraction"])
        assert list(np.flatnonzero(acts.all_zero_channels())) == ref["all_zero_channels"]
        assert acts.spread() == pytest.approx(ref["spread"], rel=max(rtol, 1e-5))
        assert layer.to_dict()["image_response"] == pytest.approx(ref["image_response"], rel=max(rtol, 1e-4))
        assert list(np.flatnonzero(acts.constant_channels(0.0))) == ref["constant"]


def test_activation_stats_match_numpy_convolution_and_model_run(save, images):
    m, weights = small_net(dead={"conv2": [3]}, scale={"head": 0.5})
    model = inspector.load(save(m))
    files = files_in(images)
    result = audit(model, files, batch=4, preprocess="tf", device="cpu", quiet=True)
    # 1. Whole maps from Model.run on the same preprocessed batch: same numbers up to summation order.
    batch = model.image_batch(files, "tf")
    check_against(result, {name: maps for name, maps in model.run(batch, device="cpu").items()}, rtol=1e-6)
    # 2. An independent NumPy convolution from the images' pixels.
    pixels = np.stack([np.asarray(Image.open(f).convert("RGB").resize((12, 12), Image.Resampling.BILINEAR),
                                  np.float64) for f in files]).transpose(0, 3, 1, 2) / 127.5 - 1.0
    conv1 = b.relu(b.conv2d(pixels, *weights["conv1"], pad=1))
    conv2 = b.relu(b.conv2d(conv1, *weights["conv2"], pad=1))
    head = b.conv2d(conv2, *weights["head"], pad=1)
    check_against(result, {"conv1": conv1, "conv2": conv2, "head": head}, rtol=1e-4)
    head_stats = result.layers[2].activations  # signed outputs: the magnitude is not the mean
    assert head_stats.mean_abs() > 1.2 * abs(head_stats.mean())


def comparable(data):
    """An audit dict without what legitimately depends on the batch size."""
    data = json.loads(json.dumps(data))
    data["images"].pop("batch")
    data.pop("model")
    return data


def assert_same_audit(a, b_):
    a, b_ = comparable(a), comparable(b_)
    for layer_a, layer_b in zip(a["layers"], b_["layers"]):
        # A signed layer's mean is a sum of cancelling terms: its float32 rounding follows its mean |a|.
        scale = layer_a["mean_abs_activation"] or 0.0
        for key in ("mean_activation", "mean_abs_activation", "max_activation", "zero_fraction", "activation_std",
                    "image_response", "min_dormant_score"):
            value_a, value_b = layer_a.pop(key), layer_b.pop(key)
            absolute = max(1e-7, 1e-5 * scale) if key == "mean_activation" else 1e-7
            assert (value_a is None and value_b is None) or value_a == pytest.approx(value_b, rel=1e-4, abs=absolute)
        np.testing.assert_allclose(layer_a.pop("channel_zero_fraction"), layer_b.pop("channel_zero_fraction"),
                                   atol=1e-7)
    # The ablations' output changes: the channel means behind them are float sums, rounded either way.
    for part, keys in ((a["summary"].get("dormant_check"), ("change_all", "change_kept")),
                       (a.get("verification"), ("output_change_all", "output_change_counted"))):
        other = b_["summary"].get("dormant_check") if "change_all" in keys else b_.get("verification")
        for key in keys if part is not None and other is not None else ():
            value_a, value_b = part.pop(key), other.pop(key)
            assert (value_a is None and value_b is None) or value_a == pytest.approx(value_b, rel=1e-3, abs=1e-6)
    assert a == b_


def test_streaming_gives_the_same_audit_for_any_batch_size(save, images):
    m, _ = small_net(dead={"conv1": [1]})
    model = inspector.load(save(m))
    one = audit(model, [images], batch=1, preprocess="tf", device="cpu", quiet=True).to_dict()
    four = audit(model, [images], batch=4, preprocess="tf", device="cpu", quiet=True).to_dict()  # 4 + 2
    whole = audit(model, [images], preprocess="tf", device="cpu", quiet=True).to_dict()  # default 16: one batch
    assert (one["images"]["batch"], four["images"]["batch"], whole["images"]["batch"]) == (1, 4, 16)
    assert_same_audit(one, four)
    assert_same_audit(one, whole)


def test_fixed_batch_dimension_pads_the_last_batch_and_ignores_the_padding(save, images):
    dynamic = inspector.load(save(small_net()[0], "dynamic.onnx"))
    fixed = inspector.load(save(small_net(batch=4)[0], "fixed.onnx"))
    a = audit(dynamic, [images], batch=1, preprocess="tf", device="cpu", quiet=True)
    c = audit(fixed, [images], preprocess="tf", device="cpu", quiet=True)  # 6 images: 4 + (2 real, 2 padding)
    assert c.batch == 4 and c.images == 8
    assert_same_audit(a.to_dict(), c.to_dict())


def test_nhwc_model_with_fixed_batch_one(save, images):
    m, _ = b.tf2onnx_like_nhwc()
    result = audit(inspector.load(save(m)), [images], preprocess="raw", device="cpu", quiet=True)
    assert result.batch == 1 and result.images == 8
    assert [layer.name for layer in result.layers] == ["block1_conv1", "block1_conv2"]
    assert result.layers[1].activations.zero_fraction() == 0.0  # Sigmoid never gives exact zeros


# ---------------------------------------------------------------------------- collapse

def test_collapse_flags_the_layer_where_activations_die(save, images):
    """c3's weights and bias scaled by 1e-3: c3 itself only changes scale (not a collapse), but c4's
    bias (0.3) then drowns what c3 passes on: c4 answers every image (almost) the same."""
    specs = (("c1", 8, True), ("c2", 8, True), ("c3", 8, True), ("c4", 8, True))
    m, _ = conv_stack(specs, size=12, scale={"c3": 1e-3})
    result = audit(inspector.load(save(m)), [images], preprocess="tf", device="cpu", quiet=True)
    collapse = result.to_dict()["summary"]["collapse_layer"]
    assert collapse["name"] == "c4" and collapse["index"] == 3
    assert [layer["collapse"] for layer in result.to_dict()["layers"]] == [False, False, False, True]
    assert "collapse at layer 3 c4" in result.table()
    # A layer driven below zero everywhere: every channel exactly zero, all dead.
    m, _ = conv_stack(specs, size=12, bias=-1000.0)
    result = audit(inspector.load(save(m, "dead.onnx")), [images], preprocess="tf", device="cpu", quiet=True)
    assert result.collapse()["index"] == 0 and "100.0% of its channels are dead" in result.collapse()["reason"]
    assert result.layers[0].dead_channels == list(range(8))


def test_collapse_is_judged_on_the_response_to_images_not_on_scale(save, images):
    """c2 scaled by 1e-3 and c3's weights (not its bias) by 1e3: the same function, a dip in every
    magnitude, no collapse. c3's bias scaled too (300): the bias drowns c2's answer, c3 collapses."""
    specs = (("c1", 8, True), ("c2", 8, True), ("c3", 8, True), ("c4", 8, True))
    plain, w = conv_stack(specs, size=12)
    m, _ = conv_stack(specs, size=12, scale={"c2": 1e-3})
    scaled = numpy_helper.to_array(next(t for t in m.graph.initializer if t.name == "c3/w")) * 1e3
    for t in m.graph.initializer:
        if t.name == "c3/w":
            t.CopyFrom(numpy_helper.from_array(scaled.astype(np.float32), "c3/w"))
    result = audit(inspector.load(save(m)), [images], preprocess="tf", device="cpu", quiet=True)
    spreads = [layer.activations.spread() for layer in result.layers]
    assert spreads[1] < 0.01 * spreads[0]  # the old, scale-bound rule would have called this a collapse
    assert result.collapse() is None
    reference = audit(inspector.load(save(plain, "plain.onnx")), [images], preprocess="tf", device="cpu", quiet=True)
    for a, b_ in zip(result.layers, reference.layers):
        assert a.to_dict()["image_response"] == pytest.approx(b_.to_dict()["image_response"], rel=1e-3)
    m, _ = conv_stack(specs, size=12, scale={"c2": 1e-3, "c3": 1e3})
    result = audit(inspector.load(save(m, "drowned.onnx")), [images], preprocess="tf", device="cpu", quiet=True)
    assert result.collapse()["name"] == "c3"


def test_too_few_images_report_silent_channels_but_keep_them_out_of_the_gate(save, images):
    m, _ = small_net()
    set_initializer(m, "conv1/b", lambda b_: np.where(np.arange(len(b_)) == 2, -1000.0, b_))  # channel 2 killed
    model = inspector.load(save(m))
    few = audit(model, files_in(images)[:3], preprocess="tf", device="cpu", quiet=True)
    assert not few.channels_judged and few.collapse() is None
    assert few.layers[0].dead_channels == [2]        # reported...
    assert few.dead_unit_count == 0 and few.dead_fraction == 0.0  # ...but not judged (the weights are fine)
    data = few.to_dict()
    assert data["summary"]["channels_judged"] is False and "at least 8 images" in data["summary"]["notes"][0]
    assert "not judged" in few.table() and "silent on 3 of 3 images" in few.table()
    enough = audit(model, [images], preprocess="tf", device="cpu", quiet=True)
    assert enough.channels_judged and 2 in enough.layers[0].dead_channels and enough.dead_unit_count >= 1


# ---------------------------------------------------------------------------------- CLI

def test_cli_json_validates_and_table_is_printed(save, images, tmp_path, capsys):
    m, _ = small_net(dead={"conv2": [0]})
    path = save(m)
    target = tmp_path / "out" / "audit.json"
    target.parent.mkdir()
    code, out, err = run_cli(capsys, "audit", path, images, "--preprocess", "tf", "--json", target, "--quiet")
    assert code == 0
    assert "conv2" in out and "dead fraction 0.0278" in out
    data = json.loads(target.read_text())
    jsonschema.validate(data, schema())
    assert data["images"]["count"] == 8 and data["layers"][1]["dead_filters"] == [0]
    assert data["layers"][1]["dead_channels"] == [0] and data["summary"]["dead_units"] == 1
    assert os.listdir(target.parent) == ["audit.json"]  # nothing else left beside it
    code, out, err = run_cli(capsys, "audit", path, "--json", "-")  # weights only, JSON on stdout
    assert code == 0
    data = json.loads(out)
    jsonschema.validate(data, schema())
    assert data["images"]["count"] == 0 and data["layers"][0]["dead_channels"] is None
    assert "dead fraction" in err  # the table moved to stderr


def test_schema_rejects_what_it_should():
    bad = {"schema_version": "2"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema())


def test_fail_on_dead_exit_codes(save, images):
    planted = save(small_net(dead={"conv1": [0, 1]})[0], "planted.onnx")  # 2 of 36 = 0.0556
    clean = save(small_net()[0], "clean.onnx")

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "inspector", "audit", *map(str, args)],
                              capture_output=True, text=True, timeout=120)

    result = cli(planted, "--fail-on-dead", "0.05")
    assert result.returncode == 1
    assert "dead fraction 0.0556 (2 of 36 filters dead) exceeds --fail-on-dead 0.05" in result.stderr
    assert cli(planted, "--fail-on-dead", "0.06").returncode == 0
    assert cli(clean, images, "--preprocess", "tf", "--fail-on-dead", "0", "-q").returncode == 0
    result = cli(planted, "--fail-on-dead", "1.5")
    assert result.returncode == 2 and "between 0 and 1" in result.stderr


def test_unreadable_image_is_skipped_and_counted(save, images, tmp_path, capsys):
    broken = os.path.join(images, "zz_broken.jpg")
    with open(broken, "w") as handle:
        handle.write("this is text, not a JPEG")
    with open(os.path.join(images, "notes.txt"), "w") as handle:  # not an image extension: not even tried
        handle.write("hello")
    target = tmp_path / "a.json"
    code, out, err = run_cli(capsys, "audit", save(small_net()[0]), images, "--preprocess", "tf",
                             "--json", target, "-q")
    assert code == 0
    assert f"skipped {broken}" in err and "1 image(s) skipped" in out
    data = json.loads(target.read_text())
    jsonschema.validate(data, schema())
    assert data["images"]["count"] == 8 and data["images"]["requested"] == 9
    assert [entry["path"] for entry in data["images"]["skipped"]] == [broken]
    assert "not an image" in data["images"]["skipped"][0]["reason"]


@pytest.mark.parametrize("case", ["empty dir", "no image files", "all unreadable", "missing image",
                                  "batch mismatch", "unknown preprocessing"])
def test_bad_input_exits_2_with_a_message(case, save, tmp_path, capsys, images):
    folder = tmp_path / "folder"
    folder.mkdir()
    model = save(small_net()[0])
    args = [model, folder, "--preprocess", "tf"]
    if case == "empty dir":
        message = "no images in directory"
    elif case == "no image files":
        (folder / "readme.md").write_text("x")
        message = "no images in directory"
    elif case == "all unreadable":
        (folder / "a.png").write_text("x")
        message = "none of the 1 images could be read"
    elif case == "missing image":
        args = [model, tmp_path / "nope.jpg", "--preprocess", "tf"]
        message = "image not found"
    elif case == "batch mismatch":
        args = [save(small_net(batch=1)[0], "fixed.onnx"), images, "--preprocess", "tf", "--batch", "4"]
        message = "fixed batch dimension of 1"
    else:
        args = [model, images, "--preprocess", "nonsense"]
        message = "unknown preprocessing 'nonsense'"
    code, out, err = run_cli(capsys, "audit", *args)
    assert code == 2, err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 2


def test_a_batch_the_model_cannot_take_says_so(tmp_path, save, images, capsys):
    # A Reshape that bakes in batch 1: the batch dimension looks open but only 1 works.
    r = np.random.default_rng(0)
    w = r.standard_normal((4, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Reshape", ["r", "shape"], ["y"])]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([1, 4 * 12 * 12], np.int64), "shape")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 12, 12])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = save(m)
    # After the last conv layer the Reshape is head: the audit's session does not hold it, so batches work.
    code, out, err = run_cli(capsys, "audit", path, images, "--preprocess", "tf", "--batch", "4", "-q")
    assert code == 0, err
    # Before a conv layer it is in every run the audit makes.
    w2 = r.standard_normal((2, 4, 1, 1)).astype(np.float32)
    m.graph.node[2].output[0] = "reshaped"
    m.graph.node.append(helper.make_node("Reshape", ["reshaped", "back"], ["square"]))
    m.graph.node.append(helper.make_node("Conv", ["square", "w2"], ["y2"], name="conv2"))
    m.graph.initializer.extend([numpy_helper.from_array(np.array([1, 4, 12, 12], np.int64), "back"),
                                numpy_helper.from_array(w2, "w2")])
    m.graph.output[0].name = "y2"
    path = save(m, "trunk_reshape.onnx")
    code, out, err = run_cli(capsys, "audit", path, images, "--preprocess", "tf", "--batch", "4", "-q")
    assert code == 2 and "try --batch 1" in err
    code, out, err = run_cli(capsys, "audit", path, images, "--preprocess", "tf", "--batch", "1", "-q")
    assert code == 0, err


def test_statistics_reduced_in_the_graph_give_the_audit_of_the_map_path(save, images, monkeypatch):
    """The layers the graph reduces (ingraph.py) and NumPy over the maps: the same audit."""
    m, _ = small_net(dead={"conv2": [4]})
    model = inspector.load(save(m))
    monkeypatch.setattr(audit_module.ingraph, "_IN_GRAPH", False)
    maps = audit(model, [images], batch=2, preprocess="tf", device="cpu", quiet=True).to_dict()
    monkeypatch.setattr(audit_module.ingraph, "_IN_GRAPH", True)
    reduced = audit(model, [images], batch=2, preprocess="tf", device="cpu", quiet=True).to_dict()
    assert_same_audit(maps, reduced)
    assert reduced["layers"][1]["dead_channels"] == [4]


def test_collapse_ignores_gates_and_pooled_branches(save, images):
    """A squeeze-and-excite gate (1x1 maps, sigmoid values in [0, 1]) beside a main path whose
    means are in the tens is not a collapse; the same small values on the main path are."""
    from onnx import helper, numpy_helper

    r = b.rng(11)
    w1 = (r.standard_normal((8, 3, 3, 3)) * 300).astype(np.float32)
    w_squeeze = (r.standard_normal((4, 8, 1, 1)) * 1e-4).astype(np.float32)
    w_excite = (r.standard_normal((8, 4, 1, 1)) * 1e-4).astype(np.float32)
    w2 = (r.standard_normal((8, 8, 3, 3)) * 0.3).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="main1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("GlobalAveragePool", ["r1"], ["pooled"]),
        helper.make_node("Conv", ["pooled", "ws"], ["cs"], name="squeeze"),
        helper.make_node("Relu", ["cs"], ["rs"]),
        helper.make_node("Conv", ["rs", "we"], ["ce"], name="excite"),
        helper.make_node("HardSigmoid", ["ce"], ["gate"]),
        helper.make_node("Mul", ["r1", "gate"], ["scaled"]),
        helper.make_node("Conv", ["scaled", "w2"], ["c2"], name="main2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["y"]),
    ]
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (w_squeeze, "ws"), (w_excite, "we"), (w2, "w2"))]
    m = b.model(nodes, [b.image_input(shape=(1, 3, 12, 12))], [b.out("y")], inits)
    result = audit(inspector.load(save(m)), [images], preprocess="tf", device="cpu", quiet=True)
    by_name = {layer.name: layer for layer in result.layers}
    assert by_name["excite"].activations.mean_abs() < 0.01 * by_name["main1"].activations.mean_abs()
    assert result.collapse() is None


def test_statistics_on_all_cores_equal_the_sequential_ones(save, images, monkeypatch):
    """Big batches spread their layers' statistics over a thread pool: the same figures."""
    from inspector import audit as audit_module

    m, _ = small_net(dead={"conv2": [3]})
    model = inspector.load(save(m))
    monkeypatch.setattr(audit_module.ingraph, "_IN_GRAPH", False)  # the map path
    monkeypatch.setattr(audit_module.parallel, "_PARALLEL_ELEMENTS", 10**12)
    sequential = audit(model, [images], batch=4, preprocess="tf", device="cpu", quiet=True).to_dict()
    monkeypatch.setattr(audit_module.parallel, "_PARALLEL_ELEMENTS", 0)
    calls = []
    real_pool = audit_module.parallel._stats_pool

    def counting_pool():
        calls.append(1)
        return real_pool()

    monkeypatch.setattr(audit_module.parallel, "_stats_pool", counting_pool)
    parallel = audit(model, [images], batch=4, preprocess="tf", device="cpu", quiet=True).to_dict()
    assert calls  # the pool really ran
    assert_same_audit(sequential, parallel)


def test_default_batch_shrinks_to_the_memory_budget(tmp_path):
    """The default batch of 16 holds 16 images' maps: under a budget of 2.5 images (each layer's map measured
    from onnxruntime's own tensors) it runs 2 a batch, and the verdicts are those of the default batch."""
    import onnxruntime as ort

    m, _ = b.conv_relu_nchw(seed=0, size=16)
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    path = str(tmp_path / "m.onnx")
    onnx.save(m, path)
    photos = [b.random_photo(str(tmp_path / f"p{i}.png"), 16, 16, seed=i) for i in range(6)]
    model = inspector.load(path)
    outputs = [layer.output for layer in model.layers]
    proto = onnx.load(path)
    proto.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in outputs
                              if name not in {o.name for o in proto.graph.output})
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    per_image = sum(t[0].nbytes for t in session.run(outputs, {"x": np.zeros((1, 3, 16, 16), np.float32)}))
    small = audit(model, photos, preprocess="raw", quiet=True, max_memory=int(2.5 * per_image))
    default = audit(inspector.load(path), photos, preprocess="raw", quiet=True)
    assert small.batch == 2 and default.batch == 16
    assert [layer.dead_channels for layer in small.layers] == [layer.dead_channels for layer in default.layers]
