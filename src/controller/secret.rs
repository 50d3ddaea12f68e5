//! The Secret the projector writes, and reading token times back from it. Pure.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

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

/// Label a credentials Secret must carry, with the value `"true"`, for the projector to use it.
pub const CLIENT_CREDENTIALS_LABEL: &str = "idaas-projector.io/client-credentials";
/// Annotation of a credentials Secret: the comma-separated names of the M2MTokens (same
/// namespace) that may use it; when absent, every M2MToken of the namespace may.
pub const ALLOWED_M2M_TOKENS: &str = "idaas-projector.io/allowed-m2m-tokens";

/// What the projector needs to know about the token a Secret holds.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredToken {
    /// The raw token; compared, never logged (`Debug` leaves it out).
    pub token: String,
    pub iat: i64,
    /// min(`exp`, the `expires-at` annotation).
    pub exp: i64,
    pub sub: Option<String>,
    pub generation: Option<i64>,
    pub credentials_version: Option<String>,
}

impl std::fmt::Debug for StoredToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredToken")
            .field("token", &"[REDACTED]")
            .field("iat", &self.iat)
            .field("exp", &self.exp)
            .field("sub", &self.sub)
            .field("generation", &self.generation)
            .field("credentials_version", &self.credentials_version)
            .finish()
    }
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

/// The managed Secret as the projector writes it: created as it is when there is none, else
/// applied with `resource_version` (the one read) as the precondition of the write.
pub fn desired(
    token: &M2MToken,
    secret_name: &str,
    raw_token: &str,
    iat: i64,
    exp: i64,
    credentials_version: Option<&str>,
    resource_version: Option<&str>,
) -> Secret {
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
    Secret {
        metadata: ObjectMeta {
            name: Some(secret_name.to_owned()),
            namespace: token.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(owner_reference(token).into_iter().collect()),
            resource_version: resource_version.map(str::to_owned),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            TOKEN_KEY.to_owned(),
            ByteString(raw_token.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_a_stored_token_leaves_the_token_out() {
        let stored = StoredToken {
            token: "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhcHAifQ.c2lnbmF0dXJl".to_owned(),
            iat: 1_800_000_000,
            exp: 1_800_003_600,
            sub: Some("app".to_owned()),
            generation: Some(1),
            credentials_version: Some("42".to_owned()),
        };
        let debug = format!("{stored:?} {stored:#?}");
        assert!(!debug.contains(&stored.token), "{debug}");
        assert!(!debug.contains("c2lnbmF0dXJl"), "{debug}");
        assert!(debug.contains("1800000000"), "{debug}");
    }

    #[test]
    fn the_desired_secret_carries_the_read_resource_version_only_when_given() {
        let mut token = M2MToken::new(
            "payments",
            serde_json::from_value(serde_json::json!({
                "issuer": "https://issuer.example", "audience": "a", "clientId": "app",
                "clientAuth": {"secretRef": {"name": "c", "key": "k"}}
            }))
            .unwrap(),
        );
        token.metadata.namespace = Some("shop".to_owned());
        token.metadata.uid = Some("uid-1".to_owned());
        let created = desired(&token, "payments", "a.b.c", 1, 2, Some("42"), None);
        let applied = desired(&token, "payments", "a.b.c", 1, 2, Some("42"), Some("7"));
        assert_eq!(created.metadata.resource_version, None);
        assert_eq!(applied.metadata.resource_version.as_deref(), Some("7"));
        let json = serde_json::to_value(&applied).unwrap();
        assert_eq!(json["apiVersion"], "v1");
        assert_eq!(json["kind"], "Secret");
        assert_eq!(json["metadata"]["resourceVersion"], "7");
        assert_eq!(json["data"][TOKEN_KEY], "YS5iLmM=");
    }
}
