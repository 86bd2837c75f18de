"""Wall time and peak resident memory per conversion stage.

On Linux each stage's peak is exact: the kernel's high-water mark (VmHWM) is
reset when the stage starts (``/proc/self/clear_refs``) and read when it ends,
and the whole run's peak is the largest mark seen, gaps between stages
included. A sampler thread is only the fallback elsewhere: it needs the GIL,
so it misses peaks inside C calls that hold it (protobuf serialisation).
Resetting the mark also resets what ``ru_maxrss`` reports for this process,
so use ``Stages.summary()["peak_rss_mb"]``, not an outside ``wait4``, when
stages are measured. ``ru_maxrss`` is no start either: Linux carries it across
``exec`` from the parent (a child of a 3 GB process starts at "3 GB"), whereas
VmHWM belongs to the address space ``exec`` made.
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


def high_water_mb() -> float | None:
    """VmHWM: the peak resident set since the process started or since the last reset."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def reset_high_water() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


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
        mark = high_water_mb()  # this process's own; ru_maxrss may be the parent's (see above)
        self._whole_run = mark if mark is not None else lifetime_peak_rss_mb()
        self.started = time.perf_counter()

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            self._peak = max(self._peak, current_rss_mb())

    def _note_high_water(self) -> None:
        mark = high_water_mb()
        if mark is not None:
            self._whole_run = max(self._whole_run, mark)

    @contextlib.contextmanager
    def __call__(self, name: str):
        self._note_high_water()  # covers the gap since the last stage
        exact = reset_high_water() and high_water_mb() is not None
        if not exact and self._thread is None:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        self._peak = current_rss_mb()
        start = time.perf_counter()
        try:
            yield
        finally:
            end_rss = current_rss_mb()
            peak = high_water_mb() if exact else max(self._peak, end_rss)
            self._whole_run = max(self._whole_run, peak)
            record = Stage(name, time.perf_counter() - start, peak, end_rss)
            self.records.append(record)
            if self._echo:
                self._echo(f"  {name:<22} {record.seconds:6.1f} s  peak {record.peak_rss_mb:7.0f} MB")

    def close(self) -> None:
        self._stop.set()

    def summary(self) -> dict:
        self._note_high_water()
        return {
            "stages": [asdict(r) for r in self.records],
            "total_seconds": time.perf_counter() - self.started,
            "peak_rss_mb": max([r.peak_rss_mb for r in self.records] + [self._whole_run]),
        }


class NoStages:
    """Stand-in when nobody asked for measurements."""

    records: list = []

    @contextlib.contextmanager
    def __call__(self, name: str):
        yield

    def close(self) -> None:
        pass
