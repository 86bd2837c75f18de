"""Which conv layer of model A is which of model B.

In order of trust: the same source layer name (inspector's names survive quantization and
re-export: ``block1_conv1`` in the float, the QDQ and the torch export alike), then the same node
name, then the position among conv layers when both models have the same sequence of conv layers
(same count, same weight shapes in order). Every pair says how it was matched.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InspectorError

MATCH_KINDS = ("name", "node", "position")


@dataclass(frozen=True)
class Pair:
    a: object  # inspector.graph.Layer of model A
    b: object  # the Layer of model B
    match: str  # "name" | "node" | "position"

    @property
    def name(self) -> str:
        return self.a.name if self.a.name == self.b.name else f"{self.a.name} ~ {self.b.name}"

    @property
    def same_shape(self) -> bool:
        return tuple(self.a.weight_shape) == tuple(self.b.weight_shape) and self.a.groups == self.b.groups


def _kind(layer) -> tuple:
    """What must agree for two layers at one position to be the same layer: the weights' shape and groups
    (a QLinearConv and its float Conv count as the same kind)."""
    return tuple(layer.weight_shape), layer.groups, layer.op == "ConvTranspose"


def match_layers(layers_a, layers_b) -> list[Pair]:
    """Pairs in model A's layer order; layers found in only one model are left out."""
    pairs: dict[int, Pair] = {}
    taken_b: set[int] = set()

    def by(key, kind):
        index_b: dict[str, list] = {}
        for layer in layers_b:
            if layer.index not in taken_b and getattr(layer, key):
                index_b.setdefault(getattr(layer, key), []).append(layer)
        for layer in layers_a:
            if layer.index in pairs or not getattr(layer, key):
                continue
            found = index_b.get(getattr(layer, key), [])
            free = [other for other in found if other.index not in taken_b]
            if len(found) == 1 and free:
                pairs[layer.index] = Pair(layer, free[0], kind)
                taken_b.add(free[0].index)

    by("name", "name")
    by("node_name", "node")
    if len(layers_a) == len(layers_b) and all(_kind(a) == _kind(b) for a, b in zip(layers_a, layers_b)):
        for a, b in zip(layers_a, layers_b):
            if a.index not in pairs and b.index not in taken_b:
                pairs[a.index] = Pair(a, b, "position")
                taken_b.add(b.index)
    return [pairs[i] for i in sorted(pairs)]


def require_pairs(pairs: list[Pair], name_a: str, name_b: str, count_a: int, count_b: int) -> list[Pair]:
    if not pairs:
        raise InspectorError(
            f"{name_a} ({count_a} conv layers) and {name_b} ({count_b} conv layers) have no conv layer in "
            "common: no layer name, node name or conv sequence (count and weight shapes) matches; "
            "diff compares two versions of one network (float and quantized, before and after fine-tuning, "
            "two exports)")
    return pairs
