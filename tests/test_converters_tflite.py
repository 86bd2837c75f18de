"""TFLite and TensorFlow (SavedModel, frozen graph) -> ONNX converters and diff across exporters: TFLite files
built here from a tiny Keras model (float32, float16, int8 full-integer with a uint8 input), checked against
TensorFlow's own TFLite interpreter; the SavedModel and its frozen graph against TensorFlow.

The SQNR references are computed here from TFLite's interpreter (intermediate tensors kept with
experimental_preserve_all_tensors) and NumPy: never through inspector or onnxruntime.
"""

import json
import math
import os
import warnings

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")
keras = pytest.importorskip("keras")
onnx = pytest.importorskip("onnx")

import inspector  # noqa: E402
from converters import api, cli  # noqa: E402
from inspector.compare import diff  # noqa: E402

pytestmark = [pytest.mark.keras, pytest.mark.slow]
SIZE = 24
# The conv layers in the order TFLite runs them, with the names `convert keras` gives them.
CONV_LAYERS = ["conv2d_1", "separable_conv2d_1.depthwise", "separable_conv2d_1.pointwise", "conv2d_2",
               "depthwise_1", "conv2d_3"]


def mini_xception():
    """conv+BN+ReLU, a separable conv with BN and a residual Add, a strided conv+ReLU, a depthwise and a
    1x1 conv: every fusion TFLite makes (BN folded, activation fused, separable split in two)."""
    L = keras.layers
    inputs = keras.Input((SIZE, SIZE, 3), name="pixels")
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="conv2d_1")(inputs)
    x = L.BatchNormalization(name="batch_normalization_1")(x)
    skip = x = L.Activation("relu", name="activation_1")(x)
    x = L.SeparableConv2D(8, 3, padding="same", name="separable_conv2d_1")(x)
    x = L.BatchNormalization(name="batch_normalization_2")(x)
    x = L.Add(name="add_1")([x, skip])
    x = L.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="conv2d_2")(x)
    x = L.DepthwiseConv2D(3, padding="same", name="depthwise_1")(x)
    x = L.Conv2D(4, 1, name="conv2d_3")(x)
    x = L.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, L.Softmax(name="predictions")(x), name="mini")
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 2, gamma.shape), rng.normal(size=beta.shape),
                               rng.normal(size=mean.shape) * 0.1, rng.uniform(0.5, 2, var.shape)])
    return model


def pixels(count, seed):
    return [np.random.default_rng(seed + i).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for i in range(count)]


def tflite_builds(model, folder):
    def convert(setup):
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        setup(converter)
        return converter.convert()

    def fp16(c):
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.target_spec.supported_types = [tf.float16]

    def int8(c):
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.representative_dataset = lambda: ([p[None].astype(np.float32) / 255.0] for p in pixels(16, 100))
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        c.inference_input_type, c.inference_output_type = tf.uint8, tf.uint8

    def int8_signed_input(c):
        int8(c)
        c.inference_input_type, c.inference_output_type = tf.int8, tf.int8

    def dynamic(c):
        c.optimizations = [tf.lite.Optimize.DEFAULT]

    paths = {}
    for precision, setup in (("float32", lambda c: None), ("float16", fp16), ("int8", int8),
                             ("int8_signed_input", int8_signed_input), ("dynamic", dynamic)):
        paths[precision] = os.path.join(folder, f"mini_{precision}.tflite")
        with open(paths[precision], "wb") as handle:
            handle.write(convert(setup))
    return paths


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("tflite"))
    model = mini_xception()
    keras_path = os.path.join(folder, "keras.onnx")
    keras_result = api.convert_keras_model(model, keras_path, preprocess="raw")
    tflite = tflite_builds(model, folder)
    converted, checks = {}, {}
    for precision, path in tflite.items():
        converted[precision] = os.path.join(folder, f"tflite_{precision}.onnx")
        result = api.convert_tflite_file(path, converted[precision],
                                         preprocess=None if precision.startswith("int8") else "raw", check=True)
        checks[precision] = result
    images = []
    for i, p in enumerate(pixels(6, 7)):
        from PIL import Image

        images.append(os.path.join(folder, f"img{i}.png"))
        Image.fromarray(p).save(images[-1])
    return {"folder": folder, "model": model, "keras": keras_path, "keras_layers": keras_result.conv_layers,
            "tflite": tflite, "onnx": converted, "results": checks, "images": images}


def interpreter_tensors(path, images):
    """Each conv op's output tensor, dequantized, NHWC, for every image, in TFLite's execution order."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=path, experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    details = interpreter.get_input_details()[0]
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    convs = [op["outputs"][0] for op in interpreter._get_ops_details() if "CONV" in op["op_name"]]
    found = [[] for _ in convs]
    for image in images:
        from PIL import Image

        x = np.asarray(Image.open(image).convert("RGB"), np.float32)[None] / 255.0
        if details["dtype"] != np.float32:
            scale, zero = details["quantization"]
            x = np.clip(np.round(x / scale) + zero, 0, 255).astype(details["dtype"])
        interpreter.set_tensor(details["index"], x)
        interpreter.invoke()
        for k, index in enumerate(convs):
            value = interpreter.get_tensor(index).astype(np.float64)
            scale, zero = tensors[index]["quantization"]
            found[k].append((value - zero) * scale if tensors[index]["dtype"] != np.float32 else value)
    return [np.concatenate(values) for values in found]


def sqnr(a, b):
    noise = np.sum((a - b) ** 2)
    return math.inf if noise == 0 else 10 * math.log10(np.sum(a * a) / noise)


PRECISION_SAID = {"float32": "float32", "float16": "float16", "int8": "int8", "int8_signed_input": "int8",
                  "dynamic": "int8 weights (dynamic range)"}


@pytest.mark.parametrize("precision", sorted(PRECISION_SAID))
def test_names_metadata_and_check(built, precision):
    result = built["results"][precision]
    assert result.conv_layers == built["keras_layers"] == CONV_LAYERS
    assert result.parity and len(result.parity) == len(CONV_LAYERS) + 1  # --check compared every conv and the output
    model = inspector.load(built["onnx"][precision])
    assert [layer.name for layer in model.layers] == CONV_LAYERS
    meta = model.metadata
    assert meta["inspector.tflite_precision"] == PRECISION_SAID[precision]
    assert meta["inspector.source_framework"] == "tflite"
    assert json.loads(meta["inspector.preprocess"])["mode"] == "raw"  # int8: inferred from the input quantization
    if precision.startswith("int8"):
        assert {layer.quantization for layer in model.layers} == {"qdq"}
        assert model.input.dtype == np.float32  # the graph quantizes its float input itself
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            details = tf.lite.Interpreter(model_path=built["tflite"][precision]).get_input_details()[0]
        said = json.loads(meta["inspector.input_quantization"])
        assert said["dtype"] == np.dtype(details["dtype"]).name and said["zero_point"] == details["quantization"][1]
        assert said["scale"] == pytest.approx(details["quantization"][0], rel=1e-6)
    elif precision == "dynamic":  # int8 weights dequantized in the graph (TFLite keeps small ones float)
        assert "inspector.input_quantization" not in meta
        assert "qdq" in {layer.quantization for layer in model.layers}
    else:
        assert "inspector.input_quantization" not in meta
        assert not any(layer.quantization for layer in model.layers)


@pytest.mark.parametrize("precision", ["float32", "float16", "int8"])
def test_diff_keras_against_tflite_matches_the_interpreters(built, precision):
    """Every conv pairs; each pair's SQNR is within 1.5 dB of TFLite float32's maps against this build's,
    both from TFLite's interpreter."""
    result = diff(built["keras"], built["onnx"][precision], built["images"], preprocess="raw", devices=["cpu"])
    assert [(layer.pair.a.name, layer.pair.b.name) for layer in result.layers] == [(n, n) for n in CONV_LAYERS]
    assert not result.unmatched_a and not result.unmatched_b
    reference = interpreter_tensors(built["tflite"]["float32"], built["images"])
    build = interpreter_tensors(built["tflite"][precision], built["images"])
    for layer, a, b in zip(result.layers, reference, build):
        expected, got = sqnr(a, b), layer.sqnr()
        if precision == "float32":
            assert expected == math.inf and got > 100  # the same numbers up to float rounding
        else:
            assert 15 < expected < 90, (layer.pair.a.name, expected)
            assert got == pytest.approx(expected, abs=1.5), layer.pair.a.name


def test_structure_pairs_tf2onnx_outputs_with_their_own_names(built):
    """tf2onnx's TFLite output as it writes it (';'-joined names) and tf2onnx's Keras output with its default
    names against our Keras conversion: every conv paired, those the names miss by structure."""
    import tf2onnx

    raw, _ = tf2onnx.convert.from_tflite(built["tflite"]["float32"], opset=17)
    raw_path = os.path.join(built["folder"], "raw_tflite.onnx")
    onnx.save(raw, raw_path)
    spec = (tf.TensorSpec((None, SIZE, SIZE, 3), tf.float32, name="input"),)
    direct, _ = tf2onnx.convert.from_keras(built["model"], input_signature=spec, opset=17)
    direct_path = os.path.join(built["folder"], "direct.onnx")
    onnx.save(direct, direct_path)
    for other in (raw_path, direct_path):
        result = diff(built["keras"], other, built["images"], preprocess="raw", devices=["cpu"])
        assert [layer.pair.a.name for layer in result.layers] == CONV_LAYERS
        assert "structure" in {layer.pair.match for layer in result.layers}
        assert not result.unmatched_a and not result.unmatched_b
        for layer in result.layers:
            assert layer.pair.confidence == "high" and layer.compared and layer.sqnr() > 100, layer.pair.a.name


def test_custom_op_is_refused_in_one_line(tmp_path, capsys):
    @tf.function(input_signature=[tf.TensorSpec((1, 8, 8, 3), tf.float32)])
    def custom(x):
        y = tf.nn.conv2d(x, tf.ones((3, 3, 3, 4)), 1, "SAME")
        return tf.math.special.bessel_i1e(y)  # no TFLite builtin: stored as a custom op

    converter = tf.lite.TFLiteConverter.from_concrete_functions([custom.get_concrete_function()], custom)
    converter.allow_custom_ops = True
    path = tmp_path / "custom.tflite"
    path.write_bytes(converter.convert())
    out = tmp_path / "custom.onnx"
    assert cli.main(["tflite", str(path), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("inspector convert: error:") and "BesselI1e" in err[-1]
    assert "Traceback" not in "\n".join(err) and not out.exists()


def test_not_a_tflite_file(tmp_path, capsys):
    bogus = tmp_path / "model.tflite"
    bogus.write_bytes(b"\x00" * 64)
    assert cli.main(["tflite", str(bogus), "-o", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "not a TFLite flatbuffer" in err and "Traceback" not in err


# ------------------------------------------------------------------------------ TensorFlow's formats

def test_convert_tf_saved_model_and_frozen_graph(built, capsys):
    """The model exported as a SavedModel, and that SavedModel frozen to a TF1 .pb: both convert with --check
    against TensorFlow, with the Keras names, and diff pairs every conv with the Keras conversion."""
    from tf2onnx import tf_loader

    saved = os.path.join(built["folder"], "saved")
    built["model"].export(saved, verbose=False)
    graph_def = tf_loader.from_saved_model(saved, None, None)[0]
    frozen = os.path.join(built["folder"], "frozen.pb")
    with open(frozen, "wb") as handle:
        handle.write(graph_def.SerializeToString())
    for source in (saved, frozen):
        out = os.path.join(built["folder"], os.path.basename(source) + ".onnx")
        result = api.convert_tf(source, out, preprocess="raw", check=True)
        assert result.conv_layers == CONV_LAYERS
        assert len(result.parity) >= len(CONV_LAYERS)  # the convs TensorFlow names, and the output
        assert result.metadata["inspector.source_framework"] == "tensorflow"
        compared = diff(built["keras"], out, built["images"], preprocess="raw", devices=["cpu"])
        assert [(layer.pair.a.name, layer.pair.b.name) for layer in compared.layers] == [(n, n) for n in CONV_LAYERS]
        assert all(layer.sqnr() > 100 for layer in compared.layers)


def test_convert_tf_refuses_a_folder_without_a_saved_model(tmp_path, capsys):
    assert cli.main(["tf", str(tmp_path), "-o", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "without saved_model.pb" in err and "Traceback" not in err
