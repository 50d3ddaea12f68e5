//! Pod annotations the webhook reads, their parsing and validation.
//!
//! Every error message names the annotation and the valid form, because it ends up in the
//! `kubectl apply` output of whoever created the pod.

use std::time::Duration;

use serde_json::Value;

use crate::ram::names::{
    is_region_id, is_session_name, validate_oidc_provider_arn, validate_role_arn,
};

/// Prefix of every annotation and label this project reads or writes.
pub const PREFIX: &str = "idaas-projector.io/";
/// Opts a pod in: the name of an M2MToken in the pod's namespace.
pub const M2M_TOKEN: &str = "idaas-projector.io/m2m-token";
/// RAM role to assume.
pub const ROLE_ARN: &str = "idaas-projector.io/role-arn";
/// RAM OIDC identity provider.
pub const OIDC_PROVIDER_ARN: &str = "idaas-projector.io/oidc-provider-arn";
/// Role session name.
pub const ROLE_SESSION_NAME: &str = "idaas-projector.io/role-session-name";
/// STS region.
pub const STS_REGION: &str = "idaas-projector.io/sts-region";
/// Use the STS VPC endpoint.
pub const STS_VPC_ENDPOINT: &str = "idaas-projector.io/sts-vpc-endpoint";
/// Containers to leave alone.
pub const SKIP_CONTAINERS: &str = "idaas-projector.io/skip-containers";
/// The only containers to inject into.
pub const ONLY_CONTAINERS: &str = "idaas-projector.io/only-containers";
/// `"false"` or a timeout for the wait init container.
pub const TOKEN_WAIT: &str = "idaas-projector.io/token-wait";
/// Written by the webhook: a hash of what it injected.
pub const INJECTED: &str = "idaas-projector.io/injected";

/// Longest `token-wait` accepted.
pub const MAX_TOKEN_WAIT: Duration = Duration::from_secs(3600);

/// Which containers the injection applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every container and init container.
    All,
    /// All but these.
    Skip(Vec<String>),
    /// Only these.
    Only(Vec<String>),
}

impl Selection {
    /// Whether the container with this name is selected.
    pub fn selects(&self, name: &str) -> bool {
        match self {
            Selection::All => true,
            Selection::Skip(names) => !names.iter().any(|n| n == name),
            Selection::Only(names) => names.iter().any(|n| n == name),
        }
    }
}

/// The `idaas-projector.io/*` annotations of one pod, parsed and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodAnnotations {
    /// The M2MToken name.
    pub m2m_token: String,
    pub role_arn: Option<String>,
    pub oidc_provider_arn: Option<String>,
    pub role_session_name: Option<String>,
    pub sts_region: Option<String>,
    pub sts_vpc_endpoint: bool,
    pub selection: Selection,
    /// `None` when `token-wait` is `"false"`; `Some(default)` when unset.
    pub token_wait: Option<Duration>,
}

/// Reads the annotation map of a pod. `Ok(None)` when the pod does not opt in.
pub fn parse(
    annotations: Option<&serde_json::Map<String, Value>>,
    default_token_wait: Duration,
) -> Result<Option<PodAnnotations>, String> {
    let Some(annotations) = annotations else {
        return Ok(None);
    };
    let get = |key: &str| -> Result<Option<&str>, String> {
        match annotations.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(other) => Err(format!(
                "annotation {key} must be a string, got {}",
                json_type(other)
            )),
        }
    };
    let Some(token) = get(M2M_TOKEN)? else {
        return Ok(None);
    };
    let token = token.trim();
    if !is_dns_subdomain(token) {
        return Err(format!(
            "annotation {M2M_TOKEN}={token:?} is not a valid M2MToken name: expected a DNS subdomain name \
             (lowercase letters, digits, '-' and '.', at most 253 characters), the name of an M2MToken in the pod's namespace"
        ));
    }

    let role_arn = get(ROLE_ARN)?.map(str::trim).map(str::to_owned);
    if let Some(arn) = &role_arn {
        validate_role_arn(arn).map_err(|why| {
            format!(
                "annotation {ROLE_ARN}={arn:?} is not a RAM role ARN ({why}): expected acs:ram::<account id>:role/<role name>"
            )
        })?;
    }
    let oidc_provider_arn = get(OIDC_PROVIDER_ARN)?.map(str::trim).map(str::to_owned);
    if let Some(arn) = &oidc_provider_arn {
        validate_oidc_provider_arn(arn).map_err(|why| {
            format!(
                "annotation {OIDC_PROVIDER_ARN}={arn:?} is not a RAM OIDC provider ARN ({why}): expected acs:ram::<account id>:oidc-provider/<provider name>"
            )
        })?;
    }
    let role_session_name = get(ROLE_SESSION_NAME)?.map(str::trim).map(str::to_owned);
    if let Some(name) = &role_session_name
        && !is_session_name(name)
    {
        return Err(format!(
            "annotation {ROLE_SESSION_NAME}={name:?} is not a valid role session name: expected 2 to 64 characters of A-Z a-z 0-9 . @ _ -"
        ));
    }
    let sts_region = get(STS_REGION)?.map(str::trim).map(str::to_owned);
    if let Some(region) = &sts_region
        && !is_region_id(region)
    {
        return Err(format!(
            "annotation {STS_REGION}={region:?} is not a region ID: expected a value such as cn-hangzhou or ap-southeast-1"
        ));
    }
    let sts_vpc_endpoint = sts_vpc_endpoint(get(STS_VPC_ENDPOINT)?)?;
    let selection = selection(get(SKIP_CONTAINERS)?, get(ONLY_CONTAINERS)?)?;
    let token_wait = token_wait(get(TOKEN_WAIT)?, default_token_wait)?;

    Ok(Some(PodAnnotations {
        m2m_token: token.to_owned(),
        role_arn,
        oidc_provider_arn,
        role_session_name,
        sts_region,
        sts_vpc_endpoint,
        selection,
        token_wait,
    }))
}

/// `sts-vpc-endpoint`: `"true"` or `"false"` (any case); unset is false.
fn sts_vpc_endpoint(value: Option<&str>) -> Result<bool, String> {
    match value.map(str::trim) {
        None => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(v) => Err(format!(
            "annotation {STS_VPC_ENDPOINT}={v:?} must be \"true\" or \"false\""
        )),
    }
}

/// `skip-containers` or `only-containers` (not both; `only` not empty); neither selects all.
fn selection(skip: Option<&str>, only: Option<&str>) -> Result<Selection, String> {
    match (skip, only) {
        (Some(_), Some(_)) => Err(format!(
            "annotations {SKIP_CONTAINERS} and {ONLY_CONTAINERS} cannot both be set: use one comma-separated list of container names"
        )),
        (Some(list), None) => Ok(Selection::Skip(split_names(SKIP_CONTAINERS, list)?)),
        (None, Some(list)) => {
            let names = split_names(ONLY_CONTAINERS, list)?;
            if names.is_empty() {
                return Err(format!(
                    "annotation {ONLY_CONTAINERS} is empty: expected a comma-separated list of container names"
                ));
            }
            Ok(Selection::Only(names))
        }
        (None, None) => Ok(Selection::All),
    }
}

/// `token-wait`: `"false"` (no init container), `"true"` or unset (the default), or a duration
/// from 1s to 1h.
fn token_wait(
    value: Option<&str>,
    default_token_wait: Duration,
) -> Result<Option<Duration>, String> {
    match value.map(str::trim) {
        None => Ok(Some(default_token_wait)),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(None),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(default_token_wait)),
        Some(v) => {
            let wait = parse_token_wait(v).ok_or_else(|| {
                format!(
                    "annotation {TOKEN_WAIT}={v:?} must be \"false\" or a duration from 1s to 1h such as 90s, 2m or 1m30s"
                )
            })?;
            Ok(Some(wait))
        }
    }
}

fn parse_token_wait(v: &str) -> Option<Duration> {
    let d = crate::time::parse_duration(v).ok()?;
    (d >= Duration::from_secs(1) && d <= MAX_TOKEN_WAIT && d.subsec_nanos() == 0).then_some(d)
}

fn split_names(annotation: &str, list: &str) -> Result<Vec<String>, String> {
    let mut names: Vec<String> = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if !is_dns_label(name) {
            return Err(format!(
                "annotation {annotation} lists {name:?}, which is not a container name: expected a comma-separated list of container names"
            ));
        }
        if !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// RFC 1123 label, as container names are.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// RFC 1123 subdomain, as object names are.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_wait() {
        assert_eq!(parse_token_wait("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_token_wait("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_token_wait("0s"), None);
        assert_eq!(parse_token_wait("2h"), None);
        assert_eq!(parse_token_wait("500ms"), None);
        assert_eq!(parse_token_wait("soon"), None);
    }
}
