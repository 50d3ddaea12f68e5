//! What one reconcile does, as a pure function of what it observed. [`decide`] says whether the
//! Secret's token is up to date, a refresh is backing off, a token must be fetched, or the
//! M2MToken cannot be served, and why; after a fetch, [`Fetch::refreshed`] and [`Fetch::failed`]
//! say what to write, publish, remember and requeue. Nothing here touches the Kubernetes API,
//! IDaaS or a clock: the reconciler reads, asks, and carries out the answer.

use std::time::Duration;

use super::schedule::{self, Backoff, Plan};
use super::secret::{ALLOWED_M2M_TOKENS, CLIENT_CREDENTIALS_LABEL, StoredToken};
use super::status::{self, Report, TokenTimes, reason};
use crate::crd::M2MTokenStatus;
use crate::idaas::{Credential, ErrorClass, RefreshError, TokenClaims};
use crate::metrics::RefreshResult;
use crate::time::rfc3339;

/// What one reconcile observed about its M2MToken.
#[derive(Debug, Clone)]
pub struct Observed {
    /// Wall clock, Unix seconds.
    pub now: i64,
    /// The M2MToken's `metadata.generation`.
    pub generation: Option<i64>,
    /// The M2MToken's uid; with a token's `iat` it seeds that token's refresh jitter.
    pub uid: String,
    /// The M2MToken's current status.
    pub status: Option<M2MTokenStatus>,
    /// The last report this replica wrote into the status; the status as read may not show it
    /// yet (a reconcile triggered by that very write can read the object from before it).
    pub last_report: Option<Report>,
    /// The failure (or hold-off) remembered for this M2MToken.
    pub failure: Option<Failure>,
    /// How often a fresh token's credentials Secret is looked at again.
    pub recheck_interval: Duration,
    /// Waits after failures.
    pub backoff: Backoff,
    /// What the reads found.
    pub found: Found,
}

/// What the reads found. They look at the spec, then the managed Secret, then the credentials
/// Secret, and stop at the first finding that settles the reconcile.
#[derive(Debug, Clone)]
pub enum Found {
    /// `maxTokenAge` is invalid (the message says how); no Secret was read.
    InvalidSpec { message: String },
    /// `spec.issuer`, `tokenEndpoint` or `jwksUri` is not on an allowed origin
    /// (`IssuerNotAllowed` / `EndpointNotAllowed`); no Secret was read, no request sent.
    NotAllowed { reason: String, message: String },
    /// The Secret `spec.secretName` exists and is not this M2MToken's; the credentials Secret was
    /// not read.
    ForeignSecret { secret_name: String },
    /// The credentials Secret cannot be used: a condition reason and a message.
    CredentialsProblem {
        reason: &'static str,
        message: String,
        stored: Option<StoredToken>,
    },
    /// Everything a refresh needs.
    Inputs(Inputs),
}

/// What a refresh needs, and what its result is compared with.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// `maxTokenAge`, seconds.
    pub max_age: i64,
    /// The token the managed Secret holds (`None`: no Secret yet, or none with a parsable token).
    pub stored: Option<StoredToken>,
    /// `None`: not read. The credentials Secret is read only when a token is to be fetched (none
    /// stored, the spec changed, a refresh is due or a failure is retried), so an M2MToken whose
    /// token is fresh costs one read of its managed Secret per re-check ([`needs_credentials`]).
    pub credential: Option<Credential>,
    /// The credentials Secret's `resourceVersion` (`None` too while it is not read).
    pub credentials_version: Option<String>,
    /// The managed Secret's `resourceVersion` as read, the precondition of its write; `None`:
    /// there is no Secret of that name, so it is created.
    pub managed_version: Option<String>,
}

impl Inputs {
    /// Whether `stored` was fetched for another generation or other credentials (a token written
    /// without a credentials version does not count as fetched with other credentials, nor does
    /// one while the credentials are not read).
    fn changed_since(&self, stored: &StoredToken, generation: Option<i64>) -> bool {
        stored.generation != generation
            || (self.credential.is_some()
                && stored.credentials_version.is_some()
                && stored.credentials_version != self.credentials_version)
    }
}

/// A failed refresh remembered for its backoff, or a hold-off after an unchanged token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Failed tries in a row.
    pub attempts: u32,
    /// How long until the next try may happen (zero: now).
    pub retry_in: Duration,
    /// The generation it failed with: another one is tried at once.
    pub generation: Option<i64>,
    /// The credentials version it failed with: other credentials are tried at once.
    pub credentials_version: Option<String>,
}

/// What a reconcile does, and why.
#[derive(Debug)]
pub enum Decision<'o> {
    /// `maxTokenAge` is invalid: Ready=False (InvalidSpec) until the spec changes.
    InvalidSpec { message: String },
    /// The spec names an origin the projector may not send requests to: Ready=False with
    /// `reason` until the spec changes (the allowed origins change only with a restart).
    NotAllowed { reason: String, message: String },
    /// The Secret to write belongs to something else: Ready=False (SecretConflict); look again
    /// after `retry_in`.
    SecretConflict { message: String, retry_in: Duration },
    /// The credentials cannot be used: Ready=False with `reason`; look again after `recheck_in`.
    CredentialsProblem {
        reason: &'static str,
        message: String,
        recheck_in: Duration,
    },
    /// The Secret holds a fresh token fetched for the current inputs: no fetch. Forget any
    /// failure, report the token in the status, and look again after `requeue` (its refresh
    /// time or the re-check interval, whichever comes first).
    UpToDate {
        report: Report,
        expires_at: i64,
        requeue: Duration,
    },
    /// A refresh with the same inputs failed (or was held off) a moment ago: wait.
    BackingOff { wait: Duration },
    /// A token is to be fetched (or a failure's backoff looked at) and the credentials Secret is
    /// not read yet: read it and decide again.
    ReadCredentials,
    /// Fetch a token.
    Fetch(Fetch<'o>),
}

/// Why a token is fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The managed Secret holds no token.
    NoToken,
    /// The stored token was fetched for another generation or other credentials.
    InputsChanged,
    /// The stored token reached its refresh time.
    Due,
}

/// A fetch to make; its methods say what to do with the result.
#[derive(Debug)]
pub struct Fetch<'o> {
    pub why: Why,
    pub inputs: &'o Inputs,
    /// The credential to fetch with, as read for this fetch.
    pub credential: &'o Credential,
    observed: &'o Observed,
}

/// What to do with a token that passed the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refreshed {
    /// Write the Secret: the token, or what it was fetched for, changed.
    pub write: bool,
    pub plan: Plan,
    /// The note of the Normal event `Refreshed` (also the Ready message).
    pub message: String,
    pub report: Report,
    /// Remember once the status is written: the same token came back although one was due (a
    /// caching server), so no fetch before the re-check interval, whatever triggers a reconcile.
    pub hold: Option<Failure>,
    pub requeue: Duration,
}

/// What to do after a failed refresh. The Secret stays as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    /// The raw reason (an OAuth error, `http_500`, a failed check), for the metric.
    pub reason: String,
    pub result: RefreshResult,
    /// The reason of the Warning event.
    pub event: &'static str,
    /// The note of the Warning event (also the Ready message).
    pub message: String,
    pub report: Report,
    /// Remember at once, for the backoff.
    pub failure: Failure,
    /// Look again after this.
    pub delay: Duration,
}

/// What to do about the M2MToken, given what was observed.
pub fn decide(o: &Observed) -> Decision<'_> {
    match &o.found {
        Found::InvalidSpec { message } => Decision::InvalidSpec {
            message: message.clone(),
        },
        Found::NotAllowed { reason, message } => Decision::NotAllowed {
            reason: status::condition_reason(reason),
            message: message.clone(),
        },
        Found::ForeignSecret { secret_name } => Decision::SecretConflict {
            message: format!(
                "Secret {secret_name:?} exists and is not managed by this M2MToken; set spec.secretName to another name or delete that Secret"
            ),
            retry_in: o.backoff.cap.min(o.recheck_interval),
        },
        Found::CredentialsProblem {
            reason,
            message,
            stored,
        } => Decision::CredentialsProblem {
            reason,
            message: format!("{message}{}", valid_note(stored.as_ref(), o.now)),
            recheck_in: soon(o),
        },
        Found::Inputs(inputs) => decide_refresh(o, inputs),
    }
}

/// Whether the M2MToken `m2mtoken` may use the credentials Secret `secret_name`, given the value
/// of that Secret's label [`CLIENT_CREDENTIALS_LABEL`] and of its annotation
/// [`ALLOWED_M2M_TOKENS`]: the label must say `"true"`, and the annotation, when there is one,
/// must name the M2MToken. `Err`: the message of a `CredentialsNotAllowed` condition, saying what
/// to add.
pub fn credentials_allowed(
    secret_name: &str,
    label: Option<&str>,
    allowed: Option<&str>,
    m2mtoken: &str,
) -> Result<(), String> {
    if label != Some("true") {
        return Err(format!(
            "credentials Secret {secret_name:?} is not open to the projector: add the label {CLIENT_CREDENTIALS_LABEL}: \"true\" to it"
        ));
    }
    match allowed {
        Some(list) if !list.split(',').any(|n| n.trim() == m2mtoken) => Err(format!(
            "credentials Secret {secret_name:?} does not allow M2MToken {m2mtoken:?}: add {m2mtoken:?} to its annotation {ALLOWED_M2M_TOKENS} (now {list:?})"
        )),
        _ => Ok(()),
    }
}

/// Whether [`decide`] needs the credentials Secret read first: a token is to be fetched, or a
/// failure's backoff compared with the credentials, and they are not read yet.
pub fn needs_credentials(o: &Observed) -> bool {
    matches!(decide(o), Decision::ReadCredentials)
}

/// With usable inputs: keep the stored token, wait out a backoff, or fetch.
fn decide_refresh<'o>(o: &'o Observed, inputs: &'o Inputs) -> Decision<'o> {
    let why = match &inputs.stored {
        None => Why::NoToken,
        Some(s) if inputs.changed_since(s, o.generation) => Why::InputsChanged,
        Some(s) => {
            let plan = schedule::plan_for(&o.uid, s.iat, s.exp, inputs.max_age);
            if o.now < plan.refresh_at {
                return up_to_date(o, s, &plan);
            }
            Why::Due
        }
    };
    let Some(credential) = inputs.credential.as_ref() else {
        return Decision::ReadCredentials;
    };
    let backing_off = o.failure.as_ref().filter(|f| {
        f.generation == o.generation
            && f.credentials_version == inputs.credentials_version
            && !f.retry_in.is_zero()
    });
    match backing_off {
        Some(f) => Decision::BackingOff { wait: f.retry_in },
        None => Decision::Fetch(Fetch {
            why,
            inputs,
            credential,
            observed: o,
        }),
    }
}

/// The stored token serves: the status says so, in the words of this replica's last report
/// about that very token, else of a Ready=True condition, else as `TokenValid`.
fn up_to_date<'o>(o: &Observed, s: &StoredToken, plan: &Plan) -> Decision<'o> {
    let ours = o
        .last_report
        .as_ref()
        .filter(|r| r.ready && r.times.is_some_and(|t| t.issued_at == s.iat));
    let ready = status::ready(o.status.as_ref()).filter(|c| c.status == "True");
    let (reason, message, refreshed_at) = match (ours, ready) {
        (Some(r), _) => (r.reason.clone(), r.message.clone(), r.refreshed_at),
        (None, Some(c)) => (c.reason.clone(), c.message.clone(), None),
        (None, None) => (
            reason::TOKEN_VALID.to_owned(),
            format!("the Secret holds a valid token until {}", rfc3339(s.exp)),
            None,
        ),
    };
    let report = Report {
        ready: true,
        reason,
        message,
        times: Some(TokenTimes {
            issued_at: s.iat,
            expires_at: s.exp,
            refresh_at: plan.refresh_at,
        }),
        subject: s.sub.clone(),
        refreshed_at,
    };
    Decision::UpToDate {
        report,
        expires_at: s.exp,
        requeue: next_look(o, plan.refresh_at),
    }
}

impl Fetch<'_> {
    /// A token came back and passed the checks.
    pub fn refreshed(&self, raw: &str, claims: &TokenClaims) -> Refreshed {
        let (o, inputs) = (self.observed, self.inputs);
        let plan = schedule::plan_for(&o.uid, claims.iat, claims.exp, inputs.max_age);
        let unchanged = inputs
            .stored
            .as_ref()
            .is_some_and(|s| s.token == raw && !inputs.changed_since(s, o.generation));
        let message = format!(
            "token for {} issued {} valid until {}",
            claims.sub.as_deref().unwrap_or("?"),
            rfc3339(claims.iat),
            rfc3339(plan.deadline)
        );
        let report = Report {
            ready: true,
            reason: reason::REFRESHED.to_owned(),
            message: message.clone(),
            times: Some(TokenTimes {
                issued_at: claims.iat,
                expires_at: claims.exp,
                refresh_at: plan.refresh_at,
            }),
            subject: claims.sub.clone(),
            refreshed_at: Some(o.now),
        };
        let hold = (unchanged && o.now >= plan.refresh_at).then(|| Failure {
            attempts: 0,
            retry_in: soon(o),
            generation: o.generation,
            credentials_version: inputs.credentials_version.clone(),
        });
        let requeue = match &hold {
            Some(_) => soon(o),
            None => next_look(o, plan.refresh_at),
        };
        Refreshed {
            write: !unchanged,
            plan,
            message,
            report,
            hold,
            requeue,
        }
    }

    /// The fetch failed, or its token failed a check. `jitter` (in [0, 1)) is drawn only for a
    /// transient failure's backoff.
    pub fn failed(&self, err: &RefreshError, jitter: impl FnOnce() -> f64) -> Failed {
        let (o, inputs) = (self.observed, self.inputs);
        let attempts = o.failure.as_ref().map_or(0, |f| f.attempts);
        let (reason, result, retry_after, permanent, event) = match err {
            RefreshError::Fetch(f) => (
                f.reason.clone(),
                RefreshResult::failure,
                f.retry_after,
                f.class == ErrorClass::Permanent,
                "RefreshFailed",
            ),
            RefreshError::Rejected(c) => (
                c.reason().to_owned(),
                RefreshResult::rejected,
                None,
                false,
                "TokenRejected",
            ),
        };
        let stored = inputs.stored.as_ref();
        let delay = if permanent {
            o.backoff.cap
        } else {
            let deadline =
                stored.map(|s| schedule::plan_for(&o.uid, s.iat, s.exp, inputs.max_age).deadline);
            o.backoff
                .retry_delay(attempts, jitter(), retry_after, o.now, deadline)
        };
        let message = format!(
            "{err}{}; retrying in {}s",
            valid_note(stored, o.now),
            delay.as_secs().max(1)
        );
        Failed {
            report: Report::not_ready(&status::condition_reason(&reason), &message),
            failure: Failure {
                attempts: attempts.saturating_add(1),
                retry_in: delay,
                generation: o.generation,
                credentials_version: inputs.credentials_version.clone(),
            },
            reason,
            result,
            event,
            message,
            delay,
        }
    }
}

/// What the write of the managed Secret met instead of success (HTTP 409).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteConflict {
    /// The create found a Secret of that name: someone else made one since the read.
    AlreadyExists,
    /// The write found the managed Secret changed since the read (its `resourceVersion`).
    Changed,
}

/// What to do after a write of the managed Secret that did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflicted {
    /// The status to report (`None`: nothing; the next look reports).
    pub report: Option<Report>,
    /// Look again (and read the Secret again) after this.
    pub requeue: Duration,
}

impl Fetch<'_> {
    /// The write of the fetched token into `secret_name` met `conflict`. Nothing was written and
    /// nothing is written now but, for a Secret someone else created, a `SecretConflict`
    /// status; the next look, soon, reads the Secret again. Not a failure of the refresh.
    pub fn write_conflict(&self, conflict: WriteConflict, secret_name: &str) -> Conflicted {
        let report = (conflict == WriteConflict::AlreadyExists).then(|| {
            Report::not_ready(
                reason::SECRET_CONFLICT,
                &format!(
                    "Secret {secret_name:?} was created by someone else while this M2MToken's token was being written; it is left alone: set spec.secretName to another name or delete that Secret"
                ),
            )
        });
        Conflicted {
            report,
            requeue: self.observed.backoff.base,
        }
    }
}

/// When to look again at a token refreshed at `refresh_at`: then, or after the (jittered)
/// re-check interval if that comes first (the managed Secret may be deleted or changed in
/// between).
fn next_look(o: &Observed, refresh_at: i64) -> Duration {
    let until = Duration::from_secs(refresh_at.saturating_sub(o.now).max(1) as u64);
    until.min(recheck(o))
}

/// The re-check interval less up to [`RECHECK_JITTER`] of it, stable for the object and the
/// moment (its uid and `now`): M2MTokens started together do not all look again together.
pub fn recheck(o: &Observed) -> Duration {
    let jitter = schedule::stable_jitter(&format!("{}/recheck/{}", o.uid, o.now));
    o.recheck_interval.mul_f64(1.0 - RECHECK_JITTER * jitter)
}

/// How much of the re-check interval [`recheck`] may take off.
pub const RECHECK_JITTER: f64 = 0.2;

/// How soon a state that needs someone's action (the credentials Secret missing or not open to
/// the projector, the same token again from IDaaS although one was due) is looked at again: a
/// minute, or the re-check interval when it is shorter.
pub fn soon(o: &Observed) -> Duration {
    o.recheck_interval.min(SOON)
}

/// See [`soon`].
pub const SOON: Duration = Duration::from_secs(60);

/// Added to a Ready=False message while the Secret still holds a token that has not expired.
fn valid_note(stored: Option<&StoredToken>, now: i64) -> String {
    match stored {
        Some(s) if s.exp > now => format!(
            "; the Secret still holds a token valid until {}",
            rfc3339(s.exp)
        ),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idaas::{CheckError, FetchError};
    use secrecy::SecretString;

    const NOW: i64 = 1_800_000_000;
    const HOUR: i64 = 3600;
    const RECHECK: Duration = Duration::from_secs(60);

    fn stored(iat: i64, exp: i64) -> StoredToken {
        StoredToken {
            token: "header.claims.signature".to_owned(),
            iat,
            exp,
            sub: Some("app_payments".to_owned()),
            generation: Some(1),
            credentials_version: Some("42".to_owned()),
        }
    }

    fn inputs(stored: Option<StoredToken>) -> Inputs {
        Inputs {
            max_age: 12 * HOUR,
            stored,
            credential: Some(Credential::ClientSecretPost {
                client_secret: SecretString::from("s3cr3t"),
            }),
            credentials_version: Some("42".to_owned()),
            managed_version: Some("7".to_owned()),
        }
    }

    fn observed(found: Found) -> Observed {
        Observed {
            now: NOW,
            generation: Some(1),
            uid: "uid-1".to_owned(),
            status: None,
            last_report: None,
            failure: None,
            recheck_interval: RECHECK,
            backoff: Backoff::DEFAULT,
            found,
        }
    }

    /// With a token in the Secret issued `age` seconds ago, valid for an hour.
    fn with_token(age: i64) -> Observed {
        observed(Found::Inputs(inputs(Some(stored(
            NOW - age,
            NOW - age + HOUR,
        )))))
    }

    fn failure(attempts: u32, retry_in: Duration) -> Failure {
        Failure {
            attempts,
            retry_in,
            generation: Some(1),
            credentials_version: Some("42".to_owned()),
        }
    }

    fn why(d: Decision<'_>) -> Why {
        match d {
            Decision::Fetch(f) => f.why,
            other => panic!("expected a fetch, got {other:?}"),
        }
    }

    fn claims(iat: i64, exp: i64) -> TokenClaims {
        TokenClaims {
            alg: "RS256".to_owned(),
            kid: None,
            iss: "https://issuer.example".to_owned(),
            sub: Some("app_payments".to_owned()),
            aud: vec!["api://payments".to_owned()],
            iat,
            exp,
        }
    }

    fn fetch_error(class: ErrorClass, reason: &str, retry_after: Option<u64>) -> RefreshError {
        RefreshError::Fetch(FetchError {
            class,
            reason: reason.to_owned(),
            message: format!("token endpoint answered {reason}"),
            request_id: None,
            retry_after: retry_after.map(Duration::from_secs),
        })
    }

    #[test]
    fn an_invalid_spec_is_reported_and_waits_for_a_change() {
        let o = observed(Found::InvalidSpec {
            message: "maxTokenAge \"2m\" must be between 1h and 168h".to_owned(),
        });
        match decide(&o) {
            Decision::InvalidSpec { message } => assert!(message.contains("2m"), "{message}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_origin_not_allowed_is_reported_and_waits_for_a_change() {
        let o = observed(Found::NotAllowed {
            reason: "IssuerNotAllowed".into(),
            message: "the issuer https://evil.example/ is not on an allowed origin".into(),
        });
        match decide(&o) {
            Decision::NotAllowed { reason, message } => {
                assert_eq!(reason, "IssuerNotAllowed");
                assert!(message.contains("https://evil.example/"), "{message}");
            }
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn a_foreign_secret_is_a_conflict_looked_at_within_the_recheck_interval() {
        let o = observed(Found::ForeignSecret {
            secret_name: "payments".to_owned(),
        });
        match decide(&o) {
            Decision::SecretConflict { message, retry_in } => {
                assert!(
                    message.starts_with("Secret \"payments\" exists"),
                    "{message}"
                );
                assert_eq!(retry_in, RECHECK);
            }
            other => panic!("{other:?}"),
        }
        // A re-check interval above the backoff cap: the cap.
        let mut o = o;
        o.recheck_interval = Duration::from_secs(3600);
        match decide(&o) {
            Decision::SecretConflict { retry_in, .. } => {
                assert_eq!(retry_in, Backoff::DEFAULT.cap)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn credentials_are_allowed_only_with_the_label_and_within_the_annotation() {
        assert_eq!(
            credentials_allowed("c", Some("true"), None, "payments"),
            Ok(())
        );
        for allowed in ["payments", "orders,payments", " orders , payments "] {
            assert_eq!(
                credentials_allowed("c", Some("true"), Some(allowed), "payments"),
                Ok(()),
                "{allowed}"
            );
        }
        for label in [None, Some("false"), Some("True"), Some("")] {
            let message = credentials_allowed("c", label, Some("payments"), "payments")
                .expect_err("no label, no use");
            assert_eq!(
                message,
                "credentials Secret \"c\" is not open to the projector: add the label idaas-projector.io/client-credentials: \"true\" to it"
            );
        }
        for allowed in ["orders", "", "payments-2,pay"] {
            let message = credentials_allowed("c", Some("true"), Some(allowed), "payments")
                .expect_err("not listed");
            assert_eq!(
                message,
                format!(
                    "credentials Secret \"c\" does not allow M2MToken \"payments\": add \"payments\" to its annotation idaas-projector.io/allowed-m2m-tokens (now {allowed:?})"
                )
            );
        }
    }

    #[test]
    fn a_credentials_problem_says_whether_the_stored_token_still_serves() {
        let problem = |stored| {
            observed(Found::CredentialsProblem {
                reason: reason::CREDENTIALS_NOT_FOUND,
                message: "credentials Secret \"c\" not found".to_owned(),
                stored,
            })
        };
        let valid = problem(Some(stored(NOW - 60, NOW + 600)));
        match decide(&valid) {
            Decision::CredentialsProblem {
                reason: r,
                message,
                recheck_in,
            } => {
                assert_eq!(r, reason::CREDENTIALS_NOT_FOUND);
                assert_eq!(
                    message,
                    format!(
                        "credentials Secret \"c\" not found; the Secret still holds a token valid until {}",
                        rfc3339(NOW + 600)
                    )
                );
                assert_eq!(recheck_in, RECHECK);
            }
            other => panic!("{other:?}"),
        }
        for stored in [None, Some(stored(NOW - 2 * HOUR, NOW - HOUR))] {
            match decide(&problem(stored)) {
                Decision::CredentialsProblem { message, .. } => {
                    assert_eq!(message, "credentials Secret \"c\" not found")
                }
                other => panic!("{other:?}"),
            }
        }
    }

    /// Inputs as found before the credentials Secret is read.
    fn unread(stored: Option<StoredToken>) -> Inputs {
        Inputs {
            credential: None,
            credentials_version: None,
            ..inputs(stored)
        }
    }

    #[test]
    fn a_fresh_token_is_up_to_date_without_reading_the_credentials() {
        let o = observed(Found::Inputs(unread(Some(stored(
            NOW - 60,
            NOW - 60 + HOUR,
        )))));
        assert!(!needs_credentials(&o));
        assert!(matches!(decide(&o), Decision::UpToDate { .. }));
        // Written with credentials version "42": not read is not "changed".
        let mut o = o;
        if let Found::Inputs(i) = &mut o.found {
            i.stored.as_mut().unwrap().credentials_version = Some("42".to_owned());
        }
        assert!(matches!(decide(&o), Decision::UpToDate { .. }));
    }

    #[test]
    fn the_credentials_are_read_when_a_token_is_to_be_fetched() {
        let fresh = Some(stored(NOW - 60, NOW - 60 + HOUR));
        let due = Some(stored(NOW - 50 * 60, NOW + 10 * 60));
        let mut spec_changed = observed(Found::Inputs(unread(fresh.clone())));
        spec_changed.generation = Some(2);
        let mut retried = observed(Found::Inputs(unread(due.clone())));
        retried.failure = Some(failure(3, Duration::from_secs(30)));
        for o in [
            observed(Found::Inputs(unread(None))),
            observed(Found::Inputs(unread(due))),
            spec_changed,
            retried,
        ] {
            assert!(needs_credentials(&o), "{:?}", o.found);
            assert!(matches!(decide(&o), Decision::ReadCredentials));
        }
        // Once read, the same observations fetch (or back off).
        assert!(matches!(decide(&with_token(50 * 60)), Decision::Fetch(_)));
        assert!(!needs_credentials(&with_token(50 * 60)));
    }

    #[test]
    fn the_recheck_is_the_interval_less_up_to_a_fifth_stable_for_object_and_moment() {
        let mut o = with_token(60);
        o.recheck_interval = Duration::from_secs(900);
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..200 {
            o.uid = format!("uid-{i}");
            let r = recheck(&o);
            assert!(
                r <= o.recheck_interval && r >= o.recheck_interval.mul_f64(0.8),
                "{r:?}"
            );
            assert_eq!(r, recheck(&o), "stable");
            seen.insert(r.as_secs());
        }
        assert!(seen.len() > 100, "spread over the fifth: {seen:?}");
        o.now += 1;
        let moved = (0..200).any(|i| {
            o.uid = format!("uid-{i}");
            let later = recheck(&o);
            o.now -= 1;
            let earlier = recheck(&o);
            o.now += 1;
            later != earlier
        });
        assert!(moved, "the moment changes the jitter");
    }

    #[test]
    fn problems_that_need_someone_are_looked_at_within_a_minute_whatever_the_recheck() {
        let mut o = observed(Found::CredentialsProblem {
            reason: reason::CREDENTIALS_NOT_FOUND,
            message: "m".to_owned(),
            stored: None,
        });
        o.recheck_interval = Duration::from_secs(3600);
        match decide(&o) {
            Decision::CredentialsProblem { recheck_in, .. } => assert_eq!(recheck_in, SOON),
            other => panic!("{other:?}"),
        }
        o.recheck_interval = Duration::from_secs(10);
        match decide(&o) {
            Decision::CredentialsProblem { recheck_in, .. } => {
                assert_eq!(recheck_in, Duration::from_secs(10))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_fresh_token_is_up_to_date_and_reported_as_valid() {
        let o = with_token(60);
        let Decision::UpToDate {
            report,
            expires_at,
            requeue,
        } = decide(&o)
        else {
            panic!("expected up to date");
        };
        let plan = schedule::plan_for("uid-1", NOW - 60, NOW - 60 + HOUR, 12 * HOUR);
        assert_eq!(expires_at, NOW - 60 + HOUR);
        assert_eq!(
            requeue,
            recheck(&o),
            "the re-check comes before the refresh time"
        );
        assert!(report.ready);
        assert_eq!(report.reason, reason::TOKEN_VALID);
        assert_eq!(
            report.message,
            format!(
                "the Secret holds a valid token until {}",
                rfc3339(expires_at)
            )
        );
        assert_eq!(
            report.times,
            Some(TokenTimes {
                issued_at: NOW - 60,
                expires_at,
                refresh_at: plan.refresh_at,
            })
        );
        assert_eq!(report.subject.as_deref(), Some("app_payments"));
        assert_eq!(report.refreshed_at, None);
    }

    #[test]
    fn up_to_date_keeps_the_words_of_a_ready_condition_and_requeues_at_the_refresh_time() {
        let mut o = with_token(60);
        o.recheck_interval = Duration::from_secs(2 * HOUR as u64);
        let ready = status::ready_condition(None, true, reason::REFRESHED, "fetched", None, 0);
        o.status = Some(M2MTokenStatus {
            conditions: vec![ready],
            ..M2MTokenStatus::default()
        });
        let plan = schedule::plan_for("uid-1", NOW - 60, NOW - 60 + HOUR, 12 * HOUR);
        let Decision::UpToDate {
            report, requeue, ..
        } = decide(&o)
        else {
            panic!("expected up to date");
        };
        assert_eq!(
            (report.reason.as_str(), report.message.as_str()),
            (reason::REFRESHED, "fetched")
        );
        assert_eq!(requeue, Duration::from_secs((plan.refresh_at - NOW) as u64));

        // A Ready=False condition is not kept.
        let not_ready = status::ready_condition(None, false, "http_500", "down", None, 0);
        o.status = Some(M2MTokenStatus {
            conditions: vec![not_ready],
            ..M2MTokenStatus::default()
        });
        let Decision::UpToDate { report, .. } = decide(&o) else {
            panic!("expected up to date");
        };
        assert_eq!(report.reason, reason::TOKEN_VALID);
    }

    #[test]
    fn a_status_read_from_before_our_own_write_keeps_the_refreshed_report() {
        // The reconcile after a refresh reads the M2MToken from before the status write: no
        // status, or the words of the token before; the Secret holds the token just written.
        let o = observed(Found::Inputs(inputs(None)));
        let Decision::Fetch(fetch) = decide(&o) else {
            panic!("expected a fetch");
        };
        let written = fetch.refreshed("header.claims.signature", &claims(NOW - 60, NOW + 3540));
        let older = status::ready_condition(None, true, reason::TOKEN_VALID, "older", None, 0);
        for status in [
            None,
            Some(M2MTokenStatus {
                conditions: vec![older],
                ..M2MTokenStatus::default()
            }),
        ] {
            let mut o = with_token(60);
            o.status = status;
            o.last_report = Some(written.report.clone());
            let Decision::UpToDate { report, .. } = decide(&o) else {
                panic!("expected up to date");
            };
            assert_eq!(report.reason, reason::REFRESHED);
            assert_eq!(report.message, written.message);
            assert_eq!(report.refreshed_at, Some(NOW));
        }

        // A report about another token, or a Ready=False one, does not count.
        let mut o = with_token(60);
        let mut other = written.report.clone();
        other.times = other.times.map(|t| TokenTimes {
            issued_at: NOW - 4000,
            ..t
        });
        o.last_report = Some(other);
        let Decision::UpToDate { report, .. } = decide(&o) else {
            panic!("expected up to date");
        };
        assert_eq!(report.reason, reason::TOKEN_VALID);
        o.last_report = Some(Report::not_ready(reason::CREDENTIALS_NOT_FOUND, "gone"));
        let Decision::UpToDate { report, .. } = decide(&o) else {
            panic!("expected up to date");
        };
        assert_eq!(report.reason, reason::TOKEN_VALID);
    }

    #[test]
    fn a_write_conflict_writes_nothing_and_looks_again_soon() {
        let o = observed(Found::Inputs(inputs(None)));
        let Decision::Fetch(fetch) = decide(&o) else {
            panic!("expected a fetch");
        };
        let changed = fetch.write_conflict(WriteConflict::Changed, "payments");
        assert_eq!(changed.report, None);
        assert_eq!(changed.requeue, Backoff::DEFAULT.base);
        let taken = fetch.write_conflict(WriteConflict::AlreadyExists, "payments");
        let report = taken.report.expect("a SecretConflict status");
        assert!(!report.ready);
        assert_eq!(report.reason, reason::SECRET_CONFLICT);
        assert!(
            report
                .message
                .starts_with("Secret \"payments\" was created by someone else"),
            "{}",
            report.message
        );
        assert_eq!(taken.requeue, Backoff::DEFAULT.base);
    }

    #[test]
    fn an_up_to_date_token_wins_over_a_remembered_failure() {
        let mut o = with_token(60);
        o.failure = Some(failure(3, Duration::from_secs(30)));
        assert!(matches!(decide(&o), Decision::UpToDate { .. }));
    }

    #[test]
    fn no_token_is_fetched() {
        let o = observed(Found::Inputs(inputs(None)));
        assert_eq!(why(decide(&o)), Why::NoToken);
    }

    #[test]
    fn a_due_token_is_fetched() {
        assert_eq!(why(decide(&with_token(3000))), Why::Due);
    }

    #[test]
    fn a_token_past_max_token_age_is_due() {
        let mut o = with_token(3000);
        if let Found::Inputs(i) = &mut o.found {
            i.max_age = HOUR;
            i.stored = Some(stored(NOW - 3000, NOW + 86_400));
        }
        assert_eq!(why(decide(&o)), Why::Due);
    }

    #[test]
    fn changed_inputs_fetch_a_fresh_token_at_once() {
        let mut o = with_token(60);
        o.generation = Some(2);
        assert_eq!(why(decide(&o)), Why::InputsChanged);

        let mut o = with_token(60);
        if let Found::Inputs(i) = &mut o.found {
            i.credentials_version = Some("43".to_owned());
        }
        assert_eq!(why(decide(&o)), Why::InputsChanged);

        // A token written without a credentials version is not taken as changed.
        let mut o = with_token(60);
        if let Found::Inputs(Inputs {
            stored: Some(s), ..
        }) = &mut o.found
        {
            s.credentials_version = None;
        }
        assert!(matches!(decide(&o), Decision::UpToDate { .. }));
    }

    #[test]
    fn a_recent_failure_with_the_same_inputs_backs_off() {
        let wait = Duration::from_millis(1500);
        for mut o in [with_token(3000), observed(Found::Inputs(inputs(None)))] {
            o.failure = Some(failure(2, wait));
            match decide(&o) {
                Decision::BackingOff { wait: w } => assert_eq!(w, wait),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_failure_that_passed_or_had_other_inputs_does_not_hold_a_fetch() {
        let mut o = with_token(3000);
        o.failure = Some(failure(2, Duration::ZERO));
        assert_eq!(why(decide(&o)), Why::Due);

        let mut o = with_token(3000);
        o.failure = Some(Failure {
            generation: Some(0),
            ..failure(2, Duration::from_secs(30))
        });
        assert_eq!(why(decide(&o)), Why::Due);

        let mut o = with_token(3000);
        o.failure = Some(Failure {
            credentials_version: Some("41".to_owned()),
            ..failure(2, Duration::from_secs(30))
        });
        assert_eq!(why(decide(&o)), Why::Due);
    }

    #[test]
    fn a_new_token_is_written_and_reported() {
        let o = observed(Found::Inputs(inputs(None)));
        let Decision::Fetch(fetch) = decide(&o) else {
            panic!("expected a fetch");
        };
        let done = fetch.refreshed("new.token.sig", &claims(NOW, NOW + HOUR));
        let plan = schedule::plan_for("uid-1", NOW, NOW + HOUR, 12 * HOUR);
        assert!(done.write);
        assert_eq!(done.plan, plan);
        assert_eq!(
            done.message,
            format!(
                "token for app_payments issued {} valid until {}",
                rfc3339(NOW),
                rfc3339(NOW + HOUR)
            )
        );
        assert_eq!(done.report.reason, reason::REFRESHED);
        assert_eq!(done.report.message, done.message);
        assert_eq!(done.report.refreshed_at, Some(NOW));
        assert_eq!(done.report.subject.as_deref(), Some("app_payments"));
        assert_eq!(done.report.times.unwrap().refresh_at, plan.refresh_at);
        assert_eq!(done.hold, None);
        assert_eq!(done.requeue, recheck(&o));
    }

    #[test]
    fn a_short_lived_token_is_looked_at_again_at_its_refresh_time() {
        let o = observed(Found::Inputs(inputs(None)));
        let Decision::Fetch(fetch) = decide(&o) else {
            panic!("expected a fetch");
        };
        let done = fetch.refreshed("new.token.sig", &claims(NOW, NOW + 60));
        assert!(done.plan.refresh_at <= NOW + 40, "{:?}", done.plan);
        assert_eq!(
            done.requeue,
            Duration::from_secs((done.plan.refresh_at - NOW) as u64)
        );
    }

    #[test]
    fn the_same_token_for_changed_inputs_is_written_again() {
        let mut o = with_token(60);
        o.generation = Some(2);
        let Decision::Fetch(fetch) = decide(&o) else {
            panic!("expected a fetch");
        };
        let done = fetch.refreshed("header.claims.signature", &claims(NOW - 60, NOW + 3540));
        assert!(done.write);
        assert_eq!(done.hold, None);
    }

    #[test]
    fn the_same_token_again_although_one_was_due_holds_off_until_the_recheck() {
        let o = with_token(3000);
        let Decision::Fetch(fetch) = decide(&o) else {
            panic!("expected a fetch");
        };
        let done = fetch.refreshed("header.claims.signature", &claims(NOW - 3000, NOW + 600));
        assert!(!done.write, "the Secret already holds it");
        assert_eq!(done.hold, Some(failure(0, RECHECK)));
        assert_eq!(done.requeue, RECHECK);
        assert_eq!(done.report.refreshed_at, Some(NOW));
    }

    #[test]
    fn the_same_token_not_yet_due_is_neither_written_nor_held() {
        // The server answers with the stored token, whose own claims put its refresh later.
        let o = with_token(3000);
        let Decision::Fetch(fetch) = decide(&o) else {
            panic!("expected a fetch");
        };
        let done = fetch.refreshed("header.claims.signature", &claims(NOW - 60, NOW + 3540));
        assert!(!done.write);
        assert_eq!(done.hold, None);
        assert_eq!(done.requeue, recheck(&o));
    }

    #[test]
    fn a_transient_failure_backs_off_and_keeps_the_secret() {
        let mut o = with_token(3000);
        o.failure = Some(failure(3, Duration::ZERO));
        let Decision::Fetch(fetch) = decide(&o) else {
            panic!("expected a fetch");
        };
        let err = fetch_error(ErrorClass::Transient, "http_500", None);
        let failed = fetch.failed(&err, || 1.0);
        assert_eq!(failed.delay, Duration::from_secs(8));
        assert_eq!(failed.failure, failure(4, Duration::from_secs(8)));
        assert_eq!(failed.result, RefreshResult::failure);
        assert_eq!(failed.reason, "http_500");
        assert_eq!(failed.event, "RefreshFailed");
        assert_eq!(
            failed.message,
            format!(
                "token endpoint answered http_500; the Secret still holds a token valid until {}; retrying in 8s",
                rfc3339(NOW + 600)
            )
        );
        assert_eq!(
            failed.report,
            Report::not_ready("http_500", &failed.message)
        );
    }

    #[test]
    fn a_retry_never_waits_past_the_stored_token_deadline() {
        let mut o = with_token(HOUR - 5);
        o.failure = Some(failure(30, Duration::ZERO));
        let Decision::Fetch(fetch) = decide(&o) else {
            panic!("expected a fetch");
        };
        let failed = fetch.failed(&fetch_error(ErrorClass::Transient, "timeout", None), || 1.0);
        assert_eq!(failed.delay, Duration::from_secs(5));
    }

    #[test]
    fn retry_after_is_honoured() {
        let o = observed(Found::Inputs(inputs(None)));
        let Decision::Fetch(fetch) = decide(&o) else {
            panic!("expected a fetch");
        };
        let err = fetch_error(ErrorClass::Transient, "http_429", Some(30));
        let failed = fetch.failed(&err, || 0.0);
        assert_eq!(failed.delay, Duration::from_secs(30));
        assert_eq!(failed.failure.attempts, 1);
        assert!(
            failed.message.ends_with("; retrying in 30s"),
            "{}",
            failed.message
        );
    }

    #[test]
    fn a_permanent_failure_retries_at_the_cap_without_drawing_jitter() {
        let o = observed(Found::Inputs(inputs(None)));
        let Decision::Fetch(fetch) = decide(&o) else {
            panic!("expected a fetch");
        };
        let err = fetch_error(ErrorClass::Permanent, "invalid_client", None);
        let failed = fetch.failed(&err, || panic!("no jitter for a permanent failure"));
        assert_eq!(failed.delay, Backoff::DEFAULT.cap);
        assert_eq!(failed.report.reason, "invalid_client");
        assert!(
            failed.message.ends_with("; retrying in 300s"),
            "{}",
            failed.message
        );
        assert!(
            !failed.message.contains("still holds"),
            "no token to speak of"
        );
    }

    #[test]
    fn a_rejected_token_is_reported_with_its_check() {
        let o = with_token(3000);
        let Decision::Fetch(fetch) = decide(&o) else {
            panic!("expected a fetch");
        };
        let err = RefreshError::Rejected(CheckError::Expired { exp: NOW - 1 });
        let failed = fetch.failed(&err, || 0.0);
        assert_eq!(failed.result, RefreshResult::rejected);
        assert_eq!(failed.event, "TokenRejected");
        assert_eq!(failed.reason, "Expired");
        assert_eq!(failed.report.reason, "Expired");
        assert!(
            failed.message.starts_with("token rejected ("),
            "{}",
            failed.message
        );
    }

    #[test]
    fn a_raw_reason_is_cleaned_for_the_condition_only() {
        let o = observed(Found::Inputs(inputs(None)));
        let Decision::Fetch(fetch) = decide(&o) else {
            panic!("expected a fetch");
        };
        let err = fetch_error(ErrorClass::Permanent, "Throttling.User", None);
        let failed = fetch.failed(&err, || 0.0);
        assert_eq!(failed.reason, "Throttling.User");
        assert_eq!(failed.report.reason, "Throttling_User");
    }
}
