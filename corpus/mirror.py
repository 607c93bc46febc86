"""Find the Debian archive URI and keyring the system's apt is configured with.

Why: the image recipes must build against whatever mirror this machine uses (a proxy, a snapshot, a
local cache), never a host name written into the repo.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")


class MirrorNotFound(RuntimeError):
    """No usable Debian archive entry in the apt sources."""


@dataclass(frozen=True)
class DebianMirror:
    uri: str
    keyring: Path


def _deb822_stanzas(text: str) -> list[dict[str, str]]:
    stanzas: list[dict[str, str]] = []
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if fields:
            stanzas.append(fields)
    return stanzas


def _is_main_archive(uri: str, suites: list[str]) -> bool:
    # The main archive carries the plain release suite; -security lives elsewhere.
    return not any(s.endswith("-security") or "/updates" in s for s in suites) and "security" not in uri


def find_debian_mirror(apt_dir: Path = Path("/etc/apt")) -> DebianMirror:
    """Return the first main-archive `deb` source from sources.list.d/*.sources or sources.list."""
    parts = apt_dir / "sources.list.d"
    for path in sorted(parts.glob("*.sources")) if parts.is_dir() else []:
        for st in _deb822_stanzas(path.read_text()):
            if "deb" not in st.get("types", "").split() or st.get("enabled", "yes") == "no":
                continue
            uris = st.get("uris", "").split()
            suites = st.get("suites", "").split()
            if uris and _is_main_archive(uris[0], suites) and "debian" in uris[0]:
                keyring = Path(st["signed-by"]) if st.get("signed-by", "").startswith("/") else DEFAULT_KEYRING
                return DebianMirror(uris[0], keyring)
    one_line = [apt_dir / "sources.list", *(sorted(parts.glob("*.list")) if parts.is_dir() else [])]
    for path in one_line:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb" and "debian" in words[1]:
                if _is_main_archive(words[1], words[2:3]):
                    return DebianMirror(words[1], DEFAULT_KEYRING)
    raise MirrorNotFound(f"no Debian archive 'deb' source found under {apt_dir}")
