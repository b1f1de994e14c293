"""The one table of run methods: what each is called, what it keeps and where it can run.

Every list of method names a config validates against is read off this table, so a method is added (or
its properties changed) in one place. The strategies themselves are registered in
``rehearsal.runner.strategies`` (classifier runs) and ``rehearsal.runner.strategies.causal`` (causal-LM
runs); tests hold each registry equal to its column here. Torch-free: configs import it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CAUSAL_METHODS",
    "MEMORYLESS_METHODS",
    "METHODS",
    "METHOD_TABLE",
    "ONLINE_METHODS",
    "REPLAY_METHODS",
    "Method",
]


@dataclass(frozen=True)
class Method:
    """``keeps_memory``: an encrypted memory (and so a master key); ``replays``: batches draw from it, so it
    holds examples of every class seen (what a memory predictor is fitted on); ``classifier``, ``causal``,
    ``online``: the kinds of run that can name it (an online run is not told task boundaries, so methods
    that act at them are not online ones; MIR ranks its pool inside RehearsalTrainer)."""

    name: str
    keeps_memory: bool
    replays: bool
    classifier: bool = True
    causal: bool = False
    online: bool = False


METHOD_TABLE: tuple[Method, ...] = (
    Method("naive", keeps_memory=False, replays=False, causal=True, online=True),
    Method("multitask", keeps_memory=False, replays=False, causal=True),
    Method("random", keeps_memory=True, replays=True, causal=True, online=True),
    Method("retrieval", keeps_memory=True, replays=True, causal=True, online=True),
    Method("hybrid", keeps_memory=True, replays=True, causal=True, online=True),
    Method("ewc", keeps_memory=False, replays=False, causal=True),
    Method("ewc-replay", keeps_memory=True, replays=True, causal=True),
    Method("lora-replay", keeps_memory=True, replays=True),
    Method("lora-routed", keeps_memory=True, replays=False, causal=True),
    Method("mir", keeps_memory=True, replays=True),
    Method("coverage", keeps_memory=True, replays=True, causal=True, online=True),
    Method("diverse", keeps_memory=True, replays=True, causal=True, online=True),
    Method("generative", keeps_memory=True, replays=False),
    Method("self-rehearsal", keeps_memory=True, replays=True, classifier=False, causal=True),
)

# The names a classifier run can use; each is registered in rehearsal.runner.strategies.
METHODS = tuple(m.name for m in METHOD_TABLE if m.classifier)
# The classifier methods that replay from the memory (which then holds every class seen so far).
REPLAY_METHODS = tuple(m.name for m in METHOD_TABLE if m.classifier and m.replays)
# The classifier methods that keep no memory, hence need no master key.
MEMORYLESS_METHODS = tuple(m.name for m in METHOD_TABLE if m.classifier and not m.keeps_memory)
# The methods a causal-LM run can name (rehearsal.runner.strategies.causal registers exactly these).
CAUSAL_METHODS = tuple(m.name for m in METHOD_TABLE if m.causal)
# The methods an online run can name.
ONLINE_METHODS = tuple(m.name for m in METHOD_TABLE if m.online)
