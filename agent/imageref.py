"""Image reference normalisation, matching what containerd's CRI puts in the image-ref label.

nydus-snapshotter looks prefetch entries up by that label, so a ref we send must be spelled exactly
the same way: `nginx` -> `docker.io/library/nginx:latest`. The rules follow the docker reference
grammar (distribution/reference) and its ParseDockerRef: familiar names get the docker.io domain and
the `library/` prefix, a missing tag becomes `latest`, and a ref with both a tag and a digest keeps
only the digest. Written from the grammar, not copied.
"""

from __future__ import annotations

import dataclasses
import re

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|-+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(
    rf"(?P<name>(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?",
    re.ASCII,
)
_IDENTIFIER = re.compile(r"[a-f0-9]{64}")
# The algorithms go-digest knows, with their hex lengths; it rejects any other.
_DIGEST_HEX_LEN = {"sha256": 64, "sha384": 96, "sha512": 128}


class ImageRefError(ValueError):
    """An image reference that containerd would refuse; the message is one line naming the cause."""


@dataclasses.dataclass(frozen=True, slots=True)
class ImageRef:
    domain: str
    path: str
    tag: str | None
    digest: str | None

    @property
    def name(self) -> str:
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        if self.digest:
            return f"{self.name}@{self.digest}"
        return f"{self.name}:{self.tag or DEFAULT_TAG}"


def parse_image_ref(ref: object) -> ImageRef:
    """Parse and normalise like containerd's ParseDockerRef; raise ImageRefError on bad input."""
    if not isinstance(ref, str):
        raise ImageRefError(f"image reference must be a string, got {type(ref).__name__}")
    if ref == "":
        raise ImageRefError("image reference is empty")
    if len(ref) > 4096 or not ref.isascii() or not ref.isprintable():
        raise ImageRefError(f"invalid image reference {_show(ref)}: non-ASCII, control character or too long")
    if _IDENTIFIER.fullmatch(ref):
        raise ImageRefError(f"invalid image reference {_show(ref)}: a bare 64-hex id is not a repository name")
    if ref.startswith("sha256:") and _IDENTIFIER.fullmatch(ref[len("sha256:"):]):
        # An image id, as CRI accepts in place of a name: it is a digest, not repository "sha256".
        raise ImageRefError(f"invalid image reference {_show(ref)}: an image id names no repository")
    domain, remainder = _split_domain(ref)
    remote = remainder.split(":", 1)[0].split("@", 1)[0]
    if remote.lower() != remote:
        raise ImageRefError(f"invalid image reference {_show(ref)}: repository name must be lowercase")
    m = _REFERENCE.fullmatch(f"{domain}/{remainder}")
    if m is None:
        raise ImageRefError(f"invalid image reference {_show(ref)}: does not match the reference grammar")
    name, tag, digest = m.group("name"), m.group("tag"), m.group("digest")
    if len(name) > NAME_TOTAL_LENGTH_MAX:
        raise ImageRefError(f"invalid image reference {_show(ref)}: name longer than {NAME_TOTAL_LENGTH_MAX}")
    if digest is not None:
        algorithm, hexpart = digest.split(":", 1)
        want = _DIGEST_HEX_LEN.get(algorithm)
        if want is None:
            raise ImageRefError(f"invalid image reference {_show(ref)}: unsupported digest algorithm {algorithm!r}")
        if len(hexpart) != want or not re.fullmatch(r"[a-f0-9]+", hexpart):
            raise ImageRefError(f"invalid image reference {_show(ref)}: {algorithm} digest must be {want} lowercase hex")
        tag = None  # ParseDockerRef: tag+digest keeps only the digest
    domain_part, _, path = name.partition("/")
    return ImageRef(domain_part, path, tag, digest)


def normalize_image_ref(ref: object) -> str:
    """`nginx` -> `docker.io/library/nginx:latest`; raises ImageRefError with a one-line reason."""
    return str(parse_image_ref(ref))


def try_normalize_image_ref(ref: object) -> tuple[str | None, str | None]:
    """(normalised, None) or (None, reason) without raising, for untrusted input."""
    try:
        return normalize_image_ref(ref), None
    except ImageRefError as e:
        return None, str(e)


def _split_domain(ref: str) -> tuple[str, str]:
    # A first component is a registry when it has '.' or ':', is "localhost", or has uppercase
    # (uppercase is invalid in a path, so it can only be a host name).
    first, sep, rest = ref.partition("/")
    if not sep or (not any(c in first for c in ".:") and first != "localhost" and first.lower() == first):
        domain, remainder = DEFAULT_DOMAIN, ref
    else:
        domain, remainder = first, rest
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_PREFIX + remainder
    return domain, remainder


def _show(ref: str) -> str:
    r = repr(ref)
    return r if len(r) <= 120 else r[:117] + "..."


# Short name used by agent/plugin.py.
normalize = normalize_image_ref
