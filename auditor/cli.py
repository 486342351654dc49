"""``wbc-audit``: parse options, build the config, run, map the outcome to an exit code.

Exit codes: 0 done; 1 the audit itself failed (or, with ``--strict``, an analysis failed);
2 bad usage or input (a missing or unreadable model, data folder, or option value); 3 the reports were
written and a release gate failed.

``wbc-audit history OUT_ROOT ...`` (a first argument ``history``) lists past audits from the index instead
(:mod:`auditor.query`); a model path literally named ``history`` is given as ``./history``.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import click

from . import __version__
from .analyses import gradcam as cam_analysis
from .analyses import influence as influence_analysis
from .config import (
    FLAGS,
    FORMAT_CHOICES,
    PREPROCESS_CHOICES,
    AuditConfig,
    _flag_of,
    build_config,
    load_config_file,
    parse_csv_option,
    to_toml,
)
from .config import (
    SECTION_FLAGS as CONFIG_SECTION_FLAGS,
)
from .errors import EXIT_AUDIT_FAILED, EXIT_BAD_INPUT, EXIT_GATES_FAILED, EXIT_OK, AuditError, input_error
from .perturb import NAMES

EPILOG = """\b
Examples:
  wbc-audit model.keras data/test/
  wbc-audit model.keras labels.csv --out reports/ --format html,json
  wbc-audit model.h5 data/test/ --preprocess unit --resize area --class-names bas,eos,lym,mon,neu
  wbc-audit model.keras data/test/ --quiet --strict     # for cron/CI
  wbc-audit model.keras data/test/ --external lab2=data/lab2 --external bccd=data/bccd
  wbc-audit --config nightly.toml                        # options from a TOML file
  wbc-audit model.keras data/test/ --print-config > nightly.toml
  wbc-audit --config nightly.toml --baseline latest --junit gates.xml --quiet
  wbc-audit history audits/ --model model.keras --since 2026-01-01 --json

\b
Exit codes: 0 done, 1 the audit failed (or an analysis failed with --strict),
2 bad usage or input, 3 reports written but a release gate failed. Errors are one line on stderr starting with "error:".
"""


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


class _AuditCommand(click.Command):
    """The audit command; a first argument ``history`` runs ``wbc-audit history`` (auditor.query) instead, so
    ``wbc-audit MODEL DATA`` keeps its positional form."""

    def main(self, args=None, *a, **kw):  # type: ignore[override]
        argv = list(sys.argv[1:] if args is None else args)
        if argv and argv[0] == "history":
            from .query import history

            kw["prog_name"] = "wbc-audit history"
            return history.main(argv[1:], *a, **kw)
        return super().main(argv, *a, **kw)


@click.command(
    cls=_AuditCommand,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EPILOG,
)
@click.argument("paths", nargs=-1, required=False, metavar="MODEL... DATA")
@click.option(
    "--config",
    "config_file",
    default=None,
    metavar="FILE",
    help="A TOML configuration file (general options, [sections.NAME] tables); flags override it.",
)
@click.option(
    "--print-config", is_flag=True, help="Print the effective configuration as TOML (reusable with --config) and exit."
)
@click.option(
    "--out",
    default="audits",
    show_default=True,
    metavar="DIR",
    help="Folder for the versioned report folders.",
)
@click.option(
    "--format",
    default=",".join(FORMAT_CHOICES),
    show_default=True,
    metavar="LIST",
    help="Comma-separated outputs among html,pdf,json (predictions.csv and figures are always written).",
)
@click.option("--batch-size", default=32, show_default=True, type=int, help="Images per forward pass.")
@click.option(
    "--seed", default=0, show_default=True, type=int, help="Seed of every random choice (bootstrap, subsamples)."
)
@click.option(
    "--preprocess",
    default="auto",
    show_default=True,
    type=click.Choice(PREPROCESS_CHOICES),
    help="Pixel scaling: unit=[0,1], raw=[0,255], symmetric=[-1,1], caffe=BGR minus ImageNet means, "
    "torch=[0,1] then ImageNet mean/std; auto = sidecar, else the scaling of a recognised "
    "keras.applications base, else raw if the model has its own Rescaling layer, else unit.",
)
@click.option(
    "--resize",
    default=None,
    metavar="NAME",
    help="Resize method to the model's input size, named after the training loader: bilinear|area|nearest|"
    "bicubic|lanczos (tf.image.resize, as Keras's folder loader), pil:NAME (keras load_img / "
    "flow_from_directory), cv2:NAME (cv2.resize), tf:NAME-aa (antialiased) [default: sidecar, else "
    "bilinear as Keras's folder loader]. See README, 'Resizing'.",
)
@click.option(
    "--crop",
    default=None,
    metavar="CROP",
    help="Crop before resizing: none | center-square (Keras crop_to_aspect_ratio) | center:FRACTION "
    "[default: sidecar, else none].",
)
@click.option(
    "--channels",
    default=None,
    metavar="ORDER",
    help="Channel order the model was trained on: rgb | bgr (cv2.imread without conversion); applied "
    "before --preprocess [default: sidecar, else rgb].",
)
@click.option(
    "--class-names",
    default=None,
    metavar="A,B,C",
    help="The model's class names in output order (when the model has no sidecar).",
)
@click.option(
    "--unsafe-deserialization",
    is_flag=True,
    help="Load models that contain Python code (Lambda layers). Only for models you trust.",
)
@click.option(
    "--bootstrap",
    default=1000,
    show_default=True,
    type=int,
    help="Bootstrap resamples for confidence intervals (0 turns them off).",
)
@click.option(
    "--gallery-size",
    default=12,
    show_default=True,
    type=int,
    help="Images in each gallery (most confident mistakes, highest Fisher scores).",
)
@click.option(
    "--preprocess-check-samples",
    default=250,
    show_default=True,
    type=int,
    help="Images in the preprocessing check's subsample (0 skips the check).",
)
@click.option(
    "--check-space",
    "check_space",
    default="plain",
    show_default=True,
    type=click.Choice(("plain", "families")),
    help="What the preprocessing check explores: plain = the tf.image.resize names x channel orders x scalings "
    "(50 settings); families = every loader family's methods and the crops too (up to 440 settings, about 15x "
    "the cost).",
)
@click.option(
    "--external",
    "external",
    multiple=True,
    metavar="NAME=DIR",
    help="Also audit the model on an external site's labelled folder (repeatable); classes are matched by name.",
)
@click.option(
    "--sites-full", is_flag=True, help="Run Fisher, calibration and selective prediction on every external site too."
)
@click.option(
    "--train",
    default="",
    metavar="DIR",
    help="The training images (class folders or a path,label CSV, same classes as DATA): enables the influence "
    "section (helpful and harmful training images, labels to re-check, train/test leakage).",
)
@click.option(
    "--influence-method",
    default=influence_analysis.DEFAULT_METHOD,
    show_default=True,
    type=click.Choice(influence_analysis.METHODS),
    help="Influence score on the last dense layer: if-last (influence function), tracin-last (gradient dot "
    "product) or seed (the reference study's logit-gradient score).",
)
@click.option(
    "--cam-layer",
    default="",
    help="Grad-CAM target layer, a path into nested models such as mobilenetv2/out_relu "
    "(default: the last layer with a spatial output before the pooling or flatten).",
)
@click.option(
    "--cam-method",
    default=cam_analysis.METHODS[0],
    show_default=True,
    type=click.Choice(cam_analysis.METHODS),
    help="Grad-CAM variant for the explanation panels.",
)
@click.option(
    "--fisher-threshold",
    default=0.5,
    show_default=True,
    type=float,
    help="Fisher-score tail threshold: images with F = ||p - y||^2 above it form the fragile tail.",
)
@click.option(
    "--target-accuracy",
    "target_accuracy",
    default="0.95,0.99",
    show_default=True,
    metavar="LIST",
    help="Accuracies for the selective-prediction operating points (confidence thresholds).",
)
@click.option(
    "--perturbations",
    "perturbations",
    default="all",
    show_default=True,
    metavar="LIST",
    help="Perturbations of the robustness grid, comma-separated (see the README): gaussian_noise, defocus_blur, "
    "motion_blur, brightness_up, brightness_down, contrast_down, jpeg, pixelate, saturation, stain_shift, "
    "rotation, stain_deposit, bubble.",
)
@click.option(
    "--perturb-severities",
    "perturb_severities",
    default="1,2,3,4,5",
    show_default=True,
    metavar="LIST",
    help="Severities of the robustness grid, among 1 to 5.",
)
@click.option(
    "--perturb-samples",
    "perturb_samples",
    default=1000,
    show_default=True,
    type=int,
    help="Images in the robustness grid's stratified subsample (all when the data hold fewer).",
)
@click.option(
    "--perturb-precision",
    "perturb_precision",
    default=0.02,
    show_default=True,
    type=float,
    help="A grid cell stops once its 95%% interval on the accuracy drop has at most this half-width.",
)
@click.option(
    "--breaking-drop",
    "breaking_drop",
    default=0.05,
    show_default=True,
    type=float,
    help="Accuracy drop that defines a perturbation's breaking point.",
)
@click.option(
    "--perturb-full-grid",
    "perturb_full_grid",
    is_flag=True,
    help="Evaluate every grid cell on the whole subsample (no early stopping).",
)
@click.option(
    "--disable",
    "disable",
    default=None,
    metavar="LIST",
    help="Sections to leave out, comma-separated (see the README for their names).",
)
@click.option("--only", "only", default=None, metavar="LIST", help="Run only these sections, comma-separated.")
@click.option(
    "--enable",
    "enable",
    default=None,
    metavar="LIST",
    help="Also run these opt-in sections (off by default, e.g. gradcam), comma-separated.",
)
@click.option(
    "--reference",
    default=None,
    metavar="MODEL",
    help="With several models: the reference of the perturbation grid's mCE (a model path, or a file name only "
    "one model has) [default: the first model].",
)
@click.option(
    "--baseline",
    default=None,
    metavar="PATH|latest|vN",
    help="Compare with an earlier audit: an audit.json (or its folder), latest (this model's latest audit in "
    "--out) or vN (its version N); the report shows every headline number's change, and gates may test it.",
)
@click.option(
    "--gate",
    "gate",
    multiple=True,
    metavar="CONDITION",
    help='A release gate such as "accuracy >= 0.95" or "accuracy drop <= 0.01" (repeatable; usually in the '
    "config file's gates list). A failed gate exits 3.",
)
@click.option("--junit", default=None, metavar="FILE", help="Write the gates' outcomes as JUnit XML (for CI).")
@click.option("--workers", default=None, type=int, help="Image decoding threads [default: up to 4].")
@click.option(
    "--strict", is_flag=True, help="Exit 1 when any analysis failed (it is recorded in the report either way)."
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or messages; errors still go to stderr.")
@click.version_option(__version__, "--version", prog_name="wbc-audit")
@click.pass_context
def main(ctx, paths, config_file, print_config, **flags):
    """Audit Keras image classifier(s) MODEL on the labelled images in DATA and write a versioned
    trustworthiness report (HTML, PDF, JSON, predictions.csv).

    DATA is a folder with one sub-folder per class, or a CSV file with path,label columns
    (paths relative to the CSV). Several MODELs are audited one after the other, each into its own folder
    (written once all are audited: the perturbation grid's mCE compares each with the reference model).
    MODEL and DATA may instead come from the --config file (keys models and data).
    """
    if len(paths) == 1 or (not paths and not config_file and not print_config):
        _fail(
            f"MODEL DATA: give at least one model and then the data folder or CSV file (got {len(paths)} path)",
            EXIT_BAD_INPUT,
        )
    signal.signal(signal.SIGTERM, _terminate)
    try:
        config = _build(ctx, paths, config_file, flags)
        if print_config:
            click.echo(to_toml(config), nl=False)
            sys.exit(EXIT_OK)
        config.require_inputs()
        from .history import write_comparison, write_report
        from .pipeline import run_audit
        from .progress import Progress
        from .release import check_before_audit

        check_before_audit(config)  # output root writable, baseline readable: before any model time
        reports = run_audit(
            config, progress=Progress(quiet=config.quiet), write=write_report, write_comparison=write_comparison
        )
    except AuditError as exc:
        _fail(exc.message, exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted; no report was written and earlier reports are untouched", 130)
    except Exception as exc:
        _fail(f"the audit failed unexpectedly: {type(exc).__name__}: {' '.join(str(exc).split())}", EXIT_AUDIT_FAILED)

    n_failures = 0
    for report in reports:
        n_failures += len(report.failures)
        out_dir = report.artifacts.out_dir
        if not config.quiet:
            head = report.summary.get("headline", {})
            acc = head.get("accuracy")
            extra = f" accuracy {acc:.1%}" if acc is not None else ""
            click.echo(
                f"report: {out_dir}{os.sep}  ({report.model['file_name']},{extra}, "
                f"{len(report.summary['warnings'])} warning(s))",
                err=True,
            )
        click.echo(str(out_dir))
    failed_gates = _gates_outcome(reports, config)
    comparison_dir = getattr(reports, "comparison_dir", None)
    if comparison_dir is not None:
        rec = reports.comparison.result.recommendation
        if not config.quiet:
            chosen = f"recommended {rec.recommended}" if rec.recommended else "no model recommended"
            click.echo(f"comparison: {comparison_dir}{os.sep}  ({chosen})", err=True)
        click.echo(str(comparison_dir))
    if config.strict and n_failures:
        _fail(f"{n_failures} analysis failure(s) recorded in the report (--strict)", EXIT_AUDIT_FAILED)
    if failed_gates:
        _fail(f"{len(failed_gates)} release gate(s) failed: " + "; ".join(failed_gates), EXIT_GATES_FAILED)
    sys.exit(EXIT_OK)


def _gates_outcome(reports, config) -> list[str]:
    """Write the JUnit file (when asked) and return a line per failed gate."""
    from .gates import junit_xml

    suites, failed = [], []
    for report in reports:
        release = report.artifacts.release or {}
        name = f"{report.model['file_name']} {release.get('label', '')}".strip()
        suites.append((name, release.get("gates", [])))
        failed += [f"{name}: {g['gate']} ({g['message']})" for g in release.get("gates", []) if g["status"] == "failed"]
    if config.junit:
        path = Path(config.junit)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(junit_xml(suites), encoding="utf-8")
        os.replace(tmp, path)
    return failed


def _param(flag: str) -> str:
    """The click parameter of a long flag (``--fisher-threshold`` -> ``fisher_threshold``)."""
    return flag.removeprefix("--").replace("-", "_")


#: flags that set a general option: click parameter -> option name (one table of truth: config.FLAGS)
GENERAL_FLAGS = {_param(flag): option for option, flag in FLAGS.items() if flag.startswith("--")}
#: flags that set a section option: click parameter -> (section, option) (one table: config.SECTION_FLAGS)
SECTION_FLAGS = {_param(flag): key for key, flag in CONFIG_SECTION_FLAGS.items()}


def _build(ctx: click.Context, paths: tuple[str, ...], config_file: str | None, flags: dict) -> AuditConfig:
    """The config file's options, overridden by every flag given on the command line."""
    options: dict = {}
    where = section_where = table_where = None
    if config_file:
        file_options, file_where, file_section_where, file_table_where = load_config_file(Path(config_file))
        options = file_options
        given = {key for key in GENERAL_FLAGS if _given(ctx, key)}
        given_sections = {SECTION_FLAGS[key] for key in SECTION_FLAGS if _given(ctx, key)}

        def where(key: str) -> str:  # a flag when the value came from one, else the file's key and line
            return FLAGS.get(key, key) if key in {GENERAL_FLAGS[k] for k in given} else file_where(key)

        def section_where(section: str, key: str) -> str:
            return _flag_of(section, key) if (section, key) in given_sections else file_section_where(section, key)

        table_where = file_table_where
    options = {
        **options,
        "sections": {name: dict(t) if isinstance(t, dict) else t for name, t in options.get("sections", {}).items()}
        if isinstance(options.get("sections", {}), dict)
        else options.get("sections"),
    }
    if paths:
        options["models"] = [str(p) for p in paths[:-1]]
        options["data"] = str(paths[-1])
    for key, name in GENERAL_FLAGS.items():
        if config_file and not _given(ctx, key):
            continue
        value = flags[key]
        if key == "format":
            value = list(parse_csv_option(value) or ())
        elif key in ("class_names", "disable", "only", "enable"):
            value = parse_csv_option(value)
            value = list(value) if value is not None else None
        if key == "gate":
            value = list(value)
        if value is None and key in (
            "workers",
            "resize",
            "crop",
            "channels",
            "class_names",
            "only",
            "reference",
            "baseline",
            "junit",
        ):
            continue
        if value is None and key in ("disable", "enable"):
            value = []
        options[name] = value
    for key, (section, name) in SECTION_FLAGS.items():
        if config_file and not _given(ctx, key):
            continue
        value = flags[key]
        if key == "target_accuracy":
            value = list(_accuracies(value))
        elif key == "perturbations":
            value = list(NAMES) if value.strip().lower() == "all" else list(parse_csv_option(value) or ())
        elif key == "perturb_severities":
            value = list(_severities(value))
        elif key == "perturb_full_grid":
            value = not value
        elif key == "external":
            value = dict(_sites(value))
            if len(value) < len(flags[key]):
                names = [n for n, _ in _sites(flags[key])]
                dup = next(n for n in names if names.count(n) > 1)
                raise input_error("--external", f"two sites are named {dup!r}", expected="a distinct name per site")
        sections = options.setdefault("sections", {})
        if not isinstance(sections, dict) or not isinstance(sections.setdefault(section, {}), dict):
            continue  # a malformed file: build_config names it
        sections[section][name] = value
    return build_config(options, where=where, section_where=section_where, table_where=table_where)


def _given(ctx: click.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source != click.core.ParameterSource.DEFAULT


def _accuracies(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in parse_csv_option(text) or ())
    except ValueError:
        raise input_error(
            "--target-accuracy", f"{text!r} is not a comma-separated list of numbers", expected="e.g. 0.95,0.99"
        ) from None
    return tuple(v / 100 if v > 1 else v for v in values)  # 95 means 95%


def _severities(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in parse_csv_option(text) or ())
    except ValueError:
        raise input_error(
            "--perturb-severities", f"{text!r} is not a comma-separated list of integers", expected="e.g. 1,3,5"
        ) from None


def _sites(values: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    out = []
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise input_error("--external", f"{value!r} is not NAME=DIR", expected="e.g. --external lisc=data/lisc")
        out.append((name.strip(), path.strip()))
    return tuple(out)


def _terminate(signum, frame):  # pragma: no cover - exercised by the kill test in a subprocess
    raise KeyboardInterrupt


if __name__ == "__main__":  # pragma: no cover
    main()
