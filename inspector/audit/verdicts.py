"""The audit's verdicts on channels and on depth, each one unchanged by a function-preserving rescaling.

Channels (need at least ``MIN_IMAGES`` images, ``MIN_IMAGES_POOLED`` for maps of at most
``POOLED_POSITIONS`` positions; with fewer the figures are reported, not judged):

- after a rectifier (Relu, Relu6/Clip with a lower bound >= 0) a channel is **dead** when it is
  exactly zero on every image and position. Exact zeros do not move when the channel is scaled.
- after anything else (no activation, LeakyRelu, SiLU, HardSwish, GELU, Tanh, Sigmoid...) negative
  values are answers, not silence (a detector's class logits are negative almost everywhere). A
  channel is dead when it does not respond to its input: **constant** over all images and positions
  (to ``CONSTANT_RTOL``), or **dormant** (Sokar et al. 2023): its mean |activation| is at most
  ``DORMANT_TAU`` times its layer's average. Where a rescaling could change the magnitudes (the
  channel is read only by convs, through ops that scale with it), each channel's mean |activation|
  is multiplied by the norm of the weights that read it first, which the rescaling leaves alone.

Collapse: the first main-path layer that stops answering its input and from which no later layer
recovers: more than ``COLLAPSE_DEAD_FRACTION`` of its channels dead, or its **image response** under
``COLLAPSE_RESPONSE``. The image response is the mean over channels of (standard deviation over
images of the channel's map mean) / (the channel's RMS): how much the output still changes between
images, relative to its own magnitude. Scaling a channel changes both by the same factor; a sparse
but input-dependent layer keeps a high response. Gates (bounded activations) and 1x1 pooled branches
are neither flagged nor used.
"""

from __future__ import annotations

import numpy as np

MIN_IMAGES = 8
# A 1x1 map (a squeeze-and-excite or other pooled branch) gives one value per image, not a map's worth:
# its channels need more images before silence means death (PP-OCRv4 det: 43 of its SE units silent
# on 8 photos answered one of 3 more).
MIN_IMAGES_POOLED = 32
# Maps this small (4x4 and under: the last stages of a network fed 32x32, pooled branches) see the whole
# image at every position: their values are a handful per image, not a map's worth, and a channel silent
# on 12 images answered 1 to 3 of 34 more (CenterFace's 2x2 and 4x4 stages).
POOLED_POSITIONS = 16
DORMANT_TAU = 0.01
CONSTANT_RTOL = 1e-6
COLLAPSE_RESPONSE = 1e-3
COLLAPSE_DEAD_FRACTION = 0.99
# Bounded activations: the layer is a gate, not the main path.
GATE_ACTIVATIONS = frozenset({"Sigmoid", "HardSigmoid", "Tanh", "Softsign"})


def channel_verdicts(stats, rectifier: bool, outgoing: np.ndarray | None) -> dict[str, np.ndarray]:
    """Boolean masks per channel: ``all_zero``, ``constant``, ``dormant`` and ``dead`` (their verdict),
    plus the ``dormant_score`` each channel was judged by (None-free: 0 for an all-zero layer)."""
    channels = stats.channels
    all_zero = stats.all_zero_channels()
    if rectifier:
        no = np.zeros(channels, bool)
        return {"all_zero": all_zero, "constant": no, "dormant": no, "dead": all_zero,
                "dormant_score": None}
    constant = stats.constant_channels(CONSTANT_RTOL)
    magnitude = stats.channel_mean_abs()
    if outgoing is not None and len(outgoing) == channels and float(np.max(outgoing, initial=0.0)) > 0:
        # (A reader whose weights are all zero is the dead layer, not this one: raw magnitudes then.)
        magnitude = magnitude * outgoing
    average = float(magnitude.mean()) if channels else 0.0
    score = magnitude / average if average > 0 else np.zeros(channels)
    dormant = (score <= DORMANT_TAU) & ~constant
    return {"all_zero": all_zero, "constant": constant, "dormant": dormant, "dead": constant | dormant,
            "dormant_score": score}


def channels_judged(layer_audit, images: int) -> bool:
    """Enough images to judge this layer's channels: MIN_IMAGES, or MIN_IMAGES_POOLED for maps of at most
    POOLED_POSITIONS positions."""
    acts = layer_audit.activations
    if acts is None or images < MIN_IMAGES:
        return False
    return acts.elements_per_map > POOLED_POSITIONS or images >= MIN_IMAGES_POOLED


def is_main_path(layer_audit) -> bool:
    acts = layer_audit.activations
    return not (layer_audit.activation in GATE_ACTIVATIONS or acts is None or acts.elements_per_map <= 1)


def image_response(stats) -> float | None:
    if not stats.images:
        return None
    return float(stats.channel_image_response().mean()) if stats.channels else 0.0


def collapse(layer_audits, images: int) -> dict | None:
    """The layer where the network stops answering its input (see the module docstring), or None."""
    if images < max(2, MIN_IMAGES):
        return None
    main = []
    for layer in layer_audits:
        if not is_main_path(layer):
            continue
        dead = layer.channel_masks()["dead"]
        dead_fraction = float(dead.mean()) if len(dead) else 0.0
        response = image_response(layer.activations)
        stopped = dead_fraction > COLLAPSE_DEAD_FRACTION or (response is not None and response < COLLAPSE_RESPONSE)
        main.append((layer, stopped, dead_fraction, response))
    for i, (layer, stopped, dead_fraction, response) in enumerate(main):
        if stopped and all(later for _, later, _, _ in main[i:]):
            if dead_fraction > COLLAPSE_DEAD_FRACTION:
                reason = f"{dead_fraction:.1%} of its channels are dead"
            else:
                reason = (f"its output hardly changes between images (image response {response:.2g}, under "
                          f"{COLLAPSE_RESPONSE:g})")
            if i + 1 < len(main):
                reason += ", and no later layer recovers"
            return {"index": layer.index, "name": layer.name, "reason": reason}
    return None
