import threading

from agent.cri import cri_pb2
from agent.cri.client import DigestResolver, digest_of


def test_digest_is_the_image_id_however_the_image_is_named():
    image = cri_pb2.Image(id="sha256:cfg", repo_digests=["docker.io/x/y@sha256:man"])
    assert digest_of(image) == "sha256:cfg"
    assert digest_of(cri_pb2.Image(id="sha256:cfg")) == "sha256:cfg"
    assert digest_of(cri_pb2.Image()) is None


def test_resolver_calls_back_caches_and_survives_errors():
    calls = []
    results = []
    done = threading.Event()

    def lookup(ref):
        calls.append(ref)
        if ref == "boom":
            raise RuntimeError("runtime down")
        return "sha256:" + ref

    resolver = DigestResolver(lookup)
    resolver.resolve("boom", results.append)
    resolver.resolve("a", results.append)
    resolver.resolve("a", results.append)
    resolver.resolve("b", lambda d: (results.append(d), done.set()))
    assert done.wait(5)
    resolver.close()
    assert results == ["sha256:a", "sha256:a", "sha256:b"]
    assert calls == ["boom", "a", "b"]
