//! The leadership gate: only the lease holder reconciles, losing the lease stops reconciling
//! promptly, and a dead lease task is an error (the process exits non-zero).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::FutureExt;
use idaas_projector::controller::{RunError, run_while_leader};
use tokio::sync::{oneshot, watch};

#[derive(Default)]
struct Counters {
    started: AtomicUsize,
    stopped: AtomicUsize,
}

async fn eventually(what: &str, f: impl Fn() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting until {what}");
}

fn stop_future(
    rx: oneshot::Receiver<()>,
) -> futures::future::Shared<futures::future::BoxFuture<'static, ()>> {
    async move {
        let _ = rx.await;
    }
    .boxed()
    .shared()
}

#[tokio::test]
async fn reconciles_only_while_leading() {
    let (leader_tx, leader_rx) = watch::channel(false);
    let (_task_tx, task_rx) = oneshot::channel::<String>();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let counters = Arc::new(Counters::default());
    let c = counters.clone();
    let gate = tokio::spawn(run_while_leader(
        leader_rx,
        async move { task_rx.await.unwrap_or_else(|_| "dropped".into()) },
        move |lost| {
            let c = c.clone();
            async move {
                c.started.fetch_add(1, Ordering::SeqCst);
                lost.await;
                c.stopped.fetch_add(1, Ordering::SeqCst);
            }
        },
        stop_future(stop_rx),
    ));

    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        counters.started.load(Ordering::SeqCst),
        0,
        "a follower does not reconcile"
    );

    leader_tx.send(true).unwrap();
    eventually("work starts", || {
        counters.started.load(Ordering::SeqCst) == 1
    })
    .await;

    leader_tx.send(false).unwrap();
    eventually("work stops on losing the lease", || {
        counters.stopped.load(Ordering::SeqCst) == 1
    })
    .await;

    leader_tx.send(true).unwrap();
    eventually("work starts again", || {
        counters.started.load(Ordering::SeqCst) == 2
    })
    .await;

    stop_tx.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), gate)
        .await
        .unwrap()
        .unwrap();
    assert!(result.is_ok());
    assert_eq!(counters.stopped.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_dead_lease_task_is_an_error_and_stops_the_work() {
    let (leader_tx, leader_rx) = watch::channel(true);
    let (task_tx, task_rx) = oneshot::channel::<String>();
    let (_stop_tx, stop_rx) = oneshot::channel::<()>();
    let counters = Arc::new(Counters::default());
    let c = counters.clone();
    let gate = tokio::spawn(run_while_leader(
        leader_rx,
        async move { task_rx.await.unwrap_or_else(|_| "dropped".into()) },
        move |lost| {
            let c = c.clone();
            async move {
                c.started.fetch_add(1, Ordering::SeqCst);
                lost.await;
                c.stopped.fetch_add(1, Ordering::SeqCst);
            }
        },
        stop_future(stop_rx),
    ));
    eventually("work starts", || {
        counters.started.load(Ordering::SeqCst) == 1
    })
    .await;
    task_tx
        .send("Err(the API server went away)".into())
        .unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), gate)
        .await
        .unwrap()
        .unwrap();
    match result {
        Err(RunError::Lease(message)) => assert!(message.contains("lease task ended"), "{message}"),
        Ok(()) => panic!("a dead lease task must be an error"),
    }
    assert_eq!(
        counters.stopped.load(Ordering::SeqCst),
        1,
        "reconciling stopped"
    );
    drop(leader_tx);
}

#[tokio::test]
async fn a_follower_stops_cleanly_on_sigterm() {
    let (_leader_tx, leader_rx) = watch::channel(false);
    let (_task_tx, task_rx) = oneshot::channel::<String>();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let gate = tokio::spawn(run_while_leader(
        leader_rx,
        async move { task_rx.await.unwrap_or_else(|_| "dropped".into()) },
        |lost| lost,
        stop_future(stop_rx),
    ));
    stop_tx.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), gate)
        .await
        .unwrap()
        .unwrap();
    assert!(result.is_ok());
}
