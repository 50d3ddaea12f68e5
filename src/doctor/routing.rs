//! Would the API server send this pod to the webhook? The entries of the cluster's
//! MutatingWebhookConfigurations named `*.idaas-projector.io`, their `caBundle`, and their
//! `rules`, `namespaceSelector` and `objectSelector` evaluated against the namespace's and the
//! pod's labels (kube's [`Selector`]: `matchLabels` and `matchExpressions` with `In`, `NotIn`,
//! `Exists`, `DoesNotExist`). `matchConditions` are CEL, which the API server evaluates: they
//! are reported, and the dry run is their proof. Pure.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Expression, Selector, SelectorExt};
use serde_json::Value;

use super::report::Step;
use crate::webhook::annotations::{DISABLED, ENABLED, INJECTION_LABEL};

/// The suffix of the names of the chart's webhook entries.
pub const ENTRY_SUFFIX: &str = ".idaas-projector.io";
/// The path of the namespace entry: pods of labelled namespaces, whose ServiceAccount counts.
pub const NAMESPACE_PATH: &str = "/mutate/namespace";
/// The label the API server sets on every namespace, with its name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// The annotations with which cert-manager's CA injector fills `caBundle`.
pub const CERT_MANAGER_INJECT: [&str; 3] = [
    "cert-manager.io/inject-ca-from",
    "cert-manager.io/inject-ca-from-secret",
    "cert-manager.io/inject-apiserver-ca",
];

pub type Labels = BTreeMap<String, String>;

/// One webhook entry of idaas-projector.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The MutatingWebhookConfiguration's name.
    pub configuration: String,
    /// The entry's name (`m2m-token.idaas-projector.io`, ...).
    pub name: String,
    /// The path it calls (`/mutate`, `/mutate/namespace`).
    pub path: String,
    /// `namespace/name` of the webhook's Service, when it calls one.
    pub service: Option<String>,
    /// Calls a URL rather than a Service (an empty `caBundle` then means the system roots).
    pub by_url: bool,
    pub ca_bundle: bool,
    /// The cert-manager annotation of the configuration that fills `caBundle`, if any.
    pub cert_manager: Option<String>,
    pub failure_policy: String,
    /// Its rules cover the creation of pods.
    pub pod_create: bool,
    pub namespace_selector: Option<Value>,
    pub object_selector: Option<Value>,
    /// `(name, expression)` of each match condition.
    pub match_conditions: Vec<(String, String)>,
}

impl Entry {
    /// It calls the namespace path: the webhook treats the pod as in a labelled namespace.
    pub fn via_namespace(&self) -> bool {
        self.path.trim_end_matches('/') == NAMESPACE_PATH
    }
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// The idaas-projector entries of these MutatingWebhookConfigurations, in order.
pub fn entries(configurations: &[Value]) -> Vec<Entry> {
    let mut out = Vec::new();
    for c in configurations {
        let configuration = str_at(c, "/metadata/name").unwrap_or("").to_owned();
        let cert_manager = CERT_MANAGER_INJECT.iter().find_map(|a| {
            c.pointer("/metadata/annotations")
                .and_then(|m| m.get(*a))
                .and_then(Value::as_str)
                .map(|v| format!("{a}: {v}"))
        });
        let hooks = c.get("webhooks").and_then(Value::as_array);
        for w in hooks.into_iter().flatten() {
            let name = str_at(w, "/name").unwrap_or("");
            if !name.ends_with(ENTRY_SUFFIX) {
                continue;
            }
            out.push(entry(w, &configuration, name, cert_manager.clone()));
        }
    }
    out
}

fn entry(w: &Value, configuration: &str, name: &str, cert_manager: Option<String>) -> Entry {
    let url = str_at(w, "/clientConfig/url");
    let path = match url {
        Some(u) => url::Url::parse(u)
            .map(|u| u.path().to_owned())
            .unwrap_or_default(),
        None => str_at(w, "/clientConfig/service/path")
            .unwrap_or("/")
            .to_owned(),
    };
    let service = match (
        str_at(w, "/clientConfig/service/namespace"),
        str_at(w, "/clientConfig/service/name"),
    ) {
        (Some(ns), Some(n)) => Some(format!("{ns}/{n}")),
        _ => None,
    };
    let match_conditions = w
        .get("matchConditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|m| {
            let s = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            (s("name"), s("expression"))
        })
        .collect();
    Entry {
        configuration: configuration.to_owned(),
        name: name.to_owned(),
        path,
        service,
        by_url: url.is_some(),
        ca_bundle: str_at(w, "/clientConfig/caBundle").is_some_and(|b| !b.is_empty()),
        cert_manager,
        failure_policy: str_at(w, "/failurePolicy").unwrap_or("Fail").to_owned(),
        pod_create: covers_pod_create(w.get("rules")),
        namespace_selector: w.get("namespaceSelector").cloned(),
        object_selector: w.get("objectSelector").cloned(),
        match_conditions,
    }
}

/// Whether some rule covers `CREATE` of `pods` in the core group `v1`.
fn covers_pod_create(rules: Option<&Value>) -> bool {
    let has = |rule: &Value, key: &str, want: &str| {
        rule.get(key)
            .and_then(Value::as_array)
            .is_some_and(|l| l.iter().any(|v| v == want || v == "*"))
    };
    rules
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|r| {
            has(r, "apiGroups", "")
                && has(r, "apiVersions", "v1")
                && has(r, "operations", "CREATE")
                && has(r, "resources", "pods")
        })
}

/// An object's labels.
pub fn labels_of(object: &Value) -> Labels {
    object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// A namespace's labels, with the one the API server always sets.
pub fn namespace_labels(namespace: &Value, name: &str) -> Labels {
    let mut labels = labels_of(namespace);
    labels
        .entry(NAMESPACE_NAME_LABEL.to_owned())
        .or_insert_with(|| name.to_owned());
    labels
}

/// Whether a label selector (absent: everything) selects these labels; `Err` names the
/// expressions that do not hold, or why the selector cannot be read.
pub fn selects(selector: Option<&Value>, labels: &Labels) -> Result<(), String> {
    let Some(raw) = selector.filter(|s| !s.is_null()) else {
        return Ok(());
    };
    let parsed: LabelSelector = serde_json::from_value(raw.clone())
        .map_err(|e| format!("the selector cannot be read: {e}"))?;
    let selector = Selector::try_from(parsed).map_err(|e| e.to_string())?;
    let failing: Vec<String> = selector
        .into_iter()
        .filter(|e: &Expression| !e.matches(labels))
        .map(|e| e.to_string())
        .collect();
    if failing.is_empty() {
        Ok(())
    } else {
        Err(failing.join(", "))
    }
}

/// The step `webhook-configuration`: the entries exist and the API server can verify the
/// webhook's certificate.
pub fn configuration_step(entries: &[Entry]) -> Step {
    const ID: &str = "webhook-configuration";
    if entries.is_empty() {
        return Step::fail(
            ID,
            format!(
                "no MutatingWebhookConfiguration has an entry named *{ENTRY_SUFFIX}: the API \
                 server sends no pod to the webhook, so no pod is injected"
            ),
            "install or upgrade the chart (helm upgrade --install idaas-projector ...); \
             `kubectl get mutatingwebhookconfigurations` should list its configuration",
        );
    }
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    let mut configurations: Vec<&str> = entries.iter().map(|e| e.configuration.as_str()).collect();
    configurations.dedup();
    let found = format!(
        "MutatingWebhookConfiguration {}: entries {}",
        configurations.join(", "),
        names.join(", ")
    );
    let unverifiable: Vec<&Entry> = entries
        .iter()
        .filter(|e| !e.ca_bundle && !e.by_url)
        .collect();
    if unverifiable.is_empty() {
        return Step::pass(ID, format!("{found}; caBundle set"));
    }
    let empty: Vec<&str> = unverifiable.iter().map(|e| e.name.as_str()).collect();
    let service = unverifiable
        .iter()
        .find_map(|e| e.service.clone())
        .unwrap_or_else(|| "<namespace>/<service>".to_owned());
    let (ns, svc) = service.split_once('/').unwrap_or(("<namespace>", &service));
    if let Some(annotation) = unverifiable.iter().find_map(|e| e.cert_manager.clone()) {
        return Step::warn(
            ID,
            format!(
                "{found}; caBundle of {} is still empty, and cert-manager's CA injector is to \
                 fill it ({annotation})",
                empty.join(", ")
            ),
            "check that cert-manager (with its cainjector) runs and that the Certificate is \
             Ready: kubectl -n <namespace> get certificate",
        );
    }
    Step::fail(
        ID,
        format!(
            "{found}; caBundle of {} is empty: the API server cannot verify the webhook's \
             certificate, so every call fails (failurePolicy Fail refuses the pods, Ignore \
             admits them uninjected)",
            empty.join(", ")
        ),
        format!(
            "with certificates.mode self the webhook writes caBundle when it starts: check that \
             it runs (kubectl -n {ns} get pods; kubectl -n {ns} logs deploy/{svc}); with \
             cert-manager, annotate the configuration cert-manager.io/inject-ca-from; with \
             files, set certificates.caBundle"
        ),
    )
}

/// Which entry sends the pod, as far as selectors tell (the first that selects it).
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub entry: Entry,
}

/// The step `webhook-routing`: which entry's rules and selectors select the pod.
/// `namespace_labels` is `None` when the namespace could not be read.
pub fn routing_step(
    entries: &[Entry],
    namespace: &str,
    namespace_labels: Option<&Labels>,
    pod_labels: &Labels,
) -> (Step, Option<Route>) {
    const ID: &str = "webhook-routing";
    if entries.is_empty() {
        return (
            Step::skip(
                ID,
                "no webhook entry to evaluate (see webhook-configuration)",
            ),
            None,
        );
    }
    let mut matched = Vec::new();
    let mut why_not = Vec::new();
    for e in entries {
        let ns = match namespace_labels {
            Some(labels) => selects(e.namespace_selector.as_ref(), labels).map_err(|f| {
                format!("namespaceSelector does not select namespace {namespace} ({f})")
            }),
            None => Ok(()),
        };
        let verdict = if e.pod_create {
            ns.and_then(|()| {
                selects(e.object_selector.as_ref(), pod_labels)
                    .map_err(|f| format!("objectSelector does not select the pod's labels ({f})"))
            })
        } else {
            Err("its rules do not cover CREATE of pods".to_owned())
        };
        match verdict {
            Ok(()) => matched.push(e),
            Err(why) => why_not.push(format!("{}: {why}", e.name)),
        }
    }
    let Some(first) = matched.first() else {
        let fix = if pod_labels.get(INJECTION_LABEL).map(String::as_str) == Some(DISABLED) {
            format!(
                "the pod is labelled {INJECTION_LABEL}: {DISABLED}, its opt-out: remove that \
                 label (from the pod template) to have it injected"
            )
        } else {
            format!(
                "label the namespace (kubectl label namespace {namespace} \
                 {INJECTION_LABEL}={ENABLED}: every pod of it is sent, and ServiceAccounts can \
                 opt pods in), or in the chart's objectSelector mode label the pod \
                 {INJECTION_LABEL}: {ENABLED}; kube-system, the chart's own namespace and \
                 webhook.excludeNamespaces are never sent"
            )
        };
        return (
            Step::fail(
                ID,
                format!(
                    "no entry sends this pod to the webhook:\n{}",
                    why_not.join("\n")
                ),
                fix,
            ),
            None,
        );
    };
    // Without the namespace's labels every entry seems to select the pod: none is known.
    let route = namespace_labels.map(|_| Route {
        entry: (*first).clone(),
    });
    (
        routing_pass(first, namespace, namespace_labels.is_some()),
        route,
    )
}

fn routing_pass(e: &Entry, namespace: &str, namespace_known: bool) -> Step {
    const ID: &str = "webhook-routing";
    let mut detail = format!(
        "entry {} (path {}, failurePolicy {}) selects the pod",
        e.name, e.path, e.failure_policy
    );
    if e.failure_policy == "Ignore" {
        detail.push_str(
            "; with failurePolicy Ignore a pod the webhook cannot answer is admitted uninjected",
        );
    }
    if !e.match_conditions.is_empty() {
        let conditions: Vec<String> = e
            .match_conditions
            .iter()
            .map(|(n, x)| format!("{n}: {x}"))
            .collect();
        detail.push_str(&format!(
            "\nits matchConditions are CEL that the API server evaluates ({}); the dry run \
             shows whether it called the webhook",
            conditions.join("; ")
        ));
    }
    if namespace_known {
        Step::pass(ID, detail)
    } else {
        Step::warn(
            ID,
            format!(
                "{detail}\nthe namespaceSelector was not evaluated: namespace {namespace} \
                 could not be read"
            ),
            "grant get on namespaces to check the namespaceSelector",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chart_configuration(ca_bundle: &str) -> Value {
        let rules = json!([{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
            "resources": ["pods"], "scope": "Namespaced"}]);
        let ns_selector = |op: &str| {
            json!({"matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", "idaas-projector"]},
                {"key": "idaas-projector.io/injection", "operator": op, "values": ["enabled"]}]})
        };
        let not_disabled = json!({"matchExpressions": [
            {"key": "idaas-projector.io/injection", "operator": "NotIn", "values": ["disabled"]}]});
        let client = |path: &str| {
            json!({"service": {"namespace": "idaas-projector", "name": "idaas-projector", "path": path, "port": 443},
                "caBundle": ca_bundle})
        };
        json!({"metadata": {"name": "idaas-projector"}, "webhooks": [
            {"name": "m2m-token.idaas-projector.io", "clientConfig": client("/mutate"), "rules": rules,
             "failurePolicy": "Fail", "namespaceSelector": ns_selector("NotIn"), "objectSelector": not_disabled,
             "matchConditions": [{"name": "has-m2m-token-annotation", "expression": "has(object.metadata.annotations)"}]},
            {"name": "namespace.idaas-projector.io", "clientConfig": client("/mutate/namespace"), "rules": rules,
             "failurePolicy": "Fail", "namespaceSelector": ns_selector("In"), "objectSelector": not_disabled},
            {"name": "other.example.com", "clientConfig": client("/x"), "rules": rules}
        ]})
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn reads_the_chart_entries() {
        let e = entries(&[chart_configuration("Y2E=")]);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].path, "/mutate");
        assert!(!e[0].via_namespace() && e[1].via_namespace());
        assert!(e[0].pod_create && e[0].ca_bundle);
        assert_eq!(
            e[0].service.as_deref(),
            Some("idaas-projector/idaas-projector")
        );
        assert_eq!(e[0].match_conditions.len(), 1);
        assert_eq!(
            configuration_step(&e).result,
            super::super::report::Outcome::Pass
        );
    }

    #[test]
    fn empty_ca_bundle_fails_unless_cert_manager_fills_it() {
        use super::super::report::Outcome;
        let mut c = chart_configuration("");
        assert_eq!(
            configuration_step(&entries(&[c.clone()])).result,
            Outcome::Fail
        );
        c["metadata"]["annotations"] =
            json!({"cert-manager.io/inject-ca-from": "idaas-projector/idaas-projector-tls"});
        assert_eq!(configuration_step(&entries(&[c])).result, Outcome::Warn);
        assert_eq!(configuration_step(&[]).result, Outcome::Fail);
    }

    #[test]
    fn selectors() {
        let enabled = labels(&[("idaas-projector.io/injection", "enabled")]);
        let sel = json!({"matchLabels": {"idaas-projector.io/injection": "enabled"},
            "matchExpressions": [{"key": "tier", "operator": "Exists"}, {"key": "legacy", "operator": "DoesNotExist"},
                {"key": "zone", "operator": "In", "values": ["a", "b"]}]});
        let mut l = enabled.clone();
        l.insert("tier".into(), "web".into());
        l.insert("zone".into(), "a".into());
        assert_eq!(selects(Some(&sel), &l), Ok(()));
        l.insert("legacy".into(), "x".into());
        l.insert("zone".into(), "c".into());
        let e = selects(Some(&sel), &l).unwrap_err();
        assert!(e.contains("!legacy") && e.contains("zone in (a,b)"), "{e}");
        assert_eq!(selects(None, &Labels::new()), Ok(()));
        assert_eq!(selects(Some(&json!({})), &Labels::new()), Ok(()));
        assert!(
            selects(
                Some(&json!({"matchExpressions": [{"key": "a", "operator": "Bad"}]})),
                &l
            )
            .is_err()
        );
    }

    #[test]
    fn routes_by_namespace_label_and_opt_out() {
        use super::super::report::Outcome;
        let e = entries(&[chart_configuration("Y2E=")]);
        let plain = namespace_labels(&json!({}), "shop");
        let (step, route) = routing_step(&e, "shop", Some(&plain), &Labels::new());
        assert_eq!(step.result, Outcome::Pass);
        assert_eq!(route.unwrap().entry.name, "m2m-token.idaas-projector.io");
        assert!(step.detail.contains("matchConditions"));

        let labelled = namespace_labels(
            &json!({"metadata": {"labels": {"idaas-projector.io/injection": "enabled"}}}),
            "shop",
        );
        let (_, route) = routing_step(&e, "shop", Some(&labelled), &Labels::new());
        assert!(route.unwrap().entry.via_namespace());

        let out = labels(&[("idaas-projector.io/injection", "disabled")]);
        let (step, route) = routing_step(&e, "shop", Some(&plain), &out);
        assert_eq!((step.result, route), (Outcome::Fail, None));
        assert!(step.fix.unwrap().contains("opt-out"));

        let system = namespace_labels(&json!({}), "kube-system");
        let (step, _) = routing_step(&e, "kube-system", Some(&system), &Labels::new());
        assert_eq!(step.result, Outcome::Fail);
        assert!(
            step.detail
                .contains("namespaceSelector does not select namespace kube-system")
        );

        let (step, route) = routing_step(&e, "shop", None, &Labels::new());
        assert_eq!(step.result, Outcome::Warn);
        assert!(route.is_none());
    }
}
