//! `dev`: the whole chain on one machine. The IDaaS emulator issues RS256 tokens, the STS
//! emulator accepts them as RAM would, the projector keeps `<dir>/token` fresh, and the webhook
//! serves on localhost with a certificate whose CA is written to `<dir>/ca.pem`. The STS emulator
//! answers on plain HTTP and, with the webhook's certificate, on HTTPS (SDKs that only speak
//! HTTPS to STS, such as the Node.js credentials SDK, trust `ca.pem` for it).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use secrecy::SecretString;
use serde_json::json;
use tokio::task::JoinHandle;

use super::{CommandError, parse_duration};
use crate::admin::{self, Readiness};
use crate::controller::schedule::Backoff;
use crate::emulator::idaas::{EmulatorConfig, IdaasEmulator, OidcIssuer};
use crate::emulator::sts::{StsConfig, StsEmulator};
use crate::idaas::{AllowedOrigins, Assertion, Credential, HttpConfig, IdaasClient};
use crate::metrics::Metrics;
use crate::time::{format_duration, unix_now};
use crate::token_file::{keep_fresh, write_atomically};
use crate::webhook::limits::Limits;
use crate::webhook::mutate::MutateConfig;
use crate::webhook::review::Standalone;
use crate::webhook::{certs, server, tls};

/// The dev client application and resource server.
pub const CLIENT_ID: &str = "app_idaas_projector_dev";
pub const AUDIENCE: &str = "api://idaas-projector-dev";
pub const ROLE: &str = "idaas-projector-dev";
pub const ACCOUNT_ID: &str = "1234567890123456";

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Where the token file, the webhook CA (ca.pem) and dev.json (every endpoint) go.
    #[arg(long, env = "IDAAS_PROJECTOR_DIR", default_value = ".idaas-projector")]
    pub dir: PathBuf,
    /// Lifetime of the emulated tokens (default 120s, so that a refresh shows within a minute
    /// and a half); the projector refreshes at 2/3 of it.
    #[arg(long, env = "IDAAS_PROJECTOR_TOKEN_LIFETIME", value_parser = parse_duration)]
    pub token_lifetime: Option<Duration>,
    /// The webhook (HTTPS).
    #[arg(long, env = "IDAAS_PROJECTOR_LISTEN", default_value = "127.0.0.1:9443")]
    pub listen: SocketAddr,
    /// The admin server (/healthz, /readyz, /metrics).
    #[arg(
        long,
        env = "IDAAS_PROJECTOR_ADMIN_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub admin_listen: SocketAddr,
    /// The IDaaS emulator (plain HTTP).
    #[arg(
        long,
        env = "IDAAS_PROJECTOR_IDAAS_LISTEN",
        default_value = "127.0.0.1:18080"
    )]
    pub idaas_listen: SocketAddr,
    /// The STS emulator (plain HTTP).
    #[arg(
        long,
        env = "IDAAS_PROJECTOR_STS_LISTEN",
        default_value = "127.0.0.1:18081"
    )]
    pub sts_listen: SocketAddr,
    /// The STS emulator over HTTPS (certificate for localhost from the CA in ca.pem).
    #[arg(
        long,
        env = "IDAAS_PROJECTOR_STS_HTTPS_LISTEN",
        default_value = "127.0.0.1:18082"
    )]
    pub sts_https_listen: SocketAddr,
    /// How the projector authenticates to the IDaaS emulator: `client_secret` (a random secret
    /// made at start), or `federated_oidc` (no secret: an embedded OIDC issuer plays the
    /// cluster's ServiceAccount issuer and keeps a ServiceAccount token fresh in
    /// <dir>/serviceaccount-token, which the emulator's application trusts).
    #[arg(
        long,
        env = "IDAAS_PROJECTOR_DEV_AUTH",
        value_enum,
        default_value = "client_secret"
    )]
    pub auth: DevAuth,
}

/// How `dev`'s projector authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum DevAuth {
    ClientSecret,
    FederatedOidc,
}

/// `--auth federated_oidc`: the embedded cluster issuer and the ServiceAccount it signs for.
pub const DEV_CLUSTER_ISSUER: &str = "https://kubernetes.dev.idaas-projector.local";
pub const DEV_SERVICE_ACCOUNT: &str = "system:serviceaccount:dev:app";
pub const DEV_FEDERATION_AUDIENCE: &str = "idaas-projector-dev-federation";
pub const DEV_FEDERATED_CREDENTIAL: &str = "dev-cluster";
/// Lifetime of the ServiceAccount tokens; they are rewritten at half of it, as the kubelet does
/// for projected tokens (at 80%).
const DEV_SA_TOKEN_LIFETIME: Duration = Duration::from_secs(600);

fn err(what: &str, detail: impl std::fmt::Display) -> CommandError {
    CommandError::Failed(format!("{what}: {detail}"))
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}

/// `dev`'s default token lifetime: short, so that a refresh shows within a minute and a half.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(120);

impl DevArgs {
    pub fn token_lifetime(&self) -> Duration {
        self.token_lifetime.unwrap_or(DEFAULT_TOKEN_LIFETIME)
    }
}

type Stop = Shared<BoxFuture<'static, ()>>;

/// Runs `dev` until Ctrl-C or SIGTERM.
pub async fn run(args: DevArgs) -> Result<(), CommandError> {
    std::fs::create_dir_all(&args.dir).map_err(|x| err("cannot create --dir", x))?;
    // The default is dev's own choice, made for watching refreshes; only a lifetime the user
    // chose is worth a warning.
    if let Some(lifetime) = args.token_lifetime {
        warn_if_too_short(lifetime);
    }
    let dir = absolute(&args.dir);
    let client_secret = format!("dev-{:032x}", fastrand::u128(..));
    let cluster =
        (args.auth == DevAuth::FederatedOidc).then(|| OidcIssuer::new(DEV_CLUSTER_ISSUER));
    let (idaas, sts) = start_emulators(&args, &client_secret, cluster.as_ref()).await?;
    let metrics = Arc::new(Metrics::new());
    let readiness = Arc::new(Readiness::default());
    readiness.set_caches_synced();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop: Stop = async move {
        let mut rx = stop_rx;
        let _ = rx.wait_for(|s| *s).await;
    }
    .boxed()
    .shared();
    let ca_file = dir.join("ca.pem");
    let tls_config = local_tls(&ca_file, &metrics, &readiness)?;
    let webhook = start_webhook(&args, &sts, tls_config.clone(), &metrics)?;
    let sts_https = sts
        .serve_https(args.sts_https_listen, tls_config)
        .await
        .map_err(|x| {
            err(
                "STS emulator (HTTPS)",
                format!("{} ({x})", args.sts_https_listen),
            )
        })?;
    let admin_listener = admin::bind(args.admin_listen)
        .await
        .map_err(|x| err("admin server", format!("{} ({x})", args.admin_listen)))?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|x| err("admin server", x))?;
    let admin_task = tokio::spawn(admin::serve(
        admin_listener,
        metrics.clone(),
        readiness.clone(),
        stop.clone(),
    ));
    let token_file = dir.join("token");
    let assertion_file = dir.join("serviceaccount-token");
    let (credential, auth) =
        projector_credential(cluster, client_secret, &assertion_file, stop.clone())?;
    let projector = start_projector(&idaas, credential, &token_file, stop.clone())?;
    let mut info = json!({
        "issuer": idaas.issuer(),
        "token_endpoint": idaas.token_endpoint(),
        "jwks_uri": idaas.jwks_uri(),
        "client_id": CLIENT_ID,
        "audience": AUDIENCE,
        "sts_endpoint": sts.endpoint(),
        "sts_https_endpoint": format!("https://localhost:{}", sts_https.port()),
        "role_arn": sts.role_arn(ROLE),
        "oidc_provider_arn": sts.oidc_provider_arn(),
        "token_file": token_file,
        "webhook": format!("https://localhost:{}/mutate", webhook.addr.port()),
        "ca_file": ca_file,
        "admin": format!("http://{admin_addr}"),
        "auth": auth,
    });
    if args.auth == DevAuth::FederatedOidc {
        info["client_assertion_file"] = json!(assertion_file);
        info["federated_credential_name"] = json!(DEV_FEDERATED_CREDENTIAL);
    }
    let info_file = dir.join("dev.json");
    let info_text = serde_json::to_string_pretty(&info).unwrap_or_default() + "\n";
    write_atomically(&info_file, info_text.as_bytes()).map_err(|x| err("dev.json", x))?;
    print_banner(&info, &info_file, args.token_lifetime());

    crate::process::shutdown_signal().await;
    tracing::info!("stopping");
    readiness.set_shutting_down();
    let _ = stop_tx.send(true);
    webhook
        .handle
        .graceful_shutdown(Some(Duration::from_secs(5)));
    let _ = webhook.task.await;
    let _ = projector.await;
    let _ = admin_task.await;
    idaas.shutdown();
    sts.shutdown();
    Ok(())
}

/// wait-for-token wants a token valid for more than 60 s after the wait.
fn warn_if_too_short(lifetime: Duration) {
    if lifetime < Duration::from_secs(180) {
        tracing::warn!(
            lifetime = %format_duration(lifetime),
            "wait-for-token wants a token valid for more than 60 s: with tokens this short it \
             waits through the last part of each token's life until the next refresh"
        );
    }
}

/// The IDaaS emulator with the dev client application, and the STS emulator trusting it.
async fn start_emulators(
    args: &DevArgs,
    client_secret: &str,
    cluster: Option<&OidcIssuer>,
) -> Result<(IdaasEmulator, StsEmulator), CommandError> {
    // With a cluster issuer, the application trusts its ServiceAccount tokens.
    let federated_credentials = cluster
        .map(|c| {
            c.trusted_as(
                DEV_FEDERATED_CREDENTIAL,
                DEV_FEDERATION_AUDIENCE,
                DEV_SERVICE_ACCOUNT,
            )
        })
        .into_iter()
        .collect();
    let idaas = IdaasEmulator::start_on(
        args.idaas_listen,
        EmulatorConfig {
            client_id: CLIENT_ID.to_owned(),
            client_secret: client_secret.to_owned(),
            audience: AUDIENCE.to_owned(),
            scopes_granted: vec![".all".to_owned()],
            token_lifetime: args.token_lifetime(),
            client_public_key_pem: None,
            federated_credentials,
        },
    )
    .await
    .map_err(|x| err("IDaaS emulator", format!("{} ({x})", args.idaas_listen)))?;
    let sts = StsEmulator::start_on(
        args.sts_listen,
        StsConfig {
            issuer: idaas.issuer(),
            jwks_uri: idaas.jwks_uri(),
            client_ids: vec![AUDIENCE.to_owned()],
            issuance_limit: Duration::from_secs(12 * 3600),
            account_id: ACCOUNT_ID.to_owned(),
            oidc_provider_name: "idaas-projector-dev".to_owned(),
            max_session_duration: Duration::from_secs(3600),
        },
    )
    .await
    .map_err(|x| err("STS emulator", format!("{} ({x})", args.sts_listen)))?;
    Ok((idaas, sts))
}

/// The running webhook.
struct DevWebhook {
    addr: SocketAddr,
    handle: axum_server::Handle<SocketAddr>,
    task: JoinHandle<std::io::Result<()>>,
}

/// A CA written to `ca_file` for clients to trust, and a TLS configuration serving a
/// certificate from it for `localhost` and `127.0.0.1` (the webhook's and the HTTPS STS
/// emulator's).
fn local_tls(
    ca_file: &Path,
    metrics: &Arc<Metrics>,
    readiness: &Arc<Readiness>,
) -> Result<Arc<rustls::ServerConfig>, CommandError> {
    let now = unix_now();
    let validity = Duration::from_secs(30 * 24 * 3600);
    let ca = certs::make_ca(now, validity).map_err(|x| err("certificate", x))?;
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let serving =
        certs::make_serving(&ca, &names, now, validity).map_err(|x| err("certificate", x))?;
    std::fs::write(ca_file, &ca.cert.pem).map_err(|x| err("ca.pem", x))?;
    let store = Arc::new(tls::CertStore::default());
    let chain = format!("{}{}", serving.cert.pem, ca.cert.pem);
    let pair = tls::load_pair(chain.as_bytes(), serving.key_pem.as_bytes())
        .map_err(|x| err("certificate", x))?;
    tls::install(&store, pair, metrics, readiness);
    Ok(Arc::new(
        tls::server_config(store).map_err(|x| err("TLS", x))?,
    ))
}

/// The webhook on localhost with `tls_config`, injecting the STS emulator's OIDC provider by
/// default.
fn start_webhook(
    args: &DevArgs,
    sts: &StsEmulator,
    tls_config: Arc<rustls::ServerConfig>,
    metrics: &Arc<Metrics>,
) -> Result<DevWebhook, CommandError> {
    let listener = std::net::TcpListener::bind(args.listen)
        .map_err(|x| err("webhook", format!("{} ({x})", args.listen)))?;
    let addr = listener.local_addr().map_err(|x| err("webhook", x))?;
    let state = Arc::new(server::WebhookState {
        config: MutateConfig {
            default_oidc_provider_arn: Some(sts.oidc_provider_arn()),
            ..MutateConfig::default()
        },
        resolver: Arc::new(Standalone),
        metrics: metrics.clone(),
        bodies: Default::default(),
    });
    let handle = axum_server::Handle::new();
    let task = tokio::spawn(server::serve_tls(
        listener,
        tls_config,
        state,
        Limits::default(),
        handle.clone(),
    ));
    Ok(DevWebhook { addr, handle, task })
}

/// The projector for a file: keeps `token_file` fresh from the IDaaS emulator until `stop`.
fn start_projector(
    idaas: &IdaasEmulator,
    credential: Credential,
    token_file: &Path,
    stop: Stop,
) -> Result<JoinHandle<()>, CommandError> {
    // Requests go to the emulator's origin only (plain http on loopback, given literally).
    let allowed = AllowedOrigins::parse(&idaas.origin()).map_err(|x| err("IDaaS client", x))?;
    let config = HttpConfig {
        allowed,
        ..HttpConfig::default()
    };
    let client = IdaasClient::new(&config).map_err(|x| err("IDaaS client", x))?;
    let request = idaas.token_request(credential);
    let file = token_file.to_owned();
    Ok(tokio::spawn(async move {
        keep_fresh(&client, &request, &file, Backoff::DEFAULT, stop).await
    }))
}

/// How the projector authenticates, and its name for dev.json: with a cluster issuer, its
/// ServiceAccount token (kept fresh in `assertion_file`); else the client secret.
fn projector_credential(
    cluster: Option<OidcIssuer>,
    client_secret: String,
    assertion_file: &Path,
    stop: Stop,
) -> Result<(Credential, &'static str), CommandError> {
    Ok(match cluster {
        Some(cluster) => {
            keep_service_account_token(cluster, assertion_file, stop)?;
            let credential = Credential::FederatedOidc {
                credential_name: DEV_FEDERATED_CREDENTIAL.to_owned(),
                assertion: Assertion::File(assertion_file.to_owned()),
            };
            (credential, "federated_oidc")
        }
        None => {
            let client_secret = SecretString::from(client_secret);
            (
                Credential::ClientSecretPost { client_secret },
                "client_secret_post",
            )
        }
    })
}

/// Plays the kubelet for a projected ServiceAccount token: writes a token of the dev
/// ServiceAccount to `file` now, and again at half its lifetime, until `stop`.
fn keep_service_account_token(
    cluster: OidcIssuer,
    file: &Path,
    stop: Stop,
) -> Result<(), CommandError> {
    let write = move |file: &Path| {
        let token = cluster.token(
            DEV_SERVICE_ACCOUNT,
            DEV_FEDERATION_AUDIENCE,
            DEV_SA_TOKEN_LIFETIME,
        );
        write_atomically(file, token.as_bytes())
    };
    write(file).map_err(|x| err("ServiceAccount token file", x))?;
    let file = file.to_owned();
    tokio::spawn(async move {
        let mut stop = std::pin::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(DEV_SA_TOKEN_LIFETIME / 2) => {}
            }
            if let Err(e) = write(&file) {
                tracing::warn!(file = %file.display(), error = %e, "cannot write the ServiceAccount token");
            }
        }
    });
    Ok(())
}

/// What runs where, and what an SDK needs.
fn print_banner(info: &serde_json::Value, info_file: &Path, lifetime: Duration) {
    let s = |k: &str| info[k].as_str().unwrap_or_default().to_owned();
    let (token, ca, webhook) = (s("token_file"), s("ca_file"), s("webhook"));
    println!(
        "idaas-projector dev is running (Ctrl-C stops it)

  IDaaS emulator   {issuer}
  STS emulator     {sts} and {sts_https} (CA: {ca})
  token file       {token} (refreshed at 2/3 of {lifetime})
  webhook          {webhook} (CA: {ca})
  admin            {admin}/metrics
  everything above {info}

An Alibaba Cloud SDK reads these (the STS endpoint is the emulator's; SDKs take it in code:
sts_endpoint=\"{sts}\" with the Python credentials SDK; stsEndpoint:
\"{sts_https_host}\" with the Node.js one, which calls STS over HTTPS only, so start node with
NODE_EXTRA_CA_CERTS={ca}):

export ALIBABA_CLOUD_ROLE_ARN={role}
export ALIBABA_CLOUD_OIDC_PROVIDER_ARN={provider}
export ALIBABA_CLOUD_OIDC_TOKEN_FILE={token}
export ALIBABA_CLOUD_ROLE_SESSION_NAME=idaas-projector-dev

Send the webhook a sample AdmissionReview:

curl -s --cacert {ca} -H 'Content-Type: application/json' --data @docs/examples/admission-review.json {webhook}
",
        issuer = s("issuer"),
        sts = s("sts_endpoint"),
        sts_https = s("sts_https_endpoint"),
        sts_https_host = s("sts_https_endpoint").trim_start_matches("https://"),
        lifetime = format_duration(lifetime),
        admin = s("admin"),
        info = info_file.display(),
        role = s("role_arn"),
        provider = s("oidc_provider_arn"),
    );
}
