//! What a client can hold of the webhook: connections, time between bytes, request bodies.
//!
//! - [`Limits`]: the settings (`--header-read-timeout` and friends).
//! - [`ConnectionCap`]: makes one service per accepted connection, but only while fewer than
//!   `max_connections` are open. The accept loop asks for it after each accept, so at the cap one
//!   more connection is held (no TLS yet) and the rest wait in the kernel's accept backlog.
//! - [`GuardedAcceptor`] and [`GuardedStream`]: the TLS handshake, then the idle timeout on the
//!   connection's reads, the open-connections gauge and the timeout counter.
//! - [`Bodies`]: request bodies read under a deadline and a memory budget.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, header};
use axum_server::accept::{Accept, NoDelayAcceptor};
use axum_server::tls_rustls::RustlsAcceptor;
use http_body_util::BodyExt as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, SemaphorePermit};
use tokio::time::{Instant, Sleep};

use super::server::MAX_BODY_BYTES;
use crate::metrics::{Metrics, WebhookTimeout};

/// How long an HTTP/2 keep-alive ping may go unanswered before the connection is closed.
pub const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP/2 flow-control windows (the protocol's default): what a peer may send on a
/// connection, and on a stream, before the webhook reads it.
pub const HTTP2_WINDOW: u32 = 65_535;

/// The webhook's bounds on slow or numerous clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The TLS handshake, then each request head (HTTP/1.1; the first request of an HTTP/2
    /// connection), must arrive within this long.
    pub header_read_timeout: Duration,
    /// A request body must arrive (and find room in the body budget) within this long.
    pub body_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// How often an HTTP/2 connection is pinged; unanswered after
    /// [`HTTP2_KEEPALIVE_TIMEOUT`], it is closed.
    pub http2_keepalive_interval: Duration,
    /// Concurrent streams allowed on one HTTP/2 connection.
    pub http2_max_streams: u32,
    /// Open connections; beyond it new ones wait in the accept backlog.
    pub max_connections: usize,
    /// The request-body memory budget, in bodies of the largest size ([`MAX_BODY_BYTES`]).
    pub max_bodies_in_flight: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            http2_keepalive_interval: Duration::from_secs(30),
            http2_max_streams: 64,
            max_connections: 1000,
            max_bodies_in_flight: 16,
        }
    }
}

/// Settings and metrics shared by every connection.
struct Shared {
    idle_timeout: Duration,
    header_read_timeout: Duration,
    metrics: Arc<Metrics>,
}

/// One open connection: holds its slot under `max_connections` until both its stream and its
/// service are gone.
struct Connection {
    shared: Arc<Shared>,
    _slot: OwnedSemaphorePermit,
    opened: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds from `opened` to the end of the last request (or 0).
    last_done: AtomicU64,
    http1: AtomicBool,
    closed_idle: AtomicBool,
}

impl Connection {
    fn new(shared: Arc<Shared>, slot: OwnedSemaphorePermit) -> Self {
        shared.metrics.webhook_open_connections.inc();
        Self {
            shared,
            _slot: slot,
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_done: AtomicU64::new(0),
            http1: AtomicBool::new(false),
            closed_idle: AtomicBool::new(false),
        }
    }

    /// When the connection has been idle for the idle timeout, if nothing changes meanwhile;
    /// `None` when that moment has passed.
    fn idle_deadline(&self) -> Option<Instant> {
        let now = Instant::now();
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Some(now + self.shared.idle_timeout);
        }
        let at = self.last_activity() + self.shared.idle_timeout;
        (now < at).then_some(at)
    }

    fn last_activity(&self) -> Instant {
        self.opened + Duration::from_millis(self.last_done.load(Ordering::Acquire))
    }

    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    fn request_done(&self) {
        let ms = self.opened.elapsed().as_millis() as u64;
        self.last_done.fetch_max(ms, Ordering::AcqRel);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let metrics = &self.shared.metrics;
        metrics.webhook_open_connections.dec();
        // HTTP/1.1: the server closes a connection whose next request head is late; one that
        // ends idle for that long was closed by that timeout (HTTP/2 has no such timer).
        if self.http1.load(Ordering::Acquire)
            && !self.closed_idle.load(Ordering::Acquire)
            && self.in_flight.load(Ordering::Acquire) == 0
            && self.last_activity().elapsed() >= self.shared.header_read_timeout
        {
            metrics.webhook_timeout(WebhookTimeout::header_read);
        }
    }
}

/// Makes the service of each accepted connection while fewer than `max_connections` are open.
/// The accept loop waits for it to be ready before the handshake of the connection it has just
/// accepted and before accepting the next, so at the cap connections wait in the kernel's
/// accept backlog. (A graceful shutdown waiting here ends with the grace period.)
pub struct ConnectionCap {
    router: Router,
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    waiting: Option<Pin<Box<dyn Future<Output = OwnedSemaphorePermit> + Send>>>,
    slot: Option<OwnedSemaphorePermit>,
}

impl ConnectionCap {
    pub fn new(router: Router, limits: &Limits, metrics: Arc<Metrics>) -> Self {
        Self {
            router,
            shared: Arc::new(Shared {
                idle_timeout: limits.idle_timeout,
                header_read_timeout: limits.header_read_timeout,
                metrics,
            }),
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            waiting: None,
            slot: None,
        }
    }
}

impl<T> tower::Service<T> for ConnectionCap {
    type Response = ConnectionService;
    type Error = Infallible;
    type Future = std::future::Ready<Result<ConnectionService, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.slot.is_none() {
            self.slot = match self.slots.clone().try_acquire_owned() {
                Ok(slot) => Some(slot),
                Err(_) => {
                    let slots = self.slots.clone();
                    let waiting = self.waiting.get_or_insert_with(|| {
                        Box::pin(async move { slots.acquire_owned().await.expect("never closed") })
                    });
                    let slot = ready!(waiting.as_mut().poll(cx));
                    self.waiting = None;
                    Some(slot)
                }
            };
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: T) -> Self::Future {
        let slot = self.slot.take().expect("poll_ready before call");
        std::future::ready(Ok(ConnectionService {
            router: self.router.clone(),
            connection: Arc::new(Connection::new(self.shared.clone(), slot)),
        }))
    }
}

/// The router of one connection, counting its requests in flight.
#[derive(Clone)]
pub struct ConnectionService {
    router: Router,
    connection: Arc<Connection>,
}

impl<B> tower::Service<Request<B>> for ConnectionService
where
    Router: tower::Service<Request<B>>,
{
    type Response = <Router as tower::Service<Request<B>>>::Response;
    type Error = <Router as tower::Service<Request<B>>>::Error;
    type Future = InFlight<<Router as tower::Service<Request<B>>>::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower::Service::<Request<B>>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.connection.request_started();
        InFlight {
            inner: self.router.call(req),
            _guard: RequestGuard(self.connection.clone()),
        }
    }
}

/// Marks the request done when dropped (answered or abandoned).
struct RequestGuard(Arc<Connection>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.request_done();
    }
}

pin_project_lite::pin_project! {
    /// A request's answer; the request counts as in flight until it resolves or is dropped.
    pub struct InFlight<F> {
        #[pin]
        inner: F,
        _guard: RequestGuard,
    }
}

impl<F: Future> Future for InFlight<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().inner.poll(cx)
    }
}

type TlsAcceptor = RustlsAcceptor<NoDelayAcceptor>;
type TlsStream = tokio_rustls::server::TlsStream<TcpStream>;
type TlsService = <TlsAcceptor as Accept<TcpStream, ConnectionService>>::Service;

/// The TLS handshake (within the header-read timeout), then a [`GuardedStream`].
#[derive(Clone)]
pub struct GuardedAcceptor {
    tls: TlsAcceptor,
}

impl GuardedAcceptor {
    pub fn new(tls: Arc<rustls::ServerConfig>, limits: &Limits) -> Self {
        let config = axum_server::tls_rustls::RustlsConfig::from_config(tls);
        // TCP_NODELAY: an answer is one small write that must not wait for the peer's
        // delayed ACK.
        let tls = RustlsAcceptor::new(config)
            .handshake_timeout(limits.header_read_timeout)
            .acceptor(NoDelayAcceptor::new());
        Self { tls }
    }
}

type Accepted = io::Result<(GuardedStream, TlsService)>;

impl Accept<TcpStream, ConnectionService> for GuardedAcceptor {
    type Stream = GuardedStream;
    type Service = TlsService;
    type Future = Pin<Box<dyn Future<Output = Accepted> + Send>>;

    fn accept(&self, stream: TcpStream, service: ConnectionService) -> Self::Future {
        let connection = service.connection.clone();
        let handshake = self.tls.accept(stream, service);
        Box::pin(async move {
            let (stream, service) = handshake.await?;
            let http1 = stream.get_ref().1.alpn_protocol() != Some(b"h2");
            connection.http1.store(http1, Ordering::Release);
            let idle = Box::pin(tokio::time::sleep_until(
                Instant::now() + connection.shared.idle_timeout,
            ));
            Ok((
                GuardedStream {
                    inner: stream,
                    connection,
                    idle,
                },
                service,
            ))
        })
    }
}

/// A TLS connection that ends (with a read error) once idle for the idle timeout.
pub struct GuardedStream {
    inner: TlsStream,
    connection: Arc<Connection>,
    idle: Pin<Box<Sleep>>,
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Poll::Ready(read) = Pin::new(&mut this.inner).poll_read(cx, buf) {
            return Poll::Ready(read);
        }
        while this.idle.as_mut().poll(cx).is_ready() {
            match this.connection.idle_deadline() {
                Some(at) => this.idle.as_mut().reset(at),
                None => {
                    this.connection.closed_idle.store(true, Ordering::Release);
                    let metrics = &this.connection.shared.metrics;
                    metrics.webhook_timeout(WebhookTimeout::idle);
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connection idle for the idle timeout",
                    )));
                }
            }
        }
        Poll::Pending
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Why a request body was not read.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    /// Over [`MAX_BODY_BYTES`] (declared or sent).
    TooLarge,
    /// Not all sent within the body-read timeout.
    TimedOut,
    /// The body budget stayed full until the body-read timeout.
    Busy,
    /// The connection failed while reading.
    Read(String),
}

/// Request bodies are read within the body-read timeout, and hold room in a memory budget of
/// `max_bodies_in_flight` × [`MAX_BODY_BYTES`] bytes as their bytes arrive (a trickled body
/// holds only what it sent); a request waits for room until its deadline.
pub struct Bodies {
    budget: Semaphore,
    timeout: Duration,
}

impl Default for Bodies {
    fn default() -> Self {
        Self::new(&Limits::default())
    }
}

impl Bodies {
    pub fn new(limits: &Limits) -> Self {
        Self {
            budget: Semaphore::new(limits.max_bodies_in_flight.max(1) * MAX_BODY_BYTES),
            timeout: limits.body_read_timeout,
        }
    }

    /// The whole body, and its room in the budget (freed when dropped).
    pub async fn read(
        &self,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<(Bytes, Option<SemaphorePermit<'_>>), BodyError> {
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
            return Err(BodyError::TooLarge);
        }
        let mut waiting = false;
        let read = self.collect(body, &mut waiting);
        let result = tokio::time::timeout(self.timeout, read).await;
        match result {
            Ok(read) => read,
            Err(_) if waiting => Err(BodyError::Busy),
            Err(_) => Err(BodyError::TimedOut),
        }
    }

    async fn collect(
        &self,
        mut body: Body,
        waiting: &mut bool,
    ) -> Result<(Bytes, Option<SemaphorePermit<'_>>), BodyError> {
        let mut collected = Collected::Empty;
        let mut room: Option<SemaphorePermit<'_>> = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if collected.len() + data.len() > MAX_BODY_BYTES {
                return Err(BodyError::TooLarge);
            }
            *waiting = true;
            let more = self
                .budget
                .acquire_many(data.len() as u32)
                .await
                .expect("never closed");
            *waiting = false;
            match &mut room {
                Some(room) => room.merge(more),
                None => room = Some(more),
            }
            collected.push(data);
        }
        Ok((collected.into_bytes(), room))
    }
}

/// A body's bytes: most bodies arrive in one chunk, kept as it is; several are joined once, at
/// the end, into a buffer of the exact size.
enum Collected {
    Empty,
    One(Bytes),
    Many(Vec<Bytes>, usize),
}

impl Collected {
    fn len(&self) -> usize {
        match self {
            Self::Empty => 0,
            Self::One(b) => b.len(),
            Self::Many(_, len) => *len,
        }
    }

    fn push(&mut self, data: Bytes) {
        *self = match std::mem::replace(self, Self::Empty) {
            Self::Empty => Self::One(data),
            Self::One(first) => {
                let len = first.len() + data.len();
                Self::Many(vec![first, data], len)
            }
            Self::Many(mut chunks, len) => {
                let len = len + data.len();
                chunks.push(data);
                Self::Many(chunks, len)
            }
        };
    }

    fn into_bytes(self) -> Bytes {
        match self {
            Self::Empty => Bytes::new(),
            Self::One(b) => b,
            Self::Many(chunks, len) => {
                let mut all = Vec::with_capacity(len);
                for chunk in &chunks {
                    all.extend_from_slice(chunk);
                }
                Bytes::from(all)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt as _;

    use super::*;

    fn bodies(max_bodies_in_flight: usize) -> Bodies {
        Bodies::new(&Limits {
            body_read_timeout: Duration::from_millis(200),
            max_bodies_in_flight,
            ..Limits::default()
        })
    }

    fn sized(len: usize) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, len.into());
        headers
    }

    /// A body that sends `first` and then never ends.
    fn stalled(first: &'static [u8]) -> Body {
        let chunks = futures::stream::iter([Ok::<_, Infallible>(Bytes::from_static(first))])
            .chain(futures::stream::pending());
        Body::from_stream(chunks)
    }

    #[tokio::test]
    async fn a_body_is_read_whole_in_chunks() {
        let chunks =
            ["{\"a\":", "1}"].map(|c| Ok::<_, Infallible>(Bytes::from_static(c.as_bytes())));
        let body = Body::from_stream(futures::stream::iter(chunks));
        let (b, none) = (bodies(1), HeaderMap::new());
        let (read, _room) = b.read(&none, body).await.unwrap();
        assert_eq!(&read[..], b"{\"a\":1}");
    }

    #[tokio::test]
    async fn a_declared_or_sent_length_over_the_cap_is_refused() {
        let (b, none, over) = (bodies(1), HeaderMap::new(), sized(MAX_BODY_BYTES + 1));
        let declared = b.read(&over, Body::empty()).await;
        assert_eq!(declared.unwrap_err(), BodyError::TooLarge);
        let sent = b.read(&none, Body::from(vec![b'x'; MAX_BODY_BYTES + 1]));
        assert_eq!(sent.await.unwrap_err(), BodyError::TooLarge);
    }

    #[tokio::test]
    async fn a_trickled_body_times_out_and_holds_only_what_it_sent() {
        let (b, none, full) = (bodies(1), HeaderMap::new(), sized(MAX_BODY_BYTES));
        let slow = b.read(&full, stalled(b"{\"pad"));
        assert_eq!(slow.await.unwrap_err(), BodyError::TimedOut);
        // Meanwhile a stalled body does not keep others out: it holds five bytes.
        let stalled_read = b.read(&full, stalled(b"{\"pad"));
        let small = b.read(&none, Body::from("{}"));
        let (stalled_read, small) = tokio::join!(stalled_read, small);
        assert_eq!(stalled_read.unwrap_err(), BodyError::TimedOut);
        assert_eq!(&small.unwrap().0[..], b"{}");
    }

    #[tokio::test]
    async fn a_body_that_finds_no_room_in_time_is_busy_and_room_returns_when_freed() {
        let (b, none) = (bodies(1), HeaderMap::new());
        let (big, room) = b
            .read(&none, Body::from(vec![b'x'; MAX_BODY_BYTES]))
            .await
            .unwrap();
        assert_eq!(big.len(), MAX_BODY_BYTES);
        let busy = b.read(&none, Body::from("{}")).await;
        assert_eq!(busy.unwrap_err(), BodyError::Busy);
        drop((big, room));
        let (small, _room) = b.read(&none, Body::from("{}")).await.unwrap();
        assert_eq!(&small[..], b"{}");
    }
}
