"""A plain, non-editable `pip install .` gives a `wbc-audit` that renders reports: the templates are
installed as package data, and nothing is read from the source tree."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from tests.conftest import REPO, write_colour_folder

pytestmark = pytest.mark.slow


def test_non_editable_install_renders_a_report(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(wheels), str(REPO)],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    wheel = next(wheels.glob("wbc_audit-*.whl"))
    env_dir = tmp_path / "fresh"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # the fresh environment borrows the dependencies (TensorFlow etc.) of the test environment,
    # but gets the package itself only from the wheel
    (Path(site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--quiet", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
        text=True,
    )
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert "auditor/templates/report.html" in names and "auditor/templates/report.css" in names

    work = tmp_path / "elsewhere"
    data = write_colour_folder(work / "data", n_per_class=3)
    from tests.conftest import colour_model

    colour_model().save(work / "m.keras")
    probe = subprocess.run(
        [
            str(py),
            "-c",
            "import auditor, auditor.report.render as r; print(auditor.__file__); print(r.templates_dir())",
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=work,
    )
    module_file, templates = probe.stdout.split()
    assert module_file.startswith(site) and templates.startswith(site), probe.stdout
    script = env_dir / "bin" / "wbc-audit"
    assert script.is_file()
    r = subprocess.run(
        [
            str(script),
            "m.keras",
            str(data),
            "--class-names",
            "blue,green,red",
            "--out",
            "out",
            "--format",
            "html,json",
            "--quiet",
            "--bootstrap",
            "20",
            "--preprocess-check-samples",
            "0",
        ],
        capture_output=True,
        text=True,
        cwd=work,
        env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "2", "HOME": str(tmp_path)},
        check=False,
    )
    assert r.returncode == 0, r.stderr
    folder = work / r.stdout.strip()
    assert "<html" in (folder / "report.html").read_text()
    assert json.loads((folder / "audit.json").read_text())["schema_version"] == 1
