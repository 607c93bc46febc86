"""Shared set-up for the tracer benchmarks: a real overlay mount, the C helpers, pinning, a null store."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agent.trace import RunMeta  # noqa: E402

BENCH = Path(__file__).resolve().parent


def build(src: str, out_dir: Path, static: bool = False) -> Path:
    """Compile bench/<src> with gcc -O2 (static when it must run inside a chroot without libc)."""
    out = out_dir / Path(src).stem
    cmd = ["gcc", "-O2", "-Wall", *(["-static"] if static else []), "-o", str(out), str(BENCH / src)]
    subprocess.run(cmd, check=True)
    return out


@dataclass
class Overlay:
    base: Path
    lower: Path
    upper: Path
    merged: Path


@contextlib.contextmanager
def overlay_with_files(nfiles: int, extra_bins: dict[str, Path] | None = None):
    """An overlay mount whose lower layer holds /data/f000000.. (nfiles empty files)."""
    base = Path(tempfile.mkdtemp(prefix="tracer-bench-", dir="/var/tmp"))
    ov = Overlay(base, base / "lower", base / "upper", base / "merged")
    for d in (ov.lower / "data", ov.lower / "bin", ov.upper, base / "work", ov.merged):
        d.mkdir(parents=True)
    for i in range(nfiles):
        (ov.lower / "data" / f"f{i:06d}").touch()
    for name, src in (extra_bins or {}).items():
        shutil.copy(src, ov.lower / "bin" / name)
    opts = f"lowerdir={ov.lower},upperdir={ov.upper},workdir={base / 'work'}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(ov.merged)], check=True)
    try:
        yield ov
    finally:
        subprocess.run(["umount", "-l", str(ov.merged)], check=False)
        shutil.rmtree(base, ignore_errors=True)


def pin(cpu: int):
    """preexec_fn pinning a child to one CPU."""
    return lambda: os.sched_setaffinity(0, {cpu})


def cpus() -> tuple[int, int]:
    """(reader cpu, load cpu): different cores when there are two."""
    avail = sorted(os.sched_getaffinity(0))
    return (avail[-1], avail[0]) if len(avail) > 1 else (avail[0], avail[0])


def machine() -> str:
    model = "?"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"cpu={model!r} cores={os.cpu_count()} kernel={platform.release()} python={platform.python_version()}"


class NullStore:
    """Accepts everything and keeps nothing: the benchmarks measure the tracer, not Parquet."""

    def write_run(self, run, accesses) -> None:
        self.last = (run, accesses)

    def begin_inflight(self, run) -> None:
        pass

    def end_inflight(self, run_id) -> None:
        pass

    def recover_inflight(self) -> list:
        return []

    def has_inventory(self, digest) -> bool:
        return True

    def write_inventory(self, digest, table) -> None:
        pass


def meta(run_id: str, container_id: str | None = None) -> RunMeta:
    return RunMeta(
        run_id=run_id, service="bench/loadgen/c", namespace="bench", pod="loadgen", pod_uid="u",
        container="c", container_id=container_id or run_id, image_ref="local/bench:1",
        image_ref_normalized="local/bench:1", node=platform.node(),
    )


def require_root() -> None:
    if os.geteuid() != 0:
        sys.exit("this benchmark needs root (fanotify, mount)")
