//! idaas-projector: IDaaS M2M tokens for Alibaba Cloud SDKs in Kubernetes pods, with no AccessKey.
//!
//! - [`webhook`]: the mutating admission webhook (pure [`webhook::mutate`] plus its HTTPS server).
//! - [`crd`]: the `M2MToken` resource.
//! - [`wait`]: the `wait-for-token` init container.
//! - [`admin`] and [`metrics`]: health, readiness and Prometheus metrics.

pub mod admin;
pub mod assume_role;
pub mod check_command;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod dev;
pub mod emulator;
pub mod fingerprint;
pub mod idaas;
pub mod metrics;
pub mod run;
#[cfg(feature = "testing")]
pub mod testing;
pub mod token_command;
pub mod wait;
pub mod webhook;

/// The system clock in Unix seconds (0 before 1970, which no token can be from).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Errors of the long-running commands.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad flags or configuration (exit status 2).
    #[error("{0}")]
    Usage(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("Kubernetes client: {0}")]
    Kube(#[from] kube::Error),
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// A part of the process stopped (the projector's lease task died, a task panicked).
    #[error("{0}")]
    Task(String),
}

impl Error {
    /// A short, stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Usage(_) => "usage",
            Error::Bind { .. } => "bind",
            Error::Kube(_) => "kube",
            Error::Io(_) => "io",
            Error::Tls(_) => "tls",
            Error::Task(_) => "task",
        }
    }
}
