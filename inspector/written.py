"""Activations written out as elementwise arithmetic, recognized by what they compute.

Exporters spell GELU and Swish-with-a-multiplier in many orders: Paddle and torch.onnx write
``Mul(Mul(x, Add(Erf(Div(x, 1.41421)), 1)), 0.5)``, TensorFlow ``Mul(Mul(0.5, x), Add(1, Erf(...)))``, the
tanh approximation ``0.5*x*(1+tanh(0.79788*(x+0.044715*x^3)))`` with ``Pow(x, 3)`` or ``x*x*x``, Paddle's
Swish ``Mul(x, Sigmoid(Mul(x, beta)))``. Rather than one pattern per spelling, ``recognize`` collects the
few elementwise nodes that read only the tensor, each other and constants that hold one number, up to the
first point where exactly one of their tensors is read outside them (or is a graph output), and evaluates
that formula on a grid of values in float64. It is a GELU (exact or tanh approximation) or a
``x * sigmoid(beta * x)`` with ``beta > 0`` (Swish; SiLU when ``beta`` is 1) only when it matches that
function to 1e-5 everywhere on the grid; so the constants must really be the expected ones. Anything else,
an intermediate read elsewhere, a per-channel constant or an op outside ``OPS`` is left alone.

Public: ``recognize`` (used by ``inspector.graph``) and ``name_of`` (the function test alone).
"""

from __future__ import annotations

import math

import numpy as np

# The elementwise ops a written-out GELU or Swish is made of; one float64 NumPy function each.
OPS = {
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide, "Pow": np.power,
    "Erf": np.vectorize(math.erf, otypes=[np.float64]), "Tanh": np.tanh,
    "Sigmoid": lambda v: 1.0 / (1.0 + np.exp(-v)), "Neg": np.negative, "Identity": lambda v: v,
}
ARITY = {"Erf": 1, "Tanh": 1, "Sigmoid": 1, "Neg": 1, "Identity": 1}
MAX_NODES = 12  # the longest spelling (tanh GELU with x*x*x) takes 9
TOLERANCE = 1e-5  # |f - reference| <= TOLERANCE * (1 + |reference|); tanh GELU is 4.7e-4 off the exact one

GRID = np.concatenate([np.linspace(-8.0, 8.0, 321), [-0.3, -0.01, 0.01, 0.3, 12.0, -12.0]])


def _gelu(v: np.ndarray) -> np.ndarray:
    return 0.5 * v * (1.0 + OPS["Erf"](v / math.sqrt(2.0)))


def _gelu_tanh(v: np.ndarray) -> np.ndarray:
    return 0.5 * v * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v ** 3)))


def _close(values: np.ndarray, reference: np.ndarray) -> bool:
    return bool(np.all(np.abs(values - reference) <= TOLERANCE * (1.0 + np.abs(reference))))


def name_of(function) -> str | None:
    """The activation a float64 function of one array computes: "Gelu", "Swish" or None."""
    with np.errstate(all="ignore"):
        values = np.asarray(function(GRID), dtype=np.float64)
        if values.shape != GRID.shape or not np.all(np.isfinite(values)):
            return None
        if _close(values, _gelu(GRID)) or _close(values, _gelu_tanh(GRID)):
            return "Gelu"
        # x * sigmoid(beta * x): beta from the value at x = 1/2, where the sigmoid is far from saturated
        # for any beta under about 60; then the whole grid must agree.
        gate = float(np.asarray(function(np.array([0.5])), dtype=np.float64)[0]) / 0.5
        if not 0.5 < gate < 1.0:  # beta > 0 (beta = 0 is x / 2, a scale; beta < 0 is no Swish)
            return None
        beta = math.log(gate / (1.0 - gate)) / 0.5
        if _close(values, GRID / (1.0 + np.exp(-beta * GRID))):
            return "Swish"
    return None


def recognize(graph, tensor: str) -> tuple[str, str] | None:
    """(tensor after the activation, its name) when ``tensor`` feeds only a written-out GELU or Swish in
    ``graph`` (an ``inspector.graph.Graph``), else None."""
    users = graph.consumers.get(tensor, [])
    if len(users) < 2 or tensor in graph.graph_outputs:  # every spelling reads x at least twice
        return None
    admitted: list[int] = []
    inside = {tensor}
    constants: dict[str, float] = {}
    while len(admitted) < MAX_NODES:
        step = _next_node(graph, inside, admitted, constants)
        if step is None:
            return None
        admitted.append(step)
        inside.add(graph.nodes[step].output[0])
        sink = _single_exit(graph, tensor, inside, admitted)
        if sink is None:
            continue
        name = name_of(lambda v: _evaluate(graph, tensor, admitted, constants, v)[sink])
        if name is not None:
            return sink, name
    return None


def _next_node(graph, inside: set[str], admitted: list[int], constants: dict[str, float]) -> int | None:
    """The first node (in graph order) that reads a tensor inside and, besides those, only one-number
    constants, with an op of ``OPS`` and one output."""
    taken = set(admitted)
    candidates = sorted({i for t in inside for i in graph.consumers.get(t, []) if i not in taken})
    for i in candidates:
        node = graph.nodes[i]
        if node.op_type not in OPS or node.domain not in ("", "ai.onnx") or len(node.output) != 1:
            continue
        if len(node.input) != ARITY.get(node.op_type, 2) or not all(node.input) or not node.output[0]:
            continue
        if node.op_type == "Pow" and node.input[1] in inside:
            continue  # x ** x is no activation of these
        values = {}
        for operand in node.input:
            if operand in inside:
                continue
            value = constants.get(operand)
            if value is None:
                value = graph.uniform_value(operand)
            if value is None:
                break
            values[operand] = value
        else:
            constants.update(values)
            return i
    return None


def _single_exit(graph, tensor: str, inside: set[str], admitted: list[int]) -> str | None:
    """The one tensor of the admitted nodes read outside them or given as a graph output, when every other
    (``tensor`` included) is read by admitted nodes only; else None."""
    taken = set(admitted)
    exits = []
    for t in inside:
        users = graph.consumers.get(t, [])
        if t in graph.graph_outputs or not users or any(u not in taken for u in users):
            exits.append(t)
    if len(exits) != 1 or exits[0] == tensor:
        return None
    return exits[0]


def _evaluate(graph, tensor: str, admitted: list[int], constants: dict[str, float], v: np.ndarray) -> dict:
    values = {tensor: np.asarray(v, dtype=np.float64)}
    for i in admitted:  # admitted in an order where every input is known
        node = graph.nodes[i]
        operands = [values[t] if t in values else np.float64(constants[t]) for t in node.input]
        values[node.output[0]] = np.asarray(OPS[node.op_type](*operands), dtype=np.float64)
    return values
