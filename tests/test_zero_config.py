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
