//! In-process emulators for local use (`dev`) and tests.

pub mod idaas;
pub mod sts;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Binds an emulator's listener; the address it returns is one a client can dial (an
/// unspecified IP becomes 127.0.0.1).
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let mut addr = listener.local_addr()?;
    if addr.ip().is_unspecified() {
        addr.set_ip(Ipv4Addr::LOCALHOST.into());
    }
    Ok((listener, addr))
}

/// Serves an emulator's router on `listener` without Nagle delay (a real front end adds none)
/// until the returned sender says stop or is dropped.
pub(crate) fn serve(listener: TcpListener, app: Router, name: &'static str) -> watch::Sender<bool> {
    let (tx, mut rx) = watch::channel(false);
    tokio::spawn(async move {
        let stop = async move {
            // Also ends when every handle (the sender) is dropped.
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::warn!(error = %e, emulator = name, "emulator stopped");
        }
    });
    tx
}

/// Serves an emulator's router over TLS with `tls` on `listener`, without Nagle delay, until
/// `stop` says stop or its sender is dropped; open connections then get 5 s to finish.
pub(crate) fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    mut stop: watch::Receiver<bool>,
    name: &'static str,
) -> std::io::Result<()> {
    let acceptor =
        RustlsAcceptor::new(RustlsConfig::from_config(tls)).acceptor(NoDelayAcceptor::new());
    let handle = axum_server::Handle::new();
    let server = axum_server::from_tcp(listener.into_std()?)?
        .acceptor(acceptor)
        .handle(handle.clone());
    tokio::spawn(async move {
        let _ = stop.wait_for(|stop| *stop).await;
        handle.graceful_shutdown(Some(Duration::from_secs(5)));
    });
    tokio::spawn(async move {
        if let Err(e) = server.serve(app.into_make_service()).await {
            tracing::warn!(error = %e, emulator = name, "emulator stopped");
        }
    });
    Ok(())
}
