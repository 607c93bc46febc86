"""Agent overhead on a real containerd: container start latency with and without the agent, NRI
handler latency as the stub measures it, and the agent's footprint after many pods.

One run, side by side: blocks of pods without the agent alternate with blocks with it (the agent
process is started before and stopped after each "with" block), so drift of the machine hits both.
Start latency is the wall time of `crictl start` (StartContainer: containerd waits for every NRI
plugin's answer before it starts the task), and of the whole runp+create+start sequence.

The agent runs as in production: INFO logging, a snapshotter socket (the test double, which answers
like upstream) and a learned list in its store for every benchmark service, so RunPodSandbox does
the whole hand-off (choose, write the list file, PUT) from each service's second pod on. Per-call
handler times are logged only at DEBUG, so they come from one more block of agent pods at DEBUG.

usage: sudo .venv/bin/python bench/agent_overhead.py [--blocks 4] [--pods 25] [--handler-pods 100]
       [--footprint-pods 50]   (--handler-pods 0 or --footprint-pods 0 skips that part)
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from advisor.lists import ListStore, PrefetchList  # noqa: E402
from testbed.containerd import Testbed  # noqa: E402
from testbed.fake_snapshotter import FakeSnapshotter  # noqa: E402
from tests.e2e.agent_harness import RunningAgent, container_cfg, pod_cfg  # noqa: E402

COMMAND = ["/bin/sh", "-c", "cat /data/a.txt /data/b.txt > /dev/null"]
IMAGE = "docker.io/testbed/busybox:1"
LIST = ["/bin/busybox", "/data/a.txt", "/data/b.txt"]


def agent_for(tb: Testbed, state: Path, sock: Path, services: list[str], log_level: str = "INFO",
              metrics_port: int = 0) -> RunningAgent:
    """An agent whose store holds a learned list for each of `services` on the benchmark image."""
    digest = tb.crictl("inspecti", "-o", "go-template", "--template", "{{.status.id}}", IMAGE).stdout.strip()
    store = ListStore(state / "advisor")
    for service in services:
        store.put(service, digest, PrefetchList(LIST), {"entries": []})
    extra = f"metrics_port = {metrics_port}\n" if metrics_port else ""
    return RunningAgent(tb, state, "[trace]\nquiescence_s = 0.3\n", snapshotter_socket=sock, log_level=log_level,
                        agent_config=extra).start()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def handler_buckets(port: int) -> dict[str, dict[float, float]]:
    """The agent's own handler-latency histogram: {handler: {upper bound s: cumulative count}}."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, dict[float, float]] = {}
    for m in re.finditer(r'^prefetch_agent_handler_seconds_bucket\{event="([^"]+)",le="([^"]+)"\} (\S+)$', body, re.M):
        out.setdefault(m.group(1), {})[float(m.group(2))] = float(m.group(3))
    return out


def one_pod(tb: Testbed, name: str) -> tuple[float, float]:
    began = time.perf_counter()
    pod_id = tb.run_pod(pod_cfg(name, labels={"app": name.rsplit("-", 1)[0]}))
    ctr = tb.create_container(pod_id, container_cfg("main", COMMAND))
    t0 = time.perf_counter()
    tb.start(ctr)
    start_s = time.perf_counter() - t0
    total_s = time.perf_counter() - began
    tb.wait_exit(ctr)
    tb.crictl("stopp", pod_id)
    tb.crictl("rmp", "--force", pod_id)
    return start_s, total_s


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def machine() -> str:
    model = "unknown cpu"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{model}, {os.cpu_count()} cores, kernel {os.uname().release}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--pods", type=int, default=25, help="pods per block")
    parser.add_argument("--footprint-pods", type=int, default=50)
    parser.add_argument("--handler-pods", type=int, default=100, help="pods through the DEBUG agent")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("agent_overhead: needs root (containerd, fanotify)", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="bench-agent-"))
    sock = Path(tempfile.mkdtemp(prefix="bench-snap-", dir="/tmp")) / "system.sock"
    fake = FakeSnapshotter(sock).start()
    tb = Testbed().up()
    try:
        for i in range(3):  # warm containerd, runc and the page cache before measuring anything
            one_pod(tb, f"warm-{i}")
        without: dict[str, list[float]] = {"start": [], "total": []}
        with_agent: dict[str, list[float]] = {"start": [], "total": []}
        handler_us: dict[str, list[int]] = {}
        info_buckets: dict[str, dict[float, float]] = {}
        for block in range(args.blocks):
            for i in range(args.pods):
                s, t = one_pod(tb, f"bare{block}-{i}")
                without["start"].append(s)
                without["total"].append(t)
            port = free_port()
            agent = agent_for(tb, work / f"state{block}", sock, [f"default/traced{block}/main"], metrics_port=port)
            try:
                for i in range(args.pods):
                    s, t = one_pod(tb, f"traced{block}-{i}")
                    with_agent["start"].append(s)
                    with_agent["total"].append(t)
                for handler, counts in handler_buckets(port).items():
                    for le, n in counts.items():
                        info_buckets.setdefault(handler, {}).setdefault(le, 0.0)
                        info_buckets[handler][le] += n
            finally:
                agent.stop()
        puts_in_blocks = len(fake.prefetch_puts())

        # Handler latency: the same pods through an agent logging each call (DEBUG).
        handoffs = 0
        if args.handler_pods:
            agent = agent_for(tb, work / "handlers", sock, ["default/handlers/main"], log_level="DEBUG")
            try:
                for i in range(args.handler_pods):
                    one_pod(tb, f"handlers-{i}")
            finally:
                agent.stop()
            for handler, us in re.findall(r"event=nri_handled handler=(\S+) us=(\d+) outcome=ok", agent.log_text()):
                handler_us.setdefault(handler, []).append(int(us))
            handoffs = len(re.findall(r"event=inject_done .* sent=1 put=ok", agent.log_text()))

        # Footprint: one agent process through many pods.
        if args.footprint_pods:
            agent = agent_for(tb, work / "footprint", sock, ["default/fp/main"])
            try:
                one_pod(tb, "fp-warm-0")
                rss_start, fds_start = agent.rss_bytes(), agent.fd_count()
                rss_mid = rss_start
                for i in range(args.footprint_pods):
                    one_pod(tb, f"fp-{i}")
                    if i == args.footprint_pods // 5:
                        rss_mid = agent.rss_bytes()
                time.sleep(1.0)  # let the last runs be finalised
                rss_end, fds_end, children = agent.rss_bytes(), agent.fd_count(), agent.children()
            finally:
                agent.stop()
    finally:
        tb.down()
        fake.stop()

    print(f"machine: {machine()}")
    print(f"\n## Container start latency ({args.blocks} blocks x {args.pods} pods each way, alternating)\n")
    print("| measure | without agent (median) | with agent (median) | ratio with/without |")
    print("|---|---|---|---|")
    for key, label in (("start", "crictl start (StartContainer)"), ("total", "runp + create + start")):
        a, b = statistics.median(without[key]), statistics.median(with_agent[key])
        print(f"| {label} | {a * 1000:.1f} ms | {b * 1000:.1f} ms | {b / a:.3f} |")
    print(f"\nsnapshotter PUTs during the start-latency blocks: {puts_in_blocks} "
          f"(of {args.blocks * args.pods} agent pods; each block's first pod has no recent run of its service)")
    print(f"\n## NRI handler latency (dispatch to answer ready, measured by the stub; {args.handler_pods} pods, "
          f"{handoffs} RunPodSandbox hand-offs with PUT ok)\n")
    print("| handler | calls | p50 | p99 | max |")
    print("|---|---|---|---|---|")
    for handler, values in sorted(handler_us.items()):
        print(f"| {handler} | {len(values)} | {pct(values, 0.5) / 1000:.2f} ms | {pct(values, 0.99) / 1000:.2f} ms "
              f"| {max(values) / 1000:.2f} ms |")
    print("\n## NRI handler latency in the start-latency blocks (agent at INFO, its own histogram)\n")
    bounds = sorted({le for counts in info_buckets.values() for le in counts if le <= 0.01})
    print("| handler | calls | " + " | ".join(f"<= {le * 1000:g} ms" for le in bounds) + " |")
    print("|---|---|" + "---|" * len(bounds))
    for handler, counts in sorted(info_buckets.items()):
        total = counts.get(float("inf"), 0.0)
        if total:
            print(f"| {handler} | {int(total)} | " + " | ".join(f"{counts.get(le, 0.0) / total:.1%}" for le in bounds) + " |")
    if not args.footprint_pods:
        return 0
    print(f"\n## Agent footprint over {args.footprint_pods} pods\n")
    print("| measure | after 1 pod | after 20% | at end |")
    print("|---|---|---|---|")
    print(f"| RSS | {rss_start / 2**20:.1f} MiB | {rss_mid / 2**20:.1f} MiB | {rss_end / 2**20:.1f} MiB |")
    print(f"| open fds | {fds_start} | | {fds_end} |")
    print(f"| child processes | | | {len(children)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
