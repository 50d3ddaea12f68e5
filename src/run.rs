//! Process wiring of the long-running commands (`serve`, `webhook`, `controller`): the admin
//! server, the webhook, the projector, and an orderly stop on SIGTERM.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::Shared;

use crate::Error;
use crate::admin::{self, Readiness};
use crate::cli::{
    ControllerArgs, InjectArgs, ListenArgs, ProjectorArgs, ServeArgs, ServerArgs, TlsArgs,
    WebhookArgs,
};
use crate::controller;
use crate::idaas::{HttpConfig, IdaasClient};
use crate::metrics::Metrics;
use crate::webhook::Webhook;

type Stop = Shared<Pin<Box<dyn Future<Output = ()> + Send + Sync>>>;

struct WebhookPart<'a> {
    listen: &'a ListenArgs,
    tls: &'a TlsArgs,
    inject: &'a InjectArgs,
    standalone: bool,
}

/// `serve`: webhook and projector in one process.
pub async fn serve(args: ServeArgs) -> Result<(), Error> {
    let webhook = (!args.no_webhook).then_some(WebhookPart {
        listen: &args.listen,
        tls: &args.tls,
        inject: &args.inject,
        standalone: false,
    });
    let projector = (!args.no_controller).then_some(&args.projector);
    run(&args.server, webhook, projector).await
}

/// `webhook`: the webhook only.
pub async fn webhook(args: WebhookArgs) -> Result<(), Error> {
    let part = WebhookPart {
        listen: &args.listen,
        tls: &args.tls,
        inject: &args.inject,
        standalone: args.standalone,
    };
    run(&args.server, Some(part), None).await
}

/// `controller`: the projector only.
pub async fn controller(args: ControllerArgs) -> Result<(), Error> {
    run(&args.server, None, Some(&args.projector)).await
}

fn settings(p: &ProjectorArgs) -> controller::Settings {
    let identity = p
        .identity
        .clone()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| format!("idaas-projector-{}", std::process::id()));
    controller::Settings {
        namespaces: p
            .namespaces
            .iter()
            .filter(|n| !n.is_empty())
            .cloned()
            .collect(),
        max_concurrent_refreshes: usize::from(p.max_concurrent_refreshes),
        recheck_interval: p.recheck_interval,
        lease: (!p.no_leader_election).then(|| controller::LeaseSettings {
            name: p.lease_name.clone(),
            namespace: p.lease_namespace.clone(),
            identity,
            duration_secs: 15,
            grace_secs: 5,
        }),
    }
}

async fn run(
    server: &ServerArgs,
    webhook: Option<WebhookPart<'_>>,
    projector: Option<&ProjectorArgs>,
) -> Result<(), Error> {
    // Validate everything before touching the network.
    let mutate_config = match &webhook {
        Some(w) => Some(w.inject.to_config().map_err(Error::Usage)?),
        None => None,
    };
    let metrics = Arc::new(Metrics::new());
    let readiness = Arc::new(Readiness::default());
    if webhook.is_none() {
        readiness.set_tls_loaded();
        readiness.set_caches_synced();
    }
    let admin_listener = admin::bind(server.admin_listen)
        .await
        .map_err(|source| Error::Bind {
            addr: server.admin_listen,
            source,
        })?;
    let needs_api = projector.is_some() || webhook.as_ref().is_some_and(|w| !w.standalone);
    let client = if needs_api {
        Some(kube::Client::try_default().await?)
    } else {
        None
    };

    // SIGTERM: not ready at once, stop after the delay.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    {
        let readiness = readiness.clone();
        let delay = server.shutdown_delay;
        tokio::spawn(async move {
            crate::webhook::shutdown_signal().await;
            tracing::info!(delay = ?delay, "shutting down: reporting not ready");
            readiness.set_shutting_down();
            tokio::time::sleep(delay).await;
            let _ = stop_tx.send(true);
        });
    }
    let stop: Stop = {
        let mut rx = stop_rx;
        let fut: Pin<Box<dyn Future<Output = ()> + Send + Sync>> = Box::pin(async move {
            let _ = rx.wait_for(|s| *s).await;
        });
        fut.shared()
    };

    let admin_task = tokio::spawn(admin::serve(
        admin_listener,
        metrics.clone(),
        readiness.clone(),
        stop.clone(),
    ));

    let webhook_task = match (webhook, mutate_config) {
        (Some(w), Some(config)) => {
            let hook = Webhook::start(
                w.listen.listen,
                w.tls,
                config,
                if w.standalone { None } else { client.clone() },
                metrics.clone(),
                readiness.clone(),
            )?;
            Some(tokio::spawn(
                hook.serve(stop.clone(), server.shutdown_grace),
            ))
        }
        _ => None,
    };

    let controller_task = match (projector, client) {
        (Some(p), Some(client)) => {
            let settings = settings(p);
            let idaas = IdaasClient::new(&HttpConfig {
                connect_timeout: p.connect_timeout,
                timeout: p.request_timeout,
                ca_file: p.ca_file.clone(),
            })
            .map_err(|e| Error::Usage(format!("IDaaS client: {e}")))?;
            let instance = settings.lease.as_ref().map(|l| l.identity.clone());
            let ctx =
                controller::context(client.clone(), idaas, metrics.clone(), &settings, instance);
            let stop = stop.clone();
            Some(tokio::spawn(async move {
                controller::run(client, ctx, settings, stop).await
            }))
        }
        _ => None,
    };

    // Wait for the parts; the first error ends the process.
    let webhook_done = async {
        match webhook_task {
            Some(t) => t.await.map_err(|e| Error::Task(e.to_string()))?,
            None => Ok(()),
        }
    };
    let controller_done = async {
        match controller_task {
            Some(t) => t
                .await
                .map_err(|e| Error::Task(e.to_string()))?
                .map_err(|e| Error::Task(e.to_string())),
            None => Ok(()),
        }
    };
    futures::future::try_join(webhook_done, controller_done).await?;
    let _ = admin_task.await;
    Ok(())
}
