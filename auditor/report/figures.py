"""Figures made from result objects: one function per figure, each returning PNG bytes.

No pyplot state: every figure is a fresh :class:`matplotlib.figure.Figure` on the Agg canvas, so
figures are thread-safe and never leak between reports. Nothing here computes a metric.
"""

from __future__ import annotations

import io
import logging
import textwrap

import matplotlib
import matplotlib.patches

matplotlib.use("Agg", force=False)
from typing import Any

import numpy as np
import seaborn as sns
from matplotlib.figure import Figure

from ..analyses.calibration import CalibrationResult
from ..analyses.fisher import FisherResult
from ..analyses.metrics import ClassificationMetrics
from ..analyses.preprocessing import PreprocessingCheck
from ..analyses.selective import SelectiveResult
from ..analyses.sites import SitesResult
from ..resize import METHODS

# A font cache built by another (since removed) environment makes matplotlib log "findfont: ... not found"
# for every mathtext font while it falls back to DejaVu Sans; the figures are right, so the noise must not
# reach stderr (--quiet promises an empty stderr).
logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)

DPI = 160
PALETTE = ["#1f5fa8", "#d9822b", "#2a9d5c", "#c0392b", "#7d4fb5", "#8c6d31", "#d35fb7", "#5f6b7a", "#17becf", "#9c9c2a"]
STYLE: Any = {
    "font.size": 8.5,
    "axes.titlesize": 9.5,
    "axes.labelsize": 8.5,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 7.5,
    "font.family": "DejaVu Sans",
}


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def _new(width: float, height: float) -> Figure:
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(width, height), layout="constrained")
    return fig


def _short(name: str, width: int = 14) -> str:
    return "\n".join(textwrap.wrap(name, width)) or name


def _heatmap(
    values: np.ndarray, annot: np.ndarray, names, title: str, cmap: str, vmax: float | None, cbar_label: str
) -> bytes:
    k = len(names)
    size = min(6.2, 1.6 + 0.55 * k)
    with matplotlib.rc_context(STYLE):
        fig = _new(size + 0.9, size)
        ax = fig.add_subplot()
        sns.heatmap(
            values,
            ax=ax,
            annot=annot,
            fmt="",
            cmap=cmap,
            vmin=0,
            vmax=vmax,
            square=True,
            linewidths=0.5,
            linecolor="white",
            cbar_kws={"label": cbar_label, "shrink": 0.8},
            xticklabels=[_short(n) for n in names],
            yticklabels=[_short(n) for n in names],
            annot_kws={"fontsize": 8 if k <= 8 else 6},
        )
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(title)
        ax.tick_params(axis="x", rotation=45 if k > 5 else 0)
        ax.tick_params(axis="y", rotation=0)
        return _png(fig)


def confusion_counts(m: ClassificationMetrics) -> bytes:
    """Confusion matrix as counts (rows: true class)."""
    cm = np.asarray(m.confusion, dtype=float)
    annot = np.asarray(m.confusion).astype(str)
    return _heatmap(cm, annot, m.class_names, "Confusion matrix (counts)", "Blues", None, "images")


def confusion_normalized(m: ClassificationMetrics) -> bytes:
    """Row-normalised confusion matrix: each row shows where the images of one true class went."""
    cm = np.asarray(m.confusion, dtype=float)
    rows = cm.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.where(rows > 0, cm / rows, np.nan)
    annot = np.where(np.isnan(norm), "–", np.char.mod("%.0f%%", np.nan_to_num(norm) * 100))
    return _heatmap(
        norm,
        annot,
        m.class_names,
        "Confusion matrix (row-normalised: recall on the diagonal)",
        "Purples",
        1.0,
        "share of the true class",
    )


def roc_curves(m: ClassificationMetrics) -> bytes:
    """One-vs-rest ROC curve per class with its AUC; for two classes the one curve of the positive class
    (index 1; the other is the same curve mirrored, with the same AUC)."""
    binary = len(m.per_class) == 2
    curves = [c for c in m.roc if c.name == m.per_class[1].name] if binary else list(m.roc)
    with matplotlib.rc_context(STYLE):
        fig = _new(5.6, 4.4)
        ax = fig.add_subplot()
        for i, curve in enumerate(curves):
            ax.plot(
                curve.fpr,
                curve.tpr,
                color=PALETTE[i % len(PALETTE)],
                lw=1.6,
                label=f"{curve.name} (AUC {curve.auc:.3f})",
            )
        ax.plot([0, 1], [0, 1], ls="--", color="#999999", lw=0.8, label="chance")
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate (recall)")
        if binary:
            ax.set_title(f"ROC curve, positive class {m.per_class[1].name} (AUC {m.roc_auc_macro:.3f})")
        else:
            ax.set_title(f"One-vs-rest ROC curves (macro AUC {m.roc_auc_macro:.3f})")
        ax.legend(loc="lower right", frameon=False)
        ax.grid(alpha=0.25)
        ax.set_aspect("equal")
        return _png(fig)


def recall_intervals(m: ClassificationMetrics) -> bytes:
    """Per-class recall with its bootstrap and Wilson 95% intervals (wide bars = little evidence)."""
    rows = [r for r in m.per_class if r.support > 0]
    with matplotlib.rc_context(STYLE):
        fig = _new(5.6, 1.4 + 0.42 * max(len(rows), 1))
        ax = fig.add_subplot()
        y = np.arange(len(rows))[::-1]
        for yi, r in zip(y, rows):
            ax.plot(
                r.recall_wilson,
                [yi - 0.12] * 2,
                color="#b0b7c3",
                lw=5,
                solid_capstyle="butt",
                label="Wilson 95% interval" if yi == y[0] else None,
            )
            ax.plot(
                r.recall_ci,
                [yi + 0.12] * 2,
                color="#1f5fa8",
                lw=2.2,
                label="bootstrap 95% interval" if yi == y[0] else None,
            )
            ax.plot([r.recall], [yi], "o", color="#0b2545", ms=5, label="recall" if yi == y[0] else None)
        ax.set_yticks(y, [f"{r.name} (n={r.support})" for r in rows])
        ax.set_xlim(-0.02, 1.02)
        ax.set_xlabel("recall (share of the class found)")
        ax.axvline(m.accuracy, color="#d9822b", ls=":", lw=1, label=f"overall accuracy {m.accuracy:.1%}")
        ax.set_title("Recall per class with 95% intervals")
        ax.grid(axis="x", alpha=0.25)
        fig.legend(loc="outside lower center", ncol=2, frameon=False)
        return _png(fig)


def preprocessing_grid(c: PreprocessingCheck) -> bytes:
    """Accuracy under every resize method (rows, grouped by family) and pixel scaling (columns), for the best
    setting's crop and channel order; the audit's setting framed solid (when shown), the best dashed. A line
    under the grid gives the best accuracy under each other crop and channel order."""
    crop, channels = c.best.crop, c.best.channels
    rs, ss, acc, st, nn = c.grid(crop, channels)
    annot = np.empty(acc.shape, dtype=object)
    for i in range(acc.shape[0]):
        for j in range(acc.shape[1]):
            if np.isnan(acc[i, j]):
                annot[i, j] = ""
                continue
            text = f"{acc[i, j] * 100:.1f}%"
            if st[i][j] == "dropped":
                text += f" (stop {nn[i][j]})"
            elif st[i][j] == "tied":
                text += f" (tie {nn[i][j]})"
            annot[i, j] = text
    others = []
    for cr in c.crops:
        for ch in c.channel_orders:
            if (cr, ch) == (crop, channels):
                continue
            found = c.best_of(crop=cr, channels=ch)
            if found is not None:
                others.append(
                    f"--crop {cr} --channels {ch}: best {found[1]:.1%} ({found[0].resize}, {found[0].scaling})"
                )
    family_of = {name: m.family for name, m in METHODS.items()}
    with matplotlib.rc_context(STYLE):
        fig = _new(7.0, 1.6 + 0.24 * len(rs) + 0.14 * len(others))
        ax = fig.add_subplot()
        sns.heatmap(
            acc,
            ax=ax,
            annot=annot,
            fmt="",
            cmap="RdYlGn",
            vmin=0,
            vmax=1,
            linewidths=0.5,
            linecolor="white",
            xticklabels=list(ss),
            yticklabels=list(rs),
            cbar_kws={"label": "accuracy", "shrink": 0.6},
            annot_kws={"fontsize": 6.5},
        )
        for i in range(1, len(rs)):  # a line between families
            if family_of.get(rs[i]) != family_of.get(rs[i - 1]):
                ax.axhline(i, color="#111111", lw=1.2, zorder=5)
        if (c.chosen.crop, c.chosen.channels) == (crop, channels):
            r, s = rs.index(c.chosen.resize), ss.index(c.chosen.scaling)
            ax.add_patch(matplotlib.patches.Rectangle((s, r), 1, 1, fill=False, ec="#111111", lw=2.2))
        if c.best != c.chosen:
            r, s = rs.index(c.best.resize), ss.index(c.best.scaling)
            ax.add_patch(matplotlib.patches.Rectangle((s, r), 1, 1, fill=False, ec="#1f5fa8", lw=2.0, ls="--"))
        ax.set_xlabel("pixel scaling (--preprocess)")
        ax.set_ylabel("resize (--resize)")
        ax.set_title(
            f"Accuracy on a {c.n_samples}-image subsample, --crop {crop} --channels {channels}\n"
            "(solid frame: the audit's setting; dashed: the best)"
            + ("\nOther crops and channel orders:\n" + "\n".join(others) if others else ""),
            fontsize=7.5,
        )
        ax.tick_params(axis="y", rotation=0, labelsize=6.5)
        ax.tick_params(axis="x", labelsize=7)
        return _png(fig)


def thumbnail_png(image: np.ndarray) -> bytes:
    """Encode an RGB uint8 thumbnail as PNG."""
    import cv2

    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("could not encode thumbnail")
    return buf.tobytes()


def _stacked_bars(ax, edges, correct, wrong) -> None:
    """Correct (blue) and wrong (red) counts per bin, stacked."""
    edges = np.asarray(edges)
    widths = np.diff(edges)
    ax.bar(
        edges[:-1],
        correct,
        width=widths,
        align="edge",
        color="#1f5fa8",
        alpha=0.85,
        label="correct",
        edgecolor="white",
        linewidth=0.3,
    )
    ax.bar(
        edges[:-1],
        wrong,
        width=widths,
        align="edge",
        bottom=correct,
        color="#c0392b",
        alpha=0.85,
        label="mistake",
        edgecolor="white",
        linewidth=0.3,
    )


def fisher_histogram(f: FisherResult) -> bytes:
    """Distribution of Fisher scores on a log axis, correct and wrong predictions stacked."""
    with matplotlib.rc_context(STYLE):
        fig = _new(5.6, 3.3)
        ax = fig.add_subplot()
        _stacked_bars(ax, f.histogram_edges, f.histogram_correct, f.histogram_wrong)
        ax.axvline(f.threshold, color="#111111", ls="--", lw=1, label=f"tail threshold F = {f.threshold:g}")
        ax.set_xscale("log")
        ax.set_xlabel("Fisher score F = ||p − y||² (log scale)")
        ax.set_ylabel("images")
        ax.set_title(f"Fisher scores: {f.tail_mass:.1%} of images in the tail")
        ax.legend(frameon=False, loc="upper left")
        ax.grid(axis="y", alpha=0.25)
        return _png(fig)


def fisher_boxplots(f: FisherResult) -> bytes:
    """Per-class Fisher-score distribution: box = quartiles, whiskers = 5th and 95th percentiles."""
    stats = [
        {
            "label": _short(name, 12),
            "whislo": max(p5, 1e-8),
            "q1": max(q1, 1e-8),
            "med": max(med, 1e-8),
            "q3": max(q3, 1e-8),
            "whishi": max(p95, 1e-8),
            "fliers": [],
        }
        for name, p5, q1, med, q3, p95 in f.box_stats
    ]
    with matplotlib.rc_context(STYLE):
        fig = _new(5.6, 3.3)
        ax = fig.add_subplot()
        if stats:
            ax.bxp(
                stats,
                showfliers=False,
                patch_artist=True,
                boxprops={"facecolor": "#dbe6f4", "edgecolor": "#1f5fa8"},
                medianprops={"color": "#0b2545", "lw": 1.6},
            )
        ax.axhline(f.threshold, color="#111111", ls="--", lw=1, label=f"tail threshold {f.threshold:g}")
        ax.set_yscale("log")
        ax.set_ylabel("Fisher score (log scale)")
        ax.set_title("Fisher score by true class (whiskers: 5th–95th percentile)")
        ax.tick_params(axis="x", rotation=30 if len(stats) > 5 else 0)
        ax.legend(frameon=False, loc="lower right")
        ax.grid(axis="y", alpha=0.25)
        return _png(fig)


def reliability_diagram(c: CalibrationResult) -> bytes:
    """Accuracy against mean confidence per equal-width bin, with the count of each bin."""
    with matplotlib.rc_context(STYLE):
        fig = _new(5.0, 4.4)
        ax = fig.add_subplot()
        ax.plot([0, 1], [0, 1], ls="--", color="#999999", lw=0.8, label="perfect calibration")
        width = 1.0 / c.n_bins
        label = "accuracy in bin"
        for b in c.bins:
            if b.count == 0:
                continue
            ax.bar(
                b.low, b.accuracy, width=width, align="edge", color="#1f5fa8", alpha=0.8, edgecolor="white", label=label
            )
            label = None
            lo, hi = sorted((b.accuracy, b.confidence))
            ax.bar(b.low, hi - lo, bottom=lo, width=width, align="edge", color="#c0392b", alpha=0.25, edgecolor="none")
            ax.text(
                b.low + width / 2,
                min(b.accuracy, 0.93) + 0.02,
                str(b.count),
                ha="center",
                va="bottom",
                fontsize=6,
                color="#333333",
            )
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("confidence (top probability)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"Reliability diagram (ECE {c.ece:.1%}; red: gap; numbers: images per bin)")
        ax.legend(frameon=False, loc="upper left")
        ax.set_aspect("equal")
        return _png(fig)


def confidence_histogram(c: CalibrationResult) -> bytes:
    """How confident the model is, correct and wrong predictions stacked."""
    with matplotlib.rc_context(STYLE):
        fig = _new(5.0, 3.0)
        ax = fig.add_subplot()
        _stacked_bars(ax, c.confidence_hist_edges, c.confidence_hist_correct, c.confidence_hist_wrong)
        ax.axvline(c.mean_confidence, color="#d9822b", ls=":", lw=1.2, label=f"mean confidence {c.mean_confidence:.1%}")
        ax.set_xlim(0, 1)
        ax.set_xlabel("confidence (top probability)")
        ax.set_ylabel("images")
        ax.set_title(f"Confidence histogram (accuracy {c.accuracy:.1%})")
        ax.legend(frameon=False, loc="upper left")
        return _png(fig)


def risk_coverage_curve(s: SelectiveResult) -> bytes:
    """Error rate among the accepted images as more and more of them are accepted, by confidence."""
    with matplotlib.rc_context(STYLE):
        fig = _new(5.6, 3.8)
        ax = fig.add_subplot()
        ax.plot(s.coverage, s.risk, color="#1f5fa8", lw=1.8, label=f"model confidence (AURC {s.aurc:.4f})")
        ax.plot(
            s.coverage,
            s.oracle_risk,
            color="#2a9d5c",
            lw=1.2,
            ls="--",
            label=f"perfect ranking (AURC {s.oracle_aurc:.4f})",
        )
        ax.axhline(s.random_aurc, color="#999999", lw=1, ls=":", label=f"uninformative ranking ({s.random_aurc:.4f})")
        for p in s.operating_points:
            if p.reachable:
                ax.plot([p.coverage], [1 - p.accuracy], "o", color="#d9822b", ms=6)
                ax.annotate(
                    f"{p.target_accuracy:.0%}: {p.coverage:.0%} covered\nconf ≥ {p.threshold:.3g}",
                    (p.coverage, 1 - p.accuracy),
                    textcoords="offset points",
                    xytext=(6, 8),
                    fontsize=7,
                )
        ax.set_xlim(0, 1.01)
        top = max(max(s.risk, default=0.0), s.random_aurc, 0.01)
        ax.set_ylim(0, top * 1.45)  # room for the legend above the curves
        ax.set_xlabel("coverage (share of cells decided automatically, most confident first)")
        ax.set_ylabel("risk (error rate among them)")
        ax.set_title("Risk–coverage curve")
        ax.legend(frameon=False, loc="upper left")
        ax.grid(alpha=0.25)
        return _png(fig)


def _share_heatmap(ax: Any, values: np.ndarray, annot: np.ndarray, **kwargs: Any) -> None:
    """A heatmap of shares in [0, 1] (recall, accuracy): red to green, annotated cells, white grid lines."""
    sns.heatmap(
        values, ax=ax, annot=annot, fmt="", cmap="RdYlGn", vmin=0, vmax=1, linewidths=0.5, linecolor="white", **kwargs
    )


def site_recall_heatmap(s: SitesResult) -> bytes:
    """Recall per class (columns) and site (rows); blank where a site has no image of a class."""
    names = s.class_names
    values = np.array(
        [[next(r.recall for r in row.metrics.per_class if r.name == n) for n in names] for row in s.rows], dtype=float
    )
    annot = np.where(np.isnan(values), "–", np.char.mod("%.0f%%", np.nan_to_num(values) * 100))
    with matplotlib.rc_context(STYLE):
        fig = _new(min(7.0, 2.2 + 0.85 * len(names)), 1.2 + 0.45 * len(s.rows))
        ax = fig.add_subplot()
        _share_heatmap(
            ax,
            values,
            annot,
            xticklabels=list(names) if len(names) > 5 else [_short(n, 12) for n in names],
            yticklabels=[f"{row.name} (n={row.n_images})" for row in s.rows],
            cbar_kws={"label": "recall"},
        )
        ax.set_title("Recall by class and site (internal first)")
        ax.tick_params(axis="y", rotation=0)
        if len(names) > 5:  # rotated one-line labels end under their column: long names do not run into the next
            for label in ax.get_xticklabels():
                label.set(rotation=30, ha="right", rotation_mode="anchor")
        return _png(fig)


def site_confusions(s: SitesResult) -> bytes:
    """One row-normalised confusion matrix per site, side by side (small multiples)."""
    n = len(s.rows)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    k = len(s.class_names)
    with matplotlib.rc_context(STYLE):
        fig = _new(2.6 * cols + 0.4, 2.5 * rows + 0.3)
        axes = fig.subplots(rows, cols, squeeze=False)
        for ax in axes.ravel()[n:]:
            ax.set_axis_off()
        for ax, row in zip(axes.ravel(), s.rows):
            cm = np.asarray(row.metrics.confusion, dtype=float)
            sums = cm.sum(axis=1, keepdims=True)
            with np.errstate(invalid="ignore", divide="ignore"):
                norm = np.where(sums > 0, cm / sums, np.nan)
            sns.heatmap(
                norm,
                ax=ax,
                cmap="Purples",
                vmin=0,
                vmax=1,
                cbar=False,
                square=True,
                linewidths=0.3,
                linecolor="white",
                annot=k <= 6,
                fmt=".0%",
                annot_kws={"fontsize": 6},
                xticklabels=[n_[:3] for n_ in s.class_names],
                yticklabels=[n_[:3] for n_ in s.class_names],
            )
            ax.set_title(f"{row.name}: {row.metrics.accuracy:.0%}", fontsize=8.5)
            ax.tick_params(labelsize=6.5)
            ax.tick_params(axis="y", rotation=0)
            ax.set_xlabel("predicted", fontsize=7)
            ax.set_ylabel("true", fontsize=7)
        return _png(fig)


# ----------------------------------------------------------------------------------- perturbation grid


def _perturbation_label(name: str) -> str:
    from ..perturb import PERTURBATIONS

    return PERTURBATIONS[name].label if name in PERTURBATIONS else name


def perturbation_heatmap(r: Any) -> bytes:
    """Accuracy per perturbation (rows) and severity (columns, clean first), with each cell's image count."""
    cols = ["clean"] + [str(s) for s in r.severities]
    values = np.array([[r.clean_accuracy] + [r.cell(p, s).accuracy for s in r.severities] for p in r.perturbations])
    annot = np.array(
        [
            [f"{r.clean_accuracy:.0%}\nn={r.n_subsample}"]
            + [f"{r.cell(p, s).accuracy:.0%}\nn={r.cell(p, s).n_images}" for s in r.severities]
            for p in r.perturbations
        ]
    )
    with matplotlib.rc_context(STYLE):
        fig = _new(1.9 + 0.8 * len(cols), 0.9 + 0.42 * len(r.perturbations))
        ax = fig.add_subplot()
        _share_heatmap(
            ax,
            values,
            annot,
            xticklabels=cols,
            yticklabels=[_perturbation_label(p) for p in r.perturbations],
            cbar_kws={"label": "accuracy", "shrink": 0.7},
            annot_kws={"fontsize": 6.2},
        )
        ax.set_xlabel("severity")
        ax.set_title("Accuracy by perturbation and severity (n = images the cell used)")
        ax.tick_params(axis="y", rotation=0)
        return _png(fig)


def perturbation_curves(r: Any) -> bytes:
    """Accuracy against severity per perturbation, with 95 % intervals (small multiples)."""
    n = len(r.perturbations)
    cols = min(n, 5)
    rows = (n + cols - 1) // cols
    xs = [0] + list(r.severities)
    with matplotlib.rc_context(STYLE):
        fig = _new(1.45 * cols + 0.4, 1.35 * rows + 0.3)
        axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
        for ax in axes.ravel()[n:]:
            ax.set_axis_off()
        for ax, p in zip(axes.ravel(), r.perturbations):
            cells = [r.cell(p, s) for s in r.severities]
            acc = [r.clean_accuracy] + [c.accuracy for c in cells]
            lo = [r.clean_accuracy] + [c.accuracy_ci[0] for c in cells]
            hi = [r.clean_accuracy] + [c.accuracy_ci[1] for c in cells]
            ax.fill_between(xs, lo, hi, color=PALETTE[0], alpha=0.2, linewidth=0)
            ax.plot(xs, acc, "o-", color=PALETTE[0], markersize=2.5, linewidth=1.2)
            ax.axhline(r.clean_accuracy - r.threshold, color=PALETTE[3], linestyle=":", linewidth=0.8)
            ax.set_title(_perturbation_label(p), fontsize=7.5)
            ax.set_ylim(0, 1.02)
            ax.set_xticks(xs)
            ax.tick_params(labelsize=6.5)
            ax.grid(alpha=0.3, linewidth=0.5)
        fig.supxlabel("severity (0 = clean)", fontsize=7.5)
        fig.supylabel("accuracy", fontsize=7.5)
        return _png(fig)


def perturbation_class_breakdown(r: Any) -> bytes:
    """Per-class accuracy against severity under the worst perturbation (largest corruption error)."""
    p = r.worst_perturbation
    xs = [0] + list(r.severities)
    cells = [r.cell(p, s) for s in r.severities]
    with matplotlib.rc_context(STYLE):
        fig = _new(4.6, 2.6)
        ax = fig.add_subplot()
        for k, name in enumerate(r.class_names):
            clean = _clean_class_accuracy(r, k)
            ys = [clean] + [c.per_class_accuracy[k] for c in cells]
            ys = [np.nan if v is None else v for v in ys]
            ax.plot(xs, ys, "o-", color=PALETTE[k % len(PALETTE)], markersize=3, linewidth=1.2, label=name)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xticks(xs)
        ax.set_xlabel("severity (0 = clean)")
        ax.set_ylabel("accuracy within class")
        ax.set_title(f"Per-class accuracy under {_perturbation_label(p).lower()} (the worst perturbation)")
        ax.grid(alpha=0.3, linewidth=0.5)
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        return _png(fig)


def _clean_class_accuracy(r: Any, k: int) -> float:
    v = r.clean_per_class[k]
    return float("nan") if v is None else float(v)


def perturbation_strip(tiles: np.ndarray, labels, severities) -> bytes:
    """One image at every perturbation (columns) and severity (rows, clean first): uint8 tiles
    ``(1 + len(severities), n_perturbations, h, w, 3)``."""
    n_rows, n_cols = tiles.shape[:2]
    tile_in = 0.56
    with matplotlib.rc_context(STYLE):
        fig = _new(0.5 + tile_in * n_cols, 0.35 + tile_in * n_rows)
        axes = fig.subplots(n_rows, n_cols, squeeze=False, gridspec_kw={"wspace": 0.02, "hspace": 0.02})
        engine = fig.get_layout_engine()
        if engine is not None:
            engine.set(w_pad=0.005, h_pad=0.005, wspace=0.0, hspace=0.0)  # type: ignore[call-arg]
        row_names = ["clean"] + [f"sev. {s}" for s in severities]
        for i in range(n_rows):
            for j in range(n_cols):
                ax = axes[i, j]
                ax.imshow(tiles[i, j], interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_linewidth(0.3)
                if i == 0:
                    ax.set_title(_short(labels[j], 10), fontsize=5.5)
                if j == 0:
                    ax.set_ylabel(row_names[i], fontsize=6)
        return _png(fig)


def gradcam_panels(panels: Any, title: str, columns: int = 0) -> bytes:
    """Grad-CAM panels: one column per image; rows are the image, the map over it with the cell outline,
    and the labels (true, predicted, confidence, focus score). ``panels`` have ``image`` (uint8), ``cam``
    ([0, 1]), ``mask`` (bool or None), ``item`` (a GalleryItem) and ``focus``. ``columns`` (at least the
    number of panels) fixes the figure's width, so every group's tiles print at one scale; spare columns are
    left blank."""
    import cv2

    n = max(len(panels), columns)
    tile_in = 1.25
    with matplotlib.rc_context(STYLE):
        fig = _new(0.3 + tile_in * max(n, 2), 0.45 + 2 * tile_in + 0.55)
        axes = fig.subplots(2, n, squeeze=False, gridspec_kw={"wspace": 0.03, "hspace": 0.03})
        for ax in axes[:, len(panels) :].ravel():
            ax.set_axis_off()
        fig.suptitle(title, fontsize=9.5, x=0.0, ha="left")
        for j, p in enumerate(panels):
            img = p.image
            axes[0, j].imshow(img, interpolation="bilinear")
            axes[1, j].imshow(img, interpolation="bilinear")
            axes[1, j].imshow(p.cam, cmap="jet", alpha=0.45, vmin=0, vmax=1, interpolation="bilinear")
            if p.mask is not None:
                contours, _ = cv2.findContours(p.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
                for c in contours:
                    pts = np.vstack([c[:, 0, :], c[:1, 0, :]])
                    for ax in axes[:, j]:
                        ax.plot(pts[:, 0], pts[:, 1], color="white", lw=1.0)
                        ax.plot(pts[:, 0], pts[:, 1], color="black", lw=0.4, ls="--")
            it = p.item
            focus = "cell not found" if p.focus is None else f"focus {p.focus:.0%}"
            axes[1, j].set_xlabel(
                f"true {_short(it.true_label, 16)}\npred {_short(it.predicted_label, 16)} "
                f"({it.confidence:.0%})\n{focus}",
                fontsize=7,
            )
            for ax in axes[:, j]:
                ax.set_xticks([])
                ax.set_yticks([])
        axes[0, 0].set_ylabel("image", fontsize=7)
        axes[1, 0].set_ylabel("Grad-CAM", fontsize=7)
        return _png(fig)
