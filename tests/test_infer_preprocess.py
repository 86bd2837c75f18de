"""Preprocessing inferred from the model (inspector.infer_preprocess), on tiny models whose training
preprocessing is known by construction, and on the real trained models against their packages' own code.

The synthetic models are "trained" on one set of synthetic photos (their statistics are computed
here with a NumPy convolution, independently of onnxruntime) and judged on another set.
"""

import os

import numpy as np
import pytest
from onnx import helper, numpy_helper

import builders
import trained
import inspector
from inspector.infer_preprocess import CANDIDATES, infer, scores
from inspector.preprocess import preset

SIZE = 32


def photos(count: int, seed: int) -> list[np.ndarray]:
    """Photo-like (H, W, 3) uint8 pictures: smooth colour fields with a colour cast and some edges and
    noise, so that each colour channel has its own mean and the pixels cover most of 0..255."""
    r = builders.rng(seed)
    out = []
    for _ in range(count):
        coarse = r.uniform(0, 1, (5, 5, 3))
        ys, xs = np.linspace(0, 4, SIZE), np.linspace(0, 4, SIZE)
        y0, x0 = np.floor(ys).astype(int).clip(0, 3), np.floor(xs).astype(int).clip(0, 3)
        fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
        field = ((1 - fy) * (1 - fx) * coarse[y0][:, x0] + (1 - fy) * fx * coarse[y0][:, x0 + 1]
                 + fy * (1 - fx) * coarse[y0 + 1][:, x0] + fy * fx * coarse[y0 + 1][:, x0 + 1])
        cast = r.uniform(0.6, 1.0, 3) * np.array([0.9, 0.8, 0.7])  # warmer than blue, like most photos
        picture = 255 * field * cast + r.normal(0, 8, (SIZE, SIZE, 3))
        edge = r.integers(4, SIZE - 4)
        picture[:, edge:] *= r.uniform(0.5, 1.0)
        out.append(np.clip(picture, 0, 255).astype(np.uint8))
    return out


def numpy_conv(x: np.ndarray, w: np.ndarray, bias=None, pad: int = 1) -> np.ndarray:
    """NCHW convolution, stride 1, by sliding windows (independent of onnxruntime)."""
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    k = w.shape[-1]
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))  # N, C, H, W, k, k
    y = np.einsum("nchwij,ocij->nohw", windows, w.astype(np.float64))
    return y if bias is None else y + bias[None, :, None, None]


def nchw(pixels, name: str) -> np.ndarray:
    spec = preset(name)
    return np.stack([spec.apply(p).transpose(2, 0, 1) for p in pixels]).astype(np.float64)


def dc_filters(seed: int, count: int = 16) -> np.ndarray:
    """Conv filters with a colour-opponent part and a brightness (DC) part, as first layers learn."""
    r = builders.rng(seed)
    w = r.normal(0, 1, (count, 3, 3, 3))
    w += r.normal(0, 1.5, (count, 3, 1, 1))  # each filter weighs the colours in its own way
    return (w / np.sqrt((w ** 2).sum(axis=(1, 2, 3), keepdims=True))).astype(np.float32)


# conv (no bias) -> BatchNormalization -> Relu -> GlobalAveragePool
def batchnorm_model(trained_with: str, seed: int = 3, scale_var: float = 1.0, batch="N"):
    w = dc_filters(seed)
    conv = numpy_conv(nchw(photos(12, seed=100), trained_with), w)
    mean = conv.mean(axis=(0, 2, 3)).astype(np.float32)
    var = (conv.var(axis=(0, 2, 3)) * scale_var).astype(np.float32)
    r = builders.rng(seed + 1)
    gamma = r.uniform(0.5, 1.5, 16).astype(np.float32)
    beta = r.normal(0, 0.3, 16).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["b"], name="bn1"),
             helper.make_node("Relu", ["b"], ["r"], name="relu1"),
             helper.make_node("GlobalAveragePool", ["r"], ["y"], name="pool")]
    arrays = dict(w=w, gamma=gamma, beta=beta, mean=mean, var=var)
    inits = [numpy_helper.from_array(a, n) for n, a in arrays.items()]
    return builders.model(nodes, [builders.image_input(shape=(batch, 3, SIZE, SIZE))], [builders.out("y")], inits)


# conv + bias -> Relu -> conv 1x1 + bias -> Relu   (BatchNormalization folded into the convs)
def folded_model(trained_with: str, seed: int = 5, zero_bias_zero_dc: bool = False):
    """Each first-layer bias sits at the 30th percentile of its conv's output on the training photos
    under ``trained_with``: every channel fires on about 70% of the positions there, and a much
    smaller input (a wrong, smaller scale) leaves the negative biases in charge: silent channels."""
    w1 = dc_filters(seed)
    if zero_bias_zero_dc:  # nothing depends on the input's scale or offset: nothing can tell
        w1 = w1 - w1.mean(axis=(2, 3), keepdims=True)
    conv = numpy_conv(nchw(photos(12, seed=200), trained_with), w1)
    b1 = -np.percentile(conv, 30, axis=(0, 2, 3))
    r = builders.rng(seed + 1)
    w2 = r.normal(0, 1, (8, 16, 1, 1))
    hidden = np.maximum(conv + b1[None, :, None, None], 0)
    conv2 = np.einsum("nchw,oc->nohw", hidden, w2[:, :, 0, 0])
    b2 = -np.percentile(conv2, 30, axis=(0, 2, 3))
    if zero_bias_zero_dc:
        b1, b2 = np.zeros_like(b1), np.zeros_like(b2)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2"),
             helper.make_node("Relu", ["c2"], ["y"], name="relu2")]
    arrays = dict(w1=w1, b1=b1.astype(np.float32), w2=w2.astype(np.float32), b2=b2.astype(np.float32))
    inits = [numpy_helper.from_array(a, n) for n, a in arrays.items()]
    return builders.model(nodes, [builders.image_input(shape=("N", 3, SIZE, SIZE))], [builders.out("y")], inits)


JUDGED = photos(6, seed=7)  # not the photos the models were "trained" on


@pytest.mark.parametrize("trained_with", ["caffe", "torch", "tf", "raw"])
def test_batchnorm_statistics_name_the_training_preprocessing(save, trained_with):
    model = inspector.load(save(batchnorm_model(trained_with)))
    found = infer(model, JUDGED)
    assert found is not None, scores(model, JUDGED)
    spec, reason = found
    assert spec == preset(trained_with)
    assert "BatchNormalization" in reason and f"'{trained_with}'" in reason


def test_batchnorm_bgr255_is_never_taken_for_another(save):
    """caffe and bgr255 differ only by the mean subtracted: told apart or not, never confused."""
    model = inspector.load(save(batchnorm_model("bgr255")))
    found = infer(model, JUDGED)
    assert found is None or found[0] == preset("bgr255")


def test_batchnorm_distance_is_the_documented_one(save):
    """The figure behind the choice, recomputed with NumPy: the median over channels of
    |ln(s/sigma)| + |m - mu| / max(s, sigma) for the conv's output under each candidate."""
    proto = batchnorm_model("tf")
    arrays = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    model = inspector.load(save(proto))
    evidence = scores(model, JUDGED)
    sigma = np.sqrt(arrays["var"].astype(np.float64) + 1e-5)
    for name in CANDIDATES:
        conv = numpy_conv(nchw(JUDGED, name), arrays["w"])
        m, s = conv.mean(axis=(0, 2, 3)), conv.std(axis=(0, 2, 3))
        expected = np.median(np.abs(np.log(s / sigma)) + np.abs(m - arrays["mean"]) / np.maximum(s, sigma))
        assert evidence["candidates"][name]["distance"] == pytest.approx(expected, rel=1e-3)


def test_batchnorm_between_two_presets_is_no_answer(save):
    """Running variances halfway (geometrically) between what tf and raw give: not told apart."""
    w = dc_filters(3)
    train = photos(12, seed=100)
    conv_tf, conv_raw = (numpy_conv(nchw(train, n), w) for n in ("tf", "raw"))
    proto = batchnorm_model("tf")
    for tensor in proto.graph.initializer:
        if tensor.name == "var":
            var = np.sqrt(conv_tf.var(axis=(0, 2, 3)) * conv_raw.var(axis=(0, 2, 3)))
            tensor.CopyFrom(numpy_helper.from_array(var.astype(np.float32), "var"))
        if tensor.name == "mean":
            mean = (conv_tf.mean(axis=(0, 2, 3)) + conv_raw.mean(axis=(0, 2, 3))) / 2
            tensor.CopyFrom(numpy_helper.from_array(mean.astype(np.float32), "mean"))
    model = inspector.load(save(proto))
    assert infer(model, JUDGED) is None


def test_batchnorm_statistics_that_are_not_numbers_are_no_answer(save):
    proto = batchnorm_model("tf")
    for tensor in proto.graph.initializer:
        if tensor.name == "mean":
            tensor.CopyFrom(numpy_helper.from_array(np.full(16, np.nan, np.float32), "mean"))
    assert infer(inspector.load(save(proto)), JUDGED) is None


def test_batchnorm_far_from_every_preset_is_no_answer(save):
    """Statistics no preset comes near (spread 1000x that of caffe's): None, not the least bad."""
    model = inspector.load(save(batchnorm_model("caffe", scale_var=1e6)))
    assert infer(model, JUDGED) is None


@pytest.mark.parametrize("trained_with", ["caffe", "bgr255"])
def test_folded_model_picks_the_preset_that_keeps_the_first_layers_alive(save, trained_with):
    model = inspector.load(save(folded_model(trained_with)))
    found = infer(model, JUDGED)
    assert found is not None, scores(model, JUDGED)
    spec, reason = found
    evidence = scores(model, JUDGED)["candidates"]
    # Checked against the maps themselves: under the chosen preset no more first-layer channels are
    # silent than under any other, and under the guessed 'torch' clearly more are.
    session = model.session(model.layers[:2], device="cpu")
    silent = {}
    for name in CANDIDATES:
        maps = session.run(model.image_batch(JUDGED, preset(name)))
        silent[name] = sum(int(np.sum(maps[layer].max(axis=(0, 2, 3)) == maps[layer].min(axis=(0, 2, 3))))
                           for layer in maps)
        assert silent[name] == evidence[name]["silent_channels"]
    assert silent[spec.mode] == min(silent.values())
    assert silent["torch"] >= silent[spec.mode] + 2
    # A 0..255 network: the choice is one of the two 0..255 presets, the trained one where they differ.
    assert spec.mode in ("caffe", "bgr255")
    if silent["caffe"] != silent["bgr255"]:
        assert spec.mode == trained_with
    assert "silent" in reason


def test_folded_model_trained_on_small_inputs_is_no_answer(save):
    """A network trained on ImageNet-normalised pixels: no preset silences fewer of its channels, larger
    inputs silence none either, so nothing rules the guess out: None (the guess stays)."""
    model = inspector.load(save(folded_model("torch")))
    found = infer(model, JUDGED)
    assert found is None or found[0] == preset("torch")


def test_nothing_depends_on_the_scale_is_no_answer(save):
    model = inspector.load(save(folded_model("caffe", zero_bias_zero_dc=True)))
    evidence = scores(model, JUDGED)
    assert evidence["kind"] == "folded"
    assert infer(model, JUDGED) is None


@pytest.mark.parametrize("build", [lambda: batchnorm_model("tf"), lambda: batchnorm_model("caffe"),
                                   lambda: folded_model("caffe")], ids=["bn-tf", "bn-caffe", "folded-caffe"])
def test_flipped_images_give_the_same_answer(save, build):
    model = inspector.load(save(build()))
    found = infer(model, JUDGED)
    flipped = infer(model, [np.ascontiguousarray(p[:, ::-1]) for p in JUDGED])
    upside_down = infer(model, [np.ascontiguousarray(p[::-1]) for p in JUDGED])
    assert found is not None
    assert flipped is not None and flipped[0] == found[0]
    assert upside_down is not None and upside_down[0] == found[0]


def test_image_paths_and_arrays_give_the_same_answer(save, tmp_path):
    from PIL import Image

    model = inspector.load(save(batchnorm_model("raw")))
    paths = []
    for i, picture in enumerate(JUDGED):
        paths.append(str(tmp_path / f"p{i}.png"))
        Image.fromarray(picture).save(paths[-1])
    assert infer(model, paths) == infer(model, JUDGED)
    assert infer(model, paths)[0] == preset("raw")


@pytest.mark.parametrize("batch", [1, 4])
def test_fixed_batch_gives_the_same_figures(save, batch):
    """A batch fixed at 1 (one run per image) or at 4 (6 images: the second run filled up with repeats)."""
    dynamic = scores(inspector.load(save(batchnorm_model("tf"), "dynamic.onnx")), JUDGED)
    fixed = scores(inspector.load(save(batchnorm_model("tf", batch=batch), "fixed.onnx")), JUDGED)
    for name in CANDIDATES:
        assert fixed["candidates"][name]["distance"] == pytest.approx(dynamic["candidates"][name]["distance"],
                                                                      rel=1e-4)


def test_integer_pixels_in_give_no_answer(save):
    """A uint8 input: the preprocessing is inside the graph, nothing to infer."""
    proto = batchnorm_model("tf")
    proto.graph.input[0].type.tensor_type.elem_type = 2  # UINT8
    cast = helper.make_node("Cast", ["x"], ["xf"], to=1, name="cast")
    proto.graph.node[0].input[0] = "xf"
    proto.graph.node.insert(0, cast)
    assert infer(inspector.load(save(proto)), JUDGED) is None


def test_gray_model_and_no_images_give_no_answer(save):
    gray = builders.model([helper.make_node("Conv", ["x", "w"], ["y"], name="conv")],
                          [builders.image_input(shape=(1, 1, 8, 8))], [builders.out("y")],
                          [numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "w")])
    assert infer(inspector.load(save(gray, "gray.onnx")), JUDGED) is None
    assert infer(inspector.load(save(batchnorm_model("tf"))), []) is None


# ------------------------------------------------------------------ real models

def _trained(name):
    try:
        return trained.model(name)
    except pytest.skip.Exception:
        if os.environ.get("INSPECTOR_REQUIRE_MODELS") == "1":
            pytest.fail(f"{name} is missing and INSPECTOR_REQUIRE_MODELS=1")
        raise


# The package's own preprocessing (manifest, read from its code) where the model has a
# BatchNormalization after its first conv: infer must find it.
WITH_BATCHNORM = ["ppocrv4_det", "ppocrv4_rec", "ppocr_cls"]


@pytest.mark.slow
@pytest.mark.parametrize("name", trained.names())
def test_trained_models_inferred_as_their_package_preprocesses_or_not_at_all(name):
    path, entry = _trained(name)
    model = inspector.load(path)
    found = infer(model, trained.photos(entry))
    if name in WITH_BATCHNORM:
        assert found is not None and found[0] == preset(entry["preprocess"]), found
    if found is not None and entry["preprocess"]:
        assert found[0] == preset(entry["preprocess"]), found


# conv (no bias, no brightness term) -> Relu -> GlobalAveragePool -> Flatten -> Gemm: 5 class scores
def classifier_model(trained_with: str, seed: int = 9):
    """A classifier whose scores spread by about 2 on the training photos under ``trained_with``; nothing
    in it depends on the input's offset or has a bias, so only its confidence reacts to the scale."""
    w = dc_filters(seed)
    w = w - w.mean(axis=(2, 3), keepdims=True)
    features = np.maximum(numpy_conv(nchw(photos(12, seed=300), trained_with), w), 0).mean(axis=(2, 3))
    r = builders.rng(seed + 1)
    head = r.normal(0, 1, (5, 16))
    logits = features @ head.T
    head *= 2 / logits.std()
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu1"),
             helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "head"], ["y"], name="fc", transB=1)]
    inits = [numpy_helper.from_array(w.astype(np.float32), "w"), numpy_helper.from_array(head.astype(np.float32), "head")]
    output = helper.make_tensor_value_info("y", 1, ["N", 5])
    return builders.model(nodes, [builders.image_input(shape=("N", 3, SIZE, SIZE))], [output], inits)


def test_classifier_saturating_under_a_preset_rules_it_out_but_confidence_alone_decides_nothing(save):
    """Under the 0..255 presets the scores of a network trained on 0..1 pixels blow up (probability 1
    on every image): ruled out (torch's 4.5x too, here). Between what is left only the scale differs,
    and a larger scale always looks more confident, so confidence does not choose among them: None."""
    proto = classifier_model("raw")
    model = inspector.load(save(proto))
    evidence = scores(model, JUDGED)
    assert evidence["classifier"]
    figures = evidence["candidates"]
    scores_of = {}
    for name in CANDIDATES:
        logits = numpy_conv(nchw(JUDGED[:4], name), numpy_helper.to_array(proto.graph.initializer[0]))
        scores_of[name] = np.maximum(logits, 0).mean(axis=(2, 3)) @ numpy_helper.to_array(proto.graph.initializer[1]).T
        probs = np.exp(scores_of[name] - scores_of[name].max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        assert figures[name]["saturated"] == pytest.approx(np.mean(probs.max(axis=1) >= 1 - 1e-6))
    assert figures["caffe"]["saturated"] == 1 and figures["bgr255"]["saturated"] == 1
    assert figures["raw"]["saturated"] == 0
    assert infer(model, JUDGED) is None


@pytest.mark.slow
def test_wild_models_never_get_a_wrong_scale():
    """On the wild corpus (whatever of it is fetched: `make test` fetches a subset), against each package's
    own preprocessing: a BatchNormalization match is exactly right, any other pick at least of the right
    scale (caffe for bgr255, the input's mean not told apart, is the one known miss: docs/audit.md)."""
    folder = os.path.join(os.path.dirname(trained.ROOT), "wild")
    manifest = os.path.join(folder, "manifest.json")
    if not os.path.exists(manifest):
        message = "the wild corpus is not fetched (run `make models-wild`)"
        if os.environ.get("INSPECTOR_REQUIRE_MODELS") == "1":
            pytest.fail(message + "; INSPECTOR_REQUIRE_MODELS=1 requires it")
        pytest.skip(message)
    bench = builders.bench_module("infer_preprocess.py", "bench_infer_preprocess")
    import json

    with open(manifest) as handle:
        entries = json.load(handle)["files"]
    checked = 0
    for key, expected in bench.WILD_PRESETS.items():
        path = os.path.join(folder, key)
        if expected is None or key not in entries or not os.path.exists(path):
            continue
        photos_of = [os.path.join(folder, "photos", p) for p in entries[key].get("photos", [])]
        found = infer(inspector.load(path), [p for p in photos_of if os.path.exists(p)])
        checked += 1
        if found is None:
            continue
        truth = preset(expected.split(" ")[0])
        if "BatchNormalization" in found[1]:
            assert found[0].mode == truth.mode, (key, found)
        else:
            assert (found[0].scale / found[0].std[0]) == pytest.approx(truth.scale / truth.std[0], rel=0.01) \
                or found[0].mode == truth.mode, (key, found)
    if not checked:
        pytest.skip("no wild model with a known preprocessing is fetched")


# ------------------------------------------------------------------ wired into every command's resolver

def test_commands_run_with_the_inferred_preprocessing_and_say_so(save, tmp_path, capsys):
    """`inspector maps MODEL IMAGE` with no flags on a file that says nothing: the resolver infers 'caffe'
    from the BatchNormalization, prints why, records the source, and feeds exactly caffe's pixels
    (checked against onnxruntime on the unmodified model fed NumPy's caffe transform)."""
    import json

    import onnxruntime as ort
    from PIL import Image

    from inspector import cli

    path = save(batchnorm_model("caffe"))
    images = []
    for i, pixels in enumerate(JUDGED):
        images.append(str(tmp_path / f"p{i}.png"))
        Image.fromarray(pixels).save(images[-1])
    npz = tmp_path / "maps.npz"
    code = cli.main(["maps", path, images[0], "--no-png", "--npz", str(npz), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "inferred 'caffe'" in err and "guessed" not in err
    model = inspector.load(path)
    layer = model.layers[0]
    feeding = model.feeding(images=images[:1])
    assert feeding.preprocess_source == "inferred" and feeding.preprocess == preset("caffe")
    # The reference: caffe by hand (BGR, ImageNet means subtracted, 0..255), the tensor as a graph output.
    bgr = JUDGED[0][..., ::-1].astype(np.float32) - np.float32([103.939, 116.779, 123.68])
    x = np.ascontiguousarray(bgr.transpose(2, 0, 1)[None])
    import onnx

    proto = onnx.load(path)
    proto.graph.output.append(helper.make_tensor_value_info(layer.output, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run([layer.output], {session.get_inputs()[0].name: x})[0][0]
    np.testing.assert_allclose(np.load(npz)[layer.name], expected, rtol=1e-4, atol=1e-4)
    # audit's JSON records the source, and its schema admits it.
    code = cli.main(["audit", path, *images, "--json", str(tmp_path / "a.json"), "--quiet"])
    capsys.readouterr()
    assert code in (0, 1)
    assert json.loads((tmp_path / "a.json").read_text())["images"]["preprocess_source"] == "inferred"
