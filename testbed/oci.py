"""Build OCI image-layout archives from root filesystem directories, and import them.

No registry is involved: containerd imports the archive with `ctr images import`, and the CRI
plugin sees the image at once. Layers are uncompressed tars. Everything is streamed through a
hashing writer, so a rootfs of a few hundred MB never sits in memory.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import platform
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterable, Sequence

log = logging.getLogger(__name__)

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
_CHUNK = 1 << 20

_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le",
           "s390x": "s390x", "riscv64": "riscv64", "i686": "386"}


def host_architecture() -> str:
    """The OCI architecture name of this machine (amd64, arm64, ...)."""
    machine = platform.machine()
    return _GOARCH.get(machine, machine)


@dataclass(frozen=True)
class ImageConfig:
    """The runtime part of an OCI image config (what `docker inspect` calls Config)."""

    entrypoint: Sequence[str] | None = None
    cmd: Sequence[str] | None = None
    env: Sequence[str] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
    working_dir: str = "/"
    labels: dict[str, str] = field(default_factory=dict)
    user: str = ""


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int

    def as_json(self) -> dict:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class BuiltImage:
    """Result of `build_image_archive`: where the archive is and what it contains."""

    name: str
    archive: Path
    manifest_digest: str
    config_digest: str
    layer_digests: tuple[str, ...]


class _HashingWriter(io.RawIOBase):
    """File-like sink that hashes and counts everything written through it."""

    def __init__(self, sink: BinaryIO) -> None:
        self._sink = sink
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # type: ignore[override]
        view = memoryview(b)
        self.sha.update(view)
        self._sink.write(view)
        self.size += len(view)
        return len(view)

    @property
    def digest(self) -> str:
        return "sha256:" + self.sha.hexdigest()


def _iter_tree(root: Path) -> Iterable[Path]:
    """Every path below root, depth-first, name-sorted, parents before children."""
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        p = Path(entry.path)
        yield p
        if entry.is_dir(follow_symlinks=False):
            yield from _iter_tree(p)


def write_layer(rootfs: Path, sink: BinaryIO, *, mtime: int | None = None) -> tuple[str, int]:
    """Write rootfs as an uncompressed layer tar into sink; return (digest, size).

    Ownership, modes, symlinks, hardlinks and device nodes are kept as on disk (numeric ids, no
    user names, so the layer does not depend on this host's /etc/passwd). Sockets are skipped.
    With `mtime` set, every entry gets that mtime, which makes the digest reproducible.
    """
    rootfs = Path(rootfs)
    if not rootfs.is_dir():
        raise ValueError(f"rootfs {rootfs} is not a directory")
    hw = _HashingWriter(sink)
    buffered = io.BufferedWriter(hw, buffer_size=_CHUNK)
    with tarfile.open(fileobj=buffered, mode="w|", format=tarfile.PAX_FORMAT,
                      bufsize=_CHUNK) as tar:
        seen_inodes: dict[tuple[int, int], str] = {}
        for path in _iter_tree(rootfs):
            arcname = path.relative_to(rootfs).as_posix()
            st = path.lstat()
            info = tar.gettarinfo(str(path), arcname)
            if info is None:  # socket: not representable in a tar
                continue
            info.uname = info.gname = ""
            if mtime is not None:
                info.mtime = mtime
            if info.isreg() and st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                first = seen_inodes.get(key)
                if first is not None:
                    info.type = tarfile.LNKTYPE
                    info.linkname = first
                    info.size = 0
                    tar.addfile(info)
                    continue
                seen_inodes[key] = arcname
            if info.isreg():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    buffered.flush()
    return hw.digest, hw.size


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mtime: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = mtime
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str, mtime: int) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    info.mtime = mtime
    tar.addfile(info)


def _json_bytes(obj: dict) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def build_image_archive(
    name: str,
    layers: Sequence[Path] | Path,
    out: Path,
    config: ImageConfig = ImageConfig(),
    *,
    mtime: int | None = 0,
    workdir: Path | None = None,
) -> BuiltImage:
    """Build an OCI image-layout tar at `out` for image `name` (e.g. docker.io/testbed/busybox:1).

    `layers` are rootfs directories, bottom first (no whiteouts: each is simply laid over the
    previous). The manifest carries the `io.containerd.image.name` annotation so `ctr images
    import` names the image. Returns the manifest digest among other facts. The archive is written
    to a temporary name and renamed, so a crash never leaves a half archive at `out`.
    """
    if isinstance(layers, (str, os.PathLike)):
        layers = [Path(layers)]
    if not layers:
        raise ValueError("an image needs at least one layer")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stamp = 0 if mtime is None else mtime
    tmpdir = Path(tempfile.mkdtemp(prefix=".oci-", dir=workdir or out.parent))
    try:
        layer_files: list[tuple[Path, Descriptor]] = []
        for i, rootfs in enumerate(layers):
            lpath = tmpdir / f"layer{i}.tar"
            with open(lpath, "wb") as f:
                digest, size = write_layer(Path(rootfs), f, mtime=mtime)
            layer_files.append((lpath, Descriptor(MEDIA_LAYER, digest, size)))

        arch = host_architecture()
        runtime: dict = {"Env": list(config.env), "WorkingDir": config.working_dir}
        if config.entrypoint is not None:
            runtime["Entrypoint"] = list(config.entrypoint)
        if config.cmd is not None:
            runtime["Cmd"] = list(config.cmd)
        if config.labels:
            runtime["Labels"] = dict(config.labels)
        if config.user:
            runtime["User"] = config.user
        image_config = {
            "architecture": arch,
            "os": "linux",
            "config": runtime,
            "rootfs": {"type": "layers", "diff_ids": [d.digest for _, d in layer_files]},
            "history": [{"created_by": f"testbed.oci layer {i}"} for i in range(len(layer_files))],
        }
        config_bytes = _json_bytes(image_config)
        config_desc = Descriptor(MEDIA_CONFIG, "sha256:" + hashlib.sha256(config_bytes).hexdigest(),
                                 len(config_bytes))
        manifest = {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": config_desc.as_json(),
            "layers": [d.as_json() for _, d in layer_files],
            "annotations": {ANNOTATION_IMAGE_NAME: name},
        }
        manifest_bytes = _json_bytes(manifest)
        manifest_desc = Descriptor(MEDIA_MANIFEST,
                                   "sha256:" + hashlib.sha256(manifest_bytes).hexdigest(),
                                   len(manifest_bytes))
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                **manifest_desc.as_json(),
                "platform": {"architecture": arch, "os": "linux"},
                "annotations": {ANNOTATION_IMAGE_NAME: name},
            }],
        }

        tmp_out = tmpdir / "image.tar"
        with open(tmp_out, "wb") as f, tarfile.open(fileobj=f, mode="w|", bufsize=_CHUNK,
                                                     format=tarfile.PAX_FORMAT) as tar:
            _add_bytes(tar, "oci-layout", _json_bytes({"imageLayoutVersion": "1.0.0"}), stamp)
            _add_bytes(tar, "index.json", _json_bytes(index), stamp)
            _add_dir(tar, "blobs", stamp)
            _add_dir(tar, "blobs/sha256", stamp)
            _add_bytes(tar, f"blobs/sha256/{config_desc.digest[7:]}", config_bytes, stamp)
            _add_bytes(tar, f"blobs/sha256/{manifest_desc.digest[7:]}", manifest_bytes, stamp)
            written: set[str] = set()
            for lpath, desc in layer_files:
                if desc.digest in written:  # two identical layers are one blob
                    continue
                written.add(desc.digest)
                info = tarfile.TarInfo(f"blobs/sha256/{desc.digest[7:]}")
                info.size = desc.size
                info.mode = 0o644
                info.mtime = stamp
                with open(lpath, "rb") as lf:
                    tar.addfile(info, lf)
        os.replace(tmp_out, out)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    log.info("oci image built name=%s archive=%s manifest=%s", name, out, manifest_desc.digest)
    return BuiltImage(name=name, archive=out, manifest_digest=manifest_desc.digest,
                      config_digest=config_desc.digest,
                      layer_digests=tuple(d.digest for _, d in layer_files))


def import_image(ctr: Path | str, address: Path | str, archive: Path | str, *,
                 namespace: str = "k8s.io", extra_args: Sequence[str] = (),
                 timeout: float = 300) -> None:
    """Import an image-layout archive into containerd with `ctr images import`.

    Raises RuntimeError with ctr's own message when the import fails.
    """
    cmd = [str(ctr), "-n", namespace, "--address", str(address), "images", "import",
           *extra_args, str(archive)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"ctr images import {archive} failed (rc={proc.returncode}): "
                           f"{proc.stderr.strip() or proc.stdout.strip()}")
    log.debug("image imported archive=%s out=%s", archive, proc.stdout.strip())
