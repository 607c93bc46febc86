import pytest

from agent.identity import ServiceKey, service_key, workload_name


@pytest.mark.parametrize(
    "pod, labels, expected",
    [
        ("web-7d9c8b6f5d-x2k8p", {"app.kubernetes.io/name": "shop", "app": "other"}, "shop"),
        ("web-7d9c8b6f5d-x2k8p", {"app": "frontend"}, "frontend"),
        ("web-7d9c8b6f5d-x2k8p", {}, "web"),
        ("web-api-7d9c8b6f5d-x2k8p", {"pod-template-hash": "7d9c8b6f5d"}, "web-api"),
        ("redis-0", {}, "redis"),
        ("redis-12", {}, "redis"),
        ("fluentd-x2k8p", {}, "fluentd"),
        ("standalone", {}, "standalone"),
        ("my-pod", {}, "my-pod"),  # "pod" has an 'o': not a generated suffix
        ("web-7d9c8b6f5d-x2k8p", {"app": "  "}, "web"),
    ],
)
def test_workload_name(pod, labels, expected):
    assert workload_name(pod, labels) == expected


def test_service_key_includes_namespace_and_container():
    key = service_key("prod", "web-7d9c8b6f5d-x2k8p", {}, "nginx")
    assert str(key) == "prod/web/nginx"
    assert ServiceKey.parse(str(key)) == key


@pytest.mark.parametrize("bad", ["a/b", "a//c", "", "a/b/c/d"])
def test_service_key_parse_rejects(bad):
    with pytest.raises(ValueError):
        ServiceKey.parse(bad)
