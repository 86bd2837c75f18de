"""Where the audit's statistics run: inline, on a worker one batch behind inference, or on all cores."""

from __future__ import annotations

import os

# None: overlap statistics with inference on CUDA only; True/False force it (tests).
_OVERLAP: bool | None = None
# Batches of maps at least this many values get their layers' statistics on all cores.
_PARALLEL_ELEMENTS = 4_000_000
_POOL = None


def _stats_pool():
    global _POOL
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1), thread_name_prefix="inspector-stats")
    return _POOL


class Pipeline:
    """Runs ``work(*args)`` for each batch in order: inline, or on one worker thread one batch behind."""

    def __init__(self, work, overlap: bool):
        self.work, self.overlap = work, overlap
        self.pool = self.pending = None

    def __enter__(self):
        if self.overlap:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inspector-audit")
        return self

    def submit(self, *args) -> None:
        if self.pool is None:
            self.work(*args)
            return
        self.wait()  # at most one batch of maps waits, so memory stays at two batches
        self.pending = self.pool.submit(self.work, *args)

    def wait(self) -> None:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending.result()  # re-raises the worker's exception here

    def __exit__(self, kind, value, traceback):
        try:
            if kind is None:
                self.wait()
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=True, cancel_futures=True)
        return False

