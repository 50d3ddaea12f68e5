//! The webhook's serving certificate: loading a PEM pair, checking that it matches, and swapping
//! it in without a restart.
//!
//! Kubernetes updates mounted Secrets by swapping a `..data` symlink, so inotify on the files
//! misses changes. The watcher instead re-reads the paths (following symlinks) on an interval and
//! swaps the pair in only when both parse and the key matches the certificate. A bad pair is
//! logged and counted; the old pair keeps serving. The watcher never stops.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::admin::Readiness;
use crate::metrics::{Metrics, ReloadResult};

/// Why a certificate pair cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no PEM certificate found in the certificate file")]
    NoCertificate,
    #[error("the certificate file is not valid PEM: {0}")]
    BadCertificatePem(String),
    #[error("the key file holds no usable PEM private key: {0}")]
    BadKey(String),
    #[error("the private key does not match the certificate: {0}")]
    Mismatch(String),
    #[error("the certificate cannot be parsed: {0}")]
    BadCertificate(String),
}

/// A parsed, matching certificate pair.
pub struct LoadedPair {
    pub key: Arc<CertifiedKey>,
    /// The leaf's notAfter, as a Unix timestamp.
    pub not_after: i64,
}

/// The crypto provider of the whole build (aws-lc-rs).
pub fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

/// Parses a PEM certificate chain and private key and checks that they belong together.
pub fn load_pair(cert_pem: &[u8], key_pem: &[u8]) -> Result<LoadedPair, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::BadCertificatePem(e.to_string()))?;
    let leaf = certs.first().ok_or(TlsError::NoCertificate)?;
    let not_after = {
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
        parsed.validity().not_after.timestamp()
    };
    // The error of a PEM parse never includes key material, only its kind.
    let key =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::BadKey(e.to_string()))?;
    let signing_key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::BadKey(e.to_string()))?;
    let certified = CertifiedKey::new(certs, signing_key);
    certified
        .keys_match()
        .map_err(|e| TlsError::Mismatch(e.to_string()))?;
    Ok(LoadedPair {
        key: Arc::new(certified),
        not_after,
    })
}

/// Reads and loads a pair from files.
pub fn load_files(cert: &Path, key: &Path) -> Result<(LoadedPair, Vec<u8>, Vec<u8>), TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let (cert_pem, key_pem) = (read(cert)?, read(key)?);
    let pair = load_pair(&cert_pem, &key_pem)?;
    Ok((pair, cert_pem, key_pem))
}

/// Serves whatever pair was stored last; none until the first one loads (handshakes then fail).
#[derive(Debug, Default)]
pub struct CertStore {
    current: ArcSwapOption<CertifiedKey>,
}

impl CertStore {
    /// Swaps in a new pair. Connections already open keep the pair they started with.
    pub fn set(&self, key: Arc<CertifiedKey>) {
        self.current.store(Some(key));
    }
    /// Whether a pair is loaded.
    pub fn is_loaded(&self) -> bool {
        self.current.load().is_some()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.load_full()
    }
}

/// A rustls server configuration on TLS 1.2 and 1.3 that offers h2 and http/1.1 over ALPN.
pub fn server_config(store: Arc<CertStore>) -> Result<ServerConfig, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Stores a loaded pair and updates readiness and the expiry gauge.
pub fn install(store: &CertStore, pair: LoadedPair, metrics: &Metrics, readiness: &Readiness) {
    store.set(pair.key);
    metrics.certificate_expiry.set(pair.not_after);
    readiness.set_tls_loaded();
}

/// Watches a certificate and key file pair and installs every new valid pair. Never returns.
pub async fn watch_files(
    cert: PathBuf,
    key: PathBuf,
    interval: Duration,
    store: Arc<CertStore>,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
) {
    let mut watcher = FileWatcher::default();
    loop {
        let (cert, key) = (cert.clone(), key.clone());
        let (store2, metrics2, readiness2) = (store.clone(), metrics.clone(), readiness.clone());
        let mut w = std::mem::take(&mut watcher);
        // Each poll runs in its own task, so that even a panic cannot end the watch.
        let poll = tokio::task::spawn_blocking(move || {
            w.poll(&cert, &key, &store2, &metrics2, &readiness2);
            w
        });
        match poll.await {
            Ok(w) => watcher = w,
            Err(e) => tracing::error!(error = %e, "certificate reload check failed; retrying"),
        }
        tokio::time::sleep(interval).await;
    }
}

/// State of the file watcher: what was seen last, so a change is acted on once.
#[derive(Default)]
pub struct FileWatcher {
    loaded: Option<(Vec<u8>, Vec<u8>)>,
    last_error: Option<String>,
}

impl FileWatcher {
    /// Checks the files once; returns true when a new pair was installed.
    pub fn poll(
        &mut self,
        cert: &Path,
        key: &Path,
        store: &CertStore,
        metrics: &Metrics,
        readiness: &Readiness,
    ) -> bool {
        let mut attempt = || -> Result<Option<LoadedPair>, TlsError> {
            let read = |path: &Path| {
                std::fs::read(path).map_err(|source| TlsError::Read {
                    path: path.to_owned(),
                    source,
                })
            };
            let (cert_pem, key_pem) = (read(cert)?, read(key)?);
            if self
                .loaded
                .as_ref()
                .is_some_and(|(c, k)| *c == cert_pem && *k == key_pem)
            {
                return Ok(None);
            }
            let pair = load_pair(&cert_pem, &key_pem)?;
            self.loaded = Some((cert_pem, key_pem));
            Ok(Some(pair))
        };
        let mut result = attempt();
        if matches!(result, Err(TlsError::Mismatch(_))) {
            // The files may have been caught between two writes: look once more.
            std::thread::sleep(Duration::from_millis(200));
            result = attempt();
        }
        match result {
            Ok(None) => false,
            Ok(Some(pair)) => {
                let not_after = pair.not_after;
                install(store, pair, metrics, readiness);
                metrics.reload(ReloadResult::success);
                self.last_error = None;
                tracing::info!(cert = %cert.display(), not_after, "serving certificate loaded");
                true
            }
            Err(e) => {
                let message = e.to_string();
                if self.last_error.as_deref() != Some(message.as_str()) {
                    metrics.reload(ReloadResult::failure);
                    if store.is_loaded() {
                        tracing::error!(error = %message, cert = %cert.display(), key = %key.display(),
                            "new serving certificate rejected; the previous one keeps serving");
                    } else {
                        tracing::warn!(error = %message, cert = %cert.display(), key = %key.display(),
                            "no usable serving certificate yet; not ready");
                    }
                    self.last_error = Some(message);
                }
                false
            }
        }
    }
}

/// Where `--tls-self-signed` writes the certificate it made, relative to the working directory.
pub const SELF_SIGNED_CERT_PATH: &str = ".idaas-projector/webhook.crt";

/// Makes a self-signed serving certificate for local use (`localhost`, `127.0.0.1`, `::1`).
/// Returns the loaded pair and the certificate PEM for clients to trust. The key stays in memory.
pub fn self_signed() -> Result<(LoadedPair, String), TlsError> {
    let names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let err = |e: rcgen::Error| TlsError::BadCertificate(e.to_string());
    let key = rcgen::KeyPair::generate().map_err(err)?;
    let mut params = rcgen::CertificateParams::new(names).map_err(err)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "idaas-projector local webhook");
    let now = std::time::SystemTime::now();
    params.not_before = now.into();
    params.not_after = (now + Duration::from_secs(30 * 24 * 3600)).into();
    let cert = params.self_signed(&key).map_err(err)?;
    let cert_pem = cert.pem();
    let pair = load_pair(cert_pem.as_bytes(), key.serialize_pem().as_bytes())?;
    Ok((pair, cert_pem))
}
