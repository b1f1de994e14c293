"""Storage: the protocols a memory talks to, the where-filter tree, the folder layout, and the backends.

Nothing here imports anything above :mod:`rehearsal.crypto`; only :mod:`rehearsal.store.registry` names the
concrete backends (``sqlite/``, ``faiss/``).
"""
