"""Which conv layer of model A is which of model B, how it was found and how sure that is.

In order of trust:

1. ``name``: the same source layer name (inspector's names survive quantization and re-export:
   ``block1_conv1`` in the float, the QDQ and the torch export alike); ``node``: the same node name.
2. ``structure``: what is left is paired among convs of one *signature* (weight shape, groups, kernel,
   stride, dilation, transposed or not) by their weights: the Pearson correlation of the two weight
   tensors (both in ONNX's OIHW order, whatever layout the exporter ran in, dequantized where
   quantized) must clear ``CONFIRM_CORRELATION`` and what chance gives at that size; among several
   candidates the best correlation wins, the nearer place in the conv order breaks ties.
3. ``position``: what is still left, when both models hold the same sequence of conv layers (same
   count, the same signature in order) and, where the graphs say it, each conv reads the outputs of
   the convs paired with those feeding its partner: the i-th conv of A is the i-th of B (two trainings
   of one architecture, weights computed at run time).

Two convs whose signatures differ are never paired. Every layer left over says why
(``Matching.unpaired_a`` / ``unpaired_b``).

Each pair says how sure it is (``high`` / ``medium`` / ``low``) with its evidence (the weights'
correlation, whether the convs feeding both sides are paired with each other), and whether the two
tensors ``diff`` compares are the same quantity: both after the same activation (BatchNorm folded or
followed, see ``Graph._follow_activation``); a conv shown before its activation on one side and after
it on the other is "not comparable", with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import InspectorError

MATCH_KINDS = ("name", "node", "position", "structure")
CONFIDENCES = ("high", "medium", "low")
# Weights this correlated confirm a structural pair: a re-export, a quantized copy or a fine-tuned
# network keeps r > 0.9; two unrelated trained convs of one shape sit near 0.
CONFIRM_CORRELATION = 0.5
# Correlation of unrelated weights has a spread of about 1/sqrt(n): a small conv must clear this many
# spreads as well, so that chance never confirms a pair.
CHANCE_SIGMAS = 4.0
# ... but identical weights always confirm, however small the conv.
MAX_THRESHOLD = 0.99
HIGH_CORRELATION = 0.9
# Weights compared when scoring candidates: a fixed subset of this many values (the same positions on
# both sides), enough to tell related from unrelated and cheap for hundreds of candidates.
SAMPLE = 4096
# Steps after a conv that scale each channel (and may flip its sign).
_SCALING = ("BatchNormalization", "Mul", "Div")
# Nodes walked back from a conv to find the convs that feed it.
_UPSTREAM_LIMIT = 5000


@dataclass(frozen=True)
class Pair:
    a: object  # inspector.graph.Layer of model A
    b: object  # the Layer of model B
    match: str  # one of MATCH_KINDS
    confidence: str = "high"  # one of CONFIDENCES
    weight_correlation: float | None = None  # Pearson r of the two weight tensors, None when unreadable
    inputs_agree: bool | None = None  # the convs feeding A's layer are paired with those feeding B's
    not_comparable: str | None = None  # why the two compared tensors are not the same quantity

    @property
    def name(self) -> str:
        return self.a.name if self.a.name == self.b.name else f"{self.a.name} ~ {self.b.name}"

    @property
    def same_shape(self) -> bool:
        return tuple(self.a.weight_shape) == tuple(self.b.weight_shape) and self.a.groups == self.b.groups

    def evidence(self) -> dict:
        return {"weight_correlation": _rounded(self.weight_correlation), "inputs_agree": self.inputs_agree}


@dataclass
class Matching:
    pairs: list[Pair]
    unpaired_a: list[tuple[object, str]] = field(default_factory=list)  # (Layer, why)
    unpaired_b: list[tuple[object, str]] = field(default_factory=list)


class _Side:
    """One model's layers with what matching reads of them: signatures, feeding convs, weights."""

    def __init__(self, source):
        if isinstance(source, (list, tuple)):
            self.layers, self.graph, self.model = list(source), None, None
        else:  # an inspector.api.Model
            self.layers, self.graph, self.model = list(source.layers), source.graph, source
        self._sampled: dict[int, np.ndarray | None] = {}
        self._upstream: dict[int, frozenset | None] | None = None

    def attribute(self, layer, name: str):
        if self.graph is None:
            return None
        node = self.graph.nodes[layer.node_index]
        return next((tuple(int(v) for v in a.ints) for a in node.attribute if a.name == name), None)

    def signature(self, layer) -> tuple | None:
        """What two convs must share to be one layer; None when the weights' shape is unknown."""
        shape = tuple(layer.weight_shape)
        if len(shape) < 3:
            return None
        spatial = len(shape) - 2
        kernel = self.attribute(layer, "kernel_shape") or shape[2:]
        strides = self.attribute(layer, "strides") or (1,) * spatial
        dilations = self.attribute(layer, "dilations") or (1,) * spatial
        return shape, layer.groups, layer.op == "ConvTranspose", tuple(kernel), tuple(strides), tuple(dilations)

    def weights(self, layer) -> np.ndarray | None:
        """The layer's weights as float32 (filters, values) in ONNX order, dequantized; None when unreadable.
        Read again on each call: a large model's weights are never all in memory at once."""
        if self.model is None:
            return None
        try:
            value = np.asarray(self.model.graph.weights(layer)[0], np.float32)
        except (InspectorError, ValueError, TypeError):
            return None
        value = value.reshape(value.shape[0], -1) if value.ndim else value.reshape(1, 1)
        return value if np.all(np.isfinite(value)) else None

    def sampled(self, layer, rows: np.ndarray, cols: np.ndarray) -> np.ndarray | None:
        """The values that score candidates (the same positions for every layer of one signature), kept."""
        if layer.index not in self._sampled:
            value = self.weights(layer)
            self._sampled[layer.index] = None if value is None else value[np.ix_(rows, cols)].astype(np.float64)
        return self._sampled[layer.index]

    def upstream(self, layer) -> frozenset | None:
        """Indices of the conv layers whose outputs reach this conv's data input without another conv
        between (-1 for a graph input); None without a graph or when the walk is too long."""
        if self.graph is None:
            return None
        if self._upstream is None:
            self._upstream = {}
        if layer.index in self._upstream:
            return self._upstream[layer.index]
        graph = self.graph
        conv_at = {other.node_index: other.index for other in self.layers}
        found: set[int] = set()
        node = graph.nodes[layer.node_index]
        pending = [node.input[0]] if node.input and node.input[0] else []
        seen: set[str] = set()
        result: frozenset | None = None
        while pending:
            tensor = pending.pop()
            if tensor in seen or tensor in graph.initializer_names:
                continue
            seen.add(tensor)
            if len(seen) > _UPSTREAM_LIMIT:
                break
            producer = graph.producer.get(tensor)
            if producer is None:
                found.add(-1)
                continue
            if producer in conv_at:
                found.add(conv_at[producer])
                continue
            pending.extend(t for t in graph.nodes[producer].input if t)
        else:
            result = frozenset(found)
        self._upstream[layer.index] = result
        return result


def match_layers(layers_a, layers_b) -> list[Pair]:
    """Pairs in model A's layer order; ``layers_a``/``layers_b`` are layer lists or loaded models (a
    model adds its graph's strides, data flow and weights to the evidence). See ``pair_layers``."""
    return pair_layers(layers_a, layers_b).pairs


def pair_layers(model_a, model_b) -> Matching:
    """Every pair in model A's layer order, and each layer left over with the reason."""
    side_a, side_b = _Side(model_a), _Side(model_b)
    layers_a, layers_b = side_a.layers, side_b.layers
    chosen: dict[int, tuple] = {}  # index in A -> (layer of B, match, correlation)
    taken_b: set[int] = set()

    def by(key, kind):
        index_b: dict[str, list] = {}
        for layer in layers_b:
            if layer.index not in taken_b and getattr(layer, key):
                index_b.setdefault(getattr(layer, key), []).append(layer)
        for layer in layers_a:
            if layer.index in chosen or not getattr(layer, key):
                continue
            found = index_b.get(getattr(layer, key), [])
            free = [other for other in found if other.index not in taken_b]
            # One name on two convs of other shapes is not one layer (an exporter named a conv after a
            # tensor its weights came through: basic-pitch's CQT conv called conv2d_5 by tf2onnx).
            if len(found) == 1 and free and _same_signature(side_a, side_b, layer, free[0]):
                chosen[layer.index] = (free[0], kind, None)
                taken_b.add(free[0].index)

    by("name", "name")
    by("node_name", "node")
    _pair_by_weights(side_a, side_b, chosen, taken_b)
    signatures_a = [side_a.signature(layer) for layer in layers_a]
    signatures_b = [side_b.signature(layer) for layer in layers_b]
    if len(layers_a) == len(layers_b) and signatures_a == signatures_b and None not in signatures_a:
        candidates = {a.index: b for a, b in zip(layers_a, layers_b)
                      if a.index not in chosen and b.index not in taken_b}
        mapping = {i: pick[0].index for i, pick in chosen.items()} | {i: b.index for i, b in candidates.items()}
        if all(_inputs_agree(side_a, side_b, layers_a[i], b, mapping) is not False for i, b in candidates.items()):
            for i, b in candidates.items():
                chosen[i] = (b, "position", None)
                taken_b.add(b.index)

    mapping = {i: pick[0].index for i, pick in chosen.items()}
    pairs = []
    for i in sorted(chosen):
        a = layers_a[i]
        b, kind, correlation = chosen[i]
        if correlation is None:
            correlation = _correlation(side_a.weights(a), side_b.weights(b), _signed(a, b))
        agree = _inputs_agree(side_a, side_b, a, b, mapping)
        pairs.append(Pair(a, b, kind, _confidence(kind, correlation, agree), correlation, agree,
                          _not_comparable(a, b)))
    paired_a, paired_b = set(mapping), set(mapping.values())
    return Matching(pairs, _leftovers(side_a, side_b, paired_a, paired_b, "B"),
                    _leftovers(side_b, side_a, paired_b, paired_a, "A"))


def _same_signature(side_a: _Side, side_b: _Side, a, b) -> bool:
    signature_a, signature_b = side_a.signature(a), side_b.signature(b)
    return signature_a is None or signature_b is None or signature_a == signature_b


def _pair_by_weights(side_a: _Side, side_b: _Side, chosen: dict, taken_b: set) -> None:
    """Structural pairs among the layers still free: same signature, weights confirm, best first."""
    groups: dict[tuple, tuple[list, list]] = {}
    for layer in side_a.layers:
        signature = side_a.signature(layer)
        if layer.index not in chosen and signature is not None:
            groups.setdefault(signature, ([], []))[0].append(layer)
    for layer in side_b.layers:
        signature = side_b.signature(layer)
        if layer.index not in taken_b and signature in groups:
            groups[signature][1].append(layer)
    count_a, count_b = max(len(side_a.layers), 1), max(len(side_b.layers), 1)
    for signature, (free_a, free_b) in groups.items():
        if not free_b:
            continue
        size = int(np.prod(signature[0]))
        rows, cols = _sample_positions(signature[0][0], size // signature[0][0])
        sampled = len(rows) * max(len(cols) - 1, 1)  # values that vary freely in the per-filter figure
        scored = []
        for a in free_a:
            wa = side_a.sampled(a, rows, cols)
            if wa is None:
                continue
            for b in free_b:
                wb = side_b.sampled(b, rows, cols)
                if wb is None:
                    continue
                r = _correlation(wa, wb, _signed(a, b))
                if r is not None and r >= _threshold(sampled):
                    scored.append((-round(r, 3), abs(a.index / count_a - b.index / count_b), a.index, b.index, a, b))
        scored.sort(key=lambda s: s[:4])
        for *_, a, b in scored:
            if a.index in chosen or b.index in taken_b:
                continue
            r = _correlation(side_a.weights(a), side_b.weights(b), _signed(a, b))
            if r is None or r < _threshold(signature[0][0] * max(size // signature[0][0] - 1, 1)):
                continue
            chosen[a.index] = (b, "structure", r)
            taken_b.add(b.index)


def _sample_positions(filters: int, per_filter: int) -> tuple[np.ndarray, np.ndarray]:
    """(filters, values within each) to score candidates on: all of them up to SAMPLE values."""
    generator = np.random.default_rng(0)
    rows = np.arange(filters)
    if filters * min(per_filter, 16) > SAMPLE:
        rows = np.sort(generator.choice(filters, SAMPLE // min(per_filter, 16), replace=False))
    cols = np.arange(per_filter)
    if len(rows) * per_filter > SAMPLE:
        cols = np.sort(generator.choice(per_filter, max(SAMPLE // len(rows), 1), replace=False))
    return rows, cols


def _threshold(values: int) -> float:
    return min(MAX_THRESHOLD, max(CONFIRM_CORRELATION, CHANCE_SIGMAS / math.sqrt(max(values, 1))))


def _signed(a, b) -> bool:
    """Whether a filter's sign must agree: not when one side scales its conv's output per channel after
    the conv (an unfolded BatchNorm, torch's Sub -> Mul -> Add): folding a negative scale into the other
    side's weights flips those filters."""
    return not any(step in _SCALING for layer in (a, b) for step in (getattr(layer, "affine", None) or ()))


def _correlation(a: np.ndarray | None, b: np.ndarray | None, signed: bool = True) -> float | None:
    """The mean over filters of each filter's Pearson correlation (a BatchNorm folded into one side scales
    each filter: this leaves the figure unchanged; unsigned, the magnitude of each, for a scale that may be
    negative); one correlation over the whole tensor when filters hold a single value or none varies."""
    if a is None or b is None or a.shape != b.shape or a.size < 2:
        return None
    if a.shape[1] > 1:
        per_filter = []
        step = max(1, (1 << 20) // a.shape[1])  # float64 copies of a million values at a time
        for start in range(0, a.shape[0], step):
            ca, cb = (np.asarray(w[start:start + step], np.float64) for w in (a, b))
            ca -= ca.mean(axis=1, keepdims=True)
            cb -= cb.mean(axis=1, keepdims=True)
            norms = np.sqrt(np.einsum("ij,ij->i", ca, ca) * np.einsum("ij,ij->i", cb, cb))
            varied = norms > 0
            per_filter.append(np.einsum("ij,ij->i", ca[varied], cb[varied]) / norms[varied])
        values = np.concatenate(per_filter)
        if not signed:
            values = np.abs(values)
        if values.size:
            return float(np.mean(values))
    a, b = np.asarray(a, np.float64).reshape(-1), np.asarray(b, np.float64).reshape(-1)
    a, b = a - a.mean(), b - b.mean()
    norm = math.sqrt(float(np.dot(a, a)) * float(np.dot(b, b)))
    if norm == 0:
        return 1.0 if not a.any() and not b.any() else None
    return float(np.dot(a, b)) / norm


def _inputs_agree(side_a: _Side, side_b: _Side, a, b, mapping: dict[int, int]) -> bool | None:
    """Do the convs feeding ``a`` map onto those feeding ``b``? None when a graph or a partner is missing."""
    up_a, up_b = side_a.upstream(a), side_b.upstream(b)
    if up_a is None or up_b is None:
        return None
    mapped = set()
    for index in up_a:
        if index == -1:
            mapped.add(-1)
        elif index in mapping:
            mapped.add(mapping[index])
        else:
            return None
    return mapped == set(up_b)


def _confidence(kind: str, correlation: float | None, agree: bool | None) -> str:
    if kind in ("name", "node"):
        return "high"
    if agree is False:
        return "low"
    if correlation is not None and correlation >= HIGH_CORRELATION:
        return "high"
    if kind == "structure" or agree:
        return "medium"
    return "low"


def _not_comparable(a, b) -> str | None:
    """Why the tensors diff compares for this pair are not the same quantity, or None when they are."""
    if a.activation == b.activation:
        return None
    # onnxruntime's quantizer drops a Relu before a QuantizeLinear and lets it clip: the quantized side
    # shows no activation and still holds the same quantity.
    if (a.activation is None and a.quantization) or (b.activation is None and b.quantization):
        return None

    def said(layer, model):
        return f"{model}'s maps are after {layer.activation}" if layer.activation else \
            f"{model}'s are the conv's output with no activation found"

    return f"not comparable: {said(a, 'A')}, {said(b, 'B')}"


def _describe(signature: tuple) -> str:
    shape, groups, transposed, kernel, strides, dilations = signature
    text = "x".join(map(str, shape)) + (f", groups {groups}" if groups != 1 else "")
    text += ", kernel " + "x".join(map(str, kernel)) + ", stride " + "x".join(map(str, strides))
    if any(d != 1 for d in dilations):
        text += ", dilation " + "x".join(map(str, dilations))
    return ("transposed " if transposed else "") + text


def _leftovers(side: _Side, other: _Side, paired: set[int], paired_other: set[int],
               other_name: str) -> list[tuple[object, str]]:
    same_signature: dict[tuple, list] = {}
    for layer in other.layers:
        signature = other.signature(layer)
        if signature is not None:
            same_signature.setdefault(signature, []).append(layer)
    out = []
    for layer in side.layers:
        if layer.index in paired:
            continue
        signature = side.signature(layer)
        if signature is None:
            out.append((layer, "its weights' shape is unknown (computed at run time): it pairs only by name or "
                               "within an identical conv sequence"))
            continue
        candidates = same_signature.get(signature, [])
        free = [o for o in candidates if o.index not in paired_other]
        if not candidates:
            out.append((layer, f"no conv of {other_name} has its signature ({_describe(signature)})"))
        elif not free:
            out.append((layer, f"every conv of {other_name} with its signature ({len(candidates)}) is paired "
                               "with another"))
        elif side.weights(layer) is None:
            out.append((layer, f"{len(free)} free conv(s) of {other_name} share its signature but its weights "
                               "cannot be read to confirm one"))
        else:
            weights = side.weights(layer)
            best = max((r for r in (_correlation(weights, other.weights(o)) for o in free[:64])
                        if r is not None), default=None)
            out.append((layer, f"{len(free)} free conv(s) of {other_name} share its signature but their weights "
                               "do not confirm it" + (f" (best r = {best:.2f})" if best is not None else "")))
    return out


def _rounded(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


def require_pairs(pairs: list[Pair], name_a: str, name_b: str, count_a: int, count_b: int) -> list[Pair]:
    if not pairs:
        raise InspectorError(
            f"{name_a} ({count_a} conv layers) and {name_b} ({count_b} conv layers) have no conv layer in "
            "common: no layer name or node name matches, no conv sequence is the same, and no conv's weights "
            "match a conv of the same shape in the other; diff compares two versions of one network (float and "
            "quantized, before and after fine-tuning, two exports)")
    return pairs
