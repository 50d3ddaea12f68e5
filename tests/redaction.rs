//! No token, client secret, private key or client assertion reaches a log line at any level: a
//! refresh through the reconciler (secret, private-key and federated auth: the ServiceAccount
//! token the projector requests is the assertion) and the `token` command's paths run with
//! tracing at TRACE into a buffer, which must hold none of them.
//!
//! One test in its own binary, with a global subscriber, so no other test's thread can disable a
//! callsite first.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use http::{Method, StatusCode};
use idaas_projector::controller::reconcile::reconcile;
use idaas_projector::crd::{
    ClientAuth, ClientAuthMethod, M2MToken, M2MTokenSpec, SecretKeyRef, ServiceAccountAssertion,
};
use idaas_projector::emulator::idaas::{
    EmulatorConfig, Fault, IdaasEmulator, OidcIssuer, generate_client_key,
};
use idaas_projector::idaas::IdaasClient;
use idaas_projector::testing::{self, fake_kube, install_provider, not_found, reconcile_context};
use serde_json::json;

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const SECRET: &str = "client-secret-value-that-must-not-leak";

fn m2mtoken(issuer: &str, method: ClientAuthMethod) -> M2MToken {
    let mut t = M2MToken::new(
        "payments",
        M2MTokenSpec {
            issuer: issuer.into(),
            token_endpoint: None,
            jwks_uri: None,
            audience: "api://payments".into(),
            scopes: vec![".all".into()],
            client_id: "app_payments".into(),
            client_auth: ClientAuth {
                method,
                secret_ref: Some(SecretKeyRef {
                    name: "creds".into(),
                    key: "value".into(),
                }),
                federated_credential_name: None,
                service_account: None,
            },
            secret_name: None,
            role_arn: None,
            oidc_provider_arn: None,
            max_token_age: "12h".into(),
        },
    );
    if method == ClientAuthMethod::FederatedOidc {
        let auth = &mut t.spec.client_auth;
        auth.secret_ref = None;
        auth.federated_credential_name = Some("k8s".into());
        auth.service_account = Some(ServiceAccountAssertion {
            name: "payments".into(),
            audience: "idaas".into(),
            expiration_seconds: 600,
        });
    }
    t.metadata.namespace = Some("shop".into());
    t.metadata.uid = Some("5d1c1e52-7a0e-4c4e-9a55-0d6f5e0c0009".into());
    t.metadata.generation = Some(1);
    t
}

#[test]
fn nothing_secret_reaches_the_log_at_trace() {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    install_provider();
    let (private_pem, public_pem) = generate_client_key();

    let written_tokens: Arc<Mutex<Vec<String>>> = Arc::default();
    let assertions: Arc<Mutex<Vec<String>>> = Arc::default();
    let cluster = Arc::new(OidcIssuer::new("https://kubernetes.default.svc"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let emu = IdaasEmulator::start(EmulatorConfig {
            client_id: "app_payments".into(),
            client_secret: SECRET.into(),
            audience: "api://payments".into(),
            scopes_granted: vec![".all".into()],
            token_lifetime: Duration::from_secs(3600),
            client_public_key_pem: Some(public_pem.clone()),
            federated_credentials: vec![cluster.trusted_as("k8s", "idaas", "system:serviceaccount:shop:payments")],
        })
        .await
        .unwrap();

        for method in [
            ClientAuthMethod::ClientSecretPost,
            ClientAuthMethod::ClientSecretBasic,
            ClientAuthMethod::PrivateKeyJwt,
            ClientAuthMethod::FederatedOidc,
        ] {
            let credential = if method == ClientAuthMethod::PrivateKeyJwt {
                private_pem.clone()
            } else {
                SECRET.to_owned()
            };
            let tokens = written_tokens.clone();
            let (cluster, issued) = (cluster.clone(), assertions.clone());
            let client = fake_kube(move |method, path, sent| {
                match *method {
                    Method::POST if path.ends_with("/serviceaccounts/payments/token") => {
                        let sa_token = cluster.token(
                            "system:serviceaccount:shop:payments",
                            "idaas",
                            Duration::from_secs(600),
                        );
                        issued.lock().unwrap().push(sa_token.clone());
                        (
                            StatusCode::CREATED,
                            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                "spec": {"audiences": ["idaas"]}, "status": {"token": sa_token,
                                "expirationTimestamp": "2026-12-01T00:10:00Z"}}),
                        )
                    }
                    Method::GET if path.ends_with("/secrets/creds") => (
                        StatusCode::OK,
                        json!({"apiVersion": "v1", "kind": "Secret",
                            "metadata": {"name": "creds", "namespace": "shop", "resourceVersion": "1",
                                "labels": {"idaas-projector.io/client-credentials": "true"}},
                            "data": {"value": base64::engine::general_purpose::STANDARD.encode(&credential)}}),
                    ),
                    Method::GET => (
                        StatusCode::NOT_FOUND,
                        not_found(),
                    ),
                    Method::PATCH if path.ends_with("/status") => {
                        let mut t = serde_json::to_value(m2mtoken("https://x", ClientAuthMethod::ClientSecretPost)).unwrap();
                        t["status"] = sent["status"].clone();
                        (StatusCode::OK, t)
                    }
                    // The managed Secret is created (none was found).
                    Method::POST if path.ends_with("/secrets") => {
                        let b64 = sent["data"]["token"].as_str().unwrap_or_default();
                        let token = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
                        tokens.lock().unwrap().push(String::from_utf8(token).unwrap());
                        (StatusCode::OK, sent)
                    }
                    _ => (StatusCode::OK, sent),
                }
            });
            let ctx = Arc::new(reconcile_context(
                client,
                IdaasClient::new(&testing::http_config(&emu)).unwrap(),
                4,
            ));
            reconcile(Arc::new(m2mtoken(&emu.issuer(), method)), ctx.clone())
                .await
                .unwrap();
            // A failing refresh logs its error too.
            emu.push_fault(Fault::WrongAudience);
            let mut t = m2mtoken(&emu.issuer(), method);
            t.metadata.uid = Some("5d1c1e52-7a0e-4c4e-9a55-0d6f5e0c0010".into());
            reconcile(Arc::new(t), ctx).await.unwrap();
        }
    });

    let tokens = written_tokens.lock().unwrap().clone();
    assert_eq!(tokens.len(), 4, "four refreshes wrote a token");
    let assertions = assertions.lock().unwrap().clone();
    assert_eq!(
        assertions.len(),
        2,
        "a ServiceAccount token for each federated refresh"
    );
    let log = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    assert!(
        log.contains("token refreshed"),
        "the log was captured: {log}"
    );
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "lower levels were captured"
    );
    for token in tokens.iter().chain(&assertions) {
        for part in token.split('.').filter(|p| p.len() > 16) {
            assert!(!log.contains(part), "a token part reached the log");
        }
    }
    assert!(!log.contains(SECRET), "the client secret reached the log");
    assert!(
        !log.contains(&base64::engine::general_purpose::STANDARD.encode(SECRET)),
        "the base64 client secret reached the log"
    );
    for line in private_pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!log.contains(line), "the private key reached the log");
    }
    assert!(!log.contains("PRIVATE KEY"));
}
