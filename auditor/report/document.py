"""The audit report as data: what every renderer (JSON, HTML, PDF) reads and none changes.

Results are held by section name (``report.results["calibration"]`` is a frozen result dataclass); each
section decides where its result sits in ``audit.json`` and how it is read back, so this module names no
section. ``audit.json`` keys that no installed section claims (written by a newer version or by a plug-in
that is not installed here) are kept as raw data and written back unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..analyses._common import jsonable

if TYPE_CHECKING:  # pragma: no cover - types only
    from ..sections import Registry
    from ..sections.context import Table

#: top-level keys of audit.json that belong to the frame, not to a section
FRAME_KEYS = (
    "schema_version",
    "report_id",
    "tool_version",
    "created_utc",
    "model",
    "preprocessing",
    "classes",
    "dataset",
    "environment",
    "config",
    "summary",
    "results",
    "failures",
    "timings_seconds",
    "release",
)


@dataclass(frozen=True)
class Failure:
    """An analysis that raised: recorded and shown, not fatal (``--strict`` makes it exit 1)."""

    analysis: str
    error: str

    def to_dict(self) -> dict:
        return {"analysis": self.analysis, "error": self.error}


@dataclass
class Artifacts:
    """What a run produced beyond the report's data: the predictions table, extra CSVs and where the
    images live (for thumbnails). Not part of ``audit.json``; a report read back from JSON has none."""

    predictions: Table | None = None
    tables: Mapping[str, Table] = field(default_factory=dict)
    data_root: str | None = None
    out_dir: Path | None = None
    release: Mapping[str, Any] | None = None  # the release record written with the report (auditor.history)


@dataclass(frozen=True)
class AuditReport:
    schema_version: int
    report_id: str
    tool_version: str
    created_utc: str
    model: dict[str, Any]
    preprocessing: dict[str, Any]
    classes: dict[str, Any]
    dataset: dict[str, Any]
    environment: dict[str, Any]
    config: dict[str, Any]
    summary: dict[str, Any]
    results: Mapping[str, Any] = field(default_factory=dict)  # section name -> result, for sections that ran
    sections: tuple[str, ...] = ()  # every section known when the report was made, in report order
    failures: tuple[Failure, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)
    unknown: Mapping[str, Any] = field(default_factory=dict)  # audit.json keys no installed section claims
    release: Mapping[str, Any] = field(default_factory=dict)  # version, gates, baseline, trend (auditor.release)
    artifacts: Artifacts = field(default_factory=Artifacts, compare=False, repr=False)

    def __getitem__(self, name: str) -> Any:
        """``report["calibration"]``: a section's result (KeyError when it did not run)."""
        return self.results[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.results.get(name, default)

    def to_dict(self, sections: Registry | None = None) -> dict:
        """``audit.json`` as a dict of JSON primitives."""
        reg = _registry(sections)
        results: dict[str, Any] = {}
        top: dict[str, Any] = {}
        for section in reg.sections:
            for key, value in section.to_json(self.results.get(section.name)).items():
                if key.startswith("results."):
                    results[key[len("results.") :]] = value
                else:
                    top[key] = value
        for key, value in self.unknown.items():
            if key.startswith("results."):
                results.setdefault(key[len("results.") :], value)
            else:
                top.setdefault(key, value)
        doc = {
            "schema_version": self.schema_version,
            "report_id": self.report_id,
            "tool_version": self.tool_version,
            "created_utc": self.created_utc,
            "model": self.model,
            "preprocessing": self.preprocessing,
            "classes": self.classes,
            "dataset": self.dataset,
            "environment": self.environment,
            "config": self.config,
            "summary": self.summary,
            **top,
            "results": results,
            "failures": [f.to_dict() for f in self.failures],
            "timings_seconds": self.timings,
        }
        if self.release:
            doc["release"] = self.release
        return jsonable(doc)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], sections: Registry | None = None) -> AuditReport:
        """Rebuild a report from ``audit.json``; unknown section keys are kept as raw data."""
        reg = _registry(sections)
        results: dict[str, Any] = {}
        claimed: set[str] = set()
        for section in reg.sections:
            claimed.update(section.json_keys())
            result = section.from_json(d)
            if result is not None:
                results[section.name] = result
        unknown = {f"results.{k}": v for k, v in d.get("results", {}).items() if f"results.{k}" not in claimed}
        unknown.update({k: v for k, v in d.items() if k not in FRAME_KEYS and k not in claimed})
        return cls(
            schema_version=d["schema_version"],
            report_id=d["report_id"],
            tool_version=d["tool_version"],
            created_utc=d["created_utc"],
            model=d["model"],
            preprocessing=d["preprocessing"],
            classes=d["classes"],
            dataset=d["dataset"],
            environment=d["environment"],
            config=d["config"],
            summary=d["summary"],
            results=results,
            sections=reg.names,
            failures=tuple(Failure(**f) for f in d.get("failures", [])),
            timings=d.get("timings_seconds", {}),
            unknown=unknown,
            release=d.get("release") or {},
        )

    def save(self, folder: Path | str, formats: Sequence[str] = ("html", "pdf", "json")) -> Path:
        """Write the report into ``folder`` (created if missing): the chosen formats, ``predictions.csv``
        and extra tables when the report came from a run, and ``figures/``. Returns the folder."""
        from .write import write_outputs

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_outputs(self, folder, formats)
        return folder


def _registry(sections: Registry | None) -> Registry:
    if sections is not None:
        return sections
    from ..sections import registry

    return registry()


def load_report(path: Path | str) -> AuditReport:
    """Read an ``audit.json`` (or a report folder holding one) back into an :class:`AuditReport`."""
    import json

    from ..errors import input_error

    path = Path(path)
    if path.is_dir():
        path = path / "audit.json"
    if not path.is_file():
        raise input_error(path, "no such file", expected="an audit.json or a report folder holding one")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return AuditReport.from_dict(doc)
    except (ValueError, KeyError, TypeError) as exc:
        raise input_error(path, f"is not a wbc-audit audit.json ({type(exc).__name__}: {exc})") from None
