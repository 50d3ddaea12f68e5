//! The `check` command: one crafted token per RAM error code, from the IDaaS emulator.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use idaas_projector::emulator::idaas::{Fault, IdaasEmulator};
use idaas_projector::testing;

const CLIENT: &str = "app_check";
const SECRET: &str = "check-secret";
const AUD: &str = "api://check";

async fn emulator() -> IdaasEmulator {
    testing::emulator(CLIENT, SECRET, AUD, Duration::from_secs(3600)).await
}

async fn token(emu: &IdaasEmulator, fault: Option<Fault>) -> String {
    if let Some(f) = fault {
        emu.push_fault(f);
    }
    testing::emulator_token(emu).await
}

struct Run {
    out: Output,
    json: Option<serde_json::Value>,
}

impl Run {
    fn code(&self) -> Option<i32> {
        self.out.status.code()
    }
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }
    /// The result of the check with this RAM code (the first one).
    fn result(&self, ram_code: &str) -> String {
        let v = self.json.as_ref().expect("json output");
        v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["ram_code"] == ram_code)
            .map(|c| c["result"].as_str().unwrap().to_owned())
            .find(|r| r == "fail")
            .unwrap_or_else(|| "not failed".to_owned())
    }
    fn failed_codes(&self) -> Vec<String> {
        let v = self.json.as_ref().expect("json output");
        v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["result"] == "fail")
            .map(|c| c["ram_code"].as_str().unwrap().to_owned())
            .collect()
    }
}

async fn check(token: &str, extra: &[&str], json: bool) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, token).unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_idaas-projector"));
    c.arg("check").arg("--token-file").arg(&file).args(extra);
    if json {
        c.args(["--output", "json"]);
    }
    let out = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    drop(dir);
    let json = if json {
        Some(serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        }))
    } else {
        None
    };
    Run { out, json }
}

fn std_args(emu: &IdaasEmulator) -> Vec<String> {
    vec![
        "--issuer".into(),
        emu.issuer(),
        "--audience".into(),
        "other_client".into(),
        "--audience".into(),
        AUD.into(),
    ]
}

async fn check_std(emu: &IdaasEmulator, token: &str, json: bool) -> Run {
    let args = std_args(emu);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    check(token, &args, json).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_token_passes_every_check() {
    let emu = emulator().await;
    let t = token(&emu, None).await;
    let r = check_std(&emu, &t, true).await;
    assert_eq!(r.code(), Some(0), "{}", r.stdout());
    let v = r.json.as_ref().unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["token"]["iss"], emu.issuer().as_str());
    assert_eq!(v["token"]["alg"], "RS256");
    assert!(v["token"]["kid"].is_string());
    assert!(v["token"]["iat"].is_i64() && v["token"]["exp"].is_i64());
    let checks = v["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 7);
    for c in checks {
        assert_eq!(c["result"], "pass", "{c}");
        assert!(c["name"].is_string() && c["detail"].is_string());
    }
    // The token and its signature are never printed.
    let sig = t.rsplit('.').next().unwrap();
    assert!(!r.stdout().contains(sig));
    assert!(!r.stdout().contains(&t));

    // Text output.
    let r = check_std(&emu, &t, false).await;
    assert_eq!(r.code(), Some(0));
    assert!(
        r.stdout().contains("RAM would accept this token"),
        "{}",
        r.stdout()
    );
    assert!(!r.stdout().contains(sig));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_per_ram_error_code() {
    let emu = emulator().await;

    // Audience.
    let t = token(&emu, Some(Fault::WrongAudience)).await;
    let r = check_std(&emu, &t, true).await;
    assert_eq!(r.code(), Some(1));
    assert_eq!(
        r.failed_codes(),
        ["AuthenticationFail.OIDCToken.AudienceNotMatch"]
    );

    // HS256: Invalid (signature then not checkable: skipped).
    let t = token(&emu, Some(Fault::Hs256Token)).await;
    let r = check_std(&emu, &t, true).await;
    assert_eq!(r.code(), Some(1));
    assert_eq!(r.failed_codes(), ["AuthenticationFail.OIDCToken.Invalid"]);

    // Expired.
    let t = token(&emu, Some(Fault::AlreadyExpired)).await;
    let r = check_std(&emu, &t, true).await;
    assert_eq!(r.code(), Some(1));
    assert_eq!(r.failed_codes(), ["AuthenticationFail.OIDCToken.Expired"]);

    // Issued longer ago than the limit (default 12h; a 2h limit catches a 3h-old token).
    let t = token(
        &emu,
        Some(Fault::IssuedInPast(Duration::from_secs(13 * 3600))),
    )
    .await;
    let r = check_std(&emu, &t, true).await;
    assert_eq!(r.code(), Some(1));
    let code = idaas_projector::idaas::CheckError::IssuedTooLongAgo {
        iat: 0,
        limit_secs: 0,
    }
    .ram_code();
    assert_eq!(r.failed_codes(), [code]);
    let t = token(
        &emu,
        Some(Fault::IssuedInPast(Duration::from_secs(3 * 3600))),
    )
    .await;
    assert_eq!(check_std(&emu, &t, true).await.code(), Some(0));
    let mut args = std_args(&emu);
    args.extend(["--issuance-limit".into(), "2h".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = check(&t, &args, true).await;
    assert_eq!(r.failed_codes(), [code]);

    // Issuer.
    let t = token(&emu, None).await;
    let r = check(
        &t,
        &[
            "--issuer",
            "https://other.example.com/oauth2",
            "--client-id",
            AUD,
        ],
        true,
    )
    .await;
    assert_eq!(r.code(), Some(1));
    assert_eq!(
        r.failed_codes(),
        ["AuthenticationFail.OIDCToken.IssuerNotMatch"]
    );

    // Invalid signature: one byte of the signature flipped (a middle character, so that it is
    // not only padding bits).
    let (head, sig) = t.rsplit_once('.').unwrap();
    let mut sig = sig.as_bytes().to_vec();
    let mid = sig.len() / 2;
    sig[mid] = if sig[mid] == b'A' { b'B' } else { b'A' };
    let bad = format!("{head}.{}", String::from_utf8(sig).unwrap());
    let r = check_std(&emu, &bad, true).await;
    assert_eq!(r.code(), Some(1));
    assert_eq!(
        r.failed_codes(),
        ["AuthenticationFail.OIDCToken.InvalidSignature"]
    );
    assert_eq!(
        r.result("AuthenticationFail.OIDCToken.InvalidSignature"),
        "fail"
    );

    // Garbage.
    let r = check_std(&emu, "this is not a token\n", true).await;
    assert_eq!(r.code(), Some(1));
    assert_eq!(r.failed_codes(), ["AuthenticationFail.OIDCToken.Invalid"]);
    assert!(r.json.as_ref().unwrap()["token"].is_null());
    let r = check_std(&emu, "this is not a token\n", false).await;
    assert!(r.stdout().contains("RAM would reject this token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipped_checks_and_unavailable_jwks() {
    let emu = emulator().await;
    let t = token(&emu, None).await;
    // No --issuer, no --client-id: those are skipped; the JWKS comes from the token's iss.
    let r = check(&t, &[], true).await;
    assert_eq!(r.code(), Some(0), "{}", r.stdout());
    let checks = r.json.as_ref().unwrap()["checks"]
        .as_array()
        .unwrap()
        .clone();
    let by_name = |n: &str| {
        checks
            .iter()
            .find(|c| c["name"] == n)
            .unwrap()
            .get("result")
            .unwrap()
            .clone()
    };
    assert_eq!(by_name("issuer"), "skipped");
    assert_eq!(by_name("audience"), "skipped");
    assert_eq!(by_name("signature"), "pass");

    // No JWKS served: a warning, not a pass.
    emu.set_serve_jwks(false);
    let r = check_std(&emu, &t, true).await;
    let checks = r.json.as_ref().unwrap()["checks"]
        .as_array()
        .unwrap()
        .clone();
    let sig = checks.iter().find(|c| c["name"] == "signature").unwrap();
    assert_eq!(sig["result"], "warning", "{sig}");
    assert!(
        sig["detail"]
            .as_str()
            .unwrap()
            .contains("signature not checked")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_usage_exits_2() {
    let emu = emulator().await;
    let t = token(&emu, None).await;
    let many: Vec<String> = (0..51)
        .flat_map(|i| ["--audience".to_owned(), format!("c{i}")])
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(check(&t, &many, false).await.code(), Some(2));
    assert_eq!(
        check(&t, &["--issuance-limit", "30m"], false).await.code(),
        Some(2)
    );
    assert_eq!(
        check(&t, &["--issuance-limit", "169h"], false).await.code(),
        Some(2)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_idaas-projector"))
        .args(["check", "--token-file", "/nonexistent/token"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audience_flag_its_alias_and_the_app_id_hint() {
    let emu = emulator().await;
    let t = token(&emu, None).await;
    // --client-id (RAM's name for it) is an alias of --audience; both may be mixed.
    let r = check(&t, &["--client-id", "other", "--audience", AUD], true).await;
    assert_eq!(r.code(), Some(0), "{}", r.stdout());
    let r = check(&t, &["--client-id", AUD], true).await;
    assert_eq!(r.code(), Some(0), "{}", r.stdout());

    // The M2M application's ID where RAM wants an audience: AudienceNotMatch with a hint naming
    // the token's aud, in text and in JSON.
    let r = check(&t, &["--audience", CLIENT], false).await;
    assert_eq!(r.code(), Some(1));
    let out = r.stdout();
    assert!(out.contains("AudienceNotMatch"), "{out}");
    assert!(
        out.contains("\"app_check\" looks like an IDaaS M2M application ID")
            && out.contains("[\"api://check\"]")
            && out.contains("pass it to --audience"),
        "{out}"
    );
    let r = check(&t, &["--client-id", CLIENT], true).await;
    let v = r.json.as_ref().unwrap();
    let detail = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "audience")
        .unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        detail.contains("looks like an IDaaS M2M application ID"),
        "{detail}"
    );

    // An empty --audience is bad usage.
    assert_eq!(check(&t, &["--audience", ""], false).await.code(), Some(2));
}
