"""External sites: the gap and the label-free shift score move with the drift of a generated site,
bad site input gets its one-line error, and leakage is found by content hash."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("keras")

from auditor.analyses.sites import SiteData, compute_sites, shift_auc
from auditor.cli import main
from sample_data.generator import SiteStyle, generate_dataset
from tests.conftest import SAMPLE_MODEL, SAMPLE_TEST

FAST = ["--bootstrap", "100", "--preprocess-check-samples", "0", "--quiet", "--format", "json"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_shift_auc_is_half_for_the_same_distribution_and_one_for_separate_ones():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    assert abs(shift_auc(a, b) - 0.5) < 0.08
    assert shift_auc(a, b + 3.0) > 0.99


@pytest.fixture(scope="module")
def drifted_sites(tmp_path_factory):
    root = tmp_path_factory.mktemp("sites")
    out = {}
    for shift in (0.0, 0.5, 1.0):
        out[shift] = root / f"shift{shift}"
        generate_dataset(out[shift], n_per_class=30, seed=4242, style=SiteStyle(stain_shift=shift, scale=1 + shift / 5))
    return out


@pytest.mark.slow
def test_gap_and_shift_score_grow_with_drift(drifted_sites, tmp_path):
    args = [SAMPLE_MODEL, SAMPLE_TEST, "--out", tmp_path, *FAST, "--format", "json,pdf"]
    for shift, path in drifted_sites.items():
        args += ["--external", f"s{shift}={path}"]
    r = invoke(*args)
    assert r.exit_code == 0, r.stderr
    folder = Path(r.stdout.strip())
    report = json.loads((folder / "audit.json").read_text())
    rows = {s["name"]: s for s in report["results"]["external_sites"]["sites"]}
    assert list(rows) == ["internal", "s0.0", "s0.5", "s1.0"]
    gaps = [rows[f"s{x}"]["accuracy_gap"] for x in (0.0, 0.5, 1.0)]
    shifts = [rows[f"s{x}"]["shift_score"] for x in (0.0, 0.5, 1.0)]
    assert gaps[0] < 0.10  # same laboratory, other images: little gap
    assert gaps[0] < gaps[1] < gaps[2], gaps
    assert shifts[0] < shifts[1] <= shifts[2] and shifts[0] < 0.5 < shifts[2], shifts
    assert report["results"]["external_sites"]["furthest"] == "s1.0"
    # per-site numbers equal scikit-learn's on the per-site predictions
    from sklearn import metrics as skm

    for name in ("s0.0", "s0.5", "s1.0"):
        with open(folder / "sites" / f"{name}.csv", newline="") as fh:
            pred = list(csv.DictReader(fh))
        y, p = [x["true_label"] for x in pred], [x["predicted_label"] for x in pred]
        assert skm.accuracy_score(y, p) == pytest.approx(rows[name]["accuracy"])
        assert skm.f1_score(y, p, average="macro") == pytest.approx(rows[name]["f1_macro"])
    assert any("External site s1.0" in w for w in report["summary"]["warnings"])
    # the section is in the PDF, with every site's accuracy as printed in audit.json
    import shutil as _shutil
    import subprocess

    if _shutil.which("pdftotext"):
        text = subprocess.run(
            ["pdftotext", str(folder / "report.pdf"), "-"], capture_output=True, text=True, check=True
        ).stdout
        assert "External sites" in text and "The sites side by side" in text
        for name in rows:
            assert name in text and f"{rows[name]['accuracy'] * 100:.1f}%" in text


def test_site_with_fewer_classes_and_leakage(tmp_path):
    site = tmp_path / "lab"
    for cls in ("eosinophil", "lymphocyte"):
        shutil.copytree(SAMPLE_TEST / cls, site / cls)
    (site / "blast").mkdir()
    shutil.copy(SAMPLE_TEST / "monocyte" / sorted(os.listdir(SAMPLE_TEST / "monocyte"))[0], site / "blast" / "b.png")
    r = invoke(SAMPLE_MODEL, SAMPLE_TEST, "--out", tmp_path / "o", *FAST, "--external", f"lab={site}")
    assert r.exit_code == 0, r.stderr
    report = json.loads((Path(r.stdout.strip()) / "audit.json").read_text())
    lab = report["results"]["external_sites"]["sites"][1]
    assert lab["classes"] == ["eosinophil", "lymphocyte"] and lab["n_images"] == 40
    assert lab["leaked_images"] == 40
    info = report["external_sites"][0]
    assert info["unknown_classes"] == ["blast"]
    assert {"path": "blast/b.png", "reason": "class 'blast' is not one of the model's classes"} in info["skipped"]
    warnings = " ".join(report["summary"]["warnings"])
    assert "Leakage: site lab shares 40" in warnings and "blast" in warnings


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--external", "x=/no/such/dir"], "--external x=/no/such/dir: no such directory"),
        (["--external", "a=D", "--external", "A=D"], "two sites are named 'A'"),
        (["--external", "nodir"], "'nodir' is not NAME=DIR"),
        (["--external", "internal=D"], "'internal' is taken"),
    ],
)
def test_bad_site_options(tmp_path, args, needle):
    args = [a.replace("D", str(SAMPLE_TEST)) if a.endswith("=D") else a for a in args]
    r = invoke(SAMPLE_MODEL, SAMPLE_TEST, "--out", tmp_path, *FAST, *args)
    assert r.exit_code == 2
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and needle in lines[0], r.stderr


def test_site_without_any_known_class(tmp_path):
    site = tmp_path / "other"
    (site / "platelet").mkdir(parents=True)
    shutil.copy(next((SAMPLE_TEST / "basophil").iterdir()), site / "platelet" / "p.png")
    r = invoke(SAMPLE_MODEL, SAMPLE_TEST, "--out", tmp_path, *FAST, "--external", f"other={site}")
    assert r.exit_code == 2
    assert "holds no class the model knows" in r.stderr and "platelet" in r.stderr and f"other={site}" in r.stderr


def test_compute_sites_reading_flags_confident_mistakes():
    rng = np.random.default_rng(1)
    n, k = 300, 3
    y = rng.integers(0, k, n)
    good = np.full((n, k), 0.05)
    good[np.arange(n), y] = 0.9
    bad = np.full((n, k), 0.05)
    bad[np.arange(n), (y + 1) % k] = 0.9  # all wrong, just as confident
    feats = rng.normal(size=(n, 4))
    r = compute_sites(
        SiteData("internal", y, good, feats),
        [SiteData("far", y, bad, feats + 5)],
        class_names=list("abc"),
        n_bootstrap=0,
    )
    far = r.rows[1]
    assert far.accuracy_gap == pytest.approx(1.0) and far.confidence_drop == pytest.approx(0.0)
    assert far.shift_score > 0.95
    assert any("stays confident while wrong" in line for line in r.reading)
    assert "accuracy falls 100.0 points but mean confidence stays the same." in r.reading[2]


@pytest.mark.parametrize(
    ("site_conf", "words"),
    [
        (0.85, "accuracy falls 100.0 points but mean confidence falls only 5.0 points."),
        (0.95, "accuracy falls 100.0 points but mean confidence rises 5.0 points."),
        (0.4, "confidence falls with accuracy: accuracy falls 100.0 points and mean confidence falls 50.0 points,"),
    ],
)
def test_compute_sites_reading_says_what_every_number_is(site_conf, words):
    # every prediction internal is right at confidence 0.9; at the site every one is wrong at site_conf
    n, k = 60, 3
    y = np.arange(n) % k
    good = np.full((n, k), 0.05)
    good[np.arange(n), y] = 0.9
    bad = np.full((n, k), (1 - site_conf) / (k - 1))
    bad[np.arange(n), (y + 1) % k] = site_conf
    feats = np.random.default_rng(0).normal(size=(n, 2))
    r = compute_sites(
        SiteData("internal", y, good, feats), [SiteData("b", y, bad, feats)], class_names=list("abc"), n_bootstrap=0
    )
    assert r.rows[1].confidence_drop == pytest.approx(0.9 - site_conf)
    assert words in r.reading[2], r.reading


def test_reading_names_no_furthest_site_when_none_can_be_told_apart():
    """Identical features at every site: no shift score above 0.00, so no site is called the furthest."""
    rng = np.random.default_rng(3)
    n, k = 200, 3
    y = np.arange(n) % k
    probs = np.full((n, k), 0.1)
    probs[np.arange(n), y] = 0.8
    feats = rng.normal(size=(n, 4))
    r = compute_sites(
        SiteData("internal", y, probs, feats),
        [SiteData("a", y, probs, feats.copy()), SiteData("b", y, probs, feats.copy())],
        class_names=list("abc"),
        n_bootstrap=0,
    )
    assert all(round(row.shift_score, 2) == 0 for row in r.rows[1:])
    assert r.reading[1].startswith("No external site can be told apart from the internal images")
    assert not any("furthest" in line for line in r.reading)
    # a site that can be told apart is still named
    r2 = compute_sites(
        SiteData("internal", y, probs, feats),
        [SiteData("far", y, probs, feats + 4)],
        class_names=list("abc"),
        n_bootstrap=0,
    )
    assert r2.reading[1].startswith("The site furthest from the internal images by the model's own features is far")
