//! idaas-projector: IDaaS M2M tokens for Alibaba Cloud SDKs in Kubernetes pods, with no AccessKey.
//!
//! The map (docs/design.md tells the whole story):
//!
//! - [`controller`]: the token projector, keeping a fresh, checked token in each M2MToken's
//!   Secret ([`controller::schedule`] and the reconcile decision are pure).
//! - [`webhook`]: the mutating admission webhook ([`webhook::mutate`] is pure) and its HTTPS
//!   server.
//! - [`idaas`]: the IDaaS client (discovery, token endpoint, JWKS) and token decoding.
//! - [`ram`]: RAM's and STS's rules, pure: error codes, names, the claim checks.
//! - [`sts`]: the AssumeRoleWithOIDC call (`assume-role`, `doctor --assume-role`).
//! - [`crd`]: the `M2MToken` resource.
//! - [`doctor`]: one pod's or workload's credentials explained end to end, read-only.
//! - [`process`]: the long-running processes' wiring (admin server, webhook, projector, stop).
//! - [`token_file`]: a token file kept fresh without Kubernetes; [`wait`]: the init container.
//! - [`emulator`]: in-process IDaaS and STS for `dev` and the tests.
//! - [`admin`], [`metrics`], [`http`], [`time`]: health and metrics, outbound HTTPS, clock and
//!   formats.
//! - [`cli`]: the commands; the only module that knows the command line.
//! - `testing` (feature `testing`, tests, benches and fuzz targets only): shared fixtures and
//!   the fuzz harnesses.

pub mod admin;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod doctor;
pub mod emulator;
pub mod http;
pub mod idaas;
pub mod metrics;
pub mod process;
pub mod ram;
pub mod sts;
#[cfg(feature = "testing")]
pub mod testing;
pub mod time;
pub mod token_file;
pub mod wait;
pub mod webhook;

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
