"""Tests of rehearsal.store.faiss.index:
spec choice, exactness of flat search, id bookkeeping, filters, recall floors."""

from __future__ import annotations

import numpy as np
import pytest

from rehearsal.errors import DimensionMismatchError, IntegrityError, StoreFormatError, ValidationError
from rehearsal.store.faiss.index import FaissIndex, choose_index_spec, choose_nprobe

DIM = 32
IVF_DIM = 64
IVF_N = 20_000
IVF_SPEC = "IVF256,Flat"


def _normalise(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return out


def _random_unit(rng: np.random.Generator, n: int, d: int = DIM) -> np.ndarray:
    return _normalise(rng.standard_normal((n, d), dtype=np.float32))


def _clustered(rng: np.random.Generator, n: int, d: int, n_clusters: int) -> np.ndarray:
    centres = _random_unit(rng, n_clusters, d)
    noise = rng.standard_normal((n, d), dtype=np.float32) / np.sqrt(d)
    return _normalise(centres[rng.integers(n_clusters, size=n)] + noise)


def _brute_force(
    base: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    sims = queries @ base.T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, axis=1), ids[order]


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


@pytest.fixture(scope="module")
def ivf_data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    both = _clustered(rng, IVF_N + 200, IVF_DIM, n_clusters=200)
    ids = rng.permutation(10 * IVF_N)[:IVF_N].astype(np.int64)
    return both[:IVF_N], ids, both[IVF_N:]


@pytest.fixture(scope="module")
def ivf_bytes(ivf_data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> bytes:
    base, ids, _ = ivf_data
    return FaissIndex.build(base, ids, spec=IVF_SPEC, seed=0).to_bytes()


@pytest.fixture
def ivf_index(ivf_bytes: bytes) -> FaissIndex:
    return FaissIndex.from_bytes(ivf_bytes)


@pytest.fixture
def flat() -> tuple[FaissIndex, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    base = _random_unit(rng, 500)
    ids = rng.permutation(1_000_000)[:500].astype(np.int64) + 10**12
    index = FaissIndex(DIM)
    index.add(base, ids)
    return index, base, ids


@pytest.mark.parametrize(
    ("n_vectors", "dim", "spec"),
    [
        (0, 384, "IDMap,Flat"),
        (500, 384, "IDMap,Flat"),
        (49_999, 384, "IDMap,Flat"),
        (50_000, 384, "IVF1024,SQ8"),
        (200_000, 384, "IVF4096,SQ8"),
        (1_000_000, 384, "IVF8192,SQ8"),
        (2_796_203, 384, "IVF16384,SQ8"),
        (10_000_000, 64, "IVF32768,SQ8"),
        (10_000_000, 384, "IVF32768,SQ8"),
    ],
)
def test_choose_index_spec_table(n_vectors: int, dim: int, spec: str) -> None:
    assert choose_index_spec(n_vectors=n_vectors, dim=dim) == spec


@pytest.mark.parametrize(
    ("n_vectors", "dim", "match"), [(-1, 384, "n_vectors"), (10, 0, "dim"), (10, True, "dim")]
)
def test_choose_index_spec_rejects_bad_sizes(n_vectors: int, dim: int, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        choose_index_spec(n_vectors, dim)


@pytest.mark.parametrize(
    ("nlist", "nprobe"), [(1, 1), (8, 8), (256, 16), (1024, 16), (8192, 16), (16384, 32), (65536, 128)]
)
def test_choose_nprobe_table(nlist: int, nprobe: int) -> None:
    assert choose_nprobe(nlist) == nprobe


def test_choose_nprobe_rejects_zero_lists() -> None:
    with pytest.raises(ValidationError, match="'nlist' must be >= 1, got 0"):
        choose_nprobe(0)


def test_flat_search_matches_numpy_brute_force(flat: tuple[FaissIndex, np.ndarray, np.ndarray]) -> None:
    index, base, ids = flat
    queries = _random_unit(np.random.default_rng(4), 20)
    scores, found = index.search(queries, 10)
    true_scores, true_ids = _brute_force(base, ids, queries, 10)
    assert scores.dtype == np.float32
    assert found.dtype == np.int64
    np.testing.assert_array_equal(found, true_ids)
    np.testing.assert_allclose(scores, true_scores, rtol=1e-5, atol=1e-6)


def test_float64_vectors_are_accepted() -> None:
    index = FaissIndex(DIM)
    index.add(_random_unit(np.random.default_rng(0), 5).astype(np.float64), np.arange(5))
    assert index.search(np.eye(DIM)[:1], 5)[1].shape == (1, 5)


def test_search_pads_with_minus_one_and_minus_inf() -> None:
    index = FaissIndex(DIM)
    index.add(_random_unit(np.random.default_rng(0), 3), np.array([4, 5, 6]))
    scores, found = index.search(_random_unit(np.random.default_rng(1), 2), 5)
    assert (found[:, 3:] == -1).all()
    assert np.isneginf(scores[:, 3:]).all()
    assert sorted(found[0, :3].tolist()) == [4, 5, 6]


def test_empty_index_search_returns_padding() -> None:
    scores, found = FaissIndex(DIM).search(_random_unit(np.random.default_rng(1), 2), 3)
    assert (found == -1).all()
    assert np.isneginf(scores).all()


def test_removed_ids_are_never_returned_by_flat(flat: tuple[FaissIndex, np.ndarray, np.ndarray]) -> None:
    index, base, ids = flat
    gone = ids[::2]
    assert index.remove(gone) == len(gone)
    assert len(index) == len(ids) - len(gone)
    _, found = index.search(base[:50], 100)
    assert not np.isin(found, gone).any()
    assert index.contains(found.ravel()).all()


def test_removed_ids_are_never_returned_by_ivf(
    ivf_index: FaissIndex, ivf_data: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    base, ids, _ = ivf_data
    gone = ids[: IVF_N // 2]
    assert ivf_index.remove(gone) == len(gone)
    _, found = ivf_index.search(base[:100], 50)
    assert not np.isin(found, gone).any()
    assert ivf_index.contains(found.ravel()).all()
    np.testing.assert_array_equal(ivf_index.ids(), np.sort(ids[IVF_N // 2 :]))


def test_remove_ignores_ids_not_present(flat: tuple[FaissIndex, np.ndarray, np.ndarray]) -> None:
    index, _, ids = flat
    assert index.remove([1, 2, 3]) == 0
    assert index.remove(np.array([ids[0], ids[0], 7])) == 1
    assert len(index) == len(ids) - 1
    assert not index.contains([ids[0]])[0]


def test_ids_can_be_reused_after_removal(flat: tuple[FaissIndex, np.ndarray, np.ndarray]) -> None:
    index, base, ids = flat
    index.remove(ids[:1])
    index.add(base[:1], ids[:1])
    assert index.search(base[:1], 1)[1][0, 0] == ids[0]


def test_allowed_ids_is_exact_for_flat(flat: tuple[FaissIndex, np.ndarray, np.ndarray]) -> None:
    index, base, ids = flat
    keep = np.random.default_rng(5).choice(len(ids), 60, replace=False)
    queries = _random_unit(np.random.default_rng(6), 10)
    allowed = np.concatenate([ids[keep], [123, 456]])  # unknown ids are ignored
    scores, found = index.search(queries, 10, allowed_ids=allowed)
    true_scores, true_ids = _brute_force(base[keep], ids[keep], queries, 10)
    np.testing.assert_array_equal(found, true_ids)
    np.testing.assert_allclose(scores, true_scores, rtol=1e-5, atol=1e-6)


def test_allowed_ids_with_none_present_returns_padding(
    flat: tuple[FaissIndex, np.ndarray, np.ndarray],
) -> None:
    scores, found = flat[0].search(flat[1][:2], 4, allowed_ids=np.array([1, 2], dtype=np.int64))
    assert (found == -1).all()
    assert np.isneginf(scores).all()


# Up to 8,000 allowed take the exact path; 12,000 and 15,000 the widened IVF probe.
@pytest.mark.parametrize("n_allowed", [5, 30, 3_000, 8_000, 12_000, 15_000])
def test_filtered_ivf_search_is_k_complete(
    ivf_index: FaissIndex, ivf_data: tuple[np.ndarray, np.ndarray, np.ndarray], n_allowed: int
) -> None:
    base, ids, queries = ivf_data
    keep = np.random.default_rng(n_allowed).choice(IVF_N, n_allowed, replace=False)
    scores, found = ivf_index.search(queries[:50], 10, allowed_ids=ids[keep])
    want = min(10, n_allowed)
    assert ((found >= 0).sum(axis=1) == want).all()
    assert np.isin(found[:, :want], ids[keep]).all()
    assert np.isfinite(scores[:, :want]).all()
    _, true_ids = _brute_force(base[keep], ids[keep], queries[:50], want)
    assert _recall(found[:, :want], true_ids) >= 0.95


def test_ivf_recall_at_10_floor(
    ivf_index: FaissIndex, ivf_data: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    base, ids, queries = ivf_data
    _, found = ivf_index.search(queries, 10)
    recall_at_10 = _recall(found, _brute_force(base, ids, queries, 10)[1])
    assert recall_at_10 >= 0.95


def test_ivf_sq8_recall_at_10_floor(ivf_data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    base, ids, queries = ivf_data
    index = FaissIndex.build(base, ids, spec="IVF256,SQ8", seed=0)
    _, found = index.search(queries, 10)
    recall_at_10 = _recall(found, _brute_force(base, ids, queries, 10)[1])
    assert recall_at_10 >= 0.95
    keep = np.arange(0, IVF_N, 400)  # 50 allowed: scored exactly from SQ8-decoded vectors
    _, found = index.search(queries, 10, allowed_ids=ids[keep])
    assert _recall(found, _brute_force(base[keep], ids[keep], queries, 10)[1]) >= 0.95


def test_build_without_spec_chooses_flat_for_small_memories() -> None:
    index = FaissIndex.build(_random_unit(np.random.default_rng(0), 100), np.arange(100))
    assert index.spec == "IDMap,Flat"
    assert len(index) == 100
    assert index.nprobe == 0


def test_build_is_reproducible_with_a_seed(ivf_data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    base, ids, queries = ivf_data
    first = FaissIndex.build(base[:5000], ids[:5000], spec="IVF64,Flat", seed=3)
    second = FaissIndex.build(base[:5000], ids[:5000], spec="IVF64,Flat", seed=3)
    np.testing.assert_array_equal(first.search(queries, 10)[1], second.search(queries, 10)[1])


def test_build_needs_at_least_nlist_vectors() -> None:
    with pytest.raises(ValidationError, match="needs at least 256 vectors to train, got 100"):
        FaissIndex.build(_random_unit(np.random.default_rng(0), 100), np.arange(100), spec="IVF256,Flat")


def test_untrained_ivf_rejects_add() -> None:
    index = FaissIndex(DIM, spec="IVF16,Flat")
    with pytest.raises(ValidationError, match="untrained"):
        index.add(_random_unit(np.random.default_rng(0), 4), np.arange(4))


@pytest.mark.parametrize("spec", ["HNSW32", "IVF0,Flat", "IVF64,PQ8", "Flat"])
def test_unsupported_specs_are_rejected(spec: str) -> None:
    with pytest.raises(ValidationError, match="unsupported index spec"):
        FaissIndex(DIM, spec=spec)


@pytest.mark.parametrize("which", ["flat", "ivf"])
def test_round_trip_gives_identical_search_results(
    which: str,
    flat: tuple[FaissIndex, np.ndarray, np.ndarray],
    ivf_index: FaissIndex,
    ivf_data: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    index, queries = (flat[0], flat[1][:20]) if which == "flat" else (ivf_index, ivf_data[2])
    if which == "ivf":
        index.nprobe = 8
    index.remove(index.ids()[:10])
    copy = FaissIndex.from_bytes(index.to_bytes())
    assert (copy.spec, copy.dim, copy.nprobe, len(copy)) == (index.spec, index.dim, index.nprobe, len(index))
    np.testing.assert_array_equal(copy.ids(), index.ids())
    allowed = index.ids()[::3]
    for kwargs in ({}, {"allowed_ids": allowed}):
        scores, found = index.search(queries, 10, **kwargs)
        copy_scores, copy_found = copy.search(queries, 10, **kwargs)
        np.testing.assert_array_equal(copy_found, found)
        np.testing.assert_array_equal(copy_scores, scores)


def test_from_bytes_rejects_foreign_data() -> None:
    with pytest.raises(StoreFormatError, match="not a rehearsal vector index"):
        FaissIndex.from_bytes(b"PK\x03\x04" + bytes(100))


def test_from_bytes_rejects_a_newer_format() -> None:
    data = bytearray(FaissIndex(DIM).to_bytes())
    data[4:6] = (99).to_bytes(2, "big")
    with pytest.raises(StoreFormatError, match="format 99 is newer"):
        FaissIndex.from_bytes(bytes(data))


def test_from_bytes_rejects_a_flipped_byte(flat: tuple[FaissIndex, np.ndarray, np.ndarray]) -> None:
    data = bytearray(flat[0].to_bytes())
    data[len(data) // 2] ^= 0x01
    with pytest.raises(IntegrityError, match="SHA-256"):
        FaissIndex.from_bytes(bytes(data))


def test_from_bytes_rejects_truncated_data(flat: tuple[FaissIndex, np.ndarray, np.ndarray]) -> None:
    with pytest.raises(IntegrityError, match="truncated"):
        FaissIndex.from_bytes(flat[0].to_bytes()[:20])


def _bad_adds() -> list[tuple[str, type[Exception], str]]:
    return [
        ("nan", ValidationError, "row 2 is not finite"),
        ("inf", ValidationError, "row 2 is not finite"),
        ("width", DimensionMismatchError, "width 31, the index has dim 32"),
        ("dup", ValidationError, "7 is repeated"),
        ("present", ValidationError, "id 100 is already in the index"),
        ("negative", ValidationError, "non-negative, got -3"),
        ("count", ValidationError, r"shape \(4,\)"),
        ("strings", ValidationError, "must be numeric"),
        ("float_ids", ValidationError, "integer array"),
    ]


@pytest.mark.parametrize(("case", "error", "match"), _bad_adds())
def test_bad_add_is_rejected_and_changes_nothing(case: str, error: type[Exception], match: str) -> None:
    rng = np.random.default_rng(0)
    index = FaissIndex(DIM)
    index.add(_random_unit(rng, 3), np.array([100, 101, 102]))
    before = index.to_bytes()
    vectors: object = _random_unit(rng, 4)
    ids: object = np.array([5, 6, 7, 8])
    if case in ("nan", "inf"):
        vectors[2, 1] = np.nan if case == "nan" else np.inf  # type: ignore[index]
    elif case == "width":
        vectors = _random_unit(rng, 4, DIM - 1)
    elif case == "dup":
        ids = np.array([5, 7, 6, 7])
    elif case == "present":
        ids = np.array([5, 6, 100, 8])
    elif case == "negative":
        ids = np.array([5, -3, 6, 8])
    elif case == "count":
        ids = np.array([5, 6, 7])
    elif case == "strings":
        vectors = np.full((4, DIM), "x")
    elif case == "float_ids":
        ids = np.array([5.0, 6.0, 7.0, 8.0])
    with pytest.raises(error, match=match):
        index.add(vectors, ids)  # type: ignore[arg-type]
    assert index.to_bytes() == before
    assert len(index) == 3


@pytest.mark.parametrize(
    ("queries", "k", "error", "match"),
    [
        (np.zeros((1, DIM)), 0, ValidationError, "'k' must be >= 1, got 0"),
        (np.zeros((1, DIM)), -2, ValidationError, "'k' must be >= 1"),
        (np.zeros((1, DIM)), 2.5, ValidationError, "'k' must be an integer"),
        (np.zeros((0, DIM)), 3, ValidationError, "queries is empty"),
        (np.zeros(DIM), 3, ValidationError, "2-D array"),
        (np.zeros((1, DIM + 1)), 3, DimensionMismatchError, "width 33"),
        (np.full((1, DIM), np.nan), 3, ValidationError, "queries row 0 is not finite"),
    ],
)
def test_bad_search_is_rejected(
    flat: tuple[FaissIndex, np.ndarray, np.ndarray],
    queries: np.ndarray,
    k: int,
    error: type[Exception],
    match: str,
) -> None:
    with pytest.raises(error, match=match):
        flat[0].search(queries, k)


def test_allowed_ids_must_be_integers(flat: tuple[FaissIndex, np.ndarray, np.ndarray]) -> None:
    with pytest.raises(ValidationError, match="allowed_ids must be a 1-D integer array"):
        flat[0].search(flat[1][:1], 3, allowed_ids=np.array([1.5]))


def test_nprobe_is_settable_within_range(ivf_index: FaissIndex) -> None:
    assert ivf_index.nprobe == choose_nprobe(256)
    ivf_index.nprobe = 4
    assert ivf_index.nprobe == 4
    with pytest.raises(ValidationError, match="nprobe must be <= nlist=256, got 257"):
        ivf_index.nprobe = 257
    with pytest.raises(ValidationError, match="'nprobe' must be >= 1, got 0"):
        ivf_index.nprobe = 0
    ivf_index.nprobe = None
    assert ivf_index.nprobe == 16


def test_nprobe_of_flat_index_is_zero() -> None:
    index = FaissIndex(DIM)
    index.nprobe = None
    index.nprobe = 0
    assert index.nprobe == 0
    with pytest.raises(ValidationError, match="nprobe applies to IVF indexes only"):
        index.nprobe = 8


def test_wants_rebuild_when_flat_outgrows_exact_search() -> None:
    index = FaissIndex(4)
    vectors = _random_unit(np.random.default_rng(0), 50_000, 4)
    index.add(vectors[:49_999], np.arange(49_999))
    assert not index.wants_rebuild()
    index.add(vectors[49_999:], np.array([49_999]))
    assert index.wants_rebuild()


def test_wants_rebuild_when_nlist_is_four_times_off() -> None:
    vectors = _random_unit(np.random.default_rng(0), 50_000, 4)
    assert FaissIndex.build(vectors, np.arange(50_000), spec="IVF64,Flat").wants_rebuild()
    assert not FaissIndex.build(vectors, np.arange(50_000), spec="IVF512,Flat").wants_rebuild()


def test_wants_rebuild_back_to_flat_only_well_below_threshold(ivf_index: FaissIndex) -> None:
    assert not ivf_index.wants_rebuild()  # 20,000 vectors: under the flat threshold, within hysteresis
    ivf_index.remove(ivf_index.ids()[:10_000])
    assert ivf_index.wants_rebuild()


def test_ivf_search_scans_more_lists_when_probed_lists_are_short(
    ivf_index: FaissIndex, ivf_data: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    ivf_index.nprobe = 1  # one list holds about 80 vectors, fewer than k
    _, found = ivf_index.search(ivf_data[2][:5], 200)
    assert (found >= 0).all()
    assert len(np.unique(found[0])) == 200
