"""Regenerate the committed sample data set ``sample_data/wbc5`` (deterministic).

    python -m sample_data.make_wbc5            # writes sample_data/wbc5/{train,test}/<class>/*.png
    python -m sample_data.make_wbc5 --out DIR  # somewhere else

train: 60 images per class, seed 20261123, 6 deliberately mislabelled images (listed in manifest.json)
test:  20 images per class, seed 20261124 (= seed + 1, independent images), no mislabels
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

if __package__ in (None, ""):  # allow `python sample_data/make_wbc5.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sample_data.generator import CLASS_NAMES, DEFAULT_STYLE, GENERATOR_VERSION, generate_dataset, write_manifest

SEED = 20261123
SIZE = 96
N_TRAIN = 60
N_TEST = 20
N_MISLABELLED = 6


def build(out: Path, seed: int = SEED) -> dict:
    out = Path(out)
    for split in ("train", "test"):
        if (out / split).exists():
            shutil.rmtree(out / split)
    train = generate_dataset(
        out / "train", n_per_class=N_TRAIN, seed=seed, size=SIZE, style=DEFAULT_STYLE, mislabel=N_MISLABELLED
    )
    test = generate_dataset(out / "test", n_per_class=N_TEST, seed=seed + 1, size=SIZE, style=DEFAULT_STYLE)
    manifest = {
        "name": "wbc5",
        "description": "Synthetic white-blood-cell images (5 classes) drawn by sample_data/generator.py; "
        "not real patient data.",
        "generator": "sample_data.generator",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "image_size": [SIZE, SIZE],
        "format": "png",
        "style": train["style"],
        "class_names": list(CLASS_NAMES),
        "splits": {
            "train": {"seed": train["seed"], "counts": train["counts"], "n_images": train["n_images"]},
            "test": {"seed": test["seed"], "counts": test["counts"], "n_images": test["n_images"]},
        },
        "mislabelled": [dict(m, path=f"train/{m['path']}") for m in train["mislabelled"]]
        + [dict(m, path=f"test/{m['path']}") for m in test["mislabelled"]],
        "regenerate": "python -m sample_data.make_wbc5",
    }
    write_manifest(out / "manifest.json", manifest)
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "wbc5")
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args(argv)
    m = build(args.out, args.seed)
    print(
        f"wrote {m['splits']['train']['n_images']} train + {m['splits']['test']['n_images']} test images "
        f"to {args.out} ({len(m['mislabelled'])} mislabelled)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
