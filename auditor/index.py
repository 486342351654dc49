"""The audit index at an output root: ``audits.db`` (SQLite) and ``index.html``.

``audits.db`` holds one row per finished report folder: model identity and version, headline numbers,
configuration, data fingerprint, model hash, gate outcome and paths. Every write is one SQLite transaction
started with ``BEGIN IMMEDIATE`` (one writer at a time across processes, others wait up to
:data:`BUSY_TIMEOUT_S`), so two audits writing to one root never get the same version or lose an entry, and
a process killed at any point leaves the index as it was or with its finished entry (SQLite's journal).

A report folder that was moved into place but not registered (its process was killed between the rename
and the commit) is registered by the next writer before it assigns a version. A missing ``audits.db`` is
rebuilt from the report folders' ``audit.json``; one that SQLite cannot read is moved aside
(``audits.db.corrupt-<UTC time>``) and rebuilt, with a warning.

**Model identity.** Versions count per model identity: the model file's resolved absolute path (so two
``model.keras`` from different folders are versioned apart, and a model retrained in place keeps its
series). Report folders stay ``<root>/<model-stem>/<report id>/``.
"""

from __future__ import annotations

import html
import json
import math
import os
import sqlite3
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DB_NAME = "audits.db"
HTML_NAME = "index.html"
BUSY_TIMEOUT_S = 300.0
#: headline numbers kept in their own columns (trend, history, index.html)
TREND_METRICS = ("accuracy", "f1_macro", "robust_accuracy", "ece")
COLUMNS = ("accuracy", "f1_macro", "balanced_accuracy", "robust_accuracy", "ece")

SCHEMA = """
CREATE TABLE IF NOT EXISTS audits (
    id INTEGER PRIMARY KEY,
    folder TEXT NOT NULL UNIQUE,            -- relative to the root, '/'-separated
    kind TEXT NOT NULL DEFAULT 'audit',     -- 'audit' or another kind of folder (e.g. a comparison)
    model_identity TEXT NOT NULL,
    model_name TEXT NOT NULL,
    version INTEGER,
    report_id TEXT NOT NULL,
    created_utc TEXT NOT NULL,
    schema_version INTEGER,
    tool_version TEXT,
    model_sha256 TEXT,
    data_path TEXT,
    data_fingerprint TEXT,
    n_images INTEGER,
    accuracy REAL, f1_macro REAL, balanced_accuracy REAL, robust_accuracy REAL, ece REAL,
    outcome TEXT NOT NULL,                  -- gates: passed | failed | not evaluated | no gates
    n_gates_failed INTEGER NOT NULL DEFAULT 0,
    baseline TEXT,
    headline_json TEXT NOT NULL,
    gates_json TEXT NOT NULL,
    config_json TEXT NOT NULL,
    files_json TEXT NOT NULL,
    UNIQUE (model_identity, version)
);
CREATE INDEX IF NOT EXISTS audits_trend ON audits (model_identity, data_fingerprint, created_utc);
CREATE INDEX IF NOT EXISTS audits_created ON audits (created_utc);
"""


def model_identity(model_path: str | Path) -> str:
    """The identity a model's versions count by: its resolved absolute path."""
    return str(Path(model_path).expanduser().resolve())


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


# ------------------------------------------------------------------------------------------- rows


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


def row_from_doc(root: Path, folder: Path, doc: Mapping[str, Any], kind: str = "audit") -> dict[str, Any]:
    """The index row of a report folder from its audit.json document."""
    release = doc.get("release") or {}
    head = (doc.get("summary") or {}).get("headline") or {}
    model = doc.get("model") or {}
    dataset = doc.get("dataset") or {}
    gates = release.get("gates") or []
    files = sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    outcome = release.get("outcome") or ("no gates" if not gates else "not evaluated")
    return {
        "folder": folder.relative_to(root).as_posix(),
        "kind": kind,
        "model_identity": release.get("model_identity") or str(model.get("path", folder.parent.name)),
        "model_name": model.get("file_name") or folder.parent.name,
        "version": release.get("version"),
        "report_id": doc.get("report_id", folder.name),
        "created_utc": doc.get("created_utc", ""),
        "schema_version": doc.get("schema_version"),
        "tool_version": doc.get("tool_version"),
        "model_sha256": model.get("sha256"),
        "data_path": dataset.get("path"),
        "data_fingerprint": dataset.get("fingerprint"),
        "n_images": dataset.get("n_images"),
        **{k: _num(head.get(k)) for k in COLUMNS},
        "outcome": outcome,
        "n_gates_failed": sum(1 for g in gates if g.get("status") == "failed"),
        "baseline": (release.get("baseline") or {}).get("report_id"),
        "headline_json": json.dumps(_plain_headline(head), allow_nan=False),
        "gates_json": json.dumps(gates, allow_nan=False),
        "config_json": json.dumps(doc.get("config") or {}, allow_nan=False),
        "files_json": json.dumps(files),
    }


def _plain_headline(head: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in head.items() if isinstance(v, (str, bool)) or _num(v) is not None}


# ------------------------------------------------------------------------------------------- the index


class Index:
    """An open connection to ``<root>/audits.db``; use :func:`open_index` or :func:`writing`."""

    def __init__(self, root: Path, conn: sqlite3.Connection):
        self.root, self.conn = root, conn

    # ---- reads
    def rows(self, *, model: str | None = None, since: str | None = None, until: str | None = None) -> list[dict]:
        """Every entry, newest first; ``model`` matches the file name, stem or identity (substring)."""
        sql, args = "SELECT * FROM audits WHERE 1=1", []
        if model:
            sql += " AND (instr(model_identity, ?) > 0 OR instr(model_name, ?) > 0)"
            args += [model, model]
        if since:
            sql += " AND created_utc >= ?"
            args.append(since)
        if until:
            sql += " AND created_utc <= ?"
            args.append(until)
        sql += " ORDER BY created_utc DESC, id DESC"
        cur = self.conn.execute(sql, args)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]

    def versions(self, identity: str) -> list[dict]:
        cur = self.conn.execute(
            "SELECT version, folder, report_id, created_utc FROM audits WHERE model_identity = ? AND kind = 'audit' "
            "ORDER BY version",
            (identity,),
        )
        return [dict(zip(("version", "folder", "report_id", "created_utc"), r)) for r in cur.fetchall()]

    def latest(self, identity: str) -> dict | None:
        cur = self.conn.execute(
            "SELECT version, folder, report_id FROM audits WHERE model_identity = ? AND kind = 'audit' "
            "ORDER BY version DESC LIMIT 1",
            (identity,),
        )
        r = cur.fetchone()
        return dict(zip(("version", "folder", "report_id"), r)) if r else None

    def trend(self, identity: str, fingerprint: str | None) -> list[dict]:
        """Earlier audits of one model on one data fingerprint, oldest first: version, date and trend metrics."""
        cur = self.conn.execute(
            "SELECT version, report_id, created_utc, folder, " + ", ".join(TREND_METRICS) + " FROM audits "
            "WHERE model_identity = ? AND data_fingerprint IS ? AND kind = 'audit' ORDER BY version",
            (identity, fingerprint),
        )
        names = ("version", "report_id", "created_utc", "folder", *TREND_METRICS)
        return [dict(zip(names, r)) for r in cur.fetchall()]

    def next_version(self, identity: str) -> int:
        cur = self.conn.execute("SELECT MAX(version) FROM audits WHERE model_identity = ?", (identity,))
        return int(cur.fetchone()[0] or 0) + 1

    # ---- writes (inside :func:`writing`)
    def add_row(self, row: Mapping[str, Any]) -> None:
        keys = list(row)
        self.conn.execute(
            f"INSERT INTO audits ({', '.join(keys)}) VALUES ({', '.join('?' for _ in keys)})", [row[k] for k in keys]
        )

    def add(self, folder: Path, doc: Mapping[str, Any] | None = None, kind: str = "audit") -> dict:
        """Register a finished folder (its audit.json read when ``doc`` is None); a version missing from the
        document is assigned here. Returns the row."""
        folder = Path(folder)
        if doc is None:
            doc = json.loads((folder / "audit.json").read_text(encoding="utf-8"))
        row = row_from_doc(self.root, folder, doc, kind)
        if kind == "audit" and row["version"] is None:
            row["version"] = self.next_version(row["model_identity"])
        elif (
            kind == "audit"
            and self.conn.execute(
                "SELECT 1 FROM audits WHERE model_identity = ? AND version = ?", (row["model_identity"], row["version"])
            ).fetchone()
        ):
            row["version"] = self.next_version(row["model_identity"])  # a clash (e.g. a copied folder): renumber
        self.add_row(row)
        return row

    def register_orphans(self) -> int:
        """Register report folders under the root that hold an audit.json but no index entry (their process
        was killed after moving the folder into place). Returns how many."""
        known = {r[0] for r in self.conn.execute("SELECT folder FROM audits")}
        found = 0
        for folder in report_folders(self.root):
            rel = folder.relative_to(self.root).as_posix()
            if rel in known:
                continue
            try:
                self.add(folder, kind=_kind(folder))
                found += 1
            except (OSError, ValueError, KeyError, TypeError):
                continue  # not a readable audit.json: not a report folder
        return found


def _kind(folder: Path) -> str:
    try:
        doc = json.loads((folder / "audit.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "audit"
    return str(doc.get("kind", "audit")) if isinstance(doc, dict) else "audit"


def report_folders(root: Path) -> list[Path]:
    """Every finished report folder ``<root>/<name>/<report id>/`` holding an audit.json, oldest first."""
    out = []
    try:
        parents = [p for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return []
    for parent in parents:
        try:
            for folder in parent.iterdir():
                if not folder.name.startswith(".") and (folder / "audit.json").is_file():
                    out.append(folder)
        except OSError:
            continue

    def created(folder: Path) -> tuple[str, str]:
        return (folder.name, str(folder))

    return sorted(out, key=created)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    return conn


def _healthy(conn: sqlite3.Connection) -> bool:
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        cols = {r[1] for r in conn.execute("PRAGMA table_info(audits)")}
        return not cols or "model_identity" in cols
    except sqlite3.DatabaseError:
        return False


def _open(root: Path) -> sqlite3.Connection:
    """A connection to a usable audits.db: a corrupt file is moved aside (with a warning) first."""
    path = root / DB_NAME
    conn = _connect(path)
    if _healthy(conn):
        return conn
    conn.close()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{DB_NAME}.corrupt-{stamp}-{os.getpid()}")
    try:
        os.replace(path, aside)
        for suffix in ("-journal", "-wal", "-shm"):
            side = path.with_name(DB_NAME + suffix)
            if side.exists():
                os.replace(side, aside.with_name(aside.name + suffix))
        warn(f"{path}: the audit index could not be read; moved it aside to {aside.name} and rebuilt it")
    except FileNotFoundError:  # another process moved it aside first
        pass
    return _connect(path)


@contextmanager
def writing(root: Path | str) -> Iterator[Index]:
    """One write transaction on the root's index (``BEGIN IMMEDIATE``; other writers wait). The schema is
    created and the index rebuilt from the report folders when missing; unregistered finished folders are
    registered. Commits when the block ends, rolls back on any exception."""
    root = Path(root)
    conn = _open(root)
    try:
        _begin(conn)
        for statement in SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        index = Index(root, conn)
        index.register_orphans()  # also the rebuild of a missing index: versions from each audit.json
        yield index
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        conn.close()


def _begin(conn: sqlite3.Connection) -> None:
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextmanager
def reading(root: Path | str) -> Iterator[Index]:
    """A read-only view (nothing created when there is no index yet; a missing index is rebuilt first)."""
    root = Path(root)
    if not (root / DB_NAME).exists() or not _readable(root / DB_NAME):
        if report_folders(root):
            with writing(root):
                pass
    conn = _connect(root / DB_NAME) if (root / DB_NAME).exists() else sqlite3.connect(":memory:")
    try:
        for statement in SCHEMA.split(";"):
            if statement.strip() and not (root / DB_NAME).exists():
                conn.execute(statement)
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'audits'").fetchone():
            conn.executescript(SCHEMA)
        yield Index(root, conn)
    finally:
        conn.close()


def _readable(path: Path) -> bool:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
        try:
            return _healthy(conn)
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return False


def register_folder(root: Path | str, folder: Path | str, kind: str = "audit") -> dict:
    """Register one finished folder (holding an audit.json) in the root's index and rewrite index.html;
    the one entry point for other writers (e.g. a comparison folder). Returns its row."""
    root = Path(root)
    rel = Path(folder).relative_to(root).as_posix()
    with writing(root) as index:  # writing() may already have registered it as an unregistered folder
        if not index.conn.execute("SELECT 1 FROM audits WHERE folder = ?", (rel,)).fetchone():
            index.add(Path(folder), kind=kind)
        write_html(index)
        return next(r for r in index.rows() if r["folder"] == rel)


# ------------------------------------------------------------------------------------------- index.html


def _fmt(value: Any, pct: bool = True) -> str:
    if value is None:
        return "–"
    return f"{value * 100:.1f}%" if pct else f"{value:.3f}"


def write_html(index: Index) -> Path:
    """``index.html`` at the root: every entry newest first, filterable by model; written atomically."""
    rows = index.rows()
    root = index.root
    models = sorted({r["model_name"] for r in rows})
    e = html.escape
    out = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>wbc-audit index</title><style>",
        "body{font-family:'DejaVu Sans',sans-serif;font-size:13px;margin:20px;color:#1d2733}"
        "table{border-collapse:collapse}th,td{padding:3px 8px;border-bottom:1px solid #dde2e8;text-align:left}"
        "td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#eef2f6}"
        ".failed{color:#a4161a;font-weight:bold}.passed{color:#1b7a35}.muted{color:#5b6676}"
        "tr.hidden{display:none}",
        "</style></head><body>",
        f"<h1>wbc-audit index</h1><p class='muted'>{len(rows)} audit(s) in <code>{e(str(root))}</code>, newest "
        f"first. Written {datetime.now(UTC).isoformat(timespec='seconds').replace('+00:00', 'Z')}.</p>",
        "<p><label>Model: <select id='model' onchange='filt()'><option value=''>all models</option>",
        *[f"<option>{e(m)}</option>" for m in models],
        "</select></label> <span id='shown' class='muted'></span></p>",
        "<table id='audits'><thead><tr><th>Created (UTC)</th><th>Model</th><th>Version</th><th>Accuracy</th>"
        "<th>Macro-F1</th><th>Robust acc.</th><th>ECE</th><th>Gates</th><th>Data fingerprint</th><th>Files</th>"
        "</tr></thead><tbody>",
    ]
    for r in rows:
        files = json.loads(r["files_json"])
        links = " ".join(
            f"<a href='{e(r['folder'])}/{e(name)}'>{e(name.split('.')[-1] if name.startswith('report') else name)}</a>"
            for name in files
            if name in ("report.html", "report.pdf", "audit.json")
        )
        version = f"v{r['version']}" if r["version"] is not None else r["kind"]
        cls = "failed" if r["outcome"] == "failed" else "passed" if r["outcome"] == "passed" else "muted"
        out.append(
            f"<tr data-model='{e(r['model_name'])}'><td>{e(r['created_utc'])}</td>"
            f"<td title='{e(r['model_identity'])}'>{e(r['model_name'])}</td><td>{e(version)}</td>"
            f"<td class='n'>{_fmt(r['accuracy'])}</td><td class='n'>{_fmt(r['f1_macro'])}</td>"
            f"<td class='n'>{_fmt(r['robust_accuracy'])}</td><td class='n'>{_fmt(r['ece'], False)}</td>"
            f"<td class='{cls}'>{e(r['outcome'])}</td><td><code>{e((r['data_fingerprint'] or '')[:12])}</code></td>"
            f"<td>{links}</td></tr>"
        )
    out += [
        "</tbody></table><script>function filt(){var m=document.getElementById('model').value,n=0;"
        "document.querySelectorAll('#audits tbody tr').forEach(function(t){var h=m&&t.dataset.model!==m;"
        "t.classList.toggle('hidden',!!h);if(!h)n++;});document.getElementById('shown').textContent=n+' shown';}"
        "filt();</script></body></html>\n"
    ]
    path = root / HTML_NAME
    tmp = root / f".{HTML_NAME}.{os.getpid()}.tmp"
    tmp.write_text("".join(out), encoding="utf-8")
    os.replace(tmp, path)
    return path
