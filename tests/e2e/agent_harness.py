"""Runs the real agent (`python -m agent run`) as a process against a testbed's containerd."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from agent.store import TraceStore
from testbed.containerd import Testbed

REPO = Path(__file__).resolve().parents[2]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value is not None and value is not False and not (isinstance(value, int) and value == 0):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class RunningAgent:
    """One agent process with its own state dir and config; stopped with SIGTERM on exit."""

    def __init__(self, testbed: Testbed, state_dir: Path, config: str = "", snapshotter_socket: Path | None = None,
                 plugin_index: str = "50", agent_config: str = "", log_level: str = "DEBUG") -> None:
        """`config` is TOML appended after the [agent] and [inject] tables; `agent_config` adds keys to [agent]."""
        self.testbed = testbed
        self.log_level = log_level
        self.state_dir = state_dir
        self.log_path = state_dir.parent / f"{state_dir.name}-agent.log"
        self.config_path = state_dir.parent / f"{state_dir.name}-agent.toml"
        snap = snapshotter_socket or (state_dir.parent / f"{state_dir.name}-no-snapshotter.sock")
        self.config_path.write_text(
            "[agent]\n"
            f'state_dir = "{state_dir}"\n'
            f'nri_socket = "{testbed.nri_socket}"\n'
            f'cri_socket = "{testbed.cri_socket}"\n'
            f'plugin_index = "{plugin_index}"\n'
            f'node = "testbed-node"\n'
            + agent_config
            + ("\n" if agent_config and not agent_config.endswith("\n") else "")
            + "[inject]\n"
            + f'snapshotter_socket = "{snap}"\n'
            + config
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self._registrations_seen = 0

    def start(self, timeout: float = 20.0) -> "RunningAgent":
        if self.proc is not None:
            raise RuntimeError("this RunningAgent was started already")
        self._log = open(self.log_path, "ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config", str(self.config_path), "--log-level", self.log_level],
            cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT, env=env,
        )
        self.wait_registered(timeout)
        return self

    def registrations(self) -> int:
        return self.log_text().count("event=nri_synchronize ")

    def wait_registered(self, timeout: float = 20.0, count: int | None = None) -> None:
        want = count if count is not None else self._registrations_seen + 1

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"agent exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            return self.registrations() >= want

        wait_for(ready, timeout, "the agent to register and synchronize")
        self._registrations_seen = self.registrations()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def fd_count(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def children(self) -> list[int]:
        kids = []
        for task in os.listdir(f"/proc/{self.pid}/task"):
            try:
                kids += [int(p) for p in Path(f"/proc/{self.pid}/task/{task}/children").read_text().split()]
            except FileNotFoundError:
                continue
        return kids

    def store(self) -> TraceStore:
        return TraceStore(self.state_dir)

    def runs(self) -> pd.DataFrame:
        return self.store().read_runs()

    def accesses(self) -> pd.DataFrame:
        return self.store().read_accesses()

    def wait_runs(self, predicate: Callable[[pd.DataFrame], bool], timeout: float = 30.0, what: str = "runs") -> pd.DataFrame:
        return wait_for(lambda: (lambda r: r if predicate(r) else None)(self.runs()), timeout, what)

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"agent did not stop within {timeout}s on SIGTERM")
        finally:
            self._log.close()

    def __enter__(self) -> "RunningAgent":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def container_cfg(name: str, command: list[str], image: str = "docker.io/testbed/busybox:1", **extra: Any) -> dict:
    return {"metadata": {"name": name}, "image": {"image": image}, "command": command,
            "log_path": f"{name}.log", **extra}


def pod_cfg(name: str, namespace: str = "default", labels: dict | None = None, annotations: dict | None = None,
            uid: str | None = None) -> dict:
    return {
        "metadata": {"name": name, "namespace": namespace, "uid": uid or f"{name}-uid", "attempt": 0},
        "labels": labels or {},
        "annotations": annotations or {},
        "log_directory": f"/tmp/prefetch-e2e-logs/{name}",
        "linux": {"security_context": {"namespace_options": {"network": 2}}},
    }
