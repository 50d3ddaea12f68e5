//! The webhook's read of a ServiceAccount its cache does not hold, and every way it is refused
//! or fails: each answer, the request that was (or was never) sent, and the metric.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use common::mock_api;
use idaas_projector::crd::M2MToken;
use idaas_projector::metrics::Metrics;
use idaas_projector::testing::{FakeRequest, api_failure, fake_kube_requests, not_found};
use idaas_projector::webhook::cache::{AccountMeta, CachedResolver, MAX_FETCHES};
use idaas_projector::webhook::mutate::AccountLookup;
use idaas_projector::webhook::review::Resolver;
use kube::runtime::reflector;
use kube::runtime::watcher::Event;
use serde_json::{Value, json};

/// A resolver over `client` whose (empty) stores have synced.
async fn resolver(client: kube::Client, metrics: Arc<Metrics>) -> CachedResolver {
    let (tokens, mut token_writer) = reflector::store::<M2MToken>();
    let (accounts, mut account_writer) = reflector::store::<AccountMeta>();
    token_writer.apply_watcher_event(&Event::Init);
    token_writer.apply_watcher_event(&Event::InitDone);
    account_writer.apply_watcher_event(&Event::Init);
    account_writer.apply_watcher_event(&Event::InitDone);
    let resolver = CachedResolver::new(tokens, accounts, Some(client), metrics);
    resolver.sync().await;
    resolver
}

/// A client whose API answers every request with `status` and `body`, recording the paths.
fn answering(status: StatusCode, body: Value) -> (kube::Client, Arc<Mutex<Vec<String>>>) {
    let paths = Arc::new(Mutex::new(Vec::new()));
    let seen = paths.clone();
    let client = fake_kube_requests(move |r: FakeRequest| {
        seen.lock().unwrap().push(r.path);
        (status, body.clone())
    });
    (client, paths)
}

fn fetches(metrics: &Metrics, result: &str) -> bool {
    let text = metrics.encode().unwrap();
    text.contains(&format!(
        "idaas_projector_webhook_service_account_fetches_total{{result=\"{result}\"}} 1\n"
    ))
}

fn unavailable(lookup: AccountLookup) -> String {
    match lookup {
        AccountLookup::Unavailable(why) => why,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn forbidden_names_the_permission_to_grant() {
    let metrics = Arc::new(Metrics::new());
    let (code, status) = api_failure(403, "Forbidden", "forbidden");
    let (client, paths) = answering(code, status);
    let r = resolver(client, metrics.clone()).await;
    let why = unavailable(r.fetch_service_account("shop", "payments").await);
    assert!(why.contains("403 Forbidden"), "{why}");
    assert!(
        why.contains("get, list and watch on serviceaccounts"),
        "{why}"
    );
    assert!(why.contains("--service-account-opt-in=false"), "{why}");
    assert_eq!(
        *paths.lock().unwrap(),
        ["/api/v1/namespaces/shop/serviceaccounts/payments"]
    );
    assert!(fetches(&metrics, "error"));
}

#[tokio::test]
async fn a_server_error_is_a_retry() {
    let metrics = Arc::new(Metrics::new());
    let (code, status) = api_failure(500, "InternalError", "etcd is sad");
    let (client, _) = answering(code, status);
    let r = resolver(client, metrics.clone()).await;
    let why = unavailable(r.fetch_service_account("shop", "payments").await);
    assert!(
        why.contains("cannot read ServiceAccount \"payments\""),
        "{why}"
    );
    assert!(why.ends_with("retry in a few seconds"), "{why}");
    assert!(fetches(&metrics, "error"));
}

#[tokio::test]
async fn not_found_is_remembered_for_a_moment() {
    let metrics = Arc::new(Metrics::new());
    let (client, paths) = answering(StatusCode::NOT_FOUND, not_found());
    let r = resolver(client, metrics.clone()).await;
    for _ in 0..5 {
        assert_eq!(
            r.fetch_service_account("shop", "ghost").await,
            AccountLookup::Absent
        );
    }
    assert_eq!(
        paths.lock().unwrap().len(),
        1,
        "asked once, then remembered"
    );
    assert!(fetches(&metrics, "not_found"));
}

#[tokio::test]
async fn names_the_api_could_not_hold_are_never_asked_for() {
    let metrics = Arc::new(Metrics::new());
    let (client, paths) = answering(StatusCode::OK, json!({}));
    let r = resolver(client, metrics.clone()).await;
    for (namespace, name) in [
        ("shop", "../../secrets/x"),
        ("shop", "a?b"),
        ("shop", ""),
        ("", "payments"),
        ("Shop", "payments"),
        ("shop/..", "payments"),
    ] {
        assert_eq!(
            r.fetch_service_account(namespace, name).await,
            AccountLookup::Absent,
            "{namespace:?}/{name:?}"
        );
    }
    assert!(paths.lock().unwrap().is_empty(), "no request was sent");
    assert!(
        !metrics
            .encode()
            .unwrap()
            .contains("service_account_fetches_total{")
    );
}

#[tokio::test]
async fn without_service_accounts_nothing_is_read() {
    let metrics = Arc::new(Metrics::new());
    let (client, paths) = answering(StatusCode::OK, json!({}));
    let r = resolver(client, metrics).await.without_service_accounts();
    assert_eq!(
        r.service_account("shop", "payments"),
        Some(AccountLookup::Absent)
    );
    assert_eq!(
        r.fetch_service_account("shop", "payments").await,
        AccountLookup::Absent
    );
    assert!(paths.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn reads_in_flight_are_capped_and_time_out() {
    let metrics = Arc::new(Metrics::new());
    let (client, mut api) = mock_api::pair();
    let r = Arc::new(resolver(client, metrics.clone()).await);
    // MAX_FETCHES reads the API server never answers.
    let mut held = Vec::new();
    for i in 0..MAX_FETCHES {
        let r = r.clone();
        held.push(tokio::spawn(async move {
            r.fetch_service_account("shop", &format!("sa-{i}")).await
        }));
    }
    let mut replies = Vec::new();
    for _ in 0..MAX_FETCHES {
        let (sent, reply) = api.next_any().await;
        assert_eq!(sent.method, Method::GET);
        assert!(
            sent.path
                .starts_with("/api/v1/namespaces/shop/serviceaccounts/sa-")
        );
        replies.push(reply);
    }
    // One more is refused at once, without a request.
    let why = unavailable(r.fetch_service_account("shop", "one-more").await);
    assert!(why.contains("already reading 8 ServiceAccounts"), "{why}");
    assert!(fetches(&metrics, "busy"));
    // The held reads time out with a message that says so.
    tokio::time::advance(Duration::from_secs(3)).await;
    for read in held {
        let why = unavailable(read.await.unwrap());
        assert!(why.contains("did not answer within 2s"), "{why}");
    }
    drop(replies);
    api.expect_no_more().await;
}
