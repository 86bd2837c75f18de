"""Whether what the audit counts as dead can go: its verdicts checked on images it did not judge on.

A channel silent on the judged images may answer the next one (a text detector's text channels on a
page), and a dormant channel's small answers may still add up downstream. So part of the images is
held out of judging (``split``: a deterministic share, or the caller's ``--confirm`` images), and
every unit counted dead is **mean-ablated** on them: its map replaced by a constant, the channel's
mean over the judged images, inside the graph (``ablation_model``: ``T * keep + fill`` after each
audited tensor, ``keep`` and ``fill`` fed per run, so one session serves every trial). The figure is
the largest change of any model output over the held-out images, as a fraction of that output's
range there (max - min). Verdicts whose removal moves it past the tolerance are not counted: the
culprits are found by bisection (layers first, then channels), keeping the largest set that stays
within the tolerance; those found are reported as "silent, not confirmed".

Before any ablation, the held-out images test the verdicts themselves (``answered``): the rule that
judged a channel is applied again to the judged and held-out images' statistics together, and a
channel it no longer calls dead (exactly zero on the judged images, nonzero on a held-out one; dormant
on the judged ones, not once the held-out ones count) answered an image it was not judged on. Its
verdict is refuted whatever its removal does to the outputs: a small output change on a few held-out
images does not make a channel that fired there silent, and a search that fills the tolerance with such
channels on 5 images overshoots it on the next 30 (CenterFace: 0.78% held out, 4.1% on unseen images).

Filters dead by their weights (all zero: the map is the bias alone, whatever the input) are provably
removable: they are ablated with the rest but never refused.

Some networks amplify float32 rounding: on a U-Net with a softmax per pixel, replacing two channels that
are constant on every image by their own mean (a change within the constant rule's 1e-6 relative) moved
the outputs by 3.65% of their range, at the few pixels near a decision boundary. So where removing the
units moves the outputs past the tolerance, the search first measures the **noise floor**: the change
when the same units are only scaled by 1 +- ``NOISE_STEP`` (a rounding-level change of each; exact zeros
stay zero), in the same session. A removal that moves the outputs no more than that floor cannot be told
from rounding: the search accepts what stays within the larger of the two (``max(tolerance, floor)``),
up to ``FLOOR_MAX_RAISE`` times the tolerance: a floor past that says the outputs cannot verify these units
at all (a sorted list of detections reorders), and the tolerance stays as it was.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import InspectorError
from . import margins

DEFAULT_TOLERANCE = 0.01
# A default split holds out ceil(N / 4) images (at least 2, at most MAX_HELD_OUT) when the judged
# rest keeps MIN_IMAGES; with fewer images nothing is held out and the channel verdicts are unverified.
HOLD_OUT_SHARE = 4
MIN_HELD_OUT = 2
MAX_HELD_OUT = 64
# Ablation runs (each over every held-out batch) the search for culprits may take; what it has not
# localised by then is refused whole (never counted on a guess).
MAX_TRIALS = 96
# The noise floor's perturbation: each ablated channel's map scaled by 1 +- 2**-20 (about 1e-6, 8 float32
# steps: the relative spread the constant rule accepts as constant; 1 + 2**-20 is exact in float32).
NOISE_STEP = 2.0 ** -20
# The floor raises the tolerance at most this many times: past it the outputs move under a rounding-level
# change as much as under a removal (an end-to-end YOLO's top-300 detections, sorted by TopK, reorder: 82% of
# their range), and the check cannot tell a unit's effect from rounding; what it cannot tell stays uncounted.
FLOOR_MAX_RAISE = 10.0


def fire_rate_bound(images: int, confidence: float = 0.95) -> float | None:
    """The upper bound, at ``confidence``, of the rate at which a unit silent on all ``images`` fires.

    Exact for a binomial with no success in N trials: 1 - (1 - confidence)**(1/N) (about 3/N).
    """
    if images <= 0:
        return None
    return 1.0 - (1.0 - confidence) ** (1.0 / images)


def split(files: list[str], min_judged: int) -> tuple[list[str], list[str]]:
    """(judged, held out): a deterministic share spread over the sorted order, or nothing held out."""
    count = len(files)
    held = min(count - min_judged, max(MIN_HELD_OUT, math.ceil(count / HOLD_OUT_SHARE)), MAX_HELD_OUT)
    if held < MIN_HELD_OUT:
        return list(files), []
    chosen = {int((i + 0.5) * count / held) for i in range(held)}
    return ([f for i, f in enumerate(files) if i not in chosen], [f for i, f in enumerate(files) if i in chosen])


@dataclass
class Target:
    """One audited tensor the ablation edits: its layout and, per channel, the judged mean."""

    tensor: str
    rank: int
    channel_axis: int
    channels: int
    layers: list = field(default_factory=list)  # the LayerAudits showing this tensor


def ablation_model(model_proto, targets: list[Target]):
    """A copy of ``model_proto`` where each target tensor T becomes ``T * keep + fill``.

    ``keep`` and ``fill`` are new graph inputs (float32, shaped to broadcast along the channel axis),
    named ``inspector_keep_<i>`` and ``inspector_fill_<i>``: keep = 1 and fill = 0 leave the model as it
    was, bit for bit; keep = 0 and fill = the mean put the channel's mean in place of its map.
    """
    import onnx
    from onnx import TensorProto, helper

    edited = onnx.ModelProto()
    edited.CopyFrom(model_proto)
    graph = edited.graph
    from .ingraph import _Names

    fresh = _Names(graph)
    producers = {out: node for node in graph.node for out in node.output}
    for i, target in enumerate(targets):
        node = producers.get(target.tensor)
        if node is None:
            raise InspectorError(f"no node produces '{target.tensor}'")
        original = fresh(f"{target.tensor}_inspector_unablated")
        node.output[list(node.output).index(target.tensor)] = original
        shape = [1] * target.rank
        shape[target.channel_axis] = target.channels
        keep, fill, scaled = f"inspector_keep_{i}", f"inspector_fill_{i}", fresh(f"{target.tensor}_inspector_kept")
        graph.input.extend([helper.make_tensor_value_info(keep, TensorProto.FLOAT, shape),
                            helper.make_tensor_value_info(fill, TensorProto.FLOAT, shape)])
        graph.node.extend([helper.make_node("Mul", [original, keep], [scaled], name=scaled),
                           helper.make_node("Add", [scaled, fill], [target.tensor], name=f"{scaled}_fill")])
    # onnxruntime sorts the nodes itself; the checker wants them in order.
    _topological(graph)
    return edited


def _topological(graph) -> None:
    """Reorder ``graph.node`` so that each node comes after the producers of its inputs."""
    from ..subgraph import subgraph_inputs

    nodes = list(graph.node)
    producer = {out: i for i, node in enumerate(nodes) for out in node.output if out}
    done: set[int] = set()
    order: list[int] = []
    for start in range(len(nodes)):
        stack = [(start, False)]
        while stack:
            i, expanded = stack.pop()
            if i in done:
                continue
            if expanded:
                done.add(i)
                order.append(i)
                continue
            stack.append((i, True))
            node = nodes[i]
            for name in (*node.input, *subgraph_inputs(node)):
                j = producer.get(name)
                if j is not None and j not in done:
                    stack.append((j, False))
    graph.ClearField("node")
    graph.node.extend(nodes[i] for i in order)


def output_change(reference: list[dict], ablated: list[dict]) -> tuple[float, str | None]:
    """The largest |ablated - reference| over the held-out images, over the output's range there.

    ``reference``/``ablated``: one {output name: array} per batch. Returns (figure, worst output).
    Outputs that are not floating point must not change at all (a changed shape or label is 100%).
    """
    worst, worst_name = 0.0, None
    for name in reference[0]:
        lo, hi, diff = math.inf, -math.inf, 0.0
        exact = True
        for ref_batch, new_batch in zip(reference, ablated):
            ref, new = ref_batch[name], new_batch[name]
            if ref.shape != new.shape:
                exact, diff = False, math.inf
                break
            if not np.issubdtype(ref.dtype, np.floating):
                if not np.array_equal(ref, new):
                    exact, diff = False, math.inf
                continue
            if ref.size:
                ref64 = ref.astype(np.float64)
                finite = ref64[np.isfinite(ref64)]
                if finite.size:
                    lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
                with np.errstate(invalid="ignore"):
                    gap = np.abs(ref64 - new.astype(np.float64))
                gap = np.where(np.isnan(ref64) & np.isnan(new), 0.0, gap)
                diff = max(diff, float(np.nanmax(np.where(np.isnan(gap), np.inf, gap))))
        span = hi - lo if hi >= lo else 0.0
        if not exact or diff == math.inf:
            figure = 1.0 if diff == math.inf and not exact else math.inf
        elif span > 0:
            figure = diff / span
        else:
            figure = 0.0 if diff == 0 else 1.0
        if figure > worst or worst_name is None:
            worst, worst_name = figure, name
    return worst, worst_name


class Ablation:
    """One session over the ablation model; ``change(ablate)`` runs every held-out batch with the
    channels in ``ablate`` ({target index: boolean mask}) replaced by their means."""

    def __init__(self, model, targets: list[Target], means: list[np.ndarray], held_out: list[tuple[np.ndarray, int]],
                 device: str = "cpu", verbose: bool = False):
        from ..execution import create_session

        self.targets, self.means = targets, means
        proto = ablation_model(model.file.model, targets)
        self.session, self.provider = create_session(model.file.serialized(proto), model.file.folder, device, verbose)
        self.input = model.input
        self.outputs = [o.name for o in proto.graph.output]
        self.held_out = held_out
        self.runs = 0
        self.reference = self._outputs({})

    def _feeds(self, ablate: dict[int, np.ndarray], scale: float | None = None) -> dict:
        """keep and fill for each target: the masked channels replaced by their means, or with ``scale``
        only multiplied by it (the noise floor's perturbation)."""
        feeds = {}
        for i, target in enumerate(self.targets):
            shape = [1] * target.rank
            shape[target.channel_axis] = target.channels
            mask = ablate.get(i)
            keep = np.ones(target.channels, np.float32)
            fill = np.zeros(target.channels, np.float32)
            if mask is not None and scale is not None:
                keep[mask] = scale
            elif mask is not None:
                keep[mask] = 0.0
                fill[mask] = self.means[i][mask]
            feeds[f"inspector_keep_{i}"] = keep.reshape(shape)
            feeds[f"inspector_fill_{i}"] = fill.reshape(shape)
        return feeds

    def _outputs(self, ablate: dict[int, np.ndarray], scale: float | None = None) -> list[dict]:
        from ..execution import run

        masks = self._feeds(ablate, scale)
        got = []
        for inputs, real in self.held_out:
            feeds = {self.input.name: np.ascontiguousarray(inputs, dtype=self.input.dtype), **masks}
            values = run(self.session, feeds, self.outputs)
            got.append({name: _first(value, real, len(inputs)) for name, value in values.items()})
        self.runs += 1
        return got

    def change(self, ablate: dict[int, np.ndarray]) -> tuple[float, str | None]:
        return output_change(self.reference, self._outputs(ablate))

    def floor(self, ablate: dict[int, np.ndarray]) -> float:
        """The noise floor of ablating ``ablate``: the larger output change of the same channels scaled
        by 1 + NOISE_STEP and by 1 - NOISE_STEP (two runs)."""
        return max(output_change(self.reference, self._outputs(ablate, np.float32(1 + sign * NOISE_STEP)))[0]
                   for sign in (1, -1))


def _first(value: np.ndarray, real: int, batch: int) -> np.ndarray:
    """The real images' part of an output whose first axis is the batch (padding dropped)."""
    if real < batch and value.ndim and value.shape[0] == batch:
        return value[:real]
    return value


@dataclass
class Verification:
    """What the check on held-out images found (``to_dict`` is the JSON's ``verification``)."""

    status: str  # confirmed | partly confirmed | not run
    reason: str | None = None
    images: int = 0  # held out
    source: str | None = None  # held out | --confirm
    tolerance: float = DEFAULT_TOLERANCE
    change_all: float | None = None  # removing everything counted dead
    change_kept: float | None = None  # removing what stays counted
    worst_output: str | None = None
    units_all: int = 0
    units_confirmed: int = 0
    refused: dict = field(default_factory=dict)  # layer name -> [channels silent but not confirmed]
    answered: int = 0  # of the refused: channels that answered held-out images (their verdict refuted)
    margin: dict = field(default_factory=dict)  # of the refused: {reason (margins.py): channels}
    trials: int = 0
    not_localised: int = 0  # refused whole when the search ran out of trials
    noise_floor: float | None = None  # measured when removing everything moved the outputs past the tolerance

    @property
    def ran(self) -> bool:
        return self.status != "not run"

    @property
    def units_refused(self) -> int:
        return sum(len(channels) for channels in self.refused.values())

    def to_dict(self) -> dict:
        return {
            "status": self.status,
            "reason": self.reason,
            "images": self.images,
            "source": self.source,
            "tolerance": self.tolerance,
            "output_change_all": _finite(self.change_all),
            "output_change_counted": _finite(self.change_kept),
            "worst_output": self.worst_output,
            "units_ablated": self.units_all,
            "units_confirmed": self.units_confirmed,
            "units_not_confirmed": self.units_refused,
            "units_answered_held_out": self.answered,
            "units_not_confirmed_by_margin": dict(self.margin),
            "margin_z_min": margins.Z_MIN,
            "noise_floor": _finite(self.noise_floor),
            "not_localised": self.not_localised,
            "trials": self.trials,
        }

    def sentence(self) -> str:
        if not self.ran:
            return f"verdicts not verified: {self.reason}"
        head = (f"removing the {self.units_all:,} units called dead moves the output by {_percent(self.change_all)} of "
                f"its range on {self.images} image(s) not used to judge them ({self.source})")
        if not self.units_refused:
            return head + f"; all confirmed ({floor_words(self.tolerance, self.noise_floor)})"
        where = ", ".join(list(self.refused)[:3]) + (" ..." if len(self.refused) > 3 else "")
        answered = f", {self.answered:,} of them answered a held-out image" if self.answered else ""
        answered += "".join(f", {count:,} {reason}" for reason, count in self.margin.items())
        tail = (f"; {self.units_refused:,} silent but not confirmed (in {len(self.refused)} layer(s): {where}"
                f"{answered}), not counted; the {self.units_confirmed:,} counted move it by "
                f"{_percent(self.change_kept)} ({floor_words(self.tolerance, self.noise_floor)})")
        if self.not_localised:
            tail += f"; {self.not_localised:,} of them refused whole after {self.trials} ablation runs"
        return head + tail


def floor_words(tolerance: float, floor: float | None) -> str:
    """The tolerance as the search applied it, in words (see ``search``)."""
    if floor is not None and floor > FLOOR_MAX_RAISE * tolerance:
        return (f"tolerance {_percent(tolerance)}; scaling the same units by 1 +- {NOISE_STEP:.1e} alone moves the "
                f"outputs by {_percent(floor)}: past {FLOOR_MAX_RAISE:g}x the tolerance, the outputs cannot tell "
                "their effect from rounding")
    if floor is not None and floor > tolerance:
        return (f"tolerance {_percent(tolerance)}, raised to the noise floor, {_percent(floor)}: what scaling the "
                f"same units by 1 +- {NOISE_STEP:.1e} does")
    return f"tolerance {_percent(tolerance)}"


def _finite(value: float | None) -> float | None:
    if value is None:
        return None
    return float(value) if math.isfinite(value) else 1.0


def _percent(value: float | None) -> str:
    if value is None:
        return "n/a"
    if not math.isfinite(value):
        return "100%+"
    if value == 0:
        return "0"
    return f"{value:.2%}" if value >= 1e-4 else f"{value:.1e}"


def targets_of(model, result, select) -> tuple[list[Target], list[np.ndarray], str | None]:
    """The tensors to edit (those where ``select(layer_audit)`` names a unit), their judged channel means;
    or why they cannot be edited."""
    from .ingraph import batch_and_channel_axes, float32_tensors

    layers = {layer.index: layer for layer in model.require_layers()}
    by_tensor: dict[str, Target] = {}
    for layer_audit in result.layers:
        provable, candidates = select(layer_audit)
        if not provable and not candidates:
            continue
        layer = layers[layer_audit.index]
        axes = batch_and_channel_axes(layer)
        if axes is None or layer.quantization == "qlinear":
            return [], [], f"layer {layer.name}'s output has a layout the ablation cannot edit"
        target = by_tensor.setdefault(layer.output, Target(layer.output, len(layer.weight_shape), axes[1],
                                                           layer_audit.filters))
        if target.channels != layer_audit.filters:
            return [], [], f"two layers of different widths show tensor {layer.output}"
        target.layers.append(layer_audit)
    if not by_tensor:
        return [], [], None
    floats = float32_tensors(model.file.model, list(by_tensor))
    odd = [name for name in by_tensor if name not in floats]
    if odd:
        return [], [], f"tensor {odd[0]} is not float32"
    targets = list(by_tensor.values())
    means = []
    for target in targets:
        stats = target.layers[0].activations
        means.append((stats.total / max(1, stats.images * stats.elements_per_map)).astype(np.float32))
    return targets, means, None


def other_inputs(model) -> list[str]:
    graph = model.file.model.graph
    constants = {t.name for t in graph.initializer}
    return [i.name for i in graph.input if i.name != model.input.name and i.name not in constants]


@dataclass
class Search:
    """What ``search`` found: the figures, and the units it refused."""

    change_all: float
    worst_output: str | None
    change_kept: float
    refused: list  # [(target, channel)]
    not_localised: int
    trials: int
    accepted_any: bool
    floor: float | None = None  # the noise floor, measured when removing everything moved past the tolerance


def search(ablation: Ablation, targets: list[Target], select, tolerance: float) -> Search:
    """Ablate every unit ``select`` names; when the outputs move past ``tolerance``, measure the noise
    floor of that removal (``Ablation.floor``; it raises the tolerance up to FLOOR_MAX_RAISE times) and,
    when they move past the raised tolerance too, bisect (tensors first, then channels) for the largest
    set that stays within it. ``select(layer_audit)`` gives (provable channels, candidate channels):
    provable ones are always ablated, never refused."""
    provable: dict[int, np.ndarray] = {}
    candidates: list[tuple[int, int]] = []
    for t, target in enumerate(targets):
        mask = np.zeros(target.channels, bool)
        chosen: set[int] = set()
        for layer_audit in target.layers:
            sure, maybe = select(layer_audit)
            mask[list(sure)] = True
            chosen |= set(maybe)
        provable[t] = mask
        candidates += [(t, c) for c in sorted(chosen) if not mask[c]]

    def masks(units: list[tuple[int, int]]) -> dict[int, np.ndarray]:
        out = {t: m.copy() for t, m in provable.items()}
        for t, c in units:
            out[t][c] = True
        return out

    if not candidates and not any(m.any() for m in provable.values()):
        # Nothing left to remove (every silent channel refused before the search): the outputs are the
        # reference's, with no run over the held-out images.
        return Search(0.0, None, 0.0, [], 0, ablation.runs, False)
    change_all, worst = ablation.change(masks(candidates))
    kept, accepted, refused, not_localised, floor = change_all, [], [], 0, None
    if change_all > tolerance:
        # One floor for the whole search: that of the largest removal, used for each part of it too.
        floor = ablation.floor(masks(candidates))
        if floor <= FLOOR_MAX_RAISE * tolerance:
            tolerance = max(tolerance, floor)
    if change_all > tolerance:
        # The provable units alone (nothing ablated, and no run needed, when there are none).
        kept = ablation.change(masks([]))[0] if any(m.any() for m in provable.values()) else 0.0
        if kept > tolerance:  # the provable units alone: nothing else can be confirmed beside them
            refused, not_localised = list(candidates), len(candidates)
        queue = _halves(candidates) if kept <= tolerance else []
        while queue:
            group = queue.pop(0)
            if ablation.runs >= MAX_TRIALS:
                refused += group
                not_localised += len(group)
                continue
            change, _ = ablation.change(masks(accepted + group))
            if change <= tolerance:
                accepted += group
                kept = change
            elif len(group) == 1:
                refused += group
            else:
                queue[:0] = _halves(group)
    else:
        accepted = candidates
    return Search(change_all, worst, kept, refused, not_localised, ablation.runs,
                  bool(accepted) or any(m.any() for m in provable.values()), floor)


def answered(result, held_stats: dict | None, judged: dict) -> dict[str, set[int]]:
    """{layer name: channels judged dead that the held-out images refute}: the rule that judged them,
    applied to the judged and held-out images' statistics together, no longer calls them dead. (Their
    silent siblings stay candidates: a channel that stays silent on every image is not refuted by its
    neighbour's answer.)

    ``held_stats``: {layer name: ActivationStats of the held-out images}. Filters dead by their weights
    are left alone (provably removable, whatever they did)."""
    from .activations import merge
    from .verdicts import channel_verdicts

    out: dict[str, set[int]] = {}
    for layer_audit in result.layers:
        held = (held_stats or {}).get(layer_audit.name)
        if held is None or not held.images or not judged.get(layer_audit.name, False):
            continue
        dead = set(layer_audit.dead_channels) - set(layer_audit.weights.dead_filters)
        if not dead:
            continue
        judged_masks = layer_audit.channel_masks()
        together = channel_verdicts(merge(layer_audit.activations, held), layer_audit.rectifier, layer_audit.outgoing)
        # A verdict holds by its own rule: a channel constant on the judged images must stay constant (one
        # that varies on a held-out image answered it, however small its answers: SSCD's int8 channels, 0 on
        # every judged photo, moved its held-out outputs by 1.5% while their magnitudes passed as dormant).
        gone = {c for c in dead
                if not (together["constant"][c] if judged_masks["constant"][c] else together["dead"][c])}
        if gone:
            out[layer_audit.name] = gone
    return out


def verify(model, result, held_out: list[tuple[np.ndarray, int]], images: int, source: str, judged: dict,
           tolerance: float = DEFAULT_TOLERANCE, device: str = "cpu", verbose: bool = False,
           held_stats: dict | None = None, margin_batches=None) -> Verification:
    """Mean-ablate every unit ``result`` counts dead, on ``held_out`` batches; refuse those that move outputs.

    ``judged``: {layer name: whether its channels were judged}. ``held_stats``: the held-out images'
    ActivationStats per layer, when measured: channels whose verdict they refute (``answered``) are refused
    before the ablation search, and so are the silent channels whose margin (margins.py, measured on
    ``margin_batches``: batches, or a function that returns them; the held-out ones by default) leaves them
    unconfirmed. Sets each LayerAudit's ``refused``.
    """
    check = Verification("confirmed", images=images, source=source, tolerance=tolerance)
    others = other_inputs(model)
    if others:
        return Verification("not run", f"the model takes other inputs besides the image ({others[0]})",
                            images=images, source=source, tolerance=tolerance)
    refuted = answered(result, held_stats, judged)
    answered_count = sum(len(channels) for channels in refuted.values())
    near = margins.not_confirmed(model, result, judged, refuted, margin_batches if margin_batches is not None
                                 else held_out, device, verbose)
    for name, reasons in near.items():
        refuted.setdefault(name, set()).update(reasons)
        for reason in reasons.values():
            check.margin[reason] = check.margin.get(reason, 0) + 1

    def select_all(layer_audit):
        return (layer_audit.weights.dead_filters,
                layer_audit.dead_channels if judged.get(layer_audit.name, False) else [])

    def select(layer_audit):
        provable, candidates = select_all(layer_audit)
        gone = refuted.get(layer_audit.name, set())
        return provable, [c for c in candidates if c not in gone]

    targets, means, why = targets_of(model, result, select_all)
    if why:
        return Verification("not run", why, images=images, source=source, tolerance=tolerance)
    if not targets:
        check.change_all = check.change_kept = 0.0
        return check
    ablation = Ablation(model, targets, means, held_out, device, verbose)
    found = search(ablation, targets, select, tolerance)
    check.units_all = sum(len(set(select_all(la)[0]) | set(select_all(la)[1])) for t in targets for la in t.layers)
    check.change_all, check.worst_output, check.change_kept = found.change_all, found.worst_output, found.change_kept
    check.noise_floor = found.floor
    refused = list(found.refused)
    if refuted:
        # The figure for everything counted dead, the refuted channels included (one more run).
        everything = {t: np.zeros(target.channels, bool) for t, target in enumerate(targets)}
        for t, target in enumerate(targets):
            for layer_audit in target.layers:
                provable, candidates = select_all(layer_audit)
                everything[t][list(provable) + list(candidates)] = True
                refused += [(t, c) for c in refuted.get(layer_audit.name, ()) if (t, c) not in refused]
        check.change_all, check.worst_output = ablation.change(everything)
        check.answered = answered_count
    check.trials, check.not_localised = ablation.runs, found.not_localised
    check.units_confirmed = check.units_all - len(set(refused))
    for t, c in dict.fromkeys(refused):
        for layer_audit in targets[t].layers:
            if c in layer_audit.dead_channels:
                layer_audit.refused.add(c)
                check.refused.setdefault(layer_audit.name, []).append(c)
    for channels in check.refused.values():
        channels.sort()
    if refused:
        check.status = "partly confirmed" if found.accepted_any else "not confirmed"
    return check


def check_dormant(model, result, judged_batches: list[tuple[np.ndarray, int]], judged: dict,
                  tolerance: float = DEFAULT_TOLERANCE, device: str = "cpu", verbose: bool = False) -> dict | None:
    """The dormant rule checked on the images that judged it: its channels (small beside their siblings)
    mean-ablated together on ``judged_batches``; those whose removal moves the outputs past ``tolerance``
    are not dormant (small, but the network amplifies them). Sets each LayerAudit's ``not_dormant``;
    returns {"change_all", "change_kept", "not_dormant", "trials", "noise_floor", "tolerance"} or None when
    there was nothing to check (the noise floor: see ``search``; None where the removal stayed within the
    tolerance)."""
    if other_inputs(model):
        return None

    def select(layer_audit):
        if not judged.get(layer_audit.name, False):
            return [], []
        return [], [int(i) for i in np.flatnonzero(layer_audit.channel_masks()["dormant"])]

    targets, means, why = targets_of(model, result, select)
    if why or not targets:
        return None
    ablation = Ablation(model, targets, means, judged_batches, device, verbose)
    found = search(ablation, targets, select, tolerance)
    for t, c in found.refused:
        for layer_audit in targets[t].layers:
            layer_audit.not_dormant.add(c)
    return {"change_all": _finite(found.change_all), "change_kept": _finite(found.change_kept),
            "not_dormant": len(found.refused), "trials": found.trials, "noise_floor": _finite(found.floor),
            "tolerance": tolerance}


def _halves(units: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """Split a group in two: by tensor while it spans several (layers first), else by channel."""
    tensors = list(dict.fromkeys(t for t, _ in units))
    if len(tensors) > 1:
        first = set(tensors[: len(tensors) // 2])
        return [[u for u in units if u[0] in first], [u for u in units if u[0] not in first]]
    middle = len(units) // 2
    return [units[:middle], units[middle:]]


def describe_split(held: int, total: int) -> str:
    step = max(1, round(total / max(1, held)))
    every = "every image" if step == 1 else f"every {_ordinal(step)}"
    return f"held out {held} of {total} ({every}, deterministic)"


def _ordinal(n: int) -> str:
    """2nd, 3rd, 4th, 11th, 21st..."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def confirm_files(paths) -> list[str]:
    from .images import collect_images

    files = collect_images(paths)
    if not files:
        raise InspectorError("--confirm: no images among the paths given")
    return [os.fspath(f) for f in files]
