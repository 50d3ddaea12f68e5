//! `check`: would RAM's AssumeRoleWithOIDC accept this token? Every check RAM applies, each named
//! by RAM's own error code, reported whether it passed, failed or was skipped (and why).
//!
//! The token itself and its signature are never printed: only its header and claim values.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use crate::cli::parse_duration;
use crate::controller::secret::rfc3339;
use crate::fingerprint::{CommandError, OutputFormat};
use crate::idaas::jwt::{self, ACCEPTED_ALGORITHMS};
use crate::idaas::{CheckError, HttpConfig, IdaasClient, TokenClaims};

/// RAM's limit on the client IDs of one OIDC identity provider.
pub const MAX_CLIENT_IDS: usize = 50;
/// Clock skew allowed for an `iat` in the future.
const LEEWAY_SECS: i64 = 60;

const INVALID: &str = "AuthenticationFail.OIDCToken.Invalid";
const ISSUER_NOT_MATCH: &str = "AuthenticationFail.OIDCToken.IssuerNotMatch";
const AUDIENCE_NOT_MATCH: &str = "AuthenticationFail.OIDCToken.AudienceNotMatch";
const EXPIRED: &str = "AuthenticationFail.OIDCToken.Expired";
const INVALID_SIGNATURE: &str = "AuthenticationFail.OIDCToken.InvalidSignature";

fn issue_time_code() -> &'static str {
    CheckError::IssuedTooLongAgo {
        iat: 0,
        limit_secs: 0,
    }
    .ram_code()
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The token file (as an SDK reads it; surrounding whitespace is ignored).
    #[arg(long, env = "IDAAS_PROJECTOR_TOKEN_FILE")]
    pub token_file: PathBuf,
    /// The issuer URL RAM's OIDC IdP is configured with; `iss` must equal it.
    #[arg(long, env = "IDAAS_PROJECTOR_ISSUER")]
    pub issuer: Option<String>,
    /// A client ID of RAM's OIDC IdP (repeat, up to 50); `aud` must contain one of them.
    #[arg(
        long = "client-id",
        env = "IDAAS_PROJECTOR_CLIENT_IDS",
        value_delimiter = ','
    )]
    pub client_ids: Vec<String>,
    /// RAM's "earliest issuance time allowed" (1h..168h).
    #[arg(long, env = "IDAAS_PROJECTOR_ISSUANCE_LIMIT", default_value = "12h", value_parser = parse_duration)]
    pub issuance_limit: Duration,
    /// JWKS URL for the signature check; default: OIDC discovery of --issuer (else of the
    /// token's iss), else {issuer}/jwks.
    #[arg(long, env = "IDAAS_PROJECTOR_JWKS_URI")]
    pub jwks_uri: Option<String>,
    /// PEM CA certificates trusted on top of the system roots.
    #[arg(long, env = "IDAAS_PROJECTOR_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Output format.
    #[arg(
        long,
        env = "IDAAS_PROJECTOR_OUTPUT",
        value_enum,
        default_value = "text"
    )]
    pub output: OutputFormat,
    /// Connect timeout of the discovery and JWKS requests.
    #[arg(long, env = "IDAAS_PROJECTOR_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Total timeout of one request.
    #[arg(long, env = "IDAAS_PROJECTOR_REQUEST_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub request_timeout: Duration,
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pass,
    Fail,
    /// Not run: a flag was not given or an earlier check makes it meaningless.
    Skipped,
    /// Could not be run although RAM will run it (the signature, when no JWKS was available).
    Warning,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ram_code: &'static str,
    pub result: Outcome,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenSummary {
    pub alg: String,
    pub kid: Option<String>,
    pub iss: String,
    pub sub: Option<String>,
    pub aud: Vec<String>,
    pub iat: i64,
    pub exp: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub token: Option<TokenSummary>,
    pub checks: Vec<Check>,
    pub ok: bool,
}

fn check(name: &'static str, ram_code: &'static str, result: Outcome, detail: String) -> Check {
    Check {
        name,
        ram_code,
        result,
        detail,
    }
}

/// The claim checks, pure: `now` in Unix seconds.
pub fn claim_checks(
    claims: &TokenClaims,
    issuer: Option<&str>,
    client_ids: &[String],
    limit_secs: u64,
    now: i64,
) -> Vec<Check> {
    let mut out = Vec::new();
    out.push(if ACCEPTED_ALGORITHMS.contains(&claims.alg.as_str()) {
        check(
            "algorithm",
            INVALID,
            Outcome::Pass,
            format!("alg {} is asymmetric", claims.alg),
        )
    } else {
        check(
            "algorithm",
            INVALID,
            Outcome::Fail,
            CheckError::SymmetricAlgorithm(claims.alg.clone()).to_string(),
        )
    });
    out.push(match issuer {
        None => check(
            "issuer",
            ISSUER_NOT_MATCH,
            Outcome::Skipped,
            format!(
                "no --issuer given (the token's iss is {:?}; RAM compares it with the IdP's issuer URL)",
                claims.iss
            ),
        ),
        Some(want) if claims.iss == want => check(
            "issuer",
            ISSUER_NOT_MATCH,
            Outcome::Pass,
            format!("iss equals {want:?}"),
        ),
        Some(want) => check(
            "issuer",
            ISSUER_NOT_MATCH,
            Outcome::Fail,
            CheckError::IssuerNotMatch {
                got: claims.iss.clone(),
                want: want.to_owned(),
            }
            .to_string(),
        ),
    });
    out.push(if client_ids.is_empty() {
        check(
            "audience",
            AUDIENCE_NOT_MATCH,
            Outcome::Skipped,
            format!(
                "no --client-id given (the token's aud is {:?}; RAM requires one of the IdP's client IDs)",
                claims.aud
            ),
        )
    } else if let Some(a) = claims.aud.iter().find(|a| client_ids.contains(a)) {
        check(
            "audience",
            AUDIENCE_NOT_MATCH,
            Outcome::Pass,
            format!("aud contains the client ID {a:?}"),
        )
    } else {
        check(
            "audience",
            AUDIENCE_NOT_MATCH,
            Outcome::Fail,
            format!(
                "aud {:?} contains none of the client IDs {:?}",
                claims.aud, client_ids
            ),
        )
    });
    let (now128, iat, exp) = (now as i128, claims.iat as i128, claims.exp as i128);
    out.push(if exp <= now128 {
        check(
            "expiry",
            EXPIRED,
            Outcome::Fail,
            format!(
                "the token expired at {} ({} s ago)",
                rfc3339(claims.exp),
                now128 - exp
            ),
        )
    } else {
        check(
            "expiry",
            EXPIRED,
            Outcome::Pass,
            format!("expires at {} (in {} s)", rfc3339(claims.exp), exp - now128),
        )
    });
    out.push(if iat > now128 + LEEWAY_SECS as i128 {
        check(
            "issuance_time",
            issue_time_code(),
            Outcome::Fail,
            format!(
                "iat {} is {} s in the future (more than {LEEWAY_SECS} s of clock skew)",
                rfc3339(claims.iat),
                iat - now128
            ),
        )
    } else if now128 - iat > limit_secs as i128 {
        check(
            "issuance_time",
            issue_time_code(),
            Outcome::Fail,
            format!(
                "issued at {} ({} s ago), longer ago than the issuance limit of {} s; fetch a new token",
                rfc3339(claims.iat),
                now128 - iat,
                limit_secs
            ),
        )
    } else {
        check(
            "issuance_time",
            issue_time_code(),
            Outcome::Pass,
            format!(
                "issued at {} ({} s ago), within the issuance limit of {} s",
                rfc3339(claims.iat),
                (now128 - iat).max(0),
                limit_secs
            ),
        )
    });
    out
}

/// The signature check: JWKS from --jwks-uri, else discovery of the issuer.
async fn signature_check(
    args: &CheckArgs,
    token: &str,
    claims: &TokenClaims,
) -> Result<Check, CommandError> {
    if !ACCEPTED_ALGORITHMS.contains(&claims.alg.as_str()) {
        return Ok(check(
            "signature",
            INVALID_SIGNATURE,
            Outcome::Skipped,
            format!(
                "alg {} is not accepted, so no key can verify it",
                claims.alg
            ),
        ));
    }
    let client = IdaasClient::new(&HttpConfig {
        connect_timeout: args.connect_timeout,
        timeout: args.request_timeout,
        ca_file: args.ca_file.clone(),
    })
    .map_err(|e| CommandError::Usage(e.to_string()))?;
    let not_checked = |why: String| {
        Ok(check(
            "signature",
            INVALID_SIGNATURE,
            Outcome::Warning,
            format!("signature not checked: {why}"),
        ))
    };
    let (jwks_uri, source) = match args.jwks_uri.as_deref().filter(|s| !s.is_empty()) {
        Some(uri) => (uri.to_owned(), "--jwks-uri".to_owned()),
        None => {
            let (issuer, whose) = match &args.issuer {
                Some(i) => (i.as_str(), "--issuer"),
                None => (
                    claims.iss.as_str(),
                    "the token's own iss (pass --issuer to pin it)",
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
    let shown = crate::idaas::client::display_url(&jwks_uri);
    match client.jwks(&jwks_uri).await {
        Ok(Some(set)) => Ok(match jwt::verify_signature(token, &set) {
            Ok(()) => check(
                "signature",
                INVALID_SIGNATURE,
                Outcome::Pass,
                format!(
                    "verified with kid {} of the JWKS at {shown} (from {source})",
                    claims.kid.as_deref().unwrap_or("(none)")
                ),
            ),
            Err(e) => check(
                "signature",
                e.ram_code(),
                Outcome::Fail,
                format!("{e} (JWKS at {shown}, from {source})"),
            ),
        }),
        Ok(None) => not_checked(format!("no JWKS is served at {shown} (404)")),
        Err(e) => not_checked(format!("cannot fetch the JWKS: {e}")),
    }
}

/// Runs every check and builds the report.
pub async fn evaluate(args: &CheckArgs, token: &str, now: i64) -> Result<Report, CommandError> {
    let claims = match jwt::decode_unverified(token) {
        Ok(c) => c,
        Err(e) => {
            let skipped = |name, code: &'static str| {
                check(
                    name,
                    code,
                    Outcome::Skipped,
                    "the token could not be decoded".to_owned(),
                )
            };
            return Ok(Report {
                token: None,
                checks: vec![
                    check("jwt", INVALID, Outcome::Fail, e.to_string()),
                    skipped("algorithm", INVALID),
                    skipped("issuer", ISSUER_NOT_MATCH),
                    skipped("audience", AUDIENCE_NOT_MATCH),
                    skipped("expiry", EXPIRED),
                    skipped("issuance_time", issue_time_code()),
                    skipped("signature", INVALID_SIGNATURE),
                ],
                ok: false,
            });
        }
    };
    let mut checks = vec![check(
        "jwt",
        INVALID,
        Outcome::Pass,
        "three base64url parts with a JSON header and payload".to_owned(),
    )];
    checks.extend(claim_checks(
        &claims,
        args.issuer.as_deref(),
        &args.client_ids,
        args.issuance_limit.as_secs(),
        now,
    ));
    checks.push(signature_check(args, token, &claims).await?);
    let ok = !checks.iter().any(|c| c.result == Outcome::Fail);
    Ok(Report {
        token: Some(TokenSummary {
            alg: claims.alg,
            kid: claims.kid,
            iss: claims.iss,
            sub: claims.sub,
            aud: claims.aud,
            iat: claims.iat,
            exp: claims.exp,
        }),
        checks,
        ok,
    })
}

fn validate(args: &CheckArgs) -> Result<(), CommandError> {
    let limit = args.issuance_limit;
    if limit < Duration::from_secs(3600) || limit > Duration::from_secs(168 * 3600) {
        return Err(CommandError::Usage(
            "--issuance-limit must be between 1h and 168h (RAM's range)".to_owned(),
        ));
    }
    if args.client_ids.len() > MAX_CLIENT_IDS {
        return Err(CommandError::Usage(format!(
            "{} --client-id values given; RAM's OIDC IdP holds at most {MAX_CLIENT_IDS}",
            args.client_ids.len()
        )));
    }
    if args.client_ids.iter().any(|c| c.trim().is_empty()) {
        return Err(CommandError::Usage(
            "--client-id must not be empty".to_owned(),
        ));
    }
    if let Some(i) = &args.issuer
        && i.trim().is_empty()
    {
        return Err(CommandError::Usage("--issuer must not be empty".to_owned()));
    }
    Ok(())
}

fn print_text(r: &Report) {
    match &r.token {
        Some(t) => {
            println!("alg: {}", t.alg);
            println!("kid: {}", t.kid.as_deref().unwrap_or("-"));
            println!("iss: {}", t.iss);
            println!("sub: {}", t.sub.as_deref().unwrap_or("-"));
            println!("aud: {}", t.aud.join(","));
            println!("iat: {} ({})", rfc3339(t.iat), t.iat);
            println!("exp: {} ({})", rfc3339(t.exp), t.exp);
        }
        None => println!("token: not decodable"),
    }
    println!();
    for c in &r.checks {
        let label = match c.result {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::Skipped => "SKIP",
            Outcome::Warning => "WARN",
        };
        println!("{label} {:<14} {:<46} {}", c.name, c.ram_code, c.detail);
    }
    println!();
    let failed: Vec<&str> = r
        .checks
        .iter()
        .filter(|c| c.result == Outcome::Fail)
        .map(|c| c.ram_code)
        .collect();
    if r.ok {
        let not_run = r
            .checks
            .iter()
            .filter(|c| matches!(c.result, Outcome::Skipped | Outcome::Warning))
            .count();
        if not_run == 0 {
            println!("result: RAM would accept this token");
        } else {
            println!(
                "result: every check that ran passed ({not_run} not run; see SKIP/WARN above)"
            );
        }
    } else {
        println!("result: RAM would reject this token: {}", failed.join(", "));
    }
}

/// Runs `check`.
pub async fn run(args: CheckArgs) -> Result<(), CommandError> {
    validate(&args)?;
    let text = std::fs::read_to_string(&args.token_file).map_err(|e| {
        CommandError::Usage(format!(
            "cannot read the token file {}: {e}",
            args.token_file.display()
        ))
    })?;
    let report = evaluate(&args, text.trim(), crate::controller::reconcile::unix_now()).await?;
    match args.output {
        OutputFormat::Text => print_text(&report),
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        ),
    }
    if report.ok {
        Ok(())
    } else {
        Err(CommandError::Failed(
            "the token fails RAM's checks".to_owned(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> TokenClaims {
        TokenClaims {
            alg: "RS256".into(),
            kid: Some("k".into()),
            iss: "https://i".into(),
            sub: None,
            aud: vec!["a".into()],
            iat: 1000,
            exp: 5000,
        }
    }

    #[test]
    fn every_claim_check_reports() {
        let c = claim_checks(&claims(), Some("https://i"), &["a".into()], 3600, 2000);
        assert!(c.iter().all(|c| c.result == Outcome::Pass), "{c:?}");
        let c = claim_checks(&claims(), None, &[], 3600, 2000);
        assert_eq!(c[1].result, Outcome::Skipped);
        assert_eq!(c[2].result, Outcome::Skipped);
        let c = claim_checks(&claims(), Some("x"), &["b".into()], 600, 6000);
        let failed: Vec<_> = c
            .iter()
            .filter(|c| c.result == Outcome::Fail)
            .map(|c| c.ram_code)
            .collect();
        assert_eq!(
            failed,
            [
                ISSUER_NOT_MATCH,
                AUDIENCE_NOT_MATCH,
                EXPIRED,
                "AuthenticationFail.OIDCToken.IssueTimeInvalid"
            ]
        );
    }
}
