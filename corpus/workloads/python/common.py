"""Helpers shared by the Python workloads: knobs from the environment and the readiness marker."""

import os
import time

T0 = time.monotonic()


def knob(name: str, default: str) -> str:
    return os.environ.get(name, default)


def flag(name: str) -> bool:
    return os.environ.get(name, "0") in ("1", "true", "yes", "on")


def mark_ready(detail: str = "") -> None:
    """Create the readiness marker the agent watches for (atomically: write then rename)."""
    path = os.environ.get("READY_FILE", "/tmp/ready")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"ready after {time.monotonic() - T0:.3f}s {detail}\n")
    os.replace(tmp, path)
    print(f"READY {detail}", flush=True)


def fail_early(reason: str, code: int = 3) -> None:
    print(f"FATAL {reason}", flush=True)
    raise SystemExit(code)
