//! `doctor`'s requests to the Kubernetes API: GETs (one object, or every page of a list) and the
//! one write it ever sends, a `dryRun=All` create of a pod, whose admission warnings come back
//! as `Warning: 299 - "..."` headers. Raw requests through [`kube::Client::send`]: the headers
//! can be read, and no body (a Secret's above all) reaches a log line, as kube's typed calls
//! do with a body they cannot parse.

use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt as _;
use kube::client::Body;
use serde_json::Value;

/// Bodies larger than this are not read (a list page of objects stays far below).
const MAX_BODY: usize = 16 << 20;

/// The answer to a read.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup<T> {
    Found(T),
    NotFound,
    /// 403: the message the API server gave.
    Forbidden(String),
    /// Any other failure, as one line.
    Failed(String),
}

impl<T> Lookup<T> {
    /// The value, when found.
    pub fn found(&self) -> Option<&T> {
        match self {
            Lookup::Found(v) => Some(v),
            _ => None,
        }
    }
}

/// An answer of the API server: the status, the `Warning` header values and the JSON body.
struct Answer {
    status: StatusCode,
    warnings: Vec<String>,
    body: Value,
}

async fn send(
    client: &kube::Client,
    method: Method,
    uri: &str,
    body: Option<&Value>,
) -> Result<Answer, String> {
    let mut builder = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::ACCEPT, "application/json");
    let bytes = match body {
        Some(b) => {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            serde_json::to_vec(b).map_err(|e| e.to_string())?
        }
        None => Vec::new(),
    };
    let request = builder
        .body(Body::from(bytes))
        .map_err(|e| format!("cannot build the request {uri}: {e}"))?;
    let response = client
        .send(request)
        .await
        .map_err(|e| format!("{uri}: {}", crate::http::error_chain(&e)))?;
    let (parts, body) = response.into_parts();
    let warnings = parse_warnings(
        parts
            .headers
            .get_all(header::WARNING)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str),
    );
    let bytes = http_body_util::Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("{uri}: the answer could not be read: {e}"))?
        .to_bytes();
    Ok(Answer {
        status: parts.status,
        warnings,
        // Never the body itself in a message: it may be a Secret.
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    })
}

/// The message of a `Status` answer, else the HTTP status.
fn status_message(a: &Answer) -> String {
    a.body
        .get("message")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .map_or_else(|| format!("HTTP {}", a.status), str::to_owned)
}

fn lookup(result: Result<Answer, String>) -> Lookup<Value> {
    match result {
        Err(e) => Lookup::Failed(e),
        Ok(a) if a.status.is_success() && a.body.is_object() => Lookup::Found(a.body),
        Ok(a) if a.status == StatusCode::NOT_FOUND => Lookup::NotFound,
        Ok(a) if a.status == StatusCode::FORBIDDEN => Lookup::Forbidden(status_message(&a)),
        Ok(a) if a.status.is_success() => {
            Lookup::Failed("the answer is not a JSON object".to_owned())
        }
        Ok(a) => Lookup::Failed(status_message(&a)),
    }
}

/// GET of one object at `path` (`/api/v1/namespaces/shop/pods/web`).
pub async fn get(client: &kube::Client, path: &str) -> Lookup<Value> {
    lookup(send(client, Method::GET, path, None).await)
}

/// GET of the object `name` in the collection at `base` (`/api/v1/namespaces/shop/secrets`). A
/// name that is not a Kubernetes object name is never put into a URL.
pub async fn get_named(client: &kube::Client, base: &str, name: &str) -> Lookup<Value> {
    if !crate::webhook::annotations::is_dns_subdomain(name) {
        return Lookup::Failed(format!("{name:?} is not a Kubernetes object name"));
    }
    get(client, &format!("{base}/{name}")).await
}

/// Every item of the list at `path`, page by page.
pub async fn list(client: &kube::Client, path: &str) -> Lookup<Vec<Value>> {
    let mut items = Vec::new();
    let mut token = String::new();
    for _ in 0..1000 {
        let mut uri = format!("{path}?limit=500");
        if !token.is_empty() {
            uri.push_str("&continue=");
            uri.push_str(
                &url::form_urlencoded::byte_serialize(token.as_bytes()).collect::<String>(),
            );
        }
        let page = match lookup(send(client, Method::GET, &uri, None).await) {
            Lookup::Found(page) => page,
            Lookup::NotFound => return Lookup::NotFound,
            Lookup::Forbidden(m) => return Lookup::Forbidden(m),
            Lookup::Failed(m) => return Lookup::Failed(m),
        };
        if let Some(list) = page.get("items").and_then(Value::as_array) {
            items.extend(list.iter().cloned());
        }
        match page.pointer("/metadata/continue").and_then(Value::as_str) {
            Some(next) if !next.is_empty() => token = next.to_owned(),
            _ => return Lookup::Found(items),
        }
    }
    Lookup::Failed(format!("{path}: more than 1000 pages"))
}

/// What a `dryRun=All` create of a pod answered.
#[derive(Debug, Clone, PartialEq)]
pub enum DryRun {
    /// Admitted: the pod as admission left it, and the warnings.
    Admitted { pod: Value, warnings: Vec<String> },
    /// 403, and not an admission webhook's denial: RBAC refused the create.
    Forbidden(String),
    /// An admission webhook denied the pod: the API server's message (it names the webhook).
    Denied(String),
    /// Any other failure (a webhook that could not be called, an invalid pod), as one line.
    Failed(String),
}

/// Whether a refusal of a create is an admission webhook's denial.
pub fn is_webhook_denial(message: &str) -> bool {
    message.contains("admission webhook") && message.contains("denied the request")
}

/// Creates `pod` in `namespace` with `dryRun=All`: admission runs, nothing is stored.
pub async fn dry_run(client: &kube::Client, namespace: &str, pod: &Value) -> DryRun {
    let uri = format!("/api/v1/namespaces/{namespace}/pods?dryRun=All");
    let answer = match send(client, Method::POST, &uri, Some(pod)).await {
        Ok(a) => a,
        Err(e) => return DryRun::Failed(e),
    };
    let message = status_message(&answer);
    match answer.status {
        s if s.is_success() && answer.body.is_object() => DryRun::Admitted {
            pod: answer.body,
            warnings: answer.warnings,
        },
        s if s.is_success() => DryRun::Failed("the answer is not a pod".to_owned()),
        _ if is_webhook_denial(&message) => DryRun::Denied(message),
        StatusCode::FORBIDDEN => DryRun::Forbidden(message),
        _ => DryRun::Failed(message),
    }
}

/// A quoted string at the start of `s` (after white space): its text, unescaped, and what
/// follows it.
fn quoted(s: &str) -> Option<(String, &str)> {
    let s = s.trim_start().strip_prefix('"')?;
    let mut text = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => text.push(chars.next().map_or('\\', |(_, e)| e)),
            '"' => return Some((text, &s[i + 1..])),
            c => text.push(c),
        }
    }
    None
}

/// The texts of `Warning` header values (`299 - "text"`, RFC 7234: code, agent, quoted text,
/// optional quoted date; several per value, separated by commas).
pub fn parse_warnings<'a>(values: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut out = Vec::new();
    for value in values {
        let mut rest = value;
        while let Some(start) = rest.find('"') {
            let Some((text, after)) = quoted(&rest[start..]) else {
                break;
            };
            out.push(text);
            rest = quoted(after).map_or(after, |(_date, after_date)| after_date);
            match rest.find(',') {
                Some(comma) => rest = &rest[comma + 1..],
                None => break,
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warning_headers() {
        let v = [
            r#"299 - "M2MToken \"payments\" not found""#,
            r#"299 - "a, b", 299 - "second" "Sat, 01 Jan 2000 00:00:00 GMT""#,
        ];
        assert_eq!(
            parse_warnings(v.into_iter()),
            ["M2MToken \"payments\" not found", "a, b", "second"]
        );
        assert!(parse_warnings(["299 -"].into_iter()).is_empty());
    }

    #[test]
    fn denials() {
        assert!(is_webhook_denial(
            "admission webhook \"m2m-token.idaas-projector.io\" denied the request: bad"
        ));
        assert!(!is_webhook_denial(
            "pods is forbidden: User \"x\" cannot create resource \"pods\""
        ));
    }
}
