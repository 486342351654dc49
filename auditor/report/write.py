"""Write a report's files into a folder: CSVs, figures, audit.json, report.html, report.pdf."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from ..data import thumbnail
from ..errors import AuditFailed
from . import figures as figmod
from .document import AuditReport
from .render import json_text, make_figures, make_thumbnails, render_html, write_pdf


def write_table(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def write_documents(html: str, folder: Path, formats: Sequence[str], what: str) -> None:
    """``report.html`` and/or ``report.pdf`` from one rendered page (``what`` names it in WeasyPrint's error)."""
    if "html" in formats:
        (folder / "report.html").write_text(html, encoding="utf-8")
    if "pdf" in formats:
        try:
            write_pdf(html, folder / "report.pdf")
        except Exception as exc:
            raise AuditFailed(f"report.pdf: WeasyPrint could not lay out {what} ({exc})") from exc


def write_outputs(report: AuditReport, folder: Path, formats: Sequence[str]) -> None:
    """Every output of one report into ``folder`` (which exists)."""
    art = report.artifacts
    if art.predictions is not None:
        write_table(folder / "predictions.csv", art.predictions.header, art.predictions.rows)
    for rel, table in art.tables.items():
        write_table(folder / rel, table.header, table.rows)
    figs = make_figures(report)
    (folder / "figures").mkdir(exist_ok=True)
    for name, png in figs.items():
        (folder / "figures" / f"{name}.png").write_bytes(png)
    if "json" in formats:
        (folder / "audit.json").write_text(json_text(report), encoding="utf-8")
    if "html" in formats or "pdf" in formats:
        html = render_html(report, figs, make_thumbnails(report, load=thumbnail, encode=figmod.thumbnail_png))
        write_documents(html, folder, formats, "the report")
