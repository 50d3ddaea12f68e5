//! An open-loop load generator for the admission benchmark: POSTs a body at a fixed total rate
//! over N kept-alive connections (HTTP/2 or HTTP/1.1 over TLS), and prints the achieved rate and
//! the latency percentiles. Latency is measured from when each request was due, not from when it
//! could be sent, so a stalled server shows up in the figures (no coordinated omission); only the
//! timer's own lateness (up to a millisecond) is left out.
//!
//! The server's certificate is not verified: this talks to a benchmark server on 127.0.0.1.
//!
//! `cargo run --release --example rate-load -- [--http1] [--rate 1000] [--seconds 10]
//!   [--connections 16] ADDR BODY_FILE`
//!
//! Prints one line: `rps=<achieved> p50_ms=<> p99_ms=<> max_ms=<> ok=<n> failed=<n>`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

struct Args {
    http1: bool,
    rate: f64,
    seconds: f64,
    connections: usize,
    addr: String,
    body: Bytes,
}

fn args() -> Args {
    let mut it = std::env::args().skip(1);
    let (mut http1, mut rate, mut seconds, mut connections) = (false, 1000.0, 10.0, 16);
    let mut positional = Vec::new();
    while let Some(a) = it.next() {
        let mut value = |name: &str| -> f64 {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a number"))
        };
        match a.as_str() {
            "--http1" => http1 = true,
            "--rate" => rate = value("--rate"),
            "--seconds" => seconds = value("--seconds"),
            "--connections" => connections = value("--connections") as usize,
            _ => positional.push(a),
        }
    }
    let [addr, body] = positional.as_slice() else {
        eprintln!(
            "usage: rate-load [--http1] [--rate R] [--seconds S] [--connections N] ADDR BODY_FILE"
        );
        std::process::exit(2);
    };
    Args {
        http1,
        rate,
        seconds,
        connections: connections.max(1),
        addr: addr.clone(),
        body: Bytes::from(std::fs::read(body).unwrap_or_else(|e| panic!("{body}: {e}"))),
    }
}

type Sender = hyper::client::conn::http2::SendRequest<Full<Bytes>>;
type Sender1 = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

enum Conn {
    H2(Sender),
    H1(Sender1),
}

async fn connect(addr: &str, http1: bool, tls: Arc<rustls::ClientConfig>) -> Conn {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let io = TokioIo::new(stream);
    if http1 {
        let (send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .expect("HTTP/1.1");
        tokio::spawn(conn);
        Conn::H1(send)
    } else {
        let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .expect("HTTP/2");
        tokio::spawn(conn);
        Conn::H2(send)
    }
}

fn request(body: &Bytes) -> hyper::Request<Full<Bytes>> {
    hyper::Request::post("https://localhost/mutate")
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::HOST, "localhost")
        .body(Full::new(body.clone()))
        .unwrap()
}

/// One request; Ok(()) on a 200 whose body was read.
async fn send(conn: &mut Conn, body: &Bytes) -> Result<(), String> {
    let resp = match conn {
        Conn::H2(s) => s.send_request(request(body)).await,
        Conn::H1(s) => {
            s.ready().await.map_err(|e| e.to_string())?;
            s.send_request(request(body)).await
        }
    }
    .map_err(|e| e.to_string())?;
    let status = resp.status();
    resp.into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("status {status}"));
    }
    Ok(())
}

fn main() {
    let args = args();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    tls.alpn_protocols = vec![if args.http1 {
        b"http/1.1".to_vec()
    } else {
        b"h2".to_vec()
    }];
    let tls = Arc::new(tls);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let args = Arc::new(args);
        let interval = Duration::from_secs_f64(args.connections as f64 / args.rate);
        let per_conn = (args.seconds * args.rate / args.connections as f64).round() as usize;
        let start = Instant::now() + Duration::from_millis(200);
        let mut tasks = Vec::new();
        for i in 0..args.connections {
            let (args, tls) = (args.clone(), tls.clone());
            tasks.push(tokio::spawn(async move {
                let mut conn = connect(&args.addr, args.http1, tls).await;
                // Spread the connections' schedules evenly over one interval.
                let offset = interval.mul_f64(i as f64 / args.connections as f64);
                let mut latencies = Vec::with_capacity(per_conn);
                let mut failed = 0usize;
                let mut in_flight = Vec::new();
                for n in 0..per_conn {
                    let due = start + offset + interval * n as u32;
                    // The clock starts when the request was due, unless the timer woke up late
                    // on its own (tokio's timers have millisecond granularity): then it starts
                    // at the wake-up. A request held back by the server (HTTP/1.1 waiting for
                    // the previous answer) is late from its due time, and that counts.
                    let held_back = Instant::now() >= due;
                    tokio::time::sleep_until(due.into()).await;
                    let due = if held_back { due } else { Instant::now() };
                    match &mut conn {
                        Conn::H2(s) => {
                            // HTTP/2 multiplexes: never wait for the previous answer.
                            let mut c = Conn::H2(s.clone());
                            let body = args.body.clone();
                            in_flight.push(tokio::spawn(async move {
                                send(&mut c, &body).await.map(|()| due.elapsed())
                            }));
                        }
                        Conn::H1(_) => match send(&mut conn, &args.body).await {
                            Ok(()) => latencies.push(due.elapsed()),
                            Err(_) => failed += 1,
                        },
                    }
                }
                for h in in_flight {
                    match h.await.unwrap() {
                        Ok(l) => latencies.push(l),
                        Err(_) => failed += 1,
                    }
                }
                (latencies, failed)
            }));
        }
        let mut all = Vec::new();
        let mut failed = 0;
        for t in tasks {
            let (l, f) = t.await.unwrap();
            all.extend(l);
            failed += f;
        }
        let wall = start.elapsed().as_secs_f64();
        all.sort();
        let pct = |p: f64| {
            all.get(((p / 100.0) * all.len() as f64) as usize)
                .or(all.last())
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        println!(
            "rps={:.0} p50_ms={:.3} p99_ms={:.3} max_ms={:.3} ok={} failed={}",
            all.len() as f64 / wall,
            pct(50.0),
            pct(99.0),
            pct(100.0),
            all.len(),
            failed
        );
    });
}
