"""Unit tests for the corpus tooling: mirror discovery, archive inventories, run planning."""

from __future__ import annotations

import io
import json
import random
import tarfile
from pathlib import Path

import pytest

from corpus.inventory import inventory_from_archive
from corpus.mirror import MirrorNotFound, find_debian_mirror
from corpus.services import SERVICES, Knob, RangeKnob, SubsetKnob, plan_runs


def test_mirror_from_deb822_skips_security(tmp_path: Path) -> None:
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(
        "Types: deb\nURIs: http://sec.example/debian-security\nSuites: bookworm-security\n"
        "Components: main\nSigned-By: /k/sec.gpg\n\n"
        "Types: deb\n# comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\nSigned-By: /k/main.gpg\n"
    )
    m = find_debian_mirror(tmp_path)
    assert m.uri == "http://mirror.example/debian"
    assert str(m.keyring) == "/k/main.gpg"


def test_mirror_from_one_line_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(
        "# deb http://commented.example/debian bookworm main\n"
        "deb [arch=amd64] http://local.example/debian bookworm main contrib\n"
    )
    assert find_debian_mirror(tmp_path).uri == "http://local.example/debian"


def test_mirror_missing_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MirrorNotFound, match="no Debian archive"):
        find_debian_mirror(tmp_path)


def _layer(entries: list[tuple[str, str, bytes | str]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            if kind == "d":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif kind == "l":
                info.type, info.linkname = tarfile.SYMTYPE, str(data)
                tar.addfile(info)
            elif kind == "h":
                info.type, info.linkname = tarfile.LNKTYPE, str(data)
                tar.addfile(info)
            else:
                assert isinstance(data, bytes)
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _archive(path: Path, layers: list[bytes]) -> Path:
    import hashlib

    def blob(tar: tarfile.TarFile, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        info = tarfile.TarInfo(f"blobs/sha256/{digest}")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        return "sha256:" + digest

    with tarfile.open(path, "w") as tar:
        descs = [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": blob(tar, l), "size": len(l)}
                 for l in layers]
        manifest = json.dumps({"schemaVersion": 2, "layers": descs}).encode()
        mdigest = blob(tar, manifest)
        index = json.dumps({"manifests": [{"digest": mdigest}]}).encode()
        info = tarfile.TarInfo("index.json")
        info.size = len(index)
        tar.addfile(info, io.BytesIO(index))
    return path


def test_inventory_applies_layers_and_whiteouts(tmp_path: Path) -> None:
    lower = _layer([
        ("usr", "d", ""), ("usr/lib", "d", ""), ("usr/lib/libold.so.1", "f", b"x" * 10),
        ("usr/lib/py3.11", "d", ""), ("usr/lib/py3.11/os.py", "f", b"os"),
        ("etc", "d", ""), ("etc/conf", "f", b"abc"), ("etc/link", "l", "conf"),
        ("opt", "d", ""), ("opt/keep", "f", b"k"),
    ])
    upper = _layer([
        ("usr/lib/.wh.libold.so.1", "f", b""),          # file removed
        ("usr/lib/libnew.so.2", "f", b"y" * 20),
        ("usr/lib/py3.11/.wh..wh..opq", "f", b""),       # dir made opaque: lower contents gone
        ("usr/lib/py3.11/new.py", "f", b"new"),
        ("etc/conf", "f", b"abcdef"),                    # file replaced
        ("etc/hard", "h", "etc/conf"),                   # hard link to the new file
        ("opt/.wh.keep", "f", b""),
    ])
    inv = inventory_from_archive(_archive(tmp_path / "img.tar", [lower, upper]), digest="sha256:test")
    rows = {r["path"]: r for r in inv.to_pylist()}
    assert "/usr/lib/libold.so.1" not in rows
    assert rows["/usr/lib/libnew.so.2"]["size"] == 20
    assert "/usr/lib/py3.11/os.py" not in rows
    assert rows["/usr/lib/py3.11/new.py"]["type"] == "f"
    assert rows["/usr/lib/py3.11"]["type"] == "d"
    assert rows["/etc/conf"]["size"] == 6
    assert rows["/etc/hard"] == {**rows["/etc/conf"], "path": "/etc/hard", "mode": rows["/etc/hard"]["mode"]}
    assert rows["/etc/link"]["type"] == "l" and rows["/etc/link"]["link_target"] == "conf"
    assert "/opt/keep" not in rows and rows["/opt"]["type"] == "d"
    assert not any(".wh." in p for p in rows)
    assert set(inv.column("image_digest").to_pylist()) == {"sha256:test"}


def test_inventory_file_replacing_directory_drops_its_contents(tmp_path: Path) -> None:
    lower = _layer([("a", "d", ""), ("a/b", "f", b"1")])
    upper = _layer([("a", "f", b"now a file")])
    rows = {r["path"]: r for r in inventory_from_archive(_archive(tmp_path / "i.tar", [lower, upper])).to_pylist()}
    assert rows["/a"]["type"] == "f" and "/a/b" not in rows


def test_plans_are_reproducible_and_differ_by_seed() -> None:
    spec = SERVICES["py-etl"]
    a = plan_runs(spec, 20, 1, upgrade_runs=5)
    assert a == plan_runs(spec, 20, 1, upgrade_runs=5)
    assert [p.env for p in a] != [p.env for p in plan_runs(spec, 20, 2, upgrade_runs=5)]


def test_plans_have_requested_intents_and_images() -> None:
    spec = SERVICES["py-api"]
    plans = plan_runs(spec, 20, 7, early_exits=2, agent_restarts=1, upgrade_runs=4)
    intents = [p.intent for p in plans]
    assert intents.count("complete") == 24 and intents.count("early_exit") == 2
    assert intents.count("agent_restart") == 1
    assert intents[0] == "complete"
    assert [p.image for p in plans[-4:]] == ["python-v2"] * 4
    assert {p.image for p in plans[:-4]} == {"python-v1"}
    assert all(p.env["CRASH"] == "1" for p in plans if p.intent == "early_exit")
    assert not any("CRASH" in p.env for p in plans if p.intent != "early_exit")
    assert len({p.pod_name for p in plans}) == len(plans)


def test_knobs_actually_vary_across_runs() -> None:
    for spec in SERVICES.values():
        plans = plan_runs(spec, 22, 3)
        for knob in spec.knobs:
            values = {p.env[knob.env] for p in plans}
            assert len(values) > 1, f"{spec.name}: knob {knob.env} never varies"


def test_knob_draws_follow_their_weights() -> None:
    rng = random.Random(5)
    k = Knob("X", (("a", 0.8), ("b", 0.2)), "")
    draws = [k.draw(rng) for _ in range(4000)]
    assert 0.75 < draws.count("a") / 4000 < 0.85
    s = SubsetKnob("Y", (("p", 0.5), ("q", 0.1)), "")
    subs = [s.draw(rng).split() for _ in range(4000)]
    assert 0.45 < sum("p" in x for x in subs) / 4000 < 0.55
    assert 0.07 < sum("q" in x for x in subs) / 4000 < 0.13
    r = RangeKnob("Z", 10, 1000, "")
    vals = [int(r.draw(rng)) for _ in range(2000)]
    assert min(vals) >= 10 and max(vals) <= 1000 and sum(v < 100 for v in vals) > 800


def test_service_ports_are_distinct_and_images_match_family() -> None:
    ports = [s.port for s in SERVICES.values() if s.port]
    assert len(ports) == len(set(ports))
    families = {}
    for s in SERVICES.values():
        families.setdefault(s.family, []).append(s.name)
    assert len(SERVICES) >= 6
    assert max(len(v) for v in families.values()) >= 3  # several services share one image
