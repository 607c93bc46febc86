import logging

import pytest

from agent.config import AgentConfig
from agent.nri import Container, Pod
from agent.plugin import ImageHistory, PrefetchAgent
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
