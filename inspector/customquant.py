"""QONNX/Brevitas `Quant` nodes read as the standard ONNX arithmetic they define.

Brevitas and QONNX export fake quantization as a custom-domain node `Quant(x, scale, zero_point,
bit_width)` (domain onnx.brevitas, qonnx.custom_op.general or finn.custom_op.general) that onnxruntime
has no kernel for, so no command could run such a model. The QONNX specification fixes its meaning:

    q = clip(x / scale + zero_point, min_int, max_int), rounded by rounding_mode
    y = (q - zero_point) * scale
    min_int = -2^(b-1) + narrow if signed else 0;  max_int = 2^(b-1) - 1 if signed else 2^b - 1 - narrow

(the bounds are integers, so clipping before or after rounding is the same). When a model is opened,
a Quant of constants (the weights) is folded into an initializer, so the conv's filters are readable as
the model uses them; a Quant of activations becomes Div, Add, Clip, Round (Floor, Ceil), Sub, Mul.
A Quant this cannot express exactly (bounds or bit width computed at run time, 1-bit bipolar, a
rounding mode without an ONNX op, a non-float32 tensor, an ai.onnx opset before 11) stays, and
onnxruntime's refusal of it names the node.
"""

from __future__ import annotations

import numpy as np

DOMAINS = {"onnx.brevitas", "qonnx.custom_op.general", "finn.custom_op.general"}
ROUNDING = {"ROUND": "Round", "HALF_EVEN": "Round", "FLOOR": "Floor", "CEIL": "Ceil"}
_NUMPY_ROUNDING = {"Round": np.round, "Floor": np.floor, "Ceil": np.ceil}


def _attributes(node) -> dict:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _bounds(bits: float, signed: bool, narrow: bool) -> tuple[float, float] | None:
    if bits != int(bits) or not 2 <= bits <= 32:
        return None
    bits = int(bits)
    if signed:
        return -(2.0 ** (bits - 1)) + narrow, 2.0 ** (bits - 1) - 1
    return 0.0, 2.0 ** bits - 1 - narrow


def _plan(node, constant) -> tuple[str, float, float] | None:
    """(ONNX rounding op, min_int, max_int) of a Quant node this can lower, or None."""
    if node.op_type != "Quant" or node.domain not in DOMAINS or len(node.input) != 4 or len(node.output) != 1:
        return None
    attributes = _attributes(node)
    mode = attributes.get("rounding_mode", b"ROUND")
    rounding = ROUNDING.get((mode.decode() if isinstance(mode, bytes) else str(mode)).upper())
    values = [constant(name) for name in node.input[1:]]
    if rounding is None or any(v is None for v in values):
        return None
    scale, zero, bits = values
    if scale.dtype != np.float32 or zero.dtype != np.float32 or bits.size != 1:
        return None
    bounds = _bounds(float(bits.reshape(())), bool(attributes.get("signed", 1)), bool(attributes.get("narrow", 0)))
    if bounds is None:
        return None
    return rounding, *bounds


def fake_quantize(x: np.ndarray, scale: np.ndarray, zero: np.ndarray, rounding: str, low: float,
                  high: float) -> np.ndarray:
    """The Quant node's output, in float32 as onnxruntime computes the lowered nodes."""
    q = np.clip(x.astype(np.float32) / scale + zero, np.float32(low), np.float32(high))
    return ((_NUMPY_ROUNDING[rounding](q) - zero) * scale).astype(np.float32)


def lower(onnx_file) -> int:
    """Rewrite the file's light model in place; returns how many Quant nodes were lowered."""
    from onnx import helper, numpy_helper

    model = onnx_file.model
    graph = model.graph
    if not any(node.domain in DOMAINS for node in graph.node):
        return 0
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 11:  # Clip with tensor bounds and Round need opset 11
        return 0
    initializers = onnx_file.initializers
    cache: dict[str, np.ndarray] = {}

    def constant(name: str) -> np.ndarray | None:
        if name not in initializers:
            return None
        if name not in cache:
            cache[name] = np.asarray(onnx_file.tensor_array(initializers[name]))
        return cache[name]

    taken = {name for node in graph.node for name in (*node.input, *node.output)} | set(initializers)

    def fresh(base: str) -> str:
        name, number = base, 0
        while name in taken:
            number += 1
            name = f"{base}_{number}"
        taken.add(name)
        return name

    nodes, lowered = [], 0
    for node in graph.node:
        plan = _plan(node, constant)
        x = node.input[0] if plan else None
        if plan is None or (x in initializers and constant(x).dtype != np.float32):
            nodes.append(node)
            continue
        rounding, low, high = plan
        scale_name, zero_name = node.input[1], node.input[2]
        out = node.output[0]
        if x in initializers:  # weights: folded, so every reader sees the values the model computes with
            value = fake_quantize(constant(x), constant(scale_name), constant(zero_name), rounding, low, high)
            tensor = numpy_helper.from_array(value, out)
            graph.initializer.append(tensor)
            initializers[out] = graph.initializer[-1]
        else:
            stem = (node.name or out) + "/quant"
            low_name, high_name = fresh(stem + "_min"), fresh(stem + "_max")
            for name, bound in ((low_name, low), (high_name, high)):
                graph.initializer.append(numpy_helper.from_array(np.array(bound, np.float32), name))
                initializers[name] = graph.initializer[-1]
            scaled, shifted, clipped, rounded, centred = (fresh(f"{stem}_{step}") for step in
                                                         ("scaled", "shifted", "clipped", "rounded", "centred"))
            nodes += [helper.make_node("Div", [x, scale_name], [scaled], name=fresh(stem + "/Div")),
                      helper.make_node("Add", [scaled, zero_name], [shifted], name=fresh(stem + "/Add")),
                      helper.make_node("Clip", [shifted, low_name, high_name], [clipped], name=fresh(stem + "/Clip")),
                      helper.make_node(rounding, [clipped], [rounded], name=fresh(stem + "/" + rounding)),
                      helper.make_node("Sub", [rounded, zero_name], [centred], name=fresh(stem + "/Sub")),
                      helper.make_node("Mul", [centred, scale_name], [out], name=fresh(stem + "/Mul"))]
        lowered += 1
    if not lowered:
        return 0
    del graph.node[:]
    graph.node.extend(nodes)
    used = {node.domain for node in graph.node}
    kept = [o for o in model.opset_import if o.domain not in DOMAINS or o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    # The float weights that were folded are read by nothing now: they go, or they would count as
    # parameters twice.
    read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    unread = [t for t in graph.initializer if t.name not in read]
    for tensor in unread:
        del initializers[tensor.name]
        graph.initializer.remove(tensor)
    gone = {t.name for t in unread}
    for value in [v for v in graph.input if v.name in gone]:
        graph.input.remove(value)
    return lowered
