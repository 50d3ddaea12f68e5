//! RAM's and STS's error codes for AssumeRoleWithOIDC, each spelled once, and what each means
//! for someone holding a token from idaas-projector, with the fix.

use crate::idaas::TokenClaims;
use crate::time::rfc3339;

/// Not a JWT, or signed with a symmetric algorithm (also: an empty token).
pub const INVALID: &str = "AuthenticationFail.OIDCToken.Invalid";
/// `iss` is not the OIDC provider's issuer URL.
pub const ISSUER_NOT_MATCH: &str = "AuthenticationFail.OIDCToken.IssuerNotMatch";
/// `aud` holds none of the OIDC provider's client IDs.
pub const AUDIENCE_NOT_MATCH: &str = "AuthenticationFail.OIDCToken.AudienceNotMatch";
/// `exp` has passed.
pub const EXPIRED: &str = "AuthenticationFail.OIDCToken.Expired";
/// `iat` is in the future, or older than the provider's earliest issuance time allowed.
pub const ISSUE_TIME_INVALID: &str = "AuthenticationFail.OIDCToken.IssueTimeInvalid";
/// The signature does not verify against the issuer's JWKS.
pub const INVALID_SIGNATURE: &str = "AuthenticationFail.OIDCToken.InvalidSignature";
/// RAM could not fetch the JWKS over HTTPS (the fingerprints do not match the chain).
pub const HTTPS_URL_INVALID: &str = "AuthenticationFail.OIDCToken.HttpsUrlInvalid";
/// No such OIDC provider, no such role, or the trust policy does not admit the token.
pub const NO_PERMISSION: &str = "AuthenticationFail.NoPermission";
/// Parameter errors of AssumeRoleWithOIDC.
pub const INVALID_DURATION: &str = "InvalidParameter.DurationSeconds";
pub const INVALID_SESSION_NAME: &str = "InvalidParameter.RoleSessionName";
pub const INVALID_ROLE_ARN: &str = "InvalidParameter.RoleArn";
pub const INVALID_PROVIDER_ARN: &str = "InvalidParameter.OIDCProviderArn";
pub const INVALID_TOKEN_PARAMETER: &str = "InvalidParameter.OIDCToken";
pub const INVALID_POLICY: &str = "InvalidParameter.PolicyGrammar";

/// What an AssumeRoleWithOIDC call asked for, to explain its failure.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub role_arn: &'a str,
    pub oidc_provider_arn: &'a str,
    pub duration_secs: u64,
}

/// A plain explanation of an STS error code, with the fix. `claims` are the token's, when it
/// could be decoded; `recommend` is the link STS sent with the error, if any.
pub fn explain(
    code: &str,
    message: &str,
    call: &Call<'_>,
    claims: Option<&TokenClaims>,
    recommend: Option<&str>,
) -> String {
    let unreadable = || "<unreadable>".to_owned();
    let aud = claims.map(|c| c.aud.join(", ")).unwrap_or_else(unreadable);
    let iss = claims.map(|c| c.iss.clone()).unwrap_or_else(unreadable);
    let at = |t: Option<i64>| t.map(rfc3339).unwrap_or_else(unreadable);
    let provider = call.oidc_provider_arn;
    match code {
        AUDIENCE_NOT_MATCH => format!(
            "The token's aud ({aud}) is not among the OIDC provider's Client IDs. Add {aud} to the \
             Client IDs of {provider} in RAM, or fix spec.audience (token --audience) so the token \
             carries one of the provider's Client IDs."
        ),
        ISSUER_NOT_MATCH => format!(
            "The token's iss ({iss}) is not the OIDC provider's Issuer URL. Set the Issuer URL of \
             {provider} in RAM to exactly {iss} (a trailing slash counts), or fix spec.issuer."
        ),
        EXPIRED => format!(
            "The token expired at {}. Fetch a fresh one: is the projector running and keeping the \
             Secret current, and does the pod read the mounted file each time (not a copy)?",
            at(claims.map(|c| c.exp))
        ),
        ISSUE_TIME_INVALID => format!(
            "The token was issued at {}, longer ago than the OIDC provider's Earliest Issuance Time \
             Allowed (or in the future: check the clocks). Set spec.maxTokenAge (token \
             --max-token-age) no longer than the provider's limit, or raise the limit in RAM.",
            at(claims.map(|c| c.iat))
        ),
        INVALID_SIGNATURE => format!(
            "The token's signature does not verify against the keys RAM fetched from the issuer \
             {iss}. Check that the provider's Issuer URL is the issuer that signed the token and \
             that its fingerprint is current (idaas-projector fingerprint {iss}); a just-rotated \
             key needs a fresh token."
        ),
        HTTPS_URL_INVALID => format!(
            "RAM could not fetch the issuer's keys over HTTPS: the certificate chain of {iss} does \
             not match the OIDC provider's fingerprints. Run idaas-projector fingerprint {iss} and \
             add the marked fingerprint to {provider} in RAM."
        ),
        INVALID => "RAM cannot use the token: it is not a JWT, or it is signed with HS* (RAM \
             accepts RS*, PS* and ES* only). The file must hold only the raw JWT; idaas-projector \
             check --token-file FILE says what is wrong."
            .to_owned(),
        NO_PERMISSION if message.contains("OIDC Provider") => format!(
            "RAM has no OIDC provider {provider}. Check --oidc-provider-arn (acs:ram::<account \
             id>:oidc-provider/<name>, as the RAM console shows it) and that it is in the role's \
             account."
        ),
        NO_PERMISSION => format!(
            "RAM refused to let this token assume {}. Check that the role exists (--role-arn), that \
             the OIDC provider {provider} belongs to the same account, and that the role's trust \
             policy names that provider as its Federated principal with conditions (oidc:iss, \
             oidc:aud, oidc:sub) that this token meets.",
            call.role_arn
        ),
        INVALID_DURATION => format!(
            "--duration {} is outside 900 s .. the role's maximum session duration. Lower \
             --duration or raise the role's MaxSessionDuration in RAM.",
            call.duration_secs
        ),
        INVALID_SESSION_NAME => "The session name must be 2 to 64 characters of A-Z a-z 0-9 . @ _ \
             -; fix --session-name."
            .to_owned(),
        INVALID_ROLE_ARN => format!(
            "STS rejects the role ARN {}; it must look like acs:ram::<account id>:role/<name>.",
            call.role_arn
        ),
        INVALID_PROVIDER_ARN => format!(
            "STS rejects the OIDC provider ARN {provider}; it must look like acs:ram::<account \
             id>:oidc-provider/<name>."
        ),
        "Throttling" | "Throttling.User" | "Throttling.Api" => {
            "STS is throttling this caller; retry later and reuse credentials until they \
             expire instead of calling STS for each request."
                .to_owned()
        }
        c if c.starts_with("Missing") => format!(
            "STS did not receive a required parameter ({c}); a proxy between here and STS may \
             have dropped the request body."
        ),
        _ => match recommend {
            Some(link) => format!("See {link} for this error code."),
            None => "See Alibaba Cloud's STS error code reference for this code.".to_owned(),
        },
    }
}
