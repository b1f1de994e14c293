"""The example scripts run as a user would run them, in a fresh process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def test_embedding_only_example_keeps_no_text_purges_the_erased_record_and_seals_vectors(tmp_path):
    done = run_example("embedding_only_privacy.py", "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "memory: 20 records; texts found in its files: 0 of 20" in out
    erased = re.search(r"after erasing (doc-\d+) upstream: replay got 2 texts for 3 hits", out)
    assert erased is not None, out
    assert re.search(r"erased id \d+ skipped: True; still held: False", out), out
    assert "records: 20 -> 19" in out
    assert "with keys:    index.snap sealed=True" in out
    assert "without keys: index.snap sealed=False, a stored vector is 768 bytes" in out
    assert "embeddings can be\ninverted into text" in out
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"sealed", "plain"}


def test_embedding_only_example_refuses_a_folder_that_is_not_empty(tmp_path):
    (tmp_path / "old.txt").write_text("x")
    done = run_example("embedding_only_privacy.py", "--out", str(tmp_path))
    assert done.returncode == 2
    assert "is not empty" in done.stderr


def _options_without_help(help_text: str) -> list[str]:
    """Option lines of argparse's help that carry no description on their line or the next."""
    lines = help_text.splitlines()
    missing = []
    for i, line in enumerate(lines):
        if not line.startswith("  -") or line.lstrip().startswith("-h, --help"):
            continue
        same_line = re.search(r"\S\s{2,}\S", line.strip()) is not None
        following = lines[i + 1] if i + 1 < len(lines) else ""
        next_line = following.startswith(" " * 8) and not following.lstrip().startswith("-")
        if not (same_line or next_line):
            missing.append(line.split()[0])
    return missing


def test_every_example_describes_itself_and_each_option_in_help():
    for script in sorted(EXAMPLES.glob("*.py")):
        done = run_example(script.name, "--help")
        assert done.returncode == 0, done.stderr[-2000:]
        _, _, body = done.stdout.partition("\n\n")
        assert not body.startswith("options:"), f"{script.name}: --help has no description"
        assert "--" in body, f"{script.name}: no options listed"
        assert _options_without_help(body) == [], script.name
