//! `controller`: the token projector alone (leader-elected through a Lease). Its flag group is
//! shared with `serve`.

use std::time::Duration;

use clap::Args;

use super::webhook::{InjectArgs, OptInArgs};
use super::{CommandError, HttpArgs, ServerArgs, parse_duration};
use crate::controller::sweep::SweepSettings;
use crate::controller::{LeaseSettings, Settings};
use crate::idaas::{AllowedOrigins, DEFAULT_ALLOWED_ISSUERS, OriginPattern};
use crate::process::Projector;
use crate::webhook::mutate::MutateConfig;

/// `--sweep-interval`: `0` (off), or at least 30 seconds (a sweep reads every pod).
fn parse_sweep_interval(s: &str) -> Result<Duration, String> {
    let interval = parse_duration(s)?;
    if !interval.is_zero() && interval < Duration::from_secs(30) {
        return Err(format!(
            "{s:?} is too short: a sweep reads every pod; use 30s or more, or 0 to turn it off"
        ));
    }
    Ok(interval)
}

#[derive(Debug, Args)]
pub struct ControllerArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub projector: ProjectorArgs,
    /// The webhook's settings, for the sweep to classify pods as the webhook does (the chart
    /// gives both the same values).
    #[command(flatten)]
    pub inject: InjectArgs,
    #[command(flatten)]
    pub opt_in: OptInArgs,
}

/// Runs the projector until SIGTERM.
pub async fn run(args: ControllerArgs) -> Result<(), CommandError> {
    let inject = args.inject.to_config().map_err(CommandError::Usage)?;
    let projector = args
        .projector
        .settings(inject, args.opt_in.service_account_opt_in);
    let process = args.server.process(None, Some(projector));
    Ok(crate::process::run(process).await?)
}

#[derive(Debug, Args)]
pub struct ProjectorArgs {
    /// Watch M2MTokens only in this namespace (repeat for several); default: all namespaces.
    #[arg(
        long = "namespace",
        env = "IDAAS_PROJECTOR_NAMESPACES",
        value_delimiter = ','
    )]
    pub namespaces: Vec<String>,
    /// At most this many token requests to IDaaS at once.
    #[arg(long, env = "IDAAS_PROJECTOR_MAX_CONCURRENT_REFRESHES", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub max_concurrent_refreshes: u16,
    /// How often the managed Secret of a fresh token is read again (Secrets are never watched),
    /// less up to 20% jitter: a deleted or changed token Secret is noticed within this time. The
    /// credentials Secret is read only when a token is fetched (a rotated client secret is used
    /// at the next refresh, or at the retry after IDaaS refuses the old one). Shorter: faster to
    /// notice, one more GET per M2MToken per interval.
    #[arg(long, env = "IDAAS_PROJECTOR_RECHECK_INTERVAL", default_value = "15m", value_parser = parse_duration)]
    pub recheck_interval: Duration,
    /// Time between two sweeps of the pods that opt in, which reports those not injected or
    /// injected with settings that have changed since (Events NotInjected / InjectionStale,
    /// the idaas_projector_pods gauges, each M2MToken's status.pods); `0` turns it off.
    #[arg(long, env = "IDAAS_PROJECTOR_SWEEP_INTERVAL", default_value = "5m", value_parser = parse_sweep_interval)]
    pub sweep_interval: Duration,
    /// Run without leader election (only for a single replica).
    #[arg(long, env = "IDAAS_PROJECTOR_NO_LEADER_ELECTION")]
    pub no_leader_election: bool,
    /// Name of the Lease used for leader election.
    #[arg(
        long,
        env = "IDAAS_PROJECTOR_LEASE_NAME",
        default_value = "idaas-projector"
    )]
    pub lease_name: String,
    /// Namespace of the Lease (the chart sets the release namespace).
    #[arg(
        long,
        env = "IDAAS_PROJECTOR_LEASE_NAMESPACE",
        default_value = "default"
    )]
    pub lease_namespace: String,
    /// Origins the projector may send requests to (issuer discovery, token endpoint, JWKS),
    /// comma-separated: `https://HOST[:PORT]`, HOST may start with `*.` (one or more labels);
    /// `http://127.0.0.1:PORT` only for a local emulator. Anything else: no request, Ready=False
    /// IssuerNotAllowed / EndpointNotAllowed.
    #[arg(
        long = "allowed-issuers",
        env = "IDAAS_PROJECTOR_ALLOWED_ISSUERS",
        value_delimiter = ',',
        default_value = DEFAULT_ALLOWED_ISSUERS,
        value_parser = OriginPattern::parse,
        value_name = "ORIGINS"
    )]
    pub allowed_issuers: Vec<OriginPattern>,
    /// This replica's identity in the Lease (the chart sets the pod name); default: the hostname.
    #[arg(long, env = "IDAAS_PROJECTOR_IDENTITY")]
    pub identity: Option<String>,
    #[command(flatten)]
    pub http: HttpArgs,
}

impl ProjectorArgs {
    /// The projector's settings; `inject` and `service_account_opt_in` are the webhook's,
    /// for the sweep. The Lease identity defaults to the hostname (the pod name), else a name
    /// with the process ID.
    pub fn settings(&self, inject: MutateConfig, service_account_opt_in: bool) -> Projector {
        let identity = self
            .identity
            .clone()
            .filter(|s| !s.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| format!("idaas-projector-{}", std::process::id()));
        let controller = Settings {
            namespaces: self
                .namespaces
                .iter()
                .filter(|n| !n.is_empty())
                .cloned()
                .collect(),
            max_concurrent_refreshes: usize::from(self.max_concurrent_refreshes),
            recheck_interval: self.recheck_interval,
            lease: (!self.no_leader_election).then(|| LeaseSettings {
                name: self.lease_name.clone(),
                namespace: self.lease_namespace.clone(),
                identity,
                duration_secs: 15,
                grace_secs: 5,
            }),
            sweep: Some(SweepSettings {
                interval: self.sweep_interval,
                inject,
                service_account_opt_in,
            }),
        };
        // Clap has parsed each pattern and applies the default when the flag is absent.
        let allowed =
            AllowedOrigins::from_patterns(self.allowed_issuers.clone()).unwrap_or_default();
        Projector {
            controller,
            idaas: self.http.config(allowed),
        }
    }
}
