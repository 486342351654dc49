"""The release record of a written audit: version, baseline deltas, gates, trend and model card.

Built by :func:`auditor.history.write_report` while it holds the index's write lock (so the version and the
trend are those of the index the report enters), stored in ``audit.json`` under ``release`` and rendered at
the top of the report. Pure Python apart from the trend figure (matplotlib, as every figure).
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import SCHEMA_VERSION
from .errors import input_error
from .gates import FAILED, evaluate, overall, paired_counts, parse_gates, read_correctness
from .index import TREND_METRICS, model_identity, reading

TREND_TABLE_ROWS = 12  # the report's trend table shows the last this many audits (the figure shows all)
#: words of headline numbers in the baseline table
WORDS = {
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
    "f1_macro": "Macro-F1",
    "roc_auc_macro": "Macro ROC AUC",
    "top2_accuracy": "Top-2 accuracy",
    "n_images": "Images",
    "n_classes_evaluated": "Classes evaluated",
    "ece": "ECE",
    "brier": "Brier score",
    "mean_confidence": "Mean confidence",
    "aurc": "AURC",
    "robust_accuracy": "Robust accuracy",
    "perturbation_mce": "mCE",
    "perturbation_relative_mce": "Relative mCE",
}
_VERSION = re.compile(r"^v(\d+)$", re.IGNORECASE)


# ------------------------------------------------------------------------------------------- checks


def check_before_audit(config: Any) -> None:
    """Input checks of the release options before any model time: the output root is writable, the
    baseline path is an audit.json, a ``vN`` baseline exists for every model, the JUnit file's folder exists."""
    root = Path(config.out_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=root)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise input_error(
            "--out", f"{root} is not writable ({exc.strerror or exc})", expected="a writable folder"
        ) from None
    spec = getattr(config, "baseline", None)
    if spec and spec != "latest":
        m = _VERSION.match(spec)
        if m:
            for path in config.model_paths:
                _version_folder(root, model_identity(path), int(m.group(1)), Path(path).name)
        else:
            load_baseline_doc(Path(spec))
    junit = getattr(config, "junit", None)
    if junit and not Path(junit).parent.is_dir():
        raise input_error("--junit", f"the folder of {junit} does not exist", expected="a file in an existing folder")


def _version_folder(root: Path, identity: str, version: int, name: str) -> Path:
    with reading(root) as index:
        found = [v for v in index.versions(identity) if v["version"] == version]
        have = [f"v{v['version']}" for v in index.versions(identity)]
    if not found:
        raise input_error(
            "--baseline",
            f"v{version}: {name} has no such audit in {root}",
            expected=("one of " + ", ".join(have[-10:])) if have else "an earlier audit (this model has none)",
        )
    return root / found[0]["folder"]


def load_baseline_doc(path: Path) -> tuple[dict, Path]:
    """An earlier audit.json (or a report folder holding one), migrated to the current layout; input errors
    when it is missing, not an audit.json, or of a newer schema. Returns (document, path of audit.json)."""
    path = Path(path)
    if path.is_dir():
        path = path / "audit.json"
    if not path.is_file():
        raise input_error(
            "--baseline", f"{path}: no such file", expected="an audit.json, a report folder, latest or vN"
        )
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise input_error("--baseline", f"{path} is not JSON ({exc})", expected="a wbc-audit audit.json") from None
    if not isinstance(doc, dict) or "schema_version" not in doc or not isinstance(doc.get("summary"), dict):
        raise input_error("--baseline", f"{path} is not a wbc-audit audit.json", expected="schema_version and summary")
    return migrate(doc, path), path


def migrate(doc: dict, path: Path) -> dict:
    """Bring an audit.json of an older layout to the current one; refuse a newer or unknown schema."""
    version = doc.get("schema_version")
    if not isinstance(version, int) or version < 1:
        raise input_error("--baseline", f"{path} has schema version {version!r}", expected=f"1 to {SCHEMA_VERSION}")
    if version > SCHEMA_VERSION:
        raise input_error(
            "--baseline",
            f"{path} was written by a newer wbc-audit (report schema {version}); this one reads up to "
            f"schema {SCHEMA_VERSION}",
            hint="upgrade wbc-audit to compare with it",
        )
    doc = dict(doc)
    # schema 1 before report ids and dates were recorded (early layout): fill them from the folder
    doc.setdefault("report_id", path.parent.name)
    doc.setdefault("created_utc", "")
    doc.setdefault("release", {})
    doc["summary"] = {"headline": {}, **doc["summary"]}
    return doc


# ------------------------------------------------------------------------------------------- baseline


@dataclass
class Baseline:
    """A resolved baseline: its document and folder, or only a note saying why there is none."""

    doc: dict | None
    path: Path | None
    spec: str
    note: str | None = None


def resolve_baseline(spec: str | None, root: Path, identity: str, model_name: str) -> Baseline | None:
    """The baseline ``spec`` (PATH | latest | vN) names for one model; ``latest`` with no earlier audit gives
    a Baseline without document and a note."""
    if not spec:
        return None
    if spec == "latest":
        with reading(root) as index:
            latest = index.latest(identity)
        if latest is None:
            return Baseline(None, None, spec, f"--baseline latest: {model_name} has no earlier audit in {root}")
        doc, path = load_baseline_doc(root / latest["folder"])
        return Baseline(doc, path, spec)
    m = _VERSION.match(spec)
    if m:
        doc, path = load_baseline_doc(_version_folder(root, identity, int(m.group(1)), model_name))
        return Baseline(doc, path, spec)
    doc, path = load_baseline_doc(Path(spec))
    return Baseline(doc, path, spec)


def _scalar(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


def deltas(current: Mapping[str, Any], baseline: Mapping[str, Any]) -> list[dict]:
    """Every scalar headline number of either audit: baseline, current, current minus baseline."""
    keys = [k for k in current if _scalar(current[k]) is not None]
    keys += [k for k in baseline if _scalar(baseline[k]) is not None and k not in keys]
    out = []
    for k in keys:
        now, before = _scalar(current.get(k)), _scalar(baseline.get(k))
        out.append(
            {
                "metric": k,
                "label": WORDS.get(k, k.replace("_", " ")),
                "baseline": before,
                "current": now,
                "delta": None if now is None or before is None else now - before,
                "percent": k not in ("n_images", "n_classes_evaluated", "perturbation_mce", "perturbation_relative_mce")
                and k not in ("brier", "aurc"),
            }
        )
    return out


# ------------------------------------------------------------------------------------------- the record


def build_release(
    doc: Mapping[str, Any],
    *,
    version: int,
    identity: str,
    gates_texts: Sequence[str],
    baseline: Baseline | None,
    trend_rows: Sequence[Mapping[str, Any]],
    ran: Sequence[str],
    current_correct: Mapping[str, bool] | None,
    model_card: Mapping[str, str],
) -> dict:
    """The ``release`` block of audit.json for the audit ``doc`` (its other keys already final)."""
    head = (doc.get("summary") or {}).get("headline") or {}
    fp = (doc.get("dataset") or {}).get("fingerprint")
    base_block: dict | None = None
    baseline_doc = baseline.doc if baseline else None
    paired = None
    paired_note = "the baseline's per-image predictions (predictions.csv beside its audit.json) are not available"
    if baseline is not None and baseline.doc is not None and baseline.path is not None:
        bdoc = baseline.doc
        bfp = (bdoc.get("dataset") or {}).get("fingerprint")
        before = read_correctness(baseline.path.parent / "predictions.csv")
        if before is not None and current_correct is not None:
            paired = paired_counts(current_correct, before)
            if paired is None:
                paired_note = "the baseline shares no image path with this audit"
        base_block = {
            "spec": baseline.spec,
            "path": str(baseline.path),
            "report_id": bdoc.get("report_id"),
            "version": (bdoc.get("release") or {}).get("version"),
            "model_name": (bdoc.get("model") or {}).get("file_name"),
            "created_utc": bdoc.get("created_utc"),
            "fingerprint": bfp,
            "fingerprint_differs": bfp != fp,
            "deltas": deltas(head, (bdoc.get("summary") or {}).get("headline") or {}),
            "paired_images": paired[2] if paired else None,
        }
    outcomes = evaluate(
        parse_gates(gates_texts),
        doc,
        baseline_doc,
        paired=paired,
        baseline_note=(baseline.note if baseline and baseline.note else "no baseline was given (--baseline)"),
        paired_note=paired_note,
        ran=ran,
    )
    trend = [dict(r, current=False) for r in trend_rows]
    trend.append(
        {
            "version": version,
            "report_id": doc.get("report_id"),
            "created_utc": doc.get("created_utc"),
            "folder": None,
            **{k: _scalar(head.get(k)) for k in TREND_METRICS},
            "current": True,
        }
    )
    gates = [o.to_dict() for o in outcomes]
    return {
        "version": version,
        "label": f"v{version}",
        "model_identity": identity,
        "baseline": base_block,
        "baseline_note": baseline.note if baseline else None,
        "gates": gates,
        "outcome": overall(outcomes),
        "n_gates_failed": sum(o.status == FAILED for o in outcomes),
        "trend": trend,
        "trend_metrics": [k for k in TREND_METRICS if any(r.get(k) is not None for r in trend)],
        "model_card": card(doc, model_card, gates),
    }


def card(doc: Mapping[str, Any], configured: Mapping[str, str], gates: Sequence[Mapping[str, Any]]) -> dict:
    """Model-card fields (Mitchell et al. 2019): the config's ``model_card`` table first, else the sidecar."""
    sidecar = (doc.get("model") or {}).get("sidecar") or {}
    extra = sidecar.get("extra") or {}
    out: dict[str, Any] = {}
    for key in ("intended_use", "limitations", "training_data", "ethical_considerations"):
        if configured.get(key):
            out[key], out[key + "_source"] = configured[key], "config"
        elif sidecar.get(key) or extra.get(key):
            out[key], out[key + "_source"] = sidecar.get(key) or extra.get(key), "sidecar"
        else:
            out[key], out[key + "_source"] = None, None
    head = (doc.get("summary") or {}).get("headline") or {}
    out["metrics"] = [
        {"metric": k, "label": WORDS.get(k, k), "value": _scalar(head.get(k)), "percent": k != "ece"}
        for k in ("accuracy", "balanced_accuracy", "f1_macro", "robust_accuracy", "ece")
        if _scalar(head.get(k)) is not None
    ]
    out["gates"] = list(gates)
    return out


# ------------------------------------------------------------------------------------------- figure


def trend_figure(release: Mapping[str, Any]) -> bytes | None:
    """The trend of a model's numbers over its audits on this data (None with fewer than two audits): shares
    on the left panel, ECE on the right one. Fixed layout (no tight bounding box): cheap with 1,000 audits."""
    trend = release.get("trend") or []
    metrics = release.get("trend_metrics") or []
    if len(trend) < 2 or not metrics:
        return None
    import io

    import matplotlib
    from matplotlib.figure import Figure

    from .report.figures import DPI, PALETTE, STYLE

    x = [r["version"] for r in trend]
    shares = [m for m in metrics if m != "ece"]
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(6.4, 2.2))
        if "ece" in metrics:
            ax, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2.2, 1]})
        else:
            ax, ax2 = fig.subplots(1, 1), None
        fig.subplots_adjust(left=0.09, right=0.98, bottom=0.2, top=0.86, wspace=0.3)
        for i, k in enumerate(shares):
            ax.plot(x, [r.get(k) for r in trend], "o-", ms=3, lw=1.2, color=PALETTE[i], label=WORDS.get(k, k))
        ax.set_title("Accuracy-type numbers (share)")
        ax.legend(frameon=False, loc="lower left", fontsize=7)
        if ax2 is not None:
            ax2.plot(x, [r.get("ece") for r in trend], "s-", ms=3, lw=1, color="#5f6b7a")
            ax2.set_title("ECE (lower is better)")
        for a in (ax, ax2) if ax2 is not None else (ax,):
            a.set_xlabel("audit version")
            a.axvline(trend[-1]["version"], color="#d9822b", ls=":", lw=1)
            a.grid(alpha=0.25)
            if len(x) <= 12:
                a.set_xticks(x, [f"v{v}" for v in x])
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
        return buf.getvalue()
