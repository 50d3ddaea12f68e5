//! Replays the fuzzers' regression inputs under plain `cargo test` (stable Rust, no libFuzzer).
//!
//! Every file in `tests/data/fuzz/<target>/` goes through the same harness code as the cargo-fuzz
//! target of that name (`idaas_projector::testing::fuzz`), which panics on a crash or on a
//! violated property (malformed answer, patch that does not apply, non-idempotent mutation,
//! token quoted in an error). To add a case, copy a libFuzzer artifact
//! (`fuzz/artifacts/<target>/crash-*`) into that directory under a descriptive name.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use idaas_projector::testing::fuzz::{admission, token};

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/fuzz")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no inputs in {}", dir.display());
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, bytes)
        })
        .collect()
}

/// Runs `f` on every input of `target`, and reports every input that panics (not just the first).
fn replay<T>(target: &str, f: impl Fn(&[u8]) -> T) -> Vec<(String, T)> {
    let mut failures = Vec::new();
    let mut results = Vec::new();
    for (name, bytes) in inputs(target) {
        match catch_unwind(AssertUnwindSafe(|| f(&bytes))) {
            Ok(r) => results.push((name, r)),
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                failures.push(format!("{target}/{name}: {msg}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    results
}

#[test]
fn admission_review_inputs() {
    replay("admission_review", admission::run);
}

#[test]
fn token_response_inputs() {
    replay("token_response", token::run);
}

/// Fixtures with a known answer: what each pass must decide, not only that nothing panics.
#[test]
fn admission_harness_outcomes() {
    let results = replay("admission_review", admission::run);
    let outcome = |name: &str| {
        &results
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("fixture {name} is missing"))
            .1
    };
    // Not JSON: a 400 in pass 1, nothing to wrap.
    assert_eq!(
        *outcome("truncated-review-invalid-utf8"),
        admission::Outcome::default()
    );
    // Nested past serde_json's recursion limit (128) once wrapped in a review, in a field the
    // webhook does not read (a container's args): skipped by `webhook::prune` without recursion
    // (serde_json ignores a value iteratively), so the pod is injected like any other. (Read
    // into a whole `Value` tree it was a 400.)
    let deep = outcome("pod-nested-past-recursion-limit-once-wrapped.json");
    assert_eq!(deep.wrapped_allowed, Some(true), "{deep:?}");
    assert!(deep.patched, "{deep:?}");
    // Finished by a patch that applies and is stable on reinvocation.
    for name in [
        "half-injected-stale-hash-nulls.json",
        "bare-pod-null-lists-duplicate-names-windows.json",
        "pointer-escapes-in-names.json",
    ] {
        let o = outcome(name);
        assert_eq!(o.wrapped_allowed, Some(true), "{name}: {o:?}");
        assert!(o.patched, "{name}: {o:?}");
    }
    // A review: pass 1 answers it too.
    assert_eq!(
        outcome("half-injected-stale-hash-nulls.json").raw_allowed,
        Some(false),
        "no OIDC provider ARN without the webhook's default"
    );
}

/// The harness itself: the signed fixtures pass every check, so the fuzz target does reach
/// the success paths, and a token with a forged payload does not verify.
#[test]
fn token_harness_reaches_success_and_rejects_forgery() {
    let results = replay("token_response", token::run);
    let outcome = |name: &str| {
        &results
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("fixture {name} is missing"))
            .1
    };
    let valid = outcome("valid-rs256.json");
    assert_eq!(
        *valid,
        token::Outcome {
            parsed: true,
            expires_in: Some(3600),
            decoded: true,
            claims_ok: true,
            signature_ok: true,
        }
    );

    let (_, body) = inputs("token_response")
        .into_iter()
        .find(|(n, _)| n == "valid-rs256.json")
        .unwrap();
    let mut response: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let jwt = response["access_token"].as_str().unwrap().to_owned();
    let parts: Vec<&str> = jwt.split('.').collect();
    // The same claims with the audience changed, under the original signature.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: serde_json::Value =
        serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    claims["aud"] = "api://payments-admin".into();
    let forged_payload = b64.encode(serde_json::to_vec(&claims).unwrap());
    response["access_token"] = format!("{}.{forged_payload}.{}", parts[0], parts[2]).into();
    let forged = token::run(&serde_json::to_vec(&response).unwrap());
    assert!(forged.decoded);
    assert!(
        !forged.claims_ok,
        "audience api://payments-admin is not expected"
    );
    assert!(!forged.signature_ok, "a forged payload never verifies");
}
