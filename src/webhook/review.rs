//! AdmissionReview v1 in and out: reads the request, calls [`mutate`], writes the response.
//!
//! The pod stays raw JSON from end to end; only the envelope is typed.

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

use super::mutate::{Denial, MutateConfig, Mutation, TokenLookup, mutate};
use crate::metrics::AdmissionResult;

/// The only AdmissionReview version served.
pub const API_VERSION: &str = "admission.k8s.io/v1";

/// Resolves the M2MToken a pod names.
pub trait TokenResolver: Send + Sync + 'static {
    /// Looks up `name` in `namespace`.
    fn lookup(&self, namespace: &str, name: &str) -> TokenLookup;
}

/// `--standalone`: no Kubernetes API, annotations and flags only.
#[derive(Debug, Default, Clone, Copy)]
pub struct Standalone;

impl TokenResolver for Standalone {
    fn lookup(&self, _namespace: &str, _name: &str) -> TokenLookup {
        TokenLookup::Standalone
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Review {
    api_version: Option<String>,
    kind: Option<String>,
    request: Option<Request>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request {
    uid: String,
    kind: Option<Gvk>,
    namespace: Option<String>,
    operation: Option<String>,
    sub_resource: Option<String>,
    name: Option<String>,
    object: Option<Value>,
}

#[derive(Deserialize)]
struct Gvk {
    #[serde(default)]
    group: String,
    #[serde(default)]
    kind: String,
}

/// A request that cannot be answered with an AdmissionReview (HTTP 400).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadReview(pub String);

/// An answered review: the response body and how it is counted.
#[derive(Debug)]
pub struct Answer {
    pub body: Vec<u8>,
    pub result: AdmissionResult,
    /// For logs: the request's uid, namespace and name.
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// For logs: the denial message, if any.
    pub denial: Option<String>,
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Answers one AdmissionReview body.
pub fn review(
    body: &[u8],
    config: &MutateConfig,
    resolver: &dyn TokenResolver,
) -> Result<Answer, BadReview> {
    let review: Review = serde_json::from_slice(body)
        .map_err(|e| BadReview(one_line(&format!("malformed AdmissionReview: {e}"))))?;
    let api_version = review.api_version.unwrap_or_default();
    if api_version != API_VERSION {
        return Err(BadReview(format!(
            "unsupported AdmissionReview apiVersion {api_version:?}: only {API_VERSION} is served"
        )));
    }
    let kind = review.kind.unwrap_or_default();
    if kind != "AdmissionReview" {
        return Err(BadReview(format!(
            "malformed AdmissionReview: kind is {kind:?}, expected \"AdmissionReview\""
        )));
    }
    let request = review
        .request
        .ok_or_else(|| BadReview("malformed AdmissionReview: no request".to_owned()))?;
    if request.uid.is_empty() {
        return Err(BadReview(
            "malformed AdmissionReview: request.uid is empty".to_owned(),
        ));
    }

    let namespace = request.namespace.clone().unwrap_or_default();
    let is_pod_create = request
        .kind
        .as_ref()
        .is_some_and(|k| k.group.is_empty() && k.kind == "Pod")
        && request.sub_resource.as_deref().unwrap_or("").is_empty()
        && matches!(request.operation.as_deref(), None | Some("CREATE"));
    let object = request.object.as_ref().filter(|_| is_pod_create);
    let name = object
        .and_then(|o| o.get("metadata"))
        .and_then(|m| m.get("name").or_else(|| m.get("generateName")))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or(request.name.clone())
        .unwrap_or_default();

    let decision = match object {
        None => Ok(Mutation::Skipped),
        Some(pod) => mutate(pod, request.namespace.as_deref(), config, |token| {
            resolver.lookup(&namespace, token)
        }),
    };

    let mut response = serde_json::Map::new();
    response.insert("uid".into(), Value::String(request.uid.clone()));
    let mut denial = None;
    let result = match decision {
        Ok(Mutation::Skipped) => {
            response.insert("allowed".into(), Value::Bool(true));
            AdmissionResult::skipped
        }
        Ok(Mutation::Injected { patch, warnings }) => {
            response.insert("allowed".into(), Value::Bool(true));
            if !patch.0.is_empty() {
                let bytes = serde_json::to_vec(&patch)
                    .map_err(|e| BadReview(format!("cannot encode the patch: {e}")))?;
                response.insert("patchType".into(), Value::String("JSONPatch".into()));
                response.insert(
                    "patch".into(),
                    Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
                );
            }
            if !warnings.is_empty() {
                response.insert("warnings".into(), json!(warnings));
            }
            AdmissionResult::injected
        }
        Err(Denial(message)) => {
            response.insert("allowed".into(), Value::Bool(false));
            response.insert(
                "status".into(),
                json!({"code": 403, "reason": "Forbidden", "message": message}),
            );
            denial = Some(message);
            AdmissionResult::denied
        }
    };
    let body = serde_json::to_vec(&json!({
        "apiVersion": api_version,
        "kind": kind,
        "response": response,
    }))
    .map_err(|e| BadReview(format!("cannot encode the response: {e}")))?;
    Ok(Answer {
        body,
        result,
        uid: request.uid,
        namespace,
        name,
        denial,
    })
}
