//! The example pods under Pod Security "restricted", and the smoke-test pod end to end.
//!
//! - Every pod of `manifests/examples/` (the smoke-test Pod, and the pod templates of the
//!   Deployments) passes the Pod Security Standards' "restricted" profile as written **and** after
//!   the webhook's injection (`mutate` with the example M2MToken, the patch applied): the init
//!   container, the volume and the mounts the webhook adds keep a restricted pod restricted.
//!   `restricted_violations` is the profile's rules (Kubernetes 1.33) on a pod's JSON.
//! - `manifests/examples/smoke-test.yaml` runs the chart's image with `assume-role`, its args
//!   referring to the variables the webhook injects (`$(VAR)`, which Kubernetes expands from the
//!   container's environment). Expanded from the injected pod, with the token file replaced by a
//!   token from the IDaaS emulator and `--sts-endpoint` pointing at the STS emulator, the args
//!   make the real binary assume the example's role: exit 0 and the output
//!   docs/troubleshooting.md shows.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use idaas_projector::emulator::sts::{StsConfig, StsEmulator};
use idaas_projector::webhook::mutate::{
    self, AccountAnnotations, AccountLookup, MutateConfig, Mutation, Scope, TokenDefaults,
    TokenLookup,
};
use serde_json::{Value, json};

const SMOKE_TEST: &str = "manifests/examples/smoke-test.yaml";
/// The placeholder of the docs and examples for the chart's image, at this version.
const IMAGE: &str = concat!("REGISTRY/idaas-projector:", env!("CARGO_PKG_VERSION"));

// ---------------------------------------------------------------------------------------------
// Pod Security Standards, "restricted" (which includes "baseline").

/// Volume types "restricted" allows.
const RESTRICTED_VOLUMES: [&str; 8] = [
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// Every container of a pod: containers, init containers, ephemeral containers.
fn all_containers(spec: &Value) -> Vec<&Value> {
    ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .filter_map(|list| spec.get(*list).and_then(Value::as_array))
        .flatten()
        .collect()
}

/// What keeps `pod` (its JSON) from passing "restricted"; empty when it passes.
fn restricted_violations(pod: &Value) -> Vec<String> {
    let spec = &pod["spec"];
    let psc = &spec["securityContext"];
    let mut bad = Vec::new();
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        if spec[host] == json!(true) {
            bad.push(format!("spec.{host} is true"));
        }
    }
    for v in spec["volumes"].as_array().into_iter().flatten() {
        let kind = v.as_object().and_then(|o| o.keys().find(|k| *k != "name"));
        if !kind.is_some_and(|k| RESTRICTED_VOLUMES.contains(&k.as_str())) {
            bad.push(format!("volume {} is of type {kind:?}", v["name"]));
        }
    }
    if psc["runAsUser"] == json!(0) {
        bad.push("the pod's runAsUser is 0".to_owned());
    }
    if psc["sysctls"].as_array().is_some_and(|s| !s.is_empty()) {
        bad.push("the pod sets sysctls".to_owned());
    }
    let seccomp_ok = |sc: &Value| {
        matches!(
            sc["seccompProfile"]["type"].as_str(),
            Some("RuntimeDefault" | "Localhost")
        )
    };
    for c in all_containers(spec) {
        let sc = &c["securityContext"];
        let name = c["name"].as_str().unwrap_or("?");
        bad.extend(container_violations(name, c, sc));
        let non_root = match sc["runAsNonRoot"].as_bool() {
            Some(v) => v,
            None => psc["runAsNonRoot"] == json!(true),
        };
        if !non_root {
            bad.push(format!("container {name}: runAsNonRoot is not true"));
        }
        let seccomp = match sc["seccompProfile"]["type"].as_str() {
            Some(_) => seccomp_ok(sc),
            None => seccomp_ok(psc),
        };
        if !seccomp {
            bad.push(format!(
                "container {name}: no RuntimeDefault or Localhost seccompProfile"
            ));
        }
    }
    bad
}

/// The rules each container must meet on its own.
fn container_violations(name: &str, c: &Value, sc: &Value) -> Vec<String> {
    let mut bad = Vec::new();
    let mut fail = |what: &str| bad.push(format!("container {name}: {what}"));
    if sc["privileged"] == json!(true) {
        fail("privileged");
    }
    if sc["allowPrivilegeEscalation"] != json!(false) {
        fail("allowPrivilegeEscalation is not false");
    }
    if sc["runAsUser"] == json!(0) {
        fail("runAsUser is 0");
    }
    let drop = sc["capabilities"]["drop"].as_array();
    if !drop.is_some_and(|d| d.contains(&json!("ALL"))) {
        fail("capabilities do not drop ALL");
    }
    let add = sc["capabilities"]["add"].as_array().into_iter().flatten();
    if add.into_iter().any(|cap| cap != "NET_BIND_SERVICE") {
        fail("adds a capability other than NET_BIND_SERVICE");
    }
    if sc["procMount"].as_str().is_some_and(|p| p != "Default") {
        fail("procMount is not Default");
    }
    if sc["windowsOptions"]["hostProcess"] == json!(true) {
        fail("hostProcess");
    }
    let ports = c["ports"].as_array().into_iter().flatten();
    if ports
        .into_iter()
        .any(|p| p["hostPort"].as_i64().unwrap_or(0) != 0)
    {
        fail("a hostPort");
    }
    bad
}

#[test]
fn the_profile_check_finds_what_restricted_refuses() {
    let ok = json!({"spec": {
        "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "a", "securityContext": {
            "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}],
        "volumes": [{"name": "t", "projected": {"sources": []}}]
    }});
    assert_eq!(restricted_violations(&ok), Vec::<String>::new());
    let breaks: [(&str, Value); 7] = [
        ("/spec/hostNetwork", json!(true)),
        (
            "/spec/volumes/0",
            json!({"name": "h", "hostPath": {"path": "/"}}),
        ),
        ("/spec/securityContext/runAsNonRoot", json!(false)),
        (
            "/spec/securityContext/seccompProfile/type",
            json!("Unconfined"),
        ),
        (
            "/spec/containers/0/securityContext/allowPrivilegeEscalation",
            json!(true),
        ),
        (
            "/spec/containers/0/securityContext/capabilities/drop",
            json!([]),
        ),
        ("/spec/containers/0/securityContext/runAsUser", json!(0)),
    ];
    for (path, value) in breaks {
        let mut pod = ok.clone();
        let (parent, key) = path.rsplit_once('/').unwrap();
        match pod.pointer_mut(parent) {
            Some(Value::Array(items)) => items[key.parse::<usize>().unwrap()] = value,
            Some(Value::Object(fields)) => drop(fields.insert(key.to_owned(), value)),
            _ => panic!("{parent} is not in the pod"),
        }
        assert!(!restricted_violations(&pod).is_empty(), "{path} passed");
    }
}

// ---------------------------------------------------------------------------------------------
// The examples, before and after injection.

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// The YAML documents of an example file.
fn documents(path: &str) -> Vec<Value> {
    repo_file(path)
        .split("\n---")
        .map(|doc| serde_saphyr::from_str::<Value>(doc).unwrap_or_else(|e| panic!("{path}: {e}")))
        .filter(|doc| !doc.is_null())
        .collect()
}

fn of_kind(docs: &[Value], kind: &str) -> Vec<Value> {
    docs.iter().filter(|d| d["kind"] == kind).cloned().collect()
}

/// The defaults the webhook takes from an M2MToken object.
fn token_defaults(m2m_token: &Value) -> TokenDefaults {
    let spec = &m2m_token["spec"];
    let s = |k: &str| spec[k].as_str().map(str::to_owned);
    TokenDefaults {
        secret_name: s("secretName")
            .or_else(|| m2m_token["metadata"]["name"].as_str().map(str::to_owned))
            .expect("an M2MToken has a name"),
        role_arn: s("roleArn"),
        oidc_provider_arn: s("oidcProviderArn"),
    }
}

fn config() -> MutateConfig {
    MutateConfig {
        init_image: IMAGE.to_owned(),
        ..MutateConfig::default()
    }
}

/// The pod after the webhook's patch, and the warnings.
fn inject(pod: &Value, scope: &Scope<'_>, token: &TokenDefaults) -> (Value, Vec<String>) {
    let answer = mutate::mutate(pod, scope, &config(), |_| TokenLookup::Found(token.clone()));
    let Ok(Mutation::Injected { patch, warnings }) = answer else {
        panic!("the pod is not injected: {answer:?}");
    };
    let mut out = pod.clone();
    json_patch::patch(&mut out, &patch).expect("the patch applies");
    (out, warnings)
}

/// A Deployment's pod template as the pod the ReplicaSet creates.
fn pod_of(deployment: &Value) -> Value {
    let template = &deployment["spec"]["template"];
    let mut metadata = template["metadata"].clone();
    metadata["namespace"] = deployment["metadata"]["namespace"].clone();
    metadata["generateName"] = json!(format!(
        "{}-",
        deployment["metadata"]["name"].as_str().unwrap()
    ));
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]})
}

fn assert_restricted(what: &str, pod: &Value) {
    let bad = restricted_violations(pod);
    assert!(
        bad.is_empty(),
        "{what} is not restricted: {bad:#?}\n{pod:#}"
    );
}

#[test]
fn the_smoke_test_pod_is_restricted_before_and_after_injection() {
    let pod = documents(SMOKE_TEST).remove(0);
    assert_eq!(pod["kind"], "Pod");
    assert_eq!(pod["metadata"]["namespace"], "shop");
    assert_eq!(pod["spec"]["restartPolicy"], "Never");
    assert_eq!(pod["spec"]["containers"][0]["image"], IMAGE);
    assert_restricted("smoke-test.yaml as written", &pod);

    let token = &of_kind(&documents("manifests/examples/m2mtoken.yaml"), "M2MToken")[0];
    assert_eq!(
        pod["metadata"]["annotations"]["idaas-projector.io/m2m-token"],
        token["metadata"]["name"]
    );
    let (injected, warnings) = inject(&pod, &Scope::pod_only(Some("shop")), &token_defaults(token));
    assert_eq!(warnings, Vec::<String>::new());
    assert_eq!(
        injected["spec"]["initContainers"][0]["name"],
        mutate::INIT_CONTAINER_NAME
    );
    assert_restricted("smoke-test.yaml after injection", &injected);
}

#[test]
fn the_example_workloads_are_restricted_before_and_after_injection() {
    let token =
        token_defaults(&of_kind(&documents("manifests/examples/m2mtoken.yaml"), "M2MToken")[0]);
    let deployment = &of_kind(
        &documents("manifests/examples/deployment.yaml"),
        "Deployment",
    )[0];
    let pod = pod_of(deployment);
    assert_restricted("deployment.yaml's pod", &pod);
    let (injected, _) = inject(&pod, &Scope::pod_only(Some("shop")), &token);
    assert_restricted("deployment.yaml's pod after injection", &injected);

    // Opted in by its ServiceAccount, in a labelled namespace.
    let docs = documents("manifests/examples/serviceaccount-opt-in.yaml");
    let account = &of_kind(&docs, "ServiceAccount")[0];
    let annotations: BTreeMap<String, String> =
        serde_json::from_value(account["metadata"]["annotations"].clone()).unwrap();
    let lookup = AccountLookup::Found(AccountAnnotations {
        name: account["metadata"]["name"].as_str().unwrap().to_owned(),
        annotations,
    });
    let scope = Scope {
        namespace: account["metadata"]["namespace"].as_str(),
        namespace_enabled: true,
        service_account: &lookup,
    };
    // The M2MToken it names is m2mtoken.yaml's.
    let token =
        token_defaults(&of_kind(&documents("manifests/examples/m2mtoken.yaml"), "M2MToken")[0]);
    let pod = pod_of(&of_kind(&docs, "Deployment")[0]);
    assert_restricted("serviceaccount-opt-in.yaml's pod", &pod);
    let (injected, _) = inject(&pod, &scope, &token);
    assert_restricted(
        "serviceaccount-opt-in.yaml's pod after injection",
        &injected,
    );
}

// ---------------------------------------------------------------------------------------------
// The smoke test's args, as Kubernetes expands them, against the emulators.

/// `$(VAR)` replaced by the container's variable, as the kubelet does (`$$` escapes a `$`; a
/// reference to an unset variable stays as written).
fn expand(arg: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = arg;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(after) = rest.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some((name, after)) = rest.strip_prefix("$(").and_then(|r| r.split_once(')'))
            && let Some(value) = env.get(name)
        {
            out.push_str(value);
            rest = after;
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out + rest
}

#[test]
fn expand_follows_kubernetes() {
    let env = BTreeMap::from([("A".to_owned(), "x".to_owned())]);
    assert_eq!(expand("$(A)", &env), "x");
    assert_eq!(expand("--f=$(A)/$(A)", &env), "--f=x/x");
    assert_eq!(expand("$$(A)", &env), "$(A)");
    assert_eq!(expand("$(B)", &env), "$(B)");
    assert_eq!(expand("$", &env), "$");
}

/// A container's variables (those with a `value`) and its args.
fn env_and_args(container: &Value) -> (BTreeMap<String, String>, Vec<String>) {
    let env = container["env"].as_array().expect("injected variables");
    let env = env
        .iter()
        .filter_map(|v| {
            Some((
                v["name"].as_str()?.to_owned(),
                v["value"].as_str()?.to_owned(),
            ))
        })
        .collect();
    let args = container["args"].as_array().expect("args");
    let args = args
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    (env, args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_smoke_test_assumes_the_role_with_the_injected_variables() {
    let pod = documents(SMOKE_TEST).remove(0);
    let token = &of_kind(&documents("manifests/examples/m2mtoken.yaml"), "M2MToken")[0];
    let (injected, _) = inject(&pod, &Scope::pod_only(Some("shop")), &token_defaults(token));
    let (mut env, args) = env_and_args(&injected["spec"]["containers"][0]);
    assert_eq!(
        args[0], "assume-role",
        "the image's entrypoint is the binary"
    );
    for arg in &args {
        let expanded = expand(arg, &env);
        assert!(
            !expanded.contains("$("),
            "{arg} names a variable the webhook does not inject"
        );
    }

    // The emulators stand in for IDaaS and RAM; the pod's token file for the mounted one.
    let audience = token["spec"]["audience"].as_str().unwrap();
    let idaas =
        idaas_projector::testing::emulator("app_xxx", "smoke", audience, Duration::from_secs(600))
            .await;
    let sts = StsEmulator::start(StsConfig {
        issuer: idaas.issuer(),
        jwks_uri: idaas.jwks_uri(),
        client_ids: vec![audience.to_owned()],
        ..StsConfig::default()
    })
    .await
    .unwrap();
    assert_eq!(
        Some(sts.oidc_provider_arn().as_str()),
        token["spec"]["oidcProviderArn"].as_str()
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(
        &file,
        idaas_projector::testing::emulator_token(&idaas).await,
    )
    .unwrap();
    env.insert(
        mutate::env::OIDC_TOKEN_FILE.to_owned(),
        file.display().to_string(),
    );

    let mut command = Command::new(env!("CARGO_BIN_EXE_idaas-projector"));
    command
        .args(args.iter().map(|a| expand(a, &env)))
        .args(["--sts-endpoint", &sts.endpoint()])
        .env_clear();
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "assumed role:    acs:ram::1234567890123456:assumed-role/payments/shop.smoke-test",
        "AccessKeyId:     STS.NT***",
        "token subject:   app_xxx",
        "token client ID: api://payments",
        "(AccessKeySecret and SecurityToken hidden; --show-secrets prints them)",
    ] {
        assert!(stdout.contains(line), "no {line:?} in\n{stdout}");
    }
    assert_eq!(sts.successes(), 1);
}
