"""Benchmarks: ``python -m benchmarks [--quick] [--repeats N] [--json FILE] [--only NAMES]``.

Ours (the dispatcher) against raw Dask on a standalone cluster of the same shape, and
optionally a real Covalent; see benchmarks/README.md. Never collected by pytest.
"""
