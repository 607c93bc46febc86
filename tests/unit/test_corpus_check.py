"""The corpus checks catch what they claim to catch (on small hand-made corpora)."""

from __future__ import annotations

import pandas as pd

from corpus.check import (Corpus, check_complete_runs, check_image_paths, check_incomplete_flags,
                          check_runtime_files, check_times)

D = "sha256:img"
T0 = pd.Timestamp("2026-12-03T19:00:00Z")


def _corpus(accesses: list[dict], complete: bool = True, flags: dict | None = None) -> Corpus:
    runs = pd.DataFrame([{
        "run_id": "r1", "service": "ns/a/main", "image_digest": D, "complete": complete,
        "started_at": T0, "ended_at": T0 + pd.Timedelta(seconds=2), "ready_ns": 1_000_000_000,
        "flag_overflow": False, "flag_late_attach": False, "flag_early_exit": False,
        "flag_agent_restart": False, "flag_runtime_restart": False, **(flags or {}),
    }])
    acc = pd.DataFrame([{"run_id": "r1", "seq": i, "opens": 1, "kinds": "open", "size": 1, **a}
                        for i, a in enumerate(accesses)])
    inv = pd.DataFrame([{"image_digest": D, "path": p, "type": t, "size": 1, "link_target": None, "mode": 0o644}
                        for p, t in (("/usr/bin/x", "f"), ("/etc/conf", "f"), ("/etc/link", "l"), ("/tmp", "d"))])
    return Corpus(runs, acc, inv, None)


GOOD = [
    {"path": "/usr/bin/x", "first_ns": 10, "from_image": True},
    {"path": "/etc/conf", "first_ns": 20, "from_image": False},  # modified image file: allowed
    {"path": "/tmp/ready", "first_ns": 30, "from_image": False},
]


def test_a_consistent_corpus_passes() -> None:
    c = _corpus(GOOD)
    assert check_image_paths(c) == [] and check_runtime_files(c) == [] and check_times(c) == []
    assert check_complete_runs(c, 1) == [] and check_incomplete_flags(c) == []


def test_image_path_missing_from_inventory_is_reported() -> None:
    c = _corpus(GOOD + [{"path": "/usr/lib/gone.so", "first_ns": 40, "from_image": True}])
    assert "not in their image's inventory" in check_image_paths(c)[0]
    assert check_runtime_files(c)  # and it is also a runtime file wrongly flagged


def test_symlink_is_not_an_image_file_read() -> None:
    c = _corpus(GOOD + [{"path": "/etc/link", "first_ns": 40, "from_image": True}])
    assert check_image_paths(c)


def test_runtime_file_flagged_from_image_is_reported() -> None:
    bad = GOOD[:2] + [{"path": "/tmp/ready", "first_ns": 30, "from_image": True}]
    assert any("/tmp" in p or "outside" in p for p in check_runtime_files(_corpus(bad)))


def test_corpus_without_runtime_files_cannot_pass_the_runtime_check() -> None:
    assert check_runtime_files(_corpus(GOOD[:2]))


def test_time_going_backwards_is_reported() -> None:
    bad = [dict(GOOD[0]), dict(GOOD[1], first_ns=5), GOOD[2]]
    assert "decreases" in check_times(_corpus(bad))[0]


def test_too_few_complete_runs_and_flagged_complete_runs_are_reported() -> None:
    assert check_complete_runs(_corpus(GOOD), 2)
    assert check_complete_runs(_corpus(GOOD, complete=False), 1)
    assert check_incomplete_flags(_corpus(GOOD, flags={"flag_overflow": True}))
