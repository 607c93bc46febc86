"""The image inventory against the kernel's own overlay merge of the same layers (root: mknod, xattrs)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from agent.trace.inventory import take_inventory

pytestmark = pytest.mark.e2e

DIGEST = "sha256:" + "0" * 64


def write(path: Path, data: bytes = b"x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def whiteout(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))


def merged_listing(root: Path) -> dict[str, tuple[str, int | None, str | None]]:
    """path -> (type, size for non-directories, symlink target) as a mounted overlay shows it."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = "/" + str(p.relative_to(root))
            kind = "d" if stat.S_ISDIR(st.st_mode) else "l" if stat.S_ISLNK(st.st_mode) else "f"
            out[rel] = (kind, None if kind == "d" else st.st_size, os.readlink(p) if kind == "l" else None)
    return out


def inventory_listing(table) -> dict[str, tuple[str, int | None, str | None]]:
    rows = table.to_pylist()
    assert all(r["image_digest"] == DIGEST for r in rows)
    return {r["path"]: (r["type"], None if r["type"] == "d" else r["size"], r["link_target"]) for r in rows}


@pytest.fixture
def layers(tmp_path: Path):
    if os.geteuid() != 0:
        pytest.fail("needs root (mknod whiteouts, trusted.* xattrs, mount)")
    top, mid, bottom = (tmp_path / n for n in ("top", "mid", "bottom"))
    # bottom layer: the base image
    write(bottom / "etc/a", b"base-a")
    write(bottom / "etc/b", b"base-b")
    write(bottom / "opt/x/1", b"1")
    write(bottom / "opt/x/2", b"22")
    write(bottom / "usr/lib/libz.so", b"z" * 10)
    write(bottom / "gone/sub/f", b"f")
    write(bottom / "replaced/child", b"c")
    write(bottom / "keep/z", b"z")
    os.symlink("/etc/a", bottom / "lnk")
    # middle layer: deletions, an opaque directory, a modified file, a dir replaced by a file
    whiteout(mid / "etc/b")
    whiteout(mid / "gone")
    write(mid / "opt/x/3", b"333")
    os.setxattr(mid / "opt/x", "trusted.overlay.opaque", b"y")
    write(mid / "usr/lib/libz.so", b"z" * 20)
    write(mid / "replaced", b"now a file")
    # top layer: a new file and an overwrite
    write(top / "new/f", b"new")
    write(top / "etc/a", b"top-a!")
    for d in (top, mid, bottom):
        d.mkdir(exist_ok=True)
    return [top, mid, bottom]


def test_inventory_matches_the_kernels_overlay_merge(layers, tmp_path: Path):
    merged = tmp_path / "merged"
    merged.mkdir()
    lower = ":".join(str(p) for p in layers)
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lower}", str(merged)], check=True)
    try:
        expected = merged_listing(merged)
    finally:
        subprocess.run(["umount", str(merged)], check=True)
    got = inventory_listing(take_inventory(DIGEST, [os.fsencode(p) for p in layers]))
    assert got == expected
    # The cases the fixture was built for, spelled out:
    assert "/etc/b" not in got and "/gone" not in got and "/gone/sub/f" not in got
    assert "/opt/x/3" in got and "/opt/x/1" not in got
    assert got["/usr/lib/libz.so"][1] == 20 and got["/etc/a"][1] == 6
    assert got["/replaced"][0] == "f" and "/replaced/child" not in got
    assert got["/lnk"] == ("l", len("/etc/a"), "/etc/a")


def test_aufs_style_whiteout_files(tmp_path: Path):
    # Layers unpacked without conversion keep OCI's .wh. names; they must mean the same thing.
    top, bottom = tmp_path / "top", tmp_path / "bottom"
    write(bottom / "etc/a", b"a")
    write(bottom / "etc/b", b"b")
    write(bottom / "var/cache/x", b"x")
    write(bottom / "var/cache/y", b"y")
    write(top / "etc/.wh.a", b"")
    write(top / "var/cache/.wh..wh..opq", b"")
    write(top / "var/cache/new", b"n")
    got = inventory_listing(take_inventory(DIGEST, [os.fsencode(top), os.fsencode(bottom)]))
    assert set(got) == {"/etc", "/etc/b", "/var", "/var/cache", "/var/cache/new"}


def test_modes_and_types(tmp_path: Path):
    layer = tmp_path / "l"
    write(layer / "bin/tool", b"#!")
    os.chmod(layer / "bin/tool", 0o4755)
    os.mkfifo(layer / "fifo")
    rows = {r["path"]: r for r in take_inventory(DIGEST, [os.fsencode(layer)]).to_pylist()}
    assert rows["/bin/tool"]["mode"] == 0o4755 and rows["/bin/tool"]["type"] == "f"
    assert rows["/fifo"]["type"] == "p" and rows["/bin"]["type"] == "d"
