"""The ``rehearsal`` command line: one module per group of verbs; :func:`main` is the entry point."""

from rehearsal.cli.main import main

__all__ = ["main"]
