//! The webhook over real TLS on 127.0.0.1: HTTP/1.1 and h2, 400, 413, certificate rotation.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{TestCa, client, review_body, start_server};
use idaas_projector::testing::install_provider;
use reqwest::StatusCode;
use reqwest::tls::TlsInfo;

fn url(addr: std::net::SocketAddr) -> String {
    format!("https://localhost:{}/mutate", addr.port())
}

async fn post_review(
    c: &reqwest::Client,
    addr: std::net::SocketAddr,
    uid: &str,
) -> reqwest::Response {
    c.post(url(addr))
        .json(&review_body(uid))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn http1_and_h2_answer_with_a_patch() {
    let ca = TestCa::new("test CA");
    let server = start_server(&ca.leaf("webhook")).await;
    for http2 in [false, true] {
        let c = client(&ca.pem, http2, true);
        let resp = post_review(&c, server.addr, "uid-1").await;
        assert_eq!(resp.status(), StatusCode::OK);
        let expected = if http2 {
            reqwest::Version::HTTP_2
        } else {
            reqwest::Version::HTTP_11
        };
        assert_eq!(resp.version(), expected);
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(body["kind"], "AdmissionReview");
        assert_eq!(body["response"]["uid"], "uid-1");
        assert_eq!(body["response"]["allowed"], true);
        assert_eq!(body["response"]["patchType"], "JSONPatch");
    }
    let metrics = server.metrics.encode().unwrap();
    assert!(
        metrics.contains("idaas_projector_admission_requests_total{result=\"injected\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("idaas_projector_webhook_certificate_expiry_timestamp_seconds"),
        "{metrics}"
    );
}

#[tokio::test]
async fn h2_negotiated_over_alpn() {
    // A client that speaks both picks h2 through ALPN, as kube-apiserver does.
    let ca = TestCa::new("test CA");
    let server = start_server(&ca.leaf("webhook")).await;
    install_provider();
    let c = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap()])
        .build()
        .unwrap();
    let resp = post_review(&c, server.addr, "uid-alpn").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
}

#[tokio::test]
async fn malformed_reviews_get_400_with_one_line() {
    let ca = TestCa::new("test CA");
    let server = start_server(&ca.leaf("webhook")).await;
    let c = client(&ca.pem, false, true);
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("not json", b"{not json".to_vec()),
        ("empty", Vec::new()),
        ("wrong apiVersion", br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"x"}}"#.to_vec()),
        ("no request", br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec()),
        ("array", b"[1,2,3]".to_vec()),
        ("binary", vec![0xff, 0xfe, 0x00, 0x01]),
    ];
    for (what, body) in bodies {
        let resp = c.post(url(server.addr)).body(body).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{what}");
        let text = resp.text().await.unwrap();
        assert_eq!(text.trim_end().lines().count(), 1, "{what}: {text:?}");
        assert!(!text.trim().is_empty(), "{what}");
    }
    // The server still answers after all of them.
    let resp = post_review(&c, server.addr, "after").await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn bodies_over_4_mib_get_413() {
    let ca = TestCa::new("test CA");
    let server = start_server(&ca.leaf("webhook")).await;
    for http2 in [false, true] {
        let c = client(&ca.pem, http2, true);
        let mut review = review_body("big");
        review["request"]["object"]["metadata"]["annotations"]["padding"] =
            serde_json::Value::String("x".repeat(4 * 1024 * 1024 + 1));
        let resp = c.post(url(server.addr)).json(&review).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
        // Just under the limit is fine.
        let mut review = review_body("near");
        review["request"]["object"]["metadata"]["annotations"]["padding"] =
            serde_json::Value::String("x".repeat(4 * 1024 * 1024 - 4096));
        let resp = c.post(url(server.addr)).json(&review).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn plain_http_is_refused_and_tls_1_2_is_served() {
    let ca = TestCa::new("test CA");
    let server = start_server(&ca.leaf("webhook")).await;
    let plain = reqwest::Client::new();
    let r = plain
        .post(format!("http://127.0.0.1:{}/mutate", server.addr.port()))
        .body("{}")
        .send()
        .await;
    assert!(r.is_err() || !r.unwrap().status().is_success());

    // TLS 1.2 is the oldest version offered; a TLS 1.2-only client still gets an answer.
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap())
        .unwrap();
    let tls12 = rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS12])
        .with_root_certificates(roots)
        .with_no_client_auth();
    let c = reqwest::Client::builder()
        .tls_backend_preconfigured(tls12)
        .build()
        .unwrap();
    let resp = post_review(&c, server.addr, "tls12").await;
    assert_eq!(resp.status(), StatusCode::OK);
}

fn leaf_der(resp: &reqwest::Response) -> Vec<u8> {
    resp.extensions()
        .get::<TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .map(<[u8]>::to_vec)
        .expect("TLS info")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_under_load_loses_no_request() {
    let ca = TestCa::new("test CA");
    let first = ca.leaf("webhook-1");
    let server = start_server(&first).await;
    let ok = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));

    // Two steady senders: an h2 client on one pooled connection, and an HTTP/1.1 client that
    // handshakes anew for every request.
    let mut senders = Vec::new();
    for (http2, pooled) in [(true, true), (false, false)] {
        let c = client(&ca.pem, http2, pooled);
        let (ok, stop, addr) = (ok.clone(), stop.clone(), server.addr);
        senders.push(tokio::spawn(async move {
            let mut n = 0usize;
            let mut leaves = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let resp = post_review(&c, addr, &format!("rot-{n}")).await;
                assert_eq!(resp.status(), StatusCode::OK, "request {n} failed");
                leaves.push(leaf_der(&resp));
                let body: serde_json::Value = resp.json().await.unwrap();
                assert_eq!(body["response"]["allowed"], true);
                ok.fetch_add(1, Ordering::SeqCst);
                n += 1;
            }
            leaves
        }));
    }

    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = ca.leaf("webhook-2");
    let loaded = idaas_projector::webhook::tls::load_pair(
        second.cert_pem.as_bytes(),
        second.key_pem.as_bytes(),
    )
    .unwrap();
    idaas_projector::webhook::tls::install(
        &server.store,
        loaded,
        &server.metrics,
        &server.readiness,
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);

    let mut all = Vec::new();
    for s in senders {
        all.push(s.await.expect("sender never failed"));
    }
    assert!(ok.load(Ordering::SeqCst) > 10);
    // The fresh-handshake client saw the first certificate, then the second.
    let fresh = &all[1];
    assert_eq!(fresh.first().unwrap(), &first.der);
    assert_eq!(fresh.last().unwrap(), &second.der);
    // A new client after the rotation gets the new certificate.
    let c = client(&ca.pem, true, true);
    let resp = post_review(&c, server.addr, "after").await;
    assert_eq!(leaf_der(&resp), second.der);
}
