"""Build rehearsal/data/instruction_stream.jsonl.gz: a multi-skill instruction stream from WordNet 3.0.

Six skills, one task each, asked of single English words (see ``rehearsal/data/README.md``): define a word,
give a synonym, give an antonym, name the hypernym, name the part of speech, and one whose format differs
sharply (a JSON record of the word and its lexicographer category). Every skill has its own held-out test
words: a test item's word never occurs in any training item of any skill, in the prompt or the answer.
The file also holds ``general`` lines: WordNet's own usage sentences (the quoted examples of its glosses,
which no skill uses), the fixed held-out text whose perplexity tracks general language retention.

Needs Debian's ``wordnet-base`` (``apt-get install -y wordnet-base``); run from the repository root::

    .venv/bin/python scripts/prepare_instructions.py

The output is byte-for-byte reproducible for a given WordNet package, seed and numpy version.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from prepare_wordnet import DEFAULT_WORDNET_DIR, LEXNAMES, definition

from rehearsal.runner.instructions import INSTRUCTION_TASKS, instruction_text

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "rehearsal" / "data" / "instruction_stream.jsonl.gz"
SKILLS = INSTRUCTION_TASKS
POS_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
POS_NAMES = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective", "r": "adverb"}
WORD = re.compile(r"[a-z]{3,14}")
# A definition a small model can be asked to reproduce: plain words, short, no notes in brackets.
PLAIN_DEFINITION = re.compile(r"[a-z][a-z ,'-]*[a-z]")
MAX_DEFINITION_WORDS = 10
USAGE = re.compile(r'"([^"]+)"')


@dataclass
class Synset:
    pos: str
    lexname: str
    lemmas: list[str]
    pointers: list[tuple[str, str, int, int]]  # (symbol, target key, source word, target word)
    gloss: str
    usage: list[str] = field(default_factory=list)


def _lemma(raw: str) -> str:
    return re.sub(r"\([a-z]+\)$", "", raw)  # adjectives carry a syntactic marker: "big(a)"


def read_synsets(wordnet_dir: Path) -> dict[str, Synset]:
    """Every synset, keyed "offset:pos" (satellite adjectives keyed as "a", as their pointers name them)."""
    synsets: dict[str, Synset] = {}
    for pos, name in POS_FILES.items():
        with open(wordnet_dir / f"data.{name}", encoding="utf-8") as f:
            for line in f:
                if line.startswith("  "):
                    continue  # the licence header
                fields, _, gloss = line.partition(" | ")
                parts = fields.split()
                offset, lex_filenum, ss_type, w_cnt = parts[0], int(parts[1]), parts[2], int(parts[3], 16)
                lemmas = [_lemma(parts[4 + 2 * i]) for i in range(w_cnt)]
                at = 4 + 2 * w_cnt
                p_cnt = int(parts[at])
                pointers = []
                for i in range(p_cnt):
                    symbol, target, target_pos, st = parts[at + 1 + 4 * i : at + 5 + 4 * i]
                    key = f"{target}:{'a' if target_pos == 's' else target_pos}"
                    pointers.append((symbol, key, int(st[:2], 16), int(st[2:], 16)))
                usage = [u.strip() for u in USAGE.findall(gloss)]
                synsets[f"{offset}:{pos}"] = Synset(
                    ss_type, LEXNAMES[lex_filenum], lemmas, pointers, definition(gloss), usage
                )
    return synsets


def read_sense_counts(wordnet_dir: Path) -> dict[str, dict[str, int]]:
    """word -> {pos letter: number of synsets}, from the index files."""
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    for pos, name in POS_FILES.items():
        with open(wordnet_dir / f"index.{name}", encoding="utf-8") as f:
            for line in f:
                if line.startswith("  "):
                    continue
                lemma, _, synset_cnt = line.split()[:3]
                counts[lemma][pos] = int(synset_cnt)
    return counts


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def candidates(
    synsets: dict[str, Synset], senses: dict[str, dict[str, int]]
) -> dict[str, list[dict[str, object]]]:
    """skill -> every item WordNet gives it: word, prompt, answer and the answers accepted as right."""
    items: dict[str, list[dict[str, object]]] = {skill: [] for skill in SKILLS}
    antonyms: dict[str, set[str]] = defaultdict(set)
    for synset in synsets.values():
        for symbol, key, source, target in synset.pointers:
            if symbol == "!" and source and target:
                antonyms[synset.lemmas[source - 1]].add(synsets[key].lemmas[target - 1])
    for key in sorted(synsets):
        synset = synsets[key]
        for word in synset.lemmas:
            if not WORD.fullmatch(word):
                continue
            monosemous = sum(senses.get(word, {}).values()) == 1
            pos = POS_NAMES[synset.pos]
            others = [w.replace("_", " ") for w in synset.lemmas if w != word]
            short = 2 <= len(synset.gloss.split()) <= MAX_DEFINITION_WORDS
            if monosemous and short and PLAIN_DEFINITION.fullmatch(synset.gloss):
                prompt = f"Define the {pos} '{word}'."
                items["define"].append(_item(word, prompt, synset.gloss, [synset.gloss]))
            if monosemous and others:
                items["synonym"].append(_item(word, f"Give a synonym of '{word}'.", others[0], others))
            if monosemous and synset.pos == "n":
                hypernyms = [synsets[k] for s, k, _, _ in synset.pointers if s == "@"]
                if hypernyms:
                    accept = [w.replace("_", " ") for h in hypernyms for w in h.lemmas]
                    items["hypernym"].append(_item(word, f"'{word}' is a kind of what?", accept[0], accept))
                category = synset.lexname.split(".")[1].lower()
                record = json.dumps({"word": word, "category": category})
                prompt = f'Return JSON with keys "word" and "category" for: {word}'
                items["json"].append(_item(word, prompt, record, [record]))
            if monosemous:
                items["pos"].append(_item(word, f"What part of speech is '{word}'?", pos, [pos]))
            if word in antonyms:
                accept = sorted(a.replace("_", " ") for a in antonyms[word])
                items["antonym"].append(_item(word, f"Give the antonym of '{word}'.", accept[0], accept))
    for skill, found in items.items():
        unique = {str(item["prompt"]): item for item in found}  # one item per prompt, the first one found
        items[skill] = [unique[p] for p in sorted(unique)]
    return items


def _item(word: str, prompt: str, answer: str, accept: list[str]) -> dict[str, object]:
    return {"word": word, "prompt": prompt, "answer": answer, "accept": sorted(set(accept))}


def _draw(items: list[dict[str, object]], rng: np.random.Generator, *, pos_balanced: bool) -> list[int]:
    """Indices of ``items`` in a seeded order (round-robin over the answers when ``pos_balanced``)."""
    order = [int(i) for i in rng.permutation(len(items))]
    if not pos_balanced:
        return order
    by_answer: dict[str, list[int]] = defaultdict(list)
    for i in order:
        by_answer[str(items[i]["answer"])].append(i)
    lanes = [by_answer[a] for a in sorted(by_answer)]
    return [lane[r] for r in range(max(map(len, lanes))) for lane in lanes if r < len(lane)]


def split_skills(
    items: dict[str, list[dict[str, object]]], *, n_train: int, n_test: int, rng: np.random.Generator
) -> list[dict[str, object]]:
    """Test words first, for every skill; then training items that never mention any test word."""
    orders = {skill: _draw(items[skill], rng, pos_balanced=skill == "pos") for skill in SKILLS}
    test_words: set[str] = set()
    rows: list[dict[str, object]] = []
    for skill in SKILLS:
        chosen = [items[skill][i] for i in orders[skill][:n_test]]
        test_words |= {str(item["word"]) for item in chosen}
        rows += [{**item, "task": skill, "split": "test"} for item in chosen]
    for skill in SKILLS:
        kept = 0
        for i in orders[skill][n_test:]:
            item = items[skill][i]
            if _words(f"{item['prompt']} {item['answer']}") & test_words:
                continue
            rows.append({**item, "task": skill, "split": "train"})
            kept += 1
            if kept == n_train:
                break
    return rows


def general_sentences(synsets: dict[str, Synset], n: int, rng: np.random.Generator) -> list[str]:
    """``n`` of WordNet's usage sentences (8 to 16 words, plain punctuation), drawn with ``rng``."""
    found = sorted(
        {
            u
            for s in synsets.values()
            for u in s.usage
            if 8 <= len(u.split()) <= 16 and re.fullmatch(r"[\w ,.;'?!-]+", u)
        }
    )
    return [found[i] for i in sorted(rng.permutation(len(found))[:n])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wordnet-dir", type=Path, default=DEFAULT_WORDNET_DIR)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--train", type=int, default=200, help="training items per skill")
    parser.add_argument("--test", type=int, default=50, help="test items per skill")
    parser.add_argument("--general", type=int, default=60, help="held-out general sentences")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    synsets = read_synsets(args.wordnet_dir)
    items = candidates(synsets, read_sense_counts(args.wordnet_dir))
    rng = np.random.default_rng(args.seed)
    rows = split_skills(items, n_train=args.train, n_test=args.test, rng=rng)
    fields = ("task", "split", "word", "prompt", "answer", "accept")
    lines: list[dict[str, object]] = [
        {
            "label": r["task"],
            **{k: r[k] for k in fields},
            "text": instruction_text(str(r["prompt"]), str(r["answer"])),
        }
        for r in rows
    ]
    general = general_sentences(synsets, args.general, rng)
    lines += [{"task": "general", "label": "general", "split": "general", "text": t} for t in general]
    payload = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode("utf-8")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0 and no embedded file name keep the archive byte-identical across regenerations.
    with open(args.out, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(payload)
    for skill in SKILLS:
        n_tr = sum(r["task"] == skill and r["split"] == "train" for r in rows)
        n_te = sum(r["task"] == skill and r["split"] == "test" for r in rows)
        print(f"{skill:9s} candidates={len(items[skill]):6d} train={n_tr:4d} test={n_te:3d}")
    print(f"general sentences: {len(general)}")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
