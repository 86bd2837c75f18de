"""Constants that the graph computes from its stored tensors: what exporters put between a weight and its conv.

Int8 weight-only exports store ``Cast(int8) -> Mul(scale)``, onnxruntime's quantizer ``DequantizeLinear``,
paddle2onnx and torch ``Reshape``/``Unsqueeze`` of a bias, tf2onnx ``Identity``. The tracer reads such a
tensor as the float values the conv sees, so that pruning works on it as on an initializer; an edit then
writes the new values as an initializer in its place (the chain that computed it goes when nothing else
reads it).
"""

from __future__ import annotations

import numpy as np

from .values import _attr

OPS = {"Identity", "Cast", "DequantizeLinear", "Mul", "Div", "Add", "Sub", "Reshape", "Unsqueeze", "Squeeze",
       "Flatten"}
_ARITHMETIC = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}


def evaluate(node, inputs: list) -> np.ndarray | None:
    """The output of ``node`` (one of OPS) on constant ``inputs`` (None for an empty input), or None where
    the node is outside what is read here (block-wise quantization, a shape that does not fit)."""
    op = node.op_type
    x = inputs[0] if inputs else None
    try:
        if op == "Identity":
            return x
        if op == "Cast":
            import onnx

            return x.astype(onnx.helper.tensor_dtype_to_np_dtype(int(_attr(node, "to", 1))))
        if op == "DequantizeLinear":
            from ..graph import dequantize

            if int(_attr(node, "block_size", 0) or 0):
                return None
            zero = inputs[2] if len(inputs) > 2 else None
            scale = np.asarray(inputs[1])
            out = dequantize(x, scale, zero, int(_attr(node, "axis", 1)))
            return out.astype(scale.dtype, copy=False)
        if op in _ARITHMETIC:
            a, b = np.asarray(inputs[0]), np.asarray(inputs[1])
            if op == "Div" and np.issubdtype(a.dtype, np.integer):
                return np.trunc(a / b).astype(a.dtype)  # ONNX integer Div truncates
            with np.errstate(all="ignore"):
                return np.asarray(_ARITHMETIC[op](a, b)).astype(a.dtype, copy=False)
        if op == "Reshape":
            shape = [int(d) for d in np.asarray(inputs[1]).reshape(-1)]
            if not _attr(node, "allowzero", 0):
                shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
            return x.reshape(shape)
        if op in ("Unsqueeze", "Squeeze"):
            axes = inputs[1] if len(inputs) > 1 and inputs[1] is not None else _attr(node, "axes", None)
            if op == "Squeeze":
                return np.squeeze(x) if axes is None else np.squeeze(x, axis=tuple(int(a) for a in np.ravel(axes)))
            out = x
            rank = x.ndim + len(np.ravel(axes))
            for axis in sorted(int(a) % rank for a in np.ravel(axes)):
                out = np.expand_dims(out, axis)
            return out
        if op == "Flatten":
            axis = int(_attr(node, "axis", 1)) % max(x.ndim, 1) if x.ndim else 0
            return x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)
    except (ValueError, TypeError, IndexError):
        return None
    return None
