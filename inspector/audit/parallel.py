"""Where the map path's statistics run: inline, or on all cores for big batches.

The layers the graph reduces (ingraph.py) need neither: their figures are (N, C) arrays.
"""

from __future__ import annotations

import os

# Batches of maps at least this many values get their layers' statistics on all cores.
_PARALLEL_ELEMENTS = 4_000_000
_POOL = None


def _stats_pool():
    global _POOL
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1), thread_name_prefix="inspector-stats")
    return _POOL
