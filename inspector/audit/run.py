"""``audit()``: weights always, then the images streamed through one run per batch."""

from __future__ import annotations

import math
import os
import sys
from typing import Sequence

import numpy as np

from ..errors import InspectorError
from ..resources import DEFAULT_MAX_MEMORY, check_maps_memory
from . import ingraph, routing
from .activations import non_negative
from .images import batch_size, batches, collect_images, keyed_batches, prefetched
from .partials import Merger, batch_key, batch_partial
from .result import AuditResult, LayerAudit
from .verify import DEFAULT_TOLERANCE
from .weights import dead_filter_masks, weight_stats

# None: decode the next batch on a worker thread while a batch runs on CUDA only (on the 2-core CPU it
# was 2% slower: onnxruntime already keeps every core busy); True/False force it (tests).
PREFETCH: bool | None = None
# Where the per-channel statistics are computed: None lets ingraph decide by device.
STATISTICS = {"auto": None, "graph": True, "maps": False}
# The dormant rule is checked by ablation on (up to) this many of the images that judged it.
JUDGED_CHECK = 16


def audit(model, images: Sequence[str | os.PathLike] | None = None, *, batch: int | None = None,
          preprocess=None, size: tuple[int, int] | None = None, device: str = "auto",
          quiet: bool = False, verbose: bool = False, max_memory: int | None = None,
          statistics: str = "auto", confirm: Sequence[str | os.PathLike] | None = None,
          hold_out: bool = True, tolerance: float = DEFAULT_TOLERANCE, ray: str | None = None,
          ray_threads: int = 1, overlap: bool = True) -> AuditResult:
    """Audit ``model`` (an ``inspector.Model`` or a path): weights always, activations over ``images``.

    ``statistics``: ``graph`` reduces the maps inside the ONNX graph, ``maps`` with NumPy over the maps
    onnxruntime returns, ``auto`` the first on CUDA and the second on the CPU (``ingraph._IN_GRAPH``).

    The verdicts are then checked on images not judged on (verify.py): ``confirm`` (files or folders),
    else a deterministic share of ``images`` when enough remain to judge (``hold_out=False``: none);
    units whose mean ablation moves the outputs there past ``tolerance`` of their range are not counted.

    ``ray``: run the judged images' batches on a Ray cluster (``local``, ``local:CPUS``, ``auto`` or an
    address; distributed.py); the merged statistics, verdicts and JSON are the single-process audit's.
    ``ray_threads``: onnxruntime threads per actor (the pool holds one actor per that many CPUs).

    ``overlap=False``: the weight statistics first, then the images (the same arithmetic, one BLAS thread
    either way), for a caller that minds the peak more than the time: overlapped, both are in memory at once
    (VGG16 with one photo: 454 MB against 298 MB; `inspector view`'s background audit).
    """
    if statistics not in STATISTICS:
        raise InspectorError(f"unknown statistics '{statistics}': use {', '.join(STATISTICS)}")
    from ..api import Model, load

    if not isinstance(model, Model):
        model = load(model)
    layers = model.require_layers()
    # Reading the weights touches the model (its file, its graph): here. The statistics are numpy alone.
    read = [(layer, *_layer_weights(model, layer), routing.is_rectifier(model, layer)) for layer in layers]
    trained = _weights_trained(model)
    if not images:
        return _weight_result(model, read, trained)

    # The weight statistics need no image: a worker computes them (numpy releases the GIL) while this
    # thread opens the session, decodes and runs the first batch; the first batch's statistics wait for them.
    from concurrent.futures import Future, ThreadPoolExecutor

    from ..execution import one_blas_thread

    # The weights' products run beside onnxruntime: BLAS threads left spinning would take its cores.
    # (The pool starts its thread on the first submit: not overlapped, it starts none.)
    with one_blas_thread(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="inspector-weights") as worker:
        if overlap:
            weighed = worker.submit(_weight_result, model, read, trained)
        else:
            weighed = Future()
            weighed.set_result(_weight_result(model, read, trained))
        return _activations(model, weighed, images, batch, preprocess, size, device, quiet, verbose, layers, read,
                            max_memory, STATISTICS[statistics], (confirm, hold_out, tolerance), (ray, ray_threads))


def _weight_result(model, read, trained: bool | None) -> AuditResult:
    """The audit of the weights alone: ``read`` is [(layer, weights, bias, rectifier)]."""
    audits = []
    filters_by_node = {}
    dead = dead_filter_masks(model, [(layer, weights, bias) for layer, weights, bias, _ in read])
    for layer, weights, bias, rectifier in read:
        groups = max(1, int(layer.groups or 1))
        filters_by_node[layer.node_index] = (weights, groups)
        audits.append(LayerAudit(layer.index, layer.name, layer.op, layer.activation,
                                 tuple(layer.weight_shape), weight_stats(weights, bias, groups, dead[layer.node_index]),
                                 rectifier=rectifier))
    for (layer, *_), layer_audit in zip(read, audits):
        if not layer_audit.rectifier:
            layer_audit.outgoing = routing.outgoing_norms(model, layer, layer_audit.filters, filters_by_node)
    return AuditResult(model.name, os.fspath(model.path), trained, audits)


def _activations(model, weighed, images, batch, preprocess, size, device, quiet, verbose, layers, read,
                 max_memory=None, in_graph: bool | None = None, checking=(None, True, DEFAULT_TOLERANCE),
                 ray: tuple = (None, 1)) -> AuditResult:
    """The images streamed through one run per batch; ``weighed`` is the future of the weights' result."""
    from . import verify
    from .verdicts import MIN_IMAGES

    confirm, hold_out, tolerance = checking
    ray, ray_threads = ray
    files = collect_images(images)
    # Resolved on every image given, as the command's notes were: the held-out split must not change it.
    feeding = model.feeding(preprocess, size, files)  # inspector.inputs: the one resolver
    if confirm:
        held, source = verify.confirm_files(confirm), "--confirm"
    elif hold_out:
        files, held = verify.split(files, MIN_IMAGES)
        source = verify.describe_split(len(held), len(files) + len(held)) if held else None
    else:
        held, source = [], None
    per_batch = batch_size(model, batch)
    spec, preprocess_source, input_size = feeding.preprocess, feeding.preprocess_source, feeding.size
    # Before any batch is allocated: a size from hostile metadata must not reach onnxruntime's allocator.
    limit = DEFAULT_MAX_MEMORY if max_memory is None else max_memory
    per_image = check_maps_memory(model, layers, input_size, limit)
    if batch is None and model.input.batch is None and per_image:
        # The default batch shrinks to what fits: a 1024x1024 U-Net's maps are 840 MB an image, and 16 of
        # them were killed by the kernel at 10 GB.
        per_batch = max(1, min(per_batch, limit // per_image))
    # Fails now (wrong channel count, oversize input) rather than once per image.
    model.image_batch([np.zeros((*input_size, model.input.channels or 3), np.uint8)], spec, input_size)
    signed = {layer.name for layer, _, _, rectifier in read if not non_negative(rectifier, layer.activation)}
    skipped: list[dict] = []

    def warn(message: str) -> None:
        print(message, file=sys.stderr)

    if ray:
        from . import distributed

        result = weighed.result()
        job = distributed.Job(os.path.abspath(os.fspath(model.path)), model._layout_hint, spec, tuple(input_size),
                              tuple(distributed.LayerInfo(layer.name, layer.signed, layer.filters)
                                    for layer in result.layers), device, in_graph, ray_threads)
        merged = distributed.partials_on_ray(ray, job, files, per_batch, skipped, warn, quiet)
        counted = merged.images
        if counted:
            result.set_activations(merged)
        provider = "ray"
    else:
        counted, provider = _run_batches(model, weighed, files, spec, input_size, per_batch, skipped, warn, quiet,
                                         device, verbose, layers, signed, in_graph)
    if not counted:
        raise InspectorError(f"none of the {len(files)} images could be read (see the warnings above)")
    result = weighed.result()
    result.preprocess_source = preprocess_source
    result.images_requested = len(files) + (0 if confirm else len(held))
    result.batch, result.input_size, result.preprocess = per_batch, tuple(input_size), spec.mode
    result.provider = provider
    result.skipped.extend(skipped)
    result.images = counted
    result.dormant_check = _check_dormant(model, result, files, spec, input_size, per_batch, device, verbose,
                                          tolerance, warn)
    result.verification = _verify(model, result, held, source, spec, input_size, per_batch, device, verbose,
                                  tolerance, len(files) + len(held), warn, (layers, signed, in_graph),
                                  files[:JUDGED_CHECK])
    return result


def _run_batches(model, weighed, files, spec, input_size, per_batch, skipped, warn, quiet, device, verbose, layers,
                 signed, in_graph) -> tuple[int, str]:
    """The batches run here, one session: (images counted, the provider that ran them)."""
    from ..progress import progress

    session = ingraph.statistics_session(model, layers, signed, device, verbose, in_graph=in_graph)
    counted = 0
    stream = keyed_batches(model, files, spec, input_size, per_batch, skipped, warn)
    if PREFETCH if PREFETCH is not None else session.provider == "CUDAExecutionProvider":
        stream = prefetched(stream)
    # Each batch becomes a partial (partials.py) merged once by its key: the path a distributed audit takes.
    merger, keys_run = Merger(), []
    for inputs, real, image_keys in progress(stream, total=math.ceil(len(files) / per_batch), desc="audit",
                                             unit="batch", quiet=quiet):
        try:
            figures, maps = session.run(inputs)
        except InspectorError as exc:
            if per_batch > 1:
                raise InspectorError(f"{exc}; the model may not take batches of {per_batch}: "
                                     "try --batch 1") from None
            raise
        result = weighed.result()  # the first batch waits for the weight statistics
        key = batch_key(image_keys)
        keys_run.append(key)
        merger.add(batch_partial(result.layers, figures, maps, real, key))
        del figures, maps  # else a batch of maps (map-path layers) stays alive through the next run
        counted += real
    if counted:
        weighed.result().set_activations(merger.finish(keys_run, counted))
    return counted, session.provider


def _check_dormant(model, result, files, spec, input_size, per_batch, device, verbose, tolerance, warn):
    """verify.check_dormant on the first JUDGED_CHECK judged images, when any channel is dormant by score."""
    from . import verdicts, verify

    judged = {layer.name: verdicts.channels_judged(layer, result.images) for layer in result.layers}
    if not any(judged[layer.name] and layer.channel_masks()["dormant"].any() for layer in result.layers):
        return None
    shown = list(batches(model, files[:JUDGED_CHECK], spec, input_size, per_batch, [], warn))
    return verify.check_dormant(model, result, shown, judged, tolerance, device, verbose)


def _held_statistics(model, result, held_batches, layers, signed, device, verbose, in_graph) -> dict:
    """{layer name: ActivationStats} of the held-out batches (the judging's statistics, on them)."""
    session = ingraph.statistics_session(model, layers, signed, device, verbose, in_graph=in_graph)
    merger, keys = Merger(), []
    for i, (inputs, real) in enumerate(held_batches):
        figures, maps = session.run(inputs)
        key = batch_key([f"held-out {i}"])
        keys.append(key)
        merger.add(batch_partial(result.layers, figures, maps, real, key))
        del figures, maps
    return merger.finish(keys).layers


def _verify(model, result, held, source, spec, input_size, per_batch, device, verbose, tolerance, total, warn,
            statistics=None, judged_files=()):
    """verify.verify over the held-out images, or a Verification that says why it did not run.

    ``statistics``: (layers, signed layer names, in_graph) to measure the held-out images' statistics,
    which test the verdicts themselves before any ablation (verify.answered). The silent channels'
    margins (margins.py) are measured on ``judged_files`` (some of the judged images) and the held-out ones."""
    from . import verify, verdicts

    if not result.channels_judged:
        return None  # no channel verdict to check; the notes already say why
    if not held:
        return verify.Verification(
            "not run", f"{total} images, all used to judge; hold some out with more images "
                       f"(at least {verdicts.MIN_IMAGES + verify.MIN_HELD_OUT}) or pass --confirm IMAGES",
            tolerance=tolerance)
    skipped: list[dict] = []
    held_batches = list(batches(model, held, spec, input_size, per_batch, skipped, warn))
    result.skipped.extend(skipped)
    count = sum(real for _, real in held_batches)
    if not count:
        return verify.Verification("not run", "none of the held-out images could be read", tolerance=tolerance)
    judged = {layer.name: verdicts.channels_judged(layer, result.images) for layer in result.layers}
    held_stats = None
    if statistics is not None and any(judged[layer.name] and layer.dead_channels for layer in result.layers):
        layers, signed, in_graph = statistics
        held_stats = _held_statistics(model, result, held_batches, layers, signed, device, verbose, in_graph)

    def margin_batches():  # decoded only when some silent channel's margin is measured
        return list(batches(model, list(judged_files), spec, input_size, per_batch, [], warn)) + held_batches

    return verify.verify(model, result, held_batches, count, source, judged, tolerance, device, verbose, held_stats,
                         margin_batches)


def _weights_trained(model) -> bool | None:
    """What the converter said about the weights: True, False (random), or None (not said)."""
    from .. import metadata as md

    said = model.metadata.get(md.WEIGHTS_TRAINED, "").strip().lower()
    return {"true": True, "false": False}.get(said)


def _layer_weights(model, layer) -> tuple[np.ndarray, np.ndarray | None]:
    """(filters first, bias); 3-D convs, which cannot be drawn, are audited all the same."""
    try:
        return model.filters_and_bias(layer)
    except InspectorError:
        if layer.op != "Conv":
            raise
        weights, bias = model.graph.weights(layer)
        return np.asarray(weights, np.float32), bias
