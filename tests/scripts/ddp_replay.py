"""Run under torchrun: trains a few steps with replay and writes each rank's replay ids to OUT/rank-N.json."""

import json
import os
import sys

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

memory_path, data_path, out = sys.argv[1:4]
keys = KeyRing.from_env("REHEARSAL_MASTER_KEY")
tokenizer = AutoTokenizer.from_pretrained(str(default_model_path()))
data = Dataset.load_from_disk(data_path)
collator = RehearsalCollator(
    memory_path, DataCollatorWithPadding(tokenizer), tokenizer, ReplayConfig(ratio=0.5), keys=keys, task="new"
)
seen: list[list[int]] = []


class RecordReplay(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        seen.append(list(collator.last_replay_ids))


model = AutoModelForSequenceClassification.from_pretrained(
    str(default_model_path()), num_labels=64
)  # covers the old tasks' label ids too
args = TrainingArguments(
    output_dir=os.path.join(out, "trainer"),
    per_device_train_batch_size=4,
    max_steps=3,
    remove_unused_columns=False,
    report_to=[],
    use_cpu=True,
    save_strategy="no",
    ddp_backend="gloo",
    logging_steps=1,
)
callback = RehearsalCallback(memory_path, keys=keys, collator=collator, dataset=data, task="new")
Trainer(
    model=model, args=args, train_dataset=data, data_collator=collator, callbacks=[callback, RecordReplay()]
).train()
rank = int(os.environ["RANK"])
with open(os.path.join(out, f"rank-{rank}.json"), "w") as f:
    json.dump({"replay": seen, "admitted": len(callback.admitted)}, f)
