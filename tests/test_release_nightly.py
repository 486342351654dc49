"""The nightly workflow end to end through the command line: three audits of one model on one data set (the
third with a degraded model), the README's systemd units and CI commands, and the release input errors."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("keras")

from auditor.cli import main
from tests.conftest import colour_model, write_colour_folder

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")
GATES = [
    "accuracy >= 0.9",
    "ece <= 0.1",
    "f1_macro >= 0.5",
    "robust_accuracy >= 0.85",
    "accuracy drop <= 0.01",
    "mcnemar_p >= 0.05",
]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def nightly_section() -> str:
    return README.split("## Nightly audits", 1)[1].split("\n## ", 1)[0]


@pytest.fixture(scope="module")
def nightly(tmp_path_factory):
    root = tmp_path_factory.mktemp("nightly")
    data = write_colour_folder(root / "data", n_per_class=12)
    (root / "models").mkdir()
    model = root / "models" / "colour.keras"
    colour_model().save(model)
    config = root / "nightly.toml"
    config.write_text(
        f'models = ["{model}"]\ndata = "{data}"\nout = "{root / "audits"}"\nbootstrap = 0\nformat = ["json"]\n'
        'enabled = ["classification", "calibration"]\nquiet = true\n'
        f"gates = {json.dumps(GATES)}\n"
        '[model_card]\nintended_use = "Colour patches, tests only"\nlimitations = "Three colours"\n'
    )
    return root, data, model, config


def degraded(model_path: Path) -> None:
    """The same model retrained badly, saved in place: the green channel now feeds the 'blue' feature too."""
    m = colour_model()
    w = np.array([[0, 0, 1], [1.2, 1, 0], [1, 0, 0]], np.float32)
    m.get_layer("features").set_weights([w, np.zeros(3, np.float32)])
    m.save(model_path)


@pytest.mark.slow
def test_nightly_scenario(nightly):
    root, _data, model, config = nightly
    out = root / "audits"
    junit = root / "gates.xml"
    first = invoke("--config", config, "--baseline", "latest", "--junit", junit)
    assert first.exit_code == 0, first.stderr
    rel1 = json.loads((Path(first.stdout.strip()) / "audit.json").read_text())["release"]
    assert rel1["version"] == 1 and "no earlier audit" in rel1["baseline_note"]
    assert {g["gate"]: g["status"] for g in rel1["gates"]}["accuracy drop <= 0.01"] == "not evaluated"
    second = invoke("--config", config, "--baseline", "latest", "--junit", junit)
    assert second.exit_code == 0, second.stderr
    degraded(model)
    third = invoke("--config", config, "--baseline", "latest", "--junit", junit, "--format", "json,html")
    assert third.exit_code == 3, third.stderr
    assert "release gate(s) failed" in third.stderr and "accuracy drop <= 0.01" in third.stderr
    folder = Path(third.stdout.strip())
    doc = json.loads((folder / "audit.json").read_text())
    rel = doc["release"]
    assert rel["version"] == 3 and rel["baseline"]["version"] == 2
    status = {g["gate"]: g for g in rel["gates"]}
    # the degraded model calls every green patch blue: accuracy 2/3, 12 images right before and wrong now
    assert doc["summary"]["headline"]["accuracy"] == pytest.approx(24 / 36)
    assert status["accuracy drop <= 0.01"]["status"] == "failed"
    assert status["accuracy drop <= 0.01"]["measured"] == pytest.approx(1 - 24 / 36)
    assert status["mcnemar_p >= 0.05"]["measured"] == pytest.approx(0.5**12)
    assert status["accuracy >= 0.9"]["status"] == "failed"
    assert status["robust_accuracy >= 0.85"]["status"] == "not evaluated"
    assert "perturbation grid section did not run" in status["robust_accuracy >= 0.85"]["message"]
    assert [t["version"] for t in rel["trend"]] == [1, 2, 3]
    assert [round(t["accuracy"], 4) for t in rel["trend"]] == [1.0, 1.0, round(24 / 36, 4)]
    assert rel["model_card"]["intended_use"] == "Colour patches, tests only"
    html = (folder / "report.html").read_text()
    assert re.search(r'class="running-version">v3<', html) and "Release gates: failed" in html
    assert (
        "Trend" in html and "figures/release_trend.png" not in html and (folder / "figures/release_trend.png").is_file()
    )
    # JUnit: one case per gate, failures with measured value and threshold
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite.get("name") == "colour.keras v3" and suite.get("tests") == str(len(GATES))
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    msg = cases["accuracy drop <= 0.01"].find("failure").get("message")
    assert "0.3333" in msg and "drop <= 0.01" in msg
    assert cases["robust_accuracy >= 0.85"].find("skipped") is not None
    ece = doc["summary"]["headline"]["ece"]
    assert status["ece <= 0.1"]["measured"] == ece and status["ece <= 0.1"]["status"] == (
        "passed" if ece <= 0.1 else "failed"
    )
    # macro-F1 of the degraded model: blue F1 2/3 (12 of 24 calls right), green 0, red 1
    assert status["f1_macro >= 0.5"]["measured"] == pytest.approx((2 / 3 + 0 + 1) / 3)
    passed = cases["f1_macro >= 0.5"]
    assert passed.find("failure") is None and passed.find("skipped") is None
    assert "passed" in passed.find("system-out").text and ">= 0.5" in passed.find("system-out").text
    # the index and the history command
    hist = invoke("history", out, "--model", "colour.keras", "--json")
    assert [(h["version"], h["outcome"]) for h in json.loads(hist.stdout)] == [
        (3, "failed"),
        (2, "passed"),
        (1, "passed"),
    ]
    assert (out / "index.html").read_text().count("<tr data-model=") == 3


def test_release_input_errors_come_before_model_time(tmp_path, nightly):
    _root, data, _model, _config = nightly
    fake = tmp_path / "fake.keras"
    fake.write_text("not a model")  # loading it would be an error of its own: these must come first
    common = [fake, data, "--quiet", "--out", tmp_path / "out"]
    r = invoke(*common, "--gate", "precision >= 0.9")
    assert r.exit_code == 2 and "unknown metric 'precision'" in r.stderr and "robust_accuracy" in r.stderr
    r = invoke(*common, "--gate", "accuracy >> 0.9")
    assert r.exit_code == 2 and "malformed gate" in r.stderr
    r = invoke(*common, "--baseline", tmp_path / "nowhere" / "audit.json")
    assert r.exit_code == 2 and "--baseline" in r.stderr and "no such file" in r.stderr
    (tmp_path / "notes.json").write_text("[1, 2]")
    r = invoke(*common, "--baseline", tmp_path / "notes.json")
    assert r.exit_code == 2 and "not a wbc-audit audit.json" in r.stderr
    r = invoke(*common, "--baseline", "v4")
    assert r.exit_code == 2 and "v4" in r.stderr and "no such audit" in r.stderr
    (tmp_path / "file").write_text("x")
    r = invoke(fake, data, "--quiet", "--out", tmp_path / "file" / "out")
    assert r.exit_code == 2 and "--out" in r.stderr and "not writable" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_readme_systemd_units_verify(tmp_path):
    units = re.findall(r"```ini\n# (wbc-audit\.\w+)\n(.*?)```", nightly_section(), re.S)
    assert [name for name, _ in units] == ["wbc-audit.service", "wbc-audit.timer"]
    tool = shutil.which("systemd-analyze")
    if not tool:
        pytest.skip("systemd-analyze is not installed")
    exe = shutil.which("wbc-audit") or shutil.which("true")
    for name, text in units:
        (tmp_path / name).write_text(text.replace("/usr/local/bin/wbc-audit", exe).replace("/srv/wbc", str(tmp_path)))
    run = subprocess.run(
        [tool, "verify", *(str(tmp_path / n) for n, _ in units)], capture_output=True, text=True, check=False
    )
    problems = [line for line in run.stderr.splitlines() if "wbc-audit" in line]
    assert run.returncode == 0 and not problems, run.stderr


@pytest.mark.slow
def test_readme_ci_and_cron_commands_run(tmp_path, nightly, monkeypatch):
    _root, data, _model, config = nightly
    section = nightly_section()
    cron = re.search(r"```cron\n(.*?)\n```", section, re.S).group(1)
    fields = cron.split(None, 5)
    assert len(fields) == 6 and "--quiet" in fields[5] and "--junit" in fields[5]
    workflow = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    commands = [c.strip() for c in re.findall(r"run: (wbc-audit .*)", workflow)]
    assert len(commands) == 2
    model = tmp_path / "models" / "wbc.keras"
    model.parent.mkdir()
    colour_model().save(model)
    shutil.copy(config, tmp_path / "nightly.toml")
    env = {"MODEL": str(model), "DATA": str(data), "OUT": str(tmp_path / "audits")}
    monkeypatch.chdir(tmp_path)
    for command in commands:
        argv = [a for a in shlex.split(command)]
        argv = [env.get(a[1:], a) if a.startswith("$") else a for a in argv]
        assert argv[0] == "wbc-audit"
        r = invoke(*argv[1:])
        assert r.exit_code == 0, (command, r.stderr)
    assert ET.parse(tmp_path / "gates.xml").getroot().get("tests") == str(len(GATES))
    assert "wbc.keras" in r.stdout and "v1" in r.stdout
