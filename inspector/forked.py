"""Draw on two cores for real: a forked child draws some of the pictures while this process draws the rest.

Threads do not get there: drawing a grid is hundreds of small Pillow calls per
picture (one per tile), and those hold the GIL. On VGG16's 13 map grids two
threads were no faster than one. A child forked after the feature maps exist
reads them copy-on-write (no copy, no pickling of maps) and sends back only
what each ``draw`` returned.

The child runs nothing but the caller's ``draw`` on data already in memory
(NumPy, Pillow, zlib; no onnxruntime session is alive by then, and no lock it
could need is held by another thread), then leaves with ``os._exit`` so that no
buffer, atexit hook or temp-file cleanup of the parent runs twice. Where
``os.fork`` does not exist, or on one core, the caller's thread pool is used.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import warnings
from typing import Callable, Iterator, Sequence

_HEADER = struct.Struct(">IQ")  # item index, length of the pickled result


def available(items: int) -> bool:
    return hasattr(os, "fork") and items >= 2 and (os.cpu_count() or 1) >= 2


def split(costs: Sequence[float]) -> tuple[list[int], list[int]]:
    """Indices for (this process, the child): the largest first, each to the lighter side."""
    mine: list[int] = []
    theirs: list[int] = []
    load = [0.0, 0.0]
    for index in sorted(range(len(costs)), key=lambda i: -costs[i]):
        side = 0 if load[0] <= load[1] else 1
        (mine if side == 0 else theirs).append(index)
        load[side] += costs[index]
    return sorted(mine), sorted(theirs)


def draw_forked(draw: Callable, items: Sequence, costs: Sequence[float]) -> Iterator:
    """``draw(item)`` for every item, some in a forked child; yields the results in the items' order.

    Results must pickle. An exception in the child is raised here (pickled with it, or
    as a RuntimeError carrying its message).
    """
    items = list(items)
    mine, theirs = split(costs)
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns about forking a process that has threads: onnxruntime's and
        # OpenBLAS's idle ones. The child touches neither (see the module's docstring).
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: draw, report, leave without running anything of the parent's
        os.close(read_end)
        code = 0
        try:
            for index in theirs:
                _send(write_end, index, ("ok", draw(items[index])))
        except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
            code = 1
            try:
                _send(write_end, 0, ("error", exc))
            except BaseException:  # noqa: BLE001
                pass
        finally:
            os._exit(code)
    os.close(write_end)
    results: dict[int, object] = {}
    reader = _Reader(read_end)
    done = False
    try:
        next_index = 0
        for index in mine:
            results[index] = draw(items[index])
            reader.poll(results)
            while next_index in results:
                yield results.pop(next_index)
                next_index += 1
        reader.drain(results)
        while next_index < len(items):
            if next_index not in results:
                raise RuntimeError(f"the drawing process ended without drawing item {next_index}")
            yield results.pop(next_index)
            next_index += 1
        done = True
    finally:
        os.close(read_end)
        if not done:
            try:
                os.kill(pid, signal.SIGINT)  # the child's own KeyboardInterrupt removes its temp files
            except ProcessLookupError:
                pass
        os.waitpid(pid, 0)


def _send(fd: int, index: int, payload) -> None:
    try:
        data = pickle.dumps(payload)
    except Exception:  # noqa: BLE001 - an unpicklable exception: keep its message
        kind, value = payload
        data = pickle.dumps((kind, RuntimeError(f"{type(value).__name__}: {value}")))
    message = _HEADER.pack(index, len(data)) + data
    view = memoryview(message)
    while view:
        view = view[os.write(fd, view):]


class _Reader:
    """Messages from the child, read without blocking between this process's own pictures."""

    def __init__(self, fd: int):
        self.fd, self.buffer = fd, b""
        os.set_blocking(fd, False)

    def poll(self, results: dict) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                break
            self.buffer += chunk
        self._parse(results)

    def drain(self, results: dict) -> None:
        os.set_blocking(self.fd, True)
        while chunk := os.read(self.fd, 1 << 16):
            self.buffer += chunk
        self._parse(results)

    def _parse(self, results: dict) -> None:
        while len(self.buffer) >= _HEADER.size:
            index, length = _HEADER.unpack_from(self.buffer)
            if len(self.buffer) < _HEADER.size + length:
                return
            kind, value = pickle.loads(self.buffer[_HEADER.size:_HEADER.size + length])
            self.buffer = self.buffer[_HEADER.size + length:]
            if kind == "error":
                raise value
            results[index] = value
