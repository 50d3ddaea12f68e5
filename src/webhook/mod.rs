//! The mutating admission webhook.
//!
//! - [`mutate`]: pod JSON, its ServiceAccount's annotations and the configuration to a JSON
//!   Patch or a denial (pure).
//! - [`annotations`]: parsing and validation of the pod and ServiceAccount annotations (pure).
//! - [`prune`]: reads the pod keeping only the fields `mutate` reads (pure).
//! - [`review`]: the AdmissionReview envelope, and the one `await`: a ServiceAccount the
//!   [`review::Resolver`] must read from the API server.
//! - [`server`], [`tls`], [`certs`], [`cache`]: HTTPS, certificate reload, self-managed
//!   certificates, the M2MToken and ServiceAccount caches.
//! - [`limits`]: timeouts, the connection cap and the request-body budget.

pub mod annotations;
pub mod cache;
pub mod certs;
pub mod limits;
pub mod mutate;
pub mod prune;
pub mod review;
pub mod server;
pub mod tls;

use std::sync::Arc;

use crate::Error;
use crate::admin::Readiness;
use crate::metrics::Metrics;
use review::{Resolver, Standalone};

/// Everything the webhook needs, built by the command from its flags.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The HTTPS listener.
    pub listen: std::net::SocketAddr,
    /// Where the serving certificate comes from.
    pub tls: TlsSource,
    /// What and how to inject.
    pub inject: mutate::MutateConfig,
    /// No Kubernetes API: pods are resolved from their annotations and the flags only.
    pub standalone: bool,
    /// Timeouts, the connection cap and the request-body budget.
    pub limits: limits::Limits,
    /// Read pods' ServiceAccounts for the ServiceAccount opt-in level (a cache, and a GET on a
    /// miss); `false`: ServiceAccounts are never read.
    pub service_accounts: bool,
}

/// Where the webhook's serving certificate comes from.
#[derive(Debug, Clone)]
pub enum TlsSource {
    /// PEM files (cert-manager, or a Secret the user provides), reloaded when they change.
    Files {
        cert: std::path::PathBuf,
        key: std::path::PathBuf,
        reload_interval: std::time::Duration,
    },
    /// Made and rotated by the webhook itself, kept in a Secret, with the webhook
    /// configuration's caBundle kept in step (needs the Kubernetes API).
    SelfManaged(certs::Settings),
    /// A self-signed certificate for localhost made at start, written to
    /// [`tls::SELF_SIGNED_CERT_PATH`] for clients to trust. For local trials only.
    SelfSigned,
}

/// A webhook ready to serve: listener bound, certificates loading, resolver chosen.
pub struct Webhook {
    listener: std::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<server::WebhookState>,
    limits: limits::Limits,
}

impl Webhook {
    /// Binds the listener, loads (and keeps watching) the certificate and starts the M2MToken
    /// cache when a client is given (`None`: standalone). Readiness follows each part.
    pub fn start(
        settings: Settings,
        client: Option<kube::Client>,
        metrics: Arc<Metrics>,
        readiness: Arc<Readiness>,
    ) -> Result<Self, Error> {
        let listen = settings.listen;
        let listener = std::net::TcpListener::bind(listen).map_err(|source| Error::Bind {
            addr: listen,
            source,
        })?;
        let store = Arc::new(tls::CertStore::default());
        let tls_config = Arc::new(tls::server_config(store.clone())?);
        match settings.tls {
            TlsSource::SelfManaged(cert_settings) => {
                let client = client.clone().ok_or_else(|| {
                    Error::Usage(
                        "--certificate-mode self needs the Kubernetes API (not --standalone)"
                            .to_owned(),
                    )
                })?;
                let manager = certs::CertManager::new(
                    client,
                    cert_settings,
                    store.clone(),
                    metrics.clone(),
                    readiness.clone(),
                );
                tokio::spawn(manager.run(std::time::Duration::from_secs(30)));
            }
            TlsSource::SelfSigned => serve_self_signed(&store, &metrics, &readiness)?,
            TlsSource::Files {
                cert,
                key,
                reload_interval,
            } => {
                let mut watcher = tls::FileWatcher::default();
                watcher.poll(&cert, &key, &store, &metrics, &readiness);
                tokio::spawn(tls::watch_files(
                    cert,
                    key,
                    reload_interval,
                    store.clone(),
                    metrics.clone(),
                    readiness.clone(),
                ));
            }
        }
        let config = settings.inject;
        let resolver: Arc<dyn Resolver> = match client {
            None => {
                readiness.set_caches_synced();
                tracing::info!("standalone: resolving pods from annotations and flags only");
                Arc::new(Standalone)
            }
            Some(client) => {
                let (resolver, drive) =
                    cache::watch(client, metrics.clone(), settings.service_accounts);
                tokio::spawn(drive);
                let (ready, syncing) = (readiness.clone(), resolver.clone());
                tokio::spawn(async move {
                    syncing.sync().await;
                    if syncing.synced() {
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
                bodies: limits::Bodies::new(&settings.limits),
            }),
            limits: settings.limits,
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
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
        server::serve_tls(self.listener, self.tls, self.state, self.limits, handle).await?;
        tracing::info!("webhook stopped");
        Ok(())
    }
}

/// Makes a self-signed certificate for localhost, writes it where clients find it, and serves
/// it.
fn serve_self_signed(
    store: &tls::CertStore,
    metrics: &Metrics,
    readiness: &Readiness,
) -> Result<(), Error> {
    let (pair, cert_pem) = tls::self_signed().map_err(|e| Error::Usage(e.to_string()))?;
    let path = std::path::Path::new(tls::SELF_SIGNED_CERT_PATH);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, cert_pem)?;
    tracing::info!(cert = %path.display(), "serving a self-signed certificate for localhost");
    tls::install(store, pair, metrics, readiness);
    Ok(())
}
