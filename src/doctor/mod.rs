//! `doctor`: explains one pod's or workload's credentials end to end, read-only. In order:
//! would the API server send the pod to the webhook ([`routing`]), does it opt in (the
//! webhook's own rule), what does the webhook inject (a `dryRun=All` create, the only request
//! that is not a GET), is its M2MToken Ready, does its Secret hold a token that RAM would
//! accept ([`crate::idaas::check`]), is a running pod's injection current (the webhook's
//! [`classify`]), and optionally does STS hand out credentials for it ([`crate::sts`]). Each
//! step passes, fails, warns or is skipped, with the fix ([`report`]).
//!
//! The token is read from the Secret, checked and sent to STS; it is never printed or logged.

pub mod api;
pub mod pod;
pub mod report;
pub mod routing;
pub mod steps;

use secrecy::{ExposeSecret as _, SecretString};
use serde_json::Value;

use self::api::{DryRun, Lookup};
use self::report::{AssumeRole, Injection as Summary, Outcome, Report, Step, TargetRef};
use crate::crd::M2MToken;
use crate::idaas::HttpConfig;
use crate::idaas::check::{self, Keys};
use crate::ram::Expectations;
use crate::webhook::annotations::{is_dns_label, is_dns_subdomain};
use crate::webhook::cache::{AccountMeta, account_annotations, defaults_of, strip};
use crate::webhook::mutate::{
    self, AccountLookup, Classified, MutateConfig, Mutation, PodState, Scope, TokenLookup,
    classify, env,
};

/// What `doctor` looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Pod,
    Deployment,
    StatefulSet,
    DaemonSet,
    Job,
    CronJob,
}

impl Kind {
    /// The name users type: `pod`, `deployment`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Pod => "pod",
            Kind::Deployment => "deployment",
            Kind::StatefulSet => "statefulset",
            Kind::DaemonSet => "daemonset",
            Kind::Job => "job",
            Kind::CronJob => "cronjob",
        }
    }

    /// The API path of one object of this kind.
    pub fn path(self, namespace: &str, name: &str) -> String {
        let (group, plural) = match self {
            Kind::Pod => ("api/v1", "pods"),
            Kind::Deployment => ("apis/apps/v1", "deployments"),
            Kind::StatefulSet => ("apis/apps/v1", "statefulsets"),
            Kind::DaemonSet => ("apis/apps/v1", "daemonsets"),
            Kind::Job => ("apis/batch/v1", "jobs"),
            Kind::CronJob => ("apis/batch/v1", "cronjobs"),
        };
        format!("/{group}/namespaces/{namespace}/{plural}/{name}")
    }

    /// Where the pod template is (JSON pointer); `None` for a pod.
    pub fn template(self) -> Option<&'static str> {
        match self {
            Kind::Pod => None,
            Kind::CronJob => Some("/spec/jobTemplate/spec/template"),
            _ => Some("/spec/template"),
        }
    }
}

/// The STS call of `--assume-role`.
#[derive(Debug, Clone)]
pub struct AssumeRoleSettings {
    pub client: reqwest::Client,
    /// `--sts-endpoint`; default: the pod's STS region's endpoint, else the public one.
    pub endpoint: Option<String>,
    pub duration_secs: u64,
}

/// Everything `doctor` needs besides the Kubernetes client.
#[derive(Debug, Clone)]
pub struct Settings {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    /// The server's defaults as far as the user knows them (`--default-oidc-provider-arn`,
    /// `--default-sts-region`): used only when there is no dry run.
    pub default_oidc_provider_arn: Option<String>,
    pub default_sts_region: Option<String>,
    /// For the token's signature check (the issuer's discovery and JWKS).
    pub http: HttpConfig,
    pub assume_role: Option<AssumeRoleSettings>,
    /// Unix seconds: the token checks' clock.
    pub now: i64,
}

impl Settings {
    /// The webhook's configuration as far as `doctor` knows it.
    fn local_config(&self) -> MutateConfig {
        MutateConfig {
            default_oidc_provider_arn: self.default_oidc_provider_arn.clone(),
            default_sts_region: self.default_sts_region.clone(),
            ..MutateConfig::default()
        }
    }

    /// The note on a comparison made with [`Self::local_config`].
    fn defaults_note(&self) -> String {
        let flag = |name: &str, v: &Option<String>| match v {
            Some(v) => format!("{name} {v}"),
            None => format!("no {name}"),
        };
        format!(
            " and {}, {} (the server's own defaults are known only to the dry run)",
            flag(
                "--default-oidc-provider-arn",
                &self.default_oidc_provider_arn
            ),
            flag("--default-sts-region", &self.default_sts_region)
        )
    }
}

/// Why `doctor` could not look at the target at all.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Error(pub String);

const WEBHOOK_CONFIGURATIONS: &str =
    "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations";

/// What was read about the pod before the M2MToken.
struct Context {
    pod: Value,
    running: bool,
    account: AccountLookup,
    account_info: steps::Account,
    namespace_enabled: bool,
    service: Option<String>,
}

/// Runs every step on the target and reports.
pub async fn diagnose(client: &kube::Client, s: &Settings) -> Result<Report, Error> {
    let (ns, name) = (s.namespace.as_str(), s.name.as_str());
    if !is_dns_label(ns) || !is_dns_subdomain(name) {
        return Err(Error(format!(
            "{ns:?}/{name:?} is not a namespace and object name"
        )));
    }
    let what = format!("{} {name} in namespace {ns}", s.kind.as_str());
    let object = match api::get(client, &s.kind.path(ns, name)).await {
        Lookup::Found(o) => o,
        Lookup::NotFound => return Err(Error(format!("{what} not found"))),
        Lookup::Forbidden(m) => return Err(Error(format!("you may not read {what}: {m}"))),
        Lookup::Failed(m) => return Err(Error(format!("cannot read {what}: {m}"))),
    };
    let pod = match s.kind.template() {
        None => object,
        Some(t) => {
            pod::from_template(&object, t, ns, name).map_err(|e| Error(format!("{what}: {e}")))?
        }
    };
    let mut out = Vec::new();
    let ctx = route(client, s, pod, &mut out).await;
    let probe = classify(ctx.pod.clone(), &scope(&ctx, ns), &s.local_config(), |_| {
        TokenLookup::NotFound
    });
    let m2m_name = probe.m2m_token.clone();
    let m2m = match &m2m_name {
        Some(n) => read_m2m_token(client, ns, n).await,
        None => Lookup::NotFound,
    };
    let lookup = match &m2m {
        Lookup::Found(t) => TokenLookup::Found(defaults_of(t)),
        _ => TokenLookup::NotFound,
    };
    let classified = classify(ctx.pod.clone(), &scope(&ctx, ns), &s.local_config(), |_| {
        lookup.clone()
    });
    let opt_in = steps::opt_in(&ctx.pod, &classified, &ctx.account_info);
    // No dry run for a pod that certainly does not opt in; one whose opt-in could not be
    // told here gets one: the webhook knows.
    let wanted = !(classified.state == PodState::NotOptedIn && opt_in.result == Outcome::Fail);
    out.push(opt_in);

    let (dry, injection) = inject(client, s, &ctx, wanted, &lookup).await;
    out.push(steps::dry_run(
        dry.as_ref(),
        ns,
        ctx.service.as_deref(),
        &classified,
    ));
    out.push(steps::m2m_token(m2m_name.as_deref(), ns, &m2m));

    let secret_name = match &m2m {
        Lookup::Found(t) => Some(t.secret_name()),
        _ => classified
            .expected
            .as_ref()
            .map(|e| e.secret_name.clone())
            .or(m2m_name.clone()),
    };
    let secret_lookup = match (&m2m_name, &secret_name) {
        (Some(_), Some(n)) => {
            api::get_named(client, &format!("/api/v1/namespaces/{ns}/secrets"), n).await
        }
        _ => Lookup::NotFound,
    };
    let (secret_step, token) = steps::secret(
        m2m_name.as_ref().and(secret_name.as_deref()),
        ns,
        &secret_lookup,
    );
    out.push(secret_step);

    let role = Role::of(injection.as_ref(), classified.expected.as_ref());
    let (token_step, checks) = token_checks(s, token.as_ref(), m2m.found(), &role).await;
    out.push(token_step);
    out.push(running_pod(client, s, &ctx, &classified, dry.as_ref()).await);
    let (sts_step, call) = assume_role(s, token.as_ref(), &role).await;
    out.push(sts_step);

    let target = TargetRef {
        kind: s.kind.as_str(),
        namespace: s.namespace.clone(),
        name: s.name.clone(),
    };
    let mut report = Report::new(target, out);
    report.injection = injection;
    report.token_checks = checks;
    report.assume_role = call;
    Ok(report)
}

fn scope<'a>(ctx: &'a Context, namespace: &'a str) -> Scope<'a> {
    Scope {
        namespace: Some(namespace),
        namespace_enabled: ctx.namespace_enabled,
        service_account: &ctx.account,
    }
}

/// The steps `webhook-configuration` and `webhook-routing`, and what the opt-in rule needs:
/// whether the pod is sent as from a labelled namespace, and its ServiceAccount.
async fn route(client: &kube::Client, s: &Settings, pod: Value, out: &mut Vec<Step>) -> Context {
    let ns = s.namespace.as_str();
    let entries = match api::list(client, WEBHOOK_CONFIGURATIONS).await {
        Lookup::Found(list) => {
            let entries = routing::entries(&list);
            out.push(routing::configuration_step(&entries));
            Some(entries)
        }
        Lookup::Forbidden(m) => {
            out.push(Step::warn(
                "webhook-configuration",
                format!("you may not list mutatingwebhookconfigurations ({m}): not checked"),
                "grant list on mutatingwebhookconfigurations (cluster-wide) to check the webhook's routing",
            ));
            None
        }
        Lookup::NotFound | Lookup::Failed(_) => {
            out.push(Step::warn(
                "webhook-configuration",
                "the MutatingWebhookConfigurations could not be listed: not checked",
                "retry",
            ));
            None
        }
    };
    let namespace = api::get_named(client, "/api/v1/namespaces", ns).await;
    let ns_labels = namespace.found().map(|n| routing::namespace_labels(n, ns));
    let pod_labels = routing::labels_of(&pod);
    let (routing_step, route) = match &entries {
        Some(e) => routing::routing_step(e, ns, ns_labels.as_ref(), &pod_labels),
        None => (
            Step::skip("webhook-routing", "no webhook configuration could be read"),
            None,
        ),
    };
    out.push(routing_step);
    let labelled = ns_labels
        .as_ref()
        .and_then(|l| l.get(crate::webhook::annotations::INJECTION_LABEL));
    let namespace_enabled = match &route {
        Some(r) => r.entry.via_namespace(),
        None => labelled.map(String::as_str) == Some(crate::webhook::annotations::ENABLED),
    };
    let service = route
        .as_ref()
        .and_then(|r| r.entry.service.clone())
        .or_else(|| {
            entries
                .as_ref()
                .and_then(|e| e.iter().find_map(|e| e.service.clone()))
        });
    let (account, mut account_info) = read_account(client, ns, &pod, namespace_enabled).await;
    account_info.namespace_unread = match namespace {
        Lookup::Found(_) => None,
        Lookup::NotFound => Some("not found".to_owned()),
        Lookup::Forbidden(m) | Lookup::Failed(m) => Some(m),
    };
    Context {
        running: s.kind == Kind::Pod,
        pod,
        account,
        account_info,
        namespace_enabled,
        service,
    }
}

/// The pod's ServiceAccount, read as the webhook reads it, when it counts.
async fn read_account(
    client: &kube::Client,
    ns: &str,
    pod: &Value,
    namespace_enabled: bool,
) -> (AccountLookup, steps::Account) {
    let name = mutate::service_account_name(pod).to_owned();
    let mut info = steps::Account {
        name: name.clone(),
        namespace: ns.to_owned(),
        namespace_enabled,
        namespace_unread: None,
        unread: None,
    };
    if !mutate::needs_service_account(pod, namespace_enabled) {
        return (AccountLookup::Absent, info);
    }
    let lookup = match api::get_named(
        client,
        &format!("/api/v1/namespaces/{ns}/serviceaccounts"),
        &name,
    )
    .await
    {
        Lookup::Found(v) => match serde_json::from_value::<AccountMeta>(v) {
            Ok(mut meta) => {
                strip(&mut meta);
                AccountLookup::Found(account_annotations(&name, &meta))
            }
            Err(e) => {
                info.unread = Some(format!("unreadable: {e}"));
                AccountLookup::Absent
            }
        },
        Lookup::NotFound => AccountLookup::Absent,
        Lookup::Forbidden(m) | Lookup::Failed(m) => {
            info.unread = Some(m);
            AccountLookup::Absent
        }
    };
    (lookup, info)
}

async fn read_m2m_token(client: &kube::Client, ns: &str, name: &str) -> Lookup<M2MToken> {
    let path = format!(
        "/apis/{}/{}/namespaces/{ns}/m2mtokens",
        crate::crd::GROUP,
        crate::crd::VERSION
    );
    match api::get_named(client, &path, name).await {
        Lookup::Found(v) => match serde_json::from_value(v) {
            Ok(t) => Lookup::Found(t),
            Err(e) => Lookup::Failed(format!("M2MToken {name} cannot be read: {e}")),
        },
        Lookup::NotFound => Lookup::NotFound,
        Lookup::Forbidden(m) => Lookup::Forbidden(m),
        Lookup::Failed(m) => Lookup::Failed(m),
    }
}

/// The dry run (unless the pod certainly does not opt in) and what the pod gets: from the dry run's
/// answer, else from the webhook's rules applied here.
async fn inject(
    client: &kube::Client,
    s: &Settings,
    ctx: &Context,
    wanted: bool,
    lookup: &TokenLookup,
) -> (Option<DryRun>, Option<Summary>) {
    if !wanted {
        return (None, None);
    }
    let sent = if ctx.running {
        pod::dry_run_copy(&ctx.pod)
    } else {
        ctx.pod.clone()
    };
    let answer = api::dry_run(client, &s.namespace, &sent).await;
    let summary = match &answer {
        DryRun::Admitted { pod, warnings } => pod::summary(pod, "dry-run", warnings.clone()),
        DryRun::Denied(_) => None,
        DryRun::Forbidden(_) | DryRun::Failed(_) => {
            let config = s.local_config();
            match mutate::mutate(&sent, &scope(ctx, &s.namespace), &config, |_| {
                lookup.clone()
            }) {
                Ok(Mutation::Injected { patch, warnings }) => {
                    pod::patched(&sent, &patch).and_then(|p| pod::summary(&p, "local", warnings))
                }
                _ => None,
            }
        }
    };
    (Some(answer), summary)
}

/// The role, OIDC provider and session the pod's SDK uses, and its STS settings.
struct Role {
    role_arn: Option<String>,
    oidc_provider_arn: Option<String>,
    session_name: Option<String>,
    sts_region: Option<String>,
    vpc: bool,
}

impl Role {
    /// From what the pod gets (the dry run's answer, else the webhook's rules applied here),
    /// else from `classify`'s expected injection.
    fn of(summary: Option<&Summary>, expected: Option<&mutate::Injection>) -> Self {
        if let Some(s) = summary.filter(|s| s.var(env::ROLE_ARN).is_some()) {
            let var = |n: &str| s.var(n).map(str::to_owned);
            return Self {
                role_arn: var(env::ROLE_ARN),
                oidc_provider_arn: var(env::OIDC_PROVIDER_ARN),
                session_name: var(env::ROLE_SESSION_NAME),
                sts_region: var(env::STS_REGION),
                vpc: var(env::VPC_ENDPOINT_ENABLED).as_deref() == Some("true"),
            };
        }
        Self {
            role_arn: expected.map(|e| e.role_arn.clone()),
            oidc_provider_arn: expected.map(|e| e.oidc_provider_arn.clone()),
            session_name: expected.map(|e| e.role_session_name.clone()),
            sts_region: expected.and_then(|e| e.sts_region.clone()),
            vpc: expected.is_some_and(|e| e.sts_vpc_endpoint),
        }
    }
}

/// The step `token`: every check RAM applies, against what the M2MToken expects.
async fn token_checks(
    s: &Settings,
    token: Option<&SecretString>,
    m2m: Option<&M2MToken>,
    role: &Role,
) -> (Step, Option<check::Report>) {
    const ID: &str = "token";
    let Some(token) = token else {
        return (
            Step::skip(ID, "no token to check (see the Secret step)"),
            None,
        );
    };
    let Some(m2m) = m2m else {
        return (
            Step::skip(ID, "no M2MToken to check the token against"),
            None,
        );
    };
    let spec = &m2m.spec;
    let max_age = match crate::controller::reconcile::parse_max_token_age(&spec.max_token_age) {
        Ok(d) => d,
        Err(e) => {
            let fix = "set spec.maxTokenAge to RAM's Earliest Issuance Time Allowed (1h..168h)";
            return (Step::fail(ID, e, fix), None);
        }
    };
    let expect = Expectations::new(&spec.issuer, &spec.audience, max_age);
    let keys = Keys {
        jwks_uri: spec.jwks_uri.as_deref().map(|u| (u, "spec.jwksUri")),
        issuer_source: "spec.issuer",
        http: &s.http,
    };
    let report = match check::evaluate(&expect.rules(), &keys, token.expose_secret(), s.now).await {
        Ok(r) => r,
        Err(e) => {
            return (
                Step::warn(
                    ID,
                    format!("the token could not be checked: {e}"),
                    "check --ca-file",
                ),
                None,
            );
        }
    };
    (token_step(&report, role), Some(report))
}

fn token_step(report: &check::Report, role: &Role) -> Step {
    const ID: &str = "token";
    let failed: Vec<&crate::ram::Check> = report.failed().collect();
    if let Some(first) = failed.first() {
        let lines: Vec<String> = failed
            .iter()
            .map(|c| format!("{}: {}", c.ram_code, c.detail))
            .collect();
        let call = crate::ram::code::Call {
            role_arn: role.role_arn.as_deref().unwrap_or("(the pod's role)"),
            oidc_provider_arn: role
                .oidc_provider_arn
                .as_deref()
                .unwrap_or("(the pod's OIDC provider)"),
            duration_secs: 3600,
        };
        let fix = crate::ram::code::explain(
            first.ram_code,
            &first.detail,
            &call,
            report.token.as_ref(),
            None,
        );
        return Step::fail(
            ID,
            format!("RAM would reject this token:\n{}", lines.join("\n")),
            fix,
        );
    }
    let claims = report.token.as_ref().map_or_else(String::new, |t| {
        format!(
            " (iss {}, aud {}, sub {}, expires {})",
            t.iss,
            t.aud.join(","),
            t.sub.as_deref().unwrap_or("-"),
            crate::time::rfc3339(t.exp)
        )
    });
    let not_run: Vec<String> = report
        .checks
        .iter()
        .filter(|c| {
            !matches!(
                c.result,
                crate::ram::Outcome::Pass | crate::ram::Outcome::Fail
            )
        })
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect();
    if not_run.is_empty() {
        Step::pass(ID, format!("RAM would accept this token{claims}"))
    } else {
        Step::warn(
            ID,
            format!(
                "every check that ran passed{claims}; not run:\n{}",
                not_run.join("\n")
            ),
            "make the issuer's discovery and JWKS reachable from here (--ca-file for a private CA)",
        )
    }
}

/// The step `pod-injection`: skipped for a workload; for a running pod, `classify`'s state,
/// compared with the dry run's answer when there is one.
async fn running_pod(
    client: &kube::Client,
    s: &Settings,
    ctx: &Context,
    classified: &Classified,
    dry: Option<&DryRun>,
) -> Step {
    if !ctx.running {
        return Step::skip(
            "pod-injection",
            format!(
                "not a running pod: the {}'s new pods get what the dry run shows; run doctor pod \
                 <name> on one of its pods to compare",
                s.kind.as_str()
            ),
        );
    }
    let now = match dry {
        Some(DryRun::Admitted { pod, .. }) if pod::has_token_volume(pod) => {
            pod::injected_annotation(pod).map(|a| steps::Now {
                annotation: a.to_owned(),
                injection: pod::injection_of(pod).filter(|i| i.hash() == a),
            })
        }
        _ => None,
    };
    let fix = owner_fix(client, s, &ctx.pod).await;
    steps::pod_injection(&ctx.pod, classified, now.as_ref(), &s.defaults_note(), &fix)
}

/// How to re-create the pod, naming its owner (for a ReplicaSet, its Deployment).
async fn owner_fix(client: &kube::Client, s: &Settings, pod: &Value) -> String {
    let owner = pod::controller_owner(pod);
    let deployment = match &owner {
        Some((kind, rs)) if kind == "ReplicaSet" => {
            let base = format!("/apis/apps/v1/namespaces/{}/replicasets", s.namespace);
            api::get_named(client, &base, rs)
                .await
                .found()
                .and_then(pod::controller_owner)
                .filter(|(k, _)| k == "Deployment")
                .map(|(_, d)| d)
        }
        _ => None,
    };
    let owner = owner.as_ref().map(|(k, n)| (k.as_str(), n.as_str()));
    pod::recreate_fix(&s.namespace, &s.name, owner, deployment.as_deref())
}

/// The step `assume-role`: STS AssumeRoleWithOIDC with the token, as the pod's SDK calls it.
async fn assume_role(
    s: &Settings,
    token: Option<&SecretString>,
    role: &Role,
) -> (Step, Option<AssumeRole>) {
    const ID: &str = "assume-role";
    let Some(sts) = &s.assume_role else {
        return (
            Step::skip(ID, "not asked: --assume-role calls STS with the token"),
            None,
        );
    };
    let Some(token) = token else {
        return (
            Step::skip(ID, "no token to call STS with (see the Secret step)"),
            None,
        );
    };
    let (Some(role_arn), Some(provider), Some(session)) =
        (&role.role_arn, &role.oidc_provider_arn, &role.session_name)
    else {
        return (
            Step::skip(
                ID,
                "the pod's role and OIDC provider are not known (see the dry run)",
            ),
            None,
        );
    };
    let endpoint = match crate::sts::endpoint(
        sts.endpoint.as_deref(),
        role.sts_region.as_deref(),
        role.vpc,
    ) {
        Ok(e) => e,
        Err(e) => {
            return (
                Step::fail(ID, e, "correct --sts-endpoint or the pod's sts-region"),
                None,
            );
        }
    };
    let call = crate::sts::Call {
        endpoint: &endpoint,
        role_arn,
        oidc_provider_arn: provider,
        session_name: session,
        duration_secs: sts.duration_secs,
        token: token.expose_secret(),
    };
    let mut shown = AssumeRole {
        endpoint: endpoint.clone(),
        role_arn: role_arn.clone(),
        oidc_provider_arn: provider.clone(),
        role_session_name: session.clone(),
        answer: None,
        error: None,
    };
    let answer = crate::sts::assume_role_with_oidc(&sts.client, &call).await;
    let step = sts_answer(answer, &mut shown);
    (step, Some(shown))
}

/// The step for STS's answer; the answer (redacted) or the refusal goes into `shown`.
fn sts_answer(answer: Result<Value, crate::sts::Failure>, shown: &mut AssumeRole) -> Step {
    const ID: &str = "assume-role";
    match answer {
        Ok(answer) => {
            let answer = crate::sts::redacted(answer, false);
            let str_at = |p: &str| answer.pointer(p).and_then(Value::as_str).unwrap_or("-");
            let detail = format!(
                "STS at {} returned credentials for {} (AccessKeyId {}, expiring {})",
                shown.endpoint,
                str_at("/AssumedRoleUser/Arn"),
                str_at("/Credentials/AccessKeyId"),
                str_at("/Credentials/Expiration")
            );
            shown.answer = Some(answer);
            Step::pass(ID, detail)
        }
        Err(crate::sts::Failure::Refused(r)) => {
            shown.error = Some(r.json());
            Step::fail(ID, r.summary(), r.explanation)
        }
        Err(crate::sts::Failure::NoAnswer(m)) => Step::fail(
            ID,
            m,
            "check --sts-endpoint (or the pod's sts-region), the network and --ca-file",
        ),
    }
}
