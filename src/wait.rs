//! `wait-for-token`: the init container that holds a pod until its token file holds a usable JWT.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;

use crate::time::{format_duration, rfc3339};

/// A token must stay valid at least this long after the wait ends.
pub const MIN_REMAINING: Duration = Duration::from_secs(60);

/// What the token file holds right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenState {
    /// The file does not exist (yet).
    Missing,
    /// The file cannot be read.
    Unreadable(String),
    /// The file exists but is empty.
    Empty,
    /// The content is not a JWT; the reason says why.
    NotJwt(String),
    /// The token has expired, or expires within [`MIN_REMAINING`].
    Expired { exp: i64 },
    /// The token is usable until `exp`.
    Valid { exp: i64 },
}

impl std::fmt::Display for TokenState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenState::Missing => f.write_str("missing"),
            TokenState::Unreadable(e) => write!(f, "unreadable ({e})"),
            TokenState::Empty => f.write_str("empty"),
            TokenState::NotJwt(why) => write!(f, "not a JWT ({why})"),
            TokenState::Expired { exp } => write!(
                f,
                "expired or expiring within {}s (exp {})",
                MIN_REMAINING.as_secs(),
                rfc3339(*exp)
            ),
            TokenState::Valid { exp } => write!(f, "valid until {}", rfc3339(*exp)),
        }
    }
}

/// Reads the `exp` claim of a compact JWT without checking its signature. Never echoes the input.
pub fn jwt_exp(token: &str) -> Result<i64, String> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err(format!("{} dot-separated parts, expected 3", parts.len()));
    }
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[1].trim_end_matches('='))
        .map_err(|_| "the payload is not base64url".to_owned())?;
    let claims: serde_json::Value =
        serde_json::from_slice(&payload).map_err(|_| "the payload is not JSON".to_owned())?;
    let exp = claims.get("exp").ok_or_else(|| "no exp claim".to_owned())?;
    exp.as_i64()
        .or_else(|| exp.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
        .ok_or_else(|| "the exp claim is not a number".to_owned())
}

/// Inspects the token file at `now` (Unix seconds).
pub fn inspect(path: &Path, now: i64) -> TokenState {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return TokenState::Missing,
        Err(e) => return TokenState::Unreadable(e.kind().to_string()),
    };
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return TokenState::NotJwt("not UTF-8 text".to_owned());
    };
    let token = text.trim();
    if token.is_empty() {
        return TokenState::Empty;
    }
    match jwt_exp(token) {
        Err(why) => TokenState::NotJwt(why),
        Ok(exp) if exp <= now.saturating_add(MIN_REMAINING.as_secs() as i64) => {
            TokenState::Expired { exp }
        }
        Ok(exp) => TokenState::Valid { exp },
    }
}

/// The wait timed out.
#[derive(Debug, thiserror::Error)]
#[error("no usable token in {} after {}: the file is {state}", file.display(), format_duration(*timeout))]
pub struct WaitTimeout {
    pub file: PathBuf,
    pub timeout: Duration,
    pub state: TokenState,
}

/// Polls `file` every `poll` until it holds a token valid for more than a minute, logging progress
/// every `progress` (never the token). Returns the token's `exp`.
pub async fn wait_for_token(
    file: &Path,
    timeout: Duration,
    poll: Duration,
    progress: Duration,
) -> Result<i64, WaitTimeout> {
    let started = tokio::time::Instant::now();
    let deadline = started + timeout;
    let mut next_progress = started + progress;
    tracing::info!(file = %file.display(), timeout = %format_duration(timeout), "waiting for the token");
    loop {
        let state = inspect(file, crate::time::unix_now());
        if let TokenState::Valid { exp } = state {
            tracing::info!(file = %file.display(), expires = %rfc3339(exp), "token present");
            return Ok(exp);
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(WaitTimeout {
                file: file.to_owned(),
                timeout,
                state,
            });
        }
        if now >= next_progress {
            tracing::info!(
                file = %file.display(),
                state = %state,
                waited = %format_duration(Duration::from_secs(now.duration_since(started).as_secs())),
                "still waiting for the token"
            );
            next_progress += progress;
        }
        tokio::time::sleep(poll.min(deadline - now)).await;
    }
}
