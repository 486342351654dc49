"""Calibration: does "95% confident" mean right 95% of the time?

* **ECE** (expected calibration error): confidences (the top probability) in 15 equal-width bins;
  the support-weighted mean of |accuracy - mean confidence| over bins.
* **Adaptive ECE**: the same with 15 equal-mass bins (each holds about n/15 images), which does not
  let a few crowded bins near 100% hide everything else.
* **ECE noise floor**: what a perfectly calibrated model would show on this many images, from the
  sampling error of each bin's accuracy: sum over bins of (n_b/n) sqrt(2/pi) sqrt(c_b (1 - c_b) / n_b),
  the expected |binomial proportion - c_b| under a normal approximation. An ECE near this floor is
  indistinguishable from perfect calibration.
* **MCE**: the largest |accuracy - confidence| gap over non-empty equal-width bins.
* **Class-wise ECE**: for every class c, the 15-bin ECE of p_c against the indicator y == c, averaged
  over the classes present.
* **Brier score**: mean of ||p - y||^2 (equals the mean Fisher score); **NLL**: mean of -log p_y.
* **Temperature scaling (a diagnosis, not a change to the model)**: the single temperature T that
  minimises NLL of softmax(log p / T). It is fitted by 5-fold cross-validation on the audit data, and
  the ECE/NLL reported "after" are those of the out-of-fold predictions, so they are honest estimates.
  T > 1 means the model is over-confident.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from ._common import check_labels_probs, jsonable, nan_if_none

N_BINS = 15
EPS = 1e-12


@dataclass(frozen=True)
class ReliabilityBin:
    low: float
    high: float
    count: int
    confidence: float  # mean confidence in the bin (NaN when empty)
    accuracy: float


@dataclass(frozen=True)
class CalibrationResult:
    n_samples: int
    n_bins: int
    ece: float
    ece_noise_floor: float
    adaptive_ece: float
    mce: float
    classwise_ece: float
    brier: float
    nll: float
    mean_confidence: float
    accuracy: float
    bins: tuple[ReliabilityBin, ...]
    confidence_hist_edges: tuple[float, ...]
    confidence_hist_correct: tuple[int, ...]
    confidence_hist_wrong: tuple[int, ...]
    temperature: float
    temperature_folds: int
    ece_after_temperature: float
    nll_after_temperature: float
    reading: tuple[str, ...]

    @property
    def is_miscalibrated(self) -> bool:
        """ECE above 5% and above twice what sampling noise alone would give."""
        return bool(self.ece > max(0.05, 2 * self.ece_noise_floor))

    def to_dict(self) -> dict:
        return jsonable(self)

    @classmethod
    def from_dict(cls, d: dict) -> CalibrationResult:
        floats = (
            "ece",
            "ece_noise_floor",
            "adaptive_ece",
            "mce",
            "classwise_ece",
            "brier",
            "nll",
            "mean_confidence",
            "accuracy",
            "temperature",
            "ece_after_temperature",
            "nll_after_temperature",
        )
        return cls(
            n_samples=int(d["n_samples"]),
            n_bins=int(d["n_bins"]),
            **{k: nan_if_none(d[k]) for k in floats},
            bins=tuple(
                ReliabilityBin(
                    float(b["low"]),
                    float(b["high"]),
                    int(b["count"]),
                    nan_if_none(b["confidence"]),
                    nan_if_none(b["accuracy"]),
                )
                for b in d["bins"]
            ),
            confidence_hist_edges=tuple(float(x) for x in d["confidence_hist_edges"]),
            confidence_hist_correct=tuple(int(x) for x in d["confidence_hist_correct"]),
            confidence_hist_wrong=tuple(int(x) for x in d["confidence_hist_wrong"]),
            temperature_folds=int(d["temperature_folds"]),
            reading=tuple(d["reading"]),
        )


# ----------------------------------------------------------------------------------- building blocks


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> list[ReliabilityBin]:
    """Equal-width bins on [0, 1]; a confidence of exactly 1 falls in the last bin, 0 in the first."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=confidence, minlength=n_bins)
    acc_sum = np.bincount(idx, weights=correct.astype(np.float64), minlength=n_bins)
    out = []
    for b in range(n_bins):
        c = int(counts[b])
        out.append(
            ReliabilityBin(
                float(edges[b]),
                float(edges[b + 1]),
                c,
                conf_sum[b] / c if c else float("nan"),
                acc_sum[b] / c if c else float("nan"),
            )
        )
    return out


def ece_noise_floor(bins: Sequence[ReliabilityBin]) -> float:
    """Expected ECE of a perfectly calibrated model with these bin counts and confidences."""
    n = sum(b.count for b in bins)
    if n == 0:
        return float("nan")
    total = 0.0
    for b in bins:
        if b.count:
            c = min(max(b.confidence, 0.0), 1.0)
            total += b.count / n * np.sqrt(2 / np.pi) * np.sqrt(c * (1 - c) / b.count)
    return float(total)


def ece_from_bins(bins: Sequence[ReliabilityBin]) -> tuple[float, float]:
    """(ECE, MCE) of a list of bins."""
    n = sum(b.count for b in bins)
    if n == 0:
        return float("nan"), float("nan")
    gaps = [(b.count, abs(b.accuracy - b.confidence)) for b in bins if b.count]
    return float(sum(c * g for c, g in gaps) / n), float(max(g for _, g in gaps))


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> float:
    return ece_from_bins(reliability_bins(confidence, correct, n_bins))[0]


def adaptive_ece(confidence: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> float:
    """ECE with equal-mass bins: sorted confidences split into ``n_bins`` groups of (nearly) equal size.

    Images with equal confidence always share a bin (a boundary inside a run of ties moves to its
    end), so the result does not depend on the order of tied images.
    """
    n = len(confidence)
    if n == 0:
        return float("nan")
    order = np.argsort(confidence, kind="stable")
    cs = confidence[order]
    bounds: list[int] = []
    for j in range(1, min(n_bins, n)):
        pos = int(round(j * n / min(n_bins, n)))
        while 0 < pos < n and cs[pos] == cs[pos - 1]:
            pos += 1
        if 0 < pos < n and (not bounds or pos > bounds[-1]):
            bounds.append(pos)
    total = 0.0
    for group in np.split(order, bounds):
        total += len(group) * abs(correct[group].mean() - confidence[group].mean())
    return float(total / n)


def classwise_ece(y_true: np.ndarray, probs: np.ndarray, n_bins: int = N_BINS) -> float:
    """Mean over classes present in ``y_true`` of the ECE of p_c against 1[y == c]."""
    present = np.unique(y_true)
    if len(present) == 0:
        return float("nan")
    return float(np.mean([expected_calibration_error(probs[:, c], y_true == c, n_bins) for c in present]))


def nll(y_true: np.ndarray, probs: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(y_true)), y_true], EPS, 1.0))))


def brier(y_true: np.ndarray, probs: np.ndarray) -> float:
    sq = np.einsum("ij,ij->i", probs, probs)
    return float(np.mean(sq - 2 * probs[np.arange(len(y_true)), y_true] + 1.0))


def _log_probs(probs: np.ndarray) -> np.ndarray:
    return np.log(np.clip(probs, EPS, 1.0))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(logits: np.ndarray, y_true: np.ndarray, *, max_iter: int = 50) -> float:
    """The temperature T minimising mean NLL of softmax(logits / T), by Newton's method on 1/T.

    NLL is convex in beta = 1/T (its second derivative is the mean variance of the logits under the
    tempered softmax), so Newton steps with a backtracking guard converge in a few iterations.
    """
    n = len(y_true)
    if n == 0:
        return float("nan")
    z_true = logits[np.arange(n), y_true]

    def loss_grad_hess(beta: float):
        bz = beta * logits
        top = bz.max(axis=1, keepdims=True)
        e = np.exp(bz - top)
        total = e.sum(axis=1)
        p = e / total[:, None]
        mean_z = np.einsum("ij,ij->i", p, logits)
        loss = float(np.mean(np.log(total) + top[:, 0] - beta * z_true))
        grad = float(np.mean(mean_z - z_true))
        hess = float(np.mean(np.einsum("ij,ij->i", p, logits * logits) - mean_z**2))
        return loss, grad, hess

    beta = 1.0
    loss, grad, hess = loss_grad_hess(beta)
    for _ in range(max_iter):
        if abs(grad) < 1e-10:
            break
        step = grad / hess if hess > 1e-12 else np.sign(grad) * 0.5
        new_beta = max(beta - step, 1e-4)
        new = loss_grad_hess(new_beta)
        while new[0] > loss + 1e-12 and abs(new_beta - beta) > 1e-9:  # backtrack
            new_beta = (new_beta + beta) / 2
            new = loss_grad_hess(new_beta)
        if abs(new_beta - beta) < 1e-10:
            beta = new_beta
            break
        beta = new_beta
        loss, grad, hess = new
    return float(1.0 / beta)


# ----------------------------------------------------------------------------------- public


def compute_calibration(
    y_true: ArrayLike, probs: np.ndarray, *, n_bins: int = N_BINS, folds: int = 5, seed: int = 0
) -> CalibrationResult:
    """Calibration measures of ``probs`` (n, k) against ``y_true`` (n,), plus a temperature what-if.

    ``folds`` cross-validation folds for the temperature (fewer when the data are too small).
    """
    y_true, probs = check_labels_probs(y_true, probs)
    n = len(y_true)
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    bins = reliability_bins(conf, correct, n_bins)
    ece, mce = ece_from_bins(bins)
    edges = np.linspace(0, 1, 21)
    logits = _log_probs(probs)
    temperature = fit_temperature(logits, y_true)
    folds = int(min(folds, n // 2)) if n >= 4 else 0
    oof = probs.copy()
    if folds >= 2:
        rng = np.random.default_rng(seed)
        assignment = rng.permutation(n) % folds
        for f in range(folds):
            test = assignment == f
            t = fit_temperature(logits[~test], y_true[~test])
            oof[test] = _softmax(logits[test] / t)
    else:
        oof = _softmax(logits / temperature)
    oof_conf = oof.max(axis=1)
    oof_correct = oof.argmax(axis=1) == y_true
    result = CalibrationResult(
        n_samples=n,
        n_bins=n_bins,
        ece=ece,
        ece_noise_floor=ece_noise_floor(bins),
        adaptive_ece=adaptive_ece(conf, correct, n_bins),
        mce=mce,
        classwise_ece=classwise_ece(y_true, probs, n_bins),
        brier=brier(y_true, probs),
        nll=nll(y_true, probs),
        mean_confidence=float(conf.mean()),
        accuracy=float(correct.mean()),
        bins=tuple(bins),
        confidence_hist_edges=tuple(float(e) for e in edges),
        confidence_hist_correct=tuple(int(v) for v in np.histogram(conf[correct], bins=edges)[0]),
        confidence_hist_wrong=tuple(int(v) for v in np.histogram(conf[~correct], bins=edges)[0]),
        temperature=temperature,
        temperature_folds=max(folds, 1),
        ece_after_temperature=expected_calibration_error(oof_conf, oof_correct, n_bins),
        nll_after_temperature=nll(y_true, oof),
        reading=(),
    )
    return _with_reading(result)


def _with_reading(r: CalibrationResult) -> CalibrationResult:
    from dataclasses import replace

    gap = r.mean_confidence - r.accuracy
    if abs(gap) < 0.02:
        direction = f"Confidence matches accuracy on average ({r.mean_confidence:.1%} vs {r.accuracy:.1%})."
    elif gap > 0:
        direction = (
            f"The model is over-confident: mean confidence {r.mean_confidence:.1%} against {r.accuracy:.1%} accuracy."
        )
    else:
        direction = (
            f"The model is under-confident: mean confidence {r.mean_confidence:.1%} against {r.accuracy:.1%} accuracy."
        )
    lines = [
        direction,
        f"ECE is {r.ece:.1%} (adaptive {r.adaptive_ece:.1%}); the worst bin is off by {r.mce:.1%}. "
        f"A perfectly calibrated model would show about {r.ece_noise_floor:.1%} on {r.n_samples} images, so "
        + ("this ECE is within sampling noise." if not r.is_miscalibrated else "this gap is real."),
    ]
    if np.isfinite(r.temperature):
        kind = "over-confidence" if r.temperature > 1.05 else "under-confidence" if r.temperature < 0.95 else None
        what = f"a temperature of {r.temperature:.2f}"
        lines.append(
            f"Diagnosis, not a change to the model: {what} would bring ECE from {r.ece:.1%} to "
            f"{r.ece_after_temperature:.1%} (out-of-fold, {r.temperature_folds}-fold cross-validation)"
            + (
                f", so the mis-calibration is mostly global {kind} that post-hoc scaling can fix."
                if kind and r.ece_after_temperature < 0.6 * r.ece
                else "."
            )
        )
    return replace(r, reading=tuple(lines))
