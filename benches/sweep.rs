//! The projector's sweep over N pods (default 10,000) served by the in-process fake API:
//! wall time of a whole sweep, of the same pages only listed and parsed (the API's share and
//! the transfer), and of the classification alone (no API at all); and the heap the sweep
//! holds at its peak above what was allocated before it started (and the same for the pages
//! only listed and parsed: the API's copy of a page, its JSON and the parsed page), for two
//! cluster sizes, to show that it follows the page size and not the number of pods.
//!
//! `cargo bench --bench sweep` (`-- --pods N --runs R` to vary)

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use idaas_projector::controller::sweep::{PAGE_SIZE, SweepSettings, Sweeper};
use idaas_projector::crd::M2MToken;
use idaas_projector::idaas::{HttpConfig, IdaasClient};
use idaas_projector::testing::fake_api::FakeApi;
use idaas_projector::testing::{bench_arg, reconcile_context};
use idaas_projector::webhook::mutate::{
    AccountLookup, MutateConfig, Mutation, Scope, TokenDefaults, TokenLookup, classify, mutate,
};
use kube::api::ListParams;
use kube::runtime::reflector;
use kube::runtime::watcher;
use serde_json::{Value, json};

/// The system allocator, counting the bytes in use and the peak since the last reset.
struct Counting;

static IN_USE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = IN_USE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const NAMESPACES: usize = 20;
const ROLE: &str = "acs:ram::1234567890123456:role/app";

fn config() -> MutateConfig {
    MutateConfig {
        init_image: "registry.example.com/idaas-projector:1.0.0".into(),
        default_oidc_provider_arn: Some("acs:ram::1234567890123456:oidc-provider/idaas".into()),
        ..MutateConfig::default()
    }
}

/// A pod of about 4 KiB as the API server returns it: labels, owner, managed fields, two
/// containers with resources and probes, and a status.
fn pod(i: usize) -> Value {
    let ns = format!("team-{:02}", i % NAMESPACES);
    let app = format!("app-{:03}", i % 300);
    let annotations = match i % 10 {
        0..=2 => json!({"idaas-projector.io/m2m-token": "app"}),
        _ => json!({"prometheus.io/scrape": "true"}),
    };
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "generateName": format!("{app}-7d9f8c6b5-"), "namespace": ns,
            "uid": format!("00000000-0000-4000-8000-{i:012}"), "resourceVersion": (1000 + i).to_string(),
            "labels": {"app.kubernetes.io/name": app, "pod-template-hash": "7d9f8c6b5", "tier": "backend"},
            "annotations": annotations,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{app}-7d9f8c6b5"),
                "uid": "11111111-2222-4333-8444-555555555555", "controller": true, "blockOwnerDeletion": true}],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
                "time": "2026-11-30T10:00:00Z", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:generateName": {}, "f:labels": {".": {}, "f:app.kubernetes.io/name": {}}},
                    "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {".": {}, "f:image": {}, "f:resources": {}}}}}}],
        },
        "spec": {
            "serviceAccountName": if i % 10 == 3 { "api" } else { "default" },
            "containers": [
                {"name": "app", "image": format!("registry.example.com/{app}:1.4.2"),
                 "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                 "env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "PORT", "value": "8080"}],
                 "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
                 "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 5},
                 "volumeMounts": [{"name": "kube-api-access-abcde", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}]},
                {"name": "proxy", "image": "registry.example.com/proxy:2.0",
                 "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}}}
            ],
            "volumes": [{"name": "kube-api-access-abcde", "projected": {"sources": [{"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}]}}],
            "nodeName": format!("node-{:03}", i % 100), "restartPolicy": "Always", "dnsPolicy": "ClusterFirst",
        },
        "status": {"phase": "Running", "podIP": format!("10.0.{}.{}", (i / 250) % 250, i % 250), "hostIP": "192.168.0.10",
            "startTime": "2026-11-30T10:00:01Z", "qosClass": "Burstable",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-30T10:00:09Z"}],
            "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0, "image": "x", "imageID": "sha256:0123456789abcdef", "containerID": "containerd://0123456789abcdef", "started": true, "state": {"running": {"startedAt": "2026-11-30T10:00:05Z"}}}]}
    });
    // Most pods that opt in were injected; one in ten of them was not.
    if i % 10 <= 2 && !i.is_multiple_of(100) {
        let scope = Scope::pod_only(Some(&ns));
        let lookup = TokenLookup::Found(TokenDefaults {
            secret_name: "app".into(),
            role_arn: Some(ROLE.into()),
            oidc_provider_arn: None,
        });
        if let Ok(Mutation::Injected { patch, .. }) = mutate(&pod, &scope, &config(), |_| lookup) {
            json_patch::patch(&mut pod, &patch).expect("patch applies");
        }
    }
    pod["metadata"]["name"] = json!(format!("{app}-7d9f8c6b5-{i:05}"));
    pod
}

fn populate(api: &FakeApi, pods: usize) -> usize {
    let mut bytes = 0;
    for n in 0..NAMESPACES {
        let ns = format!("team-{n:02}");
        let labels = if n % 2 == 0 {
            json!({"idaas-projector.io/injection": "enabled"})
        } else {
            json!({})
        };
        api.put(
            "api/v1/namespaces",
            json!({"metadata": {"name": ns, "labels": labels}}),
        );
        api.put(
            "api/v1/serviceaccounts",
            json!({"metadata": {"name": "api", "namespace": ns,
            "annotations": {"idaas-projector.io/m2m-token": "app"}}}),
        );
        api.put(
            "api/v1/serviceaccounts",
            json!({"metadata": {"name": "default", "namespace": ns}}),
        );
        api.put("apis/idaas-projector.io/v1alpha1/m2mtokens", json!({
            "apiVersion": "idaas-projector.io/v1alpha1", "kind": "M2MToken",
            "metadata": {"name": "app", "namespace": ns, "uid": format!("uid-{ns}")},
            "spec": {"issuer": "https://example.aliyunidaas.com/api/v2/iauths_system/oauth2",
                "audience": "https://sts.aliyuncs.com", "clientId": "app_1", "roleArn": ROLE,
                "clientAuth": {"method": "client_secret_post", "secretRef": {"name": "c", "key": "k"}}}
        }));
    }
    for i in 0..pods {
        let p = pod(i);
        bytes += serde_json::to_vec(&p).map(|v| v.len()).unwrap_or(0);
        api.put("api/v1/pods", p);
    }
    bytes
}

fn store(api: &FakeApi) -> reflector::Store<M2MToken> {
    let (reader, mut writer) = reflector::store();
    writer.apply_watcher_event(&watcher::Event::Init);
    for t in api.all("apis/idaas-projector.io/v1alpha1/m2mtokens") {
        writer.apply_watcher_event(&watcher::Event::InitApply(
            serde_json::from_value(t).expect("an M2MToken"),
        ));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    reader
}

/// Lists every page and parses it as the sweep does, keeping nothing.
async fn list_only(client: &kube::Client) -> usize {
    #[derive(serde::Deserialize)]
    struct Page {
        metadata: kube::core::ListMeta,
        items: Vec<Value>,
    }
    let mut params = ListParams::default().limit(PAGE_SIZE);
    let mut n = 0;
    loop {
        let request = kube::core::Request::new("/api/v1/pods")
            .list(&params)
            .expect("a request");
        let page: Page = client.request(request).await.expect("a page");
        n += page.items.len();
        match page.metadata.continue_ {
            Some(next) if !next.is_empty() => params = params.continue_token(&next),
            _ => return n,
        }
    }
}

struct Figures {
    sweep: Duration,
    list: Duration,
    classify: Duration,
    peak: usize,
    list_peak: usize,
    bytes: usize,
    summary: String,
}

async fn measure(pods: usize, runs: usize) -> Figures {
    let api = FakeApi::default();
    let bytes = populate(&api, pods);
    let ctx = Arc::new(reconcile_context(
        api.client(),
        IdaasClient::new(&HttpConfig::default()).expect("a client"),
        4,
    ));
    let settings = SweepSettings {
        interval: Duration::from_secs(300),
        inject: config(),
        service_account_opt_in: true,
    };
    let mut sweeper = Sweeper::new(api.client(), ctx, settings, Vec::new(), vec![store(&api)]);
    // The first sweep publishes the Events and counts; later ones find nothing new to write.
    let first = sweeper.sweep_once().await.expect("a sweep");
    let summary = format!("{:?}", first.namespaces.values().sum::<i64>());
    let (mut sweep, mut list, mut classify_time) = (Duration::MAX, Duration::MAX, Duration::MAX);
    let (mut peak, mut list_peak) = (0, 0);
    let client = api.client();
    let all: Vec<Value> = api.all("api/v1/pods");
    let account = AccountLookup::Absent;
    for _ in 0..runs {
        let base = IN_USE.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        let t = Instant::now();
        sweeper.sweep_once().await.expect("a sweep");
        sweep = sweep.min(t.elapsed());
        peak = peak.max(PEAK.load(Ordering::Relaxed).saturating_sub(base));

        let base = IN_USE.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        let t = Instant::now();
        assert_eq!(list_only(&client).await, pods);
        list = list.min(t.elapsed());
        list_peak = list_peak.max(PEAK.load(Ordering::Relaxed).saturating_sub(base));

        let copies = all.clone();
        let t = Instant::now();
        for p in copies {
            let ns = p["metadata"]["namespace"].as_str().unwrap_or("").to_owned();
            let scope = Scope {
                namespace: Some(&ns),
                namespace_enabled: false,
                service_account: &account,
            };
            std::hint::black_box(classify(p, &scope, &config(), |_| {
                TokenLookup::Found(TokenDefaults {
                    secret_name: "app".into(),
                    role_arn: Some(ROLE.into()),
                    oidc_provider_arn: None,
                })
            }));
        }
        classify_time = classify_time.min(t.elapsed());
    }
    Figures {
        sweep,
        list,
        classify: classify_time,
        peak,
        list_peak,
        bytes,
        summary,
    }
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let pods = bench_arg("--pods", 10_000);
    let runs = bench_arg("--runs", 3);
    for n in [pods / 5, pods] {
        let f = measure(n, runs).await;
        println!(
            "{n} pods ({:.1} MiB of pod JSON, {} opted in): sweep {:.0} ms (best of {runs}); \
             pages listed and parsed only {:.0} ms; classification alone {:.0} ms ({:.1} us/pod); \
             peak heap above the start of the sweep {:.1} MiB (of the pages only listed and parsed: {:.1} MiB)",
            mib(f.bytes),
            f.summary,
            f.sweep.as_secs_f64() * 1e3,
            f.list.as_secs_f64() * 1e3,
            f.classify.as_secs_f64() * 1e3,
            f.classify.as_secs_f64() * 1e6 / n as f64,
            mib(f.peak),
            mib(f.list_peak),
        );
    }
}
