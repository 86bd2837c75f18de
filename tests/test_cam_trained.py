"""inspector cam on the trained models from other frameworks (skipped where `make models-trained` could not fetch them).

Keras VGG16 via tf2onnx (NHWC, 4 classes), the PP-OCRv4 text detector (Paddle; no class output, so
ScoreCAM and AblationCAM score its probability map's mean), and a YOLOv8 detector (EigenCAM).
AblationCAM checks at run time that the cut graph, fed the unmodified maps, gives the whole model's score.
"""

import json

import numpy as np
import pytest

import inspector
import trained
from inspector import cli

pytestmark = pytest.mark.slow


def photo(entry, name):
    found = [p for p in trained.photos(entry) if p.endswith(name)]
    return found[0] if found else trained.photos(entry)[0]


def test_vgg16_tumor_nhwc():
    path, entry = trained.model("vgg16_tumor")
    model = inspector.load(path)
    image = photo(entry, "chelsea.png")
    eigen = model.cam(image, "eigencam", preprocess="raw")
    assert eigen.layer == "block5_conv3" and eigen.layer_shape == (512, 15, 15) and eigen.cam.shape == (240, 240)
    # EigenCAM again from the maps API and NumPy alone
    maps = model.maps(image, ["block5_conv3"], preprocess="raw")["block5_conv3"].astype(np.float64)
    points = maps.reshape(512, -1).T
    points -= points.mean(axis=0)
    v = np.linalg.svd(points, full_matrices=False)[2][0]
    low = np.maximum((points @ (v if v.sum() > 0 else -v)).reshape(15, 15), 0)
    np.testing.assert_allclose(eigen.low_res, low, atol=1e-3 * low.max())
    ablation = model.cam(image, "ablationcam", preprocess="raw")
    import onnxruntime as ort

    probabilities = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(
        None, {model.input.name: model.image_batch([image], "raw")})[0][0]
    assert ablation.target == int(np.argmax(probabilities)) and ablation.target_label.startswith("class ")
    # the score is the logit under the model's Softmax: its softmax gives back the model's probabilities
    assert ablation.score > 0 and probabilities.max() > 0.25
    assert ablation.runs == 513 and ablation.cam.max() == pytest.approx(1.0)


def test_ppocr_detector_without_class_output(tmp_path, capsys):
    path, entry = trained.model("ppocrv4_det")
    model = inspector.load(path)
    image = photo(entry, "text_photo.jpg")
    options = dict(preprocess="torch", size=(416, 320))
    # As a newcomer runs it: no flags. No class output: EigenCAM, said, on the guessed preprocessing.
    code = cli.main(["cam", path, image, "-o", str(tmp_path), "--json"])
    captured = capsys.readouterr()
    assert code == 0 and "no class output" in captured.err and "guessed 'torch'" in captured.err
    summary = json.loads(captured.out)
    assert summary["method"] == "eigencam" and summary["method_source"] == "chosen"
    assert summary["input"]["preprocess_source"] == "guessed"
    from inspector.cam import cut

    layer = model.layer("p2o.Conv.40")
    assert len(cut.plan(model.file.model, layer.output, "sigmoid_0.tmp_0", model.input.name).fed) == 4  # FPN branches
    # (the run itself checks that the cut graph, fed those, gives the whole model's score)
    ablation = model.cam(image, "ablationcam", "p2o.Conv.40", "sigmoid_0.tmp_0:mean", **options)
    assert ablation.layer_shape == (96, 26, 20) and ablation.target_label == "sigmoid_0.tmp_0 mean"
    first = model.layers[0]
    score = model.cam(image, "scorecam", first.name, "sigmoid_0.tmp_0:mean", batch=8, **options)
    assert score.runs == first.filters and score.cam.shape == (416, 320)
    assert model.cam(image, "eigencam", **options).layer == model.layers[-1].name  # the 1-channel output map
    with pytest.raises(inspector.InspectorError, match="1x1 maps"):
        model.cam(image, "eigencam", "p2o.Conv.59", **options)  # a squeeze-and-excitation conv


def test_yolo_detector_eigencam(tmp_path, capsys):
    path, entry = trained.model("yolov8n_doclaynet")
    model = inspector.load(path)
    # No flags: the Ultralytics metadata gives the preprocessing and size; no class output gives EigenCAM.
    code = cli.main(["cam", path, photo(entry, "page.png"), "-o", str(tmp_path), "--json"])
    captured = capsys.readouterr()
    assert code == 0 and "EigenCAM" in captured.err and "guessed" not in captured.err
    summary = json.loads(captured.out)
    assert summary["method"] == "eigencam" and summary["layer"] == "model.22.cv3.2.cv3.2.2"
    assert summary["input"]["preprocess_source"] == "exporter" and summary["input"]["size"] == [1024, 1024]
    result = model.cam(photo(entry, "page.png"), "eigencam", preprocess="raw")
    assert result.layer == "model.22.cv3.2.cv3.2.2"  # the class head at stride 32, not the DFL conv after it
    assert result.layer_shape == (11, 32, 32) and result.cam.shape == (1024, 1024)
