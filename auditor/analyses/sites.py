"""External sites: how far the model travels from the laboratory it was trained in.

The same model is audited on the internal data set and on each external site's labelled images.
Per site: accuracy, macro-F1 (bootstrap intervals), balanced accuracy, per-class recall, ECE, mean
confidence, the gap to the internal set, and a **shift score** that needs no labels:

* **shift score** (a classifier two-sample test): a logistic regression is trained, with 5-fold
  cross-validation, to tell the site's penultimate-layer features from the internal set's (up to
  1,000 images each, standardised). Its out-of-fold ROC AUC is 0.5 when the two are indistinguishable
  and 1 when every image can be told apart; the shift score is ``max(0, 2 AUC - 1)`` in [0, 1].
  Without penultimate features the probability vectors are used.
* **confidence drop**: internal mean confidence minus the site's. A site whose accuracy falls while
  confidence holds is the dangerous case: the model is confidently wrong there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ._common import fields_of, jsonable, nan_if_none
from .calibration import expected_calibration_error
from .metrics import ClassificationMetrics, compute_classification_metrics, rank_auc

MAX_SHIFT_SAMPLES = 1000


@dataclass(frozen=True)
class SiteData:
    """What one data set produced: labels, probabilities, features (may be (n, 0))."""

    name: str
    y_true: np.ndarray
    probs: np.ndarray
    features: np.ndarray


@dataclass(frozen=True)
class SiteRow:
    name: str
    internal: bool
    n_images: int
    classes: tuple[str, ...]  # model classes with at least one image at this site
    metrics: ClassificationMetrics
    ece: float
    mean_confidence: float
    accuracy_gap: float  # internal - site, in accuracy (positive: worse than internal)
    f1_gap: float
    balanced_accuracy_gap: float
    confidence_drop: float
    shift_auc: float
    shift_score: float
    leaked_images: int  # images byte-identical to internal ones


@dataclass(frozen=True)
class SitesResult:
    class_names: tuple[str, ...]
    rows: tuple[SiteRow, ...]  # internal first
    furthest: str | None
    reading: tuple[str, ...]

    def to_dict(self) -> dict:
        out = []
        for r in self.rows:
            d = fields_of(r)
            del d["metrics"]
            m = r.metrics
            d.update(
                accuracy=m.accuracy,
                accuracy_ci=m.accuracy_ci,
                f1_macro=m.f1_macro,
                f1_macro_ci=m.f1_macro_ci,
                balanced_accuracy=m.balanced_accuracy,
                recall={row.name: row.recall for row in m.per_class},
                support={row.name: row.support for row in m.per_class},
            )
            d["classification"] = m.to_dict()
            out.append(d)
        return jsonable(
            {"class_names": self.class_names, "sites": out, "furthest": self.furthest, "reading": self.reading}
        )

    @classmethod
    def from_dict(cls, d: dict) -> SitesResult:
        rows = tuple(
            SiteRow(
                name=s["name"],
                internal=bool(s["internal"]),
                n_images=int(s["n_images"]),
                classes=tuple(s["classes"]),
                metrics=ClassificationMetrics.from_dict(s["classification"]),
                ece=nan_if_none(s["ece"]),
                mean_confidence=nan_if_none(s["mean_confidence"]),
                accuracy_gap=nan_if_none(s["accuracy_gap"]),
                f1_gap=nan_if_none(s["f1_gap"]),
                balanced_accuracy_gap=nan_if_none(s["balanced_accuracy_gap"]),
                confidence_drop=nan_if_none(s["confidence_drop"]),
                shift_auc=nan_if_none(s["shift_auc"]),
                shift_score=nan_if_none(s["shift_score"]),
                leaked_images=int(s["leaked_images"]),
            )
            for s in d["sites"]
        )
        return cls(tuple(d["class_names"]), rows, d.get("furthest"), tuple(d["reading"]))


def shift_auc(reference: np.ndarray, other: np.ndarray, *, seed: int = 0, folds: int = 5) -> float:
    """Out-of-fold ROC AUC of a logistic regression telling ``other`` rows from ``reference`` rows."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    a = _subsample(np.asarray(reference, dtype=np.float64), rng)
    b = _subsample(np.asarray(other, dtype=np.float64), rng)
    if len(a) < folds or len(b) < folds:
        return float("nan")
    x = np.vstack([a, b])
    y = np.r_[np.zeros(len(a)), np.ones(len(b))]
    mu, sd = x.mean(axis=0), x.std(axis=0)
    x = (x - mu) / np.where(sd > 1e-12, sd, 1.0)
    scores = np.zeros(len(y))
    fold = np.empty(len(y), dtype=int)
    for label in (0, 1):  # stratified folds
        idx = np.flatnonzero(y == label)
        fold[idx] = rng.permutation(len(idx)) % folds
    for f in range(folds):
        test = fold == f
        clf = LogisticRegression(C=1.0, max_iter=2000)
        clf.fit(x[~test], y[~test])
        scores[test] = clf.decision_function(x[test])
    return rank_auc(y.astype(bool), scores)


def _subsample(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if len(x) <= MAX_SHIFT_SAMPLES:
        return x
    return x[np.sort(rng.choice(len(x), MAX_SHIFT_SAMPLES, replace=False))]


def compute_sites(
    internal: SiteData,
    sites: Sequence[SiteData],
    *,
    class_names: Sequence[str],
    leaks: dict[str, int] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> SitesResult:
    """Compare the model on ``internal`` and each external site (see the module doc)."""
    class_names = tuple(class_names)
    leaks = leaks or {}
    ref_feats = internal.features if internal.features.shape[1] > 0 else internal.probs
    base = (0.0, 0.0, 0.0, 0.0)  # the internal set's accuracy, F1, balanced accuracy, confidence (row 0)
    rows = []
    for i, site in enumerate([internal, *sites]):
        m = compute_classification_metrics(
            site.y_true, site.probs, class_names=class_names, n_bootstrap=n_bootstrap, seed=seed
        )
        conf = site.probs.max(axis=1)
        correct = site.probs.argmax(axis=1) == site.y_true
        ece = expected_calibration_error(conf, correct)
        if i == 0:
            base = (m.accuracy, m.f1_macro, m.balanced_accuracy, float(conf.mean()))
            auc = float("nan")
        else:
            feats = site.features if internal.features.shape[1] > 0 else site.probs
            auc = shift_auc(ref_feats, feats, seed=seed)
        rows.append(
            SiteRow(
                name=site.name,
                internal=i == 0,
                n_images=len(site.y_true),
                classes=tuple(class_names[c] for c in sorted(set(site.y_true.tolist()))),
                metrics=m,
                ece=ece,
                mean_confidence=float(conf.mean()),
                accuracy_gap=base[0] - m.accuracy,
                f1_gap=base[1] - m.f1_macro,
                balanced_accuracy_gap=base[2] - m.balanced_accuracy,
                confidence_drop=base[3] - float(conf.mean()),
                shift_auc=auc,
                shift_score=float(max(0.0, 2 * auc - 1)) if np.isfinite(auc) else 0.0,
                leaked_images=int(leaks.get(site.name, 0)),
            )
        )
    externals = rows[1:]
    furthest = max(externals, key=lambda r: (r.shift_score, r.accuracy_gap)).name if externals else None
    return SitesResult(class_names, tuple(rows), furthest, _reading(rows, furthest))


def _reading(rows: list[SiteRow], furthest: str | None) -> tuple[str, ...]:
    if len(rows) < 2:
        return ()
    internal = rows[0]
    lines = []
    worst = max(rows[1:], key=lambda r: r.accuracy_gap)
    lines.append(
        f"Internal accuracy {internal.metrics.accuracy:.1%}; the largest drop is at {worst.name}: "
        f"{worst.metrics.accuracy:.1%} ({worst.accuracy_gap * 100:.1f} points below internal)."
        if worst.accuracy_gap > 0
        else f"Internal accuracy {internal.metrics.accuracy:.1%}; no external site scores lower."
    )
    far = next(r for r in rows if r.name == furthest)
    if round(far.shift_score, 2) == 0:  # no "furthest" site to name: every score reads 0.00
        lines.append(
            "No external site can be told apart from the internal images by the model's own features (every "
            "shift score is 0.00; 0 = indistinguishable, 1 = completely different)."
        )
    else:
        lines.append(
            f"The site furthest from the internal images by the model's own features is {far.name} "
            f"(shift score {far.shift_score:.2f}; 0 = indistinguishable, 1 = completely different)."
        )
    for r in rows[1:]:
        if r.accuracy_gap > 0.05:
            acc = f"accuracy falls {r.accuracy_gap * 100:.1f} points"
            if r.confidence_drop < 0.5 * r.accuracy_gap:
                drop = round(r.confidence_drop * 100, 1)
                if drop > 0:
                    conf = f"mean confidence falls only {drop:.1f} points"
                elif drop < 0:
                    conf = f"mean confidence rises {-drop:.1f} points"
                else:
                    conf = "mean confidence stays the same"
                lines.append(
                    f"At {r.name} the model stays confident while wrong: {acc} but {conf}. This is the "
                    f"dangerous case: its confidence cannot be used to refer doubtful cells there."
                )
            else:
                lines.append(
                    f"At {r.name} confidence falls with accuracy: {acc} and mean confidence falls "
                    f"{r.confidence_drop * 100:.1f} points, so the model signals its own uncertainty."
                )
        if r.leaked_images:
            lines.append(
                f"Site {r.name} shares {r.leaked_images} byte-identical image(s) with the internal set "
                "(leakage): its numbers are flattered."
            )
    return tuple(lines)
