"""The model comparison of a run that audits several models: options, the measures table, the pairwise tests
and the recommendation (numbers from :mod:`auditor.analyses.comparison`), and the comparison report object.

Nothing here spends model time beyond one speed measurement per model: the predictions are the clean passes
the individual audits made (on the same images), the measures the sections' results.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from . import SCHEMA_VERSION, __version__
from .analyses.comparison import (
    MEASURES,
    ComparisonResult,
    Constraint,
    ModelRow,
    compare_pairs,
    pareto_front,
    recommend,
)
from .errors import input_error

#: The documented default weights of the recommendation (README "Comparing models").
DEFAULT_WEIGHTS: tuple[tuple[str, str], ...] = (
    ("balanced_accuracy", "0.3"),
    ("f1_macro", "0.2"),
    ("weakest_recall", "0.2"),
    ("robust_accuracy", "0.15"),
    ("ece", "0.1"),
    ("latency_ms", "0.05"),
)


@dataclass(frozen=True)
class ComparisonOptions:
    """The ``[comparison]`` table of the config file (``comparison={...}`` in the Python API).

    ``weights``: measure name = weight (non-negative; replaces the default table as a whole).
    ``constraints``: ``min_<measure>`` or ``max_<measure>`` = bound, e.g. ``min_weakest_recall = 0.8``,
    ``max_latency_ms = 50``. ``pareto_x``/``pareto_y``: the measures of the Pareto figure. ``speed_runs``:
    timed batch-1 forward passes per model (0: no speed measurement). ``gallery``: disagreements shown per
    pair."""

    weights: tuple[tuple[str, str], ...] = field(default=DEFAULT_WEIGHTS, metadata={"table": True})
    constraints: tuple[tuple[str, str], ...] = field(default=(), metadata={"table": True})
    pareto_x: str = "accuracy"
    pareto_y: str = "robust_accuracy"
    speed_runs: int = 20
    gallery: int = 4

    def validate(self, where: Callable[[str], str]) -> None:
        known = ", ".join(MEASURES)
        for name, value in self.weights:
            if name not in MEASURES:
                raise input_error(where(f"weights.{name}"), f"unknown measure {name!r}", expected="one of " + known)
            w = _number(value, where(f"weights.{name}"))
            if w < 0:
                raise input_error(where(f"weights.{name}"), f"{value} is negative", expected="a weight >= 0")
        for key, value in self.constraints:
            bound, _, name = key.partition("_")
            if bound not in ("min", "max") or name not in MEASURES:
                raise input_error(
                    where(f"constraints.{key}"),
                    f"unknown constraint {key!r}",
                    expected="min_<measure> or max_<measure> with a measure among " + known,
                )
            _number(value, where(f"constraints.{key}"))
        for key in ("pareto_x", "pareto_y"):
            if getattr(self, key) not in MEASURES:
                raise input_error(where(key), f"unknown measure {getattr(self, key)!r}", expected="one of " + known)
        if self.speed_runs < 0:
            raise input_error(where("speed_runs"), f"{self.speed_runs} is negative")
        if self.gallery < 0:
            raise input_error(where("gallery"), f"{self.gallery} is negative")

    def weight_map(self) -> dict[str, float]:
        return {name: float(value) for name, value in self.weights}

    def constraint_list(self) -> list[Constraint]:
        out = []
        for key, value in self.constraints:
            bound, _, name = key.partition("_")
            out.append(Constraint(name, bound, float(value)))
        return out


def _number(value: Any, where: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise input_error(where, f"is {value!r}", expected="a number") from None
    if not np.isfinite(v):
        raise input_error(where, f"is {value!r}", expected="a finite number")
    return v


def comparison_options(raw: Any, where: Callable[[str], str]) -> ComparisonOptions:
    """``[comparison]`` as given (a table, options, or None) -> validated :class:`ComparisonOptions`."""
    from .config import _describe, options_from_mapping

    if raw is None:
        opts = ComparisonOptions()
    elif isinstance(raw, ComparisonOptions):
        opts = raw
    elif isinstance(raw, Mapping):
        opts = options_from_mapping(ComparisonOptions, raw, where, "[comparison]")
    else:
        raise input_error("[comparison]", f"is {_describe(raw)}", expected="a table of comparison options")
    opts.validate(where)
    # numbers in one spelling ("1" and 1.0 alike read "1.0"), so a printed configuration reads back the same
    return dataclasses.replace(
        opts,
        weights=tuple((k, repr(float(v))) for k, v in opts.weights),
        constraints=tuple((k, repr(float(v))) for k, v in opts.constraints),
    )


# ----------------------------------------------------------------------------------- names and classes


def model_names(paths: Sequence[Path]) -> list[str]:
    """How models are named in the comparison: the file name, or the path when two share a file name."""
    names = [Path(p).name for p in paths]
    return [str(p) for p in paths] if len(set(names)) < len(names) else names


def shared_classes(prepared: Sequence[Any]) -> tuple[tuple[str, ...], str | None]:
    """The classes every model has (in the first model's order) and a note when they differ; an input error
    when none is shared (raised before any model time)."""
    sets = [tuple(pm.mapping.model_classes) for pm in prepared]
    shared = tuple(c for c in sets[0] if all(c in s for s in sets[1:]))
    names = model_names([pm.path for pm in prepared])
    if not shared:
        raise input_error(
            "MODEL",
            "the models share no class name, so they cannot be compared: "
            + "; ".join(f"{n}: {', '.join(s)}" for n, s in zip(names, sets)),
            expected="models trained on the same classes (or class names given in their sidecars)",
        )
    if all(s == sets[0] for s in sets):
        return shared, None
    extra = [
        f"{n} also has {', '.join(c for c in s if c not in shared)}"
        for n, s in zip(names, sets)
        if set(s) - set(shared)
    ]
    note = (
        f"The models' classes differ; they are compared on the {len(shared)} shared classes "
        f"({', '.join(shared)}): only images of those classes count, and a prediction of another class is wrong. "
        + "; ".join(extra)
        + "."
    )
    return shared, note


# ----------------------------------------------------------------------------------- measures


def _size_mb(path: Path) -> float:
    p = Path(path)
    total = p.stat().st_size if p.is_file() else sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return total / 1e6


def measures_of(report: Any, config: Any, speed: Mapping[str, Any] | None) -> tuple[dict, dict, dict]:
    """(values, intervals, why missing) of one model's report, by measure name."""
    res = report.results
    failed = {f.analysis.split(" ")[0] for f in report.failures}
    values: dict[str, float | None] = {}
    intervals: dict[str, tuple[float, float]] = {}
    missing: dict[str, str] = {}

    def absent(section: str) -> str:
        if section in failed:
            return f"the {section.replace('_', ' ')} section failed"
        if not config.is_enabled(section, section != "gradcam"):
            return f"the {section.replace('_', ' ')} section did not run (not enabled)"
        return f"the {section.replace('_', ' ')} section gave no result"

    cls = res.get("classification")
    if cls is not None:
        m = cls.metrics
        values.update(accuracy=m.accuracy, f1_macro=m.f1_macro, balanced_accuracy=m.balanced_accuracy)
        intervals.update(
            accuracy=tuple(m.accuracy_ci),
            f1_macro=tuple(m.f1_macro_ci),
            balanced_accuracy=tuple(m.balanced_accuracy_ci),
        )
        rows = [r for r in m.per_class if r.support > 0]
        values["weakest_recall"] = min(r.recall for r in rows) if rows else None
    cal = res.get("calibration")
    if cal is not None:
        values["ece"] = cal.ece
    sel = res.get("selective_prediction")
    if sel is not None:
        values["aurc"] = sel.aurc
    grid = res.get("perturbation_grid")
    if grid is not None:
        g = grid.grid
        values["robust_accuracy"] = g.robust_accuracy
        values["worst_cell_accuracy"] = g.cell(*g.worst).accuracy
        n = np.array([c.n_images for c in g.cells], dtype=np.float64)
        values["flip_rate"] = float(np.sum(n * [c.flip_rate for c in g.cells]) / n.sum()) if n.sum() else None
        if g.versus_reference is not None and g.versus_reference.mce is not None:
            values["mce"] = g.versus_reference.mce
        else:
            missing["mce"] = "no mCE: the reference model's grid is missing or makes no error"
    fisher = res.get("fisher")
    if fisher is not None:
        values["fisher_tail_share"] = fisher.fisher.tail_mass
    cam = res.get("gradcam")
    if cam is not None:
        if cam.applicable and cam.focus is not None and cam.focus.overall.median is not None:
            values["cell_focus"] = cam.focus.overall.median
        else:
            missing["cell_focus"] = f"Grad-CAM did not apply ({cam.reason or 'no cell was segmented'})"
    sites = res.get("external_sites")
    if sites is not None:
        ext = [r for r in sites.sites.rows if not r.internal]
        if ext:
            values["external_accuracy"] = min(r.metrics.accuracy for r in ext)
        else:
            missing["external_accuracy"] = "no external site given"
    elif "external_sites" not in failed:
        missing["external_accuracy"] = "no external site given (--external)"
    values["params"] = float(report.model["param_count"])
    values["size_mb"] = _size_mb(Path(report.model["path"]))
    if speed:
        values["latency_ms"] = speed["latency_ms"]
        values["throughput"] = speed["throughput"]
    for name, meas in MEASURES.items():
        if values.get(name) is None and name not in missing:
            if meas.source == "speed":
                missing[name] = "speed not measured ([comparison] speed_runs = 0)"
            else:
                missing[name] = absent(meas.source)
        if values.get(name) is not None and isinstance(values[name], float) and np.isnan(values[name]):  # type: ignore[arg-type]
            values[name] = None
            missing[name] = "not defined on these images"
    return values, intervals, missing


# ----------------------------------------------------------------------------------- the report object


@dataclass(frozen=True)
class ComparisonReport:
    """The comparison of the models of one run (written beside their reports)."""

    schema_version: int
    report_id: str
    tool_version: str
    created_utc: str
    dataset: dict
    config: dict
    speed: tuple[tuple[str, dict], ...]  # model -> what measure_speed returned
    result: ComparisonResult

    def to_dict(self) -> dict:
        return {
            "schema_version": self.schema_version,
            "kind": "comparison",
            "report_id": self.report_id,
            "tool_version": self.tool_version,
            "created_utc": self.created_utc,
            "dataset": self.dataset,
            "config": self.config,
            "speed": {k: v for k, v in self.speed},
            "comparison": self.result.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ComparisonReport:
        return cls(
            schema_version=int(d["schema_version"]),
            report_id=d["report_id"],
            tool_version=d["tool_version"],
            created_utc=d["created_utc"],
            dataset=dict(d["dataset"]),
            config=dict(d["config"]),
            speed=tuple(d["speed"].items()),
            result=ComparisonResult.from_dict(d["comparison"]),
        )

    def save(self, folder: str | Path, formats: Sequence[str] = ("html", "pdf", "json")) -> Path:
        """Write the comparison's files into ``folder`` (created); return it."""
        from .report.comparison import write_comparison_outputs

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_comparison_outputs(self, folder, formats)
        return folder


class AuditRun(list):
    """The reports of a run with several models (a list, as before) and their ``comparison``
    (:class:`ComparisonReport`, or None with one model) and ``comparison_dir`` (where it was written)."""

    comparison: ComparisonReport | None = None
    comparison_dir: Path | None = None


def build_comparison(
    config: Any,
    reports: Sequence[Any],
    prepared: Sequence[Any],
    passes: Sequence[Any],
    index: Any,
    *,
    progress: Any = None,
) -> ComparisonReport:
    """The comparison of several audited models on the images they all saw."""
    opts: ComparisonOptions = config.comparison
    names = model_names([pm.path for pm in prepared])
    shared, classes_note = shared_classes(prepared)
    notes: list[str] = []
    # the images every model saw, with a label among the shared classes (by class name)
    common = set(int(i) for i in passes[0].sample_idx)
    for cp in passes[1:]:
        common &= set(int(i) for i in cp.sample_idx)
    order = sorted(common)
    y_by_model, preds, confs = [], [], []
    other = len(shared)  # a predicted class outside the shared ones
    for pm, cp in zip(prepared, passes):
        row_of = {int(s): r for r, s in enumerate(cp.sample_idx)}
        rows = np.array([row_of[s] for s in order], dtype=np.int64)
        classes = pm.mapping.model_classes
        to_shared = np.array([shared.index(c) if c in shared else -1 for c in classes], dtype=np.int64)
        y = to_shared[cp.y_true[rows]] if len(rows) else np.zeros(0, dtype=np.int64)
        p = cp.probs[rows]
        pred = to_shared[p.argmax(axis=1)] if len(rows) else np.zeros(0, dtype=np.int64)
        y_by_model.append(y)
        preds.append(np.where(pred < 0, other, pred))
        confs.append(p.max(axis=1) if len(rows) else np.zeros(0))
    keep = np.all([y >= 0 for y in y_by_model], axis=0) if order else np.zeros(0, dtype=bool)
    if order and not all(np.array_equal(y_by_model[0][keep], y[keep]) for y in y_by_model[1:]):
        notes.append("The models map the data's labels to class names differently; the first model's labels are used.")
    y = y_by_model[0][keep]
    preds = [p[keep] for p in preds]
    confs = [c[keep] for c in confs]
    paths = [index.samples[s].rel for s, k in zip(order, keep) if k]
    n_dropped = len(order) - int(keep.sum())
    if n_dropped:
        notes.append(f"{n_dropped} images of classes not every model has are left out of the pairwise tests.")
    class_list = list(shared) + (["(a class not shared)"] if classes_note else [])
    pairs = compare_pairs(
        names,
        y,
        preds,
        confs,
        class_list,
        paths,
        n_bootstrap=config.n_bootstrap,
        seed=config.seed,
        n_gallery=opts.gallery,
    )
    speed: dict[str, dict] = {}
    if opts.speed_runs > 0:
        for name, pm in zip(names, prepared):
            if progress is not None:
                progress.info(f"measuring speed of {name} (batch 1 and batch {config.batch_size})")
            speed[name] = pm.adapter.measure_speed(config.batch_size, runs=opts.speed_runs, seed=config.seed)
    rows = []
    for name, report in zip(names, reports):
        values, intervals, missing = measures_of(report, config, speed.get(name))
        out_dir = getattr(report.artifacts, "out_dir", None)
        rows.append(
            ModelRow(
                name=name,
                path=str(report.model["path"]),
                report_dir=str(out_dir) if out_dir else None,
                values=tuple((m, values.get(m)) for m in MEASURES),
                intervals=tuple(intervals.items()),
                missing=tuple((m, missing[m]) for m in MEASURES if m in missing),
            )
        )
    px, py = opts.pareto_x, opts.pareto_y
    front = pareto_front(
        [r.value(px) for r in rows],
        [r.value(py) for r in rows],
        x_higher=MEASURES[px].higher_is_better,
        y_higher=MEASURES[py].higher_is_better,
    )
    rec = recommend(
        names,
        {r.name: dict(r.values) for r in rows},
        opts.weight_map(),
        opts.constraint_list(),
        pairs,
    )
    reference = names[config.reference_index()]
    if speed:
        notes.append(
            f"Latency: median of {opts.speed_runs} forward passes of one image after 3 warm-up passes; throughput: "
            f"batches of {config.batch_size} (the audit's batch size); on this machine ({os.cpu_count()} CPU cores "
            "visible), random inputs of each model's input size, decoding and resizing not included."
        )
    created = datetime.now(UTC)
    digest = "-".join(Path(r.model["path"]).stem[:12] for r in reports)[:40]
    result = ComparisonResult(
        models=tuple(rows),
        reference=reference,
        shared_classes=shared,
        classes_note=classes_note,
        n_images=len(y),
        pairs=pairs,
        pareto_x=px,
        pareto_y=py,
        pareto_front=tuple(names[i] for i in front),
        recommendation=rec,
        notes=tuple(notes),
        n_bootstrap=config.n_bootstrap,
        seed=config.seed,
    )
    return ComparisonReport(
        schema_version=SCHEMA_VERSION,
        report_id=f"{created.strftime('%Y%m%dT%H%M%SZ')}-{len(reports)}models-{_safe(digest)}",
        tool_version=__version__,
        created_utc=created.isoformat(timespec="seconds").replace("+00:00", "Z"),
        dataset={"path": str(config.data_path), "root": str(index.root), "n_images": len(y)},
        config=config.to_dict(),
        speed=tuple(speed.items()),
        result=result,
    )


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text)


def with_dirs(comparison: ComparisonReport, reports: Sequence[Any]) -> ComparisonReport:
    """The comparison with each model's report folder filled in (once the reports are written)."""
    rows = tuple(
        dataclasses.replace(row, report_dir=str(r.artifacts.out_dir) if r.artifacts.out_dir else None)
        for row, r in zip(comparison.result.models, reports)
    )
    return dataclasses.replace(comparison, result=dataclasses.replace(comparison.result, models=rows))
