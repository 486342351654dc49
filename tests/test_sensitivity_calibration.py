"""Fisher scores, calibration and selective prediction against hand computations and experiments."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.analyses.calibration import (
    CalibrationResult,
    adaptive_ece,
    classwise_ece,
    compute_calibration,
    ece_noise_floor,
    fit_temperature,
    reliability_bins,
)
from auditor.analyses.fisher import FisherResult, compute_fisher, fisher_scores
from auditor.analyses.selective import SelectiveResult, aurc, compute_selective, operating_point, oracle_aurc
from auditor.errors import InputError

# three images, three classes, worked by hand
P = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.5, 0.25, 0.25]])
Y = np.array([0, 2, 1])
H = np.array([[1.0, 2.0], [0.0, 0.0], [3.0, 0.0]])


def test_fisher_scores_by_hand():
    s = fisher_scores(Y, P, H)
    # F = ||p - y||^2
    f0 = 0.3**2 + 0.2**2 + 0.1**2  # 0.14
    f1 = 0.1**2 + 0.6**2 + 0.7**2  # 0.86
    f2 = 0.5**2 + 0.75**2 + 0.25**2  # 0.875
    np.testing.assert_allclose(s.fisher, [f0, f1, f2], atol=1e-12)
    # expected score 1 - ||p||^2
    np.testing.assert_allclose(s.expected, [1 - 0.54, 1 - 0.46, 1 - 0.375], atol=1e-12)
    # last-layer gradient norm: ||(p - y) [h, 1]||_F^2 = F (||h||^2 + 1)
    np.testing.assert_allclose(s.grad_norm, [f0 * 6, f1 * 1, f2 * 10], atol=1e-12)
    for i in range(3):  # the outer-product definition, computed literally
        g = np.outer(P[i] - np.eye(3)[Y[i]], np.r_[H[i], 1.0])
        assert s.grad_norm[i] == pytest.approx(np.sum(g**2))


def test_expected_score_is_the_mean_fisher_score_under_the_models_own_labels():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(4), 50)
    expected = fisher_scores(np.zeros(50, int), p).expected
    by_label = np.stack([fisher_scores(np.full(50, c), p).fisher for c in range(4)], axis=1)
    np.testing.assert_allclose((p * by_label).sum(1), expected, atol=1e-12)


def test_fisher_result_tail_and_error_separation():
    r = compute_fisher(Y, P, class_names=["a", "b", "c"], features=H, threshold=0.5)
    assert r.tail_count == 2 and r.tail_mass == pytest.approx(2 / 3)
    assert r.tail_error_rate == 1.0  # images 1 and 2 are both mistakes
    assert r.summaries[0].error_auroc == 1.0  # F ranks both mistakes above the correct image
    assert [row.tail_count for row in r.per_class] == [0, 1, 1]
    assert r.per_class[1].share_of_tail == 0.5
    assert r.top_indices[:2] == (2, 1)
    q = dict(r.summaries[0].quantiles)
    assert q[0.5] == pytest.approx(0.86)
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert FisherResult.from_dict(d).to_dict() == d
    assert sum(r.histogram_correct) + sum(r.histogram_wrong) == 3


def test_ece_variants_by_hand():
    conf = np.array([0.95, 0.95, 0.65, 0.62, 0.35, 0.99])
    correct = np.array([True, False, True, True, False, True])
    bins = reliability_bins(conf, correct, 15)
    # bins of width 1/15: 0.95, 0.95 and 0.99 share bin 14; 0.65 and 0.62 bin 9; 0.35 bin 5
    filled = {i: (b.count, b.confidence, b.accuracy) for i, b in enumerate(bins) if b.count}
    assert set(filled) == {5, 9, 14}
    assert filled[14][0] == 3 and filled[14][1] == pytest.approx((0.95 + 0.95 + 0.99) / 3)
    gap14 = abs(2 / 3 - (0.95 + 0.95 + 0.99) / 3)
    gap9 = abs(1.0 - (0.65 + 0.62) / 2)
    gap5 = abs(0.0 - 0.35)
    r = compute_calibration(np.zeros(6, int), _probs_for(conf, correct))
    assert r.ece == pytest.approx((3 * gap14 + 2 * gap9 + 1 * gap5) / 6)
    assert r.mce == pytest.approx(max(gap14, gap9, gap5))
    # adaptive, 3 equal-mass bins: sorted {0.35}, {0.62, 0.65}, ... but the two 0.95 are tied, so the
    # boundary after the 4th image moves past them: bins [0.35, 0.62], [0.65, 0.95, 0.95], [0.99]
    order = np.argsort(conf, kind="stable")
    groups = [order[:2], order[2:5], order[5:]]
    hand = sum(abs(correct[g].mean() - conf[g].mean()) * len(g) for g in groups) / 6
    assert adaptive_ece(conf, correct, 3) == pytest.approx(hand)
    # without ties it is the plain split into 3 groups of 2
    conf2 = np.array([0.95, 0.96, 0.65, 0.62, 0.35, 0.99])
    order2 = np.argsort(conf2)
    hand2 = sum(abs(correct[g].mean() - conf2[g].mean()) * 2 for g in np.split(order2, 3)) / 6
    assert adaptive_ece(conf2, correct, 3) == pytest.approx(hand2)


def _probs_for(conf: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """Three-class probabilities whose top probability is ``conf`` (> 1/3) and whose arg-max is the
    label 0 exactly when ``correct``."""
    rest = (1 - conf) / 2
    assert np.all(conf > rest)
    return np.where(correct[:, None], np.c_[conf, rest, rest], np.c_[rest, conf, rest])


def test_overconfident_model_has_a_known_ece():
    n = 1000
    correct = np.arange(n) < 700  # exactly 70% right
    conf = np.full(n, 0.9)
    r = compute_calibration(np.zeros(n, int), _probs_for(conf, correct))
    assert r.ece == pytest.approx(0.2)
    assert r.mce == pytest.approx(0.2)
    assert r.adaptive_ece == pytest.approx(0.2)
    assert r.is_miscalibrated
    assert r.reading[0].startswith("The model is over-confident")


def test_perfectly_calibrated_probabilities_give_ece_within_the_derived_noise():
    rng = np.random.default_rng(1)
    n, k = 20000, 5
    p = rng.dirichlet(np.full(k, 0.7), n)
    y = (p.cumsum(1) > rng.random((n, 1))).argmax(1)  # labels drawn from the probabilities: calibrated
    r = compute_calibration(y, p)
    floor = ece_noise_floor(r.bins)
    # E[ECE] under perfect calibration is about `floor`; its spread is smaller still
    assert floor < 0.02
    assert r.ece < 2 * floor, (r.ece, floor)
    assert not r.is_miscalibrated
    assert r.temperature == pytest.approx(1.0, abs=0.05)
    assert classwise_ece(y, p) < 0.02


def test_temperature_scaling_recovers_a_known_temperature():
    rng = np.random.default_rng(2)
    n, k, t_true = 20000, 6, 2.5
    z = rng.normal(0, 3, (n, k))
    tempered = np.exp(z / t_true)
    tempered /= tempered.sum(1, keepdims=True)
    y = (tempered.cumsum(1) > rng.random((n, 1))).argmax(1)
    # the model reports softmax(z): over-confident by a factor t_true
    assert fit_temperature(z, y) == pytest.approx(t_true, rel=0.05)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    r = compute_calibration(y, p)
    assert r.temperature == pytest.approx(t_true, rel=0.05)
    assert r.ece_after_temperature < r.ece / 3
    assert r.nll_after_temperature < r.nll
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert CalibrationResult.from_dict(d).to_dict() == d


def test_selective_prediction_by_hand():
    conf = np.array([0.99, 0.95, 0.90, 0.80, 0.70, 0.60])
    correct = np.array([True, True, False, True, True, False])
    # risks after accepting 1..6: 0, 0, 1/3, 1/4, 1/5, 2/6
    assert aurc(conf, correct) == pytest.approx(np.mean([0, 0, 1 / 3, 1 / 4, 1 / 5, 2 / 6]))
    # oracle: 4 correct first, then 2 mistakes: risks 0,0,0,0,1/5,2/6
    assert oracle_aurc(correct) == pytest.approx(np.mean([0, 0, 0, 0, 1 / 5, 2 / 6]))
    op = operating_point(conf, correct, 0.75)
    assert op.reachable and op.accepted == 5 and op.threshold == 0.70 and op.accuracy == pytest.approx(0.8)
    op = operating_point(conf, correct, 0.99)
    assert op.accepted == 2 and op.threshold == 0.95 and op.coverage == pytest.approx(2 / 6)
    r = compute_selective(np.zeros(6, int), _probs_for(conf, correct), targets=(0.75, 0.99))
    assert r.random_aurc == pytest.approx(2 / 6)
    assert "refer every cell below confidence 0.7 to a human; then 83.3% of cells (5 of 6)" in r.reading[0]
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert SelectiveResult.from_dict(d).to_dict() == d


def test_ties_are_accepted_or_referred_together():
    conf = np.array([0.9, 0.9, 0.9, 0.5])
    correct = np.array([True, True, False, True])
    op = operating_point(conf, correct, 0.99)
    assert not op.reachable  # accepting any 0.9 image means accepting all three
    assert aurc(conf, correct) == aurc(conf[::-1].copy(), correct[::-1].copy())


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 1.0), st.booleans()), min_size=1, max_size=60))
def test_oracle_aurc_is_a_lower_bound(pairs):
    conf = np.array([c for c, _ in pairs])
    correct = np.array([ok for _, ok in pairs])
    assert oracle_aurc(correct) <= aurc(conf, correct) + 1e-12
    assert 0.0 <= aurc(conf, correct) <= 1.0


def test_broken_probabilities_are_caught_at_the_boundary():
    bad = P.copy()
    bad[0, 0] = np.nan
    for fn in (compute_calibration, compute_selective):
        with pytest.raises(InputError, match="NaN"):
            fn(Y, bad)
    with pytest.raises(InputError, match="not probability vectors"):
        compute_fisher(Y, P * 1.5, class_names=["a", "b", "c"])


def test_class_without_images_is_reported_not_divided_by():
    r = compute_fisher(np.array([0, 0, 1]), P, class_names=["a", "b", "c"])
    empty = r.per_class[2]
    assert empty.support == 0 and np.isnan(empty.median) and np.isnan(empty.tail_share_of_class)
    json.dumps(r.to_dict(), allow_nan=False)


def test_hundred_thousand_images_in_under_two_seconds():
    import time

    rng = np.random.default_rng(3)
    n, k = 100_000, 8
    p = rng.dirichlet(np.ones(k), n)
    y = rng.integers(0, k, n)
    feats = rng.normal(size=(n, 64)).astype(np.float32)
    t = time.perf_counter()
    compute_fisher(y, p, class_names=[str(i) for i in range(k)], features=feats)
    compute_calibration(y, p)
    compute_selective(y, p)
    assert time.perf_counter() - t < 2.0 * 2  # the 2 s target, with slack for a loaded CI machine
