"""Where a layer's channels come from and go to, read from the graph: what makes the audit scale-free.

A ReLU (or linear, or LeakyRelu) network computes the same function when filter c of one conv is
multiplied by s > 0 (weights and bias) and the input-channel-c slice of the conv that reads it is
divided by s. The channel's values then change by s, so no verdict may rest on their raw magnitude.
What does not change is a channel's magnitude **times the norm of the weights that read it** (the
dormant rule's score). That needs the conv on the other side of the channel; this module finds it,
through ops that keep channel c in place and scale with it. (Near-duplicate filters need no images:
weights.py normalises each input channel's weights instead.)
"""

from __future__ import annotations

import numpy as np

# Ops that keep channel c at index c and are positively homogeneous (f(s x) = s f(x) for s > 0):
# a rescaling passes through them unchanged, so the conv beyond them is the one that reads the channel.
CHANNEL_PRESERVING = frozenset({"MaxPool", "AveragePool", "Pad", "Resize", "Upsample", "Identity", "Dropout",
                                "Relu", "LeakyRelu", "Transpose"})
RECTIFIERS = frozenset({"Relu"})
_MAX_STEPS = 16


def is_rectifier(model, layer) -> bool:
    """Relu, or Clip/Relu6 whose lower bound is 0 or more: outputs exactly zero wherever the input is <= 0."""
    if layer.activation in RECTIFIERS:
        return True
    if layer.activation != "Clip":
        return False
    graph = model.graph
    tensor = layer.output
    for _ in range(_MAX_STEPS):  # the Clip itself, or the Clip before layout Transposes
        i = graph.producer.get(tensor)
        if i is None:
            return False
        node = graph.nodes[i]
        if node.op_type == "Clip":
            return _clip_min(graph, node) >= 0
        if node.op_type != "Transpose":
            return False
        tensor = node.input[0]
    return False


def _clip_min(graph, node) -> float:
    low = next((a.f for a in node.attribute if a.name == "min"), None)  # opset < 11
    if len(node.input) > 1 and node.input[1]:
        try:
            low = float(np.asarray(graph.constant(node.input[1])).reshape(-1)[0])
        except Exception:  # noqa: BLE001 - a computed bound: not provably a rectifier
            return -np.inf
    return -np.inf if low is None else low


def outgoing_norms(model, layer, channels: int, filters_by_node: dict) -> np.ndarray | None:
    """Per channel of ``layer``'s shown output, the L2 norm of every weight that reads it downstream.

    None unless every path from the output reaches convs through channel-preserving ops only (a
    graph output, an Add, a Concat, a sigmoid... make the raw magnitude the one that matters, or
    leave the reader unknown). ``filters_by_node``: {node index: (filters-first weights, groups)}.
    """
    graph = model.graph
    squares = np.zeros(channels, np.float64)
    pending, seen = [layer.output], set()
    while pending:
        tensor = pending.pop()
        if tensor in seen:
            continue
        seen.add(tensor)
        if tensor in graph.graph_outputs or len(seen) > 4 * _MAX_STEPS:
            return None
        users = graph.consumers.get(tensor, [])
        if not users:
            return None
        for i in users:
            node = graph.nodes[i]
            if node.op_type == "Conv" and node.input[0] == tensor:
                found = filters_by_node.get(i)
                if found is None:
                    return None
                weights, groups = found
                per_group_in = weights.shape[1]
                if per_group_in * groups != channels:
                    return None
                per_group_out = weights.shape[0] // groups
                for g in range(groups):
                    block = weights[g * per_group_out:(g + 1) * per_group_out].astype(np.float64)
                    squares[g * per_group_in:(g + 1) * per_group_in] += np.square(block).sum(axis=(0, 2, 3))
            elif node.op_type in CHANNEL_PRESERVING and node.input[0] == tensor:
                pending.append(node.output[0])
            else:
                return None
    return np.sqrt(squares)
