"""Model comparison: which differences between candidates are real, the Pareto front, and a recommendation.

Pure numpy. Every model is judged on the same images:

* **McNemar's exact test** per pair: with ``b`` images only model A gets right and ``c`` only model B, the
  two-sided p-value is ``min(1, 2 * P(X <= min(b, c)))`` for ``X ~ Binomial(b + c, 1/2)`` (exact integer
  arithmetic), 1 when ``b + c = 0``. **Holm's** step-down correction across all pairs.
* **Paired bootstrap** intervals of the accuracy and macro-F1 differences ``A - B``: the same resampled
  images for both models (percentile intervals).
* **Pareto front** on two measures; a **recommendation** from documented weights over named measures,
  min-max normalised across the eligible candidates, after hard constraints.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._common import jsonable, sign_test_p
from .metrics import scores_from_confusion

CONFIDENCE_LEVEL = 0.95
ALPHA = 0.05


@dataclass(frozen=True)
class Measure:
    """A measure a comparison can show, weigh or constrain."""

    name: str
    label: str
    higher_is_better: bool
    kind: str  # "share" (a proportion, shown as %), "ratio", "ms", "count", "mb", "per_s"
    source: str  # the section (or measurement) it comes from


#: Every measure, by name (the names used in ``[comparison]`` weights and constraints), in table order.
MEASURES: dict[str, Measure] = {
    m.name: m
    for m in (
        Measure("accuracy", "Accuracy", True, "share", "classification"),
        Measure("f1_macro", "Macro-F1", True, "share", "classification"),
        Measure("balanced_accuracy", "Balanced accuracy", True, "share", "classification"),
        Measure("weakest_recall", "Weakest class's recall", True, "share", "classification"),
        Measure("ece", "ECE (calibration error)", False, "share", "calibration"),
        Measure("aurc", "AURC (selective risk)", False, "ratio", "selective_prediction"),
        Measure("robust_accuracy", "Robust accuracy (grid mean)", True, "share", "perturbation_grid"),
        Measure("worst_cell_accuracy", "Worst grid cell's accuracy", True, "share", "perturbation_grid"),
        Measure("mce", "mCE vs reference", False, "ratio", "perturbation_grid"),
        Measure("flip_rate", "Flip rate under perturbation", False, "share", "perturbation_grid"),
        Measure("fisher_tail_share", "Fisher tail share", False, "share", "fisher"),
        Measure("cell_focus", "Cell focus (Grad-CAM median)", True, "share", "gradcam"),
        Measure("external_accuracy", "Worst external-site accuracy", True, "share", "external_sites"),
        Measure("params", "Parameters", False, "count", "model"),
        Measure("size_mb", "Size on disk", False, "mb", "model"),
        Measure("latency_ms", "Latency per image (batch 1)", False, "ms", "speed"),
        Measure("throughput", "Throughput at the audit's batch size", True, "per_s", "speed"),
    )
}


def known_measures() -> tuple[str, ...]:
    return tuple(MEASURES)


# ----------------------------------------------------------------------------------- tests of pairs


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` and ``c`` discordant pairs (binomial, p = 1/2): twice the
    one-sided tail of the larger count (by symmetry, P(X >= max) = P(X <= min))."""
    b, c = int(b), int(c)
    return min(1.0, 2 * sign_test_p(max(b, c), min(b, c)))


def holm(p_values: Sequence[float]) -> tuple[float, ...]:
    """Holm's step-down adjusted p-values (same order as given)."""
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    order = np.argsort(p, kind="mergesort")
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return tuple(float(v) for v in adjusted)


def paired_bootstrap(
    y_true: np.ndarray,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    n_classes: int,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    level: float = CONFIDENCE_LEVEL,
    chunk: int = 250,
) -> dict[str, tuple[float, float]]:
    """Percentile intervals of ``accuracy(A) - accuracy(B)`` and ``macro-F1(A) - macro-F1(B)``, resampling
    images (the same resample for both models). Macro-F1 averages over the classes with images in the whole
    sample (as the classification section does). ``n_bootstrap = 0``: NaN intervals."""
    y = np.asarray(y_true, dtype=np.int64)
    a = np.asarray(pred_a, dtype=np.int64)
    b = np.asarray(pred_b, dtype=np.int64)
    n, k = len(y), int(n_classes)
    nan = (float("nan"), float("nan"))
    if n_bootstrap <= 0 or n == 0:
        return {"accuracy": nan, "f1_macro": nan}
    evaluated = np.bincount(y, minlength=k) > 0
    rng = np.random.default_rng(seed)
    acc_d: list[np.ndarray] = []
    f1_d: list[np.ndarray] = []
    ra, rb = (a == y).astype(np.float64), (b == y).astype(np.float64)
    done = 0
    while done < n_bootstrap:
        m = min(chunk, n_bootstrap - done)
        idx = rng.integers(0, n, size=(m, n))
        acc_d.append(ra[idx].mean(axis=1) - rb[idx].mean(axis=1))
        offs = (np.arange(m) * k * k)[:, None]
        f1s = []
        for pred in (a, b):
            cm = np.bincount((offs + y[idx] * k + pred[idx]).ravel(), minlength=m * k * k).reshape(m, k, k)
            f1s.append(scores_from_confusion(cm, evaluated)["f1_macro"])
        f1_d.append(f1s[0] - f1s[1])
        done += m
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    out = {}
    for key, parts in (("accuracy", acc_d), ("f1_macro", f1_d)):
        d = np.concatenate(parts)
        out[key] = (float(np.percentile(d, lo)), float(np.percentile(d, hi)))
    return out


def macro_f1(y_true: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    y = np.asarray(y_true, dtype=np.int64)
    cm = np.bincount(y * n_classes + np.asarray(pred, dtype=np.int64), minlength=n_classes * n_classes)
    cm = cm.reshape(n_classes, n_classes)
    return float(scores_from_confusion(cm, np.bincount(y, minlength=n_classes) > 0)["f1_macro"])


@dataclass(frozen=True)
class Disagreement:
    """An image on which exactly one model of a pair is right."""

    path: str
    true_label: str
    pred_a: str
    conf_a: float
    pred_b: str
    conf_b: float
    right: str  # "a" or "b"


@dataclass(frozen=True)
class PairComparison:
    a: str
    b: str
    n_images: int
    both_right: int
    both_wrong: int
    only_a_right: int  # McNemar's b
    only_b_right: int  # McNemar's c
    p_value: float  # exact McNemar, two-sided
    p_holm: float  # Holm-adjusted across the pairs
    accuracy_diff: float  # A - B
    accuracy_diff_ci: tuple[float, float]
    f1_diff: float
    f1_diff_ci: tuple[float, float]
    disagreements: tuple[Disagreement, ...]  # most confident first (confidence of the wrong model)

    @property
    def significant(self) -> bool:
        return self.p_holm < ALPHA

    @property
    def accuracy_ci_has_zero(self) -> bool:
        lo, hi = self.accuracy_diff_ci
        return math.isnan(lo) or lo <= 0.0 <= hi

    def to_dict(self) -> dict:
        d = jsonable(self)
        d["significant"] = self.significant
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PairComparison:
        def ci(v):
            return tuple(float("nan") if x is None else float(x) for x in v)

        return cls(
            a=d["a"],
            b=d["b"],
            n_images=int(d["n_images"]),
            both_right=int(d["both_right"]),
            both_wrong=int(d["both_wrong"]),
            only_a_right=int(d["only_a_right"]),
            only_b_right=int(d["only_b_right"]),
            p_value=float(d["p_value"]),
            p_holm=float(d["p_holm"]),
            accuracy_diff=float(d["accuracy_diff"]),
            accuracy_diff_ci=ci(d["accuracy_diff_ci"]),
            f1_diff=float(d["f1_diff"]),
            f1_diff_ci=ci(d["f1_diff_ci"]),
            disagreements=tuple(Disagreement(**x) for x in d["disagreements"]),
        )


def compare_pairs(
    names: Sequence[str],
    y_true: np.ndarray,
    preds: Sequence[np.ndarray],
    confs: Sequence[np.ndarray],
    class_names: Sequence[str],
    paths: Sequence[str],
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    n_gallery: int = 6,
) -> tuple[PairComparison, ...]:
    """Every pair of models on the same images: ``y_true`` (n,) class indices into ``class_names``,
    ``preds[i]`` (n,) model i's predicted class index into ``class_names`` (a class only some models have
    may be one more entry, never a true label), ``confs[i]`` (n,) its confidence, ``paths`` the images."""
    y = np.asarray(y_true, dtype=np.int64)
    k = len(class_names)
    preds = [np.asarray(p, dtype=np.int64) for p in preds]
    confs = [np.asarray(c, dtype=np.float64) for c in confs]
    rows: list[dict[str, Any]] = []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            ra, rb = preds[i] == y, preds[j] == y
            only_a, only_b = ra & ~rb, rb & ~ra
            ci = paired_bootstrap(y, preds[i], preds[j], k, n_bootstrap=n_bootstrap, seed=seed + 7919 * len(rows))
            wrong_conf = np.where(only_a, confs[j], np.where(only_b, confs[i], -1.0))
            order = [int(r) for r in np.argsort(-wrong_conf, kind="mergesort") if wrong_conf[r] >= 0][:n_gallery]
            gallery = tuple(
                Disagreement(
                    path=str(paths[r]),
                    true_label=class_names[y[r]],
                    pred_a=class_names[preds[i][r]],
                    conf_a=float(confs[i][r]),
                    pred_b=class_names[preds[j][r]],
                    conf_b=float(confs[j][r]),
                    right="a" if only_a[r] else "b",
                )
                for r in order
            )
            rows.append(
                dict(
                    a=names[i],
                    b=names[j],
                    n_images=len(y),
                    both_right=int((ra & rb).sum()),
                    both_wrong=int((~ra & ~rb).sum()),
                    only_a_right=int(only_a.sum()),
                    only_b_right=int(only_b.sum()),
                    p_value=mcnemar_exact(int(only_a.sum()), int(only_b.sum())),
                    accuracy_diff=float(ra.mean() - rb.mean()) if len(y) else float("nan"),
                    accuracy_diff_ci=ci["accuracy"],
                    f1_diff=macro_f1(y, preds[i], k) - macro_f1(y, preds[j], k),
                    f1_diff_ci=ci["f1_macro"],
                    disagreements=gallery,
                )
            )
    adjusted = holm([r["p_value"] for r in rows])
    return tuple(PairComparison(p_holm=p, **r) for r, p in zip(rows, adjusted))


# ----------------------------------------------------------------------------------- Pareto front


def pareto_front(x: Sequence[float | None], y: Sequence[float | None], *, x_higher=True, y_higher=True) -> tuple:
    """Indices of the points no other point dominates (at least as good on both, better on one); points
    with a missing value are on no front."""
    sx, sy = (1 if x_higher else -1), (1 if y_higher else -1)
    pts = [(i, sx * a, sy * b) for i, (a, b) in enumerate(zip(x, y)) if a is not None and b is not None]
    front = []
    for i, a, b in pts:
        dominated = any((a2 >= a and b2 >= b) and (a2 > a or b2 > b) for j, a2, b2 in pts if j != i)
        if not dominated:
            front.append(i)
    return tuple(front)


# ----------------------------------------------------------------------------------- recommendation


@dataclass(frozen=True)
class Constraint:
    measure: str
    bound: str  # "min" or "max"
    value: float

    def text(self) -> str:
        m = MEASURES[self.measure]
        return f"{m.label.lower()} {'at least' if self.bound == 'min' else 'at most'} {fmt(self.value, m.kind)}"


@dataclass(frozen=True)
class Excluded:
    model: str
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Recommendation:
    recommended: str | None
    runner_up: str | None
    scores: tuple[tuple[str, float], ...]  # eligible models, best first
    contributions: tuple[tuple[str, tuple[tuple[str, float], ...]], ...]  # model -> (measure, weighted part)
    weights: tuple[tuple[str, float], ...]  # the weights used (after measures not available everywhere)
    ignored_weights: tuple[str, ...]  # why a weighted measure was left out
    constraints: tuple[Constraint, ...]
    excluded: tuple[Excluded, ...]
    reasons: tuple[str, ...]  # plain sentences
    would_change: tuple[str, ...]
    tie: str | None  # "statistically tied on accuracy; chosen on robust accuracy", when it applies

    def to_dict(self) -> dict:
        return jsonable(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Recommendation:
        return cls(
            recommended=d["recommended"],
            runner_up=d["runner_up"],
            scores=tuple((a, float(b)) for a, b in d["scores"]),
            contributions=tuple((m, tuple((k, float(v)) for k, v in parts)) for m, parts in d["contributions"]),
            weights=tuple((a, float(b)) for a, b in d["weights"]),
            ignored_weights=tuple(d["ignored_weights"]),
            constraints=tuple(Constraint(**c) for c in d["constraints"]),
            excluded=tuple(Excluded(e["model"], tuple(e["reasons"])) for e in d["excluded"]),
            reasons=tuple(d["reasons"]),
            would_change=tuple(d["would_change"]),
            tie=d["tie"],
        )


def fmt(value: float | None, kind: str) -> str:
    """A measure's value in words (for the recommendation's sentences)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if kind == "share":
        return f"{value * 100:.1f}%"
    if kind == "ms":
        return f"{value:.1f} ms"
    if kind == "count":
        return f"{value:,.0f}"
    if kind == "mb":
        return f"{value:.1f} MB" if value >= 1 else f"{value * 1000:.0f} kB"
    if kind == "per_s":
        return f"{value:.0f} images/s"
    return f"{value:.3g}"


#: timings differ between two runs of the same model on a shared machine (warm-up order, other load): a spread
#: within this share of the smaller value (1.0: within a factor of two) is not a difference for the recommendation
#: (the same model file measured twice in one audit on a loaded 2-core machine came out 1.5 against 2.0 ms and
#: 1063 against 1783 images/s)
TIMING_NOISE = 1.0
TIMING_MEASURES = ("latency_ms", "throughput")


def _normalised(values: Sequence[float], higher: bool, *, relative_noise: float = 0.0) -> list[float]:
    """Min-max rescaled (1 = best); all 1 when the spread is within ``relative_noise`` of the smallest magnitude."""
    lo, hi = min(values), max(values)
    if hi - lo <= 1e-12 or hi - lo <= relative_noise * min(abs(lo), abs(hi)):
        return [1.0] * len(values)
    return [((v - lo) if higher else (hi - v)) / (hi - lo) for v in values]


def recommend(
    models: Sequence[str],
    values: Mapping[str, Mapping[str, float | None]],
    weights: Mapping[str, float],
    constraints: Sequence[Constraint],
    pairs: Sequence[PairComparison] = (),
) -> Recommendation:
    """Rank models by the weighted sum of min-max normalised measures (0 = the worst eligible candidate on
    that measure, 1 = the best) after excluding models that fail a constraint (or whose constrained measure
    was not measured). ``values[model][measure]``; ``weights`` by measure name (non-negative)."""
    excluded: list[Excluded] = []
    eligible = []
    for m in models:
        why = []
        for c in constraints:
            v = values[m].get(c.measure)
            meas = MEASURES[c.measure]
            if v is None or (isinstance(v, float) and math.isnan(v)):
                why.append(f"{meas.label.lower()} was not measured (needs {meas.source}); constraint {c.text()}")
            elif (c.bound == "min" and v < c.value) or (c.bound == "max" and v > c.value):
                why.append(f"{meas.label.lower()} is {fmt(v, meas.kind)}; constraint {c.text()}")
        if why:
            excluded.append(Excluded(m, tuple(why)))
        else:
            eligible.append(m)
    used: dict[str, float] = {}
    ignored = []
    for name, w in weights.items():
        if w <= 0:
            continue
        missing = [m for m in eligible if values[m].get(name) is None]
        if missing:
            ignored.append(
                f"{MEASURES[name].label} (weight {w:g}) left out: not measured for {', '.join(missing)}"
                f" (needs {MEASURES[name].source})"
            )
        else:
            used[name] = float(w)
    total = sum(used.values())
    norm: dict[str, dict[str, float]] = {}
    for name in used:
        column = [float(values[m][name] or 0.0) for m in eligible]  # every eligible model has it (checked above)
        noise = TIMING_NOISE if name in TIMING_MEASURES else 0.0
        norm[name] = dict(zip(eligible, _normalised(column, MEASURES[name].higher_is_better, relative_noise=noise)))
    contributions = {
        m: tuple((name, used[name] * norm[name][m] / total) for name in used) if total else () for m in eligible
    }
    scores = {m: sum(v for _, v in contributions[m]) for m in eligible}
    ranked = sorted(eligible, key=lambda m: (-scores[m], eligible.index(m)))
    best = ranked[0] if ranked else None
    runner = ranked[1] if len(ranked) > 1 else None
    reasons: list[str] = []
    would: list[str] = []
    tie = None
    if best is None:
        reasons.append("No model meets every constraint; none is recommended.")
    elif not used:
        reasons.append(f"No weighted measure was available for every eligible model; {best} is listed first only.")
    elif runner is not None and all(abs(norm[n][best] - norm[n][runner]) <= 1e-12 for n in used):
        # nothing weighted tells them apart (e.g. two copies of one model): say so, and decide nothing by noise
        measures = _words([MEASURES[n].label.lower() for n in used])
        reasons.append(
            f"{best} and {runner} score equally on every weighted measure ({measures}; timings within a factor of "
            f"two count as equal); {best} is named first only because it was given first."
        )
        would.append("Any weighted difference between them would decide; none was measured.")
        tie = f"tied with {runner} on every weighted measure; named first only because it was given first"
    else:
        top = sorted(contributions[best], key=lambda kv: -kv[1])
        strong = [MEASURES[n].label.lower() for n, v in top if norm[n][best] >= 1.0 - 1e-12 and used[n] > 0]
        if runner is None:
            reasons.append(f"{best} is the only model that meets every constraint.")
        else:
            reasons.append(
                f"{best} has the highest weighted score ({scores[best]:.2f} of 1, runner-up {runner} "
                f"{scores[runner]:.2f})."
            )
        if strong and runner is not None:
            reasons.append(f"It is the best eligible candidate on {_words(strong)}.")
        if runner is not None:
            gap = {n: used[n] * (norm[n][best] - norm[n][runner]) / total for n in used}
            decisive = max(gap, key=lambda n: gap[n])
            behind = [n for n in used if gap[n] < -1e-12]
            reasons.append(
                f"Against {runner} it gains most on {MEASURES[decisive].label.lower()} "
                f"({fmt(values[best][decisive], MEASURES[decisive].kind)} vs "
                f"{fmt(values[runner][decisive], MEASURES[decisive].kind)})."
            )
            for n in behind:
                d_n = norm[n][best] - norm[n][runner]
                lead = sum(used[k] * (norm[k][best] - norm[k][runner]) for k in used)
                needed = used[n] - lead / d_n  # weight on n at which the two scores are equal
                would.append(
                    f"Raising the weight of {MEASURES[n].label.lower()} from {used[n]:g} to more than "
                    f"{needed:.3g} (others unchanged) would make {runner} the choice "
                    f"({fmt(values[runner][n], MEASURES[n].kind)} vs {fmt(values[best][n], MEASURES[n].kind)})."
                )
            if not behind:
                would.append(
                    f"{best} is at least as good as {runner} on every weighted measure: no weights over these "
                    "measures make the runner-up the choice."
                )
            pair = _pair(pairs, best, runner)
            if pair is not None and not pair.significant and pair.accuracy_ci_has_zero:
                chosen_on = MEASURES[decisive].label.lower()
                tie = f"statistically tied on accuracy with {runner}; chosen on {chosen_on}"
                if decisive == "accuracy":
                    tie = f"statistically tied on accuracy with {runner}; the choice rests on a difference within noise"
                reasons.append(
                    f"{best} and {runner} are statistically tied on accuracy (McNemar p = {pair.p_holm:.2g} after "
                    f"Holm; the interval of the difference contains 0); chosen on {chosen_on}."
                )
    for e in excluded:
        for c in constraints:
            v = values[e.model].get(c.measure)
            if v is not None and ((c.bound == "min" and v < c.value) or (c.bound == "max" and v > c.value)):
                would.append(
                    f"Relaxing the constraint on {MEASURES[c.measure].label.lower()} to "
                    f"{fmt(v, MEASURES[c.measure].kind)} would let {e.model} compete."
                )
    return Recommendation(
        recommended=best,
        runner_up=runner,
        scores=tuple((m, float(scores[m])) for m in ranked),
        contributions=tuple((m, contributions[m]) for m in ranked),
        weights=tuple(used.items()),
        ignored_weights=tuple(ignored),
        constraints=tuple(constraints),
        excluded=tuple(excluded),
        reasons=tuple(reasons),
        would_change=tuple(would),
        tie=tie,
    )


def _pair(pairs: Sequence[PairComparison], a: str, b: str) -> PairComparison | None:
    for p in pairs:
        if {p.a, p.b} == {a, b}:
            return p
    return None


def _words(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


# ----------------------------------------------------------------------------------- the whole comparison


@dataclass(frozen=True)
class ModelRow:
    """One candidate in the comparison table."""

    name: str  # as shown (the file name; the path when two models share a file name)
    path: str
    report_dir: str | None
    values: tuple[tuple[str, float | None], ...]  # measure -> value (None: not measured)
    intervals: tuple[tuple[str, tuple[float, float]], ...]  # measure -> 95% interval, where the section has one
    missing: tuple[tuple[str, str], ...]  # measure -> why it is missing

    def value(self, measure: str) -> float | None:
        return dict(self.values).get(measure)

    def interval(self, measure: str) -> tuple[float, float] | None:
        return dict(self.intervals).get(measure)

    def why_missing(self, measure: str) -> str:
        return dict(self.missing).get(measure, "")


@dataclass(frozen=True)
class ComparisonResult:
    models: tuple[ModelRow, ...]
    reference: str
    shared_classes: tuple[str, ...]
    classes_note: str | None  # said when the models' classes differ
    n_images: int  # images every model saw (with a shared-class label)
    pairs: tuple[PairComparison, ...]
    pareto_x: str
    pareto_y: str
    pareto_front: tuple[str, ...]
    recommendation: Recommendation
    notes: tuple[str, ...]
    n_bootstrap: int
    seed: int

    def row(self, name: str) -> ModelRow:
        return next(r for r in self.models if r.name == name)

    def to_dict(self) -> dict:
        d = jsonable({k: v for k, v in self.__dict__.items() if k not in ("pairs", "recommendation", "models")})
        d["models"] = [
            {
                "name": r.name,
                "path": r.path,
                "report_dir": r.report_dir,
                "values": dict(jsonable(r.values)),
                "intervals": dict(jsonable(r.intervals)),
                "missing": dict(r.missing),
            }
            for r in self.models
        ]
        d["pairs"] = [p.to_dict() for p in self.pairs]
        d["recommendation"] = self.recommendation.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ComparisonResult:
        models = tuple(
            ModelRow(
                r["name"],
                r["path"],
                r["report_dir"],
                tuple(r["values"].items()),
                tuple((k, tuple(float("nan") if x is None else x for x in v)) for k, v in r["intervals"].items()),  # type: ignore[misc]
                tuple(r["missing"].items()),
            )
            for r in d["models"]
        )
        return cls(
            models=models,
            reference=d["reference"],
            shared_classes=tuple(d["shared_classes"]),
            classes_note=d["classes_note"],
            n_images=int(d["n_images"]),
            pairs=tuple(PairComparison.from_dict(p) for p in d["pairs"]),
            pareto_x=d["pareto_x"],
            pareto_y=d["pareto_y"],
            pareto_front=tuple(d["pareto_front"]),
            recommendation=Recommendation.from_dict(d["recommendation"]),
            notes=tuple(d["notes"]),
            n_bootstrap=int(d["n_bootstrap"]),
            seed=int(d["seed"]),
        )
