//! The `dev` binary end to end: `dev.json` names the STS emulator's HTTPS endpoint (moved by
//! `IDAAS_PROJECTOR_STS_HTTPS_LISTEN`), which answers `AssumeRoleWithOIDC` to a client trusting
//! `ca.pem` as the plain HTTP one does, and refuses a client that does not trust it; Ctrl-C
//! stops `dev` with status 0.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::free_port;
use idaas_projector::http::{self, Timeouts};
use idaas_projector::ram::{STS_ACTION, STS_VERSION};
use idaas_projector::testing::install_provider;
use serde_json::Value;

const TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(5),
    request: Duration::from_secs(10),
};

/// `dev` in a temporary directory; killed when dropped, whatever happened.
struct Dev {
    child: Child,
    dir: tempfile::TempDir,
    sts_https_port: u16,
}

impl Dev {
    fn start() -> Self {
        Self::start_with(&["--token-lifetime", "15s"])
    }

    /// `dev` with these extra flags; its stderr goes to `stderr.log` beside `dev.json`.
    fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let addr = |port: u16| format!("127.0.0.1:{port}");
        let sts_https_port = free_port();
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_idaas-projector"))
            .arg("dev")
            .arg("--dir")
            .arg(dir.path())
            .args(extra)
            .args(["--listen", &addr(free_port())])
            .args(["--admin-listen", &addr(free_port())])
            .args(["--idaas-listen", &addr(free_port())])
            .args(["--sts-listen", &addr(free_port())])
            .env("IDAAS_PROJECTOR_STS_HTTPS_LISTEN", addr(sts_https_port))
            .stdout(Stdio::null())
            .stderr(stderr)
            .env_remove("IDAAS_PROJECTOR_TOKEN_LIFETIME")
            .spawn()
            .unwrap();
        Self {
            child,
            dir,
            sts_https_port,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap()
    }

    /// `dev.json` once written, and the token file once it holds a token.
    async fn info_and_token(&mut self) -> (Value, String) {
        let info_file = self.dir.path().join("dev.json");
        let info: Value = serde_json::from_str(&self.wait_for(&info_file).await).unwrap();
        let token = self
            .wait_for(Path::new(info["token_file"].as_str().unwrap()))
            .await;
        (info, token.trim().to_owned())
    }

    async fn wait_for(&mut self, path: &Path) -> String {
        for _ in 0..600 {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("dev exited early with {status:?}");
            }
            match std::fs::read_to_string(path) {
                Ok(text) if !text.is_empty() => return text,
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        panic!("{} did not appear within 30 s", path.display());
    }

    /// SIGINT, then the exit status (within 20 s).
    async fn interrupt(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-INT", &pid])
                .status()
                .unwrap()
                .success()
        );
        for _ in 0..400 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("dev did not stop within 20 s of SIGINT");
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `AssumeRoleWithOIDC` as the Node.js SDK sends it: a form body, Action and Version in the query.
async fn assume_role(
    client: &reqwest::Client,
    endpoint: &str,
    role_arn: &str,
    info: &Value,
    token: &str,
) -> reqwest::Result<(u16, Value)> {
    let form = [
        ("RoleArn", role_arn),
        (
            "OIDCProviderArn",
            info["oidc_provider_arn"].as_str().unwrap(),
        ),
        ("OIDCToken", token),
        ("RoleSessionName", "dev-https-test"),
        ("DurationSeconds", "900"),
    ];
    let r = client
        .post(format!(
            "{endpoint}/?Action={STS_ACTION}&Version={STS_VERSION}"
        ))
        .form(&form)
        .send()
        .await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_serves_sts_over_https_with_the_ca_in_ca_pem() {
    install_provider();
    let mut dev = Dev::start();
    let (info, token) = dev.info_and_token().await;
    let https = info["sts_https_endpoint"].as_str().unwrap().to_owned();
    assert_eq!(https, format!("https://localhost:{}", dev.sts_https_port));
    let role = info["role_arn"].as_str().unwrap();

    let ca = http::load_ca_file(Path::new(info["ca_file"].as_str().unwrap())).unwrap();
    assert_eq!(ca.len(), 1, "ca.pem holds the one dev CA");
    let trusting = http::client(TIMEOUTS, &ca).unwrap();
    let (status, answer) = assume_role(&trusting, &https, role, &info, &token)
        .await
        .unwrap();
    assert_eq!(status, 200, "{answer}");
    let key_id = answer["Credentials"]["AccessKeyId"].as_str().unwrap();
    assert!(key_id.starts_with("STS."), "an emulator key ID");
    for field in ["AccessKeySecret", "SecurityToken", "Expiration"] {
        assert!(
            !answer["Credentials"][field].as_str().unwrap().is_empty(),
            "{field} is there"
        );
    }
    assert!(
        answer["AssumedRoleUser"]["Arn"]
            .as_str()
            .unwrap()
            .ends_with("/idaas-projector-dev/dev-https-test")
    );

    // The emulator's checks are the same on HTTPS: a role of another account is refused.
    let other = "acs:ram::9999999999999999:role/idaas-projector-dev";
    let (status, answer) = assume_role(&trusting, &https, other, &info, &token)
        .await
        .unwrap();
    assert_eq!(
        (status, answer["Code"].as_str()),
        (401, Some("AuthenticationFail.NoPermission"))
    );

    // Plain HTTP is unchanged.
    let plain = info["sts_endpoint"].as_str().unwrap();
    assert!(plain.starts_with("http://127.0.0.1:"), "{plain}");
    let (status, _) = assume_role(&trusting, plain, role, &info, &token)
        .await
        .unwrap();
    assert_eq!(status, 200);

    // Without ca.pem the certificate is not trusted.
    let untrusting = http::client(TIMEOUTS, &[]).unwrap();
    let e = assume_role(&untrusting, &https, role, &info, &token)
        .await
        .unwrap_err();
    let chain = http::error_chain(&e);
    assert!(chain.to_lowercase().contains("certificate"), "{chain}");

    let status = dev.interrupt().await;
    assert_eq!(status.code(), Some(0), "Ctrl-C stops dev cleanly");
}

/// `dev` does not warn about its own default token lifetime; a lifetime chosen too short for
/// `wait-for-token` is still warned about.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_warns_only_about_a_lifetime_it_was_given() {
    let mut dev = Dev::start_with(&[]);
    let (info, _) = dev.info_and_token().await;
    assert!(dev.interrupt().await.success());
    let log = dev.stderr();
    assert!(
        !log.contains("WARN"),
        "dev warned with its own defaults:\n{log}"
    );
    assert!(info["token_file"].is_string());

    let mut dev = Dev::start_with(&["--token-lifetime", "90s"]);
    dev.info_and_token().await;
    assert!(dev.interrupt().await.success());
    let log = dev.stderr();
    assert!(
        log.contains("WARN") && log.contains("wait-for-token wants a token valid"),
        "{log}"
    );
}
