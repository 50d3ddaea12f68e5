//! `doctor`: the flags of [`crate::doctor`], which explains one pod's or workload's credentials
//! end to end, read-only, and its output. Exit status 1 when a step failed.

use clap::{Args, ValueEnum};

use super::{CommandError, HttpArgs, OutputArgs, OutputFormat};
use crate::doctor::report::Report;
use crate::doctor::{self, AssumeRoleSettings, Kind, Settings};
use crate::idaas::AllowedOrigins;
use crate::ram::names::{
    MAX_SESSION_DURATION_SECS, MIN_SESSION_DURATION_SECS, is_region_id, validate_oidc_provider_arn,
};
use crate::webhook::annotations::{is_dns_label, is_dns_subdomain};

/// What to look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    Pod,
    Deployment,
    Statefulset,
    Daemonset,
    Job,
    Cronjob,
}

impl From<KindArg> for Kind {
    fn from(k: KindArg) -> Self {
        match k {
            KindArg::Pod => Kind::Pod,
            KindArg::Deployment => Kind::Deployment,
            KindArg::Statefulset => Kind::StatefulSet,
            KindArg::Daemonset => Kind::DaemonSet,
            KindArg::Job => Kind::Job,
            KindArg::Cronjob => Kind::CronJob,
        }
    }
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// What to look at: a running pod, or a workload (its pod template).
    #[arg(value_enum)]
    pub kind: KindArg,
    /// Its name.
    pub name: String,
    /// Its namespace; default: the kubeconfig context's (in a pod: its own).
    #[arg(short, long, env = "IDAAS_PROJECTOR_NAMESPACE")]
    pub namespace: Option<String>,
    /// Also call STS AssumeRoleWithOIDC with the token and the role the pod gets (secrets
    /// redacted).
    #[arg(long, env = "IDAAS_PROJECTOR_ASSUME_ROLE")]
    pub assume_role: bool,
    /// With --assume-role: the STS endpoint URL; default the pod's STS region's endpoint, else
    /// https://sts.aliyuncs.com.
    #[arg(long, env = "IDAAS_PROJECTOR_STS_ENDPOINT")]
    pub sts_endpoint: Option<String>,
    /// With --assume-role: validity of the credentials in seconds (900..43200).
    #[arg(long, env = "IDAAS_PROJECTOR_DURATION", default_value_t = 3600)]
    pub duration: u64,
    /// The webhook's --default-oidc-provider-arn, for comparisons made without a dry run.
    #[arg(long, env = "IDAAS_PROJECTOR_DEFAULT_OIDC_PROVIDER_ARN")]
    pub default_oidc_provider_arn: Option<String>,
    /// The webhook's --default-sts-region, for comparisons made without a dry run.
    #[arg(long, env = "IDAAS_PROJECTOR_DEFAULT_STS_REGION")]
    pub default_sts_region: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub http: HttpArgs,
}

/// The flags checked, as the core's settings (without the namespace, which may come from the
/// kubeconfig).
fn settings(args: &DoctorArgs, namespace: String) -> Result<Settings, CommandError> {
    if !is_dns_subdomain(&args.name) {
        return Err(CommandError::usage(format!(
            "{:?} is not a Kubernetes object name",
            args.name
        )));
    }
    if !is_dns_label(&namespace) {
        return Err(CommandError::usage(format!(
            "--namespace {namespace:?} is not a namespace name"
        )));
    }
    if let Some(arn) = &args.default_oidc_provider_arn {
        validate_oidc_provider_arn(arn).map_err(|why| {
            CommandError::usage(format!("--default-oidc-provider-arn {arn:?}: {why}"))
        })?;
    }
    if let Some(region) = &args.default_sts_region
        && !is_region_id(region)
    {
        return Err(CommandError::usage(format!(
            "--default-sts-region {region:?} is not a region ID such as cn-hangzhou"
        )));
    }
    let assume_role = if args.assume_role {
        if let Some(e) = &args.sts_endpoint {
            crate::sts::endpoint(Some(e), None, false).map_err(CommandError::usage)?;
        }
        if !(MIN_SESSION_DURATION_SECS..=MAX_SESSION_DURATION_SECS).contains(&args.duration) {
            return Err(CommandError::usage(format!(
                "--duration {} must be between {MIN_SESSION_DURATION_SECS} and {MAX_SESSION_DURATION_SECS} seconds",
                args.duration
            )));
        }
        Some(AssumeRoleSettings {
            client: args.http.client()?,
            endpoint: args.sts_endpoint.clone(),
            duration_secs: args.duration,
        })
    } else {
        None
    };
    Ok(Settings {
        kind: args.kind.into(),
        namespace,
        name: args.name.clone(),
        default_oidc_provider_arn: args.default_oidc_provider_arn.clone(),
        default_sts_region: args.default_sts_region.clone(),
        http: args.http.config(AllowedOrigins::any()),
        assume_role,
        now: crate::time::unix_now(),
    })
}

/// Runs `doctor` with this Kubernetes client (the kubeconfig's, or another in tests).
pub async fn run_with(client: kube::Client, args: DoctorArgs) -> Result<(), CommandError> {
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let settings = settings(&args, namespace)?;
    if let Some(path) = &args.http.ca_file {
        crate::http::load_ca_file(path).map_err(CommandError::Usage)?;
    }
    let report = doctor::diagnose(&client, &settings)
        .await
        .map_err(|e| CommandError::Failed(e.to_string()))?;
    match args.output.output {
        OutputFormat::Text => println!("{}", report.text()),
        OutputFormat::Json => println!("{}", report.json()),
    }
    outcome(&report)
}

/// The command's outcome for a report: a failure (exit status 1) when a step failed; warnings
/// and skipped steps do not count.
pub fn outcome(report: &Report) -> Result<(), CommandError> {
    let failed = report.failed();
    match failed.len() {
        0 => Ok(()),
        n => Err(CommandError::Failed(format!(
            "{n} step{} failed: {}",
            if n == 1 { "" } else { "s" },
            failed.join(", ")
        ))),
    }
}

/// Runs `doctor` with the kubeconfig's (or the in-cluster) Kubernetes client.
pub async fn run(args: DoctorArgs) -> Result<(), CommandError> {
    let client = kube::Client::try_default().await.map_err(|e| {
        CommandError::usage(format!(
            "no usable Kubernetes configuration (KUBECONFIG, ~/.kube/config or in-cluster): {e}"
        ))
    })?;
    run_with(client, args).await
}
