//! `federated_oidc`: a fresh ServiceAccount token for each refresh, from the TokenRequest API,
//! sent to IDaaS as the client assertion. It is never stored or logged.

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use kube::api::PostParams;
use secrecy::SecretString;

use super::status::reason;
use crate::crd::ServiceAccountAssertion;
use crate::idaas::{ErrorClass, FetchError};

/// Requests a token of `sa` (in `namespace`) for its audience and lifetime, bound to nothing
/// else. A missing ServiceAccount, a refused request or any other failure is a transient
/// [`FetchError`] with its own reason: the usual backoff applies, and the condition says what to
/// do.
pub async fn service_account_token(
    client: &kube::Client,
    namespace: &str,
    sa: &ServiceAccountAssertion,
) -> Result<SecretString, FetchError> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![sa.audience.clone()],
            expiration_seconds: Some(sa.expiration_seconds),
            bound_object_ref: None,
        },
        ..TokenRequest::default()
    };
    let answer = api
        .create_token_request(&sa.name, &PostParams::default(), &request)
        .await
        .map_err(|e| token_request_error(namespace, &sa.name, &e))?;
    answer
        .status
        .map(|s| s.token)
        .filter(|t| !t.is_empty())
        .map(SecretString::from)
        .ok_or_else(|| FetchError {
            class: ErrorClass::Transient,
            reason: reason::TOKEN_REQUEST_FAILED.to_owned(),
            message: format!(
                "the TokenRequest for ServiceAccount {:?} in namespace {namespace:?} returned no token",
                sa.name
            ),
            request_id: None,
            retry_after: None,
        })
}

/// What a failed TokenRequest means, and what to do about it.
pub fn token_request_error(namespace: &str, name: &str, e: &kube::Error) -> FetchError {
    let status = match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    };
    let (reason, message) = match status {
        Some(404) => (
            reason::SERVICE_ACCOUNT_NOT_FOUND,
            format!(
                "ServiceAccount {name:?} not found in namespace {namespace:?}: create it, or name another in \
                 spec.clientAuth.serviceAccount.name"
            ),
        ),
        Some(403) => (
            reason::TOKEN_REQUEST_FORBIDDEN,
            format!(
                "the projector may not request a token for ServiceAccount {name:?} in namespace {namespace:?}: \
                 grant it create on serviceaccounts/token there (the chart does, cluster-wide or in rbac.namespaces)"
            ),
        ),
        _ => (
            reason::TOKEN_REQUEST_FAILED,
            format!(
                "the TokenRequest for ServiceAccount {name:?} in namespace {namespace:?} failed: {e}"
            ),
        ),
    };
    FetchError {
        class: ErrorClass::Transient,
        reason: reason.to_owned(),
        message,
        request_id: None,
        retry_after: None,
    }
}
