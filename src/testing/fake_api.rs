//! An in-process Kubernetes API that keeps objects: GET of one object, list, and watch (a
//! streamed body of events after a `resourceVersion`), for any resource path. Tests put and
//! change objects while a process watches them; every request is recorded.
//!
//! It serves what reflectors and direct reads need, nothing more: no writes over the API, no
//! label or field selectors, no pagination (a list is one page).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// One request the fake API answered.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    /// The `Accept` header: metadata-only requests ask for `as=PartialObjectMetadata...`.
    pub accept: String,
}

/// A change, as a watch streams it.
#[derive(Debug, Clone)]
struct Change {
    collection: String,
    namespace: String,
    rv: u64,
    line: Bytes,
}

#[derive(Default)]
struct Objects {
    rv: u64,
    /// (collection, namespace, name) to the object.
    items: BTreeMap<(String, String, String), Value>,
    history: Vec<Change>,
    seen: Vec<Seen>,
}

struct Shared {
    objects: Mutex<Objects>,
    changes: broadcast::Sender<Change>,
}

/// The fake API. `collection` names a resource type by its path without the namespace:
/// `api/v1/serviceaccounts`, `apis/idaas-projector.io/v1alpha1/m2mtokens`.
#[derive(Clone)]
pub struct FakeApi {
    shared: Arc<Shared>,
}

impl Default for FakeApi {
    fn default() -> Self {
        Self {
            shared: Arc::new(Shared {
                objects: Mutex::new(Objects::default()),
                changes: broadcast::channel(1024).0,
            }),
        }
    }
}

/// A resource path split into its collection, namespace (empty: all) and name (empty: list).
fn split_path(path: &str) -> Option<(String, String, String)> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let prefix = match parts.first() {
        Some(&"api") => 2,
        Some(&"apis") => 3,
        _ => return None,
    };
    let (head, rest) = parts.split_at_checked(prefix)?;
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (*ns, rest),
        _ => ("", rest),
    };
    let (plural, name) = match rest {
        [plural] => (*plural, ""),
        [plural, name] => (*plural, *name),
        _ => return None,
    };
    Some((
        format!("{}/{plural}", head.join("/")),
        namespace.to_owned(),
        name.to_owned(),
    ))
}

impl FakeApi {
    /// A Kubernetes client of this API.
    pub fn client(&self) -> kube::Client {
        let router = axum::Router::new()
            .fallback(answer)
            .with_state(self.shared.clone());
        kube::Client::new(router, "default")
    }

    /// Creates or replaces an object in `collection` and tells the watches.
    pub fn put(&self, collection: &str, object: Value) {
        self.store(collection, object, true);
    }

    /// Creates or replaces an object that GETs and lists see but no watch is told of yet (a
    /// watch that lags behind the write).
    pub fn put_unannounced(&self, collection: &str, object: Value) {
        self.store(collection, object, false);
    }

    fn store(&self, collection: &str, mut object: Value, announce: bool) {
        let mut objects = self.shared.objects.lock().expect("fake API lock");
        objects.rv += 1;
        let rv = objects.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let s = |p: &str| {
            object
                .pointer(p)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let key = (
            collection.to_owned(),
            s("/metadata/namespace"),
            s("/metadata/name"),
        );
        let kind = if objects.items.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).expect("JSON");
        line.push(b'\n');
        let change = Change {
            collection: collection.to_owned(),
            namespace: key.1.clone(),
            rv,
            line: Bytes::from(line),
        };
        objects.items.insert(key, object);
        if announce {
            objects.history.push(change.clone());
            let _ = self.shared.changes.send(change);
        }
    }

    /// Every request answered so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared
            .objects
            .lock()
            .expect("fake API lock")
            .seen
            .clone()
    }
}

fn param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

async fn answer(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let query = request.uri().query().unwrap_or("").to_owned();
    let path = request.uri().path().to_owned();
    let accept = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let method = request.method().to_string();
    let mut objects = shared.objects.lock().expect("fake API lock");
    objects.seen.push(Seen {
        method: method.clone(),
        path: path.clone(),
        query: query.clone(),
        accept,
    });
    let Some((collection, namespace, name)) = split_path(&path).filter(|_| method == "GET") else {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            axum::Json(crate::testing::not_found()),
        )
            .into_response();
    };
    if !name.is_empty() {
        return match objects.items.get(&(collection, namespace, name)) {
            Some(object) => axum::Json(object.clone()).into_response(),
            None => (
                StatusCode::NOT_FOUND,
                axum::Json(crate::testing::not_found()),
            )
                .into_response(),
        };
    }
    let scope = (collection, namespace);
    let in_scope = move |c: &str, ns: &str| c == scope.0 && (scope.1.is_empty() || ns == scope.1);
    if matches!(param(&query, "watch"), Some("true" | "1")) {
        let live = shared.changes.subscribe();
        return watch(objects, live, &query, in_scope);
    }
    let items: Vec<Value> = objects
        .items
        .iter()
        .filter(|((c, ns, _), _)| in_scope(c, ns))
        .map(|(_, o)| o.clone())
        .collect();
    axum::Json(json!({
        "apiVersion": "v1",
        "kind": "List",
        "metadata": {"resourceVersion": objects.rv.to_string()},
        "items": items,
    }))
    .into_response()
}

/// A watch: the recorded changes after `resourceVersion`, then live ones, until
/// `timeoutSeconds`.
fn watch(
    objects: std::sync::MutexGuard<'_, Objects>,
    live: broadcast::Receiver<Change>,
    query: &str,
    in_scope: impl Fn(&str, &str) -> bool + Clone + Send + Sync + 'static,
) -> Response {
    let after: u64 = param(query, "resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let timeout = param(query, "timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(290);
    let past: Vec<Bytes> = objects
        .history
        .iter()
        .filter(|c| c.rv > after && in_scope(&c.collection, &c.namespace))
        .map(|c| c.line.clone())
        .collect();
    let last = objects.rv;
    drop(objects);
    let live = futures::stream::unfold(live, move |mut live| {
        let in_scope = in_scope.clone();
        async move {
            loop {
                match live.recv().await {
                    Ok(c) if c.rv > last.max(after) && in_scope(&c.collection, &c.namespace) => {
                        return Some((Ok::<_, std::convert::Infallible>(c.line), live));
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    });
    let stream = futures::StreamExt::chain(futures::stream::iter(past.into_iter().map(Ok)), live);
    let until = tokio::time::sleep(Duration::from_secs(timeout));
    Body::from_stream(futures::StreamExt::take_until(stream, until)).into_response()
}

#[cfg(test)]
mod tests {
    use super::split_path;

    #[test]
    fn paths() {
        let s = |c: &str, n: &str, o: &str| Some((c.to_owned(), n.to_owned(), o.to_owned()));
        assert_eq!(
            split_path("/api/v1/serviceaccounts"),
            s("api/v1/serviceaccounts", "", "")
        );
        assert_eq!(
            split_path("/api/v1/namespaces/shop/serviceaccounts/app"),
            s("api/v1/serviceaccounts", "shop", "app")
        );
        assert_eq!(
            split_path("/apis/idaas-projector.io/v1alpha1/namespaces/shop/m2mtokens"),
            s("apis/idaas-projector.io/v1alpha1/m2mtokens", "shop", "")
        );
        assert_eq!(
            split_path("/api/v1/namespaces/shop"),
            s("api/v1/namespaces", "", "shop")
        );
        assert_eq!(split_path("/healthz"), None);
    }
}
