"""Which list each image gets: disabled > valid override > pinned/learned > nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from advisor.lists import ListStore, PrefetchList
from agent.inject import annotations as A
from agent.inject.annotations import AnnotationLimits, parse_pod_annotations
from agent.inject.policy import ImageTarget, choose, choose_one, pod_images
from agent.nri.model import Pod

NGINX = "docker.io/library/nginx:latest"
REDIS = "docker.io/library/redis:7"
SVC = "default/web/nginx"
DIG = "sha256:" + "1" * 64


@pytest.fixture()
def store(tmp_path: Path) -> ListStore:
    s = ListStore(tmp_path / "store")
    s.put(SVC, DIG, PrefetchList(["/learned"]))
    return s


def parse(annotations: dict[str, str], tmp_path: Path, store: ListStore | None = None) -> A.PodAnnotations:
    return parse_pod_annotations(annotations, AnnotationLimits(allowed_dirs=(tmp_path,)), store)


def pod(annotations: dict[str, str] | None = None, name: str = "web-7d4b9c8f6d-x2x7q", labels=None) -> Pod:
    return Pod(id="p1", name=name, namespace="default", labels=labels or {"app": "web"}, annotations=annotations or {})


def history(rows):
    calls = []

    def recent(namespace: str, workload: str):
        calls.append((namespace, workload))
        return rows

    recent.calls = calls  # type: ignore[attr-defined]
    return recent


def test_learned_list_from_history(store, tmp_path) -> None:
    recent = history([(SVC, NGINX, DIG)])
    targets = pod_images(pod(), parse({}, tmp_path), recent)
    assert recent.calls == [("default", "web")]
    assert targets == [ImageTarget(NGINX, SVC, DIG, "history")]
    (c,) = choose(targets, parse({}, tmp_path), store)
    assert c.source == "learned" and c.plist.entries == ("/learned",) and "same digest" in c.why


def test_pin_beats_learned(store, tmp_path) -> None:
    store.pin(SVC, NGINX, PrefetchList(["/pinned"]))
    c = choose_one(ImageTarget(NGINX, SVC, DIG, "history"), parse({}, tmp_path), store)
    assert (c.source, c.plist.entries) == ("pinned", ("/pinned",))


def test_override_beats_learned_and_disable_beats_all(store, tmp_path) -> None:
    t = ImageTarget(NGINX, SVC, DIG, "history")
    c = choose_one(t, parse({A.LIST_KEY: '["/override"]'}, tmp_path), store)
    assert (c.source, c.plist.entries) == ("inline", ("/override",))
    c = choose_one(t, parse({A.LIST_KEY: '["/override"]', A.DISABLE_KEY: "true"}, tmp_path), store)
    assert c.source == "disabled" and c.plist is None and not c.sends


def test_rejected_override_falls_back_to_learned_and_says_why(store, tmp_path) -> None:
    c = choose_one(ImageTarget(NGINX, SVC, DIG, "history"), parse({A.LIST_KEY: '["app/run.sh"]'}, tmp_path), store)
    assert c.source == "learned" and c.plist.entries == ("/learned",)
    assert "override rejected: relative" in c.why


def test_nothing_when_unknown(store, tmp_path) -> None:
    assert choose_one(ImageTarget(REDIS, None, None, "annotation"), parse({}, tmp_path), store).source == "none"
    assert choose_one(ImageTarget(REDIS, "default/web/redis", None, "history"), parse({}, tmp_path), store).source == "none"
    assert choose_one(ImageTarget(NGINX, SVC, DIG, "history"), parse({}, tmp_path), None).source == "none"


def test_unknown_digest_uses_the_services_newest_list(store, tmp_path) -> None:
    c = choose_one(ImageTarget(NGINX, SVC, "sha256:" + "2" * 64, "history"), parse({}, tmp_path), store)
    assert c.source == "learned" and "newest image" in c.why


def test_live_update_remove_and_new_build(store, tmp_path) -> None:
    t = ImageTarget(NGINX, SVC, DIG, "history")
    store.put(SVC, DIG, PrefetchList(["/v2"]))
    assert choose_one(t, parse({}, tmp_path), store).plist.entries == ("/v2",)
    store.remove(SVC)
    assert choose_one(t, parse({}, tmp_path), store).source == "none"


def test_images_annotation_wins_over_history(store, tmp_path) -> None:
    recent = history([(SVC, NGINX, DIG)])
    parsed = parse({A.IMAGES_KEY: json.dumps({"nginx": "nginx", "cache": "redis:7"})}, tmp_path)
    targets = pod_images(pod(), parsed, recent)
    assert targets == [
        ImageTarget(NGINX, SVC, DIG, "annotation"),
        ImageTarget(REDIS, "default/web/cache", None, "annotation"),
    ]


def test_upstream_annotation_names_the_images(tmp_path) -> None:
    (tmp_path / "l.list").write_text("/a\n")
    parsed = parse({A.UPSTREAM_KEY: json.dumps([{"image": "redis:7", "prefetch": str(tmp_path / "l.list")}])}, tmp_path)
    targets = pod_images(pod(), parsed, history([(SVC, NGINX, DIG)]))
    assert [t.image for t in targets] == [REDIS]
    (c,) = choose(targets, parsed, None)
    assert c.source == "upstream" and c.plist.entries == ("/a",) and c.origin == str(tmp_path / "l.list")


def test_history_failure_and_absence(tmp_path) -> None:
    def broken(namespace: str, workload: str):
        raise RuntimeError("trace store down")

    assert pod_images(pod(), parse({}, tmp_path), broken) == []
    assert pod_images(pod(), parse({}, tmp_path), None) == []


def test_history_dedupes_by_image(tmp_path) -> None:
    rows = [(SVC, NGINX, DIG), ("default/web/sidecar", NGINX, DIG), ("default/web/cache", REDIS, None)]
    assert [t.image for t in pod_images(pod(), parse({}, tmp_path), history(rows))] == [NGINX, REDIS]
