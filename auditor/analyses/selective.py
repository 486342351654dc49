"""Selective prediction: below which confidence should a cell go to a haematologist?

Images are ranked by confidence (the top probability). Accepting the ``i`` most confident images gives
a **coverage** of i/n and a **risk** equal to the error rate among them; the risk-coverage curve traces
this from the single most confident image (left) to all images (right, where risk = 1 - accuracy).
A good confidence ranking keeps the curve low until far to the right.

* **AURC**: the area under that curve (the mean risk over coverages 1/n ... n/n); lower is better.
* **oracle AURC**: the same for the perfect ranking (every correct image before every mistake),
  the lowest any ranking can reach with these predictions; **random AURC**: the expected area when
  the ranking carries no information, equal to the overall error rate.
* **operating points**: for each target accuracy, the largest coverage whose accepted images reach
  it, and the confidence threshold t that gives it: "refer every cell below t to a human; x% of cells
  are then decided automatically at y% accuracy". Thresholds sit between distinct confidence values,
  so images with equal confidence are always accepted or referred together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from ._common import check_labels_probs, jsonable, nan_if_none

DEFAULT_TARGETS = (0.95, 0.99)
MAX_CURVE_POINTS = 300


@dataclass(frozen=True)
class OperatingPoint:
    target_accuracy: float
    reachable: bool
    threshold: float  # accept images with confidence >= threshold (NaN when unreachable)
    coverage: float  # share of images decided automatically
    accepted: int
    accuracy: float  # accuracy on the accepted images


@dataclass(frozen=True)
class SelectiveResult:
    n_samples: int
    aurc: float
    oracle_aurc: float
    random_aurc: float
    excess_aurc: float  # aurc - oracle
    coverage: tuple[float, ...]  # curve, thinned for plotting
    risk: tuple[float, ...]
    oracle_risk: tuple[float, ...]
    operating_points: tuple[OperatingPoint, ...]
    reading: tuple[str, ...]

    def to_dict(self) -> dict:
        return jsonable(self)

    @classmethod
    def from_dict(cls, d: dict) -> SelectiveResult:
        return cls(
            n_samples=int(d["n_samples"]),
            aurc=nan_if_none(d["aurc"]),
            oracle_aurc=nan_if_none(d["oracle_aurc"]),
            random_aurc=nan_if_none(d["random_aurc"]),
            excess_aurc=nan_if_none(d["excess_aurc"]),
            coverage=tuple(d["coverage"]),
            risk=tuple(d["risk"]),
            oracle_risk=tuple(d["oracle_risk"]),
            operating_points=tuple(
                OperatingPoint(
                    float(o["target_accuracy"]),
                    bool(o["reachable"]),
                    nan_if_none(o["threshold"]),
                    float(o["coverage"]),
                    int(o["accepted"]),
                    nan_if_none(o["accuracy"]),
                )
                for o in d["operating_points"]
            ),
            reading=tuple(d["reading"]),
        )


def risk_coverage(confidence: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(coverage, risk) after accepting the 1, 2, ..., n most confident images.

    Images with equal confidence cannot be told apart by a threshold, so within a tie group errors
    are spread evenly (the expectation over tie orders): the curve does not depend on sample order.
    """
    n = len(confidence)
    order = np.argsort(-confidence, kind="stable")
    c_sorted = confidence[order]
    wrong_sorted = (~correct[order]).astype(np.float64)
    starts = np.r_[0, np.flatnonzero(np.diff(c_sorted)) + 1] if n else np.zeros(0, dtype=int)
    ends = np.r_[starts[1:], n] if n else np.zeros(0, dtype=int)
    rate = np.add.reduceat(wrong_sorted, starts) / (ends - starts) if n else np.zeros(0)
    i = np.arange(1, n + 1)
    return i / max(n, 1), np.cumsum(np.repeat(rate, ends - starts)) / i


def aurc(confidence: np.ndarray, correct: np.ndarray) -> float:
    """Area under the risk-coverage curve: the mean of the risks at coverages 1/n, ..., n/n."""
    if len(confidence) == 0:
        return float("nan")
    return float(np.mean(risk_coverage(confidence, correct)[1]))


def oracle_aurc(correct: np.ndarray) -> float:
    """AURC of the perfect ranking: all correct predictions first."""
    n = len(correct)
    if n == 0:
        return float("nan")
    n_ok = int(correct.sum())
    i = np.arange(1, n + 1)
    return float(np.mean(np.maximum(i - n_ok, 0) / i))


def operating_point(confidence: np.ndarray, correct: np.ndarray, target: float) -> OperatingPoint:
    """Largest coverage at a distinct-confidence threshold whose accepted accuracy is >= target."""
    n = len(confidence)
    order = np.argsort(-confidence, kind="stable")
    c_sorted = confidence[order]
    ok = np.cumsum(correct[order])
    ends = np.r_[np.flatnonzero(np.diff(c_sorted)) + 1, n]  # accept whole tie groups: first `end` images
    acc = ok[ends - 1] / ends
    good = np.flatnonzero(acc >= target - 1e-12)
    if len(good) == 0:
        return OperatingPoint(target, False, float("nan"), 0.0, 0, float("nan"))
    j = good[-1]
    m = int(ends[j])
    return OperatingPoint(target, True, float(c_sorted[m - 1]), m / n, m, float(acc[j]))


def compute_selective(
    y_true: ArrayLike, probs: np.ndarray, *, targets: Sequence[float] = DEFAULT_TARGETS
) -> SelectiveResult:
    """Risk-coverage analysis of the model's confidence (top probability) as a referral rule."""
    y_true, probs = check_labels_probs(y_true, probs)
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    n = len(y_true)
    cov, risk = risk_coverage(conf, correct)
    ora = np.sort(correct)[::-1]
    _, o_risk = risk_coverage(np.arange(n, 0, -1, dtype=float), ora)
    idx = np.unique(np.linspace(0, n - 1, min(n, MAX_CURVE_POINTS)).round().astype(int))
    area, o_area = float(np.mean(risk)) if n else float("nan"), oracle_aurc(correct)
    points = tuple(operating_point(conf, correct, t) for t in targets)
    result = SelectiveResult(
        n_samples=n,
        aurc=area,
        oracle_aurc=o_area,
        random_aurc=float(1 - correct.mean()) if n else float("nan"),
        excess_aurc=area - o_area,
        coverage=tuple(float(x) for x in cov[idx]),
        risk=tuple(float(x) for x in risk[idx]),
        oracle_risk=tuple(float(x) for x in o_risk[idx]),
        operating_points=points,
        reading=(),
    )
    return _with_reading(result, correct.mean() if n else float("nan"))


def _with_reading(r: SelectiveResult, accuracy: float) -> SelectiveResult:
    from dataclasses import replace

    lines = []
    for p in r.operating_points:
        if p.reachable:
            lines.append(
                f"For {p.target_accuracy:.0%} accuracy: refer every cell below confidence "
                f"{p.threshold:.4g} to a human; then {p.coverage:.1%} of cells ({p.accepted} of "
                f"{r.n_samples}) are decided automatically at {p.accuracy:.1%} accuracy."
            )
        else:
            lines.append(
                f"{p.target_accuracy:.0%} accuracy is not reachable at any confidence threshold "
                f"on these images (even the most confident cells include mistakes)."
            )
    if np.isfinite(r.aurc) and r.random_aurc > 0:
        gain = (r.random_aurc - r.aurc) / (r.random_aurc - r.oracle_aurc) if r.random_aurc > r.oracle_aurc else 1.0
        lines.append(
            f"AURC {r.aurc:.4f} against {r.oracle_aurc:.4f} for a perfect ranking and {r.random_aurc:.4f} "
            f"for an uninformative one: confidence captures {gain:.0%} of the possible benefit of "
            f"referring doubtful cells."
        )
    elif r.random_aurc == 0:
        lines.append("No mistakes on these images: every coverage has zero risk.")
    return replace(r, reading=tuple(lines))
