"""The images an audit streams: what the user names (inspector.datasets), batch sizes, keyed batches."""

from __future__ import annotations

import os
from typing import Iterable, Iterator, Sequence

import numpy as np

from ..datasets import IMAGE_EXTENSIONS  # noqa: F401 - re-exported (inspector.audit)
from ..errors import InspectorError

DEFAULT_BATCH = 16


def collect_images(paths: Iterable[str | os.PathLike], recursive: bool = False) -> list[str]:
    """The images ``paths`` name: files as given, directories expanded to their image files (sorted;
    ``recursive``: their subfolders too), globs, lists of paths and tar shards (inspector.datasets)."""
    from ..datasets import collect

    return collect(paths, recursive)


def batch_size(model, requested: int | None) -> int:
    """Batch for the model: its fixed batch dimension, else ``requested`` (default 16)."""
    fixed = model.input.batch
    if fixed is None:
        return requested or DEFAULT_BATCH
    if requested is not None and requested != fixed:
        raise InspectorError(
            f"--batch {requested} does not fit: the model's input '{model.input.name}' has a fixed batch "
            f"dimension of {fixed}; leave --batch out (or pass --batch {fixed})")
    return fixed


def batches(model, files: Sequence[str], spec, size, per_batch: int, skipped: list[dict],
            warn) -> Iterator[tuple[np.ndarray, int]]:
    """(preprocessed batch, real images in it); unreadable images are reported and skipped."""
    for inputs, real, _ in keyed_batches(model, files, spec, size, per_batch, skipped, warn):
        yield inputs, real


def keyed_batches(model, files: Sequence, spec, size, per_batch: int, skipped: list[dict],
                  warn) -> Iterator[tuple[np.ndarray, int, list[str]]]:
    """(preprocessed batch, real images in it, their keys); unreadable images are reported and skipped.

    A key is the image's position in ``files`` and its ``image_key``: the same file listed twice is two
    images, and a batch made again from the same files has the same keys (partials.batch_key)."""
    pending: list[np.ndarray] = []
    keys: list[str] = []
    for position, path in enumerate(files):
        try:
            pending.append(model.image_batch([path], spec, size))
        except InspectorError as exc:
            skipped.append({"path": image_key(path), "reason": str(exc)})
            warn(f"inspector: warning: skipped {image_key(path)}: {exc}")
            continue
        keys.append(f"{position}\t{image_key(path)}")
        if len(pending) == per_batch:
            yield np.concatenate(pending), per_batch, keys
            pending, keys = [], []
    if pending:
        real = len(pending)
        if model.input.batch is not None:  # a fixed batch dimension: pad, and ignore the padding
            pending += [pending[-1]] * (per_batch - real)
        yield np.concatenate(pending), real, keys


def image_key(image) -> str:
    """An image's key: its path, or (a tar member) its shard and member name."""
    return str(image) if not isinstance(image, (str, os.PathLike)) else os.fspath(image)


def prefetched(stream: Iterator):
    """``stream``'s items, the next one made on a worker thread while the caller works on this one.

    The audit on CUDA decodes and preprocesses batch k+1 while the GPU runs batch k (both release the
    GIL): the host's decoding would otherwise leave the GPU idle. One batch of inputs ahead, no more.
    """
    from concurrent.futures import ThreadPoolExecutor

    end = object()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="inspector-decode") as worker:
        pending = worker.submit(next, stream, end)
        while True:
            item = pending.result()  # re-raises the worker's exception here
            if item is end:
                return
            pending = worker.submit(next, stream, end)
            yield item
