"""Sequential elimination of settings evaluated on the same images (pure numpy).

Many settings (e.g. preprocessing choices) are compared by their accuracy on one subsample of
``m`` images. Forwarding every setting over all ``m`` images is wasteful when some of them are
visibly hopeless after a few dozen images, so the settings are evaluated on growing prefixes of
the subsample (the *looks*, :func:`look_schedule`; the subsample is put in an order in which every
prefix is class-stratified and random, :func:`stratified_order`). At each look:

* **drop**: a setting ``s`` is dropped as soon as some still-active setting ``t`` is significantly
  better than it on the images both have seen: a one-sided exact sign (McNemar) test on the
  discordant images (``t`` right and ``s`` wrong: a win for ``t``; the reverse: a loss),
  ``p <= alpha / ((S - 1) * K)`` for ``S`` settings and ``K`` planned looks with a test (every look
  but the last, after which nothing is left to save; :func:`drop_level`).

  *Why the error rate is controlled.* Take any setting ``s*`` that is not worse than any other
  setting on the whole subsample (in particular the exhaustive check's best setting): for every
  ``t``, ``t`` wins at most half of their discordant images. Each look sees a random prefix of the
  subsample, so the number of ``t``-wins among the discordant images seen is hypergeometric with a
  win share of at most 1/2; its upper tail is no heavier than the binomial(1/2) tail the sign test
  uses (Hoeffding 1963, sampling without replacement), so each single test rejects with
  probability at most its level. ``s*`` can only be dropped by one of the ``(S - 1) * K``
  (opponent, look) tests, and by the union (Bonferroni) bound the probability that it is *ever*
  dropped is at most ``alpha``, whatever the data-dependent choices of opponents and looks. The
  exhaustive best therefore survives to the end with probability at least ``1 - alpha``; the
  bound holds for any number of settings because the level divides by it.

* **tie**: a setting that has been right and wrong on exactly the same images as the reference
  (the audit's own setting, whose predictions are known on the whole subsample) on every one of at
  least ``n_tie`` images is settled as *tied* with it and stops: as far as accuracy goes it is the
  same setting. A setting whose correctness differs from the reference's on a share ``d`` of the
  images slips through with probability ``(1 - d) ** n_tie``: at the default ``n_tie = 128``, 7.5 %
  for ``d = 2 %`` (a setting that differs on only 2 % of images cannot beat the reference by more than
  2 points, the mismatch threshold) and 0.14 % for ``d = 5 %`` (:func:`tie_miss_probability`). This is
  a cost rule, not a test: it only stops settings that have shown no difference at all. (At
  ``n_tie = 64`` it tied, on real images with a weak model, three resize methods that later turned out
  1 point better than the reference over 250 images, changing the reported best setting.)

The reference is never dropped or tied. The loop stops when every other setting is decided or the
subsample is used up; settings still active then have been evaluated on all ``m`` images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def look_schedule(m: int, *, first: int = 32, growth: float = 2.0) -> tuple[int, ...]:
    """Prefix sizes of the looks: ``first``, then ``growth`` times the previous, ending at ``m``.

    >>> look_schedule(250)
    (32, 64, 128, 250)
    """
    if m <= 0:
        return ()
    if first < 1 or growth <= 1:
        raise ValueError("first must be >= 1 and growth > 1")
    sizes = []
    n = first
    while n < m:
        sizes.append(int(n))
        n = max(int(n) + 1, int(math.ceil(n * growth)))
    sizes.append(int(m))
    if len(sizes) > 1 and sizes[-1] - sizes[-2] < first // 2:  # a tiny last look is a wasted test
        sizes.pop(-2)
    return tuple(sizes)


def stratified_order(labels: np.ndarray, *, seed: int) -> np.ndarray:
    """A permutation of ``range(len(labels))`` whose every prefix is (nearly) class-stratified.

    Each class is shuffled (seeded); its ``j``-th item of ``n_c`` gets the position key
    ``(j + u) / n_c`` with ``u`` uniform in [0, 1), and items are sorted by key: any prefix holds each
    class in proportion to its size, to within one item, and is otherwise random.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    keys = np.empty(len(labels), dtype=float)
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        idx = idx[rng.permutation(len(idx))]
        keys[idx] = (np.arange(len(idx)) + rng.random(len(idx))) / len(idx)
    return np.argsort(keys, kind="stable")


_LOG_FACT_CACHE: list[np.ndarray] = [np.zeros(1)]


def _log_factorials(n: int) -> np.ndarray:
    lf = _LOG_FACT_CACHE[0]
    if len(lf) <= n:
        lf = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, 2 * n + 2, dtype=float)))])
        _LOG_FACT_CACHE[0] = lf
    return lf


def sign_test_p(wins, losses) -> np.ndarray:
    """One-sided exact sign test, elementwise: P(at least ``wins`` heads in ``wins + losses`` fair flips).

    Equal to ``scipy.stats.binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue``; 1 when
    there is no discordant pair.
    """
    wins = np.asarray(wins, dtype=np.int64)
    losses = np.asarray(losses, dtype=np.int64)
    n = wins + losses
    out = np.ones(np.broadcast(wins, losses).shape, dtype=float)
    if out.size == 0:
        return out
    lf = _log_factorials(int(n.max()) if n.size else 0)
    wins_b, n_b = np.broadcast_arrays(wins, n)
    for nn in np.unique(n_b):
        if nn == 0:
            continue
        i = np.arange(nn + 1)
        pmf = np.exp(lf[nn] - lf[i] - lf[nn - i] - nn * math.log(2.0))
        tail = np.minimum(np.cumsum(pmf[::-1])[::-1], 1.0)  # tail[w] = P(X >= w)
        sel = n_b == nn
        out[sel] = tail[wins_b[sel]]
    return out


def drop_level(n_settings: int, n_looks: int, alpha: float = 0.05) -> float:
    """Per-test level that keeps P(the best setting is ever dropped) <= ``alpha`` (Bonferroni over the
    ``n_settings - 1`` opponents of a setting and the ``n_looks`` planned looks)."""
    return alpha / (max(1, n_settings - 1) * max(1, n_looks))


def tie_miss_probability(discordance: float, n_tie: int) -> float:
    """Chance that a setting differing from the reference on a share ``discordance`` of images agrees
    with it on all of ``n_tie`` random images (and so is settled as tied)."""
    return float((1.0 - discordance) ** n_tie)


@dataclass(frozen=True)
class LookDecision:
    """What one look decided, as boolean masks over all settings."""

    drop: np.ndarray  # (S,) newly dropped
    tie: np.ndarray  # (S,) newly settled as tied with the reference
    wins: np.ndarray  # (S, S) wins[t, s]: images t got right and s wrong (active settings only)
    p_values: np.ndarray  # (S, S) one-sided sign test p of "t better than s"


def decide_look(
    correct: np.ndarray, active: np.ndarray, *, reference: int, level: float, n_tie: int | None = 128
) -> LookDecision:
    """Drop and tie decisions at one look.

    Parameters
    ----------
    correct : (S, n) bool, whether each setting was right on each of the ``n`` images seen so far
        (rows of inactive settings are ignored).
    active : (S,) bool, the settings still being evaluated (the reference must be one of them).
    reference : index of the reference setting (never dropped or tied).
    level : per-test level of the drop rule (:func:`drop_level`).
    n_tie : minimum images for the tie rule; None switches it off.
    """
    correct = np.asarray(correct, dtype=bool)
    active = np.asarray(active, dtype=bool).copy()
    s_count, n = correct.shape
    if not active[reference]:
        raise ValueError("the reference setting must be active")
    c = correct[active].astype(np.int64)
    w_act = c @ (1 - c).T  # w[t, s] = t right & s wrong
    wins = np.zeros((s_count, s_count), dtype=np.int64)
    act_idx = np.flatnonzero(active)
    wins[np.ix_(act_idx, act_idx)] = w_act
    p = np.ones((s_count, s_count))
    p[np.ix_(act_idx, act_idx)] = sign_test_p(w_act, w_act.T)
    np.fill_diagonal(p, 1.0)
    drop = active & np.any(p <= level, axis=0)  # some t beats s
    drop[reference] = False
    tie = np.zeros(s_count, dtype=bool)
    if n_tie is not None and n >= n_tie:
        same = np.all(correct == correct[reference], axis=1)
        tie = active & same & ~drop
        tie[reference] = False
    return LookDecision(drop=drop, tie=tie, wins=wins, p_values=p)


@dataclass(frozen=True)
class EliminationResult:
    """Where each setting stopped."""

    n_evaluated: np.ndarray  # (S,) images each setting was evaluated on
    status: tuple[str, ...]  # "full" | "dropped" | "tied" | "reference"
    looks: tuple[int, ...]  # the prefix sizes actually looked at


def run_elimination(
    evaluate,
    n_settings: int,
    m: int,
    *,
    reference: int,
    schedule: tuple[int, ...],
    alpha: float = 0.05,
    n_tie: int | None = 128,
    sequential: bool = True,
    extra_drop=None,
) -> EliminationResult:
    """Drive the looks. ``evaluate(settings, start, stop)`` must return a (len(settings), stop - start)
    bool array of correctness of those settings on images ``start:stop`` of the ordered subsample
    (the reference's row included whenever it is asked for).

    ``extra_drop(active, stop)``, when given, returns a (S,) bool mask of further settings to drop at a look
    (a rule of the caller's, e.g. on the predictions themselves); the reference is never dropped.

    With ``sequential=False`` every setting is evaluated on all ``m`` images in one look.
    """
    if not sequential:
        schedule = (m,) if m > 0 else ()
    level = drop_level(n_settings, max(1, len(schedule) - 1), alpha)  # no test at the last look
    correct = np.zeros((n_settings, m), dtype=bool)
    active = np.ones(n_settings, dtype=bool)
    n_eval = np.zeros(n_settings, dtype=np.int64)
    status = ["full"] * n_settings
    status[reference] = "reference"
    done = 0
    looks = []
    for stop in schedule:
        idx = np.flatnonzero(active)
        correct[idx, done:stop] = evaluate(idx, done, stop)
        n_eval[idx] = stop
        done = stop
        looks.append(stop)
        if not sequential or stop >= m:
            break
        dec = decide_look(correct[:, :stop], active, reference=reference, level=level, n_tie=n_tie)
        drop = dec.drop.copy()
        if extra_drop is not None:
            drop |= np.asarray(extra_drop(active.copy(), stop), dtype=bool) & active
            drop[reference] = False
        for s in np.flatnonzero(drop):
            status[s] = "dropped"
        for s in np.flatnonzero(dec.tie):
            status[s] = "tied"
        active &= ~(drop | dec.tie)
        if active.sum() <= 1:  # only the reference is left
            break
    return EliminationResult(n_evaluated=n_eval, status=tuple(status), looks=tuple(looks))
