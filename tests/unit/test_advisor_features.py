"""advisor.features: history features at each origin, on a corpus small enough to check by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from advisor.features import FEATURES, KINDS, build_images, file_kind, labels, origin_features
from advisor.traces import validate

T0 = pd.Timestamp("2026-01-01T00:00:00Z")
DIGEST = "sha256:" + "a" * 64


def _corpus():
    """Service A: 4 runs; /bin/a every run, /lib/x.so in runs 0 and 2, /etc/a.conf only after ready.
    Service B (same image): 2 runs, both read /usr/lib/python3/b.py. Run A2 is incomplete."""
    runs, acc = [], []

    def run(rid, svc, i, ready, complete, files):
        runs.append({"run_id": rid, "service": svc, "image_digest": DIGEST, "started_at": T0 + pd.Timedelta(hours=i),
                     "ready_ns": ready, "complete": complete, "agent_version": "test"})
        for seq, (path, t, kinds) in enumerate(files):
            acc.append({"run_id": rid, "path": path, "seq": seq, "first_ns": t, "kinds": kinds, "size": 10, "from_image": True})

    run("a0", "A", 0, 100, True, [("/bin/a", 10, "exec,open,read"), ("/lib/x.so", 20, "open,read"), ("/etc/a.conf", 200, "open")])
    run("b0", "B", 1, 100, True, [("/usr/lib/python3/b.py", 5, "open,read")])
    run("a1", "A", 2, 100, True, [("/bin/a", 10, "exec,open,read"), ("/etc/a.conf", 300, "open")])
    run("a2", "A", 3, None, False, [("/bin/a", 10, "exec,open,read"), ("/lib/x.so", 30, "open,read")])
    run("b1", "B", 4, 100, True, [("/usr/lib/python3/b.py", 6, "open,read")])
    run("a3", "A", 5, 100, True, [("/bin/a", 12, "exec,open,read")])
    inv = pd.DataFrame({"image_digest": DIGEST,
                        "path": ["/bin/a", "/lib/x.so", "/lib/y.so", "/lib/z.so", "/etc/a.conf", "/usr/lib/python3/b.py"],
                        "size": [10] * 6, "type": "f", "mode": [0o755, 0o644, 0o644, 0o644, 0o644, 0o644], "link_target": None})
    runs = pd.DataFrame(runs)
    for f in ("image_ref_normalized", "window_ns"):
        runs[f] = None
    acc = pd.DataFrame(acc)
    acc["opens"] = 1
    return validate(runs, acc, inv)


@pytest.fixture(scope="module")
def img():
    return build_images(_corpus(), incomplete_weight=0.5)[DIGEST]


def _feat(of, img, k, path, name):
    col = img.index.get_loc(path)
    row = np.flatnonzero((of.origin == k) & (of.file == col))
    assert len(row) == 1, f"{path} not a candidate at origin {k}"
    return float(of.X[row[0], FEATURES.index(name)])


def test_matrices(img):
    a = img.services["A"]
    assert a.run_ids.tolist() == ["a0", "a1", "a2", "a3"]
    x = img.index.get_loc("/lib/x.so")
    conf = img.index.get_loc("/etc/a.conf")
    assert a.need[:, x].tolist() == [True, False, True, False]
    assert a.late[:, conf].tolist() == [True, True, False, False]
    assert not a.need[:, conf].any()
    assert a.weight.tolist() == [1.0, 1.0, 0.5, 1.0]


def test_frequency_recency_and_gap(img):
    a = img.services["A"]
    of = origin_features(img, a, np.arange(a.n + 1))
    # Origin 3 (runs a0, a1, a2 known; a2 weighs 0.5): /lib/x.so read in a0 and a2.
    assert _feat(of, img, 3, "/lib/x.so", "freq") == pytest.approx((1 + 0.5) / 2.5)
    assert _feat(of, img, 3, "/lib/x.so", "last_gap") == 1
    assert _feat(of, img, 2, "/lib/x.so", "last_gap") == 2
    assert _feat(of, img, 3, "/bin/a", "freq") == pytest.approx(1.0)
    assert _feat(of, img, 3, "/etc/a.conf", "late_freq") == pytest.approx(2 / 2.5)
    # Recency: decay 0.7; at origin 2 (a0 read x, a1 did not) → 0.7 / (1 + 0.7).
    assert _feat(of, img, 2, "/lib/x.so", "freq_rw") == pytest.approx(0.7 / 1.7, rel=1e-5)
    assert _feat(of, img, 3, "/bin/a", "exec_seen") == 1
    assert _feat(of, img, 1, "/bin/a", "t_mean") == pytest.approx(np.log1p(10 / 1e6), rel=1e-4)


def test_siblings_only_count_runs_before_the_origin(img):
    a = img.services["A"]
    of = origin_features(img, a, np.arange(a.n + 1))
    py = img.index.get_loc("/usr/lib/python3/b.py")
    # Origin 0 of A is before B's first run: b.py is not a candidate yet.
    assert not ((of.origin == 0) & (of.file == py)).any()
    assert _feat(of, img, 1, "/usr/lib/python3/b.py", "sib_pop") == 1.0
    assert _feat(of, img, 1, "/usr/lib/python3/b.py", "n_sib") == 1.0
    assert _feat(of, img, 1, "/usr/lib/python3/b.py", "freq") == 0.0


def test_directory_fraction_uses_the_inventory(img):
    a = img.services["A"]
    of = origin_features(img, a, np.array([1]))
    # /lib holds x.so, y.so, z.so in the inventory; A has read x.so only.
    assert _feat(of, img, 1, "/lib/x.so", "dir_frac") == pytest.approx(1 / 3)


def test_new_service_gets_sibling_candidates_only(img):
    of = origin_features(img, None, np.array([0]), at_ns=np.array([np.iinfo(np.int64).max]), exclude="A")
    files = {img.paths[f] for f in of.file}
    assert files == {"/usr/lib/python3/b.py"}


def test_labels_are_the_target_runs_reads(img):
    a = img.services["A"]
    of = origin_features(img, a, np.array([1, 2]))
    need, _ = labels(a, of)
    got = {(int(k), img.paths[f]): bool(n) for k, f, n in zip(of.origin, of.file, need)}
    assert got[(1, "/lib/x.so")] is False
    assert got[(2, "/lib/x.so")] is True
    assert got[(1, "/bin/a")] is True


def test_file_kind():
    paths = pd.Series(["/usr/lib/libc.so.6", "/usr/bin/python3", "/usr/lib/python3/x.pyc", "/etc/nginx/nginx.conf", "/usr/share/a.dat", "/opt/run.sh"])
    k = file_kind(paths, np.array([0o644, 0o755, 0o644, 0o644, 0o644, 0o755]), np.zeros(6, bool))
    assert [KINDS[i] for i in k] == ["elf_lib", "executable", "bytecode", "config", "data", "executable"]
