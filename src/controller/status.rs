//! The M2MToken status and its Ready condition. Pure: a reconcile describes what it has to say
//! as a [`Report`], [`next`] turns that into the whole status, and the reconciler patches it only
//! when it differs from what is there.

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
    /// The credentials Secret lacks the opt-in label, or its annotation leaves the M2MToken out.
    pub const CREDENTIALS_NOT_ALLOWED: &str = "CredentialsNotAllowed";
    pub const SECRET_CONFLICT: &str = "SecretConflict";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// `federated_oidc`: the ServiceAccount named in `spec.clientAuth.serviceAccount` is missing.
    pub const SERVICE_ACCOUNT_NOT_FOUND: &str = "ServiceAccountNotFound";
    /// `federated_oidc`: the projector may not create a token for that ServiceAccount.
    pub const TOKEN_REQUEST_FORBIDDEN: &str = "TokenRequestForbidden";
    /// `federated_oidc`: the TokenRequest failed otherwise.
    pub const TOKEN_REQUEST_FAILED: &str = "TokenRequestFailed";
    pub use crate::idaas::error::reason::{
        ENDPOINT_NOT_ALLOWED, ISSUER_NOT_ALLOWED, JWKS_UNAVAILABLE,
    };
}

pub fn time(unix: i64) -> Option<Time> {
    k8s_openapi::jiff::Timestamp::from_second(unix)
        .ok()
        .map(Time)
}

/// Condition reasons must match `^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$`: anything else
/// becomes `_`, and a reason that does not start with a letter gets an `Error_` prefix.
pub fn condition_reason(raw: &str) -> String {
    let mut s: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !s.starts_with(|c: char| c.is_ascii_alphabetic()) {
        s.insert_str(0, "Error_");
    }
    s.truncate(1024);
    s
}

/// The Ready condition of a status, if it has one.
pub fn ready(status: Option<&M2MTokenStatus>) -> Option<&Condition> {
    status.and_then(|s| s.conditions.iter().find(|c| c.type_ == READY))
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
    let previous = self::ready(current);
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

/// What one reconcile says in the status: the Ready condition, and what it knows of the token
/// the Secret holds. What it leaves `None` stays as the status has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub ready: bool,
    pub reason: String,
    pub message: String,
    /// The times of the token the Secret holds.
    pub times: Option<TokenTimes>,
    /// That token's `sub`.
    pub subject: Option<String>,
    /// When this reconcile fetched that token (`lastRefreshTime`).
    pub refreshed_at: Option<i64>,
}

impl Report {
    /// Ready=False with a reason and message; nothing else in the status changes.
    pub fn not_ready(reason: &str, message: &str) -> Self {
        Report {
            ready: false,
            reason: reason.to_owned(),
            message: message.to_owned(),
            times: None,
            subject: None,
            refreshed_at: None,
        }
    }
}

/// The M2MToken's status after `report`, at `now`.
pub fn next(token: &M2MToken, report: &Report, now: i64) -> M2MTokenStatus {
    let condition = ready_condition(
        token.status.as_ref(),
        report.ready,
        &report.reason,
        &report.message,
        token.metadata.generation,
        now,
    );
    build(
        token,
        condition,
        report.times,
        report.subject.clone(),
        report.refreshed_at,
    )
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
        pods: current.pods,
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

    #[test]
    fn condition_reasons_are_cleaned_to_the_allowed_alphabet() {
        assert_eq!(condition_reason("invalid_client"), "invalid_client");
        assert_eq!(condition_reason("http_500"), "http_500");
        assert_eq!(condition_reason("Throttling.User"), "Throttling_User");
        assert_eq!(condition_reason("500 error"), "Error_500_error");
        assert_eq!(condition_reason(&"a".repeat(2000)).len(), 1024);
    }

    #[test]
    fn a_not_ready_report_keeps_the_token_fields() {
        let mut token = M2MToken::new(
            "payments",
            serde_json::from_value(serde_json::json!({
                "issuer": "https://issuer.example", "audience": "api://payments",
                "clientId": "app", "clientAuth": {"secretRef": {"name": "c", "key": "k"}}
            }))
            .unwrap(),
        );
        token.metadata.generation = Some(3);
        let fetched = Report {
            ready: true,
            reason: reason::REFRESHED.to_owned(),
            message: "ok".to_owned(),
            times: Some(TokenTimes {
                issued_at: 1_000,
                expires_at: 4_600,
                refresh_at: 3_400,
            }),
            subject: Some("app".to_owned()),
            refreshed_at: Some(1_000),
        };
        token.status = Some(next(&token, &fetched, 1_000));
        let failed = next(&token, &Report::not_ready("http_500", "down"), 2_000);
        let before = token.status.as_ref().unwrap();
        assert_eq!(failed.conditions[0].status, "False");
        assert_eq!(failed.conditions[0].reason, "http_500");
        assert_eq!(failed.conditions[0].observed_generation, Some(3));
        assert_eq!(failed.observed_generation, Some(3));
        assert_eq!(failed.issued_at, before.issued_at);
        assert_eq!(failed.expires_at, time(4_600));
        assert_eq!(failed.refresh_at, before.refresh_at);
        assert_eq!(failed.last_refresh_time, time(1_000));
        assert_eq!(failed.subject.as_deref(), Some("app"));
    }
}
