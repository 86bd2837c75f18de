"""inspector cam: each method's definition written again in NumPy on a tiny model, the command line's
bad inputs, notebook display, and the real trained models (skipped when absent).

The comparison with pytorch-grad-cam on a torch model exported by our converter is in
tests/test_cam_gradcam.py.
"""

import json
import os

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import builders as b
import inspector
from inspector import cli
from inspector import metadata as md

SIZE = 12
CLASSES = ["cat", "dog", "owl", "fox"]


# x (N,3,12,12) -> conv1 3x3 -> relu r1 (8ch) -> conv2 3x3 -> relu r2 (6ch, the target layer)
#   r2 -> conv3 1x1 (8ch) -> Add(+ r1: a skip connection around the target) -> GlobalAveragePool
#   -> Flatten -> Gemm (4 logits) -> Softmax (the model's output)
def tiny_classifier(seed=0, batch="N", names=True, reshape_from_input=False):
    r = b.rng(seed)
    arrays = {
        "w1": r.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.5,
        "b1": r.standard_normal(8).astype(np.float32) * 0.1,
        "w2": r.standard_normal((6, 8, 3, 3)).astype(np.float32) * 0.3,
        "b2": r.standard_normal(6).astype(np.float32) * 0.1 + 0.05,
        "w3": r.standard_normal((8, 6, 1, 1)).astype(np.float32) * 0.5,
        "wf": r.standard_normal((4, 8)).astype(np.float32),
        "bf": r.standard_normal(4).astype(np.float32) * 0.1,
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3"], ["c3"], name="conv3"),
        helper.make_node("Add", ["c3", "r1"], ["s"]),
        helper.make_node("GlobalAveragePool", ["s"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    if reshape_from_input:  # Flatten written as torch.onnx writes x.view(x.size(0), -1): the shape from the input
        nodes[7:8] = [
            helper.make_node("Shape", ["x"], ["x_shape"]),
            helper.make_node("Slice", ["x_shape", "zero", "one"], ["n"]),
            helper.make_node("Concat", ["n", "minus_one"], ["flat_shape"], axis=0),
            helper.make_node("Reshape", ["g", "flat_shape"], ["f"]),
        ]
        arrays.update(zero=np.array([0], np.int64), one=np.array([1], np.int64), minus_one=np.array([-1], np.int64))
    meta = {md.PREPROCESS: '{"mode": "raw", "scale": 0.00392156862745098}'}
    if names:
        meta[md.CLASS_NAMES] = '["cat", "dog", "owl", "fox"]'
    inits = [numpy_helper.from_array(a, n) for n, a in arrays.items()]
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [batch, 3, SIZE, SIZE])
    return b.model(nodes, [x], [b.out("probs")], inits, metadata=meta), arrays


def forward(x, a, stop=None, r2=None):
    """NumPy forward pass of tiny_classifier: logits (N, 4), or the target layer's maps with stop='r2'."""
    r1 = b.relu(b.conv2d(x, a["w1"], a["b1"], pad=1))
    if r2 is None:
        r2 = b.relu(b.conv2d(r1, a["w2"], a["b2"], pad=1))
    if stop == "r2":
        return r2
    s = b.conv2d(r2, a["w3"]) + r1
    return s.mean(axis=(2, 3)) @ a["wf"].T.astype(np.float64) + a["bf"]


def bilinear(maps, size):
    """Half-pixel bilinear upsampling, one output pixel at a time (independent of inspector's matrices)."""
    c, h, w = maps.shape
    out = np.zeros((c, *size))
    for i in range(size[0]):
        y = min(max((i + 0.5) * h / size[0] - 0.5, 0), h - 1)
        y0, fy = int(np.floor(y)), y - np.floor(y)
        y1 = min(y0 + 1, h - 1)
        for j in range(size[1]):
            x = min(max((j + 0.5) * w / size[1] - 0.5, 0), w - 1)
            x0, fx = int(np.floor(x)), x - np.floor(x)
            x1 = min(x0 + 1, w - 1)
            out[:, i, j] = ((1 - fy) * ((1 - fx) * maps[:, y0, x0] + fx * maps[:, y0, x1])
                            + fy * ((1 - fx) * maps[:, y1, x0] + fx * maps[:, y1, x1]))
    return out


def scaled(cam):
    cam = np.maximum(cam, 0)
    span = cam.max() - cam.min()
    return (cam - cam.min()) / span if span > 0 else np.zeros_like(cam)


def reference(method, x, a, target):
    maps = forward(x, a, stop="r2")[0]  # (6, 12, 12)
    c = maps.shape[0]
    if method == "eigencam":
        points = maps.reshape(c, -1).T
        points = points - points.mean(axis=0)
        eigenvalues, eigenvectors = np.linalg.eigh(points.T @ points)  # the covariance's top eigenvector
        v = eigenvectors[:, np.argmax(eigenvalues)]
        v = v if v.sum() > 0 else -v  # the documented sign rule
        low = (points @ v).reshape(maps.shape[1:])
    elif method == "scorecam":
        up = bilinear(maps, (SIZE, SIZE))
        lo, hi = up.min(axis=(1, 2), keepdims=True), up.max(axis=(1, 2), keepdims=True)
        masks = np.where(hi > lo, (up - lo) / np.where(hi > lo, hi - lo, 1), 0)
        scores = np.array([forward(x * masks[k][None, None], a)[0, target] for k in range(c)])
        weights = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
        low = np.tensordot(weights, maps, 1)
    else:
        base = forward(x, a)[0, target]
        drops = []
        for k in range(c):
            ablated = maps.copy()
            ablated[k] = 0
            drops.append(forward(x, a, r2=ablated[None])[0, target])
        weights = (base - np.array(drops)) / base
        low = np.tensordot(weights, maps, 1)
    return scaled(bilinear(scaled(low)[None], (SIZE, SIZE))[0])


@pytest.fixture
def photo(tmp_path):
    return b.random_photo(tmp_path / "photo.png", SIZE, SIZE, seed=3)


@pytest.mark.parametrize("method", ["eigencam", "scorecam", "ablationcam"])
@pytest.mark.parametrize("batch_dim", ["N", 1])
def test_each_method_matches_its_numpy_definition(save, photo, method, batch_dim):
    m, a = tiny_classifier(batch=batch_dim)
    model = inspector.load(save(m))
    result = model.cam(photo, method, layer="conv2", batch=4)
    x = model.image_batch([photo]).astype(np.float64)
    logits = forward(x, a)[0]
    top = int(np.argmax(logits))
    expected = reference(method, x, a, top)
    assert result.layer == "conv2" and result.layer_shape == (6, SIZE, SIZE)
    assert result.cam.shape == (SIZE, SIZE) and result.cam.dtype == np.float32
    assert result.cam.min() >= 0 and result.cam.max() <= 1
    assert expected.max() > 0  # the reference is not a trivial zero map
    np.testing.assert_allclose(result.cam, expected, atol=2e-4)
    if method == "eigencam":
        assert result.target == -1 and result.score is None
    else:
        assert result.target == top and result.target_label == f"class {top} ({CLASSES[top]})"
        assert result.score == pytest.approx(logits[top], rel=1e-4)  # the logits: the Softmax's input
        assert result.runs == (6 if method == "scorecam" else 7)


def test_target_by_index_and_by_name(save, photo):
    m, a = tiny_classifier()
    model = inspector.load(save(m))
    x = model.image_batch([photo]).astype(np.float64)
    by_index = model.cam(photo, "ablationcam", layer="conv2", target=2)
    by_name = model.cam(photo, "ablationcam", layer="conv2", target="OWL")
    np.testing.assert_allclose(by_index.cam, reference("ablationcam", x, a, 2), atol=2e-4)
    np.testing.assert_array_equal(by_index.cam, by_name.cam)
    assert by_name.target == 2


def test_eigencam_sign_rule_is_deterministic(save, photo):
    """The same maps negated channel by channel have the same principal axis: the rule, not chance, orients it."""
    from inspector.cam.methods import EigenCAM

    class FakeRun:
        layer = type("L", (), {"name": "t"})()

        def __init__(self, maps):
            self.maps = maps

    maps = b.rng(4).random((5, 7, 9)).astype(np.float32)
    first = EigenCAM().low_res_cam(FakeRun(maps))
    again = EigenCAM().low_res_cam(FakeRun(maps[::-1].copy()))  # channel order must not matter
    np.testing.assert_allclose(first, again, atol=1e-5)
    points = maps.reshape(5, -1).T - maps.reshape(5, -1).T.mean(axis=0)
    assert np.corrcoef(first.ravel(), points.sum(axis=1))[0, 1] > 0  # oriented with the channels' sum


def test_cli_writes_png_npz_and_json(save, photo, tmp_path, capsys):
    import json

    m, _ = tiny_classifier()
    path = save(m)
    out, npz = tmp_path / "out", tmp_path / "cam.npz"
    assert cli.main(["cam", path, photo, "--method", "scorecam", "--target", "dog", "--npz", str(npz),
                     "--json", "-o", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["target"] == 1 and summary["target_label"] == "class 1 (dog)"
    assert summary["layer"] == "conv3"  # the last conv whose maps are spatial
    assert os.path.exists(summary["png"]) and summary["png"].startswith(str(out))
    with np.load(npz) as data:
        assert data["cam"].shape == (SIZE, SIZE) and data["cam"].dtype == np.float32
        assert int(data["target"]) == 1 and str(data["layer"]) == "conv3"
    from PIL import Image

    with Image.open(summary["png"]) as image:
        assert image.size[0] >= 2 * 256  # the photo and the overlay side by side
    assert cli.main(["cam", path, photo, "--method", "eigencam", "--npz", str(npz), "-o", str(out)]) == 0
    with np.load(npz) as data:
        assert int(data["target"]) == -1


def _detector(seed=5):
    """conv -> relu -> conv 1x1 -> sigmoid: a segmentation-like map, no class output."""
    r = b.rng(seed)
    w1 = r.standard_normal((4, 3, 3, 3)).astype(np.float32)
    w2 = r.standard_normal((1, 4, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="body", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="head"),
             helper.make_node("Sigmoid", ["c2"], ["prob_map"])]
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")]
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, SIZE, SIZE])
    return b.model(nodes, [x], [b.out("prob_map")], inits), (w1, w2)


def test_model_without_class_output_needs_a_target_spec(save, photo, tmp_path, capsys):
    m, (w1, w2) = _detector()
    path = save(m, "det.onnx")
    out = tmp_path / "out"
    # ScoreCAM asked for, no target given, one output and no class: its only output's max, said on stderr.
    code = cli.main(["cam", path, photo, "--method", "scorecam", "--layer", "body", "--preprocess", "raw",
                     "-o", str(out), "--json"])
    captured = capsys.readouterr()
    assert code == 0 and "prob_map:max" in captured.err, captured.err
    summary = json.loads(captured.out)
    assert summary["target_label"] == "prob_map max" and summary["method"] == "scorecam"
    assert summary["method_source"] == "flag"
    reference = b.sigmoid(b.conv2d(b.relu(b.conv2d(inspector.load(path).image_batch([photo], "raw").astype(
        np.float64), w1, pad=1)), w2))
    assert summary["score"] == pytest.approx(reference.max(), rel=1e-5)
    # Two outputs and no class output: which one to score is the user's to say.
    two = _detector()[0]
    two.graph.output.append(b.out("r1"))
    code = cli.main(["cam", save(two, "two.onnx"), photo, "--method", "scorecam", "--preprocess", "raw",
                     "-o", str(tmp_path / "two")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "no class output" in err[-1] and "--method eigencam" in err[-1] and "OUTPUT:max" in err[-1]
    assert not list((tmp_path / "two").glob("*.png"))
    model = inspector.load(path)
    result = model.cam(photo, "scorecam", layer="body", target="prob_map:mean", preprocess="raw")
    assert result.target == -1 and result.target_label == "prob_map mean"
    x = model.image_batch([photo], "raw").astype(np.float64)
    r1 = b.relu(b.conv2d(x, w1, pad=1))
    assert result.score == pytest.approx(b.sigmoid(b.conv2d(r1, w2)).mean(), rel=1e-5)
    assert model.cam(photo, "eigencam", preprocess="raw").layer == "head"  # the last conv, its 1 channel spatial
    assert model.cam(photo, "eigencam", layer="body", preprocess="raw").target == -1


def _flat_head():
    """A conv whose maps are 1x1 (a 'dense' conv on a 1x1 input)."""
    r = b.rng(6)
    w1 = r.standard_normal((4, 3, 3, 3)).astype(np.float32)
    w2 = r.standard_normal((5, 4, SIZE, SIZE)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="body", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="dense_as_conv"),
             helper.make_node("Flatten", ["c2"], ["logits"])]
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")]
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, SIZE, SIZE])
    return b.model(nodes, [x], [b.out("logits")], inits, metadata={md.PREPROCESS: '{"mode": "raw", "scale": 0.0039}'})


@pytest.mark.parametrize("argv, needle", [
    (["--method", "gradcam"], "invalid choice: 'gradcam'"),
    (["--target", "4"], "out of range: output 'probs' has 4 classes (0..3)"),
    (["--target", "zebra"], "is not a class name of this model"),
    (["--target", "cta"], "did you mean cat"),
    (["--target", "nope:max"], "no output named 'nope'"),
    (["--layer", "conv9"], "no conv layer matches 'conv9'"),
    (["--batch", "0"], "must be at least 1"),
])
def test_bad_input_exits_2_with_one_line(save, photo, tmp_path, capsys, argv, needle):
    m, _ = tiny_classifier()
    out = tmp_path / "out"
    code = cli.main(["cam", save(m), photo, *argv, "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and "Traceback" not in err
    assert not list(out.glob("*.png")) if out.exists() else True
    if not needle.startswith(("invalid", "must")):
        assert len(err.strip().splitlines()) == 1 or err.strip().splitlines()[0].startswith("inspector: ran on")


def test_one_by_one_maps_and_no_names(save, photo, tmp_path, capsys):
    path = save(_flat_head(), "flat.onnx")
    assert inspector.load(path).cam(photo, "eigencam").layer == "body"  # 1x1 maps are never the default
    assert cli.main(["cam", path, photo, "--layer", "dense_as_conv", "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "has 1x1 maps" in err and "--layer" in err
    m, _ = tiny_classifier(names=False)
    assert cli.main(["cam", save(m, "nonames.onnx"), photo, "--target", "cat", "-o", str(tmp_path)]) == 2
    assert "no class names; give a class index 0..3" in capsys.readouterr().err


def test_ablation_with_shape_arithmetic_from_the_input(save, photo):
    """A Reshape whose shape is computed from the input's: the cut feeds that shape, and runs one at a time."""
    m, a = tiny_classifier(reshape_from_input=True)
    model = inspector.load(save(m))
    result = model.cam(photo, "ablationcam", layer="conv2", batch=4)
    x = model.image_batch([photo]).astype(np.float64)
    np.testing.assert_allclose(result.cam, reference("ablationcam", x, a, int(np.argmax(forward(x, a)[0]))), atol=2e-4)


def test_ablation_cut_reproduces_the_whole_model(save, photo):
    """The graph after the target layer, fed the unmodified maps (and the skip tensor), gives the model's score."""
    from inspector.cam import cut

    m, _ = tiny_classifier()
    plan = cut.plan(m, "r2", "logits", "x")
    assert plan.fed == ["r1"]  # the skip connection around the target
    assert [n.op_type for n in plan.nodes] == ["Conv", "Add", "GlobalAveragePool", "Flatten", "Gemm"]
    with pytest.raises(inspector.InspectorError, match="does not depend on the target layer"):
        cut.plan(m, "c3", "r1", "x")


def test_notebook_display(save, photo):
    m, _ = tiny_classifier()
    model = inspector.load(save(m))
    maps = model.maps(photo, ["conv1", "conv2"])
    assert isinstance(maps, dict) and sorted(maps) == ["conv1", "conv2"]
    assert maps._repr_png_().startswith(b"\x89PNG")
    weights = model.filters("conv1")
    assert weights.shape == (8, 3, 3, 3) and weights._repr_png_().startswith(b"\x89PNG")
    assert (weights * 2)._repr_png_() is None  # a derived array is a plain array to show
    np.testing.assert_array_equal(np.asarray(weights), model.filters_and_bias("conv1")[0])
    result = model.cam(photo, "eigencam")
    assert result._repr_png_().startswith(b"\x89PNG")


def test_methods_registry_is_the_cli_choice():
    from inspector.cam import METHODS

    parser, _ = cli.build_parser()
    sub = parser._subparsers._group_actions[0].choices["cam"]
    method = next(a for a in sub._actions if a.dest == "method")
    assert tuple(method.choices) == tuple(METHODS) == ("scorecam", "eigencam", "ablationcam")


def test_cli_does_not_import_numpy_for_help():
    import subprocess
    import sys

    code = ("import sys; from inspector import cli; cli.build_parser(); "
            "print('numpy' in sys.modules, 'onnx' in sys.modules)")
    printed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert printed.strip() == "False False"


def test_report_has_an_attribution_section_only_for_class_outputs(save, photo):
    from inspector.report import build_report

    m, a = tiny_classifier()
    model = inspector.load(save(m))
    page = build_report(model, photo).html
    x = model.image_batch([photo]).astype(np.float64)
    top = int(np.argmax(forward(x, a)[0]))
    assert '<section id="attribution">' in page and f"class {top} ({CLASSES[top]})" in page
    assert "ablationcam at layer conv3" in page
    detector = inspector.load(save(_detector()[0], "det.onnx"))
    assert 'id="attribution"' not in build_report(detector, photo, preprocess="raw").html


def test_eigencam_says_it_ignores_a_class_target(save, photo):
    m, _ = tiny_classifier()
    model = inspector.load(save(m))
    result = model.cam(photo, "eigencam", target=2)
    assert result.target == -1 and result.target_label == "" and "has no target" in result.notes[0]
    np.testing.assert_array_equal(result.cam, model.cam(photo, "eigencam").cam)


def test_channel_targets_for_detector_outputs():
    """OUTPUT:CH:max scores one channel of axis 1; a class name picks among the last K channels (YOLOv8's
    (1, 4 + K, anchors) layout), and top is the class whose channel scores highest."""
    from inspector.cam import targets as tg

    values = b.rng(7).random((1, 4 + 3, 10))
    values[0, 4 + 1, 6] = 5.0  # dog is the strongest class
    outputs = {"output0": values}
    names = ["cat", "dog", "owl"]
    dog = tg.resolve("output0:dog:max", outputs, {}, names, True, "scorecam")
    assert dog.channel == 5 and dog.index == 1 and dog.scores(values)[0] == 5.0
    assert tg.resolve("output0:top:max", outputs, {}, names, True, "scorecam").channel == 5
    owl = tg.resolve("output0:6:mean", outputs, {}, names, True, "scorecam")
    assert owl.channel == 6 and owl.index == -1 and owl.scores(values)[0] == pytest.approx(values[0, 6].mean())
    whole = tg.resolve("output0:max", outputs, {}, names, True, "scorecam")
    assert whole.channel is None and whole.scores(values)[0] == 5.0
    with pytest.raises(inspector.InspectorError, match="channel 9 is out of range"):
        tg.resolve("output0:9:max", outputs, {}, names, True, "scorecam")
    with pytest.raises(inspector.InspectorError, match="did you mean owl"):
        tg.resolve("output0:owk:max", outputs, {}, names, True, "scorecam")
    with pytest.raises(tg.NoClassOutput, match="no class output"):
        tg.resolve("dog", outputs, {}, names, True, "scorecam")
    assert tg.class_names({"names": "{0: 'a', 2: 'c', 1: 'b'}"}) == ["a", "b", "c"]  # Ultralytics' dict literal
    assert tg.class_names({"names": "__import__('os').system('true')"}) is None  # a literal, never code
