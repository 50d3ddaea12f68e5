//! `assume-role`: the STS step of Alibaba Cloud's "AK-free access" guide. Calls
//! AssumeRoleWithOIDC anonymously with a token file and prints who it became and when the
//! credentials expire; the secret and security token only with `--show-secrets`. STS error
//! codes become plain explanations with the fix.
//!
//! The token itself is never printed or logged.

use std::path::PathBuf;

use clap::Args;
use serde_json::{Value, json};

use super::{CommandError, HttpArgs, OutputArgs, OutputFormat};
use crate::http::error_chain;
use crate::idaas::jwt::{self, TokenClaims};
use crate::ram::names::{
    MAX_SESSION_DURATION_SECS, MIN_SESSION_DURATION_SECS, is_region_id, is_session_name,
    validate_oidc_provider_arn, validate_role_arn,
};
use crate::ram::{STS_ACTION, STS_VERSION, code};
use crate::time::{rfc3339, unix_now};

/// The public STS endpoint.
pub const DEFAULT_STS_ENDPOINT: &str = "https://sts.aliyuncs.com";

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

fn usage(m: impl Into<String>) -> CommandError {
    CommandError::Usage(m.into())
}

/// The STS endpoint the flags select.
pub fn endpoint(args: &AssumeRoleArgs) -> Result<String, CommandError> {
    let raw = match (&args.sts_endpoint, &args.sts_region) {
        (Some(e), _) if !e.trim().is_empty() => e.trim().to_owned(),
        (_, Some(region)) if !region.trim().is_empty() => {
            let region = region.trim();
            if !is_region_id(region) {
                return Err(usage(format!(
                    "--sts-region {region:?} is not a region ID such as cn-hangzhou"
                )));
            }
            let host = if args.vpc { "sts-vpc" } else { "sts" };
            format!("https://{host}.{region}.aliyuncs.com")
        }
        _ => DEFAULT_STS_ENDPOINT.to_owned(),
    };
    let with_scheme = if raw.contains("://") {
        raw
    } else {
        format!("https://{raw}")
    };
    let url = url::Url::parse(&with_scheme)
        .map_err(|e| usage(format!("--sts-endpoint {with_scheme:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(usage(format!(
            "--sts-endpoint {with_scheme:?} must be an http(s) URL"
        )));
    }
    Ok(url.to_string())
}

/// `STS.NT***`: the first six characters and a mark.
pub fn mask(access_key_id: &str) -> String {
    let head: String = access_key_id.chars().take(6).collect();
    format!("{head}***")
}

/// The checked flags and the token, ready to send.
struct Call {
    endpoint: String,
    session: String,
    token: String,
    claims: Option<TokenClaims>,
}

fn prepare(args: &AssumeRoleArgs) -> Result<Call, CommandError> {
    validate_role_arn(&args.role_arn)
        .map_err(|why| usage(format!("--role-arn {:?}: {why}", args.role_arn)))?;
    validate_oidc_provider_arn(&args.oidc_provider_arn).map_err(|why| {
        usage(format!(
            "--oidc-provider-arn {:?}: {why}",
            args.oidc_provider_arn
        ))
    })?;
    if !(MIN_SESSION_DURATION_SECS..=MAX_SESSION_DURATION_SECS).contains(&args.duration) {
        return Err(usage(format!(
            "--duration {} must be between {MIN_SESSION_DURATION_SECS} and {MAX_SESSION_DURATION_SECS} seconds",
            args.duration
        )));
    }
    let session = match &args.session_name {
        Some(s) => s.clone(),
        None => format!("idaas-projector-{}", unix_now()),
    };
    if !is_session_name(&session) {
        return Err(usage(format!(
            "--session-name {session:?} must be 2 to 64 characters of A-Z a-z 0-9 . @ _ -"
        )));
    }
    let endpoint = endpoint(args)?;
    let text = std::fs::read_to_string(&args.token_file).map_err(|e| {
        usage(format!(
            "cannot read the token file {}: {e}",
            args.token_file.display()
        ))
    })?;
    let token = text.trim().to_owned();
    if token.is_empty() {
        return Err(usage(format!(
            "the token file {} is empty",
            args.token_file.display()
        )));
    }
    // Only for explanations: STS judges the token, not us.
    let claims = jwt::decode_unverified(&token).ok();
    Ok(Call {
        endpoint,
        session,
        token,
        claims,
    })
}

/// Runs the command: prints the result on stdout, or returns the explanation.
pub async fn run(args: AssumeRoleArgs) -> Result<(), CommandError> {
    let call = prepare(&args)?;
    let client = args.http.client()?;
    let nonce = format!("{:032x}", fastrand::u128(..));
    let timestamp = rfc3339(unix_now());
    let duration = args.duration.to_string();
    let form: [(&str, &str); 10] = [
        ("Action", STS_ACTION),
        ("Version", STS_VERSION),
        ("Format", "JSON"),
        ("Timestamp", &timestamp),
        ("SignatureNonce", &nonce),
        ("RoleArn", &args.role_arn),
        ("OIDCProviderArn", &args.oidc_provider_arn),
        ("OIDCToken", &call.token),
        ("RoleSessionName", &call.session),
        ("DurationSeconds", &duration),
    ];
    tracing::debug!(endpoint = %call.endpoint, role = %args.role_arn, session = %call.session, "calling AssumeRoleWithOIDC");
    let response = client
        .post(&call.endpoint)
        .header(reqwest::header::ACCEPT, "application/json")
        .form(&form)
        .send()
        .await
        .map_err(|e| {
            CommandError::Failed(format!(
                "cannot reach STS at {}: {}",
                call.endpoint,
                error_chain(&e)
            ))
        })?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| {
        CommandError::Failed(format!(
            "STS at {} answered HTTP {status} but the body could not be read: {}",
            call.endpoint,
            error_chain(&e)
        ))
    })?;
    let value: Option<Value> = serde_json::from_slice(&body).ok();
    if !status.is_success() {
        let Some(err) = value.filter(|v| v.get("Code").is_some()) else {
            return Err(CommandError::Failed(format!(
                "STS at {} answered HTTP {status} without an error code (is this an STS endpoint?)",
                call.endpoint
            )));
        };
        return Err(refusal(status, &err, &args, &call));
    }
    let Some(mut answer) = value.filter(|v| v.get("Credentials").is_some()) else {
        return Err(CommandError::Failed(format!(
            "STS at {} answered HTTP {status} without credentials (is this an STS endpoint?)",
            call.endpoint
        )));
    };
    print_answer(&mut answer, &args);
    Ok(())
}

/// STS's error answer, explained; printed as JSON too with `--output json`.
fn refusal(
    status: reqwest::StatusCode,
    err: &Value,
    args: &AssumeRoleArgs,
    call: &Call,
) -> CommandError {
    let error_code = err["Code"].as_str().unwrap_or_default();
    let message = err["Message"].as_str().unwrap_or_default();
    let request_id = err["RequestId"].as_str().unwrap_or("-");
    let fix = code::explain(
        error_code,
        message,
        &code::Call {
            role_arn: &args.role_arn,
            oidc_provider_arn: &args.oidc_provider_arn,
            duration_secs: args.duration,
        },
        call.claims.as_ref(),
        err.get("Recommend").and_then(Value::as_str),
    );
    if args.output.output == OutputFormat::Json {
        println!(
            "{}",
            json!({"error": {"httpStatus": status.as_u16(), "code": error_code, "message": message,
                "requestId": request_id, "explanation": fix}})
        );
    }
    CommandError::Failed(format!(
        "STS refused AssumeRoleWithOIDC: {error_code} ({message}); request ID {request_id}\n{fix}"
    ))
}

fn print_answer(answer: &mut Value, args: &AssumeRoleArgs) {
    let creds = &answer["Credentials"];
    let key_id = creds["AccessKeyId"].as_str().unwrap_or_default().to_owned();
    let shown_key = if args.show_secrets {
        key_id.clone()
    } else {
        mask(&key_id)
    };
    if args.output.output == OutputFormat::Json {
        if let Some(c) = answer["Credentials"].as_object_mut() {
            c.insert("AccessKeyId".into(), Value::String(shown_key));
            if !args.show_secrets {
                c.remove("AccessKeySecret");
                c.remove("SecurityToken");
            }
        }
        println!(
            "{}",
            serde_json::to_string_pretty(answer).unwrap_or_default()
        );
        return;
    }
    let s = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let info = &answer["OIDCTokenInfo"];
    println!("assumed role:    {}", s(&answer["AssumedRoleUser"]["Arn"]));
    println!("AccessKeyId:     {shown_key}");
    println!("expiration:      {}", s(&creds["Expiration"]));
    println!("token subject:   {}", s(&info["Subject"]));
    println!("token issuer:    {}", s(&info["Issuer"]));
    println!("token client ID: {}", s(&info["ClientIds"]));
    println!("request ID:      {}", s(&answer["RequestId"]));
    if args.show_secrets {
        println!("AccessKeySecret: {}", s(&creds["AccessKeySecret"]));
        println!("SecurityToken:   {}", s(&creds["SecurityToken"]));
    } else {
        println!("(AccessKeySecret and SecurityToken hidden; --show-secrets prints them)");
    }
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

    #[test]
    fn masks() {
        assert_eq!(mask("STS.NTabcdef"), "STS.NT***");
        assert_eq!(mask("ab"), "ab***");
    }
}
