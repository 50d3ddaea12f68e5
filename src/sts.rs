//! STS AssumeRoleWithOIDC, as the SDKs call it: an anonymous form POST with the OIDC token.
//! `assume-role` calls it with a token file, `doctor --assume-role` with the token of a pod's
//! Secret. The answer is shown with its secrets redacted (unless asked for); a refusal comes
//! with RAM's explanation and the fix ([`crate::ram::code::explain`]).
//!
//! The token is sent and never printed, logged or put in an error.

use serde_json::{Value, json};

use crate::http::error_chain;
use crate::idaas::jwt;
use crate::ram::names::is_region_id;
use crate::ram::{STS_ACTION, STS_VERSION, code};
use crate::time::{rfc3339, unix_now};

/// The public STS endpoint.
pub const DEFAULT_STS_ENDPOINT: &str = "https://sts.aliyuncs.com";

/// The STS endpoint: `endpoint` when given (a bare host gets `https://`), else the region's
/// (`https://sts.<region>.aliyuncs.com`, `sts-vpc` with `vpc`), else the public one. The
/// error names the flag (`--sts-endpoint`, `--sts-region`).
pub fn endpoint(endpoint: Option<&str>, region: Option<&str>, vpc: bool) -> Result<String, String> {
    let raw = match (
        endpoint.map(str::trim).filter(|e| !e.is_empty()),
        region.map(str::trim).filter(|r| !r.is_empty()),
    ) {
        (Some(e), _) => e.to_owned(),
        (_, Some(region)) => {
            if !is_region_id(region) {
                return Err(format!(
                    "--sts-region {region:?} is not a region ID such as cn-hangzhou"
                ));
            }
            let host = if vpc { "sts-vpc" } else { "sts" };
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
        .map_err(|e| format!("--sts-endpoint {with_scheme:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "--sts-endpoint {with_scheme:?} must be an http(s) URL"
        ));
    }
    Ok(url.to_string())
}

/// `STS.NT***`: the first six characters and a mark.
pub fn mask(access_key_id: &str) -> String {
    let head: String = access_key_id.chars().take(6).collect();
    format!("{head}***")
}

/// One AssumeRoleWithOIDC call, its parameters checked by the caller.
#[derive(Clone, Copy)]
pub struct Call<'a> {
    pub endpoint: &'a str,
    pub role_arn: &'a str,
    pub oidc_provider_arn: &'a str,
    pub session_name: &'a str,
    pub duration_secs: u64,
    /// The OIDC token (never printed).
    pub token: &'a str,
}

impl std::fmt::Debug for Call<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("endpoint", &self.endpoint)
            .field("role_arn", &self.role_arn)
            .field("oidc_provider_arn", &self.oidc_provider_arn)
            .field("session_name", &self.session_name)
            .field("duration_secs", &self.duration_secs)
            .finish_non_exhaustive()
    }
}

/// STS's error answer, explained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub http_status: u16,
    pub code: String,
    pub message: String,
    pub request_id: String,
    /// What the code means for this call, with the fix.
    pub explanation: String,
}

impl Refusal {
    /// `STS refused AssumeRoleWithOIDC: <code> (<message>); request ID <id>`.
    pub fn summary(&self) -> String {
        format!(
            "STS refused AssumeRoleWithOIDC: {} ({}); request ID {}",
            self.code, self.message, self.request_id
        )
    }

    /// The JSON form `assume-role --output json` prints (`{"error": ...}`'s value).
    pub fn json(&self) -> Value {
        json!({"httpStatus": self.http_status, "code": self.code, "message": self.message,
            "requestId": self.request_id, "explanation": self.explanation})
    }
}

/// Why a call gave no credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// STS answered with an error code.
    Refused(Refusal),
    /// No answer, or one that is not STS's (the message says which).
    NoAnswer(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Refused(r) => write!(f, "{}\n{}", r.summary(), r.explanation),
            Failure::NoAnswer(m) => f.write_str(m),
        }
    }
}

/// Calls AssumeRoleWithOIDC: STS's answer (with `Credentials`), or why there is none.
pub async fn assume_role_with_oidc(
    client: &reqwest::Client,
    call: &Call<'_>,
) -> Result<Value, Failure> {
    let nonce = format!("{:032x}", fastrand::u128(..));
    let timestamp = rfc3339(unix_now());
    let duration = call.duration_secs.to_string();
    let form: [(&str, &str); 10] = [
        ("Action", STS_ACTION),
        ("Version", STS_VERSION),
        ("Format", "JSON"),
        ("Timestamp", &timestamp),
        ("SignatureNonce", &nonce),
        ("RoleArn", call.role_arn),
        ("OIDCProviderArn", call.oidc_provider_arn),
        ("OIDCToken", call.token),
        ("RoleSessionName", call.session_name),
        ("DurationSeconds", &duration),
    ];
    tracing::debug!(endpoint = %call.endpoint, role = %call.role_arn, session = %call.session_name, "calling AssumeRoleWithOIDC");
    let response = client
        .post(call.endpoint)
        .header(reqwest::header::ACCEPT, "application/json")
        .form(&form)
        .send()
        .await
        .map_err(|e| {
            Failure::NoAnswer(format!(
                "cannot reach STS at {}: {}",
                call.endpoint,
                error_chain(&e)
            ))
        })?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| {
        Failure::NoAnswer(format!(
            "STS at {} answered HTTP {status} but the body could not be read: {}",
            call.endpoint,
            error_chain(&e)
        ))
    })?;
    let value: Option<Value> = serde_json::from_slice(&body).ok();
    if !status.is_success() {
        let Some(err) = value.filter(|v| v.get("Code").is_some()) else {
            return Err(Failure::NoAnswer(format!(
                "STS at {} answered HTTP {status} without an error code (is this an STS endpoint?)",
                call.endpoint
            )));
        };
        return Err(Failure::Refused(refusal(status.as_u16(), &err, call)));
    }
    value
        .filter(|v| v.get("Credentials").is_some())
        .ok_or_else(|| {
            Failure::NoAnswer(format!(
                "STS at {} answered HTTP {status} without credentials (is this an STS endpoint?)",
                call.endpoint
            ))
        })
}

/// STS's error answer, explained for this call.
fn refusal(http_status: u16, err: &Value, call: &Call<'_>) -> Refusal {
    let error_code = err["Code"].as_str().unwrap_or_default();
    let message = err["Message"].as_str().unwrap_or_default();
    // Only for explanations: STS judges the token, not us.
    let claims = jwt::decode_unverified(call.token).ok();
    let explanation = code::explain(
        error_code,
        message,
        &code::Call {
            role_arn: call.role_arn,
            oidc_provider_arn: call.oidc_provider_arn,
            duration_secs: call.duration_secs,
        },
        claims.as_ref(),
        err.get("Recommend").and_then(Value::as_str),
    );
    Refusal {
        http_status,
        code: error_code.to_owned(),
        message: message.to_owned(),
        request_id: err["RequestId"].as_str().unwrap_or("-").to_owned(),
        explanation,
    }
}

/// STS's answer as shown: the AccessKeyId masked and the AccessKeySecret and SecurityToken
/// removed, unless `show_secrets`.
pub fn redacted(mut answer: Value, show_secrets: bool) -> Value {
    if show_secrets {
        return answer;
    }
    if let Some(c) = answer["Credentials"].as_object_mut() {
        let key_id = c
            .get("AccessKeyId")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let shown = mask(key_id);
        c.insert("AccessKeyId".into(), Value::String(shown));
        c.remove("AccessKeySecret");
        c.remove("SecurityToken");
    }
    answer
}

/// STS's answer as lines for a person: the assumed role, the AccessKeyId (masked unless
/// `show_secrets`), the expiry and what STS read from the token; the secrets only with
/// `show_secrets`.
pub fn text(answer: &Value, show_secrets: bool) -> Vec<String> {
    let s = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let creds = &answer["Credentials"];
    let key_id = s(&creds["AccessKeyId"]);
    let shown_key = if show_secrets { key_id } else { mask(&key_id) };
    let info = &answer["OIDCTokenInfo"];
    let mut lines = vec![
        format!("assumed role:    {}", s(&answer["AssumedRoleUser"]["Arn"])),
        format!("AccessKeyId:     {shown_key}"),
        format!("expiration:      {}", s(&creds["Expiration"])),
        format!("token subject:   {}", s(&info["Subject"])),
        format!("token issuer:    {}", s(&info["Issuer"])),
        format!("token client ID: {}", s(&info["ClientIds"])),
        format!("request ID:      {}", s(&answer["RequestId"])),
    ];
    if show_secrets {
        lines.push(format!("AccessKeySecret: {}", s(&creds["AccessKeySecret"])));
        lines.push(format!("SecurityToken:   {}", s(&creds["SecurityToken"])));
    } else {
        lines.push(
            "(AccessKeySecret and SecurityToken hidden; --show-secrets prints them)".to_owned(),
        );
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let e = |endpoint, region, vpc| super::endpoint(endpoint, region, vpc);
        assert_eq!(e(None, None, false).unwrap(), "https://sts.aliyuncs.com/");
        assert_eq!(
            e(None, Some("cn-hangzhou"), false).unwrap(),
            "https://sts.cn-hangzhou.aliyuncs.com/"
        );
        assert_eq!(
            e(None, Some("cn-hangzhou"), true).unwrap(),
            "https://sts-vpc.cn-hangzhou.aliyuncs.com/"
        );
        assert_eq!(
            e(Some("http://127.0.0.1:9"), None, false).unwrap(),
            "http://127.0.0.1:9/"
        );
        assert_eq!(
            e(Some("sts.example.com"), Some("cn-hangzhou"), false).unwrap(),
            "https://sts.example.com/"
        );
        assert!(e(None, Some("Hangzhou"), false).is_err());
        assert!(e(Some("ftp://x"), None, false).is_err());
    }

    #[test]
    fn masks() {
        assert_eq!(mask("STS.NTabcdef"), "STS.NT***");
        assert_eq!(mask("ab"), "ab***");
    }

    #[test]
    fn redacts_unless_asked() {
        let answer = json!({"Credentials": {"AccessKeyId": "STS.NTabcdef", "AccessKeySecret": "s3cret",
            "SecurityToken": "tok", "Expiration": "2030-01-01T00:00:00Z"}});
        let shown = redacted(answer.clone(), false);
        assert_eq!(
            shown["Credentials"],
            json!({"AccessKeyId": "STS.NT***", "Expiration": "2030-01-01T00:00:00Z"})
        );
        assert_eq!(redacted(answer.clone(), true), answer);
        let lines = text(&answer, false).join("\n");
        assert!(!lines.contains("s3cret") && !lines.contains("tok\n"));
        assert!(lines.contains("STS.NT***"));
    }
}
