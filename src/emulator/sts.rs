//! An Alibaba Cloud STS emulator: `AssumeRoleWithOIDC` over plain HTTP on 127.0.0.1 (and over
//! HTTPS too, with a certificate the caller provides: [`StsEmulator::serve_https`]), checking
//! the OIDC token as RAM does and answering in RAM's JSON shape.
//!
//! It accepts the call the way the credentials SDKs make it: `GET /?Action=...` with every
//! parameter in the query string (credentials-python) and `POST /` with an
//! `application/x-www-form-urlencoded` body (Go, Java, Node; query parameters are merged in,
//! the body wins). The call is anonymous: no `AccessKeyId`, no signature check.
//!
//! Checks, in order, each answered with RAM's error code and HTTP status (RAM's STS error code
//! table: parameter errors are 400, `AuthenticationFail.*` are 401):
//! `Action` / `Version`; `RoleArn`, `OIDCProviderArn`, `RoleSessionName` present and well
//! formed; `DurationSeconds` in 900..=`max_session_duration`; `Policy` is JSON; the provider
//! ARN is the configured one (`AuthenticationFail.NoPermission`, "No such OIDC Provider
//! registered."); the role is in the configured account (`AuthenticationFail.NoPermission`,
//! standing in for a trust policy that does not name the provider); then the token: a JWT
//! with an asymmetric `alg`, `iss`, `aud` among the client IDs, `exp`, `iat` within the
//! issuance limit, and its signature against the JWKS at `jwks_uri` (cached, refetched when a
//! `kid` is missing).
//!
//! The emulator never logs the token.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::jwk::JwkSet;
use serde_json::json;
use tokio::sync::watch;

use crate::idaas::CheckError;
use crate::idaas::jwt;
use crate::ram::Expectations;
use crate::ram::code;
use crate::ram::names::{
    MIN_SESSION_DURATION_SECS, is_session_name, validate_oidc_provider_arn, validate_role_arn,
};
use crate::ram::{STS_ACTION as ACTION, STS_VERSION as VERSION};

/// The `HostId` of every error answer.
const HOST_ID: &str = "sts.aliyuncs.com";
/// RAM's limit on the OIDC token's length.
const MAX_TOKEN_LEN: usize = 20_000;

/// What the emulated RAM knows: one OIDC provider in one account.
#[derive(Debug, Clone)]
pub struct StsConfig {
    /// The provider's issuer URL: the token's `iss` must equal it.
    pub issuer: String,
    /// Fetched (and cached) to verify signatures.
    pub jwks_uri: String,
    /// The provider's Client IDs: the token's `aud` must contain one.
    pub client_ids: Vec<String>,
    /// The provider's "earliest issuance time allowed".
    pub issuance_limit: Duration,
    /// The account that owns the provider and the roles.
    pub account_id: String,
    /// Provider ARN = `acs:ram::{account_id}:oidc-provider/{oidc_provider_name}`.
    pub oidc_provider_name: String,
    /// The roles' maximum session duration; `DurationSeconds` must be in 900..=this.
    pub max_session_duration: Duration,
}

impl Default for StsConfig {
    fn default() -> Self {
        Self {
            issuer: "http://127.0.0.1/api/v2/iauths_system/oauth2".to_owned(),
            jwks_uri: "http://127.0.0.1/api/v2/iauths_system/oauth2/jwks".to_owned(),
            client_ids: vec!["api://emulator".to_owned()],
            issuance_limit: Duration::from_secs(12 * 3600),
            account_id: "1234567890123456".to_owned(),
            oidc_provider_name: "idaas".to_owned(),
            max_session_duration: Duration::from_secs(3600),
        }
    }
}

struct Shared {
    config: StsConfig,
    provider_arn: String,
    http: reqwest::Client,
    /// The cached JWKS and when it was fetched.
    jwks: tokio::sync::Mutex<Option<(JwkSet, Instant)>>,
    requests: AtomicUsize,
    successes: AtomicUsize,
}

/// A running STS emulator; clones share it. It stops on [`shutdown`](Self::shutdown) or when
/// the last clone is dropped.
#[derive(Clone)]
pub struct StsEmulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: Arc<watch::Sender<bool>>,
}

impl std::fmt::Debug for StsEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StsEmulator")
            .field("addr", &self.addr)
            .field("provider", &self.shared.provider_arn)
            .finish_non_exhaustive()
    }
}

impl StsEmulator {
    /// Starts on `127.0.0.1` with a free port.
    pub async fn start(config: StsConfig) -> std::io::Result<Self> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), config).await
    }

    /// Starts on `addr`.
    pub async fn start_on(addr: SocketAddr, config: StsConfig) -> std::io::Result<Self> {
        let timeouts = crate::http::Timeouts {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(10),
        };
        let http = crate::http::client(timeouts, &[]).map_err(std::io::Error::other)?;
        let (listener, addr) = super::bind(addr).await?;
        let provider_arn = format!(
            "acs:ram::{}:oidc-provider/{}",
            config.account_id, config.oidc_provider_name
        );
        let shared = Arc::new(Shared {
            config,
            provider_arn,
            http,
            jwks: tokio::sync::Mutex::new(None),
            requests: AtomicUsize::new(0),
            successes: AtomicUsize::new(0),
        });
        let tx = super::serve(listener, router(shared.clone()), "STS");
        tracing::debug!(%addr, provider = %shared.provider_arn, "STS emulator started");
        Ok(Self {
            shared,
            addr,
            shutdown: Arc::new(tx),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Also serves the API over HTTPS on `addr` with `tls` (the same state: counters, JWKS
    /// cache), until [`shutdown`](Self::shutdown). Returns the address it listens on.
    pub async fn serve_https(
        &self,
        addr: SocketAddr,
        tls: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<SocketAddr> {
        let (listener, addr) = super::bind(addr).await?;
        let app = router(self.shared.clone());
        super::serve_tls(listener, tls, app, self.shutdown.subscribe(), "STS (HTTPS)")?;
        tracing::debug!(%addr, "STS emulator serving HTTPS");
        Ok(addr)
    }

    /// `http://127.0.0.1:PORT`: the SDKs' `sts_endpoint` / `--sts-endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `acs:ram::{account_id}:oidc-provider/{oidc_provider_name}`
    pub fn oidc_provider_arn(&self) -> String {
        self.shared.provider_arn.clone()
    }

    /// `acs:ram::{account_id}:role/{role}`
    pub fn role_arn(&self, role: &str) -> String {
        format!("acs:ram::{}:role/{role}", self.shared.config.account_id)
    }

    /// The configuration it started with.
    pub fn config(&self) -> &StsConfig {
        &self.shared.config
    }

    /// Calls of `/`, refused ones included.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Credentials handed out.
    pub fn successes(&self) -> usize {
        self.shared.successes.load(Ordering::SeqCst)
    }

    /// Stops accepting connections; open ones finish their request.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }
}

/// The API at `/`; anything else is RAM's `InvalidAction.NotFound`.
fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", axum::routing::any(api))
        .fallback(not_found)
        .with_state(shared)
}

/// A refused call: RAM's HTTP status, code and message.
#[derive(Debug)]
struct StsError {
    status: u16,
    code: &'static str,
    message: String,
}

fn bad(code: &'static str, message: impl Into<String>) -> StsError {
    StsError {
        status: 400,
        code,
        message: message.into(),
    }
}

fn denied(code: &'static str, message: impl Into<String>) -> StsError {
    StsError {
        status: 401,
        code,
        message: message.into(),
    }
}

fn request_id() -> String {
    let h = format!("{:032X}", fastrand::u128(..));
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// RAM's time format: `2026-01-02T03:04:05Z`.
fn utc(unix: i64) -> String {
    crate::time::rfc3339(unix)
}

fn random_chars(n: usize, alphabet: &[u8]) -> String {
    (0..n)
        .map(|_| alphabet[fastrand::usize(..alphabet.len())] as char)
        .collect()
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

fn with_request_id(mut r: Response, id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(id) {
        r.headers_mut().insert("x-acs-request-id", v);
    }
    r
}

fn error_response(e: StsError) -> Response {
    let id = request_id();
    tracing::info!(code = e.code, status = e.status, request_id = %id, message = %e.message, "STS emulator refused AssumeRoleWithOIDC");
    let body = json!({
        "RequestId": id,
        "HostId": HOST_ID,
        "Code": e.code,
        "Message": e.message,
        "Recommend": format!("https://api.aliyun.com/troubleshoot?q={}&product=Sts", e.code),
    });
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    with_request_id((status, axum::Json(body)).into_response(), &id)
}

async fn not_found(method: Method, uri: Uri) -> Response {
    tracing::info!(%method, path = %uri.path(), "STS emulator: unknown path (the API is served at /)");
    let id = request_id();
    let body = json!({
        "RequestId": id,
        "HostId": HOST_ID,
        "Code": "InvalidAction.NotFound",
        "Message": "Specified api is not found, please check your url and method.",
    });
    with_request_id(
        (StatusCode::NOT_FOUND, axum::Json(body)).into_response(),
        &id,
    )
}

async fn api(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: axum::http::HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let mut params: HashMap<String, String> = HashMap::new();
    if let Some(q) = uri.query() {
        params.extend(url::form_urlencoded::parse(q.as_bytes()).into_owned());
    }
    if method == Method::POST && !body.is_empty() {
        let form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|ct| ct.starts_with("application/x-www-form-urlencoded"));
        if !form {
            return error_response(bad(
                "InvalidParameter",
                "The request body must be application/x-www-form-urlencoded.",
            ));
        }
        params.extend(url::form_urlencoded::parse(&body).into_owned());
    } else if method != Method::GET && method != Method::POST {
        return error_response(StsError {
            status: 405,
            code: "UnsupportedHTTPMethod",
            message: format!("The HTTP method {method} is not supported."),
        });
    }
    match assume_role(&shared, &params).await {
        Ok(answer) => {
            shared.successes.fetch_add(1, Ordering::SeqCst);
            let id = answer["RequestId"].as_str().unwrap_or_default().to_owned();
            with_request_id(axum::Json(answer).into_response(), &id)
        }
        Err(e) => error_response(e),
    }
}

/// A parameter, with an empty value counting as absent (as RAM treats it).
fn param<'a>(params: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

async fn assume_role(
    shared: &Shared,
    params: &HashMap<String, String>,
) -> Result<serde_json::Value, StsError> {
    let config = &shared.config;
    check_action(params)?;
    let call = call_parameters(params, config)?;
    let (role_arn, session, duration) = (call.role_arn, call.session, call.duration);
    let provider_arn = call.provider_arn;
    if provider_arn != shared.provider_arn {
        return Err(denied(
            code::NO_PERMISSION,
            "No such OIDC Provider registered.",
        ));
    }
    let role_account = role_arn
        .strip_prefix("acs:ram::")
        .and_then(|r| r.split_once(':'))
        .map(|(account, _)| account)
        .unwrap_or_default();
    if role_account != config.account_id {
        // In RAM: the role does not exist, or its trust policy does not name this provider.
        return Err(denied(code::NO_PERMISSION, "There is no permission"));
    }

    let token = params
        .get("OIDCToken")
        .map(|t| t.trim())
        .unwrap_or_default();
    if token.is_empty() {
        return Err(denied(code::INVALID, "The OIDCToken can not empty."));
    }
    if token.len() < 4 || token.len() > MAX_TOKEN_LEN {
        return Err(bad(
            code::INVALID_TOKEN_PARAMETER,
            format!("The OIDCToken must be 4 to {MAX_TOKEN_LEN} characters long."),
        ));
    }
    let claims = jwt::decode_unverified(token).map_err(token_error)?;
    let expect = Expectations {
        issuer: config.issuer.clone(),
        audiences: config.client_ids.clone(),
        max_token_age_secs: config.issuance_limit.as_secs(),
        leeway_secs: crate::ram::claims::IAT_LEEWAY_SECS,
    };
    let now = crate::time::unix_now();
    crate::ram::check_claims(&claims, &expect, now).map_err(token_error)?;
    verify(shared, token, claims.kid.as_deref()).await?;

    let role_name = role_arn
        .rsplit_once('/')
        .map(|(_, n)| n)
        .unwrap_or(role_arn);
    let id = request_id();
    let role_id = format!("3{}", random_chars(17, b"0123456789"));
    tracing::info!(request_id = %id, role = %role_arn, session = %session, sub = claims.sub.as_deref().unwrap_or("-"), "STS emulator issued credentials");
    Ok(json!({
        "RequestId": id,
        "AssumedRoleUser": {
            "Arn": format!("acs:ram::{}:assumed-role/{role_name}/{session}", config.account_id),
            "AssumedRoleId": format!("{role_id}:{session}"),
        },
        "Credentials": {
            "AccessKeyId": format!("STS.NT{}", random_chars(22, ALNUM)),
            "AccessKeySecret": random_chars(44, ALNUM),
            "SecurityToken": format!("CAIS{}", random_chars(320, ALNUM)),
            "Expiration": utc(now + duration as i64),
        },
        "OIDCTokenInfo": {
            "Subject": claims.sub.clone().unwrap_or_default(),
            "Issuer": claims.iss,
            "ClientIds": claims.aud.join(","),
            "ExpirationTime": utc(claims.exp),
            "IssuanceTime": utc(claims.iat),
            "VerificationInfo": "Success",
        },
    }))
}

/// `Action`, `Version` and `Format`: the API the request asks for.
fn check_action(params: &HashMap<String, String>) -> Result<(), StsError> {
    match param(params, "Action") {
        None => return Err(bad("MissingAction", "Action is mandatory for this action.")),
        Some(ACTION) => {}
        Some(other) => {
            return Err(StsError {
                status: 404,
                code: "InvalidAction.NotFound",
                message: format!(
                    "Specified api {other} is not found (the emulator serves {ACTION} only)."
                ),
            });
        }
    }
    match param(params, "Version") {
        None => {
            return Err(bad(
                "MissingVersion",
                "Version is mandatory for this action.",
            ));
        }
        Some(VERSION) => {}
        Some(other) => {
            return Err(bad(
                "InvalidVersion",
                format!("Specified parameter Version {other} is not valid; use {VERSION}."),
            ));
        }
    }
    // The emulator answers JSON only; the SDKs ask for it.
    if let Some(format) = param(params, "Format")
        && !format.eq_ignore_ascii_case("JSON")
    {
        return Err(bad(
            "InvalidParameter.Format",
            format!("The emulator answers Format JSON only, not {format}."),
        ));
    }
    Ok(())
}

/// The parameters of one AssumeRoleWithOIDC call, checked as STS checks them.
struct CallParameters<'a> {
    role_arn: &'a str,
    provider_arn: &'a str,
    session: &'a str,
    duration: u64,
}

fn call_parameters<'a>(
    params: &'a HashMap<String, String>,
    config: &StsConfig,
) -> Result<CallParameters<'a>, StsError> {
    let role_arn = param(params, "RoleArn")
        .ok_or_else(|| bad("MissingRoleArn", "RoleArn is mandatory for this action."))?;
    let provider_arn = param(params, "OIDCProviderArn").ok_or_else(|| {
        bad(
            "MissingOIDCProviderArn",
            "OIDCProviderArn is mandatory for this action.",
        )
    })?;
    let session = param(params, "RoleSessionName").ok_or_else(|| {
        bad(
            "MissingRoleSessionName",
            "RoleSessionName is mandatory for this action.",
        )
    })?;
    validate_role_arn(role_arn).map_err(|why| {
        bad(
            code::INVALID_ROLE_ARN,
            format!("The parameter RoleArn is wrongly formed: {why}."),
        )
    })?;
    validate_oidc_provider_arn(provider_arn).map_err(|why| {
        bad(
            code::INVALID_PROVIDER_ARN,
            format!("The parameter OIDCProviderArn is wrongly formed: {why}."),
        )
    })?;
    if !is_session_name(session) {
        return Err(bad(
            code::INVALID_SESSION_NAME,
            "The parameter RoleSessionName is wrongly formed: 2 to 64 characters of A-Z a-z 0-9 . @ _ -.",
        ));
    }
    let max = config.max_session_duration.as_secs();
    let duration = match param(params, "DurationSeconds") {
        None => 3600.min(max),
        Some(s) => match s.parse::<u64>() {
            Ok(d) if (MIN_SESSION_DURATION_SECS..=max).contains(&d) => d,
            _ => {
                return Err(bad(
                    code::INVALID_DURATION,
                    format!(
                        "The Min/Max value of DurationSeconds is {MIN_SESSION_DURATION_SECS}/{max} seconds, got {s:?}."
                    ),
                ));
            }
        },
    };
    if let Some(policy) = param(params, "Policy")
        && serde_json::from_str::<serde_json::Value>(policy).is_err()
    {
        return Err(bad(
            code::INVALID_POLICY,
            "The parameter Policy has not passed grammar check.",
        ));
    }
    Ok(CallParameters {
        role_arn,
        provider_arn,
        session,
        duration,
    })
}

/// RAM's answer to a token that fails a check.
fn token_error(e: CheckError) -> StsError {
    let message = match &e {
        CheckError::NotJwt(why) => {
            format!("The Jwt content is invalid that cannot be recognized: {why}.")
        }
        CheckError::SymmetricAlgorithm(alg) => {
            format!("The algorithm {alg} that be specified in Jwt header is unknown.")
        }
        CheckError::IssuerNotMatch { .. } => "Invalid issuer.".to_owned(),
        CheckError::AudienceNotMatch { .. } => "Invalid audience.".to_owned(),
        CheckError::Expired { .. } => "This JsonWebToken is expired.".to_owned(),
        CheckError::IssuedInFuture { .. } | CheckError::IssuedTooLongAgo { .. } => {
            format!("Invalid issuance time: {e}.")
        }
        CheckError::UnknownKey(_) | CheckError::InvalidSignature => {
            "OIDC token validate failed: invalid signature.".to_owned()
        }
    };
    denied(e.ram_code(), message)
}

/// Verifies the signature against the provider's JWKS: the cached set, refetched when it lacks
/// the token's `kid` (so a rotated key is picked up at once).
async fn verify(shared: &Shared, token: &str, kid: Option<&str>) -> Result<(), StsError> {
    let mut cache = shared.jwks.lock().await;
    let stale = match (&*cache, kid) {
        (None, _) => true,
        (Some((set, _)), Some(kid)) => set.find(kid).is_none(),
        (Some(_), None) => false,
    };
    if stale {
        let set = fetch_jwks(shared).await?;
        *cache = Some((set, Instant::now()));
    }
    let (set, _) = cache.as_ref().expect("filled above");
    jwt::verify_signature(token, set).map_err(token_error)
}

async fn fetch_jwks(shared: &Shared) -> Result<JwkSet, StsError> {
    let uri = &shared.config.jwks_uri;
    let fail = |why: String| {
        tracing::warn!(jwks_uri = %uri, error = %why, "STS emulator cannot fetch the JWKS");
        denied(code::HTTPS_URL_INVALID, format!("Invoke url failed: {why}"))
    };
    let response = shared
        .http
        .get(uri)
        .send()
        .await
        .map_err(|e| fail(e.to_string()))?;
    if !response.status().is_success() {
        return Err(fail(format!("HTTP {}", response.status())));
    }
    response
        .json::<JwkSet>()
        .await
        .map_err(|e| fail(format!("not a JWKS: {e}")))
}
