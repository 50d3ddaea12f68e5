//! Test helpers: rcgen certificates and a webhook served over real TLS on 127.0.0.1.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use idaas_projector::admin::Readiness;
use idaas_projector::metrics::Metrics;
use idaas_projector::webhook::mutate::MutateConfig;
use idaas_projector::webhook::review::Standalone;
use idaas_projector::webhook::server::{self, WebhookState};
use idaas_projector::webhook::tls::{self, CertStore};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

pub fn install_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

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
    });
    let handle = axum_server::Handle::new();
    let h = handle.clone();
    tokio::spawn(async move {
        server::serve_tls(listener, config, server::router(state), h)
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

/// A reqwest client trusting `ca_pem` only. An unpooled client also resumes no TLS session, so
/// every request makes a full handshake and sees the certificate served at that moment.
pub fn client(ca_pem: &str, http2: bool, pooled: bool) -> reqwest::Client {
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
    if !pooled {
        tls.resumption = rustls::client::Resumption::disabled();
    }
    let mut b = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .tls_info(true)
        .timeout(std::time::Duration::from_secs(10));
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
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop",
            "operation": "CREATE",
            "object": {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "payments", "annotations": {
                    "idaas-projector.io/m2m-token": "payments",
                    "idaas-projector.io/role-arn": "acs:ram::1234567890123456:role/payments"}},
                "spec": {"containers": [
                    {"name": "app", "image": "registry.example.com/app:1"},
                    {"name": "proxy", "image": "registry.example.com/proxy:1"}]}
            }
        }
    })
}
