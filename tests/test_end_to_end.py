"""The whole program as a subprocess on the shipped sample model and data, as `make demo` runs it:
five outputs, numbers equal to scikit-learn's on predictions.csv, the HTML in a real headless
browser, the PDF rasterised and its text extracted, and a run killed half-way."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SAMPLE_MODEL, SAMPLE_TEST, error_lines, run_cli

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
ARTIFACTS = os.environ.get("WBC_TEST_ARTIFACTS")  # set to keep screenshots and PDF pages for a look


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory) -> Path:
    assert SAMPLE_MODEL.is_file(), f"the committed sample model is missing: {SAMPLE_MODEL}"
    out = tmp_path_factory.mktemp("demo")
    r = run_cli(SAMPLE_MODEL, SAMPLE_TEST, "--out", out)
    assert r.returncode == 0, r.stderr
    folder = Path(r.stdout.strip().splitlines()[-1])
    assert folder.parent == out / SAMPLE_MODEL.stem
    assert "model pass" in r.stderr  # progress is visible without --quiet
    return folder


def test_all_five_outputs(demo_report):
    for name in ("report.html", "report.pdf", "audit.json", "predictions.csv"):
        assert (demo_report / name).stat().st_size > 0, name
    figures = sorted(p.name for p in (demo_report / "figures").glob("*.png"))
    assert {
        "confusion_counts.png",
        "confusion_normalized.png",
        "roc_curves.png",
        "recall_intervals.png",
        "preprocessing_grid.png",
    } <= set(figures)
    report = json.loads((demo_report / "audit.json").read_text())
    assert report["schema_version"] == 1
    assert report["classes"]["source"] == "sidecar"
    assert report["model"]["sha256"][:8] in demo_report.name


def test_json_numbers_equal_sklearn_on_predictions_csv(demo_report):
    from sklearn import metrics as skm

    report = json.loads((demo_report / "audit.json").read_text())
    m = report["results"]["classification"]
    names = m["class_names"]
    with open(demo_report / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == m["n_samples"] == report["dataset"]["n_images"]
    y_true = [r["true_label"] for r in rows]
    y_pred = [r["predicted_label"] for r in rows]
    probs = np.array([[float(r[f"prob_{n}"]) for n in names] for r in rows])
    assert skm.accuracy_score(y_true, y_pred) == pytest.approx(m["accuracy"], abs=1e-12)
    assert skm.f1_score(y_true, y_pred, average="macro") == pytest.approx(m["f1_macro"], abs=1e-12)
    assert skm.confusion_matrix(y_true, y_pred, labels=names).tolist() == m["confusion"]
    assert skm.roc_auc_score([names.index(t) for t in y_true], probs, multi_class="ovr") == pytest.approx(
        m["roc_auc_macro"], abs=1e-4
    )  # probabilities are rounded to 6 digits in the CSV
    for r in rows:
        p = [float(r[f"prob_{n}"]) for n in names]
        assert r["predicted_label"] == names[int(np.argmax(p))]
        assert float(r["confidence"]) == pytest.approx(max(p))
    assert report["summary"]["headline"]["accuracy"] == m["accuracy"]
    # per-image Fisher scores in the CSV are ||p - y||^2 and 1 - ||p||^2 of its own probability columns
    for r in rows[:20]:
        p = np.array([float(r[f"prob_{n}"]) for n in names])
        y = np.eye(len(names))[names.index(r["true_label"])]
        assert float(r["fisher_score"]) == pytest.approx(np.sum((p - y) ** 2), abs=1e-5)
        assert float(r["expected_fisher_score"]) == pytest.approx(1 - np.sum(p**2), abs=1e-5)
    fisher = report["results"]["fisher"]
    scores = np.array([float(r["fisher_score"]) for r in rows])
    assert fisher["tail_count"] == int(np.sum(scores > fisher["threshold"]))
    assert fisher["summaries"][0]["quantiles"]["p90"] == pytest.approx(np.quantile(scores, 0.9), abs=1e-5)


@pytest.mark.browser
def test_html_in_headless_chromium(demo_report, tmp_path):
    if CHROMIUM is None:
        pytest.fail("headless Chromium is not installed: `make test` installs it (apt package chromium)")
    playwright = pytest.importorskip("playwright.sync_api", reason="the test extra installs playwright")
    report = json.loads((demo_report / "audit.json").read_text())
    problems: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-quic",
            ],
        )
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on(
            "console",
            lambda msg: (
                problems.append(f"console {msg.type}: {msg.text}") if msg.type in ("error", "warning") else None
            ),
        )
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        requests: list[str] = []
        page.on("request", lambda req: requests.append(req.url))
        page.goto((demo_report / "report.html").as_uri(), wait_until="load")
        images = page.eval_on_selector_all(
            "img", "els => els.map(e => [e.getAttribute('alt'), e.complete, e.naturalWidth])"
        )
        shot = Path(ARTIFACTS or tmp_path) / "report_screenshot.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
        text = page.inner_text("body")
        browser.close()
    assert not problems, problems
    assert len(images) >= 5
    broken = [alt for alt, complete, width in images if not complete or width == 0]
    assert not broken, f"broken images: {broken}"
    external = [u for u in requests if not u.startswith(("file:", "data:"))]
    assert not external, f"the report made external requests: {external}"
    assert f"{report['results']['classification']['accuracy'] * 100:.1f}%" in text
    res = report["results"]
    for needle in (
        f"{res['calibration']['ece'] * 100:.2f}%",
        f"{res['selective_prediction']['aurc']:.4f}",
        f"{res['fisher']['tail_mass'] * 100:.1f}%",
        "Sensitivity: Fisher scores",
        "risk–coverage curve",
    ):
        assert needle in text, needle
    assert shot.stat().st_size > 50_000


def test_pdf_pages_and_text(demo_report, tmp_path):
    pdftoppm, pdftotext = shutil.which("pdftoppm"), shutil.which("pdftotext")
    if not (pdftoppm and pdftotext):
        pytest.fail("poppler-utils (pdftoppm, pdftotext) is not installed: `make test` installs it")
    pdf = demo_report / "report.pdf"
    outdir = Path(ARTIFACTS or tmp_path)
    outdir.mkdir(parents=True, exist_ok=True)
    subprocess.run([pdftoppm, "-r", "40", "-png", str(pdf), str(outdir / "page")], check=True)
    pages = sorted(outdir.glob("page-*.png"))
    assert 3 <= len(pages) <= 20
    import cv2

    for page in pages:
        img = cv2.imread(str(page), cv2.IMREAD_GRAYSCALE)
        assert img.shape[0] > img.shape[1]  # portrait A4
        assert (img < 200).mean() > 0.002, f"{page.name} looks blank"
    text = subprocess.run([pdftotext, "-layout", str(pdf), "-"], check=True, capture_output=True, text=True).stdout
    report = json.loads((demo_report / "audit.json").read_text())
    acc = report["results"]["classification"]["accuracy"]
    assert f"{acc * 100:.1f}%" in text
    assert report["report_id"] in text  # running header
    assert "page 1 of" in text and SAMPLE_MODEL.name in text
    res = report["results"]
    for needle in (
        f"{res['calibration']['ece'] * 100:.2f}%",
        f"{res['selective_prediction']['aurc']:.4f}",
        f"{res['calibration']['temperature']:.3f}",
        "Sensitivity: Fisher scores",
        "Calibration",
        "Selective prediction",
    ):
        assert needle in text, needle
    for p in res["selective_prediction"]["operating_points"]:
        if p["reachable"]:
            assert f"{p['coverage'] * 100:.1f}%" in text and f"{p['threshold']:.4f}" in text


def test_killed_run_leaves_no_half_report_and_keeps_earlier_ones(demo_report, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(demo_report.parent, out / SAMPLE_MODEL.stem)
    earlier = {p: p.read_bytes() for p in (out / SAMPLE_MODEL.stem).rglob("*") if p.is_file()}
    cmd = [sys.executable, "-m", "auditor.cli", str(SAMPLE_MODEL), str(SAMPLE_TEST), "--out", str(out), "--quiet"]
    proc = subprocess.Popen(
        cmd, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.time() + 240
    partial = []
    while time.time() < deadline and proc.poll() is None:
        partial = list((out / SAMPLE_MODEL.stem).glob(".partial-*"))
        if partial:
            break
        time.sleep(0.02)
    assert partial, "the run finished before a partial folder was seen"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    folders = sorted(p.name for p in (out / SAMPLE_MODEL.stem).iterdir() if not p.name.startswith("."))
    assert folders == [demo_report.name], folders  # no new, half-written report folder
    for p, data in earlier.items():
        assert p.read_bytes() == data
    # the next run cleans the dead run's partial folder and writes a complete report
    r = run_cli(
        SAMPLE_MODEL, SAMPLE_TEST, "--out", out, "--quiet", "--format", "json", "--preprocess-check-samples", "0"
    )
    assert r.returncode == 0 and not error_lines(r.stderr), r.stderr
    assert r.stderr == "", "--quiet must keep stderr empty (TensorFlow's start-up notices included)"
    assert not list((out / SAMPLE_MODEL.stem).glob(".partial-*"))
    assert (Path(r.stdout.strip()) / "audit.json").is_file()
