"""The audit's batches on a Ray cluster (``--ray``): Ray Data actors each holding one statistics session.

Only imported with ``--ray``; Ray is an optional extra (``pip install 'inspector-cnn[ray]'``).

The driver cuts the image list into the batches the single-process audit would make (same images, same
order, same keys), and hands Ray Data one row per batch: its key and its images (paths, or tar members
by shard and offset). ``map_batches`` runs them on a pool of actors (``ActorPoolStrategy``), each actor
holding one ``ingraph.StatisticsSession`` of the model (read from a path every node can see); each batch gives one row back: its key and its ``partials.AuditPartial``, pickled. The
driver streams those rows, merges them through ``partials.Merger`` (a retried batch's second row is
dropped by key) and fails when a batch never came back, so every image counts exactly once.
"""

from __future__ import annotations

import pickle
from typing import NamedTuple

import numpy as np

from ..errors import InspectorError

# Each actor is counted for half of the CPUs its session's threads use: a 2-core node still schedules Ray
# Data's own tasks beside the actors (and a 1-CPU node never waits for a whole free CPU).
ACTOR_CPUS = 0.5
# A run where no batch moves for this long fails with one line instead of hanging (Ray Data's guard).
NO_PROGRESS_S = 600


class LayerInfo(NamedTuple):
    """What ``partials.batch_partial`` reads of a LayerAudit, small enough to ship to every actor."""

    name: str
    signed: bool
    filters: int


class Job(NamedTuple):
    """What every actor needs to rebuild the driver's session and feeding."""

    model_path: str
    layout: str | None
    spec: object  # preprocess.Preprocess
    size: tuple[int, int]
    layers: tuple[LayerInfo, ...]
    device: str
    in_graph: bool | None
    threads: int  # onnxruntime intra-op threads per actor: its share of the CPUs (the pool is CPUs / threads)


def connect(target: str):
    """``ray.init`` for ``--ray``: ``local`` or ``local:CPUS`` (a cluster started here), ``auto``, or an address."""
    try:
        import ray
    except ImportError:
        raise InspectorError("--ray needs Ray Data: pip install 'inspector-cnn[ray]'") from None
    if ray.is_initialized():
        return ray
    kwargs = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if target == "local" or target.startswith("local:"):
        cpus = target.partition(":")[2]
        if cpus and not (cpus.isdigit() and int(cpus) > 0):
            raise InspectorError(f"--ray {target}: give local:CPUS with a whole number of CPUs, e.g. local:4")
        ray.init(num_cpus=int(cpus) if cpus else None, **kwargs)
    else:
        try:
            ray.init(address=target, **kwargs)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise InspectorError(f"--ray {target}: cannot reach a Ray cluster ({exc})") from None
    return ray


def plan(files, per_batch: int) -> list[tuple[str, list]]:
    """(batch key, [(label, image)]) for each batch, keyed as ``images.keyed_batches`` keys them when none
    is skipped; each image with an absolute path, its label as given (for the skip report)."""
    from .images import image_key
    from .partials import batch_key

    chunks = []
    for start in range(0, len(files), per_batch):
        chunk = list(files[start:start + per_batch])
        keys = [f"{start + i}\t{image_key(image)}" for i, image in enumerate(chunk)]
        chunks.append((batch_key(keys), [(image_key(image), _absolute(image)) for image in chunk]))
    return chunks


def _absolute(image):
    """The image as a worker finds it: a worker's working directory is not the driver's."""
    import os

    from ..datasets import ParquetRow, TarMember

    if isinstance(image, TarMember):
        return TarMember(os.path.abspath(image.shard), image.member, image.offset, image.size)
    if isinstance(image, ParquetRow):
        return ParquetRow(os.path.abspath(image.file), image.group, image.row, image.key)
    return os.path.abspath(os.fspath(image))


class _AuditActor:
    """One onnxruntime session per actor; ``__call__`` turns rows of batches into rows of partials."""

    def __init__(self, job: Job):
        from .. import execution
        from ..api import load
        from . import ingraph

        # Its share of the node, not one thread a core: actors on one node would otherwise each start as
        # many threads as the node has cores, and their per-worker throughput would not be comparable.
        execution.INTRA_OP_THREADS = job.threads
        self.job = job
        self.model = load(job.model_path, layout=job.layout)
        layers = self.model.require_layers()
        signed = {layer.name for layer in job.layers if layer.signed}
        self.session = ingraph.statistics_session(self.model, layers, signed, job.device, in_graph=job.in_graph)

    def __call__(self, rows: dict) -> dict:
        from .partials import batch_partial

        keys, partials = [], []
        for key, blob in zip(rows["key"], rows["images"]):
            images = pickle.loads(blob)
            pixels, skipped = [], []
            for label, image in images:
                try:
                    pixels.append(self.model.image_batch([image], self.job.spec, self.job.size))
                except InspectorError as exc:
                    skipped.append({"path": label, "reason": str(exc)})
            partial = None
            if pixels:
                real = len(pixels)
                fixed = self.model.input.batch
                if fixed is not None:
                    pixels += [pixels[-1]] * (fixed - real)
                figures, maps = self.session.run(np.concatenate(pixels))
                partial = batch_partial(self.job.layers, figures, maps, real, str(key))
            keys.append(str(key))
            partials.append(pickle.dumps((partial, skipped), protocol=pickle.HIGHEST_PROTOCOL))
        return {"key": np.array(keys, dtype=object), "partial": np.array(partials, dtype=object)}


def partials_on_ray(target: str, job: Job, files, per_batch: int, skipped: list[dict], warn, quiet: bool):
    """Every batch's partial computed on the cluster and merged exactly once: the merged AuditPartial."""
    from .partials import AuditPartial, Merger

    ray = connect(target)
    import logging

    import ray.data

    logging.getLogger("ray.data").setLevel(logging.ERROR)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the driver shows its own count of batches
    if hasattr(context, "execution_no_progress_timeout_s"):
        context.execution_no_progress_timeout_s = NO_PROGRESS_S
    if hasattr(context, "wait_for_min_actors_s"):
        context.wait_for_min_actors_s = NO_PROGRESS_S

    chunks = plan(files, per_batch)
    rows = [{"key": key, "images": pickle.dumps(images, protocol=pickle.HIGHEST_PROTOCOL)} for key, images in chunks]
    cpus = ray.cluster_resources().get("CPU", 1)
    workers = max(1, int(cpus // job.threads))
    dataset = ray.data.from_items(rows, override_num_blocks=min(len(rows), max(1, workers * 4)))
    # A fixed pool, one actor per ``threads`` CPUs of the cluster, spread over the nodes from the start
    # (SPREAD: with fractional requests, two actors would otherwise fit on one node's single CPU).
    compute = ray.data.ActorPoolStrategy(size=min(workers, len(rows)))
    gpus = 1 if job.device == "cuda" else 0
    results = dataset.map_batches(_AuditActor, fn_constructor_args=(job,), batch_size=1, compute=compute,
                                  num_cpus=ACTOR_CPUS * job.threads, num_gpus=gpus, batch_format="numpy",
                                  scheduling_strategy="SPREAD")
    merger = Merger()
    expected = [key for key, _ in chunks]
    seen: set[str] = set()
    try:
        from ..progress import progress

        # Streamed: one partial in memory at a time, merged as it comes.
        for row in progress(results.iter_rows(), total=len(chunks), desc="audit on Ray", unit="batch", quiet=quiet):
            key = str(row["key"])
            if key in seen:
                merger.duplicates += 1
                continue  # a retried batch: counted once already
            seen.add(key)
            partial, lost = pickle.loads(row["partial"])
            for item in lost:
                skipped.append(item)
                warn(f"inspector: warning: skipped {item['path']}: {item['reason']}")
            merger.add(partial if partial is not None else AuditPartial(0, {}, frozenset({key})))
    except InspectorError:
        raise
    except Exception as exc:  # noqa: BLE001 - Ray's errors (a task's, a timeout) become one line
        raise InspectorError(f"the audit on Ray failed: {_one_line(exc)}") from None
    expected_images = sum(len(images) for _, images in chunks) - len(skipped)
    return merger.finish(expected, expected_images)


def _one_line(exc: BaseException) -> str:
    """The innermost cause of a Ray error, on one line."""
    cause = getattr(exc, "cause", None) or exc.__cause__
    while cause is not None and (getattr(cause, "cause", None) or cause.__cause__) is not None:
        cause = getattr(cause, "cause", None) or cause.__cause__
    text = str(cause or exc).strip().splitlines()
    return f"{type(cause or exc).__name__}: {text[-1] if text else ''}"
