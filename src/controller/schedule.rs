//! When to refresh a token, and how long to wait after a failure. Pure functions of token times
//! and now; the reconciler only applies them.
//!
//! Deadline = min(`exp`, `iat` + maxTokenAge); lifetime = deadline - `iat`. Refresh at `iat` +
//! 2/3 x lifetime, minus up to 5% of the lifetime as jitter, and never later than deadline -
//! min(5 minutes, lifetime / 3), so kubelet has time to update mounted files.

use std::time::Duration;

/// Longest wait after a failure, and the retry interval for permanent errors.
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);
/// First wait after a failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Most of the lifetime that jitter takes off the refresh time.
pub const MAX_JITTER_FRACTION: f64 = 0.05;
/// Kubelet's time to update a mounted Secret is budgeted at up to this much.
pub const KUBELET_MARGIN_SECS: i64 = 300;

/// The refresh plan of one token, in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// min(exp, iat + maxTokenAge): after this RAM rejects the token.
    pub deadline: i64,
    /// deadline - iat (0 for a token that is already useless).
    pub lifetime: i64,
    /// When to refresh.
    pub refresh_at: i64,
    /// The latest acceptable refresh time: deadline - min(5 minutes, lifetime / 3).
    pub latest: i64,
}

/// Plans the refresh of a token issued at `iat` that expires at `exp`. `jitter` in [0, 1) picks
/// how much of the allowed 5% to take off (derive it from the object, so it is stable).
pub fn plan(iat: i64, exp: i64, max_token_age_secs: i64, jitter: f64) -> Plan {
    let deadline = exp.min(iat.saturating_add(max_token_age_secs));
    let lifetime = deadline.saturating_sub(iat).max(0);
    let latest = deadline - (KUBELET_MARGIN_SECS.min(lifetime / 3));
    let jitter = jitter.clamp(0.0, 1.0);
    let base = iat + lifetime * 2 / 3;
    let take = (lifetime as f64 * MAX_JITTER_FRACTION * jitter) as i64;
    let refresh_at = (base - take).min(latest);
    Plan {
        deadline,
        lifetime,
        refresh_at,
        latest,
    }
}

/// A stable number in [0, 1) from a string (the object's uid and the token's iat), so that the
/// jitter of one token does not change from one reconcile to the next.
pub fn stable_jitter(seed: &str) -> f64 {
    // FNV-1a, 64 bit.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Exponential backoff with equal jitter: `base` doubling to `cap`. The projector uses
/// [`Backoff::DEFAULT`] (1 s doubling to 5 minutes); tests and drills shorten it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// First wait after a failure.
    pub base: Duration,
    /// Longest wait after a failure, and the retry interval for permanent errors.
    pub cap: Duration,
}

impl Backoff {
    /// 1 s doubling to 5 minutes, as docs/design.md sets.
    pub const DEFAULT: Backoff = Backoff {
        base: BACKOFF_BASE,
        cap: BACKOFF_CAP,
    };

    /// The wait before retry number `attempt` (0 for the first retry): `base` doubling to `cap`,
    /// scaled by `jitter` in [0, 1) into the upper half of the step ("equal jitter"), and at least
    /// the server's `Retry-After`, but never past `cap`.
    pub fn delay(&self, attempt: u32, jitter: f64, retry_after: Option<Duration>) -> Duration {
        let cap = self.cap.max(self.base);
        let step = self
            .base
            .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
            .min(cap);
        let jittered = step.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
        jittered
            .max(retry_after.unwrap_or_default())
            .min(cap)
            .max(self.base / 2)
    }

    /// The wait before the next try after a failure: [`Backoff::delay`], but while the Secret
    /// still holds a token that RAM accepts until `deadline`, never past that deadline, so one
    /// more try happens before the token goes stale.
    pub fn retry_delay(
        &self,
        attempt: u32,
        jitter: f64,
        retry_after: Option<Duration>,
        now: i64,
        deadline: Option<i64>,
    ) -> Duration {
        let d = self.delay(attempt, jitter, retry_after);
        match deadline {
            Some(deadline) if deadline > now => {
                d.min(Duration::from_secs((deadline - now) as u64).max(Duration::from_secs(1)))
            }
            _ => d,
        }
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_hour_token() {
        let p = plan(0, 3600, 12 * 3600, 0.0);
        assert_eq!(p.deadline, 3600);
        assert_eq!(p.refresh_at, 2400);
        assert_eq!(p.latest, 3300);
        let p = plan(0, 3600, 12 * 3600, 1.0);
        assert_eq!(p.refresh_at, 2400 - 180);
    }

    #[test]
    fn max_token_age_before_exp() {
        let p = plan(0, 48 * 3600, 12 * 3600, 0.0);
        assert_eq!(p.deadline, 12 * 3600);
        assert_eq!(p.refresh_at, 8 * 3600);
    }

    #[test]
    fn short_lifetimes_still_refresh_at_two_thirds() {
        let p = plan(1000, 1120, 12 * 3600, 0.0);
        assert_eq!(p.refresh_at, 1080);
        assert_eq!(p.latest, 1080);
    }

    #[test]
    fn expired_token_is_due_now() {
        let p = plan(100, 50, 3600, 0.5);
        assert_eq!(p.lifetime, 0);
        assert!(p.refresh_at <= 100);
    }

    #[test]
    fn backoff_doubles_to_the_cap() {
        let backoff = |a, j, r| Backoff::DEFAULT.delay(a, j, r);
        assert_eq!(backoff(0, 1.0, None), Duration::from_secs(1));
        assert_eq!(backoff(3, 1.0, None), Duration::from_secs(8));
        assert_eq!(backoff(30, 1.0, None), BACKOFF_CAP);
        assert_eq!(
            backoff(0, 0.0, Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
        assert_eq!(
            backoff(0, 0.0, Some(Duration::from_secs(3000))),
            BACKOFF_CAP
        );
    }

    #[test]
    fn a_shorter_backoff_keeps_its_shape() {
        let b = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        };
        assert_eq!(b.delay(0, 1.0, None), Duration::from_millis(100));
        assert_eq!(b.delay(0, 0.0, None), Duration::from_millis(50));
        assert_eq!(b.delay(3, 1.0, None), Duration::from_millis(800));
        assert_eq!(b.delay(9, 1.0, None), Duration::from_secs(1));
        assert_eq!(
            b.delay(0, 0.0, Some(Duration::from_secs(30))),
            Duration::from_secs(1)
        );
        assert_eq!(Backoff::default(), Backoff::DEFAULT);
    }

    #[test]
    fn jitter_is_stable_and_in_range() {
        let a = stable_jitter("uid-1/100");
        assert_eq!(a, stable_jitter("uid-1/100"));
        assert!((0.0..1.0).contains(&a));
        assert_ne!(a, stable_jitter("uid-2/100"));
    }
}
