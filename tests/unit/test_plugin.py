import logging
from dataclasses import replace

import pytest

from agent.config import AgentConfig
from agent.nri import Container, Pod
from agent.plugin import ImageHistory, PrefetchAgent, restart_only_changes
from agent.store import TraceStore
from agent.trace import Readiness, Tracer


@pytest.fixture
def agent(tmp_path):
    tracer = Tracer(TraceStore(tmp_path))
    plugin = PrefetchAgent(AgentConfig(state_dir=str(tmp_path), node="n1"), tracer, None, None, ImageHistory())
    yield plugin
    tracer.close()


POD = Pod(id="p1", name="web-7d9c8b6f5d-x2k8p", uid="u1", namespace="shop", labels={"pod-template-hash": "7d9c8b6f5d"})


def test_nri_config_overlays_the_file_config(agent):
    agent.configure('[trace]\nwindow_s = 7\n[readiness."shop/web/nginx"]\nmarker = "/tmp/ready"\n', "containerd", "1.7")
    assert agent.config.trace.window_s == 7.0
    meta = agent.run_meta(POD, Container(id="c1", name="nginx", annotations={
        "io.kubernetes.cri.image-name": "nginx:1.25"}))
    assert meta.readiness == Readiness(marker="/tmp/ready")
    assert meta.window_s == 7.0


def test_nri_config_reaches_the_tracer_and_the_injector(agent, caplog):
    class Injector:
        config = None

    agent.injector = Injector()
    with caplog.at_level(logging.INFO):
        agent.configure('[trace]\nquiescence_s = 0.25\nmin_run_s = 0\nread_events = 16\n'
                        '[inject]\nmax_inline_bytes = 99\n', "containerd", "1.7")
    # What the finaliser uses when it writes a run (quiescence readiness, early exit) is the overlay.
    assert agent.tracer.config.quiescence_s == agent.tracer._finaliser.config.quiescence_s == 0.25
    assert agent.tracer._finaliser.config.min_run_s == 0
    assert agent.injector.config is agent.config and agent.config.inject.max_inline_bytes == 99
    # A buffer size fixed at start is not changed under the reader, and the log says so.
    assert agent.tracer.config.read_events == 2048
    assert "event=config_needs_restart source=nri keys=trace.read_events" in caplog.text


def test_restart_only_changes_name_each_fixed_key():
    old = AgentConfig(state_dir="/a")
    new = replace(old, state_dir="/b", node="other", inject=replace(old.inject, snapshotter_socket="/s"))
    assert restart_only_changes(old, new) == ["agent.state_dir", "inject.snapshotter_socket"]
    assert restart_only_changes(old, old) == []


def test_bad_nri_config_is_logged_and_ignored(agent, caplog):
    before = agent.config
    with caplog.at_level(logging.ERROR):
        agent.configure("[trace\nwindow_s = 1", "containerd", "1.7")
    assert agent.config is before
    assert "event=config_rejected source=nri" in caplog.text


def test_run_meta_identity(agent):
    meta = agent.run_meta(POD, Container(id="c1", name="nginx", annotations={
        "io.kubernetes.cri.image-name": "nginx:1.25"}))
    assert meta.service == "shop/web/nginx"
    assert meta.image_ref == "nginx:1.25"
    assert meta.image_ref_normalized == "docker.io/library/nginx:1.25"
    assert (meta.node, meta.pod, meta.pod_uid, meta.container_id) == ("n1", POD.name, "u1", "c1")
    other = agent.run_meta(POD, Container(id="c2", name="nginx"))
    assert other.run_id != meta.run_id  # two containers, two runs


def test_unparsable_image_ref_keeps_raw_ref(agent, caplog):
    with caplog.at_level(logging.WARNING):
        meta = agent.run_meta(POD, Container(id="c1", name="x", annotations={
            "io.kubernetes.cri.image-name": "Not A Ref"}))
    assert meta.image_ref == "Not A Ref" and meta.image_ref_normalized == ""
    assert "event=image_ref_unparsed" in caplog.text


def test_image_history_is_newest_first_and_bounded():
    from agent.identity import ServiceKey

    history = ImageHistory(max_workloads=2, per_workload=2)
    key = ServiceKey("ns", "web", "app")
    history.record(key, "docker.io/a:1")
    history.record(key, "docker.io/a:2", "sha256:2")
    history.record(key, "docker.io/a:3")
    assert history.recent("ns", "web") == [("ns/web/app", "docker.io/a:3", None), ("ns/web/app", "docker.io/a:2", "sha256:2")]
    history.record(ServiceKey("ns", "b", "c"), "x")
    history.record(ServiceKey("ns", "d", "e"), "y")
    assert history.recent("ns", "web") == []  # the oldest workload was forgotten
