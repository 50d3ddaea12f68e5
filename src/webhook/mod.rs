//! The mutating admission webhook.
//!
//! - [`mutate`]: pod JSON plus configuration to a JSON Patch or a denial (pure).
//! - [`annotations`]: parsing and validation of the pod annotations (pure).
//! - [`review`]: the AdmissionReview envelope (pure).
//! - [`server`], [`tls`], [`cache`]: HTTPS, certificate reload, the M2MToken cache.

pub mod annotations;
pub mod cache;
pub mod certs;
pub mod mutate;
pub mod review;
pub mod server;
pub mod tls;

use std::sync::Arc;

use crate::Error;
use crate::admin::Readiness;
use crate::cli::TlsArgs;
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

/// A webhook ready to serve: listener bound, certificates loading, resolver chosen.
pub struct Webhook {
    listener: std::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<server::WebhookState>,
}

impl Webhook {
    /// Binds the listener, loads (and keeps watching) the certificate and starts the M2MToken
    /// cache when a client is given (`None`: standalone). Readiness follows each part.
    pub fn start(
        listen: std::net::SocketAddr,
        tls_args: &TlsArgs,
        config: mutate::MutateConfig,
        client: Option<kube::Client>,
        metrics: Arc<Metrics>,
        readiness: Arc<Readiness>,
    ) -> Result<Self, Error> {
        let listener = std::net::TcpListener::bind(listen).map_err(|source| Error::Bind {
            addr: listen,
            source,
        })?;
        let store = Arc::new(tls::CertStore::default());
        let tls_config = Arc::new(tls::server_config(store.clone())?);
        if tls_args.certificate_mode == crate::cli::CertificateMode::SelfManaged {
            let client = client.clone().ok_or_else(|| {
                Error::Usage(
                    "--certificate-mode self needs the Kubernetes API (not --standalone)"
                        .to_owned(),
                )
            })?;
            if tls_args.certificate_validity < std::time::Duration::from_secs(3600) {
                return Err(Error::Usage(
                    "--certificate-validity must be at least 1h".to_owned(),
                ));
            }
            let manager = certs::CertManager::new(
                client,
                certs::Settings {
                    secret_name: tls_args.certificate_secret.clone(),
                    namespace: tls_args.certificate_namespace.clone(),
                    service_name: tls_args.service_name.clone(),
                    webhook_configuration: tls_args.webhook_configuration.clone(),
                    validity: tls_args.certificate_validity,
                },
                store.clone(),
                metrics.clone(),
                readiness.clone(),
            );
            tokio::spawn(manager.run(std::time::Duration::from_secs(30)));
        } else if tls_args.tls_self_signed {
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
                &tls_args.tls_cert_file,
                &tls_args.tls_key_file,
                &store,
                &metrics,
                &readiness,
            );
            tokio::spawn(tls::watch_files(
                tls_args.tls_cert_file.clone(),
                tls_args.tls_key_file.clone(),
                tls_args.tls_reload_interval,
                store.clone(),
                metrics.clone(),
                readiness.clone(),
            ));
        }

        let resolver: Arc<dyn TokenResolver> = match client {
            None => {
                readiness.set_caches_synced();
                tracing::info!("standalone: resolving pods from annotations and flags only");
                Arc::new(Standalone)
            }
            Some(client) => {
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
            }
        };
        Ok(Self {
            listener,
            tls: tls_config,
            state: Arc::new(server::WebhookState {
                config,
                resolver,
                metrics,
            }),
        })
    }

    /// Serves until `stop` resolves, then lets in-flight requests finish within `grace`.
    pub async fn serve(
        self,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
        grace: std::time::Duration,
    ) -> Result<(), Error> {
        let handle = axum_server::Handle::new();
        let h = handle.clone();
        tokio::spawn(async move {
            stop.await;
            h.graceful_shutdown(Some(grace));
        });
        let addr = self.listener.local_addr()?;
        tracing::info!(listen = %addr, "webhook serving");
        server::serve_tls(self.listener, self.tls, server::router(self.state), handle).await?;
        tracing::info!("webhook stopped");
        Ok(())
    }
}
