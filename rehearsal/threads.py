"""The one place that sizes every thread pool of a process: torch's intra- and inter-op pools, OpenMP
(which FAISS shares), MKL/OpenBLAS and the tokenizers' Rust pool.

Why it matters: each of these sizes itself to every core of the machine. On a machine where other jobs
already hold the cores, a run's OpenMP threads spin at barriers waiting for threads the kernel has not
scheduled, and a training step takes many times its fair share (8–12× slower beside four other jobs here,
where a fair share of two cores would be 4–5×). Sized to the cores actually free, a run slows down only
by its share.

:func:`size_thread_pools` picks the count (an explicit request, else ``REHEARSAL_THREADS``, else the
cores free now) and applies it: environment variables for libraries not imported yet (they read them
once, at import), the libraries' own setters for those already imported.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from dataclasses import dataclass

from rehearsal.errors import ConfigError

__all__ = ["THREADS_ENV", "ThreadPlan", "free_cores", "plan_threads", "size_thread_pools"]

THREADS_ENV = "REHEARSAL_THREADS"
_LIBRARY_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# Runnable-task samples taken to judge the cores free now (the kernel's count is instantaneous and
# jumps; the median of a few over ~0.1 s is steady, and costs nothing beside a model load).
_SAMPLES, _SAMPLE_GAP_S = 5, 0.02


@dataclass(frozen=True)
class ThreadPlan:
    """How many threads each pool gets, and why: ``source`` is "requested", "environment" or "free cores"."""

    threads: int
    cores: int
    busy: float  # other runnable tasks seen when the plan was made (the load average where not known)
    source: str

    def describe(self) -> str:
        return f"{self.threads} thread(s) of {self.cores} core(s) ({self.source}; {self.busy:.1f} busy)"


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _runnable_others() -> float | None:
    """Runnable tasks other than this one, from /proc/loadavg's instantaneous count (None: not Linux)."""
    counts = []
    for i in range(_SAMPLES):
        try:
            with open("/proc/loadavg", encoding="ascii") as handle:
                running = int(handle.read().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            return None
        counts.append(max(running - 1, 0))  # the reading process itself is running
        if i + 1 < _SAMPLES:
            time.sleep(_SAMPLE_GAP_S)
    return float(sorted(counts)[len(counts) // 2])


def free_cores() -> tuple[int, float]:
    """(cores free now, tasks seen busy): usable cores less the other runnable tasks, at least 1."""
    cores = usable_cores()
    busy = _runnable_others()
    if busy is None:
        busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(cores, cores - math.floor(busy + 0.5))), busy


def _as_count(value: object, where: str) -> int:
    try:
        count = int(str(value).strip())
    except ValueError:
        raise ConfigError(f"{where} must be a whole number of threads, got {value!r}") from None
    if count < 1:
        raise ConfigError(f"{where} must be at least 1, got {count}")
    return count


def plan_threads(requested: int | None = None) -> ThreadPlan:
    """The plan: ``requested`` if given, else ``$REHEARSAL_THREADS``, else the cores free now."""
    cores = usable_cores()
    if requested is not None:
        return ThreadPlan(_as_count(requested, "threads"), cores, 0.0, "requested")
    from_env = os.environ.get(THREADS_ENV)
    if from_env:
        return ThreadPlan(_as_count(from_env, THREADS_ENV), cores, 0.0, "environment")
    free, busy = free_cores()
    return ThreadPlan(free, cores, busy, "free cores")


def apply_threads(plan: ThreadPlan) -> None:
    """Set every pool to ``plan.threads``: variables for libraries still to be imported, setters for
    those already imported. torch's inter-op pool gets one thread (a run's graph has no parallel ops
    worth a second pool); torch allows that only before its first parallel work, hence the guard."""
    n = str(plan.threads)
    for name in _LIBRARY_ENV:
        os.environ[name] = n
    if plan.threads == 1:
        # The Rust tokenizers would start a pool of their own on every core for batch encoding.
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(plan.threads)
        with contextlib.suppress(RuntimeError):  # already started: it keeps its size
            torch.set_num_interop_threads(1)
    faiss = sys.modules.get("faiss")
    if faiss is not None:
        faiss.omp_set_num_threads(plan.threads)


def size_thread_pools(requested: int | None = None) -> ThreadPlan:
    """Plan (see :func:`plan_threads`) and apply (see :func:`apply_threads`); returns the plan."""
    plan = plan_threads(requested)
    apply_threads(plan)
    return plan
