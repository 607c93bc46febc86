"""`python -m corpus`: build the corpus images, record traces with the agent, write the data card.

    python -m corpus build [--images python-v1 ...]       build/cached images, print digests
    python -m corpus record --out data/ [--services ...] [--runs N] [--seed S]
    python -m corpus card --out data/                      (re)write data/README.md from data/
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import subprocess
import sys
import time
from pathlib import Path

from corpus.images import DEFAULT_CACHE, RECIPES

log = logging.getLogger("corpus")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m corpus", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build (or reuse) the corpus images")
    b.add_argument("--images", nargs="*", choices=sorted(RECIPES), default=sorted(RECIPES))
    r = sub.add_parser("record", help="record traces with the agent on a fresh testbed")
    r.add_argument("--out", type=Path, required=True, help="output directory (e.g. data/)")
    r.add_argument("--services", nargs="*", default=None, help="default: all services")
    r.add_argument("--runs", type=int, default=24, help="complete runs per service on its main image")
    r.add_argument("--upgrade-runs", type=int, default=8,
                   help="extra runs on the second image version, for services that have one")
    r.add_argument("--early-exits", type=int, default=2, help="runs per service that crash before ready")
    r.add_argument("--agent-restarts", type=int, default=1,
                   help="runs per service during which the agent is killed and restarted")
    r.add_argument("--overflows", nargs="*", default=[], metavar="SERVICE=N",
                   help="runs under an agent whose fd limit is cut (an attempt to make fanotify drop "
                        "events; see data/README.md for what it did)")
    r.add_argument("--seed", type=int, default=777)  # the shipped corpus; see docs/decisions.md
    r.add_argument("--window", type=float, default=25.0, help="the agent's trace window (s)")
    r.add_argument("--state-dir", type=Path, default=None, help="agent state (default under .cache)")
    c = sub.add_parser("card", help="write <out>/README.md (the data card) from <out>/traces")
    c.add_argument("--out", type=Path, required=True)
    for sp in (b, r, c):
        sp.add_argument("--log-level", default="INFO")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        if args.command == "build":
            return cmd_build(args)
        if args.command == "record":
            return cmd_record(args)
        return cmd_card(args)
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"corpus: {exc}", file=sys.stderr)
        return 1


def cmd_build(args: argparse.Namespace) -> int:
    from corpus.build import build_image

    for name in args.images:
        built = build_image(RECIPES[name])
        print(f"{name}\t{built.name}\t{built.manifest_digest}\t{built.archive}")
    return 0


    return containerd_version_string()


def environment_facts(ctr_bin: Path) -> dict:
    def out(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        except OSError:
            return "unknown"

    return {
        "kernel": platform.release(),
        "containerd": out([str(ctr_bin.parent / "containerd"), "--version"]),
        "runc": out(["runc", "--version"]).splitlines()[0] if out(["runc", "--version"]) else "unknown",
        "os": out(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "cpus": out(["nproc"]),
    }


def cmd_record(args: argparse.Namespace) -> int:
    from corpus.build import build_image
    from corpus.compact import compact
    from corpus.inventory import inventory_from_archive
    from corpus.record import AgentRunner, DriveConfig, execute_run, interleave
    from corpus.services import SERVICES, plan_runs
    from testbed import images as base_images
    from testbed.containerd import Testbed

    names = args.services or list(SERVICES)
    unknown = sorted(set(names) - set(SERVICES))
    if unknown:
        raise ValueError(f"unknown services {unknown}; known: {sorted(SERVICES)}")
    specs = [SERVICES[n] for n in names]
    overflows = {k: int(v) for k, _, v in (o.partition("=") for o in args.overflows)}
    plans = {s.name: plan_runs(s, args.runs, args.seed, early_exits=args.early_exits,
                               upgrade_runs=args.upgrade_runs, agent_restarts=args.agent_restarts,
                               overflows=overflows.get(s.name, 0))
             for s in specs}
    order = interleave(plans)
    needed = sorted({p.image for p in order})
    built = {name: build_image(RECIPES[name]) for name in needed}
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    state_dir = args.state_dir or DEFAULT_CACHE / "agent-state" / stamp / "state"
    state_dir.parent.mkdir(parents=True, exist_ok=True)
    outcomes_path = state_dir.parent / "outcomes.jsonl"
    drive = DriveConfig(window_s=args.window)
    outcomes: list[dict] = []
    t_all = time.monotonic()
    with Testbed(images=base_images.build_base_images()) as tb:
        for b in built.values():
            tb.import_image(b)
        facts = environment_facts(tb.ctr_bin)
        agent = AgentRunner(tb, state_dir, specs, args.window, state_dir.parent / "agent.log")
        agent.start()
        try:
            for i, plan in enumerate(order):
                o = execute_run(tb, plan, RECIPES[plan.image].ref, drive, agent)
                row = o.__dict__
                outcomes.append(row)
                with open(outcomes_path, "a") as f:
                    f.write(json.dumps(row) + "\n")
                log.info("run %d/%d service=%s index=%d intent=%s image=%s ready_s=%s exit=%s wall_s=%.2f",
                         i + 1, len(order), o.service, o.index, o.intent, o.image, o.ready_after_s,
                         o.exit_code, o.wall_s)
        finally:
            _wait_recorded(state_dir, outcomes, timeout=30.0)
            agent.stop()
    inventories = [inventory_from_archive(b.archive, digest=_agent_digest(state_dir, b)) for b in built.values()]
    summary = compact(state_dir, outcomes, inventories, args.out)
    meta = {
        "seed": args.seed, "services": names, "runs": args.runs, "upgrade_runs": args.upgrade_runs,
        "early_exits": args.early_exits, "agent_restarts": args.agent_restarts, "window_s": args.window,
        "overflows": overflows,
        "recorded_at": stamp, "record_s": round(time.monotonic() - t_all, 1),
        "environment": facts,
        "images": {n: {"ref": b.name, "manifest_digest": b.manifest_digest,
                       "image_id": b.config_digest,  # what CRI reports and the traces' image_digest hold
                       "suite": RECIPES[n].suite,
                       "notes": RECIPES[n].notes, "packages": list(RECIPES[n].packages)}
                   for n, b in built.items()},
        "summary": summary,
        "agent_log": agent_log_summary(state_dir.parent / "agent.log"),
    }
    (args.out / "corpus.json").write_text(json.dumps(meta, indent=2) + "\n")
    from corpus.card import write_card

    write_card(args.out)
    print(json.dumps(summary))
    return 0


def agent_log_summary(path: Path) -> dict:
    """Counts of the agent's warning/error events over the recording, e.g. runs it could not trace."""
    import re
    from collections import Counter

    counts: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return {}
    for line in lines:
        if "level=warning" in line or "level=error" in line:
            m = re.search(r"level=\w+ logger=\S+ (?:event=)?(\S+)", line)
            name = m.group(1) if m else "?"
            counts[name] += 1
            if name == "trace_start_failed":
                e = re.search(r"error=(.*)$", line)
                errors[e.group(1)[:120] if e else "?"] += 1
    return {"warnings": dict(counts), "trace_start_failed": dict(errors)}


def _agent_digest(state_dir: Path, built) -> str:
    """The digest the agent recorded for this image (it asks CRI: the manifest digest when CRI knows a
    repo digest, else the image id); the inventory is keyed by it so that runs join inventories."""
    from agent.store import TraceStore

    runs = TraceStore(state_dir).read_runs()
    if not runs.empty:
        seen = runs[runs.image_ref == built.name].image_digest.dropna()
        if len(seen):
            digest = seen.mode().iloc[0]
            if digest not in (built.manifest_digest, built.config_digest):
                log.warning("agent digest %s matches neither manifest nor config of %s", digest, built.name)
            return digest
    return built.config_digest


def _wait_recorded(state_dir: Path, outcomes: list[dict], timeout: float) -> None:
    """Wait until the agent has committed a run for every container the driver started."""
    from agent.store import TraceStore

    want = {o["container_id"] for o in outcomes if o["container_id"]}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = TraceStore(state_dir).read_runs()
        missing = want - set(runs.container_id) if not runs.empty else want
        if not missing:
            return
        time.sleep(0.5)
    log.warning("agent has no run for %d of %d containers", len(missing), len(want))


def cmd_card(args: argparse.Namespace) -> int:
    from corpus.card import write_card

    write_card(args.out)
    return 0
