//! One leader at a time: what this replica may conclude about its Lease, and the gate every write
//! of the reconciler goes through.
//!
//! kube-lease-manager claims and renews the Lease; two replicas claiming a free Lease at once are
//! told apart by server-side apply, which answers the second claim with 409 only when the two
//! replicas apply under different field managers ([`field_manager`]). A renewal that fails is
//! only logged by kube-lease-manager, so this module does not rely on it to learn that the lease
//! is lost: [`observing`] reads every Lease the API server answers to it, [`Tenure`] remembers
//! the last one that names this replica as holder, and [`may_write`] says whether that renewal
//! still covers a write, with a margin before the time another replica may take the Lease.
//! [`follow`] turns that into the leadership the controllers run under, and the
//! `idaas_projector_leader` gauge.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::http::{Request, Response, StatusCode};
use k8s_openapi::api::coordination::v1::Lease;
use kube::client::Body;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;

/// Field manager names are limited to this many characters by the API server.
pub const FIELD_MANAGER_MAX: usize = 128;

const FIELD_MANAGER_PREFIX: &str = "idaas-projector-";

/// The field manager this replica claims and renews the Lease under: `idaas-projector-<identity>`,
/// characters other than ASCII letters, digits, `.`, `_` and `-` replaced by `-`, and the identity
/// cut from the front when the whole would exceed [`FIELD_MANAGER_MAX`] characters (the end of a
/// pod name is its random part, what tells replicas apart).
pub fn field_manager(identity: &str) -> String {
    let clean: Vec<char> = identity
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let room = FIELD_MANAGER_MAX - FIELD_MANAGER_PREFIX.len();
    let tail: String = clean[clean.len().saturating_sub(room)..].iter().collect();
    format!("{FIELD_MANAGER_PREFIX}{tail}")
}

/// How long before the Lease expires writes stop when its renewal has not been confirmed: half
/// the grace period. kube-lease-manager renews a grace period before expiry, so a renewal has the
/// other half to succeed before writes pause; the margin itself absorbs writes in flight and some
/// clock skew between replicas.
pub fn margin(grace: Duration) -> Duration {
    grace / 2
}

/// Whether a write may start at `now`, given the last renewal of the Lease the API server
/// confirmed to this replica (its `renewTime`; `None`: none, or the Lease names another holder)
/// and the lease duration it was made for: strictly before `renewal + duration - margin`. Another
/// replica may take the Lease only from `renewal + duration` on.
pub fn may_write(
    last_renewal: Option<SystemTime>,
    duration: Duration,
    margin: Duration,
    now: SystemTime,
) -> bool {
    last_renewal
        .and_then(|t| t.checked_add(duration.saturating_sub(margin)))
        .is_some_and(|deadline| now < deadline)
}

/// The last renewal of the Lease confirmed to this replica: its `renewTime` and
/// `leaseDurationSeconds`.
pub type Renewal = Option<(SystemTime, Duration)>;

/// What this replica knows of its hold on the Lease, from the Leases the API server answered it.
#[derive(Debug)]
pub struct Tenure {
    identity: String,
    margin: Duration,
    renewal: watch::Sender<Renewal>,
}

impl Tenure {
    pub fn new(identity: &str, margin: Duration) -> Self {
        Self {
            identity: identity.to_owned(),
            margin,
            renewal: watch::Sender::new(None),
        }
    }

    /// Takes in a Lease the API server answered: its renewal when it names this replica as
    /// holder, else no renewal at all.
    pub fn observe(&self, lease: &Lease) {
        let spec = lease.spec.as_ref();
        let ours = spec.and_then(|s| s.holder_identity.as_deref()) == Some(self.identity.as_str());
        let renewal = spec.filter(|_| ours).and_then(|s| {
            let renewed: SystemTime = s.renew_time.as_ref()?.0.into();
            let secs = u64::try_from(s.lease_duration_seconds?).ok()?;
            Some((renewed, Duration::from_secs(secs)))
        });
        self.renewal.send_replace(renewal);
    }

    /// The Lease is gone.
    pub fn forget(&self) {
        self.renewal.send_replace(None);
    }

    /// When writes stop unless a renewal is confirmed first.
    pub fn deadline(&self) -> Option<SystemTime> {
        let (renewed, duration) = (*self.renewal.borrow())?;
        renewed.checked_add(duration.saturating_sub(self.margin))
    }

    /// [`may_write`] now.
    pub fn may_write(&self) -> bool {
        let renewal = *self.renewal.borrow();
        let (renewed, duration) = (
            renewal.map(|r| r.0),
            renewal.map_or(Duration::ZERO, |r| r.1),
        );
        may_write(renewed, duration, self.margin, SystemTime::now())
    }

    pub fn subscribe(&self) -> watch::Receiver<Renewal> {
        self.renewal.subscribe()
    }
}

/// The check every write of the reconciler (Secret, status, event) makes first.
#[derive(Debug, Clone, Default)]
pub enum WriteGate {
    /// No leader election: a single replica always writes.
    #[default]
    Open,
    /// Writes only while the Lease's last confirmed renewal covers them.
    Lease(Arc<Tenure>),
}

impl WriteGate {
    /// The gate for these lease settings (`None`: no leader election).
    pub fn new(lease: Option<&super::LeaseSettings>) -> Self {
        match lease {
            None => WriteGate::Open,
            Some(l) => WriteGate::Lease(Arc::new(Tenure::new(
                &l.identity,
                margin(Duration::from_secs(l.grace_secs)),
            ))),
        }
    }

    pub fn is_open(&self) -> bool {
        match self {
            WriteGate::Open => true,
            WriteGate::Lease(tenure) => tenure.may_write(),
        }
    }
}

/// A client that sends everything through `client` and shows `tenure` every Lease the API server
/// answers for `namespace/name` (a GET, a claim, a renewal, a release); a Lease that is not found
/// is forgotten. Failed requests change nothing: the last confirmed renewal stands.
pub fn observing(
    client: kube::Client,
    tenure: Arc<Tenure>,
    namespace: &str,
    name: &str,
) -> kube::Client {
    let path = format!("/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}");
    let default_namespace = client.default_namespace().to_owned();
    let service = tower::service_fn(move |req: Request<Body>| {
        let (client, tenure) = (client.clone(), tenure.clone());
        let ours = req.uri().path() == path;
        async move {
            let response = client.send(req).await?;
            if !ours {
                return Ok::<_, kube::Error>(response);
            }
            let (parts, body) = response.into_parts();
            let bytes = http_body_util::BodyExt::collect(body).await?.to_bytes();
            if parts.status.is_success() {
                if let Ok(lease) = serde_json::from_slice::<Lease>(&bytes) {
                    tenure.observe(&lease);
                }
            } else if parts.status == StatusCode::NOT_FOUND {
                tenure.forget();
            }
            Ok(Response::from_parts(parts, Body::from(bytes)))
        }
    });
    kube::Client::new(service, default_namespace)
}

/// Leadership as the controllers should see it: `elected` (kube-lease-manager's view) while the
/// last confirmed renewal still allows writes; it turns false at the write deadline when no
/// renewal came, and true again once one does. Sets `gauge` to 1 while leading, else 0. Ends, and
/// closes the returned channel, when `elected` closes or the receiver is dropped.
pub fn follow(
    mut elected: watch::Receiver<bool>,
    tenure: Arc<Tenure>,
    gauge: Gauge,
) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    let mut renewals = tenure.subscribe();
    tokio::spawn(async move {
        loop {
            let leading = *elected.borrow_and_update() && tenure.may_write();
            renewals.borrow_and_update();
            gauge.set(i64::from(leading));
            tx.send_if_modified(|l| std::mem::replace(l, leading) != leading);
            let left = tenure
                .deadline()
                .and_then(|d| d.duration_since(SystemTime::now()).ok())
                .unwrap_or(Duration::ZERO);
            tokio::select! {
                changed = elected.changed() => if changed.is_err() { break },
                changed = renewals.changed() => if changed.is_err() { break },
                () = tokio::time::sleep(left + Duration::from_millis(1)), if leading => {},
                () = tx.closed() => break,
            }
        }
        gauge.set(0);
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    const SEC: Duration = Duration::from_secs(1);

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    #[test]
    fn writes_stop_a_margin_before_the_lease_could_be_taken() {
        let (duration, margin) = (15 * SEC, 2 * SEC + SEC / 2);
        let renewed = Some(at(0));
        assert!(may_write(renewed, duration, margin, at(0)));
        assert!(may_write(renewed, duration, margin, at(12)));
        assert!(!may_write(
            renewed,
            duration,
            margin,
            at(0) + Duration::from_millis(12_500)
        ));
        assert!(!may_write(renewed, duration, margin, at(13)));
        assert!(
            !may_write(renewed, duration, margin, at(15)),
            "another replica may take it"
        );
        assert!(
            !may_write(None, duration, margin, at(0)),
            "never renewed: no writes"
        );
        assert!(
            !may_write(renewed, SEC, 2 * SEC, at(0)),
            "a margin above the duration"
        );
    }

    #[test]
    fn the_margin_leaves_a_renewal_time_to_succeed() {
        // kube-lease-manager renews a grace period before expiry; writes stop later than that.
        let grace = 5 * SEC;
        assert!(margin(grace) < grace);
        assert!(margin(grace) > Duration::ZERO);
    }

    #[test]
    fn field_managers_are_per_replica_and_valid() {
        assert_eq!(
            field_manager("projector-7d9f-abcde"),
            "idaas-projector-projector-7d9f-abcde"
        );
        assert_ne!(field_manager("a"), field_manager("b"));
        assert_eq!(field_manager("host name/1"), "idaas-projector-host-name-1");
        let long = format!("{}-{}", "x".repeat(300), "tail1");
        let m = field_manager(&long);
        assert_eq!(m.len(), FIELD_MANAGER_MAX);
        assert!(
            m.starts_with(FIELD_MANAGER_PREFIX) && m.ends_with("-tail1"),
            "{m}"
        );
        assert_ne!(
            m,
            field_manager(&format!("{}-{}", "x".repeat(300), "tail2"))
        );
    }

    fn lease(holder: Option<&str>, renewed: SystemTime, secs: i32) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                renew_time: Some(MicroTime(renewed.try_into().unwrap())),
                lease_duration_seconds: Some(secs),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        }
    }

    async fn until_leading(leading: &mut watch::Receiver<bool>, want: bool) {
        let wait = leading.wait_for(|l| *l == want);
        tokio::time::timeout(10 * SEC, wait).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn leadership_pauses_at_the_write_deadline_and_resumes_on_a_renewal() {
        let tenure = Arc::new(Tenure::new("me", SEC));
        let (elected_tx, elected) = watch::channel(false);
        let gauge = Gauge::default();
        let mut leading = follow(elected, tenure.clone(), gauge.clone());
        // The Lease runs out in 3 s: writes stop 1 s before, in 2 s.
        tenure.observe(&lease(
            Some("me"),
            SystemTime::now() - 15 * SEC + 3 * SEC,
            15,
        ));
        elected_tx.send(true).unwrap();
        until_leading(&mut leading, true).await;
        assert_eq!(gauge.get(), 1);
        // No renewal confirmed: leadership pauses although kube-lease-manager still says elected.
        until_leading(&mut leading, false).await;
        assert_eq!(gauge.get(), 0);
        assert!(!tenure.may_write());
        // A confirmed renewal: it resumes.
        tenure.observe(&lease(Some("me"), SystemTime::now(), 15));
        until_leading(&mut leading, true).await;
        assert_eq!(gauge.get(), 1);
        elected_tx.send(false).unwrap();
        until_leading(&mut leading, false).await;
        assert_eq!(gauge.get(), 0);
        // The lease task ended: the channel closes.
        drop(elected_tx);
        let closed = tokio::time::timeout(10 * SEC, leading.changed())
            .await
            .unwrap();
        assert!(closed.is_err());
    }

    #[test]
    fn a_tenure_follows_the_leases_the_api_server_answers() {
        let tenure = Tenure::new("me", SEC);
        assert!(!tenure.may_write(), "nothing confirmed yet");
        let now = SystemTime::now();
        tenure.observe(&lease(Some("me"), now, 15));
        assert!(tenure.may_write());
        assert_eq!(tenure.deadline(), Some(now + 14 * SEC));
        tenure.observe(&lease(Some("other"), now, 15));
        assert!(!tenure.may_write(), "another holder");
        tenure.observe(&lease(Some("me"), now - 20 * SEC, 15));
        assert!(!tenure.may_write(), "an expired renewal");
        tenure.observe(&lease(Some("me"), now, 15));
        tenure.forget();
        assert!(!tenure.may_write(), "the Lease is gone");
        assert!(WriteGate::Open.is_open());
        assert!(!WriteGate::Lease(Arc::new(tenure)).is_open());
    }
}
