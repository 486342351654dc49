"""``wbc-zoo``: list the zoo's architectures, train one on an image folder.

Exit codes as ``wbc-audit``'s: 0 done; 1 training failed; 2 bad usage or input (an unknown
architecture, a folder with one class, an input size the architecture cannot take, validation classes
that differ from training's), reported as one ``error: ...`` line on stderr before any training starts.
stdout carries only the path of the written model (``train``) or the table (``list``).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import click

from auditor.errors import EXIT_AUDIT_FAILED, EXIT_BAD_INPUT, EXIT_OK, AuditError

from . import registry

EPILOG = """\b
Examples:
  wbc-zoo list
  wbc-zoo train small_cnn sample_data/wbc5/train --out models/small.keras --seed 1
  wbc-zoo train vgg16_head data/train --val-dir data/val --input-size 64 --out models/vgg.keras

\b
Exit codes: 0 done, 1 training failed, 2 bad usage or input.
Errors are one line on stderr starting with "error:".
"""


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


class _Group(click.Group):
    """Usage errors (unknown command, missing argument) as one ``error:`` line, exit 2."""

    def main(self, *args, standalone_mode=True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            return super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.Abort:
            _fail("interrupted", 130)
        except click.ClickException as exc:
            _fail(" ".join(exc.format_message().split()), EXIT_BAD_INPUT)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)


@click.group(
    cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}, epilog=EPILOG
)
def main():
    """The published white-blood-cell classifier architectures: list them, or train one on a
    class-per-folder image set into a model that wbc-audit can audit without options."""


@main.command("list")
@click.option("--no-params", is_flag=True, help="Do not build the models to count their parameters (faster).")
def list_cmd(no_params):
    """The architectures, with parameter counts at their default input size (5 classes; bloodmnist_cnn 8)."""
    if not no_params:
        _quiet_tensorflow_import()
    rows = [("name", "parameters", "default size", "min size", "preprocess", "source")]
    for arch in registry.ARCHITECTURES.values():
        params = "-"
        if not no_params:
            model = arch.build(arch.default_size, arch.default_classes)
            params = f"{model.count_params():,}"
            del model
        rows.append(
            (
                arch.name,
                params,
                "x".join(map(str, arch.default_size)),
                "x".join(map(str, arch.min_size)),
                arch.preprocess,
                arch.source,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(c.rjust(w) if i == 1 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip())


@main.command("train", epilog=EPILOG)
@click.argument("arch", metavar="ARCH")
@click.argument("train_dir", metavar="TRAIN_DIR", type=click.Path(path_type=Path))
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    metavar="MODEL.keras",
    help="Where to write the model; its sidecar MODEL.json, MODEL.history.csv and MODEL.curves.png go next to it.",
)
@click.option(
    "--val-dir",
    type=click.Path(path_type=Path),
    default=None,
    metavar="DIR",
    help="Validation folder with the same class folders (for early stopping).",
)
@click.option(
    "--val-split",
    type=float,
    default=None,
    metavar="F",
    help="Fraction of TRAIN_DIR held out (seeded) for validation when there is no --val-dir [0.2].",
)
@click.option("--epochs", default=100, show_default=True, type=int, help="Most epochs (early stopping may end sooner).")
@click.option(
    "--patience",
    default=20,
    show_default=True,
    type=int,
    help="Epochs without a lower validation loss before stopping.",
)
@click.option(
    "--input-size",
    default=None,
    metavar="H[xW]",
    help="Input size in pixels [default: the architecture's, see wbc-zoo list].",
)
@click.option(
    "--class-weights/--no-class-weights",
    default=True,
    show_default=True,
    help="Weigh classes inversely to their training counts.",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the split, augmentation and weights.")
@click.option("--batch-size", default=32, show_default=True, type=int, help="Images per training step.")
@click.option("--learning-rate", default=1e-3, show_default=True, type=float, help="Adam's initial learning rate.")
@click.option(
    "--weights",
    default=None,
    metavar="imagenet|FILE",
    help="Initial weights: 'imagenet' for the ImageNet bases (downloads; the base is then frozen), "
    "or a weights file. Default: random, nothing is downloaded.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress display; errors still go to stderr.")
def train_cmd(
    arch,
    train_dir,
    out,
    val_dir,
    val_split,
    epochs,
    patience,
    input_size,
    class_weights,
    seed,
    batch_size,
    learning_rate,
    weights,
    quiet,
):
    """Train ARCH on TRAIN_DIR (one sub-folder per class) and write MODEL.keras with its sidecar,
    training history and curves. Prints the model path on stdout."""
    from .train import TrainConfig, parse_input_size, plan, train

    signal.signal(signal.SIGTERM, _terminate)
    try:
        size = parse_input_size(input_size) if input_size is not None else None
        config = TrainConfig(
            arch=arch,
            train_dir=train_dir,
            out=out,
            val_dir=val_dir,
            val_split=val_split,
            epochs=epochs,
            input_size=size,
            class_weights=class_weights,
            seed=seed,
            batch_size=batch_size,
            patience=patience,
            learning_rate=learning_rate,
            weights=weights,
            verbose=not quiet,
        )
        the_plan = plan(config)
        _quiet_tensorflow_import()
        train(the_plan)
    except AuditError as exc:
        _fail(exc.message, exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted; no model was written", 130)
    except Exception as exc:
        _fail(f"training failed: {type(exc).__name__}: {' '.join(str(exc).split())[:500]}", EXIT_AUDIT_FAILED)
    click.echo(str(out))
    sys.exit(EXIT_OK)


def _quiet_tensorflow_import() -> None:
    """Import TensorFlow with its C++ start-up notices hidden (they are not errors)."""
    from auditor._native import native_stderr_silenced

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with native_stderr_silenced():
        import keras  # noqa: F401
        import tensorflow  # noqa: F401


def _terminate(signum, frame):  # pragma: no cover
    raise KeyboardInterrupt


if __name__ == "__main__":  # pragma: no cover
    main()
