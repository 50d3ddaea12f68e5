//! `wait-for-token`, as the init container runs it: files that appear late, garbage, expired tokens.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use base64::Engine as _;
use idaas_projector::time::unix_now;
use idaas_projector::wait::{TokenState, inspect};

/// An unsigned JWT-shaped token with the given `exp` (the init container does not check signatures).
fn jwt(exp: i64) -> String {
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&v).unwrap())
    };
    format!(
        "{}.{}.c2lnbmF0dXJlLXNlY3JldC1zaG91bGQtbm90LWxlYWs",
        b64(serde_json::json!({"alg": "RS256", "typ": "JWT"})),
        b64(
            serde_json::json!({"iss": "https://issuer.example", "sub": "app_test", "exp": exp, "iat": unix_now()})
        )
    )
}

fn run(file: &Path, timeout: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_idaas-projector"))
        .args(["--log-level", "trace", "wait-for-token", "--file"])
        .arg(file)
        .args([
            "--timeout",
            timeout,
            "--poll-interval",
            "50ms",
            "--progress-interval",
            "200ms",
        ])
        .output()
        .unwrap()
}

#[test]
fn states() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("token");
    assert_eq!(inspect(&f, unix_now()), TokenState::Missing);
    std::fs::write(&f, "").unwrap();
    assert_eq!(inspect(&f, unix_now()), TokenState::Empty);
    std::fs::write(&f, "\n  \n").unwrap();
    assert_eq!(inspect(&f, unix_now()), TokenState::Empty);
    for garbage in [
        "hello",
        "a.b",
        "a.b.c.d",
        "a.!!!.c",
        "a.bm90IGpzb24.c",
        [0xffu8, 0xfe]
            .iter()
            .map(|&b| b as char)
            .collect::<String>()
            .as_str(),
    ] {
        std::fs::write(&f, garbage).unwrap();
        assert!(
            matches!(inspect(&f, unix_now()), TokenState::NotJwt(_)),
            "{garbage:?}"
        );
    }
    std::fs::write(&f, [0xffu8, 0xfe, 0x00]).unwrap();
    assert!(matches!(inspect(&f, unix_now()), TokenState::NotJwt(_)));
    let exp = unix_now() - 10;
    std::fs::write(&f, jwt(exp)).unwrap();
    assert_eq!(inspect(&f, unix_now()), TokenState::Expired { exp });
    // Expiring within a minute counts as expired.
    let exp = unix_now() + 30;
    std::fs::write(&f, jwt(exp)).unwrap();
    assert_eq!(inspect(&f, unix_now()), TokenState::Expired { exp });
    let exp = unix_now() + 3600;
    std::fs::write(&f, jwt(exp)).unwrap();
    assert_eq!(inspect(&f, unix_now()), TokenState::Valid { exp });
    // A trailing newline is tolerated.
    std::fs::write(&f, jwt(exp) + "\n").unwrap();
    assert_eq!(inspect(&f, unix_now()), TokenState::Valid { exp });
    // A directory is unreadable, not a crash.
    assert!(matches!(
        inspect(dir.path(), unix_now()),
        TokenState::Unreadable(_)
    ));
}

#[test]
fn valid_token_exits_zero_and_never_logs_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("token");
    let token = jwt(unix_now() + 3600);
    std::fs::write(&f, &token).unwrap();
    let out = run(&f, "5s");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("token present"), "{stderr}");
    for part in token.split('.') {
        assert!(
            !stderr.contains(part),
            "a part of the token reached the log: {stderr}"
        );
    }
}

#[test]
fn file_appearing_late_is_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("token");
    let writer = {
        let f = f.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(600));
            // Atomic replace, as kubelet does.
            let tmp = f.with_extension("tmp");
            std::fs::write(&tmp, jwt(unix_now() + 3600)).unwrap();
            std::fs::rename(tmp, &f).unwrap();
        })
    };
    let out = run(&f, "20s");
    writer.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("still waiting for the token"),
        "progress is logged: {stderr}"
    );
    assert!(stderr.contains("missing"), "{stderr}");
}

#[test]
fn timeouts_exit_one_and_say_what_was_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("token");
    let cases: Vec<(Option<String>, &str)> = vec![
        (None, "missing"),
        (Some(String::new()), "empty"),
        (Some("garbage".into()), "not a JWT"),
        (Some(jwt(unix_now() - 100)), "expired"),
    ];
    for (content, want) in cases {
        let _ = std::fs::remove_file(&f);
        if let Some(c) = &content {
            std::fs::write(&f, c).unwrap();
        }
        let out = run(&f, "300ms");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{want}: {stderr}");
        assert!(stderr.contains(want), "{want}: {stderr}");
        assert!(
            stderr.contains(&f.display().to_string()),
            "names the file: {stderr}"
        );
    }
}

#[test]
fn bad_usage_exits_two() {
    let out = Command::new(env!("CARGO_BIN_EXE_idaas-projector"))
        .args(["wait-for-token", "--timeout", "soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a duration"), "{stderr}");
}
