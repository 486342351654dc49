"""The sequential preprocessing check: elimination statistics by hand and by simulation, and agreement
with the exhaustive check on a trained Keras model at a fraction of its forward passes."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest

from auditor.analyses.preprocessing import PreprocessingCheck, Setting, compute_preprocessing_check
from auditor.analyses.sequential import (
    decide_look,
    drop_level,
    look_schedule,
    run_elimination,
    sign_test_p,
    stratified_order,
    tie_miss_probability,
)

# ----------------------------------------------------------------------------------- pure statistics


def test_sign_test_matches_scipy():
    wins = np.array([[0, 3, 10], [5, 40, 11]])
    losses = np.array([[0, 1, 0], [5, 35, 2]])
    p = sign_test_p(wins, losses)
    for w, lo, got in zip(wins.ravel(), losses.ravel(), p.ravel()):
        ref = binomtest(int(w), int(w + lo), 0.5, alternative="greater").pvalue if w + lo else 1.0
        assert got == pytest.approx(ref, rel=1e-12)
    assert sign_test_p(11, 0) == pytest.approx(2.0**-11)


def test_schedule_and_level_by_hand():
    assert look_schedule(250) == (32, 64, 128, 250)
    assert look_schedule(1000) == (32, 64, 128, 256, 512, 1000)
    assert look_schedule(45) == (45,)  # a 13-image second look is not worth a test
    assert look_schedule(20) == (20,)
    assert look_schedule(0) == ()
    assert drop_level(20, 3) == pytest.approx(0.05 / 57)
    assert tie_miss_probability(0.05, 128) == pytest.approx(0.95**128)
    assert tie_miss_probability(0.02, 128) < 0.08


def test_stratified_order_prefixes_are_stratified():
    y = np.repeat([0, 1, 2], [100, 60, 40])
    order = stratified_order(y, seed=3)
    assert sorted(order) == list(range(200))
    for n in (10, 32, 64, 128):
        counts = np.bincount(y[order[:n]], minlength=3)
        assert np.all(np.abs(counts - n * np.array([0.5, 0.3, 0.2])) <= 1.0 + 1e-9), (n, counts)
    assert not np.array_equal(order, stratified_order(y, seed=4))


def _by_hand_matrix():
    """4 settings on 250 images: reference 90 % right, a hopeless one 10 %, a copy of the reference,
    and a near one (88 %) that differs from the reference on a few images."""
    m = 250
    ref = np.arange(m) % 10 != 0  # 90 %
    hopeless = np.arange(m) % 10 == 0  # right exactly where the reference is wrong: 10 %
    near = ref.copy()
    near[[1, 13, 25, 37, 49, 61, 73]] = False  # 7 losses
    near[[10, 130]] = True  # 2 wins
    return np.stack([ref, hopeless, ref.copy(), near])


def test_clearly_worse_dropped_at_first_look_and_copy_tied():
    correct = _by_hand_matrix()
    asked = []

    def evaluate(idx, start, stop):
        asked.append((tuple(int(i) for i in idx), start, stop))
        return correct[idx, start:stop]

    res = run_elimination(evaluate, 4, 250, reference=0, schedule=(32, 64, 128, 250), n_tie=64)
    # first look: the reference beats 'hopeless' on 29 images of 32 and loses 3: p far below 0.05 / (3 * 3)
    p_first = binomtest(29, 32, 0.5, alternative="greater").pvalue
    assert p_first < drop_level(4, 3)
    assert res.status == ("reference", "dropped", "tied", "full")
    assert list(res.n_evaluated) == [250, 32, 64, 250]
    assert asked[0] == ((0, 1, 2, 3), 0, 32)
    assert asked[1] == ((0, 2, 3), 32, 64)  # 'hopeless' is no longer asked for
    assert asked[2][0] == (0, 3)
    # the exhaustive mode asks for everything once
    res = run_elimination(
        lambda idx, a, b: correct[idx, a:b], 4, 250, reference=0, schedule=(32, 64, 128, 250), sequential=False
    )
    assert res.status == ("reference", "full", "full", "full") and list(res.n_evaluated) == [250] * 4


def test_decide_look_tie_needs_enough_images_and_identical_correctness():
    correct = _by_hand_matrix()[:, :40]
    active = np.ones(4, dtype=bool)
    d = decide_look(correct, active, reference=0, level=1e-3, n_tie=64)
    assert not d.tie.any()  # 40 < 64 images
    d = decide_look(correct, active, reference=0, level=1e-3, n_tie=32)
    assert list(d.tie) == [False, False, True, False]  # 'near' differs on image 1, 10, 13, 25, 37
    assert d.wins[0, 1] == 36 and d.wins[1, 0] == 4
    assert d.p_values[0, 1] == pytest.approx(binomtest(36, 40, 0.5, alternative="greater").pvalue)
    with pytest.raises(ValueError):
        decide_look(correct, np.array([False, True, True, True]), reference=0, level=1e-3)


def test_error_rate_under_the_null_is_controlled():
    """20 settings of equal accuracy (independent 70 % coin flips per image): the exhaustive best is
    dropped in at most alpha of the runs (the bound is conservative, so far fewer in practice)."""
    rng = np.random.default_rng(12345)
    runs, best_dropped, drops = 400, 0, 0
    s_count, m = 20, 250
    for _ in range(runs):
        correct = rng.random((s_count, m)) < 0.7
        res = run_elimination(
            lambda idx, a, b, c=correct: c[idx, a:b], s_count, m, reference=0, schedule=look_schedule(m), alpha=0.05
        )
        best = int(np.argmax(correct.sum(axis=1)))
        best_dropped += res.status[best] == "dropped"
        drops += res.status.count("dropped")
    assert best_dropped / runs <= 0.05
    # each setting is as good as any other in the population, so each drop of it is an error: its rate
    # per setting is bounded by alpha too (the family of all 19 droppable settings is not, by design)
    assert drops / (runs * (s_count - 1)) <= 0.05
    # and the same machinery is not blind: a 20-point worse setting is dropped nearly always
    dropped = 0
    for _ in range(100):
        correct = rng.random((s_count, m)) < 0.7
        correct[5] = rng.random(m) < 0.5
        res = run_elimination(
            lambda idx, a, b, c=correct: c[idx, a:b], s_count, m, reference=0, schedule=look_schedule(m)
        )
        dropped += res.status[5] == "dropped"
    assert dropped >= 90


# ----------------------------------------------------------------------------------- the analysis on prefixes

Y = np.arange(100) % 5


def _preds(n_correct, n=100):
    y = Y[:n]
    return np.where(np.arange(n) < n_correct, y, (y + 1) % 5)


def test_stopped_settings_in_the_analysis_by_hand():
    chosen = ("bilinear", "raw")
    preds = {
        chosen: _preds(80),
        ("area", "raw"): _preds(82),
        ("bilinear", "unit"): _preds(3, n=32),
        ("area", "unit"): _preds(32, n=32),
        ("nearest", "raw"): _preds(64, n=64),
    }
    status = {("bilinear", "unit"): "dropped", ("area", "unit"): "dropped", ("nearest", "raw"): "tied"}
    r = compute_preprocessing_check(
        Y, preds, chosen=chosen, status=status, forward_passes=228, forward_passes_exhaustive=400
    )
    assert r.resize_methods == ("bilinear", "area", "nearest") and r.scalings == ("raw", "unit")
    S = lambda r_, s_: Setting(r_, "none", "rgb", s_)  # noqa: E731  (old two-part keys mean no crop, RGB)
    assert r.chosen == S("bilinear", "raw")
    # a dropped setting keeps its accuracy on the images it saw, and is never the best, even at 100 %
    assert r.accuracy_of(S("bilinear", "unit")) == pytest.approx(3 / 32) and r.accuracy_of(S("area", "unit")) == 1.0
    assert r.best == S("area", "raw")
    # a tied setting counts with the chosen's accuracy on the whole subsample (80 %), not its 64/64
    assert r.accuracy_of(S("nearest", "raw")) == 0.8
    assert r.resize_spread == pytest.approx(0.02)
    _, _, acc, st, nn = r.grid("none", "rgb")
    assert nn == [[100, 32], [100, 32], [64, 0]]
    assert st == [["full", "dropped"], ["full", "dropped"], ["tied", ""]]
    assert np.isnan(acc[2, 1])
    assert r.stopped_early() == [
        (S("bilinear", "unit"), "dropped", 32),
        (S("area", "unit"), "dropped", 32),
        (S("nearest", "raw"), "tied", 64),
    ]
    assert r.warnings == ()
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    back = PreprocessingCheck.from_dict(d)
    assert back.to_dict() == d and back.forward_passes == 228 and back.forward_passes_exhaustive == 400
    # a report written before the settings had four parts (a resize x scaling grid) still loads
    old = PreprocessingCheck.from_dict(
        {
            **{k: d[k] for k in ("n_samples", "chosen_accuracy", "best_accuracy", "mismatch_p_value")},
            **{k: d[k] for k in ("resize_spread", "warnings", "mismatch_points", "spread_points")},
            "resize_methods": ["bilinear", "area"],
            "scalings": ["raw", "unit"],
            "accuracy": [[0.8, None], [0.82, 0.5]],
            "chosen": ["bilinear", "raw"],
            "best": ["area", "raw"],
        }
    )
    assert old.chosen == S("bilinear", "raw") and old.best == S("area", "raw") and old.stopped_early() == []
    assert old.accuracy_of(S("area", "unit")) == 0.5 and old.forward_passes == 0
    # a short prediction vector without a status is an error
    with pytest.raises(ValueError):
        compute_preprocessing_check(Y, {chosen: _preds(80), ("area", "raw"): _preds(20, n=32)}, chosen=chosen)


def test_grid_figure_marks_stopped_settings(monkeypatch):
    from auditor.report import figures

    chosen = ("bilinear", "raw")
    preds = {
        chosen: _preds(80),
        ("bilinear", "unit"): _preds(3, n=32),
        ("area", "raw"): _preds(64, n=64),
        ("area", "unit"): _preds(10),
    }
    r = compute_preprocessing_check(
        Y, preds, chosen=chosen, status={("bilinear", "unit"): "dropped", ("area", "raw"): "tied"}
    )
    texts = []
    real = figures.sns.heatmap

    def spy(data, **kw):
        texts.append(np.asarray(kw["annot"]).tolist())
        return real(data, **kw)

    monkeypatch.setattr(figures.sns, "heatmap", spy)
    png = figures.preprocessing_grid(r)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # the best setting (the chosen, bilinear raw) has no crop and RGB: that grid, with the stopped ones marked
    assert texts[0] == [["80.0%", "9.4% (stop 32)"], ["80.0% (tie 64)", "10.0%"]]


# ----------------------------------------------------------------------------------- a trained Keras model

keras = pytest.importorskip("keras")

from auditor.config import RESIZE_CHOICES, AuditConfig
from auditor.data import discover
from auditor.pipeline import clean_pass, prepare_model, run_section
from auditor.preprocess import SCALINGS
from auditor.progress import QUIET
from tests.conftest import train_folder_loader_cnn, write_colour_folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """As tests/test_keras_parity.py: a small CNN with its own Rescaling layer trained through Keras's
    folder loader on images of mixed sizes, briefly (it makes mistakes); a larger test folder."""
    root = tmp_path_factory.mktemp("seqcheck")
    _, path = train_folder_loader_cnn(root)
    test = write_colour_folder(root / "test", n_per_class=100, size=(61, 29), seed=2, jitter=70)
    return path, test


def _both_checks(path, data, **kw):
    """The exhaustive and the sequential check on one clean pass, counting the images forwarded."""
    cfg = AuditConfig(
        model_paths=(path,), data_path=data, n_bootstrap=0, sections={"preprocessing_check": {"samples": 300}}, **kw
    )
    index = discover(data)
    pm = prepare_model(cfg, path, index)
    cp = clean_pass(pm, index, cfg, QUIET)
    real = pm.adapter.forward
    counted = [0]

    def forward(x):
        counted[0] += len(x)
        return real(x)

    pm.adapter.forward = forward
    out = []
    for sequential in (False, True):
        counted[0] = 0
        check = run_section("preprocessing_check", cfg, pm, index, cp, sequential=sequential)
        assert check.forward_passes == counted[0]
        out.append((check, counted[0]))
    return cp, out


@pytest.mark.parametrize("preprocess", ["auto", "unit"])
def test_sequential_agrees_with_exhaustive_at_a_fraction_of_the_passes(trained, preprocess):
    path, test = trained
    cp, [(full, n_full), (seq, n_seq)] = _both_checks(path, test, preprocess=preprocess)
    assert full.n_samples == seq.n_samples == 300
    n_settings = len(full.settings)  # the default space: every plain resize name x channel order x scaling
    assert n_settings == len(RESIZE_CHOICES) * 2 * len(SCALINGS)
    assert (n_settings - 1) * 300 == full.forward_passes_exhaustive == seq.forward_passes_exhaustive
    # identical pixels (e.g. two resizes that agree on some batch) are forwarded once, even exhaustively
    assert n_full <= full.forward_passes_exhaustive
    assert full.stopped_early() == []
    assert seq.best == full.best
    assert seq.warnings == full.warnings  # same warnings, word for word
    assert (
        seq.chosen_accuracy == full.chosen_accuracy == pytest.approx(np.mean(cp.probs.argmax(axis=1) == cp.y_true))
    )  # all 300 images: the chosen's come from the clean pass
    print(f"preprocess={preprocess}: sequential {n_seq} / exhaustive {n_full} image passes")
    assert n_seq <= 0.15 * full.forward_passes_exhaustive, (n_seq, n_full, seq.stopped_early())
    # the two stages run a part of the space; every setting run to the end has the exhaustive accuracy exactly
    assert set(seq.settings) < set(full.settings)
    for i, st in enumerate(seq.status):
        if st == "full":
            assert seq.accuracy[i] == full.accuracy_of(seq.settings[i])
    if preprocess == "unit":  # the deliberately wrong scaling is flagged by both
        assert seq.chosen == ("bilinear", "none", "rgb", "unit") and seq.best.scaling == "raw"
        assert any(w.startswith("Preprocessing mismatch") and "--preprocess raw" in w for w in seq.warnings)
    else:
        assert not any(w.startswith("Preprocessing mismatch") for w in seq.warnings)
    if seq.best[1:] != seq.chosen[1:]:  # stage 2 ran with another scaling: nothing may be "tied" with the chosen
        assert all(st != "tied" or s[1:] == seq.chosen[1:] for s, st in zip(seq.settings, seq.status))
    # settings stopped early are all hopeless ones (another scaling than the best's) or tied with the chosen
    for setting, st, n in seq.stopped_early():
        assert st == "tied" or setting[1:] != seq.best[1:], (setting, st, n)


# ----------------------------------------------------------------------------------- real images, timing


def test_sequential_check_time_on_real_images(tmp_path):
    """On 1,000 real PBC images (802 files, the first 198 again) with the sample model: the sequential
    check's time against the clean pass's (printed), and agreement with the exhaustive check."""
    root = os.environ.get("WBC_REAL_DATA")
    if not root or not Path(root, "train").is_dir():
        pytest.skip("WBC_REAL_DATA is not set to the pbc5 folder")
    files = sorted(Path(root).glob("t*/*/*.jpg"))
    data = tmp_path / "pbc1000"
    for i in range(1000):
        f = files[i % len(files)]
        (data / f.parent.name).mkdir(parents=True, exist_ok=True)
        (data / f.parent.name / f"{i:04d}_{f.name}").symlink_to(f)
    model = Path(__file__).resolve().parents[1] / "model_zoo" / "pretrained" / "wbc5_small_cnn.keras"
    cfg = AuditConfig(model_paths=(model,), data_path=data, n_bootstrap=0)
    index = discover(data)
    pm = prepare_model(cfg, model, index)
    clean_pass(pm, index, cfg, QUIET)  # warm-up
    cp = clean_pass(pm, index, cfg, QUIET)
    t = time.perf_counter()
    seq = run_section("preprocessing_check", cfg, pm, index, cp)
    t_seq = time.perf_counter() - t
    full = run_section("preprocessing_check", cfg, pm, index, cp, sequential=False)
    print(
        f"clean pass {cp.seconds:.2f} s, sequential check {t_seq:.2f} s ({t_seq / cp.seconds:.2f}x), "
        f"{seq.forward_passes}/{seq.forward_passes_exhaustive} image passes"
    )
    assert seq.best == full.best and seq.warnings == full.warnings
    assert seq.forward_passes <= seq.forward_passes_exhaustive
