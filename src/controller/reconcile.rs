//! Reconciling one M2MToken: read the Secret and the credentials, decide with [`schedule`],
//! fetch and check a token when one is due, write the Secret and the status.
//!
//! A refresh failure never touches the Secret, so a still-valid token keeps serving.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Resource, ResourceExt};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::schedule::{self, Backoff};
use super::secret::{self, MANAGER, StoredToken};
use super::status::{self, TokenTimes, reason};
use crate::crd::{ClientAuthMethod, M2MToken, M2MTokenStatus};
use crate::idaas::{Credential, ErrorClass, IdaasClient, RefreshError, TokenRequest};
use crate::metrics::{Metrics, RefreshResult};

/// Errors that end a reconcile early (the API server could not be reached, ...).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("the M2MToken has no {0}")]
    MissingField(&'static str),
}

impl Error {
    /// A short, stable label for `idaas_projector_reconcile_errors_total{error}`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(_)) => "kube_api",
            Error::Kube(_) => "kube_client",
            Error::MissingField(_) => "missing_field",
        }
    }
}

/// Failure bookkeeping of one object, for its backoff.
#[derive(Debug, Clone)]
struct Failure {
    attempts: u32,
    retry_at: Instant,
    generation: Option<i64>,
    credentials_version: Option<String>,
}

/// Everything a reconcile needs; shared by all reconciles.
pub struct Context {
    pub client: kube::Client,
    pub idaas: IdaasClient,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    /// Bounds concurrent calls to IDaaS.
    pub refreshes: Arc<Semaphore>,
    /// How often a fresh token's credentials Secret is looked at again.
    pub recheck_interval: Duration,
    /// Wall clock in Unix seconds (tests set it).
    pub now: fn() -> i64,
    /// Waits after failures: 1 s doubling to 5 minutes (drills shorten it).
    pub backoff: Backoff,
    failures: Mutex<HashMap<String, Failure>>,
    /// Consecutive Kubernetes API errors per object, for `error_policy`'s backoff.
    api_errors: Mutex<HashMap<String, u32>>,
    /// The M2MTokens with an expiry gauge, so that deleted ones can be forgotten.
    known: Mutex<std::collections::HashSet<(String, String)>>,
}

impl Context {
    pub fn new(
        client: kube::Client,
        idaas: IdaasClient,
        metrics: Arc<Metrics>,
        recorder: Recorder,
        max_concurrent_refreshes: usize,
        recheck_interval: Duration,
    ) -> Self {
        Self {
            client,
            idaas,
            metrics,
            recorder,
            refreshes: Arc::new(Semaphore::new(max_concurrent_refreshes.max(1))),
            recheck_interval,
            now: unix_now,
            backoff: Backoff::DEFAULT,
            failures: Mutex::new(HashMap::new()),
            api_errors: Mutex::new(HashMap::new()),
            known: Mutex::new(std::collections::HashSet::new()),
        }
    }

    fn token_expiry(&self, namespace: &str, name: &str, exp: i64) {
        self.metrics.token_expiry(namespace, name, exp);
        if let Ok(mut known) = self.known.lock() {
            known.insert((namespace.to_owned(), name.to_owned()));
        }
    }

    /// Forgets the expiry gauges of M2MTokens for which `exists` says no (deleted ones).
    pub fn forget_deleted(&self, exists: impl Fn(&str, &str) -> bool) {
        if let Ok(mut known) = self.known.lock() {
            known.retain(|(ns, name)| {
                let keep = exists(ns, name);
                if !keep {
                    self.metrics.forget_token(ns, name);
                }
                keep
            });
        }
    }

    fn clear_api_errors(&self, key: &str) {
        if let Ok(mut m) = self.api_errors.lock() {
            m.remove(key);
        }
    }

    fn failure(&self, key: &str) -> Option<Failure> {
        self.failures.lock().ok()?.get(key).cloned()
    }

    fn set_failure(&self, key: &str, failure: Option<Failure>) {
        if let Ok(mut map) = self.failures.lock() {
            match failure {
                Some(f) => map.insert(key.to_owned(), f),
                None => map.remove(key),
            };
        }
    }
}

pub use crate::time::unix_now;

/// Parses `maxTokenAge` (1h..168h).
pub fn parse_max_token_age(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|_| format!("maxTokenAge {s:?} is not a duration such as 12h"))?;
    if d < Duration::from_secs(3600) || d > Duration::from_secs(168 * 3600) {
        return Err(format!("maxTokenAge {s:?} must be between 1h and 168h"));
    }
    Ok(d)
}

fn secs_until(now: i64, at: i64) -> Duration {
    Duration::from_secs(at.saturating_sub(now).max(1) as u64)
}

/// What the credentials Secret yields.
enum Credentials {
    Ok {
        credential: Credential,
        version: Option<String>,
    },
    Problem {
        reason: &'static str,
        message: String,
    },
}

fn credentials(token: &M2MToken, secret: Option<Secret>) -> Credentials {
    let r = &token.spec.client_auth.secret_ref;
    let Some(secret) = secret else {
        return Credentials::Problem {
            reason: reason::CREDENTIALS_NOT_FOUND,
            message: format!(
                "credentials Secret {:?} not found in namespace {:?}",
                r.name,
                token.namespace().unwrap_or_default()
            ),
        };
    };
    let value = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&r.key))
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    let Some(value) = value else {
        return Credentials::Problem {
            reason: reason::CREDENTIALS_KEY_MISSING,
            message: format!(
                "credentials Secret {:?} has no non-empty key {:?}",
                r.name, r.key
            ),
        };
    };
    let value = SecretString::from(value);
    let credential = match token.spec.client_auth.method {
        ClientAuthMethod::ClientSecretPost => Credential::ClientSecretPost {
            client_secret: value,
        },
        ClientAuthMethod::ClientSecretBasic => Credential::ClientSecretBasic {
            client_secret: value,
        },
        ClientAuthMethod::PrivateKeyJwt => Credential::PrivateKeyJwt {
            private_key_pem: value,
        },
    };
    Credentials::Ok {
        credential,
        version: secret.metadata.resource_version,
    }
}

fn key_of(token: &M2MToken) -> String {
    format!(
        "{}/{}",
        token.namespace().unwrap_or_default(),
        token.name_any()
    )
}

async fn patch_status(
    api: &Api<M2MToken>,
    token: &M2MToken,
    new: M2MTokenStatus,
) -> Result<(), Error> {
    if token.status.as_ref() == Some(&new) {
        return Ok(());
    }
    api.patch_status(
        &token.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": new })),
    )
    .await?;
    Ok(())
}

/// Sets Ready=False with a reason and message; nothing else in the status changes.
async fn set_not_ready(
    api: &Api<M2MToken>,
    token: &M2MToken,
    reason: &str,
    message: &str,
    now: i64,
) -> Result<(), Error> {
    let current = token.status.as_ref();
    let cond = status::ready_condition(
        current,
        false,
        reason,
        message,
        token.metadata.generation,
        now,
    );
    patch_status(api, token, status::build(token, cond, None, None, None)).await
}

async fn publish(ctx: &Context, token: &M2MToken, type_: EventType, reason: &str, note: String) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: "Refresh".to_owned(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &token.object_ref(&())).await {
        tracing::debug!(error = %e, "cannot publish event");
    }
}

/// Reconciles one M2MToken.
pub async fn reconcile(token: Arc<M2MToken>, ctx: Arc<Context>) -> Result<Action, Error> {
    let action = reconcile_inner(&token, &ctx).await?;
    ctx.clear_api_errors(&key_of(&token));
    Ok(action)
}

async fn reconcile_inner(token: &Arc<M2MToken>, ctx: &Arc<Context>) -> Result<Action, Error> {
    let token = token.clone();
    let ctx = ctx.clone();
    let namespace = token.namespace().ok_or(Error::MissingField("namespace"))?;
    let name = token.name_any();
    let key = key_of(&token);
    let now = (ctx.now)();
    let tokens: Api<M2MToken> = Api::namespaced(ctx.client.clone(), &namespace);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let generation = token.metadata.generation;
    let current = token.status.as_ref();

    let max_age = match parse_max_token_age(&token.spec.max_token_age) {
        Ok(d) => d.as_secs() as i64,
        Err(message) => {
            set_not_ready(&tokens, &token, reason::INVALID_SPEC, &message, now).await?;
            return Ok(Action::await_change());
        }
    };

    // The managed Secret, if any, must be ours.
    let secret_name = token.secret_name();
    let existing = secrets.get_opt(&secret_name).await?;
    if let Some(s) = &existing
        && !secret::is_managed_by(s, &token)
    {
        let message = format!(
            "Secret {secret_name:?} exists and is not managed by this M2MToken; set spec.secretName to another name or delete that Secret"
        );
        set_not_ready(&tokens, &token, reason::SECRET_CONFLICT, &message, now).await?;
        return Ok(Action::requeue(ctx.backoff.cap));
    }
    let stored: Option<StoredToken> = existing.as_ref().and_then(secret::read);
    let plan_of = |s: &StoredToken| {
        let seed = format!("{}/{}", token.uid().unwrap_or_default(), s.iat);
        schedule::plan(s.iat, s.exp, max_age, schedule::stable_jitter(&seed))
    };
    let valid_note = |s: &StoredToken| {
        if s.exp > now {
            format!(
                "; the Secret still holds a token valid until {}",
                secret::rfc3339(s.exp)
            )
        } else {
            String::new()
        }
    };

    // The credentials.
    let creds_secret = secrets
        .get_opt(&token.spec.client_auth.secret_ref.name)
        .await?;
    let (credential, credentials_version) = match credentials(&token, creds_secret) {
        Credentials::Ok {
            credential,
            version,
        } => (credential, version),
        Credentials::Problem { reason, message } => {
            let message = format!(
                "{message}{}",
                stored.as_ref().map(valid_note).unwrap_or_default()
            );
            set_not_ready(&tokens, &token, reason, &message, now).await?;
            return Ok(Action::requeue(ctx.recheck_interval));
        }
    };

    // Is a refresh due?
    let changed_input = |s: &StoredToken| {
        s.generation != generation
            || (s.credentials_version.is_some() && s.credentials_version != credentials_version)
    };
    if let Some(s) = &stored {
        let plan = plan_of(s);
        if now < plan.refresh_at && !changed_input(s) {
            ctx.set_failure(&key, None);
            let keep = current
                .and_then(|c| c.conditions.iter().find(|c| c.type_ == status::READY))
                .filter(|c| c.status == "True");
            let cond = match keep {
                Some(c) => {
                    status::ready_condition(current, true, &c.reason, &c.message, generation, now)
                }
                None => status::ready_condition(
                    current,
                    true,
                    reason::TOKEN_VALID,
                    &format!(
                        "the Secret holds a valid token until {}",
                        secret::rfc3339(s.exp)
                    ),
                    generation,
                    now,
                ),
            };
            let times = TokenTimes {
                issued_at: s.iat,
                expires_at: s.exp,
                refresh_at: plan.refresh_at,
            };
            ctx.token_expiry(&namespace, &name, s.exp);
            patch_status(
                &tokens,
                &token,
                status::build(&token, cond, Some(times), s.sub.clone(), None),
            )
            .await?;
            return Ok(Action::requeue(
                secs_until(now, plan.refresh_at).min(ctx.recheck_interval),
            ));
        }
    }

    // Still backing off from an earlier failure with the same inputs?
    if let Some(f) = ctx.failure(&key)
        && f.generation == generation
        && f.credentials_version == credentials_version
        && Instant::now() < f.retry_at
    {
        return Ok(Action::requeue(f.retry_at - Instant::now()));
    }

    // Fetch.
    let request = TokenRequest {
        issuer: token.spec.issuer.clone(),
        token_endpoint: token.spec.token_endpoint.clone().filter(|s| !s.is_empty()),
        jwks_uri: token.spec.jwks_uri.clone().filter(|s| !s.is_empty()),
        audience: token.spec.audience.clone(),
        scopes: token.spec.scopes.clone(),
        client_id: token.spec.client_id.clone(),
        credential,
        max_token_age: Duration::from_secs(max_age as u64),
    };
    let result = {
        let _permit = ctx.refreshes.acquire().await;
        let started = std::time::Instant::now();
        let result = ctx.idaas.fetch_token(&request, (ctx.now)()).await;
        ctx.metrics
            .idaas_request_duration
            .observe(started.elapsed().as_secs_f64());
        result
    };

    match result {
        Ok(fetched) => {
            ctx.set_failure(&key, None);
            let claims = &fetched.claims;
            let raw = fetched.token.expose_secret();
            let plan = schedule::plan(
                claims.iat,
                claims.exp,
                max_age,
                schedule::stable_jitter(&format!(
                    "{}/{}",
                    token.uid().unwrap_or_default(),
                    claims.iat
                )),
            );
            // Written when the token, or what it was fetched for, changed.
            let unchanged = stored
                .as_ref()
                .is_some_and(|s| s.token == raw && !changed_input(s));
            if !unchanged {
                let body = secret::desired(
                    &token,
                    &secret_name,
                    raw,
                    claims.iat,
                    claims.exp,
                    credentials_version.as_deref(),
                );
                secrets
                    .patch(
                        &secret_name,
                        &PatchParams::apply(MANAGER).force(),
                        &Patch::Apply(body),
                    )
                    .await?;
                ctx.metrics.secret_writes.inc();
            }
            ctx.metrics.refresh(RefreshResult::success, "Refreshed");
            ctx.token_expiry(&namespace, &name, claims.exp);
            let message = format!(
                "token for {} issued {} valid until {}",
                claims.sub.as_deref().unwrap_or("?"),
                secret::rfc3339(claims.iat),
                secret::rfc3339(plan.deadline)
            );
            tracing::info!(namespace = %namespace, m2mtoken = %name, iat = claims.iat, exp = claims.exp,
                refresh_at = plan.refresh_at, written = !unchanged, "token refreshed");
            publish(
                &ctx,
                &token,
                EventType::Normal,
                "Refreshed",
                message.clone(),
            )
            .await;
            let cond = status::ready_condition(
                current,
                true,
                reason::REFRESHED,
                &message,
                generation,
                now,
            );
            let times = TokenTimes {
                issued_at: claims.iat,
                expires_at: claims.exp,
                refresh_at: plan.refresh_at,
            };
            patch_status(
                &tokens,
                &token,
                status::build(&token, cond, Some(times), claims.sub.clone(), Some(now)),
            )
            .await?;
            // The same token again although one was due (a caching server): look again after the
            // re-check interval, and let no watch event (our own status patch) fetch sooner.
            let next = if unchanged && now >= plan.refresh_at {
                ctx.set_failure(
                    &key,
                    Some(Failure {
                        attempts: 0,
                        retry_at: Instant::now() + ctx.recheck_interval,
                        generation,
                        credentials_version: credentials_version.clone(),
                    }),
                );
                ctx.recheck_interval
            } else {
                secs_until(now, plan.refresh_at).min(ctx.recheck_interval)
            };
            Ok(Action::requeue(next))
        }
        Err(err) => {
            let attempts = ctx.failure(&key).map_or(0, |f| f.attempts);
            let (reason, result, retry_after, permanent, event) = match &err {
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
            let deadline = stored.as_ref().map(|s| plan_of(s).deadline);
            let delay = if permanent {
                ctx.backoff.cap
            } else {
                ctx.backoff
                    .retry_delay(attempts, fastrand::f64(), retry_after, now, deadline)
            };
            ctx.set_failure(
                &key,
                Some(Failure {
                    attempts: attempts.saturating_add(1),
                    retry_at: Instant::now() + delay,
                    generation,
                    credentials_version: credentials_version.clone(),
                }),
            );
            ctx.metrics.refresh(result, &reason);
            let message = format!(
                "{err}{}; retrying in {}s",
                stored.as_ref().map(valid_note).unwrap_or_default(),
                delay.as_secs().max(1)
            );
            tracing::warn!(namespace = %namespace, m2mtoken = %name, reason = %reason, error = %err,
                retry_in = ?delay, "token refresh failed");
            publish(&ctx, &token, EventType::Warning, event, message.clone()).await;
            let condition_reason = condition_reason(&reason);
            set_not_ready(&tokens, &token, &condition_reason, &message, now).await?;
            Ok(Action::requeue(delay))
        }
    }
}

/// Condition reasons must match `^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$`.
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

/// Unexpected errors (the API server): count and retry with backoff, 1 s doubling to 5 minutes.
pub fn error_policy(token: Arc<M2MToken>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_error(error.metric_label());
    let key = key_of(&token);
    let attempts = ctx
        .api_errors
        .lock()
        .map(|mut m| {
            let n = m.entry(key.clone()).or_insert(0);
            *n = n.saturating_add(1);
            *n - 1
        })
        .unwrap_or(0);
    let delay = ctx.backoff.delay(attempts, fastrand::f64(), None);
    tracing::warn!(m2mtoken = %key, error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}
