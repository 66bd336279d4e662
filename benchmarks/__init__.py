"""Benchmarks: ``python -m benchmarks [--quick] [--json FILE]``."""
