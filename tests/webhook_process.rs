//! The `webhook --standalone` binary end to end: readiness, metrics, admission, SIGTERM.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{TestCa, Webhook, client, free_port, review_body};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_webhook_serves_reports_and_stops_cleanly() {
    let ca = TestCa::new("process CA");
    let (webhook, _dir) = Webhook::ready(
        &ca,
        &["--shutdown-delay", "200ms", "--shutdown-grace", "5s"],
    )
    .await;
    let (port, admin) = (webhook.port, webhook.admin);
    let plain = reqwest::Client::new();
    let admin_url = |p: &str| format!("http://127.0.0.1:{admin}{p}");
    assert!(
        plain
            .get(admin_url("/healthz"))
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );

    let c = client(&ca.pem, true, true);
    let resp = c
        .post(format!("https://localhost:{port}/mutate"))
        .json(&review_body("process"))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["response"]["allowed"], true);

    let metrics = plain
        .get(admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("idaas_projector_admission_requests_total{result=\"injected\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("idaas_projector_admission_duration_seconds_count 1"),
        "{metrics}"
    );
    let expiry_line = metrics
        .lines()
        .find(|l| l.starts_with("idaas_projector_webhook_certificate_expiry_timestamp_seconds "))
        .expect("expiry gauge");
    assert!(!expiry_line.ends_with(" 0"), "{expiry_line}");

    // SIGTERM: readiness turns false first, then the process exits 0.
    webhook.signal("TERM");
    tokio::time::sleep(Duration::from_millis(60)).await;
    let r = plain.get(admin_url("/readyz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.text().await.unwrap().contains("shutting down"));
    let (status, logs) = webhook.wait().await;
    assert!(status.success(), "exit status {status:?}");
    assert!(
        !logs.contains("PRIVATE KEY"),
        "the key never reaches the log"
    );
    for line in logs.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("--log-format json prints JSON lines: {e}: {line}"));
    }
}

#[tokio::test]
async fn not_ready_until_a_certificate_appears() {
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_idaas-projector"))
        .args(["webhook", "--standalone"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .arg("--tls-cert-file")
        .arg(dir.path().join("tls.crt"))
        .arg("--tls-key-file")
        .arg(dir.path().join("tls.key"))
        .args(["--tls-reload-interval", "100ms", "--shutdown-delay", "0s"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let plain = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{admin}/readyz");
    let mut body = String::new();
    for _ in 0..400 {
        if let Ok(r) = plain.get(&url).send().await {
            assert_eq!(r.status().as_u16(), 503);
            body = r.text().await.unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(body.contains("no serving certificate"), "{body}");

    let ca = TestCa::new("late CA");
    let pair = ca.leaf("late");
    std::fs::write(dir.path().join("tls.key"), &pair.key_pem).unwrap();
    std::fs::write(dir.path().join("tls.crt"), &pair.cert_pem).unwrap();
    let mut ready = false;
    for _ in 0..400 {
        if plain.get(&url).send().await.unwrap().status().is_success() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(ready, "ready once the certificate files appear");
}
