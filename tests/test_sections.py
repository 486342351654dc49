"""Sections as units: the registry, plug-ins through entry points, the config file, the Python API, and
audit.json unchanged by the move to sections."""

from __future__ import annotations

import importlib
import json
import math
import os
import sys
from pathlib import Path

import pytest

from auditor.config import AuditConfig, build_config, load_config_file, to_toml
from auditor.errors import InputError
from auditor.sections import BUILTIN, registry
from tests.conftest import REPO, SAMPLE_MODEL, SAMPLE_TEST, error_lines, run_cli

PLUGIN = REPO / "tests" / "plugin_example"
BROKEN = REPO / "tests" / "plugin_broken"
GOLDEN = REPO / "tests" / "data" / "demo_audit_before_sections.json"
FAST = ["--bootstrap", "50", "--preprocess-check-samples", "0", "--format", "json,html"]


def _normalise(doc: dict) -> dict:
    """audit.json without what differs between any two runs: ids, times, timings, paths, environment, config and
    the release record (version, trend: written by the CLI through the audit index)."""
    d = json.loads(json.dumps(doc))
    for key in ("report_id", "created_utc", "timings_seconds", "config", "environment", "release"):
        d.pop(key, None)
    d["model"].pop("path", None)
    if d["model"].get("sidecar"):
        d["model"]["sidecar"].pop("path", None)
    d["dataset"].pop("path", None)
    return d


def _same(a, b, path="") -> list[str]:
    """Differences between two JSON values; floats equal to 1e-9 relative (same machine, same model)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}/{k}: only in one" for k in set(a) ^ set(b)]
        return out + [d for k in set(a) & set(b) for d in _same(a[k], b[k], f"{path}/{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _same(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
        return [] if math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) else [f"{path}: {a} != {b}"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def _report_json(stdout: str) -> dict:
    return json.loads((Path(stdout.strip().splitlines()[-1]) / "audit.json").read_text())


# ----------------------------------------------------------------------------------- registry


def test_opt_in_sections_run_only_when_enabled():
    base = {"model_paths": (Path("m.keras"),), "data_path": Path("d")}
    assert not registry(plugins=False).get("gradcam").default_enabled
    assert not AuditConfig(**base).is_enabled("gradcam", default=False)
    assert AuditConfig(**base, enable=("gradcam",)).is_enabled("gradcam", default=False)
    assert AuditConfig(**base, enabled=("gradcam",)).is_enabled("gradcam", default=False)
    assert not AuditConfig(**base, enable=("gradcam",), disabled=("gradcam",)).is_enabled("gradcam", default=False)
    assert AuditConfig(**base).is_enabled("fisher") and not AuditConfig(**base, enabled=("gradcam",)).is_enabled(
        "fisher"
    )
    with pytest.raises(InputError, match=r"^--enable: unknown section 'gradcm'"):
        AuditConfig(**base, enable=("gradcm",))


def test_registry_order_and_unique_names():
    reg = registry(plugins=False)
    assert reg.names == (
        "model_sanity",
        "preprocessing_check",
        "classification",
        "fisher",
        "influence",
        "gradcam",
        "calibration",
        "selective_prediction",
        "perturbation_grid",
        "external_sites",
        "data_quality",
    )
    assert len(set(reg.names)) == len(BUILTIN)
    for section in reg.sections:
        for partial in (section.template, section.summary_template):
            assert not partial or (REPO / "templates" / partial).is_file(), (section.name, partial)
        assert section.template or section.summary_template, section.name
        assert section.title and section.description
        section.Options().validate(lambda key: key)  # defaults are valid


# ----------------------------------------------------------------------------------- audit.json unchanged


#: what later issues changed in the demo's audit.json on purpose: the preprocessing check's grid (a torch
#: scaling, sequential stopping); keys they added (model_sanity, crop, channels...) are allowed as additions
CHANGED_SINCE = {"/results/preprocessing_check"}
GROWING_LISTS = {"/summary/warnings"}


def _missing_or_changed(before, now, path="") -> list[str]:
    """Every value of ``before`` is in ``now`` unchanged (``now`` may hold more keys)."""
    if path in CHANGED_SINCE:
        return []
    if path in GROWING_LISTS:  # later sections add warnings; every earlier one must still be there
        return [f"{path}: {item!r} missing" for item in before if item not in now]
    if isinstance(before, dict) and isinstance(now, dict):
        return [f"{path}/{k}: missing" for k in set(before) - set(now)] + [
            d for k in before if k in now for d in _missing_or_changed(before[k], now[k], f"{path}/{k}")
        ]
    return _same(before, now, path)


@pytest.mark.slow
def test_demo_audit_json_is_unchanged_by_the_move_to_sections(tmp_path):
    """The demo's audit.json holds every number and word of the one written before sections existed
    (commit 6b6f70c): at the move to sections it was identical (see the closing note of that change)."""
    r = run_cli(SAMPLE_MODEL, SAMPLE_TEST, "--out", tmp_path, "--quiet", "--format", "json")
    assert r.returncode == 0, r.stderr
    now = _normalise(_report_json(r.stdout))
    before = json.loads(GOLDEN.read_text())
    assert _missing_or_changed(before, now) == []


# ----------------------------------------------------------------------------------- config file


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "text,needles",
    [
        ('seed = "one"\n', ["seed (line 1)", "'one' (a string)", "an integer"]),
        ("bogus = 1\n", ["bogus (line 1)", "unknown option 'bogus'"]),
        ("seed = 1\n[sections.nosuch]\nx = 1\n", ["[sections.nosuch] (line 2)", "unknown section 'nosuch'"]),
        ("[sections.fisher]\nthreshold = 5\n", ["[sections.fisher] threshold (line 2)", "outside [0, 2]"]),
        ("[sections.fisher]\ntreshold = 0.4\n", ["[sections.fisher] treshold (line 2)", "unknown option 'treshold'"]),
        ("[sections.calibration]\nbins = 2.5\n", ["[sections.calibration] bins (line 2)", "an integer"]),
        ('disabled = ["fisher", "nope"]\n', ["disabled (line 1)", "unknown section 'nope'"]),
        ("batch_size = 0\n", ["batch_size (line 1)", "not a positive integer"]),
        ('[sections.external_sites]\nfull = "yes"\n', ["[sections.external_sites] full (line 2)", "true or false"]),
        ("seed = [1\n", ["is not valid TOML"]),
        ("[sections]\nfisher = 3\n", ["[sections.fisher]", "is 3 (a number)", "a table of the section's options"]),
        ("sections = 3\n", ["sections", "is 3 (a number)", "a table of section tables"]),
    ],
)
def test_bad_config_file_is_one_line_naming_file_key_and_line(tmp_path, text, needles):
    cfg = _write(tmp_path / "audit.toml", text)
    r = run_cli(SAMPLE_MODEL, SAMPLE_TEST, "--config", cfg, "--out", tmp_path / "out")
    assert r.returncode == 2, r.stderr
    lines = error_lines(r.stderr)
    assert len(lines) == 1 and len([x for x in r.stderr.splitlines() if x.strip()]) == 1, r.stderr
    assert str(cfg) in lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert not (tmp_path / "out").exists()  # nothing written, no model time spent


def test_missing_config_file(tmp_path):
    r = run_cli(SAMPLE_MODEL, SAMPLE_TEST, "--config", tmp_path / "absent.toml")
    assert r.returncode == 2 and error_lines(r.stderr) == [
        f"error: --config {tmp_path / 'absent.toml'}: no such file (expected a TOML configuration file)"
    ]


def test_config_file_values_are_typed_and_flags_override(tmp_path):
    cfg = _write(
        tmp_path / "a.toml",
        'models = ["m.keras"]\ndata = "d"\nseed = 7\nformat = ["json"]\n'
        'disabled = ["fisher"]\n[sections.selective_prediction]\ntarget_accuracies = [0.9]\n'
        '[sections.external_sites.sites]\n"lab two" = "x/y"\n',
    )
    options, where, section_where, table_where = load_config_file(cfg)
    c = build_config(options, where=where, section_where=section_where, table_where=table_where)
    assert c.seed == 7 and c.formats == ("json",) and c.model_paths == (Path("m.keras"),)
    assert c.options("selective_prediction").target_accuracies == (0.9,)
    assert c.options("external_sites").sites == (("lab two", "x/y"),)
    assert not c.is_enabled("fisher") and c.is_enabled("calibration")
    # the printed configuration reads back to the same configuration
    again = tmp_path / "b.toml"
    again.write_text(to_toml(c))
    options2, *_ = load_config_file(again)
    assert build_config(options2).to_dict() == c.to_dict()
    # a flag overrides the file
    from click.testing import CliRunner

    from auditor.cli import main

    r = CliRunner().invoke(main, ["--config", str(cfg), "--seed", "3", "--print-config"])
    assert r.exit_code == 0, r.output
    printed = r.stdout
    assert "seed = 3" in printed and 'format = ["json"]' in printed and '"lab two" = "x/y"' in printed


def test_print_config_fed_back_gives_the_same_audit(tmp_path, colour_model_path, colour_data):
    flags = [
        "--bootstrap",
        "40",
        "--preprocess-check-samples",
        "12",
        "--seed",
        "5",
        "--format",
        "json",
        "--fisher-threshold",
        "0.3",
        "--target-accuracy",
        "0.9,0.97",
        "--quiet",
        "--external",
        f"again={colour_data}",
    ]
    printed = run_cli(colour_model_path, colour_data, *flags, "--out", tmp_path / "a", "--print-config")
    assert printed.returncode == 0, printed.stderr
    cfg = _write(tmp_path / "effective.toml", printed.stdout.replace(str(tmp_path / "a"), str(tmp_path / "b")))
    direct = run_cli(colour_model_path, colour_data, *flags, "--out", tmp_path / "a")
    via_file = run_cli("--config", cfg)
    assert direct.returncode == 0 and via_file.returncode == 0, (direct.stderr, via_file.stderr)
    a, b = _report_json(direct.stdout), _report_json(via_file.stdout)
    assert a["config"]["sections"]["fisher"]["threshold"] == 0.3
    a["config"].pop("out")
    b["config"].pop("out")
    for d in (a, b):
        for key in ("report_id", "created_utc", "timings_seconds", "release"):  # release: this run's record
            d.pop(key)
    assert a == b


# ----------------------------------------------------------------------------------- plug-ins


@pytest.fixture
def example_plugin(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGIN))
    importlib.invalidate_caches()
    yield
    sys.modules.pop("wbc_audit_example", None)


def test_plugin_section_is_found_through_its_entry_point(example_plugin):
    reg = registry()
    assert reg.names[-1] == "class_balance" and reg.names[:-1] == registry(plugins=False).names
    assert not reg.failed_plugins
    c = AuditConfig(model_paths=(Path("m.keras"),), data_path=Path("d"), sections={"class_balance": {"max_gap": 0.2}})
    assert c.options("class_balance").max_gap == 0.2
    with pytest.raises(InputError, match=r"\[sections.class_balance\] max_gap: 1.5 is outside"):
        AuditConfig(model_paths=(Path("m.keras"),), data_path=Path("d"), sections={"class_balance": {"max_gap": 1.5}})


@pytest.mark.slow
def test_plugin_section_runs_renders_and_round_trips(example_plugin, colour_model_path, colour_data, tmp_path):
    import auditor
    from auditor.report.document import AuditReport

    report = auditor.audit(
        colour_model_path,
        colour_data,
        bootstrap=20,
        sections={"preprocessing_check": {"samples": 0}, "class_balance": {"max_gap": 0.01}},
    )
    balance = report["class_balance"]
    assert balance.true_share == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    d = report.to_dict()
    assert d["results"]["class_balance"]["max_gap"] == 0.01
    assert AuditReport.from_dict(d).to_dict() == d
    folder = report.save(tmp_path / "r", formats=("html", "json"))
    html = (folder / "report.html").read_text()
    assert "Predicted class balance" in html and 'id="class-balance"' in html
    assert (folder / "predictions.csv").is_file()


def test_unknown_sections_from_a_newer_version_are_kept(tmp_path):
    from auditor.report.document import AuditReport

    doc = json.loads(GOLDEN.read_text())
    doc.update(report_id="x", created_utc="t", config={}, environment={}, timings_seconds={})
    doc["model"]["path"] = "m.keras"
    doc["dataset"]["path"] = "d"
    doc["results"]["future_section"] = {"answer": 42}
    doc["future_top_level"] = [1, 2]
    report = AuditReport.from_dict(doc)
    assert "future_section" not in report.results
    again = report.to_dict()
    assert again["results"]["future_section"] == {"answer": 42} and again["future_top_level"] == [1, 2]
    assert _missing_or_changed(doc, again) == []  # everything read is written back


@pytest.mark.slow
def test_plugin_through_the_cli_and_broken_plugins_are_recorded(tmp_path, colour_model_path, colour_data):
    env = {"PYTHONPATH": os.pathsep.join([str(PLUGIN), str(REPO), os.environ.get("PYTHONPATH", "")])}
    r = run_cli(colour_model_path, colour_data, *FAST, "--out", tmp_path / "a", env=env)
    assert r.returncode == 0, r.stderr
    folder = Path(r.stdout.strip().splitlines()[-1])
    assert "class_balance" in json.loads((folder / "audit.json").read_text())["results"]
    assert "Predicted class balance" in (folder / "report.html").read_text()

    env = {"PYTHONPATH": os.pathsep.join([str(BROKEN), str(REPO), os.environ.get("PYTHONPATH", "")])}
    r = run_cli(colour_model_path, colour_data, *FAST, "--out", tmp_path / "b", env=env)
    assert r.returncode == 0, r.stderr  # the rest of the report stands
    doc = _report_json(r.stdout)
    failed = {f["analysis"]: f["error"] for f in doc["failures"]}
    assert "no_such_module" in failed and "failed to load" in failed["no_such_module"]
    assert "deliberate failure" in failed["raises_at_run"]
    assert doc["results"]["classification"] is not None
    assert any("raises at run analysis failed" in w for w in doc["summary"]["warnings"])
    strict = run_cli(colour_model_path, colour_data, *FAST, "--out", tmp_path / "c", "--strict", "--quiet", env=env)
    assert strict.returncode == 1 and error_lines(strict.stderr) == [
        "error: 2 analysis failure(s) recorded in the report (--strict)"
    ]


# ----------------------------------------------------------------------------------- Python API


@pytest.mark.slow
def test_python_api_gives_the_cli_numbers(tmp_path):
    import auditor

    r = run_cli(
        SAMPLE_MODEL,
        SAMPLE_TEST,
        "--out",
        tmp_path,
        "--quiet",
        "--format",
        "json",
        "--bootstrap",
        "200",
        "--preprocess-check-samples",
        "60",
    )
    assert r.returncode == 0, r.stderr
    cli = _report_json(r.stdout)
    report = auditor.audit(
        str(SAMPLE_MODEL), str(SAMPLE_TEST), bootstrap=200, sections={"preprocessing_check": {"samples": 60}}
    )
    api = report.to_dict()
    assert report["classification"].metrics.accuracy == cli["results"]["classification"]["accuracy"]
    assert _same(_normalise(cli), _normalise(api)) == []
    folder = report.save(tmp_path / "saved", formats=("json",))
    again = auditor.load_report(folder)
    assert again.to_dict() == json.loads((folder / "audit.json").read_text())
    assert again["calibration"].ece == report["calibration"].ece


def test_python_api_input_errors_name_the_option():
    import auditor

    with pytest.raises(InputError, match=r"^sections.fisher.threshold: 9.0 is outside"):
        auditor.audit("m.keras", "d", sections={"fisher": {"threshold": 9.0}})
    with pytest.raises(InputError, match=r"^seed: is 'x' \(a string\) \(expected an integer\)"):
        auditor.audit("m.keras", "d", seed="x")


def test_load_report_of_a_missing_file(tmp_path):
    import auditor

    with pytest.raises(InputError, match="no such file"):
        auditor.load_report(tmp_path / "nothing")
