"""inspector cam on the trained models from other frameworks (skipped where `make models-trained` could not fetch them).

Keras VGG16 via tf2onnx (NHWC, 4 classes), the PP-OCRv4 text detector (Paddle; no class output, so
ScoreCAM and AblationCAM score its probability map's mean), and a YOLOv8 detector (EigenCAM).
AblationCAM checks at run time that the cut graph, fed the unmodified maps, gives the whole model's score.
"""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image

import inspector
import trained
from inspector import cli

pytestmark = pytest.mark.slow


def pillow_batch(image, size, layout="NCHW", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)):
    """The model's input made without the inspector: Pillow's bilinear resize to (H, W), /255, mean/std."""
    with Image.open(image) as photo:
        x = np.asarray(photo.convert("RGB").resize((size[1], size[0]), Image.Resampling.BILINEAR), np.float32)
    x = (x / 255 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return (x.transpose(2, 0, 1) if layout == "NCHW" else x)[None].astype(np.float32)


def onnxruntime_tensors(path, names, x, mask=None):
    """Tensors of the unmodified file from onnxruntime, made outputs with onnx's helper. ``mask``:
    (tensor, per-channel factors) multiplied into that tensor before anything reads it (ablation)."""
    model = onnx.load(path)
    graph = model.graph
    if mask is not None:
        tensor, factors = mask
        for node in graph.node:
            node.input[:] = [tensor + "_masked" if name == tensor else name for name in node.input]
        graph.initializer.append(onnx.numpy_helper.from_array(
            np.asarray(factors, np.float32).reshape(1, -1, 1, 1), tensor + "_mask"))
        graph.node.append(onnx.helper.make_node("Mul", [tensor, tensor + "_mask"], [tensor + "_masked"]))
    known = {o.name for o in graph.output}
    graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in names if n not in known)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip(names, session.run(list(names), {session.get_inputs()[0].name: x})))


def eigencam_low_res(maps):
    """EigenCAM from NumPy alone: the maps' first principal component, sign to a positive sum, ReLU."""
    channels, height, width = maps.shape
    points = maps.astype(np.float64).reshape(channels, -1).T
    points -= points.mean(axis=0)
    v = np.linalg.svd(points, full_matrices=False)[2][0]
    return np.maximum((points @ (v if v.sum() > 0 else -v)).reshape(height, width), 0)


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
    # The score is the logit under the model's Softmax: onnxruntime's logits (the Softmax's input) and
    # probabilities from an input made with Pillow; the logits' softmax gives back the probabilities.
    graph = onnx.load(path, load_external_data=False).graph
    softmax = next(node for node in graph.node if node.op_type == "Softmax")
    found = onnxruntime_tensors(path, [softmax.input[0], softmax.output[0]], pillow_batch(image, (240, 240), "NHWC"))
    logits, probabilities = found[softmax.input[0]][0], found[softmax.output[0]][0]
    assert ablation.target == int(np.argmax(probabilities)) and ablation.target_label.startswith("class ")
    assert ablation.score == pytest.approx(float(logits[ablation.target]), rel=1e-3, abs=1e-3)
    shifted = np.exp(logits - logits.max())
    np.testing.assert_allclose(shifted / shifted.sum(), probabilities, atol=1e-5)
    assert ablation.runs == 513 and ablation.cam.max() == pytest.approx(1.0)


def test_ppocr_detector_without_class_output(tmp_path, capsys):
    path, entry = trained.model("ppocrv4_det")
    model = inspector.load(path)
    image = photo(entry, "text_photo.jpg")
    options = dict(preprocess="torch", size=(416, 320))
    # As a newcomer runs it: no flags. No class output: EigenCAM, said; the preprocessing inferred from the
    # BatchNormalization after its first conv is the one PaddleOCR feeds it ('torch'), and said so.
    code = cli.main(["cam", path, image, "-o", str(tmp_path), "--json"])
    captured = capsys.readouterr()
    assert code == 0 and "no class output" in captured.err and "inferred 'torch'" in captured.err
    summary = json.loads(captured.out)
    assert summary["method"] == "eigencam" and summary["method_source"] == "chosen"
    assert summary["input"]["preprocess_source"] == "inferred" and summary["input"]["preprocess"] == entry["preprocess"]
    from inspector.cam import cut

    layer = model.layer("p2o.Conv.40")
    assert len(cut.plan(model.file.model, layer.output, "sigmoid_0.tmp_0", model.input.name).fed) == 4  # FPN branches
    # (the run itself checks that the cut graph, fed those, gives the whole model's score)
    ablation = model.cam(image, "ablationcam", "p2o.Conv.40", "sigmoid_0.tmp_0:mean", **options)
    assert ablation.layer_shape == (96, 26, 20) and ablation.target_label == "sigmoid_0.tmp_0 mean"
    # The channel weights against the whole model run by onnxruntime with channel k multiplied by 0 (a Mul
    # put in with onnx's helper; the input from Pillow), for the most and least important channels and one
    # between: weight_k = (score - score without k) / score.
    x = pillow_batch(image, (416, 320), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    tensor = layer.output
    plain = onnxruntime_tensors(path, [tensor, "sigmoid_0.tmp_0"], x)
    base = float(plain["sigmoid_0.tmp_0"].mean())
    order = np.argsort(ablation.weights)
    for k in (int(order[0]), int(order[len(order) // 2]), int(order[-1])):
        factors = np.ones(96)
        factors[k] = 0
        dropped = float(onnxruntime_tensors(path, ["sigmoid_0.tmp_0"], x, mask=(tensor, factors))["sigmoid_0.tmp_0"].mean())
        assert ablation.weights[k] == pytest.approx((base - dropped) / base, rel=1e-2, abs=1e-5), k
    # and the map is ReLU(sum of the weighted maps), the maps from onnxruntime
    expected = np.maximum(np.tensordot(ablation.weights, plain[tensor][0].astype(np.float64), axes=1), 0)
    np.testing.assert_allclose(ablation.low_res, expected, atol=1e-3 * expected.max())
    first = model.layers[0]
    score = model.cam(image, "scorecam", first.name, "sigmoid_0.tmp_0:mean", batch=8, **options)
    assert score.runs == first.filters and score.cam.shape == (416, 320)
    eigen = model.cam(image, "eigencam", **options)
    assert eigen.layer == model.layers[-1].name  # the 1-channel output map
    last = onnxruntime_tensors(path, [model.layers[-1].output], x)[model.layers[-1].output][0]
    low = eigencam_low_res(last)
    np.testing.assert_allclose(eigen.low_res, low, atol=1e-3 * low.max())
    with pytest.raises(inspector.InspectorError, match="1x1 maps"):
        model.cam(image, "eigencam", "p2o.Conv.59", **options)  # a squeeze-and-excitation conv


def test_yolo_detector_eigencam(tmp_path, capsys):
    path, entry = trained.model("yolov8n_doclaynet")
    model = inspector.load(path)
    image = photo(entry, "page.png")
    # No flags: the Ultralytics metadata gives the preprocessing and size; no class output gives EigenCAM.
    code = cli.main(["cam", path, image, "-o", str(tmp_path), "--json"])
    captured = capsys.readouterr()
    assert code == 0 and "EigenCAM" in captured.err and "guessed" not in captured.err
    summary = json.loads(captured.out)
    assert summary["method"] == "eigencam" and summary["layer"] == "model.22.cv3.2.cv3.2.2"
    assert summary["input"]["preprocess_source"] == "exporter" and summary["input"]["size"] == [1024, 1024]
    result = model.cam(image, "eigencam", preprocess="raw")
    assert result.layer == "model.22.cv3.2.cv3.2.2"  # the class head at stride 32, not the DFL conv after it
    assert result.layer_shape == (11, 32, 32) and result.cam.shape == (1024, 1024)
    # The values: EigenCAM by NumPy of the layer's maps from onnxruntime, the input made with Pillow.
    tensor = model.layer(result.layer).output
    maps = onnxruntime_tensors(path, [tensor], pillow_batch(image, (1024, 1024)))[tensor][0]
    low = eigencam_low_res(maps)
    np.testing.assert_allclose(result.low_res, low, atol=1e-3 * low.max())
