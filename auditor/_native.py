"""Quiet start-up of TensorFlow (no TensorFlow imported here)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Hide what TensorFlow's C++ runtime prints on file descriptor 2 while it loads.

    Importing TensorFlow writes absl and oneDNN notices straight to fd 2 whatever TF_CPP_MIN_LOG_LEVEL
    says; a nightly cron job must not mail them. Python-level errors are unaffected (raised after restore).
    """
    try:
        saved = os.dup(2)
    except OSError:  # no usable stderr: nothing to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
