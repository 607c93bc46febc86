"""`prefetch-agent`: run the node agent, or look at what it recorded."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.abc
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from agent import logs, metrics
from agent.config import AgentConfig, ConfigError, load_file

GIL_SWITCH_INTERVAL_S = 0.0005

if TYPE_CHECKING:
    from agent.nri import Launch

log = logging.getLogger("agent")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prefetch-agent", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="connect to containerd over NRI and trace / hand off lists")
    run.add_argument("--config", help="TOML config file (same keys as NRI's plugin config)")
    run.add_argument("--state-dir", help="overrides [agent] state_dir")
    run.add_argument("--nri-socket", help="overrides [agent] nri_socket")
    run.add_argument("--cri-socket", help="overrides [agent] cri_socket")
    run.add_argument("--snapshotter-socket", help="overrides [inject] snapshotter_socket")
    run.add_argument("--log-level", default="INFO")

    runs = sub.add_parser("runs", help="list the runs recorded in a state directory")
    runs.add_argument("state_dir")
    runs.add_argument("--json", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return run(args)
        return show_runs(Path(args.state_dir), args.json)
    except ConfigError as exc:
        print(f"prefetch-agent: {exc}", file=sys.stderr)
        return 2


def _config(args: argparse.Namespace) -> AgentConfig:
    config = load_file(args.config) if args.config else AgentConfig()
    overrides = {
        "state_dir": args.state_dir,
        "nri_socket": args.nri_socket,
        "cri_socket": args.cri_socket,
    }
    config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v})
    if args.snapshotter_socket:
        config = dataclasses.replace(
            config, inject=dataclasses.replace(config.inject, snapshotter_socket=args.snapshotter_socket)
        )
    return config


def run(args: argparse.Namespace) -> int:
    from agent.nri import launched_by_runtime

    logs.setup(args.log_level)
    refuse_pandas()
    # An NRI handler thread that wants the GIL while the reader or finaliser holds it waits up to
    # one switch interval (5 ms by default, the measured StartContainer p99); containerd waits too.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    config = _config(args)
    try:
        launch = launched_by_runtime()
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    agent = AgentProcess(config, launch)
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("event=signal signum=%d", signum)
        stopping.set()
        agent.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    agent.run()
    return 0


class _PandasRefused(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: object = None, target: object = None) -> None:
        if fullname == "pandas" or fullname.startswith("pandas."):
            raise ModuleNotFoundError(f"the agent daemon does not load {fullname}", name=fullname)
        return None


def refuse_pandas() -> None:
    """Make `import pandas` fail in this process (unless it is loaded already).

    pyarrow imports pandas, if it can, the first time it converts a Python list: about 40 MiB of
    RSS and 0.2 s of CPU while the first containers start, in a daemon that never uses pandas.
    An import hook, not a None in sys.modules: pyarrow's compiled import takes a None entry for
    the module itself and fails with AttributeError instead of going on without pandas.
    """
    if "pandas" not in sys.modules and not any(isinstance(f, _PandasRefused) for f in sys.meta_path):
        sys.meta_path.insert(0, _PandasRefused())


class AgentProcess:
    """Assembles the agent's parts from a config and runs the NRI stub until stopped.

    Started by hand (or by systemd) it dials ``nri_socket`` and reconnects whenever containerd
    restarts. Installed as ``<plugin_path>/<idx>-<name>`` it is launched by containerd instead: it
    then serves the inherited connection, takes its name and index from the runtime, gets the
    drop-in ``<plugin_config_path>/<idx>-<name>.conf`` through Configure, and exits when that
    connection closes (containerd launches it again when it comes back).
    """

    def __init__(self, config: AgentConfig, launch: "Launch | None" = None) -> None:
        # Imported here so `prefetch-agent runs` works without the runtime-side dependencies.
        from advisor.lists import ListStore
        from agent.cri.client import DigestResolver, ImageDigestClient
        from agent.inject.injector import PrefetchInjector
        from agent.inject.snapshotter import SnapshotterClient
        from agent.nri import Stub, after_answer
        from agent.plugin import ImageHistory, PrefetchAgent
        from agent.store import TraceStore
        from agent.trace import Tracer

        self.config = config
        state = Path(config.state_dir)
        state.mkdir(parents=True, exist_ok=True)
        config.list_dir.mkdir(parents=True, exist_ok=True)
        self.store = TraceStore(state)
        self.history = ImageHistory()
        self.history.load(self.store.recent_images())
        self.tracer = Tracer(self.store, config.trace, defer=after_answer)
        self.cri = ImageDigestClient(config.cri_socket)
        self.digests = DigestResolver(self.cri.image_digest)
        self.snapshotter = SnapshotterClient(config.inject.snapshotter_socket, state_dir=state / "sent",
                                             wait_s=config.inject.put_timeout_s)
        self.injector = PrefetchInjector(config, ListStore(config.advisor_store_dir), self.snapshotter,
                                         self.history.recent)
        self.plugin = PrefetchAgent(config, self.tracer, self.injector, self.digests, self.history)
        name, idx = (launch.name, launch.idx) if launch else (config.plugin_name, config.plugin_index)
        self.stub = Stub(self.plugin, config.nri_socket, name, idx, handler_budget_s=config.handler_budget_s,
                         observe=metrics.observe_handler, preconnected=launch.sock if launch else None,
                         realtime=config.realtime_handlers)
        self.launched = launch is not None

    def run(self) -> None:
        metrics.serve(self.config.metrics_port)
        _check_fanotify_groups()
        log.info("event=agent_start state_dir=%s nri_socket=%s node=%s", self.config.state_dir,
                 "launched_by_runtime" if self.launched else self.config.nri_socket, self.config.node)
        try:
            self.stub.run()
        finally:
            self.close()

    def stop(self) -> None:
        self.stub.stop()

    def close(self) -> None:
        for part in (self.injector, self.snapshotter, self.tracer, self.digests, self.cri):
            try:
                part.close()
            except Exception:
                log.exception("event=close_failed part=%s", type(part).__name__)
        log.info("event=agent_stopped")


FANOTIFY_GROUPS = Path("/proc/sys/fs/fanotify/max_user_groups")
# One fanotify group per running traced container; every root process on the node shares the limit.
FANOTIFY_GROUPS_WANTED = 512


def _check_fanotify_groups() -> None:
    try:
        limit = int(FANOTIFY_GROUPS.read_text())
    except (OSError, ValueError):
        return
    if limit < FANOTIFY_GROUPS_WANTED:
        log.warning("event=fanotify_group_limit_low limit=%d wanted=%d effect=containers_beyond_it_run_untraced "
                    "hint='sysctl -w fs.fanotify.max_user_groups=%d'", limit, FANOTIFY_GROUPS_WANTED,
                    FANOTIFY_GROUPS_WANTED)


def show_runs(state_dir: Path, as_json: bool) -> int:
    from agent.store import TraceStore
    from agent.trace import schema

    if not (state_dir / "traces").is_dir():
        print(f"prefetch-agent: no traces under {state_dir}", file=sys.stderr)
        return 1
    store = TraceStore(state_dir)
    runs = store.read_runs()
    accesses = store.read_accesses()
    counts = accesses.groupby("run_id").size() if not accesses.empty else {}
    cols = ["run_id", "service", "image_ref_normalized", "started_at", "ready_ns", "ready_source",
            "end_reason", "complete"]
    table = runs[cols].copy()
    table["files"] = [int(counts.get(r, 0)) for r in table.run_id]
    table["flags"] = [",".join(f for f in schema.RUN_FLAGS if row[f"flag_{f}"]) or "-" for _, row in runs.iterrows()]
    if as_json:
        print(table.to_json(orient="records", date_format="iso"))
    else:
        print(table.to_string(index=False) if len(table) else "no runs")
    return 0
