#!/usr/bin/env bash
# The chart's checks (CI runs them):
#  1. its CRDs under charts/sparkwing/crds are exact copies of crds/yaml (`make chart-crds`);
#  2. when helm is on PATH: `helm lint`, and `helm template` with several value sets renders YAML
#     that parses and has the kinds expected (and, with WEBHOOK=<secret>:<key>, the webhook
#     secret's read-only mount and --webhook-secret-file; without, neither).
set -euo pipefail
cd "$(dirname "$0")/.."
chart=charts/sparkwing

echo "== chart CRDs equal crds/yaml"
if ! diff -r crds/yaml "$chart/crds"; then
    echo "charts: $chart/crds differs from crds/yaml; run 'make chart-crds'" >&2
    exit 1
fi

helm_bin="${HELM:-$(command -v helm || true)}"
if [ -z "$helm_bin" ] || [ ! -x "$helm_bin" ]; then
    echo "== helm not found (PATH or \$HELM): skipping lint and template"
    exit 0
fi

echo "== helm lint"
"$helm_bin" lint "$chart" --strict

# check_render NAME EXPECTED-KINDS [helm template flags...]
check_render() {
    local name="$1" expected="$2"
    shift 2
    echo "== helm template ($name)"
    local out
    out="$("$helm_bin" template sparkwing "$chart" --namespace sparkwing-system --include-crds "$@")"
    EXPECTED="$expected" WEBHOOK="${WEBHOOK:-}" python3 -c '
import os, sys, yaml
docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
kinds = sorted(d["kind"] for d in docs)
for d in docs:
    assert d.get("apiVersion") and d.get("metadata", {}).get("name"), d
expected = sorted(os.environ["EXPECTED"].split())
if kinds != expected:
    sys.exit(f"kinds {kinds}\n  expected {expected}")
dep = [d for d in docs if d["kind"] == "Deployment"][0]
pod = dep["spec"]["template"]["spec"]
c = pod["containers"][0]
sc = c["securityContext"]
assert pod["securityContext"]["runAsNonRoot"] is True
assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
assert sc["seccompProfile"]["type"] == "RuntimeDefault"
assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
api = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"].endswith("-api")]
ports = {p["name"]: p["containerPort"] for p in c["ports"]}
if api:
    assert api[0]["spec"]["ports"][0]["targetPort"] == "api", api
    assert "--api-addr=0.0.0.0:%d" % ports["api"] in c["args"], c["args"]
    assert any(m["mountPath"] == "/var/lib/sparkwing" for m in c["volumeMounts"])
    # Runners reach the API through its Service.
    url = "--runner-api-url=http://%s.sparkwing-system.svc:%d" % (
        api[0]["metadata"]["name"], api[0]["spec"]["ports"][0]["port"])
    assert url in c["args"], c["args"]
    rules = [r for d in docs if d["kind"] in ("ClusterRole", "Role") for r in d["rules"]]
    assert any("secrets" in r["resources"] and "create" in r["verbs"] for r in rules), rules
    # Pool tokens: the operator reads and rewrites <pool>-pool-token; the API reads pod claims.
    assert any("secrets" in r["resources"] and {"get", "update"} <= set(r["verbs"]) for r in rules), rules
    assert any("pods" in r["resources"] and "get" in r["verbs"] for r in rules), rules
    assert any("pipelineruns/status" in r["resources"] and "patch" in r["verbs"] for r in rules)
else:
    # Without the API the operator still checks that the Secrets granted to a run exist.
    rules = [r for d in docs if d["kind"] in ("ClusterRole", "Role") for r in d["rules"]]
    assert any("secrets" in r["resources"] and r["verbs"] == ["get"] for r in rules), rules
    assert "api" not in ports and not any(a.startswith("--api-addr") for a in c["args"])
    assert not any(a.startswith("--runner-api-url") for a in c["args"]), c["args"]
webhook = os.environ["WEBHOOK"]
hook_args = [a for a in c["args"] if a.startswith("--webhook-secret-file")]
hook_mounts = [m for m in c.get("volumeMounts", []) if m["name"] == "webhook-secret"]
hook_vols = [v for v in pod.get("volumes", []) if v["name"] == "webhook-secret"]
if webhook and api:
    secret, key = webhook.split(":")
    assert hook_args == ["--webhook-secret-file=/etc/sparkwing/webhook/secret"], c["args"]
    assert hook_mounts == [{"name": "webhook-secret", "mountPath": "/etc/sparkwing/webhook",
                            "readOnly": True}], hook_mounts
    assert hook_vols == [{"name": "webhook-secret", "secret": {"secretName": secret,
                          "items": [{"key": key, "path": "secret"}]}}], hook_vols
else:
    assert not hook_args and not hook_mounts and not hook_vols, (hook_args, hook_mounts, hook_vols)
print("   %d objects: %s" % (len(docs), " ".join(kinds)))
' <<<"$out"
}

crds="CustomResourceDefinition CustomResourceDefinition CustomResourceDefinition"
check_render "defaults" \
    "$crds ClusterRole ClusterRoleBinding Deployment Role RoleBinding RunnerPool Service Service ServiceAccount ServiceAccount"
check_render "one namespace, two replicas (leader election)" \
    "$crds Deployment Role Role Role RoleBinding RoleBinding RoleBinding RunnerPool Service Service ServiceAccount ServiceAccount" \
    --set watchNamespace=ci --set replicaCount=2
check_render "no pool, no runner account, no metrics service, no API" \
    "$crds ClusterRole ClusterRoleBinding Deployment ServiceAccount" \
    --set defaultPool.enabled=false --set runner.serviceAccount.create=false --set metrics.service.enabled=false --set api.enabled=false
WEBHOOK=sparkwing-webhook:secret check_render "webhook secret from an existing Secret (default key)" \
    "$crds ClusterRole ClusterRoleBinding Deployment Role RoleBinding RunnerPool Service Service ServiceAccount ServiceAccount" \
    --set api.webhook.existingSecret=sparkwing-webhook
WEBHOOK=forge-hmac:hmac check_render "webhook secret under another key" \
    "$crds ClusterRole ClusterRoleBinding Deployment Role RoleBinding RunnerPool Service Service ServiceAccount ServiceAccount" \
    --set api.webhook.existingSecret=forge-hmac --set api.webhook.secretKey=hmac
WEBHOOK=forge-hmac:hmac check_render "webhook secret set, API off: nothing rendered" \
    "$crds ClusterRole ClusterRoleBinding Deployment ServiceAccount" \
    --set defaultPool.enabled=false --set runner.serviceAccount.create=false --set metrics.service.enabled=false --set api.enabled=false \
    --set api.webhook.existingSecret=forge-hmac --set api.webhook.secretKey=hmac
echo "chart ok"
