"""Perturbation-severity grid: per-cell measures, paired intervals on the accuracy drop, breaking points,
corruption errors and the reading (pure numpy).

A *cell* is one perturbation at one severity, evaluated on a prefix of one stratified, seeded subsample
of the clean images (the same images for every cell, in the same order). Its accuracy drop is the clean
accuracy minus the perturbed accuracy **on the same images**, so the two are paired: only the discordant
images (right clean and wrong perturbed: ``b``; wrong clean and right perturbed: ``c``) move the drop
``(b - c) / n``. Its 95 % interval is Tango's score interval for a difference of paired proportions
(Tango 1998, Statistics in Medicine 17:891), which keeps its coverage near nominal with few or no
discordant pairs (unlike Wald intervals, which collapse to zero width when ``b = c = 0``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ._common import jsonable

Z95 = 1.959963984540054


def _tango_z(b, c, n, d0):
    """Tango's score statistic for H0: drop = d0 (elementwise). b: right->wrong, c: wrong->right."""
    b, c, n, d0 = (np.asarray(v, dtype=np.float64) for v in (b, c, n, d0))
    a_ = 2.0 * n
    b_ = -b - c + (2.0 * n - b + c) * d0
    c_ = -c * d0 * (1.0 - d0)
    disc = np.maximum(b_ * b_ - 4.0 * a_ * c_, 0.0)
    q21 = np.where(a_ > 0, (-b_ + np.sqrt(disc)) / np.where(a_ > 0, 2.0 * a_, 1.0), 0.0)
    var = n * (2.0 * q21 + d0 * (1.0 - d0))
    num = b - c - n * d0
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(var > 0, num / np.sqrt(np.maximum(var, 1e-300)), np.where(num == 0, 0.0, np.sign(num) * np.inf))
    return z


def paired_drop_interval(b, c, n, *, z: float = Z95, iterations: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Tango's score interval for the paired accuracy drop ``(b - c) / n`` (elementwise over arrays).

    ``b``: images right on the clean input and wrong on the perturbed one; ``c``: the reverse; ``n``: images.
    Returns (low, high), in [-1, 1]. The score statistic is monotone in the hypothesised drop, so each bound
    is found by bisection between the point estimate and -1 or 1.
    """
    b, c, n = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (b, c, n)))
    est = np.where(n > 0, (b - c) / np.where(n > 0, n, 1.0), 0.0)
    bounds = []
    for side in (-1.0, 1.0):
        inner, outer = est.copy(), np.full_like(est, side * (1.0 - 1e-12))
        z_outer = _tango_z(b, c, n, outer)
        inside_all = np.abs(z_outer) <= z  # the whole side is inside the interval
        for _ in range(iterations):
            mid = (inner + outer) / 2.0
            inside = np.abs(_tango_z(b, c, n, mid)) <= z
            inner = np.where(inside, mid, inner)
            outer = np.where(inside, outer, mid)
        bounds.append(np.where(inside_all, side * 1.0, (inner + outer) / 2.0))
    low, high = bounds
    low = np.where(n > 0, low, -1.0)
    high = np.where(n > 0, high, 1.0)
    return low, high


def wilson_interval(k, n, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion k / n."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def cell_should_stop(b: int, c: int, n: int, *, precision: float, threshold: float) -> str | None:
    """Why a cell may stop at ``n`` images: ``"precise"`` (interval half-width on the drop at most
    ``precision``), ``"broken"`` (the whole interval is above the breaking threshold: the cell is broken beyond
    doubt and more images would only narrow an interval that no longer changes the breaking point), or None."""
    low, high = paired_drop_interval(b, c, n)
    if (float(high) - float(low)) / 2.0 <= precision:
        return "precise"
    if float(low) > threshold:
        return "broken"
    return None


# ----------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Cell:
    """One perturbation at one severity."""

    perturbation: str
    severity: int
    parameter: float  # the perturbation's parameter at this severity (pixels for size-relative ones)
    n_images: int
    clean_accuracy: float  # on the same n images
    accuracy: float
    accuracy_ci: tuple[float, float]  # Wilson 95 %
    drop: float  # clean_accuracy - accuracy
    drop_ci: tuple[float, float]  # Tango paired 95 %
    right_to_wrong: int  # b
    wrong_to_right: int  # c
    flip_rate: float  # share of images whose predicted class differs from the clean prediction
    mean_confidence: float
    clean_mean_confidence: float  # on the same n images
    per_class_accuracy: tuple[float | None, ...]  # None where the class has no image among the n
    per_class_n: tuple[int, ...]
    stopped: str  # "precise" | "broken" | "all" (every image of the subsample used)

    def to_dict(self) -> dict:
        return jsonable(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> Cell:
        d = dict(d)
        for key in ("accuracy_ci", "drop_ci", "per_class_accuracy", "per_class_n"):
            d[key] = tuple(d[key])
        return cls(**d)


@dataclass(frozen=True)
class BreakingPoint:
    perturbation: str
    reached: bool
    severity: float | None  # interpolated severity at which the drop reaches the threshold
    parameter: float | None  # the parameter there
    description: str  # "blur sigma 1.3 px at 96 px input" or "beyond severity 5"

    def to_dict(self) -> dict:
        return jsonable(self)


@dataclass(frozen=True)
class PerturbationSummary:
    """Per perturbation: corruption error (mean top-1 error over its severities), relative corruption
    error (the same minus the clean error), and its breaking point."""

    perturbation: str
    label: str
    parameter_name: str
    corruption_error: float
    relative_error: float
    breaking: BreakingPoint

    def to_dict(self) -> dict:
        return jsonable(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> PerturbationSummary:
        d = dict(d)
        d["breaking"] = BreakingPoint(**d["breaking"])
        return cls(**d)


@dataclass(frozen=True)
class PerturbationResult:
    class_names: tuple[str, ...]
    input_size: tuple[int, int]
    perturbations: tuple[str, ...]
    severities: tuple[int, ...]
    n_subsample: int  # images in the stratified subsample (every cell uses a prefix of it)
    n_available: int  # valid images in the audited data
    clean_accuracy: float  # on the whole subsample
    clean_error: float
    clean_per_class: tuple[float | None, ...]  # clean accuracy within each class on the whole subsample
    cells: tuple[Cell, ...]
    summaries: tuple[PerturbationSummary, ...]
    robust_accuracy: float  # mean accuracy over the grid's cells
    worst: tuple[str, int]  # (perturbation, severity) of the lowest-accuracy cell
    worst_perturbation: str  # the perturbation with the largest corruption error
    forward_passes: int  # perturbed images sent through the model
    full_grid_passes: int  # what every cell on the whole subsample would have cost
    precision: float
    threshold: float
    seed: int
    reading: tuple[str, ...]
    notes: tuple[str, ...]  # stated adjustments (sample size) and how the inputs were perturbed
    example_path: str  # the image of the example strip (relative to the data root)
    example_label: str
    # mCE against the reference model when several models were audited in one run (None: a single model)
    versus_reference: VersusReference | None = None

    @property
    def pass_share(self) -> float:
        """Forward passes used as a share of the full grid's (NaN for an empty grid)."""
        return self.forward_passes / self.full_grid_passes if self.full_grid_passes else float("nan")

    def to_dict(self) -> dict:
        return jsonable(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> PerturbationResult:
        d = dict(d)
        d["cells"] = tuple(Cell.from_dict(c) for c in d["cells"])
        d["summaries"] = tuple(PerturbationSummary.from_dict(s) for s in d["summaries"])
        vs = d.get("versus_reference")
        d["versus_reference"] = None if vs is None else VersusReference.from_dict(vs)
        for key in (
            "class_names",
            "input_size",
            "perturbations",
            "severities",
            "worst",
            "reading",
            "notes",
            "clean_per_class",
        ):
            d[key] = tuple(d[key])
        return cls(**d)

    def cell(self, perturbation: str, severity: int) -> Cell:
        for c in self.cells:
            if c.perturbation == perturbation and c.severity == severity:
                return c
        raise KeyError((perturbation, severity))


# ----------------------------------------------------------------------------------------- arithmetic


def cell_measures(
    y_true: np.ndarray,
    clean_probs: np.ndarray,
    probs: np.ndarray,
    *,
    perturbation: str,
    severity: int,
    parameter: float,
    n_classes: int,
    stopped: str,
) -> Cell:
    """Measures of one cell from the clean and perturbed probabilities of the same images (same order)."""
    y = np.asarray(y_true)
    n = len(y)
    clean_pred, pred = clean_probs.argmax(axis=1), probs.argmax(axis=1)
    clean_ok, ok = clean_pred == y, pred == y
    b = int(np.sum(clean_ok & ~ok))
    c = int(np.sum(~clean_ok & ok))
    low, high = paired_drop_interval(b, c, n)
    per_class, per_n = [], []
    for k in range(n_classes):
        sel = y == k
        per_n.append(int(sel.sum()))
        per_class.append(float(ok[sel].mean()) if sel.any() else None)
    acc, clean_acc = float(ok.mean()), float(clean_ok.mean())
    return Cell(
        perturbation=perturbation,
        severity=int(severity),
        parameter=float(parameter),
        n_images=n,
        clean_accuracy=clean_acc,
        accuracy=acc,
        accuracy_ci=wilson_interval(int(ok.sum()), n),
        drop=clean_acc - acc,
        drop_ci=(float(low), float(high)),
        right_to_wrong=b,
        wrong_to_right=c,
        flip_rate=float(np.mean(pred != clean_pred)),
        mean_confidence=float(probs.max(axis=1).mean()),
        clean_mean_confidence=float(clean_probs.max(axis=1).mean()),
        per_class_accuracy=tuple(per_class),
        per_class_n=tuple(per_n),
        stopped=stopped,
    )


def breaking_point(
    severities: Sequence[int],
    drops: Sequence[float],
    parameters: Sequence[float],
    *,
    identity: float,
    threshold: float,
) -> tuple[bool, float | None, float | None]:
    """The severity (and parameter) at which the drop first reaches ``threshold``, linearly interpolated
    between the last severity below it (or the clean image: severity 0, drop 0, the identity parameter) and
    the first at or above it. Returns (reached, severity, parameter)."""
    prev_s, prev_d, prev_p = 0.0, 0.0, float(identity)
    for s, d, p in zip(severities, drops, parameters):
        if d >= threshold:
            t = 1.0 if d == prev_d else (threshold - prev_d) / (d - prev_d)
            t = min(max(t, 0.0), 1.0)
            return True, prev_s + t * (s - prev_s), prev_p + t * (p - prev_p)
        prev_s, prev_d, prev_p = float(s), float(d), float(p)
    return False, None, None


def corruption_errors(accuracies: Sequence[float], clean_accuracy: float) -> tuple[float, float]:
    """(mean top-1 error over severities, the same minus the clean error) of one perturbation."""
    errs = 1.0 - np.asarray(accuracies, dtype=float)
    return float(errs.mean()), float(errs.mean() - (1.0 - clean_accuracy))


@dataclass(frozen=True)
class VersusReference:
    """ImageNet-C's corruption errors of one model relative to a reference model audited in the same run
    (Hendrycks and Dietterich 2019). With ``E[s, p]`` a grid's top-1 error at severity ``s`` of perturbation
    ``p`` and ``E_clean`` its clean error (on its subsample):

    * ``ce[p] = sum_s E[s, p] / sum_s E_ref[s, p]``; ``mce`` = mean of ``ce`` over the perturbations;
    * ``relative_ce[p] = sum_s (E[s, p] - E_clean) / sum_s (E_ref[s, p] - E_ref_clean)``; ``relative_mce``
      = its mean.

    Ratios, 1.0 = as robust as the reference (ImageNet-C prints them as %). A ratio whose reference sum is
    not positive (the reference makes no error, or loses nothing, under that perturbation) is None and left
    out of the mean. Sums run over the severities and perturbations both grids have."""

    reference: str  # the reference model (as its file name)
    is_reference: bool  # this model is the reference (every ratio 1)
    perturbations: tuple[str, ...]
    severities: tuple[int, ...]
    ce: tuple[float | None, ...]  # per perturbation, in the order of ``perturbations``
    relative_ce: tuple[float | None, ...]
    mce: float | None
    relative_mce: float | None

    def to_dict(self) -> dict:
        return jsonable(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> VersusReference:
        d = dict(d)
        for key in ("perturbations", "severities", "ce", "relative_ce"):
            d[key] = tuple(d[key])
        return cls(**d)


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def mce(
    model: PerturbationResult, reference: PerturbationResult, *, reference_name: str, is_reference: bool = False
) -> VersusReference:
    """mCE and relative mCE of ``model`` against ``reference`` (see :class:`VersusReference`)."""
    shared = tuple(p for p in model.perturbations if p in reference.perturbations)
    sev = tuple(s for s in model.severities if s in reference.severities)
    ce, rel = [], []
    for p in shared:
        e_m = [1.0 - model.cell(p, s).accuracy for s in sev]
        e_r = [1.0 - reference.cell(p, s).accuracy for s in sev]
        ce.append(_ratio(sum(e_m), sum(e_r)))
        rel.append(_ratio(sum(e - model.clean_error for e in e_m), sum(e - reference.clean_error for e in e_r)))
    return VersusReference(
        reference=reference_name,
        is_reference=is_reference,
        perturbations=shared,
        severities=sev,
        ce=tuple(ce),
        relative_ce=tuple(rel),
        mce=_mean(ce),
        relative_mce=_mean(rel),
    )


def reading(
    result_cells: Sequence[Cell],
    summaries: Sequence[PerturbationSummary],
    *,
    class_names: Sequence[str],
    threshold: float,
) -> list[str]:
    """A few sentences generated from the numbers."""
    lines: list[str] = []
    if not result_cells:
        return lines
    by_ce = sorted(summaries, key=lambda s: -s.corruption_error)
    worst = by_ce[0]
    broken = [s for s in summaries if s.breaking.reached]
    lines.append(
        f"{worst.label} hurts most (mean error over its severities {worst.corruption_error:.1%}, "
        f"{worst.relative_error * 100:+.1f} points over the clean error)"
        + (f"; the least harmful is {by_ce[-1].label} ({by_ce[-1].corruption_error:.1%})." if len(by_ce) > 1 else ".")
    )
    if broken:
        first = sorted(broken, key=lambda s: s.breaking.severity or 0.0)
        lines.append(
            f"{len(broken)} of {len(summaries)} perturbations cost {threshold * 100:.0f} accuracy points or more "
            f"within the tested severities; the earliest: "
            + ", ".join(
                f"{s.label} at severity {s.breaking.severity:.1f} ({s.breaking.description})" for s in first[:3]
            )
            + "."
        )
    else:
        lines.append(f"No perturbation costs {threshold * 100:.0f} accuracy points within the tested severities.")
    cells_w = [c for c in result_cells if c.perturbation == worst.perturbation]
    if cells_w:
        top = max(cells_w, key=lambda c: c.severity)
        drops = []
        for k, name in enumerate(class_names):
            clean_k = [c for c in cells_w if c.per_class_accuracy[k] is not None]
            if clean_k:
                drops.append((top.per_class_accuracy[k], name))
        drops = [d for d in drops if d[0] is not None]
        if drops:
            drops.sort()
            lines.append(
                f"Under {worst.label.lower()} at severity {top.severity} the classes that break first are "
                + ", ".join(f"{n} ({a:.0%} right)" for a, n in drops[:2])
                + (f"; {drops[-1][1]} holds best ({drops[-1][0]:.0%})." if len(drops) > 2 else ".")
            )
    acc_drop = np.array([c.drop for c in result_cells])
    conf_drop = np.array([c.clean_mean_confidence - c.mean_confidence for c in result_cells])
    big = acc_drop >= threshold
    if big.any():
        ratio = float(conf_drop[big].sum() / acc_drop[big].sum())
        if ratio < 0.5:
            lines.append(
                f"Confidence does not fall with accuracy: in the cells that lose {threshold * 100:.0f} points or "
                f"more, mean confidence falls by {ratio:.0%} of the accuracy lost, so the model stays confident "
                "on damaged images (confidence thresholds will not catch them)."
            )
        else:
            lines.append(
                f"Confidence falls with accuracy: in the cells that lose {threshold * 100:.0f} points or more, mean "
                f"confidence falls by {ratio:.0%} of the accuracy lost."
            )
    return lines
