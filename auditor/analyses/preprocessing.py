"""The preprocessing check: does the audit feed the model the way it was trained?

A *setting* (:class:`Setting`) is one way of preparing pixels: a resize method of any loader family
(:data:`auditor.resize.METHODS`: plain ``tf.image.resize`` names, ``tf:*-aa``, ``pil:*``, ``cv2:*``), a crop
(``none``, and ``center-square`` when the images' aspect ratio differs from the model input's), a channel
order (``rgb``, ``bgr``) and a pixel scaling (:data:`auditor.preprocess.SCALINGS`). On a stratified
subsample the model is run under every setting; this module turns the predictions into accuracies and
plain-language warnings. Three things are flagged:

* **mismatch**: some other setting beats the chosen one by more than ``mismatch_points`` (2) points
  of accuracy, and the difference is not sampling noise (a one-sided sign test on the images where
  exactly one of the two settings is right, p < 0.05 after a Bonferroni correction for the number of
  settings in the space searched, since the best is the largest of them), so the audit's preprocessing probably differs
  from training's. The advice names every flag of the best setting (:func:`flags`), so feeding it back
  reproduces that setting exactly;
* **doubtful** (a *wide* mismatch): the mismatch warning fires and the best setting beats the chosen one by
  at least ``doubtful_points`` (10) points. The summary then opens with it and the headline numbers carry a
  "preprocessing doubtful" mark;
* **resize sensitivity**: with the chosen crop, channel order and scaling, two resize methods differ by more
  than ``spread_points`` (5) points on the images both were run on (the whole subsample, or the first images of
  one stopped early), so the resize choice alone moves every number in the report.

(The scalings and channel orders themselves differ hugely for a trained model, so their spread is not a
warning.)

Best setting: the highest accuracy among settings not dropped; equal accuracies go to the chosen setting,
then to the first in table order. A tied setting (below) counts with the chosen one's accuracy. (The mean
log-probability of the true class is recorded per setting, but not used: it is not a sign of the training
pipeline either, since sharper kernels make a model surer on the same images, and a tied setting has it on
a prefix only, so the sequential and exhaustive checks could disagree through it.)

Limits: accuracy on a subsample cannot tell apart resize kernels whose pixels are nearly the same (e.g.
``pil:bilinear``, ``pil:hamming``, ``cv2:area``, ``tf:bilinear-aa`` when shrinking), and a crop or a sharper
kernel may simply suit a model better than its own training pipeline; the best setting is the one that
scores best, which is strong evidence about the scaling and channel order and about gross resize
differences (nearest against antialiased), not proof of the exact training kernel.

The check may be *sequential* (:mod:`auditor.prepcheck`, :mod:`auditor.analyses.sequential`): a
setting significantly worse than another is **dropped** after the images it has seen, and one that has
been right and wrong on exactly the same images as the chosen setting is **tied** with it and stops.
Then ``predictions`` holds, for such a setting, its predictions on the first ``n`` images of the
subsample (a prefix, in the order of ``y_true``) and ``status`` says why it stopped. A dropped setting's
accuracy is its accuracy on its ``n`` images, and it is never the best. Settings evaluated to the end are
compared on the whole subsample, exactly as the exhaustive check does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from ._common import jsonable, sign_test_p


class Setting(NamedTuple):
    """One way of preparing pixels, in the order the flags are applied."""

    resize: str
    crop: str = "none"
    channels: str = "rgb"
    scaling: str = "unit"


def flags(setting: Setting) -> str:
    """Every command-line flag of ``setting``: fed back to ``wbc-audit`` they reproduce it exactly."""
    s = Setting(*setting)
    return f"--resize {s.resize} --crop {s.crop} --channels {s.channels} --preprocess {s.scaling}"


def describe(setting: Setting) -> str:
    return flags(setting)


def _setting(value) -> Setting:
    value = tuple(value)
    if len(value) == 2:  # reports written before crop and channel order were explored
        return Setting(value[0], "none", "rgb", value[1])
    return Setting(*value)


#: how the report names each family of resize methods (a method's family is its ``family:`` prefix)
RESIZE_FAMILY_TEXT = {
    "plain": "tf.image.resize as Keras's folder loader",
    "tf": "tf.image.resize with antialiasing",
    "pil": "PIL as keras load_img and flow_from_directory",
    "cv2": "OpenCV cv2.resize",
}


def _family(method: str) -> str:
    prefix, sep, _ = method.partition(":")
    return prefix if sep and prefix in RESIZE_FAMILY_TEXT else "plain"


@dataclass(frozen=True)
class PreprocessingCheck:
    """Accuracy of each setting on the same subsample (flat lists, in the order the settings were explored)."""

    n_samples: int
    settings: tuple[Setting, ...]
    accuracy: tuple[float, ...]  # per setting (a dropped one: on its n_evaluated images)
    chosen: Setting
    best: Setting
    chosen_accuracy: float
    best_accuracy: float
    mismatch_p_value: float  # one-sided sign test: best better than chosen by chance
    resize_spread: float  # largest difference between two resize methods (chosen crop, channels, scaling)
    warnings: tuple[str, ...]
    mismatch_points: float
    spread_points: float
    n_evaluated: tuple[int, ...] = ()  # per setting: images it was run on
    status: tuple[str, ...] = ()  # per setting: "full" | "dropped" | "tied"
    forward_passes: int = 0  # images forwarded by the check (the chosen setting's come from the clean pass)
    forward_passes_exhaustive: int = 0  # what running every other setting on every image would take
    doubtful: bool = False  # the mismatch is wide: the report's numbers are probably not the model's
    doubtful_points: float = 10.0
    mean_log_prob: tuple[float, ...] = ()  # per setting: mean log-probability of the true class (recorded only)

    # ------------------------------------------------------------------ views
    @property
    def resize_methods(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.resize for s in self.settings))

    @property
    def resize_families(self) -> tuple[str, ...]:
        """The libraries whose resize methods were tried, in the order met (for the report's prose)."""
        return tuple(dict.fromkeys(RESIZE_FAMILY_TEXT[_family(m)] for m in self.resize_methods))

    @property
    def scalings(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.scaling for s in self.settings))

    @property
    def crops(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.crop for s in self.settings))

    @property
    def channel_orders(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.channels for s in self.settings))

    @property
    def space_size(self) -> int:
        """Settings in the space searched (the exhaustive check runs them all; the sequential one a part)."""
        if self.n_samples and self.forward_passes_exhaustive:
            return self.forward_passes_exhaustive // self.n_samples + 1
        return len(self.settings)

    @property
    def staged(self) -> bool:
        """Whether only a part of the space was run (the sequential check's two stages)."""
        return len(self.settings) < self.space_size

    def index(self, setting) -> int:
        return self.settings.index(_setting(setting))

    def accuracy_of(self, setting) -> float:
        return self.accuracy[self.index(setting)]

    def grid(self, crop: str, channels: str) -> tuple[tuple[str, ...], tuple[str, ...], np.ndarray, list, list]:
        """(resize methods, scalings, accuracy [resize][scaling] (NaN: not explored), status, n images) for one
        crop and channel order."""
        pos = {s: i for i, s in enumerate(self.settings)}
        rs, ss = self.resize_methods, self.scalings
        acc = np.full((len(rs), len(ss)), np.nan)
        st = [["" for _ in ss] for _ in rs]
        nn = [[0 for _ in ss] for _ in rs]
        for a, r in enumerate(rs):
            for b, sc in enumerate(ss):
                i = pos.get(Setting(r, crop, channels, sc))
                if i is not None:
                    acc[a, b] = self.accuracy[i]
                    st[a][b] = self.status[i] if self.status else "full"
                    nn[a][b] = self.n_evaluated[i] if self.n_evaluated else self.n_samples
        return rs, ss, acc, st, nn

    def best_of(self, *, crop: str | None = None, channels: str | None = None) -> tuple[Setting, float] | None:
        """The most accurate setting not dropped with this crop and/or channel order (None: none explored)."""
        cands = [
            (a, s)
            for s, a, st in zip(self.settings, self.accuracy, self.status or ("full",) * len(self.settings))
            if st != "dropped" and (crop is None or s.crop == crop) and (channels is None or s.channels == channels)
        ]
        if not cands:
            return None
        a, s = max(cands, key=lambda c: c[0])
        return s, a

    def stopped_early(self) -> list[tuple[Setting, str, int]]:
        """(setting, status, n images) of each setting stopped before the end of the subsample."""
        return [
            (s, st, n) for s, st, n in zip(self.settings, self.status, self.n_evaluated) if st in ("dropped", "tied")
        ]

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        return jsonable(self)

    @classmethod
    def from_dict(cls, d: dict) -> PreprocessingCheck:
        f = lambda v: float("nan") if v is None else float(v)  # noqa: E731
        if "settings" in d:
            settings = tuple(_setting(s) for s in d["settings"])
            accuracy = tuple(f(v) for v in d["accuracy"])
            n_eval = tuple(int(v) for v in d.get("n_evaluated", ()))
            status = tuple(str(v) for v in d.get("status", ()))
        else:  # the grid of a report written before (resize x scaling, crop none, channels rgb)
            grid: list[Setting] = []
            acc: list[float] = []
            n_eval_l: list[int] = []
            status_l: list[str] = []
            for i, r in enumerate(d["resize_methods"]):
                for j, sc in enumerate(d["scalings"]):
                    st = d["status"][i][j] if d.get("status") else "full"
                    if st == "":
                        continue
                    grid.append(Setting(r, "none", "rgb", sc))
                    acc.append(f(d["accuracy"][i][j]))
                    n_eval_l.append(int(d["n_evaluated"][i][j]) if d.get("n_evaluated") else int(d["n_samples"]))
                    status_l.append(st)
            settings, accuracy, n_eval, status = tuple(grid), tuple(acc), tuple(n_eval_l), tuple(status_l)
        return cls(
            n_samples=int(d["n_samples"]),
            settings=settings,
            accuracy=accuracy,
            chosen=_setting(d["chosen"]),
            best=_setting(d["best"]),
            chosen_accuracy=float(d["chosen_accuracy"]),
            best_accuracy=float(d["best_accuracy"]),
            mismatch_p_value=float(d["mismatch_p_value"]),
            resize_spread=float(d["resize_spread"]),
            warnings=tuple(d["warnings"]),
            mismatch_points=float(d["mismatch_points"]),
            spread_points=float(d["spread_points"]),
            n_evaluated=n_eval,
            status=status,
            forward_passes=int(d.get("forward_passes", 0)),
            forward_passes_exhaustive=int(d.get("forward_passes_exhaustive", 0)),
            doubtful=bool(d.get("doubtful", False)),
            doubtful_points=float(d.get("doubtful_points", 10.0)),
            mean_log_prob=tuple(f(v) for v in d.get("mean_log_prob", ())),
        )


def _exceeds(fraction: float, points: float) -> bool:
    """``fraction`` (of 1) is more than ``points`` (of 100), ignoring float rounding at equality."""
    return round(fraction * 100, 9) > points


def compute_preprocessing_check(
    y_true: ArrayLike,
    predictions: Mapping[Setting, np.ndarray],
    *,
    chosen: Setting,
    mismatch_points: float = 2.0,
    spread_points: float = 5.0,
    doubtful_points: float = 10.0,
    status: Mapping[Setting, str] | None = None,
    log_probs: Mapping[Setting, np.ndarray] | None = None,
    forward_passes: int = 0,
    forward_passes_exhaustive: int = 0,
) -> PreprocessingCheck:
    """Accuracies and warnings from predicted labels under each setting.

    Parameters
    ----------
    y_true : (m,) int, true labels of the subsample.
    predictions : {setting: predicted labels}; must contain ``chosen`` with all ``m``. A setting stopped early
        (see ``status``) has its predictions on the first ``n <= m`` images only. Keys may be plain tuples
        ``(resize, crop, channels, scaling)``.
    chosen : the setting the audit uses.
    status : {setting: "dropped" | "tied"} for settings stopped early (default: none).
    log_probs : {setting: log-probability of the true class per image evaluated}, recorded as means.
    forward_passes, forward_passes_exhaustive : recorded as given (images forwarded by the check, and by
        an exhaustive one); the latter also gives the size of the space searched, for the mismatch test's
        correction (default: the settings given).
    """
    y_true = np.asarray(y_true)
    predictions = {_setting(k): np.asarray(v) for k, v in predictions.items()}
    status = {_setting(k): v for k, v in (status or {}).items()}
    log_probs = {_setting(k): np.asarray(v, dtype=float) for k, v in (log_probs or {}).items()}
    chosen = _setting(chosen)
    if chosen not in predictions:
        raise ValueError(f"the chosen setting {chosen} has no predictions")
    if len(predictions[chosen]) != len(y_true):
        raise ValueError("the chosen setting needs predictions on every image of the subsample")
    for key, pred in predictions.items():
        if len(pred) > len(y_true) or (len(pred) < len(y_true) and status.get(key) not in ("dropped", "tied")):
            raise ValueError(f"setting {key} has {len(pred)} predictions for {len(y_true)} images")
    settings = tuple(predictions)
    acc = {k: float(np.mean(p == y_true[: len(p)])) if len(p) else float("nan") for k, p in predictions.items()}
    lp = {k: float(np.mean(v)) if len(v) else float("-inf") for k, v in log_probs.items()}
    for key in settings:
        if status.get(key) == "tied":  # right and wrong on the same images as the chosen, as far as it ran
            acc[key] = acc[chosen]
            lp[key] = lp.get(chosen, float("-inf"))
    order = {k: i for i, k in enumerate(settings)}
    candidates = [k for k in settings if status.get(k) != "dropped"]
    best = max(candidates, key=lambda k: (acc[k], k == chosen, -order[k]))
    chosen_acc, best_acc = acc[chosen], acc[best]
    # resize methods with the chosen crop, channels and scaling: the spread is the largest accuracy difference
    # between two of them on the images both were run on (the whole subsample, or the first images of one stopped
    # early: a dropped resize was significantly worse than another, and on its images it shows by how much; a tied
    # one is right and wrong where the chosen is)
    same_keys = [k for k in settings if k[1:] == chosen[1:]]
    right = {}
    for k in same_keys:
        pred = predictions[chosen] if status.get(k) == "tied" else predictions[k]
        right[k] = pred == y_true[: len(pred)]
    spread, spread_pair = 0.0, (chosen, chosen)
    for a in same_keys:
        for b in same_keys:
            n = min(len(right[a]), len(right[b]))
            if a != b and n and (d := float(np.mean(right[a][:n])) - float(np.mean(right[b][:n]))) > spread:
                spread, spread_pair = d, (a, b)
    correct_best = predictions[best] == y_true
    correct_chosen = predictions[chosen] == y_true
    p_value = sign_test_p(int(np.sum(correct_best & ~correct_chosen)), int(np.sum(correct_chosen & ~correct_best)))
    # the best is the largest of many settings, so its p-value is corrected for the number that could have been
    # it (Bonferroni over the space searched, the chosen left out; the same for the sequential and exhaustive
    # checks): a weak model's best of 50 noisy settings is otherwise "significantly" better by chance
    n_space = len(settings)
    if forward_passes_exhaustive and len(y_true):
        n_space = max(n_space, forward_passes_exhaustive // len(y_true) + 1)
    n_candidates = max(1, n_space - 1)
    p_corrected = min(1.0, p_value * n_candidates)
    warnings = []
    mismatch = _exceeds(best_acc - chosen_acc, mismatch_points) and p_corrected < 0.05
    doubtful = mismatch and round((best_acc - chosen_acc) * 100, 9) >= doubtful_points
    if mismatch:
        differ = [f for f, a, b in zip(Setting._fields, chosen, best) if a != b]
        warnings.append(
            f"Preprocessing mismatch: the audit's setting ({flags(chosen)}) scores {chosen_acc:.1%} on the "
            f"{len(y_true)}-image check subsample, but {flags(best)} scores {best_acc:.1%} (sign test "
            f"p = {p_value:.2g}, {p_corrected:.2g} corrected for the {n_candidates} settings compared; they "
            f"differ in {', '.join(differ)}). The audit probably does not prepare images the way training did, "
            f"and every number in this report depends on it; re-run with {flags(best)} "
            f"or fix the model's sidecar if that is how it was trained."
        )
    if _exceeds(spread, spread_points):
        hi, lo = spread_pair
        n = min(len(right[hi]), len(right[lo]))
        warnings.append(
            f"Resize sensitivity: with --crop {chosen.crop} --channels {chosen.channels} --preprocess "
            f"{chosen.scaling}, accuracy moves by {spread * 100:.1f} points between resize methods "
            f"({lo.resize} {float(np.mean(right[lo][:n])):.1%} against {hi.resize} {float(np.mean(right[hi][:n])):.1%}"
            f"{'' if n == len(y_true) else f' on the {n} images both were run on'}). "
            f"Make sure the audit resizes images exactly as training did."
        )
    return PreprocessingCheck(
        n_samples=len(y_true),
        settings=settings,
        accuracy=tuple(acc[k] for k in settings),
        chosen=chosen,
        best=best,
        chosen_accuracy=chosen_acc,
        best_accuracy=best_acc,
        mismatch_p_value=float(p_value),
        resize_spread=float(spread),
        warnings=tuple(warnings),
        mismatch_points=mismatch_points,
        spread_points=spread_points,
        n_evaluated=tuple(len(predictions[k]) for k in settings),
        status=tuple(status.get(k, "full") for k in settings),
        forward_passes=int(forward_passes),
        forward_passes_exhaustive=int(forward_passes_exhaustive),
        doubtful=bool(doubtful),
        doubtful_points=doubtful_points,
        mean_log_prob=tuple(lp.get(k, float("nan")) for k in settings),
    )
