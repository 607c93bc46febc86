"""Image-ref normalisation must match containerd's CRI image-ref label (ParseDockerRef)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.imageref import ImageRefError, normalize_image_ref, parse_image_ref, try_normalize_image_ref

D = "sha256:" + "7cc4b5aefd1d0cadf8d97d4350462ba51c694ebca145b08d7d41b41acc8db5aa"


@pytest.mark.parametrize(
    ("ref", "normalized"),
    [
        ("nginx", "docker.io/library/nginx:latest"),
        ("nginx:1.25", "docker.io/library/nginx:1.25"),
        ("library/nginx", "docker.io/library/nginx:latest"),
        ("docker.io/nginx", "docker.io/library/nginx:latest"),
        ("index.docker.io/nginx:1", "docker.io/library/nginx:1"),
        ("docker.io/library/nginx:latest", "docker.io/library/nginx:latest"),
        ("user/app", "docker.io/user/app:latest"),
        ("user/app:v2", "docker.io/user/app:v2"),
        ("localhost/app", "localhost/app:latest"),
        ("localhost:5000/app", "localhost:5000/app:latest"),
        ("registry:5000/a/b:tag", "registry:5000/a/b:tag"),
        ("ghcr.io/org/team/img:1.0-rc_1", "ghcr.io/org/team/img:1.0-rc_1"),
        ("[::1]:5000/app:x", "[::1]:5000/app:x"),
        ("Registry.Example/app", "Registry.Example/app:latest"),  # uppercase host is a domain
        ("my__app/x-y.z", "docker.io/my__app/x-y.z:latest"),
        (f"busybox@{D}", f"docker.io/library/busybox@{D}"),
        (f"busybox:latest@{D}", f"docker.io/library/busybox@{D}"),  # tag dropped, digest kept
        (f"localhost:5000/a/b:v1@{D}", f"localhost:5000/a/b@{D}"),
        ("app@sha512:" + "a" * 128, "docker.io/library/app@sha512:" + "a" * 128),
    ],
)
def test_normalisation_table(ref: str, normalized: str) -> None:
    assert normalize_image_ref(ref) == normalized


@pytest.mark.parametrize(
    ("ref", "why"),
    [
        ("", "empty"),
        ("Nginx", "lowercase"),
        ("user/App", "lowercase"),
        ("localhost:5000/App:1", "lowercase"),
        ("nginx:", "grammar"),
        ("nginx:-bad", "grammar"),
        (":tag", "grammar"),
        ("a//b", "grammar"),
        ("nginx:" + "t" * 129, "grammar"),
        ("nginx@sha256:abc", "grammar"),
        ("nginx@sha256:" + "A" * 64, "lowercase hex"),
        ("nginx@sha256:" + "a" * 63 + "g", "grammar"),
        ("nginx@md5:" + "a" * 32, "unsupported digest"),
        ("a" * 64, "64-hex"),
        ("sha256:" + "a" * 64, "image id"),
        ("ngi nx", "control character|grammar"),
        ("nginx\n", "control character"),
        ("nginxé", "non-ASCII"),
        ("x/" + "a" * 260, "longer than 255"),
        (None, "must be a string"),
        (42, "must be a string"),
    ],
)
def test_invalid_refs_give_one_line_errors(ref: object, why: str) -> None:
    with pytest.raises(ImageRefError, match=why) as info:
        normalize_image_ref(ref)
    assert "\n" not in str(info.value)
    assert try_normalize_image_ref(ref) == (None, str(info.value))


def test_parsed_parts() -> None:
    r = parse_image_ref(f"registry:5000/a/b:tag@{D}")
    assert (r.domain, r.path, r.tag, r.digest) == ("registry:5000", "a/b", None, D)
    assert r.name == "registry:5000/a/b"


@given(st.text(max_size=80))
def test_property_never_raises_anything_but_imagereferror_and_is_idempotent(ref: str) -> None:
    try:
        norm = normalize_image_ref(ref)
    except ImageRefError:
        return
    assert normalize_image_ref(norm) == norm
