"""Keras 2 files (`convert keras` through tf_keras) and the TFLite shapes MediaPipe and basic-pitch ship
(a batch fixed at 1, an audio signal input), from tiny models built and saved here.

References are the source framework's own outputs (tf_keras's predict, TFLite's interpreter), compared with
onnxruntime on the written file: never through inspector.
"""

import json
import os
import warnings

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")
tf_keras = pytest.importorskip("tf_keras")
h5py = pytest.importorskip("h5py")
ort = pytest.importorskip("onnxruntime")

import inspector  # noqa: E402
from converters import cli  # noqa: E402

pytestmark = [pytest.mark.keras, pytest.mark.slow]
SIZE = 16


def keras2_model(lambda_fn=None):
    """conv+BN+ReLU, a strided conv, a 1x1 conv, pooled: BatchNorm statistics set so that folding matters."""
    L = tf_keras.layers
    inputs = tf_keras.Input((SIZE, SIZE, 3), name="pixels")
    x = L.Conv2D(8, 3, padding="same", name="conv2d_1")(inputs)
    x = L.BatchNormalization(name="batch_normalization_1")(x)
    x = L.Activation("relu", name="activation_1")(x)
    if lambda_fn is not None:
        x = L.Lambda(lambda_fn, name="scale_lambda")(x)
    x = L.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="conv2d_2")(x)
    x = L.Conv2D(4, 1, name="conv2d_3")(x)
    x = L.GlobalAveragePooling2D(name="pool")(x)
    model = tf_keras.Model(inputs, L.Softmax(name="predictions")(x), name="legacy")
    rng = np.random.default_rng(0)
    bn = model.get_layer("batch_normalization_1")
    gamma, beta, mean, var = bn.get_weights()
    bn.set_weights([rng.uniform(0.5, 2, gamma.shape), rng.normal(size=beta.shape),
                    rng.normal(size=mean.shape) * 0.1, rng.uniform(0.5, 2, var.shape)])
    return model


def batch(count=3, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (count, SIZE, SIZE, 3)).astype(np.float32)


def onnx_predictions(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = x.transpose(0, 3, 1, 2) if session.get_inputs()[0].shape[1] == 3 else x
    return session.run(None, {session.get_inputs()[0].name: feed})[0]


def as_keras_2_0(path):
    """Rewrite a tf_keras .h5's model_config the way Keras 2.0 wrote a Sequential: ``config`` is the bare
    list of layers, which Keras 3 cannot read (``pop expected at most 1 argument``)."""
    with h5py.File(path, "r+") as handle:
        config = json.loads(handle.attrs["model_config"])
        config["config"] = config["config"]["layers"]
        handle.attrs["model_config"] = json.dumps(config).encode()
        handle.attrs["keras_version"] = b"2.0.3"


def test_keras2_h5_that_keras3_refuses_converts_through_tf_keras(tmp_path, capsys):
    L = tf_keras.layers
    model = tf_keras.Sequential([tf_keras.Input((SIZE, SIZE, 3)), L.Conv2D(8, 3, padding="same", name="image_array"),
                                 L.BatchNormalization(name="batch_normalization_1"), L.Activation("relu"),
                                 L.Conv2D(4, 3, strides=2, name="conv2d_1"), L.GlobalAveragePooling2D()],
                                name="simple_cnn")
    rng = np.random.default_rng(1)
    bn = model.get_layer("batch_normalization_1")
    bn.set_weights([rng.uniform(0.5, 2, 8), rng.normal(size=8), rng.normal(size=8) * 0.1, rng.uniform(0.5, 2, 8)])
    path = tmp_path / "simple_CNN.hdf5"
    model.save(str(path), save_format="h5")
    as_keras_2_0(path)
    import keras

    with pytest.raises(Exception):  # the premise: Keras 3 refuses this file
        keras.models.load_model(str(path), compile=False)
    out = tmp_path / "simple.onnx"
    assert cli.main(["keras", str(path), "-o", str(out), "--check", "--preprocess", "raw"]) == 0
    said = capsys.readouterr().out
    assert "image_array" in said and "conv2d_1" in said
    assert [layer.name for layer in inspector.load(str(out)).layers] == ["image_array", "conv2d_1"]
    x = batch()
    np.testing.assert_allclose(onnx_predictions(out, x), model.predict(x, verbose=0), rtol=1e-4, atol=1e-5)


def test_json_architecture_with_its_weights_beside_it(tmp_path, capsys):
    model = keras2_model()
    architecture = tmp_path / "wpod.json"
    architecture.write_text(model.to_json())
    model.save_weights(str(tmp_path / "wpod.h5"))
    out = tmp_path / "wpod.onnx"
    assert cli.main(["keras", str(architecture), "-o", str(out), "--check", "--preprocess", "raw"]) == 0
    assert [layer.name for layer in inspector.load(str(out)).layers] == ["conv2d_1", "conv2d_2", "conv2d_3"]
    x = batch(seed=3)
    np.testing.assert_allclose(onnx_predictions(out, x), model.predict(x, verbose=0), rtol=1e-4, atol=1e-6)
    capsys.readouterr()

    # the weights file alone: one line pointing at the architecture
    assert cli.main(["keras", str(tmp_path / "wpod.h5"), "-o", str(tmp_path / "w.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds only weights" in err[0] and "wpod.json" in err[0]
    assert not (tmp_path / "w.onnx").exists()
    # the architecture without its weights
    lone = tmp_path / "lone.json"
    lone.write_text(model.to_json())
    assert cli.main(["keras", str(lone), "-o", str(tmp_path / "l.onnx")]) == 2
    assert "without weights" in capsys.readouterr().err


@pytest.mark.parametrize("form", ["h5", "json"])
def test_lambda_layer_is_refused_before_its_code_runs(tmp_path, capsys, form):
    marker = tmp_path / "ran"
    # The Lambda's function leaves a file behind when it runs: it must not, loading an untrusted file.
    code = f"lambda x: (open({str(marker)!r}, 'w').close(), x)[1]"
    model = keras2_model(lambda_fn=eval(code))  # noqa: S307 (the test's own code)
    marker.unlink()  # building the model ran it once, here
    if form == "h5":
        path = tmp_path / "facenet.h5"
        model.save(str(path), save_format="h5")
    else:
        path = tmp_path / "facenet.json"
        path.write_text(model.to_json())
        model.save_weights(str(tmp_path / "facenet.h5"))
    out = tmp_path / "facenet.onnx"
    assert cli.main(["keras", str(path), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'scale_lambda'" in err[0] and "Lambda" in err[0] and "--unsafe" in err[0]
    assert not marker.exists() and not out.exists()


def test_lambda_allowed_with_unsafe_runs_as_saved(tmp_path):
    """--unsafe: the file's own Lambda (saved by this Python) loads and converts like any layer."""
    model = keras2_model(lambda_fn=lambda x: x * 0.5)
    path = tmp_path / "scaled.h5"
    model.save(str(path), save_format="h5")
    out = tmp_path / "scaled.onnx"
    assert cli.main(["keras", str(path), "-o", str(out), "--unsafe", "--preprocess", "raw"]) == 0
    x = batch(seed=5)
    np.testing.assert_allclose(onnx_predictions(out, x), model.predict(x, verbose=0), rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------ TFLite shapes of the wild

def tflite_file(model, path):
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    path.write_bytes(converter.convert())
    return path


def interpreter_outputs(path, x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    found = []
    for sample in x:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], sample[None])
        interpreter.invoke()
        found.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))
    return np.concatenate(found)


def test_tflite_with_a_batch_fixed_at_one_passes_check(tmp_path, capsys):
    """MediaPipe's files fix the batch at 1: --check runs its images one at a time."""
    import keras

    L = keras.layers
    inputs = keras.Input((SIZE, SIZE, 3), batch_size=1, name="input_1")
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv2d")(inputs)
    x = L.DepthwiseConv2D(3, padding="same", name="depthwise_conv2d")(x)
    model = keras.Model(inputs, L.Conv2D(2, 1, name="conv2d_1")(x), name="fixed")
    path = tflite_file(model, tmp_path / "fixed.tflite")
    out = tmp_path / "fixed.onnx"
    assert cli.main(["tflite", str(path), "-o", str(out), "--check", "--preprocess", "raw"]) == 0
    said = capsys.readouterr().out
    assert "parity check" in said and "FAIL" not in said
    x = batch(2, seed=9)
    got = onnx_predictions(out, x[:1])
    np.testing.assert_allclose(got, interpreter_outputs(path, x[:1]), rtol=1e-4, atol=1e-5)


def test_tflite_with_an_audio_input_passes_check(tmp_path, capsys):
    """basic-pitch takes (1, samples, 1): --check feeds a signal in [-1, 1] and compares every conv."""
    import keras

    L = keras.layers
    inputs = keras.Input((256, 1), batch_size=1, name="audio")
    x = L.Conv1D(8, 9, strides=4, padding="same", activation="relu", name="conv1d")(inputs)
    x = L.Reshape((64, 8, 1))(x)
    x = L.Conv2D(4, 3, padding="same", activation="sigmoid", name="conv2d")(x)
    model = keras.Model(inputs, x, name="audio")
    path = tflite_file(model, tmp_path / "audio.tflite")
    out = tmp_path / "audio.onnx"
    assert cli.main(["tflite", str(path), "-o", str(out), "--check"]) == 0
    said = capsys.readouterr().out
    rows = [line for line in said.splitlines() if line.strip().endswith("ok")]
    assert len(rows) == 3 and "FAIL" not in said  # two convs and the output
    signal = np.random.default_rng(2).uniform(-1, 1, (1, 256, 1)).astype(np.float32)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: signal})[0]
    np.testing.assert_allclose(got, interpreter_outputs(path, signal), rtol=1e-4, atol=1e-5)
