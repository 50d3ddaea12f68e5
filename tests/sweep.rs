//! The projector's sweep against the in-process fake API: pages, each classification, one
//! Event per pod and finding, the M2MTokens' counts, the gauges, and no sweep on a follower.

use std::sync::Arc;
use std::time::Duration;

use idaas_projector::controller::sweep::{PAGE_SIZE, SweepSettings, Sweeper};
use idaas_projector::controller::{Settings, run_while_leader};
use idaas_projector::crd::M2MToken;
use idaas_projector::idaas::{HttpConfig, IdaasClient};
use idaas_projector::testing::fake_api::FakeApi;
use idaas_projector::testing::reconcile_context;
use idaas_projector::webhook::mutate::{
    MutateConfig, Mutation, Scope, TokenDefaults, TokenLookup, mutate,
};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use serde_json::{Value, json};

const PODS: &str = "api/v1/pods";
const TOKENS: &str = "apis/idaas-projector.io/v1alpha1/m2mtokens";
const EVENTS: &str = "apis/events.k8s.io/v1/events";
const ROLE: &str = "acs:ram::1234567890123456:role/payments";
const PROVIDER: &str = "acs:ram::1234567890123456:oidc-provider/idaas";

fn config() -> MutateConfig {
    MutateConfig {
        init_image: "registry.example.com/idaas-projector:1.0.0".into(),
        default_oidc_provider_arn: Some(PROVIDER.into()),
        ..MutateConfig::default()
    }
}

fn m2m_token(namespace: &str, name: &str, role: &str) -> Value {
    json!({
        "apiVersion": "idaas-projector.io/v1alpha1", "kind": "M2MToken",
        "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{name}")},
        "spec": {
            "issuer": "https://example.aliyunidaas.com/api/v2/iauths_system/oauth2",
            "audience": "https://sts.aliyuncs.com", "clientId": "app_1",
            "clientAuth": {"method": "client_secret_post", "secretRef": {"name": "creds", "key": "secret"}},
            "roleArn": role,
        }
    })
}

/// A pod of a Deployment, as the API server stores it.
fn pod(namespace: &str, name: &str, annotations: Value, account: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "generateName": format!("{}-", name.rsplit_once('-').map_or(name, |p| p.0)),
            "namespace": namespace, "uid": format!("uid-{name}"), "annotations": annotations,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d8f",
                "uid": "rs", "controller": true}],
        },
        "spec": {"serviceAccountName": account, "containers": [{"name": "app", "image": "app:1"}]}
    })
}

/// `pod`, as the webhook injected it with `role` (before its name was generated).
fn injected(mut pod: Value, role: &str, enabled: bool, account: &Value) -> Value {
    let name = pod["metadata"]["name"].take();
    let namespace = pod["metadata"]["namespace"].as_str().unwrap().to_owned();
    let account = match account {
        Value::Null => idaas_projector::webhook::mutate::AccountLookup::Absent,
        a => idaas_projector::webhook::mutate::AccountLookup::Found(
            idaas_projector::webhook::mutate::AccountAnnotations {
                name: a["metadata"]["name"].as_str().unwrap().to_owned(),
                annotations: serde_json::from_value(a["metadata"]["annotations"].clone()).unwrap(),
            },
        ),
    };
    let scope = Scope {
        namespace: Some(&namespace),
        namespace_enabled: enabled,
        service_account: &account,
    };
    let lookup = TokenLookup::Found(TokenDefaults {
        secret_name: "payments".into(),
        role_arn: Some(role.into()),
        oidc_provider_arn: None,
    });
    let Ok(Mutation::Injected { patch, .. }) = mutate(&pod, &scope, &config(), |_| lookup) else {
        panic!("not injected");
    };
    json_patch::patch(&mut pod, &patch).unwrap();
    pod["metadata"]["name"] = name;
    pod
}

fn opt_in(token: &str) -> Value {
    json!({"idaas-projector.io/m2m-token": token})
}

struct World {
    api: FakeApi,
    ctx: Arc<idaas_projector::controller::reconcile::Context>,
    store: Store<M2MToken>,
    writer: reflector::store::Writer<M2MToken>,
}

impl World {
    /// The M2MToken store as the controllers keep it, loaded from the fake API.
    fn sync_store(&mut self) {
        self.writer.apply_watcher_event(&watcher::Event::Init);
        for t in self.api.all(TOKENS) {
            let token: M2MToken = serde_json::from_value(t).unwrap();
            self.writer
                .apply_watcher_event(&watcher::Event::InitApply(token));
        }
        self.writer.apply_watcher_event(&watcher::Event::InitDone);
    }

    fn sweeper(&self, namespaces: Vec<String>) -> Sweeper {
        Sweeper::new(
            self.api.client(),
            self.ctx.clone(),
            settings(),
            namespaces,
            vec![self.store.clone()],
        )
    }

    fn events(&self) -> Vec<Value> {
        self.api.all(EVENTS)
    }

    fn pods_status(&self, namespace: &str, name: &str) -> Value {
        let t = self.api.get(TOKENS, namespace, name).unwrap();
        t["status"]["pods"].clone()
    }
}

fn settings() -> SweepSettings {
    SweepSettings {
        interval: Duration::from_secs(3600),
        inject: config(),
        service_account_opt_in: true,
    }
}

fn world() -> World {
    let api = FakeApi::default();
    let ctx = Arc::new(reconcile_context(
        api.client(),
        IdaasClient::new(&HttpConfig::default()).unwrap(),
        4,
    ));
    let (store, writer) = reflector::store();
    World {
        api,
        ctx,
        store,
        writer,
    }
}

/// `shop` is labelled for ServiceAccount opt-in, `plain` is not. In `shop`: one pod current,
/// one opted in by annotation and not injected, one opted in by its ServiceAccount and not
/// injected, one opted out; in `plain`: one injected with a role its M2MToken no longer names,
/// and enough pods that opt in to nothing to fill more than two pages.
fn populate(w: &mut World) -> usize {
    let api = &w.api;
    api.put(
        "api/v1/namespaces",
        json!({"metadata": {"name": "shop", "labels": {"idaas-projector.io/injection": "enabled"}}}),
    );
    api.put("api/v1/namespaces", json!({"metadata": {"name": "plain"}}));
    let account = json!({"metadata": {"name": "api", "namespace": "shop",
        "annotations": {"idaas-projector.io/m2m-token": "payments"}}});
    api.put("api/v1/serviceaccounts", account.clone());
    api.put(TOKENS, m2m_token("shop", "payments", ROLE));
    api.put(
        TOKENS,
        m2m_token(
            "plain",
            "orders",
            "acs:ram::1234567890123456:role/orders-v2",
        ),
    );

    let current = pod("shop", "web-5d8f-aaaaa", opt_in("payments"), "default");
    api.put(PODS, injected(current, ROLE, true, &Value::Null));
    api.put(
        PODS,
        pod("shop", "web-5d8f-bbbbb", opt_in("payments"), "default"),
    );
    api.put(PODS, pod("shop", "api-7c9d-ccccc", json!({}), "api"));
    let mut out = pod("shop", "web-5d8f-ddddd", opt_in("payments"), "default");
    out["metadata"]["labels"] = json!({"idaas-projector.io/injection": "disabled"});
    api.put(PODS, out);
    let stale = pod("plain", "orders-6b7c-eeeee", opt_in("orders"), "default");
    let stale = injected(
        stale,
        "acs:ram::1234567890123456:role/orders",
        false,
        &Value::Null,
    );
    api.put(PODS, stale);
    let fillers = 2 * PAGE_SIZE as usize + 100;
    for i in 0..fillers {
        api.put(
            PODS,
            pod("plain", &format!("batch-{i:05}"), json!({}), "default"),
        );
    }
    w.sync_store();
    fillers + 5
}

fn gauges(w: &World) -> String {
    w.ctx
        .metrics
        .encode()
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("idaas_projector_pods{"))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn a_sweep_reads_every_page_classifies_reports_and_counts() {
    let mut w = world();
    let total = populate(&mut w);
    let mut sweeper = w.sweeper(Vec::new());
    let tally = sweeper.sweep_once().await.unwrap();
    assert_eq!(tally.pods, total);

    // Pages: every list asked for 500, and the later ones carried the continue token.
    let lists: Vec<_> = w
        .api
        .seen()
        .into_iter()
        .filter(|s| s.method == "GET" && s.path == "/api/v1/pods")
        .collect();
    assert_eq!(lists.len(), 3, "{lists:?}");
    assert!(lists.iter().all(|s| s.query.contains("limit=500")));
    assert!(lists[1..].iter().all(|s| s.query.contains("continue=")));
    // The labelled namespaces were listed by label; one ServiceAccount read, once.
    let seen = w.api.seen();
    assert!(seen.iter().any(|s| {
        s.path == "/api/v1/namespaces"
            && s.query
                .contains("labelSelector=idaas-projector.io%2Finjection%3Denabled")
    }));
    let account_reads = seen
        .iter()
        .filter(|s| {
            s.path
                .starts_with("/api/v1/namespaces/shop/serviceaccounts/")
        })
        .count();
    assert_eq!(account_reads, 2, "api and default, once each: {seen:?}");

    // One Event per pod that needs attention, on the pod, with the fix.
    let events = w.events();
    let mut found: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["regarding"]["name"].as_str().unwrap().to_owned(),
                e["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            ("api-7c9d-ccccc".to_owned(), "NotInjected".to_owned()),
            ("orders-6b7c-eeeee".to_owned(), "InjectionStale".to_owned()),
            ("web-5d8f-bbbbb".to_owned(), "NotInjected".to_owned()),
        ]
    );
    for e in &events {
        assert_eq!(e["type"], "Warning");
        assert_eq!(e["regarding"]["kind"], "Pod");
        let note = e["note"].as_str().unwrap();
        assert!(note.contains("ReplicaSet web-5d8f"), "{note}");
        assert!(note.contains("idaas-projector doctor pod"), "{note}");
    }
    let stale = events
        .iter()
        .find(|e| e["reason"] == "InjectionStale")
        .unwrap();
    assert!(
        stale["note"].as_str().unwrap().contains("role/orders-v2"),
        "{stale}"
    );

    // Counts in each M2MToken's status, and the gauges.
    assert_eq!(
        w.pods_status("shop", "payments"),
        json!({"injected": 1, "notInjected": 2, "stale": 0})
    );
    assert_eq!(
        w.pods_status("plain", "orders"),
        json!({"injected": 0, "notInjected": 0, "stale": 1})
    );
    assert_eq!(
        gauges(&w),
        [
            "idaas_projector_pods{namespace=\"plain\",state=\"stale\"} 1",
            "idaas_projector_pods{namespace=\"shop\",state=\"injected\"} 1",
            "idaas_projector_pods{namespace=\"shop\",state=\"not_injected\"} 2",
        ]
        .join("\n")
    );
    let text = w.ctx.metrics.encode().unwrap();
    assert!(text.contains("idaas_projector_sweeps_total{result=\"success\"} 1"));
}

#[tokio::test]
async fn nothing_is_repeated_while_nothing_changes_and_a_change_is_reported() {
    let mut w = world();
    populate(&mut w);
    let mut sweeper = w.sweeper(Vec::new());
    sweeper.sweep_once().await.unwrap();
    w.sync_store();
    let writes = |w: &World| {
        w.api
            .seen()
            .into_iter()
            .filter(|s| s.method != "GET")
            .count()
    };
    let before = writes(&w);
    sweeper.sweep_once().await.unwrap();
    assert_eq!(writes(&w), before, "a second sweep writes nothing");
    assert_eq!(w.events().len(), 3);

    // The M2MToken's role changes: the current pod is now stale, reported once; the counts
    // follow.
    w.api.put(
        TOKENS,
        m2m_token(
            "shop",
            "payments",
            "acs:ram::1234567890123456:role/payments-v2",
        ),
    );
    w.sync_store();
    sweeper.sweep_once().await.unwrap();
    let events = w.events();
    let stale: Vec<_> = events
        .iter()
        .filter(|e| e["regarding"]["name"] == "web-5d8f-aaaaa")
        .collect();
    assert_eq!(stale.len(), 1, "{events:?}");
    assert_eq!(stale[0]["reason"], "InjectionStale");
    // The two pods not injected are not told again: they still are.
    assert_eq!(events.len(), 3 + 1);
    assert_eq!(
        w.pods_status("shop", "payments"),
        json!({"injected": 0, "notInjected": 2, "stale": 1})
    );
    w.sync_store();
    let before = writes(&w);
    sweeper.sweep_once().await.unwrap();
    assert_eq!(writes(&w), before);
}

#[tokio::test]
async fn a_failed_list_changes_no_count_and_no_gauge() {
    let mut w = world();
    populate(&mut w);
    w.api.forbid("GET", "/api/v1/pods");
    let mut sweeper = w.sweeper(Vec::new());
    let err = sweeper.sweep_once().await.unwrap_err();
    assert!(err.to_string().contains("/api/v1/pods"), "{err}");
    assert!(w.events().is_empty());
    assert!(w.pods_status("shop", "payments").is_null());
    assert_eq!(gauges(&w), "");
}

#[tokio::test]
async fn watched_namespaces_only() {
    let mut w = world();
    populate(&mut w);
    let mut sweeper = w.sweeper(vec!["shop".into()]);
    let tally = sweeper.sweep_once().await.unwrap();
    assert_eq!(tally.pods, 4);
    assert!(
        w.api
            .seen()
            .iter()
            .all(|s| s.path != "/api/v1/pods" && !s.path.contains("/namespaces/plain/"))
    );
    assert_eq!(w.events().len(), 2);
}

#[tokio::test]
async fn no_sweep_on_a_follower() {
    let mut w = world();
    populate(&mut w);
    let (leader_tx, leader_rx) = tokio::sync::watch::channel(false);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stop = futures::FutureExt::shared(futures::FutureExt::boxed(async move {
        let _ = stop_rx.await;
    }));
    let settings = Settings {
        namespaces: Vec::new(),
        max_concurrent_refreshes: 4,
        recheck_interval: Duration::from_secs(60),
        lease: None,
        sweep: Some(settings()),
    };
    let (client, ctx) = (w.api.client(), w.ctx.clone());
    let gate = tokio::spawn(run_while_leader(
        leader_rx,
        futures::future::pending::<String>(),
        move |lost| {
            idaas_projector::controller::run_controllers(
                client.clone(),
                ctx.clone(),
                settings.clone(),
                lost,
            )
        },
        stop,
    ));
    let pod_lists = |w: &World| {
        w.api
            .seen()
            .iter()
            .filter(|s| s.path == "/api/v1/pods")
            .count()
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(pod_lists(&w), 0, "a follower does not sweep");

    leader_tx.send(true).unwrap();
    for _ in 0..500 {
        if !gauges(&w).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(pod_lists(&w), 3, "the leader sweeps");
    assert!(!gauges(&w).is_empty());

    // Leadership lost: the sweep stops, and the gauges are cleared (a follower reports none).
    leader_tx.send(false).unwrap();
    for _ in 0..500 {
        if gauges(&w).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(gauges(&w), "");
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(10), gate)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
