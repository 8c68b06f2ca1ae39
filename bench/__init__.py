"""Benchmarks for the performance targets of DESIGN.md section 6 (run ``python -m bench.ingest``).

Benchmarks measure; they never assert. Timed checks do not belong in ``tests/``.
"""
