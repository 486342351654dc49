"""Renderers: the report object in, files out. They format numbers and never compute them."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2

from .document import AuditReport, _registry

if TYPE_CHECKING:  # pragma: no cover - types only
    from ..sections import Registry


SCORE_NAMES = {
    "fisher": "Fisher score ||p − y||²",
    "expected": "Expected score 1 − ||p||² (label-free)",
    "grad_norm": "Last-layer gradient norm",
}


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
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        autoescape=jinja2.select_autoescape(["html"], default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(pct=_pct, num=_num, ci=_ci, datauri=_datauri, sig=_sig, pts=_pts)
    return env


def make_figures(report: AuditReport, sections: Registry | None = None) -> dict[str, bytes]:
    """Every figure of the report as PNG bytes, keyed by name (also the file name in figures/)."""
    out: dict[str, bytes] = {}
    for section in _registry(sections).sections:
        if section.name in report.results:
            for name, png in section.figures(report.results[section.name]).items():
                if name in out:
                    raise ValueError(f"section {section.name} makes a figure named {name!r}, already taken")
                out[name] = png
    if report.release:
        from ..release import trend_figure

        png = trend_figure(report.release)
        if png is not None:
            out["release_trend"] = png
    return out


def make_thumbnails(
    report: AuditReport,
    *,
    load: Callable[[Path, int], Any],
    encode: Callable[[Any], bytes],
    sections: Registry | None = None,
) -> dict[str, bytes]:
    """PNG thumbnails of the images the sections show, keyed as their partials look them up."""
    root = report.artifacts.data_root or _data_root(report)
    out: dict[str, bytes] = {}
    for section in _registry(sections).sections:
        if section.name not in report.results:
            continue
        for key, ref in section.images(report.results[section.name]).items():
            if key in out:
                continue
            img = load(Path(ref.root or root) / ref.path, ref.size)
            if img is not None:
                out[key] = encode(img)
    return out


def _data_root(report: AuditReport) -> str:
    path = Path(report.dataset.get("path", "."))
    return str(path.parent if report.dataset.get("source") == "csv" else path)


def json_text(report: AuditReport) -> str:
    """audit.json: strict JSON (no NaN), stable key order."""
    return json.dumps(report.to_dict(), indent=2, allow_nan=False, ensure_ascii=False) + "\n"


def render_html(
    report: AuditReport, figs: Mapping[str, bytes], thumbs: Mapping[str, bytes], sections: Registry | None = None
) -> str:
    """The self-contained HTML report (figures and thumbnails embedded, no external requests).

    The frame (``report.html``) holds header, contents, summary, model and data, failures and configuration;
    each section that ran adds its partial in registry order (and, optionally, a part of the summary) and an
    entry of the contents list (its ``title``, linking to its ``anchor``).
    """
    env = _environment()
    tdir = templates_dir()
    css = (tdir / "report.css").read_text(encoding="utf-8")
    common = {"report": report, "r": report, "figures": figs, "thumbs": thumbs, "score_names": SCORE_NAMES}
    parts: list[dict[str, str]] = []
    summary_blocks: list[str] = []
    summary_inline: list[str] = []
    for section in _registry(sections).sections:
        if section.name not in report.results:
            continue
        result = report.results[section.name]
        env_vars = {**common, "result": result, "section": section}
        if section.template:
            html = _render_partial(env, section.template_path(tdir), env_vars)
            if html.strip():  # a partial may render nothing (e.g. external sites without a site)
                parts.append({"name": section.name, "title": section.title, "anchor": section.anchor, "html": html})
        if section.summary_template:
            html = _render_partial(
                env,
                Path(tdir / section.summary_template)
                if not Path(section.summary_template).is_absolute()
                else Path(section.summary_template),
                env_vars,
            ).strip()
            (summary_inline if section.summary_inline else summary_blocks).append(html)
    return env.get_template("report.html").render(
        **common,
        css=css,
        sections=parts,
        summary_blocks=summary_blocks,
        summary_inline=summary_inline,
        config_json=json.dumps(report.config, indent=2, ensure_ascii=False),
    )


def _render_partial(env: jinja2.Environment, path: Path, variables: Mapping[str, Any]) -> str:
    """Render one section's partial with the report's environment (filters, macros, autoescape)."""
    try:
        template = env.get_template(path.relative_to(templates_dir()).as_posix())
    except ValueError:  # a plug-in's partial outside the templates folder
        template = env.from_string(path.read_text(encoding="utf-8"))
    return template.render(**variables)


def write_pdf(html: str, path: Path) -> None:
    """Lay the same HTML out for print with WeasyPrint (A4, running header, page numbers)."""
    import logging

    import weasyprint

    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    weasyprint.HTML(string=html, base_url=str(templates_dir())).write_pdf(str(path))
