"""An ordinary Hugging Face Trainer classification script, with replay added by the lines marked `# +`.

It fine-tunes MiniLM on one WordNet task ("verbs") after another ("living") has been learned and stored
in a memory, so the model rehearses nearby old examples while it learns the new ones:

    python examples/hf_trainer_replay.py --memory indexes/wordnet --output runs/example

The memory is created (and filled with the "living" task) on the first run. The master key comes from
REHEARSAL_MASTER_KEY; for a throwaway demo the script generates one and says so.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from datasets import Dataset
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

import rehearsal as rh


def wordnet_task(stream: rh.TaskStream, name: str, split: str) -> Dataset:
    examples = getattr(stream.task(name), split)
    return Dataset.from_dict(
        {"text": [e.text for e in examples], "label": [stream.label_id(e.label) for e in examples]}
    )


def open_memory(path: str, stream: rh.TaskStream) -> rh.RehearsalMemory:
    """Open the memory, or create it holding the old task (this part is set-up, not the diff)."""
    if os.environ.get("REHEARSAL_MASTER_KEY"):
        keys = rh.KeyRing.from_env()
    else:
        print("REHEARSAL_MASTER_KEY is not set: using a throwaway key, the memory is rebuilt each run")
        keys = rh.KeyRing.generate()
        path = path + "-demo"
        if os.path.isdir(path):
            import shutil

            shutil.rmtree(path)
    if os.path.isdir(path):
        return rh.RehearsalMemory.open(path, keys=keys)
    memory = rh.RehearsalMemory.create(path, keys=keys)
    old = stream.task("living").train
    memory.add(
        [e.text for e in old], metadata=[{"task": "living", "label": stream.label_id(e.label)} for e in old]
    )
    return memory


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--memory", default="indexes/wordnet")
    parser.add_argument("--output", default="runs/example")
    parser.add_argument("--train-per-class", type=int, default=40)
    args = parser.parse_args()

    stream = rh.load_wordnet_stream(max_train_per_class=args.train_per_class, max_test_per_class=20)
    memory = open_memory(args.memory, stream)
    model_dir = str(rh.embedding.default_model_path())
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=len(stream.labels))

    train = wordnet_task(stream, "verbs", "train")
    train = rh.embed_dataset(train, memory.encoder)  # +
    train = train.map(lambda batch: tokenizer(batch["text"], truncation=True, max_length=64), batched=True)
    collator = rh.RehearsalCollator(memory, DataCollatorWithPadding(tokenizer), tokenizer, task="verbs")  # +
    training_args = TrainingArguments(
        output_dir=args.output,
        per_device_train_batch_size=24,
        num_train_epochs=1,
        logging_steps=10,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        remove_unused_columns=False,  # + (keeps the text and vector columns for the collator)
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train,
        data_collator=collator,
        callbacks=[rh.RehearsalCallback(memory, collator=collator, dataset=train, task="verbs")],  # +
    )
    trainer.train()
    memory.close()

    for name in ("living", "verbs"):
        test = wordnet_task(stream, name, "test")
        test = test.map(lambda batch: tokenizer(batch["text"], truncation=True, max_length=64), batched=True)
        predictions = trainer.predict(test.remove_columns(["text"]))
        accuracy = float((predictions.predictions.argmax(-1) == predictions.label_ids).mean())
        print(f"accuracy on {name}: {accuracy:.3f}")


if __name__ == "__main__":
    main()
