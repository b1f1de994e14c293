"""Per-task LoRA adapters (train only the current one, merge, save/load) and routing by the memory."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from _models import tiny_llama

from rehearsal.errors import ConfigError, NotFoundError, StoreFormatError, ValidationError
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.methods.adapters import TaskAdapters, adapter_of
from rehearsal.methods.router import AdapterRouter, group_by_route


def lora() -> Any:
    from peft import LoraConfig

    return LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"])


def adapter_params(adapters: TaskAdapters, name: str) -> dict[str, torch.Tensor]:
    return {n: p for n, p in adapters.model.named_parameters() if adapter_of(n) == name}


def perturb(adapters: TaskAdapters, name: str, seed: int) -> None:
    # LoRA B starts at zero (the adapter is a no-op); give it weights so adapters differ.
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, p in adapter_params(adapters, name).items():
            if "lora_B" in pname:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)


IDS = torch.arange(12).reshape(2, 6)


def logits_with(adapters: TaskAdapters, name: str) -> torch.Tensor:
    adapters.activate(name, trainable=False)
    with torch.no_grad():
        return adapters.model(input_ids=IDS).logits


def test_adapter_of_reads_the_segment_after_the_lora_module():
    assert adapter_of("base_model.model.layers.0.self_attn.q_proj.lora_A.verbs.weight") == "verbs"
    assert adapter_of("base_model.model.score.modules_to_save.living.weight") == "living"
    assert adapter_of("base_model.model.layers.0.self_attn.q_proj.base_layer.weight") is None


def test_only_the_newest_task_adapter_is_trainable():
    adapters = TaskAdapters(tiny_llama(), lora())
    adapters.add_task("living")
    adapters.add_task("verbs")
    assert adapters.trainable_adapters() == {"verbs"}
    assert all(not p.requires_grad for p in adapter_params(adapters, "living").values())
    assert all(p.requires_grad for p in adapter_params(adapters, "verbs").values())
    base = [p for n, p in adapters.model.named_parameters() if adapter_of(n) is None]
    assert base
    assert not any(p.requires_grad for p in base)


def test_activating_an_old_task_freezes_the_others():
    adapters = TaskAdapters(tiny_llama(), lora())
    for name in ("living", "verbs", "modifiers"):
        adapters.add_task(name)
    adapters.activate("living")
    assert adapters.active == "living"
    assert adapters.trainable_adapters() == {"living"}
    adapters.activate("verbs", trainable=False)
    assert adapters.trainable_adapters() == set()


def test_a_training_step_changes_only_the_active_adapter():
    adapters = TaskAdapters(tiny_llama(), lora())
    adapters.add_task("living")
    perturb(adapters, "living", seed=1)
    adapters.add_task("verbs")
    before = {n: p.detach().clone() for n, p in adapters.model.named_parameters()}
    trainable = [p for p in adapters.model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=0.5)
    adapters.model(input_ids=IDS, labels=IDS).loss.backward()
    optimizer.step()
    changed = {adapter_of(n) for n, p in adapters.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {"verbs"}


def test_adapter_names_are_checked():
    adapters = TaskAdapters(tiny_llama(), lora())
    with pytest.raises(ValidationError, match="no adapter yet"):
        _ = adapters.model
    adapters.add_task("living")
    with pytest.raises(ValidationError, match="'living' already exists"):
        adapters.add_task("living")
    with pytest.raises(ValidationError, match="adapter name must match"):
        adapters.add_task("bad.name")
    with pytest.raises(NotFoundError, match="unknown adapter 'verbs'"):
        adapters.activate("verbs")


def test_cat_merge_is_the_weighted_sum_of_the_task_updates():
    adapters = TaskAdapters(tiny_llama(), lora())
    for seed, name in enumerate(("living", "verbs")):
        adapters.add_task(name)
        perturb(adapters, name, seed=seed + 1)
    adapters.merge(["living", "verbs"], [0.25, 0.75], name="merged")
    assert adapters.active == "verbs"
    assert adapters.trainable_adapters() == {"verbs"}
    layer = adapters.model.base_model.model.model.layers[0].self_attn.q_proj
    expected = 0.25 * layer.get_delta_weight("living") + 0.75 * layer.get_delta_weight("verbs")
    torch.testing.assert_close(layer.get_delta_weight("merged"), expected)


def test_a_merge_can_be_removed_and_redone():
    adapters = TaskAdapters(tiny_llama(), lora())
    adapters.add_task("living")
    adapters.merge(["living"], name="merged")
    with pytest.raises(ValidationError, match="is active"):
        adapters.remove("living")
    adapters.remove("merged")
    assert "merged" not in adapters.adapters
    assert not any(adapter_of(n) == "merged" for n, _ in adapters.model.named_parameters())
    adapters.add_task("verbs")
    adapters.merge(["living", "verbs"], name="merged")
    assert adapters.merged["merged"]["tasks"] == ["living", "verbs"]
    with pytest.raises(NotFoundError, match="unknown adapter 'gone'"):
        adapters.remove("gone")


def test_merge_rejects_bad_arguments():
    adapters = TaskAdapters(tiny_llama(), lora())
    adapters.add_task("living")
    with pytest.raises(ValidationError, match="among the task adapters"):
        adapters.merge(["verbs"])
    with pytest.raises(ValidationError, match="1 adapters but 2 weights"):
        adapters.merge(["living"], [0.5, 0.5])
    with pytest.raises(ConfigError, match="'combination' must be one of"):
        adapters.merge(["living"], combination="ties")


def test_save_and_load_round_trip_every_adapter(tmp_path):
    adapters = TaskAdapters(tiny_llama(), lora())
    for seed, name in enumerate(("living", "verbs")):
        adapters.add_task(name)
        perturb(adapters, name, seed=seed + 1)
    adapters.merge(["living", "verbs"], name="merged")
    expected = {name: logits_with(adapters, name) for name in adapters.adapters}
    adapters.activate("verbs")
    adapters.save(tmp_path / "adapters")

    loaded = TaskAdapters.load(tiny_llama(), tmp_path / "adapters")
    assert loaded.tasks == ["living", "verbs"]
    assert loaded.merged["merged"]["tasks"] == ["living", "verbs"]
    assert loaded.active == "verbs"
    assert loaded.trainable_adapters() == {"verbs"}
    assert not torch.equal(expected["living"], expected["verbs"])
    for name, logits in expected.items():
        torch.testing.assert_close(logits_with(loaded, name), logits)
    loaded.add_task("modifiers")
    assert loaded.trainable_adapters() == {"modifiers"}


def test_load_rejects_a_folder_without_adapters(tmp_path):
    with pytest.raises(StoreFormatError, match=r"no readable adapters\.json"):
        TaskAdapters.load(tiny_llama(), tmp_path)
    (tmp_path / "adapters.json").write_text('{"format": 1, "tasks": ["living"], "merged": {}}')
    with pytest.raises(StoreFormatError, match="lacks the folders of adapters \\['living'\\]"):
        TaskAdapters.load(tiny_llama(), tmp_path)


def clustered_memory(tmp_path, rng: np.random.Generator, tasks=("a", "b", "c"), per_task=40):
    """Tasks as tight clusters around random unit centres in 32 dimensions."""
    centres = rng.normal(size=(len(tasks), 32))
    vectors, metadata = [], []
    for centre, task in zip(centres, tasks, strict=True):
        vectors.append(centre + 0.3 * rng.normal(size=(per_task, 32)))
        metadata += [{"task": task}] * per_task
    memory = RehearsalMemory.create(tmp_path / "mem", embedding_only=True, dim=32)
    stacked = np.concatenate(vectors).astype(np.float32)
    memory.add(metadata=metadata, vectors=stacked, sources=[f"doc:{i}" for i in range(len(stacked))])
    return memory, centres


def test_router_sends_inputs_to_the_task_of_their_neighbours(tmp_path, rng):
    memory, centres = clustered_memory(tmp_path, rng)
    queries = np.concatenate([c + 0.3 * rng.normal(size=(10, 32)) for c in centres]).astype(np.float32)
    truth = ["a"] * 10 + ["b"] * 10 + ["c"] * 10
    router = AdapterRouter(memory, k=8, threshold=0.6)
    assert router.route_accuracy(queries, truth) >= 0.95
    assert all(share >= 0.6 for _, share in router.vote(queries))
    memory.close()


def test_router_falls_back_when_the_vote_is_split(tmp_path, rng):
    memory, centres = clustered_memory(tmp_path, rng)
    between = ((centres[0] + centres[1]) / 2)[None, :].astype(np.float32)
    router = AdapterRouter(memory, k=80, threshold=0.9, fallback="merged")
    [(task, share)] = router.vote(between)
    assert task in {"a", "b"}
    assert share < 0.9
    assert router.route(between) == ["merged"]
    assert AdapterRouter(memory, k=80, threshold=0.0).route(between) == [task]
    memory.close()


def test_pooled_routing_outvotes_an_ambiguous_row(tmp_path, rng):
    memory, centres = clustered_memory(tmp_path, rng)
    between = (centres[0] + centres[1]) / 2
    rows = np.stack([between, centres[1], centres[1] + 0.1]).astype(np.float32)
    router = AdapterRouter(memory, k=80, threshold=0.6, fallback="merged")
    assert router.route(rows[:1]) == ["merged"]
    assert router.route_pooled(rows) == "b"
    memory.close()


def test_router_falls_back_for_tasks_without_an_adapter_or_memories_without_tasks(tmp_path, rng):
    memory, centres = clustered_memory(tmp_path, rng)
    query = centres[:1].astype(np.float32)
    assert AdapterRouter(memory, k=4, tasks={"b", "c"}, fallback="merged").route(query) == ["merged"]
    memory.close()
    bare = RehearsalMemory.create(tmp_path / "bare", embedding_only=True, dim=32)
    bare.add(vectors=rng.normal(size=(5, 32)).astype(np.float32), sources=[f"doc:{i}" for i in range(5)])
    assert AdapterRouter(bare, k=4).vote(query) == [(None, 0.0)]
    assert AdapterRouter(bare, k=4, fallback="shared").route(query) == ["shared"]
    bare.close()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, "'k' must be an int >= 1"),
        ({"threshold": 1.5}, "'threshold' must be in \\[0, 1\\]"),
        ({"fallback": ""}, "'fallback' must be a non-empty adapter name"),
    ],
)
def test_router_rejects_bad_settings(tmp_path, kwargs, message):
    memory = RehearsalMemory.create(tmp_path / "mem", embedding_only=True, dim=4)
    with pytest.raises(ConfigError, match=message):
        AdapterRouter(memory, **kwargs)
    memory.close()


def test_route_accuracy_needs_one_true_task_per_input(tmp_path, rng):
    memory, centres = clustered_memory(tmp_path, rng)
    with pytest.raises(ValidationError, match="got 3 vectors but 2 true tasks"):
        AdapterRouter(memory).route_accuracy(centres.astype(np.float32), ["a", "b"])
    memory.close()


def test_group_by_route_lists_rows_per_adapter():
    assert group_by_route(["a", "merged", "a"]) == {"a": [0, 2], "merged": [1]}


@pytest.mark.slow
def test_router_finds_the_wordnet_task_of_most_test_glosses(tmp_path, encoder):
    from rehearsal.runner.tasks import load_wordnet_stream

    # A small subset keeps the encoder's work near 400 texts; benchmarks/routing.py measures the full set.
    stream = load_wordnet_stream(max_train_per_class=7, max_test_per_class=2)
    train = [ex for task in stream.tasks for ex in task.train]
    test = [ex for task in stream.tasks for ex in task.test]
    memory = RehearsalMemory.create(tmp_path / "mem", embedding_only=True, dim=encoder.dim)
    memory.add(
        metadata=[{"task": ex.task} for ex in train],
        vectors=encoder.encode([ex.text for ex in train]),
        sources=[f"train:{i}" for i in range(len(train))],
    )
    router = AdapterRouter(memory, k=8, threshold=0.0)
    vectors = encoder.encode([ex.text for ex in test])
    # Chance is 0.2 and the largest task is 0.33 of the test set; this subset measured 0.69.
    assert router.route_accuracy(vectors, [ex.task for ex in test]) >= 0.6
    # A task's test glosses routed together (8 to 30 of them) go to their own adapter; on this small
    # memory the modifiers (adjective and adverb glosses, the smallest task) were pooled into verbs.
    pooled = [
        router.route_pooled(vectors[[i for i, ex in enumerate(test) if ex.task == t.name]])
        for t in stream.tasks
    ]
    assert sum(p == t.name for p, t in zip(pooled, stream.tasks, strict=True)) >= 4
    memory.close()


def test_grouped_votes_count_per_expert_not_per_task(tmp_path, rng):
    # A query between the centres of a and b, nearer c: with k=120 every memory votes. Per task, c has
    # the largest share; a and b belong to one expert, whose pooled share is larger than c's.
    memory, centres = clustered_memory(tmp_path, rng)
    query = (0.3 * centres[0] + 0.3 * centres[1] + 0.4 * centres[2])[None, :].astype(np.float32)
    plain = AdapterRouter(memory, k=120, threshold=0.0)
    [(task, share)] = plain.vote(query)
    assert task == "c"
    assert share < 0.5
    grouped = AdapterRouter(memory, k=120, threshold=0.0, groups={"a": "old", "b": "old", "c": "new"})
    [(expert, pooled)] = grouped.vote(query)
    assert expert == "old"
    assert pooled > 0.5
    assert grouped.route(query) == ["old"]
    memory.close()
