"""The recording driver: bring up a testbed, import the corpus images, run the agent against it, and
start every planned run of every service as a real pod, one at a time.

A run is driven to its readiness point (the workload's marker file, seen through /proc/<pid>/root),
held a short margin so the agent sees the marker too, then stopped; batch jobs finish by themselves.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

from corpus.services import CONTAINER, NAMESPACE, READY_MARKER, SERVICES, RunPlan, ServiceSpec
from testbed.containerd import Testbed, TestbedError

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent


@dataclass
class RunOutcome:
    """What the driver saw of one run (the agent's record is separate; compaction joins them)."""

    service: str
    index: int
    image: str
    image_ref: str
    intent: str
    pod: str
    pod_uid: str
    container_id: str
    env: str  # JSON of the knobs
    started_unix_ns: int
    ready_after_s: float | None  # driver-observed (marker seen), None if never
    exited: bool
    exit_code: int | None
    wall_s: float
    error: str | None = None


@dataclass(frozen=True)
class DriveConfig:
    window_s: float = 25.0  # the agent's trace window for the corpus; runs end sooner
    ready_margin_s: float = 0.5  # hold after ready so the agent's marker poll sees it
    batch_grace_s: float = 20.0  # how long a job may run after ready before it is stopped
    marker_poll_s: float = 0.02
    overflow_nofile: int = 24  # the agent's fd limit during runs planned as overflows


class AgentRunner:
    """The agent as a child process (`python -m agent run --config ...`) on the testbed's sockets."""

    def __init__(self, tb: Testbed, state_dir: Path, services: Iterable[ServiceSpec], window_s: float,
                 log_path: Path) -> None:
        self.tb = tb
        self.state_dir = state_dir
        self.config_path = state_dir.parent / "agent.toml"
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        lines = [
            "[agent]",
            f'state_dir = "{state_dir}"',
            f'nri_socket = "{tb.nri_socket}"',
            f'cri_socket = "{tb.cri_socket}"',
            'node = "corpus-node"',
            "",
            "[trace]",
            f"window_s = {window_s}",
            "",
            "[inject]",
            "enabled = false",
            "",
        ]
        for s in services:
            lines += [f'[readiness."{s.service_key}"]', f'marker = "{READY_MARKER}"', ""]
        self.config_text = "\n".join(lines)

    def start(self, timeout: float = 15.0, nofile: int | None = None) -> None:
        """Start the agent and wait until containerd synchronized it. `nofile` caps its fd limit
        (hard and soft): fanotify installs one fd per event read, so a starved agent loses events
        and must flag the run as overflowed."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text)
        logf = open(self.log_path, "ab")
        offset = self.log_path.stat().st_size
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config", str(self.config_path)],
            cwd=REPO, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=(lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))) if nofile else None,
        )
        logf.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited rc={self.proc.returncode}; see {self.log_path}")
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
            # The agent logs this once containerd accepted its registration and synced state.
            if "event=nri_synchronize " in text:
                log.info("agent up pid=%d", self.proc.pid)
                return
            time.sleep(0.05)
        raise RuntimeError(f"agent did not register with containerd within {timeout}s; see {self.log_path}")

    def kill(self) -> None:
        """SIGKILL: what a crash looks like (the in-flight journal is left behind)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("agent did not stop in %ss; killing", timeout)
                self.proc.kill()
                self.proc.wait()


def _pod_config(plan: RunPlan, spec: ServiceSpec) -> dict:
    return {
        "metadata": {"name": plan.pod_name, "namespace": NAMESPACE, "uid": uuid.uuid4().hex, "attempt": 0},
        "labels": {"app.kubernetes.io/name": spec.name, "corpus.run-index": str(plan.index)},
        "annotations": {"corpus.prefetch-advisor/intent": plan.intent},
    }


def _container_config(plan: RunPlan, spec: ServiceSpec, image_ref: str) -> dict:
    return {
        "metadata": {"name": CONTAINER},
        "image": {"image": image_ref},
        "command": list(spec.command),
        "envs": [{"key": k, "value": v} for k, v in sorted(plan.env.items())],
        "log_path": f"{CONTAINER}.log",
    }


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def execute_run(tb: Testbed, plan: RunPlan, image_ref: str, cfg: DriveConfig,
                agent: AgentRunner | None = None) -> RunOutcome:
    """Start one pod for `plan`, drive it to ready (or exit), stop it and remove it."""
    spec = SERVICES[plan.service]
    pod_cfg = _pod_config(plan, spec)
    t0 = time.monotonic()
    started_unix_ns = time.time_ns()
    if plan.intent == "overflow" and agent is not None:
        agent.stop()
        agent.start(nofile=cfg.overflow_nofile)
    pod_id = tb.run_pod(pod_cfg)
    ready_after: float | None = None
    exited = False
    exit_code: int | None = None
    error: str | None = None
    cid = ""
    try:
        cid = tb.create_container(pod_id, _container_config(plan, spec, image_ref))
        t_start = time.monotonic()
        tb.start(cid)
        if plan.intent == "agent_restart" and agent is not None:
            agent.kill()
        try:
            pid = tb.container_pid(cid)
        except TestbedError:
            pid = 0  # already gone: an early exit
        marker = Path(f"/proc/{pid}/root{READY_MARKER}")
        deadline = t_start + cfg.window_s
        while pid and time.monotonic() < deadline:
            if ready_after is None and marker.exists():
                ready_after = time.monotonic() - t_start
                if not spec.batch:
                    break
                deadline = min(deadline, time.monotonic() + cfg.batch_grace_s)
            if not _alive(pid):
                exited = True
                break
            time.sleep(cfg.marker_poll_s)
        if plan.intent == "agent_restart" and agent is not None:
            agent.start()
        if ready_after is not None and not exited:
            time.sleep(cfg.ready_margin_s)
        status = tb.container_status(cid)["status"]
        if exited or status.get("state") == "CONTAINER_EXITED":
            exited = True
            exit_code = tb.wait_exit(cid, timeout=10)
        else:
            tb.stop(cid, timeout=0)
            exit_code = tb.wait_exit(cid, timeout=10)
    except (TestbedError, OSError) as exc:
        error = str(exc).splitlines()[0][:300]
        log.error("run failed service=%s index=%d error=%s", plan.service, plan.index, error)
    finally:
        try:
            tb.remove_pod(pod_id)
        except TestbedError as exc:
            log.warning("remove pod failed pod=%s error=%s", pod_id, exc)
        if plan.intent == "overflow" and agent is not None:
            agent.stop()  # graceful: the starved agent finalises its run, then a normal one takes over
            agent.start()
    return RunOutcome(
        service=plan.service, index=plan.index, image=plan.image, image_ref=image_ref,
        intent=plan.intent, pod=plan.pod_name, pod_uid=pod_cfg["metadata"]["uid"], container_id=cid,
        env=json.dumps(plan.env, sort_keys=True), started_unix_ns=started_unix_ns,
        ready_after_s=None if ready_after is None else round(ready_after, 4), exited=exited,
        exit_code=exit_code, wall_s=round(time.monotonic() - t0, 3), error=error,
    )


def interleave(plans_by_service: dict[str, list[RunPlan]]) -> list[RunPlan]:
    """Round-robin over services, so slow drift of the node (caches, load) spreads over all of them."""
    queues = [list(p) for p in plans_by_service.values()]
    out: list[RunPlan] = []
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return out


def outcome_rows(outcomes: list[RunOutcome]) -> list[dict]:
    return [asdict(o) for o in outcomes]
