//! The `M2MToken` custom resource (`idaas-projector.io/v1alpha1`).
//!
//! One M2MToken describes one IDaaS M2M client application whose access token the projector keeps
//! fresh in a Secret, and the defaults the webhook uses for pods that name it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every resource this project defines.
pub const GROUP: &str = "idaas-projector.io";
/// API version of the M2MToken resource.
pub const VERSION: &str = "v1alpha1";

/// Pattern of a RAM role ARN: `acs:ram::<account id>:role/<role name>`.
pub const ROLE_ARN_PATTERN: &str = r"^acs:ram::[0-9]{1,32}:role/[A-Za-z0-9._@-]{1,64}$";
/// Pattern of a RAM OIDC identity provider ARN: `acs:ram::<account id>:oidc-provider/<name>`.
pub const OIDC_PROVIDER_ARN_PATTERN: &str =
    r"^acs:ram::[0-9]{1,32}:oidc-provider/[A-Za-z0-9._-]{1,128}$";

/// Desired state of an M2MToken: which IDaaS M2M application to get a token for, and where to put it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "idaas-projector.io",
    version = "v1alpha1",
    kind = "M2MToken",
    plural = "m2mtokens",
    shortname = "m2mt",
    namespaced,
    status = "M2MTokenStatus",
    doc = "An IDaaS M2M (OAuth 2.0 client_credentials) access token that idaas-projector keeps fresh in a Secret for pods to use with STS AssumeRoleWithOIDC.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Audience","type":"string","jsonPath":".spec.audience"}"#,
    printcolumn = r#"{"name":"Expires","type":"string","jsonPath":".status.expiresAt"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct M2MTokenSpec {
    /// The IDaaS OIDC issuer URL, for example
    /// `https://example.aliyunidaas.com/api/v2/iauths_system/oauth2`. The token's `iss` claim must
    /// equal it exactly, and it must equal the issuer URL of the OIDC identity provider in RAM
    /// (at most 255 characters there).
    #[schemars(length(min = 9, max = 255), regex(pattern = r"^https://[^\s]+$"))]
    pub issuer: String,

    /// The OAuth 2.0 token endpoint. Default (also when empty): `token_endpoint` from OIDC
    /// discovery (`{issuer}/.well-known/openid-configuration`) when served, else `{issuer}/token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(https://[^\s]+)?$"))]
    pub token_endpoint: Option<String>,

    /// The JWKS URL used to verify the token's signature. Default (also when empty): `jwks_uri`
    /// from OIDC discovery when served, else `{issuer}/jwks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(https://[^\s]+)?$"))]
    pub jwks_uri: Option<String>,

    /// The audience identifier of the IDaaS resource server (for example `api://payments`). The
    /// token's `aud` claim must contain it; it is also the Client ID registered on the OIDC identity
    /// provider in RAM (RAM allows at most 64 characters).
    #[schemars(length(min = 1, max = 64))]
    pub audience: String,

    /// Permissions to request. Each is sent as `<audience>|<scope>` and the results are joined by
    /// spaces; `.all` requests every permission granted to the client application.
    #[serde(default = "default_scopes")]
    #[schemars(length(min = 1, max = 64))]
    pub scopes: Vec<String>,

    /// The client_id of the IDaaS M2M client application.
    #[schemars(length(min = 1, max = 256))]
    pub client_id: String,

    /// How the projector authenticates the client application to the token endpoint.
    pub client_auth: ClientAuth,

    /// Name of the Secret to write the token into (key `token`), in the M2MToken's namespace.
    /// Default: the M2MToken's own name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub secret_name: Option<String>,

    /// Default RAM role ARN (`acs:ram::<account id>:role/<name>`) for pods that name this M2MToken
    /// and do not set the `idaas-projector.io/role-arn` annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(acs:ram::[0-9]{1,32}:role/[A-Za-z0-9._@-]{1,64})?$"))]
    pub role_arn: Option<String>,

    /// Default OIDC identity provider ARN (`acs:ram::<account id>:oidc-provider/<name>`) for pods
    /// that name this M2MToken and do not set the `idaas-projector.io/oidc-provider-arn` annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(acs:ram::[0-9]{1,32}:oidc-provider/[A-Za-z0-9._-]{1,128})?$"))]
    pub oidc_provider_arn: Option<String>,

    /// The oldest token RAM accepts: the "Earliest Issuance Time Allowed" of the OIDC identity
    /// provider, between 1h and 168h. Tokens are refreshed well before they reach this age.
    #[serde(default = "default_max_token_age")]
    #[schemars(regex(pattern = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?$"))]
    #[x_kube(validation = Rule::new("self != '' && duration(self) >= duration('1h') && duration(self) <= duration('168h')").message("maxTokenAge must be a duration between 1h and 168h, such as 12h"))]
    pub max_token_age: String,
}

fn default_scopes() -> Vec<String> {
    vec![".all".to_owned()]
}

fn default_max_token_age() -> String {
    "12h".to_owned()
}

/// Client authentication at the token endpoint.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.method) && self.method == 'federated_oidc') ? !has(self.secretRef) : has(self.secretRef)").message("secretRef is required with client_secret_post, client_secret_basic and private_key_jwt, and not allowed with federated_oidc (no secret at all)"))]
#[x_kube(validation = Rule::new("(has(self.method) && self.method == 'federated_oidc') ? (has(self.federatedCredentialName) && has(self.serviceAccount)) : (!has(self.federatedCredentialName) && !has(self.serviceAccount))").message("federated_oidc needs federatedCredentialName and serviceAccount, and only federated_oidc takes them"))]
pub struct ClientAuth {
    /// `client_secret_post` (the default, as in the IDaaS curl example), `client_secret_basic`,
    /// `private_key_jwt` (RFC 7523, signed with a PEM private key), or `federated_oidc` (an IDaaS
    /// application federated credential: a Kubernetes ServiceAccount token is the client
    /// assertion, and there is no secret at all).
    #[serde(default)]
    pub method: ClientAuthMethod,
    /// The Secret (in the M2MToken's namespace) and key that hold the client secret, or for
    /// `private_key_jwt` the PEM private key. Required with those methods; not allowed with
    /// `federated_oidc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// `federated_oidc`: the name of the application federated credential in IDaaS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub federated_credential_name: Option<String>,
    /// `federated_oidc`: the ServiceAccount (in the M2MToken's namespace) whose token, requested
    /// fresh for each refresh through the TokenRequest API, is the client assertion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<ServiceAccountAssertion>,
}

/// The ServiceAccount token a `federated_oidc` client sends.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountAssertion {
    /// The ServiceAccount's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The token's audience: what the IDaaS federated credential provider expects.
    #[schemars(length(min = 1, max = 512))]
    pub audience: String,
    /// The token's lifetime in seconds (600 to 3600); it only has to outlive one token request.
    #[serde(default = "default_expiration_seconds")]
    #[schemars(range(min = 600, max = 3600))]
    pub expiration_seconds: i64,
}

fn default_expiration_seconds() -> i64 {
    600
}

/// Client authentication method at the token endpoint.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMethod {
    /// client_id and client_secret as form fields of the token request.
    #[default]
    ClientSecretPost,
    /// client_id and client_secret in an HTTP Basic Authorization header.
    ClientSecretBasic,
    /// A JWT client assertion signed with the client's private key (RFC 7523).
    PrivateKeyJwt,
    /// An IDaaS application federated credential: a ServiceAccount token as the assertion.
    FederatedOidc,
}

/// A key of a Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Observed state of an M2MToken.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct M2MTokenStatus {
    /// `Ready` is True when the Secret holds a checked token and the last refresh succeeded;
    /// False with the reason of the last failure otherwise (the message says whether the Secret
    /// still holds a token that is valid, and until when).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the current token was issued (its `iat` claim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<Time>,
    /// When the current token expires (its `exp` claim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// When the next refresh is planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_at: Option<Time>,
    /// When a token was last fetched successfully.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refresh_time: Option<Time>,
    /// The current token's `sub` claim (the client application).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The pods that opt in to this M2MToken, as the projector's last complete sweep found
    /// them (absent until a sweep found one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<PodCounts>,
}

/// How many pods that opt in to an M2MToken are in each state.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodCounts {
    /// Injected, and the webhook would inject the same now.
    pub injected: u32,
    /// Running without injection (created while the webhook did not see it).
    pub not_injected: u32,
    /// Injected with settings that have changed since (roll the workload).
    pub stale: u32,
}

impl M2MToken {
    /// The Secret this M2MToken's token is written to: `spec.secretName`, else the M2MToken's name.
    pub fn secret_name(&self) -> String {
        match &self.spec.secret_name {
            Some(name) if !name.is_empty() => name.clone(),
            _ => self.metadata.name.clone().unwrap_or_default(),
        }
    }
}

/// The CRD as YAML, as `idaas-projector crd` prints it.
pub fn crd_yaml() -> Result<String, serde_saphyr::ser::Error> {
    serde_saphyr::to_string(&M2MToken::crd())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_federated_example_reads_and_the_crd_carries_both_rules() {
        let example = include_str!("../manifests/examples/m2mtoken-federated.yaml");
        let token: M2MToken = example
            .split("\n---\n")
            .find(|doc| doc.contains("kind: M2MToken"))
            .map(|doc| serde_saphyr::from_str(doc).expect("the example is an M2MToken"))
            .unwrap();
        let auth = &token.spec.client_auth;
        assert_eq!(auth.method, ClientAuthMethod::FederatedOidc);
        assert_eq!(auth.secret_ref, None);
        assert_eq!(
            auth.service_account.as_ref().unwrap().expiration_seconds,
            600
        );

        let crd = serde_json::to_value(M2MToken::crd()).unwrap();
        let client_auth = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"]["clientAuth"];
        let rules = client_auth["x-kubernetes-validations"].as_array().unwrap();
        assert_eq!(rules.len(), 2);
        assert!(
            rules
                .iter()
                .all(|r| r["rule"].as_str().unwrap().contains("federated_oidc"))
        );
        let required = client_auth["required"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            !required.contains(&serde_json::json!("secretRef")),
            "{required:?}"
        );
    }
}
