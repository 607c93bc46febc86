#!/usr/bin/env bash
# Installs everything the testbed needs on a fresh Debian 12 or 13 machine, as root.
# Idempotent: a second run only checks and exits quickly.
#
#   testbed/install.sh            # installs into <repo>/.cache
#
# Result (all project-local, never touching the system's apt sources):
#   .cache/containerd/usr/bin/{containerd,containerd-shim-runc-v2,ctr}   (Debian 12)
#   .cache/bin/crictl                                                     (built with Go)
#   .cache/busybox/bin/busybox                                            (from busybox-static .deb)
# plus the apt packages runc, iproute2, util-linux, python3-venv, ...
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${TESTBED_CACHE:-$REPO/.cache}"
CRICTL_VERSION="v1.37.0"
CONTAINERD_MIN="1.7.24"
# crictl v1.37 needs Go 1.26.6; any Go >= 1.21 fetches that toolchain itself from the module proxy.
GO_MIN="1.21"

log() { echo "testbed/install: $*" >&2; }
die() { echo "testbed/install: ERROR: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (it installs apt packages)"
[ -r /etc/os-release ] || die "no /etc/os-release; only Debian 12/13 are supported"
# shellcheck disable=SC1091
. /etc/os-release
[ "${ID:-}" = debian ] || die "only Debian 12/13 are supported (found ID=${ID:-?})"
CODENAME="${VERSION_CODENAME:-}"

mkdir -p "$CACHE/bin"
export DEBIAN_FRONTEND=noninteractive

# ---------------------------------------------------------------- apt packages
APT_PKGS=(runc busybox-static python3-venv python3-pip iproute2 util-linux procps psmisc
          ca-certificates make git tar debootstrap gcc libc6-dev)  # gcc: test workloads, bench readers
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# ---------------------------------------------------------------- busybox (image base)
# The images are built from the .deb's own binary, not from whatever the host has installed.
if [ ! -x "$CACHE/busybox/bin/busybox" ]; then
  log "extracting busybox-static into $CACHE/busybox"
  tmp="$(mktemp -d)"
  (cd "$tmp" && apt-get -o APT::Sandbox::User=root download -qq busybox-static >/dev/null)
  dpkg-deb -x "$tmp"/busybox-static_*.deb "$tmp/x"
  # Debian 12 ships /bin/busybox, Debian 13 (merged /usr) /usr/bin/busybox.
  bb=""
  for cand in "$tmp/x/bin/busybox" "$tmp/x/usr/bin/busybox"; do [ -f "$cand" ] && bb="$cand" && break; done
  [ -n "$bb" ] || die "busybox-static .deb has neither /bin/busybox nor /usr/bin/busybox"
  rm -rf "$CACHE/busybox"
  mkdir -p "$CACHE/busybox/bin"
  install -m 0755 "$bb" "$CACHE/busybox/bin/busybox"
  rm -rf "$tmp"
fi

# ---------------------------------------------------------------- containerd >= 1.7 with NRI
version_ge() { dpkg --compare-versions "$1" ge "$2"; }

containerd_version() {  # prints e.g. 1.7.24~ds1 for a containerd binary
  # Debian suffixes (~ds1, +deb13u1) would sort below the upstream version; drop them.
  "$1" --version 2>/dev/null | awk '{print $3}' | sed 's/^v//; s/[~+-].*//'
}

if [ "$CODENAME" = bookworm ] || [ "${TESTBED_FORCE_TRIXIE_DEB:-0}" = 1 ]; then
  CBIN="$CACHE/containerd/usr/bin/containerd"
  if [ -x "$CBIN" ] && version_ge "$(containerd_version "$CBIN")" "$CONTAINERD_MIN"; then
    :
  else
    log "fetching Debian 13 (trixie) containerd into $CACHE/containerd"
    # Reuse the system's own mirror URI and keyring; never hard-code a host.
    uri="" keyring=""
    if [ -r /etc/apt/sources.list.d/debian.sources ]; then
      # First deb822 stanza whose suite is the release itself (not -security/-updates).
      read -r uri keyring < <(awk -v cn="$CODENAME" '
        BEGIN { RS=""; FS="\n" }
        {
          u=""; k=""; s=""; t=""
          for (i=1; i<=NF; i++) {
            if ($i ~ /^URIs:/)      { sub(/^URIs:[ \t]*/, "", $i); split($i, a, /[ \t]+/); u=a[1] }
            if ($i ~ /^Signed-By:/) { sub(/^Signed-By:[ \t]*/, "", $i); k=$i }
            if ($i ~ /^Suites:/)    { s=" " $i " " }
            if ($i ~ /^Types:/)     { t=$i }
          }
          if (t ~ /deb( |$)/ && s ~ (" " cn " ") && u != "") { print u, (k == "" ? "-" : k); exit }
        }' /etc/apt/sources.list.d/debian.sources)
    fi
    if [ -z "$uri" ] && [ -r /etc/apt/sources.list ]; then
      uri="$(awk -v cn="$CODENAME" '$1=="deb" && $0 ~ (" " cn " ") {
               for (i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' /etc/apt/sources.list)"
    fi
    [ -n "$uri" ] || die "cannot find the Debian archive URI in /etc/apt/sources.list(.d)"
    if [ -z "$keyring" ] || [ "$keyring" = - ]; then
      keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    fi
    [ -r "$keyring" ] || die "apt keyring $keyring not readable"

    apt_dir="$CACHE/apt-trixie"
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/debs"
    cat > "$apt_dir/trixie.sources" <<EOF
Types: deb
URIs: $uri
Suites: trixie
Components: main
Signed-By: $keyring
EOF
    APT_OPTS=(-o "Dir::Etc::SourceList=$apt_dir/trixie.sources" -o Dir::Etc::SourceParts=/dev/null
              -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache::Archives=$apt_dir/debs"
              -o APT::Get::List-Cleanup=0 -o APT::Sandbox::User=root)
    apt-get "${APT_OPTS[@]}" update -qq
    rm -f "$apt_dir/debs"/containerd_*.deb
    (cd "$apt_dir/debs" && apt-get "${APT_OPTS[@]}" download -qq containerd >/dev/null)
    deb="$(ls "$apt_dir/debs"/containerd_*.deb | head -n1)"
    [ -n "$deb" ] || die "apt-get download containerd produced no .deb"
    rm -rf "$CACHE/containerd"
    dpkg-deb -x "$deb" "$CACHE/containerd"
    v="$(containerd_version "$CBIN")"
    version_ge "$v" "$CONTAINERD_MIN" || die "downloaded containerd $v < $CONTAINERD_MIN"
    log "containerd $v ready at $CBIN"
  fi
else
  # Debian 13 and later: the system's own package is new enough.
  if ! dpkg-query -W -f='${Status}' containerd 2>/dev/null | grep -q '^install ok installed$'; then
    log "apt-get install containerd"
    apt-get install -y -qq --no-install-recommends containerd >/dev/null ||
      { apt-get update -qq && apt-get install -y -qq --no-install-recommends containerd >/dev/null; }
  fi
  # The package enables a system containerd; the testbed runs its own instance, so leave it.
  v="$(containerd_version /usr/bin/containerd)"
  version_ge "$v" "$CONTAINERD_MIN" || die "system containerd $v < $CONTAINERD_MIN"
fi

# ---------------------------------------------------------------- crictl (real, from the Go proxy)
# `go install` leaves crictl's own version string "unknown", so a stamp file records what was built.
crictl_ok() {
  [ -x "$CACHE/bin/crictl" ] && "$CACHE/bin/crictl" --version >/dev/null 2>&1 &&
    [ "$(cat "$CACHE/bin/crictl.version" 2>/dev/null)" = "$CRICTL_VERSION" ]
}
if ! crictl_ok; then
  GO=""
  for cand in "$(command -v go 2>/dev/null || true)" /usr/local/go/bin/go /usr/lib/go/bin/go; do
    if [ -n "$cand" ] && [ -x "$cand" ]; then GO="$cand"; break; fi
  done
  go_new_enough() { v="$("$1" env GOVERSION 2>/dev/null | sed 's/^go//; s/[^0-9.].*//')"; [ -n "$v" ] && version_ge "$v" "$GO_MIN"; }
  if [ -z "$GO" ] || ! go_new_enough "$GO"; then
    cand_ver="$(apt-cache policy golang-go 2>/dev/null | awk '/Candidate:/ {print $2}' | sed 's/^[0-9]*://; s/~.*//')"
    if [ -n "$cand_ver" ] && [ "$cand_ver" != "(none)" ] && version_ge "$cand_ver" "$GO_MIN"; then
      log "apt-get install golang-go ($cand_ver)"
      apt-get install -y -qq --no-install-recommends golang-go >/dev/null
      GO=/usr/bin/go
    else
      die "crictl $CRICTL_VERSION needs Go >= $GO_MIN; none found (/usr/local/go/bin/go, PATH) and Debian's golang-go is ${cand_ver:-unavailable}. Install Go >= $GO_MIN and re-run."
    fi
  fi
  log "building crictl $CRICTL_VERSION with $GO"
  GOBIN="$CACHE/bin" GOTOOLCHAIN=auto "$GO" install "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
  echo "$CRICTL_VERSION" > "$CACHE/bin/crictl.version"
  crictl_ok || die "crictl build did not produce a working $CACHE/bin/crictl"
fi

log "ok"
