#!/usr/bin/env bash
# Pins the test bed's Kubernetes binaries (kube-apiserver, kube-controller-manager, kube-scheduler,
# kubelet, kubectl) to another Kubernetes release:
#
#   bash e2e/testbed/pin-kubernetes.sh v1.37.2
#
# k8s.io/kubernetes requires its staging modules (k8s.io/api, k8s.io/client-go, ...) at v0.0.0
# and replaces them with ./staging/src/..., which does not work from the module cache. This
# rewrites go/kubernetes/go.mod to require k8s.io/kubernetes at the release and replace every
# staging module it requires (every k8s.io/* at v0.0.0 in its go.mod) by its published version
# v0.<minor>.<patch>, then runs go mod tidy. Commit go.mod and go.sum; build.sh rebuilds.
set -euo pipefail

version="${1:?usage: pin-kubernetes.sh vMAJOR.MINOR.PATCH}"
here="$(cd "$(dirname "$0")" && pwd)"
dir="$here/go/kubernetes"
staging_version="v0.${version#v1.}"

upstream_mod="$(cd "$dir" && go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')"
staging="$(awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" { print $1 }' "$upstream_mod" | sort -u)"
if [ -z "$staging" ]; then
    echo "error: found no staging modules in $upstream_mod" >&2
    exit 1
fi

{
    sed -n '1,/^module /p' "$dir/go.mod"
    echo
    echo "go $(awk '$1 == "go" { print $2; exit }' "$upstream_mod")"
    echo
    echo "tool ("
    for tool in kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet; do
        printf '\tk8s.io/kubernetes/cmd/%s\n' "$tool"
    done
    echo ")"
    echo
    echo "require k8s.io/kubernetes $version"
    echo
    echo "replace ("
    for module in $staging; do
        printf '\t%s => %s %s\n' "$module" "$module" "$staging_version"
    done
    echo ")"
} >"$dir/go.mod.new"
mv "$dir/go.mod.new" "$dir/go.mod"
(cd "$dir" && go mod tidy)
echo "pinned k8s.io/kubernetes $version; staging modules at $staging_version:"
echo "$staging" | sed 's/^/  /'
