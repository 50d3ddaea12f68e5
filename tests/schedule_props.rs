//! Properties of the refresh schedule and the backoff.

use std::time::Duration;

use idaas_projector::controller::schedule::{BACKOFF_CAP, Backoff, MAX_JITTER_FRACTION, plan};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5000))]

    /// The planned time never falls after deadline - min(5 minutes, lifetime / 3), and a token is
    /// never refetched before 2/3 of its lifetime minus the jitter allowance (no storms).
    #[test]
    fn refresh_time_is_between_two_thirds_and_the_latest_limit(
        iat in 1_600_000_000i64..1_900_000_000,
        life in 0i64..400_000,
        max_age in 3_600i64..=604_800,
        jitter in 0.0f64..1.0,
    ) {
        let exp = iat + life;
        let p = plan(iat, exp, max_age, jitter);
        let deadline = exp.min(iat + max_age);
        let lifetime = (deadline - iat).max(0);
        prop_assert_eq!(p.deadline, deadline);
        prop_assert_eq!(p.lifetime, lifetime);
        prop_assert!(p.refresh_at <= deadline - 300.min(lifetime / 3));
        let earliest = iat + lifetime * 2 / 3 - (lifetime as f64 * MAX_JITTER_FRACTION).ceil() as i64;
        prop_assert!(p.refresh_at >= earliest, "{} < {}", p.refresh_at, earliest);
        prop_assert!(p.refresh_at <= deadline);
    }

    /// Jitter only ever moves the refresh earlier, by at most 5% of the lifetime.
    #[test]
    fn jitter_is_bounded(iat in 0i64..1_000_000, life in 1i64..200_000, j in 0.0f64..1.0) {
        let a = plan(iat, iat + life, 604_800, 0.0);
        let b = plan(iat, iat + life, 604_800, j);
        prop_assert!(b.refresh_at <= a.refresh_at);
        prop_assert!(a.refresh_at - b.refresh_at <= (life as f64 * MAX_JITTER_FRACTION) as i64 + 1);
    }

    /// Backoff never sleeps past the 5 minute cap, whatever the attempt or Retry-After, grows
    /// with the attempt number, and honours Retry-After up to the cap.
    #[test]
    fn backoff_never_sleeps_past_the_cap(
        attempt in 0u32..10_000,
        jitter in 0.0f64..1.0,
        retry_after in proptest::option::of(0u64..100_000),
    ) {
        let ra = retry_after.map(Duration::from_secs);
        let d = Backoff::DEFAULT.delay(attempt, jitter, ra);
        prop_assert!(d <= BACKOFF_CAP);
        prop_assert!(d >= Duration::from_millis(500));
        if let Some(ra) = ra {
            prop_assert!(d >= ra.min(BACKOFF_CAP));
        }
        let step = Duration::from_secs(1u64 << attempt.min(9)).min(BACKOFF_CAP);
        prop_assert!(d >= (step / 2).min(BACKOFF_CAP) || ra.is_some());
    }

    /// Any policy, such as the drills' shorter one, keeps the same bounds: never past its cap,
    /// never under half its base, and at least Retry-After up to the cap.
    #[test]
    fn any_backoff_policy_stays_within_its_bounds(
        base_ms in 1u64..10_000,
        cap_ms in 1u64..1_000_000,
        attempt in 0u32..64,
        jitter in 0.0f64..1.0,
        retry_after_ms in proptest::option::of(0u64..2_000_000),
    ) {
        let policy = Backoff { base: Duration::from_millis(base_ms), cap: Duration::from_millis(cap_ms) };
        let ra = retry_after_ms.map(Duration::from_millis);
        let d = policy.delay(attempt, jitter, ra);
        let cap = policy.cap.max(policy.base);
        prop_assert!(d <= cap);
        prop_assert!(d >= policy.base / 2);
        if let Some(ra) = ra {
            prop_assert!(d >= ra.min(cap));
        }
    }

    /// While a valid token is held, the retry never sleeps past its deadline.
    #[test]
    fn retry_never_sleeps_past_the_deadline(
        attempt in 0u32..64,
        jitter in 0.0f64..1.0,
        now in 0i64..1_000_000,
        left in 1i64..1_000,
        retry_after in proptest::option::of(0u64..1_000),
    ) {
        let d = Backoff::DEFAULT.retry_delay(attempt, jitter, retry_after.map(Duration::from_secs), now, Some(now + left));
        prop_assert!(d <= Duration::from_secs(left as u64).max(Duration::from_secs(1)));
        prop_assert!(d <= BACKOFF_CAP);
    }
}
