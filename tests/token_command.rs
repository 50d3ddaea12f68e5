//! The `token` command against the IDaaS emulator: one-shot, --out, --watch, failures.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use idaas_projector::emulator::idaas::{EmulatorConfig, Fault, IdaasEmulator};

const SECRET: &str = "token-command-secret";

async fn emulator(lifetime: Duration) -> IdaasEmulator {
    IdaasEmulator::start(EmulatorConfig {
        client_id: "app_cli".into(),
        client_secret: SECRET.into(),
        audience: "api://cli".into(),
        scopes_granted: vec![".all".into()],
        token_lifetime: lifetime,
        client_public_key_pem: None,
        federated_credentials: Vec::new(),
    })
    .await
    .unwrap()
}

fn token_cmd(emu: &IdaasEmulator) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_idaas-projector"));
    c.args([
        "token",
        "--issuer",
        &emu.issuer(),
        "--client-id",
        "app_cli",
        "--audience",
        "api://cli",
    ])
    .env("IDAAS_PROJECTOR_CLIENT_SECRET", SECRET);
    c
}

async fn output(mut c: Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_prints_claims_and_the_token_only_when_asked() {
    let emu = emulator(Duration::from_secs(3600)).await;
    let out = output(token_cmd(&emu)).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("sub: app_cli"), "{stdout}");
    assert!(stdout.contains("aud: api://cli"), "{stdout}");
    assert!(stdout.contains("refresh_at:"), "{stdout}");
    assert!(!stdout.contains("access_token"), "{stdout}");

    let mut c = token_cmd(&emu);
    c.arg("--show-token");
    let out = output(c).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("access_token: "))
        .unwrap();
    assert_eq!(
        line.trim_start_matches("access_token: ").split('.').count(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_writes_the_file_at_0600_without_newline() {
    let emu = emulator(Duration::from_secs(3600)).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    let mut c = token_cmd(&emu);
    c.arg("--out").arg(&file);
    let out = output(c).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = std::fs::read_to_string(&file).unwrap();
    assert_eq!(token.split('.').count(), 3);
    assert!(!token.ends_with('\n'));
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&token));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_keeps_the_file_fresh_and_never_truncates_it_on_failure() {
    // 6 s tokens: refreshed about every 4 s.
    let emu = emulator(Duration::from_secs(6)).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    let mut c = token_cmd(&emu);
    c.arg("--out")
        .arg(&file)
        .arg("--watch")
        .stderr(Stdio::piped());
    let child = c.spawn().unwrap();

    let read = |f: &std::path::Path| std::fs::read_to_string(f).ok();
    let mut first = None;
    for _ in 0..100 {
        if let Some(t) = read(&file) {
            first = Some(t);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = first.expect("the file is written");
    // Every refresh fails from now on for a while: the file keeps the last good token.
    for _ in 0..2 {
        emu.push_fault(Fault::Status(503));
    }
    let mut second = None;
    for _ in 0..400 {
        let now = read(&file).expect("the file is never removed or emptied");
        assert!(!now.is_empty());
        if now != first {
            second = Some(now);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = second.expect("a fresh token once the faults are used up");
    assert_eq!(second.split('.').count(), 3);
    assert!(emu.token_requests() >= 2);

    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success(), "SIGTERM ends --watch cleanly");
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(logs.contains("token refresh failed"), "{logs}");
    assert!(!logs.contains(&first) && !logs.contains(&second));
    assert!(!logs.contains(SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_exit_one_and_bad_usage_exits_two() {
    let emu = emulator(Duration::from_secs(3600)).await;
    emu.push_fault(Fault::OAuthError {
        status: 401,
        error: "invalid_client".into(),
    });
    let out = output(token_cmd(&emu)).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid_client"), "{stderr}");
    assert!(!stderr.contains(SECRET));

    let mut c = token_cmd(&emu);
    c.env_remove("IDAAS_PROJECTOR_CLIENT_SECRET");
    let out = output(c).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("client secret"));

    // The secret given twice (a file and the environment variable): refused before any request,
    // naming both sources and neither value.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, "other-secret\n").unwrap();
    let before = emu.token_requests();
    let mut c = token_cmd(&emu);
    c.arg("--client-secret-file").arg(&file);
    let out = output(c).await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--client-secret-file") && stderr.contains("one way only"),
        "{stderr}"
    );
    assert!(!stderr.contains(SECRET) && !stderr.contains("other-secret"));
    assert_eq!(emu.token_requests(), before, "a request was sent");
    // The file alone works.
    let mut c = token_cmd(&emu);
    c.env_remove("IDAAS_PROJECTOR_CLIENT_SECRET");
    std::fs::write(&file, format!("{SECRET}\n")).unwrap();
    c.arg("--client-secret-file").arg(&file);
    assert_eq!(output(c).await.status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federated_oidc_sends_the_assertion_file_and_no_secret() {
    use idaas_projector::emulator::idaas::OidcIssuer;
    let cluster = OidcIssuer::new("https://oidc.example.com/c1");
    let emu = IdaasEmulator::start(EmulatorConfig {
        client_id: "app_cli".into(),
        client_secret: SECRET.into(),
        audience: "api://cli".into(),
        federated_credentials: vec![cluster.trusted_as(
            "k8s",
            "idaas",
            "system:serviceaccount:shop:cli",
        )],
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sa-token");
    let assertion = cluster.token(
        "system:serviceaccount:shop:cli",
        "idaas",
        Duration::from_secs(600),
    );
    std::fs::write(&file, &assertion).unwrap();
    let federated = |extra: &[&str]| {
        let mut c = token_cmd(&emu);
        // No secret anywhere: the emulator would refuse a secret next to an assertion.
        c.env_remove("IDAAS_PROJECTOR_CLIENT_SECRET")
            .args(["--auth-method", "federated_oidc"])
            .args(extra);
        c
    };
    let file_arg = file.to_str().unwrap();
    let out = output(federated(&[
        "--federated-credential-name",
        "k8s",
        "--client-assertion-file",
        file_arg,
    ]))
    .await;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout} {stderr}");
    assert!(stdout.contains("sub: app_cli"), "{stdout}");
    assert!(
        !stdout.contains(&assertion) && !stderr.contains(&assertion),
        "the assertion is never printed"
    );

    // Refusals: each missing flag is a usage error (exit 2), and nothing is sent.
    let before = emu.token_requests();
    for (extra, needs) in [
        (
            vec!["--client-assertion-file", file_arg],
            "--federated-credential-name",
        ),
        (
            vec!["--federated-credential-name", "k8s"],
            "--client-assertion-file",
        ),
        (
            vec![
                "--federated-credential-name",
                "k8s",
                "--client-assertion-file",
                "/nonexistent/token",
            ],
            "cannot read client assertion file",
        ),
    ] {
        let out = output(federated(&extra)).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(needs), "{stderr}");
    }
    assert_eq!(emu.token_requests(), before, "no request was sent");

    // The wrong credential name: IDaaS refuses the client, exit 1.
    let out = output(federated(&[
        "--federated-credential-name",
        "other",
        "--client-assertion-file",
        file_arg,
    ]))
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("invalid_client"), "{stderr}");
}
