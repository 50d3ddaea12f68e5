//! The pods `doctor` reasons about, as raw JSON like the webhook sees them: the pod a workload
//! would create from its template, the copy of a running pod that the dry run creates, and
//! what a pod carries from the webhook (read back into the webhook's own `Injection`, whose
//! hash is the `idaas-projector.io/injected` annotation). Pure.

use serde_json::{Map, Value, json};

use super::report::{ContainerEnv, EnvVar, InitContainer, Injection as Summary};
use crate::webhook::annotations::INJECTED;
use crate::webhook::mutate::{
    INIT_CONTAINER_NAME, Injection, VOLUME_NAME, WINDOWS_TOKEN_FILE, env,
};

/// The variables the webhook sets, in the order it appends them.
pub const INJECTED_VARS: [&str; 6] = [
    env::ROLE_ARN,
    env::OIDC_PROVIDER_ARN,
    env::OIDC_TOKEN_FILE,
    env::ROLE_SESSION_NAME,
    env::STS_REGION,
    env::VPC_ENDPOINT_ENABLED,
];

/// The pod a workload creates from its template (found at the JSON pointer `template`): in
/// the workload's namespace, named from `generateName` `<workload>-`, with the template's
/// labels, annotations and spec.
pub fn from_template(
    workload: &Value,
    template: &str,
    namespace: &str,
    name: &str,
) -> Result<Value, String> {
    let t = workload
        .pointer(template)
        .filter(|t| t.is_object())
        .ok_or_else(|| format!("it has no pod template at {}", template.replace('/', ".")))?;
    let mut metadata = json!({"namespace": namespace, "generateName": format!("{name}-")});
    for key in ["labels", "annotations"] {
        if let Some(v) = t
            .pointer(&format!("/metadata/{key}"))
            .filter(|v| v.is_object())
        {
            metadata[key] = v.clone();
        }
    }
    Ok(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": t.get("spec").cloned().unwrap_or_else(|| json!({})),
    }))
}

/// Metadata the API server sets, which a create must not carry.
const SERVER_METADATA: [&str; 10] = [
    "name",
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "managedFields",
    "ownerReferences",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "selfLink",
];

/// The copy of a running pod that the dry run creates: the pod as it was before the webhook
/// injected it, so that the dry run shows what the webhook injects now (its volume, mounts,
/// variables and init container, with today's values and image) and whether it was called at
/// all (the token volume is there or not).
///
/// It is named from the pod's `generateName` (else `<name>-`, which derives the same session
/// name), and carries nothing that the API server or the scheduler set (resourceVersion, uid,
/// owner references, nodeName, ephemeral containers, status). Its annotations stay, the
/// `idaas-projector.io/injected` annotation included: the webhook recognises its own work.
/// From the spec go the token volume, the `idaas-projector-wait` init container, and in each
/// container that mounts the volume that mount and the webhook's variables (a value the user
/// had set on such a container goes with them).
pub fn dry_run_copy(pod: &Value) -> Value {
    let mut copy = pod.clone();
    if let Some(meta) = copy.get_mut("metadata").and_then(Value::as_object_mut) {
        let name = meta.get("name").and_then(Value::as_str).unwrap_or("pod");
        let prefix = match meta.get("generateName").and_then(Value::as_str) {
            Some(g) if !g.is_empty() => g.to_owned(),
            _ => format!("{name}-"),
        };
        for key in SERVER_METADATA {
            meta.remove(key);
        }
        meta.insert("generateName".into(), Value::String(prefix));
    }
    if let Some(obj) = copy.as_object_mut() {
        obj.remove("status");
    }
    if let Some(spec) = copy.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("nodeName");
        spec.remove("ephemeralContainers");
        uninject(spec);
    }
    copy
}

fn not_named(name: &'static str) -> impl Fn(&Value) -> bool {
    move |v| v.get("name").and_then(Value::as_str) != Some(name)
}

/// Takes the webhook's volume, init container, mounts and variables out of a pod spec.
fn uninject(spec: &mut Map<String, Value>) {
    if let Some(volumes) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
        volumes.retain(not_named(VOLUME_NAME));
    }
    if let Some(init) = spec.get_mut("initContainers").and_then(Value::as_array_mut) {
        init.retain(not_named(INIT_CONTAINER_NAME));
    }
    for list in ["initContainers", "containers"] {
        let containers = spec.get_mut(list).and_then(Value::as_array_mut);
        for c in containers.into_iter().flatten() {
            let Some(mounts) = c.get_mut("volumeMounts").and_then(Value::as_array_mut) else {
                continue;
            };
            let before = mounts.len();
            mounts.retain(not_named(VOLUME_NAME));
            if mounts.len() == before {
                continue;
            }
            if let Some(env) = c.get_mut("env").and_then(Value::as_array_mut) {
                env.retain(|v| {
                    let name = v.get("name").and_then(Value::as_str).unwrap_or("");
                    !INJECTED_VARS.contains(&name)
                });
            }
        }
    }
}

fn named<'a>(list: Option<&'a Value>, name: &str) -> Option<&'a Value> {
    list?
        .as_array()?
        .iter()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(name))
}

/// The webhook's annotation on a pod.
pub fn injected_annotation(pod: &Value) -> Option<&str> {
    pod.pointer("/metadata/annotations")
        .and_then(|a| a.get(INJECTED))
        .and_then(Value::as_str)
}

/// Whether the pod has the webhook's token volume.
pub fn has_token_volume(pod: &Value) -> bool {
    named(pod.pointer("/spec/volumes"), VOLUME_NAME).is_some()
}

/// The containers (the user's init containers first) that mount the token volume, with the
/// webhook's variables they hold.
fn reading_containers(pod: &Value) -> Vec<ContainerEnv> {
    let lists = ["/spec/initContainers", "/spec/containers"];
    let all = lists
        .iter()
        .filter_map(|p| pod.pointer(p).and_then(Value::as_array))
        .flatten();
    all.filter(|c| c.get("name").and_then(Value::as_str) != Some(INIT_CONTAINER_NAME))
        .filter(|c| named(c.get("volumeMounts"), VOLUME_NAME).is_some())
        .map(|c| ContainerEnv {
            name: c
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            env: INJECTED_VARS
                .iter()
                .filter_map(|var| {
                    let v = named(c.get("env"), var)?;
                    let value = match v.get("value").and_then(Value::as_str) {
                        Some(s) => s.to_owned(),
                        None => "(valueFrom)".to_owned(),
                    };
                    Some(EnvVar {
                        name: (*var).to_owned(),
                        value,
                    })
                })
                .collect(),
        })
        .collect()
}

/// What a pod carries from the webhook; `None` when it has no token volume.
pub fn summary(pod: &Value, source: &'static str, warnings: Vec<String>) -> Option<Summary> {
    let volume = named(pod.pointer("/spec/volumes"), VOLUME_NAME)?;
    let secret = volume
        .pointer("/projected/sources/0/secret/name")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let init_container = named(pod.pointer("/spec/initContainers"), INIT_CONTAINER_NAME).map(|c| {
        let args: Vec<&str> = c
            .get("args")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let timeout = args
            .iter()
            .position(|a| *a == "--timeout")
            .and_then(|i| args.get(i + 1))
            .map(|t| (*t).to_owned());
        InitContainer {
            image: c
                .get("image")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            timeout,
        }
    });
    Some(Summary {
        source,
        secret,
        annotation: injected_annotation(pod).map(str::to_owned),
        init_container,
        containers: reading_containers(pod),
        warnings,
    })
}

/// What the webhook injected into a pod, read back from the pod: the variables of the first
/// container that reads the token, the volume's Secret, the init container. `None` when the
/// pod does not carry a whole injection. Its [`Injection::hash`] equals the pod's annotation
/// when the pod holds what the webhook put there.
pub fn injection_of(pod: &Value) -> Option<Injection> {
    let s = summary(pod, "", Vec::new())?;
    let first = s.containers.first()?;
    let var = |name: &str| {
        first
            .env
            .iter()
            .find(|v| v.name == name)
            .map(|v| v.value.clone())
    };
    let token_file = var(env::OIDC_TOKEN_FILE)?;
    let token_wait = match &s.init_container {
        Some(init) => Some(crate::time::parse_duration(init.timeout.as_deref()?).ok()?),
        None => None,
    };
    Some(Injection {
        secret_name: s.secret?,
        role_arn: var(env::ROLE_ARN)?,
        oidc_provider_arn: var(env::OIDC_PROVIDER_ARN)?,
        role_session_name: var(env::ROLE_SESSION_NAME)?,
        sts_region: var(env::STS_REGION),
        sts_vpc_endpoint: var(env::VPC_ENDPOINT_ENABLED).as_deref() == Some("true"),
        token_wait,
        init_image: s.init_container.map(|i| i.image).unwrap_or_default(),
        windows: token_file == WINDOWS_TOKEN_FILE,
    })
}

/// What differs between two injections, one line per value (`name: then → now`).
pub fn differences(then: &Injection, now: &Injection) -> Vec<String> {
    let show = |v: Option<&str>| v.unwrap_or("(unset)").to_owned();
    let wait = |i: &Injection| {
        i.token_wait
            .map(|w| crate::time::format_duration(w).replace(' ', ""))
    };
    let pairs = [
        (
            env::ROLE_ARN,
            show(Some(&then.role_arn)),
            show(Some(&now.role_arn)),
        ),
        (
            env::OIDC_PROVIDER_ARN,
            show(Some(&then.oidc_provider_arn)),
            show(Some(&now.oidc_provider_arn)),
        ),
        (
            env::ROLE_SESSION_NAME,
            show(Some(&then.role_session_name)),
            show(Some(&now.role_session_name)),
        ),
        (
            env::STS_REGION,
            show(then.sts_region.as_deref()),
            show(now.sts_region.as_deref()),
        ),
        (
            env::VPC_ENDPOINT_ENABLED,
            then.sts_vpc_endpoint.to_string(),
            now.sts_vpc_endpoint.to_string(),
        ),
        ("Secret", then.secret_name.clone(), now.secret_name.clone()),
        (
            "token-wait",
            show(wait(then).as_deref()),
            show(wait(now).as_deref()),
        ),
    ];
    pairs
        .into_iter()
        .filter(|(_, a, b)| a != b)
        .map(|(name, a, b)| format!("{name}: {a} → {now_value}", now_value = b))
        .collect()
}

/// The controller owner of a pod: `(kind, name)`.
pub fn controller_owner(object: &Value) -> Option<(String, String)> {
    object
        .pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|o| o.get("controller").and_then(Value::as_bool) == Some(true))
        .map(|o| {
            let s = |k: &str| o.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            (s("kind"), s("name"))
        })
}

/// How to get a pod the webhook injects as it would now, given its controller (`owner`, and
/// for a ReplicaSet the Deployment that owns it, when known).
pub fn recreate_fix(
    namespace: &str,
    pod: &str,
    owner: Option<(&str, &str)>,
    deployment: Option<&str>,
) -> String {
    match (owner, deployment) {
        (Some(("ReplicaSet", _)), Some(d)) => {
            format!("restart its Deployment: kubectl -n {namespace} rollout restart deployment/{d}")
        }
        (Some(("ReplicaSet", rs)), None) => format!(
            "restart the Deployment of ReplicaSet {rs} (kubectl -n {namespace} rollout restart \
             deployment/<name>), or delete the pod: kubectl -n {namespace} delete pod {pod}"
        ),
        (Some((kind @ ("StatefulSet" | "DaemonSet"), name)), _) => format!(
            "restart its {kind}: kubectl -n {namespace} rollout restart {}/{name}",
            kind.to_lowercase()
        ),
        (Some((kind, name)), _) => format!(
            "delete the pod and let its {kind} {name} create it again: kubectl -n {namespace} \
             delete pod {pod}"
        ),
        (None, _) => format!(
            "delete the pod and create it again (kubectl -n {namespace} delete pod {pod}, then \
             apply its manifest)"
        ),
    }
}

/// Applies a JSON Patch to a copy of the pod (the local stand-in for the dry run).
pub fn patched(pod: &Value, patch: &json_patch::Patch) -> Option<Value> {
    let mut out = pod.clone();
    json_patch::patch(&mut out, patch).ok()?;
    Some(out)
}

/// The object `metadata.labels` or `metadata.annotations` of a pod, if any.
pub fn meta_map<'a>(pod: &'a Value, key: &str) -> Option<&'a Map<String, Value>> {
    pod.get("metadata")?.get(key)?.as_object()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::mutate::{
        MutateConfig, Mutation, Scope, TokenDefaults, TokenLookup, mutate,
    };

    fn deployment() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "uid": "u1"},
            "spec": {"template": {
                "metadata": {"labels": {"app": "web"}, "annotations": {"idaas-projector.io/m2m-token": "payments"}},
                "spec": {"containers": [{"name": "app", "image": "app:1"}]}}}})
    }

    fn inject(pod: &Value) -> Value {
        let lookup = |_: &str| {
            TokenLookup::Found(TokenDefaults {
                secret_name: "payments".into(),
                role_arn: Some("acs:ram::1:role/r".into()),
                oidc_provider_arn: Some("acs:ram::1:oidc-provider/p".into()),
            })
        };
        let Mutation::Injected { patch, .. } = mutate(
            pod,
            &Scope::pod_only(Some("shop")),
            &MutateConfig::default(),
            lookup,
        )
        .unwrap() else {
            panic!("not injected")
        };
        patched(pod, &patch).unwrap()
    }

    #[test]
    fn pods_from_templates() {
        let pod = from_template(&deployment(), "/spec/template", "shop", "web").unwrap();
        assert_eq!(pod["metadata"]["generateName"], "web-");
        assert_eq!(pod["metadata"]["namespace"], "shop");
        assert_eq!(pod["metadata"]["labels"]["app"], "web");
        assert_eq!(pod["spec"]["containers"][0]["name"], "app");
        assert!(pod["metadata"].get("name").is_none());
        let cron =
            json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}}}});
        let pod =
            from_template(&cron, "/spec/jobTemplate/spec/template", "shop", "nightly").unwrap();
        assert_eq!(pod["metadata"]["generateName"], "nightly-");
        assert!(pod["metadata"].get("labels").is_none());
        let e = from_template(&json!({"spec": {}}), "/spec/template", "shop", "x").unwrap_err();
        assert!(e.contains(".spec.template"), "{e}");
    }

    #[test]
    fn copies_of_running_pods() {
        let template = from_template(&deployment(), "/spec/template", "shop", "web").unwrap();
        let mut pod = inject(&template);
        pod["metadata"]["name"] = json!("web-abcde");
        pod["metadata"]["generateName"] = json!("web-");
        pod["metadata"]["uid"] = json!("u");
        pod["metadata"]["resourceVersion"] = json!("7");
        pod["metadata"]["ownerReferences"] =
            json!([{"kind": "ReplicaSet", "name": "web-1", "controller": true}]);
        pod["spec"]["nodeName"] = json!("node-1");
        pod["status"] = json!({"phase": "Running"});
        let copy = dry_run_copy(&pod);
        assert!(copy["metadata"].get("name").is_none());
        assert_eq!(copy["metadata"]["generateName"], "web-");
        for gone in ["uid", "resourceVersion", "ownerReferences"] {
            assert!(copy["metadata"].get(gone).is_none(), "{gone}");
        }
        assert!(copy.get("status").is_none() && copy["spec"].get("nodeName").is_none());
        assert_eq!(copy["spec"]["initContainers"], json!([]));
        assert_eq!(injected_annotation(&copy), injected_annotation(&pod));
        assert!(!has_token_volume(&copy));
        assert_eq!(copy["spec"]["containers"][0]["env"], json!([]));
        assert_eq!(copy["spec"]["containers"][0]["volumeMounts"], json!([]));
        // The webhook injects the copy again as it injected the pod.
        let again = inject(&copy);
        assert_eq!(
            again["spec"],
            pod["spec"]
                .as_object()
                .map(|s| {
                    let mut s = s.clone();
                    s.remove("nodeName");
                    Value::Object(s)
                })
                .unwrap()
        );

        let mut bare = pod.clone();
        bare["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("generateName");
        assert_eq!(
            dry_run_copy(&bare)["metadata"]["generateName"],
            "web-abcde-"
        );
        assert_eq!(
            controller_owner(&pod),
            Some(("ReplicaSet".to_owned(), "web-1".to_owned()))
        );
    }

    #[test]
    fn reads_an_injection_back() {
        let template = from_template(&deployment(), "/spec/template", "shop", "web").unwrap();
        let pod = inject(&template);
        let back = injection_of(&pod).unwrap();
        assert_eq!(Some(back.hash().as_str()), injected_annotation(&pod));
        assert_eq!(back.role_arn, "acs:ram::1:role/r");
        assert_eq!(back.role_session_name, "shop.web");
        let s = summary(&pod, "dry-run", vec![]).unwrap();
        assert_eq!(s.secret.as_deref(), Some("payments"));
        assert_eq!(s.containers[0].name, "app");
        assert_eq!(s.var(env::ROLE_ARN), Some("acs:ram::1:role/r"));
        assert_eq!(s.init_container.unwrap().timeout.as_deref(), Some("5m"));
        assert!(summary(&template, "dry-run", vec![]).is_none());

        let mut now = back.clone();
        now.role_arn = "acs:ram::1:role/other".into();
        assert_eq!(
            differences(&back, &now),
            ["ALIBABA_CLOUD_ROLE_ARN: acs:ram::1:role/r → acs:ram::1:role/other"]
        );
    }

    #[test]
    fn fixes_name_the_owner() {
        let f = recreate_fix(
            "shop",
            "web-abcde",
            Some(("ReplicaSet", "web-1")),
            Some("web"),
        );
        assert!(f.contains("rollout restart deployment/web"));
        let f = recreate_fix("shop", "db-0", Some(("StatefulSet", "db")), None);
        assert!(f.contains("rollout restart statefulset/db"));
        let f = recreate_fix("shop", "p", None, None);
        assert!(f.contains("delete pod p"));
    }
}
