"""Renderers: the report object in, files out. They format numbers and never compute them."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Mapping

import jinja2

from . import figures
from .document import AuditReport


SCORE_NAMES = {"fisher": "Fisher score ||p − y||²", "expected": "Expected score 1 − ||p||² (label-free)",
               "grad_norm": "Last-layer gradient norm"}


def templates_dir() -> Path:
    """The installed templates (``auditor/templates``) or, in a source checkout, ``templates/``."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "templates", here.parent / "templates"):
        if (candidate / "report.html").is_file():
            return candidate
    raise FileNotFoundError("wbc-audit's report templates are not installed (report.html not found)")


def _pct(value, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value * 100:.{digits}f}%"


def _num(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def _ci(pair) -> str:
    if not pair or any(v is None or (isinstance(v, float) and math.isnan(v)) for v in pair):
        return "–"
    return f"{pair[0] * 100:.1f}–{pair[1] * 100:.1f}%"


def _sig(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}g}"


def _pts(fraction) -> str:
    """A signed difference of proportions in percentage points (no "-0.0")."""
    if fraction is None or (isinstance(fraction, float) and math.isnan(fraction)):
        return "–"
    value = round(fraction * 100, 1) + 0.0
    return f"{value:+.1f} pts"


def _datauri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir())),
                             autoescape=jinja2.select_autoescape(["html"], default=True),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(pct=_pct, num=_num, ci=_ci, datauri=_datauri, sig=_sig, pts=_pts)
    return env


def make_figures(report: AuditReport) -> dict[str, bytes]:
    """Every figure of the report as PNG bytes, keyed by name (also the file name in figures/)."""
    out: dict[str, bytes] = {}
    if report.classification is not None:
        m = report.classification
        out["confusion_counts"] = figures.confusion_counts(m)
        out["confusion_normalized"] = figures.confusion_normalized(m)
        out["roc_curves"] = figures.roc_curves(m)
        out["recall_intervals"] = figures.recall_intervals(m)
    if report.fisher is not None:
        out["fisher_histogram"] = figures.fisher_histogram(report.fisher)
        out["fisher_by_class"] = figures.fisher_boxplots(report.fisher)
    if report.calibration is not None:
        out["reliability_diagram"] = figures.reliability_diagram(report.calibration)
        out["confidence_histogram"] = figures.confidence_histogram(report.calibration)
    if report.selective is not None:
        out["risk_coverage"] = figures.risk_coverage_curve(report.selective)
    if report.sites is not None and len(report.sites.rows) > 1:
        out["site_recall"] = figures.site_recall_heatmap(report.sites)
        out["site_confusions"] = figures.site_confusions(report.sites)
    if report.preprocessing_check is not None:
        out["preprocessing_grid"] = figures.preprocessing_grid(report.preprocessing_check)
    return out


def json_text(report: AuditReport) -> str:
    """audit.json: strict JSON (no NaN), stable key order."""
    return json.dumps(report.to_dict(), indent=2, allow_nan=False, ensure_ascii=False) + "\n"


def render_html(report: AuditReport, figs: Mapping[str, bytes], thumbs: Mapping[int, bytes],
                site_thumbs: list[bytes | None] | None = None) -> str:
    """The self-contained HTML report (figures and thumbnails embedded, no external requests)."""
    env = _environment()
    css = (templates_dir() / "report.css").read_text(encoding="utf-8")
    return env.get_template("report.html").render(
        report=report, figures=figs, thumbs=thumbs, site_thumbs=site_thumbs or [], css=css,
        score_names=SCORE_NAMES,
        config_json=json.dumps(report.config, indent=2, ensure_ascii=False))


def write_pdf(html: str, path: Path) -> None:
    """Lay the same HTML out for print with WeasyPrint (A4, running header, page numbers)."""
    import logging

    import weasyprint

    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    weasyprint.HTML(string=html, base_url=str(templates_dir())).write_pdf(str(path))
