"""wbc-audit: versioned trustworthiness reports for Keras image classifiers.

The package is importable without TensorFlow: only :mod:`auditor.model` loads it, when an audit runs.

Python API::

    import auditor
    report = auditor.audit("model.keras", "data/test", seed=1, sections={"calibration": {"bins": 10}})
    report["classification"].metrics.accuracy      # results are the sections' frozen dataclasses
    report.save("out/", formats=("html", "json"))   # or report.to_dict()
    run = auditor.audit(["a.keras", "b.keras"], "data/test", comparison={"weights": {"accuracy": 1}})
    run.comparison.result.recommendation.recommended  # a list of reports with their comparison
    run.comparison.save("out/comparison")
    again = auditor.load_report("out/audit.json")
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Version of the layout of ``audit.json``. Bump on any incompatible change.
SCHEMA_VERSION = 1

if TYPE_CHECKING:  # pragma: no cover - types only
    from .report.document import AuditReport


def audit(
    model: str | Path | Sequence[str | Path], data: str | Path, *, progress: bool = False, **options: Any
) -> AuditReport | list[AuditReport]:
    """Run an audit in this process and return the report (a list of reports for a list of models; with two or
    more, the list's ``comparison`` is the model comparison, :class:`auditor.compare.ComparisonReport`).

    ``options`` are the config file's: general options by name (``seed=1``, ``bootstrap=200``,
    ``resize="area"``, ``disabled=["fisher"]``...) and ``sections={"name": {option: value}}``. Nothing is
    written to disk; call ``report.save(folder)`` for the files. Input errors raise
    :class:`auditor.errors.InputError` with the same one-line message the command line prints.
    """
    from .config import build_config
    from .pipeline import run_audit
    from .progress import Progress

    many = isinstance(model, (list, tuple))
    models = [str(m) for m in (model if many else [model])]  # type: ignore[union-attr]
    config = build_config(
        {**options, "models": models, "data": str(data)},
        where=lambda key: key,
        section_where=lambda section, key: f"sections.{section}.{key}",
        table_where=lambda section: f"sections.{section}",
    )
    reports = run_audit(config, progress=Progress(quiet=not progress))
    return reports if many else reports[0]  # several models: reports.comparison (ComparisonReport)


def load_report(path: str | Path) -> AuditReport:
    """Read an ``audit.json`` (or a report folder holding one) back into a report object."""
    from .report.document import load_report as _load

    return _load(path)


__all__ = ["SCHEMA_VERSION", "__version__", "audit", "load_report"]
