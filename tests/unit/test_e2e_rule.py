"""The skip rules of tests/conftest.py: with CI=true a missing e2e prerequisite, or any other skip,
FAILS; otherwise they skip."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, ci: str, other_skips: bool = False) -> subprocess.CompletedProcess[str]:
    project = tmp_path / "proj"
    (project / "tests" / "e2e").mkdir(parents=True)
    shutil.copy(REPO / "tests" / "conftest.py", project / "tests" / "conftest.py")
    (project / "tests" / "e2e" / "test_needs_testbed.py").write_text(
        "def test_uses_containerd():\n    assert True\n")
    (project / "tests" / "unit").mkdir()
    (project / "tests" / "unit" / "test_plain.py").write_text("def test_plain():\n    pass\n")
    if other_skips:
        (project / "tests" / "unit" / "test_skips.py").write_text(
            "import pytest\n"
            "def test_skips_itself():\n    pytest.skip('fanotify unsupported here')\n"
            "def test_needs_a_module():\n    pytest.importorskip('no_such_module_here')\n"
            "@pytest.mark.skip(reason='marked')\ndef test_marked():\n    pass\n")
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



def test_any_other_skip_fails_under_ci(tmp_path: Path) -> None:
    r = _run(tmp_path, "true", other_skips=True)
    assert r.returncode == 1, r.stdout
    assert "4 failed, 1 passed" in r.stdout
    assert "skipped under CI=true, so this fails: Skipped: fanotify unsupported here" in r.stdout
    assert "skipped under CI=true, so this fails: Skipped: could not import 'no_such_module_here'" in r.stdout
    assert "skipped under CI=true, so this fails: Skipped: marked" in r.stdout


def test_other_skips_stay_skips_outside_ci(tmp_path: Path) -> None:
    r = _run(tmp_path, "", other_skips=True)
    assert r.returncode == 0, r.stdout
    assert "1 passed, 4 skipped" in r.stdout
