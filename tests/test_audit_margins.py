"""A silent channel is confirmed only with a margin (inspector/audit/margins.py, issue 24).

Tiny models built here whose silent channels are near or far from answering by construction; the
margins are recomputed independently (onnxruntime on the unmodified model, NumPy) and the verdicts must
not move under a function-preserving rescaling.
"""

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

import inspector
from inspector.audit import audit
from inspector.audit import margins
from inspector.audit.verify import split

SIZE = 12
WIDTH = 8
NEAR_BIAS = -0.41  # channel 6: the images' red level is 0.30..0.40, so it peaks just under zero
FAR_BIAS = -2.0  # channel 7: the same detector, far under zero


def make_net(scale=1.0, near_bias=NEAR_BIAS):
    """conv1 (3->8, 3x3, Relu) -> depthwise conv2 (8 groups, 3x3, linear) -> conv3 (8->4, 1x1) = the output.

    conv1 channel 2: zero weights (dead by weights); 5: tiny weights, bias -10 (silent, far); 6 and 7: the
    mean red over the window, biases NEAR_BIAS and FAR_BIAS. conv2 channel c reads conv1 channel c alone.
    ``scale``: channels 6 and 7 of conv1 multiplied by it and conv2's filters reading them divided by it
    (the same function)."""
    r = np.random.default_rng(0)
    w1 = (r.standard_normal((WIDTH, 3, 3, 3)) * 0.3).astype(np.float32)
    w1 -= w1.mean(axis=(1, 2, 3), keepdims=True)
    b1 = np.full(WIDTH, 0.2, np.float32)
    w1[2], b1[2] = 0, -1.0
    w1[5], b1[5] = 1e-3, -10.0
    for c, bias in ((6, near_bias), (7, FAR_BIAS)):
        w1[c] = 0
        w1[c, 0] = 1.0 / 9
        b1[c] = bias
    w2 = (r.standard_normal((WIDTH, 1, 3, 3)) * 0.5 + 0.5).astype(np.float32)
    b2 = (r.standard_normal(WIDTH) * 0.1).astype(np.float32)
    w1[6:8] *= scale
    b1[6:8] *= scale
    w2[6:8] /= scale
    w3 = (r.standard_normal((4, WIDTH, 1, 1)) * 0.5).astype(np.float32)
    w3[:, 6] = 3.0
    b3 = np.zeros(4, np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=WIDTH, name="conv2"),
             helper.make_node("Conv", ["c2", "w3", "b3"], ["y"], name="conv3")]
    inits = [numpy_helper.from_array(v, n) for n, v in
             (("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2), ("w3", w3), ("b3", b3))]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])
    graph = helper.make_graph(nodes, "net", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def write_images(folder, count, seed, low=0.30, high=0.40):
    """PNGs whose red plane is one level per image (drawn in [low, high]) with a little noise."""
    os.makedirs(folder, exist_ok=True)
    r = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        pixels = r.integers(0, 100, (SIZE, SIZE, 3)).astype(np.float64)
        level = r.uniform(low, high) * 255
        pixels[..., 0] = np.clip(level + r.integers(-2, 3, (SIZE, SIZE)), 0, 255)
        path = os.path.join(folder, f"i{i:02d}.png")
        Image.fromarray(pixels.astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def as_input(paths):
    return np.stack([np.asarray(Image.open(p).convert("RGB"), np.float32).transpose(2, 0, 1) / 255 for p in paths])


def independent_margins(model_path, paths, channels):
    """(threshold - mean) / std of each channel's per-image maximum of c1, by onnxruntime and NumPy."""
    m = onnx.load(model_path)
    m.graph.output.append(helper.make_empty_tensor_value_info("c1"))
    session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    c1 = session.run(["c1"], {"x": as_input(paths)})[0].astype(np.float64)
    peaks = c1.max(axis=(2, 3))[:, channels]
    assert (peaks < 0).all()
    return -peaks.mean(axis=0) / peaks.std(axis=0, ddof=1)


@pytest.fixture
def images(tmp_path):
    return write_images(tmp_path / "photos", 12, seed=3)


def run(save, images, **kwargs):
    return audit(inspector.load(save(make_net(**kwargs))), images, preprocess="raw", device="cpu", quiet=True)


def test_a_silent_channel_near_its_threshold_is_not_confirmed_and_a_far_one_is(save, images):
    path = save(make_net())
    result = audit(inspector.load(path), images, preprocess="raw", device="cpu", quiet=True)
    conv1, conv2 = result.layers[0], result.layers[1]
    assert conv1.dead_channels == [2, 5, 6, 7]  # silent on every image judged
    # The margins, independently: on the judged images the audit measures (all 9, fewer than 16) and the 3 held out.
    judged, held = split(images, 8)
    near, far = independent_margins(path, judged + held, [6, 7])
    assert near < margins.Z_MIN < far
    assert conv1.refused == {6}
    check = result.verification
    assert check.margin[margins.NEAR] == 1
    # conv2 gives its bias wherever what it reads is silent: constant, and as confirmed as what it reads.
    assert {2, 5, 6, 7} <= set(conv2.channel_masks()["constant"].nonzero()[0])
    assert conv2.refused == {6} and check.margin[margins.INHERITED] == 1
    assert conv1.dead_units() == [2, 5, 7] and 6 not in conv2.dead_units()
    data = result.to_dict()
    assert data["verification"]["units_not_confirmed_by_margin"] == {margins.NEAR: 1, margins.INHERITED: 1}
    assert "near its threshold" in check.sentence()
    left_out = result.left_out()
    assert left_out["not_confirmed"] == 2
    assert left_out["reasons"] == ["2 silent channel(s) not confirmed: 1 near its threshold; 1 reads a channel "
                                   "not confirmed"]


def test_the_near_channel_does_answer_a_slightly_brighter_image(save, tmp_path):
    # What the margin foresees: an image a little redder than those judged opens channel 6.
    path = save(make_net())
    brighter = write_images(tmp_path / "brighter", 2, seed=9, low=0.43, high=0.45)
    m = onnx.load(path)
    m.graph.output.append(helper.make_empty_tensor_value_info("r1"))
    session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    r1 = session.run(["r1"], {"x": as_input(brighter)})[0]
    assert (r1[:, 6].max(axis=(1, 2)) > 0).all() and (r1[:, 7] == 0).all()


@pytest.mark.parametrize("scale", [0.01, 7.3, 1000.0])
def test_a_function_preserving_rescaling_does_not_change_the_verdicts(save, images, scale):
    base = run(save, images)
    scaled = run(save, images, scale=scale)
    for a, b in zip(base.layers, scaled.layers):
        assert a.dead_channels == b.dead_channels and a.refused == b.refused
    assert base.verification.margin == scaled.verification.margin


def test_a_bias_far_enough_confirms_the_channel(save, images):
    result = run(save, images, near_bias=-1.5)
    assert result.layers[0].refused == set() and result.layers[1].refused == set()
    assert result.verification.margin == {}
    assert result.layers[0].dead_units() == [2, 5, 6, 7]


def test_the_margin_of_per_image_peaks():
    peaks = np.array([-0.3, -0.2, -0.25, -0.35])
    assert margins.margin(peaks, 0.0) == pytest.approx(0.275 / np.std(peaks, ddof=1))
    assert margins.margin(peaks, -0.1) == pytest.approx(0.175 / np.std(peaks, ddof=1))
    assert margins.margin(np.array([-1.0, -1.0]), 0.0) == np.inf  # never moves: decided by what it reads
    assert margins.margin(np.array([-1.0, 0.5]), 0.0) == -np.inf  # it answered
    assert margins.read_channels(np.ones((4, 2, 1, 1), np.float32), 2, 3) == [2, 3]
    dense = np.zeros((2, 3, 1, 1), np.float32)
    dense[1, [0, 2]] = 1
    assert margins.read_channels(dense, 1, 1) == [0, 2]


def make_quantized_net():
    """x -> Q/DQ -> conv1 (int8 weights through DequantizeLinear) -> Q/DQ (scale 0.5) -> conv2 (float).

    conv1 channel 1: weights small enough that its output stays within a quarter step of 0 (one level);
    channel 3: zero weights and bias (dead by weights)."""
    r = np.random.default_rng(1)
    w = r.integers(-60, 60, (4, 3, 3, 3)).astype(np.int8)
    w[1] = 1
    w[3] = 0
    b = np.array([0.5, 0.0, -0.2, 0.0], np.float32)
    w2 = (r.standard_normal((2, 4, 1, 1))).astype(np.float32)
    inits = [numpy_helper.from_array(w, "wq"), numpy_helper.from_array(np.float32(0.01), "ws"),
             numpy_helper.from_array(np.int8(0), "wz"), numpy_helper.from_array(b, "b"),
             numpy_helper.from_array(np.float32(1 / 255), "xs"), numpy_helper.from_array(np.uint8(0), "xz"),
             numpy_helper.from_array(np.float32(0.5), "ys"), numpy_helper.from_array(np.uint8(128), "yz"),
             numpy_helper.from_array(w2, "w2")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w1"]),
             helper.make_node("Conv", ["xd", "w1", "b"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("QuantizeLinear", ["c1", "ys", "yz"], ["c1q"]),
             helper.make_node("DequantizeLinear", ["c1q", "ys", "yz"], ["c1d"]),
             helper.make_node("Conv", ["c1d", "w2"], ["y"], name="conv2")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])
    graph = helper.make_graph(nodes, "qnet", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_a_quantized_channel_on_one_level_is_below_resolution_not_constant(save, images):
    path = save(make_quantized_net())
    # Independently: channel 1 before quantization varies, yet rounds to one level on every image.
    m = onnx.load(path)
    m.graph.output.extend([helper.make_empty_tensor_value_info("c1"), helper.make_empty_tensor_value_info("c1d")])
    session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    c1, c1d = session.run(["c1", "c1d"], {"x": as_input(images)})
    assert c1[:, 1].max() > c1[:, 1].min() and np.unique(c1d[:, 1]).size == 1
    result = audit(inspector.load(path), images, preprocess="raw", device="cpu", quiet=True)
    conv1 = result.layers[0]
    assert {1, 3} <= set(conv1.dead_channels)
    assert 3 in conv1.weights.dead_filters
    assert 1 in conv1.refused and 3 not in conv1.refused
    assert result.verification.margin.get(margins.QUANTIZED, 0) >= 1
    assert 3 in conv1.dead_units() and 1 not in conv1.dead_units()


def test_weight_only_quantization_keeps_its_constants(save, tmp_path):
    # The same net with the activation's QuantizeLinear -> DequantizeLinear pair removed: int8 weights, float
    # outputs. Channel 0 reads only the blue plane's centre tap, and every image's blue plane is one value:
    # a float constant (not dead by weights), which no quantization step hides.
    m = make_quantized_net()
    wq = next(t for t in m.graph.initializer if t.name == "wq")
    w = numpy_helper.to_array(wq).copy()
    w[0] = 0
    w[0, 2, 1, 1] = 50
    wq.CopyFrom(numpy_helper.from_array(w, "wq"))
    nodes = [n for n in m.graph.node if n.output[0] not in ("c1q", "c1d")]
    for n in nodes:
        n.input[:] = ["c1" if name == "c1d" else name for name in n.input]
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    model = inspector.load(save(m))
    assert model.layers[0].quantization == "qdq" and not margins.quantized_output(model, model.layers[0])
    images = write_images(tmp_path / "photos", 12, seed=4)
    for path in images:
        pixels = np.asarray(Image.open(path)).copy()
        pixels[..., 2] = 77
        Image.fromarray(pixels).save(path)
    result = audit(model, images, preprocess="raw", device="cpu", quiet=True)
    conv1 = result.layers[0]
    assert conv1.channel_masks()["constant"][0] and 0 not in conv1.weights.dead_filters
    assert 0 in conv1.dead_units() and margins.QUANTIZED not in result.verification.margin
