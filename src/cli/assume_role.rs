//! `assume-role`: the STS step of Alibaba Cloud's "AK-free access" guide. Calls
//! AssumeRoleWithOIDC anonymously ([`crate::sts`]) with a token file and prints who it became
//! and when the credentials expire; the secret and security token only with `--show-secrets`.
//! STS error codes become plain explanations with the fix.
//!
//! The token itself is never printed or logged.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use super::{CommandError, HttpArgs, OutputArgs, OutputFormat};
use crate::ram::names::{
    MAX_SESSION_DURATION_SECS, MIN_SESSION_DURATION_SECS, is_session_name,
    validate_oidc_provider_arn, validate_role_arn,
};
use crate::sts;
use crate::time::unix_now;

#[derive(Debug, Args)]
pub struct AssumeRoleArgs {
    /// File holding the OIDC token (the raw JWT; surrounding whitespace is ignored).
    #[arg(long, env = "IDAAS_PROJECTOR_TOKEN_FILE")]
    pub token_file: PathBuf,
    /// The RAM role to assume: acs:ram::<account id>:role/<name>.
    #[arg(long, env = "IDAAS_PROJECTOR_ROLE_ARN")]
    pub role_arn: String,
    /// RAM's OIDC provider: acs:ram::<account id>:oidc-provider/<name>.
    #[arg(long, env = "IDAAS_PROJECTOR_OIDC_PROVIDER_ARN")]
    pub oidc_provider_arn: String,
    /// RoleSessionName: 2 to 64 characters of A-Z a-z 0-9 . @ _ -; default
    /// idaas-projector-<unix time>.
    #[arg(long, env = "IDAAS_PROJECTOR_SESSION_NAME")]
    pub session_name: Option<String>,
    /// Validity of the credentials in seconds (900..43200, at most the role's maximum session
    /// duration).
    #[arg(long, env = "IDAAS_PROJECTOR_DURATION", default_value_t = 3600)]
    pub duration: u64,
    /// STS endpoint URL; default https://sts.aliyuncs.com, or the region's with --sts-region.
    #[arg(
        long,
        env = "IDAAS_PROJECTOR_STS_ENDPOINT",
        conflicts_with = "sts_region"
    )]
    pub sts_endpoint: Option<String>,
    /// Use the STS endpoint of this region: https://sts.<region>.aliyuncs.com.
    #[arg(long, env = "IDAAS_PROJECTOR_STS_REGION")]
    pub sts_region: Option<String>,
    /// With --sts-region: the VPC endpoint https://sts-vpc.<region>.aliyuncs.com.
    #[arg(long, env = "IDAAS_PROJECTOR_VPC", requires = "sts_region")]
    pub vpc: bool,
    /// Also print the AccessKeyId in full, the AccessKeySecret and the SecurityToken.
    #[arg(long, env = "IDAAS_PROJECTOR_SHOW_SECRETS")]
    pub show_secrets: bool,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub http: HttpArgs,
}

/// The STS endpoint the flags select.
pub fn endpoint(args: &AssumeRoleArgs) -> Result<String, CommandError> {
    sts::endpoint(
        args.sts_endpoint.as_deref(),
        args.sts_region.as_deref(),
        args.vpc,
    )
    .map_err(CommandError::usage)
}

/// The checked flags and the token, ready to send.
struct Prepared {
    endpoint: String,
    session: String,
    token: String,
}

fn prepare(args: &AssumeRoleArgs) -> Result<Prepared, CommandError> {
    validate_role_arn(&args.role_arn)
        .map_err(|why| CommandError::usage(format!("--role-arn {:?}: {why}", args.role_arn)))?;
    validate_oidc_provider_arn(&args.oidc_provider_arn).map_err(|why| {
        CommandError::usage(format!(
            "--oidc-provider-arn {:?}: {why}",
            args.oidc_provider_arn
        ))
    })?;
    if !(MIN_SESSION_DURATION_SECS..=MAX_SESSION_DURATION_SECS).contains(&args.duration) {
        return Err(CommandError::usage(format!(
            "--duration {} must be between {MIN_SESSION_DURATION_SECS} and {MAX_SESSION_DURATION_SECS} seconds",
            args.duration
        )));
    }
    let session = match &args.session_name {
        Some(s) => s.clone(),
        None => format!("idaas-projector-{}", unix_now()),
    };
    if !is_session_name(&session) {
        return Err(CommandError::usage(format!(
            "--session-name {session:?} must be 2 to 64 characters of A-Z a-z 0-9 . @ _ -"
        )));
    }
    let endpoint = endpoint(args)?;
    let text = std::fs::read_to_string(&args.token_file).map_err(|e| {
        CommandError::usage(format!(
            "cannot read the token file {}: {e}",
            args.token_file.display()
        ))
    })?;
    let token = text.trim().to_owned();
    if token.is_empty() {
        return Err(CommandError::usage(format!(
            "the token file {} is empty",
            args.token_file.display()
        )));
    }
    Ok(Prepared {
        endpoint,
        session,
        token,
    })
}

/// Runs the command: prints the result on stdout, or returns the explanation.
pub async fn run(args: AssumeRoleArgs) -> Result<(), CommandError> {
    let prepared = prepare(&args)?;
    let client = args.http.client()?;
    let call = sts::Call {
        endpoint: &prepared.endpoint,
        role_arn: &args.role_arn,
        oidc_provider_arn: &args.oidc_provider_arn,
        session_name: &prepared.session,
        duration_secs: args.duration,
        token: &prepared.token,
    };
    let json = args.output.output == OutputFormat::Json;
    match sts::assume_role_with_oidc(&client, &call).await {
        Ok(answer) if json => println!(
            "{}",
            serde_json::to_string_pretty(&sts::redacted(answer, args.show_secrets))
                .unwrap_or_default()
        ),
        Ok(answer) => {
            for line in sts::text(&answer, args.show_secrets) {
                println!("{line}");
            }
        }
        Err(failure) => {
            if let (true, sts::Failure::Refused(refusal)) = (json, &failure) {
                println!("{}", json!({"error": refusal.json()}));
            }
            return Err(CommandError::Failed(failure.to_string()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> AssumeRoleArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct P {
            #[command(flatten)]
            a: AssumeRoleArgs,
        }
        let mut v = vec![
            "x",
            "--token-file",
            "t",
            "--role-arn",
            "acs:ram::1:role/r",
            "--oidc-provider-arn",
            "acs:ram::1:oidc-provider/p",
        ];
        v.extend_from_slice(extra);
        P::try_parse_from(v).unwrap().a
    }

    #[test]
    fn endpoints() {
        assert_eq!(endpoint(&args(&[])).unwrap(), "https://sts.aliyuncs.com/");
        assert_eq!(
            endpoint(&args(&["--sts-region", "cn-hangzhou"])).unwrap(),
            "https://sts.cn-hangzhou.aliyuncs.com/"
        );
        assert_eq!(
            endpoint(&args(&["--sts-region", "cn-hangzhou", "--vpc"])).unwrap(),
            "https://sts-vpc.cn-hangzhou.aliyuncs.com/"
        );
        assert_eq!(
            endpoint(&args(&["--sts-endpoint", "http://127.0.0.1:9"])).unwrap(),
            "http://127.0.0.1:9/"
        );
        assert_eq!(
            endpoint(&args(&["--sts-endpoint", "sts.example.com"])).unwrap(),
            "https://sts.example.com/"
        );
        assert!(endpoint(&args(&["--sts-region", "Hangzhou"])).is_err());
    }
}
