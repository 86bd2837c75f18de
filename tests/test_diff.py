"""inspector diff: layer matching, streamed SQNR against an independent onnxruntime reference, QDQ models
made by onnxruntime's own quantizer, layouts, the CLI gate and its exit codes.

Every reference figure here comes from plain onnxruntime runs of the UNMODIFIED model files, with the
compared tensors added as outputs by the test itself (onnx.helper), and NumPy; never through inspector.
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
from PIL import Image

import builders as b
import inspector
from inspector.cli import main
from inspector.compare import diff, match_layers

SCHEMA_PATH = os.path.join(os.path.dirname(inspector.__file__), "schemas", "diff.schema.json")


# ------------------------------------------------------------------------------ references

def photos(folder, count, size, seed=0):
    """``count`` noise PNGs at exactly the model's size (no resizing: preprocess raw is pixels / 255)."""
    paths = []
    for i in range(count):
        path = os.path.join(str(folder), f"img{i:02d}.png")
        Image.fromarray(b.rng(seed + i).integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def raw_inputs(paths, size, layout="NCHW"):
    """RGB / 255, resized bilinearly with Pillow where needed, stacked in ``layout``."""
    arrays = []
    for path in paths:
        image = Image.open(path).convert("RGB")
        if image.size != (size[1], size[0]):
            image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        x = np.asarray(image, np.float32) / 255.0
        arrays.append(x.transpose(2, 0, 1) if layout == "NCHW" else x)
    return np.stack(arrays)


def ort_tensors(path, tensors, inputs, one_by_one=False):
    """The named tensors from onnxruntime on the unmodified file, with them added as graph outputs."""
    model = onnx.load(path)
    for name in tensors:
        model.graph.output.append(helper.make_empty_tensor_value_info(name))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name
    if one_by_one:
        runs = [session.run(list(tensors), {feed: inputs[i:i + 1]}) for i in range(len(inputs))]
        return {name: np.concatenate([run[k] for run in runs]) for k, name in enumerate(tensors)}
    return dict(zip(tensors, session.run(list(tensors), {feed: inputs})))


def reference_sqnr(a, b_):
    a, b_ = np.asarray(a, np.float64), np.asarray(b_, np.float64)
    return 10 * math.log10(np.sum(a * a) / np.sum((a - b_) ** 2))


def float_model(seed=0, size=16, dynamic=True):
    """builders.conv_relu_nchw with an open batch dimension (so the diff streams batches)."""
    m, w = b.conv_relu_nchw(seed=seed, size=size)
    if dynamic:
        m.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    return m, w


def with_weights(m, name, value):
    m2 = onnx.ModelProto()
    m2.CopyFrom(m)
    for i, init in enumerate(m2.graph.initializer):
        if init.name == name:
            m2.graph.initializer[i].CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))
    return m2


def layer_json(data, name):
    return next(layer for layer in data["layers"] if layer["name"] == name)


def run_cli(*args):
    return main([str(a) for a in args])


# ------------------------------------------------------------------------------ matching

def _nchw_twin():
    """The tf2onnx_like_nhwc network as a torch-style NCHW export: other names, same convs."""
    _, w = b.tf2onnx_like_nhwc()
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="/conv1/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="/act1/Relu"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="/conv2/Conv"),
        helper.make_node("Sigmoid", ["c2"], ["y"], name="/act2/Sigmoid"),
    ]
    inits = [numpy_helper.from_array(w[k], k) for k in ("w1", "b1", "w2", "b2")]
    return b.model(nodes, [b.image_input(shape=(1, 3, 12, 12))], [b.out("y")], inits)


# Each case: (model A, model B, expected [(name in A, name in B, how)]).
#   name:      the same source layer names (a model against a copy of itself)
#   node:      layer names made unique differently, node names equal
#   structure: NHWC tf2onnx-style  [T]->Conv->[T]->Relu->[T]->Conv->[T]->Sigmoid
#              against NCHW torch-style  Conv->Relu->Conv->Sigmoid: no name in common, same weights
#              (more cases in test_pairing.py)
MATCH_CASES = {
    "name": (lambda: b.conv_relu_nchw()[0], lambda: b.conv_relu_nchw(seed=9)[0],
             [("features.0", "features.0", "name"), ("features.2", "features.2", "name")]),
    "structure": (lambda: b.tf2onnx_like_nhwc()[0], _nchw_twin,
                  [("block1_conv1", "conv1", "structure"), ("block1_conv2", "conv2", "structure")]),
}


@pytest.mark.parametrize("case", sorted(MATCH_CASES))
def test_layers_are_matched_and_say_how(case, save):
    build_a, build_b, expected = MATCH_CASES[case]
    a = inspector.load(save(build_a(), "a.onnx"))
    bb = inspector.load(save(build_b(), "b.onnx"))
    pairs = match_layers(a, bb)
    assert [(p.a.name, p.b.name, p.match) for p in pairs] == expected


def test_node_names_match_when_source_names_do_not(save):
    m, _ = b.conv_relu_nchw()
    a = inspector.load(save(m, "a.onnx"))
    bb = inspector.load(save(m, "b.onnx"))
    # Same nodes, but B's layer names differ (as another exporter's naming would make them).
    for layer in bb.layers:
        layer.name = "renamed_" + layer.name
    extra = [x for x in bb.layers]
    extra.reverse()  # and not in the same order: position must not be what matches them
    pairs = match_layers(a.layers, extra)
    assert [(p.a.name, p.b.name, p.match) for p in pairs] == [
        ("features.0", "renamed_features.0", "node"), ("features.2", "renamed_features.2", "node")]


def test_unrelated_models_exit_2(save, capsys, tmp_path):
    a = save(b.conv_relu_nchw()[0], "a.onnx")
    other = save(b.constant_weights()[0], "b.onnx")
    assert run_cli("diff", a, other) == 2
    err = capsys.readouterr().err
    assert "no conv layer in common" in err and "Traceback" not in err


# ------------------------------------------------------------------------------ figures

def test_model_against_itself_is_exact_and_infinite(save, tmp_path, capsys):
    path = save(float_model()[0], "a.onnx")
    images = photos(tmp_path, 5, (16, 16))
    out = tmp_path / "d.json"
    assert run_cli("diff", path, path, *images, "--preprocess", "raw", "--batch", "2", "--json", out,
                   "--fail-under", "200") == 0
    table = capsys.readouterr().out
    assert table.count("inf (exact)") == 2 and "identical" in table
    data = json.loads(out.read_text())
    jsonschema.validate(data, json.load(open(SCHEMA_PATH)))
    for layer in data["layers"]:
        assert layer["sqnr_db"] == "inf" and layer["exact"] is True and layer["cosine"] == 1.0
        assert layer["max_abs_error"] == 0.0 and layer["worst_channels"] == []
        assert layer["weight_change"]["exact"] is True and layer["weight_change"]["sqnr_db"] == "inf"
    assert data["images"]["count"] == 5 and data["worst_layer"] is None
    assert data["summary"]["exact"] == 2


def test_perturbed_layer_gives_the_independently_computed_sqnr(save, tmp_path):
    m, w = float_model()
    delta = b.rng(42).standard_normal(w["w2"].shape).astype(np.float32) * 0.05
    path_a = save(m, "a.onnx")
    path_b = save(with_weights(m, "w2", w["w2"] + delta), "b.onnx")
    images = photos(tmp_path, 7, (16, 16), seed=3)
    result = diff(path_a, path_b, images, preprocess="raw", batch=3, devices=["cpu"])
    by_name = {layer.pair.a.name: layer for layer in result.layers}

    inputs = raw_inputs(images, (16, 16))
    ref_a = ort_tensors(path_a, ["r1", "y"], inputs)
    ref_b = ort_tensors(path_b, ["r1", "y"], inputs)
    assert np.array_equal(ref_a["r1"], ref_b["r1"])
    assert by_name["features.0"].stats.exact and by_name["features.0"].sqnr() == math.inf
    expected = reference_sqnr(ref_a["y"], ref_b["y"])
    assert 10 < expected < 40  # a real, finite difference
    assert by_name["features.2"].sqnr() == pytest.approx(expected, abs=1e-3)
    stats = by_name["features.2"].stats
    a64, b64 = ref_a["y"].astype(np.float64), ref_b["y"].astype(np.float64)
    cosine = np.sum(a64 * b64) / np.sqrt(np.sum(a64 ** 2) * np.sum(b64 ** 2))
    assert stats.cosine() == pytest.approx(cosine, abs=1e-6)
    assert stats.max_abs_error == pytest.approx(np.abs(a64 - b64).max(), rel=1e-6)
    with np.errstate(divide="ignore", invalid="ignore"):  # a channel silent in both: 0 / 0
        per_channel = 10 * np.log10(np.sum(a64 ** 2, axis=(0, 2, 3)) / np.sum((a64 - b64) ** 2, axis=(0, 2, 3)))
    assert [c["channel"] for c in stats.worst_channels(3)] == list(np.argsort(per_channel)[:3])
    # The weights: the relative change is ||delta|| / ||[w2, b2]|| (the bias did not move).
    weights = by_name["features.2"].weights
    norm = np.sqrt(np.sum(w["w2"].astype(np.float64) ** 2) + np.sum(w["b2"].astype(np.float64) ** 2))
    assert weights["relative"] == pytest.approx(np.linalg.norm(delta.astype(np.float64)) / norm, rel=1e-5)
    assert by_name["features.0"].weights["exact"] is True
    assert result.worst_layer().pair.a.name == "features.2"


def test_gate_exit_codes(save, tmp_path, capsys):
    m, w = float_model()
    path_a = save(m, "a.onnx")
    path_b = save(with_weights(m, "w2", w["w2"] * 1.0 + b.rng(1).standard_normal(w["w2"].shape) * 0.05), "b.onnx")
    images = photos(tmp_path, 3, (16, 16))
    sqnr = diff(path_a, path_b, images, preprocess="raw").layers[1].sqnr()
    assert run_cli("diff", path_a, path_b, *images, "--preprocess", "raw", "--fail-under", sqnr - 0.5) == 0
    capsys.readouterr()
    assert run_cli("diff", path_a, path_b, *images, "--preprocess", "raw", "--fail-under", sqnr + 0.5) == 1
    captured = capsys.readouterr()
    assert "features.2" in captured.err and "check failed" in captured.err
    assert "<- first below" in captured.out
    # Usage errors, each with its own message (exit 2 alone is also what an unexpected exception gives).
    assert run_cli("diff", path_a, path_b, "--fail-under", "30") == 2
    err = capsys.readouterr().err
    assert "needs images" in err and "unexpected" not in err and "Traceback" not in err
    assert run_cli("diff", path_a, path_b, *images, "--preprocess", "raw", "--device", "cpu", "--device", "cpu",
                   "--device", "cpu") == 2
    err = capsys.readouterr().err
    assert "--device takes one value" in err and "unexpected" not in err and "Traceback" not in err


def test_nhwc_export_against_nchw_export_of_the_same_network(save, tmp_path):
    nhwc = save(b.tf2onnx_like_nhwc()[0], "keras.onnx")
    nchw = save(_nchw_twin(), "torch.onnx")
    images = photos(tmp_path, 3, (12, 12))
    result = diff(nhwc, nchw, images, preprocess="raw", devices=["cpu", "cpu"])
    assert [layer.pair.match for layer in result.layers] == ["structure", "structure"]
    for layer in result.layers:  # the same network: the same maps up to float rounding
        assert layer.sqnr() > 100
        assert layer.weights["exact"] is True


def test_pictures_and_json_from_the_cli(save, tmp_path, capsys):
    m, w = float_model()
    path_a = save(m, "a.onnx")
    path_b = save(with_weights(m, "w1", w["w1"] * 1.02), "b.onnx")
    images = photos(tmp_path, 2, (16, 16))
    out = tmp_path / "pictures"
    assert run_cli("diff", path_a, path_b, *images, "--preprocess", "raw", "-o", out, "--json", "-") == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    jsonschema.validate(data, json.load(open(SCHEMA_PATH)))
    written = sorted(os.listdir(out))
    assert written == ["diff_00_features.0.png", "diff_01_features.2.png"]
    with Image.open(out / written[0]) as image:
        assert image.size[0] > 300 and image.size[1] > 200
    # The worst layer by onnxruntime's maps of both unmodified files and NumPy's SQNR over both images.
    inputs = raw_inputs(images, (16, 16))
    maps_a, maps_b = ort_tensors(path_a, ["r1", "y"], inputs), ort_tensors(path_b, ["r1", "y"], inputs)
    expected = {name: reference_sqnr(maps_a[tensor], maps_b[tensor])
                for name, tensor in (("features.0", "r1"), ("features.2", "y"))}
    assert abs(expected["features.0"] - expected["features.2"]) > 0.1  # one is clearly worse
    assert data["worst_layer"]["name"] == min(expected, key=expected.get)
    for name, sqnr in expected.items():
        assert layer_json(data, name)["sqnr_db"] == pytest.approx(sqnr, abs=0.01)


# ------------------------------------------------------------------------------ QDQ

def _quantize(float_path, out_path, images, size):
    return b.quantize_qdq(float_path, out_path, raw_inputs(images, size))


def _qdq_activation_tensors(path):
    """For each Conv, in order: the DequantizeLinear output after the QuantizeLinear its output (or its
    Relu's output) feeds, found by walking the graph here."""
    graph = onnx.load(path).graph
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    found = []
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        tensor = node.output[0]
        (user,) = consumers[tensor]
        if user.op_type == "Relu":
            (user,) = consumers[user.output[0]]
        assert user.op_type == "QuantizeLinear"
        (dq,) = consumers[user.output[0]]
        found.append(dq.output[0])
    return found


def test_qdq_model_from_onnxruntimes_quantizer(save, tmp_path):
    m, _ = b.conv_relu_nchw(seed=4, size=16)  # fixed batch 1, as many exports
    float_path = save(m, "float.onnx")
    images = photos(tmp_path, 6, (16, 16), seed=10)
    qdq_path = _quantize(float_path, str(tmp_path / "qdq.onnx"), images[:4], (16, 16))
    qdq = onnx.load(qdq_path)
    assert not any(n.op_type == "Relu" for n in qdq.graph.node)  # the quantizer removed them: Q/DQ clip instead

    # layers: the shown tensor is the dequantized one, the weights come through DequantizeLinear.
    model = inspector.load(qdq_path)
    expected_tensors = _qdq_activation_tensors(qdq_path)
    assert [layer.output for layer in model.layers] == expected_tensors
    assert all(layer.quantization == "qdq" for layer in model.layers)
    # maps: those tensors, channel-first, non-negative like the float model's ReLU outputs, read from
    # onnxruntime's fused int8 QLinearConv kernels (inspector.fused), equal to the unfused graph's values.
    assert set(model.session(model.layers, device="cpu").fetch) == set(expected_tensors)
    inputs = raw_inputs(images, (16, 16))
    reference = ort_tensors(qdq_path, expected_tensors, inputs[:1])
    maps = model.maps(images[0], preprocess="raw")
    for layer, tensor in zip(model.layers, expected_tensors):
        np.testing.assert_array_equal(maps[layer.name], reference[tensor][0])
        assert maps[layer.name].min() >= 0

    # diff: per layer the SQNR of the float ReLU outputs against the dequantized QDQ tensors.
    result = diff(float_path, qdq_path, images, preprocess="raw", devices=["cpu"])
    float_ref = ort_tensors(float_path, ["r1", "y"], inputs, one_by_one=True)
    qdq_ref = ort_tensors(qdq_path, expected_tensors, inputs, one_by_one=True)
    assert [layer.pair.match for layer in result.layers] == ["name", "name"]
    for layer, float_tensor, qdq_tensor in zip(result.layers, ["r1", "y"], expected_tensors):
        expected = reference_sqnr(float_ref[float_tensor], qdq_ref[qdq_tensor])
        assert 10 < expected < 60
        assert layer.sqnr() == pytest.approx(expected, abs=1e-3)
        # Weights dequantized: close to the float ones, not equal.
        assert 0 < layer.weights["relative"] < 0.05


# ------------------------------------------------------------------------------ a real model

@pytest.mark.slow
def test_quantized_trained_vgg16_matches_onnxruntime_per_layer(tmp_path):
    import trained

    path, entry = trained.model("vgg16_tumor")
    photo_paths = trained.photos(entry)
    all_photos = sorted(os.path.join(trained.ROOT, "photos", p) for p in os.listdir(os.path.join(trained.ROOT, "photos")))
    size = tuple(entry["size"])
    qdq_path = _quantize_nhwc(path, str(tmp_path / "vgg16_tumor_qdq.onnx"), photo_paths, size)
    images = [p for p in all_photos if p not in photo_paths][:5]  # not the calibration photos

    result = diff(path, qdq_path, images, preprocess="raw", batch=5, devices=["cpu"])
    assert len(result.layers) == 13 and all(layer.pair.match == "name" for layer in result.layers)

    inputs = raw_inputs(images, size, layout="NHWC")
    graph = onnx.load(path, load_external_data=False).graph
    relus = [n.output[0] for n in graph.node if n.op_type == "Relu" and "conv" in n.name]
    assert len(relus) == 13
    float_ref = ort_tensors(path, relus, inputs)
    qdq_ref = ort_tensors(qdq_path, _qdq_activation_tensors(qdq_path), inputs)
    report = []
    for layer, relu, dq in zip(result.layers, relus, _qdq_activation_tensors(qdq_path)):
        expected = reference_sqnr(float_ref[relu], qdq_ref[dq])
        report.append((layer.pair.a.name, layer.sqnr(), expected))
        assert abs(layer.sqnr() - expected) <= 0.1, report  # the issue asks for 1.5 dB; it agrees to 0.001
    print("\n".join(f"{n:14s} inspector {got:7.3f} dB  onnxruntime {want:7.3f} dB" for n, got, want in report))
    worst = min(report, key=lambda r: r[2])
    assert result.worst_layer().pair.a.name == worst[0]
    assert result.to_dict()["worst_layer"]["name"] == worst[0]


def _quantize_nhwc(float_path, out_path, images, size):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    inputs = raw_inputs(images, size, layout="NHWC")
    name = ort.InferenceSession(float_path, providers=["CPUExecutionProvider"]).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([{name: inputs[i:i + 1]} for i in range(len(inputs))])

        def get_next(self):
            return next(self.feeds, None)

    quantize_static(float_path, out_path, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return out_path


# ------------------------------------------------------------------------------ report --compare

def test_report_compare_section(save, tmp_path, capsys):
    m, w = b.conv_relu_nchw()
    for node in m.graph.node:  # a hostile name from the model file must come out escaped
        if node.name == "/features/features.2/Conv":
            node.name = "conv<img src=x onerror=alert(1)>"
    path_a = save(m, "a.onnx")
    path_b = save(with_weights(m, "w2", w["w2"] * 1.05), "b.onnx")
    image = photos(tmp_path, 1, (16, 16))[0]
    out = tmp_path / "r.html"
    assert run_cli("report", path_a, image, "--preprocess", "raw", "--compare", path_b, "-o", out) == 0
    page = out.read_text()
    section = page[page.index('<section id="compare">'):]
    assert "<a href=\"#compare\">" in page and section.index("</section>") < section.index("</main>")
    assert "<img src=x" not in page and "conv&lt;img src=x onerror=alert(1)&gt;" in section
    assert section.count("data:image/png;base64,") >= 1  # the worst layer side by side
    assert "Worst layer: 1" in section
    # Against an unrelated model: exit 2, one line, and no report left behind.
    other = save(b.constant_weights()[0], "c.onnx")
    out2 = tmp_path / "r2.html"
    capsys.readouterr()
    assert run_cli("report", path_a, image, "--preprocess", "raw", "--compare", other, "-o", out2) == 2
    assert "no conv layer in common" in capsys.readouterr().err and not out2.exists()


def test_streamed_figures_against_numpy_and_nan_maps():
    """LayerStats over uneven batches equals NumPy over everything at once; NaN maps have no SQNR."""
    from inspector.compare import LayerStats

    r = b.rng(7)
    a = r.standard_normal((7, 4, 5, 6)).astype(np.float32)
    other = (a + r.standard_normal(a.shape).astype(np.float32) * np.array([0.01, 0.1, 1, 0])[None, :, None, None])
    stats = LayerStats(4)
    for start, stop in ((0, 3), (3, 4), (4, 7)):
        stats.add(a[start:stop], other[start:stop].astype(np.float32))
    assert stats.sqnr_db() == pytest.approx(reference_sqnr(a, other), abs=1e-4)
    assert [c["channel"] for c in stats.worst_channels()] == [2, 1, 0]  # channel 3 is exact: not "worst"
    assert stats.channel_sqnr_db()[3] == math.inf
    assert stats.max_abs_error == pytest.approx(np.abs(a.astype(np.float64) - other).max(), rel=1e-6)
    broken = other.copy()
    broken[5, 1, 2, 3] = np.nan
    nan_stats = LayerStats(4)
    nan_stats.add(a, broken)
    assert nan_stats.sqnr_db() is None and nan_stats.nonfinite and nan_stats.worst_channels() == []


def test_maps_of_another_shape_are_reported_not_compared(save, tmp_path, capsys):
    m, _ = float_model()
    other = onnx.ModelProto()
    other.CopyFrom(m)
    for attribute in other.graph.node[0].attribute:  # the first conv without padding: 14x14 maps, not 16x16
        if attribute.name == "pads":
            attribute.ints[:] = [0, 0, 0, 0]
    path_a, path_b = save(m, "a.onnx"), save(other, "b.onnx")
    images = photos(tmp_path, 2, (16, 16))
    out = tmp_path / "d.json"
    assert run_cli("diff", path_a, path_b, *images, "--preprocess", "raw", "--device", "cpu", "--device", "cpu",
                   "--json", out) == 0
    data = json.loads(out.read_text())
    first, second = data["layers"]
    assert first["compared"] is False and first["note"] == "maps 8x16x16 against 8x14x14"
    assert first["weight_change"]["exact"] is True  # same weights, other padding
    assert second["compared"] is False and "against" in second["note"]
    assert data["images"]["providers"] == ["CPUExecutionProvider", "CPUExecutionProvider"]
    assert "maps 8x16x16 against 8x14x14" in capsys.readouterr().out


def test_qdq_chain_through_quantized_batchnorm_and_weights_quantized_in_graph(save):
    """What onnxruntime's quantizer writes for an unfolded BatchNormalization (Paddle exports):
         x -> Conv(DQ(Q(w_float))) -> Q -> DQ -> BatchNormalization(DQ(scale), ...) -> Q -> DQ -> y
    The shown tensor is the last DequantizeLinear's output (after the BN, as in the float model), and the
    weights are the float initializer quantized and dequantized as the graph does it."""
    r = b.rng(11)
    w = r.standard_normal((4, 3, 3, 3)).astype(np.float32)
    w_scale = (np.abs(w).reshape(4, -1).max(axis=1) / 127).astype(np.float32)
    gamma_q = r.integers(50, 120, 4).astype(np.int8)
    consts = {"w": w, "w_scale": w_scale, "w_zero": np.zeros(4, np.int8), "s": np.float32(0.05),
              "z": np.int8(0), "gamma_q": gamma_q, "g_scale": np.float32(0.01), "beta": np.zeros(4, np.float32),
              "mean": np.zeros(4, np.float32), "var": np.ones(4, np.float32)}
    nodes = [
        helper.make_node("QuantizeLinear", ["w", "w_scale", "w_zero"], ["wq"], axis=0),
        helper.make_node("DequantizeLinear", ["wq", "w_scale", "w_zero"], ["wd"], axis=0),
        helper.make_node("Conv", ["x", "wd"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["c", "s", "z"], ["cq"]),
        helper.make_node("DequantizeLinear", ["cq", "s", "z"], ["cd"]),
        helper.make_node("DequantizeLinear", ["gamma_q", "g_scale"], ["gamma"]),
        helper.make_node("BatchNormalization", ["cd", "gamma", "beta", "mean", "var"], ["bn"], name="bn"),
        helper.make_node("QuantizeLinear", ["bn", "s", "z"], ["bq"]),
        helper.make_node("DequantizeLinear", ["bq", "s", "z"], ["y"]),
    ]
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()]
    m = b.model(nodes, [b.image_input(shape=(1, 3, 8, 8))], [b.out("y")], inits)
    model = inspector.load(save(m))
    (layer,) = model.layers
    assert layer.quantization == "qdq" and layer.affine == ("BatchNormalization",) and layer.output == "y"
    expected = np.clip(np.rint(w / w_scale[:, None, None, None]), -128, 127) * w_scale[:, None, None, None]
    np.testing.assert_allclose(model.filters(layer), expected, rtol=0, atol=1e-7)


def test_memory_budget_shrinks_the_batch_and_refuses_what_cannot_fit(save, tmp_path, capsys):
    """Both models' maps of one image, measured from onnxruntime's own tensors: a budget of 2.5 images runs
    2 images a batch (8 by default), with the same SQNR (NumPy over onnxruntime's tensors); a budget under
    one image is refused in one line before any run (exit 2)."""
    m, w = float_model()
    path_a = save(m, "a.onnx")
    path_b = save(with_weights(m, "w2", w["w2"] * 1.01 + 0.01), "b.onnx")
    images = photos(tmp_path, 5, (16, 16), seed=4)
    inputs = raw_inputs(images, (16, 16))
    maps_a, maps_b = ort_tensors(path_a, ["r1", "y"], inputs), ort_tensors(path_b, ["r1", "y"], inputs)
    per_image = sum(maps[name][0].nbytes for maps in (maps_a, maps_b) for name in ("r1", "y"))
    small = diff(path_a, path_b, images, preprocess="raw", devices=["cpu"], max_memory=int(2.5 * per_image))
    assert small.batch == 2 and small.images == 5
    expected = reference_sqnr(maps_a["y"], maps_b["y"])
    assert {layer.pair.a.name: layer for layer in small.layers}["features.2"].sqnr() == pytest.approx(expected, abs=1e-3)
    assert run_cli("diff", path_a, path_b, *images, "--preprocess", "raw", "--max-memory",
                   f"{int(0.8 * per_image)}") == 2
    err = capsys.readouterr().err
    assert "would need about" in err and "--max-memory" in err and len(err.strip().splitlines()) == 1
