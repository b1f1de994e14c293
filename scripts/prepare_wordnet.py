"""Build rehearsal/data/wordnet_stream.jsonl.gz, the bundled 5-task stream of WordNet 3.0 glosses.

Each example is the definition part of a synset's gloss, labelled with the synset's lexicographer file
(45 classes: noun.animal, verb.motion, adj.all, ...). The classes are grouped into five tasks for
class-incremental experiments. Needs Debian's ``wordnet-base`` (``apt-get install -y wordnet-base``);
run from the repository root::

    .venv/bin/python scripts/prepare_wordnet.py

The output is byte-for-byte reproducible for a given WordNet package, seed and numpy version.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

DEFAULT_WORDNET_DIR = Path("/usr/share/wordnet")
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "rehearsal" / "data" / "wordnet_stream.jsonl.gz"
DATA_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")

# The standard lexnames table (WordNet 3.0, lexnames(5WN)). Debian's wordnet-base ships the man page but not
# the `lexnames` file itself, so the table lives here; when a `lexnames` file is present it must agree.
LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling",
    "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object", "noun.person",
    "noun.phenomenon", "noun.plant", "noun.possession", "noun.process", "noun.quantity", "noun.relation",
    "noun.shape", "noun.state", "noun.substance", "noun.time", "verb.body", "verb.change", "verb.cognition",
    "verb.communication", "verb.competition", "verb.consumption", "verb.contact", "verb.creation",
    "verb.emotion", "verb.motion", "verb.perception", "verb.possession", "verb.social", "verb.stative",
    "verb.weather", "adj.ppl",
)  # fmt: skip

LIVING = ("noun.animal", "noun.plant", "noun.person", "noun.body", "noun.food")
PHYSICAL = (
    "noun.artifact", "noun.object", "noun.substance", "noun.location", "noun.shape", "noun.phenomenon",
    "noun.process",
)  # fmt: skip
TASK_ORDER = ("living", "physical", "abstract", "verbs", "modifiers")


def task_of(lexname: str) -> str:
    if lexname in LIVING:
        return "living"
    if lexname in PHYSICAL:
        return "physical"
    if lexname.startswith("noun."):
        return "abstract"
    if lexname.startswith("verb."):
        return "verbs"
    return "modifiers"  # adj.* and adv.*


def check_lexnames_file(wordnet_dir: Path) -> None:
    path = wordnet_dir / "lexnames"
    if not path.exists():
        return
    shipped = [line.split("\t")[1].strip() for line in path.read_text().splitlines() if line.strip()]
    if tuple(shipped) != LEXNAMES:
        sys.exit(f"{path} disagrees with the built-in lexnames table; refusing to guess")


# WordNet writes usage examples as `; "..."`, but ~80 glosses use `:`, `,`, `as in`
# or `e.g.` before the quote, or no space.
EXAMPLE_START = re.compile(r'\s*(?:[;:,]|\bas in|\be\.g\.)\s*"')
# What is left of "as in e.g. \"...\"" once the example is cut off.
DANGLING_LEAD_IN = re.compile(r"[\s;,]*\b(as in )?(e\.g\.|as in)$")


def definition(gloss: str) -> str:
    """The gloss up to its first quoted usage example, without a dangling lead-in or a stray quote."""
    text = gloss.strip()
    if text.startswith('"'):
        return ""  # a gloss that is only an example has no definition
    text = EXAMPLE_START.split(text, maxsplit=1)[0]
    text = DANGLING_LEAD_IN.sub("", text)
    text = text.rstrip(" ;:,")
    if text.count('"') % 2:  # an unmatched closing quote left by a malformed example
        text = text.removesuffix('"').rstrip()
    return text


def read_definitions(wordnet_dir: Path) -> dict[str, list[str]]:
    """lexname -> definitions in file order (possibly repeated)."""
    by_class: dict[str, list[str]] = defaultdict(list)
    for name in DATA_FILES:
        with open(wordnet_dir / name, encoding="utf-8") as f:
            for line in f:
                if line.startswith("  "):
                    continue  # the licence header: every header line starts with two spaces
                fields, _, gloss = line.partition(" | ")
                # fields: synset_offset lex_filenum ss_type w_cnt word lex_id ...
                lex_filenum = int(fields.split(" ", 2)[1])
                text = definition(gloss)
                if text:
                    by_class[LEXNAMES[lex_filenum]].append(text)
    return by_class


def deduplicate(by_class: dict[str, list[str]]) -> tuple[dict[str, list[str]], int]:
    """Unique definitions per class; a definition found under two classes is dropped from both.

    Identical text with different labels would make the task ill-posed and could put one string in a test
    split and the training data of another class.
    """
    owners: dict[str, set[str]] = defaultdict(set)
    for lexname, texts in by_class.items():
        for text in texts:
            owners[text].add(lexname)
    ambiguous = {text for text, labels in owners.items() if len(labels) > 1}
    unique = {lexname: sorted(set(texts) - ambiguous) for lexname, texts in by_class.items()}
    return unique, len(ambiguous)


def split_class(
    texts: list[str], *, max_train: int, max_test: int, rng: np.random.Generator
) -> tuple[list[str], list[str]]:
    order = rng.permutation(len(texts))
    shuffled = [texts[i] for i in order]
    if len(texts) >= max_train + max_test:
        return shuffled[max_test : max_test + max_train], shuffled[:max_test]
    # A small class keeps everything, ~80/20, with at least one test example when it has two or more.
    n_test = max(1, round(0.2 * len(texts))) if len(texts) >= 2 else 0
    return shuffled[n_test:], shuffled[:n_test]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wordnet-dir", type=Path, default=DEFAULT_WORDNET_DIR)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--max-train", type=int, default=300)
    parser.add_argument("--max-test", type=int, default=80)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    check_lexnames_file(args.wordnet_dir)
    by_class, n_ambiguous = deduplicate(read_definitions(args.wordnet_dir))
    rng = np.random.default_rng(args.seed)
    rows: list[dict[str, str]] = []
    report: list[str] = []
    for task in TASK_ORDER:
        for lexname in sorted(name for name in LEXNAMES if task_of(name) == task):
            texts = by_class.get(lexname, [])
            if not texts:
                report.append(f"{task:10s} {lexname:22s} NO DATA")
                continue
            train, test = split_class(texts, max_train=args.max_train, max_test=args.max_test, rng=rng)
            report.append(
                f"{task:10s} {lexname:22s} n={len(texts):6d} train={len(train):4d} test={len(test):3d}"
            )
            rows += [{"text": t, "label": lexname, "task": task, "split": "train"} for t in train]
            rows += [{"text": t, "label": lexname, "task": task, "split": "test"} for t in test]

    payload = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0 and no embedded file name keep the archive byte-identical across regenerations.
    with open(args.out, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(payload)

    print("\n".join(report))
    n_train = sum(row["split"] == "train" for row in rows)
    print(f"definitions dropped as shared by several classes: {n_ambiguous}")
    print(f"classes: {len({row['label'] for row in rows})}, train: {n_train}, test: {len(rows) - n_train}")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
