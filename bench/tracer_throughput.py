"""Tracer throughput: our Python reader vs a minimal C fanotify reader (and pyfanotify), one run.

Two measurements on a real overlay mount, the load coming from a C generator on the other core:
- drain rate: the reader is stopped (SIGSTOP) while the generator queues all its events, then
  resumed; rate = events / (last read - first read). This is the reader's own ceiling on one core,
  independent of how fast the generator is.
    repeat: F distinct files opened P times (fresh pid per pass, so no event is merged away)
    burst:  50,000 distinct files opened once (every event is a first sight for our reader)
- live burst: the reader runs while the 50,000 distinct opens happen; drain = how long after the
  burst's last open the reader read its last event (goal <= 1 s).
Readers alternate C/C-range/ours/C/...; ratios are medians of per-round pairs (the machine is noisy).
C-range is the C reader closing each buffer's fds with one close_range(2), as ours does.
Our reader is the real Tracer (start_run on the generator's pid, run ended by its pidfd) in a child
process, so SIGSTOP freezes all its threads.

usage: sudo .venv/bin/python bench/tracer_throughput.py [--repeats 5] [--no-pyfanotify]
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tracer_common import NullStore, build, cpus, machine, meta, overlay_with_files, pin, require_root

from agent.trace import TraceConfig

IDLE_MS = 3000
# c: the reference of the goal (readlink and close per event). c-range: the same reader closing each
# buffer's fds with one close_range(2), as ours does, i.e. the ceiling of our approach.
READERS = ("c", "c-range", "ours")


def start_loadgen(loadgen: Path, root: Path, nfiles: int, passes: int, cpu: int) -> tuple[subprocess.Popen, int]:
    p = subprocess.Popen(
        [str(loadgen), str(root), str(nfiles), str(passes)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, preexec_fn=pin(cpu),
    )
    line = p.stdout.readline().strip()
    if not line.startswith("ready pid="):
        raise RuntimeError(f"loadgen did not start: {line!r}")
    return p, int(line.split("=", 1)[1])


def go_and_wait_end(p: subprocess.Popen) -> int:
    p.stdin.write("x")
    p.stdin.flush()
    fields = dict(kv.split("=") for kv in p.stdout.readline().split())  # "end_ns=T opens=N"
    p.stdin.close()
    p.stdout.close()
    p.wait()
    return int(fields["end_ns"])


def result(events: int, first: int, last: int, end_ns: int) -> dict:
    return {"events": events, "rate": events / max(1e-9, (last - first) / 1e9), "drain_s": max(0, last - end_ns) / 1e9}


def run_c(reader: Path, loadgen: Path, root: Path, nfiles: int, passes: int, cpus_: tuple[int, int], read_events: int,
          prefill: bool, close_range: bool = False) -> dict:
    rcpu, lcpu = cpus_
    r = subprocess.Popen(
        [str(reader), str(root), str(nfiles * passes), str(IDLE_MS), str(read_events), *(["range"] if close_range else [])],
        stdout=subprocess.PIPE, text=True, preexec_fn=pin(rcpu),
    )
    assert r.stdout.readline().strip() == "ready"
    lg, _pid = start_loadgen(loadgen, root, nfiles, passes, lcpu)
    if prefill:
        os.kill(r.pid, signal.SIGSTOP)
    end_ns = go_and_wait_end(lg)
    if prefill:
        os.kill(r.pid, signal.SIGCONT)
    out = dict(kv.split("=") for kv in r.stdout.readline().split())
    r.wait()
    return result(int(out["events"]), int(out["first_ns"]), int(out["last_ns"]), end_ns)


def run_ours(loadgen: Path, root: Path, nfiles: int, passes: int, cpus_: tuple[int, int], read_events: int, prefill: bool) -> dict:
    rcpu, lcpu = cpus_
    child = subprocess.Popen(
        [sys.executable, __file__, "--child-ours", "--read-events", str(read_events)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, preexec_fn=pin(rcpu),
    )
    assert child.stdout.readline().strip() == "up"
    lg, pid = start_loadgen(loadgen, root, nfiles, passes, lcpu)
    child.stdin.write(f"{pid}\n")
    child.stdin.flush()
    if child.stdout.readline().strip() != "marked":
        raise RuntimeError("tracer child could not start the run")
    if prefill:
        os.kill(child.pid, signal.SIGSTOP)
    end_ns = go_and_wait_end(lg)  # the generator exits: the run ends at its pidfd
    if prefill:
        os.kill(child.pid, signal.SIGCONT)
    out = json.loads(child.stdout.readline())
    child.wait()
    return result(out["events"], out["first_event_ns"], out["last_event_ns"], end_ns)


def child_ours(read_events: int) -> None:
    """Runs in the child: one Tracer, one run on the pid read from stdin, summary as JSON."""
    from agent.trace import TraceConfig, Tracer

    done = threading.Event()
    got = []
    tracer = Tracer(
        NullStore(), TraceConfig(digest_wait_s=0, take_inventory=False, read_events=read_events),
        on_finished=lambda s: (got.append(s), done.set()),
    )
    print("up", flush=True)
    pid = int(sys.stdin.readline())
    m = meta(f"bench-{pid}")
    # Wait for the reader's set-up as in production, where the container outlives it: a frozen
    # child would otherwise do it after the generator exited, without the overlay layout.
    ok = tracer.start_run(m, pid) and tracer.wait_attached(m.container_id, 10)
    print("marked" if ok else "failed", flush=True)
    done.wait(300)
    tracer.close()
    s = got[0]
    print(json.dumps({"events": s.events, "first_event_ns": s.first_event_ns, "last_event_ns": s.last_event_ns}), flush=True)


def run_pyfanotify(loadgen: Path, root: Path, nfiles: int, cpus_: tuple[int, int], cap_s: float) -> dict:
    """pyfanotify's pipeline, live: its forked reader sends every event (fd via SCM_RIGHTS) over a
    datagram socket to the client, which does readlink + close like the others."""
    import pyfanotify as pf

    rcpu, lcpu = cpus_
    os.sched_setaffinity(0, {rcpu})
    mask = pf.FAN_OPEN | pf.FAN_OPEN_EXEC | pf.FAN_ACCESS
    fano = pf.Fanotify()
    fano.start()
    client = pf.FanotifyClient(fano, ev_types=mask, pass_fd=True)
    fano.mark(str(root), ev_types=mask, is_type="fs")
    time.sleep(0.3)  # connect and mark travel to the forked reader asynchronously
    lg, _pid = start_loadgen(loadgen, root, nfiles, 1, lcpu)
    end: list[int] = []
    t = threading.Thread(target=lambda: end.append(go_and_wait_end(lg)))
    t.start()
    events, first, last = 0, 0, 0
    deadline = time.monotonic() + cap_s
    while events < nfiles and time.monotonic() < deadline:
        if not select.select([client.sock], [], [], 0.5)[0]:
            continue
        for ev in client.get_events():
            events += 1
            if ev.fd >= 0:
                try:
                    os.readlink(f"/proc/self/fd/{ev.fd}")
                except OSError:
                    pass
                os.close(ev.fd)
        last = time.monotonic_ns()
        first = first or last
    t.join()
    client.close()
    fano.stop()
    r = result(events, first, last, end[0])
    r["capped"] = events < nfiles
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--repeat-files", type=int, default=2000)
    ap.add_argument("--passes", type=int, default=50)
    ap.add_argument("--burst", type=int, default=50_000)
    ap.add_argument("--read-events", type=int, default=TraceConfig().read_events)
    ap.add_argument("--no-pyfanotify", action="store_true")
    ap.add_argument("--pyfanotify-cap-s", type=float, default=10.0)
    ap.add_argument("--child-ours", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_ours:
        return child_ours(args.read_events)
    require_root()
    cpus_ = cpus()
    bindir = Path(tempfile.mkdtemp(prefix="tracer-bench-bin-"))
    reader = build("fanotify_reader.c", bindir)
    loadgen = build("fanotify_loadgen.c", bindir, static=True)
    cases = {  # name: (files, passes, prefill)
        "drain repeat": (args.repeat_files, args.passes, True),
        "drain burst": (args.burst, 1, True),
        "live burst": (args.burst, 1, False),
    }
    res: dict[tuple[str, str], list[dict]] = {}
    print(f"# {machine()}  reader cpu={cpus_[0]} load cpu={cpus_[1]} read_events={args.read_events} "
          f"load avg={os.getloadavg()[0]:.1f}", flush=True)
    with overlay_with_files(max(args.repeat_files, args.burst)) as ov:
        for rep in range(args.repeats):
            for case, (nfiles, passes, prefill) in cases.items():
                for rd in READERS:
                    if rd == "ours":
                        r = run_ours(loadgen, ov.merged, nfiles, passes, cpus_, args.read_events, prefill)
                    else:
                        r = run_c(reader, loadgen, ov.merged, nfiles, passes, cpus_, args.read_events, prefill,
                                  close_range=rd == "c-range")
                    if r["events"] != nfiles * passes:
                        print(f"  WARNING {case} {rd}: {r['events']} events, expected {nfiles * passes}")
                    res.setdefault((case, rd), []).append(r)
                    print(f"  run {rep + 1} {case:12s} {rd:5s} events={r['events']:>7d} rate={r['rate']:>8.0f}/s "
                          f"drain_after_end={r['drain_s']:.3f}s", flush=True)
        try:
            import pyfanotify  # noqa: F401  (only this comparison uses it; the agent does not)
        except ImportError:
            print("  pyfanotify not installed: its row is left out", flush=True)
            args.no_pyfanotify = True
        if not args.no_pyfanotify:
            r = run_pyfanotify(loadgen, ov.merged, args.burst, cpus_, args.pyfanotify_cap_s)
            res[("live burst", "pyfanotify")] = [r]
            print(f"  pyfanotify live burst events={r['events']} rate={r['rate']:.0f}/s capped={r['capped']}", flush=True)
    print()
    print(f"{'case':13s} {'reader':11s} {'events':>7s} {'events/s':>9s} {'x/C':>7s} {'x/C-range':>10s} {'drain after end':>16s}")
    for case in cases:
        cs, crs = res[(case, "c")], res[(case, "c-range")]
        for rd in (*READERS, "pyfanotify"):
            rs = res.get((case, rd))
            if not rs:
                continue
            rate = statistics.median(r["rate"] for r in rs)
            ratio = statistics.median(o["rate"] / c["rate"] for o, c in zip(rs, cs))
            ratio_range = statistics.median(o["rate"] / c["rate"] for o, c in zip(rs, crs))
            drain = statistics.median(r["drain_s"] for r in rs)
            note = " (capped)" if any(r.get("capped") for r in rs) else ""
            print(f"{case:13s} {rd:11s} {statistics.median(r['events'] for r in rs):>7.0f} {rate:>9.0f} "
                  f"{ratio:>6.2f}x {ratio_range:>9.2f}x {drain:>15.3f}s{note}")
    print(f"\nrepeat = {args.repeat_files} files x {args.passes} passes; burst = {args.burst} distinct files once. "
          f"Medians of {args.repeats} runs; x/C = median of per-round ratios to C."
          f"\ngoals: drain rate ours >= 0.80x C; live burst drained <= 1 s after it ends.")


if __name__ == "__main__":
    main()
