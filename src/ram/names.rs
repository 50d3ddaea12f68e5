//! RAM's names: role and OIDC provider ARNs, role session names and region IDs, checked as
//! RAM and STS check them. Pure. Used by the webhook's annotations, the server's flags,
//! `assume-role` and the STS emulator.

/// The shortest `DurationSeconds` of AssumeRoleWithOIDC.
pub const MIN_SESSION_DURATION_SECS: u64 = 900;
/// The longest maximum session duration a RAM role can have.
pub const MAX_SESSION_DURATION_SECS: u64 = 43_200;

/// The account ID and the resource name of `acs:ram::<account id>:<resource>/<name>`, checked.
fn split_arn<'a>(
    arn: &'a str,
    resource: &str,
    max_name: usize,
    extra: &[u8],
) -> Result<(&'a str, &'a str), String> {
    let rest = arn
        .strip_prefix("acs:ram::")
        .ok_or_else(|| "it does not start with acs:ram::".to_owned())?;
    let (account, rest) = rest
        .split_once(':')
        .ok_or_else(|| "no account ID".to_owned())?;
    if account.is_empty() || account.len() > 32 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("account ID {account:?} is not a number"));
    }
    let name = rest
        .strip_prefix(resource)
        .and_then(|r| r.strip_prefix('/'))
        .ok_or_else(|| format!("the resource is not {resource}/<name>"))?;
    validate_name(name, resource, max_name, extra)?;
    Ok((account, name))
}

fn validate_name(name: &str, resource: &str, max_name: usize, extra: &[u8]) -> Result<(), String> {
    if name.is_empty()
        || name.len() > max_name
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b) || extra.contains(&b))
    {
        let extra: String = extra.iter().map(|&b| format!(" {}", b as char)).collect();
        return Err(format!(
            "{resource} name {name:?} must be 1 to {max_name} characters of A-Z a-z 0-9 . _ -{extra}"
        ));
    }
    Ok(())
}

/// RAM role names: 1 to 64 characters of `A-Za-z0-9.@_-`.
const ROLE_NAME: (&str, usize, &[u8]) = ("role", 64, b"@");

/// Checks `acs:ram::<account id>:role/<name>`.
pub fn validate_role_arn(arn: &str) -> Result<(), String> {
    let (resource, max, extra) = ROLE_NAME;
    split_arn(arn, resource, max, extra).map(drop)
}

/// Checks a RAM role name (what follows `role/` in a role ARN).
pub fn validate_role_name(name: &str) -> Result<(), String> {
    let (resource, max, extra) = ROLE_NAME;
    validate_name(name, resource, max, extra)
}

/// `acs:ram::<account id>:role/<name>`.
pub fn role_arn(account: &str, role_name: &str) -> String {
    format!("acs:ram::{account}:role/{role_name}")
}

/// Checks `acs:ram::<account id>:oidc-provider/<name>`.
pub fn validate_oidc_provider_arn(arn: &str) -> Result<(), String> {
    oidc_provider_account(arn).map(drop)
}

/// The account ID of a valid OIDC provider ARN.
pub fn oidc_provider_account(arn: &str) -> Result<&str, String> {
    split_arn(arn, "oidc-provider", 128, b"").map(|(account, _)| account)
}

/// The role session name alphabet of RAM: `A-Za-z0-9.@_-`.
pub fn is_session_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '@' | '_' | '-')
}

/// 2 to 64 characters of RAM's role session name alphabet.
pub fn is_session_name(name: &str) -> bool {
    (2..=64).contains(&name.len()) && name.chars().all(is_session_name_char)
}

/// Alibaba Cloud region IDs: `cn-hangzhou`, `ap-southeast-1`, `cn-shanghai-finance-1`.
pub fn is_region_id(region: &str) -> bool {
    let mut parts = region.split('-');
    let first_ok = parts
        .next()
        .is_some_and(|p| p.len() >= 2 && p.bytes().all(|b| b.is_ascii_lowercase()));
    let rest: Vec<&str> = parts.collect();
    region.len() <= 64
        && first_ok
        && !rest.is_empty()
        && rest.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns() {
        assert!(validate_role_arn("acs:ram::1234567890123456:role/payments").is_ok());
        assert!(validate_role_arn("acs:ram::1234567890123456:role/").is_err());
        assert!(validate_role_arn("acs:ram::12x:role/a").is_err());
        assert!(validate_role_arn("acs:ram::1:oidc-provider/a").is_err());
        assert!(validate_oidc_provider_arn("acs:ram::1:oidc-provider/idaas").is_ok());
        assert!(validate_oidc_provider_arn("arn:aws:iam::1:oidc-provider/x").is_err());
        assert_eq!(
            oidc_provider_account("acs:ram::1234567890123456:oidc-provider/idaas"),
            Ok("1234567890123456")
        );
        assert_eq!(role_arn("1", "payments"), "acs:ram::1:role/payments");
    }

    #[test]
    fn role_names() {
        for ok in ["a", "payments", "A.b@c_d-e", &"x".repeat(64)] {
            assert!(validate_role_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a/b", "a b", "rôle", "a:b", &"x".repeat(65)] {
            let why = validate_role_name(bad).unwrap_err();
            assert!(why.contains("1 to 64 characters"), "{why}");
        }
    }

    #[test]
    fn regions() {
        for ok in [
            "cn-hangzhou",
            "ap-southeast-1",
            "cn-shanghai-finance-1",
            "us-west-1",
        ] {
            assert!(is_region_id(ok), "{ok}");
        }
        for bad in [
            "",
            "cn",
            "CN-hangzhou",
            "cn-",
            "cn--x",
            "c-x",
            "cn-hang zhou",
        ] {
            assert!(!is_region_id(bad), "{bad}");
        }
    }
}
