"""Tiny randomly initialised models shared by the test files (no weights are downloaded)."""

from pathlib import Path
from typing import Any

import torch

from rehearsal.runner.config import RunConfig


def tiny_llama() -> torch.nn.Module:
    """A 2-layer Llama with a 64-token vocabulary; the same weights on every call (seeded)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)  # the same base weights every call, so saved adapters can be reloaded onto it
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=32,
    )
    return LlamaForCausalLM(config)


def tiny_run_config(tmp_path: Path, model: str, **changes: Any) -> RunConfig:
    """A fast run over the two tasks of the ``tiny_stream`` fixture, into ``tmp_path/run``."""
    base: dict[str, Any] = {
        "model": model,
        "batch_size": 12,
        "max_length": 16,
        "progress": False,
        "output_dir": str(tmp_path / "run"),
        "tasks": ["living", "verbs"],
    }
    return RunConfig(**{**base, **changes})
