"""Progress bars on stderr for long work, only when a person is watching."""

from __future__ import annotations

import sys
from typing import Iterable, TypeVar

T = TypeVar("T")


def enabled(quiet: bool = False) -> bool:
    return not quiet and sys.stderr.isatty()


def progress(iterable: Iterable[T], *, total: int | None = None, desc: str = "", unit: str = "it",
             quiet: bool = False) -> Iterable[T]:
    """tqdm over ``iterable`` when stderr is a terminal and not quiet; the iterable itself otherwise."""
    if not enabled(quiet):
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, leave=False,
                dynamic_ncols=True)
