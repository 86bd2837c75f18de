"""External data with a second hard link is refused, as onnx (1.21+) refuses it; a single link is read."""

import os

from test_hostile import _external_model, assert_input_error, cli, commands, image  # noqa: F401

import inspector


def test_hardlinked_external_data_is_refused_before_any_read(tmp_path, image):
    path, _ = _external_model(tmp_path / "model")
    weights = tmp_path / "model" / "weights.bin"
    inspector.load(path).filters(0)  # one link: read as usual
    os.link(weights, tmp_path / "elsewhere.bin")  # the same file under a second name, outside the folder
    for args in commands(path, image, tmp_path / "out"):
        assert_input_error(*cli(*args)[::2], "hard link", "weights.bin")
    os.unlink(tmp_path / "elsewhere.bin")
    assert inspector.load(path).filters(0).shape[0] > 0


def test_a_hardlinked_model_file_itself_is_read(tmp_path, save):
    """A model's own weights are read through external references into the model file (weights stay
    in the file); the file the user named is not external data, whatever its link count."""
    import builders as b

    path = save(b.conv_relu_nchw()[0])
    os.link(path, tmp_path / "second_name.onnx")
    assert os.stat(path).st_nlink == 2
    model = inspector.load(path)
    assert model.filters(0).ndim == 4


def test_a_model_opened_through_a_symlink_is_read_where_it_lives(tmp_path, save, image):
    """A cache or a linked models/ folder holds the model elsewhere: its own weights (references into
    the file it really is) are not external data outside the link's folder (was refused, then rejected
    by onnxruntime's own path check); external data beside the link but not beside the file still is."""
    import numpy as np

    import builders as b

    real = tmp_path / "store"
    real.mkdir()
    m, weights = b.conv_relu_nchw(size=16)  # 8x3x3x3 weights: over the 1 KB inline limit
    path = save(m, "store/m.onnx")
    link_folder = tmp_path / "snapshot"
    link_folder.mkdir()
    os.symlink(path, link_folder / "model.onnx")
    linked = inspector.load(link_folder / "model.onnx")
    assert linked.name == "model"  # pictures are titled with the name the user gave
    # A random picture, so the maps depend on every weight read through the link (an all-zero one gave
    # relu(bias) whatever the weights); the reference is NumPy's convolution of the weights as built.
    pixels = b.rng(3).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    maps = linked.maps(pixels, [0], preprocess="raw")
    x = (pixels.astype(np.float32) / 255).transpose(2, 0, 1)[None]
    expected = b.relu(b.conv2d(x, weights["w1"], weights["b1"], pad=1))[0]
    np.testing.assert_allclose(maps[next(iter(maps))], expected, rtol=1e-4, atol=1e-4)
    code, out, err = cli("maps", link_folder / "model.onnx", image, "--preprocess", "raw", "-o", tmp_path / "out")
    assert code == 0, err
