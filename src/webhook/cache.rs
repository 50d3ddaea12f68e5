//! What the webhook resolves pods against: reflectors over all namespaces of M2MTokens and of
//! ServiceAccounts' metadata (only their `idaas-projector.io/*` annotations are kept), and a
//! direct read of a ServiceAccount the cache does not hold yet.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use super::annotations::{PREFIX, is_dns_label, is_dns_subdomain};
use super::mutate::{AccountAnnotations, AccountLookup, TokenDefaults, TokenLookup};
use super::review::Resolver;
use crate::crd::M2MToken;
use crate::idaas::cache::BoundedCache;
use crate::metrics::{AccountFetch, Metrics};

/// A ServiceAccount's metadata as the cache keeps it.
pub type AccountMeta = PartialObjectMeta<ServiceAccount>;

/// How long a direct read of a ServiceAccount may take: inside the namespace entry's admission
/// timeout (the chart allows 3s to 30s, default 5s) with time to answer.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(2);
/// At most this many ServiceAccount reads in flight; a miss beyond them is refused (retry), so
/// requests to the webhook cannot turn into unbounded load on the API server.
pub const MAX_FETCHES: usize = 8;
/// How long a ServiceAccount the API server did not have is answered "absent" without asking
/// again.
pub const NOT_FOUND_TTL: Duration = Duration::from_secs(3);
/// How many such answers are remembered at most.
const NOT_FOUND_CAP: usize = 1024;

/// Looks pods' M2MTokens and ServiceAccounts up in reflector stores.
#[derive(Clone)]
pub struct CachedResolver {
    tokens: Store<M2MToken>,
    accounts: Store<AccountMeta>,
    tokens_synced: Arc<AtomicBool>,
    accounts_synced: Arc<AtomicBool>,
    /// Asks the API server on a cache miss; `None` answers every miss "absent" (tests).
    client: Option<Client>,
    metrics: Arc<Metrics>,
    /// `false`: ServiceAccounts are not read at all (`--service-account-opt-in=false`).
    accounts_enabled: bool,
    /// Reads in flight, at most [`MAX_FETCHES`].
    fetches: Arc<tokio::sync::Semaphore>,
    /// `namespace/name` of ServiceAccounts recently found missing.
    not_found: Arc<Mutex<BoundedCache<()>>>,
}

impl CachedResolver {
    /// Resolves against existing stores (tests fill them by hand). Until [`sync`] sees a store
    /// ready, every lookup in it answers "unavailable".
    ///
    /// [`sync`]: CachedResolver::sync
    pub fn new(
        tokens: Store<M2MToken>,
        accounts: Store<AccountMeta>,
        client: Option<Client>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            tokens,
            accounts,
            tokens_synced: Arc::new(AtomicBool::new(false)),
            accounts_synced: Arc::new(AtomicBool::new(false)),
            client,
            metrics,
            accounts_enabled: true,
            fetches: Arc::new(tokio::sync::Semaphore::new(MAX_FETCHES)),
            not_found: Arc::new(Mutex::new(BoundedCache::new(NOT_FOUND_TTL, NOT_FOUND_CAP))),
        }
    }

    /// Reads no ServiceAccount: every pod's ServiceAccount is "absent", and the (empty)
    /// ServiceAccount store counts as synced.
    pub fn without_service_accounts(mut self) -> Self {
        self.accounts_enabled = false;
        self.accounts_synced.store(true, Ordering::SeqCst);
        self
    }

    /// Waits until both stores hold their full lists, marking each synced as it gets there:
    /// from then on a missing M2MToken is really missing, and a missing ServiceAccount is read
    /// from the API server.
    pub async fn sync(&self) {
        let tokens = async {
            if self.tokens.wait_until_ready().await.is_ok() {
                self.tokens_synced.store(true, Ordering::SeqCst);
                tracing::info!("M2MToken cache synced");
            }
        };
        let accounts = async {
            if self.accounts_enabled && self.accounts.wait_until_ready().await.is_ok() {
                self.accounts_synced.store(true, Ordering::SeqCst);
                tracing::info!("ServiceAccount cache synced");
            }
        };
        futures::join!(tokens, accounts);
    }

    /// Whether both caches have synced.
    pub fn synced(&self) -> bool {
        self.tokens_synced.load(Ordering::SeqCst) && self.accounts_synced.load(Ordering::SeqCst)
    }
}

/// What a pod takes from an M2MToken.
pub fn defaults_of(token: &M2MToken) -> TokenDefaults {
    TokenDefaults {
        secret_name: token.secret_name(),
        role_arn: token.spec.role_arn.clone().filter(|s| !s.is_empty()),
        oidc_provider_arn: token
            .spec
            .oidc_provider_arn
            .clone()
            .filter(|s| !s.is_empty()),
    }
}

/// Keeps of a ServiceAccount's metadata what the webhook reads: the name, the namespace, the
/// resourceVersion (the reflector's) and the `idaas-projector.io/*` annotations, so a cluster's
/// ServiceAccounts cost little memory.
pub fn strip(meta: &mut AccountMeta) {
    let m = &mut meta.metadata;
    *m = kube::core::ObjectMeta {
        name: m.name.take(),
        namespace: m.namespace.take(),
        resource_version: m.resource_version.take(),
        annotations: m
            .annotations
            .take()
            .map(|a| {
                a.into_iter()
                    .filter(|(k, _)| k.starts_with(PREFIX))
                    .collect()
            })
            .filter(|a: &BTreeMap<String, String>| !a.is_empty()),
        ..Default::default()
    };
    meta.types = None;
}

/// The annotations the webhook reads, from a ServiceAccount's stripped metadata.
pub fn account_annotations(name: &str, meta: &AccountMeta) -> AccountAnnotations {
    AccountAnnotations {
        name: name.to_owned(),
        annotations: meta.metadata.annotations.clone().unwrap_or_default(),
    }
}

impl Resolver for CachedResolver {
    fn m2m_token(&self, namespace: &str, name: &str) -> TokenLookup {
        if !self.tokens_synced.load(Ordering::SeqCst) {
            return TokenLookup::Unavailable;
        }
        match self.tokens.get(&ObjectRef::new(name).within(namespace)) {
            Some(token) => TokenLookup::Found(defaults_of(&token)),
            None => TokenLookup::NotFound,
        }
    }

    fn service_account(&self, namespace: &str, name: &str) -> Option<AccountLookup> {
        if !self.accounts_enabled {
            return Some(AccountLookup::Absent);
        }
        if !self.accounts_synced.load(Ordering::SeqCst) {
            return Some(accounts_not_loaded(namespace, name));
        }
        let meta = self.accounts.get(&ObjectRef::new(name).within(namespace))?;
        Some(AccountLookup::Found(account_annotations(name, &meta)))
    }

    fn fetch_service_account<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, AccountLookup> {
        Box::pin(self.fetch(namespace, name))
    }
}

impl CachedResolver {
    /// A GET of one ServiceAccount's metadata, bounded: names the API server could not hold
    /// are never asked for, a recent "not found" is remembered, and at most [`MAX_FETCHES`]
    /// reads run at once.
    async fn fetch(&self, namespace: &str, name: &str) -> AccountLookup {
        let Some(client) = &self.client else {
            return AccountLookup::Absent;
        };
        if !self.accounts_enabled || !is_dns_label(namespace) || !is_dns_subdomain(name) {
            return AccountLookup::Absent;
        }
        let key = format!("{namespace}/{name}");
        let now = tokio::time::Instant::now();
        if self.remembered_missing(&key, now) {
            return AccountLookup::Absent;
        }
        let Ok(_permit) = self.fetches.try_acquire() else {
            self.metrics.account_fetch(AccountFetch::busy);
            return AccountLookup::Unavailable(format!(
                "the webhook is already reading {MAX_FETCHES} ServiceAccounts its cache does not hold yet, so \
                 ServiceAccount {name:?} in namespace {namespace:?} cannot be read now; retry in a few seconds"
            ));
        };
        let api: Api<AccountMeta> = Api::namespaced(client.clone(), namespace);
        let read = tokio::time::timeout(FETCH_TIMEOUT, api.get_opt(name)).await;
        let (result, lookup) = match read {
            Ok(Ok(Some(mut meta))) => {
                strip(&mut meta);
                (
                    AccountFetch::found,
                    AccountLookup::Found(account_annotations(name, &meta)),
                )
            }
            Ok(Ok(None)) => {
                if let Ok(mut missing) = self.not_found.lock() {
                    missing.insert(&key, (), now);
                }
                (AccountFetch::not_found, AccountLookup::Absent)
            }
            Ok(Err(e)) => (AccountFetch::error, fetch_failed(namespace, name, &e)),
            Err(_) => (AccountFetch::error, fetch_timed_out(namespace, name)),
        };
        self.metrics.account_fetch(result);
        lookup
    }

    fn remembered_missing(&self, key: &str, now: tokio::time::Instant) -> bool {
        self.not_found
            .lock()
            .is_ok_and(|missing| missing.get(key, now).is_some())
    }
}

/// The answer for a ServiceAccount while the cache has not synced.
pub fn accounts_not_loaded(namespace: &str, name: &str) -> AccountLookup {
    AccountLookup::Unavailable(format!(
        "the webhook has not loaded the cluster's ServiceAccounts yet, so ServiceAccount {name:?} in namespace \
         {namespace:?} cannot be read; retry in a few seconds"
    ))
}

fn fetch_failed(namespace: &str, name: &str, e: &kube::Error) -> AccountLookup {
    tracing::warn!(%namespace, service_account = %name, error = %e, "cannot read a ServiceAccount");
    let forbidden = matches!(e, kube::Error::Api(status) if status.code == 403);
    AccountLookup::Unavailable(if forbidden {
        format!(
            "the webhook may not read ServiceAccount {name:?} in namespace {namespace:?} (403 Forbidden): grant the \
             webhook's ServiceAccount get, list and watch on serviceaccounts (the chart does), or run it with \
             --service-account-opt-in=false"
        )
    } else {
        format!(
            "the webhook cannot read ServiceAccount {name:?} in namespace {namespace:?} ({e}); retry in a few seconds"
        )
    })
}

fn fetch_timed_out(namespace: &str, name: &str) -> AccountLookup {
    tracing::warn!(%namespace, service_account = %name, timeout = ?FETCH_TIMEOUT, "reading a ServiceAccount timed out");
    AccountLookup::Unavailable(format!(
        "the API server did not answer within {FETCH_TIMEOUT:?} when the webhook read ServiceAccount {name:?} in \
         namespace {namespace:?}; retry in a few seconds"
    ))
}

/// Starts watching M2MTokens and ServiceAccounts' metadata in every namespace. Returns the
/// resolver, and the future that drives both watches (it runs until the process ends, retrying
/// with backoff on API errors); [`CachedResolver::sync`] tells when they have loaded.
pub fn watch(
    client: Client,
    metrics: Arc<Metrics>,
    service_accounts: bool,
) -> (CachedResolver, impl std::future::Future<Output = ()> + Send) {
    let (token_reader, token_writer) = reflector::store();
    let tokens = reflector(
        token_writer,
        watcher(
            Api::<M2MToken>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(|t: &mut M2MToken| {
            t.metadata.managed_fields = None;
            t.status = None;
        }),
    )
    .applied_objects()
    .map(|item| item.map(drop).map_err(|e| ("M2MToken", e)));
    let (account_reader, account_writer) = reflector::store();
    let accounts = reflector(
        account_writer,
        // An `Api` of `PartialObjectMeta` lists and watches metadata only.
        watcher(
            Api::<AccountMeta>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(strip),
    )
    .applied_objects()
    .map(|item| item.map(drop).map_err(|e| ("ServiceAccount", e)));
    // With ServiceAccounts off, their watch is never started.
    let accounts = if service_accounts {
        accounts.boxed()
    } else {
        futures::stream::empty().boxed()
    };
    let drive = async move {
        let mut events = std::pin::pin!(futures::stream::select(tokens, accounts));
        while let Some(item) = events.next().await {
            if let Err((kind, e)) = item {
                tracing::warn!(error = %e, "{kind} watch error; retrying");
            }
        }
    };
    let resolver = CachedResolver::new(token_reader, account_reader, Some(client), metrics);
    let resolver = if service_accounts {
        resolver
    } else {
        resolver.without_service_accounts()
    };
    (resolver, drive)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ClientAuth, ClientAuthMethod, M2MTokenSpec, SecretKeyRef};
    use kube::core::PartialObjectMetaExt as _;
    use kube::runtime::watcher::Event;

    fn token(ns: &str, name: &str, secret: Option<&str>, role: Option<&str>) -> M2MToken {
        let mut t = M2MToken::new(
            name,
            M2MTokenSpec {
                issuer: "https://example.aliyunidaas.com/api/v2/iauths_system/oauth2".into(),
                token_endpoint: None,
                jwks_uri: None,
                audience: "api://payments".into(),
                scopes: vec![".all".into()],
                client_id: "app_xxx".into(),
                client_auth: ClientAuth {
                    method: ClientAuthMethod::ClientSecretPost,
                    secret_ref: Some(SecretKeyRef {
                        name: "creds".into(),
                        key: "client_secret".into(),
                    }),
                    federated_credential_name: None,
                    service_account: None,
                },
                secret_name: secret.map(str::to_owned),
                role_arn: role.map(str::to_owned),
                oidc_provider_arn: None,
                max_token_age: "12h".into(),
            },
        );
        t.metadata.namespace = Some(ns.to_owned());
        t
    }

    fn account(ns: &str, name: &str, annotations: &[(&str, &str)]) -> AccountMeta {
        let mut meta: AccountMeta = kube::core::ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(ns.to_owned()),
            labels: Some([("team".to_owned(), "a".to_owned())].into()),
            annotations: Some(
                annotations
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..Default::default()
        }
        .into_request_partial::<ServiceAccount>();
        strip(&mut meta);
        meta
    }

    #[tokio::test]
    async fn resolves_from_the_stores_by_namespace_and_name() {
        let (tokens, mut token_writer) = reflector::store::<M2MToken>();
        let (accounts, mut account_writer) = reflector::store::<AccountMeta>();
        token_writer.apply_watcher_event(&Event::Init);
        token_writer.apply_watcher_event(&Event::InitApply(token(
            "shop",
            "payments",
            Some("payments-token"),
            Some("acs:ram::1:role/payments"),
        )));
        token_writer.apply_watcher_event(&Event::InitApply(token("shop", "plain", None, None)));
        account_writer.apply_watcher_event(&Event::Init);
        account_writer.apply_watcher_event(&Event::InitApply(account(
            "shop",
            "payments",
            &[
                ("idaas-projector.io/m2m-token", "payments"),
                ("kubectl.kubernetes.io/last-applied-configuration", "{}"),
            ],
        )));
        let resolver = CachedResolver::new(tokens, accounts, None, Arc::new(Metrics::new()));
        assert_eq!(
            resolver.m2m_token("shop", "payments"),
            TokenLookup::Unavailable
        );
        assert!(matches!(
            resolver.service_account("shop", "payments"),
            Some(AccountLookup::Unavailable(why)) if why.contains("retry")
        ));
        token_writer.apply_watcher_event(&Event::InitDone);
        account_writer.apply_watcher_event(&Event::InitDone);
        resolver.sync().await;
        assert!(resolver.synced());

        assert_eq!(
            resolver.m2m_token("shop", "payments"),
            TokenLookup::Found(TokenDefaults {
                secret_name: "payments-token".into(),
                role_arn: Some("acs:ram::1:role/payments".into()),
                oidc_provider_arn: None,
            })
        );
        assert_eq!(
            resolver.m2m_token("shop", "plain"),
            TokenLookup::Found(TokenDefaults {
                secret_name: "plain".into(),
                role_arn: None,
                oidc_provider_arn: None,
            })
        );
        assert_eq!(
            resolver.m2m_token("other", "payments"),
            TokenLookup::NotFound
        );
        assert_eq!(resolver.m2m_token("shop", "missing"), TokenLookup::NotFound);

        // Only the project's annotations are kept; a miss is None (then read from the API).
        assert_eq!(
            resolver.service_account("shop", "payments"),
            Some(AccountLookup::Found(AccountAnnotations {
                name: "payments".into(),
                annotations: [(
                    "idaas-projector.io/m2m-token".to_owned(),
                    "payments".to_owned()
                )]
                .into(),
            }))
        );
        assert_eq!(resolver.service_account("other", "payments"), None);
        assert_eq!(
            resolver.fetch_service_account("other", "payments").await,
            AccountLookup::Absent
        );
    }

    #[test]
    fn strip_keeps_only_what_the_webhook_reads() {
        let meta = account(
            "shop",
            "sa",
            &[("a/b", "c"), ("idaas-projector.io/role-name", "r")],
        );
        let m = &meta.metadata;
        assert_eq!(m.labels, None);
        assert_eq!(
            m.annotations.as_ref().unwrap().keys().collect::<Vec<_>>(),
            ["idaas-projector.io/role-name"]
        );
    }
}
