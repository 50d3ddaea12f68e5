//! The IDaaS HTTP client: discovery, the token endpoint, the JWKS cache.

use super::{FetchError, FetchedToken, HttpConfig, RefreshError, TokenRequest, TokenResponse};

/// Resolved endpoints of an issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub token_endpoint: String,
    pub jwks_uri: Option<String>,
}

/// Cheap to clone; clones share connections and caches.
#[derive(Clone)]
pub struct IdaasClient {}

impl IdaasClient {
    pub fn new(_config: &HttpConfig) -> Result<Self, FetchError> {
        todo!()
    }

    pub async fn endpoints(
        &self,
        _issuer: &str,
        _token_endpoint: Option<&str>,
        _jwks_uri: Option<&str>,
    ) -> Result<Endpoints, FetchError> {
        todo!()
    }

    pub async fn request_token(&self, _req: &TokenRequest) -> Result<TokenResponse, FetchError> {
        todo!()
    }

    pub async fn fetch_token(
        &self,
        _req: &TokenRequest,
        _now_unix: i64,
    ) -> Result<FetchedToken, RefreshError> {
        todo!()
    }
}
