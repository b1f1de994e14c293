"""Run under torchrun against a server memory: each rank trains in its own folder with replay from the
same PostgreSQL memory and writes, per step, when its collator ran and which ids it replayed.

argv: memory URL, dataset folder, this rank's output folder prefix (rank N writes PREFIX-N/...), steps.
Rank 0 writes PREFIX-0/progress after each step, which the test's eraser watches.
"""

import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from datasets import Dataset
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from rehearsal.config import ReplayConfig
from rehearsal.crypto.keys import KeyRing
from rehearsal.embedding import default_model_path
from rehearsal.replay.callback import RehearsalCallback
from rehearsal.replay.collator import RehearsalCollator

url, data_path, prefix, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
rank = int(os.environ["RANK"])
folder = f"{prefix}-{rank}"  # this rank's own folder: the ranks share only the server
os.makedirs(folder, exist_ok=True)
keys = KeyRing.from_env("REHEARSAL_MASTER_KEY")
tokenizer = AutoTokenizer.from_pretrained(str(default_model_path()))
data = Dataset.load_from_disk(data_path)
collator = RehearsalCollator(
    url, DataCollatorWithPadding(tokenizer), tokenizer, ReplayConfig(ratio=0.5), keys=keys, task="new"
)
steps_seen: list[dict[str, object]] = []


def timed(features):  # when this batch's replay was searched and its texts fetched, and what it got
    started = time.time()
    batch = collator(features)
    steps_seen.append({"started": started, "ids": list(collator.last_replay_ids)})
    return batch


class Progress(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if rank == 0:
            with open(os.path.join(folder, "progress"), "w") as f:
                f.write(str(state.global_step))
        time.sleep(0.3)  # room for the eraser to commit between steps


model = AutoModelForSequenceClassification.from_pretrained(str(default_model_path()), num_labels=64)
args = TrainingArguments(
    output_dir=os.path.join(folder, "trainer"),
    per_device_train_batch_size=4,
    max_steps=steps,
    remove_unused_columns=False,
    report_to=[],
    use_cpu=True,
    save_strategy="no",
    ddp_backend="gloo",
    logging_steps=1,
)
callback = RehearsalCallback(url, keys=keys, collator=collator, dataset=data, task="new")
Trainer(
    model=model, args=args, train_dataset=data, data_collator=timed, callbacks=[callback, Progress()]
).train()
with open(os.path.join(folder, "replay.json"), "w") as f:
    json.dump({"steps": steps_seen, "admitted": len(callback.admitted)}, f)
