"""Helpers shared by the analyses: input validation and JSON conversion."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ..errors import input_error


def sign_test_p(wins: int, losses: int) -> float:
    """One-sided exact sign test (McNemar on paired right/wrong): P(at least ``wins`` heads in ``wins + losses``
    fair coin flips), in exact integer arithmetic; 1 when there is no discordant pair. The vectorised form for
    many pairs at once is :func:`auditor.analyses.sequential.sign_test_p`."""
    wins, losses = int(wins), int(losses)
    n = wins + losses
    if n == 0:
        return 1.0
    return float(sum(math.comb(n, i) for i in range(wins, n + 1)) / 2**n)


def fields_of(obj: Any) -> dict[str, Any]:
    """A dataclass instance's fields as a dict, one level deep (values untouched)."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def jsonable(value: Any) -> Any:
    """Convert dataclasses (field by field), numpy scalars/arrays, tuples and NaN/inf to JSON
    primitives (NaN/inf -> None)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(fields_of(value))
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return None if math.isnan(f) or math.isinf(f) else f
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def nan_if_none(value: Any) -> float:
    return float("nan") if value is None else float(value)


def check_labels_probs(
    y_true: ArrayLike, probs: np.ndarray, n_classes: int | None = None, *, name: str = "probs"
) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``y_true`` (n,) integer labels and ``probs`` (n, k) rows summing to 1."""
    probs = np.asarray(probs, dtype=np.float64)
    y_true = np.asarray(y_true)
    if probs.ndim != 2:
        raise input_error(name, f"has shape {probs.shape}", expected="a 2-D array (n_samples, n_classes)")
    k = probs.shape[1] if n_classes is None else n_classes
    if probs.shape[1] != k:
        raise input_error(name, f"has {probs.shape[1]} columns", expected=f"{k} (one per class)")
    if y_true.shape != (probs.shape[0],):
        raise input_error("y_true", f"has shape {y_true.shape}", expected=f"({probs.shape[0]},)")
    if len(y_true) and (not np.issubdtype(y_true.dtype, np.integer) or y_true.min() < 0 or y_true.max() >= k):
        raise input_error("y_true", "holds values that are not class indices", expected=f"integers in [0, {k})")
    if not np.all(np.isfinite(probs)):
        raise input_error(name, "contains NaN or infinite values")
    if len(probs) and (probs.min() < -1e-6 or np.abs(probs.sum(axis=1) - 1).max() > 1e-3):
        raise input_error(name, "rows are not probability vectors", expected="non-negative rows summing to 1")
    return y_true.astype(np.int64), probs
