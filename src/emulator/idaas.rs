//! An IDaaS M2M emulator: OIDC discovery, a JWKS and an OAuth 2.0 client_credentials token
//! endpoint, over plain HTTP on 127.0.0.1, with injectable faults.
//!
//! It behaves like an Alibaba Cloud IDaaS (EIAM) issuer at
//! `http://127.0.0.1:PORT/api/v2/iauths_system/oauth2`: scopes are `<audience>|<scope>`, the
//! token is an RS256 JWT with `kid`, `iss` = the issuer, `sub` = `client_id` = the client, `aud`
//! = the audience. Client authentication: `client_secret_post`, `client_secret_basic` (RFC 6749
//! §2.3.1 encoding) and `private_key_jwt` (RFC 7523, verified with the configured public key).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use idaas_projector::emulator::idaas::{EmulatorConfig, Fault, IdaasEmulator};
//! let emu = IdaasEmulator::start(EmulatorConfig::default()).await?;
//! emu.push_fault(Fault::Status(503)); // the next token request fails
//! println!("issuer {}", emu.issuer());
//! # Ok(()) }
//! ```

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};
use tokio::sync::watch;

/// The issuer path of an IDaaS instance.
pub const ISSUER_PATH: &str = "/api/v2/iauths_system/oauth2";
/// The `client_assertion_type` of RFC 7523.
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The `client_assertion_type` of an application federated credential.
const ID_TOKEN_BEARER: &str = "urn:cloud:idaas:params:oauth:client-assertion-type:id-token-bearer";
/// The key of [`Fault::Hs256Token`] tokens.
const HS256_SECRET: &[u8] = b"idaas-emulator-hs256-fault-secret";
/// The audience of [`Fault::WrongAudience`] tokens.
pub const WRONG_AUDIENCE: &str = "api://wrong-audience";

/// What the emulated IDaaS knows about its one M2M client application.
#[derive(Clone)]
pub struct EmulatorConfig {
    pub client_id: String,
    pub client_secret: String,
    /// The resource server's audience identifier: the token's `aud` and the scope prefix.
    pub audience: String,
    /// Permissions granted to the client; `.all` grants any scope.
    pub scopes_granted: Vec<String>,
    pub token_lifetime: Duration,
    /// SPKI (`PUBLIC KEY`) or PKCS#1 (`RSA PUBLIC KEY`) PEM that verifies `private_key_jwt`
    /// client assertions; `None` refuses that method.
    pub client_public_key_pem: Option<String>,
    /// The application's federated credentials (IDaaS: "application federated credential" of
    /// type OIDC); empty refuses that method.
    pub federated_credentials: Vec<FederatedCredential>,
}

/// An application federated credential of type OIDC: tokens of one trusted issuer, for one
/// audience and one subject, authenticate the application.
#[derive(Debug, Clone)]
pub struct FederatedCredential {
    /// `application_federated_credential_name`.
    pub name: String,
    /// The trusted issuer (the federated credential provider), e.g. a cluster's ServiceAccount
    /// issuer; the assertion's `iss`.
    pub issuer: String,
    /// The issuer's signing keys.
    pub jwks: JwkSet,
    /// The assertion's `aud` must contain it.
    pub audience: String,
    /// The verification condition: the assertion's `sub`, e.g.
    /// `system:serviceaccount:shop:payments`.
    pub subject: String,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            client_id: "app_emulator".to_owned(),
            client_secret: "emulator-client-secret".to_owned(),
            audience: "api://emulator".to_owned(),
            scopes_granted: vec![".all".to_owned()],
            token_lifetime: Duration::from_secs(3600),
            client_public_key_pem: None,
            federated_credentials: Vec::new(),
        }
    }
}

impl std::fmt::Debug for EmulatorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatorConfig")
            .field("client_id", &self.client_id)
            .field("client_secret", &"[REDACTED]")
            .field("audience", &self.audience)
            .field("scopes_granted", &self.scopes_granted)
            .field("token_lifetime", &self.token_lifetime)
            .field(
                "client_public_key_pem",
                &self.client_public_key_pem.as_ref().map(|_| "<PEM>"),
            )
            .field("federated_credentials", &self.federated_credentials)
            .finish()
    }
}

/// A misbehaviour for one token request ([`IdaasEmulator::push_fault`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status (meant for 5xx) with an IDaaS-style `{Code, Message, RequestId}` body.
    Status(u16),
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// 200 with a truncated JSON body.
    GarbageJson,
    /// A token signed HS256 (which RAM rejects).
    Hs256Token,
    /// A token whose `aud` is [`WRONG_AUDIENCE`].
    WrongAudience,
    /// A token that expired a minute ago.
    AlreadyExpired,
    /// 429 with `Retry-After: retry_after_secs`.
    TooManyRequests { retry_after_secs: u64 },
    /// An OAuth error answer, e.g. 401 `invalid_client`.
    OAuthError { status: u16, error: String },
    /// A token whose `iat` is this long ago (its `exp` is still a full lifetime away).
    IssuedInPast(Duration),
}

struct SigningKey {
    kid: String,
    key: EncodingKey,
    jwk: Jwk,
}

impl SigningKey {
    fn generate() -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)
            .expect("RSA key generation (aws-lc-rs)");
        let key = EncodingKey::from_rsa_pem(pair.serialize_pem().as_bytes())
            .expect("rcgen's PKCS#8 PEM is an RSA key");
        let kid = format!("emu-{:016x}", fastrand::u64(..));
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256).expect("RSA JWK");
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        Self { kid, key, jwk }
    }
}

struct Shared {
    issuer: String,
    token_endpoint: String,
    jwks_uri: String,
    config: EmulatorConfig,
    client_key: Option<DecodingKey>,
    signing: Mutex<SigningKey>,
    faults: Mutex<VecDeque<Fault>>,
    latency: Mutex<Duration>,
    lifetime: Mutex<Duration>,
    seen_jtis: Mutex<HashSet<String>>,
    serve_discovery: AtomicBool,
    serve_jwks: AtomicBool,
    /// The `token_endpoint` discovery names instead of its own.
    advertised_token_endpoint: Mutex<Option<String>>,
    token_requests: AtomicUsize,
    issued_tokens: AtomicUsize,
    jwks_requests: AtomicUsize,
    discovery_requests: AtomicUsize,
}

/// A running emulator; clones share it. It stops on [`shutdown`](Self::shutdown) or when the
/// last clone is dropped.
#[derive(Clone)]
pub struct IdaasEmulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: Arc<watch::Sender<bool>>,
}

impl std::fmt::Debug for IdaasEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdaasEmulator")
            .field("issuer", &self.shared.issuer)
            .finish_non_exhaustive()
    }
}

impl IdaasEmulator {
    /// Starts on `127.0.0.1` with a free port.
    pub async fn start(config: EmulatorConfig) -> std::io::Result<Self> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), config).await
    }

    /// Starts on `addr`. The RSA signing key is generated here (some 100 ms).
    pub async fn start_on(addr: SocketAddr, config: EmulatorConfig) -> std::io::Result<Self> {
        let client_key = match &config.client_public_key_pem {
            Some(pem) => Some(DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("client_public_key_pem: {e}"),
                )
            })?),
            None => None,
        };
        let (listener, addr) = super::bind(addr).await?;
        let issuer = format!("http://{addr}{ISSUER_PATH}");
        let shared = Arc::new(Shared {
            token_endpoint: format!("{issuer}/token"),
            jwks_uri: format!("{issuer}/jwks"),
            issuer,
            lifetime: Mutex::new(config.token_lifetime),
            config,
            client_key,
            signing: Mutex::new(SigningKey::generate()),
            faults: Mutex::new(VecDeque::new()),
            latency: Mutex::new(Duration::ZERO),
            seen_jtis: Mutex::new(HashSet::new()),
            serve_discovery: AtomicBool::new(true),
            serve_jwks: AtomicBool::new(true),
            advertised_token_endpoint: Mutex::new(None),
            token_requests: AtomicUsize::new(0),
            issued_tokens: AtomicUsize::new(0),
            jwks_requests: AtomicUsize::new(0),
            discovery_requests: AtomicUsize::new(0),
        });
        let routes = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/token", post(token))
            .with_state(shared.clone());
        let app = Router::new().nest(ISSUER_PATH, routes);
        let tx = super::serve(listener, app, "IDaaS");
        tracing::debug!(issuer = %shared.issuer, "IDaaS emulator started");
        Ok(Self {
            shared,
            addr,
            shutdown: Arc::new(tx),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`: what a client's allowed origins must name to reach it.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/api/v2/iauths_system/oauth2`
    pub fn issuer(&self) -> String {
        self.shared.issuer.clone()
    }

    pub fn token_endpoint(&self) -> String {
        self.shared.token_endpoint.clone()
    }

    pub fn jwks_uri(&self) -> String {
        self.shared.jwks_uri.clone()
    }

    /// A request for a token of its application (every scope, a 12h maximum token age),
    /// authenticated with `credential`.
    pub fn token_request(
        &self,
        credential: crate::idaas::Credential,
    ) -> crate::idaas::TokenRequest {
        let config = &self.shared.config;
        crate::idaas::TokenRequest {
            issuer: self.issuer(),
            token_endpoint: None,
            jwks_uri: None,
            audience: config.audience.clone(),
            scopes: vec![".all".to_owned()],
            client_id: config.client_id.clone(),
            credential,
            max_token_age: Duration::from_secs(12 * 3600),
        }
    }

    /// The configuration it started with (the token lifetime may have changed since).
    pub fn config(&self) -> &EmulatorConfig {
        &self.shared.config
    }

    /// Queues a fault; each token request consumes the oldest one.
    pub fn push_fault(&self, fault: Fault) {
        self.shared.faults.lock().unwrap().push_back(fault);
    }

    /// Faults not yet consumed.
    pub fn pending_faults(&self) -> usize {
        self.shared.faults.lock().unwrap().len()
    }

    /// Added to every token response.
    pub fn set_latency(&self, d: Duration) {
        *self.shared.latency.lock().unwrap() = d;
    }

    pub fn set_token_lifetime(&self, d: Duration) {
        *self.shared.lifetime.lock().unwrap() = d;
    }

    /// Whether `/.well-known/openid-configuration` is served (default); false answers 404
    /// there, so clients fall back to `{issuer}/token` and `{issuer}/jwks`.
    pub fn set_serve_discovery(&self, serve: bool) {
        self.shared.serve_discovery.store(serve, Ordering::SeqCst);
    }

    /// Whether `/jwks` is served (default); false answers 404 there.
    pub fn set_serve_jwks(&self, serve: bool) {
        self.shared.serve_jwks.store(serve, Ordering::SeqCst);
    }

    /// Makes the discovery document name `url` as its `token_endpoint` (`None`: its own), as an
    /// issuer pointing clients at another host would.
    pub fn set_advertised_token_endpoint(&self, url: Option<String>) {
        *self.shared.advertised_token_endpoint.lock().unwrap() = url;
    }

    /// Token endpoint calls, faulted and refused ones included.
    pub fn token_requests(&self) -> usize {
        self.shared.token_requests.load(Ordering::SeqCst)
    }

    /// Tokens handed out (including deliberately bad ones from faults).
    pub fn issued_tokens(&self) -> usize {
        self.shared.issued_tokens.load(Ordering::SeqCst)
    }

    /// JWKS endpoint calls.
    pub fn jwks_requests(&self) -> usize {
        self.shared.jwks_requests.load(Ordering::SeqCst)
    }

    /// Discovery document calls.
    pub fn discovery_requests(&self) -> usize {
        self.shared.discovery_requests.load(Ordering::SeqCst)
    }

    /// Calls so far of discovery, the token endpoint and the JWKS, in that order.
    pub fn requests(&self) -> (usize, usize, usize) {
        (
            self.discovery_requests(),
            self.token_requests(),
            self.jwks_requests(),
        )
    }

    /// The `kid` of the current signing key.
    pub fn current_kid(&self) -> String {
        self.shared.signing.lock().unwrap().kid.clone()
    }

    /// A new signing key with a new `kid`; the old key leaves the JWKS.
    pub fn rotate_signing_key(&self) {
        let key = SigningKey::generate();
        *self.shared.signing.lock().unwrap() = key;
    }

    /// Stops accepting connections; open ones finish their request.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }
}

/// A fresh RSA 2048 client key for `private_key_jwt`: `(PKCS#8 private PEM, SPKI public PEM)`.
/// An OIDC issuer that signs tokens for a subject, as a cluster's ServiceAccount issuer does:
/// the trusted side of an application federated credential (tests, and `dev`).
pub struct OidcIssuer {
    issuer: String,
    key: SigningKey,
}

impl std::fmt::Debug for OidcIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcIssuer")
            .field("issuer", &self.issuer)
            .field("kid", &self.key.kid)
            .finish_non_exhaustive()
    }
}

impl OidcIssuer {
    /// A new RSA signing key for `issuer`.
    pub fn new(issuer: &str) -> Self {
        Self {
            issuer: issuer.to_owned(),
            key: SigningKey::generate(),
        }
    }

    /// The issuer URL (the tokens' `iss`).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The public keys, as the issuer's JWKS serves them.
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: vec![self.key.jwk.clone()],
        }
    }

    /// An application federated credential named `name` that trusts this issuer's tokens for
    /// `audience` and `subject` (the emulator's side of the trust).
    pub fn trusted_as(&self, name: &str, audience: &str, subject: &str) -> FederatedCredential {
        FederatedCredential {
            name: name.to_owned(),
            issuer: self.issuer.clone(),
            jwks: self.jwks(),
            audience: audience.to_owned(),
            subject: subject.to_owned(),
        }
    }

    /// Signs `claims` (RS256, with the key's `kid`) as they are.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.key.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key.key).expect("RS256 signing")
    }

    /// A token for `subject` and `audience`, issued now, valid for `lifetime`.
    pub fn token(&self, subject: &str, audience: &str, lifetime: Duration) -> String {
        let now = crate::time::unix_now();
        let lifetime = i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX);
        self.sign(&json!({
            "iss": self.issuer, "sub": subject, "aud": [audience],
            "iat": now, "nbf": now, "exp": now.saturating_add(lifetime),
        }))
    }
}

pub fn generate_client_key() -> (String, String) {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)
        .expect("RSA key generation (aws-lc-rs)");
    (pair.serialize_pem(), pair.public_key_pem())
}

fn request_id() -> String {
    let n = fastrand::u128(..);
    let h = format!("{n:032X}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn no_store(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

fn status_of(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// An OAuth 2.0 error answer (RFC 6749 §5.2).
fn oauth_error(status: u16, error: &str, description: &str) -> Response {
    let mut r = (
        status_of(status),
        axum::Json(json!({
            "error": error,
            "error_description": description,
            "request_id": request_id(),
        })),
    )
        .into_response();
    if status == 401 {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"idaas\""),
        );
    }
    no_store(r)
}

/// An Alibaba Cloud style error answer: `{Code, Message, RequestId}`.
fn idaas_error(status: u16) -> Response {
    let code = match status {
        429 => "Throttling",
        502 => "BadGateway",
        503 => "ServiceUnavailable",
        504 => "GatewayTimeout",
        _ => "InternalError",
    };
    no_store(
        (
            status_of(status),
            axum::Json(json!({
                "Code": code,
                "Message": "The request processing has failed due to some unknown error (emulated).",
                "RequestId": request_id(),
            })),
        )
            .into_response(),
    )
}

async fn discovery(State(s): State<Arc<Shared>>) -> Response {
    s.discovery_requests.fetch_add(1, Ordering::SeqCst);
    if !s.serve_discovery.load(Ordering::SeqCst) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let token_endpoint = s.advertised_token_endpoint.lock().unwrap().clone();
    axum::Json(json!({
        "issuer": s.issuer,
        "token_endpoint": token_endpoint.unwrap_or_else(|| s.token_endpoint.clone()),
        "jwks_uri": s.jwks_uri,
        "grant_types_supported": ["client_credentials"],
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic", "private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS256"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
    .into_response()
}

async fn jwks(State(s): State<Arc<Shared>>) -> Response {
    s.jwks_requests.fetch_add(1, Ordering::SeqCst);
    if !s.serve_jwks.load(Ordering::SeqCst) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let jwk = s.signing.lock().unwrap().jwk.clone();
    axum::Json(JwkSet { keys: vec![jwk] }).into_response()
}

async fn token(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    s.token_requests.fetch_add(1, Ordering::SeqCst);
    let fault = s.faults.lock().unwrap().pop_front();
    let latency = *s.latency.lock().unwrap();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let token_fault = match fault {
        Some(Fault::Status(code)) => return idaas_error(code),
        Some(Fault::Delay(d)) => {
            tokio::time::sleep(d).await;
            None
        }
        Some(Fault::GarbageJson) => {
            return no_store(
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    "{\"access_token\": \"eyJhbGciOi",
                )
                    .into_response(),
            );
        }
        Some(Fault::TooManyRequests { retry_after_secs }) => {
            let mut r = idaas_error(429);
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            return r;
        }
        Some(Fault::OAuthError { status, error }) => {
            return oauth_error(status, &error, "emulated fault");
        }
        other => other,
    };

    let mut form = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(&body) {
        if form.insert(k.into_owned(), v.into_owned()).is_some() {
            return oauth_error(400, "invalid_request", "a parameter is repeated");
        }
    }
    match form.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {}
        Some(_) => {
            return oauth_error(
                400,
                "unsupported_grant_type",
                "only client_credentials is supported",
            );
        }
        None => return oauth_error(400, "invalid_request", "grant_type is required"),
    }
    let method = match authenticate(&s, &headers, &form) {
        Ok(method) => method,
        Err(r) => return r,
    };
    let scope = form.get("scope").map(String::as_str).unwrap_or("");
    if let Err(why) = check_scope(&s.config, scope) {
        return oauth_error(400, "invalid_scope", &why);
    }
    no_store(issue(&s, scope, token_fault, method))
}

/// Client authentication by whichever method the request uses.
#[allow(clippy::result_large_err)] // the error is the HTTP answer itself
fn authenticate(
    s: &Shared,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<&'static str, Response> {
    let cfg = &s.config;
    let invalid = |why: &str| oauth_error(401, "invalid_client", why);
    let body_id_ok = || form.get("client_id").is_none_or(|id| *id == cfg.client_id);
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        let creds = auth
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| STANDARD.decode(b.trim()).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| invalid("malformed Basic authorization"))?;
        let (id, secret) = creds
            .split_once(':')
            .ok_or_else(|| invalid("malformed Basic authorization"))?;
        if form_decode(id) != cfg.client_id || form_decode(secret) != cfg.client_secret {
            return Err(invalid("client authentication failed"));
        }
        if form.contains_key("client_secret") || form.contains_key("client_assertion") {
            return Err(oauth_error(
                400,
                "invalid_request",
                "more than one client authentication method",
            ));
        }
        if !body_id_ok() {
            return Err(invalid("client_id does not match the Authorization header"));
        }
        return Ok("client_secret_basic");
    }
    if let Some(kind) = form.get("client_assertion_type") {
        let assertion = form
            .get("client_assertion")
            .ok_or_else(|| oauth_error(400, "invalid_request", "client_assertion is required"))?;
        if form.contains_key("client_secret") {
            return Err(oauth_error(
                400,
                "invalid_request",
                "more than one client authentication method",
            ));
        }
        return match kind.as_str() {
            JWT_BEARER => private_key_jwt(s, assertion, body_id_ok()),
            ID_TOKEN_BEARER => federated_oidc(cfg, form, assertion),
            _ => Err(invalid("unsupported client_assertion_type")),
        };
    }
    if let Some(secret) = form.get("client_secret") {
        if form.get("client_id") != Some(&cfg.client_id) || *secret != cfg.client_secret {
            return Err(invalid("client authentication failed"));
        }
        return Ok("client_secret_post");
    }
    Err(invalid("client authentication is required"))
}

/// `private_key_jwt`: an RFC 7523 assertion signed with the client's key, used once.
#[allow(clippy::result_large_err)] // the error is the HTTP answer itself
fn private_key_jwt(
    s: &Shared,
    assertion: &str,
    body_id_ok: bool,
) -> Result<&'static str, Response> {
    let cfg = &s.config;
    let invalid = |why: &str| oauth_error(401, "invalid_client", why);
    let key = s
        .client_key
        .as_ref()
        .ok_or_else(|| invalid("private_key_jwt is not enabled for this client"))?;
    let mut v = Validation::new(Algorithm::RS256);
    v.algorithms = vec![
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
    ];
    v.leeway = 5;
    v.set_audience(&[&s.token_endpoint]);
    v.set_issuer(&[&cfg.client_id]);
    v.sub = Some(cfg.client_id.clone());
    v.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    let claims = jsonwebtoken::decode::<Value>(assertion, key, &v)
        .map_err(|e| {
            tracing::debug!(error = %e, "client assertion rejected");
            invalid("client assertion rejected")
        })?
        .claims;
    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("client assertion has no jti"))?;
    if !s.seen_jtis.lock().unwrap().insert(jti.to_owned()) {
        return Err(invalid("client assertion replayed"));
    }
    if !body_id_ok {
        return Err(invalid("client_id does not match the assertion"));
    }
    Ok("private_key_jwt")
}

/// An application federated credential: the named credential's issuer signed the assertion
/// (a key of its JWKS), for its audience and subject, and it has not expired.
#[allow(clippy::result_large_err)] // the error is the HTTP answer itself
fn federated_oidc(
    cfg: &EmulatorConfig,
    form: &HashMap<String, String>,
    assertion: &str,
) -> Result<&'static str, Response> {
    let invalid = |why: &str| oauth_error(401, "invalid_client", why);
    if form.get("client_id") != Some(&cfg.client_id) {
        return Err(invalid("client authentication failed"));
    }
    let name = form
        .get("application_federated_credential_name")
        .ok_or_else(|| {
            oauth_error(
                400,
                "invalid_request",
                "application_federated_credential_name is required",
            )
        })?;
    let credential = cfg
        .federated_credentials
        .iter()
        .find(|c| c.name == *name)
        .ok_or_else(|| invalid("no such application federated credential"))?;
    let header = jsonwebtoken::decode_header(assertion)
        .map_err(|_| invalid("the client assertion is not a JWT"))?;
    let jwk = match &header.kid {
        Some(kid) => credential.jwks.find(kid),
        None if credential.jwks.keys.len() == 1 => credential.jwks.keys.first(),
        None => None,
    }
    .ok_or_else(|| {
        invalid("the client assertion is signed with a key the issuer does not publish")
    })?;
    let key = DecodingKey::from_jwk(jwk).map_err(|_| invalid("the issuer's key is not usable"))?;
    if matches!(
        header.alg,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
    ) {
        return Err(invalid(
            "the client assertion must be signed with an asymmetric key",
        ));
    }
    let mut v = Validation::new(header.alg);
    v.leeway = 5;
    v.set_issuer(&[&credential.issuer]);
    v.set_audience(&[&credential.audience]);
    v.sub = Some(credential.subject.clone());
    v.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    jsonwebtoken::decode::<Value>(assertion, &key, &v).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind;
        let why = match e.kind() {
            ErrorKind::ExpiredSignature => "the client assertion has expired",
            ErrorKind::InvalidAudience => {
                "the client assertion's audience does not match the federated credential"
            }
            ErrorKind::InvalidSubject => {
                "the client assertion's subject does not match the federated credential"
            }
            ErrorKind::InvalidIssuer => {
                "the client assertion's issuer does not match the federated credential"
            }
            ErrorKind::InvalidSignature => "the client assertion's signature is invalid",
            _ => "client assertion rejected",
        };
        tracing::debug!(error = %e, "federated client assertion rejected");
        invalid(why)
    })?;
    Ok("federated_oidc")
}

/// Decodes one `application/x-www-form-urlencoded` value (`+` is a space).
fn form_decode(s: &str) -> String {
    let mut pairs = url::form_urlencoded::parse(s.as_bytes());
    match (pairs.next(), pairs.next()) {
        (Some((k, v)), None) if v.is_empty() && !s.contains('=') => k.into_owned(),
        _ => s.to_owned(),
    }
}

/// Every scope item must be `<audience>|<granted scope>` (or `.all`).
fn check_scope(cfg: &EmulatorConfig, scope: &str) -> Result<(), String> {
    let mut any = false;
    for item in scope.split_ascii_whitespace() {
        any = true;
        let Some((aud, name)) = item.split_once('|') else {
            return Err(format!("scope {item:?} is not <audience>|<scope>"));
        };
        if aud != cfg.audience {
            return Err(format!("unknown audience {aud:?}"));
        }
        let granted = cfg.scopes_granted.iter().any(|g| g == ".all" || g == name)
            || (name == ".all" && !cfg.scopes_granted.is_empty());
        if !granted {
            return Err(format!("scope {name:?} is not granted to the client"));
        }
    }
    if !any {
        return Err("scope is required".to_owned());
    }
    Ok(())
}

fn issue(s: &Shared, scope: &str, fault: Option<Fault>, method: &str) -> Response {
    let now = crate::time::unix_now();
    let lifetime = s.lifetime.lock().unwrap().as_secs() as i64;
    let (mut iat, mut exp, mut aud) = (now, now + lifetime, s.config.audience.as_str());
    let mut hs256 = false;
    match &fault {
        Some(Fault::Hs256Token) => hs256 = true,
        Some(Fault::WrongAudience) => aud = WRONG_AUDIENCE,
        Some(Fault::AlreadyExpired) => (iat, exp) = (now - 120, now - 60),
        Some(Fault::IssuedInPast(d)) => iat = now - d.as_secs() as i64,
        _ => {}
    }
    let claims = json!({
        "iss": s.issuer,
        "sub": s.config.client_id,
        "aud": aud,
        "iat": iat,
        "exp": exp,
        "jti": format!("{:032x}", fastrand::u128(..)),
        "client_id": s.config.client_id,
        "scope": scope,
    });
    let token = if hs256 {
        let key = EncodingKey::from_secret(HS256_SECRET).expect("HMAC key");
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key)
    } else {
        let (kid, key) = {
            let signing = s.signing.lock().unwrap();
            (signing.kid.clone(), signing.key.clone())
        };
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid);
        jsonwebtoken::encode(&header, &claims, &key)
    };
    let token = match token {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "emulator cannot sign a token");
            return idaas_error(500);
        }
    };
    s.issued_tokens.fetch_add(1, Ordering::SeqCst);
    tracing::debug!(sub = %s.config.client_id, aud, iat, exp, auth = method, fault = ?fault, "emulator issued a token");
    axum::Json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": (exp - now).max(0),
        "scope": scope,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        let mut cfg = EmulatorConfig::default();
        check_scope(&cfg, "api://emulator|.all").unwrap();
        check_scope(&cfg, "api://emulator|read api://emulator|write").unwrap();
        assert!(check_scope(&cfg, "").is_err());
        assert!(check_scope(&cfg, "read").is_err());
        assert!(check_scope(&cfg, "api://other|read").is_err());
        cfg.scopes_granted = vec!["read".into()];
        check_scope(&cfg, "api://emulator|read").unwrap();
        check_scope(&cfg, "api://emulator|.all").unwrap();
        assert!(check_scope(&cfg, "api://emulator|write").is_err());
    }

    #[test]
    fn form_values() {
        assert_eq!(form_decode("app+id"), "app id");
        assert_eq!(form_decode("s%3Ae%2Fc%2Br%25t"), "s:e/c+r%t");
        assert_eq!(form_decode("a=b"), "a=b");
    }

    #[test]
    fn config_debug_redacts_the_secret() {
        let s = format!("{:?}", EmulatorConfig::default());
        assert!(!s.contains("emulator-client-secret"), "{s}");
    }
}
