//! Time to mutate a typical 3-container pod (one app container, one sidecar, one native sidecar
//! init container), and to answer a whole AdmissionReview body.
//!
//! `cargo bench --bench mutate`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use idaas_projector::testing::review_now;
use idaas_projector::webhook::mutate::{MutateConfig, Scope, TokenLookup, mutate};
use idaas_projector::webhook::review::{Standalone, Via};
use serde_json::json;

fn typical_pod() -> serde_json::Value {
    let container = |name: &str| {
        json!({
            "name": name,
            "image": format!("registry.example.com/shop/{name}:1.4.2"),
            "ports": [{"containerPort": 8080, "name": "http"}],
            "env": [
                {"name": "LOG_LEVEL", "value": "info"},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
            ],
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
            "volumeMounts": [{"name": "config", "mountPath": "/etc/shop"}],
            "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}}
        })
    };
    let mut sidecar = container("log-shipper");
    sidecar["restartPolicy"] = json!("Always");
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "payments-7d9f8b6c5-",
            "namespace": "shop",
            "labels": {"app": "payments", "pod-template-hash": "7d9f8b6c5"},
            "annotations": {
                "idaas-projector.io/m2m-token": "payments",
                "idaas-projector.io/role-arn": "acs:ram::1234567890123456:role/payments",
                "idaas-projector.io/sts-region": "cn-hangzhou"
            }
        },
        "spec": {
            "serviceAccountName": "payments",
            "initContainers": [sidecar],
            "containers": [container("app"), container("proxy")],
            "volumes": [{"name": "config", "configMap": {"name": "payments"}}]
        }
    })
}

fn config() -> MutateConfig {
    MutateConfig {
        init_image: "registry.example.com/idaas-projector:0.1.0".into(),
        default_oidc_provider_arn: Some("acs:ram::1234567890123456:oidc-provider/idaas".into()),
        ..MutateConfig::default()
    }
}

fn bench(c: &mut Criterion) {
    let pod = typical_pod();
    let cfg = config();
    c.bench_function("mutate/3-container pod", |b| {
        b.iter(|| {
            mutate(
                black_box(&pod),
                &Scope::pod_only(Some("shop")),
                &cfg,
                |_| TokenLookup::Standalone,
            )
            .unwrap()
        })
    });
    let body = serde_json::to_vec(&idaas_projector::testing::pod_review(
        "7f0c8a62-3c1e-4f0e-9d5b-2b1f8d8e9a10",
        pod.clone(),
    ))
    .unwrap();
    c.bench_function("review/3-container pod (parse, mutate, encode)", |b| {
        b.iter(|| review_now(black_box(&body), Via::Annotation, &cfg, &Standalone).unwrap())
    });
    c.bench_function("parse only/3-container pod (serde_json::Value)", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&body)).unwrap())
    });
    // The bodies benches/admission.sh sends, when benches/make_review.py is at hand.
    for size in [4096, 65536] {
        let Some(body) = load_test_body(size) else {
            continue;
        };
        c.bench_function(&format!("review/{} KiB load-test pod", size / 1024), |b| {
            b.iter(|| review_now(black_box(&body), Via::Annotation, &cfg, &Standalone).unwrap())
        });
        c.bench_function(
            &format!("parse only/{} KiB load-test pod", size / 1024),
            |b| b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&body)).unwrap()),
        );
        c.bench_function(
            &format!("parse only, pruned/{} KiB load-test pod", size / 1024),
            |b| b.iter(|| serde_json::from_slice::<PrunedReview>(black_box(&body)).unwrap()),
        );
        c.bench_function(
            &format!("scan only (IgnoredAny)/{} KiB load-test pod", size / 1024),
            |b| {
                b.iter(|| {
                    serde_json::from_slice::<serde::de::IgnoredAny>(black_box(&body)).unwrap()
                })
            },
        );
    }
}

/// An AdmissionReview read as the webhook reads its pod (`webhook::prune`).
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct PrunedReview {
    request: PrunedRequest,
}

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct PrunedRequest {
    object: idaas_projector::webhook::prune::PrunedPod,
}

/// The AdmissionReview of about `size` bytes that benches/make_review.py writes.
fn load_test_body(size: usize) -> Option<Vec<u8>> {
    let out = std::env::temp_dir().join(format!("idaas-projector-bench-review-{size}.json"));
    let ok = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/benches/make_review.py"
        ))
        .arg(size.to_string())
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| std::fs::read(&out).ok()).flatten()
}

criterion_group!(benches, bench);
criterion_main!(benches);
