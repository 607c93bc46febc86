"""PrefetchList (nydusd's --prefetch-files rules) and ListStore (versions, pins, change signal)."""

from __future__ import annotations

import json
import os
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from advisor import lists as L
from advisor.lists import ImageInventory, ListStore, PrefetchList, check_entry


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("/usr/bin/env", None),
        ("/a b/c", None),  # inner spaces are fine: nydusd only trims the ends
        ("/etc/", None),
        ("app/run.sh", L.REASON_RELATIVE),
        ("", L.REASON_RELATIVE),
        ("/", L.REASON_ROOT),
        ("//", L.REASON_ROOT),
        ("/./", L.REASON_ROOT),
        ("/a\nb", L.REASON_NEWLINE),
        ("/a\rb", L.REASON_NEWLINE),
        ("/a\u2028b", L.REASON_NEWLINE),  # a line break to str.splitlines and editors
        ("/a\x0cb", L.REASON_NEWLINE),
        ("/a\x00b", L.REASON_NUL),
        (" /a", L.REASON_WHITESPACE),
        ("/a ", L.REASON_WHITESPACE),
        ("/a\t", L.REASON_WHITESPACE),
        ("/a\u00a0", L.REASON_WHITESPACE),
        ("/a\udcff", L.REASON_NOT_UTF8),
        ("/a/../etc/shadow", L.REASON_DOTDOT),
        ("/" + "x" * 5000, L.REASON_TOO_LONG),
        ("/a/" + "x" * 256, L.REASON_TOO_LONG),  # longer than NAME_MAX: in no image
        ("/a/" + "é" * 128, L.REASON_TOO_LONG),  # 256 bytes in UTF-8
        ("/a/" + "x" * 255, None),
        (b"/bytes", L.REASON_NOT_STR),
        (None, L.REASON_NOT_STR),
    ],
)
def test_check_entry_reasons(entry: object, reason: str | None) -> None:
    assert check_entry(entry) == reason


def test_root_allowed_only_explicitly() -> None:
    assert check_entry("/", allow_root=True) is None
    assert PrefetchList(["/"], allow_root=True).entries == ("/",)
    assert PrefetchList(["/"]).entries == ()


def test_add_skips_counts_normalises_and_dedupes() -> None:
    plist = PrefetchList(["/usr//lib/./x.so", "/usr/lib/x.so/", "rel", "/a\nb", "/a\nc", "/bin/sh"])
    assert plist.entries == ("/usr/lib/x.so", "/bin/sh")
    assert plist.skipped == {L.REASON_RELATIVE: 1, L.REASON_NEWLINE: 2}
    assert plist.duplicates == 1
    assert not plist.valid
    assert [r.reason for r in plist.rejections] == ["relative", "newline", "newline"]


def test_render_and_parse_round_trip() -> None:
    plist = PrefetchList(["/b", "/a", "/é/ü"])
    assert plist.render() == "/b\n/a\n/é/ü\n"
    assert PrefetchList.parse(plist.render()).entries == plist.entries
    assert PrefetchList().render() == ""


def test_parse_applies_the_same_rules() -> None:
    text = "/ok\n\n relative-with-space\n/trail \r\nrel/x\n/crlf\r\n/\n/ok\n"
    plist = PrefetchList.parse(text)
    assert plist.entries == ("/ok", "/crlf")
    assert plist.skipped == {L.REASON_WHITESPACE: 2, L.REASON_RELATIVE: 1, L.REASON_ROOT: 1}


def test_parse_non_utf8_bytes_is_rejected_whole() -> None:
    plist = PrefetchList.parse(b"/ok\n/bad\xff\n")
    assert plist.entries == ()
    assert plist.skipped == {L.REASON_NOT_UTF8: 1}


def _inventory() -> ImageInventory:
    return ImageInventory.from_rows(
        [
            ("/usr/lib/x.so", "f", 10, None),
            ("/usr/lib/empty", "f", 0, None),
            ("/usr/bin/python3.11", "f", 5, None),
            ("/usr/bin/python3", "l", 0, "python3.11"),
            ("/lib", "l", 0, "usr/lib"),
            ("/etc/alt", "l", 0, "/usr/lib"),
            ("/loop", "l", 0, "loop"),
            ("/dev/null", "c", 0, None),
            ("/up", "l", 0, "../../usr/bin"),
        ]
    )


@pytest.mark.parametrize(
    ("entry", "canonical", "reason"),
    [
        ("/lib/x.so", "/usr/lib/x.so", None),  # symlinked directory: nydusd would drop /lib/x.so
        ("/etc/alt/x.so", "/usr/lib/x.so", None),  # absolute link target stays inside the image
        ("/usr/bin/python3", "/usr/bin/python3.11", None),  # final symlink: fetch its target
        ("/up/python3", "/usr/bin/python3.11", None),  # `..` in a target is clamped at the root
        ("/usr/lib", "/usr/lib", None),  # implicit directory
        ("/lib", "/usr/lib", None),
        ("/usr/lib/missing", None, L.REASON_MISSING),
        ("/usr/lib/x.so/sub", None, L.REASON_MISSING),
        ("/usr/lib/empty", None, L.REASON_EMPTY_FILE),
        ("/dev/null", None, L.REASON_SPECIAL),
        ("/loop/x", None, L.REASON_SYMLINK_LOOP),
    ],
)
def test_inventory_canonicalisation(entry: str, canonical: str | None, reason: str | None) -> None:
    plist = PrefetchList([entry], inventory=_inventory())
    assert plist.entries == ((canonical,) if canonical else ())
    assert plist.skipped == ({reason: 1} if reason else {})


def test_inventory_dedupes_after_canonicalisation() -> None:
    plist = PrefetchList(["/lib/x.so", "/usr/lib/x.so"], inventory=_inventory())
    assert plist.entries == ("/usr/lib/x.so",)
    assert plist.duplicates == 1


def test_inventory_from_frame() -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(
        {"path": ["/lib", "/usr/lib/a"], "type": ["l", "f"], "size": [0, 3], "link_target": ["usr/lib", None]}
    )
    assert PrefetchList(["/lib/a"], inventory=ImageInventory.from_frame(frame)).entries == ("/usr/lib/a",)


def test_write_atomic_leaves_no_temp_and_replaces(tmp_path) -> None:
    target = tmp_path / "sub" / "svc.list"
    PrefetchList(["/a"]).write_atomic(target)
    PrefetchList(["/b", "/c"]).write_atomic(target)
    assert target.read_bytes() == b"/b\n/c\n"
    assert sorted(os.listdir(target.parent)) == ["svc.list"]
    assert oct(target.stat().st_mode & 0o777) == oct(0o644)


# Every line we would hand nydusd must survive its reading rules unchanged.
def _nydusd_reads(body: bytes) -> list[str]:
    text = body.decode("utf-8")  # nydusd refuses a non-UTF-8 file
    lines = [ln.strip() for ln in text.split("\n")]
    entries = [ln for ln in lines if ln]
    assert all(e.startswith("/") for e in entries)  # one relative entry would fail the mount
    return entries


@settings(max_examples=300)
@given(st.lists(st.text(alphabet=st.characters(codec=None), max_size=30) | st.just("/")))
def test_property_rendered_list_is_read_back_exactly_by_nydusd_rules(raw: list[str]) -> None:
    plist = PrefetchList(raw)
    assert _nydusd_reads(plist.to_bytes()) == list(plist.entries)
    assert "/" not in plist.entries
    assert len(set(plist.entries)) == len(plist.entries)
    assert len(plist) + sum(plist.skipped.values()) + plist.duplicates == len(raw)


@settings(max_examples=200)
@given(st.text(alphabet=st.characters(codec=None) | st.sampled_from("\n\r/ ."), max_size=200))
def test_property_parse_never_raises_and_is_valid(text: str) -> None:
    plist = PrefetchList.parse(text)
    assert _nydusd_reads(plist.to_bytes()) == list(plist.entries)
    assert PrefetchList.parse(plist.render()).entries == plist.entries


# ----------------------------------------------------------------------------------- ListStore


def test_store_versions_latest_and_history(tmp_path) -> None:
    store = ListStore(tmp_path)
    svc, dig = "default/web/nginx", "sha256:" + "a" * 64
    assert store.latest(svc) is None
    g0 = store.generation()
    v1 = store.put(svc, dig, PrefetchList(["/a"]), {"entries": [{"path": "/a", "score": 0.9}]})
    v2 = store.put(svc, dig, PrefetchList(["/b"]), {"entries": [{"path": "/b", "score": 0.5}]})
    assert (v1, v2) == (1, 2)
    assert store.generation() == g0 + 2
    latest = store.latest(svc, dig)
    assert latest is not None and latest.version == 2 and not latest.pinned
    assert latest.load().entries == ("/b",)
    report = latest.report()
    assert report["entries"] == [{"path": "/b", "score": 0.5}]
    assert (report["service"], report["image_digest"], report["version"]) == (svc, dig, 2)
    assert [h.version for h in store.history(svc, dig)] == [1, 2]
    assert store.services() == [svc]
    # the service name with '/' lives in one directory component
    assert len(list((tmp_path / "learned").iterdir())) == 1
    # the same list again is the same version: no new files, no generation bump
    assert store.put(svc, dig, PrefetchList(["/b"]), {"entries": []}) == 2
    assert store.generation() == g0 + 2 and [h.version for h in store.history(svc, dig)] == [1, 2]
    assert store.put(svc, dig, PrefetchList(["/a"])) == 3


def test_store_latest_without_digest_takes_newest_image(tmp_path) -> None:
    store = ListStore(tmp_path)
    store.put("s", "sha256:old", PrefetchList(["/old"]))
    store.put("s", "sha256:new", PrefetchList(["/new"]))
    latest = store.latest("s")
    assert latest is not None and latest.image == "sha256:new"
    assert store.latest("s", "sha256:old").load().entries == ("/old",)
    assert store.latest("other") is None


def test_pin_wins_until_removed(tmp_path) -> None:
    store = ListStore(tmp_path)
    dig, ref = "sha256:d", "docker.io/library/nginx:latest"
    store.put("svc", dig, PrefetchList(["/learned"]))
    name = store.pin("svc", ref, PrefetchList(["/pinned"]))
    assert L.PIN_NAME_RE.fullmatch(name)
    pinned = store.latest("svc", dig, image_ref=ref)
    assert pinned is not None and pinned.pinned and pinned.load().entries == ("/pinned",)
    # a pin for a different image does not hide this image's learned list
    assert store.latest("svc", dig).load().entries == ("/learned",)
    named = store.get_named(name)
    assert named is not None and named.service == "svc" and named.image == ref
    gen = store.generation()
    assert store.remove("svc", ref, scope="pin") == 1
    assert store.generation() == gen + 1
    assert store.get_named(name) is None
    assert store.latest("svc", dig, image_ref=ref).load().entries == ("/learned",)


def test_pin_again_replaces_and_custom_names(tmp_path) -> None:
    store = ListStore(tmp_path)
    store.pin("svc", "sha256:d", PrefetchList(["/1"]), name="first")
    store.pin("svc", "sha256:d", PrefetchList(["/2"]), name="second")
    assert store.get_named("first") is None
    assert store.get_named("second").load().entries == ("/2",)
    assert [p.name for p in store.pins("svc")] == ["second"]


@pytest.mark.parametrize("bad", ["", "../x", ".hidden", "a/b", "x" * 129, "a\nb", "ab\n", "é"])
def test_bad_pin_names(tmp_path, bad: str) -> None:
    store = ListStore(tmp_path)
    with pytest.raises(ValueError, match="invalid pin name"):
        store.pin("svc", "img", PrefetchList(["/a"]), name=bad)
    assert store.get_named(bad) is None


def test_remove_scopes(tmp_path) -> None:
    store = ListStore(tmp_path)
    store.put("svc", "sha256:d", PrefetchList(["/a"]))
    store.put("svc", "sha256:d", PrefetchList(["/b"]))
    store.pin("svc", "sha256:d", PrefetchList(["/p"]))
    assert store.remove("svc", scope="learned") == 2
    assert store.latest("svc", "sha256:d").pinned
    assert store.remove("svc") == 1
    assert store.latest("svc", "sha256:d") is None
    assert store.remove("svc") == 0
    with pytest.raises(ValueError):
        store.remove("svc", scope="bogus")


def test_incomplete_version_is_invisible(tmp_path) -> None:
    store = ListStore(tmp_path)
    store.put("svc", "sha256:d", PrefetchList(["/a"]))
    directory = tmp_path / "learned" / L.encode_component("svc") / L.encode_component("sha256:d")
    (directory / "v000002.list").write_text("/half\n")  # no report: a crashed writer
    assert store.latest("svc", "sha256:d").version == 1
    assert store.put("svc", "sha256:d", PrefetchList(["/c"])) == 2


@given(st.text(alphabet=string.printable + "é/:@.", min_size=1, max_size=100))
def test_property_component_encoding_is_safe_and_reversible(value: str) -> None:
    enc = L.encode_component(value)
    assert "/" not in enc and enc not in (".", "..") and not enc.startswith(".") and "\x00" not in enc
    assert L.decode_component(enc) == value


def test_long_service_names_are_hashed_apart(tmp_path) -> None:
    a, b = "x" * 300 + "a", "x" * 300 + "b"
    assert L.encode_component(a) != L.encode_component(b)
    store = ListStore(tmp_path)
    store.put(a, "sha256:d", PrefetchList(["/a"]))
    store.put(b, "sha256:d", PrefetchList(["/b"]))
    assert store.latest(a).load().entries == ("/a",)
    assert store.latest(b).load().entries == ("/b",)


def test_report_json_survives_non_utf8_names(tmp_path) -> None:
    store = ListStore(tmp_path)
    store.put("svc", "sha256:d", PrefetchList(["/a"]), {"dropped": ["/bad\udcff"]})
    raw = store.latest("svc").report_path.read_bytes()
    assert json.loads(raw)["dropped"] == ["/bad\udcff"]


def test_write_bytes_atomic_fsyncs_only_when_durable(tmp_path, monkeypatch) -> None:
    import advisor.lists as L

    synced: list[int] = []
    real = L.os.fsync
    monkeypatch.setattr(L.os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    L.write_bytes_atomic(tmp_path / "a.list", b"/a\n")
    assert len(synced) == 2  # the file, then its directory
    synced.clear()
    L.write_bytes_atomic(tmp_path / "b.list", b"/b\n", durable=False)
    assert synced == [] and (tmp_path / "b.list").read_bytes() == b"/b\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.list", "b.list"]  # no temp file left
