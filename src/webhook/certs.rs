//! Self-managed webhook certificates (`--certificate-mode self`).
//!
//! A CA and a serving certificate made with rcgen live in one Secret; the CA bundle goes into
//! the MutatingWebhookConfiguration's `caBundle` by server-side apply. Every replica reads the
//! pair from the Secret through the API and serves it; any replica may create or rotate it, and
//! the API server arbitrates between them (create fails with 409 when another replica was first,
//! a replace carries the `resourceVersion` it read). So no extra lease is needed and the webhook
//! also works without the projector.
//!
//! Rotation, planned by the pure [`plan`]:
//! - the serving certificate is replaced at 2/3 of its validity (or when its names change);
//! - the CA lives twice as long; at 2/3 of its validity a next CA is made and joins the bundle,
//!   and only after [`overlap`] does the serving certificate switch to it, so the API server
//!   trusts the new chain before it is served. The old CA stays in the bundle until it expires.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::json;

use super::tls::{self, CertStore};
use crate::admin::Readiness;
use crate::metrics::Metrics;

/// Secret keys.
pub mod keys {
    /// The CA bundle clients must trust (PEM, one or more certificates).
    pub const BUNDLE: &str = "ca.crt";
    /// The CA that signs serving certificates.
    pub const CA_CERT: &str = "ca-signing.crt";
    pub const CA_KEY: &str = "ca-signing.key";
    /// The next CA, during a CA rotation.
    pub const NEXT_CA_CERT: &str = "next-ca.crt";
    pub const NEXT_CA_KEY: &str = "next-ca.key";
    /// The serving pair.
    pub const TLS_CERT: &str = "tls.crt";
    pub const TLS_KEY: &str = "tls.key";
}

/// Where the certificates live and what they are for.
#[derive(Debug, Clone)]
pub struct Settings {
    pub secret_name: String,
    pub namespace: String,
    pub service_name: String,
    pub webhook_configuration: String,
    /// Validity of a serving certificate; the CA gets twice as long.
    pub validity: Duration,
}

impl Settings {
    /// The Service's DNS names, as the API server may address it.
    pub fn dns_names(&self) -> Vec<String> {
        let (s, ns) = (&self.service_name, &self.namespace);
        vec![
            s.clone(),
            format!("{s}.{ns}"),
            format!("{s}.{ns}.svc"),
            format!("{s}.{ns}.svc.cluster.local"),
        ]
    }
}

/// Errors of certificate management.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("the certificate Secret is unusable: {0}")]
    Invalid(String),
}

/// A PEM certificate with its validity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cert {
    pub pem: String,
    pub not_before: i64,
    pub not_after: i64,
}

/// A certificate and its PEM private key.
#[derive(Clone, PartialEq, Eq)]
pub struct Pair {
    pub cert: Cert,
    pub key_pem: String,
}

impl std::fmt::Debug for Pair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pair")
            .field("cert", &self.cert)
            .field("key_pem", &"[REDACTED]")
            .finish()
    }
}

/// Everything the Secret holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Material {
    pub ca: Pair,
    pub next_ca: Option<Pair>,
    pub serving: Pair,
    /// The CAs clients trust, newest first.
    pub bundle: Vec<Cert>,
}

impl Material {
    /// The bundle as one PEM text.
    pub fn bundle_pem(&self) -> String {
        self.bundle.iter().map(|c| c.pem.as_str()).collect()
    }
}

/// Parses PEM certificates and their validity.
pub fn parse_certs(pem: &str) -> Result<Vec<Cert>, String> {
    let mut out = Vec::new();
    for der in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let der = der.map_err(|e| format!("bad PEM: {e}"))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| format!("bad certificate: {e}"))?;
        let validity = parsed.validity();
        let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        let mut text = String::from("-----BEGIN CERTIFICATE-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            text.push_str(std::str::from_utf8(chunk).unwrap_or_default());
            text.push('\n');
        }
        text.push_str("-----END CERTIFICATE-----\n");
        out.push(Cert {
            pem: text,
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
        });
    }
    Ok(out)
}

fn offset(unix: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn one(pem: &str) -> Result<Cert, CertError> {
    parse_certs(pem)
        .map_err(CertError::Invalid)?
        .into_iter()
        .next()
        .ok_or_else(|| CertError::Invalid("no certificate".to_owned()))
}

/// Makes a CA valid from `now` for `validity`.
pub fn make_ca(now: i64, validity: Duration) -> Result<Pair, CertError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.distinguished_name.push(
        DnType::CommonName,
        format!("idaas-projector webhook CA {now}"),
    );
    params.not_before = offset(now - 300);
    params.not_after = offset(now + validity.as_secs() as i64);
    let cert = params.self_signed(&key)?;
    Ok(Pair {
        cert: one(&cert.pem())?,
        key_pem: key.serialize_pem(),
    })
}

/// Makes a serving certificate for `names`, signed by `ca`.
pub fn make_serving(
    ca: &Pair,
    names: &[String],
    now: i64,
    validity: Duration,
) -> Result<Pair, CertError> {
    let issuer = Issuer::from_ca_cert_pem(&ca.cert.pem, KeyPair::from_pem(&ca.key_pem)?)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names.to_vec())?;
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().cloned().unwrap_or_default(),
    );
    params.not_before = offset(now - 300);
    params.not_after = offset(now + validity.as_secs() as i64);
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Pair {
        cert: one(&cert.pem())?,
        key_pem: key.serialize_pem(),
    })
}

/// How long a next CA sits in the bundle before the serving certificate switches to it.
pub fn overlap(validity: Duration) -> i64 {
    (validity.as_secs() as i64 / 10).clamp(1, 3600)
}

fn two_thirds_passed(c: &Cert, now: i64) -> bool {
    now >= c.not_before + (c.not_after - c.not_before) * 2 / 3
}

fn serving_names(c: &Cert) -> Vec<String> {
    CertificateDer::from_pem_slice(c.pem.as_bytes())
        .ok()
        .and_then(|der| {
            let (_, parsed) = x509_parser::parse_x509_certificate(&der).ok()?;
            let san = parsed.subject_alternative_name().ok()??;
            Some(
                san.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                        _ => None,
                    })
                    .collect(),
            )
        })
        .unwrap_or_default()
}

/// Decides what the Secret should hold at `now`. `None`: keep what is there.
pub fn plan(
    current: Option<&Material>,
    settings: &Settings,
    now: i64,
) -> Result<Option<Material>, CertError> {
    let names = settings.dns_names();
    let ca_validity = settings.validity * 2;
    let Some(cur) = current else {
        let ca = make_ca(now, ca_validity)?;
        let serving = make_serving(&ca, &names, now, settings.validity)?;
        return Ok(Some(Material {
            bundle: vec![ca.cert.clone()],
            ca,
            next_ca: None,
            serving,
        }));
    };
    let mut next = cur.clone();
    let mut changed = false;

    // Stage 1 of a CA rotation: a next CA joins the bundle.
    if next.next_ca.is_none() && two_thirds_passed(&next.ca.cert, now) {
        let fresh = make_ca(now, ca_validity)?;
        next.bundle.insert(0, fresh.cert.clone());
        next.next_ca = Some(fresh);
        changed = true;
    }
    // Stage 2: after the overlap, serve from the next CA.
    let mut resign = false;
    if let Some(n) = next.next_ca.clone()
        && now >= n.cert.not_before + 300 + overlap(settings.validity)
    {
        next.ca = n;
        next.next_ca = None;
        resign = true;
    }
    // The serving certificate: renew at 2/3, on new names, or after the switch.
    let mut want = names.clone();
    want.sort();
    let mut have = serving_names(&next.serving.cert);
    have.sort();
    if resign || want != have || two_thirds_passed(&next.serving.cert, now) {
        next.serving = make_serving(&next.ca, &names, now, settings.validity)?;
        changed = true;
    }
    // Drop expired CAs, but never the signing ones.
    let keep: Vec<Cert> = next
        .bundle
        .iter()
        .filter(|c| {
            c.not_after > now
                || **c == next.ca.cert
                || next.next_ca.as_ref().is_some_and(|n| n.cert == **c)
        })
        .cloned()
        .collect();
    if keep.len() != next.bundle.len() {
        next.bundle = keep;
        changed = true;
    }
    if !next.bundle.contains(&next.ca.cert) {
        next.bundle.push(next.ca.cert.clone());
        changed = true;
    }
    Ok(changed.then_some(next))
}

fn text(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
}

/// Reads the material from the Secret; `None` when it is missing or incomplete.
pub fn read(secret: &Secret) -> Option<Material> {
    let pair = |c: &str, k: &str| -> Option<Pair> {
        Some(Pair {
            cert: parse_certs(&text(secret, c)?).ok()?.into_iter().next()?,
            key_pem: text(secret, k)?,
        })
    };
    Some(Material {
        ca: pair(keys::CA_CERT, keys::CA_KEY)?,
        next_ca: pair(keys::NEXT_CA_CERT, keys::NEXT_CA_KEY),
        serving: pair(keys::TLS_CERT, keys::TLS_KEY)?,
        bundle: parse_certs(&text(secret, keys::BUNDLE)?).ok()?,
    })
}

/// The Secret holding `m`.
pub fn to_secret(m: &Material, settings: &Settings, resource_version: Option<String>) -> Secret {
    let mut data = BTreeMap::new();
    let mut put = |k: &str, v: &str| {
        data.insert(k.to_owned(), ByteString(v.as_bytes().to_vec()));
    };
    put(keys::BUNDLE, &m.bundle_pem());
    put(keys::CA_CERT, &m.ca.cert.pem);
    put(keys::CA_KEY, &m.ca.key_pem);
    if let Some(n) = &m.next_ca {
        put(keys::NEXT_CA_CERT, &n.cert.pem);
        put(keys::NEXT_CA_KEY, &n.key_pem);
    }
    // The leaf first, then the CA that signed it: a complete chain for clients.
    put(keys::TLS_CERT, &m.serving.cert.pem);
    put(keys::TLS_KEY, &m.serving.key_pem);
    let mut labels = BTreeMap::new();
    labels.insert(
        "app.kubernetes.io/managed-by".to_owned(),
        "idaas-projector".to_owned(),
    );
    labels.insert(
        "app.kubernetes.io/component".to_owned(),
        "webhook-certificates".to_owned(),
    );
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(settings.secret_name.clone()),
            namespace: Some(settings.namespace.clone()),
            labels: Some(labels),
            resource_version,
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(data),
        ..Default::default()
    }
}

/// Keeps the Secret, the caBundle and the served pair in step.
pub struct CertManager {
    pub client: Client,
    pub settings: Settings,
    pub store: Arc<CertStore>,
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    /// Wall clock (tests set it).
    pub now: fn() -> i64,
    served: std::sync::Mutex<Option<String>>,
}

impl CertManager {
    pub fn new(
        client: Client,
        settings: Settings,
        store: Arc<CertStore>,
        metrics: Arc<Metrics>,
        readiness: Arc<Readiness>,
    ) -> Self {
        Self {
            client,
            settings,
            store,
            metrics,
            readiness,
            now: crate::time::unix_now,
            served: std::sync::Mutex::new(None),
        }
    }

    /// One pass: read the Secret, create or rotate it if needed, make the caBundle match, and
    /// serve the current pair.
    pub async fn sync_once(&self) -> Result<(), CertError> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.settings.namespace);
        let now = (self.now)();
        let existing = secrets.get_opt(&self.settings.secret_name).await?;
        let current = existing.as_ref().and_then(read);
        let material = match plan(current.as_ref(), &self.settings, now)? {
            None => current.ok_or_else(|| CertError::Invalid("no material".to_owned()))?,
            Some(new) => {
                let rv = existing
                    .as_ref()
                    .and_then(|s| s.metadata.resource_version.clone());
                let secret = to_secret(&new, &self.settings, rv.clone());
                let written = match (&existing, rv) {
                    (None, _) => secrets.create(&PostParams::default(), &secret).await,
                    (Some(_), _) => {
                        secrets
                            .replace(&self.settings.secret_name, &PostParams::default(), &secret)
                            .await
                    }
                };
                match written {
                    Ok(_) => {
                        tracing::info!(secret = %self.settings.secret_name,
                            serving_not_after = new.serving.cert.not_after,
                            cas = new.bundle.len(), "webhook certificates written");
                        new
                    }
                    // Another replica was first: take what it wrote on the next pass.
                    Err(kube::Error::Api(e)) if e.code == 409 => {
                        tracing::debug!("certificate Secret changed concurrently; re-reading");
                        return Box::pin(self.sync_once()).await;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        self.ensure_bundle(&material).await?;
        self.serve(&material)?;
        Ok(())
    }

    async fn ensure_bundle(&self, m: &Material) -> Result<(), CertError> {
        let api: Api<MutatingWebhookConfiguration> = Api::all(self.client.clone());
        let bundle = m.bundle_pem();
        let Some(config) = api.get_opt(&self.settings.webhook_configuration).await? else {
            tracing::warn!(name = %self.settings.webhook_configuration,
                "MutatingWebhookConfiguration not found; caBundle not set");
            return Ok(());
        };
        let webhooks = config.webhooks.unwrap_or_default();
        let stale = webhooks.iter().any(|w| {
            w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()) != Some(bundle.as_bytes())
        });
        if !stale {
            return Ok(());
        }
        let b64 = base64::engine::general_purpose::STANDARD.encode(bundle.as_bytes());
        let patch = json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": self.settings.webhook_configuration},
            "webhooks": webhooks.iter().map(|w| json!({
                "name": w.name,
                "clientConfig": {"caBundle": b64},
            })).collect::<Vec<_>>(),
        });
        api.patch(
            &self.settings.webhook_configuration,
            &PatchParams::apply("idaas-projector").force(),
            &Patch::Apply(patch),
        )
        .await?;
        tracing::info!(name = %self.settings.webhook_configuration, cas = m.bundle.len(), "caBundle updated");
        Ok(())
    }

    fn serve(&self, m: &Material) -> Result<(), CertError> {
        let fingerprint = format!("{}{}", m.serving.cert.pem, m.ca.cert.pem);
        let mut served = self
            .served
            .lock()
            .map_err(|_| CertError::Invalid("lock poisoned".to_owned()))?;
        if served.as_deref() == Some(fingerprint.as_str()) {
            return Ok(());
        }
        let chain = format!("{}{}", m.serving.cert.pem, m.ca.cert.pem);
        let pair = tls::load_pair(chain.as_bytes(), m.serving.key_pem.as_bytes())
            .map_err(|e| CertError::Invalid(e.to_string()))?;
        tls::install(&self.store, pair, &self.metrics, &self.readiness);
        self.metrics.reload(crate::metrics::ReloadResult::success);
        *served = Some(fingerprint);
        Ok(())
    }

    /// Syncs every `interval` (every 2 s until the first success). Never returns.
    pub async fn run(self, interval: Duration) {
        let mut loaded = false;
        loop {
            match self.sync_once().await {
                Ok(()) => loaded = true,
                Err(e) => {
                    self.metrics.reload(crate::metrics::ReloadResult::failure);
                    tracing::warn!(error = %e, "webhook certificate sync failed; retrying");
                }
            }
            let wait = if loaded {
                interval
            } else {
                Duration::from_secs(2)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(validity: Duration) -> Settings {
        Settings {
            secret_name: "idaas-projector-webhook-tls".into(),
            namespace: "idaas-projector".into(),
            service_name: "idaas-projector".into(),
            webhook_configuration: "idaas-projector".into(),
            validity,
        }
    }

    #[test]
    fn first_plan_makes_a_ca_and_a_serving_certificate() {
        let s = settings(Duration::from_secs(3000));
        let m = plan(None, &s, 1_000_000).unwrap().unwrap();
        assert_eq!(m.bundle, vec![m.ca.cert.clone()]);
        let mut names = serving_names(&m.serving.cert);
        names.sort();
        let mut want = s.dns_names();
        want.sort();
        assert_eq!(names, want);
        assert!(m.ca.cert.not_after > m.serving.cert.not_after);
        // Nothing to do right after.
        assert!(plan(Some(&m), &s, 1_000_100).unwrap().is_none());
    }

    #[test]
    fn serving_certificate_renews_at_two_thirds() {
        let s = settings(Duration::from_secs(3000));
        let m = plan(None, &s, 1_000_000).unwrap().unwrap();
        let later = m.serving.cert.not_before
            + (m.serving.cert.not_after - m.serving.cert.not_before) * 2 / 3
            + 1;
        let r = plan(Some(&m), &s, later).unwrap().unwrap();
        assert_ne!(r.serving, m.serving);
        assert_eq!(r.ca, m.ca, "same CA");
    }

    #[test]
    fn ca_rotation_keeps_the_old_ca_in_the_bundle_until_the_switch() {
        let s = settings(Duration::from_secs(3000));
        let t0 = 1_000_000;
        let m = plan(None, &s, t0).unwrap().unwrap();
        // 2/3 of the CA's life (CA validity is 6000 s plus 300 s backdating).
        let t1 = m.ca.cert.not_before + (m.ca.cert.not_after - m.ca.cert.not_before) * 2 / 3 + 1;
        let stage1 = plan(Some(&m), &s, t1).unwrap().unwrap();
        let next = stage1.next_ca.clone().expect("a next CA");
        assert_eq!(stage1.ca, m.ca, "still signing with the old CA");
        assert!(stage1.bundle.contains(&m.ca.cert) && stage1.bundle.contains(&next.cert));
        // The serving certificate is still from the old CA during the overlap (it may have been
        // renewed by age, but by the old CA).
        let issuer_is = |serving: &Pair, ca: &Pair| {
            let der = CertificateDer::from_pem_slice(serving.cert.pem.as_bytes()).unwrap();
            let (_, leaf) = x509_parser::parse_x509_certificate(&der).unwrap();
            let der = CertificateDer::from_pem_slice(ca.cert.pem.as_bytes()).unwrap();
            let (_, ca) = x509_parser::parse_x509_certificate(&der).unwrap();
            leaf.issuer() == ca.subject()
        };
        assert!(issuer_is(&stage1.serving, &m.ca));

        // Before the overlap ends: no switch.
        let during = t1 + 10;
        if let Some(x) = plan(Some(&stage1), &s, during).unwrap() {
            assert_eq!(x.ca, m.ca);
        }
        // After it: the serving certificate comes from the new CA; both CAs still trusted.
        let t2 = next.cert.not_before + 300 + overlap(s.validity) + 1;
        let stage2 = plan(Some(&stage1), &s, t2).unwrap().unwrap();
        assert_eq!(stage2.ca, next);
        assert!(stage2.next_ca.is_none());
        assert!(issuer_is(&stage2.serving, &next));
        assert!(
            stage2.bundle.contains(&m.ca.cert),
            "old CA kept until it expires"
        );
        // Once the old CA has expired it leaves the bundle.
        let t3 = m.ca.cert.not_after + 1;
        let stage3 = plan(Some(&stage2), &s, t3).unwrap().unwrap();
        assert!(!stage3.bundle.contains(&m.ca.cert));
        assert!(stage3.bundle.contains(&next.cert));
    }

    #[test]
    fn secret_round_trip() {
        let s = settings(Duration::from_secs(3000));
        let m = plan(None, &s, 1_000_000).unwrap().unwrap();
        let secret = to_secret(&m, &s, None);
        assert_eq!(read(&secret), Some(m.clone()));
        assert!(!format!("{m:?}").contains("PRIVATE KEY"));
    }
}
