"""TensorFlow and torch in one process: a notebook that used one framework can still convert with the other.

Run in a child interpreter: the failure this guards against is a segmentation fault (triton's LLVM loaded
after TensorFlow's), which would take pytest down with it."""

import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("tensorflow")

pytestmark = pytest.mark.torch
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TORCH_AFTER_TF = '''
import sys
import tensorflow as tf
import torch
from converters import api

tf.constant(1.0) + 1  # TensorFlow really in use


def make():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(4, 2)).eval()


result = api.convert_torch(make, (1, 3, 12, 12), sys.argv[1], check=True)
assert result.parity and all(d.relative < 1e-4 for d in result.parity), result.parity
print("converted", len(result.parity))
'''

TF_AFTER_TORCH = '''
import sys
import torch
from converters import api


def make():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)).eval()


api.convert_torch(make, (1, 3, 12, 12), sys.argv[1], check=True)
import keras

inputs = keras.Input((12, 12, 3))
model = keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs))
result = api.convert_keras_model(model, sys.argv[2], check=True)
print("converted", len(result.parity))
'''


def _run(code: str, *args) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=ROOT)


def test_torch_conversion_after_tensorflow_in_one_process(tmp_path):
    done = _run(TORCH_AFTER_TF, str(tmp_path / "t.onnx"))
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])  # -11 was the segmentation fault
    assert "converted" in done.stdout and (tmp_path / "t.onnx").is_file()


def test_keras_conversion_after_torch_in_one_process(tmp_path):
    done = _run(TF_AFTER_TORCH, str(tmp_path / "t.onnx"), str(tmp_path / "k.onnx"))
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert "converted" in done.stdout and (tmp_path / "k.onnx").is_file()
