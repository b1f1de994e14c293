"""The public surface is exactly what __all__ says, and every name in it resolves."""

import rehearsal

EXPECTED = {
    "AccuracyMatrix", "AdmissionPolicy", "ClassBalanced", "ConfigError", "DimensionMismatchError", "Encoder",
    "EncoderMismatchError", "Hit", "IntegrityError", "KeepAll", "KeyManagementError", "KeyRing",
    "MissingKeyError", "NotFoundError", "Priority", "ReadOnlyError", "RehearsalCallback", "RehearsalCollator",
    "RehearsalError", "RehearsalMemory", "ReplayConfig", "Reservoir", "RunCost", "SentenceTransformerEncoder",
    "StoreFormatError", "StoreLockedError", "TaskStream", "ValidationError", "WrongKeyError", "__version__",
    "embed_dataset", "load_encoder", "load_jsonl_stream", "load_wordnet_stream", "make_policy",
    "AdapterRouter", "EWC", "EWCConfig", "LoRAConfig", "RunConfig", "TaskAdapters", "TaskGate",
    "UpdateBlockedError", "RehearsalTrainer", "RunResult", "run", "StorageError", "update",
    "AccuracyMatrixCallback", "MemoryClassifier", "memory_compute_metrics",
    "CleanupError", "ThreadPlan", "size_thread_pools",
}  # fmt: skip


def test_the_plumbing_is_not_exported():
    """Subpackages and internal modules are reached by their paths, never through the package's names."""
    assert not {n for n in rehearsal.__all__ if n in {"store", "memory", "replay", "methods", "runner"}}
    assert callable(rehearsal.run)


def test_all_is_exactly_the_public_surface():
    assert set(rehearsal.__all__) == EXPECTED


def test_every_exported_name_resolves():
    for name in rehearsal.__all__:
        assert getattr(rehearsal, name) is not None


def test_every_error_derives_from_rehearsal_error():
    errors = [
        getattr(rehearsal, n) for n in rehearsal.__all__ if n.endswith("Error") and n != "RehearsalError"
    ]
    assert errors
    assert all(issubclass(e, rehearsal.RehearsalError) for e in errors)
