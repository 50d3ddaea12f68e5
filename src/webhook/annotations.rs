//! The annotations (on a pod or its ServiceAccount) and labels the webhook reads, their parsing
//! and validation.
//!
//! Every error message names the annotation, where it was read, and the valid form, because it
//! ends up in the `kubectl apply` output of whoever created the pod.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::ram::names::{
    is_region_id, is_session_name, validate_oidc_provider_arn, validate_role_arn,
    validate_role_name,
};

/// Prefix of every annotation and label this project reads or writes.
pub const PREFIX: &str = "idaas-projector.io/";
/// Opts a pod in: the name of an M2MToken in the pod's namespace.
pub const M2M_TOKEN: &str = "idaas-projector.io/m2m-token";
/// RAM role to assume.
pub const ROLE_ARN: &str = "idaas-projector.io/role-arn";
/// RAM role to assume, by name, in the account of the OIDC provider ARN.
pub const ROLE_NAME: &str = "idaas-projector.io/role-name";
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

/// The one label for routing and opting out: `enabled` on a namespace sends all its pods to the
/// webhook (and on a pod, in the object-selector mode, sends that pod); `disabled` on a pod
/// keeps it from ever being injected.
pub const INJECTION_LABEL: &str = "idaas-projector.io/injection";
/// [`INJECTION_LABEL`]'s value that opts in.
pub const ENABLED: &str = "enabled";
/// [`INJECTION_LABEL`]'s value that opts a pod out.
pub const DISABLED: &str = "disabled";
/// The object-selector mode's label before [`INJECTION_LABEL`]; still routed, with a warning.
pub const LEGACY_INJECT_LABEL: &str = "idaas-projector.io/inject";

/// Annotations read from pods only; on a ServiceAccount they do nothing.
pub const POD_ONLY: [&str; 3] = [ROLE_SESSION_NAME, SKIP_CONTAINERS, ONLY_CONTAINERS];

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

/// The annotations of one level: a pod's, or its ServiceAccount's (only its
/// `idaas-projector.io/*` ones are kept).
#[derive(Debug, Clone, Copy)]
pub enum Annotations<'a> {
    /// `metadata.annotations` of the pod, absent or an object.
    Pod(Option<&'a Map<String, Value>>),
    /// The ServiceAccount's name and annotations.
    ServiceAccount(&'a str, &'a BTreeMap<String, String>),
}

impl<'a> Annotations<'a> {
    /// The value of `key`, if set; a pod annotation that is not a string is an error.
    pub fn get(&self, key: &str) -> Result<Option<&'a str>, String> {
        match self {
            Annotations::Pod(map) => match map.and_then(|m| m.get(key)) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.as_str())),
                Some(other) => Err(format!(
                    "annotation {key} must be a string, got {}",
                    json_type(other)
                )),
            },
            Annotations::ServiceAccount(_, map) => Ok(map.get(key).map(String::as_str)),
        }
    }

    /// Where the annotation was read, for messages: `""` on the pod, ` on ServiceAccount "x"`.
    pub fn on(&self) -> String {
        match self {
            Annotations::Pod(_) => String::new(),
            Annotations::ServiceAccount(name, _) => format!(" on ServiceAccount {name:?}"),
        }
    }

    fn trimmed(&self, key: &str) -> Result<Option<&'a str>, String> {
        Ok(self.get(key)?.map(str::trim))
    }
}

/// The RAM role a level names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// `role-arn`: a full ARN.
    Arn(String),
    /// `role-name`: composed with the account of the resolved OIDC provider ARN.
    Name(String),
}

/// `token-wait` as set on one level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenWait {
    /// `"false"`: no init container.
    Off,
    /// `"true"`: the server's default timeout.
    Default,
    /// A timeout from 1s to 1h.
    For(Duration),
}

/// The settings a pod or a ServiceAccount may carry, each `None` when that level leaves it to
/// the next one (pod, then ServiceAccount, then M2MToken, then the server's defaults).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Settings {
    pub role: Option<Role>,
    pub oidc_provider_arn: Option<String>,
    pub sts_region: Option<String>,
    pub sts_vpc_endpoint: Option<bool>,
    pub token_wait: Option<TokenWait>,
}

/// The settings read from pods only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodOnly {
    pub role_session_name: Option<String>,
    pub selection: Selection,
}

/// The M2MToken a level names (`m2m-token`), checked. `Ok(None)` when unset.
pub fn m2m_token(level: &Annotations<'_>) -> Result<Option<String>, String> {
    let Some(token) = level.trimmed(M2M_TOKEN)? else {
        return Ok(None);
    };
    if !is_dns_subdomain(token) {
        return Err(format!(
            "annotation {M2M_TOKEN}={token:?}{} is not a valid M2MToken name: expected a DNS subdomain name \
             (lowercase letters, digits, '-' and '.', at most 253 characters), the name of an M2MToken in the pod's namespace",
            level.on()
        ));
    }
    Ok(Some(token.to_owned()))
}

/// The settings of one level, checked.
pub fn settings(level: &Annotations<'_>) -> Result<Settings, String> {
    let on = level.on();
    let oidc_provider_arn = level.trimmed(OIDC_PROVIDER_ARN)?.map(str::to_owned);
    if let Some(arn) = &oidc_provider_arn {
        validate_oidc_provider_arn(arn).map_err(|why| {
            format!(
                "annotation {OIDC_PROVIDER_ARN}={arn:?}{on} is not a RAM OIDC provider ARN ({why}): expected acs:ram::<account id>:oidc-provider/<provider name>"
            )
        })?;
    }
    let sts_region = level.trimmed(STS_REGION)?.map(str::to_owned);
    if let Some(region) = &sts_region
        && !is_region_id(region)
    {
        return Err(format!(
            "annotation {STS_REGION}={region:?}{on} is not a region ID: expected a value such as cn-hangzhou or ap-southeast-1"
        ));
    }
    Ok(Settings {
        role: role(level)?,
        oidc_provider_arn,
        sts_region,
        sts_vpc_endpoint: sts_vpc_endpoint(level.trimmed(STS_VPC_ENDPOINT)?, &on)?,
        token_wait: token_wait(level.trimmed(TOKEN_WAIT)?, &on)?,
    })
}

/// `role-arn` or `role-name` (not both on one level).
fn role(level: &Annotations<'_>) -> Result<Option<Role>, String> {
    let on = level.on();
    match (level.trimmed(ROLE_ARN)?, level.trimmed(ROLE_NAME)?) {
        (Some(_), Some(_)) => Err(format!(
            "annotations {ROLE_ARN} and {ROLE_NAME}{on} cannot both be set: use {ROLE_ARN} for a full ARN \
             or {ROLE_NAME} for a role in the account of the OIDC provider ARN"
        )),
        (Some(arn), None) => {
            validate_role_arn(arn).map_err(|why| {
                format!(
                    "annotation {ROLE_ARN}={arn:?}{on} is not a RAM role ARN ({why}): expected acs:ram::<account id>:role/<role name>"
                )
            })?;
            Ok(Some(Role::Arn(arn.to_owned())))
        }
        (None, Some(name)) => {
            validate_role_name(name).map_err(|why| {
                format!("annotation {ROLE_NAME}={name:?}{on} is not a RAM role name: {why}")
            })?;
            Ok(Some(Role::Name(name.to_owned())))
        }
        (None, None) => Ok(None),
    }
}

/// The pod-only settings: `role-session-name` and the container selection.
pub fn pod_only(pod: Option<&Map<String, Value>>) -> Result<PodOnly, String> {
    let level = Annotations::Pod(pod);
    let role_session_name = level.trimmed(ROLE_SESSION_NAME)?.map(str::to_owned);
    if let Some(name) = &role_session_name
        && !is_session_name(name)
    {
        return Err(format!(
            "annotation {ROLE_SESSION_NAME}={name:?} is not a valid role session name: expected 2 to 64 characters of A-Z a-z 0-9 . @ _ -"
        ));
    }
    Ok(PodOnly {
        role_session_name,
        selection: selection(level.get(SKIP_CONTAINERS)?, level.get(ONLY_CONTAINERS)?)?,
    })
}

/// `sts-vpc-endpoint`: `"true"` or `"false"` (any case).
fn sts_vpc_endpoint(value: Option<&str>, on: &str) -> Result<Option<bool>, String> {
    match value {
        None => Ok(None),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(v) => Err(format!(
            "annotation {STS_VPC_ENDPOINT}={v:?}{on} must be \"true\" or \"false\""
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

/// `token-wait`: `"false"` (no init container), `"true"` (the default), or a duration from 1s
/// to 1h.
fn token_wait(value: Option<&str>, on: &str) -> Result<Option<TokenWait>, String> {
    match value {
        None => Ok(None),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(TokenWait::Off)),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(TokenWait::Default)),
        Some(v) => {
            let wait = parse_token_wait(v).ok_or_else(|| {
                format!(
                    "annotation {TOKEN_WAIT}={v:?}{on} must be \"false\" or a duration from 1s to 1h such as 90s, 2m or 1m30s"
                )
            })?;
            Ok(Some(TokenWait::For(wait)))
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
