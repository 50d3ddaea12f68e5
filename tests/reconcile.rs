//! Reconcile scenarios against kube's `tower_test` mock API (every request's method, path and
//! body asserted, every answer scripted) and the in-process IDaaS emulator; and the running
//! controller against the fake API, for what it never asks the API server for.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use common::mock_api::{self, MockApi};
use common::requeue_after;
use http::{Method, StatusCode};
use idaas_projector::controller::reconcile::{Context, reconcile};
use idaas_projector::crd::{
    ClientAuth, ClientAuthMethod, M2MToken, M2MTokenSpec, SecretKeyRef, ServiceAccountAssertion,
};
use idaas_projector::emulator::idaas::{EmulatorConfig, Fault, IdaasEmulator, OidcIssuer};
use idaas_projector::idaas::{AllowedOrigins, DEFAULT_ALLOWED_ISSUERS, HttpConfig, IdaasClient};
use idaas_projector::metrics::{Metrics, refresh_reason_label};
use idaas_projector::testing::{self, install_provider, reconcile_context};
use idaas_projector::time::unix_now;
use kube::runtime::controller::Action;
use serde_json::{Value, json};

const NS: &str = "shop";
const NAME: &str = "payments";
const UID: &str = "5d1c1e52-7a0e-4c4e-9a55-0d6f5e0c0001";
const CLIENT_ID: &str = "app_payments";
const CLIENT_SECRET: &str = "s3cr3t-client-value";
const AUDIENCE: &str = "api://payments";

async fn emulator(lifetime: Duration) -> IdaasEmulator {
    testing::emulator(CLIENT_ID, CLIENT_SECRET, AUDIENCE, lifetime).await
}

fn m2mtoken(issuer: &str, max_token_age: &str) -> M2MToken {
    let mut t = M2MToken::new(
        NAME,
        M2MTokenSpec {
            issuer: issuer.into(),
            token_endpoint: None,
            jwks_uri: None,
            audience: AUDIENCE.into(),
            scopes: vec![".all".into()],
            client_id: CLIENT_ID.into(),
            client_auth: ClientAuth {
                method: ClientAuthMethod::ClientSecretPost,
                secret_ref: Some(SecretKeyRef {
                    name: "payments-idaas-client".into(),
                    key: "client_secret".into(),
                }),
                federated_credential_name: None,
                service_account: None,
            },
            secret_name: None,
            role_arn: None,
            oidc_provider_arn: None,
            max_token_age: max_token_age.into(),
        },
    );
    t.metadata.namespace = Some(NS.into());
    t.metadata.uid = Some(UID.into());
    t.metadata.generation = Some(1);
    t.metadata.resource_version = Some("100".into());
    t
}

/// An unsigned token-shaped JWT with chosen times (reading a Secret back checks no signature).
fn stored_jwt(issuer: &str, iat: i64, exp: i64) -> String {
    let b64 = |v: Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&v).unwrap())
    };
    format!(
        "{}.{}.c2ln",
        b64(json!({"alg": "RS256", "kid": "k1", "typ": "JWT"})),
        b64(json!({"iss": issuer, "sub": CLIENT_ID, "aud": AUDIENCE, "iat": iat, "exp": exp}))
    )
}

fn managed_secret(token: &str, iat: i64, exp: i64, creds_version: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {
            "name": NAME, "namespace": NS, "resourceVersion": "7",
            "labels": {"app.kubernetes.io/managed-by": "idaas-projector", "idaas-projector.io/m2m-token": NAME},
            "annotations": {
                "idaas-projector.io/issued-at": idaas_projector::time::rfc3339(iat),
                "idaas-projector.io/expires-at": idaas_projector::time::rfc3339(exp),
                "idaas-projector.io/generation": "1",
                "idaas-projector.io/credentials-version": creds_version,
            },
            "ownerReferences": [{"apiVersion": "idaas-projector.io/v1alpha1", "kind": "M2MToken",
                "name": NAME, "uid": UID, "controller": true, "blockOwnerDeletion": true}]
        },
        "type": "Opaque",
        "data": {"token": base64::engine::general_purpose::STANDARD.encode(token)}
    })
}

/// The managed Secret holding a fresh token from `emu` (issued a minute ago, valid for an hour),
/// written with credentials version `creds_version`.
fn fresh_secret(emu: &IdaasEmulator, creds_version: &str) -> Value {
    let t = unix_now();
    let token = stored_jwt(&emu.issuer(), t - 60, t + 3540);
    managed_secret(&token, t - 60, t + 3540, creds_version)
}

/// The credentials Secret, open to the projector (its label) and to every M2MToken.
fn credentials_secret() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "payments-idaas-client", "namespace": NS, "resourceVersion": "42",
            "labels": {"idaas-projector.io/client-credentials": "true"}},
        "type": "Opaque",
        "data": {"client_secret": base64::engine::general_purpose::STANDARD.encode(CLIENT_SECRET)}
    })
}

/// The API server's 409 answer: `reason` `AlreadyExists` (a create) or `Conflict` (a write with a
/// stale `resourceVersion`).
fn conflict(reason: &str) -> (StatusCode, Value) {
    let message = match reason {
        "AlreadyExists" => format!("secrets \"{NAME}\" already exists"),
        _ => format!(
            "Operation cannot be fulfilled on secrets \"{NAME}\": the object has been modified; please apply your changes to the latest version and try again"
        ),
    };
    testing::api_failure(409, reason, &message)
}

fn not_found(name: &str) -> (StatusCode, Value) {
    let mut status = testing::not_found();
    status["message"] = json!(format!("secrets \"{name}\" not found"));
    (StatusCode::NOT_FOUND, status)
}

struct Harness {
    api: MockApi,
    ctx: Arc<Context>,
}

/// A reconciler whose IDaaS client may send requests to the origins `allowed` lists (the
/// emulator's, in most tests).
fn harness(allowed: &str, metrics: Arc<Metrics>) -> Harness {
    install_provider();
    let (client, api) = mock_api::pair();
    let idaas = IdaasClient::new(&HttpConfig {
        connect_timeout: Duration::from_secs(2),
        timeout: Duration::from_secs(2),
        ca_file: None,
        allowed: AllowedOrigins::parse(allowed).unwrap(),
    })
    .unwrap();
    let mut ctx = reconcile_context(client, idaas, 4);
    ctx.metrics = metrics;
    Harness {
        api,
        ctx: Arc::new(ctx),
    }
}

/// Expects one request; answers it; returns its body as JSON (Null when empty). An answer of `{}`
/// stands for the object as written (the status subresource answers with the whole M2MToken).
async fn expect(
    api: &mut MockApi,
    method: Method,
    path: &str,
    answer: (StatusCode, Value),
) -> Value {
    let (sent, reply) = api.next(method, path).await;
    if sent.method == Method::PATCH && path.contains("/secrets/") {
        sent.assert_query(&["fieldManager=idaas-projector", "force=true"]);
        assert_eq!(
            sent.headers["content-type"], "application/apply-patch+yaml",
            "server-side apply"
        );
    }
    if sent.method == Method::POST && path == SECRETS_PATH {
        sent.assert_query(&["fieldManager=idaas-projector"]);
        assert!(
            !sent.query.contains("force"),
            "a plain create: {}",
            sent.query
        );
    }
    let body = sent.body;
    let (status, mut answer) = answer;
    if answer == json!({}) {
        answer = if path.ends_with("/status") {
            let mut t = serde_json::to_value(m2mtoken("https://issuer.example", "12h")).unwrap();
            t["status"] = body["status"].clone();
            t
        } else {
            let mut echoed = body.clone();
            if echoed["metadata"].is_null() {
                echoed["metadata"] = json!({"name": "x", "namespace": NS});
            }
            echoed
        };
    }
    reply.send(status, &answer);
    body
}

/// The next two requests are an Event with `reason` and the status patch: answers both and
/// returns the status patch sent.
async fn expect_event_and_status(api: &mut MockApi, reason: &str) -> Value {
    let event = expect(api, Method::POST, EVENTS_PATH, (StatusCode::OK, json!({}))).await;
    assert_eq!(event["reason"], reason);
    expect_status_patch(api).await
}

/// The next request is the M2MToken's status patch: answers it and returns the body sent.
async fn expect_status_patch(api: &mut MockApi) -> Value {
    expect(api, Method::PATCH, STATUS_PATH, (StatusCode::OK, json!({}))).await
}

const SECRET_PATH: &str = "/api/v1/namespaces/shop/secrets/payments";
const SECRETS_PATH: &str = "/api/v1/namespaces/shop/secrets";
const CREDS_PATH: &str = "/api/v1/namespaces/shop/secrets/payments-idaas-client";
const STATUS_PATH: &str =
    "/apis/idaas-projector.io/v1alpha1/namespaces/shop/m2mtokens/payments/status";
const EVENTS_PATH: &str = "/apis/events.k8s.io/v1/namespaces/shop/events";

fn ready(status_patch: &Value) -> (String, String, String) {
    let c = &status_patch["status"]["conditions"][0];
    assert_eq!(c["type"], "Ready");
    (
        c["status"].as_str().unwrap().to_owned(),
        c["reason"].as_str().unwrap().to_owned(),
        c["message"].as_str().unwrap().to_owned(),
    )
}

/// The Secret written on a successful refresh: created without a `resourceVersion`, or applied
/// with the one read (`resource_version`) as the precondition.
fn assert_applied_secret(body: &Value, resource_version: Option<&str>) -> String {
    assert_eq!(
        body["metadata"]["resourceVersion"].as_str(),
        resource_version,
        "the precondition of the write"
    );
    assert_eq!(body["kind"], "Secret");
    assert_eq!(body["type"], "Opaque");
    assert_eq!(body["metadata"]["name"], NAME);
    assert_eq!(
        body["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "idaas-projector"
    );
    assert_eq!(
        body["metadata"]["labels"]["idaas-projector.io/m2m-token"],
        NAME
    );
    let owner = &body["metadata"]["ownerReferences"][0];
    assert_eq!(owner["uid"], UID);
    assert_eq!(owner["controller"], true);
    assert_eq!(owner["kind"], "M2MToken");
    let ann = &body["metadata"]["annotations"];
    assert!(
        idaas_projector::time::parse_rfc3339(ann["idaas-projector.io/issued-at"].as_str().unwrap())
            .is_some()
    );
    assert!(
        idaas_projector::time::parse_rfc3339(
            ann["idaas-projector.io/expires-at"].as_str().unwrap()
        )
        .is_some()
    );
    assert_eq!(ann["idaas-projector.io/credentials-version"], "42");
    let token = base64::engine::general_purpose::STANDARD
        .decode(body["data"]["token"].as_str().unwrap())
        .unwrap();
    let token = String::from_utf8(token).unwrap();
    assert_eq!(token.split('.').count(), 3);
    assert!(!token.ends_with('\n'), "no trailing newline");
    token
}

/// Answers the two reads of a reconcile: the managed Secret with `managed`, the credentials
/// Secret with `credentials`.
async fn answer_reads(api: &mut MockApi, managed: (StatusCode, Value), credentials: Value) {
    expect(api, Method::GET, SECRET_PATH, managed).await;
    expect(api, Method::GET, CREDS_PATH, (StatusCode::OK, credentials)).await;
}

async fn run_refresh_success(
    h: &mut Harness,
    t: M2MToken,
    existing: (StatusCode, Value),
) -> Action {
    run_refresh_success_with(h, t, existing, credentials_secret())
        .await
        .0
}

/// A refresh that writes the Secret: a create (POST) when `existing` is a 404, else a
/// server-side apply (PATCH) with the `resourceVersion` read. Returns the Secret written.
async fn run_refresh_success_with(
    h: &mut Harness,
    t: M2MToken,
    existing: (StatusCode, Value),
    credentials: Value,
) -> (Action, Value) {
    let task = spawn_reconcile(h, t);
    let read_version = existing.1["metadata"]["resourceVersion"]
        .as_str()
        .map(str::to_owned);
    let created = existing.0 == StatusCode::NOT_FOUND;
    answer_reads(&mut h.api, existing, credentials).await;
    let applied = if created {
        expect(
            &mut h.api,
            Method::POST,
            SECRETS_PATH,
            (StatusCode::CREATED, json!({})),
        )
        .await
    } else {
        expect(
            &mut h.api,
            Method::PATCH,
            SECRET_PATH,
            (StatusCode::OK, json!({})),
        )
        .await
    };
    assert_applied_secret(&applied, read_version.as_deref());
    let event = expect(
        &mut h.api,
        Method::POST,
        EVENTS_PATH,
        (StatusCode::OK, json!({})),
    )
    .await;
    assert_eq!(event["reason"], "Refreshed");
    assert_eq!(event["type"], "Normal");
    let status = expect_status_patch(&mut h.api).await;
    let (s, reason, _) = ready(&status);
    assert_eq!((s.as_str(), reason.as_str()), ("True", "Refreshed"));
    assert_eq!(status["status"]["subject"], CLIENT_ID);
    assert_eq!(status["status"]["observedGeneration"], 1);
    // The sweep's pod counts are its own: never in the reconciler's patch.
    assert!(status["status"].get("pods").is_none(), "{status}");
    for field in ["issuedAt", "expiresAt", "refreshAt", "lastRefreshTime"] {
        assert!(status["status"][field].is_string(), "{field}");
    }
    let action = task.await.unwrap().unwrap();
    h.api.expect_no_more().await;
    (action, applied)
}

fn spawn_reconcile(
    h: &Harness,
    t: M2MToken,
) -> tokio::task::JoinHandle<Result<Action, idaas_projector::controller::reconcile::Error>> {
    let ctx = h.ctx.clone();
    tokio::spawn(async move { reconcile(Arc::new(t), ctx).await })
}

#[tokio::test]
async fn first_creation_fetches_and_writes_the_secret() {
    let emu = emulator(Duration::from_secs(3600)).await;
    let metrics = Arc::new(Metrics::new());
    let mut h = harness(&emu.origin(), metrics.clone());
    let mut t = m2mtoken(&emu.issuer(), "12h");
    t.status = Some(idaas_projector::crd::M2MTokenStatus {
        pods: Some(idaas_projector::crd::PodCounts {
            injected: 3,
            not_injected: 1,
            stale: 0,
        }),
        ..Default::default()
    });
    let action = run_refresh_success(&mut h, t, not_found(NAME)).await;
    assert_eq!(emu.token_requests(), 1);
    // Next look: no later than the re-check interval.
    assert_recheck(&action);
    let text = metrics.encode().unwrap();
    assert!(
        text.contains(
            "idaas_projector_token_refreshes_total{result=\"success\",reason=\"Refreshed\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("idaas_projector_secret_writes_total 1"),
        "{text}"
    );
    assert!(
        text.contains(
            "idaas_projector_token_expiry_timestamp_seconds{namespace=\"shop\",name=\"payments\"}"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn fresh_token_means_no_idaas_call_and_no_write() {
    let emu = emulator(Duration::from_secs(3600)).await;
    let mut h = harness(&emu.origin(), Arc::new(Metrics::new()));
    let secret = fresh_secret(&emu, "42");
    // After a restart the status is empty: it is filled in from the Secret, without a fetch.
    let (status, action) = look_without_status(&mut h, &emu.issuer(), &secret).await;
    let (s, reason, _) = ready(&status);
    assert_eq!((s.as_str(), reason.as_str()), ("True", "TokenValid"));
    assert_eq!(
        emu.token_requests(),
        0,
        "no IDaaS call while the token is fresh"
    );
    assert_recheck(&action);
}

/// The next look at a fresh token: the re-check interval (60 s here) less up to a fifth.
fn assert_recheck(action: &Action) {
    let d = requeue_after(action);
    assert!(
        d >= Duration::from_secs(48) && d <= Duration::from_secs(60),
        "within the jittered re-check interval: {action:?}"
    );
}

#[tokio::test]
async fn unchanged_status_is_not_patched_again() {
    let emu = emulator(Duration::from_secs(3600)).await;
    let mut h = harness(&emu.origin(), Arc::new(Metrics::new()));
    let secret_json = fresh_secret(&emu, "42");

    // First pass: learn the status the reconciler writes.
    let (status, _) = look_without_status(&mut h, &emu.issuer(), &secret_json).await;

    // Second pass with that status in place: one GET (the managed Secret) and nothing else.
    let mut t2 = m2mtoken(&emu.issuer(), "12h");
    t2.status = Some(serde_json::from_value(status["status"].clone()).unwrap());
    let task = spawn_reconcile(&h, t2);
    expect(
        &mut h.api,
        Method::GET,
        SECRET_PATH,
        (StatusCode::OK, secret_json),
    )
    .await;
    task.await.unwrap().unwrap();
    h.api.expect_no_more().await;
}

#[tokio::test]
async fn refresh_due_fetches_applies_and_updates_status() {
    let emu = emulator(Duration::from_secs(3600)).await;
    let mut h = harness(&emu.origin(), Arc::new(Metrics::new()));
    let t = unix_now();
    // Issued 50 minutes ago, expires in 10: past 2/3 of its hour.
    let old = stored_jwt(&emu.issuer(), t - 3000, t + 600);
    run_refresh_success(
        &mut h,
        m2mtoken(&emu.issuer(), "12h"),
        (
            StatusCode::OK,
            managed_secret(&old, t - 3000, t + 600, "42"),
        ),
    )
    .await;
    assert_eq!(emu.token_requests(), 1);
}

#[tokio::test]
async fn max_token_age_reached_before_exp_refreshes() {
    let emu = emulator(Duration::from_secs(3600)).await;
    let mut h = harness(&emu.origin(), Arc::new(Metrics::new()));
    let t = unix_now();
    // Valid for another day, but issued 50 minutes ago with maxTokenAge 1h: 2/3 of the age passed.
    let old = stored_jwt(&emu.issuer(), t - 3000, t + 86_400);
    run_refresh_success(
        &mut h,
        m2mtoken(&emu.issuer(), "1h"),
        (
            StatusCode::OK,
            managed_secret(&old, t - 3000, t + 86_400, "42"),
        ),
    )
    .await;
    assert_eq!(emu.token_requests(), 1);
}

#[tokio::test]
async fn a_changed_credentials_secret_is_not_read_while_the_token_is_fresh_and_used_at_the_refresh()
{
    let emu = emulator(Duration::from_secs(3600)).await;
    let mut h = harness(&emu.origin(), Arc::new(Metrics::new()));
    let t = unix_now();
    // The Secret was written with credentials version 41; the credentials Secret is now at 42.
    let written = fresh_secret(&emu, "41");
    let (status, _) = look_without_status(&mut h, &emu.issuer(), &written).await;
    assert_eq!(ready(&status).0, "True");
    assert_eq!(emu.token_requests(), 0, "the fresh token is kept");

    // Once the token is due, the credentials Secret is read and its new version is used.
    let due = stored_jwt(&emu.issuer(), t - 3000, t + 600);
    let existing = (
        StatusCode::OK,
        managed_secret(&due, t - 3000, t + 600, "41"),
    );
    let (_, applied) = run_refresh_success_with(
        &mut h,
        m2mtoken(&emu.issuer(), "12h"),
        existing,
        credentials_secret(),
    )
    .await;
    assert_eq!(emu.token_requests(), 1);
    assert_eq!(
        applied["metadata"]["annotations"]["idaas-projector.io/credentials-version"],
        "42"
    );
}

#[tokio::test]
async fn a_rotated_client_secret_is_read_and_used_at_the_retry_after_invalid_client() {
    let emu = emulator(Duration::from_secs(3600)).await;
    let mut h = harness(&emu.origin(), Arc::new(Metrics::new()));
    let t = unix_now();
    let due = managed_secret(
        &stored_jwt(&emu.issuer(), t - 3000, t + 600),
        t - 3000,
        t + 600,
        "41",
    );
    // The client secret was rotated in IDaaS; the credentials Secret still holds the old one.
    let mut old = credentials_secret();
    old["metadata"]["resourceVersion"] = json!("41");
    old["data"]["client_secret"] = json!(base64::engine::general_purpose::STANDARD.encode("old"));
    let task = spawn_reconcile(&h, m2mtoken(&emu.issuer(), "12h"));
    answer_reads(&mut h.api, (StatusCode::OK, due.clone()), old).await;
    let status = expect_event_and_status(&mut h.api, "RefreshFailed").await;
    assert_eq!(ready(&status).1, "invalid_client");
    let action = task.await.unwrap().unwrap();
    h.api.expect_no_more().await;
    // The retry comes after the permanent-error wait (5 minutes), well before the default
    // re-check interval (15 minutes): the slow cadence is not what picks the new secret up.
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    assert!(requeue_after(&action) < Duration::from_secs(15 * 60));

    // The retry (the operator has put the new secret in the credentials Secret meanwhile): the
    // credentials Secret is read again, and the new version passes the backoff at once.
    let (_, applied) = run_refresh_success_with(
        &mut h,
        m2mtoken(&emu.issuer(), "12h"),
        (StatusCode::OK, due),
        credentials_secret(),
    )
    .await;
    assert_eq!(
        applied["metadata"]["annotations"]["idaas-projector.io/credentials-version"],
        "42"
    );
    assert_eq!(
        emu.issued_tokens(),
        1,
        "one token, fetched with the new secret"
    );
}

#[tokio::test]
async fn managed_secret_deleted_is_recreated() {
    let emu = emulator(Duration::from_secs(3600)).await;
    let mut h = harness(&emu.origin(), Arc::new(Metrics::new()));
    let mut t = m2mtoken(&emu.issuer(), "12h");
    // The status still says Ready from before the deletion.
    t.status = Some(
        serde_json::from_value(json!({
        "conditions": [{"type": "Ready", "status": "True", "reason": "Refreshed", "message": "old",
            "lastTransitionTime": "2026-11-28T10:00:00Z"}]}))
        .unwrap(),
    );
    run_refresh_success(&mut h, t, not_found(NAME)).await;
    assert_eq!(emu.token_requests(), 1);
}

#[tokio::test]
async fn a_deleted_managed_secret_is_recreated_at_the_next_look_within_the_recheck_interval() {
    let emu = emulator(Duration::from_secs(3600)).await;
    let mut h = harness(&emu.origin(), Arc::new(Metrics::new()));
    let secret = fresh_secret(&emu, "42");
    // A look at the fresh token: one GET, and the next look within the re-check interval (60 s
    // here; 15 minutes by default): the documented bound.
    let (_, action) = look_without_status(&mut h, &emu.issuer(), &secret).await;
    assert_recheck(&action);
    assert_eq!(emu.token_requests(), 0);
    // Someone deletes the Secret meanwhile: that next look finds none, fetches and creates it.
    run_refresh_success(&mut h, m2mtoken(&emu.issuer(), "12h"), not_found(NAME)).await;
    assert_eq!(emu.token_requests(), 1);
}

/// Starts a reconcile and answers its two reads: the managed Secret (`resourceVersion` 7) holds a
/// token that is due for refresh but still valid for 10 minutes; the credentials are usable.
async fn reconcile_due_token(
    h: &mut Harness,
    emu: &IdaasEmulator,
) -> tokio::task::JoinHandle<Result<Action, idaas_projector::controller::reconcile::Error>> {
    let t = unix_now();
    let old = stored_jwt(&emu.issuer(), t - 3000, t + 600);
    let task = spawn_reconcile(h, m2mtoken(&emu.issuer(), "12h"));
    let secret = managed_secret(&old, t - 3000, t + 600, "42");
    answer_reads(&mut h.api, (StatusCode::OK, secret), credentials_secret()).await;
    task
}

async fn failing_refresh(fault: Fault, want_reason: &str, want_event: &str) -> (Action, String) {
    let emu = emulator(Duration::from_secs(3600)).await;
    emu.push_fault(fault);
    let (action, message, _) = refresh_fails(&emu, want_reason, want_event).await;
    assert_eq!(
        emu.issued_tokens(),
        usize::from(want_event == "TokenRejected")
    );
    (action, message)
}

/// A due refresh against `emu` fails with `want_reason`: the credentials are read, the Secret is
/// not touched, a Warning event and Ready=False say why, and the metric counts it under the
/// reason's bounded label. Returns the requeue, the Ready message and the metrics text.
async fn refresh_fails(
    emu: &IdaasEmulator,
    want_reason: &str,
    want_event: &str,
) -> (Action, String, String) {
    let metrics = Arc::new(Metrics::new());
    let mut h = harness(&emu.origin(), metrics.clone());
    let task = reconcile_due_token(&mut h, emu).await;
    // No PATCH of the Secret: a failed refresh never touches it.
    let event = expect(
        &mut h.api,
        Method::POST,
        EVENTS_PATH,
        (StatusCode::OK, json!({})),
    )
    .await;
    assert_eq!(event["reason"], want_event);
    assert_eq!(event["type"], "Warning");
    let status = expect_status_patch(&mut h.api).await;
    let (s, reason, message) = ready(&status);
    assert_eq!(s, "False");
    assert_eq!(reason, want_reason, "{message}");
    assert!(
        message.contains("still holds a token valid until"),
        "{message}"
    );
    assert!(!message.contains(CLIENT_SECRET));
    let action = task.await.unwrap().unwrap();
    h.api.expect_no_more().await;
    let text = metrics.encode().unwrap();
    let label = refresh_reason_label(want_reason);
    assert!(text.contains(&format!("reason=\"{label}\"")), "{text}");
    (action, message, text)
}

#[tokio::test]
async fn idaas_500_keeps_the_secret_and_backs_off() {
    let (action, _) = failing_refresh(Fault::Status(500), "http_500", "RefreshFailed").await;
    let d = requeue_after(&action);
    assert!(
        d >= Duration::from_millis(500) && d <= Duration::from_secs(1),
        "first retry after about a second: {action:?}"
    );
}

#[tokio::test]
async fn invalid_client_is_permanent_and_retries_slowly() {
    let (action, _) = failing_refresh(
        Fault::OAuthError {
            status: 401,
            error: "invalid_client".into(),
        },
        "invalid_client",
        "RefreshFailed",
    )
    .await;
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
}

#[tokio::test]
async fn too_many_requests_honours_retry_after() {
    let (action, _) = failing_refresh(
        Fault::TooManyRequests {
            retry_after_secs: 30,
        },
        "http_429",
        "RefreshFailed",
    )
    .await;
    assert_eq!(
        requeue_after(&action),
        Duration::from_secs(30),
        "{action:?}"
    );
}

#[tokio::test]
async fn token_failing_a_check_is_never_written() {
    failing_refresh(Fault::WrongAudience, "AudienceNotMatch", "TokenRejected").await;
    failing_refresh(Fault::Hs256Token, "SymmetricAlgorithm", "TokenRejected").await;
    failing_refresh(Fault::AlreadyExpired, "Expired", "TokenRejected").await;
}

#[tokio::test]
async fn missing_credentials_secret_sets_a_clear_condition() {
    let (s, reason, message) = run_credentials_problem(not_found("payments-idaas-client")).await;
    assert_eq!(
        (s.as_str(), reason.as_str()),
        ("False", "CredentialsSecretNotFound")
    );
    assert!(message.contains("payments-idaas-client"), "{message}");
}

#[tokio::test]
async fn a_foreign_secret_with_the_same_name_is_left_alone() {
    let emu = emulator(Duration::from_secs(3600)).await;
    let mut h = harness(&emu.origin(), Arc::new(Metrics::new()));
    let task = spawn_reconcile(&h, m2mtoken(&emu.issuer(), "12h"));
    let foreign = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": NAME, "namespace": NS}, "data": {"password": "aHVudGVyMg=="}});
    expect(
        &mut h.api,
        Method::GET,
        SECRET_PATH,
        (StatusCode::OK, foreign),
    )
    .await;
    let status = expect_status_patch(&mut h.api).await;
    let (s, reason, _) = ready(&status);
    assert_eq!((s.as_str(), reason.as_str()), ("False", "SecretConflict"));
    task.await.unwrap().unwrap();
    h.api.expect_no_more().await;
    assert_eq!(emu.token_requests(), 0);
}

/// An `invalid_client` failure, then a reconcile that backs off (the two reads and nothing
/// else); `between` runs after each. Returns the harness and the emulator.
async fn failure_then_backoff(between: impl Fn(&Harness)) -> (Harness, IdaasEmulator) {
    let emu = emulator(Duration::from_secs(3600)).await;
    emu.push_fault(Fault::OAuthError {
        status: 401,
        error: "invalid_client".into(),
    });
    let mut h = harness(&emu.origin(), Arc::new(Metrics::new()));
    let issuer = emu.issuer();
    for round in 0..2 {
        let task = spawn_reconcile(&h, m2mtoken(&issuer, "12h"));
        answer_reads(&mut h.api, not_found(NAME), credentials_secret()).await;
        if round == 0 {
            expect(
                &mut h.api,
                Method::POST,
                EVENTS_PATH,
                (StatusCode::OK, json!({})),
            )
            .await;
            expect_status_patch(&mut h.api).await;
        }
        task.await.unwrap().unwrap();
        h.api.expect_no_more().await;
        between(&h);
    }
    assert_eq!(emu.token_requests(), 1);
    (h, emu)
}

#[tokio::test]
async fn backoff_gates_a_second_reconcile() {
    // After a failure, a reconcile triggered by the status patch itself does not call IDaaS again.
    failure_then_backoff(|_| {}).await;
}

#[tokio::test]
async fn api_errors_back_off_and_reset_after_success() {
    use idaas_projector::controller::reconcile::{Error, error_policy};
    let h = harness(DEFAULT_ALLOWED_ISSUERS, Arc::new(Metrics::new()));
    let t = Arc::new(m2mtoken("https://issuer.example", "12h"));
    let delays: Vec<Duration> = (0..12)
        .map(|_| {
            requeue_after(&error_policy(
                t.clone(),
                &Error::MissingField("namespace"),
                h.ctx.clone(),
            ))
        })
        .collect();
    assert!(delays[0] <= Duration::from_secs(1));
    assert!(delays[5] >= Duration::from_secs(16), "{delays:?}");
    assert!(delays.iter().all(|d| *d <= Duration::from_secs(300)));
    assert!(delays[11] >= Duration::from_secs(150), "{delays:?}");
    let text = h.ctx.metrics.encode().unwrap();
    assert!(
        text.contains("idaas_projector_reconcile_errors_total{error=\"missing_field\"} 12"),
        "{text}"
    );
}

/// Runs one reconcile that stops at the credentials Secret (the API answers its read with
/// `credentials`) and returns its Ready condition (status, reason, message); asserts that nothing
/// else was sent, to the API or to IDaaS, and that it looks again after the re-check interval.
async fn run_credentials_problem(credentials: (StatusCode, Value)) -> (String, String, String) {
    let emu = emulator(Duration::from_secs(3600)).await;
    let mut h = harness(&emu.origin(), Arc::new(Metrics::new()));
    let task = spawn_reconcile(&h, m2mtoken(&emu.issuer(), "12h"));
    expect(&mut h.api, Method::GET, SECRET_PATH, not_found(NAME)).await;
    expect(&mut h.api, Method::GET, CREDS_PATH, credentials).await;
    let status = expect_status_patch(&mut h.api).await;
    let action = task.await.unwrap().unwrap();
    h.api.expect_no_more().await;
    assert_eq!(emu.token_requests(), 0, "the credentials were never sent");
    assert_eq!(action, Action::requeue(Duration::from_secs(60)));
    let condition = ready(&status);
    assert!(!condition.2.contains(CLIENT_SECRET), "{}", condition.2);
    condition
}

#[tokio::test]
async fn a_credentials_secret_without_the_label_is_not_used() {
    for label in [
        json!(null),
        json!({"idaas-projector.io/client-credentials": "false"}),
    ] {
        let mut creds = credentials_secret();
        creds["metadata"]["labels"] = label;
        let (s, reason, message) = run_credentials_problem((StatusCode::OK, creds)).await;
        assert_eq!(
            (s.as_str(), reason.as_str()),
            ("False", "CredentialsNotAllowed")
        );
        assert_eq!(
            message,
            "credentials Secret \"payments-idaas-client\" is not open to the projector: add the label idaas-projector.io/client-credentials: \"true\" to it"
        );
    }
}

#[tokio::test]
async fn a_credentials_secret_for_other_m2mtokens_is_not_used() {
    let mut creds = credentials_secret();
    creds["metadata"]["annotations"] =
        json!({"idaas-projector.io/allowed-m2m-tokens": "orders,invoices"});
    let (s, reason, message) = run_credentials_problem((StatusCode::OK, creds)).await;
    assert_eq!(
        (s.as_str(), reason.as_str()),
        ("False", "CredentialsNotAllowed")
    );
    assert_eq!(
        message,
        "credentials Secret \"payments-idaas-client\" does not allow M2MToken \"payments\": add \"payments\" to its annotation idaas-projector.io/allowed-m2m-tokens (now \"orders,invoices\")"
    );
}

#[tokio::test]
async fn a_credentials_secret_that_names_the_m2mtoken_is_used() {
    let emu = emulator(Duration::from_secs(3600)).await;
    let mut h = harness(&emu.origin(), Arc::new(Metrics::new()));
    let mut creds = credentials_secret();
    creds["metadata"]["annotations"] =
        json!({"idaas-projector.io/allowed-m2m-tokens": "orders, payments"});
    run_refresh_success_with(
        &mut h,
        m2mtoken(&emu.issuer(), "12h"),
        not_found(NAME),
        creds,
    )
    .await;
    assert_eq!(emu.token_requests(), 1);
}

/// After a write conflict: the reconcile sends nothing more, wrote no Secret, and looks again a
/// second later (the backoff's first step). Returns the metrics text.
async fn ends_without_a_write(
    h: &mut Harness,
    task: tokio::task::JoinHandle<Result<Action, idaas_projector::controller::reconcile::Error>>,
    metrics: &Metrics,
) -> String {
    let action = task.await.unwrap().unwrap();
    h.api.expect_no_more().await;
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(1)),
        "read again soon"
    );
    let text = metrics.encode().unwrap();
    assert!(
        text.contains("idaas_projector_secret_writes_total 0"),
        "{text}"
    );
    text
}

#[tokio::test]
async fn a_secret_created_by_someone_else_before_the_write_is_a_conflict() {
    // The read finds no Secret; by the time of the create, someone else has made one.
    let emu = emulator(Duration::from_secs(3600)).await;
    let metrics = Arc::new(Metrics::new());
    let mut h = harness(&emu.origin(), metrics.clone());
    let task = spawn_reconcile(&h, m2mtoken(&emu.issuer(), "12h"));
    answer_reads(&mut h.api, not_found(NAME), credentials_secret()).await;
    let created = expect(
        &mut h.api,
        Method::POST,
        SECRETS_PATH,
        conflict("AlreadyExists"),
    )
    .await;
    assert_applied_secret(&created, None);
    // No apply over it, no event: only the status.
    let status = expect_status_patch(&mut h.api).await;
    let (s, reason, message) = ready(&status);
    assert_eq!((s.as_str(), reason.as_str()), ("False", "SecretConflict"));
    assert!(
        message.starts_with("Secret \"payments\" was created by someone else"),
        "{message}"
    );
    ends_without_a_write(&mut h, task, &metrics).await;
}

#[tokio::test]
async fn our_secret_changed_before_the_write_is_read_again_soon() {
    let emu = emulator(Duration::from_secs(3600)).await;
    let metrics = Arc::new(Metrics::new());
    let mut h = harness(&emu.origin(), metrics.clone());
    let task = reconcile_due_token(&mut h, &emu).await;
    let applied = expect(&mut h.api, Method::PATCH, SECRET_PATH, conflict("Conflict")).await;
    assert_applied_secret(&applied, Some("7"));
    // Not a failed refresh: no event, no status, nothing else written.
    let text = ends_without_a_write(&mut h, task, &metrics).await;
    assert!(!text.contains("result=\"failure\""), "{text}");
}

/// A reconcile of the M2MToken without a status (after a restart, or read from before the status
/// write) whose Secret is `written`: the two reads and a status patch, nothing else; returns the
/// status written and the action.
async fn look_without_status(h: &mut Harness, issuer: &str, written: &Value) -> (Value, Action) {
    let task = spawn_reconcile(h, m2mtoken(issuer, "12h"));
    // A fresh token: the managed Secret is read, the credentials Secret is not.
    expect(
        &mut h.api,
        Method::GET,
        SECRET_PATH,
        (StatusCode::OK, written.clone()),
    )
    .await;
    let status = expect_status_patch(&mut h.api).await;
    let action = task.await.unwrap().unwrap();
    h.api.expect_no_more().await;
    (status, action)
}

#[tokio::test]
async fn a_stale_read_after_a_refresh_keeps_the_refreshed_reason() {
    let emu = emulator(Duration::from_secs(3600)).await;
    let mut h = harness(&emu.origin(), Arc::new(Metrics::new()));
    let issuer = emu.issuer();
    let (_, mut written) = run_refresh_success_with(
        &mut h,
        m2mtoken(&issuer, "12h"),
        not_found(NAME),
        credentials_secret(),
    )
    .await;
    written["metadata"]["resourceVersion"] = json!("8");
    let (status, _) = look_without_status(&mut h, &issuer, &written).await;
    let (s, reason, message) = ready(&status);
    assert_eq!((s.as_str(), reason.as_str()), ("True", "Refreshed"));
    assert!(
        message.starts_with("token for app_payments issued"),
        "{message}"
    );
    assert!(status["status"]["lastRefreshTime"].is_string());
    assert_eq!(emu.token_requests(), 1);

    // Once the M2MToken is gone, that report is forgotten with it.
    h.ctx.forget_deleted(|_, _| false);
    let (status, _) = look_without_status(&mut h, &issuer, &written).await;
    assert_eq!(ready(&status).1, "TokenValid");
}

#[tokio::test]
async fn the_failures_of_a_deleted_m2mtoken_are_forgotten() {
    use idaas_projector::controller::reconcile::{Error, error_policy};
    // Another namespace's or name's deletion leaves the failure alone: the second look backs off.
    let (mut h, emu) =
        failure_then_backoff(|h| h.ctx.forget_deleted(|ns, name| ns == NS && name == NAME)).await;
    let issuer = emu.issuer();
    let t = Arc::new(m2mtoken(&issuer, "12h"));
    let api_error = |h: &Harness| {
        requeue_after(&error_policy(
            t.clone(),
            &Error::MissingField("namespace"),
            h.ctx.clone(),
        ))
    };
    for _ in 0..6 {
        api_error(&h);
    }
    assert!(api_error(&h) >= Duration::from_secs(32));

    // Deleted (and made again under the same name): no backoff is left of it.
    h.ctx.forget_deleted(|_, _| false);
    assert!(api_error(&h) <= Duration::from_secs(1));
    run_refresh_success(&mut h, m2mtoken(&issuer, "12h"), not_found(NAME)).await;
    assert_eq!(emu.token_requests(), 2);
}

#[tokio::test]
async fn a_jwks_answering_404_fails_the_refresh_and_keeps_the_secret() {
    let emu = emulator(Duration::from_secs(3600)).await;
    emu.set_serve_jwks(false);
    let (action, message, _) = refresh_fails(&emu, "JWKSUnavailable", "RefreshFailed").await;
    assert!(message.contains("HTTP 404"), "{message}");
    // Transient: retried with backoff, not at the 5-minute cap.
    assert!(
        requeue_after(&action) <= Duration::from_secs(1),
        "{action:?}"
    );
    // A token was issued, but with no JWKS to check it against it was not written.
    assert_eq!((emu.issued_tokens(), emu.jwks_requests()), (1, 1));
}

#[tokio::test]
async fn a_discovered_token_endpoint_on_another_origin_gets_no_request() {
    let emu = emulator(Duration::from_secs(3600)).await;
    let foreign = emu.origin().replace("127.0.0.1", "localhost");
    emu.set_advertised_token_endpoint(Some(format!("{foreign}/token")));
    let (action, message, _) = refresh_fails(&emu, "EndpointNotAllowed", "RefreshFailed").await;
    assert!(message.contains("localhost"), "{message}");
    assert!(message.contains("--allowed-issuers"), "{message}");
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    assert_eq!(emu.token_requests(), 0);
}

/// An M2MToken naming an origin that is not allowed: Ready=False with `want_reason`, no Secret
/// read (neither the managed one nor the credentials), no request to IDaaS.
async fn not_allowed(t: M2MToken, emu: &IdaasEmulator, want_reason: &str, names: &str) {
    let metrics = Arc::new(Metrics::new());
    let mut h = harness(&emu.origin(), metrics.clone());
    let task = spawn_reconcile(&h, t);
    let status = expect_status_patch(&mut h.api).await;
    let (s, reason, message) = ready(&status);
    assert_eq!((s.as_str(), reason.as_str()), ("False", want_reason));
    assert!(message.contains(names), "{message}");
    assert!(message.contains("--allowed-issuers"), "{message}");
    let action = task.await.unwrap().unwrap();
    h.api.expect_no_more().await;
    assert_eq!(action, Action::await_change());
    assert_eq!(emu.requests(), (0, 0, 0), "discovery, token, JWKS calls");
}

#[tokio::test]
async fn an_issuer_not_allowed_reads_no_secret_and_sends_nothing() {
    let emu = emulator(Duration::from_secs(3600)).await;
    // The same emulator under another name is another origin.
    let issuer = emu.issuer().replace("127.0.0.1", "localhost");
    not_allowed(m2mtoken(&issuer, "12h"), &emu, "IssuerNotAllowed", &issuer).await;
    let https = "https://evil.example/oauth2";
    not_allowed(m2mtoken(https, "12h"), &emu, "IssuerNotAllowed", https).await;
}

#[tokio::test]
async fn spec_endpoints_not_allowed_read_no_secret_and_send_nothing() {
    let emu = emulator(Duration::from_secs(3600)).await;
    let foreign = "https://x.aliyunidaas.com.evil.example/token";
    let mut t = m2mtoken(&emu.issuer(), "12h");
    t.spec.token_endpoint = Some(foreign.into());
    not_allowed(
        t,
        &emu,
        "EndpointNotAllowed",
        "x.aliyunidaas.com.evil.example",
    )
    .await;
    let mut t = m2mtoken(&emu.issuer(), "12h");
    t.spec.jwks_uri = Some("http://10.0.0.1:8080/jwks".into());
    not_allowed(t, &emu, "EndpointNotAllowed", "http://10.0.0.1:8080/jwks").await;
}

#[tokio::test]
async fn refresh_metric_reasons_are_bounded() {
    // A server's own error code stays in the condition but is counted as `other`.
    let emu = emulator(Duration::from_secs(3600)).await;
    emu.push_fault(Fault::OAuthError {
        status: 400,
        error: "custom_code_42".into(),
    });
    let (_, _, text) = refresh_fails(&emu, "custom_code_42", "RefreshFailed").await;
    assert!(
        text.contains(
            "idaas_projector_token_refreshes_total{result=\"failure\",reason=\"other\"} 1"
        ),
        "{text}"
    );
    assert!(!text.contains("custom_code_42"), "{text}");
}

/// The running controller lists and watches M2MTokens only: it reads Secrets by name and never
/// lists or watches them (the chart grants no `list` or `watch` on Secrets), so a collection
/// request on Secrets never reaches the API server.
#[tokio::test]
async fn the_controller_reads_secrets_by_name_and_never_lists_or_watches_them() {
    install_provider();
    let token = serde_json::to_value(m2mtoken(
        "https://example.aliyunidaas.com/api/v2/iauths_system/oauth2",
        "12h",
    ))
    .unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::<(Method, String)>::new()));
    let log = seen.clone();
    let client = testing::fake_kube(move |method, path, sent| {
        log.lock().unwrap().push((method.clone(), path.to_owned()));
        match (method.clone(), path) {
            (Method::GET, "/apis/idaas-projector.io/v1alpha1/m2mtokens") => (
                StatusCode::OK,
                json!({"apiVersion": "idaas-projector.io/v1alpha1", "kind": "M2MTokenList",
                       "metadata": {"resourceVersion": "100"}, "items": [token.clone()]}),
            ),
            (Method::PATCH, STATUS_PATH) => (StatusCode::OK, token.clone()),
            (Method::POST, EVENTS_PATH) => (StatusCode::CREATED, sent),
            _ => (StatusCode::NOT_FOUND, testing::not_found()),
        }
    });
    let ctx = Arc::new(reconcile_context(
        client.clone(),
        IdaasClient::new(&HttpConfig::default()).unwrap(),
        4,
    ));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stop = futures::FutureExt::shared(futures::FutureExt::boxed(async move {
        let _ = stop_rx.await;
    }));
    let settings = idaas_projector::controller::Settings {
        namespaces: Vec::new(),
        max_concurrent_refreshes: 4,
        recheck_interval: Duration::from_secs(60),
        lease: None,
        sweep: None,
    };
    let run = tokio::spawn(idaas_projector::controller::run_controllers(
        client, ctx, settings, stop,
    ));
    // The credentials Secret is missing: the reconcile ends in a status patch.
    for _ in 0..500 {
        if patched_in(&seen.lock().unwrap()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the controller stops")
        .unwrap();
    let seen = seen.lock().unwrap();
    assert!(patched_in(&seen), "the M2MToken was reconciled: {seen:?}");
    assert!(
        seen.iter()
            .any(|(m, p)| *m == Method::GET && p == CREDS_PATH),
        "the credentials Secret is read by name: {seen:?}"
    );
    let collections: Vec<_> = seen
        .iter()
        .filter(|(_, p)| p.ends_with("/secrets"))
        .collect();
    assert!(
        collections.is_empty(),
        "no list or watch on Secrets: {collections:?}"
    );
}

fn patched_in(seen: &[(Method, String)]) -> bool {
    seen.iter()
        .any(|(m, p)| *m == Method::PATCH && p == STATUS_PATH)
}

// ---------------------------------------------------------------------------------------------
// federated_oidc: a ServiceAccount token from the TokenRequest API is the client assertion.

const CLUSTER_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const SA_AUDIENCE: &str = "idaas-federation";
const SA_SUBJECT: &str = "system:serviceaccount:shop:payments";
const TOKEN_REQUEST_PATH: &str = "/api/v1/namespaces/shop/serviceaccounts/payments/token";

/// An emulator whose application trusts `cluster` for ServiceAccount `shop/payments`.
async fn federated_emulator(cluster: &OidcIssuer) -> IdaasEmulator {
    install_provider();
    IdaasEmulator::start(EmulatorConfig {
        client_id: CLIENT_ID.into(),
        client_secret: CLIENT_SECRET.into(),
        audience: AUDIENCE.into(),
        federated_credentials: vec![cluster.trusted_as("k8s-payments", SA_AUDIENCE, SA_SUBJECT)],
        ..EmulatorConfig::default()
    })
    .await
    .unwrap()
}

fn federated_m2mtoken(issuer: &str) -> M2MToken {
    let mut t = m2mtoken(issuer, "12h");
    t.spec.client_auth = ClientAuth {
        method: ClientAuthMethod::FederatedOidc,
        secret_ref: None,
        federated_credential_name: Some("k8s-payments".into()),
        service_account: Some(ServiceAccountAssertion {
            name: "payments".into(),
            audience: SA_AUDIENCE.into(),
            expiration_seconds: 900,
        }),
    };
    t
}

/// The TokenRequest the projector sends: for the ServiceAccount's audience and lifetime, bound
/// to nothing.
fn assert_token_request(body: &Value) {
    assert_eq!(body["kind"], "TokenRequest");
    assert_eq!(body["spec"]["audiences"], json!([SA_AUDIENCE]));
    assert_eq!(body["spec"]["expirationSeconds"], 900);
    assert!(
        body["spec"]
            .get("boundObjectRef")
            .is_none_or(Value::is_null),
        "{body}"
    );
}

fn token_request_answer(token: &str) -> (StatusCode, Value) {
    (
        StatusCode::CREATED,
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
               "spec": {"audiences": [SA_AUDIENCE], "expirationSeconds": 900},
               "status": {"token": token, "expirationTimestamp": "2026-12-01T00:15:00Z"}}),
    )
}

#[tokio::test]
async fn federated_oidc_sends_a_fresh_service_account_token_and_no_secret() {
    let cluster = OidcIssuer::new(CLUSTER_ISSUER);
    let emu = federated_emulator(&cluster).await;
    let mut h = harness(&emu.origin(), Arc::new(Metrics::new()));
    let task = spawn_reconcile(&h, federated_m2mtoken(&emu.issuer()));
    // The managed Secret is read; no credentials Secret is (there is none).
    expect(&mut h.api, Method::GET, SECRET_PATH, not_found(NAME)).await;
    let sa_token = cluster.token(SA_SUBJECT, SA_AUDIENCE, Duration::from_secs(900));
    let sent = expect(
        &mut h.api,
        Method::POST,
        TOKEN_REQUEST_PATH,
        token_request_answer(&sa_token),
    )
    .await;
    assert_token_request(&sent);
    let written = expect(
        &mut h.api,
        Method::POST,
        SECRETS_PATH,
        (StatusCode::CREATED, json!({})),
    )
    .await;
    let token = base64::engine::general_purpose::STANDARD
        .decode(written["data"]["token"].as_str().unwrap())
        .unwrap();
    assert_ne!(
        token,
        sa_token.as_bytes(),
        "the IDaaS token is stored, not the assertion"
    );
    assert!(
        !serde_json::to_string(&written).unwrap().contains(&sa_token),
        "the ServiceAccount token is never stored"
    );
    let status = expect_event_and_status(&mut h.api, "Refreshed").await;
    assert_eq!(ready(&status).1, "Refreshed");
    assert!(!serde_json::to_string(&status).unwrap().contains(&sa_token));
    task.await.unwrap().unwrap();
    h.api.expect_no_more().await;
    // IDaaS accepted it: the emulator refuses an assertion with a client_secret beside it.
    assert_eq!(emu.issued_tokens(), 1);
}

/// A federated refresh that fails: `answer` is the TokenRequest's answer. Returns the Ready
/// reason and message; nothing is written.
async fn federated_failure(
    emu: &IdaasEmulator,
    answer: (StatusCode, Value),
    retry: Duration,
) -> (String, String) {
    let mut h = harness(&emu.origin(), Arc::new(Metrics::new()));
    let task = spawn_reconcile(&h, federated_m2mtoken(&emu.issuer()));
    expect(&mut h.api, Method::GET, SECRET_PATH, not_found(NAME)).await;
    expect(&mut h.api, Method::POST, TOKEN_REQUEST_PATH, answer).await;
    // No Secret write: a Warning event and Ready=False.
    let event = expect(
        &mut h.api,
        Method::POST,
        EVENTS_PATH,
        (StatusCode::OK, json!({})),
    )
    .await;
    assert_eq!(event["type"], "Warning");
    let status = expect_status_patch(&mut h.api).await;
    let (s, reason, message) = ready(&status);
    assert_eq!(s, "False");
    let action = task.await.unwrap().unwrap();
    assert!(
        requeue_after(&action) <= retry,
        "the usual backoff: {action:?}"
    );
    h.api.expect_no_more().await;
    (reason, message)
}

#[tokio::test]
async fn federated_oidc_failures_each_have_their_reason() {
    let cluster = OidcIssuer::new(CLUSTER_ISSUER);
    let emu = federated_emulator(&cluster).await;
    let (reason, message) = federated_failure(
        &emu,
        testing::api_failure(404, "NotFound", "NotFound"),
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(reason, "ServiceAccountNotFound");
    assert!(
        message.contains("ServiceAccount \"payments\" not found"),
        "{message}"
    );
    let (reason, message) = federated_failure(
        &emu,
        testing::api_failure(403, "Forbidden", "Forbidden"),
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(reason, "TokenRequestForbidden");
    assert!(message.contains("serviceaccounts/token"), "{message}");
    // A token for another ServiceAccount: IDaaS refuses the client (permanent: retried slowly).
    let other = cluster.token(
        "system:serviceaccount:shop:other",
        SA_AUDIENCE,
        Duration::from_secs(900),
    );
    let (reason, message) =
        federated_failure(&emu, token_request_answer(&other), Duration::from_secs(300)).await;
    assert_eq!(reason, "invalid_client");
    assert!(message.contains("subject"), "{message}");
    assert_eq!(emu.issued_tokens(), 0);
}
