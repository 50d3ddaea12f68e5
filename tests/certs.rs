//! Self-managed webhook certificates against the `tower_test` mock API: the first start creates
//! the Secret and sets caBundle; a replica that finds both in place only reads; a rotation keeps
//! the old CA in the bundle until the switch.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use common::mock_api::{self, MockApi};
use http::{Method, StatusCode};
use idaas_projector::admin::Readiness;
use idaas_projector::metrics::Metrics;
use idaas_projector::testing::{api_failure, install_provider, not_found};
use idaas_projector::webhook::certs::{self, CertManager, Settings};
use idaas_projector::webhook::tls::CertStore;
use serde_json::{Value, json};

const SECRET_PATH: &str = "/api/v1/namespaces/idaas-projector/secrets/idaas-projector-webhook-tls";
const SECRETS_PATH: &str = "/api/v1/namespaces/idaas-projector/secrets";
const MWC_PATH: &str =
    "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/idaas-projector";

fn settings() -> Settings {
    Settings {
        secret_name: "idaas-projector-webhook-tls".into(),
        namespace: "idaas-projector".into(),
        service_name: "idaas-projector".into(),
        webhook_configuration: "idaas-projector".into(),
        validity: Duration::from_secs(365 * 24 * 3600),
    }
}

fn manager() -> (CertManager, MockApi, Arc<CertStore>, Arc<Readiness>) {
    install_provider();
    let (client, api) = mock_api::pair();
    let store = Arc::new(CertStore::default());
    let readiness = Arc::new(Readiness::default());
    let m = CertManager::new(
        client,
        settings(),
        store.clone(),
        Arc::new(Metrics::new()),
        readiness.clone(),
    );
    (m, api, store, readiness)
}

fn mwc(ca_bundle: Option<&str>) -> Value {
    let mut hook = json!({
        "name": "pods.idaas-projector.io",
        "clientConfig": {"service": {"name": "idaas-projector", "namespace": "idaas-projector", "path": "/mutate"}},
        "sideEffects": "None", "admissionReviewVersions": ["v1"]
    });
    if let Some(b) = ca_bundle {
        hook["clientConfig"]["caBundle"] = json!(b);
    }
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "idaas-projector", "resourceVersion": "5"}, "webhooks": [hook]})
}

/// The Secret holding `m`, as the API server returns it (resourceVersion 9).
fn secret_json(m: &certs::Material) -> Value {
    let mut secret =
        serde_json::to_value(certs::to_secret(m, &settings(), Some("9".into()))).unwrap();
    secret["apiVersion"] = json!("v1");
    secret["kind"] = json!("Secret");
    secret
}

/// Material made now, as a replica would have written it.
fn fresh_material() -> certs::Material {
    certs::plan(None, &settings(), idaas_projector::time::unix_now())
        .unwrap()
        .unwrap()
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn decode(v: &Value) -> String {
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn first_start_creates_the_secret_and_sets_ca_bundle() {
    let (m, mut api, store, readiness) = manager();
    let task = tokio::spawn(async move { m.sync_once().await.map(|_| m) });
    api.expect(Method::GET, SECRET_PATH, StatusCode::NOT_FOUND, not_found())
        .await;
    let secret = api
        .expect_echo(Method::POST, SECRETS_PATH, StatusCode::CREATED)
        .await
        .body;
    assert_eq!(secret["type"], "kubernetes.io/tls");
    assert_eq!(secret["metadata"]["name"], "idaas-projector-webhook-tls");
    for key in [
        "ca.crt",
        "ca-signing.crt",
        "ca-signing.key",
        "tls.crt",
        "tls.key",
    ] {
        assert!(secret["data"][key].is_string(), "{key}");
    }
    let bundle = decode(&secret["data"]["ca.crt"]);
    api.expect(Method::GET, MWC_PATH, StatusCode::OK, mwc(None))
        .await;
    let apply = api
        .expect(
            Method::PATCH,
            MWC_PATH,
            StatusCode::OK,
            mwc(Some(&b64(&bundle))),
        )
        .await;
    apply.assert_query(&["fieldManager=idaas-projector", "force=true"]);
    let applied = apply.body;
    assert_eq!(applied["webhooks"][0]["name"], "pods.idaas-projector.io");
    assert_eq!(
        applied["webhooks"][0]["clientConfig"]["caBundle"],
        b64(&bundle)
    );
    assert_eq!(
        applied["webhooks"][0].as_object().unwrap().len(),
        2,
        "only the name and caBundle are applied"
    );
    task.await.unwrap().unwrap();
    api.expect_no_more().await;
    assert!(store.is_loaded());
    let _ = readiness;
}

#[tokio::test]
async fn a_replica_that_finds_everything_in_place_only_reads() {
    let material = fresh_material();
    let secret = secret_json(&material);
    let (m, mut api, store, _) = manager();
    let task = tokio::spawn(async move { m.sync_once().await });
    api.expect(Method::GET, SECRET_PATH, StatusCode::OK, secret)
        .await;
    api.expect(
        Method::GET,
        MWC_PATH,
        StatusCode::OK,
        mwc(Some(&b64(&material.bundle_pem()))),
    )
    .await;
    task.await.unwrap().unwrap();
    api.expect_no_more().await;
    assert!(store.is_loaded(), "serves the pair read from the Secret");
}

/// The chart's entries: pods annotated in other namespaces, labelled namespaces, and the legacy
/// label; a `helm upgrade` that adds an entry leaves it without a caBundle.
fn mwc_entries(bundles: [Option<&str>; 3]) -> Value {
    let mut config = mwc(None);
    let names = [
        ("m2m-token.idaas-projector.io", "/mutate"),
        ("namespace.idaas-projector.io", "/mutate/namespace"),
        ("legacy-inject-label.idaas-projector.io", "/mutate"),
    ];
    config["webhooks"] = names
        .iter()
        .zip(bundles)
        .map(|((name, path), bundle)| {
            let mut hook = json!({
                "name": name,
                "clientConfig": {"service": {"name": "idaas-projector", "namespace": "idaas-projector", "path": path}},
                "sideEffects": "None", "admissionReviewVersions": ["v1"]
            });
            if let Some(b) = bundle {
                hook["clientConfig"]["caBundle"] = json!(b);
            }
            hook
        })
        .collect();
    config
}

#[tokio::test]
async fn every_entry_gets_the_bundle_when_one_lacks_it() {
    let material = fresh_material();
    let current = b64(&material.bundle_pem());
    let (m, mut api, _, _) = manager();
    let task = tokio::spawn(async move { m.sync_once().await });
    api.expect(
        Method::GET,
        SECRET_PATH,
        StatusCode::OK,
        secret_json(&material),
    )
    .await;
    let live = mwc_entries([Some(&current), None, Some(&current)]);
    api.expect(Method::GET, MWC_PATH, StatusCode::OK, live)
        .await;
    let apply = api
        .expect(
            Method::PATCH,
            MWC_PATH,
            StatusCode::OK,
            mwc_entries([Some(&current); 3]),
        )
        .await;
    apply.assert_query(&["fieldManager=idaas-projector", "force=true"]);
    let applied = apply.body["webhooks"].as_array().unwrap().clone();
    let names: Vec<&str> = applied
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "m2m-token.idaas-projector.io",
            "namespace.idaas-projector.io",
            "legacy-inject-label.idaas-projector.io"
        ]
    );
    for w in &applied {
        assert_eq!(w["clientConfig"]["caBundle"], json!(current));
        assert_eq!(
            w.as_object().unwrap().len(),
            2,
            "only the name and caBundle"
        );
        assert_eq!(
            w["clientConfig"].as_object().unwrap().len(),
            1,
            "not the service"
        );
    }
    task.await.unwrap().unwrap();
    api.expect_no_more().await;

    // With every entry in place, nothing is written.
    let (m, mut api, _, _) = manager();
    let task = tokio::spawn(async move { m.sync_once().await });
    api.expect(
        Method::GET,
        SECRET_PATH,
        StatusCode::OK,
        secret_json(&material),
    )
    .await;
    let live = mwc_entries([Some(&current); 3]);
    api.expect(Method::GET, MWC_PATH, StatusCode::OK, live)
        .await;
    task.await.unwrap().unwrap();
    api.expect_no_more().await;
}

#[tokio::test]
async fn losing_the_create_race_takes_the_other_replicas_secret() {
    let material = fresh_material();
    let secret = secret_json(&material);
    let (m, mut api, store, _) = manager();
    let task = tokio::spawn(async move { m.sync_once().await });
    api.expect(Method::GET, SECRET_PATH, StatusCode::NOT_FOUND, not_found())
        .await;
    let (code, exists) = api_failure(409, "AlreadyExists", "");
    api.expect(Method::POST, SECRETS_PATH, code, exists).await;
    api.expect(Method::GET, SECRET_PATH, StatusCode::OK, secret)
        .await;
    api.expect(
        Method::GET,
        MWC_PATH,
        StatusCode::OK,
        mwc(Some(&b64(&material.bundle_pem()))),
    )
    .await;
    task.await.unwrap().unwrap();
    api.expect_no_more().await;
    assert!(store.is_loaded());
}

#[tokio::test]
async fn rotation_replaces_the_secret_with_both_cas_in_the_bundle() {
    // A Secret whose CA is past 2/3 of its life.
    let s = settings();
    let now = idaas_projector::time::unix_now();
    let ca_life = 2 * s.validity.as_secs() as i64;
    let old = certs::plan(None, &s, now - ca_life * 2 / 3 - 3600)
        .unwrap()
        .unwrap();
    let secret = secret_json(&old);
    let (m, mut api, _, _) = manager();
    let task = tokio::spawn(async move { m.sync_once().await });
    api.expect(Method::GET, SECRET_PATH, StatusCode::OK, secret)
        .await;
    let replaced = api
        .expect_echo(Method::PUT, SECRET_PATH, StatusCode::OK)
        .await
        .body;
    assert_eq!(
        replaced["metadata"]["resourceVersion"], "9",
        "optimistic concurrency"
    );
    let bundle = decode(&replaced["data"]["ca.crt"]);
    assert_eq!(
        bundle.matches("BEGIN CERTIFICATE").count(),
        2,
        "old and next CA"
    );
    assert!(
        bundle.contains(old.ca.cert.pem.trim()),
        "the old CA stays trusted"
    );
    assert_eq!(
        decode(&replaced["data"]["ca-signing.crt"]).trim(),
        old.ca.cert.pem.trim(),
        "serving still signed by the old CA"
    );
    assert!(replaced["data"]["next-ca.crt"].is_string());
    api.expect(
        Method::GET,
        MWC_PATH,
        StatusCode::OK,
        mwc(Some(&b64(&old.bundle_pem()))),
    )
    .await;
    let applied = api
        .expect(
            Method::PATCH,
            MWC_PATH,
            StatusCode::OK,
            mwc(Some(&b64(&bundle))),
        )
        .await
        .body;
    assert_eq!(
        applied["webhooks"][0]["clientConfig"]["caBundle"],
        b64(&bundle)
    );
    task.await.unwrap().unwrap();
    api.expect_no_more().await;
}
