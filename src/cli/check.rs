//! `check`: would RAM's AssumeRoleWithOIDC accept this token? The flags and the output of
//! [`crate::idaas::check`], which runs every check RAM applies.
//!
//! The token itself and its signature are never printed: only its header and claim values.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{CommandError, HttpArgs, OutputArgs, OutputFormat, parse_duration};
use crate::idaas::AllowedOrigins;
use crate::idaas::check::{self, Keys, Report};
use crate::ram::claims::{IAT_LEEWAY_SECS, Rules};
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
    /// A Client ID of RAM's OIDC IdP, that is an audience the token must carry (the IDaaS
    /// resource server's identifier, e.g. api://payments; not the M2M application's app_... ID);
    /// repeat, up to 50; `aud` must contain one of them. `--client-id` is an alias (RAM's name).
    #[arg(
        long = "audience",
        visible_alias = "client-id",
        env = "IDAAS_PROJECTOR_AUDIENCES",
        value_delimiter = ','
    )]
    pub audiences: Vec<String>,
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

/// Runs every check and builds the report.
pub async fn evaluate(args: &CheckArgs, token: &str, now: i64) -> Result<Report, CommandError> {
    let rules = Rules {
        issuer: args.issuer.as_deref(),
        audiences: &args.audiences,
        issuance_limit_secs: args.issuance_limit.as_secs(),
        leeway_secs: IAT_LEEWAY_SECS,
    };
    let http = args.http.config(AllowedOrigins::any());
    let keys = Keys {
        jwks_uri: args.jwks_uri.as_deref().map(|uri| (uri, "--jwks-uri")),
        issuer_source: "--issuer",
        http: &http,
    };
    check::evaluate(&rules, &keys, token, now)
        .await
        .map_err(|e| CommandError::Usage(e.to_string()))
}

fn validate(args: &CheckArgs) -> Result<(), CommandError> {
    let limit = args.issuance_limit;
    if limit < Duration::from_secs(3600) || limit > Duration::from_secs(168 * 3600) {
        return Err(CommandError::Usage(
            "--issuance-limit must be between 1h and 168h (RAM's range)".to_owned(),
        ));
    }
    if args.audiences.len() > MAX_CLIENT_IDS {
        return Err(CommandError::Usage(format!(
            "{} --audience values given; RAM's OIDC IdP holds at most {MAX_CLIENT_IDS} Client IDs",
            args.audiences.len()
        )));
    }
    if args.audiences.iter().any(|c| c.trim().is_empty()) {
        return Err(CommandError::Usage(
            "--audience must not be empty".to_owned(),
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
        let label = c.result.label();
        println!("{label} {:<14} {:<46} {}", c.name, c.ram_code, c.detail);
    }
    println!();
    let failed: Vec<&str> = r.failed().map(|c| c.ram_code).collect();
    if r.ok {
        let not_run = r.not_run();
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
