//! The HTTPS admission server: `POST /mutate` over rustls with HTTP/1.1 and HTTP/2 (ALPN).
//!
//! The handler only wires I/O: it reads the body, hands it to [`review`], counts and logs the
//! result and writes the answer.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use super::mutate::MutateConfig;
use super::review::{TokenResolver, review};
use crate::metrics::{AdmissionResult, Metrics};

/// Largest AdmissionReview accepted; larger bodies get HTTP 413.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// What the handler needs.
pub struct WebhookState {
    pub config: MutateConfig,
    pub resolver: Arc<dyn TokenResolver>,
    pub metrics: Arc<Metrics>,
}

/// The webhook's router: `POST /mutate`.
pub fn router(state: Arc<WebhookState>) -> Router {
    Router::new()
        .route("/mutate", post(mutate_handler))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

fn plain(status: StatusCode, message: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message + "\n",
    )
        .into_response()
}

async fn mutate_handler(
    State(state): State<Arc<WebhookState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            state.metrics.admission(AdmissionResult::error);
            let status = rejection.status();
            let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
                format!("AdmissionReview larger than {MAX_BODY_BYTES} bytes")
            } else {
                format!("cannot read the request body: {}", rejection.body_text())
            };
            tracing::warn!(status = status.as_u16(), %message, "admission request rejected");
            return plain(status, message);
        }
    };
    let response = match review(&body, &state.config, state.resolver.as_ref()) {
        Ok(answer) => {
            state.metrics.admission(answer.result);
            match &answer.denial {
                Some(message) => tracing::info!(
                    uid = %answer.uid, namespace = %answer.namespace, pod = %answer.name,
                    reason = %message, "pod denied"
                ),
                None => tracing::debug!(
                    uid = %answer.uid, namespace = %answer.namespace, pod = %answer.name,
                    result = ?answer.result, "admission answered"
                ),
            }
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                answer.body,
            )
                .into_response()
        }
        Err(bad) => {
            state.metrics.admission(AdmissionResult::error);
            tracing::warn!(reason = %bad, "malformed admission request");
            plain(StatusCode::BAD_REQUEST, bad.0)
        }
    };
    state
        .metrics
        .admission_duration
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Serves `router` over TLS on an already bound listener until `handle` shuts it down.
pub async fn serve_tls(
    listener: std::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    handle: axum_server::Handle<std::net::SocketAddr>,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let config = axum_server::tls_rustls::RustlsConfig::from_config(tls);
    // TCP_NODELAY: an answer is one small write that must not wait for the peer's delayed ACK.
    let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(config)
        .acceptor(axum_server::accept::NoDelayAcceptor::new());
    axum_server::from_tcp(listener)?
        .acceptor(acceptor)
        .handle(handle)
        .serve(router.into_make_service())
        .await
}
