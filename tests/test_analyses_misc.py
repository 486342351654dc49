"""Preprocessing check, data quality, class resolution, sidecar, configuration and pixel scaling."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest

from auditor.analyses.dataquality import DataQuality, compute_data_quality
from auditor.analyses.preprocessing import PreprocessingCheck, Setting, compute_preprocessing_check
from auditor.classes import resolve_classes
from auditor.config import AuditConfig, parse_csv_option
from auditor.errors import EXIT_BAD_INPUT, InputError
from auditor.preprocess import CAFFE_MEAN_BGR, scale_pixels
from auditor.sidecar import load_sidecar, sidecar_path

# ----------------------------------------------------------------------------------- preprocessing check


def preds_with_correct(y: np.ndarray, n_correct: int) -> np.ndarray:
    """Predictions that get exactly the first ``n_correct`` samples right."""
    wrong = (y + 1) % 5
    return np.where(np.arange(len(y)) < n_correct, y, wrong)


Y100 = np.arange(100) % 5
CHOSEN = ("bilinear", "unit")  # two-part keys mean (resize, scaling) with no crop and RGB


def S(resize: str, scaling: str) -> Setting:
    return Setting(resize, "none", "rgb", scaling)


def grid(correct: dict[tuple[str, str], int], y=Y100) -> dict[tuple[str, str], np.ndarray]:
    return {key: preds_with_correct(y, c) for key, c in correct.items()}


def test_preprocessing_accuracies_by_hand():
    preds = grid({("bilinear", "unit"): 80, ("bilinear", "raw"): 31, ("area", "unit"): 81, ("area", "raw"): 7})
    r = compute_preprocessing_check(Y100, preds, chosen=CHOSEN)
    assert r.n_samples == 100
    assert r.resize_methods == ("bilinear", "area")
    assert r.scalings == ("unit", "raw")
    assert r.grid("none", "rgb")[2].tolist() == [[0.80, 0.31], [0.81, 0.07]]
    assert r.chosen == S(*CHOSEN) and r.chosen_accuracy == 0.80
    assert r.best == S("area", "unit") and r.best_accuracy == 0.81
    assert r.resize_spread == pytest.approx(0.01)
    assert r.warnings == ()  # 1 point better and 1 point spread: nothing to say


def test_preprocessing_mismatch_warning_above_two_points():
    # caffe is right on 10 more images and never worse: 10 points, sign test p = 2**-10
    preds = grid({("bilinear", "unit"): 70, ("bilinear", "caffe"): 80, ("area", "unit"): 71})
    r = compute_preprocessing_check(Y100, preds, chosen=CHOSEN)
    assert r.best == S("bilinear", "caffe") and r.best_accuracy == 0.80
    assert r.mismatch_p_value == pytest.approx(binomtest(10, 10, 0.5, alternative="greater").pvalue)
    assert r.mismatch_p_value == pytest.approx(2.0**-10)
    assert len(r.warnings) == 1
    w = r.warnings[0]
    assert w.startswith("Preprocessing mismatch")
    assert "--resize bilinear --crop none --channels rgb --preprocess unit" in w
    assert "re-run with --resize bilinear --crop none --channels rgb --preprocess caffe" in w
    assert "70.0%" in w and "80.0%" in w and "100-image" in w


def test_preprocessing_no_warning_within_two_points():
    preds = grid({("bilinear", "unit"): 70, ("bilinear", "caffe"): 71, ("area", "unit"): 72, ("area", "caffe"): 10})
    r = compute_preprocessing_check(Y100, preds, chosen=CHOSEN)
    assert r.best == S("area", "unit")
    assert r.best_accuracy - r.chosen_accuracy == pytest.approx(0.02)
    assert r.warnings == ()


def test_preprocessing_gap_that_is_noise_is_not_a_warning():
    # 4 points better, but 14 wins against 10 losses: sign test p ~ 0.27, not significant
    y = Y100
    chosen = preds_with_correct(y, 70)
    other = chosen.copy()
    other[:10] = (y[:10] + 1) % 5  # loses 10 the chosen got right
    other[70:84] = y[70:84]  # wins 14 the chosen got wrong
    r = compute_preprocessing_check(y, {CHOSEN: chosen, ("bilinear", "caffe"): other}, chosen=CHOSEN)
    assert r.best_accuracy - r.chosen_accuracy == pytest.approx(0.04)
    ref = binomtest(14, 24, 0.5, alternative="greater").pvalue
    assert r.mismatch_p_value == pytest.approx(ref, rel=1e-12)
    assert r.mismatch_p_value > 0.05
    assert r.warnings == ()
    # the same gap with no losses is significant (p = 2**-4 is still not < 0.05; 2**-5 is)
    other2 = preds_with_correct(y, 75)
    r2 = compute_preprocessing_check(y, {CHOSEN: chosen, ("bilinear", "caffe"): other2}, chosen=CHOSEN)
    assert r2.mismatch_p_value == pytest.approx(2.0**-5)
    assert len(r2.warnings) == 1 and "p = 0.031" in r2.warnings[0]


@pytest.mark.parametrize("n,chosen_correct,gap", [(250, 150, 5), (350, 150, 7)])
def test_preprocessing_exact_two_points_is_not_a_mismatch(n, chosen_correct, gap):
    # gap/n is exactly 2 points, all wins (sign test p < 0.05): not *more* than 2 points
    y = np.arange(n) % 5
    preds = {
        CHOSEN: preds_with_correct(y, chosen_correct),
        ("bilinear", "raw"): preds_with_correct(y, chosen_correct + gap),
    }
    r = compute_preprocessing_check(y, preds, chosen=CHOSEN)
    assert r.mismatch_p_value < 0.05
    assert r.warnings == ()


@pytest.mark.parametrize("n,chosen_correct,gap", [(20, 10, 1), (100, 70, 5), (200, 150, 10)])
def test_preprocessing_exact_five_point_spread_is_not_a_warning(n, chosen_correct, gap):
    y = np.arange(n) % 5
    # chosen is the better resize, so only the spread rule can fire; spread is exactly 5 points
    preds = {
        CHOSEN: preds_with_correct(y, chosen_correct + gap),
        ("area", "unit"): preds_with_correct(y, chosen_correct),
    }
    r = compute_preprocessing_check(y, preds, chosen=CHOSEN)
    assert r.resize_spread * 100 == pytest.approx(5.0)
    assert r.warnings == ()


def test_resize_sensitivity_warning():
    # chosen is best overall (no mismatch) but resize methods under "unit" differ by 6 points
    preds = grid({("bilinear", "unit"): 90, ("area", "unit"): 88, ("nearest", "unit"): 84, ("bilinear", "raw"): 20})
    r = compute_preprocessing_check(Y100, preds, chosen=CHOSEN)
    assert r.best == S(*CHOSEN)
    assert r.resize_spread == pytest.approx(0.06)
    assert len(r.warnings) == 1
    w = r.warnings[0]
    assert w.startswith("Resize sensitivity") and "6.0 points" in w and "(nearest 84.0% against bilinear 90.0%)" in w


def test_resize_spread_counts_a_dropped_resize_on_its_own_images():
    """A resize dropped after 40 images (significantly worse) still sets the spread, measured on those 40
    images against the others' accuracy on the same 40; the warning says so."""
    y = Y100
    chosen = preds_with_correct(y, 90)
    dropped = chosen[:40].copy()
    dropped[:12] = (y[:12] + 1) % 5  # wrong on 12 of the first 40 the chosen got right
    r = compute_preprocessing_check(
        y, {CHOSEN: chosen, ("area", "unit"): dropped}, chosen=CHOSEN, status={("area", "unit"): "dropped"}
    )
    first40 = float(np.mean(chosen[:40] == y[:40]))
    assert r.resize_spread == pytest.approx(first40 - float(np.mean(dropped == y[:40])))
    assert len(r.warnings) == 1 and "on the 40 images both were run on" in r.warnings[0]


def test_mismatch_p_value_is_corrected_for_the_settings_compared():
    """5 points better with 5 wins and no loss: p = 2**-5 = 0.031 alone is significant, but not as the best of
    four other settings (corrected 0.125): the largest of many noisy settings is not evidence of a mismatch."""
    y = Y100
    chosen = preds_with_correct(y, 70)
    alone = compute_preprocessing_check(
        y, {CHOSEN: chosen, ("bilinear", "caffe"): preds_with_correct(y, 75)}, chosen=CHOSEN
    )
    assert len(alone.warnings) == 1 and "0.031 corrected for the 1 settings compared" in alone.warnings[0]
    preds = {CHOSEN: chosen, ("bilinear", "caffe"): preds_with_correct(y, 75)}
    for i, other in enumerate(["raw", "torch", "symmetric"]):
        preds[("bilinear", other)] = preds_with_correct(y, 60 + i)
    many = compute_preprocessing_check(y, preds, chosen=CHOSEN)
    assert many.mismatch_p_value == pytest.approx(2.0**-5) and many.warnings == ()


def test_no_resize_warning_within_five_points_and_scaling_spread_ignored():
    preds = grid({("bilinear", "unit"): 90, ("area", "unit"): 86, ("bilinear", "raw"): 5, ("area", "raw"): 40})
    r = compute_preprocessing_check(Y100, preds, chosen=CHOSEN)
    assert r.resize_spread == pytest.approx(0.04)
    assert r.warnings == ()


def test_both_warnings_together():
    preds = grid({("bilinear", "unit"): 60, ("area", "unit"): 75})
    r = compute_preprocessing_check(Y100, preds, chosen=CHOSEN)
    assert [w.split(":")[0] for w in r.warnings] == ["Preprocessing mismatch", "Resize sensitivity"]
    assert "against area 75.0%" in r.warnings[1]


def test_ties_go_to_the_chosen_setting():
    preds = grid({("area", "raw"): 77, ("bilinear", "raw"): 77, ("area", "unit"): 77, ("bilinear", "unit"): 77})
    r = compute_preprocessing_check(Y100, preds, chosen=("bilinear", "unit"))
    assert r.best == S("bilinear", "unit")
    assert r.warnings == ()
    # without the chosen among the tied best, the first in table order wins
    preds[("bilinear", "unit")] = preds_with_correct(Y100, 70)
    r = compute_preprocessing_check(Y100, preds, chosen=("bilinear", "unit"))
    assert r.best == S("area", "raw")


def test_preprocessing_missing_cells_and_round_trip():
    preds = grid({("bilinear", "unit"): 50, ("area", "raw"): 51})
    r = compute_preprocessing_check(Y100, preds, chosen=CHOSEN)
    acc = r.grid("none", "rgb")[2]  # settings never explored are NaN cells of the grid
    assert acc[0, 0] == 0.5 and math.isnan(acc[0, 1]) and math.isnan(acc[1, 0])
    d = r.to_dict()
    json.dumps(d, allow_nan=False)
    back = PreprocessingCheck.from_dict(json.loads(json.dumps(d)))
    assert back.to_dict() == d
    assert back.chosen == S(*CHOSEN) and back.best == S("area", "raw")


def test_preprocessing_requires_chosen():
    with pytest.raises(ValueError):
        compute_preprocessing_check(Y100, grid({("area", "unit"): 3}), chosen=CHOSEN)


# ----------------------------------------------------------------------------------- data quality


def test_data_quality_counts_duplicates_and_warnings():
    paths = ["a/1.png", "a/2.png", "b/3.png", "b/4.png", "a/5.png", "c/6.png", "a/7.png"]
    labels = ["a", "a", "b", "b", "a", "c", "a"]
    hashes = ["h1", "h2", "h1", "h3", "h3x", "h4", "h2"]  # h1: a vs b (conflict); h2: a twice
    skipped = [
        ("a/x.txt", "unknown extension '.txt'"),
        ("b/y.jpg", "truncated JPEG (no end-of-image marker)"),
        ("b/z.jpg", "not an image: .jpg name but no JPEG signature"),
        ("w.png", "not inside a class folder"),
        ("b/q.jpg", "truncated JPEG (no end-of-image marker)"),
    ]
    dq = compute_data_quality(
        used_paths=paths,
        used_labels=labels,
        used_hashes=hashes,
        skipped=skipped,
        labels=["a", "b", "c", "d"],
        empty_classes=["d"],
    )
    assert dq.n_used == 7 and dq.n_files == 12
    assert dq.counts == (("a", 4), ("b", 2), ("c", 1), ("d", 0))
    assert dq.empty_classes == ("d",)
    assert [(g.sha256, g.paths, g.labels, g.conflicting) for g in dq.duplicates] == [
        ("h1", ("a/1.png", "b/3.png"), ("a", "b"), True),
        ("h2", ("a/2.png", "a/7.png"), ("a", "a"), False),
    ]
    assert dict(dq.skipped_by_reason) == {
        "unknown extension '.txt'": 1,
        "truncated JPEG": 2,
        "not an image": 1,
        "not inside a class folder": 1,
    }
    assert dq.skipped == tuple(skipped)
    w = dq.warnings
    assert len(w) == 5
    assert w[0].startswith("5 file(s) were skipped")
    assert w[1].startswith("1 image(s) appear byte-identical under different labels") and "a/1.png and b/3.png" in w[1]
    assert w[2].startswith("1 image(s) appear more than once under the same label")
    assert w[3] == "Empty class folder(s): d."
    assert w[4].startswith("few images in a (4), b (2), c (1)")


def test_data_quality_clean_data_has_no_warnings():
    n = 30
    paths = [f"{'ab'[i % 2]}/{i}.png" for i in range(n)]
    labels = ["ab"[i % 2] for i in range(n)]
    dq = compute_data_quality(
        used_paths=paths,
        used_labels=labels,
        used_hashes=[f"h{i}" for i in range(n)],
        skipped=[],
        labels=["a", "b"],
        empty_classes=[],
    )
    assert dq.warnings == () and dq.duplicates == () and dq.skipped_by_reason == ()
    assert dq.counts == (("a", 15), ("b", 15)) and dq.n_files == dq.n_used == 30


def test_data_quality_triple_duplicate_and_round_trip():
    dq = compute_data_quality(
        used_paths=["x/1", "y/2", "x/3"],
        used_labels=["x", "y", "x"],
        used_hashes=["same"] * 3,
        skipped=[("r", "hidden file")],
        labels=["x", "y"],
        empty_classes=[],
        min_per_class=1,
    )
    assert len(dq.duplicates) == 1 and dq.duplicates[0].paths == ("x/1", "y/2", "x/3")
    assert dq.duplicates[0].conflicting
    d = dq.to_dict()
    assert d["duplicates"][0]["conflicting"] is True
    assert d["counts"] == {"x": 2, "y": 1}
    back = DataQuality.from_dict(json.loads(json.dumps(d, allow_nan=False)))
    assert back == dq


# ----------------------------------------------------------------------------------- class resolution

FOLDERS = ["basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil"]


def _err(exc_info) -> str:
    assert exc_info.value.exit_code == EXIT_BAD_INPUT
    return exc_info.value.message


def test_sidecar_names_come_first(tmp_path):
    side = ["neutrophil", "monocyte", "lymphocyte", "eosinophil", "basophil"]
    m = resolve_classes(
        5,
        data_labels=FOLDERS,
        labels_with_images=FOLDERS,
        sidecar_names=side,
        sidecar_path=tmp_path / "m.json",
        cli_names=side,
    )
    assert m.source == "sidecar"
    assert m.model_classes == tuple(side)
    assert m.data_to_model == {"basophil": 4, "eosinophil": 3, "lymphocyte": 2, "monocyte": 1, "neutrophil": 0}
    assert m.notes == ()
    assert m.to_dict()["model_classes"] == side


def test_cli_names_second():
    cli = ["monocyte", "basophil", "neutrophil", "eosinophil", "lymphocyte"]
    m = resolve_classes(5, data_labels=FOLDERS, labels_with_images=FOLDERS, cli_names=cli)
    assert m.source == "--class-names"
    assert m.model_classes == tuple(cli)
    assert m.data_to_model["basophil"] == 1 and m.data_to_model["monocyte"] == 0


def test_folder_names_last_sorted():
    labels = ["neutrophil", "Basophil", "eosinophil"]
    m = resolve_classes(3, data_labels=labels, labels_with_images=labels)
    assert m.source == "folder names"
    assert m.model_classes == ("Basophil", "eosinophil", "neutrophil")  # sorted(), as Keras does
    assert m.data_to_model == {"Basophil": 0, "eosinophil": 1, "neutrophil": 2}


def test_count_mismatch_names_the_sidecar(tmp_path):
    sp = tmp_path / "model.json"
    with pytest.raises(InputError) as ei:
        resolve_classes(4, data_labels=FOLDERS, labels_with_images=FOLDERS, sidecar_names=FOLDERS, sidecar_path=sp)
    msg = _err(ei)
    assert str(sp) in msg and "5 class names" in msg and "4 outputs" in msg
    assert "[basophil, eosinophil, lymphocyte, monocyte, neutrophil]" in msg


def test_count_mismatch_names_the_option():
    with pytest.raises(InputError) as ei:
        resolve_classes(6, data_labels=FOLDERS, labels_with_images=FOLDERS, cli_names=FOLDERS)
    msg = _err(ei)
    assert msg.startswith("--class-names:") and "5 names" in msg and "6 outputs" in msg and "neutrophil" in msg


def test_count_mismatch_names_the_data_path(tmp_path):
    data = tmp_path / "DATA"
    with pytest.raises(InputError) as ei:
        resolve_classes(3, data_labels=FOLDERS, labels_with_images=FOLDERS, data_path=data)
    msg = _err(ei)
    assert msg.startswith(f"{data}:") and "5 classes" in msg and "3 outputs" in msg and "basophil" in msg
    assert "--class-names" in msg  # the hint


def test_case_insensitive_match_is_noted():
    data = ["Basophil", "EOSINOPHIL", "lymphocyte", "monocyte", "neutrophil"]
    m = resolve_classes(5, data_labels=data, labels_with_images=data, cli_names=FOLDERS)
    assert m.data_to_model == {"Basophil": 0, "EOSINOPHIL": 1, "lymphocyte": 2, "monocyte": 3, "neutrophil": 4}
    assert any("'Basophil'" in n and "'basophil'" in n and "ignoring case" in n for n in m.notes)
    assert sum("ignoring case" in n for n in m.notes) == 2


def test_ambiguous_case_insensitive_match_is_an_error():
    with pytest.raises(InputError):
        resolve_classes(2, data_labels=["CELL"], labels_with_images=["CELL"], cli_names=["cell", "Cell"])


def test_subset_of_classes_is_fine():
    data = ["lymphocyte", "neutrophil"]
    m = resolve_classes(5, data_labels=data, labels_with_images=data, cli_names=FOLDERS)
    assert m.data_to_model == {"lymphocyte": 2, "neutrophil": 4}
    assert any("without any image" in n and "basophil, eosinophil, monocyte" in n for n in m.notes)


def test_unknown_data_class_lists_both_sides(tmp_path):
    data = ["lymphocyte", "neutrophil", "platelet"]
    with pytest.raises(InputError) as ei:
        resolve_classes(5, data_labels=data, labels_with_images=data, cli_names=FOLDERS, data_path=tmp_path)
    msg = _err(ei)
    assert str(tmp_path) in msg and "[platelet]" in msg
    assert "model classes (--class-names): [basophil, eosinophil, lymphocyte, monocyte, neutrophil]" in msg
    assert "data classes: [lymphocyte, neutrophil, platelet]" in msg


def test_unknown_empty_class_folder_is_only_a_note():
    data = ["lymphocyte", "platelet"]
    m = resolve_classes(5, data_labels=data, labels_with_images=["lymphocyte"], cli_names=FOLDERS)
    assert m.data_to_model == {"lymphocyte": 2}
    assert any("'platelet'" in n and "ignored" in n for n in m.notes)


def test_sidecar_and_cli_conflict(tmp_path):
    sp = tmp_path / "m.json"
    cli = list(reversed(FOLDERS))
    with pytest.raises(InputError) as ei:
        resolve_classes(
            5, data_labels=FOLDERS, labels_with_images=FOLDERS, sidecar_names=FOLDERS, sidecar_path=sp, cli_names=cli
        )
    msg = _err(ei)
    assert msg.startswith("--class-names:") and str(sp) in msg
    assert "[neutrophil, monocyte" in msg and "[basophil, eosinophil" in msg


# ----------------------------------------------------------------------------------- sidecar


def write_sidecar(tmp_path: Path, content) -> Path:
    model = tmp_path / "wbc.keras"
    model.write_bytes(b"model")
    text = content if isinstance(content, str) else json.dumps(content)
    (tmp_path / "wbc.json").write_text(text, encoding="utf-8")
    return model


def test_sidecar_valid(tmp_path):
    model = write_sidecar(
        tmp_path,
        {
            "schema_version": 1,
            "class_names": FOLDERS,
            "preprocess": "raw",
            "resize": "area",
            "input_size": [96, 128],
            "architecture": "small_cnn",
            "intended_use": "teaching",
            "training": {"epochs": 3},
            "custom": 1,
        },
    )
    sc = load_sidecar(model)
    assert sc.path == tmp_path / "wbc.json"
    assert sc.class_names == tuple(FOLDERS)
    assert sc.preprocess == "raw" and sc.resize == "area" and sc.input_size == (96, 128)
    assert sc.architecture == "small_cnn" and sc.intended_use == "teaching" and sc.training_data is None
    assert sc.extra == {"training": {"epochs": 3}, "custom": 1}
    json.dumps(sc.to_dict(), allow_nan=False)


def test_sidecar_empty_object_is_valid(tmp_path):
    sc = load_sidecar(write_sidecar(tmp_path, {}))
    assert sc.class_names is None and sc.preprocess is None and sc.input_size is None


def test_sidecar_missing_is_none(tmp_path):
    model = tmp_path / "m.keras"
    model.write_bytes(b"x")
    assert load_sidecar(model) is None


def test_sidecar_path_of_directory_model(tmp_path):
    d = tmp_path / "saved"
    d.mkdir()
    assert sidecar_path(d) == tmp_path / "saved.json"
    assert sidecar_path(tmp_path / "a.h5") == tmp_path / "a.json"


@pytest.mark.parametrize(
    "content,fragment",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ({"preprocess": "imagenet"}, "'preprocess'"),
        ({"resize": "fancy"}, "'resize'"),
        ({"input_size": [96]}, "'input_size'"),
        ({"input_size": [0, 96]}, "'input_size'"),
        ({"input_size": [96.0, 96.0]}, "'input_size'"),
        ({"input_size": "96x96"}, "'input_size'"),
        ({"input_size": [True, True]}, "'input_size'"),
        ({"class_names": ["a", "a"]}, "'class_names'"),
        ({"class_names": []}, "'class_names'"),
        ({"class_names": "a,b"}, "'class_names'"),
        ({"class_names": ["a", ""]}, "'class_names'"),
        ({"architecture": 3}, "'architecture'"),
    ],
)
def test_sidecar_invalid_names_the_file(tmp_path, content, fragment):
    model = write_sidecar(tmp_path, content)
    with pytest.raises(InputError) as ei:
        load_sidecar(model)
    msg = _err(ei)
    assert msg.startswith(str(tmp_path / "wbc.json") + ":")
    assert fragment in msg


def test_sidecar_not_utf8(tmp_path):
    model = write_sidecar(tmp_path, {})
    (tmp_path / "wbc.json").write_bytes(b'{"architecture": "\xff"}')
    with pytest.raises(InputError) as ei:
        load_sidecar(model)
    assert str(tmp_path / "wbc.json") in _err(ei)


# ----------------------------------------------------------------------------------- config


def cfg(**kw) -> AuditConfig:
    kw.setdefault("model_paths", (Path("m.keras"),))
    kw.setdefault("data_path", Path("DATA"))
    return AuditConfig(**kw)


def test_config_defaults_and_to_dict():
    c = cfg(class_names=("a", "b"))
    d = c.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["models"] == ["m.keras"] and d["data"] == "DATA" and d["class_names"] == ["a", "b"]
    assert d["format"] == ["html", "pdf", "json"] and c.workers >= 1
    assert d["sections"]["fisher"] == {"threshold": 0.5}  # every section's effective options
    assert d["sections"]["external_sites"] == {"sites": {}, "full": False}


@pytest.mark.parametrize(
    "kw,option",
    [
        ({"batch_size": 0}, "--batch-size"),
        ({"batch_size": -3}, "--batch-size"),
        ({"formats": ("html", "docx")}, "--format"),
        ({"formats": ()}, "--format"),
        ({"class_names": ("a", "b", "a")}, "--class-names"),
        ({"class_names": ("a", "")}, "--class-names"),
        ({"preprocess": "imagenet"}, "--preprocess"),
        ({"resize": "fancy"}, "--resize"),
        ({"n_bootstrap": -1}, "--bootstrap"),
        ({"sections": {"preprocessing_check": {"samples": -1}}}, "--preprocess-check-samples"),
        ({"sections": {"fisher": {"threshold": 3.0}}}, "--fisher-threshold"),
        ({"sections": {"selective_prediction": {"target_accuracies": (1.5,)}}}, "--target-accuracy"),
        ({"sections": {"external_sites": {"sites": {"internal": "x"}}}}, "--external"),
        ({"sections": {"calibration": {"bins": 1}}}, "[sections.calibration] bins"),
        ({"sections": {"nosuch": {}}}, "[sections.nosuch]"),
        ({"disabled": ("nosuch",)}, "--disable"),
        ({"workers": 0}, "--workers"),
        ({"model_paths": ()}, "MODEL"),
    ],
)
def test_config_validation_names_the_option(kw, option):
    with pytest.raises(InputError) as ei:
        cfg(**kw).require_inputs()
    msg = _err(ei)
    assert msg.startswith(option + ":")


def test_parse_csv_option():
    assert parse_csv_option(" a, b ,c ") == ("a", "b", "c")
    assert parse_csv_option(None) is None and parse_csv_option("  ") is None


# ----------------------------------------------------------------------------------- pixel scaling


PIX = np.array([[[[0, 127.5, 255], [10, 20, 30]]]], np.float32)  # (1, 1, 2, 3) RGB


def test_scale_unit_raw_symmetric():
    u = scale_pixels(PIX, "unit")
    assert u.dtype == np.float32 and u.shape == PIX.shape
    np.testing.assert_allclose(u[0, 0, 0], [0.0, 0.5, 1.0], atol=1e-7)
    np.testing.assert_allclose(u[0, 0, 1], [10 / 255, 20 / 255, 30 / 255], rtol=1e-6)
    r = scale_pixels(PIX, "raw")
    np.testing.assert_array_equal(r, PIX)
    assert r is not PIX and not np.shares_memory(r, PIX)
    s = scale_pixels(PIX, "symmetric")
    np.testing.assert_allclose(s[0, 0, 0], [-1.0, 0.0, 1.0], atol=1e-7)
    np.testing.assert_allclose(s[0, 0, 1], [10 / 127.5 - 1, 20 / 127.5 - 1, 30 / 127.5 - 1], rtol=1e-6)


def test_scale_caffe_is_bgr_minus_imagenet_means():
    c = scale_pixels(PIX, "caffe")
    assert c.dtype == np.float32 and c.shape == PIX.shape
    # pixel RGB (10, 20, 30) -> BGR (30, 20, 10) - (103.939, 116.779, 123.68)
    np.testing.assert_allclose(c[0, 0, 1], [30 - 103.939, 20 - 116.779, 10 - 123.68], atol=1e-4)
    np.testing.assert_allclose(c[0, 0, 0], [255 - 103.939, 127.5 - 116.779, 0 - 123.68], atol=1e-4)
    assert list(CAFFE_MEAN_BGR) == pytest.approx([103.939, 116.779, 123.68])
    gray = np.full((1, 2, 2, 1), 100.0, np.float32)
    np.testing.assert_allclose(scale_pixels(gray, "caffe"), 100 - (103.939 + 116.779 + 123.68) / 3, atol=1e-4)


def test_scale_does_not_modify_input_and_rejects_unknown():
    x = PIX.copy()
    for s in ("unit", "raw", "symmetric", "caffe"):
        scale_pixels(x, s)
    np.testing.assert_array_equal(x, PIX)
    with pytest.raises(ValueError):
        scale_pixels(x, "imagenet")
    # uint8 input is accepted and treated as [0, 255]
    np.testing.assert_allclose(scale_pixels(np.array([[[[255, 0, 51]]]], np.uint8), "unit"), [[[[1, 0, 0.2]]]])


def test_preprocessing_check_names_the_resize_families_it_tried():
    """The report's prose lists only the libraries whose methods were run (plain space: one)."""
    from auditor.analyses.preprocessing import Setting, compute_preprocessing_check

    y = np.array([0, 1, 0, 1])
    plain = {Setting(r, "none", "rgb", s): y for r in ("bilinear", "area") for s in ("unit", "raw")}
    c = compute_preprocessing_check(y, plain, chosen=Setting("bilinear", "none", "rgb", "unit"))
    assert c.resize_families == ("tf.image.resize as Keras's folder loader",)
    wide = {Setting(r, "none", "rgb", "unit"): y for r in ("bilinear", "pil:bilinear", "cv2:area", "tf:bicubic-aa")}
    c = compute_preprocessing_check(y, wide, chosen=Setting("bilinear", "none", "rgb", "unit"))
    assert c.resize_families == (
        "tf.image.resize as Keras's folder loader",
        "PIL as keras load_img and flow_from_directory",
        "OpenCV cv2.resize",
        "tf.image.resize with antialiasing",
    )
