//! The webhook as a process part against the in-process fake API: ServiceAccount opt-in in a
//! labelled namespace, over real HTTPS on 127.0.0.1.
//!
//! - a pod whose ServiceAccount opts it in is injected with the ServiceAccount's settings;
//! - a change to the ServiceAccount's annotations on the API is used within seconds (the watch);
//! - a ServiceAccount the watch has not delivered yet (created a moment before the pod) is read
//!   from the API server, and counted;
//! - the ServiceAccounts are listed and watched as metadata only.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{TestCa, client, publish};
use idaas_projector::admin::Readiness;
use idaas_projector::metrics::Metrics;
use idaas_projector::testing::fake_api::FakeApi;
use idaas_projector::testing::{install_provider, pod_review};
use idaas_projector::webhook::{
    Settings, TlsSource, Webhook, limits::Limits, mutate::MutateConfig,
};
use serde_json::{Value, json};

const ACCOUNTS: &str = "api/v1/serviceaccounts";
const TOKENS: &str = "apis/idaas-projector.io/v1alpha1/m2mtokens";
const OIDC: &str = "acs:ram::1234567890123456:oidc-provider/idaas";

fn account(name: &str, annotations: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ServiceAccount",
           "metadata": {"name": name, "namespace": "shop", "annotations": annotations,
                        "labels": {"team": "payments"}}})
}

fn m2m_token() -> Value {
    json!({"apiVersion": "idaas-projector.io/v1alpha1", "kind": "M2MToken",
           "metadata": {"name": "payments", "namespace": "shop"},
           "spec": {"issuer": "https://example.aliyunidaas.com/api/v2/iauths_system/oauth2",
                    "audience": "api://payments", "scopes": [".all"], "clientId": "app_x",
                    "clientAuth": {"method": "client_secret_post",
                                   "secretRef": {"name": "creds", "key": "client_secret"}},
                    "secretName": "payments-token", "maxTokenAge": "12h"}})
}

/// A pod with no idaas-projector annotation, run as `service_account`.
fn plain_pod(service_account: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "web", "namespace": "shop"},
           "spec": {"serviceAccountName": service_account,
                    "containers": [{"name": "app", "image": "registry.example.com/app:1"}]}})
}

struct Running {
    url: String,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
    _dir: tempfile::TempDir,
}

async fn start(api: &FakeApi) -> Running {
    install_provider();
    let ca = TestCa::new("opt-in CA");
    let pair = ca.leaf("webhook");
    let dir = tempfile::tempdir().unwrap();
    publish(dir.path(), 1, &pair.cert_pem, &pair.key_pem);
    let settings = Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: TlsSource::Files {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
            reload_interval: Duration::from_secs(60),
        },
        inject: MutateConfig {
            default_oidc_provider_arn: Some(OIDC.to_owned()),
            ..MutateConfig::default()
        },
        standalone: false,
        limits: Limits::default(),
        service_accounts: true,
    };
    let metrics = Arc::new(Metrics::new());
    let readiness = Arc::new(Readiness::default());
    let webhook = Webhook::start(
        settings,
        Some(api.client()),
        metrics.clone(),
        readiness.clone(),
    )
    .expect("the webhook starts");
    let port = webhook.local_addr().unwrap().port();
    tokio::spawn(webhook.serve(std::future::pending(), Duration::from_secs(1)));
    let deadline = Instant::now() + Duration::from_secs(10);
    while readiness.check().is_err() {
        assert!(
            Instant::now() < deadline,
            "not ready: {:?}",
            readiness.check()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Running {
        url: format!("https://localhost:{port}/mutate/namespace"),
        http: client(&ca.pem, true, true),
        metrics,
        _dir: dir,
    }
}

/// The env var `name` the patch sets on the first container, or `None` (no patch, or unset).
async fn injected_env(w: &Running, pod: Value, name: &str) -> Option<String> {
    let response: Value = w
        .http
        .post(&w.url)
        .json(&pod_review("opt-in", pod))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let response = &response["response"];
    assert_eq!(response["allowed"], true, "{response}");
    let patch = response.get("patch")?.as_str()?;
    let ops: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(patch)
            .unwrap(),
    )
    .unwrap();
    let env = ops
        .as_array()?
        .iter()
        .find(|op| op["path"] == "/spec/containers/0/env")?;
    env["value"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == name)
        .and_then(|v| v["value"].as_str())
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_opt_in_follows_the_api() {
    let api = FakeApi::default();
    api.put(TOKENS, m2m_token());
    api.put(
        ACCOUNTS,
        account(
            "payments",
            json!({"idaas-projector.io/m2m-token": "payments",
                   "idaas-projector.io/role-name": "reader",
                   "kubectl.kubernetes.io/last-applied-configuration": "{}"}),
        ),
    );
    let w = start(&api).await;

    // The ServiceAccount's settings are injected.
    let role = injected_env(&w, plain_pod("payments"), "ALIBABA_CLOUD_ROLE_ARN").await;
    assert_eq!(
        role.as_deref(),
        Some("acs:ram::1234567890123456:role/reader")
    );

    // A change on the API reaches the cache through the watch within a few seconds.
    api.put(
        ACCOUNTS,
        account(
            "payments",
            json!({"idaas-projector.io/m2m-token": "payments",
                   "idaas-projector.io/role-name": "writer"}),
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let role = injected_env(&w, plain_pod("payments"), "ALIBABA_CLOUD_ROLE_ARN").await;
        if role.as_deref() == Some("acs:ram::1234567890123456:role/writer") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the change was not seen: {role:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A ServiceAccount the watch has not delivered yet is read from the API server.
    api.put_unannounced(
        ACCOUNTS,
        account(
            "fresh",
            json!({"idaas-projector.io/m2m-token": "payments",
                   "idaas-projector.io/role-arn": "acs:ram::1234567890123456:role/fresh"}),
        ),
    );
    let role = injected_env(&w, plain_pod("fresh"), "ALIBABA_CLOUD_ROLE_ARN").await;
    assert_eq!(
        role.as_deref(),
        Some("acs:ram::1234567890123456:role/fresh")
    );
    // One that does not exist anywhere opts nothing in.
    assert_eq!(
        injected_env(&w, plain_pod("ghost"), "ALIBABA_CLOUD_ROLE_ARN").await,
        None
    );

    let metrics = w.metrics.encode().unwrap();
    for line in [
        "idaas_projector_webhook_service_account_fetches_total{result=\"found\"} 1",
        "idaas_projector_webhook_service_account_fetches_total{result=\"not_found\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }

    // ServiceAccounts: listed and watched across namespaces as metadata only, and read one by
    // one only on a miss.
    let seen = api.seen();
    let accounts: Vec<_> = seen
        .iter()
        .filter(|s| s.path.contains("serviceaccounts"))
        .collect();
    assert!(
        accounts
            .iter()
            .any(|s| s.path == "/api/v1/serviceaccounts" && s.query.contains("watch"))
    );
    for s in &accounts {
        assert!(s.accept.contains("as=PartialObjectMetadata"), "{s:?}");
    }
    let gets: Vec<&str> = accounts
        .iter()
        .filter(|s| s.path.starts_with("/api/v1/namespaces/"))
        .map(|s| s.path.as_str())
        .collect();
    assert_eq!(
        gets,
        [
            "/api/v1/namespaces/shop/serviceaccounts/fresh",
            "/api/v1/namespaces/shop/serviceaccounts/ghost"
        ]
    );
}
