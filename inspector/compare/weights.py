"""How much each filter's weights moved between two models, so that "the weights moved" and "the
activations moved" can be told apart.

Both sides are read as float32 in ONNX order (QDQ and QLinearConv weights dequantized, see
``Graph.weights``), per filter with its bias: the relative change ``||w_b - w_a|| / ||w_a||`` and
the cosine between ``w_a`` and ``w_b``; over the layer the same two figures and the weights' SQNR.
"""

from __future__ import annotations

import math

import numpy as np

from .metrics import db_json, sqnr_db

WORST_FILTERS = 5


def _flat(weights: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    weights = np.asarray(weights, np.float64)
    flat = weights.reshape(weights.shape[0], -1)
    if bias is not None:
        flat = np.concatenate([flat, np.asarray(bias, np.float64).reshape(flat.shape[0], 1)], axis=1)
    return flat


def weight_change(weights_a: np.ndarray, bias_a: np.ndarray | None, weights_b: np.ndarray,
                  bias_b: np.ndarray | None) -> dict:
    """Figures for one layer: filters first on both sides (``Model.filters_and_bias``)."""
    if (bias_a is None) != (bias_b is None):  # one export folded a zero bias away: compare against zeros
        bias_a = np.zeros(weights_a.shape[0], np.float32) if bias_a is None else bias_a
        bias_b = np.zeros(weights_b.shape[0], np.float32) if bias_b is None else bias_b
    a, b = _flat(weights_a, bias_a), _flat(weights_b, bias_b)
    if a.shape != b.shape:
        return {"comparable": False, "reason": f"weights {tuple(weights_a.shape)} against {tuple(weights_b.shape)}"}
    d = b - a
    norm_a = np.sqrt(np.square(a).sum(axis=1))
    norm_b = np.sqrt(np.square(b).sum(axis=1))
    norm_d = np.sqrt(np.square(d).sum(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(norm_a > 0, norm_d / norm_a, np.where(norm_d > 0, np.inf, 0.0))
        cosine = np.where((norm_a > 0) & (norm_b > 0), (a * b).sum(axis=1) / (norm_a * norm_b),
                          np.where((norm_a == 0) & (norm_b == 0), 1.0, 0.0))
    signal, error = float(np.square(a).sum()), float(np.square(d).sum())
    order = np.argsort(-np.nan_to_num(relative, nan=np.inf), kind="stable")[:WORST_FILTERS]
    total = math.sqrt(signal)
    return {
        "comparable": True,
        "exact": error == 0.0,
        "relative": _number(math.sqrt(error) / total if total > 0 else (0.0 if error == 0 else math.inf)),
        "sqnr_db": db_json(sqnr_db(signal, error)),
        "max_filter_relative": _number(float(np.max(relative))) if len(relative) else None,
        "mean_filter_relative": _number(float(np.mean(relative))) if len(relative) else None,
        "min_filter_cosine": _number(float(np.min(cosine))) if len(cosine) else None,
        "worst_filters": [{"filter": int(i), "relative": _number(float(relative[i])),
                           "cosine": _number(float(cosine[i]))} for i in order if error > 0],
    }


def _number(value: float | None):
    if value is None:
        return None
    value = float(value)
    return round(value, 9) if math.isfinite(value) else None
