//! Slow and numerous clients against the webhook on 127.0.0.1: trickled request heads and
//! bodies are cut off by the server after their timeout while real admissions keep being
//! answered; idle connections are closed; beyond --max-connections new connections wait.
//!
//! `slow_clients_drill_with_default_timeouts` (ignored) is the figure for BENCHMARKS.md:
//! `cargo test --release --test slow_clients -- --ignored --nocapture`.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{TestCa, Webhook, client, review_body, start_server_with, tls_client_config};
use idaas_projector::webhook::limits::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

const SLOW_HEADS: usize = 500;
const SLOW_BODIES: usize = 50;
/// How long a trickling client keeps going before giving up on the server.
const TRICKLE_FOR: Duration = Duration::from_secs(60);

async fn connect(addr: SocketAddr, tls: &TlsConnector) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    tls.connect(name, tcp).await.unwrap()
}

/// How a trickling connection ended: how long it lived (from before its TLS handshake) and the
/// first line the server sent, if any.
#[derive(Debug)]
struct Cut {
    lived: Duration,
    status_line: String,
}

/// Sends `head`, then `drip` every 100 ms until the server closes the connection.
async fn trickle(addr: SocketAddr, tls: TlsConnector, head: Vec<u8>, drip: &'static [u8]) -> Cut {
    let started = Instant::now();
    let mut stream = connect(addr, &tls).await;
    stream.write_all(&head).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while started.elapsed() < TRICKLE_FOR {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    let text = String::from_utf8_lossy(&answer);
                    let status_line = text.lines().next().unwrap_or("").to_owned();
                    return Cut { lived: started.elapsed(), status_line };
                }
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            },
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                if stream.write_all(drip).await.is_err() || stream.flush().await.is_err() {
                    let status_line = String::from_utf8_lossy(&answer).lines().next().unwrap_or("").to_owned();
                    return Cut { lived: started.elapsed(), status_line };
                }
            }
        }
    }
    panic!("the server kept a trickling connection open for {TRICKLE_FOR:?}");
}

fn slow_head() -> Vec<u8> {
    b"POST /mutate HTTP/1.1\r\nhost: localhost\r\nx-slow: ".to_vec()
}

fn slow_body() -> Vec<u8> {
    let head = "POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
                content-length: 4194304\r\n\r\n{\"padding\": \"";
    head.as_bytes().to_vec()
}

/// Real admissions, one after another on a pooled HTTP/1.1 and a pooled HTTP/2 client in turn,
/// until `stop`; returns each one's latency. Every one must be answered 200.
async fn admissions(ca_pem: String, url: String, stop: Arc<AtomicBool>) -> Vec<Duration> {
    let clients = [client(&ca_pem, false, true), client(&ca_pem, true, true)];
    let body = serde_json::to_vec(&review_body("steady")).unwrap();
    let mut latencies = Vec::new();
    while !stop.load(Ordering::Acquire) {
        let c = &clients[latencies.len() % 2];
        let started = Instant::now();
        let resp = c
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
        latencies.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    latencies
}

struct Outcome {
    heads: Vec<Cut>,
    bodies: Vec<Cut>,
    latencies: Vec<Duration>,
    peak_rss_kib: u64,
    metrics: String,
}

/// The drill against the `webhook --standalone` binary started with `extra` flags.
async fn drill(extra: &[&str]) -> Outcome {
    let ca = TestCa::new("drill CA");
    let (webhook, _dir) = Webhook::ready(&ca, extra).await;
    let addr: SocketAddr = format!("127.0.0.1:{}", webhook.port).parse().unwrap();
    let tls = TlsConnector::from(Arc::new(tls_client_config(&ca.pem, false)));
    let stop = Arc::new(AtomicBool::new(false));
    let steady = tokio::spawn(admissions(ca.pem.clone(), webhook.url(), stop.clone()));
    let mut slow = Vec::new();
    for i in 0..SLOW_HEADS + SLOW_BODIES {
        let (head, drip): (_, &'static [u8]) = if i < SLOW_HEADS {
            (slow_head(), b"a")
        } else {
            (slow_body(), b"xxxxxxxxxxxxxxxx")
        };
        slow.push(tokio::spawn(trickle(addr, tls.clone(), head, drip)));
        if i % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut cuts = Vec::new();
    for task in slow {
        cuts.push(task.await.unwrap());
    }
    stop.store(true, Ordering::Release);
    let latencies = steady.await.unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", webhook.child.id())).unwrap();
    let peak_rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", webhook.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    webhook.signal("TERM");
    let bodies = cuts.split_off(SLOW_HEADS);
    Outcome {
        heads: cuts,
        bodies,
        latencies,
        peak_rss_kib,
        metrics,
    }
}

fn percentile(latencies: &[Duration], p: f64) -> Duration {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn counter(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Checks what the drill must show whatever the timeouts: every slow connection was cut by the
/// server, not before `timeout`; the trickled bodies were answered 408; the timeouts counted.
fn check(outcome: &Outcome, timeout: Duration) {
    for cut in outcome.heads.iter().chain(&outcome.bodies) {
        assert!(cut.lived >= timeout, "cut before the timeout: {cut:?}");
    }
    for cut in &outcome.bodies {
        assert_eq!(cut.status_line, "HTTP/1.1 408 Request Timeout", "{cut:?}");
    }
    let heads = counter(
        &outcome.metrics,
        "idaas_projector_webhook_timeouts_total{timeout=\"header_read\"}",
    );
    let bodies = counter(
        &outcome.metrics,
        "idaas_projector_webhook_timeouts_total{timeout=\"body_read\"}",
    );
    assert!(heads >= SLOW_HEADS as u64, "{}", outcome.metrics);
    assert_eq!(bodies, SLOW_BODIES as u64, "{}", outcome.metrics);
    assert!(!outcome.latencies.is_empty());
}

fn report(outcome: &Outcome) {
    let lived = |cuts: &[Cut]| cuts.iter().map(|c| c.lived).max().unwrap_or_default();
    println!(
        "slow heads: {SLOW_HEADS}, cut after at most {:?}; slow bodies: {SLOW_BODIES}, cut after at most {:?}",
        lived(&outcome.heads),
        lived(&outcome.bodies)
    );
    println!(
        "real admissions: {} answered 200, p50 {:?}, p99 {:?}, max {:?}",
        outcome.latencies.len(),
        percentile(&outcome.latencies, 0.5),
        percentile(&outcome.latencies, 0.99),
        percentile(&outcome.latencies, 1.0)
    );
    println!(
        "webhook peak RSS (VmHWM): {} KiB ({:.1} MiB)",
        outcome.peak_rss_kib,
        outcome.peak_rss_kib as f64 / 1024.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_heads_and_bodies_are_cut_after_their_timeout_while_admissions_are_answered() {
    let outcome = drill(&["--header-read-timeout", "1s", "--body-read-timeout", "1s"]).await;
    report(&outcome);
    check(&outcome, Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the BENCHMARKS.md figure: 10 s timeouts, run by hand with --release"]
async fn slow_clients_drill_with_default_timeouts() {
    let outcome = drill(&[]).await;
    report(&outcome);
    check(&outcome, Duration::from_secs(10));
}

#[tokio::test]
async fn a_connection_idle_for_the_idle_timeout_is_closed() {
    let ca = TestCa::new("test CA");
    let limits = Limits {
        idle_timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    let server = start_server_with(&ca.leaf("webhook"), limits).await;
    let url = format!("https://localhost:{}/mutate", server.addr.port());
    let c = client(&ca.pem, true, true);
    let resp = c.post(&url).json(&review_body("a")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let open = || server.metrics.webhook_open_connections.get();
    assert_eq!(open(), 1);
    for _ in 0..200 {
        if open() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(open(), 0, "the idle HTTP/2 connection was closed");
    let text = server.metrics.encode().unwrap();
    assert_eq!(
        counter(
            &text,
            "idaas_projector_webhook_timeouts_total{timeout=\"idle\"}"
        ),
        1,
        "{text}"
    );
    // The client reconnects.
    let resp = c.post(&url).json(&review_body("b")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn beyond_max_connections_a_new_connection_waits_until_one_closes() {
    let ca = TestCa::new("test CA");
    let limits = Limits {
        max_connections: 3,
        ..Limits::default()
    };
    let server = start_server_with(&ca.leaf("webhook"), limits).await;
    let tls = TlsConnector::from(Arc::new(tls_client_config(&ca.pem, false)));
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect(server.addr, &tls).await);
    }
    assert_eq!(server.metrics.webhook_open_connections.get(), 3);
    let fourth = tokio::spawn({
        let tls = tls.clone();
        async move { connect(server.addr, &tls).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!fourth.is_finished(), "no handshake beyond the cap");
    assert_eq!(server.metrics.webhook_open_connections.get(), 3);
    drop(held.pop());
    let fourth = tokio::time::timeout(Duration::from_secs(10), fourth)
        .await
        .expect("served once a connection closed")
        .unwrap();
    drop(fourth);
}
