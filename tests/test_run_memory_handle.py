"""A run opens its memory once per phase and hands that handle to everything the phase does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _models import tiny_run_config

from rehearsal.memory.facade import RehearsalMemory
from rehearsal.runner import loop
from rehearsal.runner.tasks import TaskStream

pytestmark = pytest.mark.usefixtures("master_key")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["hybrid", "lora-routed"])
def test_each_phase_opens_the_memory_once(
    method: str, tmp_path: Path, tiny_model: str, tiny_stream: TaskStream, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []
    real_create, real_open = RehearsalMemory.create.__func__, RehearsalMemory.open.__func__  # type: ignore[attr-defined]

    def counting_create(cls: type[RehearsalMemory], *args: Any, **kw: Any) -> RehearsalMemory:
        opened.append("create")
        return real_create(cls, *args, **kw)  # type: ignore[no-any-return]

    def counting_open(cls: type[RehearsalMemory], *args: Any, **kw: Any) -> RehearsalMemory:
        opened.append("open-read" if kw.get("read_only") else "open")
        return real_open(cls, *args, **kw)  # type: ignore[no-any-return]

    monkeypatch.setattr(RehearsalMemory, "create", classmethod(counting_create))
    monkeypatch.setattr(RehearsalMemory, "open", classmethod(counting_open))
    loop.run(tiny_run_config(tmp_path, tiny_model, method=method), stream=tiny_stream)
    assert opened == ["create", "open"]  # two phases: the first creates the memory, the second opens it
