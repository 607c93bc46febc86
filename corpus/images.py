"""Image recipes for the corpus, and a cached debootstrap build of each one's root filesystem.

An image is two layers, like a Dockerfile build: a Debian base (debootstrap minbase plus packages,
docs/man/locales trimmed) that is slow to build and cached, and an app layer holding this repo's
workload scripts, which is cheap and rebuilt every time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from corpus.mirror import DebianMirror, find_debian_mirror

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = REPO / ".cache" / "corpus"
WORKLOADS = Path(__file__).resolve().parent / "workloads"

# dpkg drops these paths at unpack time, so docs never land in the image at all.
TRIM_PATTERNS = (
    "/usr/share/doc/*",
    "/usr/share/man/*",
    "/usr/share/info/*",
    "/usr/share/locale/*",
    "/usr/share/lintian/*",
    "/usr/share/linda/*",
)
TRIM_KEEP = ("/usr/share/locale/locale.alias",)


@dataclass(frozen=True)
class ImageRecipe:
    """One corpus image: Debian suite + packages, plus the app directory copied to /opt/app."""

    name: str  # short key used on the command line, e.g. "python-v1"
    ref: str  # image reference the services use
    suite: str
    packages: tuple[str, ...]
    app: str  # sub-directory of corpus/workloads/ copied into /opt/app
    family: str  # images of one family are versions of each other
    notes: str = ""
    extra_setup: tuple[str, ...] = field(default=())  # shell run in the chroot after install

    def base_key(self, mirror: DebianMirror) -> str:
        """Cache key of the base layer: changes when anything that shapes it changes."""
        blob = json.dumps(
            {"suite": self.suite, "packages": sorted(self.packages), "setup": self.extra_setup,
             "trim": TRIM_PATTERNS, "mirror": mirror.uri, "v": 2},
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


PY_PACKAGES = ("python3", "python3-numpy", "python3-pandas", "python3-yaml", "python3-jinja2")

RECIPES: dict[str, ImageRecipe] = {
    r.name: r
    for r in (
        ImageRecipe(
            name="python-v1",
            ref="docker.io/corpus/python:1",
            suite="bookworm",
            packages=PY_PACKAGES,
            app="python",
            family="python",
            notes="Debian 12: python 3.11.2, numpy 1.24.2, pandas 1.5.3, OpenSSL 3.0, zlib 1.2.13",
        ),
        ImageRecipe(
            name="python-v2",
            ref="docker.io/corpus/python:2",
            suite="trixie",
            packages=PY_PACKAGES,
            app="python",
            family="python",
            notes="Debian 13: python 3.13.5, numpy 2.2.4, pandas 2.2.3, OpenSSL 3.5 (libssl3t64), zlib 1.3.1; "
                  "same packages and app layer as python:1",
        ),
        ImageRecipe(
            name="web-v1",
            ref="docker.io/corpus/web:1",
            suite="bookworm",
            packages=("nginx", "libnginx-mod-http-image-filter", "libnginx-mod-http-xslt-filter",
                      "libnginx-mod-stream", "perl", "libhttp-daemon-perl", "libjson-perl"),
            app="web",
            family="web",
            notes="nginx 1.22.1 with three dynamic modules, perl 5.36 with HTTP::Daemon and JSON",
        ),
        ImageRecipe(
            name="data-v1",
            ref="docker.io/corpus/data:1",
            suite="bookworm",
            packages=("redis-server", "redis-tools", "postgresql-15"),
            app="data",
            family="data",
            notes="redis 7.0.15, postgresql 15 (the package bakes a `main` cluster into the image)",
        ),
    )
}


class BuildError(RuntimeError):
    """An image build step failed."""


def _run(cmd: list[str], **kw) -> None:
    log.info("run cmd=%s", " ".join(cmd))
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-30:])
        raise BuildError(f"{cmd[0]} failed rc={proc.returncode}:\n{tail}")


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _prepare_chroot(root: Path) -> None:
    trim = "".join(f"path-exclude={p}\n" for p in TRIM_PATTERNS)
    trim += "".join(f"path-include={p}\n" for p in TRIM_KEEP)
    _write(root / "etc/dpkg/dpkg.cfg.d/01-corpus-trim", trim)
    _write(root / "etc/apt/apt.conf.d/01-corpus", 'APT::Install-Recommends "false";\n'
           'APT::Install-Suggests "false";\n')
    # Package postinsts must not start daemons inside the build chroot.
    _write(root / "usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n", 0o755)
    shutil.copyfile("/etc/resolv.conf", root / "etc/resolv.conf")


def _trim(root: Path) -> None:
    for pattern in TRIM_PATTERNS:
        base = root / pattern.strip("/").rstrip("*").rstrip("/")
        if base.is_dir():
            for child in base.iterdir():
                if f"/{child.relative_to(root)}" in TRIM_KEEP:
                    continue
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
    for rel in ("var/lib/apt/lists", "var/cache/apt", "var/log", "var/cache/debconf"):
        d = root / rel
        if d.is_dir():
            for child in d.rglob("*"):
                if child.is_file() or child.is_symlink():
                    child.unlink()
    (root / "usr/sbin/policy-rc.d").unlink(missing_ok=True)
    (root / "etc/resolv.conf").write_text("")


def build_base(recipe: ImageRecipe, cache: Path = DEFAULT_CACHE, mirror: DebianMirror | None = None) -> Path:
    """Return the cached base rootfs of `recipe`, building it with debootstrap if needed."""
    mirror = mirror or find_debian_mirror()
    key = recipe.base_key(mirror)
    final = cache / "rootfs" / recipe.name
    stamp = cache / "rootfs" / f"{recipe.name}.key"
    if final.is_dir() and stamp.is_file() and stamp.read_text().strip() == key:
        log.info("base cached image=%s key=%s", recipe.name, key)
        return final
    if shutil.which("debootstrap") is None:
        raise BuildError("debootstrap is not installed (apt-get install debootstrap)")
    work = cache / "rootfs" / f"{recipe.name}.tmp"
    debs = cache / "debs" / recipe.suite
    debs.mkdir(parents=True, exist_ok=True)
    _unmount_below(work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log.info("debootstrap image=%s suite=%s mirror=%s", recipe.name, recipe.suite, mirror.uri)
    _run(["debootstrap", "--variant=minbase", f"--keyring={mirror.keyring}", f"--cache-dir={debs}",
          recipe.suite, str(work), mirror.uri])
    _prepare_chroot(work)
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
    _run(["mount", "-t", "proc", "proc", str(work / "proc")])
    try:
        _run(["chroot", str(work), "apt-get", "update", "-qq"], env=env)
        _run(["chroot", str(work), "apt-get", "install", "-y", "-qq", *recipe.packages], env=env)
        for cmd in recipe.extra_setup:
            _run(["chroot", str(work), "sh", "-c", cmd], env=env)
        _run(["chroot", str(work), "apt-get", "clean"], env=env)
    finally:
        _unmount_below(work)
    _trim(work)
    if final.exists():
        shutil.rmtree(final)
    work.rename(final)
    stamp.write_text(key + "\n")
    log.info("base built image=%s key=%s", recipe.name, key)
    return final


def _unmount_below(root: Path) -> None:
    if not root.exists():
        return
    prefix = str(root.resolve()) + "/"
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for mnt in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", mnt], check=False)


def app_dir(recipe: ImageRecipe) -> Path:
    """The workload files that make up the image's app layer (installed at /opt/app)."""
    d = WORKLOADS / recipe.app
    if not d.is_dir():
        raise BuildError(f"no workload directory {d}")
    return d


def recipe_manifest(recipe: ImageRecipe) -> dict:
    return asdict(recipe)


def stage_app_layer(recipe: ImageRecipe, dest: Path) -> Path:
    """Lay out the app layer (workloads at /opt/app, owned by root) in `dest`; return it."""
    if dest.exists():
        shutil.rmtree(dest)
    target = dest / "opt" / "app"
    shutil.copytree(app_dir(recipe), target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for path in [dest / "opt", *target.rglob("*"), target]:
        os.chown(path, 0, 0, follow_symlinks=False)
        if path.is_dir():
            path.chmod(0o755)
        elif path.suffix in (".sh", ".pl", ".py"):
            path.chmod(0o755)
        else:
            path.chmod(0o644)
    return dest
