//! The M2MToken cache the webhook resolves pods against: a reflector over all namespaces.

use futures::StreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use super::mutate::{TokenDefaults, TokenLookup};
use super::review::TokenResolver;
use crate::crd::M2MToken;

/// Looks pods' M2MTokens up in a reflector store.
#[derive(Clone)]
pub struct CachedResolver {
    store: Store<M2MToken>,
}

impl CachedResolver {
    /// Resolves against an existing store (tests fill one by hand).
    pub fn new(store: Store<M2MToken>) -> Self {
        Self { store }
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

impl TokenResolver for CachedResolver {
    fn lookup(&self, namespace: &str, name: &str) -> TokenLookup {
        match self.store.get(&ObjectRef::new(name).within(namespace)) {
            Some(token) => TokenLookup::Found(defaults_of(&token)),
            None => TokenLookup::NotFound,
        }
    }
}

/// Starts watching M2MTokens in every namespace. Returns the resolver, and the future that drives
/// the watch (it runs until the process ends, retrying with backoff on API errors).
pub fn watch(
    client: Client,
) -> (
    CachedResolver,
    Store<M2MToken>,
    impl std::future::Future<Output = ()> + Send,
) {
    let api: Api<M2MToken> = Api::all(client);
    let (reader, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher(api, watcher::Config::default())
            .default_backoff()
            .modify(|t: &mut M2MToken| {
                t.metadata.managed_fields = None;
                t.status = None;
            }),
    )
    .applied_objects();
    let drive = async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            if let Err(e) = item {
                tracing::warn!(error = %e, "M2MToken watch error; retrying");
            }
        }
    };
    (CachedResolver::new(reader.clone()), reader, drive)
}

use kube::runtime::reflector::reflector;
