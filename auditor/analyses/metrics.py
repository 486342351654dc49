"""Accuracy and confusion: classification metrics with stratified bootstrap confidence intervals.

Everything is computed from the confusion matrix with numpy, so that the tests can compare it with
scikit-learn as an independent reference.

Conventions (the same as scikit-learn with ``labels=`` the classes present in ``y_true``):

* per-class recall, precision and F1 are reported for every class; macro and weighted averages run
  over the *evaluated* classes, those with at least one true sample in the audit data. A model class
  absent from the data has no recall (``None`` in JSON) and is not averaged.
* precision of a class that is never predicted is 0 (scikit-learn's ``zero_division=0``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from numpy.typing import ArrayLike

from ._common import check_labels_probs, jsonable, nan_if_none

CONFIDENCE_LEVEL = 0.95
MAX_ROC_POINTS = 400


@dataclass(frozen=True)
class ClassRow:
    """Per-class numbers. ``recall_ci`` is the stratified bootstrap interval, ``recall_wilson`` the
    Wilson score interval (informative when the bootstrap degenerates, e.g. 3 of 3 right)."""

    name: str
    support: int
    predicted: int
    precision: float
    recall: float
    f1: float
    auc: float
    recall_ci: tuple[float, float]
    recall_wilson: tuple[float, float]


@dataclass(frozen=True)
class RocCurve:
    name: str
    fpr: tuple[float, ...]
    tpr: tuple[float, ...]
    auc: float


@dataclass(frozen=True)
class ConfusedPair:
    true: str
    predicted: str
    count: int
    rate: float  # count / support of the true class


@dataclass(frozen=True)
class ClassificationMetrics:
    """The accuracy-and-confusion section. Arrays are tuples so the object is immutable."""

    class_names: tuple[str, ...]
    evaluated_classes: tuple[str, ...]
    n_samples: int
    accuracy: float
    balanced_accuracy: float
    precision_macro: float
    recall_macro: float
    f1_macro: float
    precision_weighted: float
    recall_weighted: float
    f1_weighted: float
    cohen_kappa: float
    matthews_corrcoef: float
    top2_accuracy: float
    roc_auc_macro: float
    accuracy_ci: tuple[float, float]
    f1_macro_ci: tuple[float, float]
    balanced_accuracy_ci: tuple[float, float]
    per_class: tuple[ClassRow, ...]
    confusion: tuple[tuple[int, ...], ...]
    roc: tuple[RocCurve, ...]
    confused_pairs: tuple[ConfusedPair, ...]
    most_confident_mistakes: tuple[int, ...]
    n_bootstrap: int
    seed: int
    confidence_level: float = CONFIDENCE_LEVEL

    def to_dict(self) -> dict:
        return jsonable(self)

    @classmethod
    def from_dict(cls, d: dict) -> ClassificationMetrics:
        fl = {
            k: nan_if_none(d[k])
            for k in (
                "accuracy",
                "balanced_accuracy",
                "precision_macro",
                "recall_macro",
                "f1_macro",
                "precision_weighted",
                "recall_weighted",
                "f1_weighted",
                "cohen_kappa",
                "matthews_corrcoef",
                "top2_accuracy",
                "roc_auc_macro",
            )
        }
        return cls(
            class_names=tuple(d["class_names"]),
            evaluated_classes=tuple(d["evaluated_classes"]),
            n_samples=int(d["n_samples"]),
            **fl,
            accuracy_ci=_pair(d["accuracy_ci"]),
            f1_macro_ci=_pair(d["f1_macro_ci"]),
            balanced_accuracy_ci=_pair(d["balanced_accuracy_ci"]),
            per_class=tuple(
                ClassRow(
                    name=r["name"],
                    support=int(r["support"]),
                    predicted=int(r["predicted"]),
                    precision=nan_if_none(r["precision"]),
                    recall=nan_if_none(r["recall"]),
                    f1=nan_if_none(r["f1"]),
                    auc=nan_if_none(r["auc"]),
                    recall_ci=_pair(r["recall_ci"]),
                    recall_wilson=_pair(r["recall_wilson"]),
                )
                for r in d["per_class"]
            ),
            confusion=tuple(tuple(int(x) for x in row) for row in d["confusion"]),
            roc=tuple(RocCurve(r["name"], tuple(r["fpr"]), tuple(r["tpr"]), nan_if_none(r["auc"])) for r in d["roc"]),
            confused_pairs=tuple(
                ConfusedPair(p["true"], p["predicted"], int(p["count"]), float(p["rate"])) for p in d["confused_pairs"]
            ),
            most_confident_mistakes=tuple(int(i) for i in d["most_confident_mistakes"]),
            n_bootstrap=int(d["n_bootstrap"]),
            seed=int(d["seed"]),
            confidence_level=float(d["confidence_level"]),
        )


def _pair(v) -> tuple[float, float]:
    return (nan_if_none(v[0]), nan_if_none(v[1]))


# ----------------------------------------------------------------------------------- public


def compute_classification_metrics(
    y_true: ArrayLike,
    probs: np.ndarray,
    *,
    class_names: Sequence[str],
    n_bootstrap: int = 1000,
    seed: int = 0,
    n_mistakes: int = 12,
    n_pairs: int = 10,
) -> ClassificationMetrics:
    """Accuracy, confusion and ROC metrics of a classifier on labelled samples.

    Parameters
    ----------
    y_true : (n,) int
        True class indices into ``class_names``.
    probs : (n, k) float
        Predicted probabilities, rows summing to 1. The prediction is the arg-max.
    class_names : k names
    n_bootstrap : int
        Stratified bootstrap resamples for the 95% intervals (0 disables them: NaN intervals).
    seed : int
        Seed of the bootstrap.
    """
    class_names = tuple(class_names)
    y_true, probs = check_labels_probs(y_true, probs, len(class_names))
    return _compute(y_true, probs, class_names, n_bootstrap, seed, n_mistakes, n_pairs)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    """(k, k) int64 counts, rows = true class, columns = predicted class."""
    return np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)


def scores_from_confusion(cm: np.ndarray, evaluated: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics from one or many confusion matrices ``cm`` (..., k, k); ``evaluated`` is a bool mask.

    Returns arrays shaped like ``cm.shape[:-2]`` (or (..., k) for per-class values).
    """
    cm = cm.astype(np.float64)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    support = cm.sum(axis=-1)
    predicted = cm.sum(axis=-2)
    n = support.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, tp / support, np.nan)
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        denom = precision + recall
        f1 = np.where(denom > 0, 2 * precision * recall / denom, 0.0)
        f1 = np.where(support > 0, f1, np.nan)
        m = evaluated.sum()
        w = np.where(evaluated, support, 0.0)
        out = {
            "accuracy": tp.sum(axis=-1) / n,
            "recall": recall,
            "precision": precision,
            "f1": f1,
            "recall_macro": np.where(evaluated, recall, 0.0).sum(axis=-1) / m,
            "precision_macro": np.where(evaluated, precision, 0.0).sum(axis=-1) / m,
            "f1_macro": np.where(evaluated, f1, 0.0).sum(axis=-1) / m,
            "recall_weighted": (w * np.nan_to_num(recall)).sum(axis=-1) / w.sum(axis=-1),
            "precision_weighted": (w * precision).sum(axis=-1) / w.sum(axis=-1),
            "f1_weighted": (w * np.nan_to_num(f1)).sum(axis=-1) / w.sum(axis=-1),
        }
    out["balanced_accuracy"] = out["recall_macro"]
    return out


def wilson_interval(successes: int, n: int, level: float = CONFIDENCE_LEVEL) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (NaN, NaN) for n = 0."""
    if n == 0:
        return (float("nan"), float("nan"))
    z = _z(level)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return (float(low), float(high))


def _z(level: float) -> float:
    """Two-sided standard normal quantile for a confidence ``level`` in (0, 1)."""
    return NormalDist().inv_cdf(0.5 + level / 2)


def roc_curve(y_bin: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC points (fpr, tpr) at every distinct threshold, starting at (0, 0)."""
    order = np.argsort(-score, kind="mergesort")
    s = score[order]
    y = y_bin[order].astype(np.float64)
    distinct = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tps = np.cumsum(y)[distinct]
    fps = (distinct + 1) - tps
    tpr = np.r_[0.0, tps / max(tps[-1], 1)]
    fpr = np.r_[0.0, fps / max(fps[-1], 1)]
    return fpr, tpr


def rank_auc(y_bin: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve by the Mann-Whitney statistic (ties count one half)."""
    n_pos = int(y_bin.sum())
    n_neg = len(y_bin) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(score)
    return float((ranks[y_bin.astype(bool)].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.r_[0, np.flatnonzero(np.diff(xs)) + 1]
    ends = np.r_[starts[1:], len(xs)]
    avg = (starts + ends + 1) / 2.0  # 1-based average rank of each tie group
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def _thin_curve(fpr: np.ndarray, tpr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop collinear points; if still long, keep the upper envelope on a fixed FPR grid."""
    if len(fpr) > 2:
        keep = np.r_[True, np.logical_or(np.diff(fpr, 2) != 0, np.diff(tpr, 2) != 0), True]
        fpr, tpr = fpr[keep], tpr[keep]
    if len(fpr) > MAX_ROC_POINTS:
        grid = np.linspace(0, 1, MAX_ROC_POINTS)
        idx = np.searchsorted(fpr, grid, side="right") - 1
        fpr, tpr = grid, tpr[idx]
    return fpr, tpr


# ----------------------------------------------------------------------------------- private


def _compute(y_true, probs, class_names, n_bootstrap, seed, n_mistakes, n_pairs) -> ClassificationMetrics:
    k = len(class_names)
    n = len(y_true)
    y_pred = probs.argmax(axis=1)
    cm = confusion_matrix(y_true, y_pred, k)
    support = cm.sum(axis=1)
    evaluated = support > 0
    s = scores_from_confusion(cm, evaluated)

    # agreement statistics use the whole matrix, as scikit-learn does
    cmf = cm.astype(np.float64)
    rows, cols = cmf.sum(axis=1), cmf.sum(axis=0)
    po = np.trace(cmf) / n
    pe = float(rows @ cols) / (n * n)
    kappa = (po - pe) / (1 - pe) if pe < 1 else float("nan")
    cov = np.trace(cmf) * n - rows @ cols
    denom = np.sqrt((n * n - cols @ cols) * (n * n - rows @ rows))
    mcc = float(cov / denom) if denom > 0 else 0.0

    # ties go to the lower class index, as for the arg-max prediction, so top-2 >= accuracy always
    # (scikit-learn's top_k_accuracy_score breaks ties the other way; they agree without ties)
    top2 = np.argsort(-probs, axis=1, kind="stable")[:, : min(2, k)]
    top2_acc = float(np.mean(np.any(top2 == y_true[:, None], axis=1)))

    rocs, aucs = [], np.full(k, np.nan)
    for c in range(k):
        yb = y_true == c
        if yb.any() and not yb.all():
            aucs[c] = rank_auc(yb, probs[:, c])
            fpr, tpr = _thin_curve(*roc_curve(yb, probs[:, c]))
            rocs.append(RocCurve(class_names[c], tuple(fpr.tolist()), tuple(tpr.tolist()), float(aucs[c])))
    auc_macro = float(np.nanmean(aucs)) if np.isfinite(aucs).any() else float("nan")

    boot = _bootstrap(y_true, y_pred, k, evaluated, n_bootstrap, seed)

    per_class = tuple(
        ClassRow(
            name=class_names[c],
            support=int(support[c]),
            predicted=int(cm[:, c].sum()),
            precision=float(s["precision"][c]),
            recall=float(s["recall"][c]),
            f1=float(s["f1"][c]),
            auc=float(aucs[c]),
            recall_ci=boot["recall"][c],
            recall_wilson=wilson_interval(int(cm[c, c]), int(support[c])),
        )
        for c in range(k)
    )

    off = cm.copy()
    np.fill_diagonal(off, 0)
    pairs = []
    for flat in np.argsort(-off, axis=None, kind="stable")[:n_pairs]:
        t, p = divmod(int(flat), k)
        if off[t, p] == 0:
            break
        pairs.append(ConfusedPair(class_names[t], class_names[p], int(off[t, p]), float(off[t, p] / support[t])))

    wrong = np.flatnonzero(y_pred != y_true)
    conf = probs[wrong, y_pred[wrong]]
    mistakes = wrong[np.argsort(-conf, kind="stable")][:n_mistakes]

    return ClassificationMetrics(
        class_names=class_names,
        evaluated_classes=tuple(class_names[c] for c in range(k) if evaluated[c]),
        n_samples=n,
        accuracy=float(s["accuracy"]),
        balanced_accuracy=float(s["balanced_accuracy"]),
        precision_macro=float(s["precision_macro"]),
        recall_macro=float(s["recall_macro"]),
        f1_macro=float(s["f1_macro"]),
        precision_weighted=float(s["precision_weighted"]),
        recall_weighted=float(s["recall_weighted"]),
        f1_weighted=float(s["f1_weighted"]),
        cohen_kappa=float(kappa),
        matthews_corrcoef=mcc,
        top2_accuracy=top2_acc,
        roc_auc_macro=auc_macro,
        accuracy_ci=boot["accuracy"],
        f1_macro_ci=boot["f1_macro"],
        balanced_accuracy_ci=boot["balanced_accuracy"],
        per_class=per_class,
        confusion=tuple(tuple(int(x) for x in row) for row in cm),
        roc=tuple(rocs),
        confused_pairs=tuple(pairs),
        most_confident_mistakes=tuple(int(i) for i in mistakes),
        n_bootstrap=int(n_bootstrap),
        seed=int(seed),
    )


def _bootstrap(y_true, y_pred, k, evaluated, n_bootstrap, seed, chunk=200) -> dict:
    """Stratified bootstrap: resample within each true class, so class supports stay fixed."""
    nan2 = (float("nan"), float("nan"))
    if n_bootstrap <= 0:
        return {"accuracy": nan2, "f1_macro": nan2, "balanced_accuracy": nan2, "recall": [nan2] * k}
    rng = np.random.default_rng(seed)
    # sorted, so that the intervals do not depend on the order of the samples
    per_class_preds = [np.sort(y_pred[y_true == c]) for c in range(k)]
    acc, f1m, bal, rec = [], [], [], []
    for start in range(0, n_bootstrap, chunk):
        b = min(chunk, n_bootstrap - start)
        cms = np.zeros((b, k, k), dtype=np.int64)
        offsets = (np.arange(b) * k)[:, None]
        for c, preds in enumerate(per_class_preds):
            if len(preds) == 0:
                continue
            draws = preds[rng.integers(0, len(preds), size=(b, len(preds)))]
            cms[:, c, :] = np.bincount((offsets + draws).ravel(), minlength=b * k).reshape(b, k)
        s = scores_from_confusion(cms, evaluated)
        acc.append(s["accuracy"])
        f1m.append(s["f1_macro"])
        bal.append(s["balanced_accuracy"])
        rec.append(s["recall"])
    lo, hi = 100 * (1 - CONFIDENCE_LEVEL) / 2, 100 * (1 + CONFIDENCE_LEVEL) / 2

    def ci(a: np.ndarray) -> tuple[float, float]:
        a = np.asarray(a)
        if np.all(np.isnan(a)):
            return nan2
        q = np.nanpercentile(a, [lo, hi])
        return (float(q[0]), float(q[1]))

    rec_all = np.concatenate(rec, axis=0)
    return {
        "accuracy": ci(np.concatenate(acc)),
        "f1_macro": ci(np.concatenate(f1m)),
        "balanced_accuracy": ci(np.concatenate(bal)),
        "recall": [ci(rec_all[:, c]) if evaluated[c] else nan2 for c in range(k)],
    }
