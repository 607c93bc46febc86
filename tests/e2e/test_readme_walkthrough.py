"""The README's "Trying it on the testbed" block, run as written: it must record the demo's run."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.e2e.agent_harness import REPO

pytestmark = pytest.mark.e2e

STATE_DIR = Path("/tmp/pa")  # the walkthrough's own paths
AGENT_LOG = Path("/tmp/pa-agent.log")


def walkthrough() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Trying it on the testbed", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "no sh block under 'Trying it on the testbed'"
    return block.group(1)


def _kill_agents() -> None:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"run" in cmdline and str(STATE_DIR).encode() in cmdline:
                os.kill(int(entry), signal.SIGKILL)


def test_the_readme_testbed_walkthrough_records_the_demo_run(tmp_path):
    for p in (STATE_DIR, AGENT_LOG):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    # A private slot for the testbed CLI: a testbed someone brought up by hand is left alone.
    env = {**os.environ, "TESTBED_STATE_FILE": str(tmp_path / "current.json")}
    env.pop("TESTBED_DIR", None)
    try:
        done = subprocess.run(["bash", "-e", "-c", walkthrough()], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=180)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        rows = [line for line in done.stdout.splitlines() if "default/demo/app" in line]
        assert len(rows) == 1, done.stdout
        assert re.search(r"\bexit\s+False\s+\d+\s+early_exit$", rows[0]), rows[0]
        assert not (tmp_path / "current.json").exists()  # the walkthrough brought its testbed down
    finally:
        _kill_agents()
        if (tmp_path / "current.json").exists():
            subprocess.run([str(REPO / ".venv/bin/python"), "-m", "testbed", "down"], cwd=REPO, env=env, timeout=60)
        shutil.rmtree(STATE_DIR, ignore_errors=True)
        AGENT_LOG.unlink(missing_ok=True)
