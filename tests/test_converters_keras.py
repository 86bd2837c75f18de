"""Keras -> ONNX converter: small models built in memory, checked against Keras itself."""

import json
import os

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")
keras = pytest.importorskip("keras")
onnx = pytest.importorskip("onnx")

from converters import api, cli  # noqa: E402
import builders as b  # noqa: E402
from inspector import metadata as md  # noqa: E402

pytestmark = pytest.mark.keras
TOLERANCE = 1e-4


def _randomise(model, seed=0):
    """Non-zero biases and BN statistics, so that nothing folds away by accident."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        new = []
        for w in weights:
            if isinstance(layer, keras.layers.BatchNormalization):
                new.append(rng.uniform(0.5, 1.5, w.shape).astype(w.dtype))
            else:
                new.append(rng.normal(0, 0.2, w.shape).astype(w.dtype))
        layer.set_weights(new)
    return model


def tiny_vgg(name="tiny_vgg"):
    """VGG-shaped: conv-relu blocks, pooling, a conv+BN+ReLU, flatten and two Dense layers."""
    L = keras.layers
    inputs = keras.Input((32, 32, 3), name="pixels")
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="block1_conv1")(inputs)
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="block1_conv2")(x)
    x = L.MaxPooling2D(name="block1_pool")(x)
    x = L.Conv2D(16, 3, padding="same", name="block2_conv1")(x)
    x = L.BatchNormalization(name="block2_bn")(x)
    x = L.ReLU(name="block2_relu")(x)
    x = L.DepthwiseConv2D(3, padding="same", activation="relu", name="block2_dw")(x)
    x = L.MaxPooling2D(name="block2_pool")(x)
    x = L.Flatten(name="flatten")(x)
    x = L.Dense(32, activation="relu", name="fc1")(x)
    outputs = L.Dense(10, activation="softmax", name="predictions")(x)
    return _randomise(keras.Model(inputs, outputs, name=name))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keras")
    model = tiny_vgg()
    out = str(folder / "tiny.onnx")
    messages = []
    result = api.convert_keras_model(model, out, preprocess="caffe", check=True, echo=messages.append,
                                     weights_trained=True, weights_source="test")
    return model, out, result, messages


def test_parity_check_passes_for_every_conv_layer(converted):
    _, _, result, _ = converted
    names = [d.name.split(" ")[0] for d in result.parity]
    assert set(result.conv_layers) <= set(names)
    assert all(d.relative <= TOLERANCE for d in result.parity), result.parity


def test_graph_is_clean(converted):
    _, out, result, _ = converted
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Transpose") <= 1  # inputs are NCHW; at most one before Flatten
    assert "Shape" not in ops and "Constant" not in ops  # dynamic flatten pinned, constants folded
    assert [i.name for i in model.graph.input] == ["pixels"]  # weights are initializers, not inputs
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert result.conv_layers == ["block1_conv1", "block1_conv2", "block2_conv1", "block2_dw"]
    conv_names = [n.name for n in model.graph.node if n.op_type == "Conv"]
    assert conv_names == result.conv_layers
    produced = {o for n in model.graph.node for o in n.output}
    assert {"block1_conv1", "block1_conv2"} <= produced  # post-activation tensors carry the layer name


def test_metadata(converted):
    _, out, _, _ = converted
    props = {p.key: p.value for p in onnx.load(out).metadata_props}
    for key in (md.SOURCE_FRAMEWORK, md.SOURCE_VERSION, md.CONVERTER, md.CONVERTER_VERSION, md.MODEL_NAME,
                md.INPUT_LAYOUT, md.PREPROCESS, md.WEIGHTS_TRAINED, md.WEIGHTS_SOURCE):
        assert key in props
    assert props[md.SOURCE_FRAMEWORK] == "keras"
    assert props[md.INPUT_LAYOUT] == "NCHW"
    spec = json.loads(props[md.PREPROCESS])
    assert spec["mode"] == "caffe" and spec["input_size"] == [32, 32] and spec["color_order"] == "BGR"
    assert props[md.WEIGHTS_TRAINED] == "true"


def test_inspector_maps_npz_match_keras(converted, tmp_path):
    """Through the inspector's own CLI: every conv layer's map equals the Keras layer's output, Keras fed
    by its own loader and VGG16's own preprocess_input (not the inspector's preprocessing under test)."""
    model, out, result, _ = converted
    image = b.random_photo(tmp_path / "photo.png", 40, 48, seed=3)
    maps = b.maps_through_cli(out, image, tmp_path)
    pixels = keras.utils.img_to_array(keras.utils.load_img(str(image), target_size=(32, 32),
                                                           interpolation="bilinear"))
    x = keras.applications.vgg16.preprocess_input(pixels[None])
    # What the inspector shows: the post-activation output (block2_conv1 -> after BN and ReLU).
    shown = {"block1_conv1": "block1_conv1", "block1_conv2": "block1_conv2",
             "block2_conv1": "block2_relu", "block2_dw": "block2_dw"}
    probe = keras.Model(model.inputs[0], [model.get_layer(v).output for v in shown.values()])
    for name, reference in zip(shown, probe(x)):
        reference = np.asarray(reference)[0].transpose(2, 0, 1)
        got = maps[name]
        assert got.shape == reference.shape
        assert np.abs(got - reference).max() <= TOLERANCE * np.abs(reference).max()


def test_saved_model_preprocess_known_unknown_and_given(tmp_path):
    model = tiny_vgg(name="vgg16")  # a keras.applications name: preprocessing is known
    path = str(tmp_path / "vgg16.keras")
    model.save(path)
    assert cli.main(["keras", path, "-o", str(tmp_path / "a.onnx")]) == 0
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "a.onnx")).metadata_props}
    assert json.loads(props[md.PREPROCESS])["mode"] == "caffe"

    other = tiny_vgg(name="my_net")
    other_path = str(tmp_path / "my_net.keras")
    other.save(other_path)
    assert cli.main(["keras", other_path, "-o", str(tmp_path / "b.onnx")]) == 0
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "b.onnx")).metadata_props}
    assert json.loads(props[md.PREPROCESS]) == {"mode": "unknown"}
    assert cli.main(["keras", other_path, "-o", str(tmp_path / "c.onnx"), "--preprocess", "tf", "--check"]) == 0
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "c.onnx")).metadata_props}
    assert json.loads(props[md.PREPROCESS])["mode"] == "tf"


def _lambda_model(path):
    L = keras.layers
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, name="conv")(inputs)
    x = L.Lambda(lambda t: t * 2.0, name="double")(x)
    keras.Model(inputs, x).save(path)


def test_lambda_refused_without_unsafe(tmp_path, capsys):
    path = str(tmp_path / "lam.keras")
    _lambda_model(path)
    out = tmp_path / "lam.onnx"
    assert cli.main(["keras", path, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Lambda" in err and "--unsafe" in err and err.count("\n") == 1
    assert not out.exists() and os.listdir(tmp_path) == ["lam.keras"]
    assert cli.main(["keras", path, "-o", str(out), "--unsafe", "--preprocess", "raw", "--check"]) == 0
    assert out.exists()


@pytest.mark.parametrize("argv, needle", [
    (["keras", "{tmp}/missing.keras", "-o", "{tmp}/x.onnx"], "not found"),
    (["keras", "{tmp}/notes.keras", "-o", "{tmp}/x.onnx"], "not a Keras model"),
    (["keras", "{tmp}/notes.keras", "--custom-objects", "{tmp}/nope.py", "-o", "{tmp}/x.onnx"],
     "--custom-objects file not found"),
    (["keras", "{tmp}/notes.keras", "--custom-objects", "no_such_module_xyz", "-o", "{tmp}/x.onnx"],
     "cannot import --custom-objects module"),
    (["keras-app", "VGG17", "-o", "{tmp}/x.onnx"], "VGG16"),
    (["keras-app", "VGG16", "--weights", "{tmp}/nope.h5", "-o", "{tmp}/x.onnx"], "weights file not found"),
    (["keras-app", "VGG16", "--weights", "none", "--opset", "13", "-o", "{tmp}/x.onnx"], "opset"),
    (["keras-app", "VGG16", "-o", "{tmp}/no/such/dir/x.onnx"], "output folder"),
    (["keras-app"], "required"),
])
def test_bad_input_exit_2_and_nothing_written(tmp_path, capsys, argv, needle):
    (tmp_path / "notes.keras").write_text("not a model")
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert not any(name.endswith(".onnx") or ".tmp" in name for name in os.listdir(tmp_path))


def test_imagenet_offline_names_the_cache_file(monkeypatch, tmp_path, capsys):
    from converters import keras_apps

    url = "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/vgg16_weights_tf_dim_ordering_tf_kernels.h5"

    def offline(weights=None, include_top=True):
        raise Exception(f"URL fetch failure on {url}: None -- [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras_apps, "application", lambda name: ("VGG16", offline))
    assert cli.main(["keras-app", "VGG16", "-o", str(tmp_path / "v.onnx")]) == 2
    err = capsys.readouterr().err
    assert "~/.keras/models/vgg16_weights_tf_dim_ordering_tf_kernels.h5" in err or \
        os.path.join(keras_apps.keras_cache_dir(), "vgg16_weights_tf_dim_ordering_tf_kernels.h5") in err
    assert "--weights PATH" in err


def test_keras_app_random_weights_marked_untrained(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert cli.main(["keras-app", "MobileNetV3Small", "--weights", "none", "--no-top", "-o", str(out)]) == 0
    assert "random weights" in capsys.readouterr().err
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert props[md.WEIGHTS_TRAINED] == "false" and props[md.WEIGHTS_SOURCE] == "random"
    assert json.loads(props[md.PREPROCESS])["mode"] == "pixels"


def test_check_fails_with_exit_1_on_a_tampered_weight(monkeypatch, tmp_path, capsys):
    """One conv kernel scaled by 1.001 after conversion: --check must catch it, and nothing is written."""
    from converters import onnx_passes

    original = onnx_passes.attach_weights

    def tampered(model, *args, **kwargs):
        stats, payloads = original(model, *args, **kwargs)
        conv = next(n for n in model.graph.node if n.name == "block1_conv2")
        payloads[conv.input[1]] = payloads[conv.input[1]] * np.float32(1.001)
        return stats, payloads

    monkeypatch.setattr(onnx_passes, "attach_weights", tampered)
    model = tiny_vgg(name="my_net")
    path = str(tmp_path / "net.keras")
    model.save(path)
    out = tmp_path / "bad.onnx"
    assert cli.main(["keras", path, "-o", str(out), "--preprocess", "caffe", "--check"]) == 1
    captured = capsys.readouterr()
    assert "parity check failed" in captured.err
    failing = [line.split()[0] for line in captured.out.splitlines() if "FAIL" in line]
    assert failing and failing[0] == "block1_conv2" and "block1_conv1" not in failing
    assert sorted(os.listdir(tmp_path)) == ["net.keras"]


def test_tensorflow_missing_names_the_extra(monkeypatch, tmp_path, capsys):
    import builtins

    real_import = builtins.__import__

    def no_tf(name, *args, **kwargs):
        if name.split(".")[0] in ("tensorflow", "tf2onnx"):
            raise ImportError(f"No module named '{name}'", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tf)
    assert cli.main(["keras-app", "VGG16", "--weights", "none", "-o", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert "pip install 'inspector-cnn[keras]'" in err and err.count("\n") == 1
    assert os.listdir(tmp_path) == []


def test_real_entry_point_keeps_stderr_clean(tmp_path):
    """`inspector convert` in a fresh process: no TensorFlow/absl/oneDNN log lines on stderr."""
    import subprocess
    import sys

    model = tiny_vgg(name="vgg16")
    path = str(tmp_path / "vgg16.keras")
    model.save(path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    done = subprocess.run([sys.executable, "-m", "inspector", "convert", "keras", path, "-o", str(tmp_path / "v.onnx")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr
    assert "wrote" in done.stdout and "4 conv layers" in done.stdout
