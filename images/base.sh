#!/usr/bin/env bash
# Builds the local Debian bookworm base images the Sparkwing images are built FROM when no
# registry is reachable: a root filesystem made by mmdebstrap from Debian's packages, then
# `docker import`ed. Two flavours:
#
#   sparkwing-base:bookworm         Debian's essential packages + apt + ca-certificates (operator)
#   sparkwing-base:bookworm-runner  the same + gcc and libc6-dev (rustc links through cc) and git
#                                   (a run's git source is checked out with it) (runner)
#
# The Debian mirror is the one apt uses on this machine (/etc/apt/sources.list or a deb822 file
# under /etc/apt/sources.list.d/), read at run time; SPARKWING_DEBIAN_MIRROR overrides it.
# Cached: each image carries a label with the hash of what made it (mmdebstrap's arguments: the
# suite, the packages, the dpkg filters; and the mirror); when the image exists with that label
# nothing is done.
#
# Usage: images/base.sh [plain|runner|all]   (default: all)
set -euo pipefail

SUITE=bookworm
REPOSITORY="${SPARKWING_BASE_REPOSITORY:-sparkwing-base}"
LABEL=dev.sparkwing.base.inputs
# Packages beyond mmdebstrap's `apt` variant (Essential + apt), per flavour.
PACKAGES_PLAIN="ca-certificates"
PACKAGES_RUNNER="ca-certificates gcc libc6-dev git"

die() {
    echo "images/base.sh: $*" >&2
    exit 1
}

# The first Debian mirror apt is configured with for $SUITE: a one-line `deb URL SUITE ...` entry
# or a deb822 stanza whose Suites include it.
host_mirror() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        awk -v suite="$SUITE" '$1 == "deb" {
                i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                if ($(i+1) == suite) { print $i; exit }
            }' "$f"
    done | head -n1 | grep . && return 0
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        # Stanzas are separated by blank lines; print URIs of the first whose Suites has $SUITE.
        awk -v suite="$SUITE" 'BEGIN { RS = ""; FS = "\n" } {
                uri = ""; ok = 0
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^URIs:/) { split($i, a, /[ \t]+/); uri = a[2] }
                    if ($i ~ /^Suites:/) { n = split($i, s, /[ \t]+/); for (j = 2; j <= n; j++) if (s[j] == suite) ok = 1 }
                }
                if (ok && uri != "") { print uri; exit }
            }' "$f"
    done | head -n1 | grep .
}

mirror="${SPARKWING_DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
    mirror="$(host_mirror)" || die "no Debian $SUITE mirror in /etc/apt/sources.list{,.d/}; set SPARKWING_DEBIAN_MIRROR"
fi

command -v docker >/dev/null || die "docker is not on PATH (bash scripts/setup-test-deps.sh installs and starts it)"
if ! command -v mmdebstrap >/dev/null; then
    [ "$(id -u)" -eq 0 ] || die "mmdebstrap is missing: apt-get install mmdebstrap"
    echo "== installing mmdebstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null
fi

# build TAG "PACKAGES"
build() {
    local tag="$1" packages="$2"
    # Like Debian's -slim images: no manuals, no documentation but the copyright files, no
    # translations; and no apt lists or caches left in the image.
    local args=(
        --mode=root --variant=apt --format=tar
        --include="${packages// /,}"
        --dpkgopt='path-exclude=/usr/share/man/*'
        --dpkgopt='path-exclude=/usr/share/doc/*'
        --dpkgopt='path-include=/usr/share/doc/*/copyright'
        --dpkgopt='path-exclude=/usr/share/info/*'
        --dpkgopt='path-exclude=/usr/share/locale/*'
        --dpkgopt='path-exclude=/usr/share/lintian/*'
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/*.log'
        "$SUITE"
    )
    # What makes the root filesystem: the arguments and the mirror (v1: the import's --change set).
    local key
    key="$(printf '%s\n' v1 "${args[@]}" "$mirror" | sha256sum | cut -c1-32)"
    local have
    have="$(docker image inspect --format "{{index .Config.Labels \"$LABEL\"}}" "$tag" 2>/dev/null || true)"
    if [ "$have" = "$key" ]; then
        echo "== $tag is up to date"
        return 0
    fi
    echo "== building $tag ($SUITE: $packages)"
    local started=$SECONDS
    local work
    work="$(mktemp -d "${TMPDIR:-/var/tmp}/sparkwing-base.XXXXXX")"
    # shellcheck disable=SC2064
    trap "rm -rf '$work'" RETURN
    mmdebstrap --quiet "${args[@]}" "$work/rootfs.tar" "$mirror"
    docker import \
        --change "LABEL $LABEL=$key" \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["bash"]' \
        "$work/rootfs.tar" "$tag" >/dev/null
    echo "== built $tag in $((SECONDS - started))s ($(docker image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1 / 1e6}'))"
}

case "${1:-all}" in
plain) build "$REPOSITORY:$SUITE" "$PACKAGES_PLAIN" ;;
runner) build "$REPOSITORY:$SUITE-runner" "$PACKAGES_RUNNER" ;;
all)
    build "$REPOSITORY:$SUITE" "$PACKAGES_PLAIN"
    build "$REPOSITORY:$SUITE-runner" "$PACKAGES_RUNNER"
    ;;
*) die "usage: images/base.sh [plain|runner|all]" ;;
esac
