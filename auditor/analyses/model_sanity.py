"""Is the model's output usable at all? Checks run on the clean pass before any figure is believed.

A model can load, run and still be broken: its outputs may not depend on the image (every row of
probabilities the same), it may name one class for every image, its "probabilities" may not sum to one,
or they may be saturated at exactly 0 and 1 so that calibration figures mean little. Each of these
gives a warning; the first two mark the model as looking broken (a loud box at the top of the report).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from ..errors import input_error
from ._common import fields_of, jsonable


@dataclass(frozen=True)
class ModelSanity:
    n_images: int
    n_classes_in_data: int
    output_type: str  # probabilities | logits (as the adapter decided)
    max_spread: float  # max over classes of (max - min) probability across images
    constant_output: bool  # every row equal within constant_tol
    mean_probs: tuple[float, ...]  # the average probability row
    n_predicted_classes: int  # distinct argmax classes
    single_predicted_class: str | None  # the one class predicted for every image (several in the data), else None
    saturated_share: float  # share of images whose top probability is exactly 1.0 in float32
    zero_share: float  # share of all class probabilities that are exactly 0.0 in float32
    raw_rows: int | None  # raw-output statistics of the adapter (None when not given)
    raw_sum_min: float | None
    raw_sum_max: float | None
    raw_sum_mean: float | None
    raw_rows_off: int | None  # rows whose raw sum is off 1 by more than row_sum_tol
    rows_not_normalised: bool  # claimed probabilities whose rows do not sum to 1 (the audit normalised them)
    looks_broken: bool
    warnings: tuple[str, ...]

    def to_dict(self) -> dict:
        return jsonable(fields_of(self))

    @classmethod
    def from_dict(cls, d: dict) -> ModelSanity:
        kw = dict(d)
        kw["mean_probs"] = tuple(d["mean_probs"])
        kw["warnings"] = tuple(d["warnings"])
        for key in ("max_spread", "saturated_share", "zero_share"):
            kw[key] = float("nan") if d[key] is None else float(d[key])
        return cls(**kw)


def _fmt_row(row: np.ndarray, names: Sequence[str]) -> str:
    k = len(row)
    if np.all(np.abs(row - 1.0 / k) < 1e-3):
        return f"{1.0 / k:.3f} for each class"
    order = np.argsort(-row, kind="stable")
    parts = [f"{row[j]:.3f} for '{names[j]}'" for j in order[:5]]
    return ", ".join(parts) + (", ..." if k > 5 else "")


def compute_model_sanity(
    probs: np.ndarray,
    y_true: ArrayLike,
    *,
    n_classes_in_data: int,
    output_type: str,
    raw_row_sums: Mapping | None = None,
    class_names: Sequence[str] | None = None,
    constant_tol: float = 1e-4,
    saturation_share: float = 0.5,
    row_sum_tol: float = 1e-3,
) -> ModelSanity:
    """Check the clean pass's probabilities (n, k) for signs of a broken model.

    ``n_classes_in_data``: how many classes have images in the data. ``output_type``: ``probabilities``
    (the model claims to output them; raw row sums are then checked) or ``logits``. ``raw_row_sums``:
    the adapter's ``output_stats`` (``n_rows``, ``min_row_sum``, ``max_row_sum``, ``rows_off``,
    optionally ``mean_row_sum``), from before the audit normalised the rows. ``constant_tol``: rows are
    "the same" when every class's probability varies by at most this across images.
    ``saturation_share``: warn when more than this share of images has a top probability of exactly 1.
    """
    probs = np.asarray(probs, dtype=np.float64)
    y_true = np.asarray(y_true)
    if probs.ndim != 2 or probs.shape[0] != len(y_true):
        raise input_error("probs", f"has shape {probs.shape}", expected=f"({len(y_true)}, n_classes)")
    if output_type not in ("probabilities", "logits"):
        raise input_error("output_type", f"unknown value {output_type!r}", expected="probabilities or logits")
    n, k = probs.shape
    names = list(class_names) if class_names is not None else [str(j) for j in range(k)]
    if len(names) != k:
        raise input_error("class_names", f"has {len(names)} names", expected=f"{k} (one per output)")
    warnings: list[str] = []
    if n:
        spread = float((probs.max(axis=0) - probs.min(axis=0)).max())
        mean = probs.mean(axis=0)
        pred = probs.argmax(axis=1)
        n_pred = len(np.unique(pred))
        top32 = probs.max(axis=1).astype(np.float32)
        saturated = float(np.mean(top32 == np.float32(1.0)))
        zero = float(np.mean(probs.astype(np.float32) == np.float32(0.0)))
    else:
        spread, mean, n_pred, saturated, zero = float("nan"), np.zeros(k), 0, float("nan"), float("nan")
    constant = n >= 2 and spread <= constant_tol
    single = names[int(pred[0])] if (n >= 2 and n_pred == 1 and n_classes_in_data >= 2) else None
    if constant:
        warnings.append(
            f"The model looks broken: its outputs do not depend on the image. Every one of {n} images gets the "
            f"same probabilities ({_fmt_row(mean, names)}, max spread {spread:.1g}), so it predicts "
            f"'{names[int(pred[0])]}' for all of them. The accuracy and every figure below describe a constant "
            "guess; check the model's weights and its input preprocessing."
        )
    elif single is not None:
        warnings.append(
            f"The model looks broken: it predicts '{single}' for all {n} images although the data holds "
            f"{n_classes_in_data} classes. Check the model's weights and its input preprocessing."
        )

    raw = dict(raw_row_sums) if raw_row_sums else None
    r_rows = r_min = r_max = r_mean = r_off = None
    not_normalised = False
    if raw and raw.get("n_rows"):
        r_rows, r_off = int(raw["n_rows"]), int(raw.get("rows_off", 0))
        r_min, r_max = float(raw["min_row_sum"]), float(raw["max_row_sum"])
        r_mean = float(raw["mean_row_sum"]) if raw.get("mean_row_sum") is not None else None
        not_normalised = output_type == "probabilities" and (
            r_off > 0 or abs(r_min - 1.0) > row_sum_tol or abs(r_max - 1.0) > row_sum_tol
        )
        if not_normalised:
            typical = f"{r_mean:.3f}" if r_mean is not None else f"{r_min:.3f} to {r_max:.3f}"
            rng = f" ({r_min:.3f} to {r_max:.3f})" if r_mean is not None else ""
            warnings.append(
                f"The model's 'probabilities' sum to {typical}{rng}, not 1, in {r_off} of {r_rows} images: its "
                "output layer is not a softmax; the audit normalised them (calibration figures describe the "
                "normalised values)."
            )
    if n and saturated > saturation_share:
        warnings.append(
            f"Saturated outputs: {saturated:.0%} of images get a top probability of exactly 1.0 (float32) and "
            f"{zero:.0%} of all class probabilities are exactly 0: confidence carries almost no information, so "
            "calibration figures (ECE, reliability) and confidence thresholds mean little for this model."
        )
    return ModelSanity(
        n_images=int(n),
        n_classes_in_data=int(n_classes_in_data),
        output_type=output_type,
        max_spread=spread,
        constant_output=bool(constant),
        mean_probs=tuple(float(v) for v in mean),
        n_predicted_classes=n_pred,
        single_predicted_class=single,
        saturated_share=saturated,
        zero_share=zero,
        raw_rows=r_rows,
        raw_sum_min=r_min,
        raw_sum_max=r_max,
        raw_sum_mean=r_mean,
        raw_rows_off=r_off,
        rows_not_normalised=bool(not_normalised),
        looks_broken=bool(constant or single is not None),
        warnings=tuple(warnings),
    )
