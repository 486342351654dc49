"""Deterministic synthetic white-blood-cell images (see README.md)."""
