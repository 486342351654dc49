"""Classification metrics (auditor/analyses/metrics.py) against scikit-learn and hand computations."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.stats import binomtest, norm
from sklearn import metrics as skm

from auditor.analyses.metrics import (
    ClassificationMetrics,
    compute_classification_metrics,
    rank_auc,
    roc_curve,
    wilson_interval,
)
from auditor.errors import InputError

# ----------------------------------------------------------------------------------- helpers


def random_case(seed: int, k: int, n: int = 300, skill: float = 1.5):
    """Labels and softmax probabilities of a mediocre classifier (no ties in the scores)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    y[:k] = np.arange(k)  # every class present
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += skill
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    return y, p


def names(k: int) -> list[str]:
    return [f"class_{i}" for i in range(k)]


def compute(y, p, **kw):
    kw.setdefault("n_bootstrap", 0)
    return compute_classification_metrics(y, p, class_names=names(p.shape[1]), **kw)


def sk_summary(y, p, labels):
    """The sklearn reference for the headline numbers, with ``labels=`` the evaluated classes."""
    pred = p.argmax(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = {
            "accuracy": skm.accuracy_score(y, pred),
            "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
            "cohen_kappa": skm.cohen_kappa_score(y, pred),
            "matthews_corrcoef": skm.matthews_corrcoef(y, pred),
        }
        for avg in ("macro", "weighted"):
            out[f"precision_{avg}"] = skm.precision_score(y, pred, labels=labels, average=avg, zero_division=0)
            out[f"recall_{avg}"] = skm.recall_score(y, pred, labels=labels, average=avg, zero_division=0)
            out[f"f1_{avg}"] = skm.f1_score(y, pred, labels=labels, average=avg, zero_division=0)
    return out


SEEDS_AND_K = [(seed, k) for k in (2, 3, 5, 8) for seed in (0, 1, 2)]


# ----------------------------------------------------------------------------------- vs sklearn


@pytest.mark.parametrize("seed,k", SEEDS_AND_K)
def test_headline_metrics_match_sklearn(seed, k):
    y, p = random_case(seed, k, n=200 + 37 * seed)
    m = compute(y, p)
    ref = sk_summary(y, p, labels=list(range(k)))
    for key, value in ref.items():
        assert getattr(m, key) == pytest.approx(value, abs=1e-12), key
    assert m.n_samples == len(y)
    assert m.evaluated_classes == tuple(names(k))


@pytest.mark.parametrize("seed,k", SEEDS_AND_K)
def test_per_class_and_confusion_match_sklearn(seed, k):
    y, p = random_case(seed, k)
    pred = p.argmax(axis=1)
    m = compute(y, p)
    cm = skm.confusion_matrix(y, pred, labels=list(range(k)))
    assert np.array_equal(np.array(m.confusion), cm)
    prec, rec, f1, support = skm.precision_recall_fscore_support(y, pred, labels=list(range(k)), zero_division=0)
    for c, row in enumerate(m.per_class):
        assert row.name == f"class_{c}"
        assert row.support == support[c] == cm[c].sum()
        assert row.predicted == cm[:, c].sum() == (pred == c).sum()
        assert row.precision == pytest.approx(prec[c], abs=1e-12)
        assert row.recall == pytest.approx(rec[c], abs=1e-12)
        assert row.f1 == pytest.approx(f1[c], abs=1e-12)


@pytest.mark.parametrize("seed,k", SEEDS_AND_K)
def test_top2_and_auc_match_sklearn(seed, k):
    y, p = random_case(seed, k)
    m = compute(y, p)
    if k == 2:
        assert m.top2_accuracy == 1.0  # sklearn refuses k=2 with 2 classes; trivially every sample
    else:
        ref = skm.top_k_accuracy_score(y, p, k=2, labels=list(range(k)))
        assert m.top2_accuracy == pytest.approx(ref, abs=1e-12)
    for c, row in enumerate(m.per_class):
        assert row.auc == pytest.approx(skm.roc_auc_score(y == c, p[:, c]), abs=1e-12)
    if k == 2:
        ref_macro = skm.roc_auc_score(y, p[:, 1])
    else:
        ref_macro = skm.roc_auc_score(y, p, multi_class="ovr", average="macro", labels=list(range(k)))
    assert m.roc_auc_macro == pytest.approx(ref_macro, abs=1e-12)


def test_auc_with_tied_scores_matches_sklearn():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    score = rng.integers(0, 6, 500) / 5.0  # many ties
    assert rank_auc(y, score) == pytest.approx(skm.roc_auc_score(y, score), abs=1e-12)
    assert math.isnan(rank_auc(np.ones(4, int), np.arange(4.0)))


def test_hand_computed_small_case():
    # 3 classes, 6 samples; predictions 0,0,1,1,2,0 for truths 0,0,1,2,2,2
    y = np.array([0, 0, 1, 2, 2, 2])
    pred = np.array([0, 0, 1, 1, 2, 0])
    p = np.full((6, 3), 0.1)
    p[np.arange(6), pred] = 0.8
    m = compute(y, p)
    assert m.confusion == ((2, 0, 0), (0, 1, 0), (1, 1, 1))
    assert m.accuracy == pytest.approx(4 / 6)
    # recalls 1, 1, 1/3; precisions 2/3, 1/2, 1
    assert m.balanced_accuracy == pytest.approx((1 + 1 + 1 / 3) / 3)
    assert m.precision_macro == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert m.recall_weighted == pytest.approx(4 / 6)
    assert m.precision_weighted == pytest.approx((2 * 2 / 3 + 1 * 1 / 2 + 3 * 1) / 6)
    f1 = [2 * (2 / 3) / (2 / 3 + 1), 2 * 0.5 / 1.5, 2 * (1 / 3) / (4 / 3)]
    assert [r.f1 for r in m.per_class] == pytest.approx(f1)
    # the most frequent confusions: 2->0 and 2->1 once each (rate 1/3), in class order
    assert [(c.true, c.predicted, c.count) for c in m.confused_pairs] == [
        ("class_2", "class_0", 1),
        ("class_2", "class_1", 1),
    ]
    assert m.confused_pairs[0].rate == pytest.approx(1 / 3)
    assert sorted(m.most_confident_mistakes) == [3, 5]


# ----------------------------------------------------------------------------------- absent / never predicted


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_class_absent_from_y_true(seed):
    k = 5
    y, p = random_case(seed, k)
    absent = 3
    keep = y != absent
    y, p = y[keep], p[keep]
    pred = p.argmax(axis=1)
    assert (pred == absent).any()  # the model does predict the absent class sometimes
    present = [c for c in range(k) if c != absent]
    m = compute(y, p)
    row = m.per_class[absent]
    assert row.support == 0 and row.predicted == (pred == absent).sum()
    assert math.isnan(row.recall) and math.isnan(row.f1) and math.isnan(row.auc)
    assert row.precision == 0.0
    assert all(math.isnan(v) for v in row.recall_wilson)
    assert m.evaluated_classes == tuple(f"class_{c}" for c in present)
    ref = sk_summary(y, p, labels=present)
    for key, value in ref.items():
        assert getattr(m, key) == pytest.approx(value, abs=1e-12), key
    # weighted recall over the evaluated classes is plain accuracy
    assert m.recall_weighted == pytest.approx(m.accuracy)
    assert [r.name for r in m.roc] == [f"class_{c}" for c in present]
    ref_auc = np.mean([skm.roc_auc_score(y == c, p[:, c]) for c in present])
    assert m.roc_auc_macro == pytest.approx(ref_auc, abs=1e-12)
    json.dumps(m.to_dict(), allow_nan=False)


def test_class_never_predicted_has_precision_zero():
    k = 4
    y, p = random_case(7, k)
    p = p.copy()
    p[:, 2] = 0.0  # class 2 never wins
    p /= p.sum(axis=1, keepdims=True)
    pred = p.argmax(axis=1)
    assert not (pred == 2).any() and (y == 2).any()
    m = compute(y, p)
    row = m.per_class[2]
    assert row.predicted == 0 and row.precision == 0.0 and row.recall == 0.0 and row.f1 == 0.0
    ref = sk_summary(y, p, labels=list(range(k)))
    for key, value in ref.items():
        assert getattr(m, key) == pytest.approx(value, abs=1e-12), key


def test_single_class_prediction_mcc_and_kappa_match_sklearn():
    y = np.array([0, 1, 2, 0, 1, 2, 2])
    p = np.tile([0.7, 0.2, 0.1], (7, 1))  # always class 0
    m = compute(y, p)
    assert m.matthews_corrcoef == skm.matthews_corrcoef(y, np.zeros(7, int)) == 0.0
    assert m.cohen_kappa == pytest.approx(skm.cohen_kappa_score(y, np.zeros(7, int)), abs=1e-12)


# ----------------------------------------------------------------------------------- ROC


def _trapezoid(x, y) -> float:
    x, y = np.asarray(x), np.asarray(y)
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))


@pytest.mark.parametrize("seed,k", [(0, 2), (1, 3), (2, 5), (3, 8)])
def test_roc_points_lie_on_sklearn_curve(seed, k):
    y, p = random_case(seed, k, n=150)
    m = compute(y, p)
    assert len(m.roc) == k
    for curve, c in zip(m.roc, range(k)):
        fpr, tpr = np.array(curve.fpr), np.array(curve.tpr)
        sk_fpr, sk_tpr, _ = skm.roc_curve(y == c, p[:, c], drop_intermediate=False)
        assert (fpr[0], tpr[0]) == (0.0, 0.0) and (fpr[-1], tpr[-1]) == (1.0, 1.0)
        assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
        sk_points = set(zip(np.round(sk_fpr, 12), np.round(sk_tpr, 12)))
        for pt in zip(np.round(fpr, 12), np.round(tpr, 12)):
            assert pt in sk_points
        # only collinear points were dropped: no more points than sklearn's full curve, and every
        # point of sklearn's full curve lies on a segment of ours
        assert len(fpr) <= len(sk_fpr)
        for f, t in zip(sk_fpr, sk_tpr):
            j = np.searchsorted(fpr, f, side="right") - 1
            on_vertical = np.any((np.abs(fpr - f) < 1e-12) & (tpr >= t - 1e-12)) and np.any(
                (np.abs(fpr - f) < 1e-12) & (tpr <= t + 1e-12)
            )
            if not on_vertical:
                t_line = tpr[j] + (tpr[j + 1] - tpr[j]) * (f - fpr[j]) / (fpr[j + 1] - fpr[j])
                assert t == pytest.approx(t_line, abs=1e-9)
        assert _trapezoid(fpr, tpr) == pytest.approx(skm.roc_auc_score(y == c, p[:, c]), abs=1e-12)
        assert curve.auc == pytest.approx(skm.roc_auc_score(y == c, p[:, c]), abs=1e-12)


def test_roc_curve_with_ties_matches_sklearn():
    rng = np.random.default_rng(9)
    y = rng.integers(0, 2, 300)
    s = rng.integers(0, 10, 300) / 9.0
    fpr, tpr = roc_curve(y, s)
    sk_fpr, sk_tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr, atol=1e-12)
    np.testing.assert_allclose(tpr, sk_tpr, atol=1e-12)
    assert _trapezoid(fpr, tpr) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)


def test_long_roc_curve_is_thinned_but_keeps_its_area():
    y, p = random_case(4, 2, n=4000, skill=1.0)
    m = compute(y, p)
    for curve, c in zip(m.roc, range(2)):
        assert len(curve.fpr) <= 400
        ref = skm.roc_auc_score(y == c, p[:, c])
        assert curve.auc == pytest.approx(ref, abs=1e-12)
        assert _trapezoid(curve.fpr, curve.tpr) == pytest.approx(ref, abs=5e-3)


# ----------------------------------------------------------------------------------- Wilson


def _wilson_by_hand(x, n, z):
    p = x / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def test_wilson_three_of_three():
    lo, hi = wilson_interval(3, 3)
    assert lo == pytest.approx(0.43850, abs=5e-5)
    assert hi == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("x,n", [(0, 1), (0, 10), (3, 3), (7, 10), (50, 100), (1, 1000), (999, 1000)])
@pytest.mark.parametrize("level", [0.90, 0.95, 0.99])
def test_wilson_matches_scipy_and_hand(x, n, level):
    lo, hi = wilson_interval(x, n, level)
    ref = binomtest(x, n).proportion_ci(confidence_level=level, method="wilson")
    assert lo == pytest.approx(ref.low, abs=1e-9)
    assert hi == pytest.approx(ref.high, abs=1e-9)
    h_lo, h_hi = _wilson_by_hand(x, n, float(norm.ppf(0.5 + level / 2)))
    assert (lo, hi) == pytest.approx((h_lo, h_hi), abs=1e-12)
    assert 0.0 <= lo <= x / n <= hi <= 1.0


def test_wilson_of_zero_trials_is_nan():
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_per_class_wilson_is_reported():
    y, p = random_case(0, 3)
    m = compute(y, p)
    cm = np.array(m.confusion)
    for c, row in enumerate(m.per_class):
        assert row.recall_wilson == pytest.approx(wilson_interval(int(cm[c, c]), int(cm[c].sum())))


# ----------------------------------------------------------------------------------- bootstrap


@pytest.mark.parametrize("seed,k", [(0, 2), (1, 3), (2, 5), (3, 8)])
def test_bootstrap_intervals_contain_estimate(seed, k):
    y, p = random_case(seed, k, n=400)
    m = compute(y, p, n_bootstrap=400, seed=seed)
    for est, (lo, hi) in [
        (m.accuracy, m.accuracy_ci),
        (m.f1_macro, m.f1_macro_ci),
        (m.balanced_accuracy, m.balanced_accuracy_ci),
    ]:
        assert lo <= est <= hi
        assert 0.0 <= lo < hi <= 1.0
    for row in m.per_class:
        assert row.recall_ci[0] <= row.recall <= row.recall_ci[1]
    # stratified bootstrap: the accuracy interval is a few binomial standard errors wide
    se = math.sqrt(m.accuracy * (1 - m.accuracy) / len(y))
    assert 2 * se < m.accuracy_ci[1] - m.accuracy_ci[0] < 6 * se


def test_bootstrap_is_deterministic_by_seed():
    y, p = random_case(5, 4)
    a = compute(y, p, n_bootstrap=300, seed=11)
    b = compute(y, p, n_bootstrap=300, seed=11)
    c = compute(y, p, n_bootstrap=300, seed=12)
    assert a.to_dict() == b.to_dict()
    assert (a.accuracy_ci, a.f1_macro_ci) != (c.accuracy_ci, c.f1_macro_ci)
    assert a.seed == 11 and a.n_bootstrap == 300


def test_bootstrap_spans_chunks():
    # more resamples than one chunk (200): the result is still well-formed and deterministic
    y, p = random_case(6, 3, n=120)
    a = compute(y, p, n_bootstrap=450, seed=2)
    assert a.accuracy_ci == compute(y, p, n_bootstrap=450, seed=2).accuracy_ci
    assert a.accuracy_ci[0] <= a.accuracy <= a.accuracy_ci[1]


def test_bootstrap_narrows_as_n_grows():
    widths = []
    for n in (100, 400, 1600):
        y, p = random_case(8, 3, n=n)
        m = compute(y, p, n_bootstrap=300, seed=0)
        widths.append(m.accuracy_ci[1] - m.accuracy_ci[0])
    assert widths[0] > widths[1] > widths[2]
    assert widths[0] / widths[2] > 2.5  # ~ sqrt(16) = 4 in theory


def test_perfect_class_has_degenerate_bootstrap_but_wilson_is_informative():
    y = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    p = np.array([[0.9, 0.1]] * 3 + [[0.2, 0.8], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9], [0.4, 0.6]])
    m = compute(y, p, n_bootstrap=200)
    row = m.per_class[0]
    assert row.recall == 1.0 and row.recall_ci == (1.0, 1.0)
    assert row.recall_wilson[0] == pytest.approx(0.4385, abs=1e-4)


def test_no_bootstrap_gives_nan_intervals():
    y, p = random_case(0, 3)
    m = compute(y, p, n_bootstrap=0)
    for ci in [m.accuracy_ci, m.f1_macro_ci, m.balanced_accuracy_ci] + [r.recall_ci for r in m.per_class]:
        assert len(ci) == 2 and all(math.isnan(v) for v in ci)
    d = m.to_dict()
    assert d["accuracy_ci"] == [None, None]


# ----------------------------------------------------------------------------------- serialisation


@pytest.mark.parametrize("absent", [None, 1])
def test_to_dict_is_strict_json_and_round_trips(absent):
    y, p = random_case(1, 4)
    if absent is not None:
        y, p = y[y != absent], p[y != absent]
    m = compute(y, p, n_bootstrap=100, seed=3)
    d = m.to_dict()
    text = json.dumps(d, allow_nan=False)
    d2 = json.loads(text)
    back = ClassificationMetrics.from_dict(d2)
    assert back.to_dict() == d
    assert isinstance(back, ClassificationMetrics)
    assert back.confusion == m.confusion and back.class_names == m.class_names
    assert back.accuracy == m.accuracy and back.accuracy_ci == m.accuracy_ci
    assert back.most_confident_mistakes == m.most_confident_mistakes
    assert back.per_class[2] == m.per_class[2]  # NaN-free row compares equal
    if absent is not None:
        assert d["per_class"][absent]["recall"] is None
        assert math.isnan(back.per_class[absent].recall)


# ----------------------------------------------------------------------------------- validation


def test_nan_probabilities_rejected():
    y, p = random_case(0, 3, n=20)
    p[4, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        compute(y, p)


def test_rows_not_summing_to_one_rejected():
    y, p = random_case(0, 3, n=20)
    p[2] *= 1.5
    with pytest.raises(InputError, match="probability"):
        compute(y, p)
    y, p = random_case(0, 3, n=20)
    p[3] = [1.2, -0.1, -0.1]  # sums to 1 but negative
    with pytest.raises(InputError):
        compute(y, p)


@pytest.mark.parametrize("bad", [-1, 3, 10])
def test_labels_out_of_range_rejected(bad):
    y, p = random_case(0, 3, n=20)
    y[5] = bad
    with pytest.raises(InputError) as ei:
        compute(y, p)
    assert ei.value.exit_code == 2 and "y_true" in ei.value.message


def test_shape_mismatches_rejected():
    y, p = random_case(0, 3, n=20)
    with pytest.raises(InputError):
        compute(y[:-1], p)
    with pytest.raises(InputError):
        compute_classification_metrics(y, p, class_names=names(4), n_bootstrap=0)
    with pytest.raises(InputError):
        compute(y.astype(float) + 0.5, p)
    with pytest.raises(InputError):
        compute_classification_metrics(y, p[:, 0], class_names=names(3), n_bootstrap=0)


# ----------------------------------------------------------------------------------- properties


@st.composite
def labelled_probs(draw):
    k = draw(st.integers(2, 6))
    n = draw(st.integers(k, 40))
    y = np.array(draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)))
    # coarse values give ties in scores (and in arg-max) on purpose
    raw = np.array(draw(st.lists(st.integers(1, 5), min_size=n * k, max_size=n * k)), float).reshape(n, k)
    p = raw / raw.sum(axis=1, keepdims=True)
    perm = np.array(draw(st.permutations(list(range(n)))))
    return y, p, perm


COMPARED = (
    "accuracy",
    "balanced_accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "precision_weighted",
    "recall_weighted",
    "f1_weighted",
    "cohen_kappa",
    "matthews_corrcoef",
    "top2_accuracy",
    "roc_auc_macro",
)


def _same(a, b) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(labelled_probs())
def test_permuting_samples_changes_no_metric(case):
    y, p, perm = case
    a = compute(y, p)
    b = compute(y[perm], p[perm])
    for key in COMPARED:
        assert _same(getattr(a, key), getattr(b, key)), key
    assert a.confusion == b.confusion
    assert a.confused_pairs == b.confused_pairs
    assert a.evaluated_classes == b.evaluated_classes
    for ra, rb in zip(a.per_class, b.per_class):
        for f in ("support", "predicted", "precision", "recall", "f1", "auc"):
            assert _same(getattr(ra, f), getattr(rb, f)), f
    assert [r.name for r in a.roc] == [r.name for r in b.roc]
    assert [r.auc for r in a.roc] == pytest.approx([r.auc for r in b.roc], abs=1e-12)
    for ra, rb in zip(a.roc, b.roc):
        assert ra.fpr == pytest.approx(rb.fpr) and ra.tpr == pytest.approx(rb.tpr)
    # the mistakes are the same samples renumbered (up to ties in confidence when the list is cut)
    pred = p.argmax(axis=1)
    conf_a = sorted(p[i, pred[i]] for i in a.most_confident_mistakes)
    conf_b = sorted(p[perm[j], pred[perm[j]]] for j in b.most_confident_mistakes)
    assert conf_a == conf_b
    assert all(pred[perm[j]] != y[perm[j]] for j in b.most_confident_mistakes)
    if int((pred != y).sum()) <= 12:
        assert sorted(perm[list(b.most_confident_mistakes)].tolist()) == sorted(a.most_confident_mistakes)


@settings(max_examples=60, deadline=None)
@given(labelled_probs())
def test_metrics_in_range_and_match_sklearn(case):
    y, p, _ = case
    m = compute(y, p)
    present = sorted(set(y.tolist()))
    assert 0.0 <= m.accuracy <= 1.0
    assert 0.0 <= m.top2_accuracy <= 1.0 and m.top2_accuracy >= m.accuracy
    for key in (
        "balanced_accuracy",
        "precision_macro",
        "recall_macro",
        "f1_macro",
        "precision_weighted",
        "recall_weighted",
        "f1_weighted",
    ):
        assert 0.0 <= getattr(m, key) <= 1.0, key
    assert -1.0 <= m.matthews_corrcoef <= 1.0
    ref = sk_summary(y, p, labels=present)
    for key, value in ref.items():
        assert _same(getattr(m, key), float(value)), key
    json.dumps(m.to_dict(), allow_nan=False)


def test_bootstrap_intervals_do_not_depend_on_sample_order():
    from auditor.analyses.metrics import compute_classification_metrics

    rng = np.random.default_rng(5)
    y = rng.integers(0, 4, 300)
    p = rng.dirichlet(np.ones(4), 300)
    perm = rng.permutation(300)
    a = compute_classification_metrics(y, p, class_names=list("abcd"), n_bootstrap=300, seed=1)
    b = compute_classification_metrics(y[perm], p[perm], class_names=list("abcd"), n_bootstrap=300, seed=1)
    assert a.accuracy_ci == b.accuracy_ci and a.f1_macro_ci == b.f1_macro_ci
    assert [r.recall_ci for r in a.per_class] == [r.recall_ci for r in b.per_class]
