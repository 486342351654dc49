"""Shared fixtures: tiny Keras models and small image folders made on the fly.

Model fixtures are session-scoped (building a Keras model costs a second) and only imported by the
tests that need TensorFlow, so numpy-only tests stay fast.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parent.parent
SAMPLE_MODEL = REPO / "model_zoo" / "pretrained" / "wbc5_small_cnn.keras"
SAMPLE_TEST = REPO / "sample_data" / "wbc5" / "test"
COLOURS = {"blue": (40, 40, 200), "green": (40, 200, 40), "red": (200, 40, 40)}


def write_colour_folder(
    root: Path, n_per_class: int = 12, size=(40, 50), seed: int = 0, fmt: str = "png", jitter: float = 0.0
) -> Path:
    """Three classes (blue, green, red) of noisy colour patches; RGB colour = class.

    ``jitter`` shifts each image's colour at random (standard deviation per channel), so classes overlap.
    """
    import cv2

    rng = np.random.default_rng(seed)
    for name, rgb in COLOURS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            base = np.array(rgb) + rng.normal(0, jitter, 3)
            img = np.clip(base + rng.normal(0, 50, size + (3,)), 0, 255).astype(np.uint8)
            cv2.imwrite(str(root / name / f"{name}_{i:03d}.{fmt}"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return root


def colour_model(*, softmax: bool = True, rescaling: bool = True, input_size=(16, 16), seed: int = 0):
    """A hand-set classifier of the colour folders: mean colour -> class, exact by construction.

    Input raw [0, 255] pixels when ``rescaling`` (the model divides by 255 itself), else [0, 1].
    """
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input(input_size + (3,))
    x = keras.layers.Rescaling(1 / 255.0)(inp) if rescaling else inp
    x = keras.layers.GlobalAveragePooling2D()(x)
    hidden = keras.layers.Dense(3, activation="relu", name="features")(x)
    out = keras.layers.Dense(3, activation="softmax" if softmax else None, name="head")(hidden)
    model = keras.Model(inp, out)
    # features = relu(mean RGB) in order blue, green, red (class order of sorted folder names)
    model.get_layer("features").set_weights(
        [np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], np.float32), np.zeros(3, np.float32)]
    )
    model.get_layer("head").set_weights([np.eye(3, dtype=np.float32) * 12.0, np.zeros(3, np.float32)])
    return model


@pytest.fixture(scope="session")
def colour_data(tmp_path_factory) -> Path:
    return write_colour_folder(tmp_path_factory.mktemp("colours") / "data")


@pytest.fixture(scope="session")
def colour_model_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "colour.keras"
    colour_model().save(path)
    return path


def train_folder_loader_cnn(root: Path):
    """A small CNN with its own Rescaling layer, trained 3 epochs through Keras's folder loader on colour
    patches of mixed sizes (deliberately short: it makes mistakes). Returns (model, path of the saved model)."""
    import keras

    data = write_colour_folder(root / "train", n_per_class=20, size=(45, 37), seed=1, jitter=70)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((24, 24, 3)),
            keras.layers.Rescaling(1 / 255.0),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    train_ds = keras.utils.image_dataset_from_directory(data, image_size=(24, 24), batch_size=16, seed=0, verbose=False)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    model.fit(train_ds, epochs=3, verbose=0)
    path = root / "trained.keras"
    model.save(path)
    return model, path


def run_cli(*args, cwd=None, timeout=600, env=None) -> subprocess.CompletedProcess:
    """Run the installed console script (falls back to ``python -m auditor.cli``)."""
    exe = shutil.which("wbc-audit", path=str(Path(sys.executable).parent))
    cmd = [exe] if exe else [sys.executable, "-m", "auditor.cli"]
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run(  # callers check the return code themselves
        cmd + [str(a) for a in args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        check=False,
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]
