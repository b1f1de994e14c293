"""Continual-learning strategies as a registry: ``get_strategy(name)`` -> the hooks the run loop calls.

    naive, multitask                 base.py    plain fine-tuning; one phase over every task (the bound)
    random, retrieval, hybrid,       replay.py  replay from the run's memory, by mode (ReplayConfig.mode)
    mir, coverage, diverse
    ewc, ewc-replay                  ewc.py     the EWC penalty, alone or with hybrid replay
    lora-routed, lora-replay         lora.py    one LoRA adapter per task routed by the memory; one shared
                                                LoRA adapter with hybrid replay
    generative                       generative.py  replay written by a class-conditional generator, guided by
                                                an embedding-only memory (no text kept)

A new method subclasses :class:`Strategy`, overrides the hooks it changes and is ``@register``-ed.
"""

from rehearsal.runner.strategies import ewc, generative, lora, replay  # noqa: F401  (each module registers its strategies)
from rehearsal.runner.strategies.base import STRATEGIES, PhaseContext, Strategy, get_strategy, register

__all__ = ["STRATEGIES", "PhaseContext", "Strategy", "get_strategy", "register"]
