//! The M2MToken cache the webhook resolves pods against: a reflector over all namespaces.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use super::mutate::{TokenDefaults, TokenLookup};
use super::review::TokenResolver;
use crate::crd::M2MToken;

/// Looks pods' M2MTokens up in a reflector store.
#[derive(Clone)]
pub struct CachedResolver {
    store: Store<M2MToken>,
    synced: Arc<AtomicBool>,
}

impl CachedResolver {
    /// Resolves against an existing store (tests fill one by hand). Until [`mark_synced`] is
    /// called every lookup answers [`TokenLookup::Unavailable`].
    ///
    /// [`mark_synced`]: CachedResolver::mark_synced
    pub fn new(store: Store<M2MToken>) -> Self {
        Self {
            store,
            synced: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The store holds the full list: from now on a missing M2MToken is really missing.
    pub fn mark_synced(&self) {
        self.synced.store(true, Ordering::SeqCst);
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
        if !self.synced.load(Ordering::SeqCst) {
            return TokenLookup::Unavailable;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ClientAuth, ClientAuthMethod, M2MTokenSpec, SecretKeyRef};
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
                    secret_ref: SecretKeyRef {
                        name: "creds".into(),
                        key: "client_secret".into(),
                    },
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

    #[test]
    fn resolves_from_the_store_by_namespace_and_name() {
        let (reader, mut writer) = reflector::store::<M2MToken>();
        writer.apply_watcher_event(&Event::Init);
        writer.apply_watcher_event(&Event::InitApply(token(
            "shop",
            "payments",
            Some("payments-token"),
            Some("acs:ram::1:role/payments"),
        )));
        writer.apply_watcher_event(&Event::InitApply(token("shop", "plain", None, None)));
        let resolver = CachedResolver::new(reader);
        assert_eq!(
            resolver.lookup("shop", "payments"),
            TokenLookup::Unavailable
        );
        writer.apply_watcher_event(&Event::InitDone);
        resolver.mark_synced();

        assert_eq!(
            resolver.lookup("shop", "payments"),
            TokenLookup::Found(TokenDefaults {
                secret_name: "payments-token".into(),
                role_arn: Some("acs:ram::1:role/payments".into()),
                oidc_provider_arn: None,
            })
        );
        assert_eq!(
            resolver.lookup("shop", "plain"),
            TokenLookup::Found(TokenDefaults {
                secret_name: "plain".into(),
                role_arn: None,
                oidc_provider_arn: None,
            })
        );
        assert_eq!(resolver.lookup("other", "payments"), TokenLookup::NotFound);
        assert_eq!(resolver.lookup("shop", "missing"), TokenLookup::NotFound);
    }
}
