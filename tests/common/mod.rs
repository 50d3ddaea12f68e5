//! Test helpers: rcgen certificates, a webhook served over real TLS on 127.0.0.1 (in process or
//! as the binary), and the `tower_test` mock Kubernetes API ([`mock_api`]). The fixtures that the
//! benches share too (the closure-answered fake API, the IDaaS emulator, the reconciler's
//! context) are in the library's `idaas_projector::testing`.
#![allow(dead_code)]

pub mod mock_api;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use idaas_projector::admin::Readiness;
use idaas_projector::metrics::Metrics;
use idaas_projector::testing::install_provider;
use idaas_projector::webhook::limits::Limits;
use idaas_projector::webhook::mutate::MutateConfig;
use idaas_projector::webhook::review::Standalone;
use idaas_projector::webhook::server::{self, WebhookState};
use idaas_projector::webhook::tls::{self, CertStore};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// A test CA that issues serving certificates for localhost and 127.0.0.1.
pub struct TestCa {
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A PEM certificate chain and key.
pub struct Pair {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Self {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    pub fn leaf(&self, common_name: &str) -> Pair {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Pair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

/// A standalone webhook on 127.0.0.1 with a hot-swappable certificate.
pub struct TestServer {
    pub addr: SocketAddr,
    pub store: Arc<CertStore>,
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    pub handle: axum_server::Handle<SocketAddr>,
}

pub async fn start_server(pair: &Pair) -> TestServer {
    start_server_with(pair, Limits::default()).await
}

/// [`start_server`] within `limits`.
pub async fn start_server_with(pair: &Pair, limits: Limits) -> TestServer {
    install_provider();
    let metrics = Arc::new(Metrics::new());
    let readiness = Arc::new(Readiness::default());
    readiness.set_caches_synced();
    let store = Arc::new(CertStore::default());
    let loaded = tls::load_pair(pair.cert_pem.as_bytes(), pair.key_pem.as_bytes()).unwrap();
    tls::install(&store, loaded, &metrics, &readiness);
    let config = Arc::new(tls::server_config(store.clone()).unwrap());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(WebhookState {
        config: MutateConfig {
            init_image: "registry.example.com/idaas-projector:test".into(),
            default_oidc_provider_arn: Some("acs:ram::1234567890123456:oidc-provider/idaas".into()),
            ..MutateConfig::default()
        },
        resolver: Arc::new(Standalone),
        metrics: metrics.clone(),
        bodies: idaas_projector::webhook::limits::Bodies::new(&limits),
    });
    let handle = axum_server::Handle::new();
    let h = handle.clone();
    tokio::spawn(async move {
        server::serve_tls(listener, config, state, limits, h)
            .await
            .unwrap();
    });
    TestServer {
        addr,
        store,
        metrics,
        readiness,
        handle,
    }
}

/// A rustls client configuration trusting `ca_pem` only, offering HTTP/2 or HTTP/1.1.
pub fn tls_client_config(ca_pem: &str, http2: bool) -> rustls::ClientConfig {
    use rustls_pki_types::pem::PemObject;
    install_provider();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = if http2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    tls
}

/// A reqwest client trusting `ca_pem` only. An unpooled client also resumes no TLS session, so
/// every request makes a full handshake and sees the certificate served at that moment.
pub fn client(ca_pem: &str, http2: bool, pooled: bool) -> reqwest::Client {
    let mut tls = tls_client_config(ca_pem, http2);
    if !pooled {
        tls.resumption = rustls::client::Resumption::disabled();
    }
    let mut b = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .tls_info(true)
        .timeout(Duration::from_secs(10));
    b = if http2 {
        b.http2_prior_knowledge()
    } else {
        b.http1_only()
    };
    if !pooled {
        b = b.pool_max_idle_per_host(0);
    }
    b.build().unwrap()
}

/// An AdmissionReview for a pod opting in.
pub fn review_body(uid: &str) -> serde_json::Value {
    idaas_projector::testing::pod_review(
        uid,
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "payments", "annotations": {
                "idaas-projector.io/m2m-token": "payments",
                "idaas-projector.io/role-arn": "acs:ram::1234567890123456:role/payments"}},
            "spec": {"containers": [
                {"name": "app", "image": "registry.example.com/app:1"},
                {"name": "proxy", "image": "registry.example.com/proxy:1"}]}
        }),
    )
}

/// Lays out `dir` like a mounted Secret: `..<gen>/tls.{crt,key}`, `..data -> ..<gen>`,
/// `tls.crt -> ..data/tls.crt`. Each call makes a new generation and swaps `..data` atomically.
pub fn publish(dir: &std::path::Path, generation: u32, cert_pem: &str, key_pem: &str) {
    let gen_dir = dir.join(format!("..2026_11_28_{generation:02}"));
    std::fs::create_dir(&gen_dir).unwrap();
    std::fs::write(gen_dir.join("tls.crt"), cert_pem).unwrap();
    std::fs::write(gen_dir.join("tls.key"), key_pem).unwrap();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(gen_dir.file_name().unwrap(), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for f in ["tls.crt", "tls.key"] {
        if !dir.join(f).exists() {
            std::os::unix::fs::symlink(std::path::Path::new("..data").join(f), dir.join(f))
                .unwrap();
        }
    }
}

/// The requeue delay; `Action` has no accessor, its Debug shows `Some(<Duration Debug>)`.
pub fn requeue_after(a: &kube::runtime::controller::Action) -> std::time::Duration {
    let d = format!("{a:?}");
    let inner = d
        .split("Some(")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .expect("a requeue");
    let (num, unit) = inner.split_at(inner.find(|c: char| c.is_alphabetic() || c == 'µ').unwrap());
    let n: f64 = num.parse().unwrap();
    Duration::from_secs_f64(match unit {
        "s" => n,
        "ms" => n / 1e3,
        "µs" => n / 1e6,
        "ns" => n / 1e9,
        other => panic!("unit {other}"),
    })
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The webhook binary in standalone mode, with its log drained as it is written.
pub struct Webhook {
    pub child: Child,
    pub port: u16,
    pub admin: u16,
    log: Option<std::thread::JoinHandle<String>>,
    /// For the admin port, made once: building a client loads the system's roots.
    plain: reqwest::Client,
}

impl Webhook {
    pub fn start(cert: &Path, key: &Path, extra: &[&str]) -> Self {
        let (port, admin) = (free_port(), free_port());
        let mut child = Command::new(env!("CARGO_BIN_EXE_idaas-projector"))
            .args(["--log-format", "json", "--log-level", "trace"])
            .args(["webhook", "--standalone"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
            .arg("--tls-cert-file")
            .arg(cert)
            .arg("--tls-key-file")
            .arg(key)
            .args([
                "--default-oidc-provider-arn",
                "acs:ram::1234567890123456:oidc-provider/idaas",
            ])
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let log = std::thread::spawn(move || {
            let mut buf = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut buf);
            buf
        });
        Self {
            child,
            port,
            admin,
            log: Some(log),
            plain: reqwest::Client::new(),
        }
    }

    /// Started with a fresh certificate from `ca` in a new directory (kept alive by the
    /// returned guard), and ready.
    pub async fn ready(ca: &TestCa, extra: &[&str]) -> (Self, tempfile::TempDir) {
        let pair = ca.leaf("webhook");
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert, &pair.cert_pem).unwrap();
        std::fs::write(&key, &pair.key_pem).unwrap();
        let mut webhook = Self::start(&cert, &key, extra);
        webhook.wait_ready().await;
        (webhook, dir)
    }

    pub fn url(&self) -> String {
        format!("https://localhost:{}/mutate", self.port)
    }

    pub async fn readyz(&self) -> Option<u16> {
        self.plain
            .get(format!("http://127.0.0.1:{}/readyz", self.admin))
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16())
    }

    pub async fn wait_ready(&mut self) {
        for _ in 0..400 {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the webhook exited early with {status:?}");
            }
            if self.readyz().await == Some(200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the webhook never became ready");
    }

    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    pub async fn wait(mut self) -> (std::process::ExitStatus, String) {
        let log = self.log.take().unwrap();
        let status = tokio::task::spawn_blocking(move || self.child.wait())
            .await
            .unwrap()
            .unwrap();
        (status, log.join().unwrap())
    }
}
