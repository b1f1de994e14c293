"""Every file a deployment reads back is bound to its identity (issue 28).

Someone who can write the deployment's folder, and who may hold a second deployment under the same key,
must not be able to point a version at other weights, forge a version, move an id boundary, swap in
another deployment's config, versions file or weights, or make a staged candidate vanish. Each case is
refused with our own error before anything is served, trained or deleted.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rehearsal.cli.main import main
from rehearsal.crypto.keys import KeyRing
from rehearsal.deployment.folder import Deployment
from rehearsal.deployment.init import init_deployment
from rehearsal.deployment.migrate import migrate_deployment
from rehearsal.deployment.seal import SEAL_FILE
from rehearsal.deployment.shadow import shadow
from rehearsal.deployment.update import promote, rollback, update
from rehearsal.errors import IntegrityError, NotFoundError, StoreFormatError, ValidationError
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.runner.sentiment import load_sentiment_stream
from tests.test_deployment import FAST, _memory, _write

OPTIONS = {**FAST, "epochs": 1, "gate": {"max_drop": 1.0, "margin": 1.0}}


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, tiny_model: str, encoder: Any) -> dict[str, Any]:
    """Deployment A (v1, then v2 from an update) and deployment B (v1), made from the same memory under
    the same key: B's files are what an attacker with a second deployment could copy into A."""
    tmp = tmp_path_factory.mktemp("bound")
    keys = KeyRing.generate()
    stream = load_sentiment_stream(max_train_per_class=4, max_test_per_class=4)
    tweets, movies, products, editorials = stream.tasks
    _memory(tmp / "mem", keys, encoder, [*tweets.train, *movies.train])
    for name in ("a", "b"):
        init_deployment(tmp / name, memory=tmp / "mem", model=tiny_model, keys=keys, options=OPTIONS)
    update(tmp / "a", _write(tmp / "p.jsonl", list(products.train)), keys=keys)
    return {"a": tmp / "a", "b": tmp / "b", "keys": keys, "more": list(editorials.train), "tmp": tmp}


def _copy(source: Path, tmp_path: Path, name: str = "dep") -> Path:
    target = tmp_path / name
    shutil.copytree(source, target, symlinks=True)
    return target


def _edit_versions(dep: Path, change: Callable[[dict[str, Any]], None]) -> None:
    path = dep / "memory" / "versions.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _entries(dep: Path, keys: KeyRing) -> int:
    with RehearsalMemory.open(dep / "memory", keys=keys, read_only=True) as memory:
        return len(memory)


def test_versions_json_is_sealed_bound_and_stores_weights_inside_the_deployment(pair: dict[str, Any]) -> None:
    data = json.loads((pair["a"] / "memory" / "versions.json").read_text())
    assert data["format"] == "rehearsal-versions/2"
    assert data["binding"] == f"deployment:{Deployment.open(pair['a'], pair['keys']).id}"
    assert [v["weights"].split("/")[0] for v in data["versions"]] == ["weights", "weights"]
    assert all(isinstance(v["tag"], str) for v in data["versions"])
    assert Deployment.open(pair["a"], pair["keys"]).id != Deployment.open(pair["b"], pair["keys"]).id


def _point_v1_at_v2(data: dict[str, Any]) -> None:
    data["versions"][0]["weights"] = data["versions"][1]["weights"]


def _forge_v3(data: dict[str, Any]) -> None:
    data["versions"].append({**data["versions"][1], "version": 3})
    data["current"] = 3


def _outside(data: dict[str, Any]) -> None:
    data["versions"][1]["weights"] = "/tmp/elsewhere"


@pytest.mark.parametrize(
    "change",
    [
        _point_v1_at_v2,
        _forge_v3,
        _outside,
        lambda d: d["versions"][0].update(id_boundary=0),
        lambda d: d.update(current=1),
        lambda d: d["versions"][0].pop("tag"),
        lambda d: [d.pop(k) for k in ("format", "binding", "tag")],  # made plain, as before sealing
    ],
    ids=[
        "v1-at-v2-weights",
        "forged-v3",
        "absolute-outside",
        "id-boundary-0",
        "current",
        "no-tag",
        "unsealed",
    ],
)
def test_an_edited_versions_file_is_refused_before_anything_is_served(
    pair: dict[str, Any], tmp_path: Path, change: Callable[[dict[str, Any]], None]
) -> None:
    dep = _copy(pair["a"], tmp_path)
    _edit_versions(dep, change)
    with pytest.raises(IntegrityError, match=r"versions\.json"):
        Deployment.open(dep, pair["keys"])


def test_a_rollback_through_an_edited_id_boundary_deletes_nothing(
    pair: dict[str, Any], tmp_path: Path
) -> None:
    dep = _copy(pair["a"], tmp_path)
    keys = pair["keys"]
    before = _entries(dep, keys)
    _edit_versions(dep, lambda d: d["versions"][0].update(id_boundary=0))
    with pytest.raises(IntegrityError):
        rollback(dep, 1, keys=keys)
    assert main(["rollback", str(dep), "1", "--key-file", _key_file(tmp_path, keys)]) == 1
    assert _entries(dep, keys) == before


def _key_file(tmp_path: Path, keys: KeyRing) -> str:
    path = tmp_path / "key"
    if not path.exists():
        keys.to_file(path)
    return str(path)


def test_a_deleted_versions_file_is_refused(pair: dict[str, Any], tmp_path: Path) -> None:
    dep = _copy(pair["a"], tmp_path)
    (dep / "memory" / "versions.json").unlink()
    with pytest.raises(IntegrityError, match="is missing"):
        Deployment.open(dep, pair["keys"])


@pytest.mark.parametrize("name", ["deployment.json", "memory/versions.json"])
def test_a_file_copied_from_another_deployment_under_the_same_key_is_refused(
    pair: dict[str, Any], tmp_path: Path, name: str
) -> None:
    dep = _copy(pair["a"], tmp_path)
    shutil.copyfile(pair["b"] / name, dep / name)
    with pytest.raises(IntegrityError, match="belongs to"):
        Deployment.open(dep, pair["keys"])


def test_weights_copied_or_linked_from_another_deployment_are_refused(
    pair: dict[str, Any], tmp_path: Path
) -> None:
    keys = pair["keys"]
    dep = _copy(pair["a"], tmp_path)
    first = Path(Deployment.open(dep, keys).own_versions()[0].weights)
    theirs = Path(Deployment.open(pair["b"], keys).own_versions()[0].weights)
    assert first.name == theirs.name  # the same memory: the same first update, the same folder name
    shutil.rmtree(first)
    shutil.copytree(theirs, first)
    with pytest.raises(IntegrityError, match="sealed by another deployment"):
        rollback(dep, 1, keys=keys)
    shutil.rmtree(first)
    first.symlink_to(theirs, target_is_directory=True)  # a link out of the deployment
    with pytest.raises(IntegrityError, match="resolve outside"):
        rollback(dep, 1, keys=keys)


def test_a_staged_candidate_cannot_vanish_or_come_back(pair: dict[str, Any], tmp_path: Path) -> None:
    keys = pair["keys"]
    dep = _copy(pair["a"], tmp_path)
    staged = update(dep, _write(tmp_path / "e.jsonl", pair["more"]), keys=keys, stage=True)
    assert staged.decision == "staged"
    pending = (dep / "pending.json").read_bytes()
    (dep / "pending.json").unlink()
    with pytest.raises(IntegrityError, match="is missing"):
        update(dep, _write(tmp_path / "e2.jsonl", pair["more"][:2]), keys=keys)
    with pytest.raises(IntegrityError, match="is missing"):
        promote(dep, keys=keys)
    with pytest.raises(IntegrityError, match="is missing"):
        shadow(dep, tmp_path / "e.jsonl", keys=keys)
    (dep / "pending.json").write_bytes(pending)  # put back as it was: accepted
    assert Deployment.open(dep, keys).pending() is not None
    done = rollback(dep, 2, keys=keys)  # discards it, entries and all
    assert done["discarded"] == staged.update
    (dep / "pending.json").write_bytes(pending)  # an older one put back after the discard
    with pytest.raises(IntegrityError, match="not the one this deployment's versions file names"):
        promote(dep, keys=keys)


def test_pending_json_of_another_deployment_is_refused(pair: dict[str, Any], tmp_path: Path) -> None:
    keys = pair["keys"]
    dep = _copy(pair["a"], tmp_path)
    other = Deployment.open(pair["b"], keys)
    body = {"update": "update-x", "weights": "weights/update-x"}
    from rehearsal.deployment.folder import pending_tag

    (dep / "pending.json").write_text(json.dumps({"pending": body, "tag": pending_tag(keys, other.id, body)}))
    with pytest.raises(IntegrityError, match="another deployment's"):
        Deployment.open(dep, keys).pending()


def test_a_failed_init_leaves_no_half_made_folder(pair: dict[str, Any], tmp_path: Path) -> None:
    keys = pair["keys"]
    mem = pair["tmp"] / "mem"
    target = tmp_path / "new"
    with pytest.raises((OSError, ValueError, NotFoundError)):
        init_deployment(target, memory=mem, model=str(tmp_path / "no-model"), keys=keys, options=OPTIONS)
    assert not target.exists()
    target.mkdir()  # a folder the caller made for it stays, empty
    with pytest.raises(ValidationError, match="no such file"):
        init_deployment(target, memory=mem, suite=tmp_path / "no-suite.jsonl", keys=keys, options=OPTIONS)
    assert target.is_dir()
    assert not any(target.iterdir())


# -- deployments made before identities (format 2) -----------------------------------------------------


def _as_format_2(dep: Path, keys: KeyRing) -> None:
    """Rewrite ``dep`` as rehearsal wrote deployments before this issue: config and weights sealed, but
    naming no identity, and a plain versions file with weights relative to the memory folder."""

    def tag(purpose: str, body: Any) -> str:
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        return hmac.new(keys.derive_key(purpose), canonical, hashlib.sha256).hexdigest()

    config = json.loads((dep / "deployment.json").read_text())
    body = {"format": "rehearsal-deployment/2", "config": config["config"]}
    (dep / "deployment.json").write_text(json.dumps({**body, "tag": tag("deployment-config-tag", body)}))
    for seal_file in (dep / "weights").glob(f"*/{SEAL_FILE}"):
        seal = json.loads(seal_file.read_text())
        old = {"format": "rehearsal-weights-seal/1", "folder": seal["folder"], "files": seal["files"]}
        seal_file.write_text(json.dumps({**old, "tag": tag("deployment-weights-seal", old)}))
    versions = json.loads((dep / "memory" / "versions.json").read_text())
    plain = [
        {**{k: v for k, v in r.items() if k != "tag"}, "weights": "../" + r["weights"]}
        for r in versions["versions"]
    ]
    (dep / "memory" / "versions.json").write_text(
        json.dumps({"current": versions["current"], "versions": plain})
    )


def test_a_format_2_deployment_is_refused_with_the_way_out_and_migrates(
    pair: dict[str, Any], tmp_path: Path
) -> None:
    keys = pair["keys"]
    dep = _copy(pair["a"], tmp_path)
    _as_format_2(dep, keys)
    with pytest.raises(StoreFormatError, match="rehearsal migrate-deployment"):
        Deployment.open(dep, keys)
    assert main(["migrate-deployment", str(dep), "--key-file", _key_file(tmp_path, keys), "--json"]) == 0
    opened = Deployment.open(dep, keys)
    assert [v.version for v, _ in opened.states()] == [1, 2]
    assert opened.current()[0].version == 2
    assert migrate_deployment(dep, keys=keys)["migrated"] is False  # once is enough


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (_point_v1_at_v2, "not its own update's"),
        (_forge_v3, "never recorded in the audit log"),
        (lambda d: d["versions"][0].update(id_boundary=0), "disagrees with the audit log"),
    ],
    ids=["v1-at-v2-weights", "forged-v3", "id-boundary-0"],
)
def test_migration_refuses_a_versions_file_altered_before_it(
    pair: dict[str, Any], tmp_path: Path, change: Callable[[dict[str, Any]], None], match: str
) -> None:
    keys = pair["keys"]
    dep = _copy(pair["a"], tmp_path)
    _as_format_2(dep, keys)
    _edit_versions(dep, change)
    with pytest.raises(IntegrityError, match=match):
        migrate_deployment(dep, keys=keys)
    assert json.loads((dep / "deployment.json").read_text())["format"] == "rehearsal-deployment/2"
