//! Fixtures shared by the tests, the benches and the fuzz targets. Compiled only with the
//! `testing` feature, which the package's dev-dependency on itself turns on for `cargo test`,
//! `cargo bench` and the examples, and which the fuzz crate asks for; the binary built by
//! `cargo build` never contains it.
//!
//! - [`fuzz`]: the fuzz harnesses, run by the cargo-fuzz targets in `fuzz/` and replayed over
//!   `tests/data/fuzz/` by `tests/fuzz_regressions.rs`.
//! - [`fake_api`]: an in-process Kubernetes API that keeps objects and streams watches, for
//!   processes whose reflectors must see objects change (the webhook's caches).
//! - [`fake_kube`]: an in-process Kubernetes API answered by a closure, for tests and benches that
//!   run the projector as a whole (the fault drills, the log redaction test, the refresh bench);
//!   [`fake_kube_requests`] also shows the query and the content type (the leader election tests
//!   tell server-side apply from a merge patch by them).
//!   Tests of one component that assert each request in order use the `tower_test` mock in
//!   `tests/common/mock_api.rs` instead.
//! - [`emulator`] and [`reconcile_context`]: the IDaaS emulator and the reconciler's context as
//!   those tests set them up; [`not_found`], the API server's 404 answer; [`pod_review`], the
//!   AdmissionReview of a pod.
//! - [`FixedResolver`] and [`review_now`]: a webhook resolver with fixed answers, and a review
//!   answered without a runtime (the golden cases, the properties, the fuzz harness).

pub mod fake_api;
pub mod fuzz;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use kube::runtime::events::Reporter;
use serde_json::{Value, json};

use crate::controller::reconcile::Context;
use crate::emulator::idaas::{EmulatorConfig, IdaasEmulator};
use crate::idaas::{AllowedOrigins, HttpConfig, IdaasClient};
use crate::metrics::Metrics;

/// A bench's numeric flag `name VALUE` from the command line (`cargo bench --bench B -- --n 5`),
/// else `default`.
pub fn bench_arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Makes aws-lc-rs the process's rustls provider (once; later calls do nothing).
pub fn install_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The IDaaS emulator with one client application granted every scope.
pub async fn emulator(
    client_id: &str,
    client_secret: &str,
    audience: &str,
    lifetime: Duration,
) -> IdaasEmulator {
    IdaasEmulator::start(EmulatorConfig {
        client_id: client_id.into(),
        client_secret: client_secret.into(),
        audience: audience.into(),
        scopes_granted: vec![".all".into()],
        token_lifetime: lifetime,
        client_public_key_pem: None,
        federated_credentials: Vec::new(),
    })
    .await
    .unwrap()
}

/// A token from `emu` for its own application, fetched as a client does (client_credentials,
/// `client_secret_post`, every scope of its audience); panics unless IDaaS answers 2xx.
pub async fn emulator_token(emu: &IdaasEmulator) -> String {
    let config = emu.config();
    let scope = format!("{}|.all", config.audience);
    let resp = reqwest::Client::new()
        .post(emu.token_endpoint())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", config.client_id.as_str()),
            ("client_secret", config.client_secret.as_str()),
            ("scope", scope.as_str()),
        ])
        .send()
        .await
        .expect("the IDaaS emulator answers");
    assert!(
        resp.status().is_success(),
        "token request: {}",
        resp.status()
    );
    let v: Value = resp.json().await.expect("a JSON token response");
    v["access_token"]
        .as_str()
        .expect("an access_token")
        .to_owned()
}

/// The IDaaS client's default settings, allowing requests to `emu`'s origin only (plain http on
/// 127.0.0.1, given literally), as `--allowed-issuers http://127.0.0.1:PORT` would.
pub fn http_config(emu: &IdaasEmulator) -> HttpConfig {
    HttpConfig {
        allowed: AllowedOrigins::parse(&emu.origin()).expect("a loopback origin"),
        ..HttpConfig::default()
    }
}

/// A Kubernetes client whose every request `answer` answers, from the method, the path and the
/// JSON body sent (`null` when there is none).
pub fn fake_kube<F>(answer: F) -> kube::Client
where
    F: Fn(&Method, &str, Value) -> (StatusCode, Value) + Send + Sync + 'static,
{
    fake_kube_requests(move |r| answer(&r.method, &r.path, r.body))
}

/// One request to [`fake_kube_requests`], with what an API server tells requests apart by.
#[derive(Debug, Clone)]
pub struct FakeRequest {
    pub method: Method,
    pub path: String,
    /// The query string, empty when there is none.
    pub query: String,
    /// The `Content-Type` header, empty when there is none: server-side apply sends
    /// `application/apply-patch+yaml`, a strategic merge patch
    /// `application/strategic-merge-patch+json`.
    pub content_type: String,
    /// The JSON body, `null` when there is none.
    pub body: Value,
}

impl FakeRequest {
    /// The value of query parameter `name` (such as `fieldManager` or `force`).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }
}

/// A Kubernetes client whose every request `answer` answers, from the whole [`FakeRequest`].
pub fn fake_kube_requests<F>(answer: F) -> kube::Client
where
    F: Fn(FakeRequest) -> (StatusCode, Value) + Send + Sync + 'static,
{
    let answer = Arc::new(answer);
    let service = tower::service_fn(move |req: Request<Body>| {
        let answer = answer.clone();
        async move {
            let (parts, body) = req.into_parts();
            let bytes = http_body_util::BodyExt::collect(body)
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let header = parts.headers.get(axum::http::header::CONTENT_TYPE);
            let (status, body) = answer(FakeRequest {
                method: parts.method.clone(),
                path: parts.uri.path().to_owned(),
                query: parts.uri.query().unwrap_or_default().to_owned(),
                content_type: header
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned(),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            });
            Ok::<_, std::convert::Infallible>(
                Response::builder()
                    .status(status)
                    .body(Body::from(serde_json::to_vec(&body).unwrap()))
                    .unwrap(),
            )
        }
    });
    kube::Client::new(service, "default")
}

/// An AdmissionReview of a Pod CREATE in namespace `shop`, as the API server sends it.
pub fn pod_review(uid: &str, pod: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop",
            "operation": "CREATE",
            "object": pod,
        }
    })
}

/// The API server's answer (with 404) to a request for an object that does not exist.
pub fn not_found() -> Value {
    api_failure(404, "NotFound", "").1
}

/// The API server's failure answer: the HTTP status and a `Status` with this code, reason and
/// (when not empty) message.
pub fn api_failure(code: u16, reason: &str, message: &str) -> (StatusCode, Value) {
    let mut status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code});
    if !message.is_empty() {
        status["message"] = json!(message);
    }
    let http = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (http, status)
}

/// The reconciler's context over `client`: at most `max_concurrent_refreshes` calls to IDaaS at
/// once, a fresh token's credentials re-checked every minute, fresh metrics.
pub fn reconcile_context(
    client: kube::Client,
    idaas: IdaasClient,
    max_concurrent_refreshes: usize,
) -> Context {
    let reporter = Reporter {
        controller: "idaas-projector".into(),
        instance: None,
    };
    Context::new(
        client,
        idaas,
        Arc::new(Metrics::new()),
        reporter,
        max_concurrent_refreshes,
        Duration::from_secs(60),
    )
}

/// A webhook resolver with fixed answers: every M2MToken lookup gives `token`; a ServiceAccount
/// lookup gives `account`, from the "cache", when it asks for that ServiceAccount (a `Found`
/// one of another name is absent: a lookup of the wrong ServiceAccount shows).
#[derive(Debug, Clone)]
pub struct FixedResolver {
    pub token: crate::webhook::mutate::TokenLookup,
    pub account: crate::webhook::mutate::AccountLookup,
}

impl crate::webhook::review::Resolver for FixedResolver {
    fn m2m_token(&self, _namespace: &str, _name: &str) -> crate::webhook::mutate::TokenLookup {
        self.token.clone()
    }

    fn service_account(
        &self,
        _namespace: &str,
        name: &str,
    ) -> Option<crate::webhook::mutate::AccountLookup> {
        use crate::webhook::mutate::AccountLookup;
        Some(match &self.account {
            AccountLookup::Found(sa) if sa.name != name => AccountLookup::Absent,
            other => other.clone(),
        })
    }

    fn fetch_service_account<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> futures::future::BoxFuture<'a, crate::webhook::mutate::AccountLookup> {
        let answer = self.service_account(namespace, name);
        Box::pin(std::future::ready(
            answer.unwrap_or(crate::webhook::mutate::AccountLookup::Absent),
        ))
    }
}

/// Answers a review with a resolver that never waits ([`FixedResolver`], `Standalone`).
///
/// # Panics
/// When the resolver would wait (a real cache missing a ServiceAccount).
pub fn review_now(
    body: &[u8],
    via: crate::webhook::review::Via,
    config: &crate::webhook::mutate::MutateConfig,
    resolver: &dyn crate::webhook::review::Resolver,
) -> Result<crate::webhook::review::Answer, crate::webhook::review::BadReview> {
    use futures::FutureExt as _;
    crate::webhook::review::review(body, via, config, resolver)
        .now_or_never()
        .expect("a resolver with fixed answers never waits")
}
