"""Architecture rules that a refactor could silently break."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

IMPORTS_TF = re.compile(r"^\s*(import|from)\s+(tensorflow|keras)\b", re.M)


def test_only_the_model_adapter_imports_tensorflow():
    code = (
        "import sys; import auditor.cli, auditor.pipeline, auditor.history, auditor.data, "
        "auditor.analyses.metrics, auditor.analyses.preprocessing, auditor.analyses.dataquality, "
        "auditor.report.render, auditor.report.figures, auditor.sections, auditor.families, auditor.resize, "
        "auditor.prepcheck, auditor.config; "
        "bad = [m for m in ('tensorflow', 'keras') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    offenders = []
    for path in (REPO / "auditor").rglob("*.py"):
        if path.name == "model.py":
            continue
        if IMPORTS_TF.search(path.read_text()):
            offenders.append(path.relative_to(REPO).as_posix())
    assert not offenders, offenders


def test_analyses_do_not_touch_pyplot_or_environment():
    for path in (REPO / "auditor" / "analyses").glob("*.py"):
        text = path.read_text()
        assert "pyplot" not in text and "os.environ" not in text, path.name


def test_templates_are_package_data():
    cfg = (REPO / "setup.cfg").read_text()
    assert "auditor.templates = templates" in cfg
    assert (REPO / "templates" / "report.html").is_file() and Path(REPO / "templates" / "report.css").is_file()
