#!/usr/bin/env bash
# Builds the Kubernetes end-to-end test bed's binaries from their Go modules, once, into a cache
# outside the repository:
#
#   kube-apiserver           k8s.io/kubernetes/cmd/kube-apiserver           (go/kubernetes/go.mod)
#   kube-controller-manager  k8s.io/kubernetes/cmd/kube-controller-manager  (go/kubernetes/go.mod)
#   kube-scheduler           k8s.io/kubernetes/cmd/kube-scheduler           (go/kubernetes/go.mod)
#   kubelet                  k8s.io/kubernetes/cmd/kubelet                  (go/kubernetes/go.mod)
#   kubectl                  k8s.io/kubernetes/cmd/kubectl                  (go/kubernetes/go.mod)
#   etcd                     go.etcd.io/etcd/server/v3/etcdmain              (go/etcd/go.mod, main.go)
#   helm                     helm.sh/helm/v3/cmd/helm                        (go/helm/go.mod)
#
# Output: ${SPARKWING_E2E_CACHE:-/var/tmp/sparkwing-e2e}/bin/<name>.
# Each binary has a stamp (a hash of its module's go.mod, go.sum and *.go, the package, the link
# flags and the Go version); it is rebuilt only when that changes. The first run is slow (about
# 20 minutes on two busy cores, kube-apiserver being most of it); later runs take under a second.
# Idempotent; safe to run concurrently (one build at a time, under a lock).
#
# Go's build and module caches stay where Go keeps them by default (outside the repository).
# A pinned module that needs a newer Go than the installed one: export GOTOOLCHAIN=go1.27.3.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cache="${SPARKWING_E2E_CACHE:-/var/tmp/sparkwing-e2e}"
bin="$cache/bin"
stamps="$cache/stamps"
mkdir -p "$bin" "$stamps"

if ! command -v go >/dev/null 2>&1; then
    echo "error: go (>= 1.26) is not installed; the test bed builds the Kubernetes binaries, etcd and helm from source" >&2
    exit 1
fi

export CGO_ENABLED=0
export GOFLAGS=-trimpath
# The modules' go.sum files are committed; never rewrite them during a build.
export GOFLAGS="$GOFLAGS -mod=readonly"

exec 9>"$cache/.build.lock"
if ! flock -n 9; then
    echo "e2e testbed: another build holds $cache/.build.lock; waiting for it"
    flock 9
fi

go_version="$(go env GOVERSION)"

# stamp_of DIR PACKAGE LDFLAGS: hash of what a build depends on: the module's files, the package,
# the link flags and the toolchain.
stamp_of() {
    (
        cd "$1"
        printf '%s\n' "$2" "$3" "$go_version" "${GOTOOLCHAIN:-}" "$GOFLAGS" "$CGO_ENABLED"
        sha256sum go.mod go.sum ./*.go 2>/dev/null || true
    ) | sha256sum | cut -d' ' -f1
}

# module_field DIR MODULE FIELD: a field (Version, Time) of a required module, as resolved.
module_field() {
    (cd "$1" && go list -m -f "{{.$3}}" "$2")
}

# build NAME MODULE_DIR PACKAGE LDFLAGS: go build PACKAGE into $bin/NAME unless its stamp is current.
build() {
    local name="$1" dir="$here/go/$2" pkg="$3" ldflags="$4"
    local stamp
    stamp="$(stamp_of "$dir" "$pkg" "$ldflags")"
    if [ -x "$bin/$name" ] && [ "$(cat "$stamps/$name" 2>/dev/null)" = "$stamp" ]; then
        echo "e2e testbed: $name is up to date ($bin/$name)"
        return
    fi
    echo "e2e testbed: building $name ($pkg) with $go_version (minutes when Go's build cache is cold)"
    local start=$SECONDS
    # go build -v names each package it compiles (cached ones are not named): the full output goes
    # to a log, and a progress line every 100 packages to the terminal.
    local log="$cache/logs/$name.log" rc=0
    mkdir -p "$cache/logs"
    (cd "$dir" && go build -v -ldflags "$ldflags" -o "$bin/$name.tmp" "$pkg") 2>&1 | tee "$log" |
        awk -v name="$name" '
            { n++; if (n % 100 == 0) { printf "e2e testbed: %s: %d packages compiled\n", name, n; fflush() } }
            END { printf "e2e testbed: %s: %d packages compiled\n", name, n }' || rc=$?
    if [ "$rc" -ne 0 ] || [ ! -x "$bin/$name.tmp" ]; then
        rm -f "$bin/$name.tmp"
        grep -v -E '^[a-zA-Z0-9._/-]+$' "$log" | tail -40 >&2 || true
        echo "error: building $name failed (exit $rc); full output in $log" >&2
        exit 1
    fi
    mv -f "$bin/$name.tmp" "$bin/$name"
    echo "$stamp" >"$stamps/$name"
    echo "e2e testbed: built $name in $((SECONDS - start))s"
}

# kube-apiserver and kubectl report the version they were built from, as Kubernetes' own build
# stamps it (hack/lib/version.sh); without it they say v0.0.0-master.
k8s_dir="$here/go/kubernetes"
k8s_version="$(module_field "$k8s_dir" k8s.io/kubernetes Version)"
k8s_time="$(module_field "$k8s_dir" k8s.io/kubernetes Time | sed -E 's/ .*//')"
k8s_minor="$(echo "$k8s_version" | cut -d. -f2)"
k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    k8s_ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
    k8s_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.gitCommit= -X $pkg.buildDate=${k8s_time}T00:00:00Z"
done
for tool in kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl; do
    build "$tool" kubernetes "k8s.io/kubernetes/cmd/$tool" "$k8s_ldflags"
done

build etcd etcd . "-s -w"

helm_version="$(module_field "$here/go/helm" helm.sh/helm/v3 Version)"
build helm helm helm.sh/helm/v3/cmd/helm "-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version"

echo "e2e testbed: binaries in $bin"
for tool in kube-apiserver kube-controller-manager kube-scheduler kubelet; do
    "$bin/$tool" --version
done
"$bin/kubectl" version --client | sed -n 1p
"$bin/etcd" --version | sed -n 1p
"$bin/helm" version --short
