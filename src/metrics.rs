//! Prometheus metrics. Every name starts with `idaas_projector_`.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Outcome of one admission request.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum AdmissionResult {
    /// The pod opted in and was allowed (with a patch, or none when already injected).
    injected,
    /// Not a pod, not a create, or no `m2m-token` annotation.
    skipped,
    /// Refused with a message.
    denied,
    /// The request could not be read (HTTP 400, 408, 413 or 503).
    error,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    pub result: AdmissionResult,
}

/// Outcome of a certificate reload.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ReloadResult {
    success,
    failure,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub result: ReloadResult,
}

/// Outcome of a token refresh.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum RefreshResult {
    /// A checked token was obtained.
    success,
    /// The token endpoint (or discovery, JWKS) failed.
    failure,
    /// A token came back but fails a check RAM would apply; it was not published.
    rejected,
}

/// The `reason` labels of `idaas_projector_token_refreshes_total` besides `http_*` and `other`:
/// the success reason, the OAuth error codes, the client's own reasons and the check reasons.
pub const REFRESH_REASONS: &[&str] = &[
    "Refreshed",
    // OAuth 2.0 (RFC 6749 §5.2, RFC 8628 slow_down)
    "invalid_client",
    "unauthorized_client",
    "invalid_scope",
    "invalid_request",
    "invalid_grant",
    "unsupported_grant_type",
    "temporarily_unavailable",
    "server_error",
    "slow_down",
    // the IDaaS client
    "timeout",
    "connect",
    "network",
    "bad_response",
    "ca_file",
    "http_client",
    "invalid_url",
    "invalid_private_key",
    "invalid_client_secret",
    "assertion_file",
    "ServiceAccountNotFound",
    "TokenRequestForbidden",
    "TokenRequestFailed",
    crate::idaas::error::reason::JWKS_UNAVAILABLE,
    crate::idaas::error::reason::ISSUER_NOT_ALLOWED,
    crate::idaas::error::reason::ENDPOINT_NOT_ALLOWED,
    // the checks (`CheckError::reason`)
    "NotJWT",
    "SymmetricAlgorithm",
    "IssuerNotMatch",
    "AudienceNotMatch",
    "Expired",
    "IssuedInFuture",
    "IssuedTooLongAgo",
    "UnknownKey",
    "InvalidSignature",
];

/// HTTP statuses that keep their own label (`http_<status>`); others become `http_<class>xx`.
const HTTP_STATUSES: &[u16] = &[400, 401, 403, 404, 408, 429, 500, 502, 503, 504];

/// The `reason` label for a refresh reason: one of [`REFRESH_REASONS`], `http_<status>` for the
/// statuses in a fixed list, `http_1xx` .. `http_5xx` for the others, else `other`. The set is
/// fixed whatever a server answers (the condition reason on the M2MToken keeps the server's code).
pub fn refresh_reason_label(reason: &str) -> &'static str {
    const CLASSES: [&str; 5] = ["http_1xx", "http_2xx", "http_3xx", "http_4xx", "http_5xx"];
    const KEPT: [&str; 10] = [
        "http_400", "http_401", "http_403", "http_404", "http_408", "http_429", "http_500",
        "http_502", "http_503", "http_504",
    ];
    if let Some(known) = REFRESH_REASONS.iter().find(|r| **r == reason) {
        return known;
    }
    let status = reason
        .strip_prefix("http_")
        .filter(|s| s.len() == 3)
        .and_then(|s| s.parse::<u16>().ok());
    match status {
        Some(s) => match HTTP_STATUSES.iter().position(|k| *k == s) {
            Some(i) => KEPT[i],
            None => match s / 100 {
                c @ 1..=5 => CLASSES[usize::from(c) - 1],
                _ => "other",
            },
        },
        None => "other",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefreshLabels {
    pub result: RefreshResult,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub namespace: String,
    pub name: String,
}

/// What ran out of time on the webhook's listener.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum WebhookTimeout {
    /// An HTTP/1.1 connection closed because its next request head was late.
    header_read,
    /// A request body not sent within the body-read timeout (HTTP 408).
    body_read,
    /// A request body that found no room in the body budget in time (HTTP 503).
    body_budget,
    /// A connection closed after the idle timeout without a request in flight.
    idle,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TimeoutLabels {
    pub timeout: WebhookTimeout,
}

/// Outcome of asking the API server for a ServiceAccount the webhook's cache did not hold.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum AccountFetch {
    /// The ServiceAccount exists (it was created a moment before its pod).
    found,
    /// No such ServiceAccount.
    not_found,
    /// The API server could not be asked, or answered with an error: the pod was refused.
    error,
    /// Not asked: as many reads as allowed were in flight; the pod was refused (retry).
    busy,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AccountFetchLabels {
    pub result: AccountFetch,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PodLabels {
    pub namespace: String,
    /// `injected`, `not_injected` or `stale` (`webhook::mutate::PodState::as_str`).
    pub state: String,
}

/// Outcome of one sweep.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum SweepResult {
    /// Every page was read and classified.
    success,
    /// A list failed; counts, gauges and statuses were left as they were.
    failure,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SweepLabels {
    pub result: SweepResult,
}

/// All metrics of the process, registered in one registry.
pub struct Metrics {
    registry: Registry,
    /// `idaas_projector_admission_requests_total{result}`.
    pub admission_requests: Family<AdmissionLabels, Counter>,
    /// `idaas_projector_admission_duration_seconds`.
    pub admission_duration: Histogram,
    /// `idaas_projector_webhook_certificate_expiry_timestamp_seconds`.
    pub certificate_expiry: Gauge,
    /// `idaas_projector_webhook_certificate_reloads_total{result}`.
    pub certificate_reloads: Family<ReloadLabels, Counter>,
    /// `idaas_projector_webhook_open_connections`.
    pub webhook_open_connections: Gauge,
    /// `idaas_projector_webhook_timeouts_total{timeout}`.
    pub webhook_timeouts: Family<TimeoutLabels, Counter>,
    /// `idaas_projector_webhook_service_account_fetches_total{result}`.
    pub account_fetches: Family<AccountFetchLabels, Counter>,
    /// `idaas_projector_token_refreshes_total{result,reason}`.
    pub refreshes: Family<RefreshLabels, Counter>,
    /// `idaas_projector_idaas_request_duration_seconds`.
    pub idaas_request_duration: Histogram,
    /// `idaas_projector_token_expiry_timestamp_seconds{namespace,name}`.
    pub token_expiry: Family<TokenLabels, Gauge>,
    /// `idaas_projector_reconcile_errors_total{error}`.
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    /// `idaas_projector_secret_writes_total`.
    pub secret_writes: Counter,
    /// `idaas_projector_leader`: 1 while this replica holds the Lease and reconciles.
    pub leader: Gauge,
    /// `idaas_projector_pods{namespace,state}`, from the last complete sweep.
    pub pods: Family<PodLabels, Gauge>,
    /// `idaas_projector_sweeps_total{result}`.
    pub sweeps: Family<SweepLabels, Counter>,
    /// `idaas_projector_sweep_duration_seconds`.
    pub sweep_duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self {
            registry: Registry::with_prefix("idaas_projector"),
            admission_requests: Family::<AdmissionLabels, Counter>::default(),
            admission_duration: Histogram::new([
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1,
            ]),
            certificate_expiry: Gauge::default(),
            certificate_reloads: Family::<ReloadLabels, Counter>::default(),
            webhook_open_connections: Gauge::default(),
            webhook_timeouts: Family::<TimeoutLabels, Counter>::default(),
            account_fetches: Family::<AccountFetchLabels, Counter>::default(),
            refreshes: Family::<RefreshLabels, Counter>::default(),
            idaas_request_duration: Histogram::new([
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            token_expiry: Family::<TokenLabels, Gauge>::default(),
            reconcile_errors: Family::<ErrorLabels, Counter>::default(),
            secret_writes: Counter::default(),
            leader: Gauge::default(),
            pods: Family::<PodLabels, Gauge>::default(),
            sweeps: Family::<SweepLabels, Counter>::default(),
            sweep_duration: Histogram::new([
                0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            ]),
        }
        .registered()
    }

    /// Registers every metric in the registry.
    fn registered(mut self) -> Self {
        let r = &mut self.registry;
        r.register(
            "admission_requests",
            "Admission requests answered, by result",
            self.admission_requests.clone(),
        );
        r.register(
            "admission_duration_seconds",
            "Time to answer one admission request, from the request body to the response",
            self.admission_duration.clone(),
        );
        r.register(
            "webhook_certificate_expiry_timestamp_seconds",
            "Expiry (not after) of the webhook's serving certificate, as a Unix timestamp",
            self.certificate_expiry.clone(),
        );
        r.register(
            "webhook_certificate_reloads",
            "Attempts to load a changed serving certificate, by result",
            self.certificate_reloads.clone(),
        );
        r.register(
            "webhook_open_connections",
            "Connections the webhook listener holds open (at most --max-connections)",
            self.webhook_open_connections.clone(),
        );
        r.register(
            "webhook_timeouts",
            "Connections closed and requests refused by the webhook's timeouts, by timeout",
            self.webhook_timeouts.clone(),
        );
        r.register("webhook_service_account_fetches", "ServiceAccounts the webhook asked the API server for because its cache did not hold them, by result", self.account_fetches.clone());
        r.register(
            "token_refreshes",
            "Token refreshes, by result and reason (the OAuth error or failed check)",
            self.refreshes.clone(),
        );
        r.register(
            "idaas_request_duration_seconds",
            "Time to obtain and check one token from IDaaS (discovery and JWKS included)",
            self.idaas_request_duration.clone(),
        );
        r.register(
            "token_expiry_timestamp_seconds",
            "Expiry of the token each M2MToken's Secret holds, as a Unix timestamp",
            self.token_expiry.clone(),
        );
        r.register(
            "reconcile_errors",
            "Reconciles that ended in an error, by kind",
            self.reconcile_errors.clone(),
        );
        r.register(
            "secret_writes",
            "Token Secrets written (server-side apply)",
            self.secret_writes.clone(),
        );
        r.register("leader", "1 while this replica holds the Lease (or runs without leader election) and reconciles, else 0", self.leader.clone());
        r.register("pods", "Pods that opt in, by namespace and state (injected, not_injected, stale), as the last complete sweep found them", self.pods.clone());
        r.register(
            "sweeps",
            "Sweeps of the cluster's pods, by result (success: every page was read)",
            self.sweeps.clone(),
        );
        r.register(
            "sweep_duration_seconds",
            "Time one sweep took, API calls included",
            self.sweep_duration.clone(),
        );
        self
    }

    /// Counts one ServiceAccount fetched on a cache miss.
    pub fn account_fetch(&self, result: AccountFetch) {
        self.account_fetches
            .get_or_create(&AccountFetchLabels { result })
            .inc();
    }

    /// Counts one connection closed or request refused by a webhook timeout.
    pub fn webhook_timeout(&self, timeout: WebhookTimeout) {
        self.webhook_timeouts
            .get_or_create(&TimeoutLabels { timeout })
            .inc();
    }

    /// Counts one admission result.
    pub fn admission(&self, result: AdmissionResult) {
        self.admission_requests
            .get_or_create(&AdmissionLabels { result })
            .inc();
    }

    /// Counts one certificate reload.
    pub fn reload(&self, result: ReloadResult) {
        self.certificate_reloads
            .get_or_create(&ReloadLabels { result })
            .inc();
    }

    /// Counts one token refresh, under the bounded label of its reason
    /// ([`refresh_reason_label`]).
    pub fn refresh(&self, result: RefreshResult, reason: &str) {
        self.refreshes
            .get_or_create(&RefreshLabels {
                result,
                reason: refresh_reason_label(reason).to_owned(),
            })
            .inc();
    }

    /// Records the expiry of an M2MToken's token.
    pub fn token_expiry(&self, namespace: &str, name: &str, exp: i64) {
        self.token_expiry
            .get_or_create(&TokenLabels {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            })
            .set(exp);
    }

    /// Forgets a deleted M2MToken's gauge.
    pub fn forget_token(&self, namespace: &str, name: &str) {
        self.token_expiry.remove(&TokenLabels {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        });
    }

    /// Counts one reconcile error.
    pub fn reconcile_error(&self, label: &str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels {
                error: label.to_owned(),
            })
            .inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idaas::CheckError;

    #[test]
    fn refresh_reasons_map_to_a_fixed_set_of_labels() {
        for r in REFRESH_REASONS {
            assert_eq!(refresh_reason_label(r), *r);
        }
        let cases = [
            ("http_500", "http_500"),
            ("http_429", "http_429"),
            ("http_418", "http_4xx"),
            ("http_599", "http_5xx"),
            ("http_302", "http_3xx"),
            ("http_999", "other"),
            ("http_5000", "other"),
            ("http_", "other"),
            ("InvalidParameter.Scope", "other"),
            ("attacker_chosen_code_1", "other"),
            ("", "other"),
        ];
        for (reason, label) in cases {
            assert_eq!(refresh_reason_label(reason), label, "{reason}");
        }
        // Every check reason has its own label.
        let checks = [
            CheckError::NotJwt(String::new()),
            CheckError::SymmetricAlgorithm(String::new()),
            CheckError::IssuerNotMatch {
                got: String::new(),
                want: String::new(),
            },
            CheckError::AudienceNotMatch {
                got: vec![],
                want: String::new(),
            },
            CheckError::Expired { exp: 0 },
            CheckError::IssuedInFuture { iat: 0 },
            CheckError::IssuedTooLongAgo {
                iat: 0,
                limit_secs: 0,
            },
            CheckError::UnknownKey(None),
            CheckError::InvalidSignature,
        ];
        for c in checks {
            assert_eq!(refresh_reason_label(c.reason()), c.reason());
        }
    }

    #[test]
    fn many_server_codes_make_few_series() {
        let m = Metrics::new();
        for i in 0..500 {
            m.refresh(RefreshResult::failure, &format!("code_{i}"));
            m.refresh(RefreshResult::failure, &format!("http_{}", 400 + i % 200));
        }
        let text = m.encode().unwrap();
        let series = text
            .lines()
            .filter(|l| l.starts_with("idaas_projector_token_refreshes_total{"))
            .count();
        assert!(series <= 1 + HTTP_STATUSES.len() + 2, "{text}");
        assert!(text.contains("reason=\"other\"} 500"), "{text}");
    }
}
