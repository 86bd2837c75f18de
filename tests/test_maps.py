"""Feature maps from one run, checked against NumPy convolution and onnxruntime on the unmodified model."""

import numpy as np
import onnxruntime as ort
import pytest

import builders as b
import inspector


def reference(path, feeds):
    """onnxruntime on the file as it is: the graph's own outputs."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def test_conv_relu_maps_match_numpy_and_unmodified_model(save):
    m, w = b.conv_relu_nchw()
    path = save(m)
    x = np.random.default_rng(7).standard_normal((1, 3, 16, 16)).astype(np.float32)
    maps = inspector.load(path).run(x, device="cpu")
    first = b.relu(b.conv2d(x, w["w1"], w["b1"], pad=1))
    second = b.relu(b.conv2d(first, w["w2"], w["b2"], stride=2))
    np.testing.assert_allclose(maps["features.0"], first, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(maps["features.2"], second, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(maps["features.2"], reference(path, {"x": x})[0])


def test_nhwc_model_maps_are_channel_first(save):
    m, w = b.tf2onnx_like_nhwc()
    path = save(m)
    x_nhwc = np.random.default_rng(8).standard_normal((1, 12, 12, 3)).astype(np.float32)
    maps = inspector.load(path).run(x_nhwc, device="cpu")
    x = x_nhwc.transpose(0, 3, 1, 2)
    first = b.relu(b.conv2d(x, w["w1"], w["b1"], pad=1))
    second = b.sigmoid(b.conv2d(first, w["w2"], w["b2"]))
    assert maps["block1_conv1"].shape == (1, 4, 12, 12)
    np.testing.assert_allclose(maps["block1_conv1"], first, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(maps["block1_conv2"], second, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(maps["block1_conv2"], reference(path, {"x": x_nhwc})[0].transpose(0, 3, 1, 2))


def test_grouped_depthwise_swish_maps(save):
    m, w = b.grouped_and_depthwise()
    x = np.random.default_rng(9).standard_normal((1, 4, 9, 9)).astype(np.float32)
    maps = inspector.load(save(m)).run(x, device="cpu")
    grouped = b.conv2d(x, w["wg"], pad=1, groups=2)
    depth = b.conv2d(grouped, w["wd"], w["bd"], pad=1, dilation=2, groups=8)
    np.testing.assert_allclose(maps["grouped"], grouped, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(maps["depthwise"], depth * b.sigmoid(depth), rtol=1e-4, atol=1e-4)


def test_conv_transpose_maps(save):
    m, w = b.conv_transpose()
    x = np.random.default_rng(10).standard_normal((1, 3, 5, 5)).astype(np.float32)
    maps = inspector.load(save(m)).run(x, device="cpu")
    np.testing.assert_allclose(maps["upsample"], b.conv_transpose2d(x, w["w"], w["b"], stride=2),
                               rtol=1e-4, atol=1e-4)


def test_constant_and_qdq_maps_match_numpy(save):
    m, w = b.constant_weights()
    x = np.random.default_rng(11).standard_normal((1, 3, 10, 10)).astype(np.float32)
    pre = b.conv2d(x, w["w"], w["b"], pad=1)
    np.testing.assert_allclose(inspector.load(save(m, "c.onnx")).run(x, device="cpu")["conv_a"],
                               np.where(pre > 0, pre, 0.1 * pre), rtol=1e-4, atol=1e-4)
    m, w = b.qdq_conv()
    x = np.random.default_rng(12).standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(inspector.load(save(m, "q.onnx")).run(x, device="cpu")["qconv"],
                               b.relu(b.conv2d(x, w["w"], pad=1)), rtol=1e-4, atol=1e-4)


def test_qlinear_conv_maps_are_dequantized(save):
    m, w = b.qlinear_conv()
    path = save(m)
    x = np.random.default_rng(13).uniform(-1, 1, (1, 3, 6, 6)).astype(np.float32)
    model = inspector.load(path)
    (layer,) = model.layers
    assert layer.op == "QLinearConv" and layer.quantization == "qlinear"
    np.testing.assert_allclose(model.filters(0), w["w"], rtol=1e-6)
    maps = model.run(x, device="cpu")["qlconv"]
    # The graph dequantizes the same uint8 tensor with the same scale and zero point.
    np.testing.assert_allclose(maps, reference(path, {"x": x})[0], rtol=1e-6, atol=1e-6)


def test_external_data_maps(tmp_path):
    m, w = b.conv_relu_nchw()
    path = tmp_path / "ext.onnx"
    b.save_external(m, path)
    x = np.random.default_rng(14).standard_normal((1, 3, 16, 16)).astype(np.float32)
    maps = inspector.load(path).run(x, device="cpu")
    np.testing.assert_array_equal(maps["features.2"], reference(path, {"x": x})[0])


def test_maps_from_image_apply_preprocessing(save, tmp_path):
    from PIL import Image

    m, _ = b.conv_relu_nchw()
    path = save(m)
    pixels = np.random.default_rng(15).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "img.png")
    model = inspector.load(path)
    maps = model.maps(tmp_path / "img.png", preprocess="caffe", device="cpu")
    bgr = pixels[..., ::-1].astype(np.float32) - np.array([103.939, 116.779, 123.68], np.float32)
    x = bgr.transpose(2, 0, 1)[None].astype(np.float32)
    expected = inspector.load(path).run(x, device="cpu")
    np.testing.assert_allclose(maps["features.0"], expected["features.0"][0], rtol=1e-6)
    assert maps["features.2"].shape == (16, 7, 7)


@pytest.mark.parametrize("mode, transform", [
    ("torch", lambda p: (p / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])),
    ("tf", lambda p: p / 127.5 - 1.0),
    ("raw", lambda p: p / 255.0),
    ("caffe", lambda p: p[..., ::-1] - np.array([103.939, 116.779, 123.68])),
])
def test_presets_match_their_definitions(mode, transform):
    from inspector.preprocess import preset

    pixels = np.random.default_rng(16).integers(0, 256, (4, 5, 3)).astype(np.float64)
    np.testing.assert_allclose(preset(mode).apply(pixels), transform(pixels), rtol=1e-5, atol=1e-5)


def test_unfolded_batchnorm_and_constant_bias_are_followed(save):
    """Exporters that leave BN or a bias Add unfolded show the same tensor as those that fold them."""
    m, w = b.unfolded_bn()
    path = save(m)
    model = inspector.load(path)
    first, second, third = model.layers
    assert (first.output, first.activation, first.affine) == ("r1", "Relu", ("BatchNormalization",))
    assert (second.output, second.activation, second.affine) == ("m2", None, ("Add", "Mul"))
    assert (third.output, third.affine) == ("c3", ())  # a residual Add is not a bias
    x = np.random.default_rng(9).standard_normal((1, 3, 10, 10)).astype(np.float32)
    maps = model.run(x, device="cpu")
    scale = (w["gamma"] / np.sqrt(w["var"] + 1e-5)).reshape(1, -1, 1, 1)
    bn = (b.conv2d(x, w["w1"], pad=1) - w["mean"].reshape(1, -1, 1, 1)) * scale + w["beta"].reshape(1, -1, 1, 1)
    np.testing.assert_allclose(maps["conv1"], b.relu(bn), rtol=1e-4, atol=1e-4)
    shown = (b.conv2d(b.relu(bn), w["w2"]) + w["bias2"]) * w["scale2"]
    np.testing.assert_allclose(maps["conv2"], shown, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(maps["conv3"], b.conv2d(shown, w["w3"]), rtol=1e-4, atol=1e-4)


def test_models_with_huge_conv_kernels_skip_the_relayout_copy(save, monkeypatch):
    """Past RELAYOUT_LIMIT of conv kernels, the session uses the extended level (no NCHWc copy
    of the kernels); the maps do not change."""
    import onnxruntime as ort

    from inspector import execution

    m, w = b.conv_relu_nchw()
    path = save(m)
    x = np.random.default_rng(3).standard_normal((1, 3, 16, 16)).astype(np.float32)
    kernels = w["w1"].nbytes + w["w2"].nbytes
    model = inspector.load(path)
    assert execution.conv_kernel_bytes(model.file) == kernels
    default = model.session(device="cpu")
    assert default.relayout
    monkeypatch.setattr(execution, "RELAYOUT_LIMIT", kernels - 1)
    lean = model.session(device="cpu")
    assert not lean.relayout
    level = lean.session.get_session_options().graph_optimization_level
    assert level == ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    for name, value in default.run(x).items():
        np.testing.assert_allclose(lean.run(x)[name], value, rtol=1e-5, atol=1e-5)


def test_cpu_sessions_share_one_arena_that_grows_by_what_is_asked(save):
    """The process-wide CPU arena (kSameAsRequested) is what CPU sessions allocate from; the maps
    are the same as with a session's own default arena."""
    from inspector import execution

    m, _ = b.conv_relu_nchw()
    path = save(m)
    model = inspector.load(path)
    x = np.random.default_rng(4).standard_normal((1, 3, 16, 16)).astype(np.float32)
    shared = model.session(device="cpu")
    assert execution._shared_cpu_arena()
    options = shared.session.get_session_options()
    assert options.get_session_config_entry("session.use_env_allocators") == "1"
    import onnx

    whole = onnx.load(str(path))  # the weights inline, a session of its own, outputs added by onnx's helper
    for name in shared.outputs:
        whole.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    plain = ort.InferenceSession(whole.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = dict(zip(shared.outputs, plain.run(shared.outputs, {"x": x})))
    for layer in model.layers:
        np.testing.assert_array_equal(shared.run(x)[layer.name], expected[layer.output])
