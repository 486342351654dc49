"""``wbc-audit``: parse options, build the config, run, map the outcome to an exit code.

Exit codes: 0 done; 1 the audit itself failed (or, with ``--strict``, an analysis failed);
2 bad usage or input (a missing or unreadable model, data folder, or option value).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import click

from . import __version__
from .config import FORMAT_CHOICES, PREPROCESS_CHOICES, AuditConfig, parse_csv_option
from .errors import EXIT_AUDIT_FAILED, EXIT_BAD_INPUT, EXIT_OK, AuditError, input_error

EPILOG = """\b
Examples:
  wbc-audit model.keras data/test/
  wbc-audit model.keras labels.csv --out reports/ --format html,json
  wbc-audit model.h5 data/test/ --preprocess unit --resize area --class-names bas,eos,lym,mon,neu
  wbc-audit model.keras data/test/ --quiet --strict     # for cron/CI
  wbc-audit model.keras data/test/ --external lab2=data/lab2 --external bccd=data/bccd

\b
Exit codes: 0 done, 1 the audit failed (or an analysis failed with --strict),
2 bad usage or input. Errors are one line on stderr starting with "error:".
"""


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
               epilog=EPILOG)
@click.argument("paths", nargs=-1, required=True, metavar="MODEL... DATA")
@click.option("--out", "out_dir", default="audits", show_default=True, metavar="DIR",
              help="Folder for the versioned report folders.")
@click.option("--format", "formats", default=",".join(FORMAT_CHOICES), show_default=True, metavar="LIST",
              help="Comma-separated outputs among html,pdf,json (predictions.csv and figures are always written).")
@click.option("--batch-size", default=32, show_default=True, type=int, help="Images per forward pass.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of every random choice (bootstrap, subsamples).")
@click.option("--preprocess", default="auto", show_default=True, type=click.Choice(PREPROCESS_CHOICES),
              help="Pixel scaling: unit=[0,1], raw=[0,255], symmetric=[-1,1], caffe=BGR minus ImageNet means; "
                   "auto = sidecar, else raw if the model has its own Rescaling layer, else unit.")
@click.option("--resize", default=None, metavar="NAME",
              help="Resize method to the model's input size, named after the training loader: bilinear|area|nearest|"
                   "bicubic|lanczos (tf.image.resize, as Keras's folder loader), pil:NAME (keras load_img / "
                   "flow_from_directory), cv2:NAME (cv2.resize), tf:NAME-aa (antialiased) [default: sidecar, else "
                   "bilinear as Keras's folder loader]. See README, 'Resizing'.")
@click.option("--crop", default=None, metavar="CROP",
              help="Crop before resizing: none | center-square (Keras crop_to_aspect_ratio) | center:FRACTION "
                   "[default: sidecar, else none].")
@click.option("--channels", default=None, metavar="ORDER",
              help="Channel order the model was trained on: rgb | bgr (cv2.imread without conversion); applied "
                   "before --preprocess [default: sidecar, else rgb].")
@click.option("--class-names", default=None, metavar="A,B,C",
              help="The model's class names in output order (when the model has no sidecar).")
@click.option("--unsafe-deserialization", is_flag=True,
              help="Load models that contain Python code (Lambda layers). Only for models you trust.")
@click.option("--bootstrap", "n_bootstrap", default=1000, show_default=True, type=int,
              help="Bootstrap resamples for confidence intervals (0 turns them off).")
@click.option("--preprocess-check-samples", default=250, show_default=True, type=int,
              help="Images in the preprocessing check's subsample (0 skips the check).")
@click.option("--external", "external", multiple=True, metavar="NAME=DIR",
              help="Also audit the model on an external site's labelled folder (repeatable); classes are matched by name.")
@click.option("--sites-full", is_flag=True,
              help="Run Fisher, calibration and selective prediction on every external site too.")
@click.option("--fisher-threshold", default=0.5, show_default=True, type=float,
              help="Fisher-score tail threshold: images with F = ||p - y||^2 above it form the fragile tail.")
@click.option("--target-accuracy", "target_accuracy", default="0.95,0.99", show_default=True, metavar="LIST",
              help="Accuracies for the selective-prediction operating points (confidence thresholds).")
@click.option("--workers", default=None, type=int, help="Image decoding threads [default: up to 4].")
@click.option("--strict", is_flag=True, help="Exit 1 when any analysis failed (it is recorded in the report either way).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or messages; errors still go to stderr.")
@click.version_option(__version__, "--version", prog_name="wbc-audit")
def main(paths, out_dir, formats, batch_size, seed, preprocess, resize, crop, channels, class_names, unsafe_deserialization,
         n_bootstrap, preprocess_check_samples, external, sites_full, fisher_threshold, target_accuracy, workers,
         strict, quiet):
    """Audit Keras image classifier(s) MODEL on the labelled images in DATA and write a versioned
    trustworthiness report (HTML, PDF, JSON, predictions.csv).

    DATA is a folder with one sub-folder per class, or a CSV file with path,label columns
    (paths relative to the CSV). Several MODELs are audited one after the other, each into its own folder.
    """
    if len(paths) < 2:
        _fail("MODEL DATA: give at least one model and then the data folder or CSV file "
              f"(got {len(paths)} path)", EXIT_BAD_INPUT)
    signal.signal(signal.SIGTERM, _terminate)

    from .history import write_report  # noqa: PLC0415 - keep --help fast
    from .pipeline import run_audit
    from .progress import Progress

    progress = Progress(quiet=quiet)
    try:
        kwargs = {} if workers is None else {"workers": workers}
        config = AuditConfig(
            model_paths=tuple(Path(p) for p in paths[:-1]), data_path=Path(paths[-1]), out_dir=Path(out_dir),
            formats=parse_csv_option(formats) or (), batch_size=batch_size, seed=seed, preprocess=preprocess,
            resize=resize, crop=crop, channels=channels, class_names=parse_csv_option(class_names), unsafe_deserialization=unsafe_deserialization,
            quiet=quiet, strict=strict, n_bootstrap=n_bootstrap,
            preprocess_check_samples=preprocess_check_samples, fisher_threshold=fisher_threshold,
            target_accuracies=_accuracies(target_accuracy), external=_sites(external), sites_full=sites_full,
            **kwargs)
        outcomes = run_audit(config, progress=progress, write=write_report)
    except AuditError as exc:
        _fail(exc.message, exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted; no report was written and earlier reports are untouched", 130)
    except Exception as exc:  # noqa: BLE001 - an unexpected crash is an audit failure, still one line
        _fail(f"the audit failed unexpectedly: {type(exc).__name__}: {' '.join(str(exc).split())}",
              EXIT_AUDIT_FAILED)

    n_failures = 0
    for outcome in outcomes:
        n_failures += len(outcome.report.failures)
        if not quiet:
            head = outcome.report.summary.get("headline", {})
            acc = head.get("accuracy")
            extra = f" accuracy {acc:.1%}" if acc is not None else ""
            click.echo(f"report: {outcome.out_dir}{os.sep}  ({outcome.report.model['file_name']},{extra}, "
                       f"{len(outcome.report.summary['warnings'])} warning(s))", err=True)
        click.echo(str(outcome.out_dir))
    if strict and n_failures:
        _fail(f"{n_failures} analysis failure(s) recorded in the report (--strict)", EXIT_AUDIT_FAILED)
    sys.exit(EXIT_OK)


def _accuracies(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in parse_csv_option(text) or ())
    except ValueError:
        raise input_error("--target-accuracy", f"{text!r} is not a comma-separated list of numbers",
                          expected="e.g. 0.95,0.99") from None
    return tuple(v / 100 if v > 1 else v for v in values)  # 95 means 95%


def _sites(values: tuple[str, ...]) -> tuple[tuple[str, Path], ...]:
    out = []
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise input_error("--external", f"{value!r} is not NAME=DIR", expected="e.g. --external lisc=data/lisc")
        out.append((name.strip(), Path(path.strip())))
    return tuple(out)


def _terminate(signum, frame):  # pragma: no cover - exercised by the kill test in a subprocess
    raise KeyboardInterrupt


if __name__ == "__main__":  # pragma: no cover
    main()
