"""Influence-section speed: the full if-last influence matrix and top-k lists on synthetic features.

    python -m bench.influence

Rows: 10,000 training x 2,000 test images, 512-d features, 5 classes (exact solve) and 2,048-d, 8 classes (above
the exact limit: the hybrid solver, exact on 584 feature directions and EK-FAC on the rest); and the ratio against
a per-sample GradientTape implementation of the same last-layer gradients (TracIn dot products)
on a subset, extrapolated per pair.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from auditor.analyses.influence import fit_influence, top_lists


def _data(n, t, d, k, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.3, (d, k))
    h = np.maximum(rng.normal(size=(n + t, d)), 0).astype(np.float32)
    z = h @ w
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = np.array([rng.choice(k, p=row) for row in p])
    return h[:n], y[:n], p[:n], h[n:], y[n:], p[n:], w


def run_case(n, t, d, k, solver):
    h, y, p, ht, yt, pt, _ = _data(n, t, d, k)
    t0 = time.perf_counter()
    model = fit_influence(h, y, p, solver=solver)
    lists = top_lists(model, ht, yt, pt, chosen=np.arange(t))  # every test image: the full matrix, in blocks
    full = time.perf_counter() - t0
    out = {"n_train": n, "n_test": t, "dim": d, "classes": k, "solver": model.solver, "full_matrix_s": round(full, 2)}
    assert lists.helpful.shape == (t, 5)
    return out


def tape_ratio(n=200, t=20, d=512, k=5):
    """Per-pair seconds of a per-sample GradientTape TracIn (last-layer gradients from a Keras Dense layer) against
    ours on the same pairs."""
    import tensorflow as tf

    h, y, _, ht, yt, _, w = _data(n, t, d, k)
    dense = tf.keras.layers.Dense(k)
    dense.build((None, d))
    dense.set_weights([w.astype(np.float32), np.zeros(k, np.float32)])
    loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def grad(x, label):
        with tf.GradientTape() as tape:
            value = loss(tf.constant([label]), dense(x[None]))
        return tf.concat([tf.reshape(g, [-1]) for g in tape.gradient(value, dense.trainable_variables)], 0)

    t0 = time.perf_counter()
    gt = [grad(ht[j], yt[j]) for j in range(t)]
    scores = np.array([[float(tf.tensordot(grad(h[i], y[i]), g, 1)) for g in gt] for i in range(n)])
    tape = (time.perf_counter() - t0) / (n * t)
    z = h @ w
    probs = np.exp(z - z.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    zt = ht @ w
    ptt = np.exp(zt - zt.max(1, keepdims=True))
    ptt /= ptt.sum(1, keepdims=True)
    ours_model = fit_influence(h, y, probs, method="tracin-last")
    from auditor.analyses.influence import head_terms, with_bias

    t0 = time.perf_counter()
    ours = ours_model.scores(with_bias(ht), head_terms(yt, ptt)[0])
    mine = (time.perf_counter() - t0) / (n * t)
    # the reduced-coordinate residuals give the same dot products as the full ones
    agree = float(np.max(np.abs(ours - scores)) / np.max(np.abs(scores)))
    return {"tape_s_per_pair": tape, "ours_s_per_pair": mine, "ratio": tape / mine, "max_rel_diff": agree}


def main() -> int:
    for row in (
        lambda: run_case(10_000, 2_000, 512, 5, "auto"),
        lambda: run_case(10_000, 2_000, 2048, 8, "auto"),
        tape_ratio,
    ):
        print(json.dumps(row()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
