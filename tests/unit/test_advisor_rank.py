"""advisor.rank: cost/benefit inclusion, need-time order, byte budget."""

from __future__ import annotations

import numpy as np

from advisor.rank import rank_files
from advisor.simulate import SimParams, simulate_paths

P = SimParams()
MB = 1_000_000


def _libs(n=200):
    paths = np.array([f"/usr/lib/x86_64-linux-gnu/lib{i}.so.1" for i in range(n)], dtype=object)
    return paths, np.full(n, 150_000), np.full(n, 0.97), np.linspace(1, 1000, n)


def test_rare_300mb_file_does_not_delay_200_small_libs_needed_in_the_first_second():
    paths, size, p, t = _libs()
    # The big file, when it is read at all, is read early: its need time alone would put it first.
    paths = np.append(paths, "/usr/share/model/weights.bin")
    size = np.append(size, 300 * MB)
    p = np.append(p, 0.05)
    t = np.append(t, 0.5)
    ranked = rank_files(paths, size, p, t, P)
    chosen = ranked.loc[ranked["include"], "path"].tolist()
    assert set(chosen[:200]) == set(paths[:200])
    assert "/usr/share/model/weights.bin" not in chosen
    # And the simulated start-up with our list is the oracle's.
    ns = (t[:200] * 1e6).astype(int)
    ours = simulate_paths(ns, size[:200], paths[:200], 1.1e9, chosen, ranked.loc[ranked["include"], "size"], P)
    oracle = simulate_paths(ns, size[:200], paths[:200], 1.1e9, paths[:200], size[:200], P)
    assert ours.time_to_ready_s <= oracle.time_to_ready_s * 1.01


def test_uncertain_big_file_is_kept_but_ordered_after_the_likely_libs():
    paths, size, p, t = _libs()
    paths = np.append(paths, "/usr/share/model/weights.bin")
    size = np.append(size, 300 * MB)
    p = np.append(p, 0.45)  # worth fetching (saves 0.45*(287 rtt + 3 s)), but more likely wasted than not
    t = np.append(t, 0.5)
    ranked = rank_files(paths, size, p, t, P)
    chosen = ranked.loc[ranked["include"], "path"].tolist()
    assert chosen[-1] == "/usr/share/model/weights.bin"
    assert len(chosen) == 201


def test_uncertain_small_files_go_after_likely_ones():
    paths = np.array(["/likely_late", "/unsure_early"], dtype=object)
    r = rank_files(paths, np.array([1000, 1000]), np.array([0.9, 0.3]), np.array([500.0, 1.0]), P)
    assert r.loc[r["include"], "path"].tolist() == ["/likely_late", "/unsure_early"]


def test_own_frequency_floors_the_model_and_history_time_orders():
    paths = np.array(["/a", "/b"], dtype=object)
    size = np.array([1000, 1000])
    # The model says 2 %: below the inclusion point for a one-round-trip file ...
    r = rank_files(paths, size, np.array([0.02, 0.9]), np.array([5.0, 10.0]), P)
    assert r.loc[r["include"], "path"].tolist() == ["/b"]
    # ... but the service read /a in 60 % of its runs, at 0.5 ms on average.
    r = rank_files(paths, size, np.array([0.02, 0.9]), np.array([5.0, 10.0]), P,
                   freq=np.array([0.6, 0.9]), hist_t_ms=np.array([0.5, np.nan]))
    assert r.loc[r["include"], "path"].tolist() == ["/a", "/b"]
    assert r.set_index("path").loc["/a", "p"] == 0.6 and r.set_index("path").loc["/a", "p_model"] == 0.02


def test_order_follows_expected_need_time():
    paths = np.array(["/c", "/a", "/b"], dtype=object)
    ranked = rank_files(paths, np.array([1000, 1000, 1000]), np.array([0.9, 0.9, 0.9]), np.array([30.0, 10.0, 20.0]), P)
    assert ranked["path"].tolist() == ["/a", "/b", "/c"]


def test_unlikely_file_is_excluded_when_its_waste_exceeds_its_saving():
    # 50 MB at p=0.2: saves 0.2*(48 rtt + 0.5 s) ≈ 0.29 s, wastes 0.8*(0.5 s + ...) ≈ 0.5 s.
    r = rank_files(np.array(["/x"], dtype=object), np.array([50 * MB]), np.array([0.2]), np.array([5.0]), P)
    assert not r["include"].iloc[0]
    assert r["net_s"].iloc[0] < 0
    r = rank_files(np.array(["/x"], dtype=object), np.array([50 * MB]), np.array([0.8]), np.array([5.0]), P)
    assert r["include"].iloc[0]


def test_budget_keeps_the_best_value_per_byte():
    paths = np.array(["/big", "/s1", "/s2"], dtype=object)
    size = np.array([40 * MB, 1 * MB, 1 * MB])
    r = rank_files(paths, size, np.array([0.95, 0.95, 0.95]), np.array([1.0, 2.0, 3.0]), P, budget_bytes=10 * MB)
    assert sorted(r.loc[r["include"], "path"]) == ["/s1", "/s2"]
    assert r.loc[r["include"], "size"].sum() <= 10 * MB


def test_min_prob_floor():
    r = rank_files(np.array(["/a", "/b"], dtype=object), np.array([100, 100]), np.array([0.1, 0.6]), np.array([1.0, 2.0]), P, min_prob=0.5)
    assert r.loc[r["include"], "path"].tolist() == ["/b"]


def _inventory():
    import pandas as pd

    rows = [(f"/usr/lib/mods/m{i}.so", 1000) for i in range(10)]
    rows += [(f"/usr/lib/mods/sub/s{i}.so", 10) for i in range(2)]  # makes /usr/lib/mods a non-leaf
    rows += [(f"/usr/share/zoneinfo/z{i}", 100) for i in range(20)]
    rows += [("/etc/a.conf", 5)]
    return pd.DataFrame(rows, columns=["path", "size"])


def test_collapse_a_nearly_fully_listed_leaf_directory():
    from advisor.rank import collapse_directories, directory_table

    inv = _inventory()
    zones = [f"/usr/share/zoneinfo/z{i}" for i in range(20)]
    paths = np.array(["/etc/a.conf", *zones], dtype=object)
    sizes = np.array([5] + [100] * 20)
    out = collapse_directories(paths, sizes, directory_table(inv))
    assert out["path"].tolist() == ["/etc/a.conf", "/usr/share/zoneinfo"]
    assert out["is_dir"].tolist() == [False, True]
    assert out["size"].tolist() == [5, 2000]


def test_no_collapse_when_part_missing_or_directory_has_subdirectories():
    from advisor.rank import collapse_directories, directory_table

    inv = _inventory()
    mods = [f"/usr/lib/mods/m{i}.so" for i in range(10)]  # all direct files, but sub/ exists
    zones = [f"/usr/share/zoneinfo/z{i}" for i in range(15)]  # 75 %
    paths = np.array(mods + zones, dtype=object)
    out = collapse_directories(paths, np.array([1000] * 10 + [100] * 15), directory_table(inv))
    assert not out["is_dir"].any()
    assert out["path"].tolist() == mods + zones
