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
