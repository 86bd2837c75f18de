import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# torchvision (through torch._dynamo) crashes the interpreter when it is imported after
# TensorFlow (torch 2.14 wheel beside tensorflow-cpu); the keras tests load TensorFlow at
# collection, so torchvision goes first. One process converts one framework otherwise.
try:
    import torchvision  # noqa: F401
except Exception:
    pass


@pytest.fixture
def save(tmp_path):
    """save(model_proto, name='m.onnx') -> path of the model written to tmp_path."""
    import onnx

    def _save(m, name="m.onnx"):
        path = tmp_path / name
        onnx.save(m, str(path))
        return str(path)

    return _save
