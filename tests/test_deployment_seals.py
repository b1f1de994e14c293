"""A deployment's config and weights folders are sealed with its key and checked before use.

Someone who can write the folder but does not hold the key must not be able to loosen the gate in
``deployment.json`` or swap what a version loads (adapter weights, ``state.json``'s labels and router).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from rehearsal.crypto.keys import KeyRing
from rehearsal.deployment.folder import Deployment
from rehearsal.deployment.init import init_deployment
from rehearsal.deployment.seal import SEAL_FILE, seal_weights, verify_weights
from rehearsal.deployment.update import promote, rollback, update
from rehearsal.errors import IntegrityError, StoreFormatError
from rehearsal.runner.sentiment import load_sentiment_stream
from tests.test_deployment import FAST, _memory, _write


def test_a_sealed_folder_verifies_and_any_change_to_it_does_not(tmp_path: Path) -> None:
    keys = KeyRing.generate()
    folder = tmp_path / "update-abc"
    (folder / "adapter").mkdir(parents=True)
    (folder / "state.json").write_text('{"labels": ["a"]}')
    (folder / "adapter" / "weights.bin").write_bytes(bytes(range(256)))
    seal_weights(folder, keys, deployment="d1")
    verify_weights(folder, keys, deployment="d1")
    sealed = json.loads((folder / SEAL_FILE).read_text())
    assert sorted(sealed["files"]) == ["adapter/weights.bin", "state.json"]

    def refused(change: Any, match: str) -> None:
        copy = tmp_path / "copy" / "update-abc"
        shutil.rmtree(copy.parent, ignore_errors=True)
        shutil.copytree(folder, copy)
        change(copy)
        with pytest.raises(IntegrityError, match=match):
            verify_weights(copy, keys, deployment="d1")

    refused(lambda f: (f / "state.json").write_text('{"labels": ["b"]}'), "changed since.*state.json")
    refused(lambda f: (f / "adapter" / "weights.bin").write_bytes(bytes(256)), "adapter/weights.bin")
    refused(lambda f: (f / "adapter" / "extra.bin").write_bytes(b"x"), "adapter/extra.bin")
    refused(lambda f: (f / "state.json").unlink(), "state.json")
    refused(lambda f: (f / SEAL_FILE).unlink(), "is not sealed")
    refused(lambda f: (f / SEAL_FILE).write_text("{"), "cannot read the seal")

    def forged(f: Path) -> None:  # the manifest made to match the edit, without the key
        (f / "state.json").write_text('{"labels": ["b"]}')
        seal = json.loads((f / SEAL_FILE).read_text())
        seal["files"]["state.json"] = hashlib.sha256(b'{"labels": ["b"]}').hexdigest()
        (f / SEAL_FILE).write_text(json.dumps(seal))

    refused(forged, "fails its check")
    with pytest.raises(IntegrityError, match="fails its check"):
        verify_weights(folder, KeyRing.generate(), deployment="d1")  # another key cannot vouch for it
    with pytest.raises(IntegrityError, match="sealed by another deployment"):
        verify_weights(folder, keys, deployment="d2")  # nor can the same key for another deployment
    renamed = tmp_path / "update-other"
    shutil.copytree(folder, renamed)
    with pytest.raises(IntegrityError, match="carries the seal of 'update-abc'"):
        verify_weights(renamed, keys, deployment="d1")


@pytest.fixture(scope="module")
def two_versions(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: str, encoder: Any
) -> tuple[Path, KeyRing]:
    """A deployment with an initial version and one promoted update (tiny model, one epoch)."""
    tmp = tmp_path_factory.mktemp("sealed")
    keys = KeyRing.generate()
    stream = load_sentiment_stream(max_train_per_class=4, max_test_per_class=4)
    tweets, movies, products, _ = stream.tasks
    _memory(tmp / "mem", keys, encoder, [*tweets.train, *movies.train])
    dep = tmp / "dep"
    options = {**FAST, "epochs": 1, "gate": {"max_drop": 1.0, "margin": 1.0}}
    init_deployment(dep, memory=tmp / "mem", model=tiny_model, keys=keys, options=options)
    update(dep, _write(tmp / "p.jsonl", list(products.train)), keys=keys)
    assert len(Deployment.open(dep, keys).states()) == 2
    return dep, keys


def _copy(source: Path, tmp_path: Path) -> Path:
    target = tmp_path / "dep"
    shutil.copytree(source, target)
    return target


def test_every_weights_folder_of_a_deployment_is_sealed(two_versions: tuple[Path, KeyRing]) -> None:
    dep, keys = two_versions
    folder = Deployment.open(dep, keys)
    for version in folder.own_versions():
        weights = Path(version.weights)
        verify_weights(weights, keys, deployment=folder.id)
        files = json.loads((weights / SEAL_FILE).read_text())["files"]
        assert "state.json" in files
        assert any(name.endswith(".safetensors") for name in files)  # the adapter weights are covered


def test_an_edited_state_stops_update_and_promote_but_not_a_rollback_away_from_it(
    two_versions: tuple[Path, KeyRing], tmp_path: Path
) -> None:
    dep = _copy(two_versions[0], tmp_path)
    keys = two_versions[1]
    first, current = (Path(v.weights) for v in Deployment.open(dep, keys).own_versions())
    assert current.parent == (dep / "weights").resolve()  # versions.json stores paths relative to it
    state = json.loads((current / "state.json").read_text())
    state["labels"] = list(reversed(state["labels"]))  # every label answered as another
    (current / "state.json").write_text(json.dumps(state))
    with pytest.raises(IntegrityError, match=r"changed since it was sealed: state\.json"):
        Deployment.open(dep, keys).current()
    more = load_sentiment_stream(max_train_per_class=2, max_test_per_class=1).tasks[3].train
    with pytest.raises(IntegrityError, match=r"state\.json"):
        update(dep, _write(tmp_path / "x.jsonl", list(more)), keys=keys)
    assert rollback(dep, 1, keys=keys)["version"] == 1  # the damaged version is left, not needed
    assert Deployment.open(dep, keys).current()[1].update == first.name
    with pytest.raises(IntegrityError, match=r"state\.json"):
        rollback(dep, 2, keys=keys)  # and it cannot be made current again


def test_a_loosened_gate_in_the_config_is_refused(two_versions: tuple[Path, KeyRing], tmp_path: Path) -> None:
    dep = _copy(two_versions[0], tmp_path)
    keys = two_versions[1]
    path = dep / "deployment.json"
    data = json.loads(path.read_text())
    assert set(data) == {"format", "id", "config", "tag"}
    data["config"]["gate"]["margin"] = 1.0
    data["config"]["gate"]["max_drop"] = 1.0
    data["config"]["check_learning"] = True
    path.write_text(json.dumps(data))
    with pytest.raises(IntegrityError, match=r"deployment\.json.*fails its check"):
        Deployment.open(dep, keys)
    with pytest.raises(IntegrityError, match="fails its check"):
        promote(dep, keys=keys)
    data["format"] = "rehearsal-deployment/1"  # claiming to predate the seals does not skip them
    del data["tag"]
    path.write_text(json.dumps(data))
    with pytest.raises(StoreFormatError, match="earlier rehearsal that did not seal"):
        Deployment.open(dep, keys)


def test_another_key_cannot_open_the_deployment(two_versions: tuple[Path, KeyRing]) -> None:
    with pytest.raises(IntegrityError, match="fails its check"):
        Deployment.open(two_versions[0], KeyRing.generate())
