"""Zero-config preprocessing: the flag, our metadata, an exporter's metadata, or a guess that is said everywhere."""

import json

import numpy as np
import pytest
from PIL import Image

import builders as b
import inspector
from inspector import metadata as md
from inspector.cli import main
from inspector.errors import InspectorError
from inspector.preprocess import Preprocess, parse_preprocess, preset


def tiny(shape=("N", 3, "H", "W"), metadata=None):
    r = b.rng(0)
    w = r.standard_normal((4, 3, 3, 3)).astype(np.float32)
    from onnx import helper, numpy_helper

    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"])]
    return b.model(nodes, [b.image_input(shape=shape)], [b.out("y")], [numpy_helper.from_array(w, "w")],
                   metadata=metadata)


ULTRALYTICS = {"author": "Ultralytics", "stride": "32", "task": "detect", "imgsz": "[64, 96]",
               "names": "{0: 'person', 1: 'bicycle', 2: 'car'}"}


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "wide.png"
    Image.fromarray(b.rng(2).integers(0, 256, (30, 120, 3), dtype=np.uint8)).save(path)
    return str(path)


def run(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("text, expected", [
    ("caffe", preset("caffe")),
    ("bgr255", Preprocess("bgr255", "BGR", 1.0, (0, 0, 0), (1, 1, 1))),
    ("order=BGR;scale=1;mean=0,0,0;std=1", Preprocess("custom", "BGR", 1.0, (0, 0, 0), (1, 1, 1))),
    ("order=rgb scale=1/255 mean=0.5 std=0.5", Preprocess("custom", "RGB", 1 / 255, (0.5,) * 3, (0.5,) * 3)),
    ("torch;order=BGR", Preprocess("custom", "BGR", 1 / 255, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))),
    ('{"color_order": "BGR", "scale": 2, "mean": [1, 2, 3]}', Preprocess("custom", "BGR", 2.0, (1, 2, 3), (1, 1, 1))),
])
def test_preprocess_specs_parse(text, expected):
    spec = parse_preprocess(text)
    assert (spec.color_order, spec.mean, spec.std) == (expected.color_order, expected.mean, expected.std)
    assert spec.scale == pytest.approx(expected.scale)
    pixels = b.rng(1).integers(0, 256, (2, 3, 3)).astype(np.uint8)
    order = pixels[..., ::-1] if expected.color_order == "BGR" else pixels
    reference = (order * expected.scale - np.array(expected.mean)) / np.array(expected.std)  # written out here
    np.testing.assert_allclose(spec.apply(pixels), reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("text, words", [("nonsense", "unknown preprocessing"), ("order=XYZ", "RGB or BGR"),
                                         ("scale=abc", "not a number"), ("std=0", "std must not be 0"),
                                         ("hue=3", "key=value"), ("{not json", "not valid")])
def test_bad_preprocess_specs_exit_2_with_one_line(text, words, save, photo, tmp_path, capsys):
    with pytest.raises(InspectorError, match=words):
        parse_preprocess(text)
    code, _, err = run(capsys, "maps", save(tiny()), photo, "--preprocess", text, "-o", tmp_path)
    assert code == 2 and words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_sources_in_order_flag_metadata_exporter_guessed(save):
    ours = {md.PREPROCESS: preset("caffe", (32, 32)).to_json()}
    assert inspector.load(save(tiny(metadata=ours), "ours.onnx")).preprocess_source() == "metadata"
    exported = inspector.load(save(tiny(metadata=ULTRALYTICS), "yolo.onnx"))
    assert exported.preprocess_source() == "exporter" and exported.preprocessing().scale == pytest.approx(1 / 255)
    assert exported.input_size(None, exported.preprocessing()) == (64, 96)
    assert exported.class_names == ["person", "bicycle", "car"]
    assert exported.preprocess_source("tf") == "flag" and exported.preprocessing("tf").mode == "tf"
    bare = inspector.load(save(tiny(), "bare.onnx"))
    assert bare.preprocess_source() == "guessed" and bare.preprocessing().mode == "torch"
    assert "--preprocess" in bare.guessed_preprocessing_note()
    assert exported.guessed_preprocessing_note() is None


def test_hostile_names_metadata_is_parsed_safely(save):
    meta = dict(ULTRALYTICS, names="__import__('os').system('echo pwned')")
    model = inspector.load(save(tiny(metadata=meta)))
    assert model.class_names is None and model.preprocess_source() == "exporter"


def test_a_guess_is_said_on_stderr_in_the_json_and_on_the_picture(save, photo, tmp_path, capsys, monkeypatch):
    from inspector import render

    drawn = []  # every grid `maps` draws, as drawn: the label must come from the command, not the test

    def recording_map_grid(*args, **kwargs):
        grid = real_map_grid(*args, **kwargs)
        drawn.append(grid)
        return grid

    real_map_grid = render.map_grid
    monkeypatch.setattr(render, "map_grid", recording_map_grid)
    code, out, err = run(capsys, "maps", save(tiny()), photo, "-o", tmp_path / "maps", "--json")
    assert code == 0 and "guessed 'torch'" in err and "--preprocess" in err
    data = json.loads(out)
    assert data["preprocess_source"] == "guessed" and data["preprocess"] == "torch"
    assert drawn and all("guessed" in grid.title + grid.subtitle for grid in drawn)
    drawn.clear()
    code, _, _ = run(capsys, "maps", save(tiny(), "flagged.onnx"), photo, "--preprocess", "torch", "-o",
                     tmp_path / "maps_flag")
    assert code == 0 and drawn and not any("guessed" in grid.title + grid.subtitle for grid in drawn)
    code, out, err = run(capsys, "audit", save(tiny(), "a.onnx"), photo, "--json", "-", "-q")
    assert code == 0 and json.loads(out)["images"]["preprocess_source"] == "guessed"
    assert "the preprocessing was guessed" in err  # the table's note
    code, out, err = run(capsys, "maps", save(tiny(), "b.onnx"), photo, "--preprocess", "raw", "-o",
                         tmp_path / "m2", "--json")
    assert code == 0 and "guessed" not in err and json.loads(out)["preprocess_source"] == "flag"


def test_one_open_dim_keeps_the_aspect_ratio(save, photo):
    model = inspector.load(save(tiny(shape=("N", 3, 32, "W"))))
    assert model.input_size(None, model.preprocessing(), image=photo) == (32, 128)  # 120/30 x 32
    assert model.image_batch([photo]).shape == (1, 3, 32, 128)
    assert model.input_size((32, 64), model.preprocessing(), image=photo) == (32, 64)  # --size wins
    both_open = inspector.load(save(tiny(), "open.onnx"))
    assert both_open.input_size(None, both_open.preprocessing(), image=photo) == (224, 224)


# ------------------------------------------------------------------ every command through its defaults
# The model and the images, no --preprocess, no --size: the way a newcomer runs them (issue 19 items 1-4,
# issue 25 items 4-5). References: NumPy on the pixels Pillow decodes, with the torch preset written out.

TORCH_MEAN, TORCH_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
GUESS = "guessed 'torch'"


def two_convs(shape=("N", 3, "H", "W"), seed=0, metadata=None, extra_nodes=(), extra_inputs=(), outputs=("y",),
              dead=False):
    """conv 3->4 (pad 1) -> relu -> conv 4->2 (pad 1) -> relu = y; ``extra_nodes`` may consume y.
    ``dead``: conv1's filter 1 all zero (what exact pruning removes)."""
    from onnx import helper, numpy_helper

    r = b.rng(seed)
    w1 = r.standard_normal((4, 3, 3, 3)).astype(np.float32)
    if dead:
        w1[1] = 0
    w2 = r.standard_normal((2, 4, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["y"]), *extra_nodes]
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")]
    m = b.model(nodes, [b.image_input(shape=shape), *extra_inputs], [b.out(o) for o in outputs], inits,
                metadata=metadata)
    return m, (w1, w2)


def torch_pixels(photo, size):
    """The photo as the guessed preset feeds it, (1, 3, H, W) float64, written out here."""
    from inspector.preprocess import load_image

    pixels = load_image(photo, size).astype(np.float64)  # Pillow's decoding and resizing
    return ((pixels / 255 - TORCH_MEAN) / TORCH_STD).transpose(2, 0, 1)[None]


def reference_maps(photo, size, weights):
    w1, w2 = weights
    r1 = b.relu(b.conv2d(torch_pixels(photo, size), w1, pad=1))
    return {"conv1": r1[0], "conv2": b.relu(b.conv2d(r1, w2, pad=1))[0]}


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for seed in range(8):
        b.random_photo(folder / f"p{seed}.png", 24 + 2 * seed, 32, seed=seed)
    return str(folder)


def test_diff_of_a_model_without_metadata_runs_on_the_guess_and_says_so(save, photos, tmp_path, capsys):
    """Issue 19 item 1: diff crashed ('NoneType' has no attribute 'mode') on every model without metadata."""
    path = save(two_convs()[0], "bare.onnx")
    code, out, err = run(capsys, "diff", path, path, photos, "--json", tmp_path / "d.json")
    assert code == 0 and GUESS in err and "Traceback" not in err, err
    data = json.loads((tmp_path / "d.json").read_text())
    assert data["images"]["count"] == 8 and data["images"]["preprocess"] == ["torch", "torch"]
    assert data["images"]["preprocess_source"] == ["guessed", "guessed"]
    assert data["images"]["input"]["a"]["size_source"] == "default" and data["images"]["input_size"] == [224, 224]
    assert all(layer["exact"] for layer in data["layers"]) and len(data["layers"]) == 2


def test_diff_borrows_the_preprocessing_of_the_model_that_says_it(save, photo, tmp_path, capsys):
    """A copy that lost its metadata runs with the other's: the maps agree exactly; with the guess they would not."""
    said = {md.PREPROCESS: preset("caffe").to_json()}
    a = save(two_convs(metadata=said)[0], "a.onnx")
    bare = save(two_convs()[0], "b.onnx")
    code, _, err = run(capsys, "diff", a, bare, photo, "--json", tmp_path / "d.json")
    assert code == 0 and "model B does not say" in err and GUESS not in err, err
    data = json.loads((tmp_path / "d.json").read_text())
    assert data["images"]["preprocess"] == ["caffe", "caffe"]
    assert data["images"]["input"]["b"]["preprocess_borrowed_from"] == "a"
    assert all(layer["exact"] for layer in data["layers"])
    # The guess instead (what --preprocess torch on B alone would give) moves the maps: the borrowing matters.
    caffe = inspector.load(a).image_batch([photo])
    torch = inspector.load(bare).image_batch([photo], "torch")
    assert not np.allclose(caffe, torch)


def test_report_compare_without_preprocess(save, photo, tmp_path, capsys):
    """Issue 25 item 4: report MODEL PHOTO --compare OTHER crashed without --preprocess."""
    path = save(two_convs()[0], "bare.onnx")
    other = save(two_convs(seed=1)[0], "other.onnx")
    html = tmp_path / "r.html"
    code, _, err = run(capsys, "report", path, photo, "--compare", other, "-o", html)
    assert code == 0 and GUESS in err, err
    page = html.read_text()
    assert 'id="compare"' in page and "other.onnx" in page


def test_maps_audit_filters_prune_through_their_defaults(save, photos, photo, tmp_path, capsys):
    m, weights = two_convs(dead=True)
    path = save(m, "bare.onnx")
    code, out, err = run(capsys, "maps", path, photo, "--all", "--npz", tmp_path / "m.npz", "--no-png", "--json")
    assert code == 0 and GUESS in err
    assert json.loads(out)["input"]["preprocess_source"] == "guessed"
    expected = reference_maps(photo, (224, 224), weights)
    with np.load(tmp_path / "m.npz") as data:
        for name, reference in expected.items():
            np.testing.assert_allclose(data[name], reference, rtol=1e-4, atol=1e-4)
    code, out, err = run(capsys, "audit", path, photos, "--json", "-", "-q")
    assert code == 0 and GUESS in err and json.loads(out)["images"]["preprocess_source"] == "guessed"
    code, _, err = run(capsys, "filters", path, "--all", "-o", tmp_path / "f")
    assert code == 0 and "Traceback" not in err
    code, out, err = run(capsys, "prune", path, "--dry-run", "--check", photos)
    assert code == 0 and GUESS in err and "check on 8 image(s)" in out, (out, err)
    code, out, err = run(capsys, "prune", path, "--channels", "--check", photos, "-o", tmp_path / "p.onnx")
    assert code == 0 and GUESS in err and "check on 8 image(s)" in out, (out, err)


def test_cam_on_a_model_without_a_class_output_picks_eigencam_and_says_so(save, photo, tmp_path, capsys):
    """Issue 19 item 2: cam exited 2 on every detector and segmenter ('scorecam needs a class score')."""
    path = save(two_convs()[0], "seg.onnx")
    code, out, err = run(capsys, "cam", path, photo, "--json", "-o", tmp_path / "c", "--npz", tmp_path / "c.npz")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["method"] == "eigencam" and summary["method_source"] == "chosen" and summary["target"] == -1
    assert GUESS in err and "no class output" in err and "EigenCAM" in err and "y:max" in err
    assert summary["input"]["preprocess_source"] == "guessed"
    # The default path is the explicit one: the same map as --method eigencam --preprocess torch --size 224x224.
    code, _, _ = run(capsys, "cam", path, photo, "--method", "eigencam", "--preprocess", "torch", "--size", "224x224",
                     "-o", tmp_path / "c2", "--npz", tmp_path / "c2.npz")
    with np.load(tmp_path / "c.npz") as chosen, np.load(tmp_path / "c2.npz") as explicit:
        assert code == 0 and np.array_equal(chosen["cam"], explicit["cam"])
    # ...and its low-res map is EigenCAM of the NumPy maps: the first principal component, sign as documented.
    maps = reference_maps(photo, (224, 224), two_convs()[1])["conv2"]
    points = maps.reshape(2, -1).T
    points = points - points.mean(axis=0)
    direction = np.linalg.svd(points, full_matrices=False)[2][0]
    direction = direction * (np.sign(direction.sum()) or 1)
    result = inspector.load(path).cam(photo)
    np.testing.assert_allclose(result.low_res, np.maximum(points @ direction, 0).reshape(224, 224), atol=1e-3)


def test_cam_on_a_classifier_keeps_scorecam(save, photo, tmp_path, capsys):
    from onnx import helper

    pooled = [helper.make_node("GlobalAveragePool", ["y"], ["g"]), helper.make_node("Flatten", ["g"], ["logits"])]
    path = save(two_convs(extra_nodes=pooled, outputs=("logits",))[0], "cls.onnx")
    code, out, err = run(capsys, "cam", path, photo, "--json", "-o", tmp_path / "c")
    assert code == 0 and json.loads(out)["method"] == "scorecam" and "class output" in err


def test_a_fixed_batch_is_filled_in_every_command(save, photo, photos, tmp_path, capsys):
    """Issue 19 item 3: a batch fixed at 10 (CenterFace from torch 1.2) failed with 'Got invalid dimensions'."""
    m, weights = two_convs(shape=(10, 3, 16, 16), dead=True)
    path = save(m, "fixed.onnx")
    code, _, err = run(capsys, "maps", path, photo, "--all", "--npz", tmp_path / "m.npz", "--no-png")
    assert code == 0 and "fixed batch of 10" in err, err
    expected = reference_maps(photo, (16, 16), weights)
    with np.load(tmp_path / "m.npz") as data:
        for name, reference in expected.items():
            np.testing.assert_allclose(data[name], reference, rtol=1e-4, atol=1e-4)
    code, out, err = run(capsys, "cam", path, photo, "--json", "-o", tmp_path / "c")
    assert code == 0 and "fixed batch of 10" in err and json.loads(out)["input"]["batch"] == 10, err
    code, out, err = run(capsys, "audit", path, photos, "--json", "-", "-q")  # 8 images: one batch, filled
    assert code == 0 and json.loads(out)["images"]["count"] == 8, err
    code, out, err = run(capsys, "diff", path, path, photos, "-q", "--json", "-")
    assert code == 0 and json.loads(out)["summary"]["exact"] == 2, err
    code, _, err = run(capsys, "report", path, photo, "-o", tmp_path / "r.html")
    assert code == 0 and "fixed batch of 10" in err, err
    code, out, err = run(capsys, "prune", path, "--dry-run", "--check", photo)
    assert code == 0 and "check on 1 image(s)" in out, err


def _shape_scaled(name="im_shape", dtype=7, dims=(1, 2)):
    """y * (H + W) read from an extra int input: the model's output needs it, the conv maps do not."""
    from onnx import helper

    nodes = [helper.make_node("Cast", [name], ["shape_f"], to=1),
             helper.make_node("ReduceSum", ["shape_f"], ["total"], keepdims=0),
             helper.make_node("Mul", ["y", "total"], ["scaled"])]
    extra = helper.make_tensor_value_info(name, dtype, list(dims))
    return two_convs(extra_nodes=nodes, extra_inputs=[extra], outputs=("scaled",))


def test_a_shape_input_is_fed_with_the_image_size(save, photo, tmp_path, capsys):
    """Issue 19 item 4: two-input models failed in cam with "Required inputs (['shape']) are missing"."""
    m, weights = _shape_scaled()
    path = save(m, "two.onnx")
    code, out, err = run(capsys, "cam", path, photo, "--method", "scorecam", "--size", "32x48", "--json",
                         "-o", tmp_path / "c")
    assert code == 0, err
    summary = json.loads(out)
    assert "'im_shape', fed with image size (H, W)" in err and summary["target_label"] == "scaled max"
    y = reference_maps(photo, (32, 48), weights)["conv2"]
    assert summary["score"] == pytest.approx(y.max() * (32 + 48), rel=1e-5)
    assert summary["input"]["other_inputs"] == [{"name": "im_shape", "rule": "image size (H, W)"}]
    # AblationCAM runs only the graph after the layer, which reads im_shape: fed there too.
    result = inspector.load(path).cam(photo, "ablationcam", "conv2", "scaled:max", preprocess="torch", size=(32, 48))
    assert result.score == pytest.approx(y.max() * (32 + 48), rel=1e-5) and result.runs == 2 + 1  # + the check run
    code, _, err = run(capsys, "maps", path, photo, "--no-png", "--npz", tmp_path / "m.npz")
    assert code == 0, err


def test_an_input_no_rule_fits_is_refused_by_name(save, photo, tmp_path, capsys):
    m, _ = _shape_scaled(name="anchors", dtype=1, dims=(3,))
    path = save(m, "odd.onnx")
    code, _, err = run(capsys, "cam", path, photo, "--method", "scorecam", "-o", tmp_path / "c")
    assert code == 2 and "'anchors' [3] float32" in err and "cannot fill" in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.startswith("inspector: error")]) == 1
    code, _, err = run(capsys, "maps", path, photo, "--no-png", "--npz", tmp_path / "m.npz")
    assert code == 0, err  # the conv maps do not need it


@pytest.mark.parametrize("name, dims, dtype, rule", [
    ("im_shape", (1, 2), np.float32, "image size (H, W)"), ("shape", (2,), np.int64, "image size (H, W)"),
    ("Shape", ("N", 2), np.int32, "image size (H, W)"), ("shape", (4,), np.int64, "input shape"),
    ("scale_factor", (1, 2), np.float32, "ones (no rescaling)"), ("scale_factor", (2,), np.int64, None),
    ("im_shape", (3,), np.int64, None), ("shape", (1, 2, 2), np.int64, None), ("mask", (1, 2), np.float32, None),
])
def test_fill_rules(name, dims, dtype, rule):
    from inspector.inputs import OtherInput, _fill_rule

    assert _fill_rule(name, dims, np.dtype(dtype)) == rule
    if rule is not None:
        value = OtherInput(name, dims, np.dtype(dtype), rule).value(np.zeros((3, 3, 20, 30), np.float32), "NCHW")
        row = {"image size (H, W)": [20, 30], "input shape": [3, 3, 20, 30], "ones (no rescaling)": [1, 1]}[rule]
        rows = dims[0] if isinstance(dims[0], int) else 3  # a declared first dim is kept; an open one is the batch
        expected = np.asarray(row, dtype) if len(dims) == 1 else np.repeat(np.asarray(row, dtype)[None], rows, axis=0)
        assert value.dtype == np.dtype(dtype) and np.array_equal(value, expected)


def test_the_resolver_says_where_each_choice_came_from(save, photo):
    bare = inspector.load(save(two_convs(shape=("N", 3, 32, "W"))[0], "line.onnx"))
    feeding = bare.feeding(None, None, [photo], photo)
    assert (feeding.preprocess_source, feeding.size, feeding.size_source) == ("guessed", (32, 128), "image")
    assert feeding.to_dict()["layout_source"] == "model" and feeding.batch is None
    assert bare.feeding("raw", (32, 64)).to_dict()["size_source"] == "flag"
    yolo = inspector.load(save(two_convs(metadata=ULTRALYTICS)[0], "yolo.onnx"))
    assert (yolo.feeding().preprocess_source, yolo.feeding().size_source) == ("exporter", "exporter")
    nhwc = inspector.load(save(two_convs()[0], "n.onnx"), layout="nchw")
    assert nhwc.feeding().to_dict()["layout_source"] == "flag"


@pytest.mark.slow
def test_trained_models_diff_themselves_with_no_flags(tmp_path, capsys):
    """Issue 19 item 1 on real files: a Keras VGG16 (tf2onnx, no metadata) and a YOLOv8 (Ultralytics metadata)."""
    import trained

    for name, source in (("vgg16_tumor", "guessed"), ("yolov8n_doclaynet", "exporter")):
        path, entry = trained.model(name)
        code, out, err = run(capsys, "diff", path, path, trained.photos(entry)[0], "-q", "--json", "-")
        assert code == 0, err
        data = json.loads(out)
        assert data["images"]["preprocess_source"] == [source, source]
        assert data["summary"]["exact"] == data["summary"]["compared"] == len(inspector.load(path).layers)


# x uint8 (N, H, W, 3) -> Cast float -> Transpose NCHW -> Conv -> Relu -> y     (preprocessing inside the graph)
def test_integer_pixels_are_fed_as_they_are(save, photo, tmp_path, capsys):
    """A model that takes uint8 pixels normalises them itself: a normalised guess cast to uint8 would reach it
    as a few values. No flags: the pixels go in unchanged, and the maps equal onnxruntime's on Pillow's pixels."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    w = b.rng(3).standard_normal((4, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Cast", ["x"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Transpose", ["f"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["t", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"])]
    path = save(b.model(nodes, [b.image_input(shape=("N", 24, 32, 3), elem=TensorProto.UINT8)], [b.out("y")],
                        [numpy_helper.from_array(w, "w")]))
    npz = tmp_path / "maps.npz"
    code, out, err = run(capsys, "maps", path, photo, "--no-png", "--npz", npz, "-o", tmp_path / "o", "--json")
    assert code == 0, err
    assert "guessed" not in err and "uint8 pixels" in err
    assert json.loads(out)["preprocess_source"] == "inferred"
    with Image.open(photo) as img:
        pixels = np.asarray(img.convert("RGB").resize((32, 24), Image.Resampling.BILINEAR), np.uint8)[None]
    proto = onnx.load(path)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(["y"], {"x": pixels})[0][0]
    np.testing.assert_allclose(np.load(npz)["conv"], expected, rtol=1e-5, atol=1e-4)
