"""Generative replay as a run method (``method = "generative"``): the text of old tasks is not kept.

The run's memory is embedding-only (sealed vectors and labels, no text): after each phase the phase's
real examples enter it as vectors. After each phase but the last, a class-conditional generator
(``rehearsal.methods.generative.generator``, SmolLM2-135M + LoRA by default) learns the phase's classes,
with a few of its own earlier generations of every old class mixed in; it then writes examples of the
phase's classes, which the guide (``RunConfig.generative.guide``) filters against the memory's class
regions. Later phases fill the replay share (``RunConfig.replay.ratio``) from that cache, class-balanced.

State in ``<output_dir>/generative/``: ``pool.json`` (the cache; entries know the phase that wrote them,
so a resumed phase drops what an interrupted one wrote), ``adapter_after_phase_<p>/`` (the generator's
adapter and tenant ledger; the last two are kept), ``phase_<p>.json`` (generation cost, guide rejections
and the copy report of that phase's generations against its training texts and any canaries).
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rehearsal._files import write_json
from rehearsal.examples import Example
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.methods.generative.config import GenerativeConfig
from rehearsal.methods.generative.generator import ClassGenerator
from rehearsal.methods.generative.guide import GuideVerdict, MemoryGuide
from rehearsal.methods.generative.memorisation import copy_report, make_canaries
from rehearsal.methods.generative.pool import Generated, GeneratedPool
from rehearsal.replay.generative import GenerativeCollator
from rehearsal.replay.trainer import LABELS
from rehearsal.runner.strategies.base import PhaseContext, Strategy, register

__all__ = ["GenerativeReplay", "write_pool"]

_DIR = "generative"


def _adapter_dir(ctx: PhaseContext, phase: int) -> Path:
    return ctx.state_dir(_DIR) / f"adapter_after_phase_{phase}"


@register
class GenerativeReplay(Strategy):
    """Replay written by a generator, guided by an embedding-only memory (module docstring)."""

    name = "generative"
    uses_memory = True
    stores_text: ClassVar[bool] = False

    def __init__(self) -> None:
        self.generator: ClassGenerator | None = None

    def collator(self, ctx: PhaseContext) -> Callable[[list[dict[str, Any]]], Any]:
        replay = dataclasses.replace(
            ctx.config.replay,
            mode="generative",
            mark_replay=True,
            max_length=ctx.config.max_length,
            label_column=LABELS,
            seed=ctx.config.seed,
        )
        current = set(ctx.current_classes)
        pool = GeneratedPool.load(ctx.state_dir(_DIR) / "pool.json").before(ctx.phase)
        pool = GeneratedPool(e for e in pool.entries if e.label not in current)
        return GenerativeCollator(pool, ctx.base_collator, ctx.tokenizer, replay)

    def marks_replay(self) -> bool:
        return True

    def after_phase(self, model: Any, ctx: PhaseContext) -> dict[str, float]:
        """Calibrate as usual, store the phase's vectors (no text), then (unless this is the last phase)
        train the generator and write the phase's classes into the pool."""
        logs = super().after_phase(model, ctx)
        memory = ctx.open_memory()
        vectors = np.asarray(ctx.train[ctx.config.replay.vector_column], dtype=np.float32)
        metadata = [
            {"task": t, "label": int(y)} for t, y in zip(ctx.train["task"], ctx.train[LABELS], strict=True)
        ]
        # An embedding-only record names its source: here the example's place in the phase's data.
        sources = [f"{ctx.tasks[0].name}/phase-{ctx.phase}/{i}" for i in range(len(metadata))]
        memory.add(metadata=metadata, vectors=vectors, sources=sources)
        last = ctx.tasks[-1].name == ctx.stream.tasks[-1].name
        if last:
            return logs
        if self.generator is None:
            previous = _adapter_dir(ctx, ctx.phase - 1) if ctx.phase > 0 else None
            adapter = previous if previous is not None and previous.is_dir() else None
            self.generator = ClassGenerator.load(ctx.config.generative, adapter)
        report = write_pool(self.generator, ctx, memory)
        self.generator.save(_adapter_dir(ctx, ctx.phase))
        if ctx.phase >= 2:
            shutil.rmtree(_adapter_dir(ctx, ctx.phase - 2), ignore_errors=True)
        write_json(ctx.state_dir(_DIR) / f"phase_{ctx.phase}.json", report, indent=1)
        return {**logs, **{k: float(v) for k, v in report["logs"].items()}}


def _real_examples(ctx: PhaseContext, per_class: int | None, rng: np.random.Generator) -> list[Example]:
    """Up to ``per_class`` of the phase's training examples per class (a seeded draw)."""
    out: list[Example] = []
    for task in ctx.tasks:
        for label in task.labels:
            members = [e for e in task.train if e.label == label]
            take = len(members) if per_class is None else min(per_class, len(members))
            out.extend(
                Example(text=members[int(i)].text, label=label, task=task.name)
                for i in rng.permutation(len(members))[:take]
            )
    return out


def write_pool(generator: ClassGenerator, ctx: PhaseContext, memory: RehearsalMemory) -> dict[str, Any]:
    """Train ``generator`` on the phase (plus its own replay and, in phase 0, any canaries), write and
    guide the phase's classes, add what is kept to ``pool.json``; returns the phase's report."""
    cfg: GenerativeConfig = ctx.config.generative
    rng = np.random.default_rng([ctx.config.seed, ctx.phase, 17])
    path = ctx.state_dir(_DIR) / "pool.json"
    pool = GeneratedPool.load(path).before(ctx.phase)
    real = _real_examples(ctx, cfg.train_per_class, rng)
    canaries = make_canaries(cfg.canaries, rng=rng) if ctx.phase == 0 else []
    labels = [lab for task in ctx.tasks for lab in task.labels]
    planted = [
        Example(text=c, label=labels[i % len(labels)], task=ctx.tasks[0].name) for i, c in enumerate(canaries)
    ]
    own = [
        Example(text=e.text, label=e.label_name, task=e.task)
        for e in pool.per_class(cfg.replay_per_class, rng)
    ]
    logs: dict[str, float] = generator.learn([*real, *planted, *own], seed=ctx.config.seed + ctx.phase)
    logs["generator_self_replay"] = float(len(own))
    requests = [(task.name, lab) for task in ctx.tasks for lab in task.labels for _ in range(cfg.to_generate)]
    texts, cost = generator.generate(requests, seed=ctx.config.seed + ctx.phase)
    logs.update(cost.as_dict())
    ids = [ctx.stream.label_id(lab) for _, lab in requests]
    order = list(range(len(texts)))
    if cfg.guide:
        guide = MemoryGuide.from_config(memory, cfg)
        real_ids = [int(y) for y in ctx.train[LABELS]]
        floors = guide.class_floors(np.asarray(ctx.train[ctx.config.replay.vector_column]), real_ids)
        verdict = guide.judge(texts, ids)
        keep, reasons, order = verdict.keep, verdict.reasons, verdict.ranked()
        logs.update(_rule_comparison(verdict, ids, floors, cfg))
        logs["class_floor_mean"] = float(np.mean([floors[i] for i in set(ids) if i in floors] or [0]))
    else:
        keep = [bool(t.strip()) for t in texts]
        reasons = {"empty": keep.count(False)}
        floors = {}
    logs["guide_rejected"] = float(keep.count(False))
    logs.update({f"guide_rejected_{reason}": float(n) for reason, n in reasons.items()})
    kept: dict[int, list[Generated]] = {}
    for i in order:
        (task, lab), label, text = requests[i], ids[i], texts[i]
        if keep[i] and len(kept.setdefault(label, [])) < cfg.per_class:
            kept[label].append(Generated(text, label, lab, task, ctx.phase))
    new = [g for group in kept.values() for g in group]
    logs["generated_kept"] = float(len(new))
    pool.add(new)
    pool.save(path)
    training = [e.text for task in ctx.tasks for e in task.train]
    raw = copy_report(texts, canaries=canaries, training=training, encoder=memory.encoder)
    replayed = copy_report(
        [g.text for g in new], canaries=canaries, training=training, encoder=memory.encoder
    )
    logs.update({"copy_rate_generated": raw.near_copy_rate, "copy_rate_kept": replayed.near_copy_rate})
    if canaries:
        logs["canaries_verbatim"] = float(raw.canaries_verbatim)
        logs["canaries_near"] = float(raw.canaries_near)
        logs["canary_secrets"] = float(raw.canary_secrets)
    return {
        "phase": ctx.phase,
        "logs": logs,
        "copies_generated": raw.as_dict(),
        "copies_kept": replayed.as_dict(),
        "examples": [{"label": g.label_name, "text": g.text} for g in new[: 3 * len(labels)]],
        "class_floors": {ctx.stream.labels[i]: round(f, 4) for i, f in sorted(floors.items())},
    }


def _rule_comparison(
    verdict: GuideVerdict, ids: list[int], floors: dict[int, float], cfg: GenerativeConfig
) -> dict[str, float]:
    """How many replay slots each floor rule would fill on the same generations (the evidence for the
    default): slots = sum over classes of min(per_class, generations the rule keeps)."""
    assert verdict.closest is not None  # INVARIANT: judge fills it
    own_floor = np.array([floors.get(i, cfg.min_similarity) for i in ids])
    base = (verdict.closest < cfg.copy_cosine) & (
        (verdict.other <= -1.0) | (verdict.own - verdict.other >= cfg.margin)
    )
    base &= verdict.own > -1.0
    out: dict[str, float] = {}
    for name, floor in (("absolute", np.full(len(ids), cfg.min_similarity)), ("class", own_floor)):
        passed = base & (verdict.own >= floor)
        per_label: dict[int, int] = {}
        for label, ok in zip(ids, passed, strict=True):
            per_label[label] = per_label.get(label, 0) + int(ok)
        out[f"guide_slots_{name}"] = float(sum(min(cfg.per_class, n) for n in per_label.values()))
    return out
