//! The mutating admission webhook.
//!
//! - [`mutate`]: pod JSON plus configuration to a JSON Patch or a denial (pure).
//! - [`annotations`]: parsing and validation of the pod annotations (pure).
//! - [`review`]: the AdmissionReview envelope (pure).
//! - [`server`], [`tls`], [`cache`]: HTTPS, certificate reload, the M2MToken cache.

pub mod annotations;
pub mod cache;
pub mod mutate;
pub mod review;
pub mod server;
pub mod tls;

use std::sync::Arc;

use crate::Error;
use crate::admin::{self, Readiness};
use crate::cli::WebhookArgs;
use crate::metrics::Metrics;
use review::{Standalone, TokenResolver};

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

/// The `webhook` command.
pub async fn run(args: WebhookArgs) -> Result<(), Error> {
    let config = args.inject.to_config().map_err(Error::Usage)?;
    let metrics = Arc::new(Metrics::new());
    let readiness = Arc::new(Readiness::default());

    let listener =
        std::net::TcpListener::bind(args.server.listen).map_err(|source| Error::Bind {
            addr: args.server.listen,
            source,
        })?;
    let admin_listener = admin::bind(args.server.admin_listen)
        .await
        .map_err(|source| Error::Bind {
            addr: args.server.admin_listen,
            source,
        })?;

    // Certificates: load now if possible, then keep watching.
    let store = Arc::new(tls::CertStore::default());
    let tls_config = Arc::new(tls::server_config(store.clone())?);
    if args.tls.tls_self_signed {
        let (pair, cert_pem) = tls::self_signed().map_err(|e| Error::Usage(e.to_string()))?;
        let path = std::path::Path::new(tls::SELF_SIGNED_CERT_PATH);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, cert_pem)?;
        tracing::info!(cert = %path.display(), "serving a self-signed certificate for localhost");
        tls::install(&store, pair, &metrics, &readiness);
    } else {
        let mut watcher = tls::FileWatcher::default();
        watcher.poll(
            &args.tls.tls_cert_file,
            &args.tls.tls_key_file,
            &store,
            &metrics,
            &readiness,
        );
        tokio::spawn(tls::watch_files(
            args.tls.tls_cert_file.clone(),
            args.tls.tls_key_file.clone(),
            args.tls.tls_reload_interval,
            store.clone(),
            metrics.clone(),
            readiness.clone(),
        ));
    }

    let resolver: Arc<dyn TokenResolver> = if args.standalone {
        readiness.set_caches_synced();
        tracing::info!("standalone: resolving pods from annotations and flags only");
        Arc::new(Standalone)
    } else {
        let client = kube::Client::try_default().await?;
        let (resolver, reader, drive) = cache::watch(client);
        tokio::spawn(drive);
        let (ready, synced) = (readiness.clone(), resolver.clone());
        tokio::spawn(async move {
            if reader.wait_until_ready().await.is_ok() {
                tracing::info!("M2MToken cache synced");
                synced.mark_synced();
                ready.set_caches_synced();
            }
        });
        Arc::new(resolver)
    };

    let handle = axum_server::Handle::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    {
        let (handle, readiness) = (handle.clone(), readiness.clone());
        let (delay, grace) = (args.server.shutdown_delay, args.server.shutdown_grace);
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!(delay = ?delay, "shutting down: reporting not ready");
            readiness.set_shutting_down();
            tokio::time::sleep(delay).await;
            handle.graceful_shutdown(Some(grace));
            let _ = stop_tx.send(true);
        });
    }
    {
        let (metrics, readiness) = (metrics.clone(), readiness.clone());
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) = admin::serve(admin_listener, metrics, readiness, stopped).await {
                tracing::error!(error = %e, "admin server failed");
            }
        });
    }

    let state = Arc::new(server::WebhookState {
        config,
        resolver,
        metrics,
    });
    tracing::info!(listen = %args.server.listen, admin = %args.server.admin_listen, "webhook serving");
    server::serve_tls(listener, tls_config, server::router(state), handle).await?;
    tracing::info!("webhook stopped");
    Ok(())
}
