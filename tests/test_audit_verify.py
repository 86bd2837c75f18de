"""The audit verifies its verdicts on images it did not judge on (issue 24).

Each test builds a tiny model in memory whose dead units are known by construction, and checks the
audit's own verification against an independent ablation: a graph edit written here (constants put
in place of the channels' maps with onnx.helper, the means computed here with onnxruntime on the
unmodified model and NumPy) run with onnxruntime.
"""

import json
import os
import subprocess
import sys

import jsonschema
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

import inspector
from inspector.audit import audit
from inspector.audit.verify import fire_rate_bound, split

SCHEMA_PATH = os.path.join(os.path.dirname(inspector.__file__), "schemas", "audit.schema.json")
SIZE = 12
WIDTH = 8


# conv1 (3->8, 3x3, Relu) -> conv2 (8->4, 1x1, linear) = the output
#   conv1 channel 2: zero weights, bias -1      -> provably silent (dead by weights)
#   conv1 channel 5: tiny weights, bias -10     -> silent on any input in [0, 1] (provably, not by weights)
#   conv1 channel 6: red detector, bias -0.8    -> silent on dark images, fires on bright red ones
def make_net(seed=0):
    r = np.random.default_rng(seed)
    w1 = (r.standard_normal((WIDTH, 3, 3, 3)) * 0.3).astype(np.float32)
    w1 -= w1.mean(axis=(1, 2, 3), keepdims=True)
    b1 = np.full(WIDTH, 0.2, np.float32)
    w1[2], b1[2] = 0, -1.0
    w1[5], b1[5] = 1e-3, -10.0
    w1[6] = 0
    w1[6, 0] = 1.0 / 9  # the mean red value over its 3x3 window
    b1[6] = -0.8
    w2 = (r.standard_normal((4, WIDTH, 1, 1)) * 0.5).astype(np.float32)
    w2[:, 6] = 3.0  # channel 6 matters downstream
    b2 = np.zeros(4, np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["y"], name="conv2")]
    inits = [numpy_helper.from_array(v, n) for n, v in (("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2))]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])
    graph = helper.make_graph(nodes, "net", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def write_images(folder, count, seed, bright=False):
    """``count`` PNGs of SIZE x SIZE: dark noise (every value < 0.5 after /255), or bright red."""
    os.makedirs(folder, exist_ok=True)
    r = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        pixels = r.integers(0, 120, (SIZE, SIZE, 3), dtype=np.uint8)
        if bright:
            pixels[..., 0] = r.integers(240, 256, (SIZE, SIZE), dtype=np.uint8)
        path = os.path.join(folder, f"{'b' if bright else 'd'}{i:02d}.png")
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def as_input(paths):
    """The 'raw' preprocessing, by hand: RGB / 255, NCHW."""
    return np.stack([np.asarray(Image.open(p).convert("RGB"), np.float32).transpose(2, 0, 1) / 255 for p in paths])


def independent_change(model_path, judged, held, channels):
    """Replace r1's ``channels`` by their mean over ``judged`` (a graph edit here), and return the largest
    output change on ``held`` over the output's range there."""
    m = onnx.load(model_path)
    probe = onnx.ModelProto()
    probe.CopyFrom(m)
    probe.graph.output.append(helper.make_empty_tensor_value_info("r1"))
    plain = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    r1 = plain.run(["r1"], {"x": as_input(judged)})[0].astype(np.float64)
    means = r1.mean(axis=(0, 2, 3))
    keep = np.ones(WIDTH, np.float32)
    fill = np.zeros(WIDTH, np.float32)
    keep[channels] = 0
    fill[channels] = means[channels]
    for node in m.graph.node:
        node.input[:] = ["r1_ablated" if name == "r1" else name for name in node.input]
    m.graph.initializer.extend([numpy_helper.from_array(keep.reshape(1, WIDTH, 1, 1), "keep"),
                                numpy_helper.from_array(fill.reshape(1, WIDTH, 1, 1), "fill")])
    m.graph.node.extend([helper.make_node("Mul", ["r1", "keep"], ["r1_kept"]),
                         helper.make_node("Add", ["r1_kept", "fill"], ["r1_ablated"])])
    edited = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    x = as_input(held)
    reference = plain.run(["y"], {"x": x})[0].astype(np.float64)
    ablated = edited.run(["y"], {"x": x})[0].astype(np.float64)
    return float(np.abs(ablated - reference).max() / (reference.max() - reference.min()))


@pytest.fixture
def net(save):
    return save(make_net())


def schema():
    with open(SCHEMA_PATH) as handle:
        return json.load(handle)


def test_fire_rate_bound_is_the_exact_binomial_bound():
    for n in (1, 8, 11, 100, 10_000):
        bound = fire_rate_bound(n)
        # P(no firing in n images | rate = bound) = 5%
        assert (1 - bound) ** n == pytest.approx(0.05, rel=1e-9)
        if n >= 8:  # "about 3/N"
            assert bound == pytest.approx(3 / n, rel=0.2 if n < 20 else 0.02)
    assert fire_rate_bound(0) is None


def test_the_default_split_is_deterministic_and_keeps_enough_to_judge():
    files = [f"{i:02d}.png" for i in range(11)]
    judged, held = split(files, 8)
    assert (len(judged), len(held)) == (8, 3) and split(files, 8) == (judged, held)
    assert set(judged).isdisjoint(held) and sorted(judged + held) == files
    assert split(files[:9], 8) == (files[:9], [])  # one to spare: nothing held out
    judged, held = split([f"{i:03d}" for i in range(1000)], 8)
    assert len(held) == 64 and len(judged) == 936


def test_a_channel_that_answers_held_out_images_is_not_confirmed(net, tmp_path):
    judged = write_images(tmp_path / "judge", 8, seed=1)
    held = write_images(tmp_path / "bright", 3, seed=2, bright=True)
    result = audit(inspector.load(net), judged, preprocess="raw", device="cpu", quiet=True, confirm=held)
    conv1 = result.layers[0]
    assert conv1.dead_channels == [2, 5, 6]  # all three silent on the dark images
    assert conv1.refused == {6}  # ...but 6 answers the bright ones
    assert conv1.dead_units() == [2, 5]
    check = result.verification
    assert check.status == "partly confirmed" and check.images == 3 and check.source == "--confirm"
    assert check.units_all == 3 and check.units_confirmed == 2 and check.refused == {"conv1": [6]}
    # Its own figures against an independent ablation (graph edit + onnxruntime on the unmodified model).
    everything = independent_change(net, judged, held, [2, 5, 6])
    counted = independent_change(net, judged, held, [2, 5])
    assert everything > 0.05
    assert everything / 2 <= check.change_all <= everything * 2
    assert counted <= 0.01 and check.change_kept <= 0.01
    assert counted == pytest.approx(check.change_kept, abs=1e-6)
    data = result.to_dict()
    jsonschema.validate(data, schema())
    assert data["layers"][0]["not_confirmed_channels"] == [6]
    assert data["summary"]["dead_units"] == 2 and data["summary"]["verified_dead_units"] == 2
    assert data["summary"]["not_confirmed_channels"] == 1
    assert data["summary"]["gate_left_out"]["not_confirmed"] == 1
    assert "6" not in str(data["layers"][0]["dead_filters"])
    assert "nc" in result.table() and "not confirmed" in result.table()


def test_a_channel_that_answers_held_out_images_is_refused_however_little_its_removal_moves(save, tmp_path):
    # make_net with channel 6 read by tiny weights: it fires on the bright held-out images, but replacing it
    # by its (zero) judged mean moves the output by far less than the tolerance. Its verdict is refuted all
    # the same (a search that fills the tolerance with such channels on a few images overshoots on more).
    m = make_net()
    for tensor in m.graph.initializer:
        if tensor.name == "w2":
            w = numpy_helper.to_array(tensor).copy()
            w[:, 6] = 1e-4
            tensor.CopyFrom(numpy_helper.from_array(w, "w2"))
    path = save(m, "quiet6.onnx")
    judged = write_images(tmp_path / "judge", 8, seed=1)
    held = write_images(tmp_path / "bright", 3, seed=2, bright=True)
    # Independently: channel 6 is zero on every judged image and not on the held-out ones, and its removal
    # alone stays within the tolerance there.
    probe = onnx.load(path)
    probe.graph.output.append(helper.make_empty_tensor_value_info("r1"))
    plain = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    assert plain.run(["r1"], {"x": as_input(judged)})[0][:, 6].max() == 0
    assert plain.run(["r1"], {"x": as_input(held)})[0][:, 6].max() > 0.1
    moved = independent_change(path, judged, held, [2, 5, 6])
    assert 0 < moved < 0.01
    result = audit(inspector.load(path), judged, preprocess="raw", device="cpu", quiet=True, confirm=held)
    conv1, check = result.layers[0], result.verification
    assert conv1.dead_channels == [2, 5, 6] and conv1.refused == {6} and conv1.dead_units() == [2, 5]
    assert check.answered == 1 and check.refused == {"conv1": [6]} and check.status == "partly confirmed"
    assert moved / 2 <= check.change_all <= moved * 2  # the figure for everything, 6 included
    assert check.change_kept == pytest.approx(independent_change(path, judged, held, [2, 5]), abs=1e-9)
    data = result.to_dict()
    jsonschema.validate(data, schema())
    assert data["verification"]["units_answered_held_out"] == 1 and data["summary"]["dead_units"] == 2
    assert "1 of them answered a held-out image" in check.sentence()


def test_a_constant_channel_that_varies_on_held_out_images_is_refused_even_if_small(save, tmp_path):
    # make_net's conv2 (linear, audited) channel 3 reads only conv1's channel 6 (silent on dark images), with
    # a tiny weight and no bias: exactly 0 on the dark judged images (constant), small answers on the
    # bright held-out ones (their magnitudes would pass as dormant beside its siblings).
    m = make_net()
    for tensor in m.graph.initializer:
        if tensor.name == "w2":
            w = numpy_helper.to_array(tensor).copy()
            w[3] = 0
            w[3, 6] = 1e-3
            tensor.CopyFrom(numpy_helper.from_array(w, "w2"))
    path = save(m, "const3.onnx")
    judged = write_images(tmp_path / "judge", 8, seed=1)
    held = write_images(tmp_path / "bright", 3, seed=2, bright=True)
    plain = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert np.all(plain.run(["y"], {"x": as_input(judged)})[0][:, 3] == 0)
    answers = plain.run(["y"], {"x": as_input(held)})[0]
    assert answers[:, 3].max() > 0 and np.abs(answers[:, 3]).mean() < 1e-3 * np.abs(answers).mean()
    result = audit(inspector.load(path), judged, preprocess="raw", device="cpu", quiet=True, confirm=held)
    conv2 = result.layers[1]
    assert 3 in conv2.channel_masks()["constant"].nonzero()[0] and 3 in conv2.refused
    assert 3 not in conv2.dead_units() and result.verification.answered >= 1


def test_when_every_silent_channel_is_refused_before_the_search_no_run_ablates_nothing(save, tmp_path, monkeypatch):
    from inspector.audit import verify as verify_module

    # make_net with channel 2 silent by its tiny weights rather than dead by them (nothing provable), and
    # all three silent channels refuted by the held-out statistics (as on a random-weight VGG16, where every
    # silent channel sits near its threshold): the search has nothing to remove, so the held-out images run
    # twice, for the reference and for the figure of everything called dead, not a third time with nothing
    # ablated.
    m = make_net()
    w1 = next(t for t in m.graph.initializer if t.name == "w1")
    weights = numpy_helper.to_array(w1).copy()
    weights[2] = 1e-3
    w1.CopyFrom(numpy_helper.from_array(weights, "w1"))
    path = save(m, "nothing_provable.onnx")
    monkeypatch.setattr(verify_module, "answered", lambda result, *args: {"conv1": {2, 5, 6}})
    judged = write_images(tmp_path / "judge", 8, seed=1)
    held = write_images(tmp_path / "bright", 3, seed=2, bright=True)
    result = audit(inspector.load(path), judged, preprocess="raw", device="cpu", quiet=True, confirm=held)
    check = result.verification
    assert result.layers[0].weights.dead_filters == []
    assert result.layers[0].dead_channels == [2, 5, 6] and result.layers[0].dead_units() == []
    assert check.units_all == 3 and check.units_confirmed == 0 and check.refused == {"conv1": [2, 5, 6]}
    assert check.trials == 2
    assert check.change_kept == 0.0
    everything = independent_change(path, judged, held, [2, 5, 6])
    assert everything > 0.05
    assert everything / 2 <= check.change_all <= everything * 2
    jsonschema.validate(result.to_dict(), schema())


def test_truly_removable_units_keep_their_count(net, tmp_path):
    # Judged and held out on bright images alike: channel 6 fires everywhere, 2 and 5 never.
    images = write_images(tmp_path / "judge", 8, seed=1) + write_images(tmp_path / "bright", 4, seed=3, bright=True)
    result = audit(inspector.load(net), images, preprocess="raw", device="cpu", quiet=True)
    check = result.verification
    assert result.images == 9 and check.images == 3 and check.source.startswith("held out 3 of 12")
    assert result.layers[0].dead_channels == [2, 5]
    assert check.status == "confirmed" and result.layers[0].refused == set()
    assert result.dead_unit_count == result.verified_dead_unit_count == 2
    # Provably silent channels replaced by their (zero) mean: the outputs do not move at all.
    assert check.change_all == 0.0
    judged, held = split(images, 8)
    assert independent_change(net, judged, held, [2, 5]) == 0.0


def test_a_dormant_channel_is_checked_and_the_figure_agrees_with_an_independent_ablation(save, tmp_path):
    # conv1 without its Relu; channel 3's filter scaled by 0.02 (dormant: its mean |a| is under 1% of the
    # layer's, and every channel is read with the same weight), small but not removable without a change.
    m = make_net(seed=4)
    nodes = [n for n in m.graph.node if n.op_type != "Relu"]
    nodes[0].output[0] = "r1"
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    for tensor in m.graph.initializer:
        if tensor.name == "w1":
            w = numpy_helper.to_array(tensor).copy()
            w[3] *= 2e-2
            tensor.CopyFrom(numpy_helper.from_array(w, "w1"))
        if tensor.name == "w2":
            w = numpy_helper.to_array(tensor).copy()
            w[:] = 0.5
            tensor.CopyFrom(numpy_helper.from_array(w, "w2"))
        if tensor.name == "b1":
            b = numpy_helper.to_array(tensor).copy()
            b[3] = 0.0
            tensor.CopyFrom(numpy_helper.from_array(b, "b1"))
    path = save(m, "linear.onnx")
    judged = write_images(tmp_path / "judge", 8, seed=5)
    held = write_images(tmp_path / "held", 3, seed=6)
    result = audit(inspector.load(path), judged, preprocess="raw", device="cpu", quiet=True, confirm=held)
    conv1 = result.layers[0]
    assert 3 in conv1.channel_masks()["dormant"].nonzero()[0] and result.dormant_check["not_dormant"] == 0
    dead = sorted(set(conv1.dead_channels) | set(conv1.weights.dead_filters))
    independent = independent_change(path, judged, held, dead)
    assert 1e-4 < independent < 0.01 and result.verification.status == "confirmed"
    assert independent / 2 <= result.verification.change_all <= independent * 2
    # A tolerance this tight: removing channel 3 moves the judged outputs, so it is not dormant at all (an
    # answer, however small); the filter dead by its weights stays dead (provable).
    tight = audit(inspector.load(path), judged, preprocess="raw", device="cpu", quiet=True, confirm=held,
                  tolerance=1e-9)
    conv1 = tight.layers[0]
    assert conv1.not_dormant == {3} and 3 not in conv1.dead_channels and tight.dormant_check["not_dormant"] == 1
    assert tight.to_dict()["layers"][0]["not_dormant_channels"] == [3]
    assert "1 channel(s) small enough to be dormant by score are answers" in tight.table()
    assert 2 in conv1.dead_units() and tight.verification.change_all == 0.0


def test_too_few_images_to_hold_out_says_so_and_the_gate_leaves_the_channels_out(net, tmp_path):
    images = write_images(tmp_path / "judge", 9, seed=1)
    result = audit(inspector.load(net), images, preprocess="raw", device="cpu", quiet=True)
    assert result.verification.status == "not run" and "--confirm" in result.verification.reason
    assert result.images == 9 and result.layers[0].dead_channels == [2, 5, 6]
    assert result.dead_unit_count == 3  # judged, as before
    assert result.verified_dead_unit_count == 1  # the filter dead by its weights alone
    left = result.left_out()
    assert left["not_verified"] == 2 and "not verified" in left["reasons"][0]
    assert "verdicts not verified" in result.table()
    evidence = result.to_dict()["layers"][0]["evidence"]
    assert evidence == {"images": 9, "fire_rate_upper_95": pytest.approx(1 - 0.05 ** (1 / 9)),
                        "preprocess_source": "flag", "verification": "not verified"}


def test_cli_gate_counts_verified_verdicts_and_says_what_it_left_out(net, tmp_path):
    judged = write_images(tmp_path / "judge", 8, seed=1)
    held = write_images(tmp_path / "bright", 3, seed=2, bright=True)
    target = tmp_path / "audit.json"

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "inspector", "audit", net, *map(str, args)],
                              capture_output=True, text=True, timeout=300)

    # 12 filters: 2 counted (the filter dead by its weights and channel 5), channel 6 left out.
    done = cli(tmp_path / "judge", "--confirm", tmp_path / "bright", "--preprocess", "raw", "-q",
               "--fail-on-dead", "0.15", "--json", target)
    assert done.returncode == 1, done.stderr
    assert "left out: 1 silent channel(s) not confirmed" in done.stderr
    assert "dead fraction 0.1667 (2 of 12 filters dead)" in done.stderr
    data = json.loads(target.read_text())
    jsonschema.validate(data, schema())
    assert data["verification"]["units_not_confirmed"] == 1 and data["images"]["held_out"] == 3
    assert cli(tmp_path / "judge", "--confirm", tmp_path / "bright", "--preprocess", "raw", "-q",
               "--fail-on-dead", "0.17").returncode == 0
    # Without held-out images the two unverified channel verdicts are left out, and it says so.
    alone = cli(tmp_path / "judge", "--preprocess", "raw", "-q", "--fail-on-dead", "0.05")
    assert alone.returncode == 1 and "2 channel verdict(s) not verified" in alone.stderr
    assert "(1 of 12 filters dead)" in alone.stderr
    bad = cli("--confirm", tmp_path / "bright", "-q")
    assert bad.returncode == 2 and "give the images to judge on" in bad.stderr
    assert len(judged) == 8 and len(held) == 3


def test_prune_channels_takes_the_confirmed_set_and_reports_the_figure(net, tmp_path):
    write_images(tmp_path / "judge", 8, seed=1)
    write_images(tmp_path / "bright", 3, seed=2, bright=True)
    audit_json = tmp_path / "audit.json"
    subprocess.run([sys.executable, "-m", "inspector", "audit", net, tmp_path / "judge", "--confirm",
                    tmp_path / "bright", "--preprocess", "raw", "-q", "--json", audit_json], check=True,
                   capture_output=True, timeout=300)
    from inspector.prune.audit_input import dead_by_layer, verification_line

    data = json.loads(audit_json.read_text())
    told = []
    dead = dead_by_layer(data, warn=told.append)
    assert dead["conv1"]["channels"] == [2, 5]
    assert any("did not confirm" in line for line in told)
    line = verification_line(data)
    assert "verified by the audit" in line and "3 held-out image(s)" in line
    done = subprocess.run([sys.executable, "-m", "inspector", "prune", net, "--from-audit", audit_json, "--channels",
                           "--check", tmp_path / "bright", "--preprocess", "raw", "--dry-run"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "verified by the audit" in done.stdout and "1 channel(s) the audit found silent but did not confirm" in done.stderr


def test_bisection_finds_the_one_responsive_channel_among_layers_of_silent_ones(save, tmp_path, monkeypatch):
    from inspector.audit import verify as verify_module

    # The held-out statistics would refute channel 6 before any ablation (the test above): without them,
    # the ablation search alone must find it.
    monkeypatch.setattr(verify_module, "answered", lambda *args: {})
    # conv1 as in make_net (2, 5 silent for good, 6 silent on dark images only), then conv2 (3x3, Relu) with
    # channels 0, 3 and 7 silent for good (tiny weights, bias -10), then the linear 1x1 head.
    m = make_net()
    r = np.random.default_rng(7)
    w = (r.standard_normal((WIDTH, WIDTH, 3, 3)) * 0.2).astype(np.float32)
    b = np.full(WIDTH, 0.1, np.float32)
    for c in (0, 3, 7):
        w[c], b[c] = 1e-4, -10.0
    w[:, 6] = np.abs(w[:, 6]) + 0.2  # what channel 6 says reaches the head
    nodes = list(m.graph.node)
    nodes[2].input[0] = "r2"
    nodes[2:2] = [helper.make_node("Conv", ["r1", "w1b", "b1b"], ["c2"], pads=[1, 1, 1, 1], name="conv1b"),
                  helper.make_node("Relu", ["c2"], ["r2"], name="relu1b")]
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    m.graph.initializer.extend([numpy_helper.from_array(w, "w1b"), numpy_helper.from_array(b, "b1b")])
    path = save(m, "deeper.onnx")
    judged = write_images(tmp_path / "judge", 8, seed=1)
    held = write_images(tmp_path / "bright", 3, seed=2, bright=True)
    result = audit(inspector.load(path), judged, preprocess="raw", device="cpu", quiet=True, confirm=held)
    check = result.verification
    assert [layer.dead_channels for layer in result.layers[:2]] == [[2, 5, 6], [0, 3, 7]]
    assert check.refused == {"conv1": [6]} and check.units_confirmed == 5 and check.not_localised == 0
    assert check.change_all > 0.01 >= check.change_kept
    assert check.trials <= 8  # reference, all, base, then a bisection over 5 candidates in 2 layers


def test_the_command_line_default_tolerance_is_the_library_one():
    from inspector.audit import DEFAULT_TOLERANCE
    from inspector.commands import audit as command

    assert command.DEFAULT_TOLERANCE == DEFAULT_TOLERANCE == 0.01


@pytest.mark.parametrize("held, total, every", [(5, 17, "every 3rd"), (3, 11, "every 4th"), (2, 4, "every 2nd"),
                                                 (4, 84, "every 21st"), (4, 44, "every 11th"), (4, 4, "every image")])
def test_the_split_is_described_in_english(held, total, every):
    from inspector.audit.verify import describe_split

    assert describe_split(held, total) == f"held out {held} of {total} ({every}, deterministic)"


def _hypersensitive(save):
    """conv1 (3->4, 3x3, linear): channels 0-2 random, channel 3 constant (bias 1, weights 3e-8: every value
    within 3 float32 steps of 1). conv2 (4->2, 1x1, linear): y0 mixes channels 0-2; y1 another mix plus
    1e6 * (channel 3 - 1), an amplifier of that channel's last bits (a network that amplifies rounding)."""
    r = np.random.default_rng(11)
    w1 = (r.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32)
    b1 = np.full(4, 0.2, np.float32)
    w1[3], b1[3] = 3e-8, 1.0
    w2 = np.zeros((2, 4, 1, 1), np.float32)
    w2[:, :3, 0, 0] = 6 * r.standard_normal((2, 3)).astype(np.float32)
    w2[1, 3] = 1e6
    b2 = np.array([0.0, -1e6], np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["r1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["y"], name="conv2")]
    inits = [numpy_helper.from_array(v, n) for n, v in (("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2))]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])
    graph = helper.make_graph(nodes, "amplifier", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return save(m, "amplifier.onnx"), w2, b2


def test_a_constant_channel_whose_rounding_the_network_amplifies_is_judged_above_the_noise_floor(
        save, tmp_path, monkeypatch):
    from inspector.audit import verify as verify_module

    path, w2, b2 = _hypersensitive(save)
    judged = write_images(tmp_path / "judge", 8, seed=1)
    held = write_images(tmp_path / "held", 3, seed=2, bright=True)
    # Independently (onnxruntime on the unmodified model for conv1, NumPy in float64 for conv2): channel 3 is
    # constant within 1e-6 relative on the dark judged and bright held-out images together, its mean ablation
    # moves y past 1% of its range (1.9%), and scaling it by 1 +- 2**-20 alone moves y more (5.0%), under
    # FLOOR_MAX_RAISE times the tolerance.
    probe = onnx.load(path)
    probe.graph.output.append(helper.make_empty_tensor_value_info("r1"))
    plain = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    r1_judged = plain.run(["r1"], {"x": as_input(judged)})[0].astype(np.float64)
    r1 = plain.run(["r1"], {"x": as_input(held)})[0].astype(np.float64)
    assert np.ptp(np.concatenate([r1_judged[:, 3], r1[:, 3]])) <= 1e-6
    def head(maps):
        return np.einsum("oc,nchw->nohw", w2[:, :, 0, 0].astype(np.float64), maps) + b2[None, :, None, None]

    reference = head(r1)
    span = reference.max() - reference.min()

    def moved(maps):
        return float(np.abs(head(maps) - reference).max() / span)

    ablated = r1.copy()
    ablated[:, 3] = np.float32(r1_judged[:, 3].mean())
    scaled = [r1.copy(), r1.copy()]
    scaled[0][:, 3] *= 1 + 2.0 ** -20
    scaled[1][:, 3] *= 1 - 2.0 ** -20
    removal, floor = moved(ablated), max(moved(s) for s in scaled)
    assert 0.01 < removal < floor < verify_module.FLOOR_MAX_RAISE * 0.01
    result = audit(inspector.load(path), judged, preprocess="raw", device="cpu", quiet=True, confirm=held)
    check = result.verification
    assert 3 in result.layers[0].channel_masks()["constant"].nonzero()[0]
    assert floor / 2 <= check.noise_floor <= floor * 2 and check.change_all > 0.01
    assert check.status == "confirmed" and 3 in result.layers[0].dead_units() and not result.layers[0].refused
    assert "raised to the noise floor" in check.sentence()
    # The floor does not cover real answers: channels 0-2, dormant by score (their outgoing weights are 1e-6 of
    # channel 3's), move y when removed, far past their own floor (scaling them by 1 +- 2**-20), and stay.
    dormant = result.dormant_check
    assert dormant["not_dormant"] == 3 and dormant["change_all"] > 0.1 and dormant["noise_floor"] < 1e-4
    assert not {0, 1, 2} & set(result.layers[0].dead_units())
    jsonschema.validate(result.to_dict(), schema())
    assert result.to_dict()["verification"]["noise_floor"] == pytest.approx(check.noise_floor)
    # Without the floor, the same audit refuses the channel: the floor is what counts it.
    monkeypatch.setattr(verify_module, "NOISE_STEP", 0.0)
    bare = audit(inspector.load(path), judged, preprocess="raw", device="cpu", quiet=True, confirm=held)
    assert bare.layers[0].refused == {3} and bare.verification.noise_floor == 0.0
    # A floor past FLOOR_MAX_RAISE times the tolerance raises nothing: the outputs cannot tell the unit's
    # effect from rounding, and what they cannot tell stays uncounted (a tolerance of a twentieth of the floor).
    monkeypatch.setattr(verify_module, "NOISE_STEP", 2.0 ** -20)
    capped = audit(inspector.load(path), judged, preprocess="raw", device="cpu", quiet=True, confirm=held,
                   tolerance=floor / 20)
    assert capped.layers[0].refused == {3} and capped.verification.noise_floor > 10 * capped.verification.tolerance
    assert "cannot tell their effect from rounding" in capped.verification.sentence()
