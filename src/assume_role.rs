//! `assume-role`: the STS step of Alibaba Cloud's "AK-free access" guide. Calls
//! AssumeRoleWithOIDC anonymously with a token file and prints who it became and when the
//! credentials expire; the secret and security token only with `--show-secrets`. STS error
//! codes become plain explanations with the fix.
//!
//! The token itself is never printed or logged.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};

use crate::cli::parse_duration;
use crate::idaas::jwt::{self, TokenClaims};
use crate::webhook::annotations::{
    is_region_id, is_session_name, validate_oidc_provider_arn, validate_role_arn,
};

/// The public STS endpoint.
pub const DEFAULT_STS_ENDPOINT: &str = "https://sts.aliyuncs.com";
/// The API version of AssumeRoleWithOIDC.
pub const STS_VERSION: &str = "2015-04-01";
/// RAM's `DurationSeconds` range.
pub const MIN_DURATION: u64 = 900;
pub const MAX_DURATION: u64 = 43_200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

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
    /// PEM CA certificates trusted on top of the system roots.
    #[arg(long, env = "IDAAS_PROJECTOR_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Also print the AccessKeyId in full, the AccessKeySecret and the SecurityToken.
    #[arg(long, env = "IDAAS_PROJECTOR_SHOW_SECRETS")]
    pub show_secrets: bool,
    /// Output format.
    #[arg(
        long,
        env = "IDAAS_PROJECTOR_OUTPUT",
        value_enum,
        default_value = "text"
    )]
    pub output: Output,
    /// Total timeout of the call.
    #[arg(long, env = "IDAAS_PROJECTOR_REQUEST_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub request_timeout: Duration,
}

/// Bad usage (exit 2) or a failed call (exit 1).
pub type AssumeRoleError = crate::cli::CommandError;

fn usage(m: impl Into<String>) -> AssumeRoleError {
    AssumeRoleError::Usage(m.into())
}

/// The STS endpoint the flags select.
pub fn endpoint(args: &AssumeRoleArgs) -> Result<String, AssumeRoleError> {
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

fn http_client(args: &AssumeRoleArgs) -> Result<reqwest::Client, AssumeRoleError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5).min(args.request_timeout))
        .timeout(args.request_timeout)
        .user_agent(crate::idaas::client::USER_AGENT)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = &args.ca_file {
        builder = builder.tls_certs_merge(load_ca_file(path)?);
    }
    builder
        .build()
        .map_err(|e| AssumeRoleError::Failed(format!("cannot build the HTTP client: {e}")))
}

fn load_ca_file(path: &Path) -> Result<Vec<reqwest::Certificate>, AssumeRoleError> {
    let bad = |what: String| usage(format!("--ca-file {}: {what}", path.display()));
    let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let mut certs = Vec::new();
    for der in CertificateDer::pem_slice_iter(&pem) {
        let der = der.map_err(|e| bad(format!("bad PEM: {e}")))?;
        certs.push(reqwest::Certificate::from_der(&der).map_err(|e| bad(e.to_string()))?);
    }
    if certs.is_empty() {
        return Err(bad("no PEM CERTIFICATE block".to_owned()));
    }
    Ok(certs)
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

fn prepare(args: &AssumeRoleArgs) -> Result<Call, AssumeRoleError> {
    validate_role_arn(&args.role_arn)
        .map_err(|why| usage(format!("--role-arn {:?}: {why}", args.role_arn)))?;
    validate_oidc_provider_arn(&args.oidc_provider_arn).map_err(|why| {
        usage(format!(
            "--oidc-provider-arn {:?}: {why}",
            args.oidc_provider_arn
        ))
    })?;
    if !(MIN_DURATION..=MAX_DURATION).contains(&args.duration) {
        return Err(usage(format!(
            "--duration {} must be between {MIN_DURATION} and {MAX_DURATION} seconds",
            args.duration
        )));
    }
    let session = match &args.session_name {
        Some(s) => s.clone(),
        None => format!("idaas-projector-{}", crate::unix_now()),
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
pub async fn run(args: AssumeRoleArgs) -> Result<(), AssumeRoleError> {
    let call = prepare(&args)?;
    let client = http_client(&args)?;
    let nonce = format!("{:032x}", fastrand::u128(..));
    let timestamp = crate::controller::secret::rfc3339(crate::unix_now());
    let duration = args.duration.to_string();
    let form: [(&str, &str); 10] = [
        ("Action", "AssumeRoleWithOIDC"),
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
            AssumeRoleError::Failed(format!(
                "cannot reach STS at {}: {}",
                call.endpoint,
                error_chain(&e)
            ))
        })?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| {
        AssumeRoleError::Failed(format!(
            "STS at {} answered HTTP {status} but the body could not be read: {}",
            call.endpoint,
            error_chain(&e)
        ))
    })?;
    let value: Option<Value> = serde_json::from_slice(&body).ok();
    if !status.is_success() {
        let Some(err) = value.filter(|v| v.get("Code").is_some()) else {
            return Err(AssumeRoleError::Failed(format!(
                "STS at {} answered HTTP {status} without an error code (is this an STS endpoint?)",
                call.endpoint
            )));
        };
        let code = err["Code"].as_str().unwrap_or_default();
        let message = err["Message"].as_str().unwrap_or_default();
        let request_id = err["RequestId"].as_str().unwrap_or("-");
        let fix = explain(code, message, &args, call.claims.as_ref(), &err);
        if args.output == Output::Json {
            println!(
                "{}",
                json!({"error": {"httpStatus": status.as_u16(), "code": code, "message": message,
                    "requestId": request_id, "explanation": fix}})
            );
        }
        return Err(AssumeRoleError::Failed(format!(
            "STS refused AssumeRoleWithOIDC: {code} ({message}); request ID {request_id}\n{fix}"
        )));
    }
    let Some(mut answer) = value.filter(|v| v.get("Credentials").is_some()) else {
        return Err(AssumeRoleError::Failed(format!(
            "STS at {} answered HTTP {status} without credentials (is this an STS endpoint?)",
            call.endpoint
        )));
    };
    print_answer(&mut answer, &args);
    Ok(())
}

fn print_answer(answer: &mut Value, args: &AssumeRoleArgs) {
    let creds = &answer["Credentials"];
    let key_id = creds["AccessKeyId"].as_str().unwrap_or_default().to_owned();
    let shown_key = if args.show_secrets {
        key_id.clone()
    } else {
        mask(&key_id)
    };
    if args.output == Output::Json {
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

/// A plain explanation of an STS error code, with the fix.
pub fn explain(
    code: &str,
    message: &str,
    args: &AssumeRoleArgs,
    claims: Option<&TokenClaims>,
    err: &Value,
) -> String {
    let aud = claims
        .map(|c| c.aud.join(", "))
        .unwrap_or_else(|| "<unreadable>".to_owned());
    let iss = claims
        .map(|c| c.iss.clone())
        .unwrap_or_else(|| "<unreadable>".to_owned());
    let at = |t: Option<i64>| {
        t.map(crate::controller::secret::rfc3339)
            .unwrap_or_else(|| "<unreadable>".to_owned())
    };
    match code {
        "AuthenticationFail.OIDCToken.AudienceNotMatch" => format!(
            "The token's aud ({aud}) is not among the OIDC provider's Client IDs. Add {aud} to the \
             Client IDs of {} in RAM, or fix spec.audience (token --audience) so the token carries \
             one of the provider's Client IDs.",
            args.oidc_provider_arn
        ),
        "AuthenticationFail.OIDCToken.IssuerNotMatch" => format!(
            "The token's iss ({iss}) is not the OIDC provider's Issuer URL. Set the Issuer URL of {} \
             in RAM to exactly {iss} (a trailing slash counts), or fix spec.issuer.",
            args.oidc_provider_arn
        ),
        "AuthenticationFail.OIDCToken.Expired" => format!(
            "The token expired at {}. Fetch a fresh one: is the projector running and keeping the \
             Secret current, and does the pod read the mounted file each time (not a copy)?",
            at(claims.map(|c| c.exp))
        ),
        "AuthenticationFail.OIDCToken.IssueTimeInvalid" => format!(
            "The token was issued at {}, longer ago than the OIDC provider's Earliest Issuance Time \
             Allowed (or in the future: check the clocks). Set spec.maxTokenAge (token \
             --max-token-age) no longer than the provider's limit, or raise the limit in RAM.",
            at(claims.map(|c| c.iat))
        ),
        "AuthenticationFail.OIDCToken.InvalidSignature" => format!(
            "The token's signature does not verify against the keys RAM fetched from the issuer \
             {iss}. Check that the provider's Issuer URL is the issuer that signed the token and \
             that its fingerprint is current (idaas-projector fingerprint {iss}); a just-rotated \
             key needs a fresh token."
        ),
        "AuthenticationFail.OIDCToken.HttpsUrlInvalid" => format!(
            "RAM could not fetch the issuer's keys over HTTPS: the certificate chain of {iss} does \
             not match the OIDC provider's fingerprints. Run idaas-projector fingerprint {iss} and \
             add the marked fingerprint to {} in RAM.",
            args.oidc_provider_arn
        ),
        "AuthenticationFail.OIDCToken.Invalid" => "RAM cannot use the token: it is not a JWT, \
             or it is signed with HS* (RAM accepts RS*, PS* and ES* only). The file must hold only \
             the raw JWT; idaas-projector check --token-file FILE says what is wrong."
            .to_owned(),
        "AuthenticationFail.NoPermission" if message.contains("OIDC Provider") => format!(
            "RAM has no OIDC provider {}. Check --oidc-provider-arn (acs:ram::<account \
             id>:oidc-provider/<name>, as the RAM console shows it) and that it is in the role's \
             account.",
            args.oidc_provider_arn
        ),
        "AuthenticationFail.NoPermission" => format!(
            "RAM refused to let this token assume {}. Check that the role exists (--role-arn), that \
             the OIDC provider {} belongs to the same account, and that the role's trust policy \
             names that provider as its Federated principal with conditions (oidc:iss, oidc:aud, \
             oidc:sub) that this token meets.",
            args.role_arn, args.oidc_provider_arn
        ),
        "InvalidParameter.DurationSeconds" => format!(
            "--duration {} is outside 900 s .. the role's maximum session duration. Lower \
             --duration or raise the role's MaxSessionDuration in RAM.",
            args.duration
        ),
        "InvalidParameter.RoleSessionName" => {
            "The session name must be 2 to 64 characters of A-Z a-z 0-9 . @ _ -; fix \
             --session-name."
                .to_owned()
        }
        "InvalidParameter.RoleArn" => format!(
            "STS rejects the role ARN {}; it must look like acs:ram::<account id>:role/<name>.",
            args.role_arn
        ),
        "InvalidParameter.OIDCProviderArn" => format!(
            "STS rejects the OIDC provider ARN {}; it must look like acs:ram::<account \
             id>:oidc-provider/<name>.",
            args.oidc_provider_arn
        ),
        "Throttling" | "Throttling.User" | "Throttling.Api" => {
            "STS is throttling this caller; retry later and reuse credentials until they \
             expire instead of calling STS for each request."
                .to_owned()
        }
        c if c.starts_with("Missing") => format!(
            "STS did not receive a required parameter ({c}); a proxy between here and {} may have \
             dropped the request body.",
            "STS"
        ),
        _ => match err.get("Recommend").and_then(Value::as_str) {
            Some(link) => format!("See {link} for this error code."),
            None => "See Alibaba Cloud's STS error code reference for this code.".to_owned(),
        },
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut next = e.source();
    while let Some(err) = next {
        let s = err.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        next = err.source();
    }
    parts.join(": ")
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
