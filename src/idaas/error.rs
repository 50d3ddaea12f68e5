//! Errors of the IDaaS client and the token checks.

use std::time::Duration;

use crate::ram::code;

/// Reasons of [`FetchError`]s the client makes itself (besides `timeout`, `connect`, `network`,
/// `http_<status>`, `bad_response`, ...).
pub mod reason {
    /// `spec.issuer` (its discovery document) is not an allowed origin: no request was sent.
    pub const ISSUER_NOT_ALLOWED: &str = "IssuerNotAllowed";
    /// A token endpoint or JWKS URI (configured or discovered) is not an allowed origin: no
    /// request was sent there.
    pub const ENDPOINT_NOT_ALLOWED: &str = "EndpointNotAllowed";
    /// The JWKS is missing (404) or cannot be fetched or read: the signature cannot be checked,
    /// so the token is not used.
    pub const JWKS_UNAVAILABLE: &str = "JWKSUnavailable";
}

/// Whether retrying soon can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The configuration must change first (`invalid_client`, `unauthorized_client`,
    /// `invalid_scope`, other 4xx): retry slowly.
    Permanent,
    /// Timeouts, connection errors, 5xx, 429: retry with backoff.
    Transient,
}

/// A failed call to the token endpoint, the discovery document or the JWKS.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct FetchError {
    pub class: ErrorClass,
    /// Short machine reason, used as the condition reason and metric label: the OAuth `error`
    /// (`invalid_client`, ...) or the IDaaS `Code`, else `timeout`, `connect`, `http_<status>`,
    /// `bad_response`.
    pub reason: String,
    /// One human line; names the URL and what went wrong, never a secret or token.
    pub message: String,
    /// The server's request ID, when it sent one.
    pub request_id: Option<String>,
    /// From `Retry-After` on 429 or 503.
    pub retry_after: Option<Duration>,
}

/// A token that RAM's AssumeRoleWithOIDC would reject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    #[error("not a JWT: {0}")]
    NotJwt(String),
    #[error("algorithm {0} is not asymmetric (RAM accepts RS*, PS* and ES* only)")]
    SymmetricAlgorithm(String),
    #[error("iss {got:?} does not equal the issuer {want:?}")]
    IssuerNotMatch { got: String, want: String },
    #[error("aud {got:?} does not contain the audience {want:?}")]
    AudienceNotMatch { got: Vec<String>, want: String },
    #[error("the token expired at {exp}")]
    Expired { exp: i64 },
    #[error("iat {iat} is more than 60 s in the future")]
    IssuedInFuture { iat: i64 },
    #[error("the token was issued at {iat}, longer ago than the issuance limit of {limit_secs} s")]
    IssuedTooLongAgo { iat: i64, limit_secs: u64 },
    #[error("no key in the issuer's JWKS matches kid {}", .0.as_deref().unwrap_or("(none)"))]
    UnknownKey(Option<String>),
    #[error("the signature does not verify against the issuer's JWKS")]
    InvalidSignature,
}

impl CheckError {
    /// RAM's error code for this rejection.
    pub fn ram_code(&self) -> &'static str {
        match self {
            CheckError::NotJwt(_) | CheckError::SymmetricAlgorithm(_) => code::INVALID,
            CheckError::IssuerNotMatch { .. } => code::ISSUER_NOT_MATCH,
            CheckError::AudienceNotMatch { .. } => code::AUDIENCE_NOT_MATCH,
            CheckError::Expired { .. } => code::EXPIRED,
            CheckError::IssuedInFuture { .. } | CheckError::IssuedTooLongAgo { .. } => {
                code::ISSUE_TIME_INVALID
            }
            CheckError::UnknownKey(_) | CheckError::InvalidSignature => code::INVALID_SIGNATURE,
        }
    }

    /// Short label for conditions and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            CheckError::NotJwt(_) => "NotJWT",
            CheckError::SymmetricAlgorithm(_) => "SymmetricAlgorithm",
            CheckError::IssuerNotMatch { .. } => "IssuerNotMatch",
            CheckError::AudienceNotMatch { .. } => "AudienceNotMatch",
            CheckError::Expired { .. } => "Expired",
            CheckError::IssuedInFuture { .. } => "IssuedInFuture",
            CheckError::IssuedTooLongAgo { .. } => "IssuedTooLongAgo",
            CheckError::UnknownKey(_) => "UnknownKey",
            CheckError::InvalidSignature => "InvalidSignature",
        }
    }
}

/// Why a refresh produced no usable token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RefreshError {
    /// The token (or discovery/JWKS) request failed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// A token came back but fails a check: it is never published.
    #[error("token rejected ({code}): {0}", code = .0.ram_code())]
    Rejected(#[from] CheckError),
}
