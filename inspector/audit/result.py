"""The audit's result: per-layer findings, the verdicts over the whole model, the JSON and the table."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import parallel, verdicts, verify
from .activations import ActivationStats, MapFigures, non_negative
from .verdicts import (COLLAPSE_DEAD_FRACTION, COLLAPSE_RESPONSE, CONSTANT_RTOL, DORMANT_TAU, MIN_IMAGES,
                       MIN_IMAGES_POOLED, POOLED_POSITIONS, channel_verdicts, channels_judged, image_response)
from .verify import Verification, fire_rate_bound
from .weights import DEAD_NORM_RATIO, DUPLICATE_COSINE, NEAR_ZERO_RATIO, WeightStats, _number

SCHEMA_VERSION = "2"


def _real(values: np.ndarray, real: int | None) -> np.ndarray:
    """The first ``real`` of a batch (the rest pad a fixed batch dimension)."""
    return values if real is None or real == len(values) else values[:real]


@dataclass
class LayerAudit:
    index: int
    name: str
    op: str
    activation: str | None
    weight_shape: tuple[int, ...]
    weights: WeightStats
    activations: ActivationStats | None = None
    rectifier: bool = False  # Relu or Relu6: only exact zeros mean silence
    outgoing: np.ndarray | None = None  # per channel, the norm of the conv weights that read it (routing.py)
    refused: set = field(default_factory=set)  # dead channels whose removal moved held-out outputs (verify.py)
    not_dormant: set = field(default_factory=set)  # dormant by score, but their removal moved judged outputs

    @property
    def filters(self) -> int:
        return self.weights.filters

    @property
    def signed(self) -> bool:
        """Whether its outputs may be negative (then the statistics keep absolute sums apart)."""
        return not non_negative(self.rectifier, self.activation)

    @property
    def measured(self) -> bool:
        return self.activations is not None and self.activations.images > 0

    def channel_masks(self) -> dict:
        """Per-channel verdict masks (verdicts.channel_verdicts); all False before any image."""
        if not self.measured:
            no = np.zeros(self.filters, bool)
            return {"all_zero": no, "constant": no, "dormant": no, "dead": no, "dormant_score": None}
        masks = channel_verdicts(self.activations, self.rectifier, self.outgoing)
        if self.not_dormant:
            dormant = masks["dormant"].copy()
            dormant[sorted(self.not_dormant)] = False
            masks = {**masks, "dormant": dormant, "dead": masks["constant"] | dormant}
        return masks

    @property
    def dead_channels(self) -> list[int]:
        """Channels that do not respond on the images seen (judged only with enough images)."""
        return [int(i) for i in np.flatnonzero(self.channel_masks()["dead"])]

    def dead_units(self, channels_judged: bool = True) -> list[int]:
        """Filters dead by their weights, plus (when judged) dead channels not refused by the
        verification, each counted once."""
        dead = set(self.weights.dead_filters)
        if channels_judged:
            dead |= set(self.dead_channels) - self.refused
        return sorted(dead)

    def to_dict(self, collapse_index: int | None = None, images: int = 0, evidence: dict | None = None) -> dict:
        acts = self.activations
        measured = self.measured
        masks = self.channel_masks()
        score = masks["dormant_score"]
        indices = lambda mask: [int(i) for i in np.flatnonzero(mask)]  # noqa: E731
        return {
            "index": self.index,
            "name": self.name,
            "op": self.op,
            "activation": self.activation,
            "rectifier": self.rectifier,
            "weight_shape": list(self.weight_shape),
            "filters": self.filters,
            "groups": self.weights.groups,
            **self.weights.to_dict(),
            "dead_channels": indices(masks["dead"]) if measured else None,
            "channels_judged": channels_judged(self, images) if measured else None,
            "constant_channels": indices(masks["constant"]) if measured else None,
            "dormant_channels": indices(masks["dormant"]) if measured else None,
            "not_confirmed_channels": sorted(int(i) for i in self.refused) if measured else None,
            "not_dormant_channels": sorted(int(i) for i in self.not_dormant) if measured else None,
            "evidence": evidence if measured else None,
            "min_dormant_score": (_number(np.min(score)) if score is not None and len(score) else None),
            "dormant_weighted": self.outgoing is not None and not self.rectifier,
            "zero_fraction": _number(acts.zero_fraction()) if measured else None,
            "mean_activation": _number(acts.mean()) if measured else None,
            "mean_abs_activation": _number(acts.mean_abs()) if measured else None,
            "max_activation": _number(acts.max()) if measured else None,
            "activation_std": _number(acts.spread()) if measured else None,
            "image_response": _number(image_response(acts)) if measured else None,
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
    preprocess_source: str | None = None  # flag | metadata | exporter | guessed
    provider: str | None = None
    verification: Verification | None = None  # the check of the verdicts on held-out images (verify.py)
    dormant_check: dict | None = None  # the dormant rule's ablation on the judged images (verify.check_dormant)

    @property
    def channels_judged(self) -> bool:
        """Enough images for verdicts about channels (MIN_IMAGES); with fewer, figures only."""
        return self.images >= MIN_IMAGES

    @property
    def total_filters(self) -> int:
        return sum(layer.filters for layer in self.layers)

    @property
    def dead_filter_count(self) -> int:
        return sum(len(layer.weights.dead_filters) for layer in self.layers)

    @property
    def dead_channel_count(self) -> int:
        """Channels that do not respond on the images seen, judged or not."""
        return sum(len(layer.dead_channels) for layer in self.layers)

    @property
    def dead_unit_count(self) -> int:
        return sum(len(layer.dead_units(channels_judged(layer, self.images))) for layer in self.layers)

    def add_maps(self, maps: dict[str, np.ndarray], real: int | None = None) -> None:
        """Stream one batch of layers' maps ``{name: (N, C, ...)}`` into their activation statistics.

        ``real``: how many of the N are images (the rest pad a fixed batch dimension).
        ``images`` is the caller's to count.
        """
        work = [(self._stats(layer_audit), _real(maps[layer_audit.name], real))
                for layer_audit in self.layers if layer_audit.name in maps]
        if sum(values.size for _, values in work) < parallel._PARALLEL_ELEMENTS:
            for stats, values in work:
                stats.add(values)
            return
        # onnxruntime is idle between runs and numpy's reductions release the GIL: one layer per core.
        for future in [parallel._stats_pool().submit(stats.add, values) for stats, values in work]:
            future.result()

    def add_figures(self, figures: dict[str, MapFigures], real: int | None = None) -> None:
        """One batch of layers' per-(image, channel) figures ``{name: MapFigures}`` (reduced in the graph)."""
        for layer_audit in self.layers:
            if layer_audit.name in figures:
                found = figures[layer_audit.name]
                self._stats(layer_audit).add_figures(found if real is None else found.first(real))

    def set_activations(self, partial) -> None:
        """Each layer's activation statistics from a merged ``partials.AuditPartial`` (its images)."""
        for layer_audit in self.layers:
            if layer_audit.name in partial.layers:
                layer_audit.activations = partial.layers[layer_audit.name]

    @staticmethod
    def _stats(layer_audit) -> ActivationStats:
        if layer_audit.activations is None:
            layer_audit.activations = ActivationStats(layer_audit.filters, not layer_audit.signed)
        return layer_audit.activations

    @property
    def dead_fraction(self) -> float:
        """Dead filters, plus dead channels when judged and not refused (each once), over all filters."""
        total = self.total_filters
        return self.dead_unit_count / total if total else 0.0

    @property
    def verified(self) -> bool:
        """Whether the channel verdicts were checked by ablation on held-out images."""
        return self.verification is not None and self.verification.ran

    @property
    def verified_dead_unit_count(self) -> int:
        """What ``--fail-on-dead`` counts: filters dead by their weights, plus the channel verdicts that the
        verification confirmed (none when it could not run)."""
        if self.verified:
            return self.dead_unit_count
        return sum(len(layer.dead_units(False)) for layer in self.layers)

    @property
    def verified_dead_fraction(self) -> float:
        total = self.total_filters
        return self.verified_dead_unit_count / total if total else 0.0

    def left_out(self) -> dict:
        """The channel verdicts ``--fail-on-dead`` leaves out, by reason (counts; reasons in words)."""
        unverified = self.dead_unit_count - self.verified_dead_unit_count
        refused = sum(len(set(layer.dead_channels) & layer.refused - set(layer.weights.dead_filters))
                      for layer in self.layers if channels_judged(layer, self.images))
        out = {"not_verified": unverified, "not_confirmed": refused, "reasons": []}
        if unverified:
            why = self.verification.reason if self.verification is not None else "no images were held out"
            out["reasons"].append(f"{unverified} channel verdict(s) not verified ({why})")
        if refused:
            check = self.verification
            parts = [f"{check.answered} answered held-out images"] if check.answered else []
            parts += [f"{count} {reason}" for reason, count in check.margin.items()]
            moved = refused - check.answered - sum(check.margin.values())
            if moved > 0:
                parts.append(f"{moved} moved outputs on held-out images past the tolerance "
                             f"({verify.floor_words(check.tolerance, check.noise_floor)}) when removed")
            out["reasons"].append(f"{refused} silent channel(s) not confirmed: " + "; ".join(parts))
        return out

    def evidence(self) -> dict | None:
        """What every channel verdict of this audit stands on."""
        if not self.images:
            return None
        if self.verification is None:
            state = "not verified"
        else:
            state = self.verification.status if self.verification.ran else "not verified"
        return {"images": self.images, "fire_rate_upper_95": fire_rate_bound(self.images),
                "preprocess_source": self.preprocess_source, "verification": state}

    def collapse(self) -> dict | None:
        """The layer where the network stops answering its input (verdicts.collapse), or None."""
        return verdicts.collapse(self.layers, self.images)

    def notes(self) -> list[str]:
        """What a reader must know to read the verdicts."""
        out = []
        if self.images and not self.channels_judged:
            out.append(f"channel verdicts need at least {MIN_IMAGES} images; with {self.images} the "
                       f"channels that do not respond are reported (silent on {self.images} of "
                       f"{self.images} images) but not counted in dead_fraction or --fail-on-dead")
        pooled = [layer for layer in self.layers if layer.measured and layer.activations.elements_per_map <= POOLED_POSITIONS
                  and self.channels_judged and not channels_judged(layer, self.images)]
        if pooled:
            silent = sum(len(layer.dead_channels) for layer in pooled)
            out.append(f"{len(pooled)} layer(s) with 1x1 maps or others of at most {POOLED_POSITIONS} positions (pooled "
                       f"branches such as squeeze-and-excite, the last stages of a small input) give a few values per image: "
                       f"their channels need {MIN_IMAGES_POOLED} images; {silent} that do not respond on "
                       f"{self.images} are reported, not counted")
        if self.preprocess_source == "guessed":
            out.append(f"the preprocessing was guessed ({self.preprocess}): the file does not say what it "
                       "expects; pass --preprocess to set it")
        check = self.dormant_check
        if check and check.get("not_dormant"):
            out.append(f"{check['not_dormant']} channel(s) small enough to be dormant by score are answers: removing "
                       f"the channels dormant by score moved the outputs on the judged images by "
                       f"{check['change_all']:.2%} of their range, past the tolerance "
                       f"({verify.floor_words(check['tolerance'], check.get('noise_floor'))}); they are not counted")
        if self.verification is not None:
            out.append(self.verification.sentence())
        if self.channels_judged and self.dead_channel_count:
            bound = fire_rate_bound(self.images)
            out.append(f"each channel verdict stands on {self.images} images: a channel silent on all of them may "
                       f"still fire on up to {bound:.0%} of such images (95% upper bound)")
        return out

    def to_dict(self) -> dict:
        from .. import __version__

        collapse = self.collapse()
        collapse_index = collapse["index"] if collapse else None
        measured = self.images > 0
        evidence = self.evidence()
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
                "preprocess_source": self.preprocess_source,
                "provider": self.provider,
                "held_out": self.verification.images if self.verification is not None else 0,
            },
            "verification": self.verification.to_dict() if self.verification is not None else None,
            "rules": {
                "dead_norm_ratio": DEAD_NORM_RATIO,
                "duplicate_cosine": DUPLICATE_COSINE,
                "near_zero_ratio": NEAR_ZERO_RATIO,
                "min_images": MIN_IMAGES,
                "min_images_pooled": MIN_IMAGES_POOLED,
                "pooled_positions": POOLED_POSITIONS,
                "dormant_tau": DORMANT_TAU,
                "constant_rtol": CONSTANT_RTOL,
                "collapse_response": COLLAPSE_RESPONSE,
                "collapse_dead_fraction": COLLAPSE_DEAD_FRACTION,
            },
            "layers": [layer.to_dict(collapse_index, self.images, evidence) for layer in self.layers],
            "summary": {
                "layers": len(self.layers),
                "filters": self.total_filters,
                "dead_filters": self.dead_filter_count,
                "dead_channels": self.dead_channel_count if measured else None,
                "constant_channels": (sum(int(layer.channel_masks()["constant"].sum()) for layer in self.layers)
                                      if measured else None),
                "dormant_channels": (sum(int(layer.channel_masks()["dormant"].sum()) for layer in self.layers)
                                     if measured else None),
                "channels_judged": self.channels_judged if measured else None,
                "dead_units": self.dead_unit_count,
                "dead_fraction": self.dead_fraction,
                "not_confirmed_channels": sum(len(layer.refused) for layer in self.layers),
                "verified_dead_units": self.verified_dead_unit_count,
                "verified_dead_fraction": self.verified_dead_fraction,
                "gate_left_out": self.left_out(),
                "dormant_check": self.dormant_check,
                "evidence": evidence,
                "near_duplicate_pairs": sum(layer.weights.duplicate_pairs for layer in self.layers),
                "collapse_layer": collapse,
                "notes": self.notes(),
            },
        }

    def table(self) -> str:
        """The human-readable table the CLI prints."""
        measured = self.images > 0
        collapse = self.collapse()
        head = ["#", "layer", "act", "filters", "dead", "dup pairs", "near-0 w"]
        if measured:
            head += ["dead ch", "zero act", "mean|a|", "max", "response", ""]
        rows = [head]
        unjudged = unconfirmed = False
        for layer in self.layers:
            w = layer.weights
            act = layer.activation or "-"
            row = [str(layer.index), layer.name, act, str(layer.filters), str(len(w.dead_filters)),
                   str(w.duplicate_pairs), f"{w.near_zero_weight_fraction:.1%}"]
            if measured and layer.activations is not None:
                a = layer.activations
                masks = layer.channel_masks()
                dead = int(masks["dead"].sum())
                detail = ""
                if dead and not layer.rectifier:
                    detail = f" ({int(masks['constant'].sum())}c/{int(masks['dormant'].sum())}d)"
                if dead and not channels_judged(layer, self.images):
                    detail += "*"
                    unjudged = True
                if layer.refused:
                    detail += f" {len(layer.refused)} nc"
                    unconfirmed = True
                row += [f"{dead}{detail}", f"{a.zero_fraction():.1%}", f"{a.mean_abs():.3g}",
                        f"{a.max():.3g}", f"{image_response(a):.3g}",
                        "<- collapse" if collapse and collapse["index"] == layer.index else ""]
            rows.append(row)
        widths = [max(len(r[i]) for r in rows if i < len(r)) for i in range(len(head))]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
        lines.append("")
        summary = (f"{len(self.layers)} conv layers, {self.total_filters:,} filters: "
                   f"{self.dead_filter_count} dead by weights")
        if measured:
            if self.channels_judged:
                summary += (f", {self.dead_channel_count} channels that do not respond on {self.images} images "
                            f"({self.dead_unit_count} dead in all, judged)")
            else:
                summary += (f", {self.dead_channel_count} channels silent on {self.images} of {self.images} "
                            f"images (not judged: fewer than {MIN_IMAGES} images)")
        summary += f"; dead fraction {self.dead_fraction:.4f}"
        lines.append(summary)
        if measured:
            lines.append("dead ch: after Relu, exactly zero everywhere; otherwise constant (c) or dormant (d, "
                         f"mean |a| <= {DORMANT_TAU:g} x the layer's average)")
        if unjudged:
            lines.append("*: reported, not judged (too few images for this layer; see the notes)")
        if unconfirmed:
            lines.append("nc: of those, silent but not confirmed (they answered held-out images, peaked near their "
                         "threshold, read such a channel, or removing them moved the outputs on held-out images): "
                         "not counted")
        if self.skipped:
            lines.append(f"{len(self.skipped)} image(s) skipped (unreadable)")
        if measured:
            if collapse:
                lines.append(f"activations collapse at layer {collapse['index']} {collapse['name']}: {collapse['reason']}")
            elif self.images < MIN_IMAGES:
                lines.append(f"collapse not judged: fewer than {MIN_IMAGES} images")
            else:
                lines.append("activations do not collapse with depth")
        lines += [f"note: {note}" for note in self.notes()]
        return "\n".join(lines)
