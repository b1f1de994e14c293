"""Replay added to an ordinary Hugging Face Trainer classification script, beside the same script without it.

MiniLM is fine-tuned on one WordNet task ("living": glosses of animals, people, plants, ...) whose training
examples are kept in an encrypted memory, then on a second task ("verbs") twice from that same point:
once as an ordinary script does (no replay), once with replay added by the lines marked `# +`. Both models
are evaluated on both tasks, so what the plain script forgets of "living", and what replay keeps, are
printed side by side:

    python examples/hf_trainer_replay.py --memory indexes/wordnet --output runs/example

With the defaults (20 examples per class, 3 epochs; about 4.5 CPU-minutes) it printed, on 2 busy cores,
when the replay run was a plain ``Trainer`` with hybrid replay at ratio 0.25 (before issue 29):

    after learning 'living': accuracy on living 0.640
    then learning verbs      living    verbs
    without replay            0.000    0.172
    with replay               0.750    0.149

The replay run is now ``rh.RehearsalTrainer`` with the library's defaults (class-balanced random replay at
ratio 0.5) and the three head remedies; the README's Trainer section has what they buy, measured on three
tasks (``benchmarks/trainer_path.py``). These two-task figures were not measured again.

The memory is created (and filled with the "living" task) on the first run; the replay run adds the "verbs"
examples to it when it ends. The master key comes from REHEARSAL_MASTER_KEY; for a throwaway demo the
script generates one and says so.
"""

from __future__ import annotations

import argparse
import copy
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
    set_seed,
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


def training_args(output: str, epochs: float = 1.0, **changes: object) -> TrainingArguments:
    settings: dict[str, object] = dict(
        output_dir=output,
        per_device_train_batch_size=24,
        num_train_epochs=epochs,
        logging_steps=10,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        learning_rate=3e-4,  # the new classification head starts random: the default 5e-5 barely moves it
        seed=0,
    )
    return TrainingArguments(**{**settings, **changes})


def accuracy(model: object, tokenizer: object, stream: rh.TaskStream, name: str, output: str) -> float:
    test = wordnet_task(stream, name, "test")
    test = test.map(lambda batch: tokenizer(batch["text"], truncation=True, max_length=64), batched=True)
    trainer = Trainer(
        model=model, args=training_args(output), data_collator=DataCollatorWithPadding(tokenizer)
    )
    predictions = trainer.predict(test.remove_columns(["text"]))
    return float((predictions.predictions.argmax(-1) == predictions.label_ids).mean())


def memory_accuracy(classifier: rh.MemoryClassifier, stream: rh.TaskStream, name: str) -> float:
    test = wordnet_task(stream, name, "test")
    return float((classifier.predict(test["text"]) == test["label"]).mean())


def train_plain(model: object, tokenizer: object, train: Dataset, output: str, epochs: float) -> None:
    """The ordinary script: what the diff in the README starts from."""
    train = train.map(lambda batch: tokenizer(batch["text"], truncation=True, max_length=64), batched=True)
    set_seed(0)
    Trainer(
        model=model,
        args=training_args(output, epochs),
        train_dataset=train.remove_columns(["text"]),
        data_collator=DataCollatorWithPadding(tokenizer),
    ).train()


def train_with_replay(
    model: object, tokenizer: object, train: Dataset, memory: rh.RehearsalMemory, output: str, epochs: float
) -> None:
    """The same script with replay: the lines marked `# +` are the whole change."""
    train = rh.embed_dataset(train, memory.encoder)  # +
    train = train.map(lambda batch: tokenizer(batch["text"], truncation=True, max_length=64), batched=True)
    collator = rh.RehearsalCollator(memory, DataCollatorWithPadding(tokenizer), tokenizer, task="verbs")  # +
    args = training_args(output, epochs, remove_unused_columns=False)  # + (text, vectors reach the collator)
    set_seed(0)
    trainer = rh.RehearsalTrainer(  # + (was Trainer)
        model=model,
        args=args,
        train_dataset=train,
        data_collator=collator,
        callbacks=[rh.RehearsalCallback(memory, collator=collator, dataset=train, task="verbs")],  # +
        mask_unseen=True,  # + the loss covers the classes seen so far, not the head's every output
        calibration="weight_aligning",  # + new classes' head rows scaled to the old rows' norm at the end
        head_learning_rate=3e-3,  # + the head, random at first, learns 10x faster than the body
    )
    trainer.train()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--memory", default="indexes/wordnet", help="the memory folder (created on first run)"
    )
    parser.add_argument("--output", default="runs/example", help="the Trainer's output folder")
    parser.add_argument("--train-per-class", type=int, default=20, help="training examples per class")
    parser.add_argument("--test-per-class", type=int, default=20, help="test examples per class")
    parser.add_argument("--epochs", type=float, default=3.0, help="passes over each task's training data")
    args = parser.parse_args()

    stream = rh.load_wordnet_stream(
        max_train_per_class=args.train_per_class, max_test_per_class=args.test_per_class
    )
    memory = open_memory(args.memory, stream)
    model_dir = str(rh.embedding.default_model_path())
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    set_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=len(stream.labels))

    train_plain(model, tokenizer, wordnet_task(stream, "living", "train"), args.output, args.epochs)
    learned = accuracy(model, tokenizer, stream, "living", args.output)
    plain = copy.deepcopy(model)  # both continue from the same model
    train_plain(plain, tokenizer, wordnet_task(stream, "verbs", "train"), args.output, args.epochs)
    train_with_replay(
        model, tokenizer, wordnet_task(stream, "verbs", "train"), memory, args.output, args.epochs
    )
    # + predict through the memory: a shared-covariance discriminant over the fine-tuned encoder's features
    by_memory = rh.MemoryClassifier(model, tokenizer, memory, predictor="lda").fit()
    memory_scores = [memory_accuracy(by_memory, stream, name) for name in ("living", "verbs")]
    memory.close()

    print(f"after learning 'living': accuracy on living {learned:.3f}")
    print(f"{'then learning verbs':<34} {'living':>8} {'verbs':>8}")
    for label, trained in (("without replay", plain), ("with replay (the head)", model)):
        scores = [accuracy(trained, tokenizer, stream, name, args.output) for name in ("living", "verbs")]
        print(f"{label:<34} {scores[0]:>8.3f} {scores[1]:>8.3f}")
    print(f"{'with replay (lda over the memory)':<34} {memory_scores[0]:>8.3f} {memory_scores[1]:>8.3f}")


if __name__ == "__main__":
    main()
