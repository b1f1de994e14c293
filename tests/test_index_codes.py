"""IVF codes are SQ8 (the 1.5 KB/entry disk goal); older SQfp16 snapshots still read and get retrained."""

import numpy as np

from rehearsal.store.faiss.index import FaissIndex, choose_index_spec
from rehearsal.store.faiss.spec import IVF_CODES

D = 128
N = 20_000


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _clustered(seed: int, n: int, centres: np.ndarray) -> np.ndarray:
    # As benchmarks/memory_open.py: noise of norm ~0.5 around unit centres, in-cluster cosines near 0.9,
    # close enough neighbours that 8-bit codes, not the probe, limit recall.
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(centres), n)
    return _unit(centres[picks] + rng.standard_normal((n, D)).astype(np.float32) * (0.5 / np.sqrt(D)))


def _data(n: int = N) -> tuple[np.ndarray, np.ndarray]:
    centres = _unit(np.random.default_rng(0).standard_normal((200, D)))
    return _clustered(1, n, centres), _clustered(2, 200, centres)


def _recall(index: FaissIndex, data: np.ndarray, queries: np.ndarray) -> float:
    exact = np.argsort(-(queries @ data.T), axis=1)[:, :10]
    _, found = index.search(queries, 10)
    return float(np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact, strict=True)]))


def test_ivf_specs_use_sq8_codes() -> None:
    assert IVF_CODES == "SQ8"
    assert choose_index_spec(1_000_000, 384).endswith(",SQ8")


def test_sq8_calibration_stops_where_more_probes_buy_no_recall() -> None:
    # Before the plateau rule, calibration doubled nprobe to every list (a full scan, slower than exact
    # search) chasing a sampled recall the 8-bit codes cannot reach.
    data, queries = _data()
    index = FaissIndex.build(data, np.arange(N), spec="IVF128,SQ8")
    assert index.nprobe < 128
    assert _recall(index, data, queries) >= 0.95


def test_an_sq16_snapshot_still_reads_and_asks_for_a_rebuild_to_sq8() -> None:
    # 50k vectors: the size at which IVF1024 is what choose_index_spec picks, so only the codes are stale.
    data, queries = _data(50_000)
    old = FaissIndex.build(data, np.arange(len(data)), spec="IVF1024,SQfp16")
    reread = FaissIndex.from_bytes(old.to_bytes())
    assert reread.spec == "IVF1024,SQfp16"
    assert np.array_equal(reread.search(queries, 10)[1], old.search(queries, 10)[1])
    assert reread.wants_rebuild()
    rebuilt = FaissIndex.build(data, reread.ids())
    assert rebuilt.spec.endswith(",SQ8")
    assert not rebuilt.wants_rebuild()
    assert _recall(rebuilt, data, queries) >= 0.95
