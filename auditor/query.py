"""``wbc-audit history OUT_ROOT``: list and query past audits from the root's index (``audits.db``).

Reached as ``wbc-audit history ...`` (the audit command hands a first argument ``history`` to this command,
so ``wbc-audit MODEL DATA`` keeps its form) or ``python -m auditor.query``.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

import click

from .errors import AuditError, input_error


def _date(value: str | None, flag: str) -> str | None:
    """An ISO date or date-time as the index's created_utc text compares (``2026-01-31`` or
    ``2026-01-31T12:00``)."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise input_error(flag, f"{value!r} is not a date", expected="YYYY-MM-DD or YYYY-MM-DDTHH:MM") from None
    text = parsed.replace(tzinfo=None).isoformat(timespec="seconds")
    if flag == "--until" and len(value) == 10:  # a whole day
        text = value + "T23:59:59"
    return text + "Z"


def _pct(v) -> str:
    return "–" if v is None else f"{v * 100:.1f}%"


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("root", metavar="OUT_ROOT")
@click.option("--model", default=None, metavar="M", help="Only this model (file name, stem or part of its path).")
@click.option("--since", default=None, metavar="DATE", help="Only audits created on or after DATE (UTC, ISO).")
@click.option("--until", default=None, metavar="DATE", help="Only audits created on or before DATE (UTC, ISO).")
@click.option("--failed", is_flag=True, help="Only audits with a failed gate.")
@click.option("--limit", default=None, type=int, help="At most this many (newest first).")
@click.option("--json", "as_json", is_flag=True, help="JSON (a list of objects) instead of a table.")
def history(root, model, since, until, failed, limit, as_json):
    """List past audits in OUT_ROOT's index, newest first: model, version, headline numbers, gate outcome.

    Exit codes: 0 done, 2 bad input (no index or report folders in OUT_ROOT, a malformed date).
    """
    from .index import DB_NAME, reading, report_folders

    try:
        path = Path(root)
        if not path.is_dir() or (not (path / DB_NAME).exists() and not report_folders(path)):
            raise input_error(root, "holds no audit index (audits.db) or report folder", expected="a --out folder")
        with reading(path) as index:
            rows = index.rows(model=model, since=_date(since, "--since"), until=_date(until, "--until"))
    except AuditError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    if failed:
        rows = [r for r in rows if r["outcome"] == "failed"]
    rows = rows[:limit] if limit is not None else rows
    if as_json:
        out = []
        for r in rows:
            item = {k: v for k, v in r.items() if not k.endswith("_json") and k != "id"}
            item["headline"] = json.loads(r["headline_json"])
            item["gates"] = json.loads(r["gates_json"])
            item["files"] = json.loads(r["files_json"])
            item["path"] = str(path / r["folder"])
            out.append(item)
        click.echo(json.dumps(out, indent=2, ensure_ascii=False))
        return
    header = ["created (UTC)", "model", "ver", "accuracy", "macro-F1", "robust", "ECE", "gates", "folder"]
    table = [
        [
            r["created_utc"],
            r["model_name"],
            f"v{r['version']}" if r["version"] is not None else r["kind"],
            _pct(r["accuracy"]),
            _pct(r["f1_macro"]),
            _pct(r["robust_accuracy"]),
            "–" if r["ece"] is None else f"{r['ece']:.3f}",
            r["outcome"] + (f" ({r['n_gates_failed']} failed)" if r["n_gates_failed"] else ""),
            r["folder"],
        ]
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *table)]
    for line in [header, *table]:
        click.echo("  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip())
    if not rows:
        click.echo("(no audit matches)", err=True)


if __name__ == "__main__":  # pragma: no cover
    history(prog_name="wbc-audit history")
