"""Wall time and peak resident memory per conversion stage.

A sampler thread reads /proc/self/statm every few milliseconds, so each stage
gets its own peak (``ru_maxrss`` alone only knows the peak of the whole run).
"""

from __future__ import annotations

import contextlib
import resource
import sys
import threading
import time
from dataclasses import asdict, dataclass

_PAGE = resource.getpagesize()


def current_rss_mb() -> float:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * _PAGE / 2**20
    except OSError:  # not Linux: fall back to the lifetime peak
        return lifetime_peak_rss_mb()


def lifetime_peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


@dataclass
class Stage:
    name: str
    seconds: float
    peak_rss_mb: float
    end_rss_mb: float


class Stages:
    """``with stages("trace"): ...`` records seconds and peak RSS of each stage."""

    def __init__(self, interval: float = 0.005, echo=None):
        self.records: list[Stage] = []
        self._interval = interval
        self._echo = echo
        self._peak = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.started = time.perf_counter()

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            self._peak = max(self._peak, current_rss_mb())

    @contextlib.contextmanager
    def __call__(self, name: str):
        if self._thread is None:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        self._peak = current_rss_mb()
        start = time.perf_counter()
        try:
            yield
        finally:
            end_rss = current_rss_mb()
            record = Stage(name, time.perf_counter() - start, max(self._peak, end_rss), end_rss)
            self.records.append(record)
            if self._echo:
                self._echo(f"  {name:<22} {record.seconds:6.1f} s  peak {record.peak_rss_mb:7.0f} MB")

    def close(self) -> None:
        self._stop.set()

    def summary(self) -> dict:
        return {
            "stages": [asdict(r) for r in self.records],
            "total_seconds": time.perf_counter() - self.started,
            "peak_rss_mb": max([r.peak_rss_mb for r in self.records] + [lifetime_peak_rss_mb()]),
        }


class NoStages:
    """Stand-in when nobody asked for measurements."""

    records: list = []

    @contextlib.contextmanager
    def __call__(self, name: str):
        yield

    def close(self) -> None:
        pass
