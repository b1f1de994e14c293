"""LAMOL-style prompts: the generator learns to continue "task: T label: L text:" with an example of L."""

from __future__ import annotations

import re

__all__ = ["clean_generation", "prompt", "training_text"]

_MARKERS = re.compile(r"\b(?:task|label|text)\s*:", flags=re.IGNORECASE)


def prompt(task: str, label: str) -> str:
    """The prompt that asks for an example of ``label`` (a class name) of ``task``."""
    return f"task: {task} label: {label} text:"


def training_text(task: str, label: str, text: str) -> str:
    """What the generator is trained on: the prompt, then the example (the caller appends end-of-text)."""
    return f"{prompt(task, label)} {' '.join(text.split())}"


def clean_generation(raw: str) -> str:
    """The example a sampled continuation holds: its first line, cut before any prompt field it starts to
    write again (a model that runs on writes "task: ..." for the next example)."""
    line = raw.strip().split("\n", 1)[0]
    match = _MARKERS.search(line)
    if match is not None:
        line = line[: match.start()]
    return " ".join(line.split())
