//! Reconciling one M2MToken: read what [`decide`] needs (the spec, the managed Secret, the
//! credentials), ask it what to do, and carry that out: fetch and check a token, write the Secret,
//! the status and an event, remember a failure, requeue.
//!
//! A refresh failure never touches the Secret, so a still-valid token keeps serving.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Resource, ResourceExt};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::decide::{
    self, Decision, Failure, Fetch, Found, Inputs, Observed, WriteConflict, decide,
};
use super::leader::WriteGate;
use super::schedule::Backoff;
use super::secret::{self, ALLOWED_M2M_TOKENS, CLIENT_CREDENTIALS_LABEL, MANAGER};
use super::status::{self, Report, reason};
use crate::crd::{ClientAuth, ClientAuthMethod, M2MToken, SecretKeyRef};
use crate::idaas::{Assertion, Credential, FetchedToken, IdaasClient, RefreshError, TokenRequest};
use crate::metrics::{Metrics, RefreshResult};

/// Errors that end a reconcile early (the API server could not be reached, ...).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("the M2MToken has no {0}")]
    MissingField(&'static str),
    #[error("not writing: this replica's hold on the Lease is not confirmed")]
    NotLeader,
}

impl Error {
    /// A short, stable label for `idaas_projector_reconcile_errors_total{error}`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(_)) => "kube_api",
            Error::Kube(_) => "kube_client",
            Error::MissingField(_) => "missing_field",
            Error::NotLeader => "not_leader",
        }
    }
}

/// Failure bookkeeping of one object, for its backoff: a [`Failure`] with its retry time on the
/// monotonic clock.
#[derive(Debug, Clone)]
struct FailureEntry {
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
    /// Publishes Warning events, folding repeats of the same one into a series. See
    /// [`Context::recorder`].
    recorder: Recorder,
    /// Who publishes the events.
    reporter: Reporter,
    /// Bounds concurrent calls to IDaaS.
    pub refreshes: Arc<Semaphore>,
    /// How often the managed Secret of a fresh token is looked at again, less up to a fifth
    /// ([`decide::recheck`]).
    pub recheck_interval: Duration,
    /// Wall clock in Unix seconds (tests set it).
    pub now: fn() -> i64,
    /// Waits after failures: 1 s doubling to 5 minutes (drills shorten it).
    pub backoff: Backoff,
    failures: Mutex<HashMap<String, FailureEntry>>,
    /// Consecutive Kubernetes API errors per object, for `error_policy`'s backoff.
    api_errors: Mutex<HashMap<String, u32>>,
    /// The M2MTokens with an expiry gauge, so that deleted ones can be forgotten.
    known: Mutex<std::collections::HashSet<(String, String)>>,
    /// The last report each M2MToken's status was given by this replica.
    reports: Mutex<HashMap<String, Report>>,
    /// Every write (Secret, status, event) checks it first; open without leader election.
    pub gate: WriteGate,
}

impl Context {
    pub fn new(
        client: kube::Client,
        idaas: IdaasClient,
        metrics: Arc<Metrics>,
        reporter: Reporter,
        max_concurrent_refreshes: usize,
        recheck_interval: Duration,
    ) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), reporter.clone()),
            reporter,
            client,
            idaas,
            metrics,
            refreshes: Arc::new(Semaphore::new(max_concurrent_refreshes.max(1))),
            recheck_interval,
            now: crate::time::unix_now,
            backoff: Backoff::DEFAULT,
            failures: Mutex::new(HashMap::new()),
            api_errors: Mutex::new(HashMap::new()),
            known: Mutex::new(std::collections::HashSet::new()),
            reports: Mutex::new(HashMap::new()),
            gate: WriteGate::Open,
        }
    }

    /// The recorder to publish an event with. `fold`: the shared recorder, which folds repeats of
    /// the same event (a failing refresh retried every few seconds) into one Event with a count,
    /// and keeps each Event it published 6 minutes for that (until the next publish, in fact).
    /// Else a recorder that keeps nothing, for events that are not repeated within minutes
    /// (`Refreshed`, once per refresh; the sweep's, once per pod and state): through the shared
    /// one they would keep one Event, about 4 KiB, per M2MToken or pod.
    pub fn recorder(&self, fold: bool) -> Recorder {
        if fold {
            self.recorder.clone()
        } else {
            Recorder::new(self.client.clone(), self.reporter.clone())
        }
    }

    /// Whether this replica may write now: [`Error::NotLeader`] when its hold on the Lease is not
    /// confirmed.
    pub fn may_write(&self) -> Result<(), Error> {
        self.gate.is_open().then_some(()).ok_or(Error::NotLeader)
    }

    fn token_expiry(&self, namespace: &str, name: &str, exp: i64) {
        self.metrics.token_expiry(namespace, name, exp);
        if let Ok(mut known) = self.known.lock() {
            known.insert((namespace.to_owned(), name.to_owned()));
        }
    }

    /// Forgets what is kept about the M2MTokens for which `exists` says no (deleted ones): their
    /// expiry gauges, failure records, API error counts and last reports.
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
        forget_keys(&self.failures, &exists);
        forget_keys(&self.api_errors, &exists);
        forget_keys(&self.reports, &exists);
    }

    fn last_report(&self, key: &str) -> Option<Report> {
        self.reports.lock().ok()?.get(key).cloned()
    }

    fn remember_report(&self, key: &str, report: &Report) {
        if let Ok(mut m) = self.reports.lock() {
            m.insert(key.to_owned(), report.clone());
        }
    }

    fn clear_api_errors(&self, key: &str) {
        if let Ok(mut m) = self.api_errors.lock() {
            m.remove(key);
        }
    }

    /// The failure remembered for `key`, with the time left until its retry.
    fn failure(&self, key: &str) -> Option<Failure> {
        let entry = self.failures.lock().ok()?.get(key).cloned()?;
        Some(Failure {
            attempts: entry.attempts,
            retry_in: entry.retry_at.saturating_duration_since(Instant::now()),
            generation: entry.generation,
            credentials_version: entry.credentials_version,
        })
    }

    /// Remembers a failure for `key` (its retry counted from now), or forgets it.
    fn set_failure(&self, key: &str, failure: Option<&Failure>) {
        if let Ok(mut map) = self.failures.lock() {
            match failure {
                Some(f) => map.insert(
                    key.to_owned(),
                    FailureEntry {
                        attempts: f.attempts,
                        retry_at: Instant::now() + f.retry_in,
                        generation: f.generation,
                        credentials_version: f.credentials_version.clone(),
                    },
                ),
                None => map.remove(key),
            };
        }
    }
}

/// Drops the entries of a map keyed `namespace/name` for which `exists` says no.
fn forget_keys<V>(map: &Mutex<HashMap<String, V>>, exists: &impl Fn(&str, &str) -> bool) {
    if let Ok(mut m) = map.lock() {
        m.retain(|key, _| {
            key.split_once('/')
                .is_none_or(|(ns, name)| exists(ns, name))
        });
    }
}

/// Parses `maxTokenAge` (1h..168h).
pub fn parse_max_token_age(s: &str) -> Result<Duration, String> {
    let d = crate::time::parse_duration(s)
        .map_err(|_| format!("maxTokenAge {s:?} is not a duration such as 12h"))?;
    if d < Duration::from_secs(3600) || d > Duration::from_secs(168 * 3600) {
        return Err(format!("maxTokenAge {s:?} must be between 1h and 168h"));
    }
    Ok(d)
}

/// The credential in the credentials Secret, with that Secret's `resourceVersion`; or why there is
/// none (a condition reason and a message). The value is looked at only once the Secret has
/// opted in ([`decide::credentials_allowed`]).
fn credentials(
    token: &M2MToken,
    r: &SecretKeyRef,
    secret: Option<Secret>,
) -> Result<(Credential, Option<String>), (&'static str, String)> {
    let Some(secret) = secret else {
        return Err((
            reason::CREDENTIALS_NOT_FOUND,
            format!(
                "credentials Secret {:?} not found in namespace {:?}",
                r.name,
                token.namespace().unwrap_or_default()
            ),
        ));
    };
    let meta = &secret.metadata;
    let label = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(CLIENT_CREDENTIALS_LABEL));
    let allowed = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(ALLOWED_M2M_TOKENS));
    decide::credentials_allowed(
        &r.name,
        label.map(String::as_str),
        allowed.map(String::as_str),
        &token.name_any(),
    )
    .map_err(|message| (reason::CREDENTIALS_NOT_ALLOWED, message))?;
    let value = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&r.key))
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    let Some(value) = value else {
        return Err((
            reason::CREDENTIALS_KEY_MISSING,
            format!(
                "credentials Secret {:?} has no non-empty key {:?}",
                r.name, r.key
            ),
        ));
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
        ClientAuthMethod::FederatedOidc => {
            return Err((
                reason::INVALID_SPEC,
                "federated_oidc takes no credentials Secret".to_owned(),
            ));
        }
    };
    Ok((credential, secret.metadata.resource_version))
}

/// How an M2MToken authenticates: a credentials Secret, or a federated credential (whose
/// assertion is requested when a fetch is due).
enum AuthShape<'a> {
    Secret(&'a SecretKeyRef),
    Federated(Credential),
}

/// Checks the fields each method needs (the CRD's rules say the same; this also covers an API
/// server that does not enforce them).
fn client_auth_shape(auth: &ClientAuth) -> Result<AuthShape<'_>, String> {
    match (auth.method, &auth.secret_ref) {
        (ClientAuthMethod::FederatedOidc, Some(_)) => Err(
            "spec.clientAuth.secretRef is not allowed with federated_oidc (no secret at all)"
                .to_owned(),
        ),
        (ClientAuthMethod::FederatedOidc, None) => {
            let name = auth
                .federated_credential_name
                .clone()
                .filter(|n| !n.trim().is_empty())
                .ok_or("federated_oidc needs spec.clientAuth.federatedCredentialName")?;
            if auth.service_account.is_none() {
                return Err("federated_oidc needs spec.clientAuth.serviceAccount".to_owned());
            }
            Ok(AuthShape::Federated(Credential::FederatedOidc {
                credential_name: name,
                assertion: Assertion::Token(SecretString::from(String::new())),
            }))
        }
        (_, _) if auth.federated_credential_name.is_some() || auth.service_account.is_some() => {
            Err("spec.clientAuth.federatedCredentialName and serviceAccount are taken by federated_oidc only".to_owned())
        }
        (_, Some(secret_ref)) => Ok(AuthShape::Secret(secret_ref)),
        (_, None) => Err("spec.clientAuth.secretRef is required with this method".to_owned()),
    }
}

fn key_of(token: &M2MToken) -> String {
    format!(
        "{}/{}",
        token.namespace().unwrap_or_default(),
        token.name_any()
    )
}

/// Reconciles one M2MToken.
pub async fn reconcile(token: Arc<M2MToken>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.may_write()?;
    let run = Run::new(&token, &ctx)?;
    let mut observed = run.observe().await?;
    if decide::needs_credentials(&observed) {
        observed.found = run.read_credentials(observed.found).await?;
    }
    let action = run.carry_out(decide(&observed)).await?;
    ctx.clear_api_errors(&run.key);
    Ok(action)
}

/// One reconcile of one M2MToken: what it acts on, and where.
struct Run<'a> {
    ctx: &'a Context,
    token: &'a M2MToken,
    namespace: String,
    name: String,
    /// `namespace/name`, the key of the failure bookkeeping.
    key: String,
    secret_name: String,
    /// The wall clock when the reconcile started.
    now: i64,
    tokens: Api<M2MToken>,
    secrets: Api<Secret>,
}

impl<'a> Run<'a> {
    fn new(token: &'a M2MToken, ctx: &'a Context) -> Result<Self, Error> {
        let namespace = token.namespace().ok_or(Error::MissingField("namespace"))?;
        Ok(Run {
            ctx,
            token,
            name: token.name_any(),
            key: key_of(token),
            secret_name: token.secret_name(),
            now: (ctx.now)(),
            tokens: Api::namespaced(ctx.client.clone(), &namespace),
            secrets: Api::namespaced(ctx.client.clone(), &namespace),
            namespace,
        })
    }

    /// Everything [`decide`] looks at.
    async fn observe(&self) -> Result<Observed, Error> {
        let found = self.find().await?;
        Ok(Observed {
            now: self.now,
            generation: self.token.metadata.generation,
            uid: self.token.uid().unwrap_or_default(),
            status: self.token.status.clone(),
            last_report: self.ctx.last_report(&self.key),
            failure: self.ctx.failure(&self.key),
            recheck_interval: self.ctx.recheck_interval,
            backoff: self.ctx.backoff,
            found,
        })
    }

    /// Reads the spec, then the managed Secret, then the credentials Secret, stopping at the
    /// first finding that settles the reconcile.
    async fn find(&self) -> Result<Found, Error> {
        let max_age = match parse_max_token_age(&self.token.spec.max_token_age) {
            Ok(d) => d.as_secs() as i64,
            Err(message) => return Ok(Found::InvalidSpec { message }),
        };
        let spec = &self.token.spec;
        if let Err(e) = self.ctx.idaas.check_allowed(
            &spec.issuer,
            spec.token_endpoint.as_deref(),
            spec.jwks_uri.as_deref(),
        ) {
            let (reason, message) = (e.reason, e.message);
            return Ok(Found::NotAllowed { reason, message });
        }
        let existing = self.secrets.get_opt(&self.secret_name).await?;
        if let Some(s) = &existing
            && !secret::is_managed_by(s, self.token)
        {
            let secret_name = self.secret_name.clone();
            return Ok(Found::ForeignSecret { secret_name });
        }
        let stored = existing.as_ref().and_then(secret::read);
        let managed_version = existing.and_then(|s| s.metadata.resource_version);
        let credential = match client_auth_shape(&self.token.spec.client_auth) {
            // No secret to read: the ServiceAccount token is requested when a fetch is due.
            Ok(AuthShape::Federated(credential)) => Some(credential),
            // Read when a token is to be fetched ([`Run::read_credentials`]).
            Ok(AuthShape::Secret(_)) => None,
            Err(message) => return Ok(Found::InvalidSpec { message }),
        };
        Ok(Found::Inputs(Inputs {
            max_age,
            stored,
            credential,
            credentials_version: None,
            managed_version,
        }))
    }

    /// Reads the credentials Secret into what `found` (inputs without a credential) lacks.
    async fn read_credentials(&self, found: Found) -> Result<Found, Error> {
        let (Found::Inputs(inputs), Ok(AuthShape::Secret(secret_ref))) =
            (found, client_auth_shape(&self.token.spec.client_auth))
        else {
            return Err(Error::MissingField("spec.clientAuth.secretRef"));
        };
        let creds_secret = self.secrets.get_opt(&secret_ref.name).await?;
        Ok(match credentials(self.token, secret_ref, creds_secret) {
            Ok((credential, credentials_version)) => Found::Inputs(Inputs {
                credential: Some(credential),
                credentials_version,
                ..inputs
            }),
            Err((reason, message)) => Found::CredentialsProblem {
                reason,
                message,
                stored: inputs.stored,
            },
        })
    }

    /// Does what `decision` says: the status, the failure bookkeeping, a fetch and what follows
    /// it; and when to look again.
    async fn carry_out(&self, decision: Decision<'_>) -> Result<Action, Error> {
        match decision {
            Decision::InvalidSpec { message } => {
                self.report(&Report::not_ready(reason::INVALID_SPEC, &message))
                    .await?;
                Ok(Action::await_change())
            }
            Decision::NotAllowed { reason, message } => {
                self.report(&Report::not_ready(&reason, &message)).await?;
                Ok(Action::await_change())
            }
            Decision::SecretConflict { message, retry_in } => {
                self.report(&Report::not_ready(reason::SECRET_CONFLICT, &message))
                    .await?;
                Ok(Action::requeue(retry_in))
            }
            Decision::CredentialsProblem {
                reason,
                message,
                recheck_in,
            } => {
                self.report(&Report::not_ready(reason, &message)).await?;
                Ok(Action::requeue(recheck_in))
            }
            Decision::UpToDate {
                report,
                expires_at,
                requeue,
            } => {
                self.ctx.set_failure(&self.key, None);
                self.ctx
                    .token_expiry(&self.namespace, &self.name, expires_at);
                self.report(&report).await?;
                Ok(Action::requeue(requeue))
            }
            Decision::BackingOff { wait } => Ok(Action::requeue(wait)),
            // `reconcile` reads the credentials before deciding when they are needed; only an
            // M2MToken without a credentials Secret to read could get here, as in
            // `read_credentials`.
            Decision::ReadCredentials => Err(Error::MissingField("spec.clientAuth.secretRef")),
            Decision::Fetch(fetch) => match self.fetch(&fetch).await {
                Ok(fetched) => self.refreshed(&fetch, &fetched).await,
                Err(err) => self.failed(&fetch, &err).await,
            },
        }
    }

    /// Fetches and checks a token, within the bound on concurrent calls to IDaaS.
    async fn fetch(&self, fetch: &Fetch<'_>) -> Result<FetchedToken, RefreshError> {
        let spec = &self.token.spec;
        // One permit covers the whole refresh, the TokenRequest included.
        let _permit = self.ctx.refreshes.acquire().await;
        let credential = match (fetch.credential, &spec.client_auth.service_account) {
            (
                Credential::FederatedOidc {
                    credential_name, ..
                },
                Some(sa),
            ) => {
                let token =
                    super::assertion::service_account_token(&self.ctx.client, &self.namespace, sa)
                        .await
                        .map_err(RefreshError::Fetch)?;
                Credential::FederatedOidc {
                    credential_name: credential_name.clone(),
                    assertion: Assertion::Token(token),
                }
            }
            (credential, _) => credential.clone(),
        };
        let request = TokenRequest {
            issuer: spec.issuer.clone(),
            token_endpoint: spec.token_endpoint.clone().filter(|s| !s.is_empty()),
            jwks_uri: spec.jwks_uri.clone().filter(|s| !s.is_empty()),
            audience: spec.audience.clone(),
            scopes: spec.scopes.clone(),
            client_id: spec.client_id.clone(),
            credential,
            max_token_age: Duration::from_secs(fetch.inputs.max_age as u64),
        };
        let started = std::time::Instant::now();
        let result = self.ctx.idaas.fetch_token(&request, (self.ctx.now)()).await;
        self.ctx
            .metrics
            .idaas_request_duration
            .observe(started.elapsed().as_secs_f64());
        result
    }

    /// A checked token: write the Secret if it changed, then the event and the status.
    async fn refreshed(&self, fetch: &Fetch<'_>, fetched: &FetchedToken) -> Result<Action, Error> {
        let ctx = self.ctx;
        ctx.set_failure(&self.key, None);
        let (raw, claims) = (fetched.token.expose_secret(), &fetched.claims);
        let done = fetch.refreshed(raw, claims);
        if done.write {
            let body = secret::desired(
                self.token,
                &self.secret_name,
                raw,
                claims.iat,
                claims.exp,
                fetch.inputs.credentials_version.as_deref(),
                fetch.inputs.managed_version.as_deref(),
            );
            if let Some(conflict) = self.write_secret(&body).await? {
                return self.conflicted(fetch, conflict).await;
            }
            ctx.metrics.secret_writes.inc();
        }
        ctx.metrics.refresh(RefreshResult::success, "Refreshed");
        ctx.token_expiry(&self.namespace, &self.name, claims.exp);
        tracing::info!(namespace = %self.namespace, m2mtoken = %self.name, iat = claims.iat,
            exp = claims.exp, refresh_at = done.plan.refresh_at, written = done.write,
            "token refreshed");
        self.publish(EventType::Normal, "Refreshed", done.message)
            .await;
        self.report(&done.report).await?;
        if let Some(hold) = &done.hold {
            ctx.set_failure(&self.key, Some(hold));
        }
        Ok(Action::requeue(done.requeue))
    }

    /// Writes the managed Secret: a plain create when the read found none (so a Secret someone
    /// else made since is never taken over), else server-side apply with the `resourceVersion`
    /// read as its precondition (the API server refuses the write with 409 when the Secret
    /// changed since). A 409 comes back as the conflict it means: nothing was written.
    async fn write_secret(&self, body: &Secret) -> Result<Option<WriteConflict>, Error> {
        self.ctx.may_write()?;
        let created = body.metadata.resource_version.is_none();
        let result = if created {
            let params = PostParams {
                dry_run: false,
                field_manager: Some(MANAGER.to_owned()),
            };
            self.secrets.create(&params, body).await.map(drop)
        } else {
            let apply = PatchParams::apply(MANAGER).force();
            self.secrets
                .patch(&self.secret_name, &apply, &Patch::Apply(body))
                .await
                .map(drop)
        };
        match result {
            Ok(()) => Ok(None),
            Err(kube::Error::Api(status)) if status.is_conflict() || status.is_already_exists() => {
                Ok(Some(if created {
                    WriteConflict::AlreadyExists
                } else {
                    WriteConflict::Changed
                }))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The Secret was not written (`conflict`): nothing else is written but, for a Secret
    /// someone else created, the status; the next look reads the Secret again soon.
    async fn conflicted(
        &self,
        fetch: &Fetch<'_>,
        conflict: WriteConflict,
    ) -> Result<Action, Error> {
        let conflicted = fetch.write_conflict(conflict, &self.secret_name);
        tracing::info!(namespace = %self.namespace, m2mtoken = %self.name,
            secret = %self.secret_name, ?conflict, retry_in = ?conflicted.requeue,
            "the Secret changed since it was read: not written");
        if let Some(report) = &conflicted.report {
            self.report(report).await?;
        }
        Ok(Action::requeue(conflicted.requeue))
    }

    /// No usable token: remember the failure, publish it, and say so in the status.
    async fn failed(&self, fetch: &Fetch<'_>, err: &RefreshError) -> Result<Action, Error> {
        let failed = fetch.failed(err, fastrand::f64);
        self.ctx.set_failure(&self.key, Some(&failed.failure));
        self.ctx.metrics.refresh(failed.result, &failed.reason);
        tracing::warn!(namespace = %self.namespace, m2mtoken = %self.name,
            reason = %failed.reason, error = %err, retry_in = ?failed.delay,
            "token refresh failed");
        self.publish(EventType::Warning, failed.event, failed.message)
            .await;
        self.report(&failed.report).await?;
        Ok(Action::requeue(failed.delay))
    }

    /// Patches the status `report` leads to, unless the M2MToken already has it.
    async fn report(&self, report: &Report) -> Result<(), Error> {
        let new = status::next(self.token, report, self.now);
        // Remembered first: the next reconcile may read the M2MToken from before this write.
        self.ctx.remember_report(&self.key, report);
        if self.token.status.as_ref() == Some(&new) {
            return Ok(());
        }
        self.ctx.may_write()?;
        // `pods` belongs to the sweep: a merge patch without it leaves it as it is.
        let mut body = json!({ "status": new });
        if let Some(status) = body["status"].as_object_mut() {
            status.remove("pods");
        }
        self.tokens
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(body))
            .await?;
        Ok(())
    }

    async fn publish(&self, type_: EventType, reason: &str, note: String) {
        if self.ctx.may_write().is_err() {
            return;
        }
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: "Refresh".to_owned(),
            secondary: None,
        };
        let target = self.token.object_ref(&());
        let recorder = self.ctx.recorder(event.type_ == EventType::Warning);
        if let Err(e) = recorder.publish(&event, &target).await {
            tracing::debug!(error = %e, "cannot publish event");
        }
    }
}

/// Condition reasons must match `^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$`.
pub use super::status::condition_reason;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ServiceAccountAssertion;

    fn auth(method: ClientAuthMethod, secret: bool, federated: bool) -> ClientAuth {
        ClientAuth {
            method,
            secret_ref: secret.then(|| SecretKeyRef {
                name: "creds".into(),
                key: "k".into(),
            }),
            federated_credential_name: federated.then(|| "k8s".into()),
            service_account: federated.then(|| ServiceAccountAssertion {
                name: "sa".into(),
                audience: "idaas".into(),
                expiration_seconds: 600,
            }),
        }
    }

    /// The same shapes the CRD's two CEL rules allow and refuse, for API servers that do not
    /// enforce them.
    #[test]
    fn each_method_takes_exactly_its_fields() {
        use ClientAuthMethod::*;
        assert!(matches!(
            client_auth_shape(&auth(FederatedOidc, false, true)),
            Ok(AuthShape::Federated(Credential::FederatedOidc { credential_name, .. })) if credential_name == "k8s"
        ));
        for method in [ClientSecretPost, ClientSecretBasic, PrivateKeyJwt] {
            assert!(matches!(
                client_auth_shape(&auth(method, true, false)),
                Ok(AuthShape::Secret(r)) if r.name == "creds"
            ));
            let why = client_auth_shape(&auth(method, false, false))
                .err()
                .unwrap();
            assert!(why.contains("secretRef is required"), "{why}");
        }
        let why = client_auth_shape(&auth(ClientSecretPost, true, true))
            .err()
            .unwrap();
        assert!(why.contains("federated_oidc only"), "{why}");
        let why = client_auth_shape(&auth(FederatedOidc, true, true))
            .err()
            .unwrap();
        assert!(why.contains("not allowed with federated_oidc"), "{why}");
        let mut no_sa = auth(FederatedOidc, false, true);
        no_sa.service_account = None;
        let why = client_auth_shape(&no_sa).err().unwrap();
        assert!(why.contains("serviceAccount"), "{why}");
        let mut no_name = auth(FederatedOidc, false, true);
        no_name.federated_credential_name = Some(" ".into());
        let why = client_auth_shape(&no_name).err().unwrap();
        assert!(why.contains("federatedCredentialName"), "{why}");
    }
}
