//! The STS emulator with tokens from the IDaaS emulator, and the `assume-role` command against
//! it: success by GET and POST, each RAM error code, masked secrets, exit statuses.

use std::process::Command;
use std::time::Duration;

use idaas_projector::emulator::idaas::{EmulatorConfig, Fault, IdaasEmulator};
use idaas_projector::emulator::sts::{StsConfig, StsEmulator};
use serde_json::Value;

const AUDIENCE: &str = "api://sts-test";
const SECRET: &str = "sts-test-secret";
const ACCOUNT: &str = "1234567890123456";

struct Env {
    idaas: IdaasEmulator,
    sts: StsEmulator,
    http: reqwest::Client,
}

async fn setup() -> Env {
    setup_with(|_| {}).await
}

async fn setup_with(tweak: impl FnOnce(&mut StsConfig)) -> Env {
    let idaas = IdaasEmulator::start(EmulatorConfig {
        client_id: "app_sts".into(),
        client_secret: SECRET.into(),
        audience: AUDIENCE.into(),
        scopes_granted: vec![".all".into()],
        token_lifetime: Duration::from_secs(3600),
        client_public_key_pem: None,
        federated_credentials: Vec::new(),
    })
    .await
    .unwrap();
    let mut config = StsConfig {
        issuer: idaas.issuer(),
        jwks_uri: idaas.jwks_uri(),
        client_ids: vec!["other-client".into(), AUDIENCE.into()],
        issuance_limit: Duration::from_secs(3600),
        account_id: ACCOUNT.into(),
        oidc_provider_name: "idaas".into(),
        max_session_duration: Duration::from_secs(3600),
    };
    tweak(&mut config);
    let sts = StsEmulator::start(config).await.unwrap();
    Env {
        idaas,
        sts,
        http: reqwest::Client::new(),
    }
}

impl Env {
    async fn token(&self) -> String {
        idaas_projector::testing::emulator_token(&self.idaas).await
    }

    async fn faulted_token(&self, fault: Fault) -> String {
        self.idaas.push_fault(fault);
        self.token().await
    }

    fn params(&self, token: &str) -> Vec<(String, String)> {
        [
            ("Action", "AssumeRoleWithOIDC"),
            ("Version", "2015-04-01"),
            ("Format", "JSON"),
            ("Timestamp", "2026-01-01T00:00:00Z"),
            ("SignatureNonce", "abc123"),
            ("RoleArn", &self.sts.role_arn("payments")),
            ("OIDCProviderArn", &self.sts.oidc_provider_arn()),
            ("OIDCToken", token),
            ("RoleSessionName", "test-session"),
            ("DurationSeconds", "1800"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    async fn post(&self, params: &[(String, String)]) -> (u16, Value) {
        let r = self
            .http
            .post(self.sts.endpoint())
            .form(params)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    async fn get(&self, params: &[(String, String)]) -> (u16, Value) {
        let mut url = url::Url::parse(&self.sts.endpoint()).unwrap();
        url.query_pairs_mut().extend_pairs(params);
        let r = self.http.get(url).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    /// POSTs the default parameters with one changed (`None` removes it).
    async fn post_with(&self, token: &str, name: &str, value: Option<&str>) -> (u16, Value) {
        let mut p = self.params(token);
        p.retain(|(k, _)| k != name);
        if let Some(v) = value {
            p.push((name.to_owned(), v.to_owned()));
        }
        self.post(&p).await
    }
}

fn assert_success(status: u16, v: &Value) {
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["AssumedRoleUser"]["Arn"],
        format!("acs:ram::{ACCOUNT}:assumed-role/payments/test-session")
    );
    assert!(
        v["AssumedRoleUser"]["AssumedRoleId"]
            .as_str()
            .unwrap()
            .ends_with(":test-session")
    );
    let c = &v["Credentials"];
    assert!(c["AccessKeyId"].as_str().unwrap().starts_with("STS.NT"));
    assert!(!c["AccessKeySecret"].as_str().unwrap().is_empty());
    assert!(!c["SecurityToken"].as_str().unwrap().is_empty());
    assert!(c["Expiration"].as_str().unwrap().ends_with('Z'), "{c}");
    let info = &v["OIDCTokenInfo"];
    assert_eq!(info["Subject"], "app_sts");
    assert_eq!(info["ClientIds"], AUDIENCE);
    assert_eq!(info["VerificationInfo"], "Success");
    assert!(v["RequestId"].as_str().is_some());
}

fn assert_error(got: (u16, Value), status: u16, code: &str) -> Value {
    let (s, v) = got;
    assert_eq!(
        (s, v["Code"].as_str().unwrap_or("-")),
        (status, code),
        "{v}"
    );
    for key in ["RequestId", "HostId", "Message", "Recommend"] {
        assert!(v[key].as_str().is_some(), "{key} missing in {v}");
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_by_get_query_and_by_post_form() {
    let env = setup().await;
    let token = env.token().await;
    let (s, v) = env.get(&env.params(&token)).await;
    assert_success(s, &v);
    assert_eq!(v["OIDCTokenInfo"]["Issuer"], env.idaas.issuer());
    let (s, v) = env.post(&env.params(&token)).await;
    assert_success(s, &v);
    assert_eq!((env.sts.requests(), env.sts.successes()), (2, 2));
    // Expiration = now + DurationSeconds.
    let exp: k8s_openapi::jiff::Timestamp = v["Credentials"]["Expiration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let left = exp.as_second() - k8s_openapi::jiff::Timestamp::now().as_second();
    assert!((1790..=1800).contains(&left), "{left}");
    // DurationSeconds is optional.
    assert_success(
        env.post_with(&token, "DurationSeconds", None).await.0,
        &env.post_with(&token, "DurationSeconds", None).await.1,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameter_errors() {
    let env = setup().await;
    let token = env.token().await;
    let other_account = "acs:ram::999:role/payments".to_owned();
    let other_provider = format!("acs:ram::{ACCOUNT}:oidc-provider/other");
    let cases: Vec<(&str, Option<&str>, u16, &str)> = vec![
        ("RoleArn", None, 400, "MissingRoleArn"),
        ("OIDCProviderArn", None, 400, "MissingOIDCProviderArn"),
        ("RoleSessionName", None, 400, "MissingRoleSessionName"),
        (
            "RoleArn",
            Some("arn:aws:iam::1:role/x"),
            400,
            "InvalidParameter.RoleArn",
        ),
        (
            "OIDCProviderArn",
            Some("acs:ram::1:role/x"),
            400,
            "InvalidParameter.OIDCProviderArn",
        ),
        (
            "RoleSessionName",
            Some("a"),
            400,
            "InvalidParameter.RoleSessionName",
        ),
        (
            "RoleSessionName",
            Some("has space"),
            400,
            "InvalidParameter.RoleSessionName",
        ),
        (
            "DurationSeconds",
            Some("899"),
            400,
            "InvalidParameter.DurationSeconds",
        ),
        (
            "DurationSeconds",
            Some("3601"),
            400,
            "InvalidParameter.DurationSeconds",
        ),
        (
            "DurationSeconds",
            Some("1h"),
            400,
            "InvalidParameter.DurationSeconds",
        ),
        (
            "Policy",
            Some("{not json"),
            400,
            "InvalidParameter.PolicyGrammar",
        ),
        ("Version", Some("2019-01-01"), 400, "InvalidVersion"),
        ("Action", Some("AssumeRole"), 404, "InvalidAction.NotFound"),
        (
            "OIDCProviderArn",
            Some(&other_provider),
            401,
            "AuthenticationFail.NoPermission",
        ),
        (
            "RoleArn",
            Some(&other_account),
            401,
            "AuthenticationFail.NoPermission",
        ),
        (
            "OIDCToken",
            None,
            401,
            "AuthenticationFail.OIDCToken.Invalid",
        ),
        (
            "OIDCToken",
            Some("not-a-jwt"),
            401,
            "AuthenticationFail.OIDCToken.Invalid",
        ),
    ];
    for (name, value, status, code) in cases {
        let v = assert_error(env.post_with(&token, name, value).await, status, code);
        if name == "OIDCProviderArn" && status == 401 {
            assert_eq!(v["Message"], "No such OIDC Provider registered.");
        }
    }
    assert_eq!(env.sts.successes(), 0);
    // A valid Policy is accepted.
    let (s, v) = env
        .post_with(&token, "Policy", Some(r#"{"Version":"1","Statement":[]}"#))
        .await;
    assert_success(s, &v);
    // Unknown paths are 404.
    let r = env
        .http
        .get(format!("{}/v1/assume", env.sts.endpoint()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_errors() {
    let env = setup().await;
    let cases = [
        (
            Fault::WrongAudience,
            "AuthenticationFail.OIDCToken.AudienceNotMatch",
        ),
        (Fault::Hs256Token, "AuthenticationFail.OIDCToken.Invalid"),
        (
            Fault::AlreadyExpired,
            "AuthenticationFail.OIDCToken.Expired",
        ),
        (
            Fault::IssuedInPast(Duration::from_secs(2 * 3600)),
            "AuthenticationFail.OIDCToken.IssueTimeInvalid",
        ),
    ];
    for (fault, code) in cases {
        let token = env.faulted_token(fault).await;
        assert_error(env.post(&env.params(&token)).await, 401, code);
    }
    // The issuance-limit code is the one the projector's own check names.
    assert_eq!(
        idaas_projector::idaas::CheckError::IssuedTooLongAgo {
            iat: 0,
            limit_secs: 1
        }
        .ram_code(),
        "AuthenticationFail.OIDCToken.IssueTimeInvalid"
    );

    // A tampered payload: the signature no longer verifies.
    let token = env.token().await;
    let parts: Vec<&str> = token.split('.').collect();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut payload: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    payload["extra"] = Value::from("tampered");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64.encode(serde_json::to_vec(&payload).unwrap()),
        parts[2]
    );
    assert_error(
        env.post(&env.params(&forged)).await,
        401,
        "AuthenticationFail.OIDCToken.InvalidSignature",
    );

    // A rotated key: the new kid refetches the JWKS; the old key's tokens no longer verify.
    let old = env.token().await;
    env.idaas.rotate_signing_key();
    let new = env.token().await;
    let (s, v) = env.post(&env.params(&new)).await;
    assert_success(s, &v);
    assert_error(
        env.post(&env.params(&old)).await,
        401,
        "AuthenticationFail.OIDCToken.InvalidSignature",
    );

    // Another issuer.
    let other = setup_with(|c| c.issuer = "https://other.example.com/oauth2".into()).await;
    let token = other.token().await;
    assert_error(
        other.post(&other.params(&token)).await,
        401,
        "AuthenticationFail.OIDCToken.IssuerNotMatch",
    );
}

// ---- the assume-role command ----

struct Cli {
    out: std::process::Output,
}

impl Cli {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }
    fn code(&self) -> i32 {
        self.out.status.code().unwrap_or(-1)
    }
}

async fn assume_role(env: &Env, token: &str, extra: &[&str]) -> Cli {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_idaas-projector"));
    c.arg("assume-role")
        .arg("--token-file")
        .arg(&file)
        .args(["--sts-endpoint", &env.sts.endpoint()])
        .args(extra);
    // Defaults for the flags `extra` does not set.
    let role = env.sts.role_arn("payments");
    let provider = env.sts.oidc_provider_arn();
    for (flag, value) in [
        ("--role-arn", role.as_str()),
        ("--oidc-provider-arn", provider.as_str()),
        ("--session-name", "test-session"),
    ] {
        if !extra.contains(&flag) {
            c.args([flag, value]);
        }
    }
    let out = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    drop(dir);
    let cli = Cli { out };
    if token.len() > 20 {
        assert!(!cli.stdout().contains(token), "token printed");
        assert!(!cli.stderr().contains(token), "token logged");
    }
    cli
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assume_role_success_masks_secrets() {
    let env = setup().await;
    let token = env.token().await;
    let out = assume_role(&env, &token, &[]).await;
    let stdout = out.stdout();
    assert_eq!(out.code(), 0, "{stdout} {}", out.stderr());
    assert!(
        stdout.contains(&format!(
            "acs:ram::{ACCOUNT}:assumed-role/payments/test-session"
        )),
        "{stdout}"
    );
    assert!(stdout.contains("AccessKeyId:     STS.NT***"), "{stdout}");
    assert!(stdout.contains("expiration:"), "{stdout}");
    assert!(stdout.contains("token subject:   app_sts"), "{stdout}");
    assert!(stdout.contains(&env.idaas.issuer()), "{stdout}");
    assert!(stdout.contains(AUDIENCE), "{stdout}");
    assert!(!stdout.contains("AccessKeySecret:"), "{stdout}");
    assert!(!stdout.contains("CAIS"), "{stdout}");

    let out = assume_role(&env, &token, &["--show-secrets"]).await;
    let stdout = out.stdout();
    assert_eq!(out.code(), 0, "{stdout} {}", out.stderr());
    assert!(stdout.contains("AccessKeySecret: "), "{stdout}");
    assert!(stdout.contains("SecurityToken:   CAIS"), "{stdout}");
    assert!(!stdout.contains("STS.NT***"), "{stdout}");

    let out = assume_role(&env, &token, &["--output", "json", "--duration", "900"]).await;
    assert_eq!(out.code(), 0, "{}", out.stderr());
    let v: Value = serde_json::from_str(&out.stdout()).unwrap();
    assert_eq!(v["Credentials"]["AccessKeyId"], "STS.NT***");
    assert!(v["Credentials"].get("AccessKeySecret").is_none(), "{v}");
    assert!(v["Credentials"].get("SecurityToken").is_none(), "{v}");
    assert_eq!(v["OIDCTokenInfo"]["Subject"], "app_sts");
    assert_eq!(env.sts.successes(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assume_role_explains_each_sts_error() {
    let env = setup().await;
    let good = env.token().await;
    let provider = format!("acs:ram::{ACCOUNT}:oidc-provider/missing");
    let foreign_role = "acs:ram::999:role/payments".to_owned();
    let cases: Vec<(String, Vec<&str>, &str, &str)> = vec![
        (
            env.faulted_token(Fault::WrongAudience).await,
            vec![],
            "AudienceNotMatch",
            "not among the OIDC provider's Client IDs",
        ),
        (
            env.faulted_token(Fault::AlreadyExpired).await,
            vec![],
            "OIDCToken.Expired",
            "expired at",
        ),
        (
            env.faulted_token(Fault::IssuedInPast(Duration::from_secs(7200)))
                .await,
            vec![],
            "IssueTimeInvalid",
            "Earliest Issuance Time Allowed",
        ),
        (
            env.faulted_token(Fault::Hs256Token).await,
            vec![],
            "OIDCToken.Invalid",
            "HS*",
        ),
        (
            "garbage".to_owned(),
            vec![],
            "OIDCToken.Invalid",
            "not a JWT",
        ),
        (
            good.clone(),
            vec!["--oidc-provider-arn", &provider],
            "NoPermission",
            "RAM has no OIDC provider",
        ),
        (
            good.clone(),
            vec!["--role-arn", &foreign_role],
            "NoPermission",
            "trust policy",
        ),
        (
            good.clone(),
            vec!["--duration", "7200"],
            "InvalidParameter.DurationSeconds",
            "MaxSessionDuration",
        ),
    ];
    for (token, extra, code, hint) in cases {
        let out = assume_role(&env, &token, &extra).await;
        let stderr = out.stderr();
        assert_eq!(out.code(), 1, "{code}: {stderr}");
        assert!(stderr.contains(code), "{code}: {stderr}");
        assert!(stderr.contains(hint), "{code}: {stderr}");
    }
    // Issuer mismatch and a bad signature.
    let other = setup_with(|c| c.issuer = "https://other.example.com/oauth2".into()).await;
    let token = other.token().await;
    let out = assume_role(&other, &token, &[]).await;
    assert_eq!(out.code(), 1);
    assert!(out.stderr().contains("IssuerNotMatch"), "{}", out.stderr());
    assert!(out.stderr().contains("Issuer URL"), "{}", out.stderr());

    let mut forged = good.clone();
    forged.truncate(forged.len() - 4);
    forged.push_str("AAAA");
    let out = assume_role(&env, &forged, &[]).await;
    assert_eq!(out.code(), 1, "{}", out.stderr());
    assert!(
        out.stderr().contains("InvalidSignature"),
        "{}",
        out.stderr()
    );
    assert!(out.stderr().contains("fingerprint"), "{}", out.stderr());
    // JSON output carries the code too.
    let wrong = env.faulted_token(Fault::WrongAudience).await;
    let out = assume_role(&env, &wrong, &["--output", "json"]).await;
    assert_eq!(out.code(), 1);
    let v: Value = serde_json::from_str(&out.stdout()).unwrap();
    assert_eq!(
        v["error"]["code"],
        "AuthenticationFail.OIDCToken.AudienceNotMatch"
    );
    assert_eq!(env.sts.successes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assume_role_bad_usage_exits_2() {
    let env = setup().await;
    let token = env.token().await;
    for extra in [
        vec!["--role-arn", "arn:aws:iam::1:role/x"],
        vec!["--oidc-provider-arn", "acs:ram::1:role/x"],
        vec!["--duration", "100"],
        vec!["--duration", "43201"],
        vec!["--session-name", "x"],
    ] {
        let out = assume_role(&env, &token, &extra).await;
        assert_eq!(out.code(), 2, "{extra:?}: {}", out.stderr());
    }
    let out = Command::new(env!("CARGO_BIN_EXE_idaas-projector"))
        .args([
            "assume-role",
            "--token-file",
            "/nonexistent/token",
            "--role-arn",
            "acs:ram::1:role/r",
            "--oidc-provider-arn",
            "acs:ram::1:oidc-provider/p",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(env.sts.requests(), 0);
}
