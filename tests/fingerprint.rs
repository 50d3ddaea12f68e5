//! The `fingerprint` command against local TLS servers with an rcgen root, intermediate and leaf.
//!
//! The servers send all three certificates (leaf, intermediate, root), so the top of the chain
//! the server sends, which RAM's OIDC IdP wants, is the root: the marked fingerprint must equal
//! `openssl x509 -noout -fingerprint -sha1` of the root.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Chain {
    root_pem: String,
    /// leaf, intermediate, root.
    certs: Vec<CertificateDer<'static>>,
    leaf_key: Vec<u8>,
}

fn ca_params(name: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p
}

fn chain(root_name: &str) -> Chain {
    let root_key = KeyPair::generate().unwrap();
    let root_params = ca_params(root_name);
    let root = root_params.self_signed(&root_key).unwrap();
    let root_issuer = Issuer::new(root_params, root_key);

    let int_key = KeyPair::generate().unwrap();
    let int_params = ca_params("Test Intermediate");
    let int = int_params.signed_by(&int_key, &root_issuer).unwrap();
    let int_issuer = Issuer::new(int_params, int_key);

    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let leaf = leaf_params.signed_by(&leaf_key, &int_issuer).unwrap();
    Chain {
        root_pem: root.pem(),
        certs: vec![leaf.der().clone(), int.der().clone(), root.der().clone()],
        leaf_key: leaf_key.serialize_der(),
    }
}

/// An HTTPS server on 127.0.0.1 sending `chain`; it answers the discovery path with
/// `discovery` (JSON) or 404, and every other path with 404.
async fn serve(chain: &Chain, discovery: Option<String>) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            chain.certs.clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(chain.leaf_key.clone())),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let discovery = discovery.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf);
                let path = head.split_whitespace().nth(1).unwrap_or("/");
                let (status, body) = match (&discovery, path) {
                    (Some(doc), p) if p.ends_with("/.well-known/openid-configuration") => {
                        ("200 OK", doc.clone())
                    }
                    _ => ("404 Not Found", "{}".to_owned()),
                };
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

fn openssl_sha1(pem: &str, dir: &Path) -> String {
    let file = dir.join(format!("cert-{}.pem", fastrand::u64(..)));
    std::fs::write(&file, pem).unwrap();
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha1", "-in"])
        .arg(&file)
        .output()
        .expect("openssl is installed");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    text.trim()
        .split_once('=')
        .expect("SHA1 Fingerprint=...")
        .1
        .replace(':', "")
}

async fn run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_idaas-projector"))
            .arg("fingerprint")
            .args(args)
            .env_remove("IDAAS_PROJECTOR_CA_FILE")
            .env_remove("IDAAS_PROJECTOR_COMPARE")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn ram_line(stdout: &str, role: &str) -> String {
    let prefix = format!("fingerprint for RAM ({role}): ");
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} in {stdout}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marks_the_top_certificate_and_compares() {
    let dir = tempfile::tempdir().unwrap();
    let c = chain("Test Root");
    let root_file = dir.path().join("root.pem");
    std::fs::write(&root_file, &c.root_pem).unwrap();
    let addr = serve(&c, None).await;
    let url = format!("https://localhost:{}/path", addr.port());
    let ca = root_file.to_str().unwrap().to_owned();
    let expected = openssl_sha1(&c.root_pem, dir.path());
    assert_eq!(expected.len(), 40);

    let out = run(vec![url.clone(), "--ca-file".into(), ca.clone()]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(ram_line(&stdout, "issuer"), expected, "{stdout}");
    assert!(stdout.contains("[2] subject:   CN=Test Root"), "{stdout}");
    assert!(stdout.contains("CN=Test Intermediate"), "{stdout}");
    assert!(stderr.contains("no OIDC discovery document"), "{stderr}");

    // JSON: three certificates, only the last marked.
    let out = run(vec![
        url.clone(),
        "--ca-file".into(),
        ca.clone(),
        "--output".into(),
        "json".into(),
    ])
    .await;
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let certs = v["endpoints"][0]["certificates"].as_array().unwrap();
    assert_eq!(certs.len(), 3);
    let marked: Vec<bool> = certs.iter().map(|c| c["ram"].as_bool().unwrap()).collect();
    assert_eq!(marked, [false, false, true]);
    assert_eq!(certs[2]["sha1"], expected.as_str());
    assert_eq!(v["ok"], true);

    // --compare with the expected fingerprint, with colons and lowercase, among others.
    let colons = expected
        .as_bytes()
        .chunks(2)
        .map(|p| std::str::from_utf8(p).unwrap().to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(":");
    let other = "0".repeat(40);
    let out = run(vec![
        url.clone(),
        "--ca-file".into(),
        ca.clone(),
        "--compare".into(),
        other.clone(),
        "--compare".into(),
        colons,
    ])
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("compare: match"), "{stdout}");

    // Only another fingerprint: exit 1, naming the one now expected.
    let out = run(vec![
        url.clone(),
        "--ca-file".into(),
        ca.clone(),
        "--compare".into(),
        other,
    ])
    .await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(stderr.contains("before the rotation"), "{stderr}");

    // A malformed --compare is bad usage.
    let out = run(vec![
        url,
        "--ca-file".into(),
        ca,
        "--compare".into(),
        "xyz".into(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_uri_on_another_host_is_shown_too() {
    let dir = tempfile::tempdir().unwrap();
    let jwks_chain = chain("JWKS Root");
    let jwks_addr = serve(&jwks_chain, None).await;
    let issuer_chain = chain("Issuer Root");
    let doc = serde_json::json!({
        "issuer": "x",
        "jwks_uri": format!("https://127.0.0.1:{}/jwks", jwks_addr.port()),
    })
    .to_string();
    let addr = serve(&issuer_chain, Some(doc)).await;
    let ca_file = dir.path().join("roots.pem");
    std::fs::write(
        &ca_file,
        format!("{}{}", issuer_chain.root_pem, jwks_chain.root_pem),
    )
    .unwrap();
    let url = format!("https://localhost:{}/oauth2", addr.port());
    let ca = ca_file.to_str().unwrap().to_owned();
    let issuer_fp = openssl_sha1(&issuer_chain.root_pem, dir.path());
    let jwks_fp = openssl_sha1(&jwks_chain.root_pem, dir.path());

    let out = run(vec![url.clone(), "--ca-file".into(), ca.clone()]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(ram_line(&stdout, "issuer"), issuer_fp);
    assert_eq!(ram_line(&stdout, "jwks_uri"), jwks_fp);

    // Both must be held by RAM's IdP.
    let both = run(vec![
        url.clone(),
        "--ca-file".into(),
        ca.clone(),
        "--compare".into(),
        format!("{issuer_fp},{jwks_fp}"),
    ])
    .await;
    assert!(both.status.success(), "{}", text(&both).1);
    let one = run(vec![
        url,
        "--ca-file".into(),
        ca,
        "--compare".into(),
        issuer_fp,
    ])
    .await;
    assert_eq!(one.status.code(), Some(1));
    assert!(text(&one).1.contains(&jwks_fp), "{}", text(&one).1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_errors_for_refused_untrusted_and_bad_urls() {
    // Connection refused: a port that was just free.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let out = run(vec![format!("https://127.0.0.1:{port}/")]).await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("TCP: cannot connect"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    // A private CA that is not trusted: unknown issuer, with the --ca-file hint.
    let c = chain("Untrusted Root");
    let addr = serve(&c, None).await;
    let out = run(vec![format!("https://localhost:{}/", addr.port())]).await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("TLS: handshake"), "{stderr}");
    assert!(stderr.contains("unknown issuer"), "{stderr}");
    assert!(stderr.contains("--ca-file"), "{stderr}");

    // DNS failure.
    let out = run(vec!["https://no-such-host.invalid/".into()]).await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("DNS"), "{stderr}");

    // Not https, not a URL: bad usage.
    for bad in ["http://localhost/", "not a url"] {
        let out = run(vec![bad.into()]).await;
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", text(&out).1);
    }
}
