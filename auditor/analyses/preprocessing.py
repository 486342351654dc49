"""The preprocessing check: does the audit feed the model the way it was trained?

On a stratified subsample the model is run under every resize method and every pixel scaling; this
module turns the resulting predictions into accuracies and plain-language warnings. Two things are
flagged:

* **mismatch**: some other setting beats the chosen one by more than ``mismatch_points`` (2) points
  of accuracy, and the difference is not sampling noise (a one-sided sign test on the images where
  exactly one of the two settings is right, p < 0.05), so the audit's preprocessing probably differs
  from training's;
* **resize sensitivity**: under the chosen scaling, the resize methods differ by more than
  ``spread_points`` (5) points, so the resize choice alone moves every number in the report.

(The scalings themselves always differ hugely for a trained model, so their spread is not a warning.)

The check may be *sequential* (:mod:`auditor.prepcheck`, :mod:`auditor.analyses.sequential`): a
setting significantly worse than another is **dropped** after the images it has seen, and one that has
been right and wrong on exactly the same images as the chosen setting is **tied** with it and stops.
Then ``predictions`` holds, for such a setting, its predictions on the first ``n`` images of the
subsample (a prefix, in the order of ``y_true``) and ``status`` says why it stopped. A dropped setting's
accuracy is its accuracy on its ``n`` images, and it is never the best; a tied setting counts with the
chosen setting's accuracy (it matched it on every image it saw). Settings evaluated to the end are
compared on the whole subsample, exactly as the exhaustive check does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ._common import jsonable


@dataclass(frozen=True)
class PreprocessingCheck:
    """Accuracy of each (resize, scaling) setting on the same subsample."""

    n_samples: int
    resize_methods: tuple[str, ...]
    scalings: tuple[str, ...]
    accuracy: tuple[tuple[float, ...], ...]  # [resize][scaling]
    chosen: tuple[str, str]
    best: tuple[str, str]
    chosen_accuracy: float
    best_accuracy: float
    mismatch_p_value: float  # one-sided sign test: best better than chosen by chance
    resize_spread: float  # max - min accuracy over resize methods, chosen scaling
    warnings: tuple[str, ...]
    mismatch_points: float
    spread_points: float
    n_evaluated: tuple[tuple[int, ...], ...] = ()  # [resize][scaling] images each setting was run on (0: none)
    status: tuple[tuple[str, ...], ...] = ()  # [resize][scaling] "full" | "dropped" | "tied" | "" (not run)
    forward_passes: int = 0  # images forwarded by the check (the chosen setting's come from the clean pass)
    forward_passes_exhaustive: int = 0  # what running every other setting on every image would take

    def to_dict(self) -> dict:
        return jsonable(self)

    @classmethod
    def from_dict(cls, d: dict) -> PreprocessingCheck:
        return cls(
            n_samples=int(d["n_samples"]),
            resize_methods=tuple(d["resize_methods"]),
            scalings=tuple(d["scalings"]),
            accuracy=tuple(tuple(float("nan") if v is None else float(v) for v in row) for row in d["accuracy"]),
            chosen=tuple(d["chosen"]),
            best=tuple(d["best"]),
            chosen_accuracy=float(d["chosen_accuracy"]),
            best_accuracy=float(d["best_accuracy"]),
            mismatch_p_value=float(d["mismatch_p_value"]),
            resize_spread=float(d["resize_spread"]),
            warnings=tuple(d["warnings"]),
            mismatch_points=float(d["mismatch_points"]),
            spread_points=float(d["spread_points"]),
            n_evaluated=tuple(tuple(int(v) for v in row) for row in d.get("n_evaluated", ())),
            status=tuple(tuple(str(v) for v in row) for row in d.get("status", ())),
            forward_passes=int(d.get("forward_passes", 0)),
            forward_passes_exhaustive=int(d.get("forward_passes_exhaustive", 0)),
        )

    def stopped_early(self) -> list[tuple[str, str, str, int]]:
        """(resize, scaling, status, n images) of each setting stopped before the end of the subsample."""
        return [
            (r, s, self.status[i][j], self.n_evaluated[i][j])
            for i, r in enumerate(self.resize_methods)
            for j, s in enumerate(self.scalings)
            if self.status and self.status[i][j] in ("dropped", "tied")
        ]


def _exceeds(fraction: float, points: float) -> bool:
    """``fraction`` (of 1) is more than ``points`` (of 100), ignoring float rounding at equality."""
    return round(fraction * 100, 9) > points


def sign_test_p(wins: int, losses: int) -> float:
    """One-sided exact sign test: P(at least ``wins`` of ``wins + losses`` fair coin flips)."""
    n = wins + losses
    if n == 0:
        return 1.0
    return float(sum(math.comb(n, i) for i in range(wins, n + 1)) / 2**n)


def describe(setting: tuple[str, str]) -> str:
    return f"--resize {setting[0]} --preprocess {setting[1]}"


def compute_preprocessing_check(
    y_true: Sequence[int],
    predictions: Mapping[tuple[str, str], np.ndarray],
    *,
    chosen: tuple[str, str],
    mismatch_points: float = 2.0,
    spread_points: float = 5.0,
    status: Mapping[tuple[str, str], str] | None = None,
    forward_passes: int = 0,
    forward_passes_exhaustive: int = 0,
) -> PreprocessingCheck:
    """Accuracies and warnings from predicted labels under each setting.

    Parameters
    ----------
    y_true : (m,) int, true labels of the subsample.
    predictions : {(resize, scaling): predicted labels}; must contain ``chosen`` with all ``m``. A setting
        stopped early (see ``status``) has its predictions on the first ``n <= m`` images only.
    chosen : the (resize, scaling) the audit uses.
    status : {(resize, scaling): "dropped" | "tied"} for settings stopped early (default: none).
    forward_passes, forward_passes_exhaustive : recorded as given (images forwarded by the check, and by
        an exhaustive one).
    """
    y_true = np.asarray(y_true)
    status = dict(status or {})
    if chosen not in predictions:
        raise ValueError(f"the chosen setting {chosen} has no predictions")
    if len(predictions[chosen]) != len(y_true):
        raise ValueError("the chosen setting needs predictions on every image of the subsample")
    for key, pred in predictions.items():
        if len(pred) > len(y_true) or (len(pred) < len(y_true) and status.get(key) not in ("dropped", "tied")):
            raise ValueError(f"setting {key} has {len(pred)} predictions for {len(y_true)} images")
    resizes = tuple(dict.fromkeys(r for r, _ in predictions))
    scalings = tuple(dict.fromkeys(s for _, s in predictions))
    acc = {
        key: float(np.mean(np.asarray(pred) == y_true[: len(pred)])) if len(pred) else float("nan")
        for key, pred in predictions.items()
    }
    for key in predictions:
        if status.get(key) == "tied":  # right and wrong on the same images as the chosen, as far as it ran
            acc[key] = acc[chosen]
    grid = tuple(tuple(acc.get((r, s), float("nan")) for s in scalings) for r in resizes)
    n_grid = tuple(tuple(len(predictions[(r, s)]) if (r, s) in predictions else 0 for s in scalings) for r in resizes)
    st_grid = tuple(
        tuple(status.get((r, s), "full") if (r, s) in predictions else "" for s in scalings) for r in resizes
    )
    # ties go to the chosen setting, then to the first in table order; dropped settings were
    # significantly worse than another, so they are never the best
    candidates = [key for key in acc if status.get(key) != "dropped"]
    best = max(candidates, key=lambda key: (acc[key], key == chosen))
    chosen_acc, best_acc = acc[chosen], acc[best]
    same_scaling = [acc[(r, chosen[1])] for r in resizes if (r, chosen[1]) in acc]
    spread = max(same_scaling) - min(same_scaling)
    correct_best = np.asarray(predictions[best]) == y_true
    correct_chosen = np.asarray(predictions[chosen]) == y_true
    p_value = sign_test_p(int(np.sum(correct_best & ~correct_chosen)), int(np.sum(correct_chosen & ~correct_best)))
    warnings = []
    if _exceeds(best_acc - chosen_acc, mismatch_points) and p_value < 0.05:
        warnings.append(
            f"Preprocessing mismatch: the audit's setting ({describe(chosen)}) scores {chosen_acc:.1%} on the "
            f"{len(y_true)}-image check subsample, but {describe(best)} scores {best_acc:.1%} (sign test "
            f"p = {p_value:.2g}). The audit probably "
            f"does not prepare images the way training did, and every number in this report depends on it; "
            f"re-run with {describe(best)} or fix the model's sidecar if that is how it was trained."
        )
    if _exceeds(spread, spread_points):
        best_resize = max(resizes, key=lambda r: acc.get((r, chosen[1]), -1.0))
        warnings.append(
            f"Resize sensitivity: with --preprocess {chosen[1]}, accuracy moves by {spread * 100:.1f} points "
            f"between resize methods ({min(same_scaling):.1%} to {max(same_scaling):.1%}; best: {best_resize}). "
            f"Make sure the audit resizes images exactly as training did."
        )
    return PreprocessingCheck(
        n_samples=len(y_true),
        resize_methods=resizes,
        scalings=scalings,
        accuracy=grid,
        chosen=chosen,
        best=best,
        chosen_accuracy=chosen_acc,
        best_accuracy=best_acc,
        mismatch_p_value=float(p_value),
        resize_spread=float(spread),
        warnings=tuple(warnings),
        mismatch_points=mismatch_points,
        spread_points=spread_points,
        n_evaluated=n_grid,
        status=st_grid,
        forward_passes=int(forward_passes),
        forward_passes_exhaustive=int(forward_passes_exhaustive),
    )
