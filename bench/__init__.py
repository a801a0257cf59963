"""Benchmarks: ``python -m bench NAME --json`` (DESIGN §8 contract)."""
