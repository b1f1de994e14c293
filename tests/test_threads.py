"""One place sizes every thread pool: the count it picks (request, environment, free cores) and that it
reaches torch, FAISS and the libraries' variables."""

from __future__ import annotations

import os
from collections.abc import Iterator

import faiss
import pytest
import torch

from rehearsal import threads
from rehearsal.cli.main import main
from rehearsal.errors import ConfigError
from rehearsal.threads import THREADS_ENV, plan_threads, size_thread_pools


@pytest.fixture
def restored(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Put torch's and FAISS's pools and the variables back as they were."""
    before = torch.get_num_threads(), faiss.omp_get_max_threads()
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TOKENIZERS_PARALLELISM"):
        monkeypatch.setenv(name, os.environ.get(name, ""))
    yield
    torch.set_num_threads(before[0])
    faiss.omp_set_num_threads(before[1])


def test_a_request_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(THREADS_ENV, "2")
    plan = plan_threads(1)
    assert (plan.threads, plan.source) == (1, "requested")
    monkeypatch.setenv(THREADS_ENV, "1")
    assert (plan_threads().threads, plan_threads().source) == (1, "environment")


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_a_count_that_is_no_count_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(THREADS_ENV, value)
    with pytest.raises(ConfigError, match=THREADS_ENV):
        plan_threads()


@pytest.mark.parametrize(("busy", "cores", "free"), [(0.0, 2, 2), (1.0, 2, 1), (3.0, 2, 1), (2.0, 8, 6)])
def test_the_free_cores_are_the_cores_less_the_busy_ones(
    monkeypatch: pytest.MonkeyPatch, busy: float, cores: int, free: int
) -> None:
    monkeypatch.delenv(THREADS_ENV, raising=False)
    monkeypatch.setattr(threads, "_runnable_others", lambda: busy)
    monkeypatch.setattr(threads, "usable_cores", lambda: cores)
    plan = plan_threads()
    assert (plan.threads, plan.source, plan.busy) == (free, "free cores", busy)


def test_the_kernels_count_of_runnable_tasks_is_read() -> None:
    busy = threads._runnable_others()
    assert busy is not None
    assert busy >= 0.0


def test_the_plan_reaches_torch_faiss_and_the_variables(restored: None) -> None:
    plan = size_thread_pools(1)
    assert torch.get_num_threads() == 1
    assert faiss.omp_get_max_threads() == 1
    assert os.environ["OMP_NUM_THREADS"] == "1"
    assert os.environ["TOKENIZERS_PARALLELISM"] == "false"
    assert "1 thread(s)" in plan.describe()


def test_the_cli_refuses_a_bad_thread_count(capsys: pytest.CaptureFixture[str], restored: None) -> None:
    assert main(["stats", "nowhere", "--threads", "0"]) != 0
    err = capsys.readouterr().err
    assert "threads must be at least 1" in err
    assert "Traceback" not in err
