"""Train a zoo architecture on a class-per-folder image set and write a model that describes itself.

:func:`plan` checks everything that can be checked without TensorFlow doing any work (the architecture,
the folders, their classes, the input size, the output path) and raises
:class:`auditor.errors.InputError` with one line on the first problem, so a bad call fails before any
training starts. :func:`train` then trains and writes, next to ``MODEL.keras``:

* ``MODEL.json``: the sidecar (class names, pixel scaling, resize, input size, architecture, intended use,
  training data with its fingerprint, and the training facts), read by ``wbc-audit``;
* ``MODEL.history.csv``: loss and accuracy per epoch, training and validation;
* ``MODEL.curves.png``: the same as two plots.

Images are read with ``keras.utils.image_dataset_from_directory`` (bilinear resize), augmented in the
``tf.data`` pipeline (so the augmentation is not part of the saved model) the way the published WBC
studies did (rotation up to 20 degrees, width/height shift and zoom up to 20 %, shear, horizontal and
vertical flips, nearest fill), scaled as the architecture expects, and fitted with class weights, early
stopping on the validation loss (best weights restored), a best-weights checkpoint and a learning-rate
reduction on plateaus. Seeds are fixed and TensorFlow's op determinism is on: same seed, same model.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from auditor.data import discover, fingerprint
from auditor.errors import input_error

from . import registry

#: Extensions ``keras.utils.image_dataset_from_directory`` reads (it ignores .tif/.tiff).
KERAS_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
DEFAULT_VAL_SPLIT = 0.2
AUGMENTATION = (
    "random rotation up to 20 degrees, width/height shift up to 20 %, zoom up to 20 %, shear up to "
    "0.2, horizontal and vertical flips, nearest fill"
)


@dataclass(frozen=True)
class TrainConfig:
    arch: str
    train_dir: Path
    out: Path
    val_dir: Path | None = None
    val_split: float | None = None  # None: DEFAULT_VAL_SPLIT unless val_dir is given
    epochs: int = 100
    input_size: tuple[int, int] | None = None  # None: the architecture's default
    class_weights: bool = True
    seed: int = 0
    batch_size: int = 32
    patience: int = 20
    learning_rate: float = 1e-3
    weights: str | None = None
    verbose: bool = True


@dataclass(frozen=True)
class FolderInfo:
    """A class-per-folder image set as the trainer sees it."""

    path: Path
    class_names: tuple[str, ...]
    counts: dict[str, int]  # images Keras will read, per class
    n_ignored: int  # image files Keras's loader does not read (.tif/.tiff)
    fingerprint: str  # auditor.data.fingerprint over every image file (what wbc-audit reports)

    @property
    def n_images(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class Plan:
    config: TrainConfig
    arch: registry.Architecture
    input_size: tuple[int, int]
    val_split: float | None
    train: FolderInfo
    val: FolderInfo | None
    notes: tuple[str, ...] = field(default_factory=tuple)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _folder(path: Path, what: str) -> FolderInfo:
    path = Path(path)
    if not path.is_dir():
        raise input_error(
            path,
            "no such directory" if not path.exists() else "is not a directory",
            expected=f"a {what} folder with one sub-folder per class",
        )
    index = discover(path)
    counts = Counter(s.label for s in index.samples if s.path.suffix.lower() in KERAS_EXTENSIONS)
    ignored = sum(1 for s in index.samples if s.path.suffix.lower() not in KERAS_EXTENSIONS)
    fp = fingerprint([(s.rel, s.label, _sha256(s.path)) for s in index.samples])
    return FolderInfo(path, tuple(index.labels), {c: counts.get(c, 0) for c in index.labels}, ignored, fp)


def parse_input_size(text: str) -> tuple[int, int]:
    """``"64"`` -> (64, 64); ``"64x96"`` -> (64, 96) (height x width)."""
    parts = str(text).lower().replace("*", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) <= 0:
        raise input_error("--input-size", f"is {text!r}", expected="H or HxW in pixels, e.g. 64 or 96x128")
    return values[0], values[1]


def plan(config: TrainConfig) -> Plan:
    """Check every input; raise a one-line InputError on the first problem. Does no training."""
    if config.arch not in registry.ARCHITECTURES:
        raise input_error(
            "ARCH", f"unknown architecture {config.arch!r}", expected="one of " + ", ".join(registry.ARCHITECTURES)
        )
    arch = registry.ARCHITECTURES[config.arch]
    size = arch.default_size if config.input_size is None else tuple(int(v) for v in config.input_size)
    if not arch.fits(size):
        raise input_error(
            "--input-size",
            f"{size[0]}x{size[1]} is too small for {arch.name}",
            expected=f"at least {arch.min_size[0]}x{arch.min_size[1]}",
        )
    out = Path(config.out)
    if out.suffix != ".keras":
        raise input_error("--out", f"{str(out)!r} does not end in .keras", expected="a MODEL.keras path")
    if out.exists() and out.is_dir():
        raise input_error(out, "is a directory", expected="a MODEL.keras file path")
    if config.epochs < 1:
        raise input_error("--epochs", f"is {config.epochs}", expected="at least 1")
    if config.batch_size < 1:
        raise input_error("--batch-size", f"is {config.batch_size}", expected="at least 1")
    if config.patience < 0:
        raise input_error("--patience", f"is {config.patience}", expected="0 or more")
    if not (config.learning_rate > 0):
        raise input_error("--learning-rate", f"is {config.learning_rate}", expected="a positive number")
    if config.weights is not None:
        if config.weights == "imagenet":
            if not arch.pretrained_base:
                raise input_error(
                    "--weights",
                    f"{arch.name} has no ImageNet weights",
                    expected="imagenet only for "
                    + ", ".join(a.name for a in registry.ARCHITECTURES.values() if a.pretrained_base),
                )
        elif not Path(config.weights).is_file():
            raise input_error("--weights", f"{config.weights}: no such file", expected="imagenet or a weights file")
    if config.val_dir is not None and config.val_split is not None:
        raise input_error(
            "--val-split",
            "cannot be used together with --val-dir",
            hint="give either a validation folder or the fraction of TRAIN_DIR to hold out",
        )
    val_split = (
        None
        if config.val_dir is not None
        else (DEFAULT_VAL_SPLIT if config.val_split is None else float(config.val_split))
    )
    if val_split is not None and not (0.0 < val_split < 1.0):
        raise input_error("--val-split", f"is {val_split:g}", expected="a fraction strictly between 0 and 1")

    train = _folder(config.train_dir, "training")
    if len(train.class_names) < 2:
        raise input_error(
            train.path,
            f"has {len(train.class_names)} class folder(s) "
            f"[{', '.join(train.class_names)}]; a classifier needs at least two",
            expected="one sub-folder per class, e.g. TRAIN_DIR/neutrophil/*.png",
        )
    empty = [c for c, n in train.counts.items() if n == 0]
    if empty:
        raise input_error(
            train.path,
            f"class folder(s) [{', '.join(empty)}] hold no image Keras can read",
            expected="at least one " + "/".join(e.lstrip(".") for e in KERAS_EXTENSIONS) + " image per class",
        )
    notes = []
    if train.n_ignored:
        notes.append(
            f"{train.path}: {train.n_ignored} .tif/.tiff image(s) ignored (Keras's folder loader does not read them)"
        )
    val = None
    if config.val_dir is not None:
        val = _folder(config.val_dir, "validation")
        if tuple(val.class_names) != tuple(train.class_names):
            raise input_error(
                val.path,
                "has classes that differ from the training folder's",
                expected=f"the same class folders; training: [{', '.join(train.class_names)}]; "
                f"validation: [{', '.join(val.class_names)}]",
            )
        if val.n_images == 0:
            raise input_error(
                val.path,
                "holds no image Keras can read",
                expected="/".join(e.lstrip(".") for e in KERAS_EXTENSIONS) + " images",
            )
        if val.n_ignored:
            notes.append(f"{val.path}: {val.n_ignored} .tif/.tiff image(s) ignored")
    else:
        n_val = int(val_split * train.n_images)  # what image_dataset_from_directory holds out
        if n_val < 1 or train.n_images - n_val < 1:
            raise input_error(
                "--val-split",
                f"{val_split:g} of {train.n_images} images leaves "
                f"{n_val} for validation and {train.n_images - n_val} for training",
                expected="at least one image on each side",
                hint="give --val-dir or more images",
            )
    return Plan(config, arch, (int(size[0]), int(size[1])), val_split, train, val, tuple(notes))


# ------------------------------------------------------------------------------------------ training


def scale_tensor(x, scaling: str):
    """The sidecar's pixel scalings on a float tensor in [0, 255] (same as :mod:`auditor.preprocess`)."""
    import tensorflow as tf

    if scaling == "raw":
        return x
    if scaling == "unit":
        return x / 255.0
    if scaling == "symmetric":
        return x / 127.5 - 1.0
    if scaling == "caffe":
        return x[..., ::-1] - tf.constant([103.939, 116.779, 123.68], dtype=x.dtype)
    raise ValueError(f"unknown scaling {scaling!r}")


def augmenter(seed: int):
    """The studies' augmentation as Keras preprocessing layers (used in tf.data, never saved)."""
    import keras
    from keras import layers

    return keras.Sequential(
        [
            layers.RandomRotation(20 / 360, fill_mode="nearest", seed=seed),
            layers.RandomTranslation(0.2, 0.2, fill_mode="nearest", seed=seed + 1),
            layers.RandomZoom(0.2, 0.2, fill_mode="nearest", seed=seed + 2),
            layers.RandomShear(0.2, 0.2, fill_mode="nearest", seed=seed + 3),
            layers.RandomFlip("horizontal_and_vertical", seed=seed + 4),
        ],
        name="augment",
    )


def class_weights_of(counts: dict[str, int], class_names) -> dict[int, float]:
    """Balanced weights n / (k * n_c), as scikit-learn's ``class_weight="balanced"``."""
    n, k = sum(counts.values()), len(class_names)
    return {i: (n / (k * counts[c]) if counts.get(c) else 0.0) for i, c in enumerate(class_names)}


def _datasets(p: Plan):
    import keras
    import tensorflow as tf

    cfg = p.config
    common = {
        "labels": "inferred",
        "label_mode": "int",
        "class_names": list(p.train.class_names),
        "color_mode": "rgb",
        "image_size": p.input_size,
        "interpolation": "bilinear",
        "batch_size": cfg.batch_size,
        "verbose": False,
    }
    if p.val is None:
        train_ds, val_ds = keras.utils.image_dataset_from_directory(
            str(p.train.path), shuffle=True, seed=cfg.seed, validation_split=p.val_split, subset="both", **common
        )
    else:
        train_ds = keras.utils.image_dataset_from_directory(str(p.train.path), shuffle=True, seed=cfg.seed, **common)
        val_ds = keras.utils.image_dataset_from_directory(str(p.val.path), shuffle=False, **common)
    root = p.train.path.resolve()
    train_labels = [Path(f).resolve().relative_to(root).parts[0] for f in train_ds.file_paths]
    counts = Counter(train_labels)
    n_val = len(val_ds.file_paths)

    aug = augmenter(cfg.seed)
    scaling = p.arch.preprocess
    auto = tf.data.AUTOTUNE
    train_ds = train_ds.map(
        lambda x, y: (scale_tensor(aug(x, training=True), scaling), y), num_parallel_calls=auto
    ).prefetch(auto)
    val_ds = val_ds.map(lambda x, y: (scale_tensor(x, scaling), y), num_parallel_calls=auto).cache().prefetch(auto)
    return train_ds, val_ds, {c: counts.get(c, 0) for c in p.train.class_names}, n_val


def _write_history(history: dict, csv_path: Path, png_path: Path, title: str) -> None:
    keys = list(history)
    n = len(history[keys[0]]) if keys else 0
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["epoch"] + keys)
        for i in range(n):
            w.writerow([i + 1] + [f"{float(history[k][i]):.6g}" for k in keys])

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = range(1, n + 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    for ax, metric, label in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "accuracy")):
        if metric in history:
            ax.plot(epochs, history[metric], marker=".", label="training")
        if f"val_{metric}" in history:
            ax.plot(epochs, history[f"val_{metric}"], marker=".", label="validation")
        if "val_loss" in history and n:
            best = int(min(range(n), key=lambda i: history["val_loss"][i])) + 1
            ax.axvline(best, color="grey", linestyle=":", linewidth=1, label=f"best epoch ({best})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    axes[1].set_ylim(0, 1.02)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)


def _EpochTimer(store: list):
    """A Keras callback appending each epoch's wall time (training and validation) to ``store``."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            store.append(time.perf_counter() - self._t)

    return EpochTimer()


def output_paths(out: Path) -> dict[str, Path]:
    out = Path(out)
    return {
        "model": out,
        "sidecar": out.with_suffix(".json"),
        "history": out.with_name(out.stem + ".history.csv"),
        "curves": out.with_name(out.stem + ".curves.png"),
    }


@dataclass
class TrainResult:
    """What :func:`train` made: the trained model (best weights) and what was written."""

    model: object  # keras.Model
    sidecar: dict
    history: dict[str, list[float]]
    paths: dict[str, Path]


def train(p: Plan) -> TrainResult:
    """Train as planned, write the model and its companions (see :func:`output_paths`)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf

    cfg = p.config
    log = sys.stderr
    for note in p.notes:
        print(f"note: {note}", file=log)
    keras.utils.set_random_seed(cfg.seed)
    tf.config.experimental.enable_op_determinism()
    with contextlib.redirect_stdout(log):  # Keras prints "Using N files for ..." on stdout
        train_ds, val_ds, train_counts, n_val = _datasets(p)
    class_names = list(p.train.class_names)
    weights = class_weights_of(train_counts, class_names) if cfg.class_weights else None
    if weights is not None and any(v == 0.0 for v in weights.values()):
        missing = [c for c in class_names if not train_counts[c]]
        print(f"note: no training image of [{', '.join(missing)}] after the validation split", file=log)
        weights = {i: (v if v else 1.0) for i, v in weights.items()}

    model = p.arch.build(p.input_size, len(class_names), weights=cfg.weights, seed=cfg.seed)
    model.compile(
        optimizer=keras.optimizers.Adam(cfg.learning_rate), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    paths = output_paths(cfg.out)
    paths["model"].parent.mkdir(parents=True, exist_ok=True)
    verbose = (1 if log.isatty() else 2) if cfg.verbose else 0
    epoch_seconds: list[float] = []
    with tempfile.TemporaryDirectory(prefix="wbc-zoo-") as tmp:
        ckpt = Path(tmp) / "best.weights.h5"
        callbacks = [
            _EpochTimer(epoch_seconds),
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=cfg.patience, restore_best_weights=True, verbose=1 if cfg.verbose else 0
            ),
            keras.callbacks.ModelCheckpoint(str(ckpt), monitor="val_loss", save_best_only=True, save_weights_only=True),
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=0.5, patience=max(2, cfg.patience // 3), min_lr=1e-5, verbose=0
            ),
        ]
        if cfg.verbose:
            print(
                f"training {p.arch.name} ({model.count_params():,} parameters) at {p.input_size[0]}x"
                f"{p.input_size[1]} on {sum(train_counts.values())} images, validating on {n_val}; "
                f"up to {cfg.epochs} epochs",
                file=log,
            )
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(log):  # Keras's progress display; stdout carries only the model path
            hist = model.fit(
                train_ds,
                validation_data=val_ds,
                epochs=cfg.epochs,
                callbacks=callbacks,
                class_weight=weights,
                shuffle=False,
                verbose=verbose,
            )  # the data set shuffles
        seconds = time.perf_counter() - t0
        if ckpt.is_file():  # the best epoch's weights (EarlyStopping restored them too; this is the record)
            model.load_weights(str(ckpt))
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    epochs_run = len(history["loss"])
    val_losses = history.get("val_loss", [])
    best = (
        int(np.nanargmin(val_losses)) if val_losses and not all(math.isnan(v) for v in val_losses) else epochs_run - 1
    )
    val_loss, val_acc = model.evaluate(val_ds, verbose=0)

    partial = paths["model"].with_name(f".{paths['model'].stem}.partial.keras")
    try:
        model.save(partial)
        os.replace(partial, paths["model"])
    finally:
        partial.unlink(missing_ok=True)

    sidecar = build_sidecar(
        p,
        class_names,
        train_counts,
        n_val,
        weights,
        epochs_run=epochs_run,
        best_epoch=best + 1,
        val_loss=float(val_loss),
        val_accuracy=float(val_acc),
        seconds=seconds,
        param_count=int(model.count_params()),
        epoch_seconds=epoch_seconds,
    )
    paths["sidecar"].write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
    _write_history(
        history,
        paths["history"],
        paths["curves"],
        f"{p.arch.name} {p.input_size[0]}x{p.input_size[1]} on {p.train.path.name} (seed {cfg.seed})",
    )
    if cfg.verbose:
        print(
            f"epochs run: {epochs_run} (best {best + 1}); val_loss {val_loss:.4f}, val_accuracy {val_acc:.4f}; "
            f"training took {seconds:.1f} s",
            file=log,
        )
        print(
            f"wrote {paths['model']}, {paths['sidecar'].name}, {paths['history'].name}, {paths['curves'].name}",
            file=log,
        )
    return TrainResult(model, sidecar, history, paths)


def build_sidecar(
    p: Plan,
    class_names,
    train_counts,
    n_val,
    weights,
    *,
    epochs_run,
    best_epoch,
    val_loss,
    val_accuracy,
    seconds,
    param_count,
    epoch_seconds=(),
) -> dict:
    import keras
    import tensorflow as tf

    cfg = p.config
    counts = ", ".join(f"{c} {n}" for c, n in train_counts.items())
    if p.val is None:
        val_text = (
            f"a seeded {p.val_split:.0%} of that folder ({n_val} images) was held out for validation and early stopping"
        )
        validation = {"source": "split", "val_split": p.val_split, "n_images": n_val}
    else:
        val_text = (
            f"validation and early stopping on {p.val.path} ({p.val.n_images} images, fingerprint {p.val.fingerprint})"
        )
        validation = {
            "source": "folder",
            "path": str(p.val.path),
            "n_images": p.val.n_images,
            "data_fingerprint": p.val.fingerprint,
        }
    if not p.arch.pretrained_base:
        base = ""
    elif cfg.weights is None:
        base = f"{p.arch.pretrained_base} base with random initial weights, trained with the head; "
    elif cfg.weights == "imagenet":
        base = f"{p.arch.pretrained_base} base with ImageNet weights, frozen; "
    else:
        base = f"{p.arch.pretrained_base} base with weights from {cfg.weights}, frozen; "
    return {
        "schema_version": 1,
        "class_names": list(class_names),
        "preprocess": p.arch.preprocess,
        "resize": "bilinear",  # image_dataset_from_directory(interpolation="bilinear") below, no crop
        "crop": "none",
        "channel_order": "rgb",
        "input_size": list(p.input_size),
        "architecture": p.arch.name,
        "intended_use": (
            f"{p.arch.name} ({p.arch.source}) trained by wbc-zoo to classify single-cell RGB images into "
            f"{len(class_names)} classes ({', '.join(class_names)}). {base}For evaluation and research; "
            "not a medical device unless validated as one."
        ),
        "training_data": (
            f"{p.train.path}: {sum(train_counts.values())} training images ({counts}); folder fingerprint "
            f"{p.train.fingerprint} (SHA-256 over relative path, label and content hash of every image, as "
            f"wbc-audit computes it); {val_text}. Augmentation: {AUGMENTATION}."
        ),
        "training": {
            "seed": cfg.seed,
            "epochs_run": epochs_run,
            "best_epoch": best_epoch,
            "max_epochs": cfg.epochs,
            "patience": cfg.patience,
            "batch_size": cfg.batch_size,
            "learning_rate": cfg.learning_rate,
            "optimizer": "adam",
            "class_weights": ({c: round(weights[i], 4) for i, c in enumerate(class_names)} if weights else None),
            "val_loss": round(val_loss, 4),
            "val_accuracy": round(val_accuracy, 4),
            "validation": validation,
            "train_data_path": str(p.train.path),
            "train_data_fingerprint": p.train.fingerprint,
            "train_counts": dict(train_counts),
            "augmentation": AUGMENTATION,
            "weights": cfg.weights,
            "param_count": param_count,
            "train_seconds": round(seconds, 1),
            "epoch_seconds": [round(t, 2) for t in epoch_seconds],  # the first includes graph tracing
            "keras_version": keras.__version__,
            "tensorflow_version": tf.__version__,
        },
    }
