"""testbed.oci and testbed.toml_render: archive layout, digests, links, ownership, TOML output."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tomllib
from pathlib import Path

import pytest

from testbed.oci import ANNOTATION_IMAGE_NAME, ImageConfig, build_image_archive, write_layer
from testbed.toml_render import deep_merge, render_toml


def _rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "a").write_text("alpha")
    (root / "etc" / "b").write_bytes(b"\0" * 100_000)
    os.link(root / "etc" / "a", root / "etc" / "a-hard")
    (root / "etc" / "a-sym").symlink_to("a")
    (root / "empty").mkdir()
    return root


def _members(blob: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(blob)) as t:
        return {m.name: m for m in t.getmembers()}


def test_archive_layout_digests_and_annotation(tmp_path: Path) -> None:
    cfg = ImageConfig(entrypoint=["/bin/sh"], cmd=["-c", "true"], env=["A=1"], working_dir="/w")
    built = build_image_archive("docker.io/x/y:1", _rootfs(tmp_path), tmp_path / "img.tar", cfg)
    with tarfile.open(built.archive) as t:
        files = {m.name: t.extractfile(m).read() for m in t.getmembers() if m.isfile()}
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(files["index.json"])
    [desc] = index["manifests"]
    assert desc["digest"] == built.manifest_digest
    assert desc["annotations"][ANNOTATION_IMAGE_NAME] == "docker.io/x/y:1"
    # Every blob is stored under its own sha256.
    for name, data in files.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    manifest = json.loads(files[f"blobs/sha256/{built.manifest_digest[7:]}"])
    assert manifest["annotations"][ANNOTATION_IMAGE_NAME] == "docker.io/x/y:1"
    assert manifest["config"]["digest"] == built.config_digest
    config = json.loads(files[f"blobs/sha256/{built.config_digest[7:]}"])
    assert config["config"]["Entrypoint"] == ["/bin/sh"]
    assert config["config"]["Cmd"] == ["-c", "true"]
    assert config["config"]["Env"] == ["A=1"]
    assert config["config"]["WorkingDir"] == "/w"
    assert config["rootfs"]["diff_ids"] == list(built.layer_digests)
    layer = _members(files[f"blobs/sha256/{built.layer_digests[0][7:]}"])
    assert layer["etc/a-hard"].islnk() and layer["etc/a-hard"].linkname == "etc/a"
    assert layer["etc/a-sym"].issym() and layer["etc/a-sym"].linkname == "a"
    assert layer["etc/b"].size == 100_000
    assert layer["empty"].isdir()


def test_layer_keeps_numeric_ownership(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown to another uid needs root")  # fails under CI=true (tests/conftest.py)
    root = tmp_path / "r"
    root.mkdir()
    (root / "f").write_text("x")
    os.chown(root / "f", 1234, 2345)
    buf = io.BytesIO()
    write_layer(root, buf)
    m = _members(buf.getvalue())["f"]
    assert (m.uid, m.gid, m.uname, m.gname) == (1234, 2345, "", "")


def test_build_is_reproducible_and_name_sensitive(tmp_path: Path) -> None:
    root = _rootfs(tmp_path)
    a = build_image_archive("docker.io/x/y:1", root, tmp_path / "a.tar")
    b = build_image_archive("docker.io/x/y:1", root, tmp_path / "b.tar")
    c = build_image_archive("docker.io/x/y:2", root, tmp_path / "c.tar")
    assert a.manifest_digest == b.manifest_digest
    assert a.layer_digests == c.layer_digests
    assert a.manifest_digest != c.manifest_digest


def test_layer_digest_matches_bytes(tmp_path: Path) -> None:
    buf = io.BytesIO()
    digest, size = write_layer(_rootfs(tmp_path), buf)
    assert size == len(buf.getvalue())
    assert digest == "sha256:" + hashlib.sha256(buf.getvalue()).hexdigest()


def test_bad_rootfs_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a directory"):
        build_image_archive("x:1", tmp_path / "missing", tmp_path / "o.tar")
    assert not (tmp_path / "o.tar").exists()


def test_toml_render_round_trips_and_merges() -> None:
    doc = {"version": 2, "root": "/r\"q", "plugins": {
        "io.containerd.nri.v1.nri": {"disable": False, "socket_path": "/x/nri.sock"},
        "io.containerd.grpc.v1.cri": {"containerd": {"runtimes": {"runc": {
            "runtime_type": "io.containerd.runc.v2", "options": {"Root": "/x/runc"}}}}}}}
    patched = deep_merge(doc, {"plugins": {"io.containerd.nri.v1.nri": {"disable": True},
                                           "extra": {"list": ["a", "b"], "n": 3}}})
    assert tomllib.loads(render_toml(patched)) == {
        **doc, "plugins": {**doc["plugins"],
                           "io.containerd.nri.v1.nri": {"disable": True,
                                                        "socket_path": "/x/nri.sock"},
                           "extra": {"list": ["a", "b"], "n": 3}}}
    assert doc["plugins"]["io.containerd.nri.v1.nri"]["disable"] is False  # input untouched
