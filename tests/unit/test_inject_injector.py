"""PrefetchInjector end to end in-process: annotations/store -> list file -> PUT to the fake socket."""

from __future__ import annotations

import json
import threading
import uuid
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from advisor.lists import ListStore, PrefetchList
from agent.config import AgentConfig, InjectConfig
from agent.inject import annotations as A
from agent.inject import injector as I
from agent.inject.injector import PrefetchInjector
from agent.imageref import normalize_image_ref
from agent.inject.snapshotter import SnapshotterClient
from agent.nri.model import Pod
from testbed.fake_snapshotter import FakeSnapshotter

NGINX = "docker.io/library/nginx:latest"
REDIS = "docker.io/library/redis:7"
SVC = "default/web/nginx"
DIG = "sha256:" + "1" * 64


@pytest.fixture()
def rig(tmp_path: Path):
    sock_dir = Path("/tmp") / f"pa-inj-{abs(hash(tmp_path)) % 10**8}"
    sock_dir.mkdir(exist_ok=True)
    sock = str(sock_dir / "system.sock")
    config = AgentConfig(state_dir=str(tmp_path / "state"), inject=InjectConfig(snapshotter_socket=sock))
    store = ListStore(tmp_path / "store")
    fake = FakeSnapshotter(sock).start()
    client = SnapshotterClient(sock, tmp_path / "state", backoff_s=(0.1,))
    rows: list[tuple[str, str, str | None]] = []
    injector = PrefetchInjector(config, store, client, lambda ns, wl: list(rows))
    yield {"config": config, "store": store, "fake": fake, "client": client, "rows": rows, "injector": injector}
    injector.close()
    client.close()
    fake.stop()


def pod(annotations=None, name="web-7d4b9c8f6d-x2x7q", pid="pod-1") -> Pod:
    return Pod(id=pid, name=name, namespace="default", labels={"app": "web"}, annotations=annotations or {})


def sent(fake: FakeSnapshotter) -> list[list[dict[str, str]]]:
    return [json.loads(p.body) for p in fake.prefetch_puts()]


def test_learned_list_is_written_and_put(rig) -> None:
    rig["store"].put(SVC, DIG, PrefetchList(["/usr/sbin/nginx", "/etc/nginx/"]))
    rig["rows"].append((SVC, NGINX, DIG))
    rig["injector"].on_run_pod_sandbox(pod())
    ((entry,),) = sent(rig["fake"])
    assert entry["image"] == NGINX
    path = Path(entry["prefetch"])
    assert path.parent == rig["config"].list_dir
    assert path.read_text() == "/usr/sbin/nginx\n/etc/nginx\n"
    assert PrefetchList.read(path).valid


def test_annotation_override_with_images(rig) -> None:
    ann = {A.IMAGES_KEY: "nginx,redis:7", A.LIST_KEY: json.dumps({"redis:7": ["/usr/bin/redis-server"]})}
    rig["store"].put(SVC, DIG, PrefetchList(["/learned"]))
    rig["rows"].append((SVC, NGINX, DIG))
    choices = rig["injector"].inject(pod(ann))
    assert [(c.target.image, c.source) for c in choices] == [(NGINX, "learned"), (REDIS, "inline")]
    (body,) = sent(rig["fake"])
    files = {e["image"]: Path(e["prefetch"]).read_text() for e in body}
    assert files == {NGINX: "/learned\n", REDIS: "/usr/bin/redis-server\n"}


def test_nothing_invalid_is_ever_put(rig, tmp_path) -> None:
    outside = tmp_path / "evil.list"
    outside.write_text("/etc/shadow\n")
    bad = [
        {A.UPSTREAM_KEY: '[{"image":'},
        {A.UPSTREAM_KEY: '{"image": "nginx", "prefetch": "/x"}'},
        {A.UPSTREAM_KEY: '[{"image": "nginx"}]'},
        {A.UPSTREAM_KEY: json.dumps([{"image": "nginx", "prefetch": str(outside)}])},
        {A.UPSTREAM_KEY: json.dumps([{"image": "nginx", "prefetch": str(rig["config"].list_dir) + "/../../evil.list"}])},
        {A.UPSTREAM_KEY: json.dumps([{"image": "nginx", "prefetch": str(rig["config"].list_dir / "nope.list")}])},
        {A.LIST_KEY: "app/run.sh", A.IMAGES_KEY: "nginx"},
        {A.LIST_KEY: '["/a\\nb"]', A.IMAGES_KEY: "nginx"},
        {A.LIST_KEY: '["/a\\u0000b"]', A.IMAGES_KEY: "nginx"},
        {A.LIST_KEY: '["/"]', A.IMAGES_KEY: "nginx"},
        {A.LIST_KEY: "/" + "a" * 1024 * 1024, A.IMAGES_KEY: "nginx"},
    ]
    before = _rejections_total()
    for i, ann in enumerate(bad):
        rig["injector"].on_run_pod_sandbox(pod(ann, pid=f"p{i}"))
    assert rig["client"].idle(3)
    assert sent(rig["fake"]) == []  # no learned list exists, and no override was valid
    assert _rejections_total() - before == len(bad)  # one rejection each


def _rejections_total() -> float:
    return sum(s.value for m in A.REJECTIONS.collect() for s in m.samples if s.name.endswith("_total"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(
    st.sampled_from([A.UPSTREAM_KEY, A.LIST_KEY, A.LIST_NAME_KEY, A.IMAGES_KEY]),
    st.text(max_size=120) | st.lists(st.text(max_size=20) | st.just("/ok"), max_size=4).map(json.dumps),
    max_size=4,
))
def test_property_every_put_names_a_valid_list(rig, annotations: dict[str, str]) -> None:
    annotations.setdefault(A.IMAGES_KEY, "nginx")
    n = len(rig["fake"].prefetch_puts())
    rig["injector"].on_run_pod_sandbox(pod(annotations, pid=uuid.uuid4().hex))
    for put in rig["fake"].prefetch_puts()[n:]:
        for entry in json.loads(put.body):
            assert normalize_image_ref(entry["image"]) == entry["image"]
            assert Path(entry["prefetch"]).parent == rig["config"].list_dir
            plist = PrefetchList.read(entry["prefetch"])
            assert plist.valid and len(plist) > 0


def test_rejected_override_falls_back_to_learned(rig) -> None:
    rig["store"].put(SVC, DIG, PrefetchList(["/learned"]))
    rig["rows"].append((SVC, NGINX, DIG))
    rig["injector"].on_run_pod_sandbox(pod({A.LIST_KEY: '["relative"]'}))
    ((entry,),) = sent(rig["fake"])
    assert Path(entry["prefetch"]).read_text() == "/learned\n"


def test_live_updates_without_restart(rig) -> None:
    inj, store = rig["injector"], rig["store"]
    rig["rows"].append((SVC, NGINX, DIG))
    store.put(SVC, DIG, PrefetchList(["/v1"]))
    inj.on_run_pod_sandbox(pod(pid="a"))
    store.pin(SVC, NGINX, PrefetchList(["/pinned"]))
    inj.on_run_pod_sandbox(pod(pid="b"))
    store.remove(SVC, NGINX, scope="pin")
    store.put(SVC, DIG, PrefetchList(["/v2"]))
    inj.on_run_pod_sandbox(pod(pid="c"))
    store.remove(SVC)
    inj.on_run_pod_sandbox(pod(pid="d"))
    assert [Path(b[0]["prefetch"]).read_text() for b in sent(rig["fake"])] == ["/v1\n", "/pinned\n", "/v2\n"]


def test_different_lists_same_image_get_different_files(rig) -> None:
    inj = rig["injector"]
    inj.on_run_pod_sandbox(pod({A.IMAGES_KEY: "nginx", A.LIST_KEY: '["/a"]'}, pid="a"))
    inj.on_run_pod_sandbox(pod({A.IMAGES_KEY: "nginx", A.LIST_KEY: '["/b"]'}, pid="b"))
    inj.on_run_pod_sandbox(pod({A.IMAGES_KEY: "nginx", A.LIST_KEY: '["/a"]'}, pid="c"))
    paths = [b[0]["prefetch"] for b in sent(rig["fake"])]
    assert paths[0] != paths[1] and paths[0] == paths[2]
    assert [Path(p).read_text() for p in paths] == ["/a\n", "/b\n", "/a\n"]


def test_hanging_socket_costs_at_most_the_put_wait(rig) -> None:
    rig["fake"].restart(mode="hang")
    before = I.INJECT_PROBLEMS.labels("over_budget")._value.get()
    t0 = time.monotonic()
    rig["injector"].on_run_pod_sandbox(pod({A.IMAGES_KEY: "nginx", A.LIST_KEY: '["/a"]'}))
    took = time.monotonic() - t0
    assert 0.15 < took < rig["injector"].budget_s  # the client's 200 ms wait, then fail open
    assert I.INJECT_PROBLEMS.labels("over_budget")._value.get() == before
    assert len(rig["fake"].requests) == 1  # the PUT did go out


def test_handler_is_bounded_when_its_work_hangs(rig) -> None:
    gate = threading.Event()

    def stuck_history(ns: str, wl: str):
        gate.wait(5)
        return [(SVC, NGINX, DIG)]

    rig["store"].put(SVC, DIG, PrefetchList(["/learned"]))
    inj = PrefetchInjector(rig["config"], rig["store"], rig["client"], stuck_history, budget_s=0.3)
    try:
        before = I.INJECT_PROBLEMS.labels("over_budget")._value.get()
        t0 = time.monotonic()
        inj.on_run_pod_sandbox(pod())
        assert time.monotonic() - t0 < 0.45
        assert I.INJECT_PROBLEMS.labels("over_budget")._value.get() == before + 1
        gate.set()  # the work finishes in the background and still hands the list over
        puts = rig["fake"].wait_for_puts(1, timeout_s=3)
        assert [json.loads(p.body)[0]["image"] for p in puts] == [NGINX]
    finally:
        gate.set()
        inj.close()


def test_handler_survives_a_broken_store(rig, monkeypatch) -> None:
    def boom(*a, **k):
        raise OSError("disk gone")

    monkeypatch.setattr(rig["store"], "latest", boom)
    rig["rows"].append((SVC, NGINX, DIG))
    before = I.INJECT_PROBLEMS.labels("error")._value.get()
    rig["injector"].on_run_pod_sandbox(pod())  # must not raise
    assert I.INJECT_PROBLEMS.labels("error")._value.get() == before + 1


def test_garbage_collection_keeps_recent_files_and_what_the_snapshotter_may_hold(rig) -> None:
    inj, client, list_dir = rig["injector"], rig["client"], rig["config"].list_dir
    inj.on_run_pod_sandbox(pod({A.IMAGES_KEY: "nginx", A.LIST_KEY: '["/a"]'}))
    assert client.idle()
    (first,) = list_dir.glob("*.list")
    assert inj.collect_garbage() == 0 and first.exists()
    # Held by the snapshotter (sent, maybe never consumed): kept however old.
    assert inj.collect_garbage(max_age_s=-1) == 0 and first.exists()
    # A later send for the same image fails: the snapshotter still holds the first file.
    rig["fake"].stop()
    inj.on_run_pod_sandbox(pod({A.IMAGES_KEY: "nginx", A.LIST_KEY: '["/b"]'}, pid="pod-2"))
    (second,) = set(list_dir.glob("*.list")) - {first}
    assert inj.collect_garbage(max_age_s=-1) == 0 and first.exists() and second.exists()
    rig["fake"].start()
    # A third send succeeds: the first is superseded at the snapshotter and goes; the second is
    # what the record points at until its retries end, the third is held.
    inj.on_run_pod_sandbox(pod({A.IMAGES_KEY: "nginx", A.LIST_KEY: '["/c"]'}, pid="pod-3"))
    assert client.idle()
    (third,) = set(list_dir.glob("*.list")) - {first, second}
    assert inj.collect_garbage(max_age_s=-1) == 2
    assert third.exists() and not first.exists() and not second.exists()

