//! The sweep: finds the pods that opt in but run without the injection, or with an injection
//! that has gone stale, and says so (see docs/m2mtoken.md, "The sweep").
//!
//! Every `--sweep-interval` the leader lists the pods page by page (`limit` 500), classifies
//! each by the webhook's own rules ([`classify`]), and then: an Event on each pod not injected
//! or stale (once per pod and finding: [`Reported`]), the `idaas_projector_pods` gauges, and each
//! M2MToken's `status.pods` counts ([`Tally`]). Nothing of the pods is kept from one sweep to
//! the next but the findings already reported, so memory grows with the pods that need
//! attention, not with the cluster.
//!
//! Pods are listed whole, not as metadata: the opt-in rule needs `spec.serviceAccountName`, and
//! what the webhook would inject depends on the containers and the node selection.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, ObjectReference, ServiceAccount};
use kube::api::{ListParams, Patch, PatchParams};
use kube::core::ListMeta;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client};
use serde::Deserialize;
use serde_json::{Value, json};

use super::reconcile::Context;
use crate::crd::{M2MToken, PodCounts};
use crate::metrics::{PodLabels, SweepLabels, SweepResult};
use crate::webhook::annotations;
use crate::webhook::cache::{account_annotations, defaults_of};
use crate::webhook::mutate::{
    AccountLookup, Classified, MutateConfig, PodState, Scope, TokenLookup, classify,
    service_account_name,
};

/// Pods (and namespaces) asked for per list request.
pub const PAGE_SIZE: u32 = 500;

/// What the sweep needs besides the projector's own settings: the webhook's, so that it
/// classifies pods as the webhook decides them.
#[derive(Debug, Clone)]
pub struct SweepSettings {
    /// Time between sweeps; zero turns the sweep off.
    pub interval: Duration,
    /// The webhook's server-wide settings (`--init-image`, `--default-oidc-provider-arn`,
    /// `--default-sts-region`, `--default-token-wait`).
    pub inject: MutateConfig,
    /// The webhook reads ServiceAccounts (`--service-account-opt-in`).
    pub service_account_opt_in: bool,
}

/// What one Event on a pod says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// `NotInjected` or `InjectionStale`.
    pub reason: &'static str,
    pub message: String,
    /// What the finding is about: another key for the same pod is a new finding.
    pub key: String,
}

/// The Event a pod's classification calls for, if any. `owner` names the pod's controller
/// (`ReplicaSet web-5d8f`), for the fix.
pub fn notice(namespace: &str, name: &str, owner: Option<&str>, c: &Classified) -> Option<Notice> {
    let token = match &c.m2m_token {
        Some(t) => format!("M2MToken {t:?}"),
        None => "an M2MToken".to_owned(),
    };
    let fix = match owner {
        Some(owner) => format!(
            "restart its workload ({owner}: kubectl rollout restart, or delete the pod) to get the current injection"
        ),
        None => "delete and recreate the pod to get the current injection".to_owned(),
    };
    let explain = format!("`idaas-projector doctor pod {name} -n {namespace}` explains");
    let (reason, what) = match c.state {
        PodState::NotOptedIn | PodState::Current => return None,
        PodState::NotInjected => (
            "NotInjected",
            format!(
                "the pod opts in to {token} but was not injected: it has no token volume and no ALIBABA_CLOUD_* variables \
                 (the webhook did not see it when it was created: unreachable with failurePolicy Ignore, a namespace the \
                 webhook excludes, or a namespace labelled after the pod started)"
            ),
        ),
        PodState::Stale => (
            "InjectionStale",
            match &c.expected {
                Some(now) => format!(
                    "the pod was injected for {token} with settings that have changed since (its M2MToken, its \
                     ServiceAccount's annotations or the webhook's defaults): the webhook would now inject role {}, \
                     OIDC provider {} and Secret {}",
                    now.role_arn, now.oidc_provider_arn, now.secret_name
                ),
                None => format!(
                    "the pod was injected for {token} with settings that have changed since"
                ),
            },
        ),
    };
    let refusal = c
        .refusal
        .as_ref()
        .map(|why| format!("; the webhook would now refuse it: {why}"))
        .unwrap_or_default();
    // A pod not injected stays so whatever the webhook would now inject; a stale one is stale
    // again when that changes.
    let hash = match c.state {
        PodState::Stale => c.expected.as_ref().map(|i| i.hash()).unwrap_or_default(),
        _ => String::new(),
    };
    Some(Notice {
        reason,
        message: format!("{what}{refusal}. Fix: {fix}; {explain}."),
        key: format!("{reason}/{hash}/{}", c.refusal.as_deref().unwrap_or("")),
    })
}

/// The findings already published, by pod UID: a pod gets one Event per finding, not one per
/// sweep. Kept across sweeps; entries of pods that no longer need attention are dropped.
#[derive(Debug, Default)]
pub struct Reported {
    published: HashMap<String, String>,
    /// UIDs found needing attention by the sweep in progress.
    current: HashSet<String>,
}

impl Reported {
    /// Whether `notice` about pod `uid` is new (and so to be published); remembers it.
    pub fn is_new(&mut self, uid: &str, notice: &Notice) -> bool {
        self.current.insert(uid.to_owned());
        if self.published.get(uid) == Some(&notice.key) {
            return false;
        }
        self.published.insert(uid.to_owned(), notice.key.clone());
        true
    }

    /// After a complete sweep: forgets the pods it did not find needing attention.
    pub fn finish(&mut self) {
        let current = std::mem::take(&mut self.current);
        self.published.retain(|uid, _| current.contains(uid));
    }

    /// After a failed sweep: keeps everything for the next one.
    pub fn abandon(&mut self) {
        self.current.clear();
    }

    /// How many pods' findings are remembered.
    pub fn len(&self) -> usize {
        self.published.len()
    }

    pub fn is_empty(&self) -> bool {
        self.published.is_empty()
    }
}

/// What one sweep counted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Pods that opt in, by namespace and state.
    pub namespaces: BTreeMap<(String, PodState), i64>,
    /// By M2MToken (namespace, name).
    pub tokens: HashMap<(String, String), PodCounts>,
    /// Pods read.
    pub pods: usize,
}

impl Tally {
    /// Counts one pod.
    pub fn add(&mut self, namespace: &str, c: &Classified) {
        self.pods += 1;
        if c.state == PodState::NotOptedIn {
            return;
        }
        *self
            .namespaces
            .entry((namespace.to_owned(), c.state))
            .or_default() += 1;
        if let Some(token) = &c.m2m_token {
            let counts = self
                .tokens
                .entry((namespace.to_owned(), token.clone()))
                .or_default();
            match c.state {
                PodState::Current => counts.injected += 1,
                PodState::NotInjected => counts.not_injected += 1,
                PodState::Stale => counts.stale += 1,
                PodState::NotOptedIn => {}
            }
        }
    }

    /// The `status.pods` writes a complete sweep calls for: each M2MToken whose counts differ
    /// from its status (no counts in the status reads as all zero, so M2MTokens no pod uses
    /// are never written).
    pub fn status_writes<'a>(
        &self,
        tokens: impl IntoIterator<Item = &'a M2MToken>,
    ) -> Vec<(String, String, PodCounts)> {
        tokens
            .into_iter()
            .filter_map(|t| {
                let ns = t.metadata.namespace.clone()?;
                let name = t.metadata.name.clone()?;
                let now = self
                    .tokens
                    .get(&(ns.clone(), name.clone()))
                    .copied()
                    .unwrap_or_default();
                let before = t.status.as_ref().and_then(|s| s.pods).unwrap_or_default();
                (now != before).then_some((ns, name, now))
            })
            .collect()
    }
}

/// Why a sweep stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("listing {what}: {source}")]
    List {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("reading ServiceAccount {namespace}/{name}: {source}")]
    ServiceAccount {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    metadata: ListMeta,
    #[serde(default)]
    items: Vec<Value>,
}

/// The sweep's state across sweeps: the stores of M2MTokens the controllers keep, and the
/// findings already reported.
pub struct Sweeper {
    client: Client,
    ctx: Arc<Context>,
    settings: SweepSettings,
    /// Namespaces the projector watches; empty: all.
    namespaces: Vec<String>,
    tokens: Vec<Store<M2MToken>>,
    reported: Reported,
}

/// What the sweep in progress has learnt besides the counts: the labelled namespaces and the
/// ServiceAccounts read so far.
struct Sweep {
    enabled: HashSet<String>,
    accounts: HashMap<(String, String), AccountLookup>,
    tally: Tally,
}

impl Sweeper {
    pub fn new(
        client: Client,
        ctx: Arc<Context>,
        settings: SweepSettings,
        namespaces: Vec<String>,
        tokens: Vec<Store<M2MToken>>,
    ) -> Self {
        Self {
            client,
            ctx,
            settings,
            namespaces,
            tokens,
            reported: Reported::default(),
        }
    }

    /// Sweeps every interval until `stop` resolves (the process stops, or the lease is lost),
    /// once the M2MToken stores have synced; then clears the gauges (a follower reports none).
    pub async fn run(mut self, stop: impl std::future::Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        for store in &self.tokens {
            tokio::select! {
                ready = store.wait_until_ready() => if ready.is_err() { return },
                () = &mut stop => return,
            }
        }
        loop {
            let _ = self.sweep_once().await;
            tokio::select! {
                () = tokio::time::sleep(self.settings.interval) => {}
                () = &mut stop => break,
            }
        }
        self.ctx.metrics.pods.clear();
    }

    fn record(&self, result: &Result<Tally, SweepError>, started: Instant) {
        let metrics = &self.ctx.metrics;
        metrics
            .sweep_duration
            .observe(started.elapsed().as_secs_f64());
        let result = match result {
            Ok(tally) => {
                tracing::info!(
                    pods = tally.pods,
                    reported = self.reported.len(),
                    seconds = started.elapsed().as_secs_f64(),
                    "sweep done"
                );
                SweepResult::success
            }
            Err(e) => {
                tracing::warn!(error = %e, "sweep failed; counts, gauges and statuses are left as they were");
                SweepResult::failure
            }
        };
        metrics.sweeps.get_or_create(&SweepLabels { result }).inc();
    }

    /// One sweep: every page of pods classified and reported; on success the gauges and the
    /// M2MTokens' counts follow.
    pub async fn sweep_once(&mut self) -> Result<Tally, SweepError> {
        let started = Instant::now();
        let result = self.sweep_and_publish().await;
        self.record(&result, started);
        result
    }

    async fn sweep_and_publish(&mut self) -> Result<Tally, SweepError> {
        let mut sweep = Sweep {
            enabled: HashSet::new(),
            accounts: HashMap::new(),
            tally: Tally::default(),
        };
        let result = self.sweep_pages(&mut sweep).await;
        if let Err(e) = result {
            self.reported.abandon();
            return Err(e);
        }
        self.reported.finish();
        self.publish_counts(&sweep.tally).await;
        Ok(sweep.tally)
    }

    async fn sweep_pages(&mut self, sweep: &mut Sweep) -> Result<(), SweepError> {
        if self.settings.service_account_opt_in {
            sweep.enabled = self.labelled_namespaces().await?;
        }
        let scopes: Vec<String> = match self.namespaces.is_empty() {
            true => vec!["/api/v1/pods".to_owned()],
            false => self
                .namespaces
                .iter()
                .map(|ns| format!("/api/v1/namespaces/{ns}/pods"))
                .collect(),
        };
        for url in scopes {
            let mut params = ListParams::default().limit(PAGE_SIZE);
            loop {
                let page = self.page(&url, &params).await?;
                for pod in page.items {
                    self.one_pod(pod, sweep).await?;
                }
                match page.metadata.continue_ {
                    Some(next) if !next.is_empty() => params = params.continue_token(&next),
                    _ => break,
                }
            }
        }
        Ok(())
    }

    async fn page(&self, url: &str, params: &ListParams) -> Result<Page, SweepError> {
        let failed = |source| SweepError::List {
            what: url.to_owned(),
            source,
        };
        let request = kube::core::Request::new(url)
            .list(params)
            .map_err(|e| failed(kube::Error::BuildRequest(e)))?;
        self.client.request::<Page>(request).await.map_err(failed)
    }

    /// The namespaces labelled `idaas-projector.io/injection: enabled`.
    async fn labelled_namespaces(&self) -> Result<HashSet<String>, SweepError> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let selector = format!("{}={}", annotations::INJECTION_LABEL, annotations::ENABLED);
        let mut params = ListParams::default().labels(&selector).limit(PAGE_SIZE);
        let mut names = HashSet::new();
        loop {
            let page = api
                .list_metadata(&params)
                .await
                .map_err(|source| SweepError::List {
                    what: "namespaces".to_owned(),
                    source,
                })?;
            names.extend(page.items.into_iter().filter_map(|n| n.metadata.name));
            match page.metadata.continue_ {
                Some(next) if !next.is_empty() => params = params.continue_token(&next),
                _ => return Ok(names),
            }
        }
    }

    /// Classifies one pod, counts it, and reports it if it needs attention.
    async fn one_pod(&mut self, pod: Value, sweep: &mut Sweep) -> Result<(), SweepError> {
        let field = |p: &str| pod.pointer(p).and_then(Value::as_str).map(str::to_owned);
        let namespace = field("/metadata/namespace").unwrap_or_default();
        let name = field("/metadata/name").unwrap_or_default();
        let uid = field("/metadata/uid").unwrap_or_default();
        let owner = owner(&pod);
        let enabled = sweep.enabled.contains(&namespace);
        let account = match enabled {
            true => {
                self.account(&namespace, service_account_name(&pod), sweep)
                    .await?
            }
            false => AccountLookup::Absent,
        };
        let scope = Scope {
            namespace: Some(&namespace),
            namespace_enabled: enabled,
            service_account: &account,
        };
        let classified = classify(pod, &scope, &self.settings.inject, |token| {
            self.token_lookup(&namespace, token)
        });
        sweep.tally.add(&namespace, &classified);
        let Some(notice) = notice(&namespace, &name, owner.as_deref(), &classified) else {
            return Ok(());
        };
        if self.reported.is_new(&uid, &notice) {
            self.publish(&namespace, &name, &uid, notice).await;
        }
        Ok(())
    }

    fn token_lookup(&self, namespace: &str, name: &str) -> TokenLookup {
        let key = ObjectRef::new(name).within(namespace);
        match self.tokens.iter().find_map(|s| s.get(&key)) {
            Some(token) => TokenLookup::Found(defaults_of(&token)),
            None => TokenLookup::NotFound,
        }
    }

    /// The pod's ServiceAccount, read once per sweep.
    async fn account(
        &self,
        namespace: &str,
        name: &str,
        sweep: &mut Sweep,
    ) -> Result<AccountLookup, SweepError> {
        let key = (namespace.to_owned(), name.to_owned());
        if let Some(known) = sweep.accounts.get(&key) {
            return Ok(known.clone());
        }
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        let found =
            api.get_metadata_opt(name)
                .await
                .map_err(|source| SweepError::ServiceAccount {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    source,
                })?;
        let lookup = match found {
            Some(meta) => AccountLookup::Found(account_annotations(name, &meta)),
            None => AccountLookup::Absent,
        };
        sweep.accounts.insert(key, lookup.clone());
        Ok(lookup)
    }

    async fn publish(&self, namespace: &str, name: &str, uid: &str, notice: Notice) {
        if self.ctx.may_write().is_err() {
            return;
        }
        let event = Event {
            type_: EventType::Warning,
            reason: notice.reason.to_owned(),
            note: Some(notice.message),
            action: "Sweep".to_owned(),
            secondary: None,
        };
        let pod = ObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some("Pod".to_owned()),
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            uid: Some(uid.to_owned()).filter(|u| !u.is_empty()),
            ..ObjectReference::default()
        };
        // Not folded: the sweep reports each pod and state once ([`Reported`]).
        let recorder = self.ctx.recorder(false);
        if let Err(e) = recorder.publish(&event, &pod).await {
            tracing::debug!(error = %e, pod = name, namespace, "cannot publish event");
        }
    }

    /// The gauges, then each M2MToken's `status.pods` where it changed.
    async fn publish_counts(&self, tally: &Tally) {
        let gauges = &self.ctx.metrics.pods;
        gauges.clear();
        for ((namespace, state), count) in &tally.namespaces {
            let labels = PodLabels {
                namespace: namespace.clone(),
                state: state.as_str().to_owned(),
            };
            gauges.get_or_create(&labels).set(*count);
        }
        let tokens: Vec<Arc<M2MToken>> = self.tokens.iter().flat_map(Store::state).collect();
        for (namespace, name, counts) in tally.status_writes(tokens.iter().map(AsRef::as_ref)) {
            if self.ctx.may_write().is_err() {
                return;
            }
            let api: Api<M2MToken> = Api::namespaced(self.client.clone(), &namespace);
            let body = Patch::Merge(json!({"status": {"pods": counts}}));
            if let Err(e) = api
                .patch_status(&name, &PatchParams::default(), &body)
                .await
            {
                tracing::debug!(error = %e, m2mtoken = %name, %namespace, "cannot write pod counts");
            }
        }
    }
}

/// The pod's controller, as `Kind name`.
fn owner(pod: &Value) -> Option<String> {
    let owners = pod.pointer("/metadata/ownerReferences")?.as_array()?;
    let owner = owners
        .iter()
        .find(|o| o.get("controller") == Some(&Value::Bool(true)))
        .or_else(|| owners.first())?;
    Some(format!(
        "{} {}",
        owner.get("kind")?.as_str()?,
        owner.get("name")?.as_str()?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::mutate::Injection;

    fn classified(state: PodState, role: &str) -> Classified {
        Classified {
            state,
            m2m_token: Some("payments".into()),
            expected: Some(Injection {
                secret_name: "payments".into(),
                role_arn: role.into(),
                oidc_provider_arn: "acs:ram::1:oidc-provider/idaas".into(),
                role_session_name: "shop.web".into(),
                sts_region: None,
                sts_vpc_endpoint: false,
                token_wait: None,
                init_image: "i".into(),
                windows: false,
            }),
            refusal: None,
        }
    }

    #[test]
    fn one_notice_per_finding() {
        let mut reported = Reported::default();
        let stale = notice("shop", "web", None, &classified(PodState::Stale, "a")).unwrap();
        assert_eq!(stale.reason, "InjectionStale");
        assert!(stale.message.contains("delete and recreate the pod"));
        assert!(reported.is_new("u1", &stale));
        assert!(!reported.is_new("u1", &stale));
        // What the webhook would inject changed: a new finding.
        let again = notice("shop", "web", None, &classified(PodState::Stale, "b")).unwrap();
        assert!(reported.is_new("u1", &again));
        // A pod not injected stays the same finding whatever the role.
        let a = notice("shop", "x", None, &classified(PodState::NotInjected, "a")).unwrap();
        let b = notice("shop", "x", None, &classified(PodState::NotInjected, "b")).unwrap();
        assert!(reported.is_new("u2", &a));
        assert!(!reported.is_new("u2", &b));
        reported.finish();
        assert_eq!(reported.len(), 2);
        // A pod that no longer needs attention is forgotten after a complete sweep only.
        assert!(!reported.is_new("u2", &a));
        reported.abandon();
        assert_eq!(reported.len(), 2);
        reported.finish();
        assert!(reported.is_empty());
        assert!(notice("shop", "x", None, &classified(PodState::Current, "a")).is_none());
    }

    #[test]
    fn counts_are_written_only_where_they_changed() {
        let token = |name: &str, pods: Option<PodCounts>| {
            let mut t = M2MToken::new(name, serde_json::from_value(serde_json::json!({
                "issuer": "https://x.aliyunidaas.com", "audience": "a", "clientId": "c",
                "clientAuth": {"method": "client_secret_post", "secretRef": {"name": "s", "key": "k"}}
            })).unwrap());
            t.metadata.namespace = Some("shop".into());
            t.status = Some(crate::crd::M2MTokenStatus {
                pods,
                ..Default::default()
            });
            t
        };
        let mut tally = Tally::default();
        tally.add("shop", &classified(PodState::Current, "a"));
        tally.add("shop", &classified(PodState::NotInjected, "a"));
        let now = PodCounts {
            injected: 1,
            not_injected: 1,
            stale: 0,
        };
        let tokens = [
            token("payments", None),
            token("unused", None),
            token(
                "gone-quiet",
                Some(PodCounts {
                    injected: 2,
                    ..Default::default()
                }),
            ),
        ];
        let writes = tally.status_writes(tokens.iter());
        assert_eq!(
            writes,
            [
                ("shop".into(), "payments".into(), now),
                ("shop".into(), "gone-quiet".into(), PodCounts::default()),
            ]
        );
        let settled = [token("payments", Some(now))];
        assert!(tally.status_writes(settled.iter()).is_empty());
    }
}
