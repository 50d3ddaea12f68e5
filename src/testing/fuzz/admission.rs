//! The `admission_review` fuzz harness, run by `fuzz/fuzz_targets/admission_review.rs` and by
//! `tests/fuzz_regressions.rs`, so a crash found by the fuzzer replays through exactly the same
//! code under plain `cargo test`.
//!
//! Two passes over one input:
//! 1. the bytes as an AdmissionReview body, with the default configuration: an answer or a
//!    [`BadReview`](crate::webhook::review::BadReview), never a panic;
//! 2. when the bytes are JSON, that JSON as the pod of a valid Pod CREATE review in namespace
//!    `shop` (the `request.object` of an AdmissionReview is taken when there is one), opted in
//!    with the `m2m-token` annotation. Every answer must be well formed; a patch must apply with
//!    `json-patch`, and a second review of the patched pod must allow it with no patch.

use crate::testing::{FixedResolver, review_now};
use crate::webhook::annotations;
use crate::webhook::mutate::MutateConfig;
use crate::webhook::mutate::{AccountAnnotations, AccountLookup, TokenLookup};
use crate::webhook::review::{Standalone, Via};
use base64::Engine as _;
use serde_json::{Map, Value, json};

/// The configuration of pass 2: the OIDC provider defaults so more pods get past `resolve`.
fn wrapped_config() -> MutateConfig {
    MutateConfig {
        init_image: "registry.example.com/idaas-projector:0.1.0".to_owned(),
        default_oidc_provider_arn: Some("acs:ram::1234567890123456:oidc-provider/idaas".to_owned()),
        default_sts_region: Some("cn-hangzhou".to_owned()),
        ..MutateConfig::default()
    }
}

/// What one answered review says.
#[derive(Debug)]
pub struct Decision {
    pub allowed: bool,
    /// The decoded JSON Patch, when there is one.
    pub patch: Option<json_patch::Patch>,
}

/// Checks the shape of an answer body and extracts the decision.
fn decision(body: &[u8], uid: &str) -> Decision {
    let out: Value = serde_json::from_slice(body).expect("the answer is JSON");
    assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(out["kind"], "AdmissionReview");
    let response = &out["response"];
    assert_eq!(response["uid"], uid, "uid echoed");
    let allowed = response["allowed"]
        .as_bool()
        .expect("response.allowed is a bool");
    let patch = match response.get("patch") {
        None => None,
        Some(p) => {
            assert!(allowed, "a denial carries no patch");
            assert_eq!(response["patchType"], "JSONPatch");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(p.as_str().expect("patch is a string"))
                .expect("patch is base64");
            let patch: json_patch::Patch =
                serde_json::from_slice(&bytes).expect("patch is a JSON Patch");
            assert!(!patch.0.is_empty(), "an empty patch is left out");
            Some(patch)
        }
    };
    if !allowed {
        assert_eq!(response["status"]["code"], 403);
        assert!(response["status"]["message"].is_string());
    }
    Decision { allowed, patch }
}

/// Sets `key` to `value` in the object at `map[field]`, creating it when absent or null.
/// Returns the object, or `None` when `map[field]` is something else (left for `mutate` to deny).
fn object_at<'a>(
    map: &'a mut Map<String, Value>,
    field: &str,
) -> Option<&'a mut Map<String, Value>> {
    let slot = map.entry(field).or_insert(Value::Null);
    if slot.is_null() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut()
}

/// Opts the pod in: `m2m-token` (and a `role-arn`) unless the input sets them already.
fn opt_in(pod: &mut Value) {
    let Some(pod) = pod.as_object_mut() else {
        return;
    };
    let Some(metadata) = object_at(pod, "metadata") else {
        return;
    };
    let Some(annotations) = object_at(metadata, "annotations") else {
        return;
    };
    annotations
        .entry(annotations::M2M_TOKEN)
        .or_insert_with(|| json!("payments"));
    annotations
        .entry(annotations::ROLE_ARN)
        .or_insert_with(|| json!("acs:ram::1234567890123456:role/payments"));
}

/// A resolver whose ServiceAccount opts pods in, with a role by name.
fn opting_account() -> FixedResolver {
    FixedResolver {
        token: TokenLookup::NotFound,
        account: AccountLookup::Found(AccountAnnotations {
            name: "default".to_owned(),
            annotations: [
                (annotations::M2M_TOKEN.to_owned(), "payments".to_owned()),
                (annotations::ROLE_NAME.to_owned(), "payments".to_owned()),
            ]
            .into(),
        }),
    }
}

/// A valid Pod CREATE review of `pod` in namespace `shop`.
fn pod_review(pod: &Value) -> Vec<u8> {
    serde_json::to_vec(&crate::testing::pod_review("fuzz-uid", pod.clone()))
        .expect("a Value serializes")
}

/// Reviews `pod` wrapped in a valid envelope; `None` only when the envelope is too deeply
/// nested for serde_json's recursion limit (the pod itself parsed, the review does not).
fn review_pod(pod: &Value, config: &MutateConfig) -> Option<Decision> {
    match review_now(&pod_review(pod), Via::Annotation, config, &Standalone) {
        Ok(answer) => Some(decision(&answer.body, "fuzz-uid")),
        Err(e) if e.0.contains("recursion limit") => None,
        Err(e) => panic!("a valid envelope is answered, got 400: {e}"),
    }
}

/// What one input led to, for regression tests that assert more than "no panic".
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Pass 1: the raw bytes got an AdmissionReview answer (not a 400); whether it allows.
    pub raw_allowed: Option<bool>,
    /// Pass 2: the wrapped pod's answer allows it (`None`: not JSON, or too deep to wrap).
    pub wrapped_allowed: Option<bool>,
    /// Pass 2 returned a patch (which applied, and left nothing to patch on reinvocation).
    pub patched: bool,
}

/// Runs both passes; panics on any violated property.
pub fn run(data: &[u8]) -> Outcome {
    let mut outcome = Outcome::default();

    // Pass 1: the raw bytes, through the annotation entry and, in a labelled namespace whose
    // ServiceAccount opts every pod in, through the namespace entry.
    if let Ok(answer) = review_now(data, Via::Annotation, &MutateConfig::default(), &Standalone) {
        outcome.raw_allowed = Some(decision(&answer.body, &answer.uid).allowed);
    }
    if let Ok(answer) = review_now(data, Via::Namespace, &wrapped_config(), &opting_account()) {
        decision(&answer.body, &answer.uid);
    }

    // Pass 2: the bytes as a pod.
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return outcome;
    };
    let mut pod = match value.pointer("/request/object") {
        Some(object) => object.clone(),
        None => value,
    };
    opt_in(&mut pod);
    let config = wrapped_config();
    let Some(first) = review_pod(&pod, &config) else {
        return outcome;
    };
    outcome.wrapped_allowed = Some(first.allowed);
    let Some(patch) = first.patch else {
        return outcome;
    };
    outcome.patched = true;
    if let Err(e) = json_patch::patch(&mut pod, &patch) {
        panic!(
            "the patch does not apply: {e}\npatch: {}",
            serde_json::to_string(&patch).unwrap_or_default()
        );
    }
    let Some(second) = review_pod(&pod, &config) else {
        return outcome;
    };
    assert!(second.allowed, "the patched pod is denied on reinvocation");
    if let Some(again) = second.patch {
        panic!(
            "not idempotent: the patched pod gets another patch {}",
            serde_json::to_string(&again).unwrap_or_default()
        );
    }
    outcome
}
