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
    assert main(["lists", "--store", str(tmp_path / "s"), "pin", "svc", "sha256:" + "a" * 64, str(bad)]) == 1
    err = capsys.readouterr().err
    assert "relative" in err and "relative/path" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s" / "pins").exists() or not any((tmp_path / "s" / "pins").glob("*.list"))


@pytest.mark.parametrize("image, body, says", [
    ("sha256:" + "a" * 64, "", "empty"),
    ("sha256:" + "a" * 64, "\n\n", "empty"),
    ("notadigest!", "/ok\n", "neither an image digest nor an image ref"),
    ("sha256:x", "/ok\n", "not an image digest"),
    ("sha256:" + "a" * 64, None, "No such file"),
])
def test_pin_refuses_what_would_silently_misbehave(tmp_path, capsys, image, body, says):
    path = tmp_path / "hand.list"
    if body is not None:
        path.write_text(body)
    assert main(["lists", "--store", str(tmp_path / "s"), "pin", "svc", image, str(path)]) == 1
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1 and "Errno" not in err
    assert not (tmp_path / "s" / "pins").exists() or not any((tmp_path / "s" / "pins").glob("*.list"))


def test_pin_by_image_ref_is_stored_under_the_normalised_ref(tmp_path, capsys):
    hand = tmp_path / "hand.list"
    hand.write_text("/usr/sbin/nginx\n")
    assert main(["lists", "--store", str(tmp_path / "s"), "pin", "default/web/nginx", "nginx", str(hand)]) == 0
    capsys.readouterr()
    assert main(["lists", "--store", str(tmp_path / "s"), "show"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.split("\t")[:2] == ["default/web/nginx", "docker.io/library/nginx:latest"]


def test_a_file_given_as_the_corpus_is_named_as_such(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    assert main(["build", str(f), "--store", str(tmp_path / "s"), "--no-progress"]) == 2
    assert "is not a directory" in capsys.readouterr().err


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


def _bad_corpus(kind: str, root, data):
    """A copy of `data` broken in one of the issue's ways."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from advisor.synth import write_corpus

    runs, acc, inv = (pd.read_parquet(data / "traces" / f"{n}.parquet") for n in ("runs", "accesses", "inventory"))
    if kind == "relative_path":
        acc.loc[3, "path"] = "usr/lib/relative.so"
    elif kind == "single_run":
        lone = runs.iloc[[0]].copy()
        lone["run_id"], lone["service"] = "lone-run", "lonely"
        runs = pd.concat([runs, lone], ignore_index=True)
    elif kind == "all_incomplete":
        runs.loc[runs["service"] == runs["service"].iloc[0], "complete"] = False
    elif kind == "empty_inventory":
        inv = inv.iloc[0:0]
    out = write_corpus(root, runs, acc, inv)
    if kind == "missing_column":
        pq.write_table(pa.Table.from_pandas(acc.drop(columns=["first_ns"]), preserve_index=False),
                       out / "traces" / "accesses.parquet")
    if kind == "non_utf8_path":
        t = pq.read_table(out / "traces" / "accesses.parquet")
        paths = [p.encode() for p in t.column("path").to_pylist()]
        paths[2] = b"/usr/lib/bad\xff.so"
        t = t.set_column(t.schema.get_field_index("path"), "path", pa.array(paths, pa.binary()))
        pq.write_table(t, out / "traces" / "accesses.parquet")
    return out


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing_column", "first_ns"),
        ("relative_path", "relative path"),
        ("non_utf8_path", "non-UTF-8"),
        ("single_run", "single run"),
        ("all_incomplete", "no complete run"),
        ("empty_inventory", "empty"),
    ],
)
@pytest.mark.parametrize("cmd", ["build", "evaluate"])
def test_bad_input_is_one_line_and_leaves_no_list(data, tmp_path, capsys, kind: str, message: str, cmd: str):
    """The issue's bad inputs, through the command: exit 2, one line naming the cause, no list written."""
    bad = _bad_corpus(kind, tmp_path / "bad", data)
    store = tmp_path / "store"
    if cmd == "build":  # a store that already holds a good build must come out unchanged
        assert main(["build", str(data), "--store", str(store), "--no-progress"]) == 0
    before = sorted(store.rglob("*")) if store.exists() else []
    capsys.readouterr()
    args = [cmd, str(bad), "--no-progress"] + (["--store", str(store)] if cmd == "build" else [])
    assert main(args) == 2
    cap = capsys.readouterr()
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("prefetch-advisor: bad trace corpus:")
    assert "Traceback" not in cap.err and cap.out == ""
    assert (sorted(store.rglob("*")) if store.exists() else []) == before
