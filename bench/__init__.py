"""Benchmarks of wbc-audit: ``python -m bench.run`` (or ``make bench``); results in ``bench/results/``."""
