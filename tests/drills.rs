//! Fault drills.
//!
//! - IDaaS misbehaves (500, a timeout, garbage, 429 with Retry-After, a token for the wrong
//!   audience) while the projector runs, both the `token --watch` file projector and the
//!   M2MToken reconciler: the token it holds stays valid the whole time, nothing bad is ever
//!   written, and it is fresh again within one backoff cap after the faults stop.
//! - The webhook binary's certificate rotates 10 times under a steady stream of requests, over
//!   new and kept-alive connections: no request fails.
//! - SIGTERM under load: readiness turns false first, requests in flight complete, exit 0.
//!
//! The backoff is shortened (100 ms doubling to 1 s) so a drill takes seconds, not minutes; the
//! schedule is otherwise the projector's own.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{TestCa, Webhook, client, publish, requeue_after, review_body};
use http::{Method, StatusCode};
use idaas_projector::controller::reconcile::reconcile;
use idaas_projector::controller::schedule::Backoff;
use idaas_projector::crd::{ClientAuth, ClientAuthMethod, M2MToken, M2MTokenSpec, SecretKeyRef};
use idaas_projector::emulator::idaas::{Fault, IdaasEmulator};
use idaas_projector::idaas::{Credential, HttpConfig, IdaasClient, jwt};
use idaas_projector::testing::{self, fake_kube, install_provider, not_found, reconcile_context};
use idaas_projector::time::unix_now;
use secrecy::SecretString;
use serde_json::{Value, json};

/// The drills run one at a time: each loads the machine's two cores, and their timing would
/// otherwise measure each other.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const AUDIENCE: &str = "api://drill";
const CLIENT_ID: &str = "app_drill";
const CLIENT_SECRET: &str = "drill-secret-value";
/// Long enough that the fault sequence (about 4 s of retries) fits well inside one token's
/// life after its refresh at 2/3: the point is that the old token stays valid throughout.
const LIFETIME: Duration = Duration::from_secs(24);
const CAP: Duration = Duration::from_secs(1);
const DRILL_BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(100),
    cap: CAP,
};
/// Whole-request timeout of the IDaaS client; [`Fault::Delay`] waits longer.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(800);

fn fault_sequence() -> Vec<Fault> {
    vec![
        Fault::Status(500),
        Fault::Delay(Duration::from_secs(3)),
        Fault::GarbageJson,
        Fault::TooManyRequests {
            retry_after_secs: 1,
        },
        Fault::WrongAudience,
    ]
}

async fn emulator() -> IdaasEmulator {
    testing::emulator(CLIENT_ID, CLIENT_SECRET, AUDIENCE, LIFETIME).await
}

fn idaas_client(emu: &IdaasEmulator) -> IdaasClient {
    IdaasClient::new(&HttpConfig {
        connect_timeout: Duration::from_secs(2),
        timeout: REQUEST_TIMEOUT,
        ..testing::http_config(emu)
    })
    .unwrap()
}

/// What a drill saw of the token the projector holds, sampled every 20 ms.
#[derive(Default)]
struct Watch {
    /// Everything wrong that was ever seen: a missing, expired, or bad token.
    violations: Vec<String>,
    /// The distinct `iat`s held, in order.
    issued: Vec<i64>,
    samples: usize,
}

impl Watch {
    /// Checks one sample of the held token: present, RS256, right audience, not expired.
    fn sample(&mut self, token: Option<String>) {
        self.samples += 1;
        let Some(token) = token else {
            self.violations.push("the token is gone".into());
            return;
        };
        let now = unix_now();
        match (
            jsonwebtoken::decode_header(&token),
            jwt::decode_unverified(&token),
        ) {
            (Ok(h), Ok(c)) => {
                if h.alg != jsonwebtoken::Algorithm::RS256 {
                    self.violations
                        .push(format!("a {:?} token was written", h.alg));
                }
                if !c.aud.iter().any(|a| a == AUDIENCE) {
                    self.violations.push(format!("aud {:?} was written", c.aud));
                }
                if c.exp <= now {
                    self.violations
                        .push(format!("the held token expired at {} (now {now})", c.exp));
                }
                if self.issued.last() != Some(&c.iat) {
                    self.issued.push(c.iat);
                }
            }
            (h, c) => self
                .violations
                .push(format!("an unreadable token was written: {h:?} {c:?}")),
        }
    }
}

/// Runs the fault sequence against a running projector whose held token `read` returns, and
/// returns what was seen and how long after the last fault the token was fresh again.
async fn run_drill(
    emu: &IdaasEmulator,
    read: impl Fn() -> Option<String> + Send + Sync + 'static,
) -> (Watch, Timing) {
    let read = Arc::new(read);
    // The first token.
    let deadline = Instant::now() + Duration::from_secs(20);
    while read().is_none() {
        assert!(
            Instant::now() < deadline,
            "the projector writes a first token"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let watch = Arc::new(Mutex::new(Watch::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (watch, stop, read) = (watch.clone(), stop.clone(), read.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                watch.lock().unwrap().sample(read());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let first_iat = jwt::decode_unverified(&read().unwrap()).unwrap().iat;
    // The faults hit the next refresh, at 2/3 of the first token's life.
    let faults = fault_sequence();
    let n_faults = faults.len();
    let before = emu.token_requests();
    for f in faults {
        emu.push_fault(f);
    }
    let deadline = Instant::now() + LIFETIME;
    while emu.pending_faults() > 0 {
        assert!(
            Instant::now() < deadline,
            "the projector retries through the faults within one token lifetime"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let last_fault = Instant::now();
    let fresh_deadline = last_fault + CAP + REQUEST_TIMEOUT + Duration::from_secs(5);
    let mut retried_after = None;
    loop {
        if retried_after.is_none() && emu.token_requests() > before + n_faults {
            retried_after = Some(last_fault.elapsed());
        }
        if let Some(t) = read()
            && jwt::decode_unverified(&t).is_ok_and(|c| c.iat > first_iat)
        {
            break;
        }
        assert!(
            Instant::now() < fresh_deadline,
            "fresh again after the faults stop"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let fresh_after = last_fault.elapsed();
    let retried_after = retried_after.unwrap_or(fresh_after);
    // Sample a little longer, then stop.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    sampler.await.unwrap();
    assert_eq!(
        emu.token_requests(),
        before + n_faults + 1,
        "one try per fault, then the next try succeeds"
    );
    let watch = std::mem::take(&mut *watch.lock().unwrap());
    (
        watch,
        Timing {
            retried_after,
            fresh_after,
        },
    )
}

/// After the last fault was taken: when the next try reached IDaaS, and when the fresh token was
/// held (both include this machine's scheduling; the drills run one at a time).
struct Timing {
    retried_after: Duration,
    fresh_after: Duration,
}

fn assert_held(watch: &Watch, timing: &Timing, what: &str) {
    assert!(
        watch.violations.is_empty(),
        "{what}: {:#?}",
        watch.violations
    );
    assert_eq!(
        watch.issued.len(),
        2,
        "{what}: the first token, then exactly one fresh one: {:?}",
        watch.issued
    );
    eprintln!(
        "{what}: {} samples, no violation; after the last fault the next try came {} ms later \
         (backoff cap {} ms) and the fresh token was held {} ms later",
        watch.samples,
        timing.retried_after.as_millis(),
        CAP.as_millis(),
        timing.fresh_after.as_millis(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_file_survives_an_idaas_fault_sequence() {
    let _drill = ONE_AT_A_TIME.lock().await;
    install_provider();
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("token");
    let req = emu.token_request(Credential::ClientSecretPost {
        client_secret: SecretString::from(CLIENT_SECRET),
    });
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let client = idaas_client(&emu);
    let projector = {
        let out = out.clone();
        tokio::spawn(async move {
            idaas_projector::token_file::keep_fresh(&client, &req, &out, DRILL_BACKOFF, async {
                let _ = rx.await;
            })
            .await
        })
    };
    let file = out.clone();
    let (watch, timing) = run_drill(&emu, move || read_token_file(&file)).await;
    let _ = tx.send(());
    projector.await.unwrap();
    assert_held(&watch, &timing, "token file");
}

fn read_token_file(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// A Kubernetes API in process that keeps the managed Secret it is given and refuses to have it
/// deleted; enough for the reconciler.
#[derive(Default)]
struct FakeApi {
    secret: Mutex<Option<Value>>,
    deletes: AtomicUsize,
}

impl FakeApi {
    fn held_token(&self) -> Option<String> {
        let secret = self.secret.lock().unwrap();
        let data = secret.as_ref()?.get("data")?.get("token")?.as_str()?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .ok()?;
        String::from_utf8(bytes).ok()
    }

    fn answer(&self, method: &Method, path: &str, sent: Value) -> (StatusCode, Value) {
        match *method {
            Method::GET if path.ends_with("/secrets/drill-credentials") => (
                StatusCode::OK,
                json!({"apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": "drill-credentials", "namespace": "drill", "resourceVersion": "1",
                        "labels": {"idaas-projector.io/client-credentials": "true"}},
                    "data": {"client_secret": base64::engine::general_purpose::STANDARD.encode(CLIENT_SECRET)}}),
            ),
            Method::GET if path.ends_with("/secrets/app-token") => {
                match self.secret.lock().unwrap().clone() {
                    Some(s) => (StatusCode::OK, s),
                    None => (StatusCode::NOT_FOUND, not_found()),
                }
            }
            Method::PATCH if path.ends_with("/status") => {
                let mut t = serde_json::to_value(drill_token("http://unused")).unwrap();
                t["status"] = sent["status"].clone();
                (StatusCode::OK, t)
            }
            // Created when there is none, then applied with the resourceVersion read.
            Method::POST
                if path.ends_with("/secrets") && sent["metadata"]["name"] == "app-token" =>
            {
                let mut held = self.secret.lock().unwrap();
                if held.is_some() {
                    return testing::api_failure(409, "AlreadyExists", "");
                }
                let mut stored = sent;
                stored["metadata"]["resourceVersion"] = json!("1");
                *held = Some(stored.clone());
                (StatusCode::CREATED, stored)
            }
            Method::PATCH if path.ends_with("/secrets/app-token") => {
                let mut held = self.secret.lock().unwrap();
                let version = held
                    .as_ref()
                    .map(|s| s["metadata"]["resourceVersion"].clone());
                if version.as_ref() != Some(&sent["metadata"]["resourceVersion"]) {
                    return testing::api_failure(409, "Conflict", "");
                }
                let next = version
                    .and_then(|v| v.as_str()?.parse::<u64>().ok())
                    .map_or(1, |v| v + 1);
                let mut stored = sent;
                stored["metadata"]["resourceVersion"] = json!(next.to_string());
                *held = Some(stored.clone());
                (StatusCode::OK, stored)
            }
            Method::DELETE => {
                self.deletes.fetch_add(1, Ordering::SeqCst);
                (StatusCode::OK, json!({}))
            }
            Method::POST => (StatusCode::CREATED, sent),
            _ => (StatusCode::NOT_FOUND, not_found()),
        }
    }
}

fn drill_token(issuer: &str) -> M2MToken {
    let mut t = M2MToken::new(
        "app",
        M2MTokenSpec {
            issuer: issuer.to_owned(),
            token_endpoint: None,
            jwks_uri: None,
            audience: AUDIENCE.into(),
            scopes: vec![".all".into()],
            client_id: CLIENT_ID.into(),
            client_auth: ClientAuth {
                method: ClientAuthMethod::ClientSecretPost,
                secret_ref: Some(SecretKeyRef {
                    name: "drill-credentials".into(),
                    key: "client_secret".into(),
                }),
                federated_credential_name: None,
                service_account: None,
            },
            secret_name: Some("app-token".into()),
            role_arn: None,
            oidc_provider_arn: None,
            max_token_age: "12h".into(),
        },
    );
    t.metadata.namespace = Some("drill".into());
    t.metadata.uid = Some("00000000-0000-4000-8000-000000000001".into());
    t.metadata.generation = Some(1);
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_secret_survives_an_idaas_fault_sequence() {
    let _drill = ONE_AT_A_TIME.lock().await;
    install_provider();
    let emu = emulator().await;
    let api = Arc::new(FakeApi::default());
    let held = api.clone();
    let client = fake_kube(move |method, path, sent| held.answer(method, path, sent));
    let mut ctx = reconcile_context(client, idaas_client(&emu), 4);
    ctx.backoff = DRILL_BACKOFF;
    let ctx = Arc::new(ctx);
    let token = Arc::new(drill_token(&emu.issuer()));

    // The controller's loop for one object: reconcile, sleep the requeue, again.
    let stop = Arc::new(AtomicBool::new(false));
    let delays = Arc::new(Mutex::new(BTreeMap::<usize, Duration>::new()));
    let controller = {
        let (stop, delays) = (stop.clone(), delays.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let action = reconcile(token.clone(), ctx.clone())
                    .await
                    .expect("the API never fails in this drill");
                let d = requeue_after(&action);
                delays.lock().unwrap().insert(n, d);
                n += 1;
                // Wake up early to stop; the requeue is what kube-runtime would wait.
                let until = Instant::now() + d;
                while Instant::now() < until && !stop.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(10).min(d)).await;
                }
            }
        })
    };
    let held = api.clone();
    let (watch, timing) = run_drill(&emu, move || held.held_token()).await;
    stop.store(true, Ordering::SeqCst);
    controller.await.unwrap();
    assert_held(&watch, &timing, "managed Secret");
    assert_eq!(api.deletes.load(Ordering::SeqCst), 0, "nothing is deleted");
    let delays = delays.lock().unwrap();
    let failures: Vec<Duration> = delays.values().copied().filter(|d| *d <= CAP).collect();
    assert!(
        failures.len() >= fault_sequence().len(),
        "a short requeue after each fault: {delays:?}"
    );
}

/// What one sender saw: admissions answered, and the first failure with when it happened.
type Sent = (usize, Option<(Instant, String)>);

/// One sender of back-to-back admissions, until `stop` or its first failure.
fn sender(
    c: reqwest::Client,
    url: String,
    stop: Arc<AtomicBool>,
    seen_certs: Option<Arc<Mutex<Vec<Vec<u8>>>>>,
) -> tokio::task::JoinHandle<Sent> {
    tokio::spawn(async move {
        let mut ok = 0;
        let fail = |e: String| Some((Instant::now(), e));
        while !stop.load(Ordering::SeqCst) {
            let resp = match c.post(&url).json(&review_body("drill")).send().await {
                Ok(r) => r,
                Err(e) => return (ok, fail(format!("{e:?}"))),
            };
            if !resp.status().is_success() {
                return (ok, fail(format!("status {}", resp.status())));
            }
            if let Some(seen) = &seen_certs {
                let der = resp
                    .extensions()
                    .get::<reqwest::tls::TlsInfo>()
                    .and_then(|i| i.peer_certificate())
                    .map(<[u8]>::to_vec)
                    .unwrap_or_default();
                let mut seen = seen.lock().unwrap();
                if seen.last() != Some(&der) {
                    seen.push(der);
                }
            }
            match resp.json::<Value>().await {
                Ok(v) if v["response"]["allowed"] == true => ok += 1,
                Ok(v) => return (ok, fail(format!("unexpected answer {v}"))),
                Err(e) => return (ok, fail(format!("body: {e:?}"))),
            }
        }
        (ok, None)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_certificate_rotations_under_a_request_stream() {
    let _drill = ONE_AT_A_TIME.lock().await;
    let ca = TestCa::new("rotation drill CA");
    let pairs: Vec<_> = (0..=10).map(|i| ca.leaf(&format!("gen-{i}"))).collect();
    let dir = tempfile::tempdir().unwrap();
    publish(dir.path(), 0, &pairs[0].cert_pem, &pairs[0].key_pem);
    let mut webhook = Webhook::start(
        &dir.path().join("tls.crt"),
        &dir.path().join("tls.key"),
        &["--tls-reload-interval", "20ms"],
    );
    webhook.wait_ready().await;

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    // New connections (a full handshake each time) over HTTP/1.1 and HTTP/2, and kept-alive
    // connections that straddle the rotations.
    let senders = vec![
        sender(
            client(&ca.pem, false, false),
            webhook.url(),
            stop.clone(),
            Some(seen.clone()),
        ),
        sender(
            client(&ca.pem, true, false),
            webhook.url(),
            stop.clone(),
            None,
        ),
        sender(
            client(&ca.pem, true, true),
            webhook.url(),
            stop.clone(),
            None,
        ),
        sender(
            client(&ca.pem, false, true),
            webhook.url(),
            stop.clone(),
            None,
        ),
    ];
    for (generation, pair) in pairs.iter().enumerate().skip(1) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        publish(dir.path(), generation as u32, &pair.cert_pem, &pair.key_pem);
    }
    let newest = pairs.last().unwrap().der.clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().last() != Some(&newest) {
        assert!(
            Instant::now() < deadline,
            "the newest certificate is served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    for s in senders {
        let (ok, err) = s.await.unwrap();
        assert_eq!(err.map(|e| e.1), None, "no request fails during rotation");
        total += ok;
    }
    let seen = seen.lock().unwrap().clone();
    let expected: Vec<Vec<u8>> = pairs.iter().map(|p| p.der.clone()).collect();
    assert!(seen.iter().all(|d| expected.contains(d)));
    eprintln!(
        "rotation drill: {total} admissions over 10 rotations, none failed; {} of 11 certificates seen on new connections",
        seen.len()
    );
    webhook.signal("TERM");
    let (status, log) = webhook.wait().await;
    assert!(status.success(), "{status:?}");
    assert!(!log.contains("PRIVATE KEY"));
}

/// Sends an admission over HTTP/1.1 in two halves with `pause` between them, so that it is in
/// flight across whatever happens meanwhile; returns the status line and body.
async fn slow_admission(
    ca_pem: &str,
    port: u16,
    started: tokio::sync::mpsc::Sender<()>,
    pause: Duration,
) -> Result<(String, Value), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = common::tls_client_config(ca_pem, false);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let body = serde_json::to_vec(&review_body("in-flight")).unwrap();
    let head = format!(
        "POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let (first, rest) = body.split_at(body.len() / 2);
    tls.write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(first).await.map_err(|e| e.to_string())?;
    tls.flush().await.map_err(|e| e.to_string())?;
    let _ = started.send(()).await;
    tokio::time::sleep(pause).await;
    tls.write_all(rest)
        .await
        .map_err(|e| format!("second half: {e}"))?;
    tls.flush().await.map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer)
        .await
        .map_err(|e| format!("reading the answer: {e}"))?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no answer")?;
    let status = head.lines().next().unwrap_or_default().to_owned();
    // The answer may be chunked; the JSON is the part between the first `{` and the last `}`.
    let json = body
        .find('{')
        .zip(body.rfind('}'))
        .map(|(a, b)| &body[a..=b])
        .ok_or("no JSON in the answer")?;
    Ok((
        status,
        serde_json::from_str(json).map_err(|e| e.to_string())?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_and_exits_zero() {
    let _drill = ONE_AT_A_TIME.lock().await;
    install_provider();
    let ca = TestCa::new("sigterm drill CA");
    let (webhook, _dir) = Webhook::ready(
        &ca,
        &["--shutdown-delay", "500ms", "--shutdown-grace", "10s"],
    )
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..4)
        .map(|i| {
            sender(
                client(&ca.pem, i % 2 == 0, true),
                webhook.url(),
                stop.clone(),
                None,
            )
        })
        .collect();
    // Four admissions whose bodies are half sent when SIGTERM arrives, and finish after the
    // listener has closed.
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let in_flight: Vec<_> = (0..4)
        .map(|_| {
            let (ca, tx, port) = (ca.pem.clone(), tx.clone(), webhook.port);
            tokio::spawn(
                async move { slow_admission(&ca, port, tx, Duration::from_millis(1500)).await },
            )
        })
        .collect();
    for _ in 0..4 {
        rx.recv().await.expect("every slow admission starts");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let term = Instant::now();
    webhook.signal("TERM");
    let mut unready = None;
    for _ in 0..200 {
        if webhook.readyz().await == Some(503) {
            unready = Some(Instant::now());
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let unready = unready.expect("readiness turns false after SIGTERM");

    for (i, h) in in_flight.into_iter().enumerate() {
        let (status, body) = h
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("in-flight {i}: {e}"));
        assert!(status.contains(" 200"), "in-flight {i}: {status}");
        assert_eq!(body["response"]["allowed"], true, "in-flight {i}: {body}");
    }
    let (status, log) = webhook.wait().await;
    let exited_after = term.elapsed();
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    for s in senders {
        let (ok, err) = s.await.unwrap();
        total += ok;
        // A sender stops at its first failure, which can only be the listener or connection
        // closing after readiness went false: never a refused or failed admission, and nothing
        // before the process said it was not ready.
        if let Some((at, err)) = err {
            assert!(
                !err.starts_with("status") && !err.starts_with("unexpected"),
                "an admission failed instead of draining: {err}"
            );
            assert!(
                at > unready,
                "a request failed before readiness turned false: {err}"
            );
        }
    }
    assert!(status.success(), "exit status {status:?}");
    assert!(total > 0);
    let log_lines: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        log_lines
            .iter()
            .any(|l| l.to_string().contains("shutting down") || l.to_string().contains("SIGTERM")),
        "the shutdown is logged: {log}"
    );
    eprintln!(
        "SIGTERM drill: {total} admissions under load, 4 in flight completed; not ready {} ms after SIGTERM, exit 0 after {} ms",
        (unready - term).as_millis(),
        exited_after.as_millis()
    );
}
