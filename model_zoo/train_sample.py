"""Train the sample model ``model_zoo/pretrained/wbc5_small_cnn.keras`` on ``sample_data/wbc5``.

    python -m model_zoo.train_sample --data sample_data/wbc5 \
        --out model_zoo/pretrained/wbc5_small_cnn.keras --seed 20261123 --epochs 100

Trains on CPU (a few minutes at most), keeps the weights of the epoch with the lowest validation loss
(a seeded 20 % of ``<data>/train``), saves the model and a sidecar JSON with the same stem, and prints
the accuracy on ``<data>/test``. Reproducible: seeds are fixed and TensorFlow op determinism is on.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # CPU only: reproducible and as documented

import keras
import numpy as np
import tensorflow as tf

from model_zoo.small_cnn import build_small_cnn

IMAGE_SIZE = (96, 96)
BATCH_SIZE = 32
VALIDATION_SPLIT = 0.2


def _load(data: Path, seed: int):
    common = dict(
        image_size=IMAGE_SIZE,
        interpolation="bilinear",
        label_mode="int",
        batch_size=BATCH_SIZE,
        seed=seed,
        shuffle=True,
        validation_split=VALIDATION_SPLIT,
    )
    train = keras.utils.image_dataset_from_directory(data / "train", subset="training", **common)
    val = keras.utils.image_dataset_from_directory(data / "train", subset="validation", **common)
    test = keras.utils.image_dataset_from_directory(
        data / "test",
        image_size=IMAGE_SIZE,
        interpolation="bilinear",
        label_mode="int",
        batch_size=BATCH_SIZE,
        shuffle=False,
    )
    if not (train.class_names == val.class_names == test.class_names):
        raise SystemExit(f"class folders differ between train and test: {train.class_names} vs {test.class_names}")
    return train, val, test


def _augmenter(seed: int) -> keras.Sequential:
    return keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal_and_vertical", seed=seed),
            keras.layers.RandomRotation(0.5, fill_mode="reflect", seed=seed + 1),
        ],
        name="augment",
    )


def train(data: Path, out: Path, seed: int, epochs: int, patience: int) -> dict:
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    train_ds, val_ds, test_ds = _load(data, seed)
    class_names = list(train_ds.class_names)

    aug = _augmenter(seed)
    train_ds = train_ds.map(lambda x, y: (aug(x, training=True), y)).prefetch(2)
    val_ds = val_ds.cache()

    model = build_small_cnn(IMAGE_SIZE, len(class_names), seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
    slow = keras.callbacks.ReduceLROnPlateau(
        monitor="val_loss", factor=0.5, patience=max(2, patience // 3), min_lr=1e-5, verbose=0
    )
    t0 = time.perf_counter()
    hist = model.fit(
        train_ds, validation_data=val_ds, epochs=epochs, callbacks=[stop, slow], shuffle=False, verbose=2
    )  # shuffling is done by the data set itself
    train_s = time.perf_counter() - t0
    epochs_run = len(hist.history["loss"])
    best = int(np.argmin(hist.history["val_loss"]))
    val_loss, val_acc = model.evaluate(val_ds, verbose=0)
    test_loss, test_acc = model.evaluate(test_ds, verbose=0)

    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    sidecar = {
        "schema_version": 1,
        "class_names": class_names,
        "preprocess": "raw",
        "resize": "bilinear",
        "input_size": list(IMAGE_SIZE),
        "architecture": "small_cnn",
        "intended_use": (
            "Demonstration model for wbc-audit only: classifies 96x96 RGB crops of a single white blood "
            "cell (basophil, eosinophil, lymphocyte, monocyte, neutrophil) from synthetic Wright-Giemsa-like "
            "smear images. Not a medical device; not validated on real patient images."
        ),
        "training_data": (
            f"sample_data/wbc5/train: synthetic images drawn by sample_data.generator (default site style, "
            f"seed {seed}); 60 images per class, of which 6 in total are deliberately mislabelled "
            f"(see sample_data/wbc5/manifest.json). A seeded {int(VALIDATION_SPLIT * 100)} % of the "
            f"training folder was held out for validation / early stopping. Light augmentation: random "
            f"flips and rotations."
        ),
        "training": {
            "seed": seed,
            "epochs_run": epochs_run,
            "best_epoch": best + 1,
            "val_accuracy": round(float(val_acc), 4),
            "val_loss": round(float(val_loss), 4),
            "test_accuracy": round(float(test_acc), 4),
            "keras_version": keras.__version__,
            "tensorflow_version": tf.__version__,
        },
    }
    out.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
    print(
        f"epochs run: {epochs_run} (best {best + 1}); val_loss {val_loss:.4f} val_accuracy {val_acc:.4f}; "
        f"training took {train_s:.1f} s"
    )
    print(f"test accuracy on {data / 'test'}: {test_acc:.4f} (loss {test_loss:.4f})")
    print(f"saved {out} ({out.stat().st_size / 1e6:.2f} MB) and {out.with_suffix('.json')}")
    return sidecar


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("sample_data/wbc5"))
    ap.add_argument("--out", type=Path, default=Path("model_zoo/pretrained/wbc5_small_cnn.keras"))
    ap.add_argument("--seed", type=int, default=20261123)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--patience", type=int, default=20)
    args = ap.parse_args(argv)
    if args.out.suffix != ".keras":
        ap.error("--out must end in .keras")
    train(args.data, args.out, args.seed, args.epochs, args.patience)
    return 0


if __name__ == "__main__":
    sys.exit(main())
