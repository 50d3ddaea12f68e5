//! Certificate reload from files, the way Kubernetes updates a mounted Secret: by swapping the
//! `..data` symlink to a new timestamped directory.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{Pair, TestCa, client, publish, review_body};
use idaas_projector::admin::Readiness;
use idaas_projector::metrics::Metrics;
use idaas_projector::testing::install_provider;
use idaas_projector::webhook::tls::{self, CertStore, FileWatcher};

#[test]
fn symlink_swaps_are_picked_up_and_bad_pairs_keep_the_old_one() {
    install_provider();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let ca = TestCa::new("reload CA");
    let (metrics, readiness, store) = (Metrics::new(), Readiness::default(), CertStore::default());
    let mut watcher = FileWatcher::default();

    // Nothing there yet: not loaded, not ready, no panic.
    assert!(!watcher.poll(&cert, &key, &store, &metrics, &readiness));
    assert!(!store.is_loaded());
    assert!(readiness.check().is_err());

    let first = ca.leaf("first");
    publish(dir.path(), 1, &first.cert_pem, &first.key_pem);
    assert!(watcher.poll(&cert, &key, &store, &metrics, &readiness));
    assert!(store.is_loaded());
    // Unchanged files: nothing to do.
    assert!(!watcher.poll(&cert, &key, &store, &metrics, &readiness));

    // A key that does not match the certificate is refused; the first pair keeps serving.
    let other = ca.leaf("other");
    let second = ca.leaf("second");
    publish(dir.path(), 2, &second.cert_pem, &other.key_pem);
    assert!(!watcher.poll(&cert, &key, &store, &metrics, &readiness));
    // Garbage is refused too.
    publish(dir.path(), 3, "not a certificate", "not a key");
    assert!(!watcher.poll(&cert, &key, &store, &metrics, &readiness));
    assert!(store.is_loaded());

    // A good new pair is taken.
    publish(dir.path(), 4, &second.cert_pem, &second.key_pem);
    assert!(watcher.poll(&cert, &key, &store, &metrics, &readiness));

    let text = metrics.encode().unwrap();
    assert!(
        text.contains("idaas_projector_webhook_certificate_reloads_total{result=\"success\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("idaas_projector_webhook_certificate_reloads_total{result=\"failure\"}"),
        "{text}"
    );
}

#[test]
fn load_pair_errors_are_clear_and_never_echo_the_key() {
    install_provider();
    let ca = TestCa::new("errors CA");
    let a = ca.leaf("a");
    let b = ca.leaf("b");
    let cases: Vec<(&str, &str, &str)> = vec![
        ("", &a.key_pem, "no PEM certificate"),
        (&a.cert_pem, "", "no usable PEM private key"),
        (&a.cert_pem, &b.key_pem, "does not match"),
    ];
    for (cert, key, want) in cases {
        let err = match tls::load_pair(cert.as_bytes(), key.as_bytes()) {
            Ok(_) => panic!("expected an error containing {want:?}"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(want), "{err}");
        assert!(!err.contains("PRIVATE KEY"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watched_files_rotate_under_a_request_stream() {
    install_provider();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("stream CA");
    let pairs: Vec<Pair> = (0..4).map(|i| ca.leaf(&format!("gen-{i}"))).collect();
    publish(dir.path(), 0, &pairs[0].cert_pem, &pairs[0].key_pem);

    let metrics = Arc::new(Metrics::new());
    let readiness = Arc::new(Readiness::default());
    readiness.set_caches_synced();
    let store = Arc::new(CertStore::default());
    tokio::spawn(tls::watch_files(
        dir.path().join("tls.crt"),
        dir.path().join("tls.key"),
        Duration::from_millis(20),
        store.clone(),
        metrics.clone(),
        readiness.clone(),
    ));
    for _ in 0..200 {
        if readiness.check().is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        readiness.check().is_ok(),
        "ready once the certificate loads"
    );

    let config = Arc::new(tls::server_config(store.clone()).unwrap());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(idaas_projector::webhook::server::WebhookState {
        config: idaas_projector::webhook::mutate::MutateConfig::default(),
        resolver: Arc::new(idaas_projector::webhook::review::Standalone),
        metrics: metrics.clone(),
        bodies: Default::default(),
    });
    tokio::spawn(idaas_projector::webhook::server::serve_tls(
        listener,
        config,
        state,
        idaas_projector::webhook::limits::Limits::default(),
        axum_server::Handle::new(),
    ));

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let sender = {
        let (stop, sent) = (stop.clone(), sent.clone());
        let c = client(&ca.pem, false, false);
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let resp = c
                    .post(format!("https://localhost:{}/mutate", addr.port()))
                    .json(&review_body("stream"))
                    .send()
                    .await
                    .expect("no request fails during rotation");
                assert!(resp.status().is_success());
                let der = resp
                    .extensions()
                    .get::<reqwest::tls::TlsInfo>()
                    .and_then(|i| i.peer_certificate())
                    .map(<[u8]>::to_vec)
                    .unwrap();
                if seen.last() != Some(&der) {
                    seen.push(der);
                }
                sent.fetch_add(1, Ordering::SeqCst);
            }
            seen
        })
    };
    for (generation, pair) in pairs.iter().enumerate().skip(1) {
        tokio::time::sleep(Duration::from_millis(150)).await;
        publish(dir.path(), generation as u32, &pair.cert_pem, &pair.key_pem);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let seen = sender.await.expect("the sender never failed");
    assert!(sent.load(Ordering::SeqCst) > 10);
    let expected: Vec<Vec<u8>> = pairs.iter().map(|p| p.der.clone()).collect();
    assert_eq!(
        seen.last(),
        expected.last(),
        "the newest certificate is served"
    );
    assert!(seen.iter().all(|d| expected.contains(d)));
}
