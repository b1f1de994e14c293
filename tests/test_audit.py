"""The audit log: hash chain, MACs, head sidecar, key rotation, and no raw text in the file."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from rehearsal.crypto.keys import KeyRing
from rehearsal.errors import IntegrityError, NotFoundError, ValidationError, WrongKeyError
from rehearsal.governance.audit_log import AuditLog, check_details, default_log_path
from rehearsal.governance.audited import AuditedMemory, log_ingest, log_train_update
from rehearsal.memory.facade import RehearsalMemory

N = 6


def make_log(tmp_path: Path, keys: KeyRing, n: int = N) -> AuditLog:
    log = AuditLog.open(tmp_path / "audit.log", keys)
    for i in range(n):
        log_ingest(log, [10 * i, 10 * i + 1], tenant="acme", tags=["pii-checked"], actor="ingest-bot")
    return log


def lines(log: AuditLog) -> list[bytes]:
    return log.path.read_bytes().splitlines(keepends=True)


def rewrite(log: AuditLog, new_lines: list[bytes]) -> None:
    log.path.write_bytes(b"".join(new_lines))


def test_fresh_log_verifies_and_counts_entries(tmp_path: Path, keys: KeyRing) -> None:
    log = make_log(tmp_path, keys)
    assert log.verify() == N
    assert [e.seq for e in log.entries()] == list(range(N))
    assert AuditLog.open(log.path, keys).verify() == N


def test_entries_are_chained_and_keyed_by_fingerprint(tmp_path: Path, keys: KeyRing) -> None:
    entries = make_log(tmp_path, keys).entries()
    assert entries[0].prev == "0" * 64
    assert all(b.prev == a.digest for a, b in itertools.pairwise(entries))
    assert {e.key for e in entries} == {keys.fingerprint}


@pytest.mark.parametrize("k", [0, 2, N - 1])
def test_edited_entry_is_named(tmp_path: Path, keys: KeyRing, k: int) -> None:
    log = make_log(tmp_path, keys)
    all_lines = lines(log)
    obj = json.loads(all_lines[k])
    obj["details"]["count"] = 99
    all_lines[k] = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    rewrite(log, all_lines)
    with pytest.raises(IntegrityError, match=rf"line {k + 1} \(seq {k}\): MAC does not match"):
        log.verify()


@pytest.mark.parametrize("k", [0, 3])
def test_deleted_entry_is_named(tmp_path: Path, keys: KeyRing, k: int) -> None:
    log = make_log(tmp_path, keys)
    all_lines = lines(log)
    del all_lines[k]
    rewrite(log, all_lines)
    with pytest.raises(IntegrityError, match=rf"line {k + 1} \(seq {k + 1}\): expected seq {k}; .*deleted"):
        log.verify()


def test_deleted_last_entries_are_detected_by_the_head(tmp_path: Path, keys: KeyRing) -> None:
    log = make_log(tmp_path, keys)
    rewrite(log, lines(log)[:-2])
    with pytest.raises(IntegrityError, match=rf"ends at seq {N - 3} but its head records seq {N - 1}"):
        log.verify()
    with pytest.raises(IntegrityError, match="removed from the tail"):
        log.append("delete", {"count": 1})


def test_inserted_copy_of_an_entry_is_named(tmp_path: Path, keys: KeyRing) -> None:
    log = make_log(tmp_path, keys)
    all_lines = lines(log)
    all_lines.insert(3, all_lines[2])  # a replayed, validly signed entry
    rewrite(log, all_lines)
    with pytest.raises(IntegrityError, match=r"line 4 \(seq 2\): expected seq 3"):
        log.verify()


def test_inserted_forged_entry_is_named(tmp_path: Path, keys: KeyRing) -> None:
    log = make_log(tmp_path, keys)
    # The forger knows the format and the chain, not the key: renumbering everything after still fails.
    all_lines = lines(log)
    entries = log.entries()
    forged = dict(json.loads(all_lines[2]), seq=3, prev=entries[2].digest, mac="0" * 64)
    rest = [json.loads(x) for x in all_lines[3:]]
    for obj in rest:
        obj["seq"] += 1
    new = [
        *all_lines[:3],
        *(json.dumps(o, sort_keys=True, separators=(",", ":")).encode() + b"\n" for o in [forged, *rest]),
    ]
    rewrite(log, new)
    with pytest.raises(IntegrityError, match=r"line 4 \(seq 3\): MAC does not match"):
        log.verify()


def test_reordered_entries_are_named(tmp_path: Path, keys: KeyRing) -> None:
    log = make_log(tmp_path, keys)
    all_lines = lines(log)
    all_lines[1], all_lines[2] = all_lines[2], all_lines[1]
    rewrite(log, all_lines)
    with pytest.raises(IntegrityError, match=r"line 2 \(seq 2\): expected seq 1"):
        log.verify()


def test_whitespace_edit_is_detected(tmp_path: Path, keys: KeyRing) -> None:
    log = make_log(tmp_path, keys)
    all_lines = lines(log)
    all_lines[1] = json.dumps(json.loads(all_lines[1]), sort_keys=True).encode() + b"\n"
    rewrite(log, all_lines)
    with pytest.raises(IntegrityError, match=r"line 2 \(seq 1\) is not in canonical form"):
        log.verify()


def test_altered_or_missing_head_is_detected(tmp_path: Path, keys: KeyRing) -> None:
    log = make_log(tmp_path, keys)
    head = json.loads(log.head_path.read_bytes())
    log.head_path.write_text(json.dumps(dict(head, seq=head["seq"] - 1)))
    with pytest.raises(IntegrityError, match="fails its MAC"):
        log.verify()
    log.head_path.unlink()
    with pytest.raises(IntegrityError, match=r"head audit\.log\.head is missing"):
        log.verify()


def test_wrong_key_is_reported_as_such(tmp_path: Path, keys: KeyRing) -> None:
    make_log(tmp_path, keys)
    with pytest.raises(WrongKeyError, match="last written under master key"):
        AuditLog.open(tmp_path / "audit.log", KeyRing.generate())


def test_missing_log_is_not_created_when_asked_not_to(tmp_path: Path, keys: KeyRing) -> None:
    with pytest.raises(NotFoundError, match="no audit log"):
        AuditLog.open(tmp_path / "audit.log", keys, create=False)


def test_torn_last_line_is_dropped_by_the_next_append(tmp_path: Path, keys: KeyRing) -> None:
    log = make_log(tmp_path, keys)
    with open(log.path, "ab") as fh:
        fh.write(b'{"actor":null,"details":{"co')  # a crash mid-append: never acknowledged
    with pytest.raises(IntegrityError, match=f"line {N + 1} is incomplete"):
        log.verify()
    log.append("delete", {"count": 1})
    assert log.verify() == N + 1


def test_rotation_continues_the_chain_under_the_new_key(tmp_path: Path, keys: KeyRing) -> None:
    log = make_log(tmp_path, keys)
    new_keys = KeyRing.generate()
    log.rotate(new_keys, actor="ops")
    log.append("delete", {"count": 1})
    reopened = AuditLog.open(log.path, new_keys)
    assert reopened.verify() == N + 2
    with pytest.raises(WrongKeyError, match=new_keys.fingerprint):
        AuditLog.open(log.path, keys)
    # An entry from before the rotation is authenticated by the chain: editing it breaks the next link.
    all_lines = lines(log)
    obj = json.loads(all_lines[1])
    obj["details"]["count"] = 7
    all_lines[1] = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    rewrite(log, all_lines)
    with pytest.raises(IntegrityError, match=r"line 3 \(seq 2\): 'prev' does not match"):
        reopened.verify()


@pytest.mark.parametrize(
    "details",
    [{"note": "Jane Doe called about her refund"}, {"texts": ["hello world"]}, {"x": {"y": "a b"}}],
)
def test_free_text_details_are_refused(details: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="looks like free text"):
        check_details(details)


def test_unknown_kind_and_free_text_actor_are_refused(tmp_path: Path, keys: KeyRing) -> None:
    log = AuditLog.open(tmp_path / "audit.log", keys)
    with pytest.raises(ValidationError, match="unknown audit kind 'edit'"):
        log.append("edit", {})
    with pytest.raises(ValidationError, match="actor must be an identifier"):
        log.append("delete", {}, actor="Jane Doe")
    with pytest.raises(ValidationError, match="finite number"):
        log.append("delete", {"loss": float("nan")})


def test_train_update_records_digests_not_data(tmp_path: Path, keys: KeyRing) -> None:
    log = AuditLog.open(tmp_path / "audit.log", keys)
    entry = log_train_update(
        log,
        run_id="run-7",
        config={"lr": 1e-4, "epochs": 2},
        data_ids=[5, 3, 4],
        metrics={"acc/billing": 0.91},
        decision="pass",
        approver="alice@example.com",
    )
    again = log_train_update(
        log, run_id="run-8", config={"epochs": 2, "lr": 1e-4}, data_ids=[3, 4, 5], metrics={}, decision="pass"
    )
    assert entry.details["config_hash"] == again.details["config_hash"]
    assert entry.details["data_ids_hash"] == again.details["data_ids_hash"]
    assert entry.details["data_count"] == 3


def test_audited_memory_logs_mutations_and_no_raw_text(tmp_path: Path, keys: KeyRing) -> None:
    secret = "Customer Zanzibarian asked about invoice 88231 for the quokka subscription"
    memory = RehearsalMemory.create(tmp_path / "mem", keys=keys, dim=8, encoder_name="test-encoder")
    log = AuditLog.open(default_log_path(memory.path), keys)
    mem = AuditedMemory(memory, log, actor="tester")
    vectors = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    texts = [secret, "second record", "third record"]
    ids = mem.add(texts, metadata=[{"task": "billing", "tags": ["gdpr"]}] * 3, tenant="acme", vectors=vectors)
    mem.delete(ids[:1])
    mem.forget(tenant="acme")
    memory.close()
    kinds = [e.kind for e in log.entries()]
    assert kinds == ["baseline", "ingest", "delete", "forget"]
    assert log.entries()[1].details["tags"] == ["gdpr"]
    assert [e.details["generation"] for e in log.entries()] == [0, 1, 2, 3]
    raw = log.path.read_bytes() + log.head_path.read_bytes()
    for word in ["Zanzibarian", "quokka", "88231", "second record", "third"]:
        assert word.encode() not in raw


def test_cli_audit_verify_reports_ok_and_names_the_bad_entry(
    tmp_path: Path, keys: KeyRing, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from rehearsal.cli.main import KEY_ENV, main

    monkeypatch.setenv(KEY_ENV, keys.export_base64())
    (tmp_path / "mem").mkdir()
    log = make_log(tmp_path / "mem", keys)
    assert main(["audit", "verify", str(tmp_path / "mem"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["ok"], report["entries"], report["kinds"]) == (True, N, {"ingest": N})
    all_lines = lines(log)
    all_lines[1], all_lines[2] = all_lines[2], all_lines[1]
    rewrite(log, all_lines)
    assert main(["audit", "verify", str(tmp_path / "mem")]) == 1
    assert "line 2 (seq 2): expected seq 1" in capsys.readouterr().err
    monkeypatch.setenv(KEY_ENV, KeyRing.generate().export_base64())
    assert main(["audit", str(tmp_path / "mem")]) == 1
    assert "last written under master key" in capsys.readouterr().err


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 8)).astype(np.float32)


def test_a_mutation_whose_entry_was_lost_is_reconciled_on_the_next_open(
    tmp_path: Path, keys: KeyRing
) -> None:
    memory = RehearsalMemory.create(tmp_path / "mem", keys=keys, dim=8, encoder_name="test-encoder")
    log = AuditLog.open(default_log_path(memory.path), keys)
    audited = AuditedMemory(memory, log)
    kept = audited.add(["a", "b"], vectors=_vectors(2))
    # The crash this guards against: the memory committed, the process died before the log append.
    lost_add = memory.add(["c", "d", "e"], vectors=_vectors(3, 1))
    memory.delete(kept[:1])
    memory.close()

    memory = RehearsalMemory.open(tmp_path / "mem", keys=keys)
    AuditedMemory(memory, log)
    entry = log.entries()[-1]
    assert entry.kind == "reconcile"
    assert (entry.details["from_generation"], entry.details["generation"]) == (1, 3)
    assert entry.details["added"]["count"] == 3
    assert (entry.details["added"]["first_id"], entry.details["added"]["last_id"]) == (
        lost_add[0],
        lost_add[-1],
    )
    assert entry.details["removed"]["count"] == 1
    assert entry.details["removed"]["first_id"] == kept[0]
    AuditedMemory(memory, log)  # in step again: nothing more to log
    assert log.entries()[-1].seq == entry.seq
    memory.close()
    assert log.verify() == len(log.entries())


def test_a_memory_older_than_its_log_is_an_integrity_error(tmp_path: Path, keys: KeyRing) -> None:
    import shutil

    memory = RehearsalMemory.create(tmp_path / "mem", keys=keys, dim=8, encoder_name="test-encoder")
    memory.close()
    shutil.copytree(tmp_path / "mem", tmp_path / "old-copy")
    log = AuditLog.open(tmp_path / "audit.log", keys)
    with AuditedMemory(RehearsalMemory.open(tmp_path / "mem", keys=keys), log) as audited:
        audited.add(["a"], vectors=_vectors(1))
    old = RehearsalMemory.open(tmp_path / "old-copy", keys=keys)
    with pytest.raises(IntegrityError, match="generation 0 but its audit log recorded generation 1"):
        AuditedMemory(old, log)
    old.close()


def test_every_cli_mutation_of_an_encrypted_memory_is_audited(
    tmp_path: Path, keys: KeyRing, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from rehearsal.cli.main import KEY_ENV, main

    monkeypatch.setenv(KEY_ENV, keys.export_base64())
    data = tmp_path / "records.jsonl"
    records = [{"text": f"note {i} about the Zanzibarian account", "tenant_tag": "t"} for i in range(4)]
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    path = str(tmp_path / "mem")
    assert main(["ingest", path, str(data), "--tenant", "acme", "--quiet"]) == 0
    assert main(["delete", path, "--ids", "0"]) == 0
    assert main(["forget", path, "--tenant", "acme"]) == 0
    new_key = KeyRing.generate()
    monkeypatch.setenv("NEW_KEY", new_key.export_base64())
    assert main(["rotate-key", path, "--new-key-env", "NEW_KEY"]) == 0
    capsys.readouterr()
    log = AuditLog.open(default_log_path(path), new_key, create=False)
    kinds = [e.kind for e in log.entries()]
    assert kinds == ["baseline", "ingest", "delete", "forget", "rotate-key"]
    assert log.verify() == len(kinds)
    assert b"Zanzibarian" not in log.path.read_bytes()


def test_rotate_key_finishes_a_rotation_that_died_before_the_log(
    tmp_path: Path, keys: KeyRing, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from rehearsal.cli.main import KEY_ENV, main

    monkeypatch.setenv(KEY_ENV, keys.export_base64())
    data = tmp_path / "records.jsonl"
    data.write_text("".join(json.dumps({"text": f"note {i}"}) + "\n" for i in range(3)))
    path = str(tmp_path / "mem")
    assert main(["ingest", path, str(data), "--quiet"]) == 0
    capsys.readouterr()
    new_key = KeyRing.generate()
    with RehearsalMemory.open(path, keys=keys) as memory:
        memory.rotate_keys(new_key)  # the crash: the memory is rewrapped, its audit log is not
    monkeypatch.setenv("NEW_KEY", new_key.export_base64())
    with pytest.raises(WrongKeyError):
        AuditLog.open(default_log_path(path), new_key, create=False)  # what blocked every audited verb
    assert main(["rotate-key", path, "--new-key-env", "NEW_KEY", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["finished_interrupted_rotation"] is True
    log = AuditLog.open(default_log_path(path), new_key, create=False)
    assert [e.kind for e in log.entries()][-1] == "rotate-key"
    monkeypatch.setenv(KEY_ENV, new_key.export_base64())
    assert main(["delete", path, "--ids", "0"]) == 0  # audited verbs work again under the new key
    assert [e.kind for e in log.entries()][-1] == "delete"


def test_a_rotation_cut_short_inside_the_log_is_finished_not_repeated(tmp_path: Path, keys: KeyRing) -> None:
    log = make_log(tmp_path, keys)
    new_key = KeyRing.generate()
    # The crash: the rotation entry is written under the old key, the head is not yet rewritten.
    seq, prev = log._tail()
    details = {"old_key": keys.fingerprint, "new_key": new_key.fingerprint}
    log._write_line(log._sign(seq + 1, "rotate-key", None, details, prev))
    AuditLog.open(tmp_path / "audit.log", keys).rotate(new_key)
    reopened = AuditLog.open(tmp_path / "audit.log", new_key, create=False)
    assert [e.kind for e in reopened.entries()].count("rotate-key") == 1
    assert reopened.verify() == N + 1


def test_a_tenants_pseudonym_is_this_keys_digest_of_its_name(tmp_path: Path, keys: KeyRing) -> None:
    import hashlib
    import hmac

    log = AuditLog.open(tmp_path / "audit.log", keys)
    alice = log.pseudonym("alice")
    key = keys.derive_key("audit-tenant-pseudonym")
    assert alice == "hmac:" + hmac.new(key, b"alice", hashlib.sha256).hexdigest()[:32]
    assert alice == log.pseudonym("alice")
    assert alice != log.pseudonym("bob")
    other = AuditLog.open(tmp_path / "other.log", KeyRing.generate())
    assert other.pseudonym("alice") != alice  # another key cannot test a guess against this log


def test_a_head_edited_to_name_another_key_is_called_altered(tmp_path: Path, keys: KeyRing) -> None:
    """The log's last entry still authenticates under this key and names no rotation: a head that names
    another master key was edited, which is damage, not a wrong key."""
    log = make_log(tmp_path, keys)
    head = json.loads(log.head_path.read_bytes())
    head["key"] = "0123456789abcdef"
    log.head_path.write_bytes(json.dumps(head).encode())
    with pytest.raises(IntegrityError, match="the head was altered"):
        AuditLog.open(log.path, keys, create=False)


def test_a_log_rotated_to_a_new_key_is_a_wrong_key_to_the_old_one_not_damage(
    tmp_path: Path, keys: KeyRing
) -> None:
    log = make_log(tmp_path, keys)
    log.rotate(KeyRing.generate())
    with pytest.raises(WrongKeyError, match="last written under master key"):
        AuditLog.open(log.path, keys, create=False)


def test_a_head_naming_a_key_the_last_rotation_did_not_name_is_called_altered(
    tmp_path: Path, keys: KeyRing
) -> None:
    log = make_log(tmp_path, keys)
    log.rotate(KeyRing.generate())
    head = json.loads(log.head_path.read_bytes())
    head["key"] = "0123456789abcdef"  # neither the old key nor the one the rotation entry names
    log.head_path.write_bytes(json.dumps(head).encode())
    with pytest.raises(IntegrityError, match="the head was altered"):
        AuditLog.open(log.path, keys, create=False)
