"""The example scripts run as a user would run them, in a fresh process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.mark.slow
def test_generative_replay_example_keeps_no_text_guides_reports_copies_and_forgets(tmp_path):
    from _models import tiny_causal_lm

    from rehearsal.runner.tasks import load_wordnet_stream

    stream = load_wordnet_stream(max_train_per_class=8, tasks=["living", "verbs"])
    model = tiny_causal_lm(tmp_path / "lm", [e.text for task in stream.tasks for e in task.train])
    done = run_example(
        "generative_replay_privacy.py", "--model", model, "--epochs", "1", "--max-new-tokens", "8"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "memory: 24 records, embedding-only; training texts found in its files: 0" in out
    assert re.search(r"generated 48 texts, \d+ tokens in \d+ s \([\d.]+ tokens/s", out), out
    assert re.search(r"guide: kept \d+ of 48; rejected: ", out), out
    assert re.search(
        r"copy report: canaries verbatim \d+ of 20, near \d+, number written \d+; generations nearly", out
    )
    assert "forget clinic-b: 6 vectors removed; the next task's 8 examples include 4 of clinic-b's" in out
    assert "a generator trained\nbefore an erasure may still carry the erased records" in out


@pytest.mark.slow
def test_support_assistant_scenario_grows_an_expert_for_the_new_line_and_prints_its_versions(
    tmp_path, tiny_model
):
    done = run_example(
        "support_assistant.py", "--out", str(tmp_path / "out"), "--model", tiny_model, "--per-class", "12",
        "--epochs", "1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert re.search(r"week 2: update-\w+ staged; novelty .*'decision': 'new-expert'", out), out
    # The new line's column is there once a version knows it (the tiny model's may not ship).
    header = r"^version +update +expert +(editorials +)?movies +products +tweets +escalation"
    assert re.search(header, out, re.M), out
    # The tiny model learns too little for the gate to pass every week: a blocked week is reported and
    # keeps the version (a week held only on thin evidence is approved and sent again); the table holds
    # the initial version and each update that shipped: weeks 1 and 3, and the new line if promoted.
    for week in (1, 3):
        assert re.search(rf"^week {week}: (update-\w+ -> v\d|blocked by the gate)", out, re.M), out
    shipped = len(re.findall(r"^week [13]: update-\w+ -> v\d", out, re.M))
    promoted = len(re.findall(r"^  promoted -> v\d", out, re.M))
    if not promoted:
        assert "not approved: the staged candidate is discarded" in out or "(fail)" in out, out
    assert len(re.findall(r"^v\d ", out, re.M)) == 1 + promoted + shipped
    assert (tmp_path / "out" / "deployment" / "report.html").is_file()
    assert (tmp_path / "out" / "master.key").stat().st_mode & 0o077 == 0  # kept for the CLI, private


@pytest.mark.slow
def test_entity_stream_scenario_prints_old_task_accuracy_and_latency_per_version(tmp_path, tiny_model):
    done = run_example(
        "entity_stream.py", "--out", str(tmp_path / "out"), "--model", tiny_model, "--per-class", "3",
        "--epochs", "1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    # The tiny model learns too little for the gate to let every event through: a blocked update is
    # reported, and the table holds the versions that shipped.
    assert re.search(r"^(verbs|modifiers): (update-\w+ -> v\d|blocked by the gate)", out, re.M), out
    assert re.search(r"^version +update +labels +living +physical .*p50 ms +p95 ms$", out, re.M), out
    assert re.search(r"^v1 +init-\w+ +12 ", out, re.M), out
    assert (tmp_path / "out" / "master.key").stat().st_mode & 0o077 == 0


@pytest.mark.slow
def test_the_readme_trainer_example_replays_the_old_task_and_prints_both_rows(tmp_path):
    """The README's headline diff is this script: it must run as shown and really replay (the Trainer's
    last log line carries the callback's replay count, which must not be 0)."""
    done = run_example(
        "hf_trainer_replay.py", "--memory", str(tmp_path / "memory"), "--output", str(tmp_path / "run"),
        "--train-per-class", "2", "--test-per-class", "2", "--epochs", "1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert re.search(r"^after learning 'living': accuracy on living [01]\.\d{3}$", out, re.M), out
    assert re.search(r"^without replay +[01]\.\d{3} +[01]\.\d{3}$", out, re.M), out
    assert re.search(r"^with replay \(the head\) +[01]\.\d{3} +[01]\.\d{3}$", out, re.M), out
    assert re.search(r"^with replay \(lda over the memory\) +[01]\.\d{3} +[01]\.\d{3}$", out, re.M), out
    replayed = re.findall(r"'replay/examples': '?(\d+)", out + done.stderr)
    assert replayed, out[-2000:]
    assert int(replayed[-1]) > 0, out[-2000:]
