"""EWC as run methods: ``ewc`` (plain fine-tuning plus the penalty) and ``ewc-replay`` (hybrid replay too).

After each phase (and its head calibration, so the anchor is the model that goes on) the phase's training
examples give a Fisher estimate that is folded into the online EWC state; the next phases add the penalty
through ``RehearsalTrainer``'s ``loss_terms``. The state after phase ``p`` is written to
``<output_dir>/ewc/after_phase_<p>.pt`` and phase ``p + 1`` reads exactly that file, so a run resumed
after a crash (even one between this file and the run's own state) trains with the right state. Only the
last two states are kept: each holds two float32 copies of every trainable weight (180 MB for MiniLM).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rehearsal.methods.ewc import EWC
from rehearsal.replay.trainer import LossTerm
from rehearsal.runner.strategies.base import PhaseContext, Strategy, register
from rehearsal.runner.strategies.replay import HybridReplay
from rehearsal.training.fisher import consolidate

__all__ = ["EWCMixin", "EWCReplay", "EWCStrategy"]


def _state_file(ctx: PhaseContext, phase: int) -> Path:
    return ctx.state_dir("ewc") / f"after_phase_{phase}.pt"


class EWCMixin(Strategy):
    """Adds the EWC penalty to another strategy's loss terms and consolidates after its phases."""

    def _ewc(self, ctx: PhaseContext) -> EWC:
        if ctx.phase == 0:
            return EWC(ctx.config.ewc)
        return EWC.load(_state_file(ctx, ctx.phase - 1))

    def loss_terms(self, ctx: PhaseContext) -> list[LossTerm]:
        return [*super().loss_terms(ctx), self._ewc(ctx)]

    def after_phase(self, model: Any, ctx: PhaseContext) -> dict[str, float]:
        logs = super().after_phase(model, ctx)
        ewc = self._ewc(ctx)
        consolidate(ewc, model, ctx.train, ctx.base_collator, shuffle_seed=ctx.config.seed + ctx.phase)
        ewc.save(_state_file(ctx, ctx.phase))
        if ctx.phase >= 2:
            _state_file(ctx, ctx.phase - 2).unlink(missing_ok=True)  # no resume can need it any more
        fisher = [f.mean().item() for f in ewc.fisher.values()]
        return {**logs, "ewc_mean_fisher": sum(fisher) / max(len(fisher), 1)}


@register
class EWCStrategy(EWCMixin, Strategy):
    name = "ewc"


@register
class EWCReplay(EWCMixin, HybridReplay):
    name = "ewc-replay"
