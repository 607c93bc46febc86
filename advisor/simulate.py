"""An explicit lazy-loading model: how long a traced start-up takes on a cold node under a prefetch list.

The model (each parameter is documented with its source in docs/simulation.md):
- The image's data sits in a registry `rtt_s` away; the node's link carries `bandwidth_Bps`, shared
  equally by every transfer moving bytes at that moment (prefetch and on-demand compete for it).
- nydus splits files into `chunk_bytes` chunks; every request costs one round trip and then its bytes.
- Prefetch: `prefetch_concurrency` workers take the list's files in order, chunk by chunk, from t=0.
- The application replays the run's trace: the files it read before ready, in first-access order,
  separated by the compute gaps measured in the trace (recorded on a local disk, so gaps are compute).
  A file already fetched costs nothing. A file prefetch has started is waited for. Any other file is
  fetched on demand, chunk by chunk, one request at a time, and prefetch then skips it.
- Time-to-ready is when the application reaches its recorded ready point.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class SimParams:
    rtt_s: float = 0.020
    bandwidth_Bps: float = 100e6
    chunk_bytes: int = 1 << 20
    prefetch_concurrency: int = 8

    def as_dict(self) -> dict:
        return asdict(self)

    def fetch_time_s(self, size: np.ndarray | float) -> np.ndarray | float:
        """On-demand cost of one file on an idle link: one round trip per chunk plus its bytes."""
        chunks = np.maximum(1, np.ceil(np.asarray(size, dtype=float) / self.chunk_bytes))
        return chunks * self.rtt_s + np.asarray(size, dtype=float) / self.bandwidth_Bps


@dataclass(frozen=True)
class SimResult:
    time_to_ready_s: float
    compute_s: float
    stall_s: float
    prefetch_bytes: int  # bytes prefetch moved before ready
    ondemand_bytes: int


@dataclass(frozen=True)
class StartupTrace:
    """What the simulator needs from one run: needed files in first-access order, with compute gaps."""

    file_ids: np.ndarray  # int, distinct
    sizes: np.ndarray  # int bytes
    gaps_s: np.ndarray  # compute before each access (first one: since container start)
    tail_s: float  # compute after the last access until ready


def startup_trace(first_ns: np.ndarray, sizes: np.ndarray, file_ids: np.ndarray, ready_ns: float) -> StartupTrace:
    order = np.argsort(first_ns, kind="stable")
    t = np.asarray(first_ns, dtype=np.int64)[order]
    gaps = np.diff(np.concatenate([[0], t])) / 1e9
    last = t[-1] if len(t) else 0
    tail = max(0.0, (float(ready_ns) - last) / 1e9) if np.isfinite(ready_ns) else 0.0
    return StartupTrace(np.asarray(file_ids)[order], np.asarray(sizes, dtype=np.int64)[order], np.maximum(gaps, 0.0), tail)


_LAT, _XFER = 0, 1
DONE_S = 1e-9  # time resolution of the simulation: far below any round trip or compute gap


def simulate(trace: StartupTrace, list_ids: np.ndarray, list_sizes: np.ndarray, p: SimParams = SimParams()) -> SimResult:
    """Simulated time-to-ready of `trace` when nydusd prefetches `list_ids` (in order) on a cold node."""
    chunk = p.chunk_bytes
    bw = p.bandwidth_Bps
    done: set[int] = set()
    ondemand_files: set[int] = set()
    pf_left: dict[int, int] = {}  # file -> chunks prefetch has not finished yet
    listed = list(zip(list_ids.tolist(), list_sizes.tolist()))
    q_file, q_chunk = 0, 0  # next prefetch request: listed[q_file], chunk q_chunk

    def next_prefetch_request():
        nonlocal q_file, q_chunk
        while q_file < len(listed):
            f, size = listed[q_file]
            n = max(1, math.ceil(size / chunk))
            if q_chunk == 0:
                if f in done or f in ondemand_files or f in pf_left:
                    q_file += 1
                    continue
                pf_left[f] = n
            nbytes = min(chunk, size - q_chunk * chunk) if size > 0 else 0
            q_chunk += 1
            if q_chunk >= n:
                q_file, q_chunk = q_file + 1, 0
            return f, max(0, nbytes)
        return None

    # Each flow: [phase, latency_end, bytes_left, file, is_ondemand]
    flows: list[list] = []
    t = 0.0
    pf_bytes = od_bytes = 0
    for _ in range(p.prefetch_concurrency):
        req = next_prefetch_request()
        if req is None:
            break
        flows.append([_LAT, t + p.rtt_s, float(req[1]), req[0], False])
        pf_bytes += req[1]

    ids, sizes, gaps = trace.file_ids.tolist(), trace.sizes.tolist(), trace.gaps_s.tolist()
    n_need = len(ids)
    i = 0
    app_ready_at = gaps[0] if n_need else trace.tail_s  # when the app next needs something
    waiting_on: int | None = None
    od_chunks_left = 0
    compute = sum(gaps) + trace.tail_s
    finished_at = None
    idle_steps = 0

    def start_ondemand(f: int, size: int) -> None:
        nonlocal od_chunks_left, od_bytes
        ondemand_files.add(f)
        od_chunks_left = max(1, math.ceil(size / chunk))
        nbytes = min(chunk, size) if size > 0 else 0
        flows.append([_LAT, t + p.rtt_s, float(nbytes), f, True])
        od_bytes += nbytes

    while finished_at is None:
        # Application step at time t: resolve as many accesses as possible without waiting.
        while waiting_on is None and t >= app_ready_at - 1e-12:
            if i >= n_need:
                finished_at = app_ready_at
                break
            f = ids[i]
            if f in done:
                i += 1
                app_ready_at = t + (gaps[i] if i < n_need else trace.tail_s)
            elif f in pf_left:
                waiting_on = f
            else:
                waiting_on = f
                start_ondemand(f, sizes[i])
        if finished_at is not None:
            break
        # Next event: a latency ending, a transfer ending, or the app's compute ending.
        xfer = [fl for fl in flows if fl[0] == _XFER]
        rate = bw / len(xfer) if xfer else bw
        t_next = app_ready_at if waiting_on is None else math.inf
        for fl in flows:
            te = fl[1] if fl[0] == _LAT else t + fl[2] / rate
            if te < t_next:
                t_next = te
        if t_next == math.inf:  # nothing can progress: cannot happen with a consistent state
            raise RuntimeError("simulation stalled")
        dt = t_next - t
        idle_steps = idle_steps + 1 if dt <= 0 else 0
        if idle_steps > 1_000_000:  # time stopped advancing: a numeric bug, never a silent hang
            raise RuntimeError("simulation stalled: time does not advance")
        for fl in xfer:
            fl[2] -= rate * dt
        t = t_next
        # A transfer is complete when less than DONE_S of it is left. A tolerance in bytes alone
        # fails on fast links or late times: the float residue of `rate * dt` can exceed it while
        # the time left is below the resolution of t, and the loop would never advance again.
        done_bytes = max(1e-6, rate * DONE_S)
        # Retire flows whose phase ended.
        still: list[list] = []
        for fl in flows:
            if fl[0] == _LAT and fl[1] <= t + 1e-12:
                fl[0] = _XFER
            if fl[0] == _XFER and fl[2] <= done_bytes:
                f, is_od = fl[3], fl[4]
                if is_od:
                    od_chunks_left -= 1
                    if od_chunks_left > 0:
                        size = sizes[i]
                        sent = (max(1, math.ceil(size / chunk)) - od_chunks_left) * chunk
                        nbytes = max(0, min(chunk, size - sent))
                        still.append([_LAT, t + p.rtt_s, float(nbytes), f, True])
                        od_bytes += nbytes
                    else:
                        done.add(f)
                else:
                    pf_left[f] -= 1
                    if pf_left[f] == 0:
                        done.add(f)
                    req = next_prefetch_request()
                    if req is not None:
                        still.append([_LAT, t + p.rtt_s, float(req[1]), req[0], False])
                        pf_bytes += req[1]
                continue
            still.append(fl)
        flows = still
        if waiting_on is not None and waiting_on in done:
            waiting_on = None
            i += 1
            app_ready_at = t + (gaps[i] if i < n_need else trace.tail_s)
    return SimResult(float(finished_at), float(compute), float(finished_at - compute), int(pf_bytes), int(od_bytes))


def simulate_paths(first_ns, sizes, paths, ready_ns, list_paths, list_sizes, p: SimParams = SimParams()) -> SimResult:
    """Convenience wrapper keyed by path strings (tests, notebooks)."""
    index: dict[str, int] = {}
    need_ids = np.array([index.setdefault(x, len(index)) for x in paths], dtype=np.int64)
    list_ids = np.array([index.setdefault(x, len(index)) for x in list_paths], dtype=np.int64)
    tr = startup_trace(np.asarray(first_ns), np.asarray(sizes), need_ids, ready_ns)
    return simulate(tr, list_ids, np.asarray(list_sizes, dtype=np.int64), p)


__all__ = ["SimParams", "SimResult", "StartupTrace", "simulate", "simulate_paths", "startup_trace", "heapq"]
