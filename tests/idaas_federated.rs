//! Client authentication with an IDaaS application federated credential (`federated_oidc`): the
//! client sends an OIDC token (a ServiceAccount token) as the assertion and no secret; the
//! emulator accepts it only from the trusted issuer, for the credential's audience and subject,
//! unexpired, with a valid signature.

use std::time::Duration;

use idaas_projector::emulator::idaas::{EmulatorConfig, IdaasEmulator, OidcIssuer};
use idaas_projector::idaas::{
    Assertion, Credential, FetchError, IdaasClient, RefreshError, TokenRequest,
};
use idaas_projector::testing;
use idaas_projector::time::unix_now;
use serde_json::json;

const ISSUER: &str = "https://oidc.example.com/clusters/c1";
const AUDIENCE: &str = "idaas-federation";
const SUBJECT: &str = "system:serviceaccount:shop:payments";
const CREDENTIAL: &str = "k8s-shop-payments";

async fn emulator(trusted: &OidcIssuer) -> IdaasEmulator {
    testing::install_provider();
    IdaasEmulator::start(EmulatorConfig {
        client_id: "app_federated".into(),
        audience: "api://payments".into(),
        federated_credentials: vec![trusted.trusted_as(CREDENTIAL, AUDIENCE, SUBJECT)],
        ..EmulatorConfig::default()
    })
    .await
    .unwrap()
}

fn request(emu: &IdaasEmulator, credential_name: &str, assertion: String) -> TokenRequest {
    emu.token_request(Credential::FederatedOidc {
        credential_name: credential_name.into(),
        assertion: Assertion::Token(assertion.into()),
    })
}

/// The OAuth error IDaaS answered (the reason), and the message that carries its description.
async fn refused(emu: &IdaasEmulator, req: &TokenRequest) -> (String, String) {
    let client = IdaasClient::new(&testing::http_config(emu)).unwrap();
    match client.fetch_token(req, unix_now()).await {
        Err(RefreshError::Fetch(FetchError {
            reason, message, ..
        })) => (reason, message),
        other => panic!("expected an OAuth error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_service_account_token_from_the_trusted_issuer_gets_a_token() {
    let trusted = OidcIssuer::new(ISSUER);
    let emu = emulator(&trusted).await;
    let client = IdaasClient::new(&testing::http_config(&emu)).unwrap();
    let assertion = trusted.token(SUBJECT, AUDIENCE, Duration::from_secs(600));
    let token = client
        .fetch_token(&request(&emu, CREDENTIAL, assertion), unix_now())
        .await
        .expect("the federated credential authenticates the application");
    assert_eq!(token.claims.iss, emu.issuer());
    assert_eq!(token.claims.sub.as_deref(), Some("app_federated"));
    assert_eq!(emu.issued_tokens(), 1);
}

#[tokio::test]
async fn each_broken_assertion_is_refused_with_its_reason() {
    let trusted = OidcIssuer::new(ISSUER);
    let emu = emulator(&trusted).await;
    let now = unix_now();
    let claims = |sub: &str, aud: &str, exp: i64| json!({"iss": ISSUER, "sub": sub, "aud": [aud], "iat": now - 1200, "exp": exp});
    let impostor = OidcIssuer::new(ISSUER);
    let cases = [
        (
            "wrong audience",
            trusted.sign(&claims(SUBJECT, "sts.aliyuncs.com", now + 600)),
            "audience",
        ),
        (
            "wrong subject",
            trusted.sign(&claims(
                "system:serviceaccount:shop:other",
                AUDIENCE,
                now + 600,
            )),
            "subject",
        ),
        (
            "expired",
            trusted.sign(&claims(SUBJECT, AUDIENCE, now - 600)),
            "expired",
        ),
        (
            "another key",
            {
                // Same issuer URL and kid, another key: the signature does not verify.
                let forged = impostor.sign(&claims(SUBJECT, AUDIENCE, now + 600));
                let kid_of = |t: &str| jsonwebtoken::decode_header(t).unwrap().kid.unwrap();
                let (h, rest) = forged.split_once('.').unwrap();
                let mut header: serde_json::Value = serde_json::from_slice(
                    &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, h)
                        .unwrap(),
                )
                .unwrap();
                header["kid"] = json!(kid_of(&trusted.token(
                    SUBJECT,
                    AUDIENCE,
                    Duration::from_secs(60)
                )));
                let h = base64::Engine::encode(
                    &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                    serde_json::to_vec(&header).unwrap(),
                );
                format!("{h}.{rest}")
            },
            "signature",
        ),
        (
            "unknown key",
            impostor.token(SUBJECT, AUDIENCE, Duration::from_secs(600)),
            "key the issuer does not publish",
        ),
    ];
    for (what, assertion, reason) in cases {
        let (error, description) = refused(&emu, &request(&emu, CREDENTIAL, assertion)).await;
        assert_eq!(error, "invalid_client", "{what}");
        assert!(description.contains(reason), "{what}: {description}");
    }
    let good = trusted.token(SUBJECT, AUDIENCE, Duration::from_secs(600));
    let (error, description) = refused(&emu, &request(&emu, "no-such-credential", good)).await;
    assert_eq!(error, "invalid_client");
    assert!(
        description.contains("no such application federated credential"),
        "{description}"
    );
    assert_eq!(emu.issued_tokens(), 0, "no token was issued");
}

#[tokio::test]
async fn an_assertion_file_is_read_again_before_every_request() {
    let trusted = OidcIssuer::new(ISSUER);
    let emu = emulator(&trusted).await;
    let client = IdaasClient::new(&testing::http_config(&emu)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    let mut req = request(&emu, CREDENTIAL, String::new());
    req.credential = Credential::FederatedOidc {
        credential_name: CREDENTIAL.into(),
        assertion: Assertion::File(file.clone()),
    };

    // Not written yet: transient, so the caller retries.
    let e = match client.fetch_token(&req, unix_now()).await {
        Err(RefreshError::Fetch(e)) => e,
        other => panic!("{other:?}"),
    };
    assert_eq!(e.reason, "assertion_file");
    assert_eq!(e.class, idaas_projector::idaas::ErrorClass::Transient);
    assert!(
        e.message.contains(&file.display().to_string()),
        "{}",
        e.message
    );
    assert_eq!(emu.token_requests(), 0, "nothing was sent");

    // An expired token in the file is refused; the agent's next write is used.
    let now = unix_now();
    let expired = trusted.sign(&json!({"iss": ISSUER, "sub": SUBJECT, "aud": AUDIENCE,
                                      "iat": now - 700, "exp": now - 100}));
    std::fs::write(&file, expired).unwrap();
    assert!(client.fetch_token(&req, unix_now()).await.is_err());
    let fresh = trusted.token(SUBJECT, AUDIENCE, Duration::from_secs(600));
    std::fs::write(&file, format!("{fresh}\n")).unwrap();
    client
        .fetch_token(&req, unix_now())
        .await
        .expect("the file's new token authenticates");
}
