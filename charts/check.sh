#!/usr/bin/env bash
# The chart's checks (CI runs them):
#  1. its CRDs under charts/sparkwing/crds are exact copies of crds/yaml (`make chart-crds`);
#  2. when helm is on PATH: `helm lint`, and `helm template` with several value sets renders YAML
#     that parses and has the kinds expected (and, with WEBHOOK=<secret>:<key>, the webhook
#     secret's read-only mount and --webhook-secret-file; without, neither; with DATA=pvc:<claim>,
#     emptydir or shared, the API's data volume or the shared stores' environment; with
#     API_REPLICAS=N, a Deployment `<release>-api` of N replicas serving `sparkwing-operator api`).
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
    EXPECTED="$expected" WEBHOOK="${WEBHOOK:-}" DATA="${DATA:-}" API_REPLICAS="${API_REPLICAS:-0}" python3 -c '
import os, sys, yaml
docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
kinds = sorted(d["kind"] for d in docs)
for d in docs:
    assert d.get("apiVersion") and d.get("metadata", {}).get("name"), d
expected = sorted(os.environ["EXPECTED"].split())
if kinds != expected:
    sys.exit(f"kinds {kinds}\n  expected {expected}")
deps = [d for d in docs if d["kind"] == "Deployment"]
dep = [d for d in deps if not d["metadata"]["name"].endswith("-api")][0]
api_deps = [d for d in deps if d["metadata"]["name"].endswith("-api")]
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
replicas = int(os.environ["API_REPLICAS"])
data = os.environ["DATA"]
env_names = lambda container: {e["name"] for e in container.get("env", [])}
if api and replicas:
    # The API alone, in its own Deployment, on the shared stores; the operator uses them too.
    assert len(api_deps) == 1 and api_deps[0]["spec"]["replicas"] == replicas, api_deps
    apod = api_deps[0]["spec"]["template"]["spec"]
    ac = apod["containers"][0]
    assert ac["args"][0] == "api" and "--api-addr=0.0.0.0:%d" % ac["ports"][0]["containerPort"] in ac["args"], ac["args"]
    assert ac["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "api"}
    assert api[0]["spec"]["selector"] == api_deps[0]["spec"]["selector"]["matchLabels"], api
    for container in (c, ac):
        assert {"SPARKWING_METADATA", "SPARKWING_OBJECTS"} <= env_names(container), container
    assert not any(a.startswith("--api-addr") for a in c["args"]), c["args"]
    assert not any(v["name"] == "data" for v in (pod.get("volumes") or []))
elif api:
    assert not api_deps
    assert api[0]["spec"]["ports"][0]["targetPort"] == "api", api
    assert "--api-addr=0.0.0.0:%d" % ports["api"] in c["args"], c["args"]
    vols = {v["name"]: v for v in (pod.get("volumes") or [])}
    if data == "shared":
        assert {"SPARKWING_METADATA", "SPARKWING_OBJECTS"} <= env_names(c), c["env"]
        assert "data" not in vols, vols
    else:
        assert any(m["mountPath"] == "/var/lib/sparkwing" for m in (c.get("volumeMounts") or []))
        if data == "emptydir":
            assert vols["data"] == {"name": "data", "emptyDir": {}}, vols
        else:
            claim = data.split(":", 1)[1]
            assert vols["data"]["persistentVolumeClaim"]["claimName"] == claim, vols
if api:
    # Runners reach the API through its Service.
    url = "--runner-api-url=http://%s.sparkwing-system.svc:%d" % (
        api[0]["metadata"]["name"], api[0]["spec"]["ports"][0]["port"])
    assert url in c["args"], c["args"]
if api:
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
hook_mounts = [m for m in (c.get("volumeMounts") or []) if m["name"] == "webhook-secret"]
hook_vols = [v for v in (pod.get("volumes") or []) if v["name"] == "webhook-secret"]
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
DATA=pvc:sparkwing-data check_render "defaults (the API's data on a PersistentVolumeClaim the chart makes)" \
    "$crds ClusterRole ClusterRoleBinding Deployment PersistentVolumeClaim Role RoleBinding RunnerPool Service Service ServiceAccount ServiceAccount"
DATA=pvc:sparkwing-data check_render "one namespace, two replicas (leader election)" \
    "$crds Deployment PersistentVolumeClaim Role Role Role RoleBinding RoleBinding RoleBinding RunnerPool Service Service ServiceAccount ServiceAccount" \
    --set watchNamespace=ci --set replicaCount=2
DATA=pvc:my-claim check_render "an existing claim" \
    "$crds ClusterRole ClusterRoleBinding Deployment Role RoleBinding RunnerPool Service Service ServiceAccount ServiceAccount" \
    --set api.persistence.existingClaim=my-claim
DATA=emptydir check_render "an emptyDir, asked for" \
    "$crds ClusterRole ClusterRoleBinding Deployment Role RoleBinding RunnerPool Service Service ServiceAccount ServiceAccount" \
    --set api.persistence.emptyDir=true
shared=(--set api.metadata.existingSecret=sparkwing-pg --set api.objects.url=s3://sparkwing/state
    --set api.objects.existingSecret=sparkwing-s3 --set api.objects.endpoint=http://minio:9000 --set api.objects.allowHttp=true)
DATA=shared check_render "shared stores, the API in the operator" \
    "$crds ClusterRole ClusterRoleBinding Deployment Role RoleBinding RunnerPool Service Service ServiceAccount ServiceAccount" \
    "${shared[@]}"
DATA=shared API_REPLICAS=3 check_render "shared stores, three API replicas" \
    "$crds ClusterRole ClusterRoleBinding Deployment Deployment Role RoleBinding RunnerPool Service Service ServiceAccount ServiceAccount" \
    "${shared[@]}" --set api.replicas=3
echo "== helm template (API replicas without shared stores: refused)"
if "$helm_bin" template sparkwing "$chart" --set api.replicas=2 >/dev/null 2>&1; then
    echo "charts: api.replicas without the shared stores rendered" >&2
    exit 1
fi
DATA=pvc:sparkwing-data WEBHOOK=sparkwing-webhook:secret check_render "webhook secret from an existing Secret (default key)" \
    "$crds ClusterRole ClusterRoleBinding Deployment PersistentVolumeClaim Role RoleBinding RunnerPool Service Service ServiceAccount ServiceAccount" \
    --set api.webhook.existingSecret=sparkwing-webhook
DATA=pvc:sparkwing-data WEBHOOK=forge-hmac:hmac check_render "webhook secret under another key" \
    "$crds ClusterRole ClusterRoleBinding Deployment PersistentVolumeClaim Role RoleBinding RunnerPool Service Service ServiceAccount ServiceAccount" \
    --set api.webhook.existingSecret=forge-hmac --set api.webhook.secretKey=hmac
WEBHOOK=forge-hmac:hmac check_render "webhook secret set, API off: nothing rendered" \
    "$crds ClusterRole ClusterRoleBinding Deployment ServiceAccount" \
    --set defaultPool.enabled=false --set runner.serviceAccount.create=false --set metrics.service.enabled=false --set api.enabled=false \
    --set api.webhook.existingSecret=forge-hmac --set api.webhook.secretKey=hmac
echo "chart ok"
