"""Release workflow without TensorFlow: gates, McNemar, JUnit, the audit index under concurrent and killed
writers, rebuilds, baselines, the history command, and the index's speed and size with 1,000 audits."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from auditor import gates as G
from auditor import index as idx
from auditor.config import AuditConfig, build_config
from auditor.errors import InputError
from auditor.history import write_report
from auditor.release import build_release, deltas, load_baseline_doc, resolve_baseline
from auditor.report.document import FRAME_KEYS, AuditReport

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "tests" / "data" / "demo_audit_before_sections.json"


def base_doc(model_path: Path, accuracy: float = 0.9, fingerprint: str = "fp-a") -> dict:
    """A small audit.json document (the demo's frame and headline, no section results: no figures)."""
    doc = json.loads(GOLDEN.read_text())
    doc.update(
        report_id="20260101T000000Z-abcdef12",
        created_utc="2026-01-01T00:00:00Z",
        environment={"python": "3.11"},
        config={},
        results={"classification": None},
    )
    doc["model"] = {**doc["model"], "path": str(model_path), "file_name": model_path.name}
    doc["dataset"] = {**doc["dataset"], "path": "data", "fingerprint": fingerprint}
    doc["summary"]["headline"]["accuracy"] = accuracy
    for k in [k for k in doc if k not in FRAME_KEYS]:
        doc.pop(k)
    return doc


def report_for(model_path: Path, accuracy: float = 0.9, stamp: int = 0, fingerprint: str = "fp-a") -> AuditReport:
    doc = base_doc(model_path, accuracy, fingerprint)
    t = time.gmtime(1767225600 + stamp)
    doc["report_id"] = time.strftime("%Y%m%dT%H%M%SZ", t) + "-abcdef12"
    doc["created_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", t)
    return AuditReport.from_dict(doc)


def cfg(root: Path, **kw) -> AuditConfig:
    return AuditConfig(model_paths=(), data_path=None, out_dir=root, formats=("json",), **kw)


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "/." not in "/" + str(p.relative_to(root)) and p.parent != root
    }


# ------------------------------------------------------------------------------------------- gates


def test_gate_parsing_and_bad_gates():
    g = G.parse_gate("accuracy drop <= 0.01", "gates")
    assert (g.metric, g.change, g.op, g.threshold) == ("accuracy", "drop", "<=", 0.01)
    assert G.parse_gate("accuracy>=95%", "gates").threshold == 0.95
    with pytest.raises(InputError) as e:
        G.parse_gate("acuracy >= 0.9", "nightly.toml: gates (line 3)")
    msg = str(e.value)
    assert "unknown metric 'acuracy'" in msg and "robust_accuracy" in msg and "class_recall" in msg and "line 3" in msg
    for bad in ("accuracy >= high", "accuracy => 0.9", "accuracy drop >= 0.01", "mcnemar_p >= 2", "accuracy"):
        with pytest.raises(InputError, match="malformed gate"):
            G.parse_gate(bad, "gates")
    with pytest.raises(InputError, match="unknown metric"):  # through the config, as the file gives it
        build_config({"gates": ["precision >= 0.9"]})
    with pytest.raises(InputError, match=r"model_card.*unknown model-card field"):
        build_config({"model_card": {"purpose": "x"}})


def test_mcnemar_exact_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    for b, c in [(0, 0), (5, 0), (12, 3), (3, 12), (40, 25), (700, 650)]:
        expected = 1.0 if b + c == 0 else stats.binomtest(b, b + c, 0.5, alternative="greater").pvalue
        assert G.mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9)


def _doc(acc, ece=None, robust=None, recalls=None):
    head = {"accuracy": acc, **({"ece": ece} if ece is not None else {})}
    if robust is not None:
        head["robust_accuracy"] = robust
    per_class = [{"name": k, "support": 10, "recall": v} for k, v in (recalls or {}).items()]
    return {"summary": {"headline": head}, "results": {"classification": {"per_class": per_class}}}


def test_every_gate_type():
    gates = G.parse_gates(
        [
            "accuracy >= 0.95",
            "ece <= 0.05",
            "robust_accuracy >= 0.85",
            "class_recall >= 0.8",
            "accuracy drop <= 0.01",
            "ece rise <= 0.01",
            "class_recall drop <= 0.05",
            "mcnemar_p >= 0.05",
        ]
    )
    now = _doc(0.96, ece=0.07, recalls={"a": 0.99, "b": 0.78})
    before = _doc(0.98, ece=0.03, recalls={"a": 0.99, "b": 0.90})
    out = {o.gate: o for o in G.evaluate(gates, now, before, paired=(9, 1, 100), ran=("classification", "calibration"))}
    assert out["accuracy >= 0.95"].status == "passed" and out["accuracy >= 0.95"].measured == 0.96
    assert out["ece <= 0.05"].status == "failed" and "0.07" in out["ece <= 0.05"].message
    assert out["robust_accuracy >= 0.85"].status == "not evaluated"
    assert "perturbation grid section did not run" in out["robust_accuracy >= 0.85"].message
    assert out["class_recall >= 0.8"].status == "failed" and "(b)" in out["class_recall >= 0.8"].message
    assert out["accuracy drop <= 0.01"].status == "failed"
    assert out["accuracy drop <= 0.01"].measured == pytest.approx(0.02)
    assert out["ece rise <= 0.01"].status == "failed" and out["ece rise <= 0.01"].measured == pytest.approx(0.04)
    assert out["class_recall drop <= 0.05"].measured == pytest.approx(0.12)
    # 9 right-before-wrong-now vs 1: P(X >= 9 | n=10) = 11/1024
    assert out["mcnemar_p >= 0.05"].status == "failed"
    assert out["mcnemar_p >= 0.05"].measured == pytest.approx(11 / 1024)
    assert G.overall(list(out.values())) == "failed"
    # no baseline: the change gates are not evaluated, with the reason
    out2 = G.evaluate(
        gates, now, None, baseline_note="--baseline latest: m.keras has no earlier audit", ran=("classification",)
    )
    assert [o.status for o in out2 if o.gate.startswith(("accuracy drop", "mcnemar"))] == ["not evaluated"] * 2
    assert all("no earlier audit" in o.message for o in out2 if "drop" in o.gate or "mcnemar" in o.gate)


def test_junit_read_back(tmp_path):
    gates = G.parse_gates(["accuracy >= 0.95", "ece <= 0.05", "robust_accuracy >= 0.8"])
    out = G.evaluate(gates, _doc(0.9, ece=0.01), None, ran=("classification", "calibration"))
    path = tmp_path / "gates.xml"
    path.write_text(G.junit_xml([("m.keras v3", out)]))
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites" and root.get("tests") == "3" and root.get("failures") == "1"
    cases = root.findall("./testsuite/testcase")
    assert [c.get("name") for c in cases] == ["accuracy >= 0.95", "ece <= 0.05", "robust_accuracy >= 0.8"]
    failure = cases[0].find("failure")
    assert failure is not None and "0.9" in failure.get("message") and ">= 0.95" in failure.get("message")
    assert cases[1].find("system-out").text.startswith("passed") and "0.01" in cases[1].find("system-out").text
    assert cases[2].find("skipped") is not None


# ------------------------------------------------------------------------------------------- index


def test_versions_per_model_identity_and_index(tmp_path):
    root = tmp_path / "out"
    a, b = tmp_path / "x" / "model.keras", tmp_path / "y" / "model.keras"  # one file name, two folders
    seen = []
    for i, m in enumerate([a, a, b, a]):
        r = report_for(m, stamp=i)
        folder = write_report(r, cfg(root))
        seen.append((m, r.artifacts.release["version"]))
        doc = json.loads((folder / "audit.json").read_text())
        assert doc["release"]["version"] == r.artifacts.release["version"]
        assert doc["release"]["model_identity"] == str(m.resolve())
    assert [v for _, v in seen] == [1, 2, 1, 3]
    with idx.reading(root) as index:
        rows = index.rows()
        assert [r["version"] for r in rows] == [3, 1, 2, 1]  # newest first
        assert len(index.rows(model=str(tmp_path / "y"))) == 1
    html = (root / "index.html").read_text()
    assert html.count("<tr data-model=") == 4


def _writer(root: Path, model: Path, n: int, seed: int, trend: bool = True) -> None:  # in a forked child
    rnd = random.Random(seed)
    for i in range(n):
        stamp = seed * 1000 + i
        fp = "fp-a" if trend else f"fp-{stamp}"  # one data fingerprint per audit: no trend figure (faster)
        write_report(report_for(model, accuracy=0.5 + rnd.random() / 2, stamp=stamp, fingerprint=fp), cfg(root))


def _fork(fn, *args) -> int:
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        code = 0
        try:
            fn(*args)
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        os._exit(code)
    return pid


def test_two_processes_write_one_index(tmp_path):
    """Two processes, each writing 20 audits of the same model to one root, three times over: no entry lost,
    no version given twice, every entry's folder in place."""
    model = tmp_path / "m" / "model.keras"
    for trial in range(3):
        root = tmp_path / f"out{trial}"
        pids = [_fork(_writer, root, model, 20, trial * 10 + k, False) for k in (1, 2)]
        assert all(os.waitpid(p, 0)[1] == 0 for p in pids)
        conn = sqlite3.connect(root / "audits.db")
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        versions = sorted(v for (v,) in conn.execute("SELECT version FROM audits"))
        folders = [f for (f,) in conn.execute("SELECT folder FROM audits")]
        conn.close()
        assert versions == list(range(1, 41))
        assert len(set(folders)) == 40 and all((root / f / "audit.json").is_file() for f in folders)
        assert len(idx.report_folders(root)) == 40
        assert (root / "index.html").read_text().count("<tr data-model=") == 40


def _check_intact(root: Path, before: dict[str, str]) -> None:
    conn = sqlite3.connect(root / "audits.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = conn.execute("SELECT folder, version FROM audits").fetchall()
    conn.close()
    for folder, _ in rows:  # never half an entry: each row's folder holds its finished audit.json
        json.loads((root / folder / "audit.json").read_text())
    versions = [v for _, v in rows]
    assert len(versions) == len(set(versions))
    now = tree_digest(root)
    assert all(now.get(k) == v for k, v in before.items()), "an earlier report changed"


def test_killed_at_random_points_leaves_index_and_reports_intact(tmp_path):
    model = tmp_path / "m" / "model.keras"
    root = tmp_path / "out"
    write_report(report_for(model, stamp=0), cfg(root))
    rnd = random.Random(7)
    for k in range(6):  # SIGKILL a writer loop at a random moment
        before = tree_digest(root)
        pid = _fork(_writer, root, model, 1000, 100 + k)
        time.sleep(rnd.uniform(0.02, 0.4))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        _check_intact(root, before)
    # and at each step of a write, deterministically (before the rename, between rename and insert, before commit)
    import auditor.history as H

    for stage in ("write_folder", "add", "write_html"):
        before = tree_digest(root)

        def die_at(stage=stage):
            original = {"write_folder": H.write_folder, "add": idx.Index.add, "write_html": idx.write_html}[stage]

            def wrapper(*a, **kw):
                if stage == "write_folder":
                    original(*a, **kw)  # the folder is in place, the index entry is not
                os._exit(9)

            if stage == "write_folder":
                H.write_folder = wrapper
            elif stage == "add":
                idx.Index.add = wrapper
            else:
                idx.write_html = wrapper
            write_report(report_for(model, stamp=5000), cfg(root))

        pid = _fork(die_at)
        assert os.waitpid(pid, 0)[1] >> 8 == 9
        _check_intact(root, before)
    # the next run registers the finished but unregistered folder first, then numbers its own after it
    n_folders = len(idx.report_folders(root))
    r = report_for(model, stamp=9999)
    write_report(r, cfg(root))
    conn = sqlite3.connect(root / "audits.db")
    versions = sorted(v for (v,) in conn.execute("SELECT version FROM audits"))
    conn.close()
    assert len(versions) == n_folders + 1 == len(set(versions))
    assert r.artifacts.release["version"] == max(versions)
    assert not list(root.glob("*/.partial-*"))  # temp folders of killed runs are cleaned


def test_missing_and_corrupt_index_are_rebuilt(tmp_path, capsys):
    model = tmp_path / "m" / "model.keras"
    root = tmp_path / "out"
    for i in range(3):
        write_report(report_for(model, stamp=i, accuracy=0.8 + i / 100), cfg(root))
    with idx.reading(root) as index:
        expected = [(r["folder"], r["version"], r["accuracy"]) for r in index.rows()]
    (root / "audits.db").unlink()
    with idx.reading(root) as index:  # rebuilt from the folders' audit.json
        assert [(r["folder"], r["version"], r["accuracy"]) for r in index.rows()] == expected
    (root / "audits.db").write_bytes(b"this is not a database" * 100)
    write_report(report_for(model, stamp=10), cfg(root))
    assert "could not be read; moved it aside" in capsys.readouterr().err
    assert list(root.glob("audits.db.corrupt-*"))
    with idx.reading(root) as index:
        assert [r["version"] for r in index.rows()] == [4, 3, 2, 1]


def test_register_folder_for_other_writers(tmp_path):
    """The one entry point another writer (e.g. a comparison folder) uses."""
    root = tmp_path / "out"
    folder = root / "comparison" / "20260101T000000Z-cmp"
    folder.mkdir(parents=True)
    doc = base_doc(tmp_path / "a.keras")
    doc["kind"] = "comparison"
    (folder / "audit.json").write_text(json.dumps(doc))
    row = idx.register_folder(root, folder, kind="comparison")
    assert row["kind"] == "comparison" and row["folder"] == "comparison/20260101T000000Z-cmp"
    assert idx.register_folder(root, folder, kind="comparison") == row  # registered once
    with idx.reading(root) as index:
        assert len(index.rows()) == 1
    assert "20260101T000000Z-cmp" in (root / "index.html").read_text()


# ------------------------------------------------------------------------------------------- baselines


def test_baseline_deltas_and_resolution(tmp_path):
    model = tmp_path / "m" / "model.keras"
    root = tmp_path / "out"
    f1 = write_report(report_for(model, stamp=0, accuracy=0.90), cfg(root))
    write_report(report_for(model, stamp=1, accuracy=0.93, fingerprint="fp-b"), cfg(root))
    ident = idx.model_identity(model)
    latest = resolve_baseline("latest", root, ident, "model.keras")
    assert latest.doc["summary"]["headline"]["accuracy"] == 0.93
    v1 = resolve_baseline("v1", root, ident, "model.keras")
    assert v1.path == f1 / "audit.json"
    with pytest.raises(InputError, match=r"v7.*no such audit.*v1, v2"):
        resolve_baseline("v7", root, ident, "model.keras")
    none = resolve_baseline("latest", root, idx.model_identity(tmp_path / "other.keras"), "other.keras")
    assert none.doc is None and "no earlier audit" in none.note
    r = write_report(report_for(model, stamp=2, accuracy=0.95), cfg(root, baseline="v1"))
    rel = json.loads((r / "audit.json").read_text())["release"]
    d = {x["metric"]: x for x in rel["baseline"]["deltas"]}
    assert d["accuracy"]["delta"] == pytest.approx(0.05) and d["accuracy"]["baseline"] == 0.90
    assert d["n_images"]["delta"] == 0
    assert rel["baseline"]["fingerprint_differs"] is False
    assert [t["version"] for t in rel["trend"]] == [1, 3]  # v2 is on other data (fp-b)
    rel2 = build_release(
        base_doc(model, 0.95, "fp-a"),
        version=4,
        identity=ident,
        gates_texts=(),
        baseline=latest,
        trend_rows=[],
        ran=(),
        current_correct=None,
        model_card={},
    )
    assert rel2["baseline"]["fingerprint_differs"] is True
    assert deltas({"accuracy": 0.5, "x": "text"}, {"accuracy": 0.25, "ece": 0.1}) == [
        {"metric": "accuracy", "label": "Accuracy", "baseline": 0.25, "current": 0.5, "delta": 0.25, "percent": True},
        {"metric": "ece", "label": "ECE", "baseline": 0.1, "current": None, "delta": None, "percent": True},
    ]


def test_bad_baselines(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_baseline_doc(tmp_path / "absent" / "audit.json")
    (tmp_path / "x.json").write_text('{"hello": 1}')
    with pytest.raises(InputError, match=r"not a wbc-audit audit.json"):
        load_baseline_doc(tmp_path / "x.json")
    newer = json.loads(GOLDEN.read_text())
    newer["schema_version"] = 99
    (tmp_path / "n.json").write_text(json.dumps(newer))
    with pytest.raises(InputError, match=r"newer wbc-audit.*schema 99"):
        load_baseline_doc(tmp_path / "n.json")
    doc, _ = load_baseline_doc(GOLDEN)  # an early schema-1 layout without report id: migrated
    assert doc["report_id"] == "data" and doc["summary"]["headline"]["accuracy"] == 0.89


# ------------------------------------------------------------------------------------------- history


def test_history_command(tmp_path):
    from auditor.cli import main

    model = tmp_path / "m" / "model.keras"
    root = tmp_path / "out"
    for i in range(3):
        report = report_for(model, stamp=86400 * i, accuracy=0.9 + i / 100)
        write_report(report, cfg(root, gates=("accuracy >= 0.915",)))
    write_report(report_for(tmp_path / "other.keras", stamp=5), cfg(root))
    run = CliRunner().invoke(main, ["history", str(root), "--model", "model.keras", "--json"])
    assert run.exit_code == 0, run.output
    items = json.loads(run.stdout)
    assert [(i["version"], i["outcome"]) for i in items] == [(3, "passed"), (2, "failed"), (1, "failed")]
    assert items[0]["headline"]["accuracy"] == pytest.approx(0.92) and items[0]["gates"][0]["status"] == "passed"
    run = CliRunner().invoke(main, ["history", str(root), "--since", "2026-01-02"])
    assert run.exit_code == 0 and len(run.stdout.splitlines()) == 3  # header + v2, v3
    assert "v3" in run.stdout and "92.0%" in run.stdout
    run = CliRunner().invoke(main, ["history", str(tmp_path / "nothing")])
    assert run.exit_code == 2 and "error:" in run.stderr and "no audit index" in run.stderr
    run = CliRunner().invoke(main, ["history", str(root), "--since", "yesterday"])
    assert run.exit_code == 2 and "not a date" in run.stderr


# ------------------------------------------------------------------------------------------- speed, size, browser


def _fake_index(root: Path, model: Path, n: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    ident = idx.model_identity(model)
    doc = base_doc(model)
    doc["release"] = {"model_identity": ident}
    with idx.writing(root) as index:
        for i in range(n):
            d = copy.deepcopy(doc)
            d["report_id"] = f"2025{i:010d}"
            d["created_utc"] = f"2025-01-01T{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z"
            d["release"]["version"] = i + 1
            d["summary"]["headline"].update(accuracy=0.9 + (i % 7) / 100, robust_accuracy=0.8, ece=0.02)
            row = idx.row_from_doc(root, root / "model" / d["report_id"], d)
            row["files_json"] = '["audit.json", "report.html", "report.pdf"]'
            index.add_row(row)


def test_index_and_trend_with_1000_audits_under_a_second(tmp_path):
    from auditor.release import trend_figure

    model = tmp_path / "m" / "model.keras"
    root = tmp_path / "out"
    _fake_index(root, model, 1000)
    r = report_for(model, stamp=10**8)
    t = time.perf_counter()
    with idx.writing(root) as index:
        version = index.next_version(idx.model_identity(model))
        rows = index.trend(idx.model_identity(model), "fp-a")
        release = build_release(
            r.to_dict(),
            version=version,
            identity=idx.model_identity(model),
            gates_texts=(),
            baseline=None,
            trend_rows=rows,
            ran=(),
            current_correct=None,
            model_card={},
        )
        png = trend_figure(release)
        index.add_row(idx.row_from_doc(root, root / "model" / "new", {**r.to_dict(), "release": release}))
        idx.write_html(index)
    seconds = time.perf_counter() - t
    size = (root / "index.html").stat().st_size
    print(f"index+trend with 1000 earlier audits: {seconds:.3f} s; index.html {size / 1e6:.2f} MB")
    assert version == 1001 and len(release["trend"]) == 1001 and png
    assert seconds < 1.0
    assert size < 2_000_000


@pytest.mark.browser
def test_index_html_in_chromium(tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("headless Chromium is not installed")
    root = tmp_path / "out"
    folders = [
        write_report(report_for(tmp_path / n, stamp=i), cfg(root)) for i, n in enumerate(["a.keras", "b.keras"] * 2)
    ]
    shot = tmp_path / "index.png"
    dom = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", (root / "index.html").as_uri()],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--screenshot={shot}",
            "--window-size=1200,500",
            (root / "index.html").as_uri(),
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert "4 shown" in dom  # the filter script ran
    import re

    hrefs = re.findall(r"href=\"([^\"]+)\"", dom)
    assert len(hrefs) == 4 and all((root / h).is_file() for h in hrefs)
    assert {f.name for f in folders} <= {Path(h).parent.name for h in hrefs}
    assert shot.is_file() and shot.stat().st_size > 1000
    if os.environ.get("WBC_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["WBC_KEEP_SCREENSHOT"])
