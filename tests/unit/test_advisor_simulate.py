"""advisor.simulate: the lazy-loading model against cases worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from advisor.simulate import SimParams, simulate_paths

P = SimParams(rtt_s=0.01, bandwidth_Bps=100e6, chunk_bytes=1 << 20, prefetch_concurrency=4)


def test_no_prefetch_pays_round_trips_and_bytes_on_demand():
    # Two files of 2 chunks each: 2 rtt + bytes/bw per file, plus 0.1 s compute before each and 0.05 s tail.
    size = 2 << 20
    r = simulate_paths([100_000_000, 200_000_000], [size, size], ["/a", "/b"], 250_000_000, [], [], P)
    expect_stall = 2 * (2 * P.rtt_s + size / P.bandwidth_Bps)
    assert r.compute_s == pytest.approx(0.25)
    assert r.stall_s == pytest.approx(expect_stall, rel=1e-6)
    assert r.ondemand_bytes == 2 * size and r.prefetch_bytes == 0


def test_prefetch_that_finishes_during_compute_hides_all_stall():
    r = simulate_paths([500_000_000], [1000], ["/a"], 600_000_000, ["/a"], [1000], P)
    assert r.time_to_ready_s == pytest.approx(0.6)
    assert r.stall_s == pytest.approx(0.0, abs=1e-9)


def test_waiting_for_an_in_flight_prefetch():
    # Needed at t=0: prefetch already started it, so the app waits for rtt + bytes/bw only once.
    size = 500_000
    r = simulate_paths([0], [size], ["/a"], 0, ["/a"], [size], P)
    assert r.time_to_ready_s == pytest.approx(P.rtt_s + size / P.bandwidth_Bps, rel=1e-6)
    assert r.ondemand_bytes == 0


def test_useless_prefetch_competes_for_bandwidth_with_on_demand_reads():
    need = ["/n"]
    size = 10 << 20
    alone = simulate_paths([0], [size], need, 0, [], [], P)
    junk = [f"/junk{i}" for i in range(4)]
    crowded = simulate_paths([0], [size], need, 0, junk, [50 << 20] * 4, P)
    # Four prefetch streams share the link with the on-demand stream: the read takes longer.
    assert crowded.time_to_ready_s > alone.time_to_ready_s * 1.5


def test_list_order_matters():
    paths = [f"/f{i}" for i in range(40)]
    sizes = np.full(40, 2 << 20)
    ns = np.arange(40) * 5_000_000
    good = simulate_paths(ns, sizes, paths, ns[-1], paths, sizes, P)
    bad = simulate_paths(ns, sizes, paths, ns[-1], paths[::-1], sizes, P)
    assert good.time_to_ready_s < bad.time_to_ready_s


def test_empty_needed_set_is_just_compute():
    r = simulate_paths([], [], [], 300_000_000, ["/x"], [100], P)
    assert r.time_to_ready_s == pytest.approx(0.3)


def test_access_order_is_not_a_strict_lower_bound_when_prefetch_threads_are_few():
    """Why `learned` can come out below `oracle` on single runs (docs/simulation.md, "The oracle").

    One prefetch thread, four tiny files needed back to back: the access-order list costs one
    round trip per file in sequence. A list that leaves f2 out lets the application fetch f2 on
    demand while the prefetch thread fetches f3: two requests in flight instead of one.
    """
    p = SimParams(rtt_s=0.020, bandwidth_Bps=1e12, chunk_bytes=1 << 20, prefetch_concurrency=1)
    paths = ["/f0", "/f1", "/f2", "/f3"]
    first_ns, sizes = [0, 0, 0, 0], [1, 1, 1, 1]
    oracle = simulate_paths(first_ns, sizes, paths, 0, paths, sizes, p)
    skip_f2 = simulate_paths(first_ns, sizes, paths, 0, ["/f0", "/f1", "/f3"], [1, 1, 1], p)
    assert oracle.time_to_ready_s == pytest.approx(0.080, abs=1e-6)
    assert skip_f2.time_to_ready_s == pytest.approx(0.060, abs=1e-6)
    assert skip_f2.ondemand_bytes == 1
    # With a thread per file every request starts at t=0, and the access-order list is best again.
    wide = SimParams(rtt_s=0.020, bandwidth_Bps=1e12, chunk_bytes=1 << 20, prefetch_concurrency=4)
    assert simulate_paths(first_ns, sizes, paths, 0, paths, sizes, wide).time_to_ready_s == pytest.approx(0.020, abs=1e-6)
    assert simulate_paths(first_ns, sizes, paths, 0, ["/f0", "/f1", "/f3"], [1, 1, 1], wide).time_to_ready_s > 0.020


@pytest.mark.parametrize("bandwidth_Bps", [1e8, 1.25e9, 1e12])
def test_fast_links_and_late_reads_terminate(bandwidth_Bps):
    """Float residue of a transfer must not stop the clock (it once looped forever at 1e12 B/s)."""
    p = SimParams(rtt_s=0.020, bandwidth_Bps=bandwidth_Bps)
    r = simulate_paths([0, 0, 200 * 10**9], [1, 5_000_000, 3_000_001], ["/a", "/b", "/c"], 250e9,
                       ["/c", "/a"], [3_000_001, 1], p)
    assert 250.0 < r.time_to_ready_s < 250.0 + 0.2
