//! Process wiring of the long-running commands (`serve`, `webhook`, `controller`): the admin
//! server, the webhook, the projector, and an orderly stop on SIGTERM. Takes plain settings;
//! the commands build them from their flags.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::Shared;
use tokio::task::JoinHandle;

use crate::Error;
use crate::admin::{self, Readiness};
use crate::controller;
use crate::idaas::{HttpConfig, IdaasClient};
use crate::metrics::Metrics;
use crate::webhook::{self, Webhook};

/// What one process runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The plain HTTP admin listener (/healthz, /readyz, /metrics).
    pub admin_listen: SocketAddr,
    /// On SIGTERM, report not-ready for this long before closing the listeners.
    pub shutdown_delay: Duration,
    /// How long in-flight requests may take to finish at shutdown.
    pub shutdown_grace: Duration,
    /// The webhook, if this process runs it.
    pub webhook: Option<webhook::Settings>,
    /// The projector, if this process runs it.
    pub projector: Option<Projector>,
}

/// The projector's settings: the controller's and its IDaaS client's.
#[derive(Debug, Clone)]
pub struct Projector {
    pub controller: controller::Settings,
    pub idaas: HttpConfig,
}

type Stop = Shared<Pin<Box<dyn Future<Output = ()> + Send + Sync>>>;

/// Resolves when the process is asked to stop (SIGTERM or Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Runs the parts `settings` names until SIGTERM; the first part to fail ends the process.
pub async fn run(settings: Settings) -> Result<(), Error> {
    let metrics = Arc::new(Metrics::new());
    let readiness = Arc::new(Readiness::default());
    if settings.webhook.is_none() {
        readiness.set_tls_loaded();
        readiness.set_caches_synced();
    }
    let admin_listener =
        admin::bind(settings.admin_listen)
            .await
            .map_err(|source| Error::Bind {
                addr: settings.admin_listen,
                source,
            })?;
    let client = kube_client(&settings).await?;
    let stop = stop_after_signal(readiness.clone(), settings.shutdown_delay);
    let admin_task = tokio::spawn(admin::serve(
        admin_listener,
        metrics.clone(),
        readiness.clone(),
        stop.clone(),
    ));
    let webhook_task = match settings.webhook {
        Some(w) => {
            let client = if w.standalone { None } else { client.clone() };
            let hook = Webhook::start(w, client, metrics.clone(), readiness.clone())?;
            Some(tokio::spawn(
                hook.serve(stop.clone(), settings.shutdown_grace),
            ))
        }
        None => None,
    };
    let projector_task = match (settings.projector, client) {
        (Some(p), Some(client)) => Some(start_projector(p, client, metrics, stop)?),
        _ => None,
    };
    futures::future::try_join(finished(webhook_task), finished(projector_task)).await?;
    let _ = admin_task.await;
    Ok(())
}

/// A Kubernetes client when some part needs the API (the projector, a webhook that is not
/// standalone).
async fn kube_client(settings: &Settings) -> Result<Option<kube::Client>, Error> {
    let needs_api =
        settings.projector.is_some() || settings.webhook.as_ref().is_some_and(|w| !w.standalone);
    Ok(if needs_api {
        Some(kube::Client::try_default().await?)
    } else {
        None
    })
}

/// On SIGTERM: not ready at once, then, after `delay`, the returned future resolves.
fn stop_after_signal(readiness: Arc<Readiness>, delay: Duration) -> Stop {
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!(delay = ?delay, "shutting down: reporting not ready");
        readiness.set_shutting_down();
        tokio::time::sleep(delay).await;
        let _ = stop_tx.send(true);
    });
    let fut: Pin<Box<dyn Future<Output = ()> + Send + Sync>> = Box::pin(async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    });
    fut.shared()
}

fn start_projector(
    p: Projector,
    client: kube::Client,
    metrics: Arc<Metrics>,
    stop: Stop,
) -> Result<JoinHandle<Result<(), Error>>, Error> {
    let idaas =
        IdaasClient::new(&p.idaas).map_err(|e| Error::Usage(format!("IDaaS client: {e}")))?;
    let settings = p.controller;
    let instance = settings.lease.as_ref().map(|l| l.identity.clone());
    let ctx = controller::context(client.clone(), idaas, metrics, &settings, instance);
    Ok(tokio::spawn(async move {
        controller::run(client, ctx, settings, stop)
            .await
            .map_err(|e| Error::Task(e.to_string()))
    }))
}

/// Waits for a part, if it runs; a panic is an error like any other.
async fn finished(task: Option<JoinHandle<Result<(), Error>>>) -> Result<(), Error> {
    match task {
        Some(t) => t.await.map_err(|e| Error::Task(e.to_string()))?,
        None => Ok(()),
    }
}
