//! `doctor` end to end against the in-process fake API (`testing::fake_api`), whose `dryRun=All`
//! pod creates are answered by the webhook's real decision (`webhook::review` over the fake
//! API's M2MTokens and ServiceAccounts, the JSON Patch applied, warnings as `Warning` headers),
//! with real JWTs from the IDaaS emulator and the STS emulator for `--assume-role`.
//!
//! - a healthy Deployment and a healthy running pod: every step passes (exit 0), text and JSON;
//! - each failing step, exit 1: no webhook configuration, an empty caBundle, a namespace no
//!   entry selects, a pod that opts out, a missing or not Ready M2MToken, a missing Secret, a
//!   token that fails a check (wrong audience, expired), a running pod not injected or stale,
//!   a denied dry run, STS refusing;
//! - warnings that do not fail: a Secret or a dry run the user may not make;
//! - read-only: only GETs and the one `dryRun=All` POST, nothing stored;
//! - the binary: exit statuses 0, 1 and 2 through a kubeconfig, the JSON shape, and the token
//!   never in its output, not even with trace logs.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use idaas_projector::cli::doctor::{DoctorArgs, outcome};
use idaas_projector::cli::{CommandError, EXIT_FAILURE, EXIT_USAGE};
use idaas_projector::crd::M2MToken;
use idaas_projector::doctor::report::{Outcome, Report};
use idaas_projector::doctor::{self, AssumeRoleSettings, Kind, Settings};
use idaas_projector::emulator::idaas::IdaasEmulator;
use idaas_projector::emulator::sts::{StsConfig, StsEmulator};
use idaas_projector::idaas::{AllowedOrigins, Credential, HttpConfig, IdaasClient};
use idaas_projector::testing::fake_api::{self, DryRunHook, FakeApi};
use idaas_projector::testing::{self, api_failure, install_provider};
use idaas_projector::time::unix_now;
use idaas_projector::webhook::cache::{AccountMeta, account_annotations, defaults_of, strip};
use idaas_projector::webhook::mutate::{AccountLookup, MutateConfig, TokenLookup};
use idaas_projector::webhook::review::{Resolver, Via};
use serde_json::{Value, json};

const PODS: &str = "api/v1/pods";
const NAMESPACES: &str = "api/v1/namespaces";
const ACCOUNTS: &str = "api/v1/serviceaccounts";
const SECRETS: &str = "api/v1/secrets";
const TOKENS: &str = "apis/idaas-projector.io/v1alpha1/m2mtokens";
const CONFIGURATIONS: &str = "apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations";
const DEPLOYMENTS: &str = "apis/apps/v1/deployments";
const REPLICASETS: &str = "apis/apps/v1/replicasets";

const AUDIENCE: &str = "api://payments";
const ACCOUNT_ID: &str = "1234567890123456";
const ROLE: &str = "acs:ram::1234567890123456:role/payments";
const PROVIDER: &str = "acs:ram::1234567890123456:oidc-provider/idaas";
const INIT_IMAGE: &str = "registry.example/idaas-projector:9.9.9";
/// The running pod of the Deployment.
const POD: &str = "web-7d4b9-x2x9q";
/// Namespaces the chart leaves out (the fixture's namespaceSelector).
const EXCLUDED: [&str; 3] = ["kube-system", "idaas-projector", "batch-legacy"];

fn configuration() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/doctor/webhook-configuration.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn namespace(name: &str, labels: Value) -> Value {
    let mut l = labels;
    l["kubernetes.io/metadata.name"] = json!(name);
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": l}})
}

fn m2m_token(issuer: &str, audience: &str, role: &str) -> Value {
    json!({"apiVersion": "idaas-projector.io/v1alpha1", "kind": "M2MToken",
        "metadata": {"name": "payments", "namespace": "shop", "generation": 1, "uid": "m2m-uid"},
        "spec": {"issuer": issuer, "audience": audience, "scopes": [".all"], "clientId": "app_payments",
            "clientAuth": {"method": "client_secret_post", "secretRef": {"name": "creds", "key": "client_secret"}},
            "roleArn": role, "oidcProviderArn": PROVIDER, "maxTokenAge": "12h"},
        "status": {"observedGeneration": 1, "expiresAt": "2030-01-01T00:00:00Z",
            "conditions": [{"type": "Ready", "status": "True", "reason": "Refreshed",
                "message": "token refreshed", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})
}

fn secret(token: &str) -> Value {
    let data = base64::engine::general_purpose::STANDARD.encode(token);
    json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "payments", "namespace": "shop",
            "labels": {"app.kubernetes.io/managed-by": "idaas-projector"},
            "annotations": {"idaas-projector.io/issued-at": "2026-01-01T00:00:00Z"}},
        "data": {"token": data}})
}

fn deployment(namespace: &str, annotations: Value, labels: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": namespace, "uid": "dep-uid"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": labels, "annotations": annotations},
                "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]}}}})
}

fn opted_in() -> Value {
    json!({"idaas-projector.io/m2m-token": "payments"})
}

/// The webhook's lookups answered from the fake API's objects, as its caches would.
struct ApiResolver(FakeApi);

impl Resolver for ApiResolver {
    fn m2m_token(&self, namespace: &str, name: &str) -> TokenLookup {
        match self.0.get(TOKENS, namespace, name) {
            Some(v) => {
                TokenLookup::Found(defaults_of(&serde_json::from_value::<M2MToken>(v).unwrap()))
            }
            None => TokenLookup::NotFound,
        }
    }

    fn service_account(&self, namespace: &str, name: &str) -> Option<AccountLookup> {
        Some(match self.0.get(ACCOUNTS, namespace, name) {
            Some(v) => {
                let mut meta: AccountMeta = serde_json::from_value(v).unwrap();
                strip(&mut meta);
                AccountLookup::Found(account_annotations(name, &meta))
            }
            None => AccountLookup::Absent,
        })
    }

    fn fetch_service_account<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> futures::future::BoxFuture<'a, AccountLookup> {
        let answer = self.service_account(namespace, name).unwrap();
        Box::pin(std::future::ready(answer))
    }
}

/// The API server's admission of a dry-run pod create, with the chart's routing: no
/// configuration, an excluded namespace, an opted-out pod or (outside a labelled namespace) a
/// pod without the annotation are not sent; an empty caBundle cannot be called; else the
/// webhook answers (review, patch applied, warnings; a denial as the API server words it).
fn admission(api: FakeApi) -> DryRunHook {
    let config = MutateConfig {
        init_image: INIT_IMAGE.to_owned(),
        ..MutateConfig::default()
    };
    Arc::new(move |mut pod: Value| {
        // The webhook sees the pod before the API server names it from generateName.
        let named = pod["metadata"]["name"].clone();
        if pod["metadata"].get("generateName").is_some() {
            pod["metadata"].as_object_mut().unwrap().remove("name");
        }
        let answer = admit(&api, &config, pod);
        answer.map(|(mut pod, warnings)| {
            pod["metadata"]["name"] = named;
            (pod, warnings)
        })
    })
}

fn admit(
    api: &FakeApi,
    config: &MutateConfig,
    mut pod: Value,
) -> Result<(Value, Vec<String>), (axum::http::StatusCode, Value)> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap().to_owned();
    let labelled = api
        .get(NAMESPACES, "", &ns)
        .is_some_and(|n| n["metadata"]["labels"]["idaas-projector.io/injection"] == "enabled");
    let opted_out = pod["metadata"]["labels"]["idaas-projector.io/injection"] == "disabled";
    let annotated = pod["metadata"]["annotations"]["idaas-projector.io/m2m-token"].is_string();
    let Some(configuration) = api.all(CONFIGURATIONS).into_iter().next() else {
        return Ok((pod, vec![]));
    };
    let (via, entry) = match () {
        _ if opted_out || EXCLUDED.contains(&ns.as_str()) => return Ok((pod, vec![])),
        _ if labelled => (Via::Namespace, 1),
        _ if annotated => (Via::Annotation, 0),
        _ => return Ok((pod, vec![])),
    };
    let hook = &configuration["webhooks"][entry];
    let name = hook["name"].as_str().unwrap();
    if hook["clientConfig"]["caBundle"]
        .as_str()
        .unwrap_or("")
        .is_empty()
    {
        let message = format!(
            "Internal error occurred: failed calling webhook \"{name}\": failed to call webhook: \
             tls: failed to verify certificate: x509: certificate signed by unknown authority"
        );
        return Err(api_failure(500, "InternalError", &message));
    }
    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "dry-run", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": ns, "operation": "CREATE", "object": pod, "dryRun": true}});
    let resolver = ApiResolver(api.clone());
    let answer = testing::review_now(
        &serde_json::to_vec(&review).unwrap(),
        via,
        config,
        &resolver,
    )
    .unwrap();
    let body: Value = serde_json::from_slice(&answer.body).unwrap();
    let response = &body["response"];
    if response["allowed"] != true {
        let message = format!(
            "admission webhook \"{name}\" denied the request: {}",
            response["status"]["message"].as_str().unwrap_or("")
        );
        return Err(api_failure(403, "Forbidden", &message));
    }
    if let Some(patch) = response["patch"].as_str() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(patch)
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        json_patch::patch(&mut pod, &patch).unwrap();
    }
    let warnings = response["warnings"]
        .as_array()
        .map(|w| {
            w.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    Ok((pod, warnings))
}

/// A cluster with idaas-projector installed and a Deployment `web` in `shop` that opts in to
/// M2MToken `payments`, whose Secret holds a token from the IDaaS emulator.
struct World {
    api: FakeApi,
    emu: IdaasEmulator,
    token: String,
}

async fn fetch_token(emu: &IdaasEmulator) -> String {
    use secrecy::ExposeSecret as _;
    let client = IdaasClient::new(&testing::http_config(emu)).unwrap();
    let request = emu.token_request(Credential::ClientSecretPost {
        client_secret: "s3cret".into(),
    });
    let fetched = client.fetch_token(&request, unix_now()).await.unwrap();
    fetched.token.expose_secret().to_owned()
}

async fn world() -> World {
    install_provider();
    let emu = testing::emulator(
        "app_payments",
        "s3cret",
        AUDIENCE,
        Duration::from_secs(3600),
    )
    .await;
    let token = fetch_token(&emu).await;
    let api = FakeApi::default();
    api.put(NAMESPACES, namespace("shop", json!({})));
    api.put(CONFIGURATIONS, configuration());
    api.put(
        ACCOUNTS,
        json!({"metadata": {"name": "default", "namespace": "shop"}}),
    );
    api.put(TOKENS, m2m_token(&emu.issuer(), AUDIENCE, ROLE));
    api.put(SECRETS, secret(&token));
    api.put(
        DEPLOYMENTS,
        deployment("shop", opted_in(), json!({"app": "web"})),
    );
    api.on_dry_run(PODS, admission(api.clone()));
    World { api, emu, token }
}

impl World {
    /// A pod of the Deployment, admitted by the webhook as things are now: ReplicaSet
    /// `web-7d4b9` (owned by the Deployment), running on a node.
    fn run_pod(&self, injected: bool) -> Value {
        let template = &self.api.get(DEPLOYMENTS, "shop", "web").unwrap()["spec"]["template"];
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "web-7d4b9-", "namespace": "shop",
                "labels": template["metadata"]["labels"], "annotations": template["metadata"]["annotations"]},
            "spec": template["spec"]});
        if injected {
            pod = admit(
                &self.api,
                &MutateConfig {
                    init_image: INIT_IMAGE.into(),
                    ..MutateConfig::default()
                },
                pod,
            )
            .unwrap()
            .0;
        }
        pod["metadata"]["name"] = json!(POD);
        pod["metadata"]["uid"] = json!("pod-uid");
        pod["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9", "uid": "rs-uid", "controller": true}]);
        pod["spec"]["nodeName"] = json!("node-1");
        pod["spec"]["serviceAccountName"] = json!("default");
        pod["status"] = json!({"phase": "Running"});
        self.api.put(PODS, pod.clone());
        self.api.put(REPLICASETS, json!({"metadata": {"name": "web-7d4b9", "namespace": "shop",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "dep-uid", "controller": true}]}}));
        pod
    }

    fn settings(&self, kind: Kind, name: &str) -> Settings {
        Settings {
            kind,
            namespace: "shop".into(),
            name: name.into(),
            default_oidc_provider_arn: None,
            default_sts_region: None,
            http: HttpConfig {
                allowed: AllowedOrigins::any(),
                ..HttpConfig::default()
            },
            assume_role: None,
            now: unix_now(),
        }
    }

    /// RAM trusting the emulator's issuer for the audience, in the account of `ROLE`.
    fn sts_config(&self) -> StsConfig {
        StsConfig {
            issuer: self.emu.issuer(),
            jwks_uri: self.emu.jwks_uri(),
            client_ids: vec![AUDIENCE.to_owned()],
            account_id: ACCOUNT_ID.to_owned(),
            oidc_provider_name: "idaas".to_owned(),
            ..StsConfig::default()
        }
    }

    async fn sts(&self) -> StsEmulator {
        StsEmulator::start(self.sts_config()).await.unwrap()
    }

    /// `doctor` on `web` in a copy of this cluster without the objects of `collection`.
    async fn doctor_without(&self, collection: &str, kind: Kind) -> Report {
        let api = FakeApi::default();
        for c in [
            NAMESPACES,
            ACCOUNTS,
            TOKENS,
            SECRETS,
            DEPLOYMENTS,
            CONFIGURATIONS,
        ] {
            for o in self.api.all(c).into_iter().filter(|_| c != collection) {
                api.put(c, o);
            }
        }
        api.on_dry_run(PODS, admission(api.clone()));
        doctor::diagnose(&api.client(), &self.settings(kind, "web"))
            .await
            .unwrap()
    }

    async fn doctor(&self, settings: &Settings) -> Report {
        doctor::diagnose(&self.api.client(), settings)
            .await
            .unwrap()
    }
}

fn sts_settings(sts: &StsEmulator) -> AssumeRoleSettings {
    let timeouts = idaas_projector::http::Timeouts {
        connect: Duration::from_secs(5),
        request: Duration::from_secs(10),
    };
    AssumeRoleSettings {
        client: idaas_projector::http::client(timeouts, &[]).unwrap(),
        endpoint: Some(sts.endpoint()),
        duration_secs: 3600,
    }
}

/// The command's exit status for a report.
fn exit_status(report: &Report) -> u8 {
    match outcome(report) {
        Ok(()) => 0,
        Err(CommandError::Failed(_)) => EXIT_FAILURE,
        Err(CommandError::Usage(_)) => EXIT_USAGE,
    }
}

fn results(report: &Report) -> Vec<(&'static str, Outcome)> {
    report.steps.iter().map(|s| (s.id, s.result)).collect()
}

fn step<'a>(report: &'a Report, id: &str) -> &'a idaas_projector::doctor::report::Step {
    report.steps.iter().find(|s| s.id == id).unwrap()
}

/// Step `id` has `result`, and its detail and fix say each of `says`.
#[track_caller]
fn expect(report: &Report, id: &str, result: Outcome, says: &[&str]) {
    let s = step(report, id);
    assert_eq!(s.result, result, "{id}: {s:?}\n{}", report.text());
    let text = format!("{}\n{}", s.detail, s.fix.as_deref().unwrap_or(""));
    for needle in says {
        assert!(text.contains(needle), "{id} does not say {needle:?}: {s:?}");
    }
}

/// Every object of the fake API, in every collection doctor could touch.
fn snapshot(api: &FakeApi) -> Vec<Value> {
    let all = [
        PODS,
        NAMESPACES,
        ACCOUNTS,
        SECRETS,
        TOKENS,
        CONFIGURATIONS,
        DEPLOYMENTS,
        REPLICASETS,
    ];
    all.iter().flat_map(|c| api.all(c)).collect()
}

/// Every request was a GET but one POST with dryRun=All, and nothing was stored or changed
/// since `before`.
#[track_caller]
fn assert_read_only(api: &FakeApi, before: &[Value]) {
    let seen = api.seen();
    let writes: Vec<_> = seen.iter().filter(|s| s.method != "GET").collect();
    assert_eq!(writes.len(), 1, "{writes:?}");
    let w = writes[0];
    assert_eq!(
        (w.method.as_str(), w.path.as_str()),
        ("POST", "/api/v1/namespaces/shop/pods")
    );
    assert!(
        w.query.split('&').any(|kv| kv == "dryRun=All"),
        "{}",
        w.query
    );
    assert_eq!(snapshot(api), before);
}

#[tokio::test]
async fn healthy_deployment_passes_every_step() {
    let w = world().await;
    let sts = w.sts().await;
    let mut settings = w.settings(Kind::Deployment, "web");
    settings.assume_role = Some(sts_settings(&sts));
    let before = snapshot(&w.api);
    let report = w.doctor(&settings).await;
    let text = report.text();
    for (id, result) in results(&report) {
        let expected = if id == "pod-injection" {
            Outcome::Skip
        } else {
            Outcome::Pass
        };
        assert_eq!(result, expected, "{id}\n{text}");
    }
    assert_eq!(exit_status(&report), 0);
    assert_read_only(&w.api, &before);

    // Text: a checklist, what was injected, the token's claims, STS's answer, no secrets.
    assert!(
        text.starts_with("doctor: deployment web in namespace shop\n"),
        "{text}"
    );
    assert!(text.contains("PASS  Dry-run injection (dry-run)"), "{text}");
    assert!(
        text.contains(&format!("ALIBABA_CLOUD_ROLE_ARN={ROLE}")),
        "{text}"
    );
    assert!(
        text.contains("ALIBABA_CLOUD_ROLE_SESSION_NAME=shop.web"),
        "{text}"
    );
    assert!(
        text.contains(&format!("image {INIT_IMAGE}, --timeout 5m")),
        "{text}"
    );
    assert!(
        text.contains("entry m2m-token.idaas-projector.io (path /mutate"),
        "{text}"
    );
    assert!(text.contains("has-m2m-token-annotation"), "{text}");
    assert!(text.contains("STS.NT***"), "{text}");
    assert!(text.ends_with("result: no step failed"), "{text}");
    assert!(!text.contains(&w.token));

    // JSON: the stable shape.
    let v: Value = serde_json::from_str(&report.json()).unwrap();
    assert_eq!(
        v["target"],
        json!({"kind": "deployment", "namespace": "shop", "name": "web"})
    );
    assert_eq!(v["ok"], true);
    assert_eq!(v["steps"].as_array().unwrap().len(), 9);
    assert_eq!(v["steps"][0]["id"], "webhook-configuration");
    assert_eq!(v["injection"]["source"], "dry-run");
    assert_eq!(v["injection"]["secret"], "payments");
    assert_eq!(v["injection"]["initContainer"]["image"], INIT_IMAGE);
    assert_eq!(v["injection"]["containers"][0]["name"], "app");
    assert_eq!(v["tokenChecks"]["ok"], true);
    assert_eq!(v["tokenChecks"]["token"]["aud"], json!([AUDIENCE]));
    assert_eq!(v["assumeRole"]["roleArn"], ROLE);
    assert_eq!(v["assumeRole"]["roleSessionName"], "shop.web");
    let creds = &v["assumeRole"]["answer"]["Credentials"];
    assert!(creds.get("AccessKeySecret").is_none() && creds.get("SecurityToken").is_none());
    assert!(!report.json().contains(&w.token));
    assert_eq!(sts.successes(), 1);
}

#[tokio::test]
async fn healthy_running_pod_passes_every_step() {
    let w = world().await;
    let sts = w.sts().await;
    w.run_pod(true);
    let mut settings = w.settings(Kind::Pod, POD);
    settings.assume_role = Some(sts_settings(&sts));
    let before = snapshot(&w.api);
    let report = w.doctor(&settings).await;
    for (id, result) in results(&report) {
        assert_eq!(result, Outcome::Pass, "{id}\n{}", report.text());
    }
    assert_eq!(exit_status(&report), 0);
    assert_read_only(&w.api, &before);
    let injection = step(&report, "pod-injection");
    assert!(
        injection
            .detail
            .contains("carries what the webhook injects now"),
        "{injection:?}"
    );
    // The dry run's copy: no name, the pod's generateName, nothing the server set.
    let post = w
        .api
        .seen()
        .into_iter()
        .find(|s| s.method == "POST")
        .unwrap();
    let sent = post.body.unwrap();
    assert_eq!(sent["metadata"]["generateName"], "web-7d4b9-");
    assert!(sent["metadata"].get("name").is_none() && sent["metadata"].get("uid").is_none());
    assert!(sent.get("status").is_none() && sent["spec"].get("nodeName").is_none());
    let v: Value = serde_json::from_str(&report.json()).unwrap();
    assert_eq!(v["target"]["kind"], "pod");
    assert_eq!(v["assumeRole"]["roleSessionName"], "shop.web-7d4b9");
}

#[tokio::test]
async fn an_older_init_image_alone_is_not_stale() {
    let w = world().await;
    let mut pod = w.run_pod(true);
    // Injected by an earlier release: another init image, and the hash made with it.
    let mut then = idaas_projector::doctor::pod::injection_of(&pod).unwrap();
    then.init_image = "registry.example/idaas-projector:0.1.0".into();
    pod["spec"]["initContainers"][0]["image"] = json!(then.init_image);
    pod["metadata"]["annotations"]["idaas-projector.io/injected"] = json!(then.hash());
    w.api.put(PODS, pod);
    let report = w.doctor(&w.settings(Kind::Pod, POD)).await;
    expect(&report, "pod-injection", Outcome::Pass, &["0.1.0 then"]);
}

#[tokio::test]
async fn no_webhook_configuration() {
    let w = world().await;
    let report = w.doctor_without(CONFIGURATIONS, Kind::Deployment).await;
    expect(
        &report,
        "webhook-configuration",
        Outcome::Fail,
        &["no MutatingWebhookConfiguration", "helm"],
    );
    expect(&report, "webhook-routing", Outcome::Skip, &[]);
    expect(&report, "dry-run", Outcome::Fail, &["without injecting it"]);
    assert_eq!(exit_status(&report), 1);
}

#[tokio::test]
async fn empty_ca_bundle() {
    let w = world().await;
    let mut c = configuration();
    for hook in c["webhooks"].as_array_mut().unwrap() {
        hook["clientConfig"]["caBundle"] = json!("");
    }
    w.api.put(CONFIGURATIONS, c);
    let report = w.doctor(&w.settings(Kind::Deployment, "web")).await;
    let says = [
        "caBundle of m2m-token.idaas-projector.io",
        "logs deploy/idaas-projector",
    ];
    expect(&report, "webhook-configuration", Outcome::Fail, &says);
    expect(
        &report,
        "dry-run",
        Outcome::Fail,
        &["could not call the webhook"],
    );
    assert_eq!(exit_status(&report), 1);
}

#[tokio::test]
async fn namespace_not_selected() {
    let w = world().await;
    w.api.put(NAMESPACES, namespace("batch-legacy", json!({})));
    w.api.put(
        DEPLOYMENTS,
        deployment("batch-legacy", opted_in(), json!({})),
    );
    let mut settings = w.settings(Kind::Deployment, "web");
    settings.namespace = "batch-legacy".into();
    let report = w.doctor(&settings).await;
    expect(&report, "webhook-configuration", Outcome::Pass, &[]);
    let says = [
        "namespaceSelector does not select namespace batch-legacy",
        "excludeNamespaces",
    ];
    expect(&report, "webhook-routing", Outcome::Fail, &says);
    assert_eq!(exit_status(&report), 1);
}

#[tokio::test]
async fn pod_opted_out() {
    let w = world().await;
    let labels = json!({"idaas-projector.io/injection": "disabled"});
    w.api
        .put(DEPLOYMENTS, deployment("shop", opted_in(), labels));
    let report = w.doctor(&w.settings(Kind::Deployment, "web")).await;
    expect(
        &report,
        "webhook-routing",
        Outcome::Fail,
        &["objectSelector"],
    );
    expect(
        &report,
        "opt-in",
        Outcome::Fail,
        &["opt-out", "remove the label"],
    );
    expect(&report, "dry-run", Outcome::Skip, &[]);
    assert_eq!(exit_status(&report), 1);
    // No dry run was needed.
    assert!(w.api.seen().iter().all(|s| s.method == "GET"));
}

#[tokio::test]
async fn service_account_opts_in_only_in_a_labelled_namespace() {
    let w = world().await;
    w.api
        .put(DEPLOYMENTS, deployment("shop", json!({}), json!({})));
    w.api.put(
        ACCOUNTS,
        json!({"metadata": {"name": "default", "namespace": "shop",
        "annotations": {"idaas-projector.io/m2m-token": "payments"}}}),
    );
    let report = w.doctor(&w.settings(Kind::Deployment, "web")).await;
    expect(
        &report,
        "opt-in",
        Outcome::Fail,
        &["count only in a namespace labelled"],
    );
    expect(&report, "m2m-token", Outcome::Skip, &[]);

    w.api.put(
        NAMESPACES,
        namespace("shop", json!({"idaas-projector.io/injection": "enabled"})),
    );
    let report = w.doctor(&w.settings(Kind::Deployment, "web")).await;
    expect(
        &report,
        "webhook-routing",
        Outcome::Pass,
        &["namespace.idaas-projector.io"],
    );
    expect(
        &report,
        "opt-in",
        Outcome::Pass,
        &["of its ServiceAccount default"],
    );
    expect(&report, "dry-run", Outcome::Pass, &[]);
    assert_eq!(exit_status(&report), 0);
}

#[tokio::test]
async fn namespace_unreadable_is_a_warning() {
    let w = world().await;
    let report = w.doctor_without(NAMESPACES, Kind::Deployment).await;
    expect(
        &report,
        "webhook-routing",
        Outcome::Warn,
        &["namespaceSelector was not evaluated"],
    );
    expect(&report, "opt-in", Outcome::Pass, &[]);
    expect(&report, "dry-run", Outcome::Pass, &[]);
    assert_eq!(exit_status(&report), 0);

    // Opted in by its ServiceAccount? Not known here: the dry run is still made.
    w.api
        .put(DEPLOYMENTS, deployment("shop", json!({}), json!({})));
    let report = w.doctor_without(NAMESPACES, Kind::Deployment).await;
    expect(
        &report,
        "opt-in",
        Outcome::Warn,
        &["namespace shop could not be read"],
    );
    assert_ne!(step(&report, "dry-run").result, Outcome::Skip);
}

#[tokio::test]
async fn m2m_token_missing() {
    let w = world().await;
    let report = w.doctor_without(TOKENS, Kind::Deployment).await;
    let says = ["init container waits", "apply an M2MToken named payments"];
    expect(&report, "m2m-token", Outcome::Fail, &says);
    expect(&report, "token", Outcome::Skip, &["no M2MToken"]);
    assert_eq!(exit_status(&report), 1);
}

#[tokio::test]
async fn m2m_token_not_ready() {
    let w = world().await;
    let mut t = m2m_token(&w.emu.issuer(), AUDIENCE, ROLE);
    t["status"]["conditions"][0] = json!({"type": "Ready", "status": "False", "reason": "invalid_client",
        "message": "IDaaS refused the client credentials", "lastTransitionTime": "2026-01-01T00:00:00Z"});
    w.api.put(TOKENS, t);
    let report = w.doctor(&w.settings(Kind::Deployment, "web")).await;
    let says = [
        "invalid_client: IDaaS refused the client credentials",
        "describe m2mtoken payments",
    ];
    expect(&report, "m2m-token", Outcome::Fail, &says);
    assert_eq!(exit_status(&report), 1);
}

#[tokio::test]
async fn secret_missing() {
    let w = world().await;
    let mut t = m2m_token(&w.emu.issuer(), AUDIENCE, ROLE);
    t["spec"]["secretName"] = json!("payments-token");
    w.api.put(TOKENS, t);
    let report = w.doctor(&w.settings(Kind::Deployment, "web")).await;
    expect(
        &report,
        "secret",
        Outcome::Fail,
        &["Secret payments-token not found"],
    );
    expect(&report, "token", Outcome::Skip, &[]);
    assert_eq!(exit_status(&report), 1);
}

#[tokio::test]
async fn token_fails_a_check() {
    let w = world().await;
    // The M2MToken expects another audience than the token carries.
    w.api
        .put(TOKENS, m2m_token(&w.emu.issuer(), "api://other", ROLE));
    let report = w.doctor(&w.settings(Kind::Deployment, "web")).await;
    expect(
        &report,
        "token",
        Outcome::Fail,
        &["AuthenticationFail.OIDCToken.AudienceNotMatch"],
    );
    assert_eq!(exit_status(&report), 1);

    // Two days later the same token has expired.
    w.api
        .put(TOKENS, m2m_token(&w.emu.issuer(), AUDIENCE, ROLE));
    let mut settings = w.settings(Kind::Deployment, "web");
    settings.now += 2 * 86_400;
    let report = w.doctor(&settings).await;
    expect(
        &report,
        "token",
        Outcome::Fail,
        &["AuthenticationFail.OIDCToken.Expired", "expired at"],
    );
    let v: Value = serde_json::from_str(&report.json()).unwrap();
    assert_eq!(v["tokenChecks"]["ok"], false);
    assert_eq!(exit_status(&report), 1);
}

#[tokio::test]
async fn running_pod_not_injected() {
    let w = world().await;
    w.run_pod(false);
    let report = w.doctor(&w.settings(Kind::Pod, POD)).await;
    let says = [
        "carries no idaas-projector.io/injected annotation",
        "kubectl -n shop rollout restart deployment/web",
    ];
    expect(&report, "pod-injection", Outcome::Fail, &says);
    // The dry run shows what a new pod would get.
    expect(&report, "dry-run", Outcome::Pass, &[]);
    assert_eq!(exit_status(&report), 1);
}

#[tokio::test]
async fn running_pod_stale() {
    let w = world().await;
    w.run_pod(true);
    let moved = "acs:ram::1234567890123456:role/payments-v2";
    w.api
        .put(TOKENS, m2m_token(&w.emu.issuer(), AUDIENCE, moved));
    let report = w.doctor(&w.settings(Kind::Pod, POD)).await;
    let change = format!("ALIBABA_CLOUD_ROLE_ARN: {ROLE} → {moved}");
    let says = [
        "stale",
        "from the dry run",
        &change,
        "rollout restart deployment/web",
    ];
    expect(&report, "pod-injection", Outcome::Fail, &says);
    assert_eq!(exit_status(&report), 1);

    // Without a dry run, classify compares here, and says so.
    w.api.forbid("POST", "/api/v1/namespaces/shop/pods");
    let report = w.doctor(&w.settings(Kind::Pod, POD)).await;
    expect(&report, "dry-run", Outcome::Warn, &[]);
    let says = [
        "stale",
        "compared here",
        "no --default-oidc-provider-arn",
        &change,
    ];
    expect(&report, "pod-injection", Outcome::Fail, &says);
}

#[tokio::test]
async fn dry_run_denied() {
    let w = world().await;
    let annotations = json!({"idaas-projector.io/m2m-token": "payments",
        "idaas-projector.io/only-containers": "sidecar"});
    w.api
        .put(DEPLOYMENTS, deployment("shop", annotations, json!({})));
    let report = w.doctor(&w.settings(Kind::Deployment, "web")).await;
    expect(&report, "opt-in", Outcome::Pass, &[]);
    let says = [
        "admission webhook \"m2m-token.idaas-projector.io\" denied the request",
        "\"sidecar\"",
    ];
    expect(&report, "dry-run", Outcome::Fail, &says);
    assert!(report.injection.is_none());
    assert_eq!(exit_status(&report), 1);
}

#[tokio::test]
async fn sts_refusal_is_explained() {
    let w = world().await;
    let sts = StsEmulator::start(StsConfig {
        client_ids: vec!["api://someone-else".to_owned()],
        ..w.sts_config()
    })
    .await
    .unwrap();
    let mut settings = w.settings(Kind::Deployment, "web");
    settings.assume_role = Some(sts_settings(&sts));
    let report = w.doctor(&settings).await;
    let says = [
        "AuthenticationFail.OIDCToken.AudienceNotMatch",
        "Client IDs",
    ];
    expect(&report, "assume-role", Outcome::Fail, &says);
    let v: Value = serde_json::from_str(&report.json()).unwrap();
    assert_eq!(
        v["assumeRole"]["error"]["code"],
        "AuthenticationFail.OIDCToken.AudienceNotMatch"
    );
    assert_eq!(exit_status(&report), 1);
}

#[tokio::test]
async fn secret_forbidden_skips_the_token_checks() {
    let w = world().await;
    w.api.forbid("GET", "/api/v1/namespaces/shop/secrets");
    let report = w.doctor(&w.settings(Kind::Deployment, "web")).await;
    let says = ["you may not read Secret payments (needs get on it): token checks skipped"];
    expect(&report, "secret", Outcome::Warn, &says);
    expect(&report, "token", Outcome::Skip, &[]);
    assert!(report.token_checks.is_none());
    assert_eq!(exit_status(&report), 0);
}

#[tokio::test]
async fn dry_run_forbidden_is_a_warning() {
    let w = world().await;
    w.api.forbid("POST", "/api/v1/namespaces/shop/pods");
    let report = w.doctor(&w.settings(Kind::Deployment, "web")).await;
    let says = [
        "you may not create pods in shop",
        "the dry run needs create on pods and writes nothing",
    ];
    expect(&report, "dry-run", Outcome::Warn, &says);
    // What the webhook's rules give here stands in for the dry run.
    let injection = report.injection.as_ref().unwrap();
    assert_eq!(injection.source, "local");
    assert_eq!(injection.var("ALIBABA_CLOUD_ROLE_ARN"), Some(ROLE));
    assert_eq!(exit_status(&report), 0);
}

#[tokio::test]
async fn bad_usage_and_missing_targets() {
    use clap::Parser as _;
    let w = world().await;
    #[derive(clap::Parser)]
    struct P {
        #[command(flatten)]
        a: DoctorArgs,
    }
    let args = |v: &[&str]| {
        P::try_parse_from(std::iter::once("doctor").chain(v.iter().copied()))
            .unwrap()
            .a
    };
    let run = |a| idaas_projector::cli::doctor::run_with(w.api.client(), a);
    let e = run(args(&[
        "deployment",
        "web",
        "--default-sts-region",
        "Hangzhou",
    ]))
    .await
    .unwrap_err();
    assert!(matches!(e, CommandError::Usage(m) if m.contains("--default-sts-region")));
    let e = run(args(&["pod", "Not_A_Name"])).await.unwrap_err();
    assert!(matches!(e, CommandError::Usage(_)));
    let e = run(args(&["deployment", "nope", "-n", "shop"]))
        .await
        .unwrap_err();
    assert!(
        matches!(e, CommandError::Failed(m) if m == "deployment nope in namespace shop not found")
    );
    // The kubeconfig context's namespace (the fake client's is "default") is the default.
    let e = run(args(&["deployment", "web"])).await.unwrap_err();
    assert!(matches!(e, CommandError::Failed(m) if m.contains("in namespace default")));
}

// ---- the binary ----

struct Ran {
    status: i32,
    stdout: String,
    stderr: String,
}

/// Runs `idaas-projector doctor ARGS` with this kubeconfig and trace logs (the fake API and the
/// emulators keep serving on this test's runtime meanwhile).
async fn doctor_binary(kubeconfig: &std::path::Path, args: &[&str]) -> Ran {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_idaas-projector"));
    c.arg("doctor")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "trace")
        .env("IDAAS_PROJECTOR_LOG_LEVEL", "trace")
        .env_remove("IDAAS_PROJECTOR_NAMESPACE")
        .env_remove("IDAAS_PROJECTOR_OUTPUT");
    let out = tokio::task::spawn_blocking(move || c.output())
        .await
        .unwrap()
        .unwrap();
    Ran {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_exit_statuses_json_and_no_token_in_any_output() {
    let w = world().await;
    let sts = w.sts().await;
    w.run_pod(true);
    let dir = tempfile::tempdir().unwrap();
    let config = fake_api::kubeconfig(dir.path(), &w.api.serve().await, "shop");
    let endpoint = sts.endpoint();
    let signature = w.token.rsplit('.').next().unwrap().to_owned();
    for output in ["json", "text"] {
        let ran = doctor_binary(
            &config,
            &[
                "pod",
                POD,
                "--assume-role",
                "--sts-endpoint",
                &endpoint,
                "--output",
                output,
            ],
        )
        .await;
        assert_eq!(ran.status, 0, "{}\n{}", ran.stdout, ran.stderr);
        assert!(!ran.stderr.is_empty(), "trace logs were written");
        for (name, text) in [("stdout", &ran.stdout), ("stderr", &ran.stderr)] {
            assert!(!text.contains(&w.token), "the token is in {name}");
            assert!(
                !text.contains(&signature),
                "the token's signature is in {name}"
            );
        }
        if output == "json" {
            let v: Value = serde_json::from_str(&ran.stdout).unwrap();
            assert_eq!(v["ok"], true);
            assert_eq!(
                v["target"],
                json!({"kind": "pod", "namespace": "shop", "name": POD})
            );
            let steps = v["steps"].as_array().unwrap();
            assert_eq!(steps.len(), idaas_projector::doctor::report::STEPS.len());
            for (s, (id, title)) in steps.iter().zip(idaas_projector::doctor::report::STEPS) {
                assert_eq!((&s["id"], &s["title"]), (&json!(id), &json!(title)));
            }
            for s in v["steps"].as_array().unwrap() {
                assert_eq!(s["result"], "pass", "{s}");
                assert!(
                    s.get("fix").is_some() && s.get("title").is_some() && s.get("detail").is_some()
                );
            }
        }
    }
    assert_eq!(sts.successes(), 2);

    // A failing step: exit 1, and one error line on stderr.
    let mut t = m2m_token(&w.emu.issuer(), AUDIENCE, ROLE);
    t["status"]["conditions"][0]["status"] = json!("False");
    w.api.put(TOKENS, t);
    let ran = doctor_binary(&config, &["deployment", "web", "--output", "json"]).await;
    assert_eq!(ran.status, 1, "{}\n{}", ran.stdout, ran.stderr);
    let v: Value = serde_json::from_str(&ran.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert!(
        ran.stderr.contains("error: 1 step failed: m2m-token"),
        "{}",
        ran.stderr
    );

    // Bad usage: exit 2, nothing asked of the API.
    let before = w.api.seen().len();
    let ran = doctor_binary(
        &config,
        &["deployment", "web", "--default-oidc-provider-arn", "bad"],
    )
    .await;
    assert_eq!(ran.status, 2, "{}", ran.stderr);
    assert_eq!(w.api.seen().len(), before);
}
