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
