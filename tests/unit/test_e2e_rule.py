"""The e2e rule of tests/conftest.py: with CI=true a missing prerequisite FAILS, else it skips."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, ci: str) -> subprocess.CompletedProcess[str]:
    project = tmp_path / "proj"
    (project / "tests" / "e2e").mkdir(parents=True)
    shutil.copy(REPO / "tests" / "conftest.py", project / "tests" / "conftest.py")
    (project / "tests" / "e2e" / "test_needs_testbed.py").write_text(
        "def test_uses_containerd():\n    assert True\n")
    (project / "tests" / "unit").mkdir()
    (project / "tests" / "unit" / "test_plain.py").write_text("def test_plain():\n    pass\n")
    env = {**os.environ, "CI": ci, "PYTHONPATH": str(REPO),
           "TESTBED_CACHE": str(tmp_path / "no-such-cache")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider", "--rootdir",
         str(project), "-o", "markers=e2e: e2e", str(project / "tests")],
        capture_output=True, text=True, cwd=project, env=env, timeout=120)


def test_missing_prerequisite_fails_under_ci(tmp_path: Path) -> None:
    r = _run(tmp_path, "true")
    assert r.returncode == 1, r.stdout
    assert "FAILED" in r.stdout and "test_uses_containerd" in r.stdout
    assert "e2e prerequisite missing (CI=true, so this fails)" in r.stdout
    assert "1 failed, 1 passed" in r.stdout


def test_missing_prerequisite_skips_outside_ci(tmp_path: Path) -> None:
    r = _run(tmp_path, "")
    assert r.returncode == 0, r.stdout
    assert "SKIPPED" in r.stdout and "e2e prerequisite missing" in r.stdout
    assert "1 passed, 1 skipped" in r.stdout

