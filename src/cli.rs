//! Command-line interface. Every flag has an `IDAAS_PROJECTOR_*` environment twin.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::webhook::mutate::{DEFAULT_TOKEN_WAIT, MutateConfig, TOKEN_FILE};

/// Parses `90s`, `5m`, `12h`, `1h30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration such as 90s, 5m or 12h ({e})"))
}

/// Keeps IDaaS M2M tokens fresh in Kubernetes Secrets and injects them into pods for Alibaba Cloud
/// SDKs (STS AssumeRoleWithOIDC), with no AccessKey anywhere.
#[derive(Debug, Parser)]
#[command(name = "idaas-projector", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the webhook and the token projector in one process (the chart's default).
    Serve(ServeArgs),
    /// Run the mutating admission webhook (HTTPS POST /mutate) and its admin server.
    Webhook(WebhookArgs),
    /// Run the token projector: keep a fresh IDaaS token in the Secret of every M2MToken
    /// (leader-elected through a Lease).
    Controller(ControllerArgs),
    /// Local playground: IDaaS and STS emulators, the projector keeping <dir>/token fresh, and the
    /// webhook on localhost.
    Dev(crate::dev::DevArgs),
    /// Fetch one IDaaS M2M token like the IDaaS curl example; with --out FILE --watch keep a
    /// file fresh (hosts without Kubernetes).
    Token(crate::token_command::TokenArgs),
    /// Call STS AssumeRoleWithOIDC with a token file and print the assumed role and the
    /// credentials' expiry (secrets only with --show-secrets).
    AssumeRole(crate::assume_role::AssumeRoleArgs),
    /// Decode a token and report, in RAM's own error codes, whether AssumeRoleWithOIDC would
    /// accept it.
    Check(crate::check_command::CheckArgs),
    /// Print the SHA-1 certificate fingerprint(s) RAM's OIDC identity provider wants for an
    /// issuer URL; --compare plans a certificate rotation.
    Fingerprint(crate::fingerprint::FingerprintArgs),
    /// Wait until a token file holds a JWT valid for more than a minute (the init container).
    WaitForToken(WaitArgs),
    /// Print the M2MToken CustomResourceDefinition as YAML.
    Crd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "IDAAS_PROJECTOR_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// Log filter, in tracing's EnvFilter syntax (`info`, `idaas_projector=debug,info`).
    #[arg(
        long,
        global = true,
        env = "IDAAS_PROJECTOR_LOG_LEVEL",
        default_value = "info"
    )]
    pub log_level: String,
}

#[derive(Debug, Args)]
pub struct WebhookArgs {
    /// Run without a Kubernetes API: resolve pods from their annotations and these flags only
    /// (M2MToken defaults such as spec.roleArn are not read).
    #[arg(long, env = "IDAAS_PROJECTOR_STANDALONE")]
    pub standalone: bool,
    #[command(flatten)]
    pub listen: ListenArgs,
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub inject: InjectArgs,
}

#[derive(Debug, Args)]
pub struct ControllerArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub projector: ProjectorArgs,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Do not run the webhook (projector only).
    #[arg(
        long,
        env = "IDAAS_PROJECTOR_NO_WEBHOOK",
        conflicts_with = "no_controller"
    )]
    pub no_webhook: bool,
    /// Do not run the projector (webhook only).
    #[arg(long, env = "IDAAS_PROJECTOR_NO_CONTROLLER")]
    pub no_controller: bool,
    #[command(flatten)]
    pub listen: ListenArgs,
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub inject: InjectArgs,
    #[command(flatten)]
    pub projector: ProjectorArgs,
}

#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Address of the HTTPS webhook listener.
    #[arg(long, env = "IDAAS_PROJECTOR_LISTEN", default_value = "0.0.0.0:9443")]
    pub listen: SocketAddr,
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
    /// How often a fresh token's credentials Secret is looked at again, so that a changed client
    /// secret is used within this time.
    #[arg(long, env = "IDAAS_PROJECTOR_RECHECK_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub recheck_interval: Duration,
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
    /// This replica's identity in the Lease (the chart sets the pod name); default: the hostname.
    #[arg(long, env = "IDAAS_PROJECTOR_IDENTITY")]
    pub identity: Option<String>,
    /// Connect timeout of calls to IDaaS.
    #[arg(long, env = "IDAAS_PROJECTOR_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Total timeout of one call to IDaaS.
    #[arg(long, env = "IDAAS_PROJECTOR_REQUEST_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// PEM CA certificates trusted for IDaaS on top of the system roots.
    #[arg(long, env = "IDAAS_PROJECTOR_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Address of the plain HTTP admin listener (/healthz, /readyz, /metrics).
    #[arg(
        long,
        env = "IDAAS_PROJECTOR_ADMIN_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    pub admin_listen: SocketAddr,
    /// On SIGTERM, report not-ready for this long before closing the listener, so endpoints
    /// stop sending traffic first.
    #[arg(long, env = "IDAAS_PROJECTOR_SHUTDOWN_DELAY", default_value = "5s", value_parser = parse_duration)]
    pub shutdown_delay: Duration,
    /// How long in-flight requests may take to finish at shutdown.
    #[arg(long, env = "IDAAS_PROJECTOR_SHUTDOWN_GRACE", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
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
    #[arg(long, env = "IDAAS_PROJECTOR_DEFAULT_TOKEN_WAIT", default_value = "5m", value_parser = parse_duration)]
    pub default_token_wait: Duration,
}

impl InjectArgs {
    /// Validates the flags into a mutation config.
    pub fn to_config(&self) -> Result<MutateConfig, String> {
        use crate::webhook::annotations::{is_region_id, validate_oidc_provider_arn};
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
        let wait = self.default_token_wait;
        if wait < Duration::from_secs(1)
            || wait > crate::webhook::annotations::MAX_TOKEN_WAIT
            || wait.subsec_nanos() != 0
        {
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

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// The token file to wait for.
    #[arg(long, env = "IDAAS_PROJECTOR_FILE", default_value = TOKEN_FILE)]
    pub file: PathBuf,
    /// Give up (exit 1) after this long.
    #[arg(long, env = "IDAAS_PROJECTOR_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// How often to look at the file.
    #[arg(long, env = "IDAAS_PROJECTOR_POLL_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// How often to log that it is still waiting.
    #[arg(long, env = "IDAAS_PROJECTOR_PROGRESS_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub progress_interval: Duration,
}

/// Exit status for a failed check or call.
pub const EXIT_FAILURE: u8 = 1;
/// Exit status for bad usage.
pub const EXIT_USAGE: u8 = 2;

/// Runs the parsed command.
pub async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Crd => match crate::crd::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: cannot render the CRD: {e}");
                ExitCode::from(EXIT_FAILURE)
            }
        },
        Command::WaitForToken(args) => {
            let _ = DEFAULT_TOKEN_WAIT;
            match crate::wait::wait_for_token(
                &args.file,
                args.timeout,
                args.poll_interval.max(Duration::from_millis(10)),
                args.progress_interval.max(Duration::from_millis(10)),
            )
            .await
            {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    ExitCode::from(EXIT_FAILURE)
                }
            }
        }
        Command::Serve(args) => exit(crate::run::serve(args).await),
        Command::Dev(args) => match crate::dev::run(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(EXIT_FAILURE)
            }
        },
        Command::Token(args) => command_exit(crate::token_command::run(args).await),
        Command::Check(args) => command_exit(crate::check_command::run(args).await),
        Command::Fingerprint(args) => command_exit(crate::fingerprint::run(args).await),
        Command::AssumeRole(args) => command_exit(crate::assume_role::run(args).await),
        Command::Webhook(args) => exit(crate::run::webhook(args).await),
        Command::Controller(args) => exit(crate::run::controller(args).await),
    }
}

/// Bad usage (exit 2) or a failed check or call (exit 1) of a one-shot command.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
}

fn command_exit(result: Result<(), CommandError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CommandError::Usage(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(CommandError::Failed(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn exit(result: Result<(), crate::Error>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(crate::Error::Usage(message)) => {
            tracing::error!("{message}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(e) => {
            tracing::error!(error = %e, "stopped with an error");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Sets up tracing on stderr.
pub fn init_tracing(log: &LogArgs) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(&log.log_level)
        .map_err(|e| format!("--log-level {:?}: {e}", log.log_level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match log.log_format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    }
    .map_err(|e| e.to_string())
}
