"""Tests of the synthetic white-blood-cell generator (numpy + OpenCV only, fast)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from sample_data.generator import (
    CLASS_NAMES,
    SiteStyle,
    generate_arrays,
    generate_dataset,
    image_rng,
    iter_images,
    make_image,
    make_indexed_image,
)

ROOT = Path(__file__).resolve().parents[1]
WBC5 = ROOT / "sample_data" / "wbc5"


def test_class_names_sorted():
    assert list(CLASS_NAMES) == sorted(CLASS_NAMES)
    assert len(CLASS_NAMES) == 5


def test_make_image_shape_dtype_every_class():
    for c in CLASS_NAMES:
        img = make_image(c, np.random.default_rng(0))
        assert img.shape == (96, 96, 3) and img.dtype == np.uint8
        assert 20 < img.mean() < 250 and img.std() > 5  # not blank
    assert make_image("lymphocyte", np.random.default_rng(0), size=64).shape == (64, 64, 3)


def test_unknown_class_rejected():
    with pytest.raises(ValueError):
        make_image("platelet", np.random.default_rng(0))


def test_same_seed_same_bytes():
    a, la = generate_arrays(2, seed=11)
    b, lb = generate_arrays(2, seed=11)
    assert a.tobytes() == b.tobytes() and np.array_equal(la, lb)
    c, _ = generate_arrays(2, seed=12)
    assert a.tobytes() != c.tobytes()


def test_image_independent_of_count_and_classes():
    few, _ = generate_arrays(1, seed=5)
    many, labels = generate_arrays(3, seed=5)
    for ci, c in enumerate(CLASS_NAMES):
        first = many[np.flatnonzero(labels == ci)[0]]
        assert np.array_equal(few[ci], first)
        assert np.array_equal(first, make_indexed_image(c, 0, seed=5))
    only, lab = generate_arrays({"monocyte": 3}, seed=5, classes=["monocyte"])
    assert np.array_equal(only[2], make_indexed_image("monocyte", 2, seed=5))
    assert lab.tolist() == [0, 0, 0]


def test_arrays_labels_and_iter_images():
    imgs, labels = generate_arrays({"basophil": 1, "neutrophil": 2}, seed=3)
    assert imgs.shape == (3, 96, 96, 3) and imgs.dtype == np.uint8
    assert sorted(labels.tolist()) == [0, 4, 4]
    stream = list(iter_images(1, seed=3))
    assert [lab for _, lab in stream] == list(range(5))  # every class produced, round robin


def test_style_paired_and_stain_shift_monotonic():
    # the same cell is drawn under every style (the random stream does not depend on the style)
    shifts = [0.0, 0.5, 1.0, 1.5, 2.0]
    stats = []
    for s in shifts:
        imgs = np.stack(
            [make_image(c, image_rng(9, c, 0), style=SiteStyle(stain_shift=s)).astype(np.float64) for c in CLASS_NAMES]
        )
        stats.append((imgs[..., 2] - imgs[..., 0]).mean())  # blue minus red: the stain drifts bluer
    assert all(b > a + 1.0 for a, b in zip(stats, stats[1:])), stats
    base = make_image("neutrophil", image_rng(9, "neutrophil", 1))
    darker = make_image("neutrophil", image_rng(9, "neutrophil", 1), style=SiteStyle(brightness=0.8))
    blurred = make_image("neutrophil", image_rng(9, "neutrophil", 1), style=SiteStyle(blur=2.0))
    assert darker.mean() < base.mean() - 10
    lap = lambda im: cv2.Laplacian(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()  # noqa: E731
    assert lap(blurred) < lap(base)


def test_site_style_validation():
    with pytest.raises(ValueError):
        SiteStyle(scale=0)
    with pytest.raises(ValueError):
        SiteStyle(blur=-1)


def test_generate_dataset_with_mislabels(tmp_path):
    m = generate_dataset(tmp_path, n_per_class=2, seed=4, size=48, mislabel=2)
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png"))
    assert len(files) == 10 and m["counts"] == {c: 2 for c in CLASS_NAMES}
    assert "basophil/basophil_0001.png" in files
    assert len(m["mislabelled"]) == 2
    for entry in m["mislabelled"]:
        assert entry["path"] in files
        assert entry["path"].split("/")[0] == entry["given_label"] != entry["true_label"]
    img = cv2.imread(str(tmp_path / "monocyte" / "monocyte_0000.png"))
    assert img.shape == (48, 48, 3)
    if "monocyte/monocyte_0000.png" not in {e["path"] for e in m["mislabelled"]}:
        assert np.array_equal(img[..., ::-1], make_indexed_image("monocyte", 0, seed=4, size=48))


@pytest.mark.skipif(not (WBC5 / "manifest.json").exists(), reason="committed sample data missing")
def test_committed_wbc5_manifest_matches_folders():
    m = json.loads((WBC5 / "manifest.json").read_text())
    assert m["class_names"] == list(CLASS_NAMES)
    for split, info in m["splits"].items():
        for c in CLASS_NAMES:
            n = len(list((WBC5 / split / c).glob("*.png")))
            assert n == info["counts"][c], (split, c)
    assert len(m["mislabelled"]) == 6
    assert {e["given_label"] for e in m["mislabelled"]} == set(CLASS_NAMES)  # spread over the classes
    for e in m["mislabelled"]:
        assert e["path"].startswith("train/")
        assert (WBC5 / e["path"]).is_file()
        assert e["path"].split("/")[1] == e["given_label"] != e["true_label"]


@pytest.mark.skipif(not (WBC5 / "manifest.json").exists(), reason="committed sample data missing")
def test_committed_wbc5_matches_generator():
    """A spot check that the committed PNGs are what the generator draws today."""
    m = json.loads((WBC5 / "manifest.json").read_text())
    bad = {e["path"] for e in m["mislabelled"]}
    for split, info in m["splits"].items():
        for c in ("eosinophil", "lymphocyte"):
            rel = f"{split}/{c}/{c}_0001.png"
            if rel in bad:
                continue
            on_disk = cv2.imread(str(WBC5 / rel), cv2.IMREAD_COLOR)[..., ::-1]
            assert np.array_equal(on_disk, make_indexed_image(c, 1, seed=info["seed"])), rel
