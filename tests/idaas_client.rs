//! The IDaaS client against the in-process IDaaS emulator: the three client authentication
//! methods, discovery and its fallback, every emulated fault, JWKS key rotation, and redaction
//! of secrets in logs, errors and `Debug`.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use idaas_projector::emulator::idaas::{
    EmulatorConfig, Fault, ISSUER_PATH, IdaasEmulator, WRONG_AUDIENCE, generate_client_key,
};
use idaas_projector::idaas::client::Endpoints;
use idaas_projector::idaas::{
    AllowedOrigins, CheckError, Credential, ErrorClass, FetchError, FetchedToken, HttpConfig,
    IdaasClient, RefreshError, TokenRequest,
};
use idaas_projector::ram::Expectations;
use idaas_projector::testing;
use idaas_projector::time::unix_now;
use secrecy::{ExposeSecret, SecretString};

const SECRET: &str = "s3cr3t:with/odd+chars%and spaces";

fn config() -> EmulatorConfig {
    EmulatorConfig {
        client_id: "app_test".into(),
        client_secret: SECRET.into(),
        audience: "api://payments".into(),
        ..EmulatorConfig::default()
    }
}

/// A client that may send requests to `emu` only.
fn client(emu: &IdaasEmulator) -> IdaasClient {
    IdaasClient::new(&testing::http_config(emu)).unwrap()
}

/// A client that may send requests to these origins only.
fn client_allowing(origins: &str) -> IdaasClient {
    IdaasClient::new(&HttpConfig {
        allowed: AllowedOrigins::parse(origins).unwrap(),
        ..HttpConfig::default()
    })
    .unwrap()
}

fn post(emu: &IdaasEmulator) -> TokenRequest {
    request(
        emu,
        Credential::ClientSecretPost {
            client_secret: SECRET.into(),
        },
    )
}

fn request(emu: &IdaasEmulator, credential: Credential) -> TokenRequest {
    emu.token_request(credential)
}

fn fetch_error(r: Result<FetchedToken, RefreshError>) -> FetchError {
    match r {
        Err(RefreshError::Fetch(e)) => e,
        other => panic!("expected a fetch error, got {other:?}"),
    }
}

fn rejection(r: Result<FetchedToken, RefreshError>) -> CheckError {
    match r {
        Err(RefreshError::Rejected(e)) => e,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn assert_good(emu: &IdaasEmulator, t: &FetchedToken) {
    let c = &t.claims;
    assert_eq!(c.iss, emu.issuer());
    assert_eq!(c.aud, vec![emu.config().audience.clone()]);
    assert_eq!(c.sub.as_deref(), Some(emu.config().client_id.as_str()));
    assert_eq!(c.alg, "RS256");
    assert_eq!(c.kid.as_deref(), Some(emu.current_kid().as_str()));
    assert!(c.exp > unix_now() && c.iat <= unix_now() + 1);
    assert_eq!(t.token.expose_secret().split('.').count(), 3);
}

/// The start of anything that looks like a compact JWT: base64url `{"` then two dots within a
/// run of base64url characters.
fn jwt_in(text: &str) -> Option<&str> {
    let jwt_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    text.match_indices("eyJ").find_map(|(i, _)| {
        let run = &text[i..];
        let end = run.find(|c| !jwt_char(c)).unwrap_or(run.len());
        (run[..end].matches('.').count() >= 2).then(|| &run[..end.min(40)])
    })
}

/// PKCS#8 "PRIVATE KEY" PEM -> PKCS#1 "RSA PRIVATE KEY" PEM (the inner OCTET STRING).
fn pkcs1_pem(pkcs8_pem: &str) -> String {
    fn tlv(d: &[u8]) -> (u8, &[u8], &[u8]) {
        let (tag, first) = (d[0], d[1] as usize);
        let (len, at) = if first < 0x80 {
            (first, 2)
        } else {
            let n = first & 0x7f;
            (
                d[2..2 + n]
                    .iter()
                    .fold(0usize, |a, b| (a << 8) | *b as usize),
                2 + n,
            )
        };
        (tag, &d[at..at + len], &d[at + len..])
    }
    let body: String = pkcs8_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = STANDARD.decode(body).unwrap();
    let (_, seq, _) = tlv(&der);
    let (_, _version, rest) = tlv(seq);
    let (_, _alg, rest) = tlv(rest);
    let (tag, pkcs1, _) = tlv(rest);
    assert_eq!(tag, 0x04);
    let b64 = STANDARD.encode(pkcs1);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN RSA PRIVATE KEY-----\n{}\n-----END RSA PRIVATE KEY-----\n",
        lines.join("\n")
    )
}

#[tokio::test]
async fn client_secret_post_with_discovery_and_caches() {
    let emu = IdaasEmulator::start(config()).await.unwrap();
    let c = client(&emu);
    let t = c.fetch_token(&post(&emu), unix_now()).await.unwrap();
    assert_good(&emu, &t);
    assert_eq!(
        (
            emu.discovery_requests(),
            emu.jwks_requests(),
            emu.token_requests(),
            emu.issued_tokens()
        ),
        (1, 1, 1, 1)
    );
    // A clone shares the discovery and JWKS caches.
    let t2 = c
        .clone()
        .fetch_token(&post(&emu), unix_now())
        .await
        .unwrap();
    assert_good(&emu, &t2);
    assert_ne!(t.token.expose_secret(), t2.token.expose_secret());
    assert_eq!(
        (
            emu.discovery_requests(),
            emu.jwks_requests(),
            emu.token_requests()
        ),
        (1, 1, 2)
    );
}

#[tokio::test]
async fn client_secret_basic() {
    let emu = IdaasEmulator::start(config()).await.unwrap();
    let req = request(
        &emu,
        Credential::ClientSecretBasic {
            client_secret: SECRET.into(),
        },
    );
    let t = client(&emu).fetch_token(&req, unix_now()).await.unwrap();
    assert_good(&emu, &t);

    let wrong = request(
        &emu,
        Credential::ClientSecretBasic {
            client_secret: "wrong".into(),
        },
    );
    let e = fetch_error(client(&emu).fetch_token(&wrong, unix_now()).await);
    assert_eq!(
        (e.class, e.reason.as_str()),
        (ErrorClass::Permanent, "invalid_client")
    );
}

#[tokio::test]
async fn private_key_jwt_pkcs8_and_pkcs1() {
    let (private, public) = generate_client_key();
    let emu = IdaasEmulator::start(EmulatorConfig {
        client_public_key_pem: Some(public),
        ..config()
    })
    .await
    .unwrap();
    let c = client(&emu);
    for pem in [private.clone(), pkcs1_pem(&private)] {
        let req = request(
            &emu,
            Credential::PrivateKeyJwt {
                private_key_pem: pem.into(),
            },
        );
        let t = c.fetch_token(&req, unix_now()).await.unwrap();
        assert_good(&emu, &t);
    }
    assert_eq!(emu.issued_tokens(), 2);

    // Another client's key: the emulator refuses the assertion.
    let (other, _) = generate_client_key();
    let req = request(
        &emu,
        Credential::PrivateKeyJwt {
            private_key_pem: other.into(),
        },
    );
    let e = fetch_error(c.fetch_token(&req, unix_now()).await);
    assert_eq!(
        (e.class, e.reason.as_str()),
        (ErrorClass::Permanent, "invalid_client")
    );
}

#[tokio::test]
async fn private_key_jwt_bad_key_is_permanent_and_sends_nothing() {
    let emu = IdaasEmulator::start(config()).await.unwrap();
    let (private, _) = generate_client_key();
    let lines: Vec<&str> = private.lines().collect();
    let truncated = format!(
        "{}\n{}\n{}\n",
        lines[0],
        lines[1..lines.len() / 2].join("\n"),
        lines[lines.len() - 1]
    );
    for pem in [truncated, "not a PEM".to_owned(), generate_client_key().1] {
        let req = request(
            &emu,
            Credential::PrivateKeyJwt {
                private_key_pem: pem.clone().into(),
            },
        );
        let e = fetch_error(client(&emu).fetch_token(&req, unix_now()).await);
        assert_eq!(
            (e.class, e.reason.as_str()),
            (ErrorClass::Permanent, "invalid_private_key")
        );
        let shown = format!("{e} {e:?}");
        for line in pem
            .lines()
            .filter(|l| l.len() > 8 && !l.starts_with("-----"))
        {
            assert!(!shown.contains(line), "{shown}");
        }
    }
    assert_eq!(emu.token_requests(), 0);
}

#[tokio::test]
async fn private_key_jwt_refused_when_not_configured() {
    let emu = IdaasEmulator::start(config()).await.unwrap();
    let req = request(
        &emu,
        Credential::PrivateKeyJwt {
            private_key_pem: generate_client_key().0.into(),
        },
    );
    let e = fetch_error(client(&emu).fetch_token(&req, unix_now()).await);
    assert_eq!(e.reason, "invalid_client");
}

#[tokio::test]
async fn wrong_secret_is_permanent_invalid_client() {
    let emu = IdaasEmulator::start(config()).await.unwrap();
    let req = request(
        &emu,
        Credential::ClientSecretPost {
            client_secret: "nope".into(),
        },
    );
    let e = fetch_error(client(&emu).fetch_token(&req, unix_now()).await);
    assert_eq!(
        (e.class, e.reason.as_str()),
        (ErrorClass::Permanent, "invalid_client")
    );
    assert!(e.request_id.is_some());
    assert!(e.message.contains(&emu.token_endpoint()), "{}", e.message);
    assert!(!e.message.contains('\n'));
}

#[tokio::test]
async fn scope_not_granted_is_permanent_invalid_scope() {
    let emu = IdaasEmulator::start(EmulatorConfig {
        scopes_granted: vec!["read".into()],
        ..config()
    })
    .await
    .unwrap();
    let mut req = post(&emu);
    req.scopes = vec!["read".into()];
    client(&emu).fetch_token(&req, unix_now()).await.unwrap();
    req.scopes = vec!["read".into(), "write".into()];
    let e = fetch_error(client(&emu).fetch_token(&req, unix_now()).await);
    assert_eq!(
        (e.class, e.reason.as_str()),
        (ErrorClass::Permanent, "invalid_scope")
    );
}

#[tokio::test]
async fn discovery_not_served_falls_back_to_issuer_token_and_jwks() {
    let emu = IdaasEmulator::start(config()).await.unwrap();
    emu.set_serve_discovery(false);
    let c = client(&emu);
    let issuer = emu.issuer();
    assert_eq!(
        c.endpoints(&format!("{issuer}/"), None, None)
            .await
            .unwrap(),
        Endpoints {
            token_endpoint: format!("{issuer}/token"),
            jwks_uri: Some(format!("{issuer}/jwks")),
        }
    );
    let t = c.fetch_token(&post(&emu), unix_now()).await.unwrap();
    assert_good(&emu, &t);
    assert_eq!((emu.discovery_requests(), emu.jwks_requests()), (2, 1));
    // The fallback is cached like a discovery answer.
    c.fetch_token(&post(&emu), unix_now()).await.unwrap();
    assert_eq!(emu.discovery_requests(), 2);
}

#[tokio::test]
async fn discovery_on_an_unknown_path_falls_back() {
    // The emulator answers 404 (no JSON) for paths outside its issuer.
    let emu = IdaasEmulator::start(config()).await.unwrap();
    let other = format!("http://{}/elsewhere", emu.addr());
    let e = client(&emu).endpoints(&other, None, None).await.unwrap();
    assert_eq!(e.token_endpoint, format!("{other}/token"));
    assert_eq!(e.jwks_uri, Some(format!("{other}/jwks")));
}

#[tokio::test]
async fn discovery_answer_is_used() {
    let emu = IdaasEmulator::start(config()).await.unwrap();
    let e = client(&emu)
        .endpoints(&emu.issuer(), None, None)
        .await
        .unwrap();
    assert_eq!(e.token_endpoint, emu.token_endpoint());
    assert_eq!(e.jwks_uri, Some(emu.jwks_uri()));
    // A partial override takes the rest from discovery.
    let e = client(&emu)
        .endpoints(&emu.issuer(), Some("http://127.0.0.1:1/t"), None)
        .await
        .unwrap();
    assert_eq!(e.token_endpoint, "http://127.0.0.1:1/t");
    assert_eq!(e.jwks_uri, Some(emu.jwks_uri()));
}

#[tokio::test]
async fn overrides_skip_discovery() {
    let emu = IdaasEmulator::start(config()).await.unwrap();
    let mut req = post(&emu);
    req.token_endpoint = Some(emu.token_endpoint());
    req.jwks_uri = Some(emu.jwks_uri());
    let t = client(&emu).fetch_token(&req, unix_now()).await.unwrap();
    assert_good(&emu, &t);
    assert_eq!((emu.discovery_requests(), emu.jwks_requests()), (0, 1));
    // Empty strings (the CRD's defaults) count as unset.
    req.token_endpoint = Some(String::new());
    req.jwks_uri = Some(String::new());
    client(&emu).fetch_token(&req, unix_now()).await.unwrap();
    assert_eq!(emu.discovery_requests(), 1);
}

/// A local port with nothing listening.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn connection_refused_is_transient_connect() {
    let port = closed_port();
    let issuer = format!("http://127.0.0.1:{port}/oauth2");
    let e = client_allowing(&format!("http://127.0.0.1:{port}"))
        .endpoints(&issuer, None, None)
        .await
        .unwrap_err();
    assert_eq!(
        (e.class, e.reason.as_str()),
        (ErrorClass::Transient, "connect")
    );
    assert!(e.message.contains(&issuer), "{}", e.message);

    let emu = IdaasEmulator::start(config()).await.unwrap();
    let mut req = post(&emu);
    let port = closed_port();
    req.token_endpoint = Some(format!("http://127.0.0.1:{port}/token"));
    let c = client_allowing(&format!("{},http://127.0.0.1:{port}", emu.origin()));
    let e = fetch_error(c.fetch_token(&req, unix_now()).await);
    assert_eq!(
        (e.class, e.reason.as_str()),
        (ErrorClass::Transient, "connect")
    );
}

#[tokio::test]
async fn jwks_unreachable_is_transient_jwks_unavailable() {
    let emu = IdaasEmulator::start(config()).await.unwrap();
    let mut req = post(&emu);
    let port = closed_port();
    req.jwks_uri = Some(format!("http://127.0.0.1:{port}/jwks"));
    let c = client_allowing(&format!("{},http://127.0.0.1:{port}", emu.origin()));
    let e = fetch_error(c.fetch_token(&req, unix_now()).await);
    assert_eq!(
        (e.class, e.reason.as_str()),
        (ErrorClass::Transient, "JWKSUnavailable")
    );
    assert!(e.message.contains("cannot connect"), "{}", e.message);
}

#[tokio::test]
async fn jwks_not_served_fails_closed() {
    let emu = IdaasEmulator::start(config()).await.unwrap();
    emu.set_serve_jwks(false);
    let c = client(&emu);
    let e = c.jwks(&emu.jwks_uri()).await.unwrap_err();
    assert_eq!(
        (e.class, e.reason.as_str()),
        (ErrorClass::Transient, "JWKSUnavailable")
    );
    assert!(e.message.contains("HTTP 404"), "{}", e.message);
    // The token is not handed out unchecked, and a 404 is not cached: each refresh asks again.
    for _ in 0..2 {
        let e = fetch_error(c.fetch_token(&post(&emu), unix_now()).await);
        assert_eq!(
            (e.class, e.reason.as_str()),
            (ErrorClass::Transient, "JWKSUnavailable")
        );
    }
    assert_eq!(emu.jwks_requests(), 3);
    // Once the JWKS is back, the next refresh succeeds.
    emu.set_serve_jwks(true);
    let t = c.fetch_token(&post(&emu), unix_now()).await.unwrap();
    assert_good(&emu, &t);
}

#[tokio::test]
async fn an_issuer_not_allowed_gets_no_request() {
    let emu = IdaasEmulator::start(config()).await.unwrap();
    // The default list (https://*.aliyunidaas.com) does not allow the emulator.
    let c = IdaasClient::new(&HttpConfig::default()).unwrap();
    let e = fetch_error(c.fetch_token(&post(&emu), unix_now()).await);
    assert_eq!(
        (e.class, e.reason.as_str()),
        (ErrorClass::Permanent, "IssuerNotAllowed")
    );
    assert!(e.message.contains(&emu.issuer()), "{}", e.message);
    assert!(e.message.contains("--allowed-issuers"), "{}", e.message);
    // Another port of the same host is another origin.
    let other = client_allowing(&format!("http://127.0.0.1:{}", closed_port()));
    let e = fetch_error(other.fetch_token(&post(&emu), unix_now()).await);
    assert_eq!(e.reason, "IssuerNotAllowed");
    assert_eq!(emu.requests(), (0, 0, 0), "discovery, token, JWKS calls");
}

#[tokio::test]
async fn endpoints_not_allowed_get_no_request() {
    let emu = IdaasEmulator::start(config()).await.unwrap();
    let c = client(&emu);
    // The same emulator named as localhost is another origin.
    let foreign = emu.origin().replace("127.0.0.1", "localhost");
    let mut req = post(&emu);
    req.token_endpoint = Some(format!("{foreign}{ISSUER_PATH}/token"));
    let e = fetch_error(c.fetch_token(&req, unix_now()).await);
    assert_eq!(
        (e.class, e.reason.as_str()),
        (ErrorClass::Permanent, "EndpointNotAllowed")
    );
    assert!(e.message.contains("localhost"), "{}", e.message);
    let mut req = post(&emu);
    req.jwks_uri = Some(format!("{foreign}{ISSUER_PATH}/jwks"));
    let e = fetch_error(c.fetch_token(&req, unix_now()).await);
    assert_eq!(e.reason, "EndpointNotAllowed");
    // Checked before anything is sent: not even the token request with the allowed endpoint.
    assert_eq!((emu.token_requests(), emu.jwks_requests()), (0, 0));
    let e = c.jwks(&req.jwks_uri.clone().unwrap()).await.unwrap_err();
    assert_eq!(e.reason, "EndpointNotAllowed");
    assert_eq!(emu.jwks_requests(), 0);
}

#[tokio::test]
async fn a_discovered_endpoint_on_another_origin_gets_no_request() {
    let emu = IdaasEmulator::start(config()).await.unwrap();
    let foreign = emu.origin().replace("127.0.0.1", "localhost");
    emu.set_advertised_token_endpoint(Some(format!("{foreign}{ISSUER_PATH}/token")));
    let c = client(&emu);
    let e = fetch_error(c.fetch_token(&post(&emu), unix_now()).await);
    assert_eq!(
        (e.class, e.reason.as_str()),
        (ErrorClass::Permanent, "EndpointNotAllowed")
    );
    assert!(e.message.contains("localhost"), "{}", e.message);
    // Discovery was read; the token request (which would reach this emulator) was never sent.
    assert_eq!((emu.discovery_requests(), emu.token_requests()), (1, 0));
}

#[tokio::test]
async fn server_errors_are_transient() {
    let emu = IdaasEmulator::start(config()).await.unwrap();
    let c = client(&emu);
    for (status, code) in [
        (503, "ServiceUnavailable"),
        (500, "InternalError"),
        (502, "BadGateway"),
    ] {
        emu.push_fault(Fault::Status(status));
        let e = fetch_error(c.fetch_token(&post(&emu), unix_now()).await);
        // The reason (a metric label) is the status; the IDaaS code is in the message.
        assert_eq!(
            (e.class, e.reason.as_str()),
            (ErrorClass::Transient, format!("http_{status}").as_str())
        );
        assert!(e.message.contains(code), "{}", e.message);
        assert!(e.request_id.is_some());
        assert!(
            e.message.contains(&format!("HTTP {status}")),
            "{}",
            e.message
        );
    }
    // Each fault is consumed by one request.
    assert_eq!(emu.pending_faults(), 0);
    c.fetch_token(&post(&emu), unix_now()).await.unwrap();
}

#[tokio::test]
async fn slow_answers_time_out_as_transient() {
    let emu = IdaasEmulator::start(config()).await.unwrap();
    let c = IdaasClient::new(&HttpConfig {
        timeout: Duration::from_millis(300),
        ..testing::http_config(&emu)
    })
    .unwrap();
    c.endpoints(&emu.issuer(), None, None).await.unwrap();
    emu.push_fault(Fault::Delay(Duration::from_secs(2)));
    let e = fetch_error(c.fetch_token(&post(&emu), unix_now()).await);
    assert_eq!(
        (e.class, e.reason.as_str()),
        (ErrorClass::Transient, "timeout")
    );

    // A delay within the timeout is just slow.
    emu.push_fault(Fault::Delay(Duration::from_millis(50)));
    c.fetch_token(&post(&emu), unix_now()).await.unwrap();

    emu.set_latency(Duration::from_secs(2));
    let e = fetch_error(c.fetch_token(&post(&emu), unix_now()).await);
    assert_eq!(e.reason, "timeout");
    emu.set_latency(Duration::ZERO);
    c.fetch_token(&post(&emu), unix_now()).await.unwrap();
}

#[tokio::test]
async fn garbage_json_is_transient_bad_response() {
    let emu = IdaasEmulator::start(config()).await.unwrap();
    emu.push_fault(Fault::GarbageJson);
    let e = fetch_error(client(&emu).fetch_token(&post(&emu), unix_now()).await);
    assert_eq!(
        (e.class, e.reason.as_str()),
        (ErrorClass::Transient, "bad_response")
    );
    assert_eq!(jwt_in(&e.message), None);
}

#[tokio::test]
async fn too_many_requests_carries_retry_after() {
    let emu = IdaasEmulator::start(config()).await.unwrap();
    emu.push_fault(Fault::TooManyRequests {
        retry_after_secs: 7,
    });
    let e = fetch_error(client(&emu).fetch_token(&post(&emu), unix_now()).await);
    assert_eq!(
        (e.class, e.reason.as_str()),
        (ErrorClass::Transient, "http_429")
    );
    assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
}

#[tokio::test]
async fn oauth_errors_are_permanent() {
    let emu = IdaasEmulator::start(config()).await.unwrap();
    let c = client(&emu);
    for (status, error) in [
        (401, "invalid_client"),
        (400, "invalid_scope"),
        (400, "unauthorized_client"),
        (400, "invalid_grant"),
    ] {
        emu.push_fault(Fault::OAuthError {
            status,
            error: error.into(),
        });
        let e = fetch_error(c.fetch_token(&post(&emu), unix_now()).await);
        assert_eq!((e.class, e.reason.as_str()), (ErrorClass::Permanent, error));
    }
    emu.push_fault(Fault::OAuthError {
        status: 400,
        error: "temporarily_unavailable".into(),
    });
    let e = fetch_error(c.fetch_token(&post(&emu), unix_now()).await);
    assert_eq!(e.class, ErrorClass::Transient);
}

#[tokio::test]
async fn bad_tokens_are_rejected_with_ram_codes() {
    let emu = IdaasEmulator::start(config()).await.unwrap();
    let c = client(&emu);

    emu.push_fault(Fault::Hs256Token);
    let e = rejection(c.fetch_token(&post(&emu), unix_now()).await);
    assert_eq!(e, CheckError::SymmetricAlgorithm("HS256".into()));
    assert_eq!(e.ram_code(), "AuthenticationFail.OIDCToken.Invalid");

    emu.push_fault(Fault::WrongAudience);
    let e = rejection(c.fetch_token(&post(&emu), unix_now()).await);
    assert_eq!(
        e,
        CheckError::AudienceNotMatch {
            got: vec![WRONG_AUDIENCE.into()],
            want: "api://payments".into()
        }
    );

    emu.push_fault(Fault::AlreadyExpired);
    let e = rejection(c.fetch_token(&post(&emu), unix_now()).await);
    assert!(matches!(e, CheckError::Expired { .. }), "{e:?}");
    assert_eq!(e.ram_code(), "AuthenticationFail.OIDCToken.Expired");

    emu.push_fault(Fault::IssuedInPast(Duration::from_secs(13 * 3600)));
    let e = rejection(c.fetch_token(&post(&emu), unix_now()).await);
    assert!(
        matches!(e, CheckError::IssuedTooLongAgo { limit_secs, .. } if limit_secs == 12 * 3600),
        "{e:?}"
    );
    assert_eq!(
        e.ram_code(),
        "AuthenticationFail.OIDCToken.IssueTimeInvalid"
    );

    // Within the limit it is fine.
    emu.push_fault(Fault::IssuedInPast(Duration::from_secs(3600)));
    let t = c.fetch_token(&post(&emu), unix_now()).await.unwrap();
    assert!(t.claims.iat <= unix_now() - 3599);

    // A wrong issuer expectation.
    let mut req = post(&emu);
    req.token_endpoint = Some(emu.token_endpoint());
    req.issuer = format!("{}/", emu.issuer());
    let e = rejection(c.fetch_token(&req, unix_now()).await);
    assert!(matches!(e, CheckError::IssuerNotMatch { .. }), "{e:?}");
    assert_eq!(emu.issued_tokens(), 6);
}

#[tokio::test]
async fn token_lifetime_is_configurable() {
    let emu = IdaasEmulator::start(config()).await.unwrap();
    emu.set_token_lifetime(Duration::from_secs(120));
    let t = client(&emu)
        .fetch_token(&post(&emu), unix_now())
        .await
        .unwrap();
    assert_eq!(t.claims.exp - t.claims.iat, 120);
    let r = client(&emu).request_token(&post(&emu)).await.unwrap();
    assert_eq!(r.token_type.as_deref(), Some("Bearer"));
    assert_eq!(r.expires_in, Some(120));
}

#[tokio::test]
async fn key_rotation_refetches_the_jwks_at_most_once_a_minute() {
    let emu = IdaasEmulator::start(config()).await.unwrap();
    let c = client(&emu);
    c.fetch_token(&post(&emu), unix_now()).await.unwrap();
    assert_eq!(emu.jwks_requests(), 1);

    // An unknown kid refetches the JWKS once.
    emu.rotate_signing_key();
    let t = c.fetch_token(&post(&emu), unix_now()).await.unwrap();
    assert_good(&emu, &t);
    assert_eq!(emu.jwks_requests(), 2);
    // A known kid uses the cache.
    c.fetch_token(&post(&emu), unix_now()).await.unwrap();
    assert_eq!(emu.jwks_requests(), 2);
    // A second unknown kid within the minute: no new fetch, the token is rejected.
    emu.rotate_signing_key();
    let e = rejection(c.fetch_token(&post(&emu), unix_now()).await);
    assert_eq!(e, CheckError::UnknownKey(Some(emu.current_kid())));
    assert_eq!(
        e.ram_code(),
        "AuthenticationFail.OIDCToken.InvalidSignature"
    );
    assert_eq!(emu.jwks_requests(), 2);
    // Another client (its own cache) accepts it.
    client(&emu)
        .fetch_token(&post(&emu), unix_now())
        .await
        .unwrap();
}

#[tokio::test]
async fn verify_checks_a_token_like_fetch() {
    let emu = IdaasEmulator::start(config()).await.unwrap();
    let c = client(&emu);
    let t = c.fetch_token(&post(&emu), unix_now()).await.unwrap();
    let expect = Expectations {
        issuer: emu.issuer(),
        audiences: vec!["other".into(), "api://payments".into()],
        max_token_age_secs: 3600,
        leeway_secs: 60,
    };
    let claims = c
        .verify(
            t.token.expose_secret(),
            &expect,
            Some(&emu.jwks_uri()),
            unix_now(),
        )
        .await
        .unwrap();
    assert_eq!(claims, t.claims);
    // Tampering breaks the signature.
    let parts: Vec<&str> = t.token.expose_secret().split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        &parts[2][..parts[2].len() - 4]
    );
    let e = c
        .verify(&forged, &expect, Some(&emu.jwks_uri()), unix_now())
        .await
        .unwrap_err();
    assert!(
        matches!(e, RefreshError::Rejected(CheckError::InvalidSignature)),
        "{e:?}"
    );
    // An hour and a bit later the token is too old for a 1 h issuance limit.
    let e = c
        .verify(t.token.expose_secret(), &expect, None, unix_now() + 3700)
        .await
        .unwrap_err();
    assert!(matches!(
        e,
        RefreshError::Rejected(CheckError::Expired { .. } | CheckError::IssuedTooLongAgo { .. })
    ));
}

#[tokio::test]
async fn ca_file_trusts_a_private_ca() {
    // Any HTTPS server with a certificate from a private CA will do: the test webhook server
    // answers 404 to discovery, so `endpoints` succeeds (with the fallback) once TLS works.
    let ca = common::TestCa::new("idaas test CA");
    let server = common::start_server(&ca.leaf("127.0.0.1")).await;
    let origin = format!("https://127.0.0.1:{}", server.addr.port());
    let issuer = format!("{origin}/oauth2");

    let e = client_allowing(&origin)
        .endpoints(&issuer, None, None)
        .await
        .unwrap_err();
    assert_eq!(
        (e.class, e.reason.as_str()),
        (ErrorClass::Transient, "connect")
    );
    assert!(e.message.contains(&issuer), "{}", e.message);

    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(ca.pem.as_bytes()).unwrap();
    let emu = IdaasEmulator::start(config()).await.unwrap();
    let c = IdaasClient::new(&HttpConfig {
        ca_file: Some(file.path().to_owned()),
        allowed: AllowedOrigins::parse(&format!("{origin},{}", emu.origin())).unwrap(),
        ..HttpConfig::default()
    })
    .unwrap();
    let e = c.endpoints(&issuer, None, None).await.unwrap();
    assert_eq!(e.token_endpoint, format!("{issuer}/token"));
    // Plain HTTP still works with it.
    c.fetch_token(&post(&emu), unix_now()).await.unwrap();
}

#[tokio::test]
async fn debug_output_redacts_secrets() {
    let (private, _) = generate_client_key();
    let emu = IdaasEmulator::start(config()).await.unwrap();
    let t = client(&emu)
        .fetch_token(&post(&emu), unix_now())
        .await
        .unwrap();
    let shown = format!(
        "{t:?} {:?} {:?} {:?}",
        post(&emu),
        Credential::ClientSecretBasic {
            client_secret: SECRET.into()
        },
        Credential::PrivateKeyJwt {
            private_key_pem: private.clone().into()
        }
    );
    assert!(shown.contains("[REDACTED]"));
    assert!(!shown.contains(t.token.expose_secret()));
    assert_eq!(jwt_in(&shown), None);
    assert!(!shown.contains(SECRET));
    assert!(!shown.contains("s3cr3t"));
    for line in private.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!shown.contains(line));
    }
}

/// A `MakeWriter` appending to a shared buffer.
#[derive(Clone)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[test]
fn trace_logs_and_errors_never_show_secrets() {
    // tracing caches per-callsite interest globally. With a single registered dispatcher it
    // asks the *registering thread's* default, so a callsite first hit by another test's thread
    // (no subscriber) would be cached as disabled. A second live dispatcher makes tracing ask
    // every registered one; then rebuild once after installing ours.
    let _second = tracing::Dispatch::new(tracing_subscriber::registry());
    let buffer = Buffer(Arc::new(Mutex::new(Vec::new())));
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(buffer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    tracing::callsite::rebuild_interest_cache();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let (private, public) = generate_client_key();
    let mut tokens: Vec<String> = Vec::new();
    rt.block_on(async {
        let emu = IdaasEmulator::start(EmulatorConfig {
            client_public_key_pem: Some(public),
            ..config()
        })
        .await
        .unwrap();
        let c = client(&emu);
        let mut out = buffer.clone();
        let credentials = [
            Credential::ClientSecretPost {
                client_secret: SECRET.into(),
            },
            Credential::ClientSecretBasic {
                client_secret: SECRET.into(),
            },
            Credential::PrivateKeyJwt {
                private_key_pem: SecretString::from(private.clone()),
            },
        ];
        for credential in credentials {
            let req = request(&emu, credential.clone());
            let t = c.fetch_token(&req, unix_now()).await.unwrap();
            tokens.push(t.token.expose_secret().to_owned());
            writeln!(out, "{t:?} {req:?} {credential:?}").unwrap();
            // Failures of every kind, formatted.
            emu.push_fault(Fault::OAuthError {
                status: 401,
                error: "invalid_client".into(),
            });
            let e = c.fetch_token(&req, unix_now()).await.unwrap_err();
            writeln!(out, "{e} {e:?}").unwrap();
            emu.push_fault(Fault::WrongAudience);
            let e = c.fetch_token(&req, unix_now()).await.unwrap_err();
            writeln!(out, "{e} {e:?}").unwrap();
            emu.push_fault(Fault::GarbageJson);
            let e = c.fetch_token(&req, unix_now()).await.unwrap_err();
            writeln!(out, "{e} {e:?}").unwrap();
        }
        let bad = request(
            &emu,
            Credential::PrivateKeyJwt {
                private_key_pem: SecretString::from(private[..private.len() / 2].to_owned()),
            },
        );
        let e = c.fetch_token(&bad, unix_now()).await.unwrap_err();
        writeln!(out, "{e} {e:?}").unwrap();
        emu.shutdown();
    });
    drop(rt);

    let logs = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    // The capture works: client and emulator both logged.
    assert!(logs.contains("requesting a token"), "{logs}");
    assert!(logs.contains("emulator issued a token"), "{logs}");
    assert!(logs.contains("TRACE"), "no trace-level lines captured");
    assert_eq!(tokens.len(), 3);
    for t in &tokens {
        assert!(!logs.contains(t.as_str()));
        // Nor its signature or payload alone.
        for part in t.split('.').skip(1) {
            assert!(!logs.contains(part));
        }
    }
    // No JWT of any kind: not the access tokens, not the client assertions.
    assert_eq!(jwt_in(&logs), None, "a JWT in the logs");
    assert!(!logs.contains(SECRET));
    let encoded_secret: String = url::form_urlencoded::byte_serialize(SECRET.as_bytes()).collect();
    assert!(!logs.contains(&encoded_secret));
    assert!(!logs.contains("s3cr3t"));
    for line in private.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!logs.contains(line), "a private key line in the logs");
    }
}
