//! AdmissionReview v1 in and out: reads the request, calls [`mutate`], writes the response.
//!
//! The pod stays raw JSON from end to end, reduced to what `mutate` reads ([`super::prune`]);
//! only the envelope is typed.

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

use futures::future::BoxFuture;

use super::mutate::{
    AccountLookup, Denial, MutateConfig, Mutation, Scope, TokenLookup, mutate,
    needs_service_account, service_account_name,
};
use super::prune::PrunedPod;
use crate::metrics::AdmissionResult;

/// The only AdmissionReview version served.
pub const API_VERSION: &str = "admission.k8s.io/v1";

/// Which webhook entry sent the request, told apart by the URL path the entry calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `/mutate`: pods annotated `idaas-projector.io/m2m-token`, in namespaces that are not
    /// labelled.
    Annotation,
    /// `/mutate/namespace`: every pod of a namespace labelled
    /// `idaas-projector.io/injection: enabled` (the API server checked the label).
    Namespace,
}

/// Resolves what a pod refers to: its M2MToken and (in a labelled namespace) its
/// ServiceAccount.
pub trait Resolver: Send + Sync + 'static {
    /// Looks the M2MToken `name` up in `namespace`.
    fn m2m_token(&self, namespace: &str, name: &str) -> TokenLookup;

    /// Looks the ServiceAccount up in the cache: `None` on a miss.
    fn service_account(&self, namespace: &str, name: &str) -> Option<AccountLookup>;

    /// Asks the API server for a ServiceAccount the cache does not hold (one created a moment
    /// before the pod).
    fn fetch_service_account<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, AccountLookup>;
}

/// `--standalone`: no Kubernetes API, annotations and flags only.
#[derive(Debug, Default, Clone, Copy)]
pub struct Standalone;

impl Resolver for Standalone {
    fn m2m_token(&self, _namespace: &str, _name: &str) -> TokenLookup {
        TokenLookup::Standalone
    }

    fn service_account(&self, _namespace: &str, _name: &str) -> Option<AccountLookup> {
        Some(AccountLookup::Absent)
    }

    fn fetch_service_account<'a>(
        &'a self,
        _namespace: &'a str,
        _name: &'a str,
    ) -> BoxFuture<'a, AccountLookup> {
        Box::pin(std::future::ready(AccountLookup::Absent))
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
    /// Only what `mutate` reads of the pod ([`super::prune`]).
    object: Option<PrunedPod>,
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

/// Appends `v` as JSON; writing strings, string lists and JSON values to a Vec cannot fail.
fn write<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    let _ = serde_json::to_writer(out, v);
}

/// The response buffer's first size.
const RESPONSE_CAPACITY: usize = 4096;

/// Runs of white space (serde's messages may hold newlines) as single spaces.
fn collapse_whitespace(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Answers one AdmissionReview body that came `via` one webhook entry.
pub async fn review(
    body: &[u8],
    via: Via,
    config: &MutateConfig,
    resolver: &dyn Resolver,
) -> Result<Answer, BadReview> {
    let (api_version, kind, request) = envelope(body)?;
    let namespace = request.namespace.clone().unwrap_or_default();
    let object = pod_create(&request);
    let name = object
        .and_then(|o| o.get("metadata"))
        .and_then(|m| m.get("name").or_else(|| m.get("generateName")))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or(request.name.clone())
        .unwrap_or_default();
    let namespace_enabled = via == Via::Namespace;
    let decision = match object {
        None => Ok(Mutation::Skipped),
        Some(pod) => {
            let account = if needs_service_account(pod, namespace_enabled) {
                service_account(resolver, &namespace, service_account_name(pod)).await
            } else {
                AccountLookup::Absent
            };
            let scope = Scope {
                namespace: request.namespace.as_deref(),
                namespace_enabled,
                service_account: &account,
            };
            mutate(pod, &scope, config, |token| {
                resolver.m2m_token(&namespace, token)
            })
        }
    };
    // The response is written straight to bytes: the patch is base64-encoded into the output
    // (its alphabet needs no JSON escaping), with no intermediate JSON tree to build and copy.
    // Sized for the usual injected answer (a patch of about 2.6 KB, 3.5 KB in base64), so that
    // it is not grown and copied along the way.
    let mut out = Vec::with_capacity(RESPONSE_CAPACITY);
    out.extend_from_slice(b"{\"apiVersion\":");
    write(&mut out, &api_version);
    out.extend_from_slice(b",\"kind\":");
    write(&mut out, &kind);
    out.extend_from_slice(b",\"response\":{\"uid\":");
    write(&mut out, &request.uid);
    let (result, denial) = write_decision(&mut out, decision)?;
    out.extend_from_slice(b"}}");
    Ok(Answer {
        body: out,
        result,
        uid: request.uid,
        namespace,
        name,
        denial,
    })
}

/// The pod's ServiceAccount from the cache, or from the API server on a miss.
async fn service_account(resolver: &dyn Resolver, namespace: &str, name: &str) -> AccountLookup {
    match resolver.service_account(namespace, name) {
        Some(found) => found,
        None => resolver.fetch_service_account(namespace, name).await,
    }
}

/// The envelope's `apiVersion`, `kind` and request, or why the body is not an AdmissionReview
/// this webhook serves.
fn envelope(body: &[u8]) -> Result<(String, String, Request), BadReview> {
    let review: Review = serde_json::from_slice(body).map_err(|e| {
        BadReview(collapse_whitespace(&format!(
            "malformed AdmissionReview: {e}"
        )))
    })?;
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
    Ok((api_version, kind, request))
}

/// The pod, when the request creates one (not a subresource, not another kind).
fn pod_create(request: &Request) -> Option<&Value> {
    let is_pod_create = request
        .kind
        .as_ref()
        .is_some_and(|k| k.group.is_empty() && k.kind == "Pod")
        && request.sub_resource.as_deref().unwrap_or("").is_empty()
        && matches!(request.operation.as_deref(), None | Some("CREATE"));
    request
        .object
        .as_ref()
        .map(|p| &p.0)
        .filter(|_| is_pod_create)
}

/// Writes `allowed` and what goes with it: the base64 patch and warnings, or the denial.
fn write_decision(
    out: &mut Vec<u8>,
    decision: Result<Mutation, Denial>,
) -> Result<(AdmissionResult, Option<String>), BadReview> {
    match decision {
        Ok(Mutation::Skipped) => {
            out.extend_from_slice(b",\"allowed\":true");
            Ok((AdmissionResult::skipped, None))
        }
        Ok(Mutation::Injected { patch, warnings }) => {
            out.extend_from_slice(b",\"allowed\":true");
            if !patch.0.is_empty() {
                // The patch's JSON is written once into a buffer, then base64-encoded in one
                // call straight into the response (its alphabet needs no JSON escaping). A
                // streaming encoder fed by the serializer's many small writes cost more than
                // the encoding itself.
                let json = serde_json::to_vec(&patch)
                    .map_err(|e| BadReview(format!("cannot encode the patch: {e}")))?;
                out.extend_from_slice(b",\"patchType\":\"JSONPatch\",\"patch\":\"");
                let start = out.len();
                out.resize(
                    start + base64::encoded_len(json.len(), true).unwrap_or(0),
                    0,
                );
                base64::engine::general_purpose::STANDARD
                    .encode_slice(&json, &mut out[start..])
                    .map_err(|e| BadReview(format!("cannot encode the patch: {e}")))?;
                out.push(b'"');
            }
            if !warnings.is_empty() {
                out.extend_from_slice(b",\"warnings\":");
                write(out, &warnings);
            }
            Ok((AdmissionResult::injected, None))
        }
        Err(Denial(message)) => {
            out.extend_from_slice(b",\"allowed\":false,\"status\":");
            write(
                out,
                &json!({"code": 403, "reason": "Forbidden", "message": message}),
            );
            Ok((AdmissionResult::denied, Some(message)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(uid: &str, annotations: Value) -> Value {
        let body = serde_json::to_vec(&json!({
            "apiVersion": API_VERSION,
            "kind": "AdmissionReview",
            "request": {
                "uid": uid,
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "namespace": "shop",
                "operation": "CREATE",
                "object": {"metadata": {"name": "p", "annotations": annotations},
                           "spec": {"containers": [{"name": "app", "image": "i"}]}}
            }
        }))
        .unwrap();
        let config = MutateConfig {
            default_oidc_provider_arn: Some("acs:ram::1:oidc-provider/p".into()),
            ..MutateConfig::default()
        };
        let a =
            futures::FutureExt::now_or_never(review(&body, Via::Annotation, &config, &Standalone))
                .expect("standalone answers at once")
                .unwrap();
        serde_json::from_slice(&a.body).expect("the response is JSON")
    }

    #[test]
    fn responses_written_by_hand_are_json_with_every_field() {
        let uid = "u\"\\\u{1}é";
        let skipped = answer(uid, json!({}));
        assert_eq!(
            skipped,
            json!({"apiVersion": API_VERSION, "kind": "AdmissionReview",
                   "response": {"uid": uid, "allowed": true}})
        );

        let injected = answer(
            uid,
            json!({"idaas-projector.io/m2m-token": "t", "idaas-projector.io/role-arn": "acs:ram::1:role/r"}),
        );
        let r = &injected["response"];
        assert_eq!(r["uid"], uid);
        assert_eq!(r["allowed"], true);
        assert_eq!(r["patchType"], "JSONPatch");
        let patch = base64::engine::general_purpose::STANDARD
            .decode(r["patch"].as_str().unwrap())
            .unwrap();
        let patch: Value = serde_json::from_slice(&patch).unwrap();
        assert!(patch.as_array().is_some_and(|ops| !ops.is_empty()));

        let denied = answer(
            uid,
            json!({"idaas-projector.io/m2m-token": "t", "idaas-projector.io/role-arn": "bad\"arn"}),
        );
        let r = &denied["response"];
        assert_eq!(r["allowed"], false);
        assert_eq!(r["status"]["code"], 403);
        assert_eq!(r["status"]["reason"], "Forbidden");
        let message = r["status"]["message"].as_str().unwrap();
        assert!(message.contains("role-arn"), "{message}");
    }
}
