"""Seconds per training epoch of every architecture on 500 generated images, and parameter counts.

    python -m model_zoo.timing [--size 64] [--epochs 3] [--out /tmp/zoo-timing]

Generates 100 images per class (``sample_data.generator``, 96x96, seed 1) for training and 10 per class
for validation, trains each architecture for ``--epochs`` epochs with ``wbc-zoo train`` (augmentation,
class weights and callbacks included) at ``--size`` (bloodmnist_cnn at its native 28), and prints a
Markdown table: the first epoch (includes graph tracing) and the median of the later ones.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--arch", action="append", default=None, help="only these (repeatable)")
    args = ap.parse_args(argv)

    from sample_data.generator import generate_dataset

    from . import registry
    from .train import TrainConfig, plan, train

    root = args.out or Path(tempfile.mkdtemp(prefix="zoo-timing-"))
    if not (root / "train").is_dir():
        generate_dataset(root / "train", n_per_class=100, seed=1, size=96)
        generate_dataset(root / "val", n_per_class=10, seed=2, size=96)
    rows = []
    for name in args.arch or registry.ARCHITECTURES:
        arch = registry.get(name)
        size = 28 if name == "bloodmnist_cnn" else max(args.size, arch.min_size[0])
        cfg = TrainConfig(
            arch=name,
            train_dir=root / "train",
            val_dir=root / "val",
            out=root / "models" / f"{name}.keras",
            epochs=args.epochs,
            patience=args.epochs,
            input_size=(size, size),
            seed=0,
            verbose=False,
        )
        sidecar = train(plan(cfg)).sidecar
        t = sidecar["training"]["epoch_seconds"]
        later = statistics.median(t[1:]) if len(t) > 1 else float("nan")
        rows.append((name, size, sidecar["training"]["param_count"], t[0], later))
        print(f"{name}: {size}x{size}, {sidecar['training']['param_count']:,} parameters, epochs {t}", file=sys.stderr)
    print(
        f"\n{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), 500 training + 50 validation "
        f"images, batch 32\n"
    )
    print("| architecture | input | parameters | first epoch (s) | later epochs (s, median) |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name, size, params, first, later in rows:
        print(f"| `{name}` | {size}x{size} | {params:,} | {first:.1f} | {later:.1f} |")
    (root / "timing.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
