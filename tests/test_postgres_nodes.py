"""Several nodes, one memory: two trainer processes (torchrun, gloo) that share no folder replay from the
same PostgreSQL memory; admission happens once; a third process erases a tenant mid-run, and no rank
replays that tenant's text once the erasure has committed."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from datasets import Dataset

from rehearsal.crypto.keys import KeyRing
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.replay.collator import embed_dataset
from rehearsal.runner.tasks import load_wordnet_stream

SCRIPT = Path(__file__).parent / "scripts" / "ddp_replay_server.py"
STEPS = 6

ERASER = """
import os, sys, time
from rehearsal.crypto.keys import KeyRing
from rehearsal.memory.facade import RehearsalMemory
url, progress, out = sys.argv[1:4]
deadline = time.time() + 600
while time.time() < deadline:  # wait until rank 0 finished two steps
    if os.path.exists(progress) and int(open(progress).read() or 0) >= 2:
        break
    time.sleep(0.05)
mem = RehearsalMemory.open(url, keys=KeyRing.from_env("REHEARSAL_MASTER_KEY"))
removed = mem.forget(tenant="globex")
committed = time.time()  # forget() returned: the erasure is committed on the server
mem.close()
open(out, "w").write(f"{committed} {removed}")
"""


@pytest.mark.slow
def test_two_ranks_share_a_server_memory_and_an_erasure_reaches_both(
    postgres_url: str, tmp_path: Path, encoder: Any
) -> None:
    from transformers import AutoTokenizer

    from rehearsal.embedding import default_model_path

    keys = KeyRing.generate()
    stream = load_wordnet_stream(max_train_per_class=8, max_test_per_class=2, tasks=["living", "verbs"])
    first, second = stream.tasks
    with RehearsalMemory.create(postgres_url, keys=keys, encoder=encoder) as mem:
        for tenant, part in (("acme", first.train[0::2]), ("globex", first.train[1::2])):
            mem.add(
                [e.text for e in part],
                metadata=[{"task": e.task, "label": stream.label_id(e.label)} for e in part],
                tenant=tenant,
            )
        globex = set(mem.ids(where={"tenant": "globex"}))
        before = len(mem)
    tokenizer = AutoTokenizer.from_pretrained(str(default_model_path()))
    new = Dataset.from_dict(
        {
            "text": [e.text for e in second.train[:24]],
            "label": [stream.label_id(e.label) % 4 for e in second.train[:24]],
            "task": ["new"] * 24,
        }
    )
    new = embed_dataset(new, encoder).map(
        lambda b: tokenizer(b["text"], truncation=True, max_length=48), batched=True
    )
    new.save_to_disk(str(tmp_path / "data"))

    env = {**os.environ, "REHEARSAL_MASTER_KEY": keys.export_base64(), "OMP_NUM_THREADS": "1"}
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    assert torchrun is not None
    with socket.socket() as probe:  # a free port: torchrun's own port 0 handling hangs on some hosts
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    prefix = tmp_path / "rank"
    eraser = subprocess.Popen(
        [sys.executable, "-c", ERASER, postgres_url, f"{prefix}-0/progress", str(tmp_path / "erased")],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        done = subprocess.run(
            [
                torchrun,
                "--nproc_per_node=2",
                f"--master_port={port}",
                "--master_addr=127.0.0.1",
                str(SCRIPT),
                postgres_url,
                str(tmp_path / "data"),
                str(prefix),
                str(STEPS),
            ],
            check=False,
            env=env,
            timeout=540,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        _, eraser_err = eraser.communicate(timeout=120)
        assert eraser.returncode == 0, eraser_err[-2000:]
    finally:
        eraser.kill()
    committed, removed = (tmp_path / "erased").read_text().split()
    assert int(removed) == len(globex)
    ranks = [json.loads((Path(f"{prefix}-{r}") / "replay.json").read_text()) for r in (0, 1)]
    after = [step for rank in ranks for step in rank["steps"] if step["started"] > float(committed)]
    earlier = [step for rank in ranks for step in rank["steps"] if step["started"] <= float(committed)]
    assert after, "the erasure committed after the last step: nothing was checked"
    assert any(globex & set(step["ids"]) for step in earlier)  # the tenant was being replayed before
    assert not any(globex & set(step["ids"]) for step in after)
    assert [rank["admitted"] for rank in ranks] == [24, 0]  # admission once, by rank 0
    with RehearsalMemory.open(postgres_url, keys=keys, read_only=True) as mem:
        assert len(mem) == before - len(globex) + 24
        assert mem.ids(where={"tenant": "globex"}) == []
