//! Would RAM's AssumeRoleWithOIDC accept this token? Every check RAM applies, each named by
//! RAM's own error code, reported whether it passed, failed or was skipped (and why): the claim
//! checks of [`crate::ram::claims`], then the signature against the issuer's JWKS. `check`
//! reports it for a token file, `doctor` for the token in an M2MToken's Secret.
//!
//! The token itself and its signature are never part of a report: only its header and claim
//! values.

use serde::Serialize;

use super::jwt;
use super::{FetchError, HttpConfig, IdaasClient, TokenClaims};
use crate::http::display_url;
use crate::ram::claims::{ACCEPTED_ALGORITHMS, CHECKS, Check, Outcome, Rules};
use crate::ram::code;

/// Every check run on one token.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The token's header and claims (never the token or its signature).
    pub token: Option<TokenClaims>,
    pub checks: Vec<Check>,
    pub ok: bool,
}

impl Report {
    /// The checks that failed.
    pub fn failed(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.result == Outcome::Fail)
    }

    /// How many checks did not run (skipped, or a warning such as an unchecked signature).
    pub fn not_run(&self) -> usize {
        self.checks
            .iter()
            .filter(|c| matches!(c.result, Outcome::Skipped | Outcome::Warning))
            .count()
    }
}

/// Where the signature check finds the JWKS, and how it reaches it.
#[derive(Debug, Clone, Copy)]
pub struct Keys<'a> {
    /// An explicit JWKS URL, and what named it (`--jwks-uri`, `spec.jwksUri`); `None`: OIDC
    /// discovery of the issuer (`rules.issuer`, else the token's own `iss`).
    pub jwks_uri: Option<(&'a str, &'a str)>,
    /// What names the issuer in messages (`--issuer`, `spec.issuer`).
    pub issuer_source: &'a str,
    /// The client's settings; the JWKS and discovery requests go where they say.
    pub http: &'a HttpConfig,
}

/// The signature check: the JWKS from `keys.jwks_uri`, else discovery of the issuer.
async fn signature_check(
    keys: &Keys<'_>,
    issuer: Option<&str>,
    token: &str,
    claims: &TokenClaims,
) -> Result<Check, FetchError> {
    if !ACCEPTED_ALGORITHMS.contains(&claims.alg.as_str()) {
        return Ok(Check::new(
            "signature",
            code::INVALID_SIGNATURE,
            Outcome::Skipped,
            format!(
                "alg {} is not accepted, so no key can verify it",
                claims.alg
            ),
        ));
    }
    let client = IdaasClient::new(keys.http)?;
    let not_checked = |why: String| {
        Ok(Check::new(
            "signature",
            code::INVALID_SIGNATURE,
            Outcome::Warning,
            format!("signature not checked: {why}"),
        ))
    };
    let (jwks_uri, source) = match keys.jwks_uri.filter(|(uri, _)| !uri.is_empty()) {
        Some((uri, whose)) => (uri.to_owned(), whose.to_owned()),
        None => {
            let (issuer, whose) = match issuer {
                Some(i) => (i, keys.issuer_source.to_owned()),
                None => (
                    claims.iss.as_str(),
                    format!(
                        "the token's own iss (pass {} to pin it)",
                        keys.issuer_source
                    ),
                ),
            };
            match client.endpoints(issuer, None, None).await {
                Ok(e) => match e.jwks_uri {
                    Some(j) => (j, format!("discovery of {whose}")),
                    None => return not_checked(format!("the issuer {issuer} names no jwks_uri")),
                },
                Err(e) => return not_checked(format!("OIDC discovery failed: {e}")),
            }
        }
    };
    let shown = display_url(&jwks_uri);
    match client.jwks(&jwks_uri).await {
        Ok(set) => Ok(match jwt::verify_signature(token, &set) {
            Ok(()) => Check::new(
                "signature",
                code::INVALID_SIGNATURE,
                Outcome::Pass,
                format!(
                    "verified with kid {} of the JWKS at {shown} (from {source})",
                    claims.kid.as_deref().unwrap_or("(none)")
                ),
            ),
            Err(e) => Check::new(
                "signature",
                e.ram_code(),
                Outcome::Fail,
                format!("{e} (JWKS at {shown}, from {source})"),
            ),
        }),
        Err(e) => not_checked(format!("cannot fetch the JWKS: {e}")),
    }
}

/// Runs every check on `token` and builds the report. An error only when no HTTP client can be
/// built (an unusable CA file); a JWKS that cannot be fetched is a warning in the report.
pub async fn evaluate(
    rules: &Rules<'_>,
    keys: &Keys<'_>,
    token: &str,
    now: i64,
) -> Result<Report, FetchError> {
    let claims = match jwt::decode_unverified(token) {
        Ok(c) => c,
        Err(e) => {
            // The first check failed; the others cannot run.
            let checks = CHECKS
                .iter()
                .map(|&(name, ram_code)| match name {
                    "jwt" => Check::new(name, ram_code, Outcome::Fail, e.to_string()),
                    _ => Check::new(
                        name,
                        ram_code,
                        Outcome::Skipped,
                        "the token could not be decoded".to_owned(),
                    ),
                })
                .collect();
            return Ok(Report {
                token: None,
                checks,
                ok: false,
            });
        }
    };
    let mut checks = vec![Check::new(
        "jwt",
        code::INVALID,
        Outcome::Pass,
        "three base64url parts with a JSON header and payload".to_owned(),
    )];
    checks.extend(crate::ram::claim_checks(&claims, rules, now));
    checks.push(signature_check(keys, rules.issuer, token, &claims).await?);
    let ok = !checks.iter().any(|c| c.result == Outcome::Fail);
    Ok(Report {
        token: Some(claims),
        checks,
        ok,
    })
}
