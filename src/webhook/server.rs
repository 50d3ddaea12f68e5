//! The HTTPS admission server: `POST /mutate` and `POST /mutate/namespace` over rustls with
//! HTTP/1.1 and HTTP/2 (ALPN).
//!
//! The handler only wires I/O: it reads the body (within the [`Limits`]), hands it to
//! [`review`], counts and logs the result and writes the answer.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use super::limits::{Bodies, BodyError, ConnectionCap, GuardedAcceptor, Limits};
use super::mutate::MutateConfig;
use super::review::{Resolver, Via, review};
use crate::metrics::{AdmissionResult, Metrics, WebhookTimeout};

/// Largest AdmissionReview accepted; larger bodies get HTTP 413.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// What the handler needs.
pub struct WebhookState {
    pub config: MutateConfig,
    pub resolver: Arc<dyn Resolver>,
    pub metrics: Arc<Metrics>,
    /// Request bodies: their deadline and memory budget.
    pub bodies: Bodies,
}

/// The path the annotation-matched webhook entry calls.
pub const MUTATE_PATH: &str = "/mutate";
/// The path the entry for namespaces labelled `idaas-projector.io/injection: enabled` calls.
pub const NAMESPACE_PATH: &str = "/mutate/namespace";

/// The webhook's router: `POST /mutate` and `POST /mutate/namespace`.
pub fn router(state: Arc<WebhookState>) -> Router {
    Router::new()
        .route(
            MUTATE_PATH,
            post(|state, request| mutate_handler(state, Via::Annotation, request)),
        )
        .route(
            NAMESPACE_PATH,
            post(|state, request| mutate_handler(state, Via::Namespace, request)),
        )
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

/// The answer to a body that could not be read; an HTTP/1.1 connection is closed after it, so
/// a client cannot keep trickling.
fn refuse_body(state: &WebhookState, version: Version, refused: BodyError) -> Response {
    state.metrics.admission(AdmissionResult::error);
    let (status, message) = match refused {
        BodyError::TooLarge => (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("AdmissionReview larger than {MAX_BODY_BYTES} bytes"),
        ),
        BodyError::TimedOut => {
            state.metrics.webhook_timeout(WebhookTimeout::body_read);
            let message = "the request body was not sent within the body-read timeout";
            (StatusCode::REQUEST_TIMEOUT, message.to_owned())
        }
        BodyError::Busy => {
            state.metrics.webhook_timeout(WebhookTimeout::body_budget);
            let message = "too many request bodies in flight; retry";
            (StatusCode::SERVICE_UNAVAILABLE, message.to_owned())
        }
        BodyError::Read(why) => (
            StatusCode::BAD_REQUEST,
            format!("cannot read the request body: {why}"),
        ),
    };
    tracing::warn!(status = status.as_u16(), %message, "admission request rejected");
    let mut response = plain(status, message);
    if version <= Version::HTTP_11 {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

async fn mutate_handler(
    State(state): State<Arc<WebhookState>>,
    via: Via,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let (body, _room) = match state.bodies.read(&parts.headers, body).await {
        Ok(read) => read,
        Err(refused) => return refuse_body(&state, parts.version, refused),
    };
    let started = Instant::now();
    let response = match review(&body, via, &state.config, state.resolver.as_ref()).await {
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

/// Serves the webhook over TLS on an already bound listener, within `limits`, until `handle`
/// shuts it down.
pub async fn serve_tls(
    listener: std::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<WebhookState>,
    limits: Limits,
    handle: axum_server::Handle<std::net::SocketAddr>,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let connections = ConnectionCap::new(router(state.clone()), &limits, state.metrics.clone());
    let mut server = axum_server::from_tcp(listener)?
        .acceptor(GuardedAcceptor::new(tls, &limits))
        .handle(handle)
        .first_request_timeout(limits.header_read_timeout);
    let builder = server.http_builder();
    builder
        .http1()
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(HTTP1_BUFFER);
    http2_settings(builder, &limits);
    server.serve(connections).await
}

/// The webhook's HTTP/2 settings: streams, keep-alive pings, flow-control windows and the
/// header list, within `limits`. (`benches/tls_baseline.rs` applies them too, to measure them.)
pub fn http2_settings<E>(
    builder: &mut hyper_util::server::conn::auto::Builder<E>,
    limits: &Limits,
) {
    builder
        .http2()
        .max_concurrent_streams(limits.http2_max_streams)
        .keep_alive_interval(limits.http2_keepalive_interval)
        .keep_alive_timeout(super::limits::HTTP2_KEEPALIVE_TIMEOUT)
        .initial_stream_window_size(super::limits::HTTP2_WINDOW)
        .initial_connection_window_size(super::limits::HTTP2_WINDOW)
        .max_header_list_size(HTTP1_BUFFER as u32);
}

/// The read buffer of an HTTP/1.1 connection, and so the largest request head (HTTP/2: the
/// largest header list).
const HTTP1_BUFFER: usize = 64 * 1024;
