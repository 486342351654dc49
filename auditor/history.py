"""Versioned output: one folder per run, written in a hidden temporary folder and renamed into place.

Layout::

    <out>/<model-stem>/<UTC timestamp>-<first 8 of the model's SHA-256>/
        report.html  report.pdf  audit.json  predictions.csv  figures/*.png

A run that is killed leaves at most a hidden ``.partial-*`` folder (removed by the next run once its
process is gone); it never touches an earlier report, and an existing folder is never overwritten.

Each folder is registered in the root's audit index (``audits.db``, ``index.html``: :mod:`auditor.index`)
in the same transaction that assigns its version, and carries its release record (version, gates,
baseline deltas, trend, model card: :mod:`auditor.release`). Another writer registers a finished folder
through :func:`auditor.index.register_folder`.
"""

from __future__ import annotations

import dataclasses
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
    """Write one audit's folder and register it in the index: in one index transaction, assign the model's
    next version, evaluate gates against the baseline, add the trend, write the folder, move it into place,
    add the index entry and rewrite index.html. Returns the folder; the release record is also left in
    ``report.artifacts.release``."""
    from . import index as idx
    from .gates import correctness_from_rows
    from .release import resolve_baseline

    root = Path(config.out_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise input_error("--out", f"cannot create {root} ({exc.strerror or exc})") from None
    identity = idx.model_identity(report.model["path"])
    baseline = resolve_baseline(getattr(config, "baseline", None), root, identity, report.model.get("file_name", ""))
    preds = report.artifacts.predictions
    correct = correctness_from_rows(preds.header, preds.rows) if preds is not None else None
    with idx.writing(root) as index:
        version = index.next_version(identity)
        trend = index.trend(identity, report.dataset.get("fingerprint"))
        from .release import build_release

        release = build_release(
            report.to_dict(),
            version=version,
            identity=identity,
            gates_texts=getattr(config, "gates", ()),
            baseline=baseline,
            trend_rows=trend,
            ran=tuple(report.results),
            current_correct=correct,
            model_card=dict(getattr(config, "model_card", ()) or ()),
        )
        final_report = dataclasses.replace(report, release=release)
        report.artifacts.release = release
        folder = write_folder(final_report, config)
        index.add(folder, final_report.to_dict())
        idx.write_html(index)
    return folder


def _write_into_place(parent: Path, report_id: str, write) -> Path:
    """Create ``parent`` (writable), ``write(folder)`` into a hidden temporary folder there and rename it to
    ``parent/<report_id>`` (``-2``, ``-3``, ... when that exists: never overwrite); return the final path."""
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise input_error("--out", f"cannot create {parent} ({exc.strerror or exc})") from None
    if not os.access(parent, os.W_OK):
        raise input_error("--out", f"{parent} is not writable")
    clean_stale_partials(parent)
    tmp = parent / f"{PARTIAL_PREFIX}{report_id}-{os.getpid()}"
    tmp.mkdir()
    try:
        write(tmp)
        final = parent / report_id
        n = 2
        while final.exists():  # two runs in the same second: never overwrite
            final = parent / f"{report_id}-{n}"
            n += 1
        os.rename(tmp, final)
        return final
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_folder(report: AuditReport, config) -> Path:
    """Write every output of one report and move the folder into place atomically; return its path."""
    model_dir = Path(config.out_dir) / Path(report.model["path"]).stem
    return _write_into_place(model_dir, report.report_id, lambda tmp: write_outputs(report, tmp, config.formats))


def write_comparison(comparison, config) -> Path:
    """Write a model comparison (:class:`auditor.compare.ComparisonReport`) into
    ``<out>/_comparison/<report id>/`` the same way: a hidden temporary folder renamed into place."""
    from .report.comparison import write_comparison_outputs

    return _write_into_place(
        Path(config.out_dir) / "_comparison",
        comparison.report_id,
        lambda tmp: write_comparison_outputs(comparison, tmp, config.formats),
    )
