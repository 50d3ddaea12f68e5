//! A token file kept fresh by the projector's refresh rule, for hosts without Kubernetes
//! (`token --out FILE --watch`) and for `dev`: the file is only ever replaced atomically by a
//! checked token, so readers never see a partial, empty or failed one.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::ExposeSecret;

use crate::controller::schedule;
use crate::idaas::{ErrorClass, IdaasClient, RefreshError, TokenRequest};
use crate::time::{rfc3339, unix_now};

/// Writes `contents` to `path` atomically (a new temporary file with a random name in the same
/// directory, mode 0600, renamed over the target), so readers never see a partial or empty file.
/// The temporary file is created with `create_new` (`O_CREAT|O_EXCL`): a file or symlink planted
/// at its name is never followed nor truncated; another random name is tried instead.
pub fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "token".to_owned());
    let (tmp, mut f) = create_temporary(dir, &name)?;
    let result = (|| {
        f.write_all(contents)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A fresh file `.<name>.<random>.tmp` in `dir`, created exclusively with mode 0600.
fn create_temporary(dir: &Path, name: &str) -> std::io::Result<(PathBuf, std::fs::File)> {
    const ATTEMPTS: usize = 64;
    for _ in 0..ATTEMPTS {
        let tmp = dir.join(format!(".{name}.{:016x}.tmp", fastrand::u64(..)));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        format!("no free temporary name for {name} in {}", dir.display()),
    ))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The names `write_atomically` will try next on this thread after `fastrand::seed(seed)`.
    fn would_be_names(dir: &Path, seed: u64, n: usize) -> Vec<PathBuf> {
        fastrand::seed(seed);
        (0..n)
            .map(|_| dir.join(format!(".token.{:016x}.tmp", fastrand::u64(..))))
            .collect()
    }

    #[test]
    fn planted_files_and_symlinks_at_temporary_names_are_never_followed_or_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let decoys = would_be_names(dir.path(), 7, 8);
        for (i, decoy) in decoys.iter().enumerate() {
            if i % 2 == 0 {
                std::os::unix::fs::symlink(&victim, decoy).unwrap();
            } else {
                std::fs::write(decoy, b"planted").unwrap();
            }
        }
        let target = dir.path().join("token");
        fastrand::seed(7);
        write_atomically(&target, b"fresh-token").unwrap();

        assert_eq!(std::fs::read(&target).unwrap(), b"fresh-token");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        for (i, decoy) in decoys.iter().enumerate() {
            let meta = std::fs::symlink_metadata(decoy).unwrap();
            if i % 2 == 0 {
                assert!(meta.file_type().is_symlink(), "{}", decoy.display());
            } else {
                assert_eq!(std::fs::read(decoy).unwrap(), b"planted");
            }
        }
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&target).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Only the decoys and the two real files are left: no temporary file lingers.
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            decoys.len() + 2
        );
    }

    #[test]
    fn every_write_uses_a_fresh_temporary_name() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("token");
        fastrand::seed(11);
        write_atomically(&target, b"one").unwrap();
        // The same name comes up again; the write still succeeds and leaves nothing behind.
        let planted = would_be_names(dir.path(), 11, 1).remove(0);
        std::fs::write(&planted, b"planted").unwrap();
        fastrand::seed(11);
        write_atomically(&target, b"two").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"two");
        assert_eq!(std::fs::read(&planted).unwrap(), b"planted");
    }
}
