"""Who a container is: the service key a run is learned under."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

# A Deployment's pods are <deployment>-<pod-template-hash>-<5 random>; kube's name generator
# draws from this alphabet, so a suffix made of it is machine-made, not part of the workload name.
_KUBE_ALNUM = "bcdfghjklmnpqrstvwxz2456789"
_REPLICASET_SUFFIX = re.compile(rf"-[{_KUBE_ALNUM}]{{6,10}}-[{_KUBE_ALNUM}]{{5}}$")
_GENERATED_SUFFIX = re.compile(rf"-[{_KUBE_ALNUM}]{{5}}$")  # DaemonSet, Job, bare ReplicaSet
_ORDINAL_SUFFIX = re.compile(r"-\d+$")  # StatefulSet

WORKLOAD_LABELS = ("app.kubernetes.io/name", "app")


@dataclass(frozen=True, order=True)
class ServiceKey:
    """namespace/workload/container: the unit a prefetch list is learned for."""

    namespace: str
    workload: str
    container: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.workload}/{self.container}"

    @classmethod
    def parse(cls, text: str) -> "ServiceKey":
        parts = text.split("/")
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"service key must be namespace/workload/container, got {text!r}")
        return cls(*parts)


def workload_name(pod_name: str, labels: Mapping[str, str]) -> str:
    for label in WORKLOAD_LABELS:
        value = labels.get(label, "").strip()
        if value:
            return value
    template_hash = labels.get("pod-template-hash", "")
    if template_hash and f"-{template_hash}-" in pod_name:
        return pod_name.rsplit(f"-{template_hash}-", 1)[0]
    for pattern in (_REPLICASET_SUFFIX, _ORDINAL_SUFFIX, _GENERATED_SUFFIX):
        stripped = pattern.sub("", pod_name)
        if stripped and stripped != pod_name:
            return stripped
    return pod_name


def service_key(namespace: str, pod_name: str, labels: Mapping[str, str], container: str) -> ServiceKey:
    return ServiceKey(namespace or "default", workload_name(pod_name, labels) or "unknown", container or "unknown")
