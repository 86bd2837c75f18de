"""Long work in the background (ScoreCAM, the audit over the images given), with its progress for the page.

A job runs in a thread of its own; its progress comes from the library's own progress loops
(``inspector.progress.reporting``: the batches of ScoreCAM, of the audit). The page polls ``GET /api/jobs?id=J``
and, once the job is done, reads its result where it always is (``/api/cam``, ``/api/audit``), now cached. The
same work asked twice is one job; a failed job is started again when asked again.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

from ..errors import InspectorError

JOBS_KEPT = 64


@dataclass
class Job:
    id: str
    kind: str
    key: tuple
    state: str = "running"  # running, done, failed
    step: str = ""  # what the library's progress loop says it is doing ("scorecam", "audit")
    done: int = 0
    total: int | None = None
    error: str | None = None
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    def to_dict(self) -> dict:
        end = self.finished if self.finished is not None else time.monotonic()
        return {"id": self.id, "kind": self.kind, "state": self.state, "step": self.step, "done": self.done,
                "total": self.total, "error": self.error, "seconds": round(end - self.started, 2)}


class Jobs:
    def __init__(self):
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._count = 0

    def start(self, kind: str, key: tuple, work: Callable[[], object]) -> Job:
        """The job doing ``work`` for ``key``: the one running or done already, else a new one."""
        with self._lock:
            for job in self._jobs.values():
                if job.key == key and job.state != "failed":
                    return job
            self._count += 1
            job = Job(f"j{self._count}", kind, key)
            self._jobs[job.id] = job
            while len(self._jobs) > JOBS_KEPT:
                oldest = next((j for j in self._jobs.values() if j.state != "running"), None)
                if oldest is None:
                    break
                del self._jobs[oldest.id]
        threading.Thread(target=self._run, args=(job, work), name=f"inspector-view-{job.id}", daemon=True).start()
        return job

    def get(self, job_id: str) -> Job:
        with self._lock:
            return self._jobs[job_id]

    def all(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    @staticmethod
    def _run(job: Job, work: Callable[[], object]) -> None:
        from ..progress import reporting

        def report(step: str, done: int, total: int | None) -> None:
            job.step, job.done, job.total = step, done, total

        try:
            with reporting(report):
                work()
            job.state = "done"
        except InspectorError as exc:
            job.error, job.state = str(exc), "failed"
        except Exception as exc:  # noqa: BLE001 - shown on the page; the server goes on
            job.error, job.state = f"internal error: {type(exc).__name__}: {exc}", "failed"
        finally:
            job.finished = time.monotonic()
            _release_freed_memory()


def _release_freed_memory() -> None:
    """Hand the heap that a finished job freed back to the system (glibc keeps it in this thread's arena, where
    the server's other threads cannot reuse it: the explorer's peak would hold the job's and the maps' at once)."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim): nothing to do
        pass
