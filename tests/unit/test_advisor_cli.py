"""advisor.cli: commands, JSON shapes, and one-line errors with no stack trace and no list on disk."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from advisor.cli import main
from advisor.synth import SynthSpec, generate, write_corpus


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"), *generate(SynthSpec.small()))


def test_traces_summary_json(data, capsys):
    assert main(["traces", "summary", str(data), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    runs = pd.read_parquet(data / "traces" / "runs.parquet")
    assert s["runs"] == len(runs)
    assert s["services"] == runs["service"].nunique()
    assert s["images"] == runs["image_digest"].nunique()
    assert s["complete_runs"] == int(runs["complete"].sum())
    assert s["min_complete_runs_per_service"] == int(runs.groupby("service")["complete"].sum().min())


def test_traces_summary_table(data, capsys):
    assert main(["traces", "summary", str(data)]) == 0
    out = capsys.readouterr().out
    assert "min_complete_runs_per_service" in out and "img0-svc0" in out


def test_build_then_show_pin_remove(data, tmp_path, capsys):
    store = tmp_path / "store"
    assert main(["build", str(data), "--store", str(store), "--no-progress"]) == 0
    built = capsys.readouterr().out.strip().splitlines()
    runs = pd.read_parquet(data / "traces" / "runs.parquet")
    assert len(built) == len(runs.groupby(["service", "image_digest"]))
    assert main(["lists", "--store", str(store), "show", "img0-svc1"]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown and all(p.startswith("/") for p in shown)
    assert main(["lists", "--store", str(store), "show", "img0-svc1", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert [e["path"] for e in rep["entries"]] == shown
    assert all(e["score_s"] > 0 and 0 <= e["p_need"] <= 1 for e in rep["entries"])

    digest = rep["image_digest"]
    hand = tmp_path / "hand.list"
    hand.write_text("/etc/app0/conf1.conf\n/usr/bin/tool0_1\n")
    assert main(["lists", "--store", str(store), "pin", "img0-svc1", digest, str(hand)]) == 0
    capsys.readouterr()
    assert main(["lists", "--store", str(store), "show", "img0-svc1"]) == 0
    assert capsys.readouterr().out.splitlines() == ["/etc/app0/conf1.conf", "/usr/bin/tool0_1"]
    assert main(["lists", "--store", str(store), "remove", "img0-svc1", "--scope", "pin"]) == 0
    capsys.readouterr()
    assert main(["lists", "--store", str(store), "show", "img0-svc1"]) == 0
    assert capsys.readouterr().out.splitlines() == shown
    assert main(["lists", "--store", str(store), "remove", "img0-svc1"]) == 0
    capsys.readouterr()
    assert main(["lists", "--store", str(store), "show", "img0-svc1"]) == 1
    assert "no list" in capsys.readouterr().err


def test_pin_rejects_a_relative_entry(tmp_path, capsys):
    bad = tmp_path / "bad.list"
    bad.write_text("/ok\nrelative/path\n")
    assert main(["lists", "--store", str(tmp_path / "s"), "pin", "svc", "sha256:x", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "relative" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s" / "pins").exists() or not any((tmp_path / "s" / "pins").glob("*.list"))


def test_evaluate_json(data, capsys):
    assert main(["evaluate", str(data), "--json", "--no-progress"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert set(rep) >= {"strategies", "transfer", "params"}
    for name in ("none", "all", "first_run", "last_run", "union", "frequent", "learned", "oracle"):
        e = rep["strategies"][name]
        assert {"median_startup_vs_oracle", "median_bytes_vs_oracle", "median_recall_bytes", "median_precision_bytes"} <= set(e)


def test_corrupt_corpus_is_one_line_no_traceback_and_no_list_on_disk(data, tmp_path):
    bad = tmp_path / "bad"
    (bad / "traces").mkdir(parents=True)
    for name in ("runs", "inventory"):
        (bad / "traces" / f"{name}.parquet").write_bytes((data / "traces" / f"{name}.parquet").read_bytes())
    body = (data / "traces" / "accesses.parquet").read_bytes()
    (bad / "traces" / "accesses.parquet").write_bytes(body[: len(body) // 3])
    store = tmp_path / "store"
    p = subprocess.run([sys.executable, "-m", "advisor", "build", str(bad), "--store", str(store)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "corrupt or truncated Parquet" in lines[0]
    assert "Traceback" not in p.stderr
    assert not store.exists() or not list(store.rglob("*.list"))
