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
    /// The request could not be read (HTTP 400 or 413).
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
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("idaas_projector");
        let admission_requests = Family::<AdmissionLabels, Counter>::default();
        registry.register(
            "admission_requests",
            "Admission requests answered, by result",
            admission_requests.clone(),
        );
        let admission_duration = Histogram::new([
            0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1,
        ]);
        registry.register(
            "admission_duration_seconds",
            "Time to answer one admission request, from the request body to the response",
            admission_duration.clone(),
        );
        let certificate_expiry = Gauge::default();
        registry.register(
            "webhook_certificate_expiry_timestamp_seconds",
            "Expiry (not after) of the webhook's serving certificate, as a Unix timestamp",
            certificate_expiry.clone(),
        );
        let certificate_reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "webhook_certificate_reloads",
            "Attempts to load a changed serving certificate, by result",
            certificate_reloads.clone(),
        );
        Self {
            registry,
            admission_requests,
            admission_duration,
            certificate_expiry,
            certificate_reloads,
        }
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

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
