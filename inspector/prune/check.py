"""Run the original and the pruned model on the same inputs and measure how far their outputs moved."""

from __future__ import annotations

import os

import numpy as np

from ..errors import InspectorError

# Exact pruning changes the summation order of float32 convs, nothing more.
EXACT_TOLERANCE = 1e-5


def _session(onnx_file=None, path: str | None = None):
    from ..execution import create_session

    if onnx_file is not None:  # the light model: onnxruntime reads the weights from the original file
        return create_session(onnx_file.serialized(), onnx_file.folder, device="cpu")[0]
    # By path: onnxruntime reads the file itself, without a second copy of it in a bytes object.
    return create_session(os.path.abspath(path), os.path.dirname(os.path.abspath(path)), device="cpu")[0]


def compare(onnx_file, pruned_path: str, batch: np.ndarray) -> dict:
    """Largest absolute and relative output difference over every model output, on CPU.

    Relative: the absolute difference over the largest magnitude of that
    output in the original model (a per-element ratio explodes near zero).
    """
    original = _session(onnx_file=onnx_file)
    pruned = _session(path=pruned_path)
    name = original.get_inputs()[0].name
    if len(original.get_inputs()) != 1:
        raise InspectorError("--check feeds models with one input only")
    # One image at a time: many detectors fix their batch dimension at 1.
    reference, candidate = [], []
    for sample in batch:
        reference.append(_run(original, name, sample[None], "the original model"))
        got = dict(zip([o.name for o in pruned.get_outputs()], _run(pruned, name, sample[None], "the pruned model")))
        candidate.append(got)
    outputs = {}
    for position, meta in enumerate(original.get_outputs()):
        diff = scale = 0.0
        for ref_all, got_all in zip(reference, candidate):
            ref, got = ref_all[position], got_all.get(meta.name)
            if got is None or got.shape != ref.shape:
                raise InspectorError(f"the pruned model's output '{meta.name}' is missing or has another shape")
            if ref.size:
                ref64, got64 = np.asarray(ref, np.float64), np.asarray(got, np.float64)
                diff = max(diff, float(np.max(np.abs(ref64 - got64))))
                scale = max(scale, float(np.max(np.abs(ref64))))
        outputs[meta.name] = {"max_abs_diff": diff, "max_rel_diff": diff / scale if scale > 0 else diff,
                              "max_abs_output": scale}
    return {
        "inputs": int(batch.shape[0]),
        "outputs": outputs,
        "max_abs_diff": max((o["max_abs_diff"] for o in outputs.values()), default=0.0),
        "max_rel_diff": max((o["max_rel_diff"] for o in outputs.values()), default=0.0),
    }


def _run(session, name: str, x: np.ndarray, which: str):
    try:
        return session.run(None, {name: x})
    except Exception as exc:  # onnxruntime's own error types
        from ..execution import _first_line

        raise InspectorError(f"onnxruntime cannot run {which} on the --check images ({_first_line(exc)}); "
                             "is the input size right (--size HxW)?") from None
