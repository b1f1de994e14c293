"""EWC as run methods: ``ewc`` (plain fine-tuning plus the penalty) and ``ewc-replay`` (hybrid replay too).

After each phase (and its head calibration, so the anchor is the model that goes on) the phase's training
examples give a Fisher estimate that is folded into the online EWC state; the next phases add the penalty
through ``RehearsalTrainer``'s ``loss_terms``. The state after phase ``p`` is saved with that phase's
weights, as ``weights/phase_<p>/ewc.pt`` (a deployment keeps its EWC state in its weights folders too),
and a resume reads it from the checkpoint it loads. So the state lives exactly as long as its weights: a
governed run keeps it with every version it keeps (``keep_weights``), and a rollback to an older version
finds the state that version was trained to; a run without versions keeps the latest only. Each state
holds two float32 copies of every trainable weight (180 MB for MiniLM). Runs saved before kept it in
``<output_dir>/ewc/after_phase_<p>.pt``, which a resume of such a run still reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rehearsal.methods.ewc import EWC
from rehearsal.replay.trainer import LossTerm
from rehearsal.runner.config import RunConfig
from rehearsal.runner.strategies.base import PhaseContext, Strategy, register
from rehearsal.runner.strategies.replay import HybridReplay
from rehearsal.training.fisher import consolidate

__all__ = ["EWCMixin", "EWCReplay", "EWCStrategy"]


EWC_FILE = "ewc.pt"  # in a phase's weights folder


def _state_file_of_older_runs(ctx: PhaseContext, phase: int) -> Path:
    return ctx.state_dir("ewc") / f"after_phase_{phase}.pt"


class EWCMixin(Strategy):
    """Adds the EWC penalty to another strategy's loss terms and consolidates after its phases."""

    # The state after the last phase trained, or the one saved with the checkpoint loaded.
    _state: EWC | None = None

    def load_model(self, config: RunConfig, checkpoint: Path | None, num_labels: int) -> Any:
        model = super().load_model(config, checkpoint, num_labels)
        self.restore_state(checkpoint)
        return model

    def save_model(self, model: Any, folder: Path) -> None:
        super().save_model(model, folder)
        self.save_state(folder)

    def restore_state(self, checkpoint: Path | None) -> None:
        """Take up the state saved with the weights in ``checkpoint`` (none there: start, or a run saved
        before states went with weights, whose state :meth:`_ewc` finds)."""
        saved = None if checkpoint is None else checkpoint / EWC_FILE
        self._state = EWC.load(saved) if saved is not None and saved.is_file() else None

    def save_state(self, folder: Path) -> None:
        """Write the state the last phase left beside its weights in ``folder``."""
        if self._state is not None:
            self._state.save(folder / EWC_FILE)

    def _ewc(self, ctx: PhaseContext) -> EWC:
        if ctx.phase == 0:
            return EWC(ctx.config.ewc)
        if self._state is None:  # a run resumed from a folder saved before states went with weights
            self._state = EWC.load(_state_file_of_older_runs(ctx, ctx.phase - 1))
        return self._state

    def loss_terms(self, ctx: PhaseContext) -> list[LossTerm]:
        return [*super().loss_terms(ctx), self._ewc(ctx)]

    def after_phase(self, model: Any, ctx: PhaseContext) -> dict[str, float]:
        logs = super().after_phase(model, ctx)
        ewc = self._ewc(ctx)
        consolidate(ewc, model, ctx.train, ctx.base_collator, shuffle_seed=ctx.config.seed + ctx.phase)
        self._state = ewc  # saved with the phase's weights (save_model)
        fisher = [f.mean().item() for f in ewc.fisher.values()]
        return {**logs, "ewc_mean_fisher": sum(fisher) / max(len(fisher), 1)}


@register
class EWCStrategy(EWCMixin, Strategy):
    name = "ewc"


@register
class EWCReplay(EWCMixin, HybridReplay):
    name = "ewc-replay"
