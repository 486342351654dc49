"""The report fits its page: an audit with eight classes (long WBC names) and five external sites (long
site names), skipped files, duplicates and a leaked image, laid out as A4 PDF.

Checks, from the PDF itself: no word of any page runs past the left or right margin that ``report.css``
sets (word boxes from poppler's ``pdftotext -bbox``); the HTML has a contents list linking every section in
order; the PDF has exactly one bookmark per section, labelled with its heading.
"""

from __future__ import annotations

import html as htmllib
import re
import shutil
import subprocess
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
from conftest import REPO, run_cli

pytestmark = pytest.mark.slow

CLASSES = (
    "basophil",
    "eosinophil",
    "erythroblast",
    "immature granulocyte",
    "lymphocyte",
    "monocyte",
    "neutrophil",
    "platelet",
)
CORNERS = [(a, b, c) for a in (0, 1) for b in (0, 1) for c in (0, 1)]  # one colour per class
SITES = (
    "hospital-b-2019",
    "regional-laboratory-north",
    "university-clinic-c",
    "st-marys-haematology",
    "field-station-2023",
)
LONG_FILE = "IG_scan_2019-04-17_analyser-CellaVision-DM96_slide0042_region0007_cell{:03d}.png"
BROKEN_FILE = "PLT_export_from_the_laboratory_information_system_2019-04-17_slide0042_unreadable.png"
PT_PER_MM = 72 / 25.4


def _write_folder(folder: Path, n: int, seed: int, jitter: float) -> None:
    """Colour patches, one colour per class (a corner of the RGB cube), shifted at random by ``jitter``."""
    import cv2

    rng = np.random.default_rng(seed)
    for name, corner in zip(CLASSES, CORNERS):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            base = np.array(corner) * 160 + 48 + rng.normal(0, jitter, 3)
            img = np.clip(base + rng.normal(0, 30, (20, 24, 3)), 0, 255).astype(np.uint8)
            file = LONG_FILE.format(i) if name == "immature granulocyte" else f"{name}_{i:03d}.png"
            cv2.imwrite(str(folder / name / file), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))


def _model(path: Path) -> None:
    """Hand-set 8-class model: mean colour -> the nearest class colour (softmax of -distance², sharpness 8)."""
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    h = keras.layers.Dense(3, activation="relu", name="features")(x)
    out = keras.layers.Dense(len(CLASSES), activation="softmax", name="head")(h)
    model = keras.Model(inp, out)
    model.get_layer("features").set_weights([np.eye(3, dtype=np.float32), np.zeros(3, np.float32)])
    centres = (np.array(CORNERS, np.float32) * 160 + 48) / 255
    model.get_layer("head").set_weights(
        [(16 * centres.T).astype(np.float32), (-8 * (centres**2).sum(1)).astype(np.float32)]
    )
    model.save(path)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    if not shutil.which("pdftotext"):
        pytest.fail("poppler-utils (pdftotext) is not installed: `make test` installs it")
    root = tmp_path_factory.mktemp("layout")
    internal = root / "internal"
    _write_folder(internal, 6, seed=0, jitter=45)
    (internal / "platelet" / BROKEN_FILE).write_bytes(b"not an image")
    shutil.copy(internal / "basophil" / "basophil_000.png", internal / "basophil" / "basophil_000_copy.png")
    shutil.copy(internal / "basophil" / "basophil_001.png", internal / "eosinophil" / "eosinophil_copy.png")
    for j, site in enumerate(SITES):
        _write_folder(root / site, 4, seed=j + 1, jitter=30 + 25 * j)
    shutil.copy(internal / "monocyte" / "monocyte_000.png", root / SITES[0] / "monocyte" / "leaked.png")
    _model(root / "model.keras")
    externals = [a for s in SITES for a in ("--external", f"{s}={root / s}")]
    r = run_cli(
        root / "model.keras",
        internal,
        "--out",
        root / "out",
        "--quiet",
        "--bootstrap",
        "50",
        "--preprocess-check-samples",
        "48",
        "--class-names",
        ",".join(CLASSES),
        *externals,
        "--sites-full",
    )
    assert r.returncode == 0, r.stderr
    (folder,) = (root / "out" / "model").iterdir()
    return folder


def _page_margins_mm() -> tuple[float, float]:
    """Left and right page margins (mm) from the ``@page`` rule of report.css (CSS ``margin`` shorthand)."""
    css = (REPO / "templates" / "report.css").read_text(encoding="utf-8")
    page = css[css.index("@page") :]
    values = [float(v) for v in re.search(r"margin:\s*([^;]+);", page).group(1).replace("mm", " ").split()]
    # one value: all four sides; two or three: the second is left and right; four: top right bottom left
    left, right = {1: (values[0], values[0]), 2: (values[1], values[1]), 3: (values[1], values[1])}.get(
        len(values), (values[-1], values[1])
    )
    return left, right


def _pdf_words(pdf: Path) -> list[tuple[int, float, float, float, str]]:
    """(page, page width, xMin, xMax, text) of every word poppler finds in the PDF."""
    xml = subprocess.run(["pdftotext", "-bbox", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    ns = "{http://www.w3.org/1999/xhtml}"
    out = []
    for number, page in enumerate(ElementTree.fromstring(xml).iter(ns + "page"), 1):
        width = float(page.get("width"))
        for w in page.iter(ns + "word"):
            out.append((number, width, float(w.get("xMin")), float(w.get("xMax")), w.text or ""))
    return out


def test_page_margins_read_from_the_stylesheet():
    # the checker below is only as good as this: margin: 20mm 14mm 18mm 14mm is top, right, bottom, left
    left, right = _page_margins_mm()
    assert 5 <= left <= 40 and 5 <= right <= 40


def test_no_text_runs_past_the_margins(report):
    words = _pdf_words(report / "report.pdf")
    assert len({p for p, *_ in words}) >= 10 and len(words) > 2000  # the whole report was read
    left, right = _page_margins_mm()
    tolerance = 1.0  # points
    outside = [
        f"page {p}: {text!r} spans x {x0:.1f}–{x1:.1f} pt, text area {left * PT_PER_MM:.1f}–{w - right * PT_PER_MM:.1f}"
        for p, w, x0, x1, text in words
        if x1 > w - right * PT_PER_MM + tolerance or x0 < left * PT_PER_MM - tolerance
    ]
    assert not outside, "\n".join(outside[:20])
    # text pushed wholly off the page is not in the word boxes: everything the wide tables hold is there
    text = subprocess.run(
        ["pdftotext", str(report / "report.pdf"), "-"], capture_output=True, text=True, check=True
    ).stdout
    flat = re.sub(r"-\n", "-", text)
    flat = re.sub(r"\s+", " ", flat)
    for needle in (*SITES, *CLASSES, "Shift score", "Fisher tail", "F separates mistakes", "AUC"):
        assert needle in flat, needle
    # a long file path (the skipped file in data quality) may break anywhere, but is there in full
    pieces = "".join(t for *_, t in words if len(t) > 3 and t in BROKEN_FILE)
    assert BROKEN_FILE in pieces, pieces


def _h2_titles(html: str) -> list[str]:
    return [htmllib.unescape(re.sub(r"<[^>]+>", "", t)).strip() for t in re.findall(r"<h2[^>]*>(.*?)</h2>", html, re.S)]


def test_html_contents_links_every_section_in_order(report):
    html = (report / "report.html").read_text(encoding="utf-8")
    nav = re.search(r'<nav id="contents"[^>]*>(.*?)</nav>', html, re.S)
    assert nav, "no contents list"
    links = re.findall(r'<a href="#([^"]+)">(.*?)</a>', nav.group(1))
    sections = re.findall(r'<section id="([^"]+)"', html)
    assert [a for a, _ in links] == sections
    assert {"summary", "model-data", "preprocessing-check", "accuracy", "fisher", "calibration", "selective"} <= set(
        sections
    )
    assert {"external-sites", "data-quality", "configuration"} <= set(sections)
    # each entry reads as the section's heading
    assert [htmllib.unescape(t) for _, t in links] == _h2_titles(html)


def test_pdf_has_one_bookmark_per_section(report):
    from pypdf import PdfReader

    outline = PdfReader(report / "report.pdf").outline
    assert all(not isinstance(entry, list) for entry in outline), "nested bookmarks (h3) found"
    html = (report / "report.html").read_text(encoding="utf-8")
    assert [entry.title for entry in outline] == _h2_titles(html)
    assert len(outline) == len(re.findall(r"<section id=", html))


def test_site_recall_table_is_split_and_complete(report):
    # eight classes: two tables of four, each with every site, together every class once
    html = (report / "report.html").read_text(encoding="utf-8")
    tables = re.findall(r'<table class="full small-table recall-by-site">(.*?)</table>', html, re.S)
    assert len(tables) == 2
    heads = [htmllib.unescape(h) for t in tables for h in re.findall(r'<th class="num">(.*?)</th>', t)]
    assert heads == list(CLASSES)
    for t in tables:
        assert len(re.findall(r"<tr>", t)) == 1 + 1 + len(SITES)
