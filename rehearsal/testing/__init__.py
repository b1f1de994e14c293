"""Helpers for tests, benchmarks and trying things out (throwaway servers); the library never imports them."""
