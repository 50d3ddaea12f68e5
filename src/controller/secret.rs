//! The Secret the projector writes, and reading token times back from it. Pure.

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;
use serde_json::{Value, json};

use crate::crd::M2MToken;
use crate::idaas::jwt;
use crate::time::{parse_rfc3339, rfc3339};

/// Key of the token in the Secret.
pub const TOKEN_KEY: &str = "token";
/// Label every managed Secret carries.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Its value, and the field manager of server-side apply.
pub const MANAGER: &str = "idaas-projector";
/// Label naming the M2MToken a Secret belongs to.
pub const TOKEN_LABEL: &str = "idaas-projector.io/m2m-token";
/// RFC 3339 issue time of the token in the Secret.
pub const ISSUED_AT: &str = "idaas-projector.io/issued-at";
/// RFC 3339 expiry of the token in the Secret.
pub const EXPIRES_AT: &str = "idaas-projector.io/expires-at";
/// The M2MToken `metadata.generation` the token was fetched for.
pub const GENERATION: &str = "idaas-projector.io/generation";
/// The credentials Secret's `resourceVersion` the token was fetched with.
pub const CREDENTIALS_VERSION: &str = "idaas-projector.io/credentials-version";

/// What the projector needs to know about the token a Secret holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredToken {
    /// The raw token; compared, never logged.
    pub token: String,
    pub iat: i64,
    /// min(`exp`, the `expires-at` annotation).
    pub exp: i64,
    pub sub: Option<String>,
    pub generation: Option<i64>,
    pub credentials_version: Option<String>,
}

impl std::fmt::Display for StoredToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "token issued {} expiring {}",
            rfc3339(self.iat),
            rfc3339(self.exp)
        )
    }
}

/// Whether the Secret is one this M2MToken manages (label and controller owner reference).
pub fn is_managed_by(secret: &Secret, token: &M2MToken) -> bool {
    let labelled = secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .is_some_and(|v| v == MANAGER);
    let uid = token.metadata.uid.as_deref();
    let owned = secret
        .metadata
        .owner_references
        .as_ref()
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r.controller == Some(true) && Some(r.uid.as_str()) == uid)
        });
    labelled && owned
}

/// Reads the token back from a managed Secret. `None` when it holds no parsable token.
pub fn read(secret: &Secret) -> Option<StoredToken> {
    let bytes = secret.data.as_ref()?.get(TOKEN_KEY)?;
    let token = std::str::from_utf8(&bytes.0).ok()?.trim().to_owned();
    let claims = jwt::decode_unverified(&token).ok()?;
    let annotations = secret.metadata.annotations.as_ref();
    let annotation = |k: &str| annotations.and_then(|a| a.get(k)).cloned();
    let exp = annotation(EXPIRES_AT)
        .and_then(|s| parse_rfc3339(&s))
        .map_or(claims.exp, |a| a.min(claims.exp));
    Some(StoredToken {
        token,
        iat: claims.iat,
        exp,
        sub: claims.sub,
        generation: annotation(GENERATION).and_then(|g| g.parse().ok()),
        credentials_version: annotation(CREDENTIALS_VERSION),
    })
}

/// The owner reference that makes the M2MToken the Secret's controller.
pub fn owner_reference(token: &M2MToken) -> Option<OwnerReference> {
    token.controller_owner_ref(&())
}

/// The server-side-apply body of the managed Secret.
#[allow(clippy::too_many_arguments)]
pub fn desired(
    token: &M2MToken,
    secret_name: &str,
    raw_token: &str,
    iat: i64,
    exp: i64,
    credentials_version: Option<&str>,
) -> Value {
    let name = token.metadata.name.clone().unwrap_or_default();
    let mut labels = BTreeMap::new();
    labels.insert(MANAGED_BY_LABEL.to_owned(), MANAGER.to_owned());
    labels.insert(TOKEN_LABEL.to_owned(), name);
    let mut annotations = BTreeMap::new();
    annotations.insert(ISSUED_AT.to_owned(), rfc3339(iat));
    annotations.insert(EXPIRES_AT.to_owned(), rfc3339(exp));
    if let Some(g) = token.metadata.generation {
        annotations.insert(GENERATION.to_owned(), g.to_string());
    }
    if let Some(v) = credentials_version {
        annotations.insert(CREDENTIALS_VERSION.to_owned(), v.to_owned());
    }
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": secret_name,
            "namespace": token.metadata.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": owner_reference(token).into_iter().collect::<Vec<_>>(),
        },
        "type": "Opaque",
        "data": {
            TOKEN_KEY: base64::engine::general_purpose::STANDARD.encode(raw_token.as_bytes()),
        },
    })
}
