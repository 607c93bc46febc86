"""Pod annotations are untrusted: each bad input is a typed rejection, never an exception."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from advisor.lists import ListStore, PrefetchList, check_entry
from agent.inject import annotations as A
from agent.inject.annotations import AnnotationLimits, parse_pod_annotations, record_rejections

NGINX = "docker.io/library/nginx:latest"


@pytest.fixture()
def env(tmp_path: Path) -> dict[str, Path]:
    allowed = tmp_path / "lists"
    allowed.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (allowed / "good.list").write_text("/usr/bin/env\n/etc/nginx/\n")
    (outside / "secret.list").write_text("/etc/shadow\n")
    return {"allowed": allowed, "outside": outside, "tmp": tmp_path}


def limits(env: dict[str, Path], **kw: int) -> AnnotationLimits:
    return AnnotationLimits(allowed_dirs=(env["allowed"],), **kw)


def upstream(entries: object) -> dict[str, str]:
    return {A.UPSTREAM_KEY: json.dumps(entries)}


def reasons(parsed: A.PodAnnotations) -> list[str]:
    return [r.reason for r in parsed.rejections]


def test_upstream_annotation_accepted_unchanged(env) -> None:
    parsed = parse_pod_annotations(upstream([{"image": "nginx", "prefetch": str(env["allowed"] / "good.list")}]),
                                   limits(env))
    assert parsed.rejections == []
    (o,) = parsed.overrides
    assert (o.image, o.source, o.origin) == (NGINX, A.SRC_UPSTREAM, str(env["allowed"] / "good.list"))
    assert o.plist.entries == ("/usr/bin/env", "/etc/nginx")
    assert parsed.annotated_images() == [NGINX]


# The list: each rejected with its reason.
@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ('[{"image":', "malformed_json"),
        ('{"image": "nginx", "prefetch": "/x"}', "not_array"),
        ('[{"image": "nginx"}]', "missing_field"),
        ('[{"prefetch": "/x"}]', "missing_field"),
        ('["nginx"]', "not_object"),
        ('[{"image": 1, "prefetch": "/x"}]', "bad_field"),
        ('[{"image": "Nginx", "prefetch": "/x"}]', "bad_image_ref"),
        ('[{"image": "nginx", "prefetch": "lists/good.list"}]', "relative"),
        ('[{"image": "nginx", "prefetch": "/a\\nb"}]', "newline"),
        ('[{"image": "nginx", "prefetch": "/a\\u0000b"}]', "nul"),
        ('[{"image": "nginx", "prefetch": "/"}]', "outside_allowlist"),
    ],
)
def test_upstream_rejections(env, value: str, reason: str) -> None:
    parsed = parse_pod_annotations({A.UPSTREAM_KEY: value}, limits(env))
    assert reasons(parsed) == [reason]
    assert parsed.overrides == []


def test_dotdot_escape_is_resolved_before_the_check(env) -> None:
    sneaky = str(env["allowed"]) + "/../outside/secret.list"
    parsed = parse_pod_annotations(upstream([{"image": "nginx", "prefetch": sneaky}]), limits(env))
    assert reasons(parsed) == ["outside_allowlist"]
    assert "resolves to" in parsed.rejections[0].detail


def test_symlink_out_of_allowlist(env) -> None:
    link = env["allowed"] / "link.list"
    link.symlink_to(env["outside"] / "secret.list")
    parsed = parse_pod_annotations(upstream([{"image": "nginx", "prefetch": str(link)}]), limits(env))
    assert reasons(parsed) == ["outside_allowlist"]


def test_symlinked_directory_out_of_allowlist(env) -> None:
    (env["allowed"] / "sub").symlink_to(env["outside"])
    path = str(env["allowed"] / "sub" / "secret.list")
    assert reasons(parse_pod_annotations(upstream([{"image": "nginx", "prefetch": path}]), limits(env))) == [
        "outside_allowlist"
    ]


def test_symlink_inside_allowlist_is_fine(env) -> None:
    (env["allowed"] / "alias.list").symlink_to(env["allowed"] / "good.list")
    parsed = parse_pod_annotations(upstream([{"image": "nginx", "prefetch": str(env["allowed"] / "alias.list")}]),
                                   limits(env))
    assert reasons(parsed) == [] and parsed.overrides[0].plist.entries == ("/usr/bin/env", "/etc/nginx")


def test_nonexistent_list_path(env) -> None:
    path = str(env["allowed"] / "nope.list")
    assert reasons(parse_pod_annotations(upstream([{"image": "nginx", "prefetch": path}]), limits(env))) == [
        "missing_file"
    ]


def test_allowlisted_dir_itself_and_special_files(env) -> None:
    os.mkfifo(env["allowed"] / "fifo.list")  # opening it must not block
    (env["allowed"] / "d.list").mkdir()
    got = parse_pod_annotations(
        upstream([{"image": "a", "prefetch": str(env["allowed"])},
                  {"image": "b", "prefetch": str(env["allowed"] / "fifo.list")},
                  {"image": "c", "prefetch": str(env["allowed"] / "d.list")}]),
        limits(env),
    )
    assert reasons(got) == ["outside_allowlist", "not_regular", "not_regular"]


def test_list_file_contents_are_validated(env) -> None:
    for name, body, reason in [
        ("rel.list", "/ok\napp/run.sh\n", "relative"),
        ("root.list", "/\n", "root"),
        ("dots.list", "/a/../etc/shadow\n", "dotdot"),
        ("sp.list", "/ok\n/trailing \n", "whitespace"),
        ("bin.list", b"/ok\n/\xff\n", "not_utf8"),
        ("empty.list", "\n\n", "empty_list"),
    ]:
        p = env["allowed"] / name
        p.write_bytes(body if isinstance(body, bytes) else body.encode())
        got = parse_pod_annotations(upstream([{"image": "nginx", "prefetch": str(p)}]), limits(env))
        assert reasons(got) == [reason], name
        assert got.overrides == []


def test_big_list_file_is_not_read(env) -> None:
    p = env["allowed"] / "big.list"
    p.write_text("/x\n" * 1000)
    got = parse_pod_annotations(upstream([{"image": "nginx", "prefetch": str(p)}]), limits(env, max_file_bytes=1000))
    assert reasons(got) == ["too_large"]


def test_one_megabyte_value_rejected_for_every_key(env) -> None:
    big = "/" + "a" * (1024 * 1024)
    for key in (A.UPSTREAM_KEY, A.LIST_KEY, A.LIST_NAME_KEY, A.IMAGES_KEY, A.DISABLE_KEY):
        got = parse_pod_annotations({key: big}, limits(env))
        assert reasons(got) == ["too_large"], key
        assert got.overrides == [] and not got.disabled


def test_one_bad_upstream_element_keeps_the_others(env) -> None:
    got = parse_pod_annotations(
        upstream([{"image": "nginx", "prefetch": str(env["outside"] / "secret.list")},
                  {"image": "redis", "prefetch": str(env["allowed"] / "good.list")}]),
        limits(env),
    )
    assert reasons(got) == ["outside_allowlist"]
    assert [o.image for o in got.overrides] == ["docker.io/library/redis:latest"]


# ----------------------------------------------------------------------------------- our keys


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("/ok\napp/run.sh", "relative"),
        ('["/ok", "app/run.sh"]', "relative"),
        ('["/a\\nb"]', "newline"),
        ('["/a\\u0000b"]', "nul"),
        ('["/"]', "root"),
        ("/", "root"),
        ('["/a/../../etc/shadow"]', "dotdot"),
        ('["/ok", 3]', "not_text"),
        ('["/x",', "malformed_json"),
        ('"just a string"', "relative"),  # not [ or {: read as plain text
        ("[]", "empty_list"),
        ("  \n ", "empty_list"),
        ('{"Nginx": ["/a"]}', "bad_image_ref"),
        ('{"nginx": "/a"}', "not_array"),
    ],
)
def test_inline_list_rejections(env, value: str, reason: str) -> None:
    got = parse_pod_annotations({A.LIST_KEY: value}, limits(env))
    assert reasons(got) == [reason]
    assert got.overrides == []


def test_inline_list_forms(env) -> None:
    text = parse_pod_annotations({A.LIST_KEY: "/usr/bin/env\n\n/etc//nginx/\n/usr/bin/env\n"}, limits(env))
    assert reasons(text) == []
    assert text.overrides[0].plist.entries == ("/usr/bin/env", "/etc/nginx")
    assert text.overrides[0].image is None
    per_image = parse_pod_annotations({A.LIST_KEY: json.dumps({"nginx": ["/a"], "redis:7": ["/b"]})}, limits(env))
    assert [(o.image, o.plist.entries) for o in per_image.overrides] == [
        (NGINX, ("/a",)),
        ("docker.io/library/redis:7", ("/b",)),
    ]


def test_named_lists(env) -> None:
    store = ListStore(env["tmp"] / "store")
    name = store.pin("default/web/nginx", NGINX, PrefetchList(["/pinned"]), name="web-fast")
    got = parse_pod_annotations({A.LIST_NAME_KEY: name}, limits(env), store)
    assert reasons(got) == []
    assert (got.overrides[0].source, got.overrides[0].plist.entries) == (A.SRC_NAMED, ("/pinned",))
    for bad in ("nope", "../pins/web-fast", "web-fast/x", "web fast", ""):
        assert reasons(parse_pod_annotations({A.LIST_NAME_KEY: bad}, limits(env), store)) == ["unknown_list"], bad
    # a YAML block scalar ends in a newline: tolerated
    assert reasons(parse_pod_annotations({A.LIST_NAME_KEY: name + "\n"}, limits(env), store)) == []
    keyed = parse_pod_annotations({A.LIST_NAME_KEY: json.dumps({"nginx": name})}, limits(env), store)
    assert keyed.overrides[0].image == NGINX
    assert reasons(parse_pod_annotations({A.LIST_NAME_KEY: '{"nginx": 3}'}, limits(env), store)) == ["bad_field"]


def test_disable_switch(env) -> None:
    assert parse_pod_annotations({A.DISABLE_KEY: "True"}, limits(env)).disabled
    assert not parse_pod_annotations({A.DISABLE_KEY: "false"}, limits(env)).disabled
    got = parse_pod_annotations({A.DISABLE_KEY: "maybe"}, limits(env))
    assert not got.disabled and reasons(got) == ["bad_switch"]


def test_images_annotation_forms(env) -> None:
    assert [i.image for i in parse_pod_annotations({A.IMAGES_KEY: "nginx, redis:7"}, limits(env)).images] == [
        NGINX, "docker.io/library/redis:7"]
    by_container = parse_pod_annotations({A.IMAGES_KEY: '{"web": "nginx"}'}, limits(env)).images
    assert [(i.container, i.image) for i in by_container] == [("web", NGINX)]
    got = parse_pod_annotations({A.IMAGES_KEY: '["nginx", "BAD"]'}, limits(env))
    assert [i.image for i in got.images] == [NGINX] and reasons(got) == ["bad_image_ref"]
    assert reasons(parse_pod_annotations({A.IMAGES_KEY: '["x",'}, limits(env))) == ["malformed_json"]


def test_unknown_key_and_non_text_values(env) -> None:
    got = parse_pod_annotations({A.PREFIX + "lsit": "/a", A.LIST_KEY: 5, "other/key": "x"}, limits(env))
    assert sorted(reasons(got)) == ["not_text", "unknown_key"]
    assert parse_pod_annotations(None, limits(env)).rejections == []
    assert parse_pod_annotations(["not", "a", "mapping"], limits(env)).rejections == []


def test_override_precedence(env) -> None:
    good = str(env["allowed"] / "good.list")
    got = parse_pod_annotations(
        {A.UPSTREAM_KEY: json.dumps([{"image": "nginx", "prefetch": good}]), A.LIST_KEY: '["/inline"]'}, limits(env)
    )
    assert got.override_for(NGINX).source == A.SRC_UPSTREAM
    assert got.override_for("docker.io/library/redis:latest").source == A.SRC_INLINE


def test_rejections_are_logged_with_pod_and_counted(env, caplog) -> None:
    got = parse_pod_annotations({A.UPSTREAM_KEY: '[{"image":'}, limits(env))
    before = A.REJECTIONS.labels("malformed_json")._value.get()
    with caplog.at_level("WARNING", logger=A.__name__):
        record_rejections("default/web-1(abc)", got.rejections)
    assert A.REJECTIONS.labels("malformed_json")._value.get() == before + 1
    assert "pod=default/web-1(abc)" in caplog.text and "reason=malformed_json" in caplog.text


# ----------------------------------------------------------------------------------- properties

keys = st.sampled_from([A.UPSTREAM_KEY, A.LIST_KEY, A.LIST_NAME_KEY, A.DISABLE_KEY, A.IMAGES_KEY, A.PREFIX + "x"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.sampled_from(["/", "/a", "a/b", "/a\nb"]),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.sampled_from(["image", "prefetch", "x"]), kids,
                                                              max_size=3),
    max_leaves=10,
)
values = st.text(max_size=200) | json_values.map(json.dumps)


@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(keys, values, max_size=5))
def test_property_parser_never_raises_and_accepts_only_valid(env, annotations: dict[str, str]) -> None:
    got = parse_pod_annotations(annotations, limits(env))
    assert all(r.reason != "internal_error" for r in got.rejections)
    for o in got.overrides:
        assert len(o.plist) > 0 and o.plist.valid
        for entry in o.plist:
            assert check_entry(entry) is None  # nydusd's rules, from the one place that has them
        body = o.plist.to_bytes().decode("utf-8")
        assert all(line.startswith("/") and line == line.strip() for line in body.splitlines())


# Host paths built from pieces that reach inside the allow-list, outside it, through a symlinked
# file or directory, through `..`, and nowhere, so that both outcomes occur.
_PREFIXES = ("{a}/", "{a}/./", "{a}/sub/", "{a}/../lists/", "{a}/../outside/", "{a}/lnkdir/", "{o}/", "/etc/", "{a}", "")
_NAMES = ("good.list", "link.list", "bad.list", "secret.list", "passwd", "nope.list", "sub")


def _host_path(env: dict[str, Path], prefix: str, name: str) -> str:
    return prefix.format(a=env["allowed"], o=env["outside"]) + name


def _should_accept(env: dict[str, Path], path: str) -> bool:
    """The rule, stated independently of the parser: a valid list file that really lies inside."""
    if not path.startswith("/") or any(c in path for c in "\x00\n\r"):
        return False
    try:
        real = os.path.realpath(path, strict=True)
    except OSError:
        return False
    inside = real.startswith(os.path.realpath(env["allowed"]) + "/")
    return inside and os.path.isfile(real) and os.path.basename(real) == "good.list"


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(_PREFIXES), st.sampled_from(_NAMES) | st.text(max_size=12)), max_size=4))
def test_property_upstream_paths_accepted_exactly_when_inside_the_allowlist(env, parts) -> None:
    (env["allowed"] / "sub").mkdir(exist_ok=True)
    (env["allowed"] / "sub" / "good.list").write_text("/usr/bin/env\n")
    (env["allowed"] / "bad.list").write_text("relative/entry\n")
    (env["outside"] / "good.list").write_text("/etc/shadow\n")
    for link, target in (("link.list", env["outside"] / "secret.list"), ("lnkdir", env["outside"])):
        if not (env["allowed"] / link).is_symlink():
            (env["allowed"] / link).symlink_to(target)
    paths = [_host_path(env, prefix, name) for prefix, name in parts]
    got = parse_pod_annotations(upstream([{"image": "nginx", "prefetch": p} for p in paths]), limits(env))
    assert [o.origin for o in got.overrides] == [p for p in paths if _should_accept(env, p)]
    real_allowed = os.path.realpath(env["allowed"])
    for o in got.overrides:
        assert os.path.realpath(o.origin).startswith(real_allowed + "/")
        assert o.plist.entries == tuple(line.rstrip("/") for line in Path(o.origin).read_text().split())
    assert len(got.rejections) == len(paths) - len(got.overrides)
