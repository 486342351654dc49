"""The model zoo: every architecture builds, trains, saves, reloads safely and is audited from its sidecar.

The slow part trains every architecture for one epoch at a small input size on a few generated images
(once, module-scoped), then checks the saved files, a reload with ``safe_mode`` in a fresh process, and
a ``wbc-audit`` run over all eight models in one process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from model_zoo import registry
from model_zoo.cli import main as zoo_main
from tests.conftest import error_lines, run_cli

ARCHS = list(registry.ARCHITECTURES)
#: Small input sizes for the end-to-end tests (the ImageNet bases need 32).
SMALL = {name: max(32 if a.pretrained_base else 24, a.min_size[0]) for name, a in registry.ARCHITECTURES.items()}
SMALL["bloodmnist_cnn"] = 28
EXPECTED_SCALING = {"vgg16_head": "caffe", "resnet50_head": "caffe"}  # the others take raw pixels


def _invoke(*args):
    return CliRunner().invoke(zoo_main, [str(a) for a in args])


def _error_line(result) -> str:
    text = getattr(result, "stderr", None) or result.output
    lines = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, text
    return lines[0]


# --------------------------------------------------------------------------- registry, no TensorFlow


def test_registry_lists_every_issue_architecture():
    assert set(ARCHS) == {
        "wbc_cnn",
        "vgg16_head",
        "resnet50_head",
        "efficientnetb0_head",
        "attention_cnn",
        "bloodmnist_cnn",
        "leaky_cnn",
        "small_cnn",
    }
    for a in registry.ARCHITECTURES.values():
        assert a.preprocess in ("unit", "raw", "symmetric", "caffe")
        assert a.fits(a.default_size) and a.fits(a.min_size)
        assert not a.fits((a.min_size[0] - 1, a.min_size[1]))
    assert registry.get("vgg16_head").preprocess == "caffe"
    assert registry.get("efficientnetb0_head").preprocess == "raw"
    assert registry.get("bloodmnist_cnn").default_size == (28, 28)
    assert registry.get("bloodmnist_cnn").default_classes == 8
    with pytest.raises(KeyError, match="known: wbc_cnn"):
        registry.get("alexnet")


def test_parse_input_size():
    from auditor.errors import InputError
    from model_zoo.train import parse_input_size

    assert parse_input_size("64") == (64, 64)
    assert parse_input_size("64x96") == (64, 96)
    for bad in ("", "x", "0", "64x", "a", "1x2x3", "-4"):
        with pytest.raises(InputError, match="--input-size"):
            parse_input_size(bad)


def test_class_weights_balance_counts():
    from model_zoo.train import class_weights_of

    w = class_weights_of({"a": 30, "b": 10}, ["a", "b"])
    assert w == pytest.approx({0: 40 / 60, 1: 40 / 20})
    assert 30 * w[0] == pytest.approx(10 * w[1])


# ------------------------------------------------------------------------------- bad input, exit 2


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory) -> dict[str, Path]:
    from sample_data.generator import generate_dataset

    root = tmp_path_factory.mktemp("zoo_bad")
    generate_dataset(root / "train", n_per_class=4, seed=1, size=32)
    generate_dataset(root / "val3", n_per_class=2, seed=2, size=32)
    (root / "val3" / "neutrophil").rename(root / "val3" / "plasma_cell")
    generate_dataset(root / "one", n_per_class=3, seed=3, size=32, classes=("neutrophil",))
    return {"train": root / "train", "val3": root / "val3", "one": root / "one", "root": root}


def _assert_bad(result, *needles):
    assert result.exit_code == 2, result.output
    line = _error_line(result)
    for needle in needles:
        assert needle in line, line
    return line


def test_unknown_architecture_lists_known(tiny_folders):
    r = _invoke("train", "alexnet", tiny_folders["train"], "--out", tiny_folders["root"] / "m.keras")
    line = _assert_bad(r, "alexnet")
    for name in ARCHS:
        assert name in line
    assert not (tiny_folders["root"] / "m.keras").exists()


def test_one_class_folder(tiny_folders):
    r = _invoke("train", "small_cnn", tiny_folders["one"], "--out", tiny_folders["root"] / "m.keras")
    _assert_bad(r, str(tiny_folders["one"]), "1 class folder", "neutrophil", "at least two")


@pytest.mark.parametrize(
    "name,size",
    [
        ("vgg16_head", "31"),
        ("resnet50_head", "28x64"),
        ("efficientnetb0_head", "16"),
        ("small_cnn", "8x8"),
        ("bloodmnist_cnn", "9"),
    ],
)
def test_input_size_too_small_says_minimum(tiny_folders, name, size):
    r = _invoke("train", name, tiny_folders["train"], "--out", tiny_folders["root"] / "m.keras", "--input-size", size)
    a = registry.get(name)
    _assert_bad(r, "--input-size", name, f"at least {a.min_size[0]}x{a.min_size[1]}")


def test_validation_classes_differ_lists_both(tiny_folders):
    r = _invoke(
        "train",
        "small_cnn",
        tiny_folders["train"],
        "--val-dir",
        tiny_folders["val3"],
        "--out",
        tiny_folders["root"] / "m.keras",
    )
    line = _assert_bad(
        r,
        str(tiny_folders["val3"]),
        "training: [basophil, eosinophil, lymphocyte, monocyte, neutrophil]",
        "validation: [basophil, eosinophil, lymphocyte, monocyte, plasma_cell]",
    )
    assert "\n" not in line


@pytest.mark.parametrize(
    "args,needle",
    [
        (("--val-split", "1.5"), "--val-split"),
        (("--val-split", "0.2", "--val-dir", "VAL"), "--val-split"),
        (("--epochs", "0"), "--epochs"),
        (("--out", "model.h5"), "--out"),
        (("--weights", "imagenet"), "small_cnn has no ImageNet weights"),
        (("--weights", "missing.weights.h5"), "no such file"),
    ],
)
def test_other_bad_options(tiny_folders, args, needle):
    args = tuple(str(tiny_folders["train"]) if a == "VAL" else a for a in args)
    out = () if "--out" in args else ("--out", tiny_folders["root"] / "m.keras")
    r = _invoke("train", "small_cnn", tiny_folders["train"], *out, *args)
    _assert_bad(r, needle)


def test_missing_training_folder(tiny_folders):
    r = _invoke("train", "small_cnn", tiny_folders["root"] / "nope", "--out", tiny_folders["root"] / "m.keras")
    _assert_bad(r, "nope", "no such directory")


def test_bad_input_fails_fast_without_tensorflow(tiny_folders):
    """The checks run before TensorFlow is even imported (the console script, a fresh process)."""
    code = (
        "import sys; from model_zoo.cli import main\n"
        "try:\n    main(['train', 'nope', sys.argv[1], '--out', sys.argv[2]])\n"
        "except SystemExit as e:\n    print('exit', e.code, 'tensorflow' in sys.modules)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(tiny_folders["train"]), str(tiny_folders["root"] / "m.keras")],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert r.stdout.strip() == "exit 2 False", r.stdout + r.stderr
    assert len(error_lines(r.stderr)) == 1


def test_usage_errors_are_one_line():
    r = _invoke("bogus")
    assert r.exit_code == 2 and "bogus" in _error_line(r)
    r = _invoke("train", "small_cnn")
    assert r.exit_code == 2 and "TRAIN_DIR" in _error_line(r)


# ----------------------------------------------------------------------------------- building


@pytest.mark.slow
def test_every_architecture_builds_at_default_size():
    import keras

    from model_zoo import architectures

    for name, a in registry.ARCHITECTURES.items():
        model = architectures.build(name)
        assert model.input_shape == (None, *a.default_size, 3), name
        assert model.output_shape == (None, a.default_classes), name
        assert model.count_params() > 10_000, name
        if a.pretrained_base:
            nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
            assert [m.name for m in nested] == [a.pretrained_base.lower()], name
            assert all(layer.trainable for layer in nested)  # random weights: trained, not frozen
        assert not any(type(layer).__name__ == "Lambda" for layer in model._flatten_layers()), name
        keras.backend.clear_session()


@pytest.mark.slow
def test_list_prints_params_at_default_sizes():
    r = _invoke("list")
    assert r.exit_code == 0, r.output
    for name in ARCHS:
        assert name in r.output
    assert "19,733,493" in r.output  # vgg16_head at 224x224, 5 classes
    r = _invoke("list", "--no-params")
    assert r.exit_code == 0 and "small_cnn" in r.output


# ------------------------------------------------------------------- train, save, reload, audit


PROBE = np.random.default_rng(0).uniform(0, 255, (6, 40, 40, 3)).astype(np.float32)


def _probe(name: str, scaling: str) -> np.ndarray:
    from auditor.preprocess import scale_pixels

    n = SMALL[name]
    return scale_pixels(PROBE[:, :n, :n, :], scaling)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """Every architecture trained one epoch at a small size on 40 generated images, with the
    predictions of the trained model in memory (before it was ever saved) on a fixed probe batch."""
    import keras

    from model_zoo.train import TrainConfig, plan, train
    from sample_data.generator import generate_dataset

    root = tmp_path_factory.mktemp("zoo_trained")
    generate_dataset(root / "train", n_per_class=8, seed=5, size=40)
    generate_dataset(root / "test", n_per_class=4, seed=6, size=40)
    models, before = {}, {}
    for name in ARCHS:
        cfg = TrainConfig(
            arch=name,
            train_dir=root / "train",
            out=root / "models" / f"{name}.keras",
            epochs=1,
            input_size=(SMALL[name], SMALL[name]),
            seed=7,
            batch_size=16,
            verbose=False,
        )
        result = train(plan(cfg))
        models[name] = result.paths["model"]
        x = _probe(name, result.sidecar["preprocess"])
        before[name] = result.model.predict(x, batch_size=6, verbose=0)
        del result
        keras.backend.clear_session()
    return {"root": root, "models": models, "before": before, "test": root / "test"}


@pytest.mark.slow
def test_training_writes_model_sidecar_history_and_curves(trained):
    from auditor.sidecar import load_sidecar

    for name, path in trained["models"].items():
        assert path.is_file()
        sc = load_sidecar(path)  # validates against the auditor's schema
        raw = json.loads(path.with_suffix(".json").read_text())
        assert raw["schema_version"] == 1
        assert sc.architecture == name
        assert sc.class_names == ("basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil")
        assert sc.preprocess == EXPECTED_SCALING.get(name, "raw")
        assert sc.resize == "bilinear" and sc.input_size == (SMALL[name], SMALL[name])
        t = raw["training"]
        assert t["epochs_run"] == 1 and t["best_epoch"] == 1 and t["seed"] == 7
        assert 0 <= t["val_accuracy"] <= 1 and np.isfinite(t["val_loss"])
        assert len(t["train_data_fingerprint"]) == 64 and t["train_data_fingerprint"] in sc.training_data
        assert sum(t["train_counts"].values()) == 32  # 40 images minus a 20 % validation split
        history = path.with_name(f"{name}.history.csv").read_text().splitlines()
        assert history[0].split(",")[:5] == ["epoch", "accuracy", "loss", "val_accuracy", "val_loss"]
        assert len(history) == 2
        png = path.with_name(f"{name}.curves.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(trained["root"].rglob(".*.partial.keras"))


@pytest.mark.slow
def test_fingerprint_matches_what_wbc_audit_computes(trained):
    from auditor.data import discover, fingerprint
    from model_zoo.train import _sha256

    index = discover(trained["root"] / "train")
    fp = fingerprint([(s.rel, s.label, _sha256(s.path)) for s in index.samples])
    raw = json.loads(trained["models"]["small_cnn"].with_suffix(".json").read_text())
    assert raw["training"]["train_data_fingerprint"] == fp


RELOAD = r"""
import json, sys
import numpy as np, keras
assert "model_zoo" not in sys.modules  # a fresh process that never imported the zoo, as wbc-audit
inputs = np.load(sys.argv[1])
out = {}
for i, path in enumerate(sys.argv[2:]):
    m = keras.saving.load_model(path, compile=False, safe_mode=True)
    layers = [type(layer).__name__ for layer in m._flatten_layers()]
    out[path] = {"probs": m.predict(inputs[f"x{i}"], batch_size=6, verbose=0).tolist(), "layers": layers}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_reload_with_safe_mode_gives_identical_predictions(trained, tmp_path):
    """Reloaded from disk with safe_mode on, in a fresh process: the same predictions as in memory."""
    names = list(trained["models"])
    probes = {f"x{i}": _probe(n, EXPECTED_SCALING.get(n, "raw")) for i, n in enumerate(names)}
    np.savez(tmp_path / "x.npz", **probes)
    paths = [str(trained["models"][n]) for n in names]
    r = subprocess.run(
        [sys.executable, "-c", RELOAD, str(tmp_path / "x.npz"), *paths],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    fresh = json.loads(r.stdout.strip().splitlines()[-1])
    for name, path in zip(names, paths):
        after = np.array(fresh[path]["probs"], dtype=np.float32)
        before = trained["before"][name]
        assert before.shape == (6, 5) and np.allclose(before.sum(axis=1), 1, atol=1e-5), name
        np.testing.assert_allclose(after, before, rtol=0, atol=1e-6, err_msg=name)
        layers = set(fresh[path]["layers"])
        assert "Lambda" not in layers, name
        assert not {"RandomRotation", "RandomFlip", "RandomShear", "RandomZoom"} & layers, name  # no augmentation
        if registry.get(name).pretrained_base:
            assert "Functional" in layers, name  # the base is nested as a sub-model


@pytest.mark.slow
def test_cli_train_writes_files_and_prints_only_the_model_path(trained, tmp_path):
    out = tmp_path / "sub" / "m.keras"
    r = CliRunner().invoke(
        zoo_main,
        [
            "train",
            "bloodmnist_cnn",
            str(trained["root"] / "train"),
            "--out",
            str(out),
            "--epochs",
            "2",
            "--seed",
            "3",
            "--val-dir",
            str(trained["test"]),
            "--no-class-weights",
        ],
    )
    assert r.exit_code == 0, (r.output, r.exception)
    assert r.stdout.strip().splitlines()[-1] == str(out)
    assert "Epoch 1/2" in r.stderr and "Using" not in r.stdout
    raw = json.loads(out.with_suffix(".json").read_text())
    assert raw["input_size"] == [28, 28] and raw["training"]["class_weights"] is None
    assert raw["training"]["validation"]["source"] == "folder"
    assert raw["training"]["validation"]["n_images"] == 20 and sum(raw["training"]["train_counts"].values()) == 40
    assert len(raw["training"]["epoch_seconds"]) == raw["training"]["epochs_run"] == 2
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.curves.png", "m.history.csv", "m.json", "m.keras"]


@pytest.mark.slow
def test_wbc_audit_reads_each_zoo_model_from_its_sidecar(trained, tmp_path):
    models = list(trained["models"].values())
    r = run_cli(
        *models,
        trained["test"],
        "--out",
        tmp_path,
        "--format",
        "json",
        "--quiet",
        "--bootstrap",
        "20",
        "--preprocess-check-samples",
        "0",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [Path(line) for line in r.stdout.splitlines() if line.strip()]
    folders, comparison = lines[:-1], lines[-1]  # the model comparison's folder comes last
    assert len(folders) == len(models) and comparison.parent.name == "_comparison"
    for name, folder in zip(trained["models"], folders):
        audit = json.loads((folder / "audit.json").read_text())
        assert audit["preprocessing"]["scaling_source"] == "sidecar", name
        assert audit["preprocessing"]["scaling"] == EXPECTED_SCALING.get(name, "raw"), name
        assert audit["classes"]["source"] == "sidecar", name
        assert audit["model"]["input_shape"] == [SMALL[name], SMALL[name], 3], name
        assert audit["model"]["feature_layer"] is not None, name


@pytest.mark.slow
def test_pretrained_base_is_frozen_nested_and_reloads(tmp_path):
    """With weights (a file here; 'imagenet' downloads the same way) the base is frozen and called in
    inference mode; the model still saves and reloads with safe_mode on."""
    import keras

    from model_zoo import architectures

    base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    base.save_weights(tmp_path / "vgg16_base.weights.h5")
    model = architectures.vgg16_head((32, 32), 5, weights=str(tmp_path / "vgg16_base.weights.h5"), seed=1)
    nested = model.get_layer("vgg16")
    assert isinstance(nested, keras.Model) and not nested.trainable
    np.testing.assert_array_equal(nested.get_weights()[0], base.get_weights()[0])
    head_params = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert head_params == 512 * 200 + 200 + 200 * 5 + 5
    x = _probe("vgg16_head", "caffe")[:, :32, :32]
    model.save(tmp_path / "vgg.keras")
    again = keras.saving.load_model(tmp_path / "vgg.keras", compile=False, safe_mode=True)
    assert not again.get_layer("vgg16").trainable
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), rtol=0, atol=1e-6)


@pytest.mark.slow
def test_same_seed_same_model(trained, tmp_path):
    import keras

    from model_zoo.train import TrainConfig, plan, train

    weights = []
    for run in ("a", "b"):
        cfg = TrainConfig(
            arch="small_cnn",
            train_dir=trained["root"] / "train",
            out=tmp_path / run / "m.keras",
            epochs=2,
            input_size=(24, 24),
            seed=11,
            batch_size=8,
            verbose=False,
        )
        result = train(plan(cfg))
        weights.append([w.copy() for w in result.model.get_weights()])
        assert result.sidecar["training"]["epochs_run"] == 2
        keras.backend.clear_session()
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)
    ha = (tmp_path / "a" / "m.history.csv").read_text()
    assert ha == (tmp_path / "b" / "m.history.csv").read_text()
