//! A token file kept fresh by the projector's refresh rule, for hosts without Kubernetes
//! (`token --out FILE --watch`) and for `dev`: the file is only ever replaced atomically by a
//! checked token, so readers never see a partial, empty or failed one.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use secrecy::ExposeSecret;

use crate::controller::schedule;
use crate::idaas::{ErrorClass, IdaasClient, RefreshError, TokenRequest};
use crate::time::{rfc3339, unix_now};

/// Writes `contents` to `path` atomically (a temporary file in the same directory, mode 0600,
/// renamed over the target), so readers never see a partial or empty file.
pub fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "token".to_owned());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options.open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Keeps `out` holding a fresh token by the projector's refresh rule until `stop` resolves,
/// waiting after failures as `backoff` says ([`schedule::Backoff::DEFAULT`] outside of tests).
/// A failure never touches the file: it is replaced atomically, only by a checked token.
pub async fn keep_fresh(
    client: &IdaasClient,
    req: &TokenRequest,
    out: &Path,
    backoff: schedule::Backoff,
    stop: impl std::future::Future<Output = ()>,
) {
    let max_age = req.max_token_age.as_secs() as i64;
    let mut attempts = 0u32;
    let mut deadline: Option<i64> = None;
    let mut stop = std::pin::pin!(stop);
    loop {
        let now = unix_now();
        let wait = match client.fetch_token(req, now).await {
            Ok(t) => {
                attempts = 0;
                let c = &t.claims;
                let p = schedule::plan(c.iat, c.exp, max_age, fastrand::f64());
                match write_atomically(out, t.token.expose_secret().as_bytes()) {
                    Ok(()) => {
                        deadline = Some(p.deadline);
                        tracing::info!(file = %out.display(), sub = c.sub.as_deref().unwrap_or("-"),
                            expires = %rfc3339(c.exp), refresh_at = %rfc3339(p.refresh_at), "token written");
                        Duration::from_secs((p.refresh_at - unix_now()).max(1) as u64)
                    }
                    Err(e) => {
                        tracing::error!(file = %out.display(), error = %e, "cannot write the token file");
                        attempts += 1;
                        backoff.retry_delay(attempts - 1, fastrand::f64(), None, now, deadline)
                    }
                }
            }
            Err(e) => {
                let permanent =
                    matches!(&e, RefreshError::Fetch(f) if f.class == ErrorClass::Permanent);
                let retry_after = match &e {
                    RefreshError::Fetch(f) => f.retry_after,
                    RefreshError::Rejected(_) => None,
                };
                let delay = if permanent {
                    backoff.cap
                } else {
                    backoff.retry_delay(attempts, fastrand::f64(), retry_after, now, deadline)
                };
                attempts = attempts.saturating_add(1);
                tracing::warn!(error = %e, retry_in = ?delay, "token refresh failed; the file is left as it is");
                delay
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {},
            () = &mut stop => return,
        }
    }
}
