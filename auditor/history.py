"""Versioned output: one folder per run, written in a hidden temporary folder and renamed into place.

Layout::

    <out>/<model-stem>/<UTC timestamp>-<first 8 of the model's SHA-256>/
        report.html  report.pdf  audit.json  predictions.csv  figures/*.png

A run that is killed leaves at most a hidden ``.partial-*`` folder (removed by the next run once its
process is gone); it never touches an earlier report, and an existing folder is never overwritten.
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

from .data import thumbnail
from .errors import AuditFailed, input_error
from .report import figures as figmod
from .report.document import AuditReport
from .report.render import json_text, make_figures, render_html, write_pdf

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


def safe_name(name: str) -> str:
    """A file-name-safe version of a site name."""
    out = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name).strip("._")
    return out or "site"


def write_predictions_csv(path: Path, run, pm, index, cp=None, columns=None) -> None:
    """predictions.csv: path, true label, predicted label, confidence, one probability column per class,
    then the per-image scores (Fisher score, expected score, last-layer gradient norm)."""
    cp = run.clean_pass if cp is None else cp
    columns = run.columns if columns is None else columns
    names = pm.mapping.model_classes
    pred = cp.probs.argmax(axis=1)
    extra = list(columns)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "true_label", "predicted_label", "confidence"] + [f"prob_{n}" for n in names] + extra)
        for j, i in enumerate(cp.sample_idx):
            row = cp.probs[j]
            w.writerow([index.samples[i].rel, names[cp.y_true[j]], names[pred[j]], f"{row[pred[j]]:.6f}"]
                       + [f"{p:.6f}" for p in row] + [f"{columns[c][j]:.6g}" for c in extra])


def write_report(run, pm, index, config) -> Path:
    """Write every output of one audit and move the folder into place atomically; return its path."""
    report: AuditReport = run.report
    model_dir = Path(config.out_dir) / pm.path.stem
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
        _write_all(tmp, run, pm, index, config)
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


def _write_all(folder: Path, run, pm, index, config) -> None:
    report: AuditReport = run.report
    write_predictions_csv(folder / "predictions.csv", run, pm, index)
    if run.sites:
        (folder / "sites").mkdir()
        for r in run.sites:
            write_predictions_csv(folder / "sites" / f"{safe_name(r.site.name)}.csv", run, pm, r.index,
                                  cp=r.clean_pass, columns={})
    figs = make_figures(report)
    (folder / "figures").mkdir()
    for name, png in figs.items():
        (folder / "figures" / f"{name}.png").write_bytes(png)
    thumbs = {}
    for item in report.mistakes + report.fisher_gallery:
        if item.index in thumbs:
            continue
        img = thumbnail(index.root / item.path)
        if img is not None:
            thumbs[item.index] = figmod.thumbnail_png(img)
    site_thumbs = []
    for s in report.site_samples:
        img = thumbnail(Path(s.root) / s.path, size=112)
        site_thumbs.append(figmod.thumbnail_png(img) if img is not None else None)
    if "json" in config.formats:
        (folder / "audit.json").write_text(json_text(report), encoding="utf-8")
    if "html" in config.formats or "pdf" in config.formats:
        html = render_html(report, figs, thumbs, site_thumbs)
        if "html" in config.formats:
            (folder / "report.html").write_text(html, encoding="utf-8")
        if "pdf" in config.formats:
            try:
                write_pdf(html, folder / "report.pdf")
            except Exception as exc:  # noqa: BLE001
                raise AuditFailed(f"report.pdf: WeasyPrint could not lay out the report ({exc})") from exc
