//! The command line: every subcommand's flags and its `run`, one file each. Every flag has an
//! `IDAAS_PROJECTOR_*` environment twin. This is the only module that knows clap: each command
//! turns its flags into the plain settings of the core modules and calls them.
//!
//! Every command ends the same way: `Ok`, or a [`CommandError`] that [`exit_code`] turns into
//! exit status 1 (a check or call failed) or 2 (bad usage).

pub mod assume_role;
pub mod check;
pub mod controller;
pub mod crd;
pub mod dev;
pub mod doctor;
pub mod fingerprint;
pub mod serve;
pub mod token;
pub mod wait;
pub mod webhook;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    /// Run the webhook and the token projector in one process (`dev`-like setups and the chart's
    /// `combined: true`; by default the chart runs `webhook` and `controller` apart).
    Serve(Box<serve::ServeArgs>),
    /// Run the mutating admission webhook (HTTPS POST /mutate) and its admin server.
    Webhook(webhook::WebhookArgs),
    /// Run the token projector: keep a fresh IDaaS token in the Secret of every M2MToken
    /// (leader-elected through a Lease).
    Controller(controller::ControllerArgs),
    /// Local playground: IDaaS and STS emulators, the projector keeping <dir>/token fresh, and the
    /// webhook on localhost.
    Dev(dev::DevArgs),
    /// Fetch one IDaaS M2M token like the IDaaS curl example; with --out FILE --watch keep a
    /// file fresh (hosts without Kubernetes).
    Token(token::TokenArgs),
    /// Call STS AssumeRoleWithOIDC with a token file and print the assumed role and the
    /// credentials' expiry (secrets only with --show-secrets).
    AssumeRole(assume_role::AssumeRoleArgs),
    /// Decode a token and report, in RAM's own error codes, whether AssumeRoleWithOIDC would
    /// accept it.
    Check(check::CheckArgs),
    /// Print the SHA-1 certificate fingerprint(s) RAM's OIDC identity provider wants for an
    /// issuer URL; --compare plans a certificate rotation.
    Fingerprint(fingerprint::FingerprintArgs),
    /// Explain one pod's or workload's credentials end to end, read-only: webhook routing,
    /// dry-run injection, M2MToken, Secret, token checks, optionally STS.
    Doctor(doctor::DoctorArgs),
    /// Wait until a token file holds a JWT valid for more than a minute (the init container).
    WaitForToken(wait::WaitArgs),
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

/// Flags of every long-running process (`serve`, `webhook`, `controller`).
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Address of the plain HTTP admin listener (/healthz, /readyz, /metrics).
    #[arg(
        long,
        env = "IDAAS_PROJECTOR_ADMIN_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    pub admin_listen: std::net::SocketAddr,
    /// On SIGTERM, report not-ready for this long before closing the listener, so endpoints
    /// stop sending traffic first.
    #[arg(long, env = "IDAAS_PROJECTOR_SHUTDOWN_DELAY", default_value = "5s", value_parser = parse_duration)]
    pub shutdown_delay: Duration,
    /// How long in-flight requests may take to finish at shutdown.
    #[arg(long, env = "IDAAS_PROJECTOR_SHUTDOWN_GRACE", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
}

impl ServerArgs {
    /// The process settings with these parts.
    pub fn process(
        &self,
        webhook: Option<crate::webhook::Settings>,
        projector: Option<crate::process::Projector>,
    ) -> crate::process::Settings {
        crate::process::Settings {
            admin_listen: self.admin_listen,
            shutdown_delay: self.shutdown_delay,
            shutdown_grace: self.shutdown_grace,
            webhook,
            projector,
        }
    }
}

/// Outbound HTTPS flags of the commands that call IDaaS, an issuer or STS.
#[derive(Debug, Args)]
pub struct HttpArgs {
    /// PEM CA certificates trusted on top of the system roots.
    #[arg(long, env = "IDAAS_PROJECTOR_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Connect timeout of each request (DNS, TCP connect and TLS handshake).
    #[arg(long, env = "IDAAS_PROJECTOR_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Total timeout of each request.
    #[arg(long, env = "IDAAS_PROJECTOR_REQUEST_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub request_timeout: Duration,
}

impl HttpArgs {
    /// The IDaaS client's settings, sending requests only where `allowed` says (the projector's
    /// `--allowed-issuers`; the one-shot commands, where the user types the URL, allow any).
    pub fn config(&self, allowed: crate::idaas::AllowedOrigins) -> crate::idaas::HttpConfig {
        crate::idaas::HttpConfig {
            connect_timeout: self.connect_timeout,
            timeout: self.request_timeout,
            ca_file: self.ca_file.clone(),
            allowed,
        }
    }

    /// A plain client with these settings; a bad CA file is bad usage.
    pub fn client(&self) -> Result<reqwest::Client, CommandError> {
        let roots = match &self.ca_file {
            Some(path) => crate::http::load_ca_file(path).map_err(CommandError::Usage)?,
            None => Vec::new(),
        };
        let timeouts = crate::http::Timeouts {
            connect: self.connect_timeout,
            request: self.request_timeout,
        };
        crate::http::client(timeouts, &roots)
            .map_err(|e| CommandError::Failed(format!("cannot build the HTTP client: {e}")))
    }
}

/// Output format of the operator commands (`check`, `fingerprint`, `assume-role`, `doctor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

/// The `--output` flag of the operator commands.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Output format.
    #[arg(
        long,
        env = "IDAAS_PROJECTOR_OUTPUT",
        value_enum,
        default_value = "text"
    )]
    pub output: OutputFormat,
}

/// The value parser of duration flags: `90s`, `5m`, `12h`, `1h30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::time::parse_duration(s)
}

/// The value parser of duration flags whose default is a constant of the core
/// (`default_value_t = CONSTANT.into()`): the same syntax, in a type that prints as `5m`.
pub fn parse_duration_flag(s: &str) -> Result<humantime::Duration, String> {
    parse_duration(s).map(Into::into)
}

/// Exit status for a failed check or call.
pub const EXIT_FAILURE: u8 = 1;
/// Exit status for bad usage.
pub const EXIT_USAGE: u8 = 2;

/// Why a command did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// Bad flags or configuration (exit status 2).
    #[error("{0}")]
    Usage(String),
    /// A check or call failed, or a part of a long-running process stopped (exit status 1).
    #[error("{0}")]
    Failed(String),
}

impl CommandError {
    /// Bad usage, with this message.
    pub fn usage(m: impl Into<String>) -> Self {
        CommandError::Usage(m.into())
    }
}

impl From<crate::Error> for CommandError {
    fn from(e: crate::Error) -> Self {
        match e {
            crate::Error::Usage(m) => CommandError::Usage(m),
            other => CommandError::Failed(other.to_string()),
        }
    }
}

/// How a command tells its failure: the operator commands print one line for the person at
/// the terminal; the processes (servers, the init container) log it like everything else
/// they say, so it reaches their log pipeline in the chosen format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Voice {
    Terminal,
    Log,
}

/// The one mapping from a command's outcome to its exit status, telling the failure first.
pub fn exit_code(result: Result<(), CommandError>, voice: Voice) -> ExitCode {
    let (status, message) = match &result {
        Ok(()) => return ExitCode::SUCCESS,
        Err(CommandError::Usage(m)) => (EXIT_USAGE, m),
        Err(CommandError::Failed(m)) => (EXIT_FAILURE, m),
    };
    match (voice, status) {
        (Voice::Terminal, _) => eprintln!("error: {message}"),
        (Voice::Log, EXIT_USAGE) => tracing::error!("{message}"),
        (Voice::Log, _) => tracing::error!(error = %message, "stopped with an error"),
    }
    ExitCode::from(status)
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> ExitCode {
    use Voice::{Log, Terminal};
    match cli.command {
        Command::Serve(args) => exit_code(serve::run(*args).await, Log),
        Command::Webhook(args) => exit_code(webhook::run(args).await, Log),
        Command::Controller(args) => exit_code(controller::run(args).await, Log),
        Command::WaitForToken(args) => exit_code(wait::run(args).await, Log),
        Command::Dev(args) => exit_code(dev::run(args).await, Terminal),
        Command::Token(args) => exit_code(token::run(args).await, Terminal),
        Command::Check(args) => exit_code(check::run(args).await, Terminal),
        Command::Fingerprint(args) => exit_code(fingerprint::run(args).await, Terminal),
        Command::AssumeRole(args) => exit_code(assume_role::run(args).await, Terminal),
        Command::Doctor(args) => exit_code(doctor::run(args).await, Terminal),
        Command::Crd => exit_code(crd::run(), Terminal),
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
