//! `check`: would RAM's AssumeRoleWithOIDC accept this token? Every check RAM applies, each named
//! by RAM's own error code, reported whether it passed, failed or was skipped (and why).
//!
//! The token itself and its signature are never printed: only its header and claim values.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use super::{CommandError, HttpArgs, OutputArgs, OutputFormat, parse_duration};
use crate::http::display_url;
use crate::idaas::jwt;
use crate::idaas::{AllowedOrigins, IdaasClient, TokenClaims};
use crate::ram::claims::{ACCEPTED_ALGORITHMS, CHECKS, Check, IAT_LEEWAY_SECS, Outcome, Rules};
use crate::ram::code;
use crate::time::{rfc3339, unix_now};

/// RAM's limit on the client IDs of one OIDC identity provider.
pub const MAX_CLIENT_IDS: usize = 50;
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
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub http: HttpArgs,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The token's header and claims (never the token or its signature).
    pub token: Option<TokenClaims>,
    pub checks: Vec<Check>,
    pub ok: bool,
}

/// The signature check: JWKS from --jwks-uri, else discovery of the issuer.
async fn signature_check(
    args: &CheckArgs,
    token: &str,
    claims: &TokenClaims,
) -> Result<Check, CommandError> {
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
    let client = IdaasClient::new(&args.http.config(AllowedOrigins::any()))
        .map_err(|e| CommandError::Usage(e.to_string()))?;
    let not_checked = |why: String| {
        Ok(Check::new(
            "signature",
            code::INVALID_SIGNATURE,
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

/// Runs every check and builds the report.
pub async fn evaluate(args: &CheckArgs, token: &str, now: i64) -> Result<Report, CommandError> {
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
    let rules = Rules {
        issuer: args.issuer.as_deref(),
        audiences: &args.client_ids,
        issuance_limit_secs: args.issuance_limit.as_secs(),
        leeway_secs: IAT_LEEWAY_SECS,
    };
    checks.extend(crate::ram::claim_checks(&claims, &rules, now));
    checks.push(signature_check(args, token, &claims).await?);
    let ok = !checks.iter().any(|c| c.result == Outcome::Fail);
    Ok(Report {
        token: Some(claims),
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
    let report = evaluate(&args, text.trim(), unix_now()).await?;
    match args.output.output {
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
