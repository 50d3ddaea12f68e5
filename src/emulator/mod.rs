//! In-process emulators for local use (`dev`) and tests.

pub mod idaas;
pub mod sts;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

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
