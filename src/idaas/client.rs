//! The IDaaS HTTP client: discovery, the token endpoint, the JWKS cache.
//!
//! What it logs (at debug and trace): URLs, status codes, request IDs, error codes, and the
//! claims `iss`, `sub`, `aud`, `iat`, `exp`, `kid`. Never the access token, the client secret,
//! the client assertion or the private key; the `Authorization` header is marked sensitive.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue, RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::allow::AllowedOrigins;
use super::cache::BoundedCache;
use super::error::reason::{ENDPOINT_NOT_ALLOWED, ISSUER_NOT_ALLOWED, JWKS_UNAVAILABLE};
use super::jwt::{self, TokenClaims};
use super::{
    Credential, ErrorClass, FetchError, FetchedToken, HttpConfig, RefreshError, TokenRequest,
    TokenResponse,
};
use crate::http::{display_url, error_chain, server_text};
use crate::ram::Expectations;

/// How long a discovery answer (or the fallback chosen when none is served) is reused.
pub const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// How long a fetched JWKS is reused when every `kid` is found in it.
pub const JWKS_TTL: Duration = Duration::from_secs(3600);
/// A `kid` missing from the cached JWKS refetches it, but no more often than this.
pub const JWKS_MIN_REFETCH: Duration = Duration::from_secs(60);
/// `exp` - `iat` of the `private_key_jwt` client assertion.
pub const CLIENT_ASSERTION_LIFETIME_SECS: i64 = 300;
/// The `client_assertion_type` of RFC 7523.
pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The federated client assertion: the token given, or the file's content read now. A file
/// that cannot be read, or is empty, is transient `assertion_file` (its agent may not have
/// written it yet).
fn federated_assertion(assertion: &crate::idaas::Assertion) -> Result<String, FetchError> {
    let path = match assertion {
        crate::idaas::Assertion::Token(token) => return Ok(token.expose_secret().to_owned()),
        crate::idaas::Assertion::File(path) => path,
    };
    let failed = |why: String| FetchError {
        class: ErrorClass::Transient,
        reason: "assertion_file".to_owned(),
        message: format!(
            "cannot read the client assertion file {}: {why}",
            path.display()
        ),
        request_id: None,
        retry_after: None,
    };
    let text = std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(failed("it is empty".to_owned()));
    }
    Ok(token.to_owned())
}

/// The `client_assertion_type` of an IDaaS application federated credential (an OIDC token).
pub const FEDERATED_ASSERTION_TYPE: &str =
    "urn:cloud:idaas:params:oauth:client-assertion-type:id-token-bearer";

/// At most this many issuers' discovery answers, and this many JWKS URIs, are cached (the oldest
/// entry makes room).
pub const MAX_CACHED_ISSUERS: usize = 1024;

/// Bodies beyond this are cut (token, discovery and JWKS answers are a few KiB).
const MAX_BODY: usize = 1 << 20;
/// A `Retry-After` beyond this is clamped.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Resolved endpoints of an issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub token_endpoint: String,
    pub jwks_uri: Option<String>,
}

/// Cheap to clone; clones share connections and caches.
#[derive(Clone)]
pub struct IdaasClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    timeout: Duration,
    /// Where requests may go.
    allowed: AllowedOrigins,
    /// Issuer (as given) -> discovered or fallback endpoints.
    discovery: Mutex<BoundedCache<Endpoints>>,
    /// jwks_uri -> its slot; the async lock serialises fetches of one URI.
    jwks: Mutex<BoundedCache<JwksSlot>>,
}

type JwksSlot = Arc<tokio::sync::Mutex<Option<JwksEntry>>>;

/// What a request goes to, for the reason when its origin is not allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// The issuer's discovery document.
    Issuer,
    /// A token endpoint or JWKS URI.
    Endpoint,
}

struct JwksEntry {
    keys: JwkSet,
    fetched: Instant,
    /// When this fetch was made because a `kid` was missing from the previous set.
    miss_refetched: Option<Instant>,
}

impl std::fmt::Debug for IdaasClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdaasClient")
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl IdaasClient {
    /// A client with the given timeouts, trusting the system roots plus the PEM certificates
    /// of `ca_file`. Redirects are not followed (a token endpoint that redirects would get the
    /// client's credentials re-sent elsewhere). A CA file that cannot be read or holds no valid
    /// certificate is a permanent error with reason `ca_file`.
    pub fn new(config: &HttpConfig) -> Result<Self, FetchError> {
        let permanent = |reason: &str, message: String| FetchError {
            class: ErrorClass::Permanent,
            reason: reason.to_owned(),
            message,
            request_id: None,
            retry_after: None,
        };
        let roots = match &config.ca_file {
            Some(path) => crate::http::load_ca_file(path).map_err(|m| permanent("ca_file", m))?,
            None => Vec::new(),
        };
        let timeouts = crate::http::Timeouts {
            connect: config.connect_timeout,
            request: config.timeout,
        };
        let http = crate::http::client(timeouts, &roots).map_err(|e| {
            let (reason, what) = match config.ca_file {
                Some(_) => ("ca_file", "with the CA file"),
                None => ("http_client", "at all"),
            };
            permanent(reason, format!("cannot build the HTTP client {what}: {e}"))
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                timeout: config.timeout,
                allowed: config.allowed.clone(),
                discovery: Mutex::new(BoundedCache::new(DISCOVERY_TTL, MAX_CACHED_ISSUERS)),
                jwks: Mutex::new(BoundedCache::new(JWKS_TTL, MAX_CACHED_ISSUERS)),
            }),
        })
    }

    /// Whether the issuer and the endpoints an M2MToken names may be sent requests (the same check
    /// every request passes): `IssuerNotAllowed` for the issuer, `EndpointNotAllowed` for an
    /// endpoint; both permanent. Empty endpoints are not looked at (discovery names them later).
    pub fn check_allowed(
        &self,
        issuer: &str,
        token_endpoint: Option<&str>,
        jwks_uri: Option<&str>,
    ) -> Result<(), FetchError> {
        self.allow(Target::Issuer, issuer)?;
        for url in [token_endpoint, jwks_uri].into_iter().flatten() {
            if !url.is_empty() {
                self.allow(Target::Endpoint, url)?;
            }
        }
        Ok(())
    }

    /// An error unless `url` is https (or a literal loopback emulator) on an allowed origin.
    fn allow(&self, target: Target, url: &str) -> Result<(), FetchError> {
        if self.inner.allowed.allows_str(url) {
            return Ok(());
        }
        let (reason, what) = match target {
            Target::Issuer => (ISSUER_NOT_ALLOWED, "the issuer URL"),
            Target::Endpoint => (ENDPOINT_NOT_ALLOWED, "the endpoint"),
        };
        tracing::debug!(url = %display_url(url), reason, "request refused: origin not allowed");
        Err(FetchError {
            class: ErrorClass::Permanent,
            reason: reason.to_owned(),
            message: format!(
                "{what} {} is not on an allowed origin ({}); no request was sent. Allow it with \
                 --allowed-issuers (IDAAS_PROJECTOR_ALLOWED_ISSUERS)",
                display_url(url),
                self.inner.allowed
            ),
            request_id: None,
            retry_after: None,
        })
    }

    /// The token endpoint and JWKS URI of an issuer.
    ///
    /// Non-empty overrides win. Otherwise `{issuer}/.well-known/openid-configuration` is read
    /// (cached per issuer for [`DISCOVERY_TTL`]); when discovery is not served (404, another
    /// 4xx, a non-JSON answer, no `token_endpoint`), the endpoints are `{issuer}/token` and
    /// `{issuer}/jwks`. A network failure, 408, 429 or 5xx on discovery is a transient error.
    pub async fn endpoints(
        &self,
        issuer: &str,
        token_endpoint: Option<&str>,
        jwks_uri: Option<&str>,
    ) -> Result<Endpoints, FetchError> {
        let token_endpoint = token_endpoint.filter(|s| !s.is_empty());
        let jwks_uri = jwks_uri.filter(|s| !s.is_empty());
        if let (Some(t), Some(j)) = (token_endpoint, jwks_uri) {
            return Ok(Endpoints {
                token_endpoint: t.to_owned(),
                jwks_uri: Some(j.to_owned()),
            });
        }
        let discovered = self.discover(issuer).await?;
        Ok(Endpoints {
            token_endpoint: token_endpoint
                .map(str::to_owned)
                .unwrap_or(discovered.token_endpoint),
            jwks_uri: jwks_uri.map(str::to_owned).or(discovered.jwks_uri),
        })
    }

    async fn discover(&self, issuer: &str) -> Result<Endpoints, FetchError> {
        let cached = self
            .inner
            .discovery
            .lock()
            .unwrap()
            .get(issuer, Instant::now());
        if let Some(e) = cached {
            return Ok(e);
        }
        let base = issuer.trim_end_matches('/');
        let url = format!("{base}/.well-known/openid-configuration");
        let fallback = Endpoints {
            token_endpoint: format!("{base}/token"),
            jwks_uri: Some(format!("{base}/jwks")),
        };
        let answer = self.get(Target::Issuer, &url).await?;
        let endpoints = if answer.status.is_success() {
            match parse_discovery(&answer.body) {
                Some((token_endpoint, jwks_uri)) => {
                    tracing::debug!(%issuer, ?token_endpoint, ?jwks_uri, "OIDC discovery");
                    Endpoints {
                        token_endpoint: token_endpoint.unwrap_or(fallback.token_endpoint),
                        jwks_uri: jwks_uri.or(fallback.jwks_uri),
                    }
                }
                None => {
                    tracing::debug!(url = %display_url(&url), "the discovery document is not JSON; using {{issuer}}/token and {{issuer}}/jwks");
                    fallback
                }
            }
        } else if is_transient_status(answer.status) {
            let mut e = http_error("GET", &url, answer.status, &answer.headers, &answer.body);
            e.class = ErrorClass::Transient;
            return Err(e);
        } else {
            tracing::debug!(url = %display_url(&url), status = answer.status.as_u16(), "OIDC discovery not served; using {{issuer}}/token and {{issuer}}/jwks");
            fallback
        };
        self.inner
            .discovery
            .lock()
            .unwrap()
            .insert(issuer, endpoints.clone(), Instant::now());
        Ok(endpoints)
    }

    /// Requests a token (OAuth 2.0 client_credentials) at the issuer's token endpoint, without
    /// checking it.
    pub async fn request_token(&self, req: &TokenRequest) -> Result<TokenResponse, FetchError> {
        let endpoints = self
            .endpoints(
                &req.issuer,
                req.token_endpoint.as_deref(),
                req.jwks_uri.as_deref(),
            )
            .await?;
        self.request_token_at(req, &endpoints.token_endpoint).await
    }

    /// Requests a token at a given token endpoint URL.
    ///
    /// Errors: `invalid_client`, `invalid_scope` and the other OAuth errors and 4xx statuses are
    /// permanent (reason = the error code, else `http_<status>`); 408, 429, 5xx, timeouts and
    /// connection errors are transient (reason `http_<status>`, `timeout`, `connect` or
    /// `network`), and so is a 4xx whose code is `temporarily_unavailable`, `server_error` or
    /// `slow_down` (reason = that code); a 2xx answer without a usable `access_token` is
    /// transient `bad_response`. A `private_key_jwt` key that is not an RSA PEM private key is
    /// permanent `invalid_private_key`.
    pub async fn request_token_at(
        &self,
        req: &TokenRequest,
        token_endpoint: &str,
    ) -> Result<TokenResponse, FetchError> {
        let mut form: Vec<(&str, String)> = vec![("grant_type", "client_credentials".to_owned())];
        let scope = req.scope_string();
        if !scope.is_empty() {
            form.push(("scope", scope));
        }
        let mut builder = self
            .inner
            .http
            .post(token_endpoint)
            .header(ACCEPT, "application/json");
        let method = match &req.credential {
            Credential::ClientSecretPost { client_secret } => {
                form.push(("client_id", req.client_id.clone()));
                form.push(("client_secret", client_secret.expose_secret().to_owned()));
                "client_secret_post"
            }
            Credential::ClientSecretBasic { client_secret } => {
                builder = builder.header(
                    AUTHORIZATION,
                    basic_authorization(&req.client_id, client_secret)?,
                );
                "client_secret_basic"
            }
            Credential::PrivateKeyJwt { private_key_pem } => {
                let assertion = client_assertion(
                    &req.client_id,
                    token_endpoint,
                    private_key_pem,
                    crate::time::unix_now(),
                )?;
                form.push(("client_id", req.client_id.clone()));
                form.push(("client_assertion_type", CLIENT_ASSERTION_TYPE.to_owned()));
                form.push(("client_assertion", assertion));
                "private_key_jwt"
            }
            Credential::FederatedOidc {
                credential_name,
                assertion,
            } => {
                form.push(("client_id", req.client_id.clone()));
                form.push((
                    "application_federated_credential_name",
                    credential_name.clone(),
                ));
                form.push(("client_assertion_type", FEDERATED_ASSERTION_TYPE.to_owned()));
                form.push(("client_assertion", federated_assertion(assertion)?));
                "federated_oidc"
            }
        };
        let url = display_url(token_endpoint);
        tracing::debug!(%url, client_id = %req.client_id, auth = method, scope = %req.scope_string(), "requesting a token");
        let answer = self
            .send(
                "POST",
                Target::Endpoint,
                token_endpoint,
                builder.form(&form),
            )
            .await?;
        drop(form);
        tracing::debug!(%url, status = answer.status.as_u16(), request_id = ?header_request_id(&answer.headers), "token endpoint answered");
        if !answer.status.is_success() {
            let e = http_error(
                "POST",
                token_endpoint,
                answer.status,
                &answer.headers,
                &answer.body,
            );
            tracing::debug!(%url, reason = %e.reason, class = ?e.class, request_id = ?e.request_id, "token request failed");
            return Err(e);
        }
        parse_token_response(&answer.body).map_err(|what| FetchError {
            class: ErrorClass::Transient,
            reason: "bad_response".to_owned(),
            message: format!("POST {url}: HTTP {} but {what}", answer.status.as_u16()),
            request_id: header_request_id(&answer.headers),
            retry_after: None,
        })
    }

    /// Obtains a token and checks it as RAM's AssumeRoleWithOIDC will: claims (issuer,
    /// audience, expiry, issuance time against `max_token_age`, asymmetric `alg`) and the
    /// signature against the issuer's JWKS, which must be served.
    pub async fn fetch_token(
        &self,
        req: &TokenRequest,
        now_unix: i64,
    ) -> Result<FetchedToken, RefreshError> {
        let endpoints = self
            .endpoints(
                &req.issuer,
                req.token_endpoint.as_deref(),
                req.jwks_uri.as_deref(),
            )
            .await?;
        // Discovered endpoints too: nothing is sent unless both may be reached.
        self.check_allowed(
            &req.issuer,
            Some(&endpoints.token_endpoint),
            endpoints.jwks_uri.as_deref(),
        )?;
        let response = self
            .request_token_at(req, &endpoints.token_endpoint)
            .await?;
        let expect = req.expectations();
        let claims = self
            .verify(
                response.access_token.expose_secret(),
                &expect,
                endpoints.jwks_uri.as_deref(),
                now_unix,
            )
            .await?;
        Ok(FetchedToken {
            token: response.access_token,
            claims,
        })
    }

    /// Checks a token as RAM will: [`jwt::decode_unverified`], [`crate::ram::check_claims`], then
    /// the signature against the JWKS at `jwks_uri`. A `kid` missing from the cached JWKS
    /// refetches it, at most once per [`JWKS_MIN_REFETCH`]. No JWKS URI, a JWKS that is not served
    /// (404) or cannot be fetched or read is a transient [`RefreshError::Fetch`] with reason
    /// `JWKSUnavailable` (a JWKS URI on an origin that is not allowed: `EndpointNotAllowed`): a
    /// token whose signature cannot be checked is not used.
    pub async fn verify(
        &self,
        token: &str,
        expect: &Expectations,
        jwks_uri: Option<&str>,
        now: i64,
    ) -> Result<TokenClaims, RefreshError> {
        let claims = jwt::decode_unverified(token).inspect_err(|e| {
            tracing::debug!(reason = e.reason(), "the token is not a JWT");
        })?;
        tracing::debug!(
            iss = %claims.iss, sub = ?claims.sub, aud = ?claims.aud, iat = claims.iat,
            exp = claims.exp, alg = %claims.alg, kid = ?claims.kid, "token claims"
        );
        if let Err(e) = crate::ram::check_claims(&claims, expect, now) {
            tracing::debug!(reason = e.reason(), error = %e, "token rejected");
            return Err(e.into());
        }
        let Some(jwks_uri) = jwks_uri else {
            return Err(jwks_unavailable("the issuer names no JWKS URI".to_owned()).into());
        };
        let set = self.jwks_for_kid(jwks_uri, claims.kid.as_deref()).await?;
        if let Err(e) = jwt::verify_signature(token, &set) {
            tracing::debug!(reason = e.reason(), kid = ?claims.kid, "token rejected");
            return Err(e.into());
        }
        tracing::debug!(kid = ?claims.kid, "token signature verified");
        Ok(claims)
    }

    /// The JWKS at `jwks_uri`, from the cache when fetched less than [`JWKS_TTL`] ago. Errors as
    /// in [`verify`](Self::verify): `JWKSUnavailable` (transient) or `EndpointNotAllowed`.
    pub async fn jwks(&self, jwks_uri: &str) -> Result<JwkSet, FetchError> {
        self.jwks_cached(jwks_uri, |_| true).await
    }

    /// Like [`jwks`](Self::jwks), but a cached set that lacks `kid` is refetched unless a
    /// refetch for a missing `kid` happened less than [`JWKS_MIN_REFETCH`] ago.
    async fn jwks_for_kid(&self, jwks_uri: &str, kid: Option<&str>) -> Result<JwkSet, FetchError> {
        self.jwks_cached(jwks_uri, |set| match kid {
            Some(kid) => set.find(kid).is_some(),
            None => true,
        })
        .await
    }

    /// The slot of `jwks_uri` in the bounded JWKS cache.
    fn jwks_slot(&self, jwks_uri: &str) -> JwksSlot {
        let now = Instant::now();
        let mut cache = self.inner.jwks.lock().unwrap();
        if let Some(slot) = cache.get(jwks_uri, now) {
            return slot;
        }
        let slot = JwksSlot::default();
        cache.insert(jwks_uri, slot.clone(), now);
        slot
    }

    async fn jwks_cached(
        &self,
        jwks_uri: &str,
        satisfies: impl Fn(&JwkSet) -> bool,
    ) -> Result<JwkSet, FetchError> {
        // Refused before a cache slot is made for it, so URIs that may not be fetched take no
        // room in the cache.
        self.allow(Target::Endpoint, jwks_uri)?;
        let slot = self.jwks_slot(jwks_uri);
        let mut entry = slot.lock().await;
        let mut miss_refetch = false;
        if let Some(cached) = &*entry
            && cached.fetched.elapsed() < JWKS_TTL
        {
            if satisfies(&cached.keys) {
                return Ok(cached.keys.clone());
            }
            // A kid is missing: refetch, but at most once a minute.
            if cached
                .miss_refetched
                .is_some_and(|at| at.elapsed() < JWKS_MIN_REFETCH)
            {
                tracing::debug!(jwks_uri = %display_url(jwks_uri), "key not in the JWKS, which was refetched less than a minute ago");
                return Ok(cached.keys.clone());
            }
            miss_refetch = true;
        }
        let keys = self.fetch_jwks(jwks_uri).await?;
        let now = Instant::now();
        *entry = Some(JwksEntry {
            keys: keys.clone(),
            fetched: now,
            miss_refetched: miss_refetch.then_some(now),
        });
        Ok(keys)
    }

    async fn fetch_jwks(&self, jwks_uri: &str) -> Result<JwkSet, FetchError> {
        let url = display_url(jwks_uri);
        let answer = match self.get(Target::Endpoint, jwks_uri).await {
            Ok(a) => a,
            Err(e) if e.reason == ENDPOINT_NOT_ALLOWED => return Err(e),
            Err(e) => return Err(jwks_unavailable(e.message)),
        };
        tracing::debug!(%url, status = answer.status.as_u16(), "JWKS fetched");
        if !answer.status.is_success() {
            let e = http_error(
                "GET",
                jwks_uri,
                answer.status,
                &answer.headers,
                &answer.body,
            );
            return Err(FetchError {
                request_id: e.request_id.clone(),
                ..jwks_unavailable(e.message)
            });
        }
        parse_jwks(&answer.body).ok_or_else(|| FetchError {
            request_id: header_request_id(&answer.headers),
            ..jwks_unavailable(format!(
                "GET {url}: the answer is not a JWKS (a JSON object with \"keys\")"
            ))
        })
    }

    async fn get(&self, target: Target, url: &str) -> Result<Answer, FetchError> {
        let builder = self.inner.http.get(url).header(ACCEPT, "application/json");
        self.send("GET", target, url, builder).await
    }

    /// Sends a request and reads the (size-capped) body; transport errors become
    /// [`FetchError`]s.
    ///
    /// Nothing is sent unless `url` is on an allowed origin (`IssuerNotAllowed` or
    /// `EndpointNotAllowed`, by `target`); redirects are never followed, so no other URL is
    /// reached.
    async fn send(
        &self,
        method: &str,
        target: Target,
        url: &str,
        builder: reqwest::RequestBuilder,
    ) -> Result<Answer, FetchError> {
        self.allow(target, url)?;
        let transport = |e: reqwest::Error| transport_error(method, url, &e, self.inner.timeout);
        let mut response = builder.send().await.map_err(transport)?;
        let status = response.status();
        let headers = std::mem::take(response.headers_mut());
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            let room = MAX_BODY - body.len();
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if body.len() == MAX_BODY {
                break;
            }
        }
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

/// A read HTTP answer.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// A transient `JWKSUnavailable` error: the signature cannot be checked.
fn jwks_unavailable(what: String) -> FetchError {
    FetchError {
        class: ErrorClass::Transient,
        reason: JWKS_UNAVAILABLE.to_owned(),
        message: format!(
            "the JWKS is unavailable, so the token's signature cannot be checked: {what}"
        ),
        request_id: None,
        retry_after: None,
    }
}

/// `Authorization: Basic` per RFC 6749 §2.3.1: id and secret form-urlencoded before base64.
fn basic_authorization(
    client_id: &str,
    client_secret: &SecretString,
) -> Result<HeaderValue, FetchError> {
    let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = format!(
        "{}:{}",
        encode(client_id),
        encode(client_secret.expose_secret())
    );
    let mut value =
        HeaderValue::from_str(&format!("Basic {}", STANDARD.encode(pair))).map_err(|_| {
            FetchError {
                class: ErrorClass::Permanent,
                reason: "invalid_client_secret".to_owned(),
                message: "the client credentials cannot form an Authorization header".to_owned(),
                request_id: None,
                retry_after: None,
            }
        })?;
    value.set_sensitive(true);
    Ok(value)
}

/// The RFC 7523 client assertion: RS256, iss = sub = client_id, aud = the token endpoint,
/// a random 128-bit hex jti, iat = now, exp = now + 5 minutes.
fn client_assertion(
    client_id: &str,
    token_endpoint: &str,
    private_key_pem: &SecretString,
    now: i64,
) -> Result<String, FetchError> {
    let invalid = || FetchError {
        class: ErrorClass::Permanent,
        reason: "invalid_private_key".to_owned(),
        message: "the private_key_jwt key is not a usable PEM RSA private key (PKCS#1 \
                  \"RSA PRIVATE KEY\" or PKCS#8 \"PRIVATE KEY\", unencrypted)"
            .to_owned(),
        request_id: None,
        retry_after: None,
    };
    let key = EncodingKey::from_rsa_pem(private_key_pem.expose_secret().as_bytes())
        .map_err(|_| invalid())?;
    let claims = json!({
        "iss": client_id,
        "sub": client_id,
        "aud": token_endpoint,
        "jti": format!("{:032x}", fastrand::u128(..)),
        "iat": now,
        "exp": now + CLIENT_ASSERTION_LIFETIME_SECS,
    });
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key).map_err(|_| invalid())
}

/// The token endpoint's success body, or what is wrong with it (never quoting it).
/// Public so the `token_response` fuzz target and its regression tests can reach it.
pub fn parse_token_response(body: &[u8]) -> Result<TokenResponse, &'static str> {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        return Err("the body is not a JSON object");
    };
    let access_token = match map.get("access_token") {
        Some(Value::String(s)) if !s.is_empty() => SecretString::from(s.as_str()),
        _ => return Err("the body has no access_token"),
    };
    let token_type = map
        .get("token_type")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(TokenResponse {
        access_token,
        token_type,
        expires_in: seconds(map.get("expires_in")),
        expires_at: seconds(map.get("expires_at")),
    })
}

/// A number of seconds: a JSON number (integer or float) or a numeric string.
fn seconds(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && f.abs() < 9.0e15)
                .map(|f| f as i64)
        }),
        Value::String(s) => {
            let s = s.trim();
            s.parse::<i64>().ok().or_else(|| {
                s.parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite() && f.abs() < 9.0e15)
                    .map(|f| f as i64)
            })
        }
        _ => None,
    }
}

/// `(token_endpoint, jwks_uri)` of a discovery document; `None` when it is not a JSON object.
fn parse_discovery(body: &[u8]) -> Option<(Option<String>, Option<String>)> {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    let url = |name: &str| {
        map.get(name)
            .and_then(Value::as_str)
            .filter(|s| url::Url::parse(s).is_ok())
            .map(str::to_owned)
    };
    Some((url("token_endpoint"), url("jwks_uri")))
}

/// A JWKS; keys this crate cannot represent are skipped rather than failing the whole set.
fn parse_jwks(body: &[u8]) -> Option<JwkSet> {
    let Ok(Value::Object(mut map)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    let Some(Value::Array(keys)) = map.remove("keys") else {
        return None;
    };
    let keys = keys
        .into_iter()
        .filter_map(|k| {
            serde_json::from_value::<Jwk>(k)
                .inspect_err(|e| tracing::debug!(error = %e, "skipping a JWKS key"))
                .ok()
        })
        .collect();
    Some(JwkSet { keys })
}

fn is_transient_status(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
}

/// OAuth error codes that say "try again" whatever the status.
fn is_transient_code(code: &str) -> bool {
    matches!(
        code,
        "temporarily_unavailable" | "server_error" | "slow_down"
    )
}

/// A FetchError for a non-success HTTP answer. The body's error code, description and
/// request ID (OAuth `{error, error_description, request_id}` or Alibaba Cloud
/// `{Code, Message, RequestId}`) are used; nothing else of the body is quoted.
fn http_error(
    method: &str,
    url: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> FetchError {
    let map = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    let field = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| map.get(*n).and_then(Value::as_str))
            .map(server_text)
            .filter(|s| !s.is_empty())
    };
    let code = field(&["error", "Code", "code"]).filter(|c| is_code(c));
    let description = field(&["error_description", "Message", "message"]);
    let request_id = field(&["request_id", "RequestId", "requestId"])
        .filter(|c| is_code(c))
        .or_else(|| header_request_id(headers));
    let transient = is_transient_status(status) || code.as_deref().is_some_and(is_transient_code);
    let retry_after =
        if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
            headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()))
        } else {
            None
        };

    let mut message = format!("{method} {}: HTTP {}", display_url(url), status.as_u16());
    if let Some(code) = &code {
        message.push_str(&format!(" {code}"));
    }
    if let Some(d) = &description {
        message.push_str(&format!(": {d}"));
    }
    if status.is_redirection()
        && let Some(location) = headers
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
    {
        message.push_str(&format!(
            " (redirects to {}; set the URL it names)",
            display_url(location)
        ));
    }
    if let Some(id) = &request_id {
        message.push_str(&format!(" (request ID {id})"));
    }
    if let Some(after) = retry_after {
        message.push_str(&format!(" (retry after {} s)", after.as_secs()));
    }
    // The reason is a metric label: the server's code only where it names a client problem
    // (4xx); a busy or failing server is `http_<status>` whatever its body says.
    let reason = match code {
        Some(code) if status.is_client_error() && !is_transient_status(status) => code,
        _ => format!("http_{}", status.as_u16()),
    };
    FetchError {
        class: if transient {
            ErrorClass::Transient
        } else {
            ErrorClass::Permanent
        },
        reason,
        message,
        request_id,
        retry_after,
    }
}

/// A plausible error code or request ID: short, no spaces or odd characters.
fn is_code(s: &str) -> bool {
    s.len() <= 80
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

fn header_request_id(headers: &HeaderMap) -> Option<String> {
    ["x-request-id", "x-acs-request-id", "request-id"]
        .iter()
        .find_map(|n| headers.get(*n).and_then(|v| v.to_str().ok()))
        .filter(|v| is_code(v))
        .map(str::to_owned)
}

/// `Retry-After`: delay-seconds or an IMF-fixdate, clamped to [`MAX_RETRY_AFTER`].
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let after = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = crate::time::parse_http_date(value)?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(after.min(MAX_RETRY_AFTER))
}

/// A transport failure (no HTTP answer, or the body could not be read).
fn transport_error(method: &str, url: &str, e: &reqwest::Error, timeout: Duration) -> FetchError {
    let url_shown = display_url(url);
    let (class, reason, message) = if e.is_builder() {
        (
            ErrorClass::Permanent,
            "invalid_url",
            format!("{method} {url_shown}: invalid request: {}", error_chain(e)),
        )
    } else if e.is_timeout() {
        (
            ErrorClass::Transient,
            "timeout",
            format!(
                "{method} {url_shown}: timed out (limit {} ms)",
                timeout.as_millis()
            ),
        )
    } else if e.is_connect() {
        (
            ErrorClass::Transient,
            "connect",
            format!("{method} {url_shown}: cannot connect: {}", error_chain(e)),
        )
    } else {
        (
            ErrorClass::Transient,
            "network",
            format!("{method} {url_shown}: {}", error_chain(e)),
        )
    };
    tracing::debug!(url = %url_shown, reason, "request failed");
    FetchError {
        class,
        reason: reason.to_owned(),
        message,
        request_id: None,
        retry_after: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("99999999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(
            parse_retry_after("Sun, 06 Foo 1994 08:50:07 GMT", now),
            None
        );
    }

    #[test]
    fn error_bodies() {
        let h = HeaderMap::new();
        let e = http_error(
            "POST",
            "https://u:p@idaas.example/token?x=1",
            StatusCode::UNAUTHORIZED,
            &h,
            br#"{"error":"invalid_client","error_description":"bad\nsecret","request_id":"r-1"}"#,
        );
        assert_eq!(e.class, ErrorClass::Permanent);
        assert_eq!(e.reason, "invalid_client");
        assert_eq!(e.request_id.as_deref(), Some("r-1"));
        assert_eq!(
            e.message,
            "POST https://idaas.example/token: HTTP 401 invalid_client: bad secret (request ID r-1)"
        );

        let e = http_error(
            "POST",
            "https://idaas.example/token",
            StatusCode::SERVICE_UNAVAILABLE,
            &h,
            br#"{"Code":"ServiceUnavailable","Message":"busy","RequestId":"ABC-1"}"#,
        );
        assert_eq!(
            (e.class, e.reason.as_str(), e.request_id.as_deref()),
            (ErrorClass::Transient, "http_503", Some("ABC-1"))
        );
        assert!(
            e.message.contains("HTTP 503 ServiceUnavailable: busy"),
            "{}",
            e.message
        );

        let e = http_error(
            "POST",
            "https://idaas.example/token",
            StatusCode::BAD_GATEWAY,
            &h,
            b"<html>bad gateway</html>",
        );
        assert_eq!(
            (e.class, e.reason.as_str()),
            (ErrorClass::Transient, "http_502")
        );

        let e = http_error("POST", "https://i/token", StatusCode::FORBIDDEN, &h, b"");
        assert_eq!(
            (e.class, e.reason.as_str()),
            (ErrorClass::Permanent, "http_403")
        );
        let e = http_error(
            "POST",
            "https://i/token",
            StatusCode::REQUEST_TIMEOUT,
            &h,
            b"",
        );
        assert_eq!(
            (e.class, e.reason.as_str()),
            (ErrorClass::Transient, "http_408")
        );
        let e = http_error(
            "POST",
            "https://i/token",
            StatusCode::BAD_REQUEST,
            &h,
            br#"{"error":"temporarily_unavailable"}"#,
        );
        assert_eq!(
            (e.class, e.reason.as_str()),
            (ErrorClass::Transient, "temporarily_unavailable")
        );
        let e = http_error(
            "POST",
            "https://i/token",
            StatusCode::BAD_REQUEST,
            &h,
            br#"{"Code":"InvalidParameter.Scope","Message":"bad scope"}"#,
        );
        assert_eq!(
            (e.class, e.reason.as_str()),
            (ErrorClass::Permanent, "InvalidParameter.Scope")
        );
        // A code with spaces is not a code.
        let e = http_error(
            "POST",
            "https://i/token",
            StatusCode::BAD_REQUEST,
            &h,
            br#"{"error":"not a code"}"#,
        );
        assert_eq!(e.reason, "http_400");
    }

    #[test]
    fn token_responses() {
        let r = parse_token_response(
            br#"{"access_token":"a.b.c","token_type":"Bearer","expires_in":"3600","expires_at":1700000000}"#,
        )
        .unwrap();
        assert_eq!(r.access_token.expose_secret(), "a.b.c");
        assert_eq!(r.token_type.as_deref(), Some("Bearer"));
        assert_eq!(
            (r.expires_in, r.expires_at),
            (Some(3600), Some(1_700_000_000))
        );
        let r = parse_token_response(br#"{"access_token":"x","expires_in":7199.5}"#).unwrap();
        assert_eq!(r.expires_in, Some(7199));
        assert!(parse_token_response(br#"{"token_type":"Bearer"}"#).is_err());
        assert!(parse_token_response(br#"{"access_token":""}"#).is_err());
        assert!(parse_token_response(b"<html>").is_err());
    }

    #[test]
    fn basic_authorization_form_encodes_first() {
        let v = basic_authorization("app id", &SecretString::from("s:e/c+r%t")).unwrap();
        assert!(v.is_sensitive());
        let b64 = v.to_str().unwrap().strip_prefix("Basic ").unwrap();
        let decoded = String::from_utf8(STANDARD.decode(b64).unwrap()).unwrap();
        assert_eq!(decoded, "app+id:s%3Ae%2Fc%2Br%25t");
    }

    #[test]
    fn bad_private_key() {
        for pem in [
            "",
            "not a key",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ] {
            let e = client_assertion("app", "https://i/token", &SecretString::from(pem), 0)
                .unwrap_err();
            assert_eq!(
                (e.class, e.reason.as_str()),
                (ErrorClass::Permanent, "invalid_private_key")
            );
            assert!(!e.message.contains("AAAA"));
        }
    }

    #[test]
    fn many_issuers_keep_the_caches_at_their_cap() {
        let client = IdaasClient::new(&HttpConfig::default()).unwrap();
        let endpoints = Endpoints {
            token_endpoint: "https://i.aliyunidaas.com/token".to_owned(),
            jwks_uri: None,
        };
        for i in 0..MAX_CACHED_ISSUERS + 100 {
            let issuer = format!("https://i{i}.aliyunidaas.com");
            let mut cache = client.inner.discovery.lock().unwrap();
            cache.insert(&issuer, endpoints.clone(), Instant::now());
            drop(cache);
            client.jwks_slot(&format!("{issuer}/jwks"));
        }
        assert_eq!(
            client.inner.discovery.lock().unwrap().len(),
            MAX_CACHED_ISSUERS
        );
        assert_eq!(client.inner.jwks.lock().unwrap().len(), MAX_CACHED_ISSUERS);
    }

    #[test]
    fn bad_ca_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let missing = dir.join("missing.pem");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no certificates here\n").unwrap();
        let garbage = dir.join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        for path in [missing, empty, garbage] {
            let config = HttpConfig {
                ca_file: Some(path.clone()),
                ..HttpConfig::default()
            };
            let e = IdaasClient::new(&config).unwrap_err();
            assert_eq!(
                (e.class, e.reason.as_str()),
                (ErrorClass::Permanent, "ca_file"),
                "{e}"
            );
            assert!(e.message.contains(&path.display().to_string()));
        }
    }
}
