//! `webhook`: the mutating admission webhook and its admin server. Its flags (listener,
//! certificate, injection) are shared with `serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::{CommandError, ServerArgs, parse_duration, parse_duration_flag};
use crate::ram::names::{is_region_id, validate_oidc_provider_arn};
use crate::webhook::annotations::MAX_TOKEN_WAIT;
use crate::webhook::limits::Limits;
use crate::webhook::mutate::{DEFAULT_TOKEN_WAIT, MutateConfig};
use crate::webhook::{Settings, TlsSource, certs};

/// The largest `--max-connections`: beyond what one process can hold open anyway.
const MAX_CONNECTIONS_LIMIT: usize = 1 << 20;

#[derive(Debug, Args)]
pub struct WebhookArgs {
    /// Run without a Kubernetes API: resolve pods from their annotations and these flags only
    /// (M2MToken defaults such as spec.roleArn are not read).
    #[arg(long, env = "IDAAS_PROJECTOR_STANDALONE")]
    pub standalone: bool,
    #[command(flatten)]
    pub webhook: WebhookFlags,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Runs the webhook until SIGTERM.
pub async fn run(args: WebhookArgs) -> Result<(), CommandError> {
    let webhook = args.webhook.settings(args.standalone)?;
    let process = args.server.process(Some(webhook), None);
    Ok(crate::process::run(process).await?)
}

/// The webhook's flags, shared by `webhook` and `serve`.
#[derive(Debug, Args)]
pub struct WebhookFlags {
    /// Address of the HTTPS webhook listener.
    #[arg(long, env = "IDAAS_PROJECTOR_LISTEN", default_value = "0.0.0.0:9443")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub inject: InjectArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub opt_in: OptInArgs,
}

/// Whether ServiceAccounts opt pods in: the webhook's rule, which the projector's sweep
/// applies too.
#[derive(Debug, Args)]
pub struct OptInArgs {
    /// Read pods' ServiceAccounts (the webhook: a metadata cache of every ServiceAccount, and
    /// a GET on a miss; the sweep: a GET per ServiceAccount in labelled namespaces) so that, in
    /// namespaces labelled idaas-projector.io/injection=enabled, a ServiceAccount's annotations
    /// opt pods in and carry their settings. `false`: no ServiceAccount is read (and none needs
    /// to be: no RBAC on serviceaccounts), and pods opt in by their own annotations only.
    #[arg(long, env = "IDAAS_PROJECTOR_SERVICE_ACCOUNT_OPT_IN", default_value_t = true, action = clap::ArgAction::Set)]
    pub service_account_opt_in: bool,
}

impl WebhookFlags {
    /// The webhook's settings, checked before anything touches the network.
    pub fn settings(&self, standalone: bool) -> Result<Settings, CommandError> {
        Ok(Settings {
            listen: self.listen,
            tls: self.tls.source(standalone)?,
            inject: self.inject.to_config().map_err(CommandError::Usage)?,
            standalone,
            limits: self.limits.to_limits().map_err(CommandError::Usage)?,
            service_accounts: self.opt_in.service_account_opt_in && !standalone,
        })
    }
}

#[derive(Debug, Args)]
pub struct TlsArgs {
    /// PEM certificate chain of the webhook (reloaded when it changes on disk).
    #[arg(
        long,
        env = "IDAAS_PROJECTOR_TLS_CERT_FILE",
        default_value = "/etc/idaas-projector/tls/tls.crt"
    )]
    pub tls_cert_file: PathBuf,
    /// PEM private key of the webhook (reloaded when it changes on disk).
    #[arg(
        long,
        env = "IDAAS_PROJECTOR_TLS_KEY_FILE",
        default_value = "/etc/idaas-projector/tls/tls.key"
    )]
    pub tls_key_file: PathBuf,
    /// Where the serving certificate comes from: `files` (--tls-cert-file/--tls-key-file, for
    /// cert-manager or a Secret you provide) or `self` (made and rotated by idaas-projector, kept
    /// in --certificate-secret, with the caBundle of --webhook-configuration kept in step).
    #[arg(
        long,
        env = "IDAAS_PROJECTOR_CERTIFICATE_MODE",
        value_enum,
        default_value = "files"
    )]
    pub certificate_mode: CertificateMode,
    /// `self` mode: the Secret holding the CA and the serving certificate.
    #[arg(
        long,
        env = "IDAAS_PROJECTOR_CERTIFICATE_SECRET",
        default_value = "idaas-projector-webhook-tls"
    )]
    pub certificate_secret: String,
    /// `self` mode: the namespace of that Secret and of the Service (the release namespace).
    #[arg(
        long,
        env = "IDAAS_PROJECTOR_CERTIFICATE_NAMESPACE",
        default_value = "default"
    )]
    pub certificate_namespace: String,
    /// `self` mode: the webhook's Service; the certificate names it, .<ns>, .<ns>.svc and
    /// .<ns>.svc.cluster.local.
    #[arg(
        long,
        env = "IDAAS_PROJECTOR_SERVICE_NAME",
        default_value = "idaas-projector"
    )]
    pub service_name: String,
    /// `self` mode: the MutatingWebhookConfiguration whose caBundle is kept in step.
    #[arg(
        long,
        env = "IDAAS_PROJECTOR_WEBHOOK_CONFIGURATION",
        default_value = "idaas-projector"
    )]
    pub webhook_configuration: String,
    /// `self` mode: validity of a serving certificate (renewed at 2/3; the CA lives twice as long).
    #[arg(long, env = "IDAAS_PROJECTOR_CERTIFICATE_VALIDITY", default_value = "8760h", value_parser = parse_duration)]
    pub certificate_validity: Duration,
    /// Serve a self-signed certificate for localhost made at start, instead of the files; its
    /// certificate is written to .idaas-projector/webhook.crt for clients to trust. For local
    /// trials only.
    #[arg(long, env = "IDAAS_PROJECTOR_TLS_SELF_SIGNED")]
    pub tls_self_signed: bool,
    /// How often to look for a changed certificate or key.
    #[arg(long, env = "IDAAS_PROJECTOR_TLS_RELOAD_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub tls_reload_interval: Duration,
}

/// Where the webhook's serving certificate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CertificateMode {
    Files,
    #[value(name = "self")]
    SelfManaged,
}

impl TlsArgs {
    /// The certificate source the flags select: `self` mode, else --tls-self-signed, else the
    /// files.
    pub fn source(&self, standalone: bool) -> Result<TlsSource, CommandError> {
        if self.certificate_mode == CertificateMode::Files {
            return Ok(if self.tls_self_signed {
                TlsSource::SelfSigned
            } else {
                TlsSource::Files {
                    cert: self.tls_cert_file.clone(),
                    key: self.tls_key_file.clone(),
                    reload_interval: self.tls_reload_interval,
                }
            });
        }
        if standalone {
            return Err(CommandError::Usage(
                "--certificate-mode self needs the Kubernetes API (not --standalone)".to_owned(),
            ));
        }
        if self.certificate_validity < Duration::from_secs(3600) {
            return Err(CommandError::Usage(
                "--certificate-validity must be at least 1h".to_owned(),
            ));
        }
        Ok(TlsSource::SelfManaged(certs::Settings {
            secret_name: self.certificate_secret.clone(),
            namespace: self.certificate_namespace.clone(),
            service_name: self.service_name.clone(),
            webhook_configuration: self.webhook_configuration.clone(),
            validity: self.certificate_validity,
        }))
    }
}

#[derive(Debug, Args)]
pub struct InjectArgs {
    /// Image of the idaas-projector-wait init container (this project's own image).
    #[arg(long, env = "IDAAS_PROJECTOR_INIT_IMAGE", default_value = concat!("idaas-projector:", env!("CARGO_PKG_VERSION")))]
    pub init_image: String,
    /// OIDC provider ARN for pods whose annotation and M2MToken set none.
    #[arg(long, env = "IDAAS_PROJECTOR_DEFAULT_OIDC_PROVIDER_ARN")]
    pub default_oidc_provider_arn: Option<String>,
    /// STS region (ALIBABA_CLOUD_STS_REGION) for pods that do not set idaas-projector.io/sts-region.
    #[arg(long, env = "IDAAS_PROJECTOR_DEFAULT_STS_REGION")]
    pub default_sts_region: Option<String>,
    /// How long the init container waits for the token, for pods that do not set
    /// idaas-projector.io/token-wait.
    #[arg(long, env = "IDAAS_PROJECTOR_DEFAULT_TOKEN_WAIT", default_value_t = DEFAULT_TOKEN_WAIT.into(), value_parser = parse_duration_flag)]
    pub default_token_wait: humantime::Duration,
}

impl InjectArgs {
    /// Validates the flags into a mutation config.
    pub fn to_config(&self) -> Result<MutateConfig, String> {
        let non_empty = |s: &Option<String>| s.clone().filter(|s| !s.trim().is_empty());
        let default_oidc_provider_arn = non_empty(&self.default_oidc_provider_arn);
        if let Some(arn) = &default_oidc_provider_arn {
            validate_oidc_provider_arn(arn)
                .map_err(|why| format!("--default-oidc-provider-arn {arn:?}: {why}"))?;
        }
        let default_sts_region = non_empty(&self.default_sts_region);
        if let Some(region) = &default_sts_region
            && !is_region_id(region)
        {
            return Err(format!(
                "--default-sts-region {region:?} is not a region ID such as cn-hangzhou"
            ));
        }
        if self.init_image.trim().is_empty() {
            return Err("--init-image must not be empty".to_owned());
        }
        let wait = *self.default_token_wait;
        if wait < Duration::from_secs(1) || wait > MAX_TOKEN_WAIT || wait.subsec_nanos() != 0 {
            return Err(
                "--default-token-wait must be a whole number of seconds between 1s and 1h"
                    .to_owned(),
            );
        }
        Ok(MutateConfig {
            init_image: self.init_image.trim().to_owned(),
            default_oidc_provider_arn,
            default_sts_region,
            default_token_wait: wait,
        })
    }
}

/// How long and how many: what slow or numerous clients can hold of the webhook.
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// The TLS handshake, then each request head, must arrive within this long (HTTP/1.1 also
    /// closes a connection whose next request does not start within it; HTTP/2: the first
    /// request).
    #[arg(long, env = "IDAAS_PROJECTOR_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// A request body must arrive, and find room under --max-bodies-in-flight, within this
    /// long (else HTTP 408, or 503 when no room was found; HTTP/1.1 closes the connection).
    #[arg(long, env = "IDAAS_PROJECTOR_BODY_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub body_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    #[arg(long, env = "IDAAS_PROJECTOR_IDLE_TIMEOUT", default_value = "90s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// How often HTTP/2 connections are pinged; a ping unanswered for 10s closes the connection.
    #[arg(long, env = "IDAAS_PROJECTOR_HTTP2_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub http2_keepalive_interval: Duration,
    /// Concurrent streams (requests) allowed on one HTTP/2 connection.
    #[arg(long, env = "IDAAS_PROJECTOR_HTTP2_MAX_STREAMS", default_value_t = 64)]
    pub http2_max_streams: u32,
    /// Open connections; at the cap the listener stops accepting (one more connection is held
    /// without a TLS handshake, the rest wait in the kernel's accept backlog) until one closes.
    #[arg(long, env = "IDAAS_PROJECTOR_MAX_CONNECTIONS", default_value_t = 1000)]
    pub max_connections: usize,
    /// Request bodies held at once, counted in bytes as they arrive: at most this many times
    /// 4 MiB (64 MiB by default). A request that finds no room waits, until
    /// --body-read-timeout, then gets HTTP 503.
    #[arg(
        long,
        env = "IDAAS_PROJECTOR_MAX_BODIES_IN_FLIGHT",
        default_value_t = 16
    )]
    pub max_bodies_in_flight: usize,
}

impl LimitArgs {
    /// Checks the flags into the webhook's limits.
    pub fn to_limits(&self) -> Result<Limits, String> {
        let timeouts = [
            ("--header-read-timeout", self.header_read_timeout),
            ("--body-read-timeout", self.body_read_timeout),
            ("--idle-timeout", self.idle_timeout),
            ("--http2-keepalive-interval", self.http2_keepalive_interval),
        ];
        for (flag, value) in timeouts {
            if value < Duration::from_millis(100) {
                return Err(format!("{flag} must be at least 100ms"));
            }
        }
        let counts = [
            ("--http2-max-streams", self.http2_max_streams as usize),
            ("--max-connections", self.max_connections),
            ("--max-bodies-in-flight", self.max_bodies_in_flight),
        ];
        for (flag, value) in counts {
            if value == 0 {
                return Err(format!("{flag} must be at least 1"));
            }
        }
        if self.max_bodies_in_flight > 1024 {
            return Err("--max-bodies-in-flight must be at most 1024 (4 GiB)".to_owned());
        }
        if self.max_connections > MAX_CONNECTIONS_LIMIT {
            return Err(format!(
                "--max-connections must be at most {MAX_CONNECTIONS_LIMIT}"
            ));
        }
        Ok(Limits {
            header_read_timeout: self.header_read_timeout,
            body_read_timeout: self.body_read_timeout,
            idle_timeout: self.idle_timeout,
            http2_keepalive_interval: self.http2_keepalive_interval,
            http2_max_streams: self.http2_max_streams,
            max_connections: self.max_connections,
            max_bodies_in_flight: self.max_bodies_in_flight,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        limits: LimitArgs,
    }

    fn limits(args: &[&str]) -> Result<Limits, String> {
        let cli = Cli::try_parse_from(std::iter::once("test").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.limits.to_limits()
    }

    #[test]
    fn the_flag_defaults_are_the_core_defaults() {
        assert_eq!(limits(&[]).unwrap(), Limits::default());
    }

    #[test]
    fn zero_timeouts_and_counts_are_refused() {
        for (flag, value, why) in [
            (
                "--header-read-timeout",
                "0s",
                "--header-read-timeout must be at least 100ms",
            ),
            (
                "--body-read-timeout",
                "10ms",
                "--body-read-timeout must be at least 100ms",
            ),
            (
                "--idle-timeout",
                "0s",
                "--idle-timeout must be at least 100ms",
            ),
            (
                "--http2-max-streams",
                "0",
                "--http2-max-streams must be at least 1",
            ),
            (
                "--max-connections",
                "0",
                "--max-connections must be at least 1",
            ),
            (
                "--max-bodies-in-flight",
                "0",
                "--max-bodies-in-flight must be at least 1",
            ),
            (
                "--max-bodies-in-flight",
                "1025",
                "--max-bodies-in-flight must be at most 1024 (4 GiB)",
            ),
            (
                "--max-connections",
                "1048577",
                "--max-connections must be at most 1048576",
            ),
        ] {
            assert_eq!(limits(&[flag, value]).unwrap_err(), why, "{flag} {value}");
        }
        let set = limits(&["--header-read-timeout", "2s", "--max-connections", "5"]).unwrap();
        assert_eq!(set.header_read_timeout, Duration::from_secs(2));
        assert_eq!(set.max_connections, 5);
    }
}
