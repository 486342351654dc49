"""Model comparison: McNemar against a hand computation and scipy, Holm by hand, paired-bootstrap coverage by
simulation, the recommendation's weights and constraints, bad input, the shared decode (predictions identical
to one pass per model) and a three-model comparison on the sample data rendered in HTML and PDF."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from auditor.analyses.comparison import (
    MEASURES,
    Constraint,
    PairComparison,
    compare_pairs,
    holm,
    mcnemar_exact,
    paired_bootstrap,
    pareto_front,
    recommend,
)
from auditor.errors import InputError
from tests.conftest import SAMPLE_MODEL, SAMPLE_TEST, error_lines, run_cli

# ----------------------------------------------------------------------------------- pure numbers


@pytest.mark.parametrize("b, c", [(3, 10), (0, 7), (5, 5), (0, 0), (40, 62), (1, 0), (117, 80)])
def test_mcnemar_equals_hand_computation_and_scipy(b, c):
    from scipy.stats import binomtest

    n = b + c
    if n == 0:
        hand = 1.0
    else:  # two-sided: twice the smaller binomial tail at p = 1/2, at most 1
        tail = sum(np.prod([(n - j) / (j + 1) for j in range(i)]) for i in range(min(b, c) + 1)) / 2.0**n
        hand = min(1.0, 2 * tail)
    assert mcnemar_exact(b, c) == pytest.approx(hand, rel=1e-9, abs=1e-15)
    if n:
        assert mcnemar_exact(b, c) == pytest.approx(binomtest(b, n, 0.5).pvalue, rel=1e-9, abs=1e-15)
    assert (3, 10) != (b, c) or mcnemar_exact(3, 10) == pytest.approx(2 * (1 + 13 + 78 + 286) / 8192)


def test_holm_by_hand():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx((0.03, 0.06, 0.06))
    assert holm([0.5, 0.001]) == pytest.approx((0.5, 0.002))
    assert holm([0.04, 0.3, 0.2]) == pytest.approx((0.12, 0.4, 0.4))  # 3 x 0.04; 2 x 0.2; max(1 x 0.3, 0.4)
    assert holm([0.9, 0.8, 0.7]) == pytest.approx((1.0, 1.0, 1.0))


def test_pair_counts_and_gallery():
    y = np.array([0, 0, 1, 1, 2, 2])
    a = np.array([0, 0, 1, 0, 2, 1])  # right on 0, 1, 2, 4
    b = np.array([0, 1, 1, 1, 1, 2])  # right on 0, 2, 3, 5
    conf_a = np.array([0.9, 0.8, 0.7, 0.95, 0.6, 0.55])
    conf_b = np.array([0.9, 0.99, 0.7, 0.5, 0.85, 0.6])
    (p,) = compare_pairs(["A", "B"], y, [a, b], [conf_a, conf_b], ["x", "y", "z"], list("abcdef"), n_bootstrap=0)
    assert (p.both_right, p.both_wrong, p.only_a_right, p.only_b_right) == (2, 0, 2, 2)
    assert p.p_value == 1.0 and p.accuracy_diff == 0.0
    # most confident wrong answer first: b said y at 0.99 on image b, a said x at 0.95 on d, b 0.85 on e, a 0.55
    assert [d.path for d in p.disagreements] == ["b", "d", "e", "f"]
    assert p.disagreements[0].right == "a" and p.disagreements[1].right == "b"
    assert PairComparison.from_dict(json.loads(json.dumps(p.to_dict()))).to_dict() == p.to_dict()


def test_paired_bootstrap_covers_the_true_difference():
    """Joint correctness of two models: both right 0.70, only A 0.12, only B 0.06, both wrong 0.12, so the true
    accuracy difference is 0.06; the 95% interval of 250 simulated studies of 150 images covers it >= 93%."""
    rng = np.random.default_rng(12)
    probs = [0.70, 0.12, 0.06, 0.12]
    hits = 0
    sims = 250
    for s in range(sims):
        cell = rng.choice(4, size=150, p=probs)
        y = rng.integers(0, 3, size=150)
        right_a = (cell == 0) | (cell == 1)
        right_b = (cell == 0) | (cell == 2)
        a = np.where(right_a, y, (y + 1) % 3)
        b = np.where(right_b, y, (y + 2) % 3)
        lo, hi = paired_bootstrap(y, a, b, 3, n_bootstrap=400, seed=s)["accuracy"]
        hits += lo <= 0.06 <= hi
    assert hits / sims >= 0.93, hits / sims


def test_pareto_front():
    assert pareto_front([0.9, 0.8, 0.85, 0.7], [0.5, 0.7, 0.6, 0.6]) == (0, 1, 2)
    assert pareto_front([0.9, 0.8], [0.5, 0.4]) == (0,)
    assert pareto_front([10.0, 20.0], [0.5, 0.6], x_higher=False) == (0, 1)
    assert pareto_front([0.9, None], [0.5, 0.9]) == (0,)


VALUES = {
    "a.keras": {"accuracy": 0.90, "robust_accuracy": 0.60, "latency_ms": 12.0, "weakest_recall": 0.85},
    "b.keras": {"accuracy": 0.88, "robust_accuracy": 0.75, "latency_ms": 30.0, "weakest_recall": 0.70},
    "c.keras": {"accuracy": 0.80, "robust_accuracy": 0.50, "latency_ms": 5.0, "weakest_recall": 0.82},
}


def _pair(a, b, p_holm, ci):
    return PairComparison(a, b, 100, 80, 5, 8, 7, p_holm, p_holm, 0.01, ci, 0.0, ci, ())


def test_recommendation_follows_the_weights_and_constraints():
    names = list(VALUES)
    r1 = recommend(names, VALUES, {"accuracy": 1.0, "robust_accuracy": 0.2}, [])
    assert r1.recommended == "a.keras" and r1.runner_up == "b.keras"
    assert any("robust accuracy" in w and "b.keras" in w for w in r1.would_change)
    r2 = recommend(names, VALUES, {"accuracy": 0.2, "robust_accuracy": 1.0}, [])
    assert r2.recommended == "b.keras"
    # the threshold named in "what would change the choice" is where the choice flips
    needed = float(next(w for w in r1.would_change if "robust accuracy" in w).split("more than ")[1].split(" ")[0])
    assert recommend(names, VALUES, {"accuracy": 1.0, "robust_accuracy": needed * 1.01}, []).recommended == "b.keras"
    assert recommend(names, VALUES, {"accuracy": 1.0, "robust_accuracy": needed * 0.99}, []).recommended == "a.keras"
    # a constraint excludes a model, with its reason
    r3 = recommend(names, VALUES, {"accuracy": 0.2, "robust_accuracy": 1.0}, [Constraint("weakest_recall", "min", 0.8)])
    assert r3.recommended == "a.keras"
    assert [e.model for e in r3.excluded] == ["b.keras"]
    assert "70.0%" in r3.excluded[0].reasons[0] and "at least 80.0%" in r3.excluded[0].reasons[0]
    r4 = recommend(names, VALUES, {"accuracy": 1.0}, [Constraint("latency_ms", "max", 10.0)])
    assert r4.recommended == "c.keras" and {e.model for e in r4.excluded} == {"a.keras", "b.keras"}
    # a weighted measure not measured for every model is left out, said so
    r5 = recommend(names, VALUES, {"accuracy": 1.0, "ece": 0.5}, [])
    assert r5.ignored_weights and "ECE" in r5.ignored_weights[0]


def test_statistical_tie_is_said():
    names = list(VALUES)
    weights = {"accuracy": 0.3, "robust_accuracy": 1.0}
    tied = [_pair("a.keras", "b.keras", 0.6, (-0.03, 0.05))]
    r = recommend(names, VALUES, weights, [], tied)
    assert (r.recommended, r.runner_up) == ("b.keras", "a.keras")
    assert r.tie == "statistically tied on accuracy with a.keras; chosen on robust accuracy (grid mean)"
    real = [_pair("a.keras", "b.keras", 0.001, (0.01, 0.05))]
    assert recommend(names, VALUES, weights, [], real).tie is None


def test_comparison_options_reject_unknown_measures():
    from auditor.config import build_config

    with pytest.raises(InputError) as e:
        build_config({"comparison": {"weights": {"acuracy": 1}}})
    assert "unknown measure 'acuracy'" in str(e.value) and "balanced_accuracy" in str(e.value)
    with pytest.raises(InputError) as e:
        build_config({"comparison": {"constraints": {"min_speed": 1}}})
    assert "min_<measure>" in str(e.value) and "latency_ms" in str(e.value)
    with pytest.raises(InputError):
        build_config({"comparison": {"constraints": {"max_latency_ms": "fast"}}})
    with pytest.raises(InputError):
        build_config({"comparison": {"pareto_y": "speed"}})
    cfg = build_config({"comparison": {"weights": {"accuracy": 2}, "constraints": {"max_latency_ms": 50}}})
    assert cfg.comparison.weight_map() == {"accuracy": 2.0}
    assert cfg.comparison.constraint_list() == [Constraint("latency_ms", "max", 50.0)]
    assert set(MEASURES) >= {"accuracy", "ece", "aurc", "mce", "flip_rate", "cell_focus", "throughput"}


def test_config_file_unknown_measure_exits_2_before_model_time(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[comparison.weights]\naccuracy = 1\nspeed = 2\n")
    res = run_cli(SAMPLE_MODEL, SAMPLE_MODEL, SAMPLE_TEST, "--config", cfg, "--out", tmp_path / "out")
    assert res.returncode == 2, res.stderr
    (line,) = error_lines(res.stderr)
    assert "unknown measure 'speed'" in line and "latency_ms" in line
    assert not (tmp_path / "out").exists()


def test_models_sharing_no_class_are_an_input_error():
    from types import SimpleNamespace

    from auditor.compare import shared_classes

    def pm(path, classes):
        return SimpleNamespace(path=Path(path), mapping=SimpleNamespace(model_classes=tuple(classes)))

    shared, note = shared_classes([pm("a.keras", "xyz"), pm("b.keras", "zyw")])
    assert shared == ("y", "z") and "2 shared classes" in note and "a.keras also has x" in note
    assert shared_classes([pm("a.keras", "xy"), pm("b.keras", "xy")]) == (("x", "y"), None)
    with pytest.raises(InputError, match="share no class name"):
        shared_classes([pm("a.keras", "ab"), pm("b.keras", "cd")])


# ----------------------------------------------------------------------------------- with models


@pytest.fixture(scope="module")
def three_models(tmp_path_factory):
    """The sample model and two tiny CNNs trained here for 2 epochs on the sample training images: one at 48 px
    (same decoder as the sample model), one at 40 px whose sidecar asks for PIL resizing (another decoder)."""
    import keras

    root = tmp_path_factory.mktemp("cmp_models")
    paths = [SAMPLE_MODEL]
    train = SAMPLE_TEST.parent / "train"
    for size, name, resize in ((48, "tiny48.keras", None), (40, "tiny40.keras", "pil:bilinear")):
        keras.utils.set_random_seed(size)
        model = keras.Sequential(
            [
                keras.Input((size, size, 3)),
                keras.layers.Rescaling(1 / 255.0),
                keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(5, activation="softmax"),
            ]
        )
        ds = keras.utils.image_dataset_from_directory(
            train, image_size=(size, size), batch_size=32, seed=0, verbose=False
        )
        model.compile(optimizer=keras.optimizers.Adam(0.02), loss="sparse_categorical_crossentropy")
        model.fit(ds, epochs=2, verbose=0)
        path = root / name
        model.save(path)
        if resize:
            path.with_suffix(".json").write_text(json.dumps({"schema_version": 1, "resize": resize}))
        paths.append(path)
    return paths


@pytest.mark.slow
def test_shared_decode_gives_the_predictions_of_one_pass_per_model(three_models):
    from auditor.config import AuditConfig
    from auditor.data import discover
    from auditor.pipeline import clean_pass, clean_passes, prepare_model
    from auditor.progress import QUIET

    cfg = AuditConfig(model_paths=tuple(three_models), data_path=SAMPLE_TEST, n_bootstrap=0, batch_size=16)
    index = discover(SAMPLE_TEST)
    prepared = [prepare_model(cfg, p, index) for p in three_models]
    assert [pm.resize for pm in prepared] == ["bilinear", "bilinear", "pil:bilinear"]
    shared = clean_passes(prepared, index, cfg)
    for pm, cp in zip(prepared, shared):
        alone = clean_pass(pm, index, cfg, QUIET)
        assert np.array_equal(cp.sample_idx, alone.sample_idx) and np.array_equal(cp.y_true, alone.y_true)
        assert np.array_equal(cp.probs, alone.probs)  # bit for bit
        assert np.array_equal(cp.features, alone.features)
        assert dict(cp.all_hashes) == dict(alone.all_hashes)


@pytest.mark.slow
def test_three_model_comparison_renders(three_models, tmp_path):
    import auditor
    from auditor.history import write_comparison
    from auditor.report.comparison import load_comparison

    run = auditor.audit(
        three_models,
        SAMPLE_TEST,
        bootstrap=50,
        out=str(tmp_path / "out"),
        enabled=["classification", "calibration", "selective_prediction", "fisher", "perturbation_grid"],
        sections={"perturbation_grid": {"perturbations": ["defocus_blur", "gaussian_noise"], "severities": [2, 4]}},
        comparison={"speed_runs": 5, "constraints": {"min_weakest_recall": 0.05}},
    )
    assert len(run) == 3
    cmp = run.comparison
    r = cmp.result
    assert [m.name for m in r.models] == ["wbc5_small_cnn.keras", "tiny48.keras", "tiny40.keras"]
    assert len(r.pairs) == 3 and r.n_images == 100
    # the table's numbers are the individual reports' numbers
    for row, report in zip(r.models, run):
        assert row.value("accuracy") == report["classification"].metrics.accuracy
        assert row.value("robust_accuracy") == report["perturbation_grid"].grid.robust_accuracy
        assert row.value("latency_ms") > 0 and row.value("throughput") > 0
        assert row.value("cell_focus") is None and "gradcam" in row.why_missing("cell_focus")
    # pair counts are the predictions' counts
    p = r.pairs[0]
    pa = run[0].artifacts.predictions
    assert p.both_right + p.both_wrong + p.only_a_right + p.only_b_right == 100
    assert pa is not None
    assert r.recommendation.recommended in [m.name for m in r.models]
    folder = write_comparison(cmp, _cfg(tmp_path))
    assert folder.parent.name == "_comparison"
    for f in ("report.html", "report.pdf", "comparison.json", "pairs.csv", "measures.csv", "figures/pareto.png"):
        assert (folder / f).is_file(), f
    again = load_comparison(folder)
    assert again.to_dict() == json.loads((folder / "comparison.json").read_text())
    html = (folder / "report.html").read_text()
    assert "Recommended: " in html and "Which differences are real" in html and "Pareto" in html
    if shutil.which("pdftotext"):
        text = subprocess.run(
            ["pdftotext", str(folder / "report.pdf"), "-"], check=True, capture_output=True, text=True
        ).stdout
        assert "Candidates side by side" in text and "McNemar" in text


def _cfg(tmp_path):
    from auditor.config import AuditConfig

    return AuditConfig(model_paths=(), data_path=None, out_dir=tmp_path / "out")


@pytest.mark.slow
def test_cli_same_file_names_kept_apart_and_single_model_no_comparison(three_models, tmp_path):
    a, b = tmp_path / "a" / "m.keras", tmp_path / "b" / "m.keras"
    for src, dst in ((three_models[1], a), (three_models[2], b)):
        dst.parent.mkdir()
        shutil.copy(src, dst)
    shutil.copy(three_models[2].with_suffix(".json"), b.with_suffix(".json"))
    cfg = tmp_path / "c.toml"
    cfg.write_text('enabled = ["classification"]\nbootstrap = 0\nformat = ["json"]\n[comparison]\nspeed_runs = 0\n')
    res = run_cli(a, b, SAMPLE_TEST, "--config", cfg, "--out", tmp_path / "out", "-q")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.split()
    assert len(lines) == 3 and lines[0] != lines[1] and "_comparison" in lines[2]
    doc = json.loads((Path(lines[2]) / "comparison.json").read_text())
    assert [m["name"] for m in doc["comparison"]["models"]] == [str(a), str(b)]
    assert doc["comparison"]["models"][0]["values"]["latency_ms"] is None
    res = run_cli(a, SAMPLE_TEST, "--config", cfg, "--out", tmp_path / "out1", "-q")
    assert res.returncode == 0 and len(res.stdout.split()) == 1
    assert not (tmp_path / "out1" / "_comparison").exists()


def test_timings_within_a_factor_of_two_do_not_decide():
    """Two copies of one model measured 1.5 and 2.0 ms: not a reason to prefer one; 5 against 30 ms is."""
    same = {"a.keras": {"accuracy": 0.9, "latency_ms": 2.0}, "b.keras": {"accuracy": 0.9, "latency_ms": 1.5}}
    r = recommend(list(same), same, {"accuracy": 1.0, "latency_ms": 1.0}, [])
    assert dict(r.scores)["a.keras"] == dict(r.scores)["b.keras"]
    fast = {"a.keras": {"accuracy": 0.9, "latency_ms": 30.0}, "b.keras": {"accuracy": 0.9, "latency_ms": 5.0}}
    r2 = recommend(list(fast), fast, {"accuracy": 1.0, "latency_ms": 1.0}, [])
    assert r2.recommended == "b.keras" and dict(r2.scores)["b.keras"] > dict(r2.scores)["a.keras"]
    # and the words say it is a tie, not a choice
    assert r.tie and "given first" in r.tie and "score equally on every weighted measure" in r.reasons[0]
