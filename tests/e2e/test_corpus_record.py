"""The corpus recipe, small (1 image, 1 service, 2 runs), end to end, so `make corpus` cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from corpus import check

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.e2e
def test_corpus_record_small(tmp_path: Path) -> None:
    out = tmp_path / "data"
    proc = subprocess.run(
        [sys.executable, "-m", "corpus", "record", "--out", str(out), "--services", "web-static",
         "--runs", "2", "--early-exits", "0", "--agent-restarts", "0", "--upgrade-runs", "0",
         "--state-dir", str(tmp_path / "state")],
        cwd=REPO, capture_output=True, text=True, timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["runs"] == 2 and summary["complete_runs"] == 2
    assert summary["unrecorded_plans"] == 0
    c = check.load(out)
    assert set(c.runs.service) == {"corpus/web-static/main"}
    assert (c.runs.ready_source == "marker").all()
    assert c.inventory.image_digest.nunique() == 1
    # nginx itself was traced: its binary exec'd and its config read, from the image
    img = c.accesses[c.accesses.from_image]
    assert {"/usr/sbin/nginx", "/etc/nginx/mime.types", "/opt/app/static.sh"} <= set(img.path)
    assert "exec" in img[img.path == "/usr/sbin/nginx"].kinds.iloc[0]
    assert check.check_all(out, min_complete=2) == []
    assert (out / "README.md").read_text().count("web-static") >= 2
