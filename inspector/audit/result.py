"""The audit's result: per-layer findings, verdicts over the whole model, the JSON and the table."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import parallel
from .activations import NON_NEGATIVE_ACTIVATIONS, ActivationStats
from .weights import DEAD_NORM_RATIO, DUPLICATE_COSINE, NEAR_ZERO_RATIO, WeightStats, _number

SCHEMA_VERSION = "1"

COLLAPSE_RATIO = 0.01
COLLAPSE_ZERO_FRACTION = 0.99
# Bounded activations: the layer is a gate, not the main path (see collapse above).
GATE_ACTIVATIONS = frozenset({"Sigmoid", "HardSigmoid", "Tanh", "Softsign"})


@dataclass
class LayerAudit:
    index: int
    name: str
    op: str
    activation: str | None
    weight_shape: tuple[int, ...]
    weights: WeightStats
    activations: ActivationStats | None = None

    @property
    def filters(self) -> int:
        return self.weights.filters

    @property
    def dead_channels(self) -> list[int]:
        return self.activations.dead_channels() if self.activations else []

    @property
    def dead_units(self) -> list[int]:
        """Filters dead by their weights, or silent on every image, each counted once."""
        return sorted(set(self.weights.dead_filters) | set(self.dead_channels))

    def to_dict(self, collapse_index: int | None = None) -> dict:
        acts = self.activations
        measured = acts is not None and acts.images > 0
        return {
            "index": self.index,
            "name": self.name,
            "op": self.op,
            "activation": self.activation,
            "weight_shape": list(self.weight_shape),
            "filters": self.filters,
            **self.weights.to_dict(),
            "dead_channels": self.dead_channels if measured else None,
            "zero_fraction": _number(acts.zero_fraction()) if measured else None,
            "mean_activation": _number(acts.mean()) if measured else None,
            "mean_abs_activation": _number(acts.mean_abs()) if measured else None,
            "max_activation": _number(acts.max()) if measured else None,
            "activation_std": _number(acts.spread()) if measured else None,
            "channel_zero_fraction": [_number(v) for v in acts.channel_zero_fraction()] if measured else None,
            "channel_silent_fraction": [_number(v) for v in acts.channel_silent_fraction()] if measured else None,
            "collapse": collapse_index == self.index,
        }


@dataclass
class AuditResult:
    model_name: str
    model_path: str
    weights_trained: bool | None
    layers: list[LayerAudit]
    images: int = 0
    images_requested: int = 0
    skipped: list[dict] = field(default_factory=list)
    batch: int | None = None
    input_size: tuple[int, int] | None = None
    preprocess: str | None = None
    provider: str | None = None

    @property
    def total_filters(self) -> int:
        return sum(layer.filters for layer in self.layers)

    @property
    def dead_filter_count(self) -> int:
        return sum(len(layer.weights.dead_filters) for layer in self.layers)

    @property
    def dead_channel_count(self) -> int:
        return sum(len(layer.dead_channels) for layer in self.layers)

    @property
    def dead_unit_count(self) -> int:
        return sum(len(layer.dead_units) for layer in self.layers)

    def add_maps(self, maps: dict[str, np.ndarray], real: int | None = None) -> None:
        """Stream one batch of every layer's maps ``{name: (N, C, ...)}`` into the activation statistics.

        ``real``: how many of the N are images (the rest pad a fixed batch dimension).
        ``images`` is the caller's to count.
        """
        work = []
        for layer_audit in self.layers:
            if layer_audit.activations is None:
                layer_audit.activations = ActivationStats(layer_audit.filters,
                                                          layer_audit.activation in NON_NEGATIVE_ACTIVATIONS)
            values = maps[layer_audit.name]
            work.append((layer_audit.activations, values if real is None or real == len(values) else values[:real]))
        if sum(values.size for _, values in work) < parallel._PARALLEL_ELEMENTS:
            for stats, values in work:
                stats.add(values)
            return
        # onnxruntime is idle between runs and numpy's reductions release the GIL: one layer per core.
        for future in [parallel._stats_pool().submit(stats.add, values) for stats, values in work]:
            future.result()

    @property
    def dead_fraction(self) -> float:
        """Dead filters, plus dead channels when images were given (each once), over all filters."""
        total = self.total_filters
        return self.dead_unit_count / total if total else 0.0

    def collapse(self) -> dict | None:
        """The layer where activations die out (see module docstring), or None."""
        if not self.images:
            return None
        main: list[tuple[LayerAudit, float]] = []
        for layer in self.layers:
            acts = layer.activations
            if acts is None or not acts.images:
                continue
            if layer.activation in GATE_ACTIVATIONS or acts.elements_per_map == 1:
                continue  # a gate or a pooled branch, not the main path
            zeros = acts.zero_fraction()
            if zeros is not None and zeros > COLLAPSE_ZERO_FRACTION:
                return {"index": layer.index, "name": layer.name,
                        "reason": f"{zeros:.1%} of its activations are exactly zero"}
            spread = acts.spread()
            if spread is not None and math.isfinite(spread):
                main.append((layer, spread))
        # Die out = fall under the ratio and never come back on the rest of the main path.
        peak_before = 0.0
        for i, (layer, spread) in enumerate(main):
            if peak_before > 0 and all(later < COLLAPSE_RATIO * peak_before for _, later in main[i:]):
                return {"index": layer.index, "name": layer.name,
                        "reason": f"the spread of its activations (mean per-channel std {spread:.3g}) is "
                                  f"{spread / peak_before:.2%} of the largest before it ({peak_before:.3g}), "
                                  "and no later layer recovers"}
            peak_before = max(peak_before, spread)
        return None

    def to_dict(self) -> dict:
        from .. import __version__

        collapse = self.collapse()
        collapse_index = collapse["index"] if collapse else None
        return {
            "schema_version": SCHEMA_VERSION,
            "inspector_version": __version__,
            "model": {"name": self.model_name, "path": self.model_path, "weights_trained": self.weights_trained},
            "images": {
                "count": self.images,
                "requested": self.images_requested,
                "skipped": list(self.skipped),
                "batch": self.batch,
                "input_size": list(self.input_size) if self.input_size else None,
                "preprocess": self.preprocess,
                "provider": self.provider,
            },
            "rules": {
                "dead_norm_ratio": DEAD_NORM_RATIO,
                "duplicate_cosine": DUPLICATE_COSINE,
                "near_zero_ratio": NEAR_ZERO_RATIO,
                "collapse_ratio": COLLAPSE_RATIO,
                "collapse_zero_fraction": COLLAPSE_ZERO_FRACTION,
            },
            "layers": [layer.to_dict(collapse_index) for layer in self.layers],
            "summary": {
                "layers": len(self.layers),
                "filters": self.total_filters,
                "dead_filters": self.dead_filter_count,
                "dead_channels": self.dead_channel_count if self.images else None,
                "dead_units": self.dead_unit_count,
                "dead_fraction": self.dead_fraction,
                "near_duplicate_pairs": sum(layer.weights.duplicate_pairs for layer in self.layers),
                "collapse_layer": collapse,
            },
        }

    def table(self) -> str:
        """The human-readable table the CLI prints."""
        measured = self.images > 0
        collapse = self.collapse()
        head = ["#", "layer", "filters", "dead", "dup pairs", "near-0 w"]
        if measured:
            head += ["dead ch", "zero act", "mean", "max", "spread", ""]
        rows = [head]
        for layer in self.layers:
            w = layer.weights
            row = [str(layer.index), layer.name, str(layer.filters), str(len(w.dead_filters)),
                   str(w.duplicate_pairs), f"{w.near_zero_weight_fraction:.1%}"]
            if measured and layer.activations is not None:
                a = layer.activations
                row += [str(len(layer.dead_channels)), f"{a.zero_fraction():.1%}", f"{a.mean():.3g}",
                        f"{a.max():.3g}", f"{a.spread():.3g}",
                        "<- collapse" if collapse and collapse["index"] == layer.index else ""]
            rows.append(row)
        widths = [max(len(r[i]) for r in rows if i < len(r)) for i in range(len(head))]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
        lines.append("")
        summary = (f"{len(self.layers)} conv layers, {self.total_filters:,} filters: "
                   f"{self.dead_filter_count} dead by weights")
        if measured:
            summary += (f", {self.dead_channel_count} channels silent on all {self.images} images "
                        f"({self.dead_unit_count} dead in all)")
        summary += f"; dead fraction {self.dead_fraction:.4f}"
        lines.append(summary)
        if self.skipped:
            lines.append(f"{len(self.skipped)} image(s) skipped (unreadable)")
        if measured:
            lines.append(f"activations collapse at layer {collapse['index']} {collapse['name']}: {collapse['reason']}"
                         if collapse else "activations do not collapse with depth")
        return "\n".join(lines)
