"""Class activation maps without gradients, from forward runs of any ONNX model.

Public:
    compute(model, image, method, layer, target, ...) -> CamResult   (the pipeline)
    CamResult                                                     (cam (H, W) in [0, 1], target, score, picture)
    METHODS                                                       ({name: method}: scorecam, eigencam, ablationcam)
    method(name)                                                  (a method by name; InspectorError if unknown)

Each method is a small ``CamMethod`` overriding one hook (``methods.py``); the shared
pipeline is ``pipeline.py``; ``targets.py`` reads ``--target``; ``cut.py`` cuts the graph
after the target layer for AblationCAM; ``picture.py`` draws; ``html.py`` is the report's section.
"""

from .methods import METHODS, CamMethod, method

__all__ = ["compute", "CamResult", "METHODS", "CamMethod", "method", "default_layer"]


def __getattr__(name):  # the pipeline (numpy, onnx) loads on first use, not when the CLI parses
    if name in ("compute", "CamResult", "default_layer"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'inspector.cam' has no attribute {name!r}")
