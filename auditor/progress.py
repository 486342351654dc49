"""Progress display: one bar per stage on stderr, nothing at all with ``--quiet``."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click


class _NullBar:
    def update(self, n: int) -> None:
        pass


class Progress:
    """Stage-wise progress bars (click) on stderr; silent when ``quiet``."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet

    def info(self, message: str) -> None:
        if not self.quiet:
            click.echo(message, err=True)

    @contextmanager
    def stage(self, label: str, total: int) -> Iterator[Any]:
        if self.quiet or total <= 0:
            yield _NullBar()
            return
        with click.progressbar(
            length=total, label=f"{label:<24}", file=sys.stderr, show_pos=True, show_eta=True, width=30
        ) as bar:
            yield bar


QUIET = Progress(quiet=True)
