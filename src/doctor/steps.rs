//! The findings of the steps that need no request of their own, from what was read: the
//! opt-in rule, the dry run's answer, the M2MToken, the Secret, and whether a running pod is
//! current. Pure. (Routing is in [`super::routing`]; the token checks and STS call out.)

use base64::Engine as _;
use secrecy::SecretString;
use serde_json::Value;

use super::api::{DryRun, Lookup};
use super::pod;
use super::report::Step;
use crate::crd::M2MToken;
use crate::webhook::annotations::{self, ENABLED, INJECTION_LABEL, M2M_TOKEN};
use crate::webhook::mutate::{Classified, Injection, PodState, TOKEN_KEY};

/// The pod's ServiceAccount as `doctor` read it.
#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    pub name: String,
    pub namespace: String,
    /// The namespace's pods are sent to the namespace entry: the ServiceAccount counts.
    pub namespace_enabled: bool,
    /// Why the namespace (its labels) could not be read, if it could not.
    pub namespace_unread: Option<String>,
    /// Why the ServiceAccount could not be read (403, another failure), when it was to be.
    pub unread: Option<String>,
}

/// The step `opt-in`: the webhook's own opt-in rule ([`crate::webhook::mutate::classify`]).
pub fn opt_in(pod: &Value, classified: &Classified, account: &Account) -> Step {
    const ID: &str = "opt-in";
    let labels = pod::meta_map(pod, "labels");
    if crate::webhook::mutate::opted_out(labels) {
        return Step::fail(
            ID,
            format!(
                "the pod is labelled {INJECTION_LABEL}: disabled, its opt-out, which wins over \
                 every opt-in: the webhook never injects it"
            ),
            format!("remove the label {INJECTION_LABEL} from the pod (template)"),
        );
    }
    let via_pod = pod::meta_map(pod, "annotations").is_some_and(|a| a.contains_key(M2M_TOKEN));
    match (classified.state, &classified.m2m_token, &classified.refusal) {
        (PodState::NotOptedIn, _, _) => not_opted_in(account),
        (_, None, Some(refusal)) => Step::fail(
            ID,
            format!("the webhook refuses the pod's annotations: {refusal}"),
            "correct the annotation; docs/annotations.md gives each one's valid form",
        ),
        (_, Some(token), _) => {
            let how = if via_pod {
                format!("its annotation {M2M_TOKEN}")
            } else {
                format!(
                    "the {M2M_TOKEN} annotation of its ServiceAccount {} (the namespace is \
                     labelled {INJECTION_LABEL}: {ENABLED})",
                    account.name
                )
            };
            Step::pass(
                ID,
                format!("the pod opts in to M2MToken {token} through {how}"),
            )
        }
        (_, None, None) => not_opted_in(account),
    }
}

fn not_opted_in(account: &Account) -> Step {
    const ID: &str = "opt-in";
    let mut detail = format!("the pod does not opt in: it has no {M2M_TOKEN} annotation");
    let fix = format!(
        "annotate the pod (template) {M2M_TOKEN}: <M2MToken name>, or label the namespace \
         {INJECTION_LABEL}={ENABLED} and annotate its ServiceAccount {} with {M2M_TOKEN}",
        account.name
    );
    if let (false, Some(why)) = (account.namespace_enabled, &account.namespace_unread) {
        detail.push_str(&format!(
            "; namespace {} could not be read ({why}), so whether it is labelled \
             {INJECTION_LABEL}: {ENABLED}, where the annotations of its ServiceAccount {} count, \
             is not known here",
            account.namespace, account.name
        ));
        return Step::warn(ID, detail, "grant get on namespaces to check it");
    }
    if !account.namespace_enabled {
        detail.push_str(&format!(
            ", and the annotations of its ServiceAccount {} count only in a namespace labelled \
             {INJECTION_LABEL}: {ENABLED}",
            account.name
        ));
        return Step::fail(ID, detail, fix);
    }
    if let Some(why) = &account.unread {
        detail.push_str(&format!(
            "; its ServiceAccount {} could not be read ({why}), so whether it opts the pod in \
             is not known here",
            account.name
        ));
        return Step::warn(ID, detail, "grant get on serviceaccounts to check it");
    }
    detail.push_str(&format!(
        ", and its ServiceAccount {} has none (or does not exist)",
        account.name
    ));
    Step::fail(ID, detail, fix)
}

/// What the webhook's rules, applied here, say of the pod (when there was no dry run).
fn local_verdict(classified: &Classified) -> String {
    match &classified.refusal {
        Some(r) => format!("By the webhook's rules applied here it would refuse the pod: {r}"),
        None => "By the webhook's rules applied here it would inject the pod as shown below \
                 (with doctor's --default-* flags for the server's defaults)"
            .to_owned(),
    }
}

/// The step `dry-run`, from the API server's answer (`None`: not made, the pod does not opt
/// in).
pub fn dry_run(
    answer: Option<&DryRun>,
    namespace: &str,
    service: Option<&str>,
    classified: &Classified,
) -> Step {
    const ID: &str = "dry-run";
    let Some(answer) = answer else {
        return Step::skip(
            ID,
            "not made: the pod does not opt in, there is nothing to inject",
        );
    };
    let (ns, svc) = service
        .and_then(|s| s.split_once('/'))
        .unwrap_or(("<namespace>", "<service>"));
    match answer {
        DryRun::Admitted { pod, warnings } if pod::has_token_volume(pod) => {
            let what = "the API server ran admission (dryRun=All, nothing stored) and the \
                        webhook injected the pod (see Injection)";
            if warnings.is_empty() {
                Step::pass(ID, what)
            } else {
                Step::warn(
                    ID,
                    format!("{what}, with warnings:\n- {}", warnings.join("\n- ")),
                    "read the warnings: each names what to change",
                )
            }
        }
        DryRun::Admitted { .. } => Step::fail(
            ID,
            "the API server admitted the pod without injecting it: the webhook was not called \
             (a selector or matchCondition left it out), was not reachable with failurePolicy \
             Ignore, or does not read ServiceAccounts (--service-account-opt-in=false)",
            format!(
                "check the routing above, that the webhook runs (kubectl -n {ns} get \
                 pods,endpoints {svc}) and its logs (kubectl -n {ns} logs deploy/{svc})"
            ),
        ),
        DryRun::Forbidden(m) => Step::warn(
            ID,
            format!(
                "you may not create pods in {namespace} ({m}); the dry run needs create on pods \
                 and writes nothing. {}",
                local_verdict(classified)
            ),
            format!("grant create on pods in {namespace} to see the webhook's own answer"),
        ),
        DryRun::Denied(m) => Step::fail(
            ID,
            format!("the webhook refuses the pod: {m}"),
            "correct what the message names; docs/annotations.md gives each annotation's valid form",
        ),
        DryRun::Failed(m) if m.contains("failed calling webhook") => Step::fail(
            ID,
            format!("the API server could not call the webhook: {m}"),
            format!(
                "check that the webhook runs and its Service has endpoints (kubectl -n {ns} get \
                 pods,endpoints {svc}), its logs, and a NetworkPolicy that lets the API server in"
            ),
        ),
        DryRun::Failed(m) => Step::warn(
            ID,
            format!(
                "the dry run could not be made: {m}. {}",
                local_verdict(classified)
            ),
            "see the message",
        ),
    }
}

/// The step `m2m-token`: it exists and is Ready. `name`: the M2MToken the pod opts in to.
pub fn m2m_token(name: Option<&str>, namespace: &str, lookup: &Lookup<M2MToken>) -> Step {
    const ID: &str = "m2m-token";
    let Some(name) = name else {
        return Step::skip(ID, "the pod names no M2MToken");
    };
    let token = match lookup {
        Lookup::Found(t) => t,
        Lookup::NotFound => {
            return Step::fail(
                ID,
                format!(
                    "M2MToken {name} not found in namespace {namespace}. The webhook still \
                     admits and injects the pod (with a warning; the Secret is then taken to be \
                     named {name}), and its init container waits for the token until its \
                     token-wait runs out"
                ),
                format!(
                    "apply an M2MToken named {name} in {namespace} (docs/m2mtoken.md), or correct \
                     the {M2M_TOKEN} annotation"
                ),
            );
        }
        Lookup::Forbidden(m) => {
            return Step::warn(
                ID,
                format!("you may not read M2MToken {name} ({m}): not checked"),
                format!("grant get on m2mtokens in {namespace}"),
            );
        }
        Lookup::Failed(m) => {
            return Step::warn(
                ID,
                format!("M2MToken {name} could not be read: {m}"),
                "retry",
            );
        }
    };
    ready(token, name, namespace)
}

fn ready(token: &M2MToken, name: &str, namespace: &str) -> Step {
    const ID: &str = "m2m-token";
    let status = token.status.as_ref();
    let condition = status.and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    let describe = format!("kubectl -n {namespace} describe m2mtoken {name}");
    let Some(c) = condition else {
        return Step::fail(
            ID,
            format!(
                "M2MToken {name} has no Ready condition: the projector has not reconciled it \
                 (is it running, and does it watch namespace {namespace}?)"
            ),
            format!("check the projector's pods and logs, then {describe}"),
        );
    };
    if c.status != "True" {
        return Step::fail(
            ID,
            format!("M2MToken {name} is not Ready: {}: {}", c.reason, c.message),
            format!(
                "{describe} (its events RefreshFailed or TokenRejected say why); \
                 docs/troubleshooting.md explains each reason"
            ),
        );
    }
    let at = |t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        t.map_or_else(|| "-".to_owned(), |t| t.0.to_string())
    };
    let detail = format!(
        "M2MToken {name} is Ready ({}: {}); token expires {}, next refresh {}",
        c.reason,
        c.message,
        at(status.and_then(|s| s.expires_at.as_ref())),
        at(status.and_then(|s| s.refresh_at.as_ref()))
    );
    let generation = token.metadata.generation;
    let observed = status.and_then(|s| s.observed_generation);
    match (generation, observed) {
        (Some(g), Some(o)) if o < g => Step::warn(
            ID,
            format!(
                "{detail}; but the status describes generation {o} of {g}: the projector has not looked at the change yet"
            ),
            "wait a moment and run doctor again",
        ),
        _ => Step::pass(ID, detail),
    }
}

/// The step `secret`: the Secret exists and holds a token; the token, when it does.
pub fn secret(
    name: Option<&str>,
    namespace: &str,
    lookup: &Lookup<Value>,
) -> (Step, Option<SecretString>) {
    const ID: &str = "secret";
    let Some(name) = name else {
        return (Step::skip(ID, "the pod names no M2MToken"), None);
    };
    let secret = match lookup {
        Lookup::Found(s) => s,
        Lookup::NotFound => {
            return (
                Step::fail(
                    ID,
                    format!(
                        "Secret {name} not found in {namespace}: the projector has not written a \
                         token yet, so the pod's init container waits and its SDK finds no token file"
                    ),
                    "see the M2MToken's Ready condition above: the projector writes the Secret once it has a checked token",
                ),
                None,
            );
        }
        Lookup::Forbidden(m) => {
            return (
                Step::warn(
                    ID,
                    format!(
                        "you may not read Secret {name} (needs get on it): token checks skipped ({m})"
                    ),
                    format!("grant get on the Secret {name} in {namespace} to check the token"),
                ),
                None,
            );
        }
        Lookup::Failed(m) => {
            return (
                Step::warn(ID, format!("Secret {name} could not be read: {m}"), "retry"),
                None,
            );
        }
    };
    let token = secret
        .pointer(&format!("/data/{TOKEN_KEY}"))
        .and_then(Value::as_str)
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .filter(|t| !t.trim().is_empty());
    let Some(token) = token else {
        return (
            Step::fail(
                ID,
                format!("Secret {name} holds no token under the key {TOKEN_KEY}"),
                "the projector writes that key; is the Secret the projector's (label app.kubernetes.io/managed-by: idaas-projector)?",
            ),
            None,
        );
    };
    let annotation = |key: &str| {
        secret
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(key))
            .and_then(Value::as_str)
            .unwrap_or("-")
            .to_owned()
    };
    let detail = format!(
        "Secret {name} holds a token (key {TOKEN_KEY}; issued at {}, expires at {})",
        annotation(&format!("{}issued-at", annotations::PREFIX)),
        annotation(&format!("{}expires-at", annotations::PREFIX)),
    );
    (Step::pass(ID, detail), Some(SecretString::from(token)))
}

/// What the dry run tells of a running pod: its result's annotation and the injection read
/// back from it.
#[derive(Debug, Clone)]
pub struct Now {
    pub annotation: String,
    pub injection: Option<Injection>,
}

/// The step `pod-injection` for a running pod: injected, and with what the webhook injects
/// now. `now`: from the dry run, when it injected the pod; else the comparison is
/// `classify`'s, made here with `defaults` (a note naming doctor's `--default-*` flags).
pub fn pod_injection(
    running: &Value,
    classified: &Classified,
    now: Option<&Now>,
    defaults: &str,
    fix: &str,
) -> Step {
    const ID: &str = "pod-injection";
    let current = |how: String| Step::pass(ID, how);
    match classified.state {
        PodState::NotOptedIn => return Step::skip(ID, "the pod does not opt in"),
        PodState::NotInjected => {
            return Step::fail(
                ID,
                format!(
                    "the pod opts in but carries no {} annotation: the webhook did not inject \
                     it (it was created before the webhook or the opt-in, or the webhook was \
                     not called with failurePolicy Ignore). Its containers have no \
                     ALIBABA_CLOUD_* variables and no token file",
                    annotations::INJECTED
                ),
                fix,
            );
        }
        PodState::Current | PodState::Stale => {}
    }
    let had = pod::injected_annotation(running).unwrap_or("");
    let then = pod::injection_of(running).filter(|i| i.hash() == had);
    let Some(now) = now else {
        let note = format!("compared here with the webhook's rules{defaults}");
        return match (classified.state, &classified.expected) {
            (PodState::Current, _) => current(format!(
                "the pod carries what the webhook injects now ({had}; {note})"
            )),
            (_, Some(expected)) => stale(
                had,
                &expected.hash(),
                then.as_ref(),
                Some(expected),
                &note,
                fix,
            ),
            (_, None) => Step::fail(
                ID,
                format!(
                    "the webhook would now refuse the pod ({note}): {}",
                    classified.refusal.as_deref().unwrap_or("-")
                ),
                fix,
            ),
        };
    };
    if now.annotation == had {
        return current(format!(
            "the pod carries what the webhook injects now ({had})"
        ));
    }
    if let (Some(then), Some(new)) = (&then, &now.injection) {
        let mut same_but_image = then.clone();
        same_but_image.init_image.clone_from(&new.init_image);
        if same_but_image.hash() == now.annotation {
            return current(format!(
                "the pod carries what the webhook injects now, but for its init container's \
                 image ({} then, {} now), which has already run",
                then.init_image, new.init_image
            ));
        }
    }
    stale(
        had,
        &now.annotation,
        then.as_ref(),
        now.injection.as_ref(),
        "from the dry run",
        fix,
    )
}

fn stale(
    had: &str,
    now: &str,
    then: Option<&Injection>,
    expected: Option<&Injection>,
    note: &str,
    fix: &str,
) -> Step {
    let mut detail = format!(
        "the pod is stale: it carries injection {had}, the webhook injects {now} now ({note})"
    );
    if let (Some(then), Some(expected)) = (then, expected) {
        for line in pod::differences(then, expected) {
            detail.push_str(&format!("\n{line}"));
        }
    }
    Step::fail("pod-injection", detail, fix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::report::Outcome;
    use secrecy::ExposeSecret as _;
    use serde_json::json;

    fn classified() -> Classified {
        Classified {
            state: PodState::NotInjected,
            m2m_token: Some("payments".into()),
            expected: None,
            refusal: None,
        }
    }

    #[test]
    fn secrets() {
        let found =
            |data: Value| Lookup::Found(json!({"metadata": {"name": "payments"}, "data": data}));
        let (step, token) = secret(
            Some("payments"),
            "shop",
            &found(json!({"token": "YS5iLmM="})),
        );
        assert_eq!(step.result, Outcome::Pass);
        assert_eq!(token.unwrap().expose_secret(), "a.b.c");
        let (step, token) = secret(Some("payments"), "shop", &found(json!({"other": "eA=="})));
        assert_eq!((step.result, token.is_none()), (Outcome::Fail, true));
        let (step, _) = secret(Some("payments"), "shop", &Lookup::Forbidden("no".into()));
        assert_eq!(step.result, Outcome::Warn);
        assert!(step.detail.starts_with(
            "you may not read Secret payments (needs get on it): token checks skipped"
        ));
        let (step, _) = secret(None, "shop", &Lookup::NotFound);
        assert_eq!(step.result, Outcome::Skip);
    }

    #[test]
    fn m2m_tokens() {
        let token = |generation: i64, observed: i64, ready: &str| -> M2MToken {
            serde_json::from_value(json!({"metadata": {"name": "payments", "namespace": "shop", "generation": generation},
                "spec": {"issuer": "https://x.aliyunidaas.com/o", "audience": "a", "clientId": "c",
                    "clientAuth": {"secretRef": {"name": "s", "key": "k"}}},
                "status": {"observedGeneration": observed, "conditions": [{"type": "Ready", "status": ready,
                    "reason": "Refreshed", "message": "m", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}))
            .unwrap()
        };
        let at = |t| m2m_token(Some("payments"), "shop", &Lookup::Found(t)).result;
        assert_eq!(at(token(1, 1, "True")), Outcome::Pass);
        assert_eq!(at(token(2, 1, "True")), Outcome::Warn);
        assert_eq!(at(token(1, 1, "False")), Outcome::Fail);
        assert_eq!(
            m2m_token(Some("payments"), "shop", &Lookup::NotFound).result,
            Outcome::Fail
        );
        assert_eq!(
            m2m_token(None, "shop", &Lookup::NotFound).result,
            Outcome::Skip
        );
    }

    #[test]
    fn dry_run_answers() {
        let c = classified();
        let svc = Some("idaas-projector/idaas-projector");
        let result = |a: DryRun| dry_run(Some(&a), "shop", svc, &c);
        let unreachable = "Internal error occurred: failed calling webhook \"m2m-token.idaas-projector.io\": connection refused";
        let step = result(DryRun::Failed(unreachable.into()));
        assert_eq!(step.result, Outcome::Fail);
        assert!(
            step.fix
                .unwrap()
                .contains("kubectl -n idaas-projector get pods,endpoints idaas-projector")
        );
        assert_eq!(
            result(DryRun::Failed("422 invalid".into())).result,
            Outcome::Warn
        );
        assert_eq!(
            result(DryRun::Denied("denied".into())).result,
            Outcome::Fail
        );
        assert_eq!(result(DryRun::Forbidden("no".into())).result, Outcome::Warn);
        let admitted = |pod: Value, warnings: Vec<String>| DryRun::Admitted { pod, warnings };
        let plain = json!({"spec": {"containers": []}});
        assert_eq!(result(admitted(plain, vec![])).result, Outcome::Fail);
        let injected = json!({"spec": {"volumes": [{"name": "idaas-projector-token"}]}});
        assert_eq!(
            result(admitted(injected.clone(), vec![])).result,
            Outcome::Pass
        );
        assert_eq!(
            result(admitted(injected, vec!["w".into()])).result,
            Outcome::Warn
        );
        assert_eq!(dry_run(None, "shop", svc, &c).result, Outcome::Skip);
    }
}
