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


def tiny_causal_lm(folder: Path, texts: list[str]) -> str:
    """A 2-layer Llama over a word-level tokenizer of ``texts``' words (plus the prompt's and the canaries'
    words and the digits), saved in ``folder`` as a causal LM; unknown words read as [UNK]."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from rehearsal.methods.generative.memorisation import _WORDS

    text = " ".join([*texts, "task t label text the code", *_WORDS])
    words = sorted(set(text.replace(":", " ").replace(".", " ").split()) | set(":.0123456789"))
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[EOS]", *words])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Punctuation(),
            pre_tokenizers.Digits(individual_digits=True),
        ]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]", eos_token="[EOS]"
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        # Behind the final RMSNorm, logits are bounded by the norm of lm_head's rows: at the default init
        # (0.02) LoRA on attention cannot make any token likely. Larger weights stand in for pretraining.
        initializer_range=0.3,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
