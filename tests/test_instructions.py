"""The bundled instruction stream: its skills, its held-out words, and its prepare script."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from rehearsal.runner.instructions import (
    INSTRUCTION_TASKS,
    general_texts,
    instruction_of,
    load_instruction_stream,
)

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "rehearsal" / "data" / "instruction_stream.jsonl.gz"
WORDNET = Path("/usr/share/wordnet")


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def test_every_skill_has_training_and_test_items() -> None:
    stream = load_instruction_stream()
    assert [t.name for t in stream.tasks] == list(INSTRUCTION_TASKS)
    for task in stream.tasks:
        assert len(task.train) == 200
        assert len(task.test) == 50
        assert task.labels == (task.name,)


def test_no_test_word_occurs_in_any_training_item() -> None:
    stream = load_instruction_stream()
    trained = set().union(*(_words(ex.text) for task in stream.tasks for ex in task.train))
    test_words = {instruction_of(ex.text).word for task in stream.tasks for ex in task.test}
    assert len(test_words) >= 250
    assert not test_words & trained


def test_the_caps_take_nested_draws() -> None:
    small = load_instruction_stream(max_train_per_class=5, max_test_per_class=3, tasks=["json", "pos"])
    large = load_instruction_stream(max_train_per_class=20, max_test_per_class=10, tasks=["json", "pos"])
    assert [t.name for t in small.tasks] == ["json", "pos"]
    for a, b in zip(small.tasks, large.tasks, strict=True):
        assert set(a.train) <= set(b.train)
        assert set(a.test) <= set(b.test)
        assert (len(a.train), len(a.test)) == (5, 3)


def test_an_item_accepts_its_reference_answer_and_rebuilds_its_text() -> None:
    task = load_instruction_stream(tasks=["synonym"]).tasks[0]
    for ex in task.train[:20]:
        item = instruction_of(ex.text)
        assert item.answer in item.accept
        assert item.text == ex.text
        assert item.text.startswith(item.prompt + "\nAnswer: ")


def test_the_general_text_is_in_no_task() -> None:
    general = general_texts()
    stream = load_instruction_stream()
    assert len(general) == 60
    texts = {ex.text for task in stream.tasks for ex in task.train + task.test}
    assert not set(general) & texts
    assert all("Answer:" not in text for text in general)


def test_the_bundled_file_is_small() -> None:
    assert BUNDLED.stat().st_size < 200_000


@pytest.mark.slow
@pytest.mark.skipif(not (WORDNET / "data.noun").is_file(), reason="needs Debian's wordnet-base")
def test_the_prepare_script_regenerates_the_bundled_file_exactly(tmp_path: Path) -> None:
    out = tmp_path / "instruction_stream.jsonl.gz"
    script = ROOT / "scripts" / "prepare_instructions.py"
    subprocess.run([sys.executable, str(script), "--out", str(out)], check=True, capture_output=True)
    assert out.read_bytes() == BUNDLED.read_bytes()
