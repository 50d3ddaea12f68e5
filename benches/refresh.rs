//! 1,000 M2MTokens refreshed against the IDaaS emulator with 50 ms of injected latency and at
//! most 16 refreshes at once, through the real reconciler and IDaaS client, with a scripted
//! Kubernetes API in process. Prints wall time against the ideal 1000 x 50 ms / 16, the number
//! of IDaaS calls (must be exactly 1,000) and of Secret writes.
//!
//! `cargo bench --bench refresh` (`-- --tokens N --latency-ms L --concurrency C` to vary)

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::{Method, StatusCode};
use idaas_projector::controller::reconcile::reconcile;
use idaas_projector::crd::{ClientAuth, ClientAuthMethod, M2MToken, M2MTokenSpec, SecretKeyRef};
use idaas_projector::idaas::IdaasClient;
use idaas_projector::testing::{
    bench_arg, emulator, fake_kube, http_config, install_provider, not_found, reconcile_context,
};
use serde_json::json;

#[derive(Default)]
struct Counts {
    secret_writes: AtomicUsize,
    status_patches: AtomicUsize,
    gets: AtomicUsize,
    events: AtomicUsize,
}

fn token(i: usize, issuer: &str) -> M2MToken {
    let mut t = M2MToken::new(
        &format!("app-{i:04}"),
        M2MTokenSpec {
            issuer: issuer.to_owned(),
            token_endpoint: None,
            jwks_uri: None,
            audience: "api://bench".into(),
            scopes: vec![".all".into()],
            client_id: "app_bench".into(),
            client_auth: ClientAuth {
                method: ClientAuthMethod::ClientSecretPost,
                secret_ref: Some(SecretKeyRef {
                    name: "bench-credentials".into(),
                    key: "client_secret".into(),
                }),
                federated_credential_name: None,
                service_account: None,
            },
            secret_name: None,
            role_arn: None,
            oidc_provider_arn: None,
            max_token_age: "12h".into(),
        },
    );
    t.metadata.namespace = Some("bench".into());
    t.metadata.uid = Some(format!("00000000-0000-4000-8000-{i:012}"));
    t.metadata.generation = Some(1);
    t
}

fn main() {
    install_provider();
    let n = bench_arg("--tokens", 1000) as usize;
    let latency = Duration::from_millis(bench_arg("--latency-ms", 50));
    let concurrency = bench_arg("--concurrency", 16) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let emu = emulator(
            "app_bench",
            "bench-secret",
            "api://bench",
            Duration::from_secs(3600),
        )
        .await;
        emu.set_latency(latency);

        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        let client = fake_kube(move |method, path, sent| {
            match *method {
                Method::GET if path.ends_with("/secrets/bench-credentials") => {
                    c.gets.fetch_add(1, Ordering::Relaxed);
                    (StatusCode::OK, json!({"apiVersion": "v1", "kind": "Secret",
                        "metadata": {"name": "bench-credentials", "namespace": "bench", "resourceVersion": "1",
                            "labels": {"idaas-projector.io/client-credentials": "true"}},
                        "data": {"client_secret": base64::engine::general_purpose::STANDARD.encode("bench-secret")}}))
                }
                Method::GET => {
                    c.gets.fetch_add(1, Ordering::Relaxed);
                    (StatusCode::NOT_FOUND, not_found())
                }
                Method::PATCH if path.ends_with("/status") => {
                    c.status_patches.fetch_add(1, Ordering::Relaxed);
                    let mut t = serde_json::to_value(token(0, "https://issuer.example")).unwrap();
                    t["status"] = sent["status"].clone();
                    (StatusCode::OK, t)
                }
                // No managed Secret exists: each is created.
                Method::POST if path.ends_with("/secrets") => {
                    c.secret_writes.fetch_add(1, Ordering::Relaxed);
                    (StatusCode::CREATED, sent)
                }
                _ => {
                    c.events.fetch_add(1, Ordering::Relaxed);
                    (StatusCode::OK, sent)
                }
            }
        });
        let idaas = IdaasClient::new(&http_config(&emu)).unwrap();
        let ctx = Arc::new(reconcile_context(client, idaas, concurrency));
        let metrics = ctx.metrics.clone();
        let issuer = emu.issuer();
        let tokens: Vec<Arc<M2MToken>> = (0..n).map(|i| Arc::new(token(i, &issuer))).collect();

        let started = Instant::now();
        // One task per reconcile, as many as kube-runtime would run at once; the semaphore in
        // the context is what bounds the calls to IDaaS.
        let handles: Vec<_> = tokens
            .into_iter()
            .map(|t| tokio::spawn(reconcile(t, ctx.clone())))
            .collect();
        let results: Vec<_> = futures::future::join_all(handles)
            .await
            .into_iter()
            .map(|r| r.expect("reconcile task"))
            .collect();
        let wall = started.elapsed();
        let failed = results.iter().filter(|r| r.is_err()).count();
        let ideal = latency.as_secs_f64() * n as f64 / concurrency as f64;
        println!("tokens:                 {n}");
        println!("injected latency:       {} ms", latency.as_millis());
        println!("max concurrent:         {concurrency}");
        println!("wall time:              {:.3} s", wall.as_secs_f64());
        println!("ideal (n x latency / c): {ideal:.3} s");
        println!("ratio wall / ideal:     {:.3}", wall.as_secs_f64() / ideal);
        println!("IDaaS token calls:      {}", emu.token_requests());
        println!("tokens issued:          {}", emu.issued_tokens());
        println!("discovery / JWKS calls: {} / {}", emu.discovery_requests(), emu.jwks_requests());
        let text = metrics.encode().unwrap();
        let value = |name: &str| -> f64 {
            text.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0)
        };
        let (sum, count) = (
            value("idaas_projector_idaas_request_duration_seconds_sum"),
            value("idaas_projector_idaas_request_duration_seconds_count"),
        );
        println!("mean IDaaS call:        {:.1} ms", 1000.0 * sum / count.max(1.0));
        println!("Secret writes:          {}", counts.secret_writes.load(Ordering::Relaxed));
        println!("status patches:         {}", counts.status_patches.load(Ordering::Relaxed));
        println!("events:                 {}", counts.events.load(Ordering::Relaxed));
        println!("API GETs:               {}", counts.gets.load(Ordering::Relaxed));
        println!("reconcile errors:       {failed}");
        assert_eq!(emu.token_requests(), n, "exactly one IDaaS call per M2MToken");
        assert_eq!(counts.secret_writes.load(Ordering::Relaxed), n);
        assert_eq!(failed, 0);
    });
}
