#!/usr/bin/env bash
# The images' test (`make test-images`): builds them from the host's debug binaries
# (images/build.sh, cached by content) and runs each as the chart and the operator run them:
# uid 65532, read-only root, every capability dropped, no privilege escalation.
#
#   operator: with an API data directory on a tmpfs and a kubeconfig naming an apiserver that is
#             not there, published on loopback ports: /healthz answers 200, /readyz 503 (no CRDs
#             served), the API's /healthz 200 and /readyz 200 (its data directory is writable),
#             an API call without a token 401.
#   runner:   with no network and a tmpfs /tmp (the pod's emptyDir), the runner Job's command
#             without its environment exits 8 (docs/exit-codes.md); `sparkwing run` compiles
#             examples/hello's .sparkwing/ with the image's toolchain, offline, and runs it to
#             success; the toolchain is not writable, CARGO_HOME is.
set -euo pipefail
cd "$(dirname "$0")/.."

bash images/build.sh --profile debug
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)"
OPERATOR_IMAGE="${OPERATOR_IMAGE:-sparkwing-operator:$version}"
RUNNER_IMAGE="${RUNNER_IMAGE:-sparkwing-kube-runner:$version}"

work="$(mktemp -d "${TMPDIR:-/tmp}/sparkwing-images-test.XXXXXX")"
containers=()
cleanup() {
    for c in "${containers[@]}"; do docker rm -f "$c" >/dev/null 2>&1 || true; done
    rm -rf "$work"
}
trap cleanup EXIT

failures=0
pass() { echo "ok   $*"; }
fail() {
    echo "FAIL $*" >&2
    failures=$((failures + 1))
}
# expect WHAT EXPECTED ACTUAL
expect() {
    if [ "$2" = "$3" ]; then pass "$1"; else fail "$1: expected '$2', got '$3'"; fi
}
# contains WHAT NEEDLE HAYSTACK
contains() {
    if grep -qF -- "$2" <<<"$3"; then pass "$1"; else fail "$1: no '$2' in: $3"; fi
}

restricted=(--read-only --user 65532:65532 --cap-drop ALL --security-opt no-new-privileges)

echo "== operator ($OPERATOR_IMAGE)"
cat >"$work/kubeconfig" <<'EOF'
apiVersion: v1
kind: Config
clusters: [{name: absent, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: absent, user: {token: absent}}]
contexts: [{name: absent, context: {cluster: absent, user: absent}}]
current-context: absent
EOF
chmod 0644 "$work/kubeconfig"
op="$(docker run -d "${restricted[@]}" \
    --tmpfs /var/lib/sparkwing:uid=65532,gid=65532,mode=0750 \
    -v "$work/kubeconfig:/etc/sparkwing/kubeconfig:ro" -e KUBECONFIG=/etc/sparkwing/kubeconfig \
    -p 127.0.0.1::8080 -p 127.0.0.1::8443 \
    "$OPERATOR_IMAGE" --metrics-addr=0.0.0.0:8080 --api-addr=0.0.0.0:8443 \
    --data-dir=/var/lib/sparkwing)"
containers+=("$op")
metrics="$(docker port "$op" 8080/tcp | head -n1)"
api="$(docker port "$op" 8443/tcp | head -n1)"
# status URL: the HTTP status, 000 while nothing answers.
status() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" || true; }
deadline=$((SECONDS + 30))
until [ "$(status "http://$metrics/healthz")" = 200 ] && [ "$(status "http://$api/healthz")" = 200 ]; do
    if [ "$SECONDS" -ge "$deadline" ] || [ "$(docker inspect -f '{{.State.Running}}' "$op")" != true ]; then
        docker logs "$op" 2>&1 | tail -n 20 >&2
        fail "the operator did not answer /healthz within 30s"
        exit 1
    fi
    sleep 0.2
done
expect "metrics /healthz" "ok" "$(curl -s "http://$metrics/healthz")"
expect "metrics /readyz without CRDs" 503 "$(status "http://$metrics/readyz")"
expect "API /healthz" 200 "$(status "http://$api/healthz")"
expect "API /readyz (data directory writable on a read-only root)" 200 "$(status "http://$api/readyz")"
expect "API call without a token" 401 "$(status "http://$api/api/v1/runs")"
expect "operator uid" 65532 "$(docker exec "$op" id -u)"

echo "== runner ($RUNNER_IMAGE)"
runner=(docker run --rm "${restricted[@]}" --network none --tmpfs /tmp:rw,exec,size=2g)
expect "the image's user" 65532:65532 "$(docker image inspect -f '{{.Config.User}}' "$RUNNER_IMAGE")"
# The runner Job's container: command `sparkwing`, args `runner --run NS/NAME --attempt N`.
set +e
out="$("${runner[@]}" --entrypoint sparkwing "$RUNNER_IMAGE" runner --run ns/run --attempt 1 2>&1)"
code=$?
set -e
expect "runner Job command without SPARKWING_API_URL exits 8" 8 "$code"
contains "and says what is missing" "SPARKWING_API_URL is not set" "$out"

set +e
out="$("${runner[@]}" -v "$PWD/examples/hello:/src:ro" --entrypoint bash "$RUNNER_IMAGE" -c '
    set -eu
    if touch /usr/local/rustup/probe 2>/dev/null; then echo "toolchain writable"; exit 1; fi
    mkdir -p "$CARGO_HOME" && touch "$CARGO_HOME/probe"
    cargo --version
    cp -r /src /tmp/work && cd /tmp/work
    sparkwing run hello --name image
' 2>&1)"
code=$?
set -e
expect "runner compiles and runs examples/hello offline" 0 "$code"
contains "with the image's cargo" "cargo 1." "$out"
contains "compiling .sparkwing/ in the container" '"binary":"compiled"' "$out"
contains "the pipeline's output" "hello, image! (2)" "$out"
contains "the run succeeds" '"status":"success"' "$(grep -F '"event":"run_finished"' <<<"$out" || true)"
[ "$code" = 0 ] || echo "$out" | tail -n 30 >&2

if [ "$failures" -gt 0 ]; then
    echo "images: $failures check(s) failed" >&2
    exit 1
fi
echo "images ok"
