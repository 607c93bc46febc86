"""`python -m testbed up|down|status|env`: a long-running testbed for the demo and for users.

`up` starts an instance and records it in the state file (default
/run/prefetch-testbed/current.json) so that `down` and `status` find it later; containerd keeps
running after `up` returns.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from pathlib import Path

from testbed.containerd import Testbed, TestbedError, _pid_alive
from testbed.paths import STATE_FILE, MissingPrerequisite

log = logging.getLogger(__name__)


def _read_state() -> dict | None:
    try:
        return json.loads(STATE_FILE.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise TestbedError(f"state file {STATE_FILE} unreadable: {exc}") from exc


def _write_state(tb: Testbed) -> None:
    STATE_FILE.parent.mkdir(parents=True, exist_ok=True)
    state = {"dir": str(tb.dir), "cri_socket": str(tb.cri_socket), "nri_socket": str(tb.nri_socket),
             "containerd_pid": tb.containerd_pid, "crictl_config": str(tb.crictl_config),
             "crictl": tb.crictl_command()}
    tmp = STATE_FILE.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, STATE_FILE)


def _alive(state: dict) -> bool:
    pid = state.get("containerd_pid")
    return bool(pid) and _pid_alive(int(pid)) and Path(state["dir"]).is_dir()


def _print_usage(state: dict) -> None:
    crictl = shlex.join(state["crictl"][:3])
    print(f"testbed dir:    {state['dir']}")
    print(f"CRI socket:     {state['cri_socket']}")
    print(f"NRI socket:     {state['nri_socket']}")
    print(f"containerd pid: {state['containerd_pid']}")
    print(f"crictl:         {crictl} <command>")
    print(f"  e.g.          {crictl} runp testbed/pods/pod.yaml")
    print(f"  or:           eval \"$(python -m testbed env)\"; crictl pods")


def cmd_up(args: argparse.Namespace) -> int:
    state = _read_state()
    if state and _alive(state):
        print("testbed already up")
        _print_usage(state)
        return 0
    if state:  # stale: containerd gone; clean what it left before starting anew
        log.warning("stale testbed state found, cleaning dir=%s", state.get("dir"))
        try:
            Testbed.attach(state["dir"]).down()
        except TestbedError as exc:
            log.warning("stale cleanup failed err=%s", exc)
        STATE_FILE.unlink(missing_ok=True)
    tb = Testbed(base_dir=args.base_dir).up()
    tb.detach()  # containerd outlives this command; only `down` ends it
    _write_state(tb)
    _print_usage(_read_state() or {})
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    state = _read_state()
    if not state:
        print("no testbed recorded; nothing to do")
        return 0
    if Path(state["dir"]).is_dir():
        Testbed.attach(state["dir"]).down()
    STATE_FILE.unlink(missing_ok=True)
    print(f"testbed down: {state['dir']}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    state = _read_state()
    if not state:
        print("no testbed recorded")
        return 1
    if not _alive(state):
        print(f"testbed recorded at {state['dir']} but containerd is not running "
              "(run `python -m testbed down` to clean up)")
        return 1
    _print_usage(state)
    tb = Testbed.attach(state["dir"])
    print(tb.crictl("pods", check=False).stdout, end="")
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    state = _read_state()
    if not state:
        print("no testbed recorded; run `python -m testbed up`", file=sys.stderr)
        return 1
    crictl_dir = str(Path(state["crictl"][0]).parent)
    print(f"export CRI_CONFIG_FILE={shlex.quote(state['crictl_config'])}")
    print(f"export CONTAINER_RUNTIME_ENDPOINT=unix://{state['cri_socket']}")
    print(f"export IMAGE_SERVICE_ENDPOINT=unix://{state['cri_socket']}")
    print(f"export PATH={shlex.quote(crictl_dir)}:$PATH")
    # For the agent: `--nri-socket "$TESTBED_DIR/nri.sock" --cri-socket "$TESTBED_DIR/containerd.sock"`.
    print(f"export TESTBED_DIR={shlex.quote(str(Path(state['cri_socket']).parent))}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start a testbed (no-op if one is running)")
    up.add_argument("--base-dir", type=Path, default=None)
    sub.add_parser("down", help="tear the recorded testbed down")
    sub.add_parser("status", help="show the recorded testbed and its pods")
    sub.add_parser("env", help="print shell exports so plain `crictl` talks to the testbed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    handler = {"up": cmd_up, "down": cmd_down, "status": cmd_status, "env": cmd_env}[args.cmd]
    try:
        return handler(args)
    except (TestbedError, MissingPrerequisite) as exc:
        print(f"testbed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
