"""Colour maps as (256, 3) uint8 lookup tables, without importing matplotlib.

Pictures need only matplotlib's colour tables, but ``import matplotlib`` costs
about 0.12 s and 15 MB on every ``maps`` run (its rcParams, fonts and
parsers load too). ``colormaps.npz`` holds the 256-entry table of every colour
map matplotlib registers, sampled exactly as ``colormaps[name](linspace(0, 1,
256))`` and rounded to bytes; a test checks it against the installed
matplotlib. A name the table lacks (a newer or user-registered colour map) is
looked up in matplotlib itself.

Regenerate after a matplotlib upgrade changes a table: ``python -m inspector.colormaps``.
"""

from __future__ import annotations

import os

import numpy as np

from .errors import InspectorError

TABLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "colormaps.npz")
_loaded: dict[str, np.ndarray] = {}


def stored(name: str) -> np.ndarray | None:
    """The table of ``name`` from ``colormaps.npz`` (only that one is decompressed), or None."""
    if name not in _loaded:
        try:
            with np.load(TABLE) as data:
                if name not in data.files:
                    return None
                _loaded[name] = data[name]
        except (OSError, ValueError):  # a broken install: matplotlib still answers
            return None
    return _loaded[name]


def from_matplotlib(name: str) -> np.ndarray:
    """The table as matplotlib computes it (raises KeyError for an unknown name)."""
    from matplotlib import colormaps

    return (colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)


def lut(name: str) -> np.ndarray:
    """(256, 3) uint8 lookup table for a matplotlib colour map name."""
    table = stored(name)
    if table is not None:
        return table
    try:
        return from_matplotlib(name)
    except KeyError:
        import difflib

        from matplotlib import colormaps

        close = difflib.get_close_matches(name, list(colormaps), n=4)
        hint = f"; did you mean {', '.join(close)}?" if close else " (e.g. viridis, gray, magma, RdBu)"
        raise InspectorError(f"unknown colour map '{name}'{hint}") from None


def write_table(path: str = TABLE) -> int:
    """Sample every registered matplotlib colour map into ``path``; returns how many."""
    from matplotlib import colormaps

    tables = {name: from_matplotlib(name) for name in sorted(colormaps)}
    with open(path + ".part", "wb") as handle:
        np.savez_compressed(handle, **tables)
    os.replace(path + ".part", path)
    return len(tables)


if __name__ == "__main__":
    print(f"{write_table()} colour maps -> {TABLE}")
