"""Two models side by side: `inspector diff`'s pairing, and its per-layer figures for one image.

The pairing and the weight changes are ``inspector.compare.diff`` without images, computed once. For an image,
both models are fed as diff feeds them (``inputs.resolve_pair``: one size, a model without metadata borrowing
the other's preprocessing), their maps come from each model's warm session (``ModelState.maps``, cached under
that feeding), and each pair's maps feed the same ``LayerStats`` diff streams into: the answer is diff's JSON for
that one image, SQNR included.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict

import numpy as np

RESULTS_CACHED = 8  # images whose comparison is kept


class PairState:
    def __init__(self, a, b):
        self.a, self.b = a, b  # ModelState of A (the reference) and B
        self._lock = threading.Lock()
        self._base = None
        self._feedings: dict[str, tuple] = {}
        self._results: OrderedDict[str, object] = OrderedDict()

    def base(self):
        """diff's result without images: the pairs, their notes and weight changes, the unpaired layers."""
        from ..compare.run import diff

        with self._lock:
            if self._base is None:
                self._base = diff(self.a.model, self.b.model, None, quiet=True)
            return self._base

    def feeding(self, image) -> tuple:
        """(A's feeding, B's feeding) as `inspector diff A B IMAGE` resolves them."""
        from ..inputs import resolve_pair

        with self._lock:
            if image.id not in self._feedings:
                self._feedings[image.id] = resolve_pair(self.a.model, self.b.model, None, None, [image.source()])
            return self._feedings[image.id]

    def pair_of(self, index_a: int):
        for layer in self.base().layers:
            if layer.pair.a.index == index_a:
                return layer.pair
        raise KeyError(index_a)

    def side_maps(self, index_a: int, image, side: str) -> np.ndarray:
        """The maps of A's layer ``index_a`` (side "a") or of its counterpart in B ("b"), fed as diff feeds them."""
        pair = self.pair_of(index_a)
        feeding_a, feeding_b = self.feeding(image)
        if side == "a":
            return self.a.layer_maps(pair.a.index, image, feeding_a)
        if side == "b":
            return self.b.layer_maps(pair.b.index, image, feeding_b)
        raise KeyError(side)

    def compare(self, image):
        """``DiffResult`` of this one image: diff's figures for every pair whose maps can be compared."""
        from ..compare.metrics import LayerStats
        from ..compare.run import LayerDiff

        base = self.base()
        with self._lock:
            if image.id in self._results:
                self._results.move_to_end(image.id)
                return self._results[image.id]
        feeding_a, feeding_b = self.feeding(image)
        layers = []
        for row in base.layers:
            layer = LayerDiff(row.pair, row.weights, note=row.note)
            if not layer.note:
                map_a = self.a.layer_maps(row.pair.a.index, image, feeding_a)
                map_b = self.b.layer_maps(row.pair.b.index, image, feeding_b)
                if map_a.shape != map_b.shape:  # as diff says it
                    layer.note = f"maps {'x'.join(map(str, map_a.shape))} against {'x'.join(map(str, map_b.shape))}"
                else:
                    layer.stats = LayerStats(row.pair.a.filters)
                    layer.stats.add(map_a[None], map_b[None])
            layers.append(layer)
        result = dataclasses.replace(
            base, layers=layers, images=1, images_requested=1, batch=1, input_size=tuple(feeding_a.size),
            preprocess=(feeding_a.preprocess.mode, feeding_b.preprocess.mode),
            feeding=(feeding_a.to_dict(), feeding_b.to_dict()), first_image=image.name)
        with self._lock:
            self._results[image.id] = result
            while len(self._results) > RESULTS_CACHED:
                self._results.popitem(last=False)
        return result
