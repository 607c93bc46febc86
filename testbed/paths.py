"""Where the testbed finds its installed binaries (see testbed/install.sh)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent
CACHE_DIR = Path(os.environ.get("TESTBED_CACHE", REPO_DIR / ".cache"))
# Debian 12: containerd 1.7 from Debian 13's .deb, extracted here. Debian 13: the system's own.
CONTAINERD_BIN_DIR = CACHE_DIR / "containerd" / "usr" / "bin"
CRICTL = CACHE_DIR / "bin" / "crictl"
# Default parent of per-instance testbed dirs; each instance gets a unique subdir.
DEFAULT_BASE_DIR = Path(os.environ.get("TESTBED_BASE_DIR", "/run/prefetch-testbed"))
# `python -m testbed up` records the running instance here so `down`/`status` can find it.
STATE_FILE = Path(os.environ.get("TESTBED_STATE_FILE", DEFAULT_BASE_DIR / "current.json"))


class MissingPrerequisite(RuntimeError):
    """A binary or privilege the testbed needs is absent; the message says how to fix it."""


def containerd_bin_dir() -> Path:
    """Directory holding containerd, its runc shim and ctr (project-local first)."""
    if (CONTAINERD_BIN_DIR / "containerd").is_file():
        return CONTAINERD_BIN_DIR
    system = shutil.which("containerd")
    if system:
        return Path(system).resolve().parent
    raise MissingPrerequisite("containerd >= 1.7 not found: run `make testbed-deps` "
                              "(testbed/install.sh) as root")


def crictl_path() -> Path:
    if CRICTL.is_file():
        return CRICTL
    raise MissingPrerequisite(f"crictl not found at {CRICTL}: run `make testbed-deps` "
                              "(testbed/install.sh) as root")


def runc_path() -> Path:
    found = shutil.which("runc", path=os.environ.get("PATH", "") + ":/usr/sbin:/usr/bin:/sbin")
    if not found:
        raise MissingPrerequisite("runc not found: run `make testbed-deps` (testbed/install.sh)")
    return Path(found)


def check_prerequisites() -> None:
    """Raise MissingPrerequisite with the reason if the testbed cannot run here."""
    if os.geteuid() != 0:
        raise MissingPrerequisite("the testbed needs root (containerd, runc, mounts, cgroups)")
    containerd_bin_dir()
    crictl_path()
    runc_path()
    from testbed.images import BUSYBOX_BIN  # local import: images imports paths
    if not BUSYBOX_BIN.is_file():
        raise MissingPrerequisite(f"{BUSYBOX_BIN} missing: run `make testbed-deps`")
