"""Integration test on real white-blood-cell images (a subset of the public PBC dataset).

Point WBC_REAL_DATA at the folder holding `train/` and `test/` (CI uses ../shared/data/pbc5).
The shipped sample model was trained on synthetic cells, so its accuracy here may be low: this test
checks the run (every file accounted for, defects reported, numbers consistent), not the model.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from tests.conftest import SAMPLE_MODEL, run_cli

pytestmark = pytest.mark.slow
REAL = os.environ.get("WBC_REAL_DATA")


@pytest.fixture(scope="module")
def real_test_dir() -> Path:
    if not REAL:
        pytest.skip(
            "WBC_REAL_DATA is not set: the real PBC subset is absent, so the real-data integration "
            "test did not run (set WBC_REAL_DATA=../shared/data/pbc5)"
        )
    path = Path(REAL) / "test"
    if not path.is_dir():
        pytest.skip(f"WBC_REAL_DATA={REAL} has no test/ folder: the real-data integration test did not run")
    return path


def test_audit_of_real_pbc_test_set(real_test_dir, tmp_path):
    files = [p for p in real_test_dir.rglob("*") if p.is_file()]
    train = real_test_dir.parent / "train"
    r = run_cli(
        SAMPLE_MODEL,
        real_test_dir,
        "--out",
        tmp_path,
        "--format",
        "json,html",
        "--quiet",
        "--bootstrap",
        "200",
        "--external",
        f"pbc-train={train}",
    )
    assert r.returncode == 0, r.stderr
    folder = Path(r.stdout.strip())
    report = json.loads((folder / "audit.json").read_text())
    skipped = {s["path"]: s["reason"] for s in report["data_quality"]["skipped"]}
    assert skipped == {"neutrophil/.DS_169665.jpg": "hidden file"}
    assert report["dataset"]["n_images"] == len(files) - 1  # every other image counted
    counts = report["dataset"]["counts"]
    for cls in counts:
        assert counts[cls] == len(
            [p for p in (real_test_dir / cls).rglob("*") if p.is_file() and not p.name.startswith(".")]
        )
    conflicting = [g for g in report["data_quality"]["duplicates"] if g["conflicting"]]
    assert any({"eosinophil/EO_225902.jpg", "neutrophil/BNE_191112.jpg"} == set(g["paths"]) for g in conflicting)
    with open(folder / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == report["dataset"]["n_images"]
    acc = sum(r["true_label"] == r["predicted_label"] for r in rows) / len(rows)
    assert acc == pytest.approx(report["results"]["classification"]["accuracy"])
    html = (folder / "report.html").read_text()
    assert ".DS_169665.jpg" in html and "hidden file" in html
    assert r.stderr == ""  # --quiet

    # the train folder as a pretend second site: its numbers equal scikit-learn's on its predictions
    from sklearn import metrics as skm

    site = report["results"]["external_sites"]["sites"][1]
    assert site["name"] == "pbc-train"
    with open(folder / "sites" / "pbc-train.csv", newline="") as fh:
        site_rows = list(csv.DictReader(fh))
    assert len(site_rows) == site["n_images"] == len([p for p in train.rglob("*") if p.is_file()])
    y = [x["true_label"] for x in site_rows]
    p = [x["predicted_label"] for x in site_rows]
    assert skm.accuracy_score(y, p) == pytest.approx(site["accuracy"])
    assert skm.f1_score(y, p, average="macro") == pytest.approx(site["f1_macro"])
    assert skm.balanced_accuracy_score(y, p) == pytest.approx(site["balanced_accuracy"])
    recall = skm.recall_score(y, p, average=None, labels=report["classes"]["model_classes"])
    assert [site["recall"][c] for c in report["classes"]["model_classes"]] == pytest.approx(list(recall))
    internal = report["results"]["external_sites"]["sites"][0]
    assert internal["accuracy"] == report["results"]["classification"]["accuracy"]
    assert site["accuracy_gap"] == pytest.approx(internal["accuracy"] - site["accuracy"])
    assert "External sites" in html
