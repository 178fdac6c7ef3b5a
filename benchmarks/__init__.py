"""Benchmarks that print figures: orchestration overhead, search efficiency on
NAS-Bench-201, latency measurement stability, compression on digits.

Run `python -m benchmarks [--quick] [--only NAME] [--out DIR]` (or `paretune bench`).
"""
