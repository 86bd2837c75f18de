"""The audit's activation statistics as a mergeable value: one partial per batch, merged exactly once.

A partial holds, for each audited layer, the ``ActivationStats`` of one batch's images (counts, sums,
sums of squares, minimum and maximum, the between-image moments) and the batch's key: a hash of its
images' keys (their paths, or shard and member for a tar). ``Merger`` adds partials in any order or
grouping (``activations.merge`` is associative), drops a partial whose key it has already counted
(a retried batch never counts twice) and checks at the end that every image was counted (a lost
batch never passes silently). The single-process audit runs every batch through it too, so both
paths share the code that a distributed run depends on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Iterable

from ..errors import InspectorError
from .activations import ActivationStats, MapFigures, map_figures


def batch_key(image_keys: Iterable[str]) -> str:
    """A batch's identity: the SHA-256 of its images' keys, in order."""
    digest = hashlib.sha256()
    for key in image_keys:
        digest.update(str(key).encode("utf-8", "surrogateescape"))
        digest.update(b"\0")
    return digest.hexdigest()


@dataclass
class AuditPartial:
    """One batch's (or several merged batches') statistics: ``layers`` {layer name: ActivationStats}."""

    images: int = 0
    layers: dict[str, ActivationStats] = field(default_factory=dict)
    keys: set[str] | frozenset[str] = frozenset()  # the batch keys merged into it

    def merge_in(self, other: AuditPartial) -> None:
        overlap = self.keys & other.keys
        if overlap:
            raise InspectorError(f"batch {sorted(overlap)[0][:12]} would be counted twice")
        for name, stats in other.layers.items():
            if name in self.layers:
                self.layers[name].merge_in(stats)
            else:
                self.layers[name] = stats.copy()
        self.images += other.images
        if not isinstance(self.keys, set):
            self.keys = set(self.keys)
        self.keys |= other.keys  # in place: a merger of n batches stays O(n)


def merge(a: AuditPartial, b: AuditPartial) -> AuditPartial:
    """``a`` and ``b`` together, neither changed (associative; see ``activations.merge``)."""
    merged = AuditPartial(a.images, {name: stats.copy() for name, stats in a.layers.items()}, set(a.keys))
    merged.merge_in(b)
    return merged


def batch_partial(layers, figures: dict[str, MapFigures], maps: dict, real: int, key: str) -> AuditPartial:
    """The partial of one batch: ``layers`` the LayerAudits (channels, signedness), ``figures`` the graph's
    per-(image, channel) figures and ``maps`` the maps of the other layers; the first ``real`` images count."""
    from . import parallel

    stats = {layer.name: ActivationStats.from_figures(figures[layer.name].first(real), not layer.signed,
                                                      layer.filters)
             for layer in layers if layer.name in figures}
    work = [(layer, maps[layer.name][:real]) for layer in layers if layer.name in maps]

    def reduce(layer, values) -> ActivationStats:
        return ActivationStats.from_figures(map_figures(values, not layer.signed), not layer.signed, layer.filters)

    if sum(values.size for _, values in work) < parallel._PARALLEL_ELEMENTS:
        stats.update((layer.name, reduce(layer, values)) for layer, values in work)
    else:  # onnxruntime is idle between runs and numpy's reductions release the GIL: one layer per core
        futures = [(layer.name, parallel._stats_pool().submit(reduce, layer, values)) for layer, values in work]
        stats.update((name, future.result()) for name, future in futures)
    return AuditPartial(real, stats, frozenset({key}))


class Merger:
    """Partials merged as they come, each batch key once; ``finish`` checks that every image counted."""

    def __init__(self):
        self.total = AuditPartial()
        self.duplicates = 0

    def add(self, partial: AuditPartial) -> bool:
        """Merge ``partial`` unless a batch of it was counted already (then it is dropped: False)."""
        if partial.keys & self.total.keys:
            if not partial.keys <= self.total.keys:
                raise InspectorError("a merged partial overlaps the batches counted only in part; "
                                     "merge batch partials, or partials of disjoint batches")
            self.duplicates += 1
            return False
        self.total.merge_in(partial)
        return True

    def finish(self, expected_keys: Iterable[str], expected_images: int | None = None) -> AuditPartial:
        """The total, after checking that exactly the ``expected_keys`` batches were counted."""
        expected = set(expected_keys)
        missing = expected - self.total.keys
        if missing:
            raise InspectorError(f"{len(missing)} of {len(expected)} batches were never counted; "
                                 "the audit's statistics would be incomplete")
        extra = self.total.keys - expected
        if extra:
            raise InspectorError(f"{len(extra)} batches counted that were not asked for")
        if expected_images is not None and self.total.images != expected_images:
            raise InspectorError(f"{self.total.images} images counted where {expected_images} were read")
        return self.total
