"""Versioned output: one folder per run, written in a hidden temporary folder and renamed into place.

Layout::

    <out>/<model-stem>/<UTC timestamp>-<first 8 of the model's SHA-256>/
        report.html  report.pdf  audit.json  predictions.csv  figures/*.png

A run that is killed leaves at most a hidden ``.partial-*`` folder (removed by the next run once its
process is gone); it never touches an earlier report, and an existing folder is never overwritten.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .errors import input_error
from .report.document import AuditReport
from .report.write import write_outputs

PARTIAL_PREFIX = ".partial-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_partials(model_dir: Path) -> None:
    """Remove temporary folders left by killed runs (their process no longer exists)."""
    if not model_dir.is_dir():
        return
    for d in model_dir.glob(PARTIAL_PREFIX + "*"):
        try:
            pid = int(d.name.rsplit("-", 1)[1])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(d, ignore_errors=True)


def write_report(report: AuditReport, config) -> Path:
    """Write every output of one audit and move the folder into place atomically; return its path."""
    model_dir = Path(config.out_dir) / Path(report.model["path"]).stem
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise input_error("--out", f"cannot create {model_dir} ({exc.strerror or exc})") from None
    if not os.access(model_dir, os.W_OK):
        raise input_error("--out", f"{model_dir} is not writable")
    clean_stale_partials(model_dir)
    tmp = model_dir / f"{PARTIAL_PREFIX}{report.report_id}-{os.getpid()}"
    tmp.mkdir()
    try:
        write_outputs(report, tmp, config.formats)
        final = model_dir / report.report_id
        n = 2
        while final.exists():  # two runs in the same second: never overwrite
            final = model_dir / f"{report.report_id}-{n}"
            n += 1
        os.rename(tmp, final)
        return final
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_comparison(comparison, config) -> Path:
    """Write a model comparison (:class:`auditor.compare.ComparisonReport`) into
    ``<out>/_comparison/<report id>/`` the same way: a hidden temporary folder renamed into place."""
    from .report.comparison import write_comparison_outputs

    root = Path(config.out_dir) / "_comparison"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise input_error("--out", f"cannot create {root} ({exc.strerror or exc})") from None
    clean_stale_partials(root)
    tmp = root / f"{PARTIAL_PREFIX}{comparison.report_id}-{os.getpid()}"
    tmp.mkdir()
    try:
        write_comparison_outputs(comparison, tmp, config.formats)
        final = root / comparison.report_id
        n = 2
        while final.exists():
            final = root / f"{comparison.report_id}-{n}"
            n += 1
        os.rename(tmp, final)
        return final
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
