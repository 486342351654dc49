"""The CLI in-process (click's CliRunner): every bad input gets one clear line and its exit code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("keras")

from auditor.cli import main
from tests.conftest import COLOURS, colour_model, write_colour_folder

FAST = ["--bootstrap", "50", "--preprocess-check-samples", "0", "--quiet"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def assert_one_error(result, code: int, *needles: str) -> str:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def test_version_and_help():
    r = invoke("--version")
    assert r.exit_code == 0 and "wbc-audit" in r.stdout
    r = invoke("--help")
    assert r.exit_code == 0
    for word in ("Examples:", "--preprocess", "--resize", "--unsafe-deserialization", "Exit codes"):
        assert word in r.stdout


def test_every_flag_named_in_the_config_tables_is_an_option():
    """Error messages name flags from config.FLAGS and config.SECTION_FLAGS; the CLI derives its flag tables
    from them, so each must be a real option of the command."""
    from auditor import cli

    params = {p.name for p in main.params}
    assert set(cli.GENERAL_FLAGS) <= params and set(cli.SECTION_FLAGS) <= params


def test_only_one_path_is_a_usage_error(colour_data):
    assert_one_error(invoke(colour_data), 2, "MODEL DATA")


def test_missing_model_file(tmp_path, colour_data):
    assert_one_error(
        invoke(tmp_path / "absent.keras", colour_data, *FAST, "--out", tmp_path), 2, "absent.keras", "no such file"
    )


def test_text_file_named_keras(tmp_path, colour_data):
    fake = tmp_path / "fake.keras"
    fake.write_text("hello")
    assert_one_error(invoke(fake, colour_data, *FAST, "--out", tmp_path), 2, "fake.keras", "not a Keras model")


def test_file_that_is_not_a_model(tmp_path, colour_data):
    fake = tmp_path / "weights.h5"
    fake.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)  # HDF5 signature, garbage after it
    assert_one_error(invoke(fake, colour_data, *FAST, "--out", tmp_path), 2, "weights.h5", "could not be loaded")


def test_missing_data_folder(tmp_path, colour_model_path):
    assert_one_error(
        invoke(colour_model_path, tmp_path / "nodata", *FAST, "--out", tmp_path), 2, "nodata", "no such file"
    )


def test_output_count_matches_neither_folders_nor_class_names(tmp_path, colour_model_path):
    data = write_colour_folder(tmp_path / "d", n_per_class=2)
    (data / "yellow").mkdir()
    (data / "yellow" / "y.png").write_bytes((data / "red" / "red_000.png").read_bytes())
    line = assert_one_error(invoke(colour_model_path, data, *FAST, "--out", tmp_path), 2, "4 classes", "3 outputs")
    assert "--class-names" in line
    assert_one_error(
        invoke(colour_model_path, data, *FAST, "--out", tmp_path, "--class-names", "a,b"),
        2,
        "--class-names",
        "2 names",
        "3 outputs",
    )


def test_data_class_unknown_to_model_lists_both_sides(tmp_path, colour_model_path):
    data = write_colour_folder(tmp_path / "d", n_per_class=2)
    line = assert_one_error(
        invoke(colour_model_path, data, *FAST, "--out", tmp_path, "--class-names", "blue,green,pink"), 2, "[red]"
    )
    assert "blue, green, pink" in line


def test_model_that_is_not_an_image_classifier(tmp_path, colour_data):
    import keras

    inp = keras.Input((16,))
    out = keras.layers.Dense(3, activation="softmax")(inp)
    path = tmp_path / "tabular.keras"
    keras.Model(inp, out).save(path)
    assert_one_error(invoke(path, colour_data, *FAST, "--out", tmp_path), 2, "tabular.keras", "not an image classifier")


def test_bad_option_values(tmp_path, colour_model_path, colour_data):
    assert_one_error(
        invoke(colour_model_path, colour_data, "--format", "html,docx", "--out", tmp_path), 2, "--format", "docx"
    )
    assert_one_error(invoke(colour_model_path, colour_data, "--batch-size", "0", "--out", tmp_path), 2, "--batch-size")
    r = invoke(colour_model_path, colour_data, "--resize", "fancy")
    assert r.exit_code == 2 and "--resize" in r.stderr


def test_folder_without_any_readable_image(tmp_path, colour_model_path):
    data = tmp_path / "broken"
    for name in COLOURS:
        (data / name).mkdir(parents=True)
        (data / name / "x.jpg").write_text("not a jpeg")
    assert_one_error(invoke(colour_model_path, data, *FAST, "--out", tmp_path), 2, "no readable image")


def test_skipped_files_and_empty_class_are_reported_not_fatal(tmp_path, colour_model_path):
    import cv2

    data = write_colour_folder(tmp_path / "d", n_per_class=4)
    (data / "red" / "notes.txt").write_text("x")
    (data / "red" / ".DS_Store").write_bytes(b"\0\0")
    (data / "green" / "empty.png").write_bytes(b"")
    _, buf = cv2.imencode(".jpg", np.full((30, 30, 3), 200, np.uint8))
    (data / "blue" / "cut.JPG").write_bytes(buf.tobytes()[: len(buf) // 2])
    (data / "blue" / "nested" / "deeper").mkdir(parents=True)
    shutil.copy(data / "blue" / "blue_000.png", data / "blue" / "nested" / "deeper" / "b.PNG")
    out = tmp_path / "out"
    r = invoke(colour_model_path, data, "--class-names", "blue,green,red", "--out", out, "--format", "json", *FAST)
    assert r.exit_code == 0, r.stderr
    folder = Path(r.stdout.strip().splitlines()[-1])
    report = json.loads((folder / "audit.json").read_text())
    skipped = {s["path"]: s["reason"] for s in report["data_quality"]["skipped"]}
    assert skipped == {
        "red/notes.txt": "unknown extension '.txt'",
        "red/.DS_Store": "hidden file",
        "green/empty.png": "empty file",
        "blue/cut.JPG": "truncated JPEG (no end-of-image marker)",
    }
    assert report["dataset"]["n_images"] == 13  # 12 + the nested upper-case .PNG
    assert report["dataset"]["counts"] == {"blue": 5, "green": 4, "red": 4}
    assert not (folder / "report.html").exists() and not (folder / "report.pdf").exists()
    assert (folder / "predictions.csv").exists()


def test_quiet_prints_only_the_report_path(tmp_path, colour_model_path, colour_data):
    r = invoke(
        colour_model_path, colour_data, "--class-names", "blue,green,red", "--out", tmp_path, "--format", "json", *FAST
    )
    assert r.exit_code == 0
    assert r.stderr == ""
    assert Path(r.stdout.strip()).is_dir()


def test_class_name_with_html_is_escaped(tmp_path):
    import keras

    data = write_colour_folder(tmp_path / "d", n_per_class=3)
    evil = '<img src=x onerror=alert(1)>&"'
    (data / "red").rename(data / evil)
    model = colour_model()
    model_path = tmp_path / "m.keras"
    model.save(model_path)
    assert isinstance(model, keras.Model)
    r = invoke(
        model_path, data, "--out", tmp_path / "o", "--format", "html,json", *FAST, "--class-names", f"blue,green,{evil}"
    )
    assert r.exit_code == 0, r.stderr
    html = (Path(r.stdout.strip()) / "report.html").read_text()
    assert evil not in html
    assert "&lt;img src=x onerror=alert(1)&gt;&amp;" in html


def test_two_runs_never_overwrite(tmp_path, colour_model_path, colour_data):
    args = [
        colour_model_path,
        colour_data,
        "--class-names",
        "blue,green,red",
        "--out",
        tmp_path,
        "--format",
        "json",
        *FAST,
    ]
    first = Path(invoke(*args).stdout.strip())
    before = (first / "audit.json").read_bytes()
    second = Path(invoke(*args).stdout.strip())
    assert first != second and first.parent == second.parent
    assert (first / "audit.json").read_bytes() == before
    assert not list(first.parent.glob(".partial-*"))


def test_csv_data_with_relative_paths(tmp_path, colour_model_path):
    data = write_colour_folder(tmp_path / "imgs", n_per_class=3)
    lines = ["path,label"] + [f"imgs/{p.parent.name}/{p.name},{p.parent.name}" for p in sorted(data.rglob("*.png"))]
    lines.append("imgs/missing.png,red")
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    r = invoke(
        colour_model_path,
        csv_path,
        "--class-names",
        "blue,green,red",
        "--out",
        tmp_path / "o",
        "--format",
        "json",
        *FAST,
    )
    assert r.exit_code == 0, r.stderr
    report = json.loads((Path(r.stdout.strip()) / "audit.json").read_text())
    assert report["dataset"]["source"] == "csv"
    assert report["dataset"]["n_images"] == 9
    assert report["results"]["classification"]["accuracy"] == 1.0  # the colour model is exact by construction
    assert report["data_quality"]["skipped"] == [{"path": "imgs/missing.png", "reason": "file not found"}]


def test_model_producing_nan_fails_the_audit_naming_the_model(tmp_path, colour_data):
    """Finite weights (so the load-time check passes) whose logits all overflow to inf: softmax gives NaN."""
    model = colour_model()
    w, b = model.get_layer("head").get_weights()
    model.get_layer("head").set_weights([np.full_like(w, 3e38), np.full_like(b, 3e38)])
    path = tmp_path / "broken.keras"
    model.save(path)
    assert_one_error(
        invoke(path, colour_data, "--class-names", "blue,green,red", "--out", tmp_path, *FAST), 1, "broken.keras", "NaN"
    )


def test_model_with_nan_weights_is_refused_at_load(tmp_path, colour_data):
    model = colour_model()
    w, b = model.get_layer("head").get_weights()
    model.get_layer("head").set_weights([w * np.nan, b])
    path = tmp_path / "broken.keras"
    model.save(path)
    assert_one_error(
        invoke(path, colour_data, "--class-names", "blue,green,red", "--out", tmp_path, *FAST),
        2,
        "broken.keras",
        "weights are not finite in layer(s) head (kernel: 9 NaN)",
    )


def test_sigmoid_multilabel_output_is_not_a_classifier(tmp_path, colour_data):
    import keras

    inp = keras.Input((16, 16, 3))
    x = keras.layers.GlobalAveragePooling2D()(inp)
    out = keras.layers.Dense(3, activation="sigmoid")(x)
    path = tmp_path / "multilabel.keras"
    keras.Model(inp, out).save(path)
    assert_one_error(
        invoke(path, colour_data, "--class-names", "blue,green,red", "--out", tmp_path, *FAST),
        2,
        "multilabel.keras",
        "3 sigmoid outputs",
        "single-label classifier",
    )
