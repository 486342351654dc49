"""Influence of training images on test predictions, restricted to the final dense layer.

The final layer computes logits ``z = W^T h + b`` from the penultimate features ``h``; with ``x = [h, 1]``
and the softmax cross-entropy loss, one image's loss gradient with respect to ``(W, b)`` is the outer
product ``g = x (p - y)^T`` (``p`` the predicted probabilities, ``y`` the one-hot label), and its Hessian is
``(x x^T) kron (diag(p) - p p^T)``. Everything below is matrix arithmetic on ``x`` and ``p - y``.

**Sign convention (every method).** A score is positive when the training image is *helpful* for the test
image (up-weighting it lowers the test image's loss; removing it would raise it) and negative when it is
*harmful* (removing it would lower the test loss).

Methods:

* ``if-last`` (Koh and Liang 2017): ``score(i, t) = (1/n) g_t^T H^{-1} g_i`` with ``H`` the Hessian of the mean
  training loss of the last layer plus damping ``lambda I``. To first order it is the change of test image
  ``t``'s loss when training image ``i`` is removed and the last layer refitted (``L_-i(t) - L(t)``). ``H`` is
  solved exactly (Cholesky) when the layer has at most :data:`EXACT_LIMIT` parameters. Above it, ``hybrid``:
  the features are rotated into the eigenbasis of their curvature-weighted second moment
  ``(1/n) sum_i trace(A_i) x_i x_i^T``; on the ``r = EXACT_LIMIT // m`` directions that carry the most curvature
  the Hessian is solved exactly, on the rest through the Kronecker factorisation
  ``E[x x^T] kron E[A]`` with EK-FAC's eigenvalue correction (George et al. 2018); the coupling between the two
  parts is dropped. The pure Kronecker form (``ekfac``, ``r = 0``) is not used: on a trained layer the
  per-image curvature ``A_i`` is near zero for confidently fitted images and large for the rest, so it is far
  from independent of ``x_i`` and the Kronecker product misses it (rank correlation with the exact scores
  0.5-0.7 on the sample model's features and on synthetic blobs, see ``tests/test_influence.py``), whereas the
  hybrid tracks the exact solve (about 0.97 with r at 30% of the features) because real penultimate features
  put most of the curvature in few directions, and the damping covers the directions left to the Kronecker
  part.
* ``tracin-last`` (Pruthi et al. 2020, one checkpoint): ``g_i . g_t = ((p_i - y_i).(p_t - y_t)) (x_i . x_t)``.
* ``seed``: the reference study's score on the logit gradients alone. It published ``-(g_i . g_t)`` with
  ``g = p - y`` and read positive as "supports the prediction"; aligned gradients (``g_i . g_t > 0``) mean a
  gradient step on ``i`` also lowers ``t``'s loss, so that reading is backwards. Here ``seed`` is reported as
  ``+(g_i . g_t)`` so that it follows the same convention as the others (the study's number is its negative).

The softmax residual ``p - y`` sums to zero and ``diag(p) - p p^T`` annihilates the all-ones vector, so the
arithmetic runs in the (k-1)-dimensional sum-zero subspace of the classes (an orthonormal basis ``B``): the
scores are unchanged and the Hessian is positive definite there.

Damping: ``lambda = damping * trace(H) / P + l2`` (``P`` parameters): relative to the mean curvature, so it
does not depend on the scale of the features. Default :data:`DEFAULT_DAMPING` = 0.1, as in Grosse et al. 2023
(EK-FAC influence: 0.1 x the mean eigenvalue). The scores are then exactly those of a last layer trained with an
L2 penalty ``lambda/2 ||W, b||^2`` (the leave-one-out test refits that objective). A final layer trained to near
separation has a nearly singular Hessian, and without such damping the influence is dominated by directions in
which the fit is barely determined (Basu et al. 2021: influence functions in deep networks are fragile); a
damping of 0.001 of the mean curvature also made every approximation disagree with the exact solve.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ._common import jsonable

METHODS = ("seed", "tracin-last", "if-last")
DEFAULT_METHOD = "if-last"
DEFAULT_DAMPING = 0.1  # relative: lambda = damping x mean eigenvalue of the Hessian (trace / parameters)
EXACT_LIMIT = 4096  # parameters of the last layer up to which the Hessian is solved exactly
NEAR_DUPLICATE_COSINE = 0.90  # cosine of mean-centred penultimate features: candidates for near-duplicates
NEAR_DUPLICATE_PIXELS = 0.95  # ... confirmed when their 32x32 grey images correlate at least this much
PIXEL_SIDE = 32
DEFAULT_TOP_K = 5
BLOCK = 1024  # test images per block: memory is (train images x BLOCK) floats


# ------------------------------------------------------------------------------------------- the head terms
def sum_zero_basis(k: int) -> np.ndarray:
    """An orthonormal basis (k, k-1) of the vectors whose entries sum to zero (Helmert-like)."""
    q, _ = np.linalg.qr(np.eye(k)[:, : k - 1] - 1.0 / k)
    return q[:, : k - 1]


def head_terms(y: ArrayLike, probs: np.ndarray, *, binary: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per-image residual ``r`` (n, m) and curvature ``A`` (n, m, m) of the loss in the logits, in the reduced
    class coordinates: softmax (k classes) -> m = k - 1 via :func:`sum_zero_basis`; a binary model with one
    sigmoid output -> m = 1 (``r = s - y``, ``A = s (1 - s)``)."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    n, k = p.shape
    if binary:
        s = p[:, 1]
        return (s - (y == 1))[:, None], (s * (1 - s))[:, None, None]
    onehot = np.zeros_like(p)
    onehot[np.arange(n), y] = 1.0
    basis = sum_zero_basis(k)
    r = (p - onehot) @ basis
    a_full = -p[:, :, None] * p[:, None, :]
    a_full[:, np.arange(k), np.arange(k)] += p
    a = np.einsum("ca,ncd,db->nab", basis, a_full, basis)
    return r, a


def with_bias(features: np.ndarray) -> np.ndarray:
    """``x = [h, 1]`` as float64 (n, d + 1)."""
    h = np.asarray(features, dtype=np.float64)
    return np.hstack([h, np.ones((len(h), 1))])


# ------------------------------------------------------------------------------------------- the solver
@dataclass
class InfluenceModel:
    """The training side of one influence computation: ``scores(x_test, r_test)`` gives (n_train, n_test).

    ``solver`` is ``exact`` (Cholesky of the full damped Hessian), ``hybrid`` (exact on the ``n_top`` feature
    directions with the most curvature, EK-FAC on the rest), ``ekfac`` (hybrid with ``n_top = 0``), ``kfac``
    (plain Kronecker factors), ``cg`` (conjugate gradients on the exact Hessian, hybrid preconditioner) or ``none``
    (``tracin-last`` and ``seed`` need no Hessian)."""

    method: str
    x: np.ndarray  # (n, D) training [h, 1]
    r: np.ndarray  # (n, m) training residuals
    solver: str
    damping_value: float  # the absolute lambda
    n_params: int
    _chol: Any = None
    _a_inv: Any = None  # K-FAC: (D, D)
    _g_inv: Any = None  # K-FAC: (m, m)
    _u_a: Any = None  # hybrid: feature eigenvectors (D, D), the n_top exact directions first
    _u_g: Any = None  # hybrid: eigenvectors of E[A] (m, m)
    _inv_s: Any = None  # hybrid: 1 / (corrected eigenvalues + lambda) on the Kronecker part (D - n_top, m)
    _xt: Any = None  # hybrid: training x in the feature eigenbasis (n, D) float32
    _rt: Any = None  # hybrid: training r in the eigenbasis of E[A] (n, m)
    _top_chol: Any = None  # hybrid: Cholesky factor of the damped Hessian on the n_top directions
    n_top: int = 0  # hybrid: feature directions solved exactly
    _a: Any = None  # CG: per-image curvature (n, m, m)
    cg_iterations: int = 0  # CG: the most iterations any solve took
    x32: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.x32 = self.x.astype(np.float32)

    # --- per test block
    def _hvp(self, v: np.ndarray) -> np.ndarray:
        """``H v`` for a stack of (T, D, m) parameter vectors, blockwise over the training images."""
        n = len(self.x)
        t, d, m = v.shape
        flat = v.transpose(1, 0, 2).reshape(d, t * m)
        out = np.zeros((d, t * m))
        for s in range(0, n, 4096):
            xs = self.x[s : s + 4096]
            z = (xs @ flat).reshape(len(xs), t, m)
            w = np.matmul(z, self._a[s : s + 4096])  # A_i is symmetric
            out += xs.T @ w.reshape(len(xs), t * m)
        return out.reshape(d, t, m).transpose(1, 0, 2) / n + self.damping_value * v

    def _inverse_rotated(self, v: np.ndarray) -> np.ndarray:
        """The hybrid's ``H^{-1} v`` for (T, D, m) vectors whose feature axis is already in the eigenbasis ``U``
        (the result is in the same coordinates): the exact solve on the first ``n_top`` directions, the
        eigenvalue-corrected Kronecker inverse on the rest."""
        from scipy.linalg import cho_solve

        t, _, m = v.shape
        k = self.n_top
        out = np.empty_like(v, dtype=np.float64)
        if k:
            top = cho_solve((self._top_chol, True), v[:, :k].reshape(t, k * m).T, check_finite=False)
            out[:, :k] = top.T.reshape(t, k, m)
        out[:, k:] = ((v[:, k:] @ self._u_g) * self._inv_s[None]) @ self._u_g.T
        return out

    def _precondition(self, v: np.ndarray) -> np.ndarray:
        """The hybrid's approximate ``H^{-1} v`` for (T, D, m) vectors (the CG preconditioner)."""
        rot = self._inverse_rotated(np.einsum("da,tdm->tam", self._u_a, v))
        return np.einsum("da,tam->tdm", self._u_a, rot)

    def _cg(self, g: np.ndarray, tol: float = 1e-8, max_iter: int = 500) -> np.ndarray:
        """Preconditioned conjugate gradients on the exact damped Hessian, one system per stacked vector."""
        x = np.zeros_like(g)
        r = g.copy()
        z = self._precondition(r)
        p = z.copy()
        rz = np.einsum("tdm,tdm->t", r, z)
        norm0 = np.sqrt(np.einsum("tdm,tdm->t", g, g))
        it = 0
        for it in range(max_iter):  # noqa: B007 (the count is kept below)
            hp = self._hvp(p)
            alpha = rz / np.maximum(np.einsum("tdm,tdm->t", p, hp), 1e-300)
            x += alpha[:, None, None] * p
            r -= alpha[:, None, None] * hp
            if np.all(np.sqrt(np.einsum("tdm,tdm->t", r, r)) <= tol * np.maximum(norm0, 1e-300)):
                break
            z = self._precondition(r)
            rz_new = np.einsum("tdm,tdm->t", r, z)
            p = z + (rz_new / np.maximum(rz, 1e-300))[:, None, None] * p
            rz = rz_new
        self.cg_iterations = max(self.cg_iterations, it + 1)
        return x

    def _q(self, x_t: np.ndarray, r_t: np.ndarray) -> np.ndarray:
        """``H^{-1} g_t`` for each test image, as (T, D, m)."""
        from scipy.linalg import cho_solve

        if self.solver == "cg":
            return self._cg(x_t[:, :, None] * r_t[:, None, :])
        g = (x_t[:, :, None] * r_t[:, None, :]).reshape(len(x_t), -1)
        q = cho_solve((self._chol, True), g.T, check_finite=False).T
        return q.reshape(len(x_t), x_t.shape[1], r_t.shape[1])

    def scores(self, x_t: np.ndarray, r_t: np.ndarray) -> np.ndarray:
        """(n_train, T) scores, positive = helpful (see the module's sign convention)."""
        n = len(self.x)
        if self.method == "seed":
            return (self.r @ r_t.T).astype(np.float32)
        if self.method == "tracin-last":
            return (self.x32 @ x_t.astype(np.float32).T) * (self.r @ r_t.T).astype(np.float32)
        if self.solver == "kfac":
            left = self.x32 @ (x_t @ self._a_inv).astype(np.float32).T
            return left * (self.r @ (r_t @ self._g_inv).T).astype(np.float32) / n
        if self.solver in ("hybrid", "ekfac"):
            z = x_t @ self._u_a  # (T, D) test features in the eigenbasis
            q = self._inverse_rotated(z[:, :, None] * r_t[:, None, :]).astype(np.float32)  # (T, D, m)
            out = np.zeros((n, len(x_t)), dtype=np.float32)
            for c in range(q.shape[2]):  # one (n, D) x (D, T) product per class coordinate
                out += (self._xt @ q[:, :, c].T) * self.r[:, c : c + 1].astype(np.float32)
            return out / n
        q = self._q(x_t, r_t)  # (T, D, m)
        t, d, m = q.shape
        y = self.x32 @ q.transpose(1, 0, 2).reshape(d, t * m).astype(np.float32)  # (n, T*m)
        return np.einsum("ntm,nm->nt", y.reshape(n, t, m), self.r.astype(np.float32)) / n

    def self_scores(self, block: int = BLOCK) -> np.ndarray:
        """``score(i, i)`` for every training image: self-influence (how much an image supports its own label;
        high for atypical and mislabelled images that the model had to bend to fit)."""
        n = len(self.x)
        if self.method == "seed":
            return np.sum(self.r**2, axis=1)
        if self.method == "tracin-last":
            return np.sum(self.r**2, axis=1) * np.sum(self.x**2, axis=1)
        if self.solver in ("hybrid", "ekfac", "cg"):  # cg: the hybrid's (one CG solve per image is too slow)
            from scipy.linalg import solve_triangular

            k = self.n_top
            tail = self._xt[:, k:].astype(np.float64) ** 2
            out = np.einsum("na,ab,nb->n", tail, self._inv_s, self._rt**2)
            for s in range(0, n if k else 0, block):
                zs, rs = self.x[s : s + block] @ self._u_a[:, :k], self.r[s : s + block]
                g = (zs[:, :, None] * rs[:, None, :]).reshape(len(zs), -1)
                w = solve_triangular(self._top_chol, g.T, lower=True, check_finite=False)
                out[s : s + block] += np.sum(w * w, axis=0)
            return out / n
        if self.solver == "kfac":
            return (
                np.einsum("nd,de,ne->n", self.x, self._a_inv, self.x)
                * np.einsum("na,ab,nb->n", self.r, self._g_inv, self.r)
                / n
            )
        from scipy.linalg import solve_triangular

        out = np.empty(n)
        for s in range(0, n, block):
            xs, rs = self.x[s : s + block], self.r[s : s + block]
            g = (xs[:, :, None] * rs[:, None, :]).reshape(len(xs), -1)
            z = solve_triangular(self._chol, g.T, lower=True, check_finite=False)
            out[s : s + block] = np.sum(z * z, axis=0) / n
        return out


def hessian(x: np.ndarray, a: np.ndarray) -> np.ndarray:
    """The mean last-layer Hessian (P, P), P = D m, parameters ordered as ``g.reshape(-1)`` of the (D, m)
    gradient: ``H[(u, c), (v, e)] = mean_i x_iu x_iv A_i[c, e]`` (one (D, D) product per class pair)."""
    n, d = x.shape
    m = a.shape[1]
    h = np.zeros((d, m, d, m))
    for c in range(m):
        for e in range(c, m):
            block = x.T @ (x * a[:, c, e][:, None]) / n
            h[:, c, :, e] = block
            h[:, e, :, c] = block
    return h.reshape(d * m, d * m)


def fit_influence(
    features: np.ndarray,
    y: ArrayLike,
    probs: np.ndarray,
    *,
    method: str = DEFAULT_METHOD,
    damping: float = DEFAULT_DAMPING,
    l2: float = 0.0,
    solver: str = "auto",
    exact_limit: int = EXACT_LIMIT,
    binary: bool = False,
    n_top: int | None = None,
) -> InfluenceModel:
    """Prepare the training side. ``solver`` auto: exact up to ``exact_limit`` parameters, else ``hybrid`` (exact
    on the ``exact_limit // m - 1`` feature directions with the most curvature, Kronecker-factored with EK-FAC's
    eigenvalue correction on the rest; ``n_top`` overrides that count). ``ekfac`` is the pure Kronecker form
    (``n_top = 0``). ``cg`` (conjugate gradients on the exact Hessian with the hybrid as preconditioner) is exact
    to its tolerance; it measures the hybrid's agreement on large layers."""
    if method not in METHODS:
        raise ValueError(f"unknown influence method {method!r}; one of {', '.join(METHODS)}")
    x = with_bias(features)
    r, a = head_terms(y, probs, binary=binary)
    n, d = x.shape
    m = r.shape[1]
    p = d * m
    if method != "if-last":
        return InfluenceModel(method, x, r, "none", 0.0, p)
    if solver == "auto":
        solver = "exact" if p <= exact_limit else "hybrid"
    # trace(H) = mean_i ||x_i||^2 trace(A_i), cheap for both solvers
    trace = float(np.mean(np.sum(x * x, axis=1) * np.trace(a, axis1=1, axis2=2)))
    lam = damping * trace / p + l2
    if lam <= 0:
        raise ValueError("the damping must be positive (damping > 0 or l2 > 0)")
    if solver == "exact":
        from scipy.linalg import cholesky

        hm = hessian(x, a)
        hm[np.diag_indices_from(hm)] += lam
        chol = cholesky(hm, lower=True, check_finite=False)
        return InfluenceModel(method, x, r, "exact", lam, p, _chol=chol)
    if solver not in ("kfac", "ekfac", "hybrid", "cg"):
        raise ValueError(f"unknown solver {solver!r}")
    fg = a.mean(axis=0)
    if solver in ("ekfac", "hybrid", "cg"):
        k = 0 if solver == "ekfac" else min(d, max(0, exact_limit // m - 1) if n_top is None else n_top)
        # the exact part gets the directions that carry the most curvature: the eigenbasis of the features' second
        # moment weighted by each image's curvature (the plain second moment for pure EK-FAC); float32 products
        # (only the choice of directions depends on them; the basis itself is orthonormal to float64 precision)
        x32 = x.astype(np.float32)
        weight = np.trace(a, axis1=1, axis2=2) if k else np.ones(n)
        moment = ((x32 * weight[:, None].astype(np.float32)).T @ x32).astype(np.float64) / n
        _, u_a = np.linalg.eigh((moment + moment.T) / 2)
        u_a = u_a[:, ::-1]
        _, u_g = np.linalg.eigh(fg)
        xt = x32 @ u_a.astype(np.float32)
        top_chol = None
        if k:
            from scipy.linalg import cholesky

            ht = hessian(x @ u_a[:, :k], a)
            ht[np.diag_indices_from(ht)] += lam
            top_chol = cholesky(ht, lower=True, check_finite=False)
        a_diag = np.einsum("ca,ncd,da->na", u_g, a, u_g)  # (n, m): diagonal of U_G^T A_i U_G
        tail = xt[:, k:].astype(np.float64)
        s_corr = (tail**2).T @ a_diag / n  # corrected eigenvalues (George et al. 2018) of the Kronecker part
        return InfluenceModel(
            method,
            x,
            r,
            solver,
            lam,
            p,
            _u_a=u_a,
            _u_g=u_g,
            _inv_s=1.0 / (s_corr + lam),
            _xt=xt,
            _rt=r @ u_g,
            _top_chol=top_chol,
            n_top=k,
            _a=a if solver == "cg" else None,
        )
    fa = x.T @ x / n
    pi = np.sqrt((np.trace(fa) / d) / max(np.trace(fg) / m, 1e-300))
    root = np.sqrt(lam)
    a_inv = np.linalg.inv(fa + pi * root * np.eye(d))
    g_inv = np.linalg.inv(fg + root / pi * np.eye(m))
    return InfluenceModel(method, x, r, "kfac", lam, p, _a_inv=a_inv, _g_inv=g_inv)


@dataclass(frozen=True)
class TopLists:
    """Per chosen test image: the ``k`` most helpful and most harmful training rows with their scores, and per
    training image the score summed over every test image."""

    helpful: np.ndarray  # (T_chosen, k) training rows, most helpful first
    helpful_scores: np.ndarray
    harmful: np.ndarray  # (T_chosen, k), most harmful (most negative) first
    harmful_scores: np.ndarray
    total: np.ndarray  # (n_train,) sum over all test images


def top_lists(
    model: InfluenceModel,
    test_features: np.ndarray,
    test_y: ArrayLike,
    test_probs: np.ndarray,
    *,
    chosen: Sequence[int] | np.ndarray,
    k: int = DEFAULT_TOP_K,
    binary: bool = False,
    block: int = BLOCK,
) -> TopLists:
    """The top-``k`` helpful and harmful training rows of each ``chosen`` test row (scores in blocks of ``block``
    test images: memory n_train x block floats), and every training image's score summed over *all* test images.

    The sum needs no matrix: every score is linear in the test gradient, so it is the score against the summed
    test gradient ``sum_t x_t r_t^T`` (one solve)."""
    x_t = with_bias(test_features)
    r_t, _ = head_terms(test_y, test_probs, binary=binary)
    n = len(model.x)
    k = min(k, n)
    chosen = np.asarray(chosen, dtype=np.int64)
    total = _summed(model, x_t, r_t)
    hi = np.zeros((len(chosen), k), dtype=np.int64)
    lo = np.zeros((len(chosen), k), dtype=np.int64)
    his = np.zeros((len(chosen), k))
    los = np.zeros((len(chosen), k))
    for s in range(0, len(chosen), block):
        cols = chosen[s : s + block]
        sub = model.scores(x_t[cols], r_t[cols]).T  # (c, n)
        top = np.argpartition(-sub, k - 1, axis=1)[:, :k] if k < n else np.tile(np.arange(n), (len(cols), 1))
        bot = np.argpartition(sub, k - 1, axis=1)[:, :k] if k < n else np.tile(np.arange(n), (len(cols), 1))
        rows = np.arange(len(cols))[:, None]
        top = np.take_along_axis(top, np.argsort(-sub[rows, top], axis=1, kind="stable"), axis=1)
        bot = np.take_along_axis(bot, np.argsort(sub[rows, bot], axis=1, kind="stable"), axis=1)
        hi[s : s + block], his[s : s + block] = top, sub[rows, top]
        lo[s : s + block], los[s : s + block] = bot, sub[rows, bot]
    return TopLists(hi, his, lo, los, total)


def _summed(model: InfluenceModel, x_t: np.ndarray, r_t: np.ndarray) -> np.ndarray:
    """Every training image's score summed over the test images ``(x_t, r_t)``."""
    n = len(model.x)
    if model.method == "seed":
        return model.r @ r_t.sum(axis=0)
    gsum = x_t.T @ r_t  # (D, m): the summed test gradient
    if model.method == "tracin-last":
        return np.einsum("nd,dm,nm->n", model.x, gsum, model.r)
    if model.solver == "kfac":
        q = model._a_inv @ gsum @ model._g_inv
    elif model.solver in ("hybrid", "ekfac"):
        q = model._precondition(gsum[None])[0]
    elif model.solver == "cg":
        q = model._cg(gsum[None])[0]
    else:
        from scipy.linalg import cho_solve

        q = cho_solve((model._chol, True), gsum.reshape(-1), check_finite=False).reshape(gsum.shape)
    return np.einsum("nd,dm,nm->n", model.x, q, model.r) / n


@dataclass(frozen=True)
class Agreement:
    """How the approximate scores of some test images compare with the exact solve's."""

    spearman: float  # rank correlation over every (training image, test image) score
    top_overlap: float  # mean share of each top-k helpful and top-k harmful list that the exact lists share
    n_test: int
    cg_iterations: int


def agreement_with_exact(
    model: InfluenceModel,
    train_y: ArrayLike,
    train_probs: np.ndarray,
    test_features: np.ndarray,
    test_y: ArrayLike,
    test_probs: np.ndarray,
    *,
    k: int = DEFAULT_TOP_K,
    binary: bool = False,
    tol: float = 1e-6,
) -> Agreement:
    """Compare ``model``'s scores (a ``hybrid`` or ``ekfac`` solver) for a few test images with the exact solve of
    the same damped Hessian, by conjugate gradients on the full Hessian (preconditioned with the model's own
    approximate inverse, stopped at relative residual ``tol``): possible where the Cholesky factor is not."""
    from dataclasses import replace

    _, a = head_terms(train_y, train_probs, binary=binary)
    x_t = with_bias(test_features)
    r_t, _ = head_terms(test_y, test_probs, binary=binary)
    approx = model.scores(x_t, r_t).astype(np.float64)
    exact_model = replace(model, solver="cg", _a=a, cg_iterations=0)
    q = exact_model._cg(x_t[:, :, None] * r_t[:, None, :], tol=tol)
    exact = np.einsum("nd,tdm,nm->nt", model.x, q, model.r) / len(model.x)
    n = len(model.x)
    kk = min(k, n)
    shared = []
    for t in range(exact.shape[1]):
        for sign in (1, -1):
            a_top = set(np.argsort(-sign * exact[:, t], kind="stable")[:kk])
            b_top = set(np.argsort(-sign * approx[:, t], kind="stable")[:kk])
            shared.append(len(a_top & b_top) / kk)
    return Agreement(spearman(exact, approx), float(np.mean(shared)), exact.shape[1], exact_model.cg_iterations)


# ------------------------------------------------------------------------------------------- label issues
@dataclass(frozen=True)
class LabelIssues:
    """The label-issue ranking of the training images (row indices, most suspicious first)."""

    order: np.ndarray  # (n,) training rows, most suspicious first
    score: np.ndarray  # (n,) in [0, 2]: 1 for a confident disagreement plus the mean of two percentile ranks
    confident_disagreement: np.ndarray  # (n,) bool
    suggested: np.ndarray  # (n,) class the model confidently prefers (-1 where none)
    thresholds: np.ndarray  # (k,) per-class confidence thresholds (confident learning)


def label_issues(y: ArrayLike, probs: np.ndarray, self_influence: np.ndarray) -> LabelIssues:
    """Rank training images by how likely their label is wrong.

    Confident learning (Northcutt et al. 2021): class ``c``'s threshold ``t_c`` is the mean probability of
    ``c`` over the images labelled ``c``; an image *confidently disagrees* when some other class ``c`` has
    ``p_c >= t_c`` (the suggested label is the most probable such class). The score is 1 for a confident
    disagreement, plus the mean of two percentile ranks in [0, 1]: the self-influence, and ``1 - p(given label)``.
    So every confident disagreement ranks above every other image, and within each group images the model
    fits least, or had to bend most to fit, come first."""
    y = np.asarray(y, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    n, k = p.shape
    thr = np.array([p[y == c, c].mean() if np.any(y == c) else np.inf for c in range(k)])
    above = p >= thr[None, :]
    above[np.arange(n), y] = False
    masked = np.where(above, p, -1.0)
    suggested = np.where(above.any(axis=1), masked.argmax(axis=1), -1)
    disagree = suggested >= 0

    def pct(v: np.ndarray) -> np.ndarray:
        ranks = np.argsort(np.argsort(v, kind="stable"), kind="stable")
        return ranks / max(n - 1, 1)

    score = disagree.astype(float) + 0.5 * (pct(np.asarray(self_influence)) + pct(1 - p[np.arange(n), y]))
    order = np.argsort(-score, kind="stable")
    return LabelIssues(order, score, disagree, suggested, thr)


# ------------------------------------------------------------------------------------------- leakage
@dataclass(frozen=True)
class NearPairs:
    train: np.ndarray  # (q,) training rows
    test: np.ndarray  # (q,) test rows
    cosine: np.ndarray  # (q,)


def near_duplicates(
    train_features: np.ndarray,
    test_features: np.ndarray,
    *,
    threshold: float = NEAR_DUPLICATE_COSINE,
    neighbours: int = 3,
    block: int = BLOCK,
    limit: int = 10_000,
) -> NearPairs:
    """Candidate near-duplicate pairs (training, test): the ``neighbours`` training images nearest each test image,
    and every pair at or above ``threshold``, by the cosine similarity of the penultimate features centred on the
    training mean (highest first, at most ``limit``). Centring removes the direction every image shares (post-ReLU
    features all point into one orthant). The nearest neighbours are kept whatever their cosine because a weak
    model's features move under re-encoding or resizing more than a strong one's."""
    mu = np.asarray(train_features, dtype=np.float64).mean(axis=0)

    def unit(f: np.ndarray) -> np.ndarray:
        c = np.asarray(f, dtype=np.float64) - mu
        norm = np.linalg.norm(c, axis=1, keepdims=True)
        return (c / np.where(norm > 0, norm, 1.0)).astype(np.float32)

    a, b = unit(train_features), unit(test_features)
    tr, te, cs = [], [], []
    for s in range(0, len(b), block):
        sim = a @ b[s : s + block].T
        keep = sim >= threshold
        if neighbours and len(a):
            nn = np.argpartition(-sim, min(neighbours, len(a)) - 1, axis=0)[: min(neighbours, len(a))]
            keep[nn, np.arange(sim.shape[1])[None, :]] = True
        i, j = np.nonzero(keep)
        tr.append(i)
        te.append(j + s)
        cs.append(sim[i, j])
    i, j, c = (np.concatenate(v) if v else np.zeros(0) for v in (tr, te, cs))
    order = np.argsort(-c, kind="stable")[:limit]
    return NearPairs(i[order].astype(np.int64), j[order].astype(np.int64), c[order].astype(np.float64))


def pixel_signature(image: np.ndarray) -> np.ndarray:
    """A (32*32,) grey signature of a uint8 RGB image (any size), zero mean and unit norm: the Pearson
    correlation of two images' signatures is their dot product. Area-averaged, so it survives re-encoding,
    resizing and brightness or contrast changes; unrelated cells correlate far less."""
    grey = np.asarray(image, dtype=np.float64) @ np.array([0.299, 0.587, 0.114])
    h, w = grey.shape
    ys = np.linspace(0, h, PIXEL_SIDE + 1).astype(int)
    xs = np.linspace(0, w, PIXEL_SIDE + 1).astype(int)
    cells = np.add.reduceat(np.add.reduceat(grey, ys[:-1], axis=0), xs[:-1], axis=1)
    cells /= np.outer(np.diff(ys), np.diff(xs))
    v = cells.ravel() - cells.mean()
    norm = np.linalg.norm(v)
    return v / norm if norm > 0 else v


# ------------------------------------------------------------------------------------------- the result
@dataclass(frozen=True)
class InfluenceImage:
    """One training image in a list: its path (relative to the training root), given label, prediction, score."""

    row: int
    path: str
    label: str
    predicted: str
    score: float

    def to_dict(self) -> dict:
        return jsonable(self)


@dataclass(frozen=True)
class TestInfluence:
    """A chosen test image and its most helpful and most harmful training images."""

    index: int  # row of predictions.csv
    path: str
    label: str
    predicted: str
    confidence: float
    why: str  # why it was chosen: misclassified | high Fisher | correct (one per class)
    helpful: tuple[InfluenceImage, ...]
    harmful: tuple[InfluenceImage, ...]

    def to_dict(self) -> dict:
        return jsonable(self)

    @classmethod
    def from_dict(cls, d: dict) -> TestInfluence:
        return cls(
            **{k: d[k] for k in ("index", "path", "label", "predicted", "confidence", "why")},
            helpful=tuple(InfluenceImage(**h) for h in d["helpful"]),
            harmful=tuple(InfluenceImage(**h) for h in d["harmful"]),
        )


@dataclass(frozen=True)
class LabelIssueRow:
    row: int
    path: str
    given: str
    predicted: str
    suggested: str | None  # the class the model confidently prefers (None: no confident disagreement)
    p_given: float
    self_influence: float
    score: float

    def to_dict(self) -> dict:
        return jsonable(self)


@dataclass(frozen=True)
class DuplicatePair:
    kind: str  # exact | near | two-labels (train) | two-labels (train/test)
    train_path: str
    train_label: str
    other_path: str  # the test image (or the second training image for two-labels (train))
    other_label: str
    cosine: float | None
    pixel_correlation: float | None = None

    def to_dict(self) -> dict:
        return jsonable(self)


@dataclass(frozen=True)
class InfluenceResult:
    """What the influence section found. ``status`` ok | not_enabled | cannot_run (with ``reason``)."""

    status: str
    reason: str = ""
    method: str = ""
    requested_method: str = ""
    method_note: str = ""  # why the method differs from the one asked for, or which solver ran
    solver: str = ""  # exact | kfac | none
    damping: float = 0.0  # the relative damping option
    damping_value: float = 0.0  # the absolute lambda
    n_params: int = 0
    train_path: str = ""
    n_train: int = 0
    n_test: int = 0
    train_skipped: tuple[tuple[str, str], ...] = ()
    train_accuracy: float = float("nan")
    tests: tuple[TestInfluence, ...] = ()
    most_harmful: tuple[InfluenceImage, ...] = ()
    label_issues: tuple[LabelIssueRow, ...] = ()
    n_confident_disagreements: int = 0
    exact: tuple[DuplicatePair, ...] = ()
    near: tuple[DuplicatePair, ...] = ()
    two_labels: tuple[DuplicatePair, ...] = ()
    near_threshold: float = NEAR_DUPLICATE_COSINE
    pixel_threshold: float = NEAR_DUPLICATE_PIXELS
    n_near_candidates: int = 0  # pairs above the feature threshold, before the pixel check
    near_checked: bool = True  # False: the model gives no penultimate features, so near-duplicates were not sought
    seconds: float = 0.0
    kfac_agreement: float | None = None  # hybrid solver: Spearman of its scores vs the exact solve's (CG)
    kfac_top_overlap: float | None = None  # ... and the share of the top-k lists the two have in common
    agreement_tests: int = 0  # ... over this many of the test images shown
    top_k: int = DEFAULT_TOP_K  # helpful and harmful training images listed per test image

    def to_dict(self) -> dict:
        return jsonable(self)

    @classmethod
    def from_dict(cls, d: dict) -> InfluenceResult:
        d = dict(d)
        d["train_skipped"] = tuple(tuple(x) for x in d.get("train_skipped", ()))
        d["tests"] = tuple(TestInfluence.from_dict(t) for t in d.get("tests", ()))
        d["most_harmful"] = tuple(InfluenceImage(**x) for x in d.get("most_harmful", ()))
        d["label_issues"] = tuple(LabelIssueRow(**x) for x in d.get("label_issues", ()))
        for key in ("exact", "near", "two_labels"):
            d[key] = tuple(DuplicatePair(**x) for x in d.get(key, ()))
        if d.get("train_accuracy") is None:
            d["train_accuracy"] = float("nan")
        return cls(**d)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two flat arrays (ties broken by order)."""
    ra = np.argsort(np.argsort(np.ravel(a), kind="stable"), kind="stable").astype(float)
    rb = np.argsort(np.argsort(np.ravel(b), kind="stable"), kind="stable").astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])
