"""Generative replay: prompts, the class-conditional generator, the memory's guide, the memorisation check,
the pool and its collator. The generator here is a tiny randomly initialised Llama (with the MiniLM
tokenizer) trained in seconds; the packaged SmolLM2 is exercised by benchmarks/generative.py."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _models import tiny_causal_lm

from rehearsal.config import ReplayConfig
from rehearsal.errors import ConfigError, ValidationError
from rehearsal.examples import Example
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.methods.generative.config import GenerativeConfig
from rehearsal.methods.generative.generator import ClassGenerator
from rehearsal.methods.generative.guide import MemoryGuide
from rehearsal.methods.generative.memorisation import copies, copy_report, make_canaries
from rehearsal.methods.generative.pool import Generated, GeneratedPool
from rehearsal.methods.generative.prompts import clean_generation, prompt, training_text
from rehearsal.runner.tasks import TaskStream

_TEACH = {
    "noun.animal": "a small furry animal that purrs",
    "verb.motion": "move quickly on foot over the ground",
}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Any:
    """One torch thread: on 2 shared cores two threads contend and a tiny model's step takes 30x longer."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> str:
    return tiny_causal_lm(tmp_path_factory.mktemp("tiny-lm"), [*_TEACH, *_TEACH.values()])


def _config(model: str, **changes: Any) -> GenerativeConfig:
    base: dict[str, Any] = {
        "model": model,
        "lora_r": 16,
        "learning_rate": 1e-2,
        "max_new_tokens": 12,
        "temperature": 0.1,
        "batch_size": 8,
    }
    return GenerativeConfig(**{**base, **changes})


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


# -- prompts and config ----------------------------------------------------------------------------


def test_prompts_name_task_and_label_in_the_lamol_format() -> None:
    assert prompt("living", "noun.animal") == "task: living label: noun.animal text:"
    assert training_text("living", "noun.animal", " a  cat ") == "task: living label: noun.animal text: a cat"


def test_a_continuation_is_cut_where_the_model_starts_the_next_prompt() -> None:
    assert clean_generation(" a small cat task: living label: x text: more") == "a small cat"
    assert clean_generation("first line\nsecond line") == "first line"


@pytest.mark.parametrize(
    "config", [GenerativeConfig(), GenerativeConfig(model="m", guide=False, canaries=20)]
)
def test_generative_config_round_trips(config: GenerativeConfig, tmp_path: Path) -> None:
    assert GenerativeConfig.from_dict(config.to_dict()) == config
    config.save(tmp_path / "g.json")
    assert GenerativeConfig.load(tmp_path / "g.json") == config
    assert pickle.loads(pickle.dumps(config)) == config


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("per_class", 0, "'per_class' must be an int >= 1"),
        ("top_p", 1.5, "'top_p'"),
        ("oversample", 0.5, "'oversample'"),
        ("guide", "yes", "'guide' must be true or false"),
        ("model", "", "'model'"),
    ],
)
def test_generative_config_names_the_rejected_field(field: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        GenerativeConfig(**{field: value})


def test_the_retrieval_collator_refuses_the_generative_mode(tmp_path: Path, encoder: Any) -> None:
    from rehearsal.replay.collator import RehearsalCollator

    memory = RehearsalMemory.create(tmp_path / "m", embedding_only=True, encoder=encoder)
    with pytest.raises(ConfigError, match="GenerativeCollator"):
        RehearsalCollator(memory, lambda rows: rows, None, ReplayConfig(mode="generative"))
    memory.close()


# -- the generator ---------------------------------------------------------------------------------


def test_class_conditional_prompts_write_the_asked_label(tiny_lm: str) -> None:
    generator = ClassGenerator.load(_config(tiny_lm, epochs=80.0))
    examples = [Example(text=text, label=label, task="t") for label, text in _TEACH.items()] * 4
    logs = generator.learn(examples, seed=0)
    assert logs["generator_final_loss"] < 0.5
    requests = [("t", label) for label in _TEACH for _ in range(3)]
    texts, cost = generator.generate(requests, seed=0)
    assert len(texts) == len(requests)
    assert cost.texts == len(requests)
    assert cost.tokens > 0
    for (_, label), text in zip(requests, texts, strict=True):
        other = next(t for lab, t in _TEACH.items() if lab != label)
        assert _norm(text) == _norm(_TEACH[label]), (label, text)
        assert _norm(other) not in _norm(text)


def test_a_forgotten_tenants_examples_are_not_learnt_and_the_ledger_persists(
    tiny_lm: str, tmp_path: Path
) -> None:
    generator = ClassGenerator.load(_config(tiny_lm, epochs=80.0))
    generator.forget_tenant("acme")
    examples = [
        Example(text="a cat", label="noun.animal", task="t", tenant="acme"),
        Example(text="a dog", label="noun.animal", task="t"),
    ]
    logs = generator.learn(examples, seed=0)
    assert logs["generator_dropped_forgotten"] == 1
    assert logs["generator_examples"] == 1
    assert generator.tenants_seen == {"default"}
    generator.save(tmp_path / "adapter")
    again = ClassGenerator.load(_config(tiny_lm), tmp_path / "adapter")
    assert again.forgotten == {"acme"}
    assert again.learn(examples[:1], seed=0)["generator_steps"] == 0


# -- the memorisation check ------------------------------------------------------------------------


def test_copies_find_verbatim_word_runs_and_embedding_neighbours(encoder: Any) -> None:
    originals = ["the amber anchor basket beacon bishop cactus candle carbon code 123456", "a short gloss"]
    generations = [
        "The  Amber anchor basket beacon bishop cactus candle carbon code 123456 again",  # verbatim
        "x amber anchor basket beacon bishop cactus candle carbon y",  # 8-word run
        "a short gloss",  # a short original, whole
        "nothing alike at all",
    ]
    verbatim, near = copies(generations, originals, encoder=None)
    assert verbatim[:, 0].tolist() == [True, False, False, False]
    assert near[:, 0].tolist() == [True, True, False, False]
    assert near[:, 1].tolist() == [False, False, True, False]
    _, by_meaning = copies(["a short gloss."], ["A short gloss"], encoder=encoder, min_words=50)
    assert by_meaning[0, 0]


def test_a_canarys_number_written_among_other_words_exposes_it() -> None:
    canary = "the amber anchor basket beacon bishop cactus candle carbon code 513753"
    report = copy_report(["desert desert code 5 1 3 7 5 3"], canaries=[canary], training=[], encoder=None)
    assert (report.canaries_near, report.canary_secrets) == (0, 1)
    other = copy_report(["code 5137530"], canaries=[canary], training=[], encoder=None)
    assert other.canary_secrets == 0


def test_canaries_are_distinct_and_seeded() -> None:
    a = make_canaries(25, rng=np.random.default_rng(1))
    assert len(set(a)) == 25
    assert a == make_canaries(25, rng=np.random.default_rng(1))


def test_the_canary_check_catches_a_generator_trained_to_copy(tiny_lm: str) -> None:
    canaries = make_canaries(2, rng=np.random.default_rng(0))
    requests = [("t", "noun.animal"), ("t", "verb.motion")] * 2
    fresh = ClassGenerator.load(_config(tiny_lm))
    texts, _ = fresh.generate(requests, seed=0)
    clean = copy_report(texts, canaries=canaries, training=canaries, encoder=None)
    assert clean.passed
    assert clean.canaries_verbatim == 0
    copier = ClassGenerator.load(_config(tiny_lm, max_new_tokens=24, epochs=120.0))
    copier.learn(
        [
            Example(text=c, label=lab, task="t")
            for lab, c in zip(("noun.animal", "verb.motion"), canaries, strict=True)
        ],
        seed=0,
    )
    texts, _ = copier.generate(requests, seed=0)
    caught = copy_report(texts, canaries=canaries, training=canaries, encoder=None)
    assert not caught.passed
    assert caught.canaries_verbatim == 2
    assert caught.canary_secrets == 2
    assert caught.near_copy_rate == 1.0


# -- the guide -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def guided(tmp_path_factory: pytest.TempPathFactory, tiny_stream: TaskStream) -> Any:
    from rehearsal.embedding import load_encoder

    memory = RehearsalMemory.create(
        tmp_path_factory.mktemp("guide") / "m", embedding_only=True, encoder=load_encoder()
    )
    train = [e for task in tiny_stream.tasks for e in task.train]
    memory.add(
        [e.text for e in train],
        metadata=[{"label": tiny_stream.label_id(e.label)} for e in train],
        sources=[f"doc-{i}" for i in range(len(train))],
    )
    yield memory, tiny_stream
    memory.close()


def test_the_guide_rejects_a_generation_planted_in_another_class(guided: Any) -> None:
    memory, stream = guided
    animal, body = stream.label_id("noun.animal"), stream.label_id("verb.body")
    guide = MemoryGuide(memory, k=2, min_similarity=0.05, margin=0.0, copy_cosine=0.95)
    texts = [
        "marine fishes of warm water with barbels on the chin",  # an animal, asked as an animal
        "bathe the skin with warm lotions and massage it",  # a body-care verb, asked as an animal: planted
        "",
    ]
    verdict = guide.judge(texts, [animal, animal, animal])
    assert verdict.keep == [True, False, False]
    assert verdict.own[1] < verdict.other[1], (verdict.own, verdict.other)
    assert verdict.reasons["nearer_other_class"] == 1
    assert verdict.reasons["empty"] == 1
    assert verdict.rejected == 2
    # The same text asked as what it is lands inside its class.
    assert guide.judge(texts[1:2], [body]).keep == [True]


def test_the_guide_drops_near_copies_of_stored_examples_and_texts_outside_every_class(guided: Any) -> None:
    memory, stream = guided
    stored = next(e for e in stream.tasks[0].train)
    guide = MemoryGuide(memory, k=2, min_similarity=0.2, copy_cosine=0.95)
    verdict = guide.judge([stored.text], [stream.label_id(stored.label)])
    assert verdict.keep == [False]
    assert verdict.reasons["near_copy"] == 1
    strict = MemoryGuide(memory, k=2, min_similarity=0.99, copy_cosine=1.0)
    assert strict.judge(["bathe slowly"], [stream.label_id("verb.body")]).reasons["outside_class"] == 1


def _class_vectors(memory: RehearsalMemory, stream: TaskStream) -> tuple[np.ndarray, list[int]]:
    train = [e for task in stream.tasks for e in task.train]
    return memory.encoder.encode([e.text for e in train]), [stream.label_id(e.label) for e in train]


def test_the_per_class_floor_is_a_low_percentile_of_the_members_own_neighbour_cosines(guided: Any) -> None:
    memory, stream = guided
    vectors, labels = _class_vectors(memory, stream)
    guide = MemoryGuide(memory, k=2, floor="class", percentile=10.0)
    floors = guide.class_floors(vectors, labels)
    assert set(floors) == set(labels)
    # Recomputed by brute force from the same vectors: each member's mean cosine to its 2 nearest
    # classmates (itself left out), and the 10th percentile over the class.
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    for label in set(labels):
        rows = unit[[i for i, y in enumerate(labels) if y == label]]
        sims = rows @ rows.T
        np.fill_diagonal(sims, -np.inf)
        means = np.sort(sims, axis=1)[:, -2:].mean(axis=1)
        assert floors[label] == pytest.approx(float(np.percentile(means, 10.0)), abs=1e-4)
    # A tighter or looser class gets its own floor, not one number for all.
    assert len({round(f, 3) for f in floors.values()}) > 1
    assert guide.floor_of(labels[0]) == floors[labels[0]]
    assert MemoryGuide(memory, floor="absolute", min_similarity=0.3).floor_of(labels[0]) == 0.3
    with pytest.raises(ValidationError, match="one vector per label"):
        guide.class_floors(vectors[:2], labels)
    with pytest.raises(ConfigError, match="'floor'"):
        MemoryGuide(memory, floor="median")


def test_the_per_class_floor_still_rejects_a_generation_planted_in_another_class(guided: Any) -> None:
    memory, stream = guided
    vectors, labels = _class_vectors(memory, stream)
    animal, body = stream.label_id("noun.animal"), stream.label_id("verb.body")
    guide = MemoryGuide(memory, k=2, floor="class", percentile=0.0, margin=0.0, copy_cosine=0.95)
    guide.class_floors(vectors, labels)
    texts = [
        "marine fishes of warm water with barbels on the chin",
        "bathe the skin with warm lotions and massage it",  # body care, asked as an animal
    ]
    verdict = guide.judge(texts, [animal, animal])
    assert verdict.keep == [True, False]
    assert verdict.reasons["nearer_other_class"] + verdict.reasons["outside_class"] == 1
    assert verdict.floor is not None
    assert verdict.floor[0] == guide.floors[animal]
    assert guide.judge(texts[1:], [body]).keep == [True]  # asked as what it is, it passes


def test_the_survivors_are_ranked_by_how_much_nearer_their_own_class_they_are(guided: Any) -> None:
    memory, stream = guided
    body = stream.label_id("verb.body")
    everything = MemoryGuide(memory, k=2, floor="absolute", min_similarity=-1.0, margin=-2.0, copy_cosine=1.0)
    texts = ["marine fishes of warm water with barbels on the chin", "bathe the skin with warm lotions"]
    verdict = everything.judge(texts, [body, body])
    assert verdict.keep == [True, True]
    assert verdict.margins[1] > 0 > verdict.margins[0]
    assert verdict.ranked() == [1, 0]  # the body-care text first, though written second


# -- the pool and its collator ---------------------------------------------------------------------


def _pool() -> GeneratedPool:
    entries = [
        Generated(f"text {lab} {i}", lab, f"c{lab}", "t", phase=lab) for lab in range(3) for i in range(4)
    ]
    return GeneratedPool(entries)


def test_the_pool_samples_every_class_before_any_twice_and_round_trips(tmp_path: Path) -> None:
    pool = _pool()
    drawn = pool.sample(6, np.random.default_rng(0))
    assert sorted(e.label for e in drawn) == [0, 0, 1, 1, 2, 2]
    assert len({e.text for e in drawn}) == 6
    assert [
        len(v) for v in GeneratedPool(pool.per_class(2, np.random.default_rng(0))).by_label().values()
    ] == [
        2,
        2,
        2,
    ]
    assert pool.before(2).labels() == [0, 1]
    pool.save(tmp_path / "pool.json")
    assert GeneratedPool.load(tmp_path / "pool.json").entries == pool.entries
    assert len(GeneratedPool.load(tmp_path / "missing.json")) == 0


def test_the_generative_collator_fills_the_replay_share_from_the_pool(tiny_model: str) -> None:
    from transformers import AutoTokenizer, DataCollatorWithPadding

    from rehearsal.replay.collator import REPLAY_FLAG
    from rehearsal.replay.generative import GenerativeCollator

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    config = ReplayConfig(mode="generative", ratio=0.25, mark_replay=True, max_length=16)
    collator = GenerativeCollator(_pool(), DataCollatorWithPadding(tokenizer), tokenizer, config)
    rows = [
        {**tokenizer(f"new example {i}"), "labels": 5, "text": "x", "embedding": [0.0], "task": "b"}
        for i in range(6)
    ]
    batch = collator(rows)
    assert batch["input_ids"].shape[0] == 8  # 6 new + round(6 * 0.25 / 0.75) = 2 generated
    assert batch[REPLAY_FLAG].tolist() == [0] * 6 + [1] * 2
    assert set(batch["labels"][6:].tolist()) <= {0, 1, 2}
    assert len(set(batch["labels"][6:].tolist())) == 2
    assert collator.pop_stats().replayed == 2
    empty = GenerativeCollator(GeneratedPool(), DataCollatorWithPadding(tokenizer), tokenizer, config)
    assert empty(rows)["input_ids"].shape[0] == 6
