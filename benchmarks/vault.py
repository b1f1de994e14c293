"""Vault throughput against bare AES-256-GCM on the same records, measured in the same run.

    .venv/bin/python benchmarks/vault.py [--records 100000] [--batch 10000] [--repeats 3]

Records are ~300-byte sentences assembled from a fixed vocabulary with a seeded generator (mixed case,
digits, a few non-ASCII names), stored one tenant per 10k records. The baseline is one AESGCM
encrypt/decrypt per record with a fresh nonce and a record-sized associated data, nothing else; the vault
adds validation, SQLite (WAL, synchronous=FULL: one fsync per put batch) and the text encode/decode.
Batches read ids in random order, and the decrypt baseline reads the same records in the same order;
a baseline in id order (memory-sequential, so faster) is printed too.
Prints a table and writes benchmarks/out/vault.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rehearsal.crypto.keys import KeyRing
from rehearsal.store.sqlite.texts import Vault

WORDS = (  # noqa: SIM905 (a sentence reads better than a list of words)
    "the customer reported that invoice payment failed after the update and asked support to refund "
    "order shipping delayed because warehouse address was wrong please verify account email password "
    "reset link expired twice while travelling abroad card declined at checkout subscription renewal "
    "José Zoë Müller Øresund café naïve"
).split()


def make_texts(n: int, rng: random.Random) -> list[str]:
    out = []
    for i in range(n):
        parts = [f"#{i}"]
        while sum(len(p) + 1 for p in parts) < 300:
            parts.append(rng.choice(WORDS))
        out.append(" ".join(parts)[:300])
    return out


def best(fn: object, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "out" / "vault.json"))
    args = ap.parse_args()
    n, batch = args.records, args.batch
    rng = random.Random(0)
    texts = make_texts(n, rng)
    datas = [t.encode() for t in texts]
    ids = list(range(n))
    order = ids[:]
    rng.shuffle(order)
    batches = [order[i : i + batch] for i in range(0, n, batch)]

    aead = AESGCM(os.urandom(32))
    aad = [os.urandom(48) + i.to_bytes(8, "big") for i in ids]
    nonces = [os.urandom(12) for _ in ids]
    cts: list[bytes] = []

    def bare_encrypt() -> None:
        cts[:] = [aead.encrypt(nonces[i], datas[i], aad[i]) for i in ids]

    def bare_decrypt() -> None:
        for b in batches:
            [aead.decrypt(nonces[i], cts[i], aad[i]) for i in b]

    def bare_decrypt_sequential() -> None:
        [aead.decrypt(nonces[i], cts[i], aad[i]) for i in ids]

    t_bare_enc = best(bare_encrypt, args.repeats)
    t_bare_dec = best(bare_decrypt, args.repeats)
    # Reported for context: in id order the records sit in memory in the order they are read (cache-warm).
    t_bare_seq = best(bare_decrypt_sequential, args.repeats)

    keys = KeyRing.generate()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        put_times = []
        for rep in range(args.repeats):
            with Vault.create(Path(tmp) / f"bench{rep}.db", keys) as vault:
                start = time.perf_counter()
                for s in range(0, n, batch):
                    tenant = f"tenant-{s // batch % 10}"
                    vault.put(ids[s : s + batch], texts[s : s + batch], tenant=tenant)
                put_times.append(time.perf_counter() - start)
        t_put = min(put_times)
        with Vault.open(Path(tmp) / "bench0.db", keys, read_only=True) as vault:
            got: list[str] = []

            def vault_get() -> None:
                got.clear()
                for b in batches:
                    got.extend(vault.get(b))

            t_get = best(vault_get, args.repeats)
            if got != [texts[i] for b in batches for i in b]:
                raise SystemExit("vault.get returned wrong texts")

    rows = [
        ("bare AESGCM encrypt", t_bare_enc, None),
        ("Vault.put", t_put, t_bare_enc),
        ("bare AESGCM decrypt", t_bare_dec, None),
        ("Vault.get", t_get, t_bare_dec),
        ("bare decrypt, id order", t_bare_seq, None),
        ("Vault.get vs id order", t_get, t_bare_seq),
    ]
    print(f"{n} records of ~{sum(map(len, datas)) // n} bytes, batches of {batch}, best of {args.repeats}")
    print(f"{'operation':<22}{'records/s':>12}{'vs bare':>10}")
    for name, secs, base in rows:
        ratio = f"{base / secs:.2f}x" if base else "-"
        print(f"{name:<22}{n / secs:>12,.0f}{ratio:>10}")
        results[name] = {
            "seconds": secs,
            "records_per_s": n / secs,
            "ratio_vs_bare": base / secs if base else None,
        }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"records": n, "batch": batch, "repeats": args.repeats, "python": platform.python_version()}
    out.write_text(json.dumps({"config": meta, "results": results}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
