"""A model trained through Keras's folder loader: the audit reproduces model.evaluate exactly with
the default resize, and the preprocessing check flags a deliberately wrong scaling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from auditor.config import AuditConfig
from auditor.pipeline import run_audit
from tests.conftest import train_folder_loader_cnn, write_colour_folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small CNN with its own Rescaling layer, trained on images of mixed sizes (so resizing matters)."""
    root = tmp_path_factory.mktemp("parity")
    model, path = train_folder_loader_cnn(root)
    test = write_colour_folder(root / "test", n_per_class=15, size=(61, 29), seed=2, jitter=70)
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])  # for evaluate only
    test_ds = keras.utils.image_dataset_from_directory(
        test, image_size=(24, 24), batch_size=16, shuffle=False, verbose=False
    )
    _, acc = model.evaluate(test_ds, verbose=0)
    return path, test, float(acc)


def _audit(path, data, preprocess_check_samples=0, **kw):
    cfg = AuditConfig(
        model_paths=(path,),
        data_path=data,
        n_bootstrap=0,
        sections={"preprocessing_check": {"samples": preprocess_check_samples}},
        **kw,
    )
    return run_audit(cfg)[0]


def test_audit_reproduces_model_evaluate_exactly(trained):
    path, test, keras_acc = trained
    report = _audit(path, test, preprocess_check_samples=0)
    assert report.preprocessing["scaling"] == "raw"  # detected from the Rescaling layer
    assert report.preprocessing["resize"] == "bilinear"
    n = report["classification"].metrics.n_samples
    assert n == 45
    assert 0.4 < keras_acc < 1.0, keras_acc  # the model must make mistakes for the check to bite
    assert round(report["classification"].metrics.accuracy * n) == round(keras_acc * n)
    assert report["classification"].metrics.accuracy == pytest.approx(keras_acc, abs=1e-7)


def test_preprocessing_check_flags_a_wrong_scaling(trained):
    path, test, keras_acc = trained
    report = _audit(path, test, preprocess="unit", preprocess_check_samples=45)
    check = report["preprocessing_check"]
    assert check.chosen == ("bilinear", "none", "rgb", "unit")  # (resize, crop, channels, scaling)
    assert check.best.scaling == "raw" and check.best.channels == "rgb"
    assert check.best_accuracy - check.chosen_accuracy > 0.02
    assert any(w.startswith("Preprocessing mismatch") and "--preprocess raw" in w for w in check.warnings)
    assert any("Preprocessing mismatch" in w for w in report.summary["warnings"])
    # the right setting raises no mismatch warning
    good = _audit(path, test, preprocess_check_samples=45)["preprocessing_check"]
    assert not any(w.startswith("Preprocessing mismatch") for w in good.warnings)
    assert good.chosen_accuracy == pytest.approx(keras_acc)
    json.dumps(report.to_dict(), allow_nan=False)


def test_report_round_trips_through_json(trained):
    from auditor.report.document import AuditReport

    path, test, _ = trained
    report = _audit(path, test, preprocess_check_samples=20)
    d = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert AuditReport.from_dict(d).to_dict() == d
    assert np.isclose(d["results"]["classification"]["accuracy"], report["classification"].metrics.accuracy)
    assert Path(d["dataset"]["path"]) == test
