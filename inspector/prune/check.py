"""Run the original and the pruned model on the same inputs and measure how far their outputs moved."""

from __future__ import annotations

import os
from typing import Iterable

import numpy as np

from ..errors import InspectorError

# Exact pruning changes the summation order of float32 convs, nothing more.
EXACT_TOLERANCE = 1e-5
# A deep model's own float32 noise can pass 1e-5 (two paddle2onnx text detectors: 1.6e-5 after removing only
# filters whose weights are below float32 resolution). Where the exact check fails, the original is run
# against itself with other conv kernels; pruning within this many times that noise is still exact.
NOISE_FACTOR = 4.0


def _session(onnx_file=None, path: str | None = None, relayout: bool = True):
    from ..execution import create_session

    if onnx_file is not None:  # the light model: onnxruntime reads the weights from the original file
        return create_session(onnx_file.serialized(), onnx_file.folder, device="cpu", relayout=relayout)[0]
    # By path: onnxruntime reads the file itself, without a second copy of it in a bytes object.
    return create_session(os.path.abspath(path), os.path.dirname(os.path.abspath(path)), device="cpu")[0]


def compare(onnx_file, pruned_path: str, samples: Iterable[np.ndarray], total: int | None = None,
            quiet: bool = False, feeds=None) -> dict:
    """Largest absolute and relative output difference over every model output, on CPU.

    ``samples``: inputs of one image each, in the model's layout (a batch, or a
    generator that loads them one at a time, so memory does not grow with their
    number). Relative: the absolute difference over the largest magnitude of that
    output in the original model (a per-element ratio explodes near zero).
    ``feeds``: image batch -> onnxruntime feeds (``Model.feeds``: a fixed batch filled, other inputs fed);
    without it the model must take the image alone.
    """
    return _differences(_session(onnx_file=onnx_file), _session(path=pruned_path), "the pruned model",
                        samples, total, quiet, feeds, "check")


def noise_floor(onnx_file, samples: Iterable[np.ndarray], total: int | None = None, quiet: bool = False,
                feeds=None) -> float:
    """The original model against itself, run without onnxruntime's NCHWc relayout (other conv kernels,
    another summation order): the largest relative output difference that float32 alone makes on these
    inputs, i.e. what any exact rewrite of this model may show."""
    return _differences(_session(onnx_file=onnx_file), _session(onnx_file=onnx_file, relayout=False),
                        "the original model", samples, total, quiet, feeds, "noise")["max_rel_diff"]


def _differences(original, other, which: str, samples, total, quiet, feeds, label) -> dict:
    from ..progress import progress

    if feeds is None:
        if len(original.get_inputs()) != 1:
            raise InspectorError("--check feeds models with one input only")
        name = original.get_inputs()[0].name

        def feeds(x):
            return {name: x}
    metas = original.get_outputs()
    diff = [0.0] * len(metas)
    scale = [0.0] * len(metas)
    count = 0
    # One image at a time: many detectors fix their batch dimension at 1.
    for sample in progress(samples, total=total, desc=label, unit="image", quiet=quiet):
        fed = feeds(sample[None])
        reference = _run(original, fed, "the original model")
        got = dict(zip([o.name for o in other.get_outputs()], _run(other, fed, which)))
        for position, meta in enumerate(metas):
            ref, new = reference[position], got.get(meta.name)
            if new is None or new.shape != ref.shape:
                raise InspectorError(f"{which}'s output '{meta.name}' is missing or has another shape")
            if ref.size:
                ref64 = np.asarray(ref, np.float64)
                diff[position] = max(diff[position], float(np.max(np.abs(ref64 - new))))
                scale[position] = max(scale[position], float(np.max(np.abs(ref64))))
        count += 1
    outputs = {meta.name: {"max_abs_diff": d, "max_rel_diff": d / m if m > 0 else d, "max_abs_output": m}
               for meta, d, m in zip(metas, diff, scale)}
    return {
        "inputs": count,
        "outputs": outputs,
        "max_abs_diff": max((o["max_abs_diff"] for o in outputs.values()), default=0.0),
        "max_rel_diff": max((o["max_rel_diff"] for o in outputs.values()), default=0.0),
    }


def _run(session, feeds: dict, which: str):
    try:
        return session.run(None, feeds)
    except Exception as exc:  # onnxruntime's own error types
        from ..execution import _first_line

        raise InspectorError(f"onnxruntime cannot run {which} on the --check images ({_first_line(exc)}); "
                             "is the input size right (--size HxW)?") from None
