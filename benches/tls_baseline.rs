//! The admission benchmark's baseline: the least an HTTPS admission server can do. hyper and
//! rustls (aws-lc-rs, TLS 1.3 and 1.2, ALPN h2 and http/1.1, as the webhook), answering every
//! request with the same fixed AdmissionReview response bytes after reading the whole body,
//! without parsing it. `benches/admission.sh` runs it beside `webhook --standalone`, with the same
//! certificate and a response of the same size, so the difference is the webhook's own work.
//!
//! `cargo run --release --example tls-baseline -- LISTEN CERT_PEM KEY_PEM RESPONSE_FILE`
//!
//! With `BASELINE_WEBHOOK_HTTP2=1` it uses the webhook's HTTP/2 settings
//! (`webhook::server::http2_settings` with the default limits: flow-control windows of 65,535
//! bytes, 64 streams, keep-alive pings, a 64 KiB header list) instead of hyper's defaults, so that
//! their cost can be told apart from the webhook's own work.

use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use idaas_projector::webhook::limits::Limits;
use idaas_projector::webhook::server::http2_settings;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

fn usage() -> ! {
    eprintln!("usage: tls-baseline LISTEN CERT_PEM KEY_PEM RESPONSE_FILE");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, cert, key, response] = args.as_slice() else {
        usage()
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect())
        .unwrap_or_else(|e| panic!("{cert}: {e}"));
    let key = PrivateKeyDer::from_pem_file(key).unwrap_or_else(|e| panic!("{key}: {e}"));
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("certificate and key");
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let body = Bytes::from(std::fs::read(response).unwrap_or_else(|e| panic!("{response}: {e}")));
    let webhook_http2 = std::env::var_os("BASELINE_WEBHOOK_HTTP2").is_some_and(|v| v == "1");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen.as_str())
            .await
            .unwrap_or_else(|e| panic!("{listen}: {e}"));
        eprintln!("tls-baseline listening on {listen}");
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, body) = (acceptor.clone(), body.clone());
            let webhook_http2 = webhook_http2;
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let body = body.clone();
                    async move {
                        // Read the whole request, as the webhook must, but look at none of it.
                        let _ = req.into_body().collect().await;
                        Response::builder()
                            .header(hyper::header::CONTENT_TYPE, "application/json")
                            .body(Full::new(body))
                    }
                });
                let mut builder =
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                if webhook_http2 {
                    builder.http2().timer(hyper_util::rt::TokioTimer::new());
                    http2_settings(&mut builder, &Limits::default());
                }
                let _ = builder.serve_connection(TokioIo::new(tls), service).await;
            });
        }
    });
}
