//! The M2MToken status and its Ready condition. Pure: the reconciler patches the result only when
//! it differs from what is there.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::{M2MToken, M2MTokenStatus};

/// The condition type.
pub const READY: &str = "Ready";

/// Condition reasons the projector sets (besides the OAuth error codes it passes through).
pub mod reason {
    pub const REFRESHED: &str = "Refreshed";
    pub const TOKEN_VALID: &str = "TokenValid";
    pub const CREDENTIALS_NOT_FOUND: &str = "CredentialsSecretNotFound";
    pub const CREDENTIALS_KEY_MISSING: &str = "CredentialsKeyMissing";
    pub const SECRET_CONFLICT: &str = "SecretConflict";
    pub const INVALID_SPEC: &str = "InvalidSpec";
}

pub fn time(unix: i64) -> Option<Time> {
    k8s_openapi::jiff::Timestamp::from_second(unix)
        .ok()
        .map(Time)
}

/// The Ready condition, keeping `lastTransitionTime` when the status does not change.
pub fn ready_condition(
    current: Option<&M2MTokenStatus>,
    ready: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: i64,
) -> Condition {
    let status = if ready { "True" } else { "False" };
    let previous = current.and_then(|s| s.conditions.iter().find(|c| c.type_ == READY));
    let last_transition_time = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => time(now).unwrap_or(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)),
    };
    Condition {
        type_: READY.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        last_transition_time,
        observed_generation: generation,
    }
}

/// The times of the token the Secret holds, for the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenTimes {
    pub issued_at: i64,
    pub expires_at: i64,
    pub refresh_at: i64,
}

/// Builds the whole status from its parts, carrying over what this update does not set.
pub fn build(
    token: &M2MToken,
    condition: Condition,
    times: Option<TokenTimes>,
    subject: Option<String>,
    refreshed_now: Option<i64>,
) -> M2MTokenStatus {
    let current = token.status.clone().unwrap_or_default();
    let mut conditions: Vec<Condition> = current
        .conditions
        .iter()
        .filter(|c| c.type_ != READY)
        .cloned()
        .collect();
    conditions.insert(0, condition);
    M2MTokenStatus {
        conditions,
        observed_generation: token.metadata.generation,
        issued_at: times.and_then(|t| time(t.issued_at)).or(current.issued_at),
        expires_at: times
            .and_then(|t| time(t.expires_at))
            .or(current.expires_at),
        refresh_at: times
            .and_then(|t| time(t.refresh_at))
            .or(current.refresh_at),
        last_refresh_time: refreshed_now.and_then(time).or(current.last_refresh_time),
        subject: subject.or(current.subject),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_transition_time_moves_only_when_the_status_flips() {
        let first = ready_condition(None, true, reason::REFRESHED, "a", Some(1), 1_000);
        let current = M2MTokenStatus {
            conditions: vec![first.clone()],
            ..M2MTokenStatus::default()
        };
        let same = ready_condition(
            Some(&current),
            true,
            reason::TOKEN_VALID,
            "b",
            Some(1),
            2_000,
        );
        assert_eq!(same.last_transition_time, first.last_transition_time);
        let flipped = ready_condition(Some(&current), false, "invalid_client", "c", Some(1), 3_000);
        assert_eq!(flipped.last_transition_time, time(3_000).unwrap());
    }
}
