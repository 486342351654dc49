"""A broken model must not pass: non-finite weights are an input error; constant, one-class,
non-normalised and saturated outputs are warned about (the analysis by hand, then on tiny models)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from auditor.analyses.model_sanity import ModelSanity, compute_model_sanity

NAMES = ["basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil"]


def _healthy(n=200, k=5, seed=0):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(k), n)
    return probs, probs.argmax(1)


def _roundtrip(s: ModelSanity) -> None:
    d = json.loads(json.dumps(s.to_dict(), allow_nan=False))
    assert ModelSanity.from_dict(d).to_dict() == d


# ------------------------------------------------------------------------------------ by hand


def test_healthy_outputs_give_no_warning():
    probs, y = _healthy()
    s = compute_model_sanity(
        probs,
        y,
        n_classes_in_data=5,
        output_type="probabilities",
        class_names=NAMES,
        raw_row_sums={"n_rows": 200, "min_row_sum": 0.9999, "max_row_sum": 1.0001, "mean_row_sum": 1.0, "rows_off": 0},
    )
    assert s.warnings == () and not s.looks_broken and not s.rows_not_normalised
    assert s.n_predicted_classes == 5
    # the spread is max over classes of (max - min) across images, computed here independently
    assert s.max_spread == pytest.approx(max(probs[:, j].max() - probs[:, j].min() for j in range(5)))
    _roundtrip(s)


def test_constant_rows_look_broken_with_the_evidence():
    rng = np.random.default_rng(1)
    probs = np.full((200, 5), 0.2) + rng.uniform(-1.5e-8, 1.5e-8, (200, 5))
    y = np.arange(200) % 5
    s = compute_model_sanity(probs, y, n_classes_in_data=5, output_type="probabilities", class_names=NAMES)
    assert s.constant_output and s.looks_broken
    assert s.max_spread < 3e-8
    w = s.warnings[0]
    assert w.startswith("The model looks broken")
    assert "every one of 200 images gets the same probabilities (0.200 for each class, max spread" in w.lower()
    _roundtrip(s)


def test_constant_but_uneven_rows_name_the_classes():
    probs = np.tile([0.1, 0.1, 0.6, 0.1, 0.1], (30, 1))
    s = compute_model_sanity(probs, np.arange(30) % 5, n_classes_in_data=5, output_type="logits", class_names=NAMES)
    assert s.looks_broken and "0.600 for 'lymphocyte'" in s.warnings[0] and "predicts 'lymphocyte'" in s.warnings[0]
    assert len(s.warnings) == 1  # one broken-model warning, not two


def test_one_class_for_every_image_looks_broken():
    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.ones(5), 200)
    probs[:, 2] += 3.0  # lymphocyte always wins, rows still vary
    probs /= probs.sum(1, keepdims=True)
    s = compute_model_sanity(
        probs, np.arange(200) % 5, n_classes_in_data=5, output_type="probabilities", class_names=NAMES
    )
    assert not s.constant_output and s.looks_broken
    assert s.single_predicted_class == "lymphocyte"
    assert "predicts 'lymphocyte' for all 200 images although the data holds 5 classes" in s.warnings[0]
    # one class in the data: predicting it everywhere is not a sign of a broken model
    one = compute_model_sanity(
        probs, np.full(200, 2), n_classes_in_data=1, output_type="probabilities", class_names=NAMES
    )
    assert not one.looks_broken and one.warnings == ()


def test_probabilities_that_sum_to_two_are_warned_about_only_when_claimed():
    probs, y = _healthy()
    raw = {"n_rows": 200, "min_row_sum": 1.998, "max_row_sum": 2.002, "mean_row_sum": 2.0, "rows_off": 200}
    s = compute_model_sanity(probs, y, n_classes_in_data=5, output_type="probabilities", raw_row_sums=raw)
    assert s.rows_not_normalised and not s.looks_broken
    assert len(s.warnings) == 1
    assert "sum to 2.000 (1.998 to 2.002), not 1, in 200 of 200 images" in s.warnings[0]
    assert "the audit normalised them" in s.warnings[0]
    logits = compute_model_sanity(probs, y, n_classes_in_data=5, output_type="logits", raw_row_sums=raw)
    assert logits.warnings == ()  # raw logits need not sum to 1
    _roundtrip(s)


def test_saturation_counts_top_probabilities_that_are_one_in_float32():
    k, n = 5, 100
    probs = np.full((n, k), 0.2)
    y = np.arange(n) % k
    # 51 saturated rows: 1 - 1e-9 rounds to 1.0 in float32 (and 2.5e-10 to a non-zero float32: not 0)
    for i in range(51):
        probs[i] = 2.5e-10
        probs[i, y[i]] = 1 - 1e-9
    for i in range(51, n):  # 0.9999 is not 1.0 in float32
        probs[i] = 2.5e-5
        probs[i, y[i]] = 0.9999
    s = compute_model_sanity(probs, y, n_classes_in_data=5, output_type="probabilities")
    assert s.saturated_share == pytest.approx(0.51)
    assert s.zero_share == 0.0
    assert any(w.startswith("Saturated outputs: 51% of images") for w in s.warnings)
    probs[50, :] = 2.5e-5
    probs[50, y[50]] = 0.9999
    s = compute_model_sanity(probs, y, n_classes_in_data=5, output_type="probabilities")
    assert s.saturated_share == pytest.approx(0.50) and s.warnings == ()


def test_bad_arguments_are_input_errors():
    from auditor.errors import InputError

    probs, y = _healthy(10)
    with pytest.raises(InputError):
        compute_model_sanity(probs, y[:5], n_classes_in_data=5, output_type="probabilities")
    with pytest.raises(InputError):
        compute_model_sanity(probs, y, n_classes_in_data=5, output_type="softmax")


# ------------------------------------------------------------------------------------ on tiny models

keras = pytest.importorskip("keras")

from auditor.config import AuditConfig
from auditor.pipeline import run_audit
from tests.conftest import colour_model, error_lines, run_cli, write_colour_folder


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    return write_colour_folder(tmp_path_factory.mktemp("sanity") / "data", n_per_class=8)


def _audit(path, data):
    cfg = AuditConfig(
        model_paths=(path,), data_path=data, n_bootstrap=0, sections={"preprocessing_check": {"samples": 0}}
    )
    return run_audit(cfg)[0]


def test_nan_weights_exit_2_naming_the_layers(tmp_path, colours):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(4, 3, name="conv2d"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, activation="softmax", name="dense_1"),
        ]
    )
    kernel, bias = model.get_layer("conv2d").get_weights()
    model.get_layer("conv2d").set_weights([np.full_like(kernel, np.nan), bias])
    w, b = model.get_layer("dense_1").get_weights()
    b[1] = np.inf
    model.get_layer("dense_1").set_weights([w, b])
    path = tmp_path / "model.keras"
    model.save(path)
    proc = run_cli(path, colours, "--out", tmp_path / "out", "--quiet")
    assert proc.returncode == 2, proc.stderr
    (line,) = error_lines(proc.stderr)
    assert "model.keras: weights are not finite in layer(s) conv2d (kernel: 108 NaN), dense_1 (bias: 1 Inf)" in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("audit.json"))


def test_savedmodel_with_nan_variables_is_an_input_error(tmp_path):
    from auditor.errors import InputError
    from auditor.model import KerasClassifier

    model = colour_model()
    w, b = model.get_layer("head").get_weights()
    w[0, 0] = np.nan
    model.get_layer("head").set_weights([w, b])
    model.export(str(tmp_path / "sm"), verbose=False)
    with pytest.raises(InputError, match=r"weights are not finite in layer\(s\) .*1 NaN"):
        KerasClassifier(tmp_path / "sm")


def test_constant_output_model_is_flagged_first_and_boxed(tmp_path, colours):
    model = colour_model()
    w, b = model.get_layer("head").get_weights()
    model.get_layer("head").set_weights([np.zeros_like(w), b])  # the output ignores the image: 1/3 each
    path = tmp_path / "constant.keras"
    model.save(path)
    proc = run_cli(
        path,
        colours,
        "--out",
        tmp_path / "out",
        "--format",
        "json,html",
        "--bootstrap",
        "0",
        "--preprocess-check-samples",
        "0",
        "--quiet",
    )
    assert proc.returncode == 0, proc.stderr
    folder = next((tmp_path / "out").rglob("audit.json")).parent
    report = json.loads((folder / "audit.json").read_text())
    sanity = report["results"]["model_sanity"]
    assert sanity["looks_broken"] and sanity["constant_output"] and sanity["max_spread"] == 0.0
    first = report["summary"]["warnings"][0]
    assert first.startswith("The model looks broken")
    assert "every one of 24 images gets the same probabilities (0.333 for each class" in first.lower()
    assert report["results"]["classification"]["accuracy"] == pytest.approx(1 / 3)
    html = (folder / "report.html").read_text()
    assert 'id="model-broken"' in html and "THE MODEL LOOKS BROKEN" in html
    # at the top of the summary: after its heading, before the headline cards
    assert html.index('<section id="summary">') < html.index('id="model-broken"') < html.index('class="cards"')


def test_bias_only_output_is_flagged(tmp_path, colours):
    model = colour_model(softmax=False)
    w, _ = model.get_layer("head").get_weights()
    model.get_layer("head").set_weights([np.zeros_like(w), np.array([0.0, 2.0, 0.0], np.float32)])
    path = tmp_path / "bias.keras"
    model.save(path)
    report = _audit(path, colours)
    s = report["model_sanity"]
    assert s.looks_broken and s.single_predicted_class == "green"
    assert report.summary["warnings"][0].startswith("The model looks broken")
    p = np.exp([0.0, 2.0, 0.0]) / np.exp([0.0, 2.0, 0.0]).sum()
    assert f"{p[1]:.3f} for 'green'" in report.summary["warnings"][0]


@keras.saving.register_keras_serializable(package="wbc_test_sanity", name="softmax")
def softmax(x):  # named like the real one, but its rows sum to 2
    return 2.0 * keras.activations.softmax(x)


def test_probabilities_summing_to_two_are_normalised_and_warned(tmp_path, colours):
    model = colour_model()
    inp = model.inputs[0]
    feats = model.get_layer("features").output
    head = keras.layers.Dense(3, activation=softmax, name="head2")
    out = head(feats)
    m2 = keras.Model(inp, out)
    head.set_weights(model.get_layer("head").get_weights())
    path = tmp_path / "sum2.keras"
    m2.save(path)
    report = _audit(path, colours)
    assert report.model["output_type"] == "probabilities"
    s = report["model_sanity"]
    assert s.rows_not_normalised and s.raw_rows == 24 and s.raw_rows_off == 24
    assert s.raw_sum_min == pytest.approx(2.0, abs=1e-5) and s.raw_sum_max == pytest.approx(2.0, abs=1e-5)
    assert any(
        "'probabilities' sum to 2.000 (2.000 to 2.000), not 1, in 24 of 24 images" in w
        for w in report.summary["warnings"]
    )
    assert report["classification"].metrics.accuracy == 1.0  # the audit completed on the normalised rows


def test_saturated_model_is_warned_about(tmp_path, colours):
    model = colour_model()
    w, b = model.get_layer("head").get_weights()
    model.get_layer("head").set_weights([w * 200.0, b])  # logits hundreds apart: softmax is exactly one-hot
    path = tmp_path / "saturated.keras"
    model.save(path)
    report = _audit(path, colours)
    assert report["model_sanity"].saturated_share == 1.0 and not report["model_sanity"].looks_broken
    assert any(w.startswith("Saturated outputs: 100% of images") for w in report.summary["warnings"])
    healthy = _audit(_save(colour_model(), tmp_path / "ok.keras"), colours)
    assert healthy["model_sanity"].warnings == ()


def _save(model, path):
    model.save(path)
    return path
