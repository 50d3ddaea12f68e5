//! kube's `tower_test` mock as the Kubernetes API of one component under test (the reconciler,
//! the webhook's certificate manager): the test takes each request in the order it is sent,
//! asserts its method, path, query and body, and scripts its answer; [`MockApi::expect_no_more`]
//! then asserts that nothing else was sent.
//!
//! Tests of the projector as a whole, which only need an API that keeps answering, use
//! [`fake_kube`](idaas_projector::testing::fake_kube) instead.

use std::time::Duration;

use http::{HeaderMap, Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::Value;
use tower_test::mock::{self, SendResponse};

/// How long a test waits for the next request before failing.
const NEXT_REQUEST: Duration = Duration::from_secs(10);
/// How long [`MockApi::expect_no_more`] waits for a request that should not come.
const NO_MORE: Duration = Duration::from_millis(200);

/// The API end of a client made by [`pair`].
pub struct MockApi {
    handle: mock::Handle<Request<Body>, Response<Body>>,
}

/// A Kubernetes client, and the mock API that receives its requests.
pub fn pair() -> (kube::Client, MockApi) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), MockApi { handle })
}

/// One request as the client sent it.
#[derive(Debug)]
pub struct Sent {
    pub method: Method,
    pub path: String,
    /// The query string; empty when there is none.
    pub query: String,
    pub headers: HeaderMap,
    /// The body as JSON; `Null` when empty.
    pub body: Value,
}

impl Sent {
    /// Asserts that the query holds each of `parts` (`name=value`).
    pub fn assert_query(&self, parts: &[&str]) {
        for part in parts {
            assert!(
                self.query.contains(part),
                "{} {}: no {part} in the query {:?}",
                self.method,
                self.path,
                self.query
            );
        }
    }
}

/// The answer owed to a request taken by [`MockApi::next`].
pub struct Reply(SendResponse<Response<Body>>);

impl Reply {
    /// Answers with `status` and `body` as JSON.
    pub fn send(self, status: StatusCode, body: &Value) {
        self.0.send_response(
            Response::builder()
                .status(status)
                .body(Body::from(serde_json::to_vec(body).unwrap()))
                .unwrap(),
        );
    }
}

impl MockApi {
    /// Takes the next request, which must be `method` on `path`; the test answers it through the
    /// returned [`Reply`] (the client waits until then).
    pub async fn next(&mut self, method: Method, path: &str) -> (Sent, Reply) {
        let (sent, reply) = self.take(&format!("{method} {path}")).await;
        assert_eq!(sent.method, method, "method of {}", sent.path);
        assert_eq!(sent.path, path, "path of {method} {}", sent.path);
        (sent, reply)
    }

    /// Takes the next request, whatever it is (requests sent concurrently come in any order).
    pub async fn next_any(&mut self) -> (Sent, Reply) {
        self.take("a request").await
    }

    async fn take(&mut self, expected: &str) -> (Sent, Reply) {
        let (request, send) = tokio::time::timeout(NEXT_REQUEST, self.handle.next_request())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {expected}"))
            .unwrap_or_else(|| panic!("no request, expected {expected}"));
        let uri = request.uri().clone();
        let (parts, body) = request.into_parts();
        let bytes = http_body_util::BodyExt::collect(body)
            .await
            .unwrap()
            .to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        let sent = Sent {
            method: parts.method,
            path: uri.path().to_owned(),
            query: uri.query().unwrap_or("").to_owned(),
            headers: parts.headers,
            body,
        };
        (sent, Reply(send))
    }

    /// Takes the next request, which must be `method` on `path`, and answers `status` and
    /// `answer`.
    pub async fn expect(
        &mut self,
        method: Method,
        path: &str,
        status: StatusCode,
        answer: Value,
    ) -> Sent {
        let (sent, reply) = self.next(method, path).await;
        reply.send(status, &answer);
        sent
    }

    /// Takes the next request, which must be `method` on `path`, and answers `status` with the
    /// object it sent (as the API server answers a create or a replace).
    pub async fn expect_echo(&mut self, method: Method, path: &str, status: StatusCode) -> Sent {
        let (sent, reply) = self.next(method, path).await;
        reply.send(status, &sent.body);
        sent
    }

    /// Asserts that no other request comes (within 200 ms).
    pub async fn expect_no_more(&mut self) {
        if let Ok(Some((request, _))) =
            tokio::time::timeout(NO_MORE, self.handle.next_request()).await
        {
            panic!("unexpected request {} {}", request.method(), request.uri());
        }
    }
}
