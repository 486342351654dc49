"""Release gates: conditions on an audit's numbers that a nightly job fails on (exit code 3).

Gates come from the config file (``gates = [...]``), one condition per string::

    gates = [
      "accuracy >= 0.95",            # absolute thresholds on a headline number
      "ece <= 0.05",
      "robust_accuracy >= 0.85",
      "class_recall >= 0.80",        # every class's recall
      "accuracy drop <= 0.01",       # change against the baseline (--baseline): baseline minus this audit
      "ece rise <= 0.02",            # this audit minus the baseline
      "mcnemar_p >= 0.05",           # not significantly worse than the baseline (McNemar's exact test)
    ]

Each gate ends passed, failed, or not evaluated (its section did not run, or there is no baseline, or the
baseline's per-image predictions are missing). Pure Python: the numbers are read from audit.json documents
(``AuditReport.to_dict()``) and per-image correctness; nothing here renders.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from .analyses._common import sign_test_p
from .errors import input_error

#: metric -> (section that measures it, higher is better, words)
METRICS: dict[str, tuple[str, bool, str]] = {
    "accuracy": ("classification", True, "accuracy"),
    "balanced_accuracy": ("classification", True, "balanced accuracy"),
    "f1_macro": ("classification", True, "macro-F1"),
    "roc_auc_macro": ("classification", True, "macro ROC AUC"),
    "top2_accuracy": ("classification", True, "top-2 accuracy"),
    "class_recall": ("classification", True, "every class's recall"),
    "ece": ("calibration", False, "expected calibration error"),
    "brier": ("calibration", False, "Brier score"),
    "robust_accuracy": ("perturbation_grid", True, "robust accuracy"),
    "aurc": ("selective_prediction", False, "area under the risk-coverage curve"),
    "mcnemar_p": ("classification", True, "McNemar exact p-value (this audit worse than the baseline)"),
}
OPS = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, "<": lambda a, b: a < b}
_GATE = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][A-Za-z0-9_]*)\s*(?:\s(?P<change>drop|rise)\s)?\s*(?P<op>>=|<=|>|<)\s*"
    r"(?P<value>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(?P<pct>%)?\s*$"
)

PASSED, FAILED, NOT_EVALUATED = "passed", "failed", "not evaluated"


@dataclass(frozen=True)
class Gate:
    """One condition: ``metric [drop|rise] op threshold``."""

    text: str
    metric: str
    op: str
    threshold: float
    change: str | None = None  # None (absolute), "drop" or "rise" (against the baseline)

    @property
    def needs_baseline(self) -> bool:
        return self.change is not None or self.metric == "mcnemar_p"

    @property
    def section(self) -> str:
        return METRICS[self.metric][0]


@dataclass(frozen=True)
class GateOutcome:
    gate: str
    metric: str
    status: str  # passed | failed | not evaluated
    measured: float | None
    threshold: str  # e.g. ">= 0.95", "drop <= 0.01"
    message: str

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GateOutcome:
        return cls(**{k: d[k] for k in ("gate", "metric", "status", "measured", "threshold", "message")})


def parse_gate(text: Any, where: str) -> Gate:
    """A gate from its text; unknown metrics and malformed conditions are input errors naming ``where``."""
    if not isinstance(text, str):
        raise input_error(where, f"gate {text!r} is not a string", expected='a condition such as "accuracy >= 0.95"')
    m = _GATE.match(text)
    if not m:
        word = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)", text)
        if word and word.group(1) not in METRICS:
            raise _unknown(word.group(1), text, where)
        raise input_error(
            where,
            f"malformed gate {text!r}",
            expected='"METRIC OP NUMBER" ("accuracy >= 0.95"), "METRIC drop <= NUMBER" or "METRIC rise <= NUMBER" '
            "with OP one of >=, <=, >, <",
        )
    metric, op, change = m.group("metric"), m.group("op"), m.group("change")
    if metric not in METRICS:
        raise _unknown(metric, text, where)
    value = float(m.group("value")) / (100.0 if m.group("pct") else 1.0)
    if change and op not in ("<=", "<"):
        raise input_error(where, f"malformed gate {text!r}: a {change} is bounded from above", expected=f"{change} <=")
    if change and metric == "mcnemar_p":
        raise input_error(where, f"malformed gate {text!r}: mcnemar_p already compares with the baseline")
    if metric == "mcnemar_p" and (op not in (">=", ">") or not 0 < value < 1):
        raise input_error(where, f"malformed gate {text!r}", expected='"mcnemar_p >= ALPHA" with 0 < ALPHA < 1')
    return Gate(" ".join(text.split()), metric, op, value, change)


def _unknown(metric: str, text: str, where: str):
    return input_error(
        where, f"gate {text!r} names an unknown metric {metric!r}", expected="one of " + ", ".join(METRICS)
    )


def parse_gates(texts: Sequence[Any], where: str = "gates") -> tuple[Gate, ...]:
    return tuple(parse_gate(t, where) for t in texts)


# ------------------------------------------------------------------------------------------- measuring


def headline_value(doc: Mapping[str, Any], metric: str) -> float | None:
    """A headline number of an audit.json document (None when its section did not run or it is NaN)."""
    value = (doc.get("summary") or {}).get("headline", {}).get(metric)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


def class_recalls(doc: Mapping[str, Any]) -> dict[str, float]:
    """Recall of every evaluated class (support > 0), from ``results.classification.per_class``."""
    cls = (doc.get("results") or {}).get("classification") or {}
    out = {}
    for row in cls.get("per_class", []):
        r = row.get("recall")
        if row.get("support", 0) > 0 and isinstance(r, (int, float)) and not math.isnan(r):
            out[row["name"]] = float(r)
    return out


def mcnemar_exact(b: int, c: int) -> float:
    """One-sided exact McNemar p-value that the second classifier is worse than the first.

    ``b``: images the first (baseline) got right and the second got wrong; ``c``: the reverse. Under the null
    hypothesis of equal error rates the discordant pairs split as Binomial(b + c, 1/2); the p-value is
    P(X >= b), the one-sided exact sign test of :func:`auditor.analyses._common.sign_test_p`.
    """
    return sign_test_p(b, c)


def evaluate(
    gates: Sequence[Gate],
    current: Mapping[str, Any],
    baseline: Mapping[str, Any] | None,
    *,
    paired: tuple[int, int, int] | None = None,
    baseline_note: str = "no baseline was given (--baseline)",
    paired_note: str = "the baseline's per-image predictions are not available",
    ran: Sequence[str] = (),
) -> list[GateOutcome]:
    """Every gate's outcome. ``paired`` is (b, c, n) for McNemar: baseline-right/current-wrong,
    baseline-wrong/current-right, images paired; ``ran`` names the sections that ran in this audit."""
    out = []
    for g in gates:
        section, _higher, words = METRICS[g.metric]
        bound = f"{g.change + ' ' if g.change else ''}{g.op} {g.threshold:g}"

        def outcome(status: str, measured: float | None, message: str, g=g, bound=bound) -> GateOutcome:
            return GateOutcome(g.text, g.metric, status, measured, bound, message)

        missing = (
            f"not evaluated: the {section.replace('_', ' ')} section did not run"
            if section not in ran
            else f"not evaluated: this audit has no {words}"
        )
        if g.needs_baseline and baseline is None:
            out.append(outcome(NOT_EVALUATED, None, f"not evaluated: {baseline_note}"))
            continue
        if g.metric == "mcnemar_p":
            if paired is None:
                out.append(outcome(NOT_EVALUATED, None, f"not evaluated: {paired_note}"))
                continue
            b, c, n = paired
            p = mcnemar_exact(b, c)
            ok = OPS[g.op](p, g.threshold)
            out.append(
                outcome(
                    PASSED if ok else FAILED,
                    p,
                    f"measured p = {p:.4g} (one-sided exact McNemar on {n} paired images: {b} right before and "
                    f"wrong now, {c} wrong before and right now); threshold p {g.op} {g.threshold:g}",
                )
            )
            continue
        if g.metric == "class_recall":
            now = class_recalls(current)
            if not now:
                out.append(outcome(NOT_EVALUATED, None, missing))
                continue
            if g.change:
                before = class_recalls(baseline or {})
                common = [k for k in now if k in before]
                if not common:
                    out.append(outcome(NOT_EVALUATED, None, "not evaluated: the baseline shares no class"))
                    continue
                sign = 1.0 if g.change == "drop" else -1.0
                changes = {k: sign * (before[k] - now[k]) for k in common}
                worst = max(changes, key=lambda k: changes[k])
                value, label = changes[worst], f"largest {g.change} {changes[worst]:.4g} ({worst})"
            else:
                worst = min(now, key=lambda k: now[k]) if g.op in (">=", ">") else max(now, key=lambda k: now[k])
                value, label = now[worst], f"lowest recall {now[worst]:.4g} ({worst})"
            ok = OPS[g.op](value, g.threshold)
            out.append(outcome(PASSED if ok else FAILED, value, f"measured {label}; threshold {bound}"))
            continue
        now_v = headline_value(current, g.metric)
        if now_v is None:
            out.append(outcome(NOT_EVALUATED, None, missing))
            continue
        if g.change:
            before_v = headline_value(baseline or {}, g.metric)
            if before_v is None:
                out.append(outcome(NOT_EVALUATED, None, f"not evaluated: the baseline has no {words}"))
                continue
            value = (before_v - now_v) if g.change == "drop" else (now_v - before_v)
            label = f"{g.change} {value:.4g} ({words} {before_v:.4g} in the baseline, {now_v:.4g} now)"
        else:
            value, label = now_v, f"{words} {now_v:.4g}"
        ok = OPS[g.op](value, g.threshold)
        out.append(outcome(PASSED if ok else FAILED, value, f"measured {label}; threshold {bound}"))
    return out


def paired_counts(current: Mapping[str, bool], baseline: Mapping[str, bool]) -> tuple[int, int, int] | None:
    """(b, c, n) over the images both audits predicted: b baseline right and current wrong, c the reverse."""
    common = [k for k in current if k in baseline]
    if not common:
        return None
    b = sum(1 for k in common if baseline[k] and not current[k])
    c = sum(1 for k in common if not baseline[k] and current[k])
    return b, c, len(common)


def correctness_from_rows(header: Sequence[str], rows: Sequence[Sequence[str]]) -> dict[str, bool]:
    """path -> whether the prediction was right, from predictions.csv's columns."""
    i_path, i_true, i_pred = header.index("path"), header.index("true_label"), header.index("predicted_label")
    return {row[i_path]: row[i_true] == row[i_pred] for row in rows}


def read_correctness(csv_path: Path) -> dict[str, bool] | None:
    """predictions.csv beside an audit.json as path -> right; None when it is missing or unreadable."""
    import csv

    try:
        with open(csv_path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader)
            return correctness_from_rows(header, list(reader))
    except (OSError, StopIteration, ValueError, IndexError):
        return None


def overall(outcomes: Sequence[GateOutcome | Mapping[str, Any]]) -> str:
    """'failed' when any gate failed, 'passed' when at least one passed and none failed, 'not evaluated' when
    every gate was not evaluated, 'no gates' when there are none."""
    statuses = [o.status if isinstance(o, GateOutcome) else o["status"] for o in outcomes]
    if not statuses:
        return "no gates"
    if FAILED in statuses:
        return FAILED
    return PASSED if PASSED in statuses else NOT_EVALUATED


# ------------------------------------------------------------------------------------------- JUnit


def junit_xml(suites: Sequence[tuple[str, Sequence[GateOutcome | Mapping[str, Any]]]]) -> str:
    """JUnit XML: one testsuite per audited model, one testcase per gate (failure / skipped with the measured
    value and the threshold in the message; passed cases carry the same text in system-out)."""
    root = ET.Element("testsuites", name="wbc-audit gates")
    total = failures = skipped = 0
    for name, outcomes in suites:
        items = [o.to_dict() if isinstance(o, GateOutcome) else dict(o) for o in outcomes]
        n_fail = sum(o["status"] == FAILED for o in items)
        n_skip = sum(o["status"] == NOT_EVALUATED for o in items)
        suite = ET.SubElement(
            root, "testsuite", name=name, tests=str(len(items)), failures=str(n_fail), errors="0", skipped=str(n_skip)
        )
        for o in items:
            case = ET.SubElement(suite, "testcase", classname=f"wbc-audit.{name}", name=o["gate"])
            if o["status"] == FAILED:
                ET.SubElement(case, "failure", message=o["message"], type="GateFailed").text = o["message"]
            elif o["status"] == NOT_EVALUATED:
                ET.SubElement(case, "skipped", message=o["message"])
            else:
                ET.SubElement(case, "system-out").text = f"passed: {o['message']}"
        total, failures, skipped = total + len(items), failures + n_fail, skipped + n_skip
    root.set("tests", str(total))
    root.set("failures", str(failures))
    root.set("skipped", str(skipped))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
