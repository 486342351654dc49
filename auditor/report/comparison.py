"""The comparison report's files: comparison.json, measures.csv, pairs.csv, figures/pareto.png, report.html and
report.pdf (template ``comparison.html``, the audit report's stylesheet). Renderers format, never compute."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

from ..analyses.comparison import MEASURES, fmt
from ..data import thumbnail
from . import figures as figmod
from .render import _environment, templates_dir
from .write import write_documents, write_table

if TYPE_CHECKING:  # pragma: no cover - types only
    from ..compare import ComparisonReport


def pareto_figure(comparison: ComparisonReport) -> bytes | None:
    """The two Pareto measures of every model, marker area by latency, the front drawn, each model labelled;
    None when fewer than two models have both values."""
    r = comparison.result
    mx, my = MEASURES[r.pareto_x], MEASURES[r.pareto_y]
    pts: list[tuple[str, float, float, float | None]] = []
    for row in r.models:
        x, y = row.value(r.pareto_x), row.value(r.pareto_y)
        if x is not None and y is not None:
            pts.append((row.name, float(x), float(y), row.value("latency_ms")))
    if len(pts) < 2:
        return None
    scale = {"share": 100.0}.get(mx.kind, 1.0), {"share": 100.0}.get(my.kind, 1.0)
    lat = [p[3] for p in pts if p[3] is not None]
    fig = figmod._new(6.2, 3.6)
    ax = fig.add_subplot()
    seen: dict[tuple[float, float], int] = {}
    for name, x, y, ms in pts:
        stacked = seen.get((x, y), 0)  # models on the same point: labels one above the other
        seen[(x, y)] = stacked + 1
        size = 60.0 if ms is None or not lat else 40.0 + 360.0 * (ms / max(lat))
        on_front = name in r.pareto_front
        ax.scatter(
            [x * scale[0]],
            [y * scale[1]],
            s=size,
            color="#1f5fa8" if on_front else "#9aa5b4",
            edgecolor="#1b2430",
            linewidth=0.6,
            zorder=3,
            alpha=0.85,
        )
        label = name if len(name) <= 28 else "…" + name[-27:]
        if ms is not None:
            label += f"\n{ms:.1f} ms"
        ax.annotate(
            label, (x * scale[0], y * scale[1]), xytext=(7, 5 + 20 * stacked), textcoords="offset points", fontsize=7
        )
    front = sorted((p for p in pts if p[0] in r.pareto_front), key=lambda p: p[1])
    if len(front) > 1:
        ax.plot([p[1] * scale[0] for p in front], [p[2] * scale[1] for p in front], "--", color="#1f5fa8", lw=1)
    unit = lambda m: " (%)" if m.kind == "share" else (" (ms)" if m.kind == "ms" else "")  # noqa: E731
    arrow = lambda m: "higher is better" if m.higher_is_better else "lower is better"  # noqa: E731
    ax.set_xlabel(f"{mx.label}{unit(mx)} — {arrow(mx)}")
    ax.set_ylabel(f"{my.label}{unit(my)}\n{arrow(my)}")
    ax.margins(0.25)
    ax.grid(alpha=0.3)
    ax.set_title("Pareto front (dashed, blue points); marker area grows with latency", fontsize=8.5)
    return figmod._png(fig)


def _thumbnails(comparison: ComparisonReport) -> dict[str, bytes]:
    root = Path(comparison.dataset.get("root") or ".")
    out: dict[str, bytes] = {}
    for i, pair in enumerate(comparison.result.pairs):
        for j, d in enumerate(pair.disagreements):
            img = thumbnail(root / d.path, 128)
            if img is not None:
                out[f"pair{i}_{j}"] = figmod.thumbnail_png(img)
    return out


def _measure_text(value: Any, kind: str) -> str:
    return fmt(value, kind)


def render_comparison_html(comparison: ComparisonReport, figs: Mapping[str, bytes], thumbs: Mapping[str, bytes]) -> str:
    env = _environment()
    env.filters["measure"] = _measure_text
    env.globals["zip"] = zip
    css = (templates_dir() / "report.css").read_text(encoding="utf-8")
    return env.get_template("comparison.html").render(
        c=comparison,
        r=comparison.result,
        rec=comparison.result.recommendation,
        measures=MEASURES,
        figures=figs,
        thumbs=thumbs,
        css=css,
        speed=dict(comparison.speed),
        config_json=json.dumps(comparison.config.get("comparison", {}), indent=2, ensure_ascii=False),
    )


def write_comparison_outputs(comparison: ComparisonReport, folder: Path, formats: Sequence[str]) -> None:
    """Every file of a comparison into ``folder`` (which exists)."""
    r = comparison.result
    write_table(
        folder / "measures.csv",
        ["measure", *[row.name for row in r.models]],
        [[name, *["" if row.value(name) is None else repr(row.value(name)) for row in r.models]] for name in MEASURES],
    )
    write_table(
        folder / "pairs.csv",
        ["model_a", "model_b", "n_images", "only_a_right", "only_b_right", "p_value", "p_holm", "accuracy_diff"]
        + ["accuracy_diff_low", "accuracy_diff_high", "f1_diff", "f1_diff_low", "f1_diff_high"],
        [
            [p.a, p.b, str(p.n_images), str(p.only_a_right), str(p.only_b_right), repr(p.p_value), repr(p.p_holm)]
            + [repr(p.accuracy_diff), *map(repr, p.accuracy_diff_ci), repr(p.f1_diff), *map(repr, p.f1_diff_ci)]
            for p in r.pairs
        ],
    )
    figs: dict[str, bytes] = {}
    with matplotlib.rc_context(figmod.STYLE):
        png = pareto_figure(comparison)
    if png is not None:
        figs["pareto"] = png
        (folder / "figures").mkdir(exist_ok=True)
        (folder / "figures" / "pareto.png").write_bytes(png)
    if "json" in formats:
        text = json.dumps(comparison.to_dict(), indent=2, allow_nan=False, ensure_ascii=False) + "\n"
        (folder / "comparison.json").write_text(text, encoding="utf-8")
    if "html" in formats or "pdf" in formats:
        html = render_comparison_html(comparison, figs, _thumbnails(comparison))
        write_documents(html, folder, formats, "the comparison")


def load_comparison(path: str | Path) -> ComparisonReport:
    """Read a ``comparison.json`` (or a comparison folder holding one) back."""
    from ..compare import ComparisonReport

    p = Path(path)
    if p.is_dir():
        p = p / "comparison.json"
    return ComparisonReport.from_dict(json.loads(p.read_text(encoding="utf-8")))
