"""An online run's checkpoints: what a resumed run needs to go on exactly where the killed one was.

Every ``streaming.checkpoint_every`` steps the loop writes ``weights/step_<s>/`` (the model, then the
optimizer's state and torch's random state beside it), renamed into place whole, and only then
``state.json``, which names it (a state file never points at a folder that was not written) together with
the position in the stream, the counters and the probe trace. Older ``step_*`` folders are removed after.

The memory is not copied: admission is seeded per batch, so a resumed run rebuilds it by admitting the
batches before the checkpoint again, which gives the same entries with the same ids.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

from rehearsal._files import atomic_writer, replace_folder
from rehearsal.crypto.keys import KeyRing
from rehearsal.runner import state as run_state
from rehearsal.runner.anytime import ProbeTrace
from rehearsal.runner.config import RunConfig
from rehearsal.runner.metrics import AccuracyMatrix
from rehearsal.runner.strategies import Strategy

__all__ = ["OPTIMIZER_FILE", "Progress", "load_optimizer", "save_checkpoint"]

OPTIMIZER_FILE = "online_optimizer.pt"
_WEIGHTS = "weights"


@dataclasses.dataclass
class Progress:
    """Where an online run stands: the next step, the online counters, the re-warmup and the costs."""

    step: int = 0
    correct: int = 0
    tested: int = 0
    seen_classes: list[int] = dataclasses.field(default_factory=list)
    warmup_step: int | None = None  # steps into a re-warmup; None: the full learning rate
    rewarmups: list[int] = dataclasses.field(default_factory=list)  # steps at which one began
    probe_seconds: float = 0.0
    eval_seconds: float = 0.0  # the full test sets at each task's end (the accuracy matrix)
    per_task: dict[str, list[int]] = dataclasses.field(default_factory=dict)  # task -> [correct, tested]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Progress:
        return cls(**data)


def save_checkpoint(
    *,
    out: Path,
    config: RunConfig,
    strategy: Strategy,
    model: Any,
    optimizer: Any,
    progress: Progress,
    trace: ProbeTrace,
    matrix: AccuracyMatrix,
    totals: dict[str, Any],
    generation: int,
    keys: KeyRing | None,
) -> Path:
    """Write the weights folder of ``progress.step``, then the state that points at it."""
    import torch

    final = out / _WEIGHTS / f"step_{progress.step}"
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    strategy.save_model(model, tmp)
    with atomic_writer(tmp / OPTIMIZER_FILE) as f:
        torch.save({"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state()}, f)
    replace_folder(tmp, final)
    extra = {"online": {"progress": progress.to_dict(), "trace": trace.to_dict()}}
    completed = matrix.completed_tasks
    run_state.write_state(
        out, config, completed, final, matrix, {}, generation, totals, keys=keys, extra=extra
    )
    for older in (out / _WEIGHTS).glob("step_*"):
        if older != final:
            shutil.rmtree(older, ignore_errors=True)
    return final


def load_optimizer(folder: Path, optimizer: Any) -> None:
    """Restore the optimizer's state and torch's random state saved beside the weights in ``folder``."""
    import torch

    saved = torch.load(folder / OPTIMIZER_FILE, weights_only=False)
    optimizer.load_state_dict(saved["optimizer"])
    torch.set_rng_state(saved["torch_rng"])
