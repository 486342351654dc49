"""Tiny models trained through four common loaders: with the matching flags the audit feeds each model exactly
the pixels its own pipeline did, so the audit's accuracy equals the own-pipeline accuracy and the probabilities
match; with the default flags it does not (where the loaders differ)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

keras = pytest.importorskip("keras")

from auditor.config import AuditConfig
from auditor.data import discover
from auditor.pipeline import clean_pass, prepare_model
from auditor.progress import QUIET
from tests.conftest import error_lines, run_cli

REPO = Path(__file__).resolve().parent.parent
SIZE = (24, 24)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The sample cells re-saved at mixed sizes: train PNG (16 per class), test JPEG (12 per class)."""
    root = tmp_path_factory.mktemp("loaders")
    rng = np.random.default_rng(0)
    for split, n, ext in (("train", 16, "png"), ("test", 12, "jpg")):
        for cls_dir in sorted((REPO / "sample_data" / "wbc5" / split).iterdir()):
            (root / split / cls_dir.name).mkdir(parents=True)
            for f in sorted(cls_dir.glob("*.png"))[:n]:
                img = cv2.imread(str(f))
                h, w = (int(v) for v in rng.integers(30, 110, 2))
                cv2.imwrite(
                    str(root / split / cls_dir.name / f"{f.stem}.{ext}"),
                    cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA),
                )
    return root


def _files(folder: Path):
    classes = sorted(p.name for p in folder.iterdir())
    items = [(f, i) for i, c in enumerate(classes) for f in sorted((folder / c).iterdir())]
    return [f for f, _ in items], np.array([i for _, i in items])


def _load(loader: str, folder: Path):
    """Float32 inputs and labels exactly as each training pipeline makes them."""
    files, y = _files(folder)
    h, w = SIZE
    if loader == "load_img":
        x = [
            keras.utils.img_to_array(keras.utils.load_img(f, target_size=SIZE, interpolation="bilinear")) for f in files
        ]
    elif loader == "cv2_area_rgb":
        x = [
            cv2.resize(cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB), (w, h), interpolation=cv2.INTER_AREA)
            for f in files
        ]
    elif loader == "cv2_bgr":
        x = [cv2.resize(cv2.imread(str(f)), (w, h)) for f in files]
    elif loader == "flow":
        from keras.src.legacy.preprocessing.image import ImageDataGenerator

        it = ImageDataGenerator().flow_from_directory(
            str(folder), target_size=SIZE, batch_size=1000, shuffle=False, class_mode="sparse"
        )
        xb, yb = next(it)
        assert list(yb.astype(int)) == list(y) and [Path(p).name for p in it.filepaths] == [f.name for f in files]
        return xb.astype(np.float32), y
    elif loader == "folder":
        ds = keras.utils.image_dataset_from_directory(
            str(folder), image_size=SIZE, batch_size=None, shuffle=False, verbose=False
        )
        return np.stack([a.numpy() for a, _ in ds]), y
    return np.stack(x).astype(np.float32), y


LOADERS = {  # loader -> (audit flags, CLI-style)
    "load_img": {"resize": "pil:bilinear"},
    "cv2_area_rgb": {"resize": "cv2:area"},
    "flow": {"resize": "pil:nearest"},
    "cv2_bgr": {"resize": "cv2:linear", "channels": "bgr"},
    "folder": {},  # keras image_dataset_from_directory on JPEGs: the defaults, with TensorFlow's JPEG decoder
}


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    out = {}
    models = tmp_path_factory.mktemp("models")
    for loader in LOADERS:
        x, y = _load(loader, data / "train")
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input(SIZE + (3,)),
                keras.layers.Rescaling(1 / 255.0),
                keras.layers.Conv2D(16, 3, activation="relu"),
                keras.layers.MaxPooling2D(),
                keras.layers.Conv2D(16, 3, activation="relu"),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(5, activation="softmax"),
            ]
        )
        model.compile(optimizer=keras.optimizers.Adam(0.005), loss="sparse_categorical_crossentropy")
        model.fit(x, y, epochs=25, batch_size=16, verbose=0)
        xt, yt = _load(loader, data / "test")
        probs = model.predict(xt, verbose=0, batch_size=64)
        path = models / f"{loader}.keras"
        model.save(path)
        out[loader] = (path, probs, float(np.mean(probs.argmax(1) == yt)))
    return out


def _audit_probs(path, data_dir, **flags):
    cfg = AuditConfig(
        model_paths=(path,),
        data_path=data_dir,
        n_bootstrap=0,
        sections={"preprocessing_check": {"samples": 0}},
        **flags,
    )
    index = discover(data_dir)
    pm = prepare_model(cfg, path, index)
    cp = clean_pass(pm, index, cfg, QUIET)
    probs = np.zeros_like(cp.probs)
    probs[cp.sample_idx] = cp.probs
    return probs, float(np.mean(cp.probs.argmax(1) == cp.y_true)), pm


@pytest.mark.parametrize("loader", list(LOADERS))
def test_audit_equals_own_pipeline(trained, data, loader):
    path, own_probs, own_acc = trained[loader]
    assert 0.3 < own_acc < 1.0, f"{loader}: own accuracy {own_acc} (the model must make mistakes)"
    probs, acc, pm = _audit_probs(path, data / "test", **LOADERS[loader])
    assert acc == own_acc
    np.testing.assert_allclose(probs, own_probs, rtol=0, atol=1e-6)
    assert pm.preprocessing_dict()["resize_reproduces"]
    if loader == "folder":
        return
    default_probs, default_acc, _ = _audit_probs(path, data / "test")
    assert np.abs(default_probs - own_probs).max() > 1e-3, f"{loader}: the default path gives the same inputs"
    print(f"{loader}: own {own_acc:.4f}, audit matched {acc:.4f}, audit default {default_acc:.4f}")


def test_folder_loader_needs_tensorflow_jpeg_decode(trained, data):
    """Decoding the JPEGs with OpenCV instead (the audit before) gives other probabilities."""
    from auditor.model import KerasClassifier

    path, own_probs, _ = trained["folder"]
    files, _ = _files(data / "test")
    clf = KerasClassifier(path)
    x = clf.prepare(
        [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files], resize="bilinear", scaling="raw"
    )
    assert np.abs(clf.predict_arrays(x) - own_probs).max() > 1e-4


def test_cli_bgr_model_matches_own_pipeline_and_default_is_wrong(trained, data, tmp_path):
    path, _, own_acc = trained["cv2_bgr"]
    accs = {}
    for name, extra in (("matched", ["--resize", "cv2:linear", "--channels", "bgr"]), ("default", [])):
        r = run_cli(
            path,
            data / "test",
            "--out",
            tmp_path / name,
            "--format",
            "json",
            "--bootstrap",
            "0",
            "--preprocess-check-samples",
            "0",
            "-q",
            *extra,
        )
        assert r.returncode == 0, r.stderr
        report = json.loads((Path(r.stdout.strip().splitlines()[-1]) / "audit.json").read_text())
        accs[name] = report["results"]["classification"]["accuracy"] if "results" in report else None
        pre = report["preprocessing"]
        if name == "matched":
            assert pre["channels"] == "bgr" and pre["channels_source"] == "--channels"
            assert pre["resize"] == "cv2:linear" and "INTER_LINEAR" in pre["resize_reproduces"]
    assert accs["matched"] == pytest.approx(own_acc, abs=1e-12)
    assert accs["default"] != accs["matched"]
    print(f"cv2 BGR model: own {own_acc:.4f}, CLI matched {accs['matched']:.4f}, CLI default {accs['default']:.4f}")


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "args, subject, words",
    [
        (["--resize", "pil:bilnear"], "--resize", ["pil:bilinear", "cv2:area", "tf:bilinear-aa", "bilinear"]),
        (["--crop", "center:1.5"], "--crop", ["center:FRACTION"]),
        (["--channels", "rbg"], "--channels", ["rgb, bgr"]),
    ],
)
def test_bad_options(colour_model_path, colour_data, tmp_path, args, subject, words):
    r = run_cli(colour_model_path, colour_data, "--out", tmp_path, *args)
    assert r.returncode == 2
    errors = error_lines(r.stderr)
    assert len(errors) == 1 and errors[0].startswith(f"error: {subject}:"), r.stderr
    for w in words:
        assert w in errors[0]


def test_bad_sidecar_values(colour_model_path, colour_data, tmp_path):
    import shutil

    from auditor.errors import InputError
    from auditor.sidecar import load_sidecar

    model = tmp_path / "m.keras"
    shutil.copy(colour_model_path, model)
    side = tmp_path / "m.json"
    for key, value, word in (
        ("resize", "pil:fancy", "cv2:lanczos4"),
        ("crop", "center:0", "center:FRACTION"),
        ("crop", 0.5, "center:FRACTION"),
        ("channel_order", "BGR", "rgb, bgr"),
    ):
        side.write_text(json.dumps({key: value}))
        with pytest.raises(InputError) as e:
            load_sidecar(model)
        assert str(e.value).startswith(f"{side}: '{key}'") and word in str(e.value)
    side.write_text(json.dumps({"resize": "cv2:area", "crop": "center:0.5", "channel_order": "bgr"}))
    sc = load_sidecar(model)
    assert (sc.resize, sc.crop, sc.channel_order) == ("cv2:area", "center:0.5", "bgr")
    side.write_text(json.dumps({"resize": "pil:fancy"}))  # and through the CLI: exit 2, one line
    r = run_cli(model, colour_data, "--out", tmp_path / "out")
    errors = error_lines(r.stderr)
    assert r.returncode == 2 and len(errors) == 1 and str(side) in errors[0] and "pil:bilinear" in errors[0]
