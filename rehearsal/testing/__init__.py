"""Helpers for tests, benchmarks and trying things out: throwaway servers.
Nothing in the library imports this."""
