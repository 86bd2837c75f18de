"""CUDA path: runs only where onnxruntime has a CUDA provider (the lent GPU machine), skipped elsewhere."""

import numpy as np
import onnxruntime as ort
import pytest

import builders as b
import inspector

pytestmark = pytest.mark.skipif("CUDAExecutionProvider" not in ort.get_available_providers(),
                                reason="no CUDAExecutionProvider in this onnxruntime")


def test_cuda_maps_match_cpu_and_run_on_cuda(save):
    m, _ = b.conv_relu_nchw(size=64)
    model = inspector.load(save(m))
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    cuda = model.session(device="cuda")
    assert cuda.provider == "CUDAExecutionProvider"
    on_gpu = cuda.run(x)
    on_cpu = model.session(device="cpu").run(x)
    for name, value in on_cpu.items():
        scale = float(np.abs(value).max())
        # cuDNN may use TF32 on Ampere and later: about 1e-3 relative.
        np.testing.assert_allclose(on_gpu[name], value, atol=2e-3 * scale)


def test_cli_device_cuda_reports_provider(save, tmp_path):
    import subprocess
    import sys

    from PIL import Image

    m, _ = b.conv_relu_nchw(size=32)
    path = save(m)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "black.png")
    result = subprocess.run([sys.executable, "-m", "inspector", "--verbose", "maps", path, str(tmp_path / "black.png"),
                             "--preprocess", "raw", "--device", "cuda", "--all", "-o", str(tmp_path / "o")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "CUDAExecutionProvider" in result.stderr


def _photos(tmp_path, count=9, size=40):
    return [b.random_photo(tmp_path / f"p{i}.png", size, size, seed=i) for i in range(count)]


def test_cuda_audit_gives_the_cpu_verdicts(save, tmp_path):
    """The audit's statistics on the GPU (reduced inside the graph there too) against the CPU's."""
    from inspector.audit import audit

    m, _ = b.conv_relu_nchw(size=40)
    model = inspector.load(save(m))
    photos = _photos(tmp_path)
    on_gpu = audit(model, photos, preprocess="raw", device="cuda", quiet=True)
    on_cpu = audit(model, photos, preprocess="raw", device="cpu", quiet=True)
    assert on_gpu.provider == "CUDAExecutionProvider" and on_cpu.provider == "CPUExecutionProvider"
    assert on_gpu.dead_fraction == on_cpu.dead_fraction and on_gpu.images == on_cpu.images == 9
    for gpu_layer, cpu_layer in zip(on_gpu.layers, on_cpu.layers):
        g, c = gpu_layer.activations, cpu_layer.activations
        np.testing.assert_array_equal(g.all_zero_channels(), c.all_zero_channels())
        np.testing.assert_allclose(g.channel_mean_abs(), c.channel_mean_abs(), rtol=2e-3,
                                   atol=2e-3 * float(c.channel_mean_abs().max()))


@pytest.mark.parametrize("method", ["scorecam", "ablationcam", "eigencam"])
def test_cuda_cam_matches_cpu(save, tmp_path, method):
    m, _ = b.conv_relu_nchw(size=40)
    model = inspector.load(save(m))
    photo = _photos(tmp_path, count=1)[0]
    target = None if method == "eigencam" else "y:mean"  # the tiny net has no class output
    on_gpu = model.cam(photo, method, target=target, preprocess="raw", device="cuda")
    on_cpu = model.cam(photo, method, target=target, preprocess="raw", device="cpu")
    assert on_gpu.provider == "CUDAExecutionProvider"
    assert np.corrcoef(on_gpu.cam.ravel(), on_cpu.cam.ravel())[0, 1] > 0.999
