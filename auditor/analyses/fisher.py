"""Fisher scores: where the model is fragile.

With ``p`` the predicted probabilities and ``y`` the one-hot label, the gradient of the cross-entropy
loss with respect to the logits is ``g = p - y``; the per-image **Fisher score** is ``F = ||p - y||^2``
(between 0 and 2). Low F: a confident, stable, correct prediction. The high-F tail holds the
ambiguous, low-contrast and borderline cells, and every mistake made with some confidence.

Two companions:

* **expected score** ``1 - ||p||^2``: the expectation of F when the label is drawn from the model's
  own prediction; it needs no label, so it can be computed on unlabelled data.
* **last-layer gradient norm** ``||p - y||^2 * (||h||^2 + 1)``, with ``h`` the penultimate feature
  vector: the squared norm of the loss gradient with respect to the final dense layer's weights and
  bias (the gradient is the outer product ``(p - y) [h, 1]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from ._common import check_labels_probs, fields_of, jsonable, nan_if_none
from .metrics import rank_auc

QUANTILES = (0.50, 0.90, 0.95, 0.99)
DEFAULT_TAIL_THRESHOLD = 0.5  # F > 0.5: wrong, or right with under ~60% on the true class


@dataclass(frozen=True)
class FisherScores:
    """Per-image scores (n,) in sample order; ``grad_norm`` is None without penultimate features."""

    fisher: np.ndarray
    expected: np.ndarray
    grad_norm: np.ndarray | None


@dataclass(frozen=True)
class ScoreSummary:
    name: str
    quantiles: tuple[tuple[float, float], ...]  # (q, value)
    mean: float
    max: float
    error_auroc: float  # how well the score separates mistakes (high) from correct predictions


@dataclass(frozen=True)
class FisherClassRow:
    name: str
    support: int
    median: float
    p90: float
    tail_count: int
    tail_share_of_class: float  # images of this class in the tail / support
    share_of_tail: float  # images of this class in the tail / tail size


@dataclass(frozen=True)
class FisherResult:
    class_names: tuple[str, ...]
    n_samples: int
    threshold: float
    tail_count: int
    tail_mass: float  # share of images with F > threshold
    tail_error_rate: float  # share of tail images that are mistakes
    summaries: tuple[ScoreSummary, ...]
    per_class: tuple[FisherClassRow, ...]
    top_indices: tuple[int, ...]  # highest-F images, for the gallery
    histogram_edges: tuple[float, ...]  # log-spaced, for the histogram figure
    histogram_correct: tuple[int, ...]
    histogram_wrong: tuple[int, ...]
    box_stats: tuple[tuple[str, float, float, float, float, float], ...]  # name, p5, q1, median, q3, p95
    reading: tuple[str, ...]

    def to_dict(self) -> dict:
        d = fields_of(self)
        d["summaries"] = [
            {
                "name": s.name,
                "quantiles": {f"p{int(q * 100)}": v for q, v in s.quantiles},
                "mean": s.mean,
                "max": s.max,
                "error_auroc": s.error_auroc,
            }
            for s in self.summaries
        ]
        d["box_stats"] = [dict(zip(("name", "p5", "q1", "median", "q3", "p95"), b)) for b in self.box_stats]
        return jsonable(d)

    @classmethod
    def from_dict(cls, d: dict) -> FisherResult:
        return cls(
            class_names=tuple(d["class_names"]),
            n_samples=int(d["n_samples"]),
            threshold=float(d["threshold"]),
            tail_count=int(d["tail_count"]),
            tail_mass=float(d["tail_mass"]),
            tail_error_rate=nan_if_none(d["tail_error_rate"]),
            summaries=tuple(
                ScoreSummary(
                    s["name"],
                    tuple((int(k[1:]) / 100, float(v)) for k, v in s["quantiles"].items()),
                    float(s["mean"]),
                    float(s["max"]),
                    nan_if_none(s["error_auroc"]),
                )
                for s in d["summaries"]
            ),
            per_class=tuple(
                FisherClassRow(
                    r["name"],
                    int(r["support"]),
                    nan_if_none(r["median"]),
                    nan_if_none(r["p90"]),
                    int(r["tail_count"]),
                    nan_if_none(r["tail_share_of_class"]),
                    nan_if_none(r["share_of_tail"]),
                )
                for r in d["per_class"]
            ),
            top_indices=tuple(int(i) for i in d["top_indices"]),
            histogram_edges=tuple(float(x) for x in d["histogram_edges"]),
            histogram_correct=tuple(int(x) for x in d["histogram_correct"]),
            histogram_wrong=tuple(int(x) for x in d["histogram_wrong"]),
            box_stats=tuple(
                (b["name"], *(nan_if_none(b[k]) for k in ("p5", "q1", "median", "q3", "p95"))) for b in d["box_stats"]
            ),
            reading=tuple(d["reading"]),
        )


def fisher_scores(
    y_true: ArrayLike, probs: np.ndarray, features: np.ndarray | None = None, *, single_output: bool = False
) -> FisherScores:
    """Per-image F = ||p - y||^2, expected 1 - ||p||^2 and last-layer gradient norm (see module doc).

    ``single_output``: the model's last layer has one sigmoid/logit unit (a binary model read as two
    classes). Its logit gradient is s - y, whose square is F / 2, so the gradient norm is halved.
    """
    y_true, probs = check_labels_probs(y_true, probs)
    n = len(y_true)
    sq = np.einsum("ij,ij->i", probs, probs)
    p_true = probs[np.arange(n), y_true]
    fisher = np.maximum(sq - 2 * p_true + 1.0, 0.0)  # ||p||^2 - 2 p_y + 1, without building one-hots
    expected = np.maximum(1.0 - sq, 0.0)
    grad = None
    if features is not None and np.ndim(features) == 2 and np.shape(features)[1] > 0:
        feats = np.asarray(features, dtype=np.float64)
        if feats.shape[0] != n:
            raise ValueError(f"features have {feats.shape[0]} rows for {n} samples")
        grad = fisher * (np.einsum("ij,ij->i", feats, feats) + 1.0)
        if single_output:
            grad = grad / 2.0
    return FisherScores(fisher, expected, grad)


def compute_fisher(
    y_true: ArrayLike,
    probs: np.ndarray,
    *,
    class_names: Sequence[str],
    single_output: bool = False,
    features: np.ndarray | None = None,
    threshold: float = DEFAULT_TAIL_THRESHOLD,
    n_top: int = 12,
    n_bins: int = 40,
) -> FisherResult:
    """Fisher-score distribution, tails, per-class shares and error separation.

    Parameters
    ----------
    y_true : (n,) int;  probs : (n, k) rows summing to 1;  features : (n, d) penultimate features or None.
    threshold : the tail is F > threshold (F lies in [0, 2]).
    """
    class_names = tuple(class_names)
    y_true, probs = check_labels_probs(y_true, probs, len(class_names))
    if not 0 <= threshold <= 2:
        raise ValueError(f"the Fisher tail threshold must lie in [0, 2], got {threshold}")
    s = fisher_scores(y_true, probs, features, single_output=single_output)
    n, k = len(y_true), len(class_names)
    wrong = probs.argmax(axis=1) != y_true
    summaries = [_summary("fisher", s.fisher, wrong), _summary("expected", s.expected, wrong)]
    if s.grad_norm is not None:
        summaries.append(_summary("grad_norm", s.grad_norm, wrong))
    tail = s.fisher > threshold
    tail_count = int(tail.sum())
    rows = []
    box: list[tuple[str, float, float, float, float, float]] = []
    for c in range(k):
        mask = y_true == c
        m = int(mask.sum())
        fc = s.fisher[mask]
        in_tail = int((tail & mask).sum())
        rows.append(
            FisherClassRow(
                name=class_names[c],
                support=m,
                median=float(np.median(fc)) if m else float("nan"),
                p90=float(np.quantile(fc, 0.9)) if m else float("nan"),
                tail_count=in_tail,
                tail_share_of_class=in_tail / m if m else float("nan"),
                share_of_tail=in_tail / tail_count if tail_count else float("nan"),
            )
        )
        if m:
            p5, q1, med, q3, p95 = (float(v) for v in np.quantile(fc, [0.05, 0.25, 0.5, 0.75, 0.95]))
            box.append((class_names[c], p5, q1, med, q3, p95))
    positive = s.fisher[s.fisher > 0]
    low = max(float(positive.min()) if len(positive) else 1e-6, 1e-8)
    edges = np.geomspace(low, 2.0, n_bins + 1)
    clipped = np.clip(s.fisher, low, 2.0)
    hist_c = np.histogram(clipped[~wrong], bins=edges)[0]
    hist_w = np.histogram(clipped[wrong], bins=edges)[0]
    top = np.argsort(-s.fisher, kind="stable")[:n_top]
    result = FisherResult(
        class_names=class_names,
        n_samples=n,
        threshold=float(threshold),
        tail_count=tail_count,
        tail_mass=tail_count / n if n else float("nan"),
        tail_error_rate=float(wrong[tail].mean()) if tail_count else float("nan"),
        summaries=tuple(summaries),
        per_class=tuple(rows),
        top_indices=tuple(int(i) for i in top),
        histogram_edges=tuple(float(e) for e in edges),
        histogram_correct=tuple(int(v) for v in hist_c),
        histogram_wrong=tuple(int(v) for v in hist_w),
        box_stats=tuple(box),
        reading=(),
    )
    return _with_reading(result)


def _summary(name: str, score: np.ndarray, wrong: np.ndarray) -> ScoreSummary:
    qs = np.quantile(score, QUANTILES) if len(score) else [float("nan")] * len(QUANTILES)
    return ScoreSummary(
        name,
        tuple((q, float(v)) for q, v in zip(QUANTILES, qs)),
        float(score.mean()) if len(score) else float("nan"),
        float(score.max()) if len(score) else float("nan"),
        rank_auc(wrong, score),
    )


def _with_reading(r: FisherResult) -> FisherResult:
    from dataclasses import replace

    f = r.summaries[0]
    q = dict(f.quantiles)
    lines = [
        f"Half the images have F below {q[0.5]:.3g} and 1 in 10 above {q[0.9]:.3g}; "
        f"{r.tail_mass:.1%} ({r.tail_count}) lie in the tail above F = {r.threshold:g}"
        + (f", of which {r.tail_error_rate:.0%} are mistakes." if r.tail_count else ".")
    ]
    if np.isfinite(f.error_auroc):
        quality = (
            "separates mistakes from correct predictions almost perfectly"
            if f.error_auroc >= 0.95
            else "separates mistakes well"
            if f.error_auroc >= 0.85
            else "separates mistakes only moderately"
            if f.error_auroc >= 0.7
            else "barely separates mistakes"
        )
        lines.append(f"The score {quality} (AUROC {f.error_auroc:.3f}).")
        exp = next(s for s in r.summaries if s.name == "expected")
        lines.append(
            f"The label-free expected score reaches AUROC {exp.error_auroc:.3f}: "
            + (
                "usable to flag doubtful cells on unlabelled data."
                if exp.error_auroc >= 0.8
                else "a weak flag on unlabelled data."
            )
        )
    shares = [row for row in r.per_class if row.support > 0 and np.isfinite(row.tail_share_of_class)]
    if shares and r.tail_count:
        worst = max(shares, key=lambda row: row.tail_share_of_class)
        lines.append(
            f"The most fragile class is {worst.name}: {worst.tail_share_of_class:.0%} of its "
            f"{worst.support} images lie in the tail."
        )
    return replace(r, reading=tuple(lines))
