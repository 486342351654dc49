"""The preprocessing check's driver: forward a subsample under each preprocessing setting, sequentially.

No TensorFlow here: the caller passes the model's ``forward`` and ``resize`` as callables (from the
adapter). A *setting* is an opaque hashable value (the section's
:class:`auditor.analyses.preprocessing.Setting`: resize, crop, channels, scaling); the driver needs only
three functions of it: ``cache_key(setting)``, the part that is costly to apply (decode + crop + resize),
``finish(resized, setting)``, the cheap rest (channel order, scaling) applied to the resized float array,
and ``finish_key(setting)``, what ``finish`` depends on. Images are resized once per cache key per batch
and shared by every setting with that key; when two cache keys give identical arrays on a batch (e.g. at
equal size most resizes are the identity, or two families agree), the forward pass is run once for each
distinct (array, finish key) and its predictions shared: no forward pass is spent on pixels already seen.

The settings are evaluated on growing prefixes of the subsample, put in an order whose every prefix
is class-stratified (:func:`auditor.analyses.sequential.stratified_order`); after each look, settings
significantly worse than another are dropped and settings indistinguishable from the chosen one are
tied (:mod:`auditor.analyses.sequential`, where the error control is explained). One more rule drops a
setting early: under it the model predicted **one class for every image** seen so far while those images
hold several classes, and it is no more accurate on them than some still-active setting whose predictions
vary. Such an output does not depend on the image (pixels scaled 255 times too small, say), so it is not how
the model was trained, however few images have been seen; a weak model (30 % against 20 % for the constant
class) would otherwise need the whole subsample to show it by accuracy alone. The chosen setting's
predictions come from the clean pass and cost nothing. ``sequential=False`` runs every setting on
every image (the exhaustive check).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .analyses.sequential import look_schedule, run_elimination, stratified_order


@dataclass
class CheckRun:
    """Predictions of each setting on the ordered subsample (prefixes for those stopped early)."""

    order: np.ndarray  # (m,) positions into the caller's subsample, in evaluation order
    y_true: np.ndarray  # (m,) labels in evaluation order
    predictions: dict[Any, np.ndarray]
    log_probs: dict[Any, np.ndarray]  # log-probability of the true class, same lengths as predictions
    status: dict[Any, str]  # "dropped" | "tied" for settings stopped early
    forward_passes: int  # images forwarded
    forward_passes_exhaustive: int
    looks: tuple[int, ...]


def run_settings(
    settings: Sequence[Any],
    chosen: Any,
    *,
    y_true: np.ndarray,
    chosen_pred: np.ndarray,
    load: Callable[[np.ndarray], Any],
    resize: Callable[[Any, Any], np.ndarray],
    finish: Callable[[np.ndarray, Any], np.ndarray],
    forward: Callable[[np.ndarray], np.ndarray],
    cache_key: Callable[[Any], Any],
    finish_key: Callable[[Any], Any] | None = None,
    chosen_log_prob: np.ndarray | None = None,
    batch_size: int = 32,
    sequential: bool = True,
    first_look: int = 32,
    alpha: float = 0.05,
    n_tie: int | None = 128,
    seed: int = 0,
    on_images: Callable[[int], None] | None = None,
    drop_constant: bool = True,
) -> CheckRun:
    """Evaluate ``settings`` on a subsample and return their predictions.

    Parameters
    ----------
    settings : every setting, ``chosen`` among them.
    y_true, chosen_pred : (m,) labels of the subsample and the chosen setting's predicted labels.
    load : positions into the subsample -> decoded images (anything ``resize`` understands, e.g. a lazy
        per-decoder cache).
    resize : (loaded images, cache key) -> float array of the model's input size.
    finish_key : what ``finish`` depends on (default: the whole setting, i.e. no sharing of forward passes).
    chosen_log_prob : (m,) log-probability of the true class under the chosen setting (default: zeros).
    finish : (resized array, setting) -> model input.
    forward : model input -> (n, k) class probabilities.
    on_images : called with the number of new subsample images at each step (progress).
    drop_constant : drop a setting whose predictions are one class on every image seen (see the module).
    """
    settings = list(settings)
    if chosen not in settings:
        raise ValueError(f"the chosen setting {chosen} is not among the settings")
    ref = settings.index(chosen)
    y_true = np.asarray(y_true)
    m = len(y_true)
    order = stratified_order(y_true, seed=seed) if sequential else np.arange(m)
    y_ord = y_true[order]
    chosen_ord = np.asarray(chosen_pred)[order]
    preds = {s: np.full(m, -1, dtype=np.int64) for s in settings}
    preds[chosen] = chosen_ord.astype(np.int64)
    logp = {s: np.zeros(m) for s in settings}
    if chosen_log_prob is not None:
        logp[chosen] = np.asarray(chosen_log_prob, dtype=float)[order]
    fkey = finish_key or (lambda s: s)
    counter = {"images": 0}

    def evaluate(idx: np.ndarray, start: int, stop: int) -> np.ndarray:
        todo = [settings[i] for i in idx if i != ref]
        groups: dict[Any, list[Any]] = {}
        for s in todo:
            groups.setdefault(cache_key(s), []).append(s)
        for b0 in range(start, stop, batch_size):
            b1 = min(stop, b0 + batch_size)
            images = load(order[b0:b1]) if todo else []
            canonical: dict[Any, Any] = {}  # cache key -> first key with identical pixels
            seen: dict[bytes, list[tuple[Any, np.ndarray]]] = {}
            memo: dict[tuple[Any, Any], np.ndarray] = {}
            rows = np.arange(b1 - b0)
            for key, members in groups.items():
                resized = resize(images, key)
                canonical[key] = key
                sketch = np.ascontiguousarray(resized.reshape(len(resized), -1)[:, ::97]).tobytes()
                for other_key, other in seen.setdefault(sketch, []):
                    if np.array_equal(other, resized):
                        canonical[key] = other_key
                        break
                else:
                    seen[sketch].append((key, resized))
                for s in members:
                    memo_key = (canonical[key], fkey(s))
                    if memo_key not in memo:
                        memo[memo_key] = np.asarray(forward(finish(resized, s)))
                        counter["images"] += b1 - b0
                    probs = memo[memo_key]
                    preds[s][b0:b1] = probs.argmax(axis=1)
                    logp[s][b0:b1] = np.log(np.maximum(probs[rows, y_ord[b0:b1]], 1e-300))
            if on_images is not None:
                on_images(b1 - b0)
        return np.stack([preds[settings[i]][start:stop] == y_ord[start:stop] for i in idx])

    def constant_outputs(active: np.ndarray, stop: int) -> np.ndarray:
        out = np.zeros(len(settings), dtype=bool)
        y = y_ord[:stop]
        if len(np.unique(y)) < 2:
            return out
        idx = np.flatnonzero(active)
        p = [preds[settings[i]][:stop] for i in idx]
        constant = np.array([bool(np.all(q == q[0])) for q in p])
        acc = np.array([float(np.mean(q == y)) for q in p])
        if constant.all():
            return out
        out[idx[constant & (acc <= acc[~constant].max())]] = True
        return out

    schedule = look_schedule(m, first=first_look)
    result = run_elimination(
        evaluate,
        len(settings),
        m,
        reference=ref,
        schedule=schedule,
        alpha=alpha,
        n_tie=n_tie,
        sequential=sequential,
        extra_drop=constant_outputs if drop_constant else None,
    )
    if on_images is not None and result.looks and result.looks[-1] < m:
        on_images(m - result.looks[-1])  # the bar ends full: the rest was not needed
    out = {s: preds[s][: int(result.n_evaluated[i])] if i != ref else preds[s] for i, s in enumerate(settings)}
    out_lp = {s: logp[s][: int(result.n_evaluated[i])] if i != ref else logp[s] for i, s in enumerate(settings)}
    status = {settings[i]: st for i, st in enumerate(result.status) if st in ("dropped", "tied")}
    return CheckRun(
        order=order,
        y_true=y_ord,
        predictions=out,
        log_probs=out_lp,
        status=status,
        forward_passes=counter["images"],
        forward_passes_exhaustive=(len(settings) - 1) * m,
        looks=result.looks,
    )
