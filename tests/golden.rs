//! Golden admission cases: `tests/data/admission/*.json`, one file per case.
//!
//! Each file holds:
//! - `description`: what the case shows;
//! - `m2mtoken` (optional): absent = standalone webhook (no API); `null` = the cache is synced and
//!   holds no such M2MToken; an object = the M2MToken's `spec` (plus optional `metadata.name`) found
//!   in the pod's namespace;
//! - `config` (optional): `initImage`, `defaultOidcProviderArn`, `defaultStsRegion`;
//! - `via` (optional): `"namespace"` when the request comes through the entry for namespaces
//!   labelled `idaas-projector.io/injection: enabled` (path `/mutate/namespace`); else the
//!   annotation-matched entry (`/mutate`);
//! - `serviceAccount` (optional, read only with `via: namespace`): absent or `null` = no such
//!   ServiceAccount; `"unavailable"` = the cache has not synced; an object = the pod's
//!   ServiceAccount, `{"name": ..., "annotations": {...}}`;
//! - `review`: the AdmissionReview sent;
//! - `expect`: `{"allowed": true, "patch": [...] | null, "warnings": [...]}` or
//!   `{"allowed": false, "message": "..."}`.
//!
//! For every allowed case the test also applies the patch and checks that a second call (the
//! reinvocation) returns no patch: mutate(apply(mutate(pod))) == mutate(pod).
//!
//! `UPDATE_GOLDEN=1 cargo test --test golden` rewrites `expect` from the current code; review the
//! diff before committing it.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use idaas_projector::testing::{FixedResolver, review_now};
use idaas_projector::webhook::cache::accounts_not_loaded;
use idaas_projector::webhook::mutate::{
    AccountAnnotations, AccountLookup, MutateConfig, TokenDefaults, TokenLookup,
    service_account_name,
};
use idaas_projector::webhook::review::Via;
use serde_json::{Value, json};

fn case_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/admission");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

fn config_of(case: &Value) -> MutateConfig {
    let c = &case["config"];
    let s = |k: &str| c.get(k).and_then(Value::as_str).map(str::to_owned);
    MutateConfig {
        init_image: s("initImage")
            .unwrap_or_else(|| "registry.example.com/idaas-projector:0.1.0".to_owned()),
        default_oidc_provider_arn: s("defaultOidcProviderArn"),
        default_sts_region: s("defaultStsRegion"),
        ..MutateConfig::default()
    }
}

fn resolver_of(case: &Value) -> FixedResolver {
    let token = match case.get("m2mtoken") {
        None => TokenLookup::Standalone,
        Some(Value::Null) => TokenLookup::NotFound,
        Some(t) => {
            let name = t["metadata"]["name"].as_str().unwrap_or("token");
            let spec = &t["spec"];
            let s = |k: &str| spec.get(k).and_then(Value::as_str).map(str::to_owned);
            TokenLookup::Found(TokenDefaults {
                secret_name: s("secretName").unwrap_or_else(|| name.to_owned()),
                role_arn: s("roleArn"),
                oidc_provider_arn: s("oidcProviderArn"),
            })
        }
    };
    let account = match case.get("serviceAccount") {
        None | Some(Value::Null) => AccountLookup::Absent,
        Some(Value::String(s)) if s == "unavailable" => {
            let request = &case["review"]["request"];
            let namespace = request["namespace"].as_str().unwrap_or_default();
            accounts_not_loaded(namespace, service_account_name(&request["object"]))
        }
        Some(sa) => AccountLookup::Found(AccountAnnotations {
            name: sa["name"].as_str().expect("serviceAccount.name").to_owned(),
            annotations: serde_json::from_value(sa["annotations"].clone())
                .expect("serviceAccount.annotations: strings"),
        }),
    };
    FixedResolver { token, account }
}

fn via_of(case: &Value) -> Via {
    match case.get("via").and_then(Value::as_str) {
        Some("namespace") => Via::Namespace,
        None | Some("annotation") => Via::Annotation,
        Some(other) => panic!("via {other:?}: expected \"namespace\" or \"annotation\""),
    }
}

/// Sends a review and returns the response in the golden `expect` shape.
fn answer(
    review_json: &Value,
    via: Via,
    config: &MutateConfig,
    resolver: &FixedResolver,
) -> (Value, Value) {
    let body = serde_json::to_vec(review_json).unwrap();
    let answer =
        review_now(&body, via, config, resolver).expect("a well-formed review gets an answer");
    let out: Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(out["apiVersion"], review_json["apiVersion"]);
    assert_eq!(out["kind"], review_json["kind"]);
    let response = out["response"].clone();
    assert_eq!(response["uid"], review_json["request"]["uid"], "uid echoed");
    let expect = if response["allowed"] == json!(true) {
        let patch = match response.get("patch").and_then(Value::as_str) {
            Some(b64) => {
                assert_eq!(response["patchType"], "JSONPatch");
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .unwrap();
                serde_json::from_slice(&bytes).unwrap()
            }
            None => Value::Null,
        };
        json!({
            "allowed": true,
            "patch": patch,
            "warnings": response.get("warnings").cloned().unwrap_or(json!([])),
        })
    } else {
        assert_eq!(response["status"]["code"], 403);
        json!({"allowed": false, "message": response["status"]["message"]})
    };
    (expect, response)
}

#[test]
fn golden_admission_cases() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let files = case_files();
    let mut failures = Vec::new();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let mut case: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let config = config_of(&case);
        let resolver = resolver_of(&case);
        let via = via_of(&case);
        let (got, _) = answer(&case["review"], via, &config, &resolver);

        if update {
            case["expect"] = got.clone();
            std::fs::write(file, serde_json::to_string_pretty(&case).unwrap() + "\n").unwrap();
        } else if case["expect"] != got {
            failures.push(format!(
                "{name}: expected\n{}\ngot\n{}",
                serde_json::to_string_pretty(&case["expect"]).unwrap(),
                serde_json::to_string_pretty(&got).unwrap()
            ));
            continue;
        }

        // Idempotency: a reinvocation on the patched pod changes nothing and warns the same.
        if got["allowed"] == json!(true) && !got["patch"].is_null() {
            let mut pod = case["review"]["request"]["object"].clone();
            let patch: json_patch::Patch = serde_json::from_value(got["patch"].clone()).unwrap();
            json_patch::patch(&mut pod, &patch)
                .unwrap_or_else(|e| panic!("{name}: the patch does not apply: {e}"));
            let mut again = case["review"].clone();
            again["request"]["object"] = pod;
            let (second, _) = answer(&again, via, &config, &resolver);
            if !second["patch"].is_null() {
                failures.push(format!(
                    "{name}: not idempotent, the second call patches {}",
                    second["patch"]
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(
        files.len() >= 25,
        "expected at least 25 golden cases, found {}",
        files.len()
    );
}
