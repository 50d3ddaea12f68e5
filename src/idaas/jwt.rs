//! Pure token checks, as RAM's AssumeRoleWithOIDC applies them.

/// What the token must satisfy.
#[derive(Debug, Clone)]
pub struct Expectations {
    pub issuer: String,
    /// `aud` must contain one of these (RAM's OIDC provider allows up to 50 client IDs).
    pub audiences: Vec<String>,
    /// RAM's "earliest issuance time allowed", in seconds.
    pub max_token_age_secs: u64,
    /// Allowed clock skew for `iat` in the future.
    pub leeway_secs: u64,
}

/// The claims the projector and RAM care about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    pub alg: String,
    pub kid: Option<String>,
    pub iss: String,
    pub sub: Option<String>,
    /// `aud` as a list (a single string becomes one element).
    pub aud: Vec<String>,
    pub iat: i64,
    pub exp: i64,
}
