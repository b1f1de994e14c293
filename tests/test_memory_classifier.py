"""MemoryClassifier and the run's predictors end to end: a tiny BERT trained by ``rehearsal run``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _models import tiny_run_config
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import rehearsal as rh
from rehearsal.crypto.master_key import resolve_master_key
from rehearsal.methods.predictors import load_predictor, memory_vote
from rehearsal.runner import loop as stream_module
from rehearsal.runner.strategies.replay import class_mean_seed
from rehearsal.runner.tasks import TaskStream

pytestmark = [pytest.mark.usefixtures("master_key"), pytest.mark.slow]


def _final_row_from_classifier(
    folder: Path, stream: TaskStream, predictor: str, tiny_model: str, *, per_class: int | None
) -> list[float]:
    """Each task's accuracy by a MemoryClassifier fitted on the run's saved last weights and memory, with the
    run's own draw."""
    last = len(stream.tasks) - 1
    model = AutoModelForSequenceClassification.from_pretrained(folder / "weights" / f"phase_{last}")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    with rh.RehearsalMemory.open(folder / "memory", keys=resolve_master_key(), read_only=True) as memory:
        clf = rh.MemoryClassifier(
            model,
            tokenizer,
            memory,
            predictor,
            per_class=per_class,
            seed=class_mean_seed(0, last),
            max_length=16,
        ).fit()
        row = []
        for task in stream.tasks:
            truth = np.asarray([stream.label_id(ex.label) for ex in task.test])
            row.append(float(np.mean(clf.predict([ex.text for ex in task.test]) == truth)))
    return row


@pytest.mark.parametrize(("predictor", "per_class"), [("ncm", 50), ("lda", None), ("knn", None)])
def test_memory_classifier_on_saved_weights_gives_exactly_the_runs_read_out(
    predictor: str, per_class: int | None, tmp_path: Path, tiny_model: str, tiny_stream: TaskStream
) -> None:
    config = tiny_run_config(
        tmp_path, tiny_model, method="random", prediction=predictor, prediction_per_class=per_class
    )
    result = stream_module.run(config, stream=tiny_stream)
    row = _final_row_from_classifier(
        tmp_path / "run", tiny_stream, predictor, tiny_model, per_class=per_class
    )
    np.testing.assert_array_equal(row, result.matrix.matrix[-1])
    # The run keeps each phase's fitted predictor beside its weights, sealed under the run's key.
    saved = tmp_path / "run" / "weights" / "phase_1" / "predictor" / predictor
    with pytest.raises(rh.ConfigError, match="is sealed"):
        load_predictor(saved)
    assert load_predictor(saved, keys=resolve_master_key()).classes == list(range(6))


def test_a_run_predicting_through_the_memory_keeps_the_heads_matrix_beside(
    tmp_path: Path, tiny_model: str, tiny_stream: TaskStream
) -> None:
    head = stream_module.run(tiny_run_config(tmp_path / "h", tiny_model, method="random"), stream=tiny_stream)
    knn = stream_module.run(
        tiny_run_config(tmp_path / "k", tiny_model, method="random", prediction="knn"), stream=tiny_stream
    )
    assert head.head_matrix is None
    assert knn.head_matrix is not None
    # The same seed trains the same weights: the knn run's head read-out is the head run's matrix.
    np.testing.assert_array_equal(knn.head_matrix.matrix, head.matrix.matrix)
    saved = (tmp_path / "k" / "run" / "results.json").read_text()
    assert '"head_accuracy"' in saved
    assert '"head_summary"' in saved
    assert '"prediction": "knn"' in saved


def test_a_saved_classifier_is_refused_once_an_entry_it_was_fitted_on_is_forgotten(
    tmp_path: Path, tiny_model: str, keys: rh.KeyRing
) -> None:
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    texts = [f"entry number {i} about {'cats' if i % 2 else 'rivers'}" for i in range(12)]
    with rh.RehearsalMemory.create(tmp_path / "mem", keys=keys) as memory:
        memory.add(texts[:6], metadata=[{"label": i % 2} for i in range(6)], tenant="alice")
        memory.add(texts[6:], metadata=[{"label": i % 2} for i in range(6)], tenant="bob")
        clf = rh.MemoryClassifier(model, tokenizer, memory, "knn", per_class=None, max_length=16).fit()
        assert len(clf.fitted_on) == 12
        clf.save(tmp_path / "clf", keys=keys)
        memory.forget(tenant="bob")
        with pytest.raises(rh.ConfigError, match=r"6 memory entries .* were deleted or forgotten since"):
            rh.MemoryClassifier.load(tmp_path / "clf", model, tokenizer, memory, keys=keys)
        read: list[int] = []
        real_get_texts = memory.get_texts

        def spying_get_texts(ids: list[int]) -> list[str]:
            read.extend(ids)
            return real_get_texts(ids)

        memory.get_texts = spying_get_texts  # type: ignore[method-assign]
        clf.fit()
        assert sorted(read) == sorted(memory.ids({"tenant": "alice"}))
        assert len(clf.fitted_on) == 6


def test_memory_vote_predicts_from_an_embedding_only_memory(tmp_path: Path, encoder: rh.Encoder) -> None:
    animals = ["a small dog barked", "the cat purred", "a horse galloped", "the cow mooed"]
    tools = ["a hammer drives nails", "the saw cuts wood", "a wrench turns bolts", "the drill bores holes"]
    with rh.RehearsalMemory.create(tmp_path / "mem", embedding_only=True, encoder=encoder) as memory:
        memory.add(
            animals + tools,
            metadata=[{"label": 0}] * 4 + [{"label": 1}] * 4,
            sources=[f"doc-{i}" for i in range(8)],
        )
        labels, shares = memory_vote(memory, ["a puppy wagged its tail", "pliers grip"], k=3)
    assert labels.tolist() == [0, 1]
    assert all(0.5 < s <= 1.0 for s in shares)


def test_the_benchmark_read_out_is_what_runs_predicting_that_way_scored(
    tmp_path: Path, tiny_model: str, tiny_stream: TaskStream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """benchmarks/predictors.py reads every predictor out of one finished run; for the head and for ncm it
    must reproduce exactly the matrix a run predicting that way records (same seed, same draws)."""
    import importlib

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    readout = importlib.import_module("predictors")
    ncm = stream_module.run(
        tiny_run_config(tmp_path, tiny_model, method="random", prediction="ncm", prediction_per_class=50),
        stream=tiny_stream,
    )
    entry = readout.read_out(tmp_path / "run", tiny_stream, resolve_master_key())
    np.testing.assert_array_equal(entry["matrices"]["ncm"]["matrix"], ncm.matrix.matrix)
    assert ncm.head_matrix is not None
    np.testing.assert_array_equal(entry["matrices"]["head"]["matrix"], ncm.head_matrix.matrix)
    final = readout.read_out(tmp_path / "run", tiny_stream, resolve_master_key(), rows="final")
    assert final["matrices"]["lda-all"]["matrix"][-1] == entry["matrices"]["lda-all"]["matrix"][-1]
    assert final["matrices"]["sdc-means"]["matrix"][-1] == entry["matrices"]["sdc-means"]["matrix"][-1]
