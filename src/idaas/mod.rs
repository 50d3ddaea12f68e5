//! The IDaaS side: OAuth 2.0 client_credentials token requests and the checks RAM's
//! AssumeRoleWithOIDC will apply to the token.
//!
//! - [`client`]: the HTTP client (discovery, token endpoint, JWKS cache).
//! - [`jwt`]: pure token checks (claims and signature), named by RAM's error codes.
//! - [`check`]: every check RAM applies to one token, as a report (`check`, `doctor`).
//! - [`error`]: typed errors that say permanent or transient.
//! - [`allow`]: the origins requests may go to (`--allowed-issuers`), checked before every request.
//!
//! No token, client secret or private key is ever formatted into an error or a log line: they are
//! held in [`secrecy::SecretString`], whose `Debug` prints `[REDACTED]`.

pub mod allow;
pub(crate) mod cache;
pub mod check;
pub mod client;
pub mod error;
pub mod jwt;

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

pub use allow::{AllowedOrigins, DEFAULT_ALLOWED_ISSUERS, OriginPattern};
pub use client::IdaasClient;
pub use error::{CheckError, ErrorClass, FetchError, RefreshError};
pub use jwt::TokenClaims;

/// How the client application authenticates at the token endpoint, with its secret material.
#[derive(Clone)]
pub enum Credential {
    /// `client_id` and `client_secret` as form fields (the IDaaS curl example).
    ClientSecretPost { client_secret: SecretString },
    /// `client_id` and `client_secret` in an HTTP Basic `Authorization` header.
    ClientSecretBasic { client_secret: SecretString },
    /// RFC 7523 client assertion: a JWT with iss = sub = client_id, aud = the token endpoint,
    /// a random jti, iat, exp about 5 minutes later, signed RS256 with this PEM private key.
    PrivateKeyJwt { private_key_pem: SecretString },
    /// IDaaS application federated credential: an OIDC token from an issuer the M2M
    /// application trusts (a Kubernetes ServiceAccount token) as the client assertion, with
    /// the federated credential's name. No client secret at all.
    FederatedOidc {
        /// `application_federated_credential_name`.
        credential_name: String,
        /// The OIDC token, or where to read it.
        assertion: Assertion,
    },
}

/// Where a federated client assertion comes from.
#[derive(Clone)]
pub enum Assertion {
    /// This token (the projector requests a fresh ServiceAccount token for each refresh).
    Token(SecretString),
    /// Read from this file before every request: another agent keeps it fresh (a projected
    /// ServiceAccount token, a CI system's OIDC token).
    File(std::path::PathBuf),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credential::ClientSecretPost { .. } => "ClientSecretPost([REDACTED])",
            Credential::ClientSecretBasic { .. } => "ClientSecretBasic([REDACTED])",
            Credential::PrivateKeyJwt { .. } => "PrivateKeyJwt([REDACTED])",
            Credential::FederatedOidc { .. } => "FederatedOidc([REDACTED])",
        })
    }
}

/// Everything needed to obtain and check one token.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    /// The issuer URL; the token's `iss` must equal it.
    pub issuer: String,
    /// Overrides discovery.
    pub token_endpoint: Option<String>,
    /// Overrides discovery.
    pub jwks_uri: Option<String>,
    /// The resource server's audience identifier; `aud` must contain it.
    pub audience: String,
    /// Scopes; each sent as `<audience>|<scope>`, joined by spaces.
    pub scopes: Vec<String>,
    pub client_id: String,
    pub credential: Credential,
    /// RAM's "earliest issuance time allowed".
    pub max_token_age: Duration,
}

impl TokenRequest {
    /// What the token must satisfy: [`Expectations::new`] of the issuer, the audience and the
    /// maximum token age.
    pub fn expectations(&self) -> crate::ram::Expectations {
        crate::ram::Expectations::new(&self.issuer, &self.audience, self.max_token_age)
    }

    /// The `scope` form field: `"<audience>|<scope>"` joined by spaces.
    pub fn scope_string(&self) -> String {
        self.scopes
            .iter()
            .map(|s| format!("{}|{}", self.audience, s))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// HTTP settings of the client.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Extra PEM CA certificates, trusted on top of the system roots.
    pub ca_file: Option<PathBuf>,
    /// Where requests may go; checked before each one. Default: [`DEFAULT_ALLOWED_ISSUERS`].
    pub allowed: AllowedOrigins,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
            ca_file: None,
            allowed: AllowedOrigins::default(),
        }
    }
}

/// The token endpoint's success answer.
pub struct TokenResponse {
    pub access_token: SecretString,
    pub token_type: Option<String>,
    /// Seconds, from `expires_in` (a number or a numeric string).
    pub expires_in: Option<i64>,
    /// Unix seconds, from `expires_at` when the server sends it.
    pub expires_at: Option<i64>,
}

/// A token that passed every check.
#[derive(Clone)]
pub struct FetchedToken {
    /// The raw JWT.
    pub token: SecretString,
    pub claims: TokenClaims,
}

impl std::fmt::Debug for FetchedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchedToken")
            .field("token", &"[REDACTED]")
            .field("claims", &self.claims)
            .finish()
    }
}
