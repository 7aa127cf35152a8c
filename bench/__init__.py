"""Benchmarks (`emostream bench …`) that write docs/BENCHMARKS.md."""
