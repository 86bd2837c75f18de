"""Progress bars on stderr for long work, only when a person is watching."""

from __future__ import annotations

import sys
import threading
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
_local = threading.local()  # a reporter per thread: the explorer's background jobs (inspector view)


@contextmanager
def reporting(report: Callable[[str, int, int | None], None]) -> Iterator[None]:
    """Within the block, on this thread, every ``progress`` loop calls ``report(desc, done, total)`` before
    each item and once at its end (the explorer shows a job's progress on its page; no bar is drawn)."""
    previous = getattr(_local, "report", None)
    _local.report = report
    try:
        yield
    finally:
        _local.report = previous


def enabled(quiet: bool = False) -> bool:
    return not quiet and sys.stderr.isatty()


def progress(iterable: Iterable[T], *, total: int | None = None, desc: str = "", unit: str = "it",
             quiet: bool = False) -> Iterable[T]:
    """tqdm over ``iterable`` when stderr is a terminal and not quiet; the iterable itself otherwise
    (reported to the thread's ``reporting`` callback where one is set)."""
    report = getattr(_local, "report", None)
    if report is not None:
        return _reported(iterable, report, desc, total)
    if not enabled(quiet):
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, leave=False,
                dynamic_ncols=True)


def _reported(iterable: Iterable[T], report, desc: str, total: int | None) -> Iterator[T]:
    done = 0
    report(desc, done, total)
    for item in iterable:
        yield item
        done += 1
        report(desc, done, total)
