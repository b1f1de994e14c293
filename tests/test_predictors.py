"""Predictors over the memory: each fits, predicts, saves and reloads; the registry is their only list."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertForSequenceClassification

import rehearsal as rh
from rehearsal.config import PREDICTOR_NAMES
from rehearsal.methods.predictors import (
    PREDICTORS,
    encoder_features,
    load_predictor,
    make_predictor,
    save_predictor,
)
from rehearsal.methods.predictors.lda import ledoit_wolf_shrinkage


def _clusters(
    rng: np.random.Generator, *, n_per_class: int = 40, dim: int = 12
) -> tuple[torch.Tensor, list[int]]:
    """Three well separated classes (labels 7, 2, 5) around random centres, raw (not unit) features."""
    centres = rng.normal(size=(3, dim)) * 3.0
    rows, labels = [], []
    for centre, label in zip(centres, (7, 2, 5), strict=True):
        rows.append(centre + rng.normal(size=(n_per_class, dim)))
        labels += [label] * n_per_class
    return torch.as_tensor(np.concatenate(rows), dtype=torch.float32), labels


def _head(dim: int = 12, outputs: int = 8) -> torch.nn.Linear:
    torch.manual_seed(0)
    return torch.nn.Linear(dim, outputs)


def test_the_registry_is_the_configs_list_of_predictors() -> None:
    assert sorted(PREDICTORS) == sorted(PREDICTOR_NAMES)


def test_an_unknown_predictor_is_refused_with_the_known_ones() -> None:
    with pytest.raises(rh.ConfigError, match=r"unknown predictor 'prototype'; known: \['head'"):
        make_predictor("prototype")


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("knn", {"k": 0}, "knn 'k' must be a positive int"),
        ("knn", {"temperature": -1.0}, "knn 'temperature' must be a positive number"),
        ("lda", {"shrinkage": 1.5}, "lda 'shrinkage' must be None or in"),
        ("local", {"steps": 0}, "local 'steps' must be a positive int"),
        ("ncm", {"k": 3}, "bad options for predictor 'ncm'"),
    ],
)
def test_bad_predictor_options_are_refused(name: str, options: dict[str, object], match: str) -> None:
    with pytest.raises(rh.ConfigError, match=match):
        make_predictor(name, **options)


@pytest.mark.parametrize("name", ["ncm", "knn", "lda", "local"])
def test_memory_predictors_find_well_separated_classes(name: str, rng: np.random.Generator) -> None:
    features, labels = _clusters(rng)
    test, truth = _clusters(np.random.default_rng(0), n_per_class=10)  # same centres (same seed)
    predictor = make_predictor(name)
    predictor.fit(features, labels, head=_head())
    assert predictor.classes == [2, 5, 7]
    accuracy = float(np.mean(predictor.predict(test) == np.asarray(truth)))
    # local starts from a random head here and takes only a few steps: a lower floor.
    assert accuracy >= (0.85 if name == "local" else 0.95)


def test_head_predictor_is_the_linear_heads_argmax() -> None:
    head = _head()
    features = torch.randn(20, 12)
    predictor = make_predictor("head")
    predictor.fit(features, [0] * 20, head=head)
    with torch.no_grad():
        expected = head(features).argmax(dim=1).numpy()
    np.testing.assert_array_equal(predictor.predict(features), expected)


def test_lda_uses_the_shared_covariance_where_class_means_alone_fail() -> None:
    """Two classes apart along one axis, with noise shared by that axis and another: the nearest (cosine)
    mean confuses them, the shared-covariance discriminant cancels the noise."""
    rng = np.random.default_rng(0)
    n = 400
    shared = rng.normal(size=2 * n) * 3
    side = np.array([0.5] * n + [-0.5] * n)
    x = np.stack(
        [
            side + shared + 0.1 * rng.normal(size=2 * n),
            shared + 0.1 * rng.normal(size=2 * n),
            np.full(2 * n, 10.0),
        ],
        axis=1,
    )
    features = torch.as_tensor(x, dtype=torch.float32)
    labels = [0] * n + [1] * n
    lda, ncm = make_predictor("lda"), make_predictor("ncm")
    lda.fit(features, labels)
    ncm.fit(features, labels)
    truth = np.asarray(labels)
    assert float(np.mean(lda.predict(features) == truth)) >= 0.95
    assert float(np.mean(ncm.predict(features) == truth)) < 0.7


def test_ledoit_wolf_shrinks_more_with_fewer_samples(rng: np.random.Generator) -> None:
    scale = np.linspace(0.5, 3.0, 30)  # a covariance far from a multiple of the identity
    few, many = rng.normal(size=(20, 30)) * scale, rng.normal(size=(2000, 30)) * scale
    low, high = ledoit_wolf_shrinkage(many - many.mean(0)), ledoit_wolf_shrinkage(few - few.mean(0))
    assert 0.0 <= low < 0.1 < 0.3 < high <= 1.0


def test_local_adaptation_corrects_a_head_biased_toward_one_class(rng: np.random.Generator) -> None:
    """A head biased toward class 7 on most inputs: adapting it on each query's neighbours undoes that."""
    features, labels = _clusters(rng)
    columns = {7: 0, 2: 1, 5: 2}
    head = torch.nn.Linear(12, 3)
    with torch.no_grad():
        means = torch.stack([features[torch.as_tensor(labels) == c].mean(0) for c in (7, 2, 5)])
        head.weight.copy_(means / 10)
        head.bias.copy_(torch.tensor([15.0, 0.0, 0.0]))
    biased = make_predictor("head")
    biased.fit(features, labels, head=head)
    local = make_predictor("local", steps=20, lr=1.0)
    # The memory's labels must index the head's rows: relabel to 0, 1, 2.
    local.fit(features, [columns[v] for v in labels], head=head)
    truth = np.asarray([columns[v] for v in labels])
    assert float(np.mean(biased.predict(features) == truth)) < 0.5
    assert float(np.mean(local.predict(features) == truth)) >= 0.9


@pytest.mark.parametrize("name", sorted(PREDICTOR_NAMES))
@pytest.mark.parametrize("sealed", [True, False], ids=["sealed", "plain"])
def test_each_predictor_saves_and_reloads_to_identical_predictions(
    name: str, sealed: bool, tmp_path: Path, rng: np.random.Generator, keys: rh.KeyRing
) -> None:
    features, labels = _clusters(rng)
    predictor = make_predictor(name)
    predictor.fit(features, labels, head=_head())
    save_predictor(predictor, tmp_path / "p", keys=keys if sealed else None)
    again = load_predictor(tmp_path / "p", keys=keys if sealed else None)
    queries = torch.randn(25, 12) * 3
    assert again.classes == predictor.classes
    np.testing.assert_array_equal(again.predict(queries), predictor.predict(queries))
    torch.testing.assert_close(again.scores(queries), predictor.scores(queries))


def test_a_sealed_predictor_needs_its_key_and_refuses_another(
    tmp_path: Path, rng: np.random.Generator, keys: rh.KeyRing
) -> None:
    features, labels = _clusters(rng)
    predictor = make_predictor("knn")
    predictor.fit(features, labels)
    save_predictor(predictor, tmp_path / "p", keys=keys)
    assert rh.KeyRing.generate() != keys
    with pytest.raises(rh.ConfigError, match="is sealed; pass the memory's master key"):
        load_predictor(tmp_path / "p")
    with pytest.raises(rh.WrongKeyError):
        load_predictor(tmp_path / "p", keys=rh.KeyRing.generate())


def test_sealed_predictor_arrays_do_not_hold_the_features_in_the_clear(
    tmp_path: Path, rng: np.random.Generator, keys: rh.KeyRing
) -> None:
    features, labels = _clusters(rng)
    predictor = make_predictor("knn")
    predictor.fit(features, labels)
    save_predictor(predictor, tmp_path / "p", keys=keys)
    blob = (tmp_path / "p" / "arrays.bin").read_bytes()
    assert predictor.arrays()["vectors"][:4].tobytes() not in blob


def test_a_tampered_predictor_is_refused(tmp_path: Path, rng: np.random.Generator, keys: rh.KeyRing) -> None:
    features, labels = _clusters(rng)
    predictor = make_predictor("lda")
    predictor.fit(features, labels)
    save_predictor(predictor, tmp_path / "p", keys=keys)
    path = tmp_path / "p" / "arrays.bin"
    blob = bytearray(path.read_bytes())
    blob[-5] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(rh.WrongKeyError):
        load_predictor(tmp_path / "p", keys=keys)


def test_a_folder_without_a_predictor_is_a_format_error(tmp_path: Path) -> None:
    with pytest.raises(rh.StoreFormatError, match="holds no saved predictor"):
        load_predictor(tmp_path)


def test_an_unfitted_predictor_refuses_to_predict_or_save(tmp_path: Path) -> None:
    predictor = make_predictor("ncm")
    with pytest.raises(rh.ConfigError, match="is not fitted"):
        predictor.predict(torch.zeros(1, 4))
    with pytest.raises(rh.ConfigError, match="is not fitted"):
        save_predictor(predictor, tmp_path / "p")


def test_fitting_needs_one_label_per_row() -> None:
    with pytest.raises(rh.ValidationError, match="one label per feature row, got 2 for 3"):
        make_predictor("ncm").fit(torch.zeros(3, 4), [0, 1])


def test_encoder_features_through_the_head_are_the_models_logits(tiny_model: str) -> None:
    model = BertForSequenceClassification.from_pretrained(tiny_model)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    texts = ["a small dog", "to run fast", "bright red"]
    features = encoder_features(model, tokenizer, texts, batch_size=2, max_length=16)
    assert features.shape == (3, 16)
    with torch.inference_mode():
        logits = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits
    torch.testing.assert_close(model.classifier(features), logits)
