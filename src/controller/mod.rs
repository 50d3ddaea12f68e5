//! The token projector: a kube-runtime controller over M2MTokens that keeps a fresh, checked IDaaS
//! token in each one's Secret.
//!
//! - [`schedule`]: when to refresh and how long to back off (pure).
//! - [`secret`], [`status`]: the Secret and the status (pure).
//! - [`decide`]: what a reconcile does, given what it observed; and what it writes, publishes
//!   and remembers after a fetch (pure).
//! - [`reconcile`](mod@reconcile): reads what [`decide`] looks at from the Kubernetes API, and
//!   carries out its decision against the API and IDaaS.
//! - [`leader`]: one leader at a time: the Lease's field manager, the last confirmed renewal,
//!   and the gate every write goes through.
//! - [`sweep`]: the leader's periodic look at the pods that opt in: not injected, or stale.

pub mod assertion;
pub mod decide;
pub mod leader;
pub mod reconcile;
pub mod schedule;
pub mod secret;
pub mod status;
pub mod sweep;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::Shared;

use futures::StreamExt;
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::{PredicateConfig, predicates};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use kube_lease_manager::LeaseManagerBuilder;

use crate::crd::M2MToken;
use crate::idaas::IdaasClient;
use crate::metrics::Metrics;
use reconcile::{Context, error_policy, reconcile};

/// What the controller needs from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Namespaces to watch; empty: all.
    pub namespaces: Vec<String>,
    pub max_concurrent_refreshes: usize,
    pub recheck_interval: Duration,
    /// `None`: no leader election (a single replica).
    pub lease: Option<LeaseSettings>,
    /// `None`: no sweep of the pods.
    pub sweep: Option<sweep::SweepSettings>,
}

/// Leader election through a coordination.k8s.io Lease.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    pub duration_secs: u64,
    pub grace_secs: u64,
}

/// Why the controller stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("leader election: {0}")]
    Lease(String),
}

/// Runs the controllers (one per watched namespace, or one for all), and the sweep when it is
/// on, until `stop` resolves.
pub async fn run_controllers(
    client: Client,
    ctx: Arc<Context>,
    settings: Settings,
    stop: impl std::future::Future<Output = ()> + Send + Sync + Clone + 'static,
) {
    let namespaces = &settings.namespaces;
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().cloned().map(Some).collect()
    };
    let mut stores = Vec::new();
    let controllers: Vec<_> = scopes
        .into_iter()
        .map(|ns| {
            // Only M2MTokens are watched. Secrets are never listed or watched: each reconcile reads
            // the managed Secret by name (and the credentials Secret when a token is due), and an
            // up-to-date token is looked at again on the slow re-check cadence.
            let tokens: Api<M2MToken> = match &ns {
                Some(ns) => Api::namespaced(client.clone(), ns),
                None => Api::all(client.clone()),
            };
            let ctx = ctx.clone();
            let controller = controller_for(tokens, settings.max_concurrent_refreshes);
            // Forget what is kept about deleted M2MTokens (expiry gauges, failures, reports) once a
            // minute.
            let store = controller.store();
            stores.push(store.clone());
            let weak = Arc::downgrade(&ctx);
            let scope = ns.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(60));
                loop {
                    tick.tick().await;
                    let Some(ctx) = weak.upgrade() else { break };
                    if store.wait_until_ready().await.is_ok() {
                        ctx.forget_deleted(|ns, name| {
                            // Another controller watches other namespaces: not ours to judge.
                            scope.as_deref().is_some_and(|s| s != ns)
                                || store
                                    .get(&kube::runtime::reflector::ObjectRef::new(name).within(ns))
                                    .is_some()
                        });
                    }
                }
            });
            controller
                .graceful_shutdown_on(stop.clone())
                .run(reconcile, error_policy, ctx)
                .for_each(|result| async move {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "controller event");
                    }
                })
        })
        .collect();
    let sweep = settings
        .sweep
        .clone()
        .filter(|s| !s.interval.is_zero())
        .map(|s| {
            sweep::Sweeper::new(client.clone(), ctx.clone(), s, namespaces.clone(), stores)
                .run(stop.clone())
        });
    futures::future::join(futures::future::join_all(controllers), async move {
        if let Some(sweep) = sweep {
            sweep.await;
        }
    })
    .await;
}

/// How many reconciles run at once, per controller: enough to keep `max_concurrent_refreshes`
/// token requests busy while others read and write the API, few enough that a start with
/// thousands of M2MTokens does not hold thousands of requests (and their buffers) in flight.
pub fn reconcile_concurrency(max_concurrent_refreshes: usize) -> u16 {
    u16::try_from(max_concurrent_refreshes.saturating_mul(2).clamp(8, 2048)).unwrap_or(u16::MAX)
}

/// Removes from an M2MToken what the projector never reads before it enters the controller's
/// store: `managedFields` and `kubectl apply`'s copy of the object, which are most of a small
/// object's size.
pub fn slim(token: &mut M2MToken) {
    token.metadata.managed_fields = None;
    if let Some(annotations) = token.metadata.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// The annotation `kubectl apply` keeps the whole applied object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The controller of the M2MTokens `tokens` sees: a store of slimmed objects ([`slim`]), and a
/// reconcile when an M2MToken appears or its spec changes (`metadata.generation`); changes of
/// the status (the projector's own writes) and of metadata set off none. At most
/// [`reconcile_concurrency`] reconciles at once.
fn controller_for(tokens: Api<M2MToken>, max_concurrent_refreshes: usize) -> Controller<M2MToken> {
    let (reader, writer) = reflector::store();
    let triggers = watcher(tokens, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(slim)
        .reflect(writer)
        .applied_objects()
        .predicate_filter(predicates::generation, PredicateConfig::default());
    Controller::for_stream(triggers, reader).with_config(
        controller::Config::default().concurrency(reconcile_concurrency(max_concurrent_refreshes)),
    )
}

/// Builds the shared reconcile context.
pub fn context(
    client: Client,
    idaas: IdaasClient,
    metrics: Arc<Metrics>,
    settings: &Settings,
    instance: Option<String>,
) -> Arc<Context> {
    let reporter = Reporter {
        controller: "idaas-projector".to_owned(),
        instance,
    };
    let mut ctx = Context::new(
        client,
        idaas,
        metrics,
        reporter,
        settings.max_concurrent_refreshes,
        settings.recheck_interval,
    );
    ctx.gate = leader::WriteGate::new(settings.lease.as_ref());
    Arc::new(ctx)
}

/// Runs the projector: with a lease, only while holding it. Returns when `stop` resolves, or
/// with an error when the lease task dies (the process then exits non-zero).
pub async fn run(
    client: Client,
    ctx: Arc<Context>,
    settings: Settings,
    stop: impl Future<Output = ()> + Send + Sync + Clone + 'static,
) -> Result<(), RunError> {
    let Some(lease) = settings.lease.clone() else {
        let gauge = ctx.metrics.leader.clone();
        gauge.set(1);
        run_controllers(client, ctx, settings, stop).await;
        gauge.set(0);
        return Ok(());
    };
    let work_settings = settings.clone();
    let work_client = client.clone();
    let work_ctx = ctx.clone();
    lead(
        client,
        &ctx,
        &lease,
        move |lost| {
            let (client, ctx) = (work_client.clone(), work_ctx.clone());
            let settings = work_settings.clone();
            async move { run_controllers(client, ctx, settings, lost).await }
        },
        stop,
    )
    .await
}

/// Runs `work` while this replica holds the Lease `lease` and its last confirmed renewal allows
/// writes (see [`leader`]), through [`run_while_leader`]. `ctx`'s write gate must be the one
/// [`context`] made for `lease`: it is the one the Lease's answers are shown to.
pub async fn lead<W, WF>(
    client: Client,
    ctx: &Context,
    lease: &LeaseSettings,
    work: W,
    stop: impl Future<Output = ()> + Send + Sync + Clone + 'static,
) -> Result<(), RunError>
where
    W: FnMut(StopSignal) -> WF,
    WF: Future<Output = ()>,
{
    let leader::WriteGate::Lease(tenure) = ctx.gate.clone() else {
        return Err(RunError::Lease(
            "the reconcile context has no lease write gate".to_owned(),
        ));
    };
    let observed = leader::observing(client, tenure.clone(), &lease.namespace, &lease.name);
    let manager = LeaseManagerBuilder::new(observed, &lease.name)
        .with_namespace(&lease.namespace)
        .with_identity(&lease.identity)
        .with_duration(lease.duration_secs)
        .with_grace(lease.grace_secs)
        .with_field_manager(leader::field_manager(&lease.identity))
        .build()
        .await
        .map_err(|e| RunError::Lease(e.to_string()))?;
    let (elected, task) = manager.watch().await;
    let task = async move { format!("{:?}", task.await) };
    tracing::info!(lease = %lease.name, namespace = %lease.namespace, identity = %lease.identity,
        "waiting for the lease");
    let leading = leader::follow(elected, tenure, ctx.metrics.leader.clone());
    run_while_leader(leading, task, work, stop).await
}

/// The leadership gate, apart from any API: starts `work` (with a future that resolves when it
/// must stop) each time `leader` turns true, stops it promptly when `leader` turns false, and
/// fails when the lease task ends (its outcome is described by the string).
pub async fn run_while_leader<W, WF>(
    mut leader: tokio::sync::watch::Receiver<bool>,
    lease_task: impl Future<Output = String>,
    mut work: W,
    stop: impl Future<Output = ()> + Send + Sync + Clone + 'static,
) -> Result<(), RunError>
where
    W: FnMut(StopSignal) -> WF,
    WF: Future<Output = ()>,
{
    let mut task = std::pin::pin!(lease_task);
    let mut stopped = std::pin::pin!(stop.clone());
    loop {
        while !*leader.borrow_and_update() {
            tokio::select! {
                changed = leader.changed() => if changed.is_err() {
                    return Err(RunError::Lease("the lease channel closed".to_owned()));
                },
                outcome = &mut task => return Err(RunError::Lease(format!("the lease task ended: {outcome}"))),
                () = &mut stopped => return Ok(()),
            }
        }
        tracing::info!("leading: reconciling M2MTokens");
        let (lost_tx, lost_rx) = tokio::sync::watch::channel(false);
        let signal = {
            let stop = stop.clone();
            let mut rx = lost_rx;
            let fut: Pin<Box<dyn Future<Output = ()> + Send + Sync>> = Box::pin(async move {
                tokio::select! {
                    () = stop => {},
                    _ = rx.wait_for(|l| *l) => {},
                }
            });
            fut.shared()
        };
        let mut running = std::pin::pin!(work(signal));
        loop {
            tokio::select! {
                () = &mut running => return Ok(()),
                changed = leader.changed() => {
                    if changed.is_err() || !*leader.borrow_and_update() {
                        tracing::warn!("lost the lease: stopping reconciles");
                        let _ = lost_tx.send(true);
                        (&mut running).await;
                        break;
                    }
                },
                outcome = &mut task => {
                    let _ = lost_tx.send(true);
                    (&mut running).await;
                    return Err(RunError::Lease(format!("the lease task ended: {outcome}")));
                },
            }
        }
        if (&mut stopped).now_or_never().is_some() {
            return Ok(());
        }
    }
}

/// Resolves when the work must stop (SIGTERM, or the lease was lost).
pub type StopSignal = Shared<Pin<Box<dyn Future<Output = ()> + Send + Sync>>>;
