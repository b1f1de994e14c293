"""Tiny randomly initialised models shared by the test files (no weights are downloaded)."""

import torch


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
