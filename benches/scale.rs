//! Scale: one projector process (`idaas-projector controller`, the release build) against the
//! in-process fake Kubernetes API and the IDaaS emulator, with N M2MTokens, each with its own
//! credentials Secret. Run by hand:
//!
//! ```text
//! cargo bench --bench scale -- --tokens 1000 --window 120
//! cargo bench --bench scale -- --tokens 10000 --window 300 --recheck 60s
//! ```
//!
//! Reports: the time until every Secret holds a token and every M2MToken is Ready, the API
//! requests per M2MToken to get there (by method and resource), the requests per M2MToken per
//! minute over `--window` seconds in which nothing changes (tokens of `--lifetime` seconds,
//! default 1 h, so no refresh falls in the window), and the process's RSS after start and at
//! the end of the window. `--recheck D` passes `--recheck-interval D` (default: the projector's
//! own default); `--bin PATH` runs another build; `--wrap CMD` runs the projector under a
//! profiler (`--wrap heaptrack`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use idaas_projector::testing::fake_api::{self, FakeApi};
use idaas_projector::testing::{bench_arg, emulator, install_provider};
use serde_json::{Value, json};

const NAMESPACE: &str = "scale";
const TOKENS: &str = "apis/idaas-projector.io/v1alpha1/m2mtokens";
const SECRETS: &str = "api/v1/secrets";
const CLIENT_ID: &str = "app_scale";
const CLIENT_SECRET: &str = "scale-client-secret";
const AUDIENCE: &str = "scale-audience";

/// A text flag `name VALUE` (`--bin`, `--recheck`, `--wrap`), if given.
fn text_arg(name: &str) -> Option<String> {
    Some(bench_arg(name, String::new())).filter(|v| !v.is_empty())
}

fn m2m_token(i: usize, issuer: &str) -> Value {
    json!({
        "apiVersion": "idaas-projector.io/v1alpha1", "kind": "M2MToken",
        "metadata": {"name": format!("t{i:05}"), "namespace": NAMESPACE,
            "uid": format!("00000000-0000-4000-8000-{i:012}"), "generation": 1,
            // What a real API server keeps on every object: the bench carries it too.
            "managedFields": [{"manager": "kubectl", "operation": "Update",
                "apiVersion": "idaas-projector.io/v1alpha1", "time": "2026-12-01T00:00:00Z",
                "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:issuer": {}, "f:audience": {},
                    "f:clientId": {}, "f:clientAuth": {"f:method": {}, "f:secretRef": {"f:name": {}, "f:key": {}}},
                    "f:scopes": {}, "f:roleArn": {}}}}],
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "x".repeat(600)}},
        "spec": {"issuer": issuer, "audience": AUDIENCE, "clientId": CLIENT_ID, "scopes": [".all"],
            "clientAuth": {"method": "client_secret_post",
                "secretRef": {"name": format!("c{i:05}"), "key": "client_secret"}},
            "secretName": format!("t{i:05}"),
            "roleArn": "acs:ram::1234567890123456:role/scale",
            "maxTokenAge": "12h"}
    })
}

fn credentials(i: usize) -> Value {
    use base64::Engine as _;
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": format!("c{i:05}"), "namespace": NAMESPACE,
            "labels": {"idaas-projector.io/client-credentials": "true"}},
        "type": "Opaque",
        "data": {"client_secret": base64::engine::general_purpose::STANDARD.encode(CLIENT_SECRET)}
    })
}

/// SIGTERM to the projector this bench started: `child`, or under a `--wrap` profiler the
/// process below `child` that runs `bin` (the profiler then writes its data and exits). SIGKILL
/// if `child` has not exited 20 s later.
fn stop(child: &mut std::process::Child, bin: &str, wrapped: bool) {
    let parent = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let below_child = |mut pid: u32| {
        for _ in 0..4 {
            match parent(pid) {
                Some(p) if p == child.id() => return true,
                Some(p) if p > 1 => pid = p,
                _ => return false,
            }
        }
        false
    };
    let target = std::fs::canonicalize(bin).ok();
    let pids: Vec<u32> = if wrapped {
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .filter(|&pid| below_child(pid))
            .filter(|pid| std::fs::canonicalize(format!("/proc/{pid}/exe")).ok() == target)
            .collect()
    } else {
        vec![child.id()]
    };
    for pid in pids {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    for _ in 0..200 {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn holds_token(secret: &Value) -> bool {
    secret["metadata"]["namespace"] == NAMESPACE && secret["data"]["token"].is_string()
}

fn ready(token: &Value) -> bool {
    token["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// How the planned refreshes are spread: seconds from the first `status.refreshAt` to the last,
/// and the most of them in any one second and any one minute.
fn refresh_spread(fake: &FakeApi) -> (u64, usize, usize) {
    let mut at: Vec<u64> = fake
        .all(TOKENS)
        .iter()
        .filter_map(|t| t["status"]["refreshAt"].as_str().map(str::to_owned))
        .filter_map(|s| humantime::parse_rfc3339(&s).ok())
        .filter_map(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .collect();
    at.sort_unstable();
    let (Some(&first), Some(&last)) = (at.first(), at.last()) else {
        return (0, 0, 0);
    };
    let most_within = |span: u64| {
        let mut most = 0;
        let mut start = 0;
        for end in 0..at.len() {
            while at[end] - at[start] >= span {
                start += 1;
            }
            most = most.max(end - start + 1);
        }
        most
    };
    (last - first, most_within(1), most_within(60))
}

fn total(tally: &BTreeMap<String, usize>) -> usize {
    tally.values().sum()
}

/// `after - before`, per key.
fn delta(
    after: &BTreeMap<String, usize>,
    before: &BTreeMap<String, usize>,
) -> Vec<(String, usize)> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    install_provider();
    let n: usize = bench_arg("--tokens", 1000);
    let window: u64 = bench_arg("--window", 120);
    let lifetime: u64 = bench_arg("--lifetime", 3600);
    let bin = text_arg("--bin").unwrap_or_else(|| env!("CARGO_BIN_EXE_idaas-projector").to_owned());
    let emu = emulator(
        CLIENT_ID,
        CLIENT_SECRET,
        AUDIENCE,
        Duration::from_secs(lifetime),
    )
    .await;
    let fake = FakeApi::default();
    for i in 0..n {
        fake.put(SECRETS, credentials(i));
        fake.put(TOKENS, m2m_token(i, &emu.issuer()));
    }
    let url = fake.serve().await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let kubeconfig = fake_api::kubeconfig(dir.path(), &url, NAMESPACE);
    let before = fake.tally();

    let mut args: Vec<String> = Vec::new();
    if let Some(wrap) = text_arg("--wrap") {
        args.extend(wrap.split_whitespace().map(str::to_owned));
    }
    args.push(bin.clone());
    args.extend(
        [
            "controller",
            "--no-leader-election",
            "--sweep-interval",
            "0",
            "--admin-listen",
            "127.0.0.1:0",
            "--allowed-issuers",
        ]
        .map(str::to_owned),
    );
    args.push(emu.origin());
    if let Some(recheck) = text_arg("--recheck") {
        args.extend(["--recheck-interval".to_owned(), recheck]);
    }
    let log = std::fs::File::create(dir.path().join("projector.log")).expect("a log file");
    let started = Instant::now();
    let mut child = std::process::Command::new(&args[0])
        .args(&args[1..])
        .env("KUBECONFIG", &kubeconfig)
        .env("IDAAS_PROJECTOR_LOG_LEVEL", "warn")
        .stdout(log.try_clone().expect("the log file"))
        .stderr(log)
        .spawn()
        .expect("the projector starts");
    let pid = child.id();

    let (mut written_at, mut ready_at) = (None, None);
    let deadline = started + Duration::from_secs(600 + n as u64 / 10);
    while ready_at.is_none() {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if written_at.is_none() && fake.count(SECRETS, holds_token) == n {
            written_at = Some(started.elapsed());
        }
        if written_at.is_some() && fake.count(TOKENS, ready) == n {
            ready_at = Some(started.elapsed());
        }
        if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            let log = std::fs::read_to_string(dir.path().join("projector.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            panic!(
                "not every M2MToken was Ready in time ({} of {n} Secrets written); the log's end:\n{}",
                fake.count(SECRETS, holds_token),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
    // Let what the last writes set off (watch events of the status patches) settle.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let at_start = fake.tally();
    let rss_start = rss_kib(pid);
    let start_requests = total(&at_start) - total(&before);

    let spread = refresh_spread(&fake);
    let mut rss_each_minute = vec![rss_start];
    let window_end = Instant::now() + Duration::from_secs(window);
    while Instant::now() < window_end {
        let left = window_end.saturating_duration_since(Instant::now());
        tokio::time::sleep(left.min(Duration::from_secs(60))).await;
        rss_each_minute.push(rss_kib(pid));
    }
    let at_end = fake.tally();
    let rss_end = rss_kib(pid);
    stop(&mut child, &bin, text_arg("--wrap").is_some());

    let idle = total(&at_end) - total(&at_start);
    let per_token = |x: usize| x as f64 / n as f64;
    println!("## scale: {n} M2MTokens, tokens of {lifetime} s, {bin}");
    println!();
    println!("| figure | value |");
    println!("| --- | --- |");
    println!(
        "| every Secret written | {:.1} s |",
        written_at.unwrap_or_default().as_secs_f64()
    );
    println!(
        "| every M2MToken Ready | {:.1} s |",
        ready_at.unwrap_or_default().as_secs_f64()
    );
    println!(
        "| API requests to get there (+5 s) | {start_requests} ({:.2} per M2MToken) |",
        per_token(start_requests)
    );
    println!(
        "| API requests in {window} s with nothing changing | {idle} ({:.3} per M2MToken per minute) |",
        per_token(idle) * 60.0 / window as f64
    );
    println!(
        "| RSS after start / after the window | {:.1} MiB / {:.1} MiB ({:.1} KiB per M2MToken at the end) |",
        rss_start as f64 / 1024.0,
        rss_end as f64 / 1024.0,
        rss_end as f64 / n as f64
    );
    println!(
        "| planned refreshes (status.refreshAt) | spread over {} s; at most {} in one second, {} in one minute |",
        spread.0, spread.1, spread.2
    );
    println!();
    let mib: Vec<String> = rss_each_minute
        .iter()
        .map(|k| format!("{:.1}", *k as f64 / 1024.0))
        .collect();
    println!("RSS MiB, each minute of the window: {}", mib.join(", "));
    println!("requests at start: {:?}", delta(&at_start, &before));
    println!("requests in the window: {:?}", delta(&at_end, &at_start));
}
