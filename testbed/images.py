"""The testbed's local base images, built from Debian's busybox-static package.

`testbed/install.sh` extracts the busybox-static .deb into `.cache/busybox`; these images are
built from that binary, never from the host's own install. Builds are reproducible (fixed mtime),
so the same inputs give the same manifest digest, and results are cached under `.cache/images`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from testbed.oci import BuiltImage, ImageConfig, build_image_archive
from testbed.paths import CACHE_DIR

log = logging.getLogger(__name__)

PAUSE_IMAGE = "docker.io/testbed/pause:1"
BUSYBOX_IMAGE = "docker.io/testbed/busybox:1"

BUSYBOX_BIN = CACHE_DIR / "busybox" / "bin" / "busybox"
IMAGES_DIR = CACHE_DIR / "images"

# The pause process: PID 1 of the pod, sleeps forever, exits 0 on SIGTERM/SIGINT. PID 1 ignores
# signals it has no handler for, hence the trap; `wait` returns as soon as a trapped signal comes.
PAUSE_SCRIPT = "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"

# Known files of the busybox image, so tests can assert exactly what a container reads.
BUSYBOX_DATA_FILES: dict[str, bytes] = {
    "/data/a.txt": b"alpha file of the testbed busybox image\n",
    "/data/b.txt": b"bravo file of the testbed busybox image\n" * 64,
    "/data/c.bin": bytes(range(256)) * 256,  # 64 KiB
    "/opt/app/config.ini": b"[app]\nname = testbed\n",
    "/opt/app/run.sh": (
        b"#!/bin/sh\n"
        b"# Testbed workload: reads two data files, runs a binary, writes a new file.\n"
        b"cat /data/a.txt /data/b.txt > /dev/null\n"
        b"/bin/ls /opt/app > /dev/null\n"
        b"echo written-by-run-sh > /tmp/out.txt\n"
        b"echo run.sh done\n"
    ),
}
EXECUTABLE_FILES = frozenset({"/opt/app/run.sh"})
# A hardlink pair inside the image (exercises layer hardlink handling).
BUSYBOX_HARDLINKS: dict[str, str] = {"/data/a-link.txt": "/data/a.txt"}

_ETC_FILES: dict[str, bytes] = {
    "/etc/passwd": b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    "/etc/group": b"root:x:0:\nnogroup:x:65534:\n",
    "/etc/hostname": b"testbed\n",
}


@dataclass(frozen=True)
class ImageSpec:
    name: str
    applets: bool  # install a symlink for every busybox applet (else only sh and sleep)
    data_files: bool
    config: ImageConfig


PAUSE_SPEC = ImageSpec(PAUSE_IMAGE, applets=False, data_files=False,
                       config=ImageConfig(entrypoint=["/bin/sh", "-c", PAUSE_SCRIPT]))
BUSYBOX_SPEC = ImageSpec(BUSYBOX_IMAGE, applets=True, data_files=True,
                         config=ImageConfig(cmd=["/bin/sh"], working_dir="/"))
BASE_IMAGES = (PAUSE_SPEC, BUSYBOX_SPEC)


def _busybox_applets(busybox: Path) -> list[str]:
    out = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True, check=True)
    return sorted(line.strip() for line in out.stdout.splitlines() if line.strip())


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)


def populate_rootfs(rootfs: Path, spec: ImageSpec, busybox: Path = BUSYBOX_BIN) -> None:
    """Lay out the root filesystem of `spec` in the empty directory `rootfs`."""
    if not busybox.is_file():
        raise FileNotFoundError(f"{busybox} missing: run testbed/install.sh (make testbed-deps)")
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "root", "var"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    (rootfs / "tmp").mkdir(exist_ok=True)
    os.chmod(rootfs / "tmp", 0o1777)
    shutil.copyfile(busybox, rootfs / "bin/busybox")
    os.chmod(rootfs / "bin/busybox", 0o755)
    applets = _busybox_applets(busybox) if spec.applets else ["bin/sh", "bin/sleep"]
    for applet in applets:
        link = rootfs / applet.lstrip("/")
        if link.name == "busybox" or link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to("/bin/busybox")
    for path, data in _ETC_FILES.items():
        _write(rootfs / path.lstrip("/"), data, 0o644)
    if spec.data_files:
        for path, data in BUSYBOX_DATA_FILES.items():
            _write(rootfs / path.lstrip("/"), data, 0o755 if path in EXECUTABLE_FILES else 0o644)
        for link, target in BUSYBOX_HARDLINKS.items():
            os.link(rootfs / target.lstrip("/"), rootfs / link.lstrip("/"))


def _spec_key(spec: ImageSpec, busybox: Path) -> str:
    """A digest of everything that determines the image, for the build cache."""
    h = hashlib.sha256()
    h.update(json.dumps({
        "name": spec.name, "applets": spec.applets, "data": spec.data_files,
        "config": repr(spec.config), "files": {k: v.hex() for k, v in BUSYBOX_DATA_FILES.items()},
        "links": BUSYBOX_HARDLINKS, "etc": {k: v.hex() for k, v in _ETC_FILES.items()},
        "exec": sorted(EXECUTABLE_FILES), "builder": 1,
    }, sort_keys=True).encode())
    h.update(busybox.read_bytes())
    return h.hexdigest()[:16]


def build_base_image(spec: ImageSpec, *, cache_dir: Path = IMAGES_DIR,
                     busybox: Path = BUSYBOX_BIN) -> BuiltImage:
    """Build (or reuse from cache) the archive of one base image."""
    key = _spec_key(spec, busybox)
    stem = spec.name.rsplit("/", 1)[-1].replace(":", "-")
    archive = cache_dir / f"{stem}-{key}.tar"
    meta = archive.with_suffix(".json")
    if archive.is_file() and meta.is_file():
        try:
            m = json.loads(meta.read_text())
            return BuiltImage(name=m["name"], archive=archive, manifest_digest=m["manifest"],
                              config_digest=m["config"], layer_digests=tuple(m["layers"]))
        except (ValueError, KeyError):
            log.warning("image cache entry unreadable, rebuilding archive=%s", archive)
    cache_dir.mkdir(parents=True, exist_ok=True)
    rootfs = cache_dir / f".rootfs-{stem}-{key}-{os.getpid()}"
    shutil.rmtree(rootfs, ignore_errors=True)
    rootfs.mkdir(parents=True)
    try:
        populate_rootfs(rootfs, spec, busybox)
        built = build_image_archive(spec.name, [rootfs], archive, spec.config, mtime=0)
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
    tmp_meta = meta.with_suffix(f".json.{os.getpid()}")
    tmp_meta.write_text(json.dumps({"name": built.name, "manifest": built.manifest_digest,
                                    "config": built.config_digest,
                                    "layers": list(built.layer_digests)}))
    os.replace(tmp_meta, meta)
    return built


def build_base_images(cache_dir: Path = IMAGES_DIR) -> list[BuiltImage]:
    """Archives of the pause and busybox images, built once and then taken from the cache."""
    return [build_base_image(spec, cache_dir=cache_dir) for spec in BASE_IMAGES]
