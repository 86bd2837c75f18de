"""What a constant channel becomes through an elementwise op.

A filter with zero weights outputs its bias everywhere: a constant channel. The
tracer follows that constant through activations, BatchNormalization and
per-channel affine steps to the layers that consume it. ``NaN`` stands for
"not a known constant" (a live channel); every function here maps NaN to NaN.
"""

from __future__ import annotations

import math

import numpy as np


def _attr(node, name: str, default):
    for attr in node.attribute:
        if attr.name == name:
            if attr.type == attr.FLOAT:
                return float(attr.f)
            if attr.type == attr.INT:
                return int(attr.i)
            if attr.type == attr.STRING:
                return attr.s.decode()
            if attr.type == attr.INTS:
                return list(attr.ints)
    return default


def _sigmoid(v):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-v))


def _softplus(v):
    with np.errstate(over="ignore"):
        return np.where(v > 30, v, np.log1p(np.exp(np.minimum(v, 30))))


_erf = np.vectorize(lambda x: math.erf(x) if not math.isnan(x) else math.nan, otypes=[np.float64])


def _gelu(node, v):
    if _attr(node, "approximate", "none") == "tanh":
        return 0.5 * v * (1 + np.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3)))
    return 0.5 * v * (1 + _erf(v / math.sqrt(2)))


def _selu(node, v):
    alpha = _attr(node, "alpha", 1.67326319217681884765625)
    gamma = _attr(node, "gamma", 1.05070102214813232421875)
    return gamma * np.where(v > 0, v, alpha * (np.exp(np.minimum(v, 0)) - 1))


# Unary elementwise ops: channel layout unchanged, constant channels mapped by the function.
UNARY = {
    "Relu": lambda n, v: np.where(np.isnan(v), v, np.maximum(v, 0)),
    "LeakyRelu": lambda n, v: np.where(v < 0, _attr(n, "alpha", 0.01) * v, v),
    "Sigmoid": lambda n, v: _sigmoid(v),
    "HardSigmoid": lambda n, v: np.clip(_attr(n, "alpha", 0.2) * v + _attr(n, "beta", 0.5), 0, 1),
    "HardSwish": lambda n, v: v * np.clip(v / 6 + 0.5, 0, 1),
    "Tanh": lambda n, v: np.tanh(v),
    "Elu": lambda n, v: np.where(v < 0, _attr(n, "alpha", 1.0) * (np.exp(np.minimum(v, 0)) - 1), v),
    "Selu": _selu,
    "Celu": lambda n, v: np.maximum(v, 0) + np.minimum(0, _attr(n, "alpha", 1.0) * (
        np.exp(np.minimum(v, 0) / _attr(n, "alpha", 1.0)) - 1)),
    "Softplus": lambda n, v: _softplus(v),
    "Softsign": lambda n, v: v / (1 + np.abs(v)),
    "Gelu": _gelu,
    "Mish": lambda n, v: v * np.tanh(_softplus(v)),
    "ThresholdedRelu": lambda n, v: np.where(v > _attr(n, "alpha", 1.0), v, np.where(np.isnan(v), v, 0.0)),
    "Identity": lambda n, v: v,
    "Dropout": lambda n, v: v,  # inference: identity
    "Cast": lambda n, v: v,
    "Neg": lambda n, v: -v,
    "Abs": lambda n, v: np.abs(v),
    "Erf": lambda n, v: _erf(v),
}


def clip(v, low, high):
    out = v
    if low is not None:
        out = np.where(np.isnan(out), out, np.maximum(out, low))
    if high is not None:
        out = np.where(np.isnan(out), out, np.minimum(out, high))
    return out


def binary(op: str, a, b):
    """Add/Sub/Mul/Div of two channel-value arrays (NaN unknown); 0 * anything is 0."""
    with np.errstate(all="ignore"):
        if op == "Add":
            return a + b
        if op == "Sub":
            return a - b
        if op == "Mul":
            out = a * b
            return np.where((a == 0) | (b == 0), 0.0, out)
        if op == "Div":
            out = a / b
            return np.where((a == 0) & ~np.isnan(b) & (b != 0), 0.0, out)
    raise ValueError(op)


def batch_norm(v, scale, bias, mean, var, epsilon: float):
    return (v - mean) / np.sqrt(var + epsilon) * scale + bias
