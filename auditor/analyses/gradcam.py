"""Grad-CAM arithmetic, cell focus and the randomisation sanity check (pure numpy/OpenCV, no TensorFlow).

* :func:`combine` turns a target layer's activations ``A`` (n, h', w', c) and the gradients ``dS/dA`` of the
  class score ``S`` (taken before the softmax) into class-activation maps (n, h', w'):
  Grad-CAM (Selvaraju et al. 2017): ``relu(sum_c mean_hw(dS/dA_c) * A_c)``; Grad-CAM++ (Chattopadhay et al.
  2018, with the usual exponential-score closed form): per-position weights
  ``alpha = g^2 / (2 g^2 + sum_hw(A) g^3)`` and channel weights ``sum_hw(alpha * relu(g))``.
* :func:`upsample` resizes maps to the input size (bilinear) and scales each to a maximum of 1.
* :func:`focus_score` is the share of a map's energy (its sum) inside a cell mask.
* :func:`spearman` and :func:`sanity_summary` compare trained and randomised maps (Adebayo et al. 2018).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from ._common import jsonable

METHODS = ("gradcam", "gradcam++")
# A map with less than 20 % of its energy inside the cell "looks outside the cell". Calibrated on the sample data
# with the whole-cell mask (tests/test_gradcam_calibration.py, README "Grad-CAM"): a flat, uninformative map scores
# the cell's area share, median 0.12 (75th percentile 0.16), so the threshold must sit above it; a model trained
# where only the background colour tells the classes apart scores median 0.012 and below 0.2 on 97 % of its maps;
# the sample model scores median 0.35, with 13 % of its maps below 0.2.
DEFAULT_FOCUS_THRESHOLD = 0.2
# Median rank correlation at the deepest randomisation stage above this: the maps do not explain the model.
# Calibrated on the sample model (README "Grad-CAM"): over 5 randomisation seeds on 32 sample and 32 PBC images the
# deepest stage's median was -0.54 to 0.51 (the maps change, as they should; the spread is the draw's noise),
# while maps that depend on the image alone keep 1.0; 0.7 leaves the noise of one draw below the flag.
SANITY_FLAG = 0.7


class CamNotApplicable(Exception):
    """The model has no layer Grad-CAM can use (no convolutional layer with a spatial output); the message
    says why. Not an audit failure: the section reports it."""


# ------------------------------------------------------------------------------------------ the maps


def combine(acts: np.ndarray, grads: np.ndarray, method: str = "gradcam") -> np.ndarray:
    """Activations and gradients (n, h, w, c) -> class-activation maps (n, h, w), float64, non-negative."""
    a = np.asarray(acts, dtype=np.float64)
    g = np.asarray(grads, dtype=np.float64)
    if a.shape != g.shape or a.ndim != 4:
        raise ValueError(f"activations {a.shape} and gradients {g.shape} must both be (n, h, w, c)")
    if method == "gradcam":
        weights = g.mean(axis=(1, 2))  # (n, c)
    elif method == "gradcam++":
        g2, g3 = g**2, g**3
        denom = 2.0 * g2 + a.sum(axis=(1, 2), keepdims=True) * g3
        alpha = np.divide(g2, denom, out=np.zeros_like(g2), where=denom != 0)
        weights = (alpha * np.maximum(g, 0.0)).sum(axis=(1, 2))
    else:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    return np.maximum(np.einsum("nhwc,nc->nhw", a, weights), 0.0)


def upsample(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Maps (n, h', w') -> (n, H, W) resized bilinearly (pixel centres aligned, OpenCV) and divided by their
    maximum (an all-zero map stays zero). float32."""
    h, w = size
    out = np.zeros((len(maps), h, w), dtype=np.float32)
    for i, m in enumerate(np.asarray(maps, dtype=np.float32)):
        r = cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR) if m.shape != (h, w) else m.copy()
        r = np.maximum(r, 0.0)
        top = float(r.max())
        out[i] = r / top if top > 0 else r
    return out


def peak_quadrant(m: np.ndarray) -> int:
    """Quadrant (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right) of a map's maximum."""
    r, c = np.unravel_index(int(np.argmax(m)), m.shape)
    return int(2 * (r >= m.shape[0] / 2) + (c >= m.shape[1] / 2))


# ------------------------------------------------------------------------------------------ cell focus


def focus_score(cam: np.ndarray, mask: np.ndarray | None) -> float:
    """Share of the map's energy (sum of its non-negative values) inside ``mask``; NaN when there is no mask
    or the map is all zero."""
    if mask is None:
        return float("nan")
    cam = np.maximum(np.asarray(cam, dtype=np.float64), 0.0)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != cam.shape:
        raise ValueError(f"mask {mask.shape} and map {cam.shape} differ in shape")
    total = cam.sum()
    return float(cam[mask].sum() / total) if total > 0 else float("nan")


@dataclass(frozen=True)
class FocusGroup:
    """Focus scores of one group of images (a class, or the correct / wrong predictions)."""

    name: str
    n_maps: int  # images with a map
    n_scored: int  # of those, images whose cell was segmented (a score)
    mean: float | None
    median: float | None
    n_outside: int  # scored images below the threshold ("looks outside the cell")

    def to_dict(self) -> dict:
        return jsonable(self)


def focus_group(name: str, scores: np.ndarray, threshold: float) -> FocusGroup:
    s = np.asarray(scores, dtype=np.float64)
    ok = s[np.isfinite(s)]
    return FocusGroup(
        name=name,
        n_maps=len(s),
        n_scored=len(ok),
        mean=float(ok.mean()) if len(ok) else None,
        median=float(np.median(ok)) if len(ok) else None,
        n_outside=int(np.sum(ok < threshold)),
    )


@dataclass(frozen=True)
class FocusResult:
    threshold: float
    overall: FocusGroup
    per_class: tuple[FocusGroup, ...]
    correct: FocusGroup
    wrong: FocusGroup

    def to_dict(self) -> dict:
        return jsonable(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> FocusResult:
        return cls(
            threshold=float(d["threshold"]),
            overall=FocusGroup(**d["overall"]),
            per_class=tuple(FocusGroup(**g) for g in d["per_class"]),
            correct=FocusGroup(**d["correct"]),
            wrong=FocusGroup(**d["wrong"]),
        )


def summarise_focus(
    scores: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str], threshold: float
) -> FocusResult:
    """Focus scores (NaN where the cell could not be segmented) of the images with a map -> per class (true
    label), correct vs wrong, overall."""
    scores, y_true, y_pred = np.asarray(scores, float), np.asarray(y_true), np.asarray(y_pred)
    right = y_true == y_pred
    return FocusResult(
        threshold=float(threshold),
        overall=focus_group("all", scores, threshold),
        per_class=tuple(
            focus_group(name, scores[y_true == k], threshold)
            for k, name in enumerate(class_names)
            if np.any(y_true == k)
        ),
        correct=focus_group("correct", scores[right], threshold),
        wrong=focus_group("wrong", scores[~right], threshold),
    )


# ------------------------------------------------------------------------------------------ sanity check


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean rank)."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    xs = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and xs[j + 1] == xs[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0
        i = j + 1
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps (flattened); NaN when either is constant."""
    ra, rb = _ranks(np.ravel(a).astype(np.float64)), _ranks(np.ravel(b).astype(np.float64))
    ra -= ra.mean()
    rb -= rb.mean()
    den = np.sqrt((ra**2).sum() * (rb**2).sum())
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


@dataclass(frozen=True)
class SanityStage:
    """Maps after randomising every layer from the output down to and including ``layer``."""

    layer: str
    median_spearman: float | None
    mean_spearman: float | None
    n_images: int

    def to_dict(self) -> dict:
        return jsonable(self)


@dataclass(frozen=True)
class SanityResult:
    stages: tuple[SanityStage, ...]
    flag_above: float
    flagged: bool  # the deepest stage's median correlation is above flag_above: the maps barely change
    note: str = ""
    # for scale: median rank correlation of the trained maps of two different images (image i with i + 1):
    # what any two maps of this model share (a centred cell, the coarse map's blur), not evidence of this image
    cross_image_spearman: float | None = None
    per_image: tuple[float, ...] = field(default=(), compare=False)  # deepest stage, per image

    def to_dict(self) -> dict:
        return jsonable(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> SanityResult:
        return cls(
            stages=tuple(SanityStage(**s) for s in d["stages"]),
            flag_above=float(d["flag_above"]),
            flagged=bool(d["flagged"]),
            note=d.get("note", ""),
            cross_image_spearman=d.get("cross_image_spearman"),
            per_image=tuple(float("nan") if v is None else v for v in d.get("per_image", ())),
        )


def sanity_summary(
    trained: np.ndarray, randomised: Sequence[tuple[str, np.ndarray]], flag_above: float = SANITY_FLAG
) -> SanityResult:
    """Trained maps (n, H, W) and, per cascading stage, (layer name, maps after randomising down to it)."""
    stages = []
    last: list[float] = []
    for layer, maps in randomised:
        rho = np.array([spearman(t, r) for t, r in zip(trained, maps, strict=True)])
        ok = rho[np.isfinite(rho)]
        stages.append(
            SanityStage(
                layer,
                float(np.median(ok)) if len(ok) else None,
                float(ok.mean()) if len(ok) else None,
                len(rho),
            )
        )
        last = list(rho)
    deepest = stages[-1].median_spearman if stages else None
    flagged = deepest is not None and deepest > flag_above
    cross = np.array([spearman(trained[i], trained[(i + 1) % len(trained)]) for i in range(len(trained))])
    cross = cross[np.isfinite(cross)] if len(trained) > 1 else np.array([])
    return SanityResult(
        tuple(stages),
        float(flag_above),
        bool(flagged),
        cross_image_spearman=float(np.median(cross)) if len(cross) else None,
        per_image=tuple(last),
    )
