"""Binary classifiers with one output (sigmoid probability or logit) are audited as two classes [1-s, s].

A small model is trained here on two colour classes; every headline number is checked against
scikit-learn on the model's own outputs (``model.predict``). Class order is Keras's binary label_mode:
sorted folder names, index 1 the positive class.
"""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, log_loss, roc_auc_score

from tests.conftest import error_lines, run_cli, write_colour_folder

keras = pytest.importorskip("keras")

from auditor.config import AuditConfig
from auditor.pipeline import run_audit
from auditor.report import figures

SIZE = (16, 16)


@pytest.fixture(scope="module")
def two_colours(tmp_path_factory):
    """blue (index 0) and red (index 1) patches whose colours overlap (jitter), 30 per class."""
    root = write_colour_folder(tmp_path_factory.mktemp("bin") / "data", n_per_class=30, size=SIZE, seed=3, jitter=70.0)
    shutil.rmtree(root / "green")
    images, labels = [], []
    for label, name in enumerate(("blue", "red")):
        for f in sorted((root / name).iterdir()):
            images.append(cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB))
            labels.append(label)
    return root, np.stack(images).astype(np.float32), np.array(labels)


def _train(x, y, *, logit: bool):
    keras.utils.set_random_seed(0)
    inp = keras.Input(SIZE + (3,))
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255.0)(inp))
    h = keras.layers.Dense(4, activation="relu", name="hidden")(h)
    out = keras.layers.Dense(1, activation=None if logit else "sigmoid", name="out")(h)
    model = keras.Model(inp, out)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=keras.losses.BinaryCrossentropy(from_logits=logit))
    model.fit(x, y.astype(np.float32), epochs=15, batch_size=16, verbose=0)
    return model


@pytest.mark.slow
@pytest.mark.parametrize("logit", [False, True], ids=["sigmoid", "logit"])
def test_binary_model_numbers_equal_scikit_learn(two_colours, tmp_path, logit):
    root, x, y = two_colours
    model = _train(x, y, logit=logit)
    path = tmp_path / "binary.keras"
    model.save(path)
    out = model.predict(x, verbose=0)[:, 0].astype(np.float64)
    s = 1 / (1 + np.exp(-out)) if logit else out  # P(red)
    y_pred = (s > 0.5).astype(int)

    config = AuditConfig(
        model_paths=(path,), data_path=root, n_bootstrap=20, workers=1, sections={"preprocessing_check": {"samples": 4}}
    )
    (r,) = run_audit(config)
    assert r.model["n_outputs"] == 2
    assert r.model["output_type"] == ("logit (binary)" if logit else "sigmoid (binary)")
    assert "P(class index 1)" in r.model["output_detection"]
    assert r.model["feature_layer"] == "input of 'out'" and r.model["feature_dim"] == 4
    assert r.classes["model_classes"] == ["blue", "red"]
    m = r["classification"].metrics
    assert m.n_samples == len(y)
    assert m.accuracy == pytest.approx(accuracy_score(y, y_pred), abs=1e-12)
    assert 0.55 < m.accuracy < 1.0  # a real, imperfect classifier: the check below is not trivial
    assert np.array_equal(np.asarray(m.confusion), confusion_matrix(y, y_pred))
    auc = roc_auc_score(y, s)
    assert m.roc_auc_macro == pytest.approx(auc, abs=1e-9)
    assert [row.auc for row in m.per_class] == pytest.approx([auc, auc], abs=1e-9)
    # every other section ran on the two-class probabilities
    assert not r.failures, r.failures
    for section in ("fisher", "calibration", "selective_prediction", "preprocessing_check"):
        assert r.get(section) is not None, section
    probs = np.stack([1 - s, s], axis=1)
    assert r["calibration"].mean_confidence == pytest.approx(probs.max(axis=1).mean(), abs=1e-6)
    assert r["calibration"].accuracy == pytest.approx(m.accuracy, abs=1e-12)
    assert r["calibration"].nll == pytest.approx(log_loss(y, s), rel=1e-5)
    png = figures.roc_curves(m)
    assert png[:4] == b"\x89PNG"


def test_binary_roc_figure_draws_the_positive_class_only(monkeypatch):
    from auditor.analyses.metrics import compute_classification_metrics

    y = np.array([0, 0, 1, 1, 0, 1])
    p1 = np.array([0.1, 0.6, 0.7, 0.4, 0.2, 0.9])
    m = compute_classification_metrics(y, np.stack([1 - p1, p1], 1), class_names=["neg", "pos"], n_bootstrap=0)
    drawn = []
    real_plot = figures.matplotlib.axes.Axes.plot

    def spy(ax, *args, **kwargs):
        drawn.append(kwargs.get("label"))
        return real_plot(ax, *args, **kwargs)

    monkeypatch.setattr(figures.matplotlib.axes.Axes, "plot", spy)
    figures.roc_curves(m)
    assert drawn == [f"pos (AUC {roc_auc_score(y, p1):.3f})", "chance"]


def _save(model, path):
    model.save(path)
    return path


@pytest.mark.slow
def test_regression_output_and_multilabel_model_are_refused(two_colours, tmp_path):
    root, _, _ = two_colours
    inp = keras.Input(SIZE + (3,))
    h = keras.layers.GlobalAveragePooling2D()(inp)  # raw pixels: relu(sum) is far above 1
    reg = _save(
        keras.Model(inp, keras.layers.Dense(1, activation="relu", kernel_initializer="ones")(h)),
        tmp_path / "regression.keras",
    )
    res = run_cli(
        reg,
        root,
        "--out",
        tmp_path / "out",
        "--format",
        "json",
        "--preprocess-check-samples",
        "0",
        "--preprocess",
        "raw",
    )
    assert res.returncode == 2, res.stderr
    (line,) = error_lines(res.stderr)
    assert "regression.keras" in line and "'relu' activation" in line and "not a probability" in line

    multi = _save(keras.Model(inp, keras.layers.Dense(2, activation="sigmoid")(h)), tmp_path / "multilabel.keras")
    res = run_cli(multi, root, "--out", tmp_path / "out", "--format", "json", "--preprocess-check-samples", "0")
    assert res.returncode == 2, res.stderr
    (line,) = error_lines(res.stderr)
    assert "multilabel.keras" in line and "multi-label" in line and "single-label" in line
