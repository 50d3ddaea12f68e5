//! An in-process Kubernetes API that keeps objects: GET of one object, list, and watch (a
//! streamed body of events after a `resourceVersion`), for any resource path. Tests put and
//! change objects while a process watches them; every request is recorded.
//!
//! Besides reads it serves what the projector's sweep and `doctor` need: pages (`limit` and
//! `continue`), equality label selectors (`a=b`, `a`), creates (`POST`, with `generateName`; a
//! `dryRun=All` create stores nothing and can be answered by a hook, as an admission webhook
//! would), merge patches of an object or its `status`, and refusals (403) set per method and
//! path. No field selectors, no server-side apply. [`FakeApi::client`] answers in process;
//! [`FakeApi::serve`] listens on a local port for another process.

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
    /// The body of a write, as JSON.
    pub body: Option<Value>,
}

/// Answers a `dryRun=All` create in a collection: the object as admission left it and the
/// warnings it gave, or a failure's HTTP status and `Status` body.
pub type DryRunHook =
    Arc<dyn Fn(Value) -> Result<(Value, Vec<String>), (StatusCode, Value)> + Send + Sync>;

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
    /// (method, path prefix) answered 403.
    forbidden: Vec<(String, String)>,
    /// Collection to the hook answering its dry-run creates.
    dry_run: BTreeMap<String, DryRunHook>,
    /// For `generateName`.
    generated: u64,
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

/// A resource path split into its collection, namespace (empty: all), name (empty: list) and
/// subresource (empty: the object).
fn split(path: &str) -> Option<(String, String, String, String)> {
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
    let (plural, name, sub) = match rest {
        [plural] => (*plural, "", ""),
        [plural, name] => (*plural, *name, ""),
        [plural, name, sub] => (*plural, *name, *sub),
        _ => return None,
    };
    Some((
        format!("{}/{plural}", head.join("/")),
        namespace.to_owned(),
        name.to_owned(),
        sub.to_owned(),
    ))
}

#[cfg(test)]
fn split_path(path: &str) -> Option<(String, String, String)> {
    split(path)
        .filter(|t| t.3.is_empty())
        .map(|(c, n, o, _)| (c, n, o))
}

impl FakeApi {
    /// A Kubernetes client of this API.
    pub fn client(&self) -> kube::Client {
        let router = axum::Router::new()
            .fallback(answer)
            .with_state(self.shared.clone());
        kube::Client::new(router, "default")
    }

    /// Serves this API over plain HTTP on 127.0.0.1 (a free port) for as long as the runtime
    /// runs: its URL, for a kubeconfig (processes started by a test, such as `doctor`).
    pub async fn serve(&self) -> String {
        let router = axum::Router::new()
            .fallback(answer)
            .with_state(self.shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port on 127.0.0.1");
        let addr = listener.local_addr().expect("the bound address");
        tokio::spawn(async move { axum::serve(listener, router).await });
        format!("http://{addr}")
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

    /// The object `name` in `collection` (`namespace` empty for cluster objects).
    pub fn get(&self, collection: &str, namespace: &str, name: &str) -> Option<Value> {
        let objects = self.shared.objects.lock().expect("fake API lock");
        let key = (collection.to_owned(), namespace.to_owned(), name.to_owned());
        objects.items.get(&key).cloned()
    }

    /// Every object of `collection`, in every namespace.
    pub fn all(&self, collection: &str) -> Vec<Value> {
        let objects = self.shared.objects.lock().expect("fake API lock");
        objects
            .items
            .iter()
            .filter(|((c, _, _), _)| c == collection)
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// How many objects of `collection` satisfy `test`, without copying them.
    pub fn count(&self, collection: &str, test: impl Fn(&Value) -> bool) -> usize {
        let objects = self.shared.objects.lock().expect("fake API lock");
        objects
            .items
            .iter()
            .filter(|((c, _, _), o)| c == collection && test(o))
            .count()
    }

    /// How many requests were answered so far, by method and resource (`GET secrets`,
    /// `PATCH m2mtokens/status`, `GET m2mtokens watch`), without copying them.
    pub fn tally(&self) -> BTreeMap<String, usize> {
        let objects = self.shared.objects.lock().expect("fake API lock");
        let mut tally = BTreeMap::new();
        for seen in &objects.seen {
            let resource = split(&seen.path).map_or_else(
                || seen.path.clone(),
                |(collection, _, _, sub)| {
                    let plural = collection.rsplit('/').next().unwrap_or("").to_owned();
                    if sub.is_empty() {
                        plural
                    } else {
                        format!("{plural}/{sub}")
                    }
                },
            );
            let watch = matches!(param(&seen.query, "watch"), Some("true" | "1"));
            let key = format!(
                "{} {resource}{}",
                seen.method,
                if watch { " watch" } else { "" }
            );
            *tally.entry(key).or_insert(0) += 1;
        }
        tally
    }

    /// Answers `method` on every path that starts with `path_prefix` with 403 Forbidden.
    pub fn forbid(&self, method: &str, path_prefix: &str) {
        let mut objects = self.shared.objects.lock().expect("fake API lock");
        objects
            .forbidden
            .push((method.to_owned(), path_prefix.to_owned()));
    }

    /// Answers dry-run creates in `collection` with `hook` (without one, the object as sent).
    pub fn on_dry_run(&self, collection: &str, hook: DryRunHook) {
        let mut objects = self.shared.objects.lock().expect("fake API lock");
        objects.dry_run.insert(collection.to_owned(), hook);
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

/// Writes a kubeconfig in `dir` for the API at `url` (from [`FakeApi::serve`]), with
/// `namespace` as its context's namespace, for a process started against this API.
pub fn kubeconfig(dir: &std::path::Path, url: &str, namespace: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\n\
         users:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    \
         user: fake\n    namespace: {namespace}\ncurrent-context: fake\n"
    );
    std::fs::write(&path, text).expect("the kubeconfig is written");
    path
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
    let body = match axum::body::to_bytes(request.into_body(), 16 << 20).await {
        Ok(bytes) if !bytes.is_empty() => serde_json::from_slice::<Value>(&bytes).ok(),
        _ => None,
    };
    respond(&shared, method, path, query, accept, body)
}

/// The answer to one request, once its body is read.
fn respond(
    shared: &Arc<Shared>,
    method: String,
    path: String,
    query: String,
    accept: String,
    body: Option<Value>,
) -> Response {
    let mut objects = shared.objects.lock().expect("fake API lock");
    objects.seen.push(Seen {
        method: method.clone(),
        path: path.clone(),
        query: query.clone(),
        accept,
        body: body.clone(),
    });
    if objects
        .forbidden
        .iter()
        .any(|(m, prefix)| *m == method && path.starts_with(prefix.as_str()))
    {
        let (code, status) = crate::testing::api_failure(
            403,
            "Forbidden",
            &format!("{method} {path} is forbidden to this user"),
        );
        return (code, axum::Json(status)).into_response();
    }
    let Some((collection, namespace, name, sub)) = split(&path) else {
        return failure(StatusCode::NOT_FOUND);
    };
    match method.as_str() {
        "GET" if !name.is_empty() => match objects.items.get(&(collection, namespace, name)) {
            Some(object) => axum::Json(object.clone()).into_response(),
            None => failure(StatusCode::NOT_FOUND),
        },
        "GET" => {
            let scope = (collection, namespace);
            let in_scope =
                move |c: &str, ns: &str| c == scope.0 && (scope.1.is_empty() || ns == scope.1);
            if matches!(param(&query, "watch"), Some("true" | "1")) {
                let live = shared.changes.subscribe();
                return watch(objects, live, &query, in_scope);
            }
            list(&objects, &query, in_scope)
        }
        "POST" if name.is_empty() => {
            drop(objects);
            create(shared, &collection, &namespace, &query, body)
        }
        "PATCH" if !name.is_empty() => {
            drop(objects);
            merge(shared, (collection, namespace, name), &sub, body)
        }
        _ => failure(StatusCode::METHOD_NOT_ALLOWED),
    }
}

fn failure(code: StatusCode) -> Response {
    let reason = code
        .canonical_reason()
        .unwrap_or("Failure")
        .replace(' ', "");
    let (code, status) = crate::testing::api_failure(code.as_u16(), &reason, &reason);
    (code, axum::Json(status)).into_response()
}

/// Whether an object's labels match an equality selector (`a=b,c`).
fn selected(object: &Value, selector: &str) -> bool {
    let selector = percent_decode(selector);
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        let label = |k: &str| object.pointer("/metadata/labels").and_then(|l| l.get(k));
        match term.split_once('=') {
            Some((k, v)) => label(k.trim_end_matches('=')).and_then(Value::as_str) == Some(v),
            None => label(term).is_some(),
        }
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1..i + 3)) {
            (b'%', Some(hex)) => {
                let hex = std::str::from_utf8(hex).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            (b'+', _) => out.push(b' '),
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One page of a list: the objects in scope after `continue` (a key), at most `limit`.
fn list(objects: &Objects, query: &str, in_scope: impl Fn(&str, &str) -> bool) -> Response {
    let selector = param(query, "labelSelector").unwrap_or("");
    let limit: usize = param(query, "limit")
        .and_then(|v| v.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let after = param(query, "continue").map(percent_decode);
    let mut items = objects
        .items
        .iter()
        .filter(|((c, ns, _), o)| in_scope(c, ns) && selected(o, selector))
        .filter(|((_, ns, name), _)| after.as_ref().is_none_or(|a| format!("{ns}/{name}") > *a));
    let page: Vec<(String, Value)> = items
        .by_ref()
        .take(limit)
        .map(|((_, ns, name), o)| (format!("{ns}/{name}"), o.clone()))
        .collect();
    let more = items.next().is_some();
    let mut metadata = json!({"resourceVersion": objects.rv.to_string()});
    if more && let Some((last, _)) = page.last() {
        metadata["continue"] = json!(last);
    }
    let items: Vec<Value> = page.into_iter().map(|(_, o)| o).collect();
    axum::Json(json!({"apiVersion": "v1", "kind": "List", "metadata": metadata, "items": items}))
        .into_response()
}

/// A create: stored (and announced) unless `dryRun=All`, which the collection's hook answers.
fn create(
    shared: &Arc<Shared>,
    collection: &str,
    namespace: &str,
    query: &str,
    body: Option<Value>,
) -> Response {
    let Some(mut object) = body.filter(Value::is_object) else {
        return failure(StatusCode::BAD_REQUEST);
    };
    if !namespace.is_empty() {
        object["metadata"]["namespace"] = json!(namespace);
    }
    let fake = FakeApi {
        shared: shared.clone(),
    };
    let mut objects = shared.objects.lock().expect("fake API lock");
    let named = object.pointer("/metadata/name").and_then(Value::as_str);
    if named.is_none_or(str::is_empty) {
        let prefix = object
            .pointer("/metadata/generateName")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        objects.generated += 1;
        object["metadata"]["name"] = json!(format!("{prefix}{:05x}", objects.generated));
    }
    let name = object["metadata"]["name"].as_str().unwrap_or("").to_owned();
    let key = (collection.to_owned(), namespace.to_owned(), name);
    if objects.items.contains_key(&key) {
        return failure(StatusCode::CONFLICT);
    }
    if param(query, "dryRun") == Some("All") {
        let hook = objects.dry_run.get(collection).cloned();
        drop(objects);
        return match hook.map(|h| h(object.clone())) {
            None => (StatusCode::CREATED, axum::Json(object)).into_response(),
            Some(Ok((object, warnings))) => {
                let mut response = (StatusCode::CREATED, axum::Json(object)).into_response();
                for w in warnings {
                    if let Ok(value) = format!("299 - {w:?}").parse() {
                        response.headers_mut().append(header::WARNING, value);
                    }
                }
                response
            }
            Some(Err((code, status))) => (code, axum::Json(status)).into_response(),
        };
    }
    drop(objects);
    fake.put(collection, object.clone());
    let stored = fake.get(&key.0, &key.1, &key.2).unwrap_or(object);
    (StatusCode::CREATED, axum::Json(stored)).into_response()
}

/// A JSON merge patch of an object, or of its `status` only.
fn merge(
    shared: &Arc<Shared>,
    key: (String, String, String),
    sub: &str,
    body: Option<Value>,
) -> Response {
    let fake = FakeApi {
        shared: shared.clone(),
    };
    let (Some(mut object), Some(mut patch)) = (fake.get(&key.0, &key.1, &key.2), body) else {
        return failure(StatusCode::NOT_FOUND);
    };
    if sub == "status" {
        patch = json!({"status": patch.get("status").cloned().unwrap_or(Value::Null)});
    } else if !sub.is_empty() {
        return failure(StatusCode::NOT_FOUND);
    }
    json_patch::merge(&mut object, &patch);
    fake.put(&key.0, object);
    let stored = fake.get(&key.0, &key.1, &key.2);
    axum::Json(stored).into_response()
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
    use super::{FakeApi, split_path};
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{ListParams, Patch, PatchParams, PostParams};
    use serde_json::json;

    #[tokio::test]
    async fn pages_selectors_writes_and_refusals() {
        let api = FakeApi::default();
        for i in 0..5 {
            let labels = if i % 2 == 0 {
                json!({"tier": "web"})
            } else {
                json!({})
            };
            api.put("api/v1/pods", json!({"metadata": {"name": format!("p{i}"), "namespace": "shop", "labels": labels}}));
        }
        let pods: kube::Api<Pod> = kube::Api::namespaced(api.client(), "shop");
        let mut names = Vec::new();
        let mut params = ListParams::default().limit(2);
        let mut pages = 0;
        loop {
            let page = pods.list(&params).await.unwrap();
            pages += 1;
            names.extend(page.items.iter().filter_map(|p| p.metadata.name.clone()));
            match page.metadata.continue_ {
                Some(token) if !token.is_empty() => params = params.continue_token(&token),
                _ => break,
            }
        }
        assert_eq!((pages, names.len()), (3, 5));
        let web = pods
            .list(&ListParams::default().labels("tier=web"))
            .await
            .unwrap();
        assert_eq!(web.items.len(), 3);

        // A dry run stores nothing; a create does; a merge patch changes the object.
        let pod: Pod = serde_json::from_value(json!({"metadata": {"generateName": "x-"}})).unwrap();
        let dry = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        pods.create(&dry, &pod).await.unwrap();
        assert_eq!(api.all("api/v1/pods").len(), 5);
        let made = pods.create(&PostParams::default(), &pod).await.unwrap();
        assert_eq!(api.all("api/v1/pods").len(), 6);
        let name = made.metadata.name.unwrap();
        pods.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
        assert_eq!(
            api.get("api/v1/pods", "shop", &name).unwrap()["metadata"]["labels"]["a"],
            "b"
        );

        api.forbid("GET", "/api/v1/namespaces/shop/pods/p1");
        let err = pods.get("p1").await.unwrap_err();
        assert!(matches!(err, kube::Error::Api(s) if s.code == 403));
        assert!(pods.get("p2").await.is_ok());
    }

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
