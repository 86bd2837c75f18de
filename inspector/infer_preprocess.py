"""Which preprocessing a model was trained with, inferred from the model itself.

For files that do not say (most files met in the wild), before a fixed guess. Two kinds of evidence:

- A BatchNormalization after the first conv (left unfolded by Paddle, torch in training mode, some
  tf2onnx exports) holds the running mean and variance of that conv's output on the training data.
  Each candidate preset gives the conv's output some per-channel mean and spread on the given images;
  the candidate whose statistics are closest to the running ones is the one the model was trained
  with. Photos are not the training set, so the comparison is robust and scale-aware: per channel,
  the distance is ``|ln(s / sigma)| + |m - mu| / max(s, sigma)`` (how many times too wide or too
  narrow the spread is, plus the offset of the mean in spreads), and the candidate's distance is the
  median over channels, so that a minority of channels that react to the images' content (text
  channels on photos) cannot decide it. The presets' input spreads differ by at least a factor of 2
  (tf vs raw, ln 2 = 0.69), so a margin of half that is demanded between the best two, and, since
  photos unlike the training data add to every candidate's distance alike, the runner-up must be
  1.5 times as far as the best.
- Otherwise (BatchNormalization folded into the conv, the common case) a wrong input scale leaves
  marks that can be measured, each in one direction only. Too small an input (ImageNet-normalised
  pixels fed to a network trained on 0..255) lets the biases take over: first-layer channels go
  silent (constant on every image). A candidate that silences clearly more channels of the first
  two conv layers with an activation than the best one (2 channels and 2% more) is ruled out. Too large an input silences
  nothing; in a classifier it shows as saturation (probability 1 on most images), which rules a
  candidate out too. Confidence itself (output entropy) grows with the input's scale in any network
  whose biases matter little, so it only chooses between candidates of the same scale (caffe and
  bgr255: the colour means subtracted or not), with a margin of 0.1 (in units of ln(classes)). What
  is left: one candidate is the answer; several, with the fallback guess ('torch') among them, no
  answer (None: the caller keeps its disclosed guess); several of one scale with the guess ruled out,
  the first (caffe before bgr255), said so in the reason; several of different scales, None.

Invariant: the figures are statistics over every position of every image (a flip of the images
is a flip of the filters, the same statistics in distribution: tested), counts and medians over
channels, so one odd channel cannot decide. What can fool it: photos far from the training data
(a text detector's text channels are silent on photos without text under any preset, which is why
only channels silenced by some candidates and not by others count), and networks whose first layers
have no biases and no BatchNormalization (nothing depends on the scale: None).

Cost: one small batch (at most ``MAX_IMAGES``) per candidate through the first conv only (the
BatchNormalization path), or through the first two conv layers and, for classifiers, the whole model
on ``OUTPUT_IMAGES`` images for the candidates not ruled out (the guess first: when it survives, the
others are not run).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from .errors import InspectorError
from .preprocess import GUESSED_PRESET, Preprocess, load_image, preset

CANDIDATES = ("caffe", "torch", "tf", "raw", "bgr255")
MAX_IMAGES = 8
# BatchNormalization path: the closest pair of presets (tf and raw) differ by ln 2 in spread.
BN_MARGIN = 0.35
BN_WORST = 2.0  # a best match farther than this (spread off by e^2 ~ 7x) is no match: None
# Photos unlike the training data add to every candidate's distance alike (a licence-plate reader's
# spread on photos is 1.4x to 2.7x its training spread under each unit-scale preset): the runner-up must
# also be 1.5 times as far as the best.
BN_RATIO = 1.5
# Folded path: a candidate whose silent fraction exceeds the best one's by this much is out.
SILENT_MARGIN = 0.02
SILENT_MIN_CHANNELS = 2
ENTROPY_MARGIN = 0.1  # in units of ln(classes)
OUTPUT_IMAGES = 4
GUESS = GUESSED_PRESET  # the resolver's fallback ('torch'): kept where nothing rules it out


def infer(model, images: Sequence[str | os.PathLike | np.ndarray],
          size: tuple[int, int] | None = None) -> tuple[Preprocess, str] | None:
    """(the preset the model was most likely trained with, a one-line reason), or None.

    ``model``: an ``inspector.api.Model``; ``images``: paths or (H, W, 3) uint8 arrays (the first
    ``MAX_IMAGES`` are used); ``size``: (H, W) to run at, else the model's own size.
    """
    evidence = scores(model, images, size)
    if evidence is None:
        return None
    return decide(evidence)


def scores(model, images, size=None) -> dict | None:
    """The evidence ``infer`` decides on: ``{"kind": "batchnorm" | "folded", ...per-candidate figures}``."""
    if not model.layers or (model.input.channels or 3) != 3 or model.input.dtype.kind != "f":
        # No conv; a gray model (the presets differ only in scale there, told apart by nothing
        # here); or integer pixels in, the preprocessing inside the graph.
        return None
    pixels = _pixels(model, list(images)[:MAX_IMAGES], size)
    if not pixels:
        return None
    norm = _first_batchnorm(model)
    if norm is not None:
        return _batchnorm_evidence(model, pixels, *norm)
    return _folded_evidence(model, pixels)


def decide(evidence: dict) -> tuple[Preprocess, str] | None:
    if evidence["kind"] == "batchnorm":
        return _decide_batchnorm(evidence)
    return _decide_folded(evidence)


# ------------------------------------------------------------------------ inputs

def _pixels(model, images, size) -> list[np.ndarray]:
    if not images:
        return []
    first = images[0] if not isinstance(images[0], np.ndarray) else None
    height, width = model.input_size(size, None, image=first)
    out = []
    for image in images:
        if isinstance(image, np.ndarray):
            array = np.asarray(image)
            if array.ndim != 3 or array.shape[-1] != 3:
                raise InspectorError(f"an image array must be (H, W, 3), not {array.shape}")
            if array.shape[:2] != (height, width):
                from PIL import Image

                array = np.asarray(Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))
                                   .resize((width, height), Image.Resampling.BILINEAR))
            out.append(array)
        else:
            out.append(load_image(image, (height, width), 3))
    return out


def _batch(model, pixels, spec: Preprocess) -> np.ndarray:
    arrays = [spec.apply(p) for p in pixels]
    if model.input.layout == "NCHW":
        arrays = [a.transpose(2, 0, 1) for a in arrays]
    return np.stack(arrays).astype(model.input.dtype, copy=False)


def _run(model, session_run, pixels, spec: Preprocess) -> list[dict]:
    """One run per candidate, or one per batch where the model's batch size is fixed (the last batch
    filled up with repeats of its images, which change no maximum, minimum or mean over them, and
    whose outputs are dropped)."""
    batch = _batch(model, pixels, spec)
    fixed = model.input.batch
    if fixed is None:
        return [session_run(batch)]
    results = []
    for start in range(0, len(batch), fixed):
        chunk = batch[start:start + fixed]
        kept = len(chunk)
        if kept < fixed:
            chunk = chunk[np.arange(fixed) % kept]
        results.append({name: value[:kept] for name, value in session_run(chunk).items()})
    return results


# ------------------------------------------------------------ BatchNormalization

def _first_batchnorm(model):
    """(the BatchNormalization's input tensor, running mean, running variance, epsilon) right after the
    first conv (through a bias Add), or None."""
    layer = model.layers[0]
    if "BatchNormalization" not in layer.affine:
        return None
    graph = model.graph
    tensor = layer.conv_output
    for _ in range(4):
        users = graph.consumers.get(tensor, [])
        if len(users) != 1:
            return None
        node = graph.nodes[users[0]]
        if node.op_type == "BatchNormalization":
            try:
                mean = np.asarray(graph.constant(node.input[3]), np.float64).reshape(-1)
                var = np.asarray(graph.constant(node.input[4]), np.float64).reshape(-1)
            except InspectorError:
                return None
            eps = next((float(a.f) for a in node.attribute if a.name == "epsilon"), 1e-5)
            if mean.shape != var.shape or mean.size != layer.filters:
                return None
            return node.input[0], mean, var, eps
        if node.op_type not in ("Add", "Identity"):
            return None
        tensor = node.output[0]
    return None


def _tensor_runner(model, tensors: list[str]):
    from .execution import check_opsets, create_session, run
    from .subgraph import cut

    check_opsets(model.file.model)
    light = cut(model.file.model, tensors, keep_inputs=[model.input.name])
    session, _ = create_session(model.file.serialized(light), model.file.folder, "cpu")
    return lambda batch: run(session, {model.input.name: np.ascontiguousarray(batch)}, tensors)


def _batchnorm_evidence(model, pixels, tensor, mean, var, eps) -> dict:
    runner = _tensor_runner(model, [tensor])
    sigma = np.sqrt(np.maximum(var, 0) + eps)
    # Channels the training data left constant carry no scale: skipped.
    informative = sigma > 1e-3 * np.median(sigma)
    figures = {}
    for name in CANDIDATES:
        outputs = [r[tensor] for r in _run(model, runner, pixels, preset(name))]
        values = np.concatenate([o.astype(np.float64) for o in outputs], axis=0)
        axes = (0,) + tuple(range(2, values.ndim))
        m = values.mean(axis=axes)
        s = values.std(axis=axes)
        tiny = 1e-12 + 1e-6 * sigma
        per_channel = (np.abs(np.log((s + tiny) / sigma)) + np.abs(m - mean) / np.maximum(s, sigma))
        distance = float(np.median(per_channel[informative]))
        figures[name] = {
            "distance": distance if np.isfinite(distance) else float("inf"),  # NaN in a file: no match
            "spread_ratio": float(np.exp(np.median(np.log((s + tiny) / sigma)[informative]))),
        }
    return {"kind": "batchnorm", "layer": model.layers[0].name, "candidates": figures,
            "channels": int(informative.sum())}


def _decide_batchnorm(evidence):
    ranked = sorted(evidence["candidates"].items(), key=lambda kv: kv[1]["distance"])
    (best, fig), (second, fig2) = ranked[0], ranked[1]
    if (fig["distance"] > BN_WORST or fig2["distance"] - fig["distance"] < BN_MARGIN
            or fig2["distance"] < BN_RATIO * fig["distance"]):
        return None
    reason = (f"the running statistics of the BatchNormalization after the first conv '{evidence['layer']}' "
              f"match its output under '{best}' (median per-channel distance {fig['distance']:.2f}; "
              f"next '{second}' {fig2['distance']:.2f})")
    return preset(best), reason


# ---------------------------------------------------------------------- folded

def _classifier_output(model) -> str | None:
    """The name of a (N, K) output with K >= 2 classes, or None."""
    for output in model.file.model.graph.output:
        dims = output.type.tensor_type.shape.dim
        if len(dims) == 2 and dims[1].HasField("dim_value") and dims[1].dim_value >= 2:
            return output.name
    return None


def _folded_evidence(model, pixels) -> dict:
    # A channel is silent after its activation; without one, only all-zero filters are constant,
    # whatever the input. So: the first two layers with an activation (among the first six).
    layers = [layer for layer in model.layers[:6] if layer.activation][:2] or model.layers[:2]
    session = model.session(layers, device="cpu")
    total = sum(layer.filters for layer in layers)
    figures = {}
    for name in CANDIDATES:
        results = _run(model, session.run, pixels, preset(name))
        silent = 0
        for layer in layers:
            maps = np.concatenate([r[layer.name] for r in results], axis=0)
            flat = np.moveaxis(maps, 1, 0).reshape(maps.shape[1], -1)
            high = flat.max(axis=1).astype(np.float64)
            low = flat.min(axis=1).astype(np.float64)
            silent += int(np.sum(high - low <= 1e-6 * np.maximum(1.0, np.abs(high))))
        figures[name] = {"silent": silent / max(total, 1), "silent_channels": silent}
    evidence = {"kind": "folded", "layers": [layer.name for layer in layers], "channels": total,
                "candidates": figures, "classifier": False}
    alive = _alive(evidence)
    classifier = _classifier_output(model)
    if classifier is not None and len(alive) > 1:
        # The whole model, for the candidates still in the running only, on a few images.
        evidence["classifier"] = True
        session = model.session(layers[:1], device="cpu", model_outputs=True)
        # The guess first: alive and not saturated, it stays among the plausible ones whatever the
        # others do (``_decide_folded``), and the answer is None without running them.
        for name in sorted(alive, key=lambda n: n != GUESS):
            results = _run(model, lambda b: session.run_with_outputs(b)[1], pixels[:OUTPUT_IMAGES], preset(name))
            logits = np.concatenate([r[classifier] for r in results], axis=0).astype(np.float64)
            probs = _as_probabilities(logits.reshape(len(logits), -1))
            entropy = -np.sum(probs * np.log(np.clip(probs, 1e-300, 1)), axis=1) / np.log(probs.shape[1])
            figures[name]["entropy"] = float(np.mean(entropy))
            figures[name]["saturated"] = float(np.mean(probs.max(axis=1) >= 1 - 1e-6))
            if name == GUESS and figures[name]["saturated"] < 0.5:
                break
    return evidence


def _alive(evidence) -> list[str]:
    """The candidates that do not silence clearly more first-layer channels than the best one
    (by at least 2 channels and 2% of them), in ``CANDIDATES`` order."""
    figures = evidence["candidates"]
    least = min(f["silent_channels"] for f in figures.values())
    margin = max(SILENT_MIN_CHANNELS, SILENT_MARGIN * evidence["channels"])
    return [n for n in CANDIDATES if figures[n]["silent_channels"] - least < margin]


def _as_probabilities(values: np.ndarray) -> np.ndarray:
    if np.all(values >= 0) and np.allclose(values.sum(axis=1), 1, atol=1e-3):
        return values
    shifted = values - values.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def _input_range(name: str) -> float:
    """How wide a preset makes the pixels: 255 for caffe and bgr255, 4.5 (torch), 2 (tf), 1 (raw)."""
    spec = preset(name)
    return 255 * spec.scale / min(spec.std)


def _decide_folded(evidence):
    figures = evidence["candidates"]
    layers = " and ".join(f"'{n}'" for n in evidence["layers"])
    alive = _alive(evidence)
    silenced = [n for n in CANDIDATES if n not in alive]
    notes = []
    if silenced:
        notes.append(f"{', '.join(repr(n) for n in silenced)} leave{'s' if len(silenced) == 1 else ''} "
                     f"{min(figures[n]['silent'] for n in silenced):.0%} or more of the first layers' channels "
                     f"({layers}) silent on every image, '{{best}}' {{best_silent}}")
    if evidence["classifier"]:
        sure = [n for n in alive if figures[n].get("saturated", 0) < 0.5]  # not run: not ruled out
        if len(sure) < len(alive):
            over = [n for n in alive if n not in sure]
            notes.append(f"{', '.join(repr(n) for n in over)} make{'s' if len(over) == 1 else ''} the classifier "
                         "saturate (probability 1 on most images: too large an input)")
        alive = sure
        # Confidence grows with the input's scale in any network whose biases matter little, so it
        # only compares candidates of one scale (caffe and bgr255: colour means subtracted or not).
        if len(alive) > 1 and len({_input_range(n) for n in alive}) == 1:
            ranked = sorted(alive, key=lambda n: figures[n]["entropy"])
            gap = figures[ranked[1]]["entropy"] - figures[ranked[0]]["entropy"]
            if gap >= ENTROPY_MARGIN:
                notes.append(f"the outputs are most confident under '{ranked[0]}' (normalised entropy "
                             f"{figures[ranked[0]]['entropy']:.2f}; '{ranked[1]}' "
                             f"{figures[ranked[1]]['entropy']:.2f})")
                return preset(ranked[0]), _fill("; ".join(notes), ranked[0], figures)
    if len(alive) == 1:
        return preset(alive[0]), _fill("; ".join(notes), alive[0], figures)
    if not alive or GUESS in alive:
        return None  # not told apart, and the fallback guess is among the plausible ones
    if len({_input_range(n) for n in alive}) != 1:
        return None  # the guess is ruled out, but what is left differs in scale: no way to choose
    best = alive[0]
    notes.append(f"{', '.join(repr(n) for n in alive[1:])} not told apart from '{best}', "
                 "the more common convention of the same scale")
    return preset(best), _fill("; ".join(notes), best, figures)


def _fill(text: str, best: str, figures) -> str:
    return text.replace("{best}", best).replace("{best_silent}", f"{figures[best]['silent']:.0%}")
