//! The leadership gate: only the lease holder reconciles, losing the lease stops reconciling
//! promptly, and a dead lease task is an error (the process exits non-zero).
//!
//! One leader at a time, with two replicas against one fake API server whose Lease implements
//! server-side apply's field ownership: two replicas claiming a free Lease at once never both
//! lead, and a leader whose renewals fail stops every write before its Lease expires, after which
//! the other replica is the only writer.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use http::{Method, StatusCode};
use idaas_projector::controller::leader::WriteGate;
use idaas_projector::controller::reconcile::{Context, reconcile};
use idaas_projector::controller::{LeaseSettings, lead};
use idaas_projector::crd::M2MToken;
use idaas_projector::emulator::idaas::IdaasEmulator;
use idaas_projector::idaas::{HttpConfig, IdaasClient};
use idaas_projector::testing::{
    self, FakeRequest, fake_kube_requests, install_provider, not_found, reconcile_context,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use serde_json::{Map, Value, json};

use futures::FutureExt;
use idaas_projector::controller::{RunError, run_while_leader};
use tokio::sync::{oneshot, watch};

#[derive(Default)]
struct Counters {
    started: AtomicUsize,
    stopped: AtomicUsize,
}

async fn eventually(what: &str, f: impl Fn() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting until {what}");
}

fn stop_future(
    rx: oneshot::Receiver<()>,
) -> futures::future::Shared<futures::future::BoxFuture<'static, ()>> {
    async move {
        let _ = rx.await;
    }
    .boxed()
    .shared()
}

#[tokio::test]
async fn reconciles_only_while_leading() {
    let (leader_tx, leader_rx) = watch::channel(false);
    let (_task_tx, task_rx) = oneshot::channel::<String>();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let counters = Arc::new(Counters::default());
    let c = counters.clone();
    let gate = tokio::spawn(run_while_leader(
        leader_rx,
        async move { task_rx.await.unwrap_or_else(|_| "dropped".into()) },
        move |lost| {
            let c = c.clone();
            async move {
                c.started.fetch_add(1, Ordering::SeqCst);
                lost.await;
                c.stopped.fetch_add(1, Ordering::SeqCst);
            }
        },
        stop_future(stop_rx),
    ));

    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        counters.started.load(Ordering::SeqCst),
        0,
        "a follower does not reconcile"
    );

    leader_tx.send(true).unwrap();
    eventually("work starts", || {
        counters.started.load(Ordering::SeqCst) == 1
    })
    .await;

    leader_tx.send(false).unwrap();
    eventually("work stops on losing the lease", || {
        counters.stopped.load(Ordering::SeqCst) == 1
    })
    .await;

    leader_tx.send(true).unwrap();
    eventually("work starts again", || {
        counters.started.load(Ordering::SeqCst) == 2
    })
    .await;

    stop_tx.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), gate)
        .await
        .unwrap()
        .unwrap();
    assert!(result.is_ok());
    assert_eq!(counters.stopped.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_dead_lease_task_is_an_error_and_stops_the_work() {
    let (leader_tx, leader_rx) = watch::channel(true);
    let (task_tx, task_rx) = oneshot::channel::<String>();
    let (_stop_tx, stop_rx) = oneshot::channel::<()>();
    let counters = Arc::new(Counters::default());
    let c = counters.clone();
    let gate = tokio::spawn(run_while_leader(
        leader_rx,
        async move { task_rx.await.unwrap_or_else(|_| "dropped".into()) },
        move |lost| {
            let c = c.clone();
            async move {
                c.started.fetch_add(1, Ordering::SeqCst);
                lost.await;
                c.stopped.fetch_add(1, Ordering::SeqCst);
            }
        },
        stop_future(stop_rx),
    ));
    eventually("work starts", || {
        counters.started.load(Ordering::SeqCst) == 1
    })
    .await;
    task_tx
        .send("Err(the API server went away)".into())
        .unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), gate)
        .await
        .unwrap()
        .unwrap();
    match result {
        Err(RunError::Lease(message)) => assert!(message.contains("lease task ended"), "{message}"),
        Ok(()) => panic!("a dead lease task must be an error"),
    }
    assert_eq!(
        counters.stopped.load(Ordering::SeqCst),
        1,
        "reconciling stopped"
    );
    drop(leader_tx);
}

#[tokio::test]
async fn a_follower_stops_cleanly_on_sigterm() {
    let (_leader_tx, leader_rx) = watch::channel(false);
    let (_task_tx, task_rx) = oneshot::channel::<String>();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let gate = tokio::spawn(run_while_leader(
        leader_rx,
        async move { task_rx.await.unwrap_or_else(|_| "dropped".into()) },
        |lost| lost,
        stop_future(stop_rx),
    ));
    stop_tx.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), gate)
        .await
        .unwrap()
        .unwrap();
    assert!(result.is_ok());
}

// One leader at a time: two replicas against one fake API server.

const LEASE: &str = "idaas-projector";
const LEASE_NAMESPACE: &str = "idaas-system";
const DURATION_SECS: u64 = 6;
const GRACE_SECS: u64 = 2;
const AUDIENCE: &str = "api://leader";
const CLIENT_ID: &str = "app_leader";
const CLIENT_SECRET: &str = "leader-secret-value";

/// The API server's failure answer.
fn failure(code: u16, reason: &str) -> (StatusCode, Value) {
    testing::api_failure(code, reason, reason)
}

/// The Lease as the fake API server keeps it: its spec, and the field manager owning each field.
#[derive(Default)]
struct LeaseObject {
    spec: Map<String, Value>,
    owners: HashMap<String, String>,
    version: u64,
}

impl LeaseObject {
    fn json(&self) -> Value {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": LEASE, "namespace": LEASE_NAMESPACE,
                "resourceVersion": self.version.to_string()},
            "spec": self.spec})
    }

    /// Server-side apply: without force, setting a field another manager owns to another value
    /// is a conflict, and nothing is applied.
    fn apply(&mut self, manager: &str, force: bool, spec: &Map<String, Value>) -> bool {
        let conflict = spec.iter().any(|(k, v)| {
            self.spec.get(k) != Some(v) && self.owners.get(k).is_some_and(|o| o != manager)
        });
        if conflict && !force {
            return false;
        }
        self.update(manager, spec);
        true
    }

    /// A patch: the fields it sets become the manager's, `null` removes a field.
    fn update(&mut self, manager: &str, spec: &Map<String, Value>) {
        for (k, v) in spec {
            if v.is_null() {
                self.spec.remove(k);
                self.owners.remove(k);
            } else {
                self.spec.insert(k.clone(), v.clone());
                self.owners.insert(k.clone(), manager.to_owned());
            }
        }
        self.version += 1;
    }

    /// The holder and when another replica may take the Lease (`renewTime` + duration).
    fn held(&self) -> Option<(String, SystemTime)> {
        let holder = self.spec.get("holderIdentity")?.as_str()?.to_owned();
        let renewed: MicroTime =
            serde_json::from_value(self.spec.get("renewTime")?.clone()).ok()?;
        let secs = self.spec.get("leaseDurationSeconds")?.as_u64()?;
        Some((
            holder,
            SystemTime::from(renewed.0) + Duration::from_secs(secs),
        ))
    }
}

/// One write of the reconciler as the API server received it.
#[derive(Debug, Clone)]
struct Write {
    at: SystemTime,
    replica: String,
    what: String,
    /// Whether the Lease named this replica as holder and had not expired when it arrived.
    by_holder: bool,
}

/// The fake API server both replicas talk to.
#[derive(Default)]
struct LeaseApi {
    lease: Mutex<LeaseObject>,
    /// Replicas whose Lease reads see the free Lease until they send their first claim: both
    /// claim it at once.
    racing: Mutex<HashSet<String>>,
    /// The replica whose Lease requests fail (500 once, then 403), with how many did.
    cut: Mutex<Option<(String, usize)>>,
    /// The status codes of the failed Lease requests.
    failed: Mutex<Vec<u16>>,
    /// Claims answered 409.
    conflicts: AtomicUsize,
    writes: Mutex<Vec<Write>>,
}

impl LeaseApi {
    fn answer(&self, replica: &str, r: FakeRequest) -> (StatusCode, Value) {
        if r.path.starts_with("/apis/coordination.k8s.io/") {
            self.answer_lease(replica, &r)
        } else {
            self.answer_reconciler(replica, r)
        }
    }

    fn answer_lease(&self, replica: &str, r: &FakeRequest) -> (StatusCode, Value) {
        let mut lease = self.lease.lock().unwrap();
        if let Some((cut, n)) = self.cut.lock().unwrap().as_mut()
            && cut == replica
        {
            *n += 1;
            let (code, reason) = if *n == 1 {
                (500, "InternalError")
            } else {
                (403, "Forbidden")
            };
            self.failed.lock().unwrap().push(code);
            return failure(code, reason);
        }
        let spec = r.body["spec"].as_object().cloned().unwrap_or_default();
        let manager = r.param("fieldManager").unwrap_or_default();
        match r.method {
            Method::GET if self.racing.lock().unwrap().contains(replica) => {
                (StatusCode::OK, LeaseObject::default().json())
            }
            Method::GET => (StatusCode::OK, lease.json()),
            Method::PATCH if r.content_type.starts_with("application/apply-patch") => {
                self.racing.lock().unwrap().remove(replica);
                if lease.apply(manager, r.param("force") == Some("true"), &spec) {
                    (StatusCode::OK, lease.json())
                } else {
                    self.conflicts.fetch_add(1, Ordering::SeqCst);
                    failure(409, "Conflict")
                }
            }
            Method::PATCH => {
                lease.update(manager, &spec);
                (StatusCode::OK, lease.json())
            }
            Method::POST => failure(409, "AlreadyExists"),
            _ => (StatusCode::NOT_FOUND, not_found()),
        }
    }

    /// The credentials Secret; no managed Secret ever, so each reconcile fetches and writes.
    fn answer_reconciler(&self, replica: &str, r: FakeRequest) -> (StatusCode, Value) {
        if r.method == Method::GET {
            if !r.path.ends_with("/secrets/leader-credentials") {
                return (StatusCode::NOT_FOUND, not_found());
            }
            let value = base64::engine::general_purpose::STANDARD.encode(CLIENT_SECRET);
            return (
                StatusCode::OK,
                json!({"apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": "leader-credentials", "namespace": "shop", "resourceVersion": "1",
                        "labels": {"idaas-projector.io/client-credentials": "true"}},
                    "data": {"client_secret": value}}),
            );
        }
        let at = SystemTime::now();
        let held = self.lease.lock().unwrap().held();
        self.writes.lock().unwrap().push(Write {
            at,
            replica: replica.to_owned(),
            what: format!("{} {}", r.method, r.path),
            by_holder: held.is_some_and(|(holder, expiry)| holder == replica && at < expiry),
        });
        if r.path.ends_with("/status") {
            let mut token = serde_json::to_value(m2mtoken("https://unused")).unwrap();
            token["status"] = r.body["status"].clone();
            return (StatusCode::OK, token);
        }
        (StatusCode::OK, r.body)
    }

    /// Every write came from the replica holding the unexpired Lease.
    fn assert_writes_by_holder(&self) {
        let writes = self.writes.lock().unwrap();
        let stray: Vec<&Write> = writes.iter().filter(|w| !w.by_holder).collect();
        assert!(
            stray.is_empty(),
            "{} writes by a replica not holding the Lease, the first: {:?}",
            stray.len(),
            &stray[..stray.len().min(3)]
        );
    }

    fn writes_of(&self, replica: &str) -> Vec<Write> {
        let writes = self.writes.lock().unwrap();
        writes
            .iter()
            .filter(|w| w.replica == replica)
            .cloned()
            .collect()
    }
}

fn m2mtoken(issuer: &str) -> M2MToken {
    serde_json::from_value(json!({
        "apiVersion": "idaas-projector.io/v1alpha1", "kind": "M2MToken",
        "metadata": {"name": "app", "namespace": "shop", "generation": 1,
            "uid": "00000000-0000-4000-8000-00000000000a"},
        "spec": {"issuer": issuer, "audience": AUDIENCE, "scopes": [".all"],
            "clientId": CLIENT_ID, "maxTokenAge": "12h",
            "clientAuth": {"method": "client_secret_post",
                "secretRef": {"name": "leader-credentials", "key": "client_secret"}}},
    }))
    .unwrap()
}

/// One projector replica: the leadership loop over its Lease, and a reconciler that keeps
/// reconciling one M2MToken every 100 ms whether or not it leads, as a controller that has not
/// yet stopped would: only the write gate keeps it from writing.
struct Replica {
    ctx: Arc<Context>,
    stop: oneshot::Sender<()>,
    lead: tokio::task::JoinHandle<Result<(), RunError>>,
    reconciler: tokio::task::JoinHandle<()>,
}

impl Replica {
    fn start(api: &Arc<LeaseApi>, name: &str, emu: &IdaasEmulator) -> Self {
        let (held, who) = (api.clone(), name.to_owned());
        let client = fake_kube_requests(move |r| held.answer(&who, r));
        let lease = LeaseSettings {
            name: LEASE.into(),
            namespace: LEASE_NAMESPACE.into(),
            identity: name.into(),
            duration_secs: DURATION_SECS,
            grace_secs: GRACE_SECS,
        };
        let idaas = IdaasClient::new(&HttpConfig {
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(2),
            ..testing::http_config(emu)
        })
        .unwrap();
        let mut ctx = reconcile_context(client.clone(), idaas, 4);
        ctx.gate = WriteGate::new(Some(&lease));
        let ctx = Arc::new(ctx);
        let (stop, stop_rx) = oneshot::channel();
        let stopped = stop_future(stop_rx);
        let token = Arc::new(m2mtoken(&emu.issuer()));
        let reconciler = tokio::spawn({
            let (ctx, stopped) = (ctx.clone(), stopped.clone());
            async move {
                while stopped.clone().now_or_never().is_none() {
                    let _ = reconcile(token.clone(), ctx.clone()).await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        let lead = tokio::spawn({
            let ctx = ctx.clone();
            async move { lead(client, &ctx, &lease, |lost| lost, stopped).await }
        });
        Replica {
            ctx,
            stop,
            lead,
            reconciler,
        }
    }

    /// `idaas_projector_leader`.
    fn leads(&self) -> bool {
        self.ctx.metrics.leader.get() == 1
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let bound = Duration::from_secs(10);
        let result = tokio::time::timeout(bound, self.lead)
            .await
            .unwrap()
            .unwrap();
        assert!(result.is_ok(), "{result:?}");
        tokio::time::timeout(bound, self.reconciler)
            .await
            .unwrap()
            .unwrap();
    }
}

/// Samples both replicas' `idaas_projector_leader` every 5 ms until `done` or `bound`, and
/// returns how many samples saw both lead.
async fn watch_both(a: &Replica, b: &Replica, bound: Duration, done: impl Fn() -> bool) -> usize {
    let end = std::time::Instant::now() + bound;
    let mut both = 0;
    while std::time::Instant::now() < end && !done() {
        both += usize::from(a.leads() && b.leads());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    both
}

async fn within(bound: Duration, what: &str, f: impl Fn() -> bool) {
    let end = std::time::Instant::now() + bound;
    while !f() {
        assert!(
            std::time::Instant::now() < end,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_racing_for_a_free_lease_never_both_lead() {
    install_provider();
    let emu = testing::emulator(CLIENT_ID, CLIENT_SECRET, AUDIENCE, Duration::from_secs(600)).await;
    let api = Arc::new(LeaseApi::default());
    api.racing
        .lock()
        .unwrap()
        .extend(["replica-a".to_owned(), "replica-b".to_owned()]);
    let a = Replica::start(&api, "replica-a", &emu);
    let b = Replica::start(&api, "replica-b", &emu);

    // Two lease durations: the claims, and renewals by the winner.
    let bound = Duration::from_secs(2 * DURATION_SECS);
    let both = watch_both(&a, &b, bound, || false).await;
    assert_eq!(both, 0, "both replicas led at once");
    assert!(
        api.conflicts.load(Ordering::SeqCst) >= 1,
        "both claimed the free Lease; the second claim was refused"
    );
    let holder = api.lease.lock().unwrap().held().unwrap().0;
    let (winner, loser) = if holder == "replica-a" {
        (&a, &b)
    } else {
        (&b, &a)
    };
    assert!(winner.leads() && !loser.leads());
    assert!(!loser.ctx.gate.is_open(), "the other replica may not write");
    assert!(!api.writes_of(&holder).is_empty(), "the holder wrote");
    api.assert_writes_by_holder();
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_renewals_fail_stops_writing_before_its_lease_expires() {
    install_provider();
    let emu = testing::emulator(CLIENT_ID, CLIENT_SECRET, AUDIENCE, Duration::from_secs(600)).await;
    let api = Arc::new(LeaseApi::default());
    let bound = Duration::from_secs(10 * DURATION_SECS);
    let a = Replica::start(&api, "replica-a", &emu);
    within(bound, "replica-a leads", || a.leads()).await;
    let b = Replica::start(&api, "replica-b", &emu);
    within(bound, "replica-a writes", || {
        !api.writes_of("replica-a").is_empty()
    })
    .await;

    // From now on every Lease request of replica-a fails: its last renewal is the one it holds.
    let expiry = {
        let lease = api.lease.lock().unwrap();
        *api.cut.lock().unwrap() = Some(("replica-a".to_owned(), 0));
        let (holder, expiry) = lease.held().unwrap();
        assert_eq!(holder, "replica-a");
        expiry
    };
    let both = watch_both(&a, &b, bound, || {
        b.leads() && !api.writes_of("replica-b").is_empty()
    })
    .await;
    assert!(b.leads(), "replica-b took the expired Lease");
    assert_eq!(both, 0, "both replicas led at once");
    assert!(
        !a.leads() && !a.ctx.gate.is_open(),
        "replica-a stepped down"
    );

    within(
        bound,
        "replica-a's Lease requests were answered 500, then 403",
        || api.failed.lock().unwrap().starts_with(&[500, 403]),
    )
    .await;
    let a_writes = api.writes_of("replica-a");
    let last_a = a_writes.last().unwrap();
    assert!(
        last_a.at < expiry,
        "replica-a wrote {} after its Lease expired",
        last_a.what
    );
    let first_b = api.writes_of("replica-b")[0].at;
    assert!(
        first_b >= expiry,
        "replica-b wrote before the Lease was free"
    );
    api.assert_writes_by_holder();
    let exposed = |r: &Replica| r.ctx.metrics.encode().unwrap();
    assert!(
        exposed(&a).contains("idaas_projector_leader 0"),
        "{}",
        exposed(&a)
    );
    assert!(
        exposed(&b).contains("idaas_projector_leader 1"),
        "{}",
        exposed(&b)
    );
    // replica-a keeps reconciling, refused: let it try a few more times.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        api.writes_of("replica-a").len(),
        a_writes.len(),
        "replica-a wrote again"
    );
    a.stop().await;
    b.stop().await;
}
