//! `token`: fetch one IDaaS M2M token like the IDaaS curl example, or keep a file fresh with
//! `--out FILE --watch` (the projector for hosts without Kubernetes).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use secrecy::{ExposeSecret, SecretString};

use super::{CommandError, HttpArgs, parse_duration};
use crate::controller::schedule;
use crate::idaas::{
    AllowedOrigins, Assertion, Credential, FetchedToken, IdaasClient, TokenRequest,
};
use crate::time::{rfc3339, unix_now};
use crate::token_file::{keep_fresh, write_atomically};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum AuthMethod {
    ClientSecretPost,
    ClientSecretBasic,
    PrivateKeyJwt,
    /// An IDaaS application federated credential: an OIDC token (e.g. a Kubernetes
    /// ServiceAccount token) from --client-assertion-file, no secret.
    FederatedOidc,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The IDaaS OIDC issuer URL; the token's `iss` must equal it.
    #[arg(long, env = "IDAAS_PROJECTOR_ISSUER")]
    pub issuer: String,
    /// The M2M client application's client_id.
    #[arg(long, env = "IDAAS_PROJECTOR_CLIENT_ID")]
    pub client_id: String,
    /// The resource server's audience identifier.
    #[arg(long, env = "IDAAS_PROJECTOR_AUDIENCE")]
    pub audience: String,
    /// A permission to request (repeat for several); sent as `<audience>|<scope>`.
    #[arg(
        long = "scope",
        env = "IDAAS_PROJECTOR_SCOPES",
        value_delimiter = ',',
        default_value = ".all"
    )]
    pub scopes: Vec<String>,
    /// Client authentication at the token endpoint.
    #[arg(
        long,
        env = "IDAAS_PROJECTOR_AUTH_METHOD",
        value_enum,
        default_value = "client_secret_post"
    )]
    pub auth_method: AuthMethod,
    /// File holding the client secret (a trailing newline is ignored); not together with
    /// --client-secret / IDAAS_PROJECTOR_CLIENT_SECRET.
    #[arg(long, env = "IDAAS_PROJECTOR_CLIENT_SECRET_FILE")]
    pub client_secret_file: Option<PathBuf>,
    /// The client secret. Prefer the environment variable or --client-secret-file: a value on the
    /// command line is visible to other users of the host.
    #[arg(long, env = "IDAAS_PROJECTOR_CLIENT_SECRET", hide_env_values = true)]
    pub client_secret: Option<String>,
    /// PEM private key for private_key_jwt.
    #[arg(long, env = "IDAAS_PROJECTOR_PRIVATE_KEY_FILE")]
    pub private_key_file: Option<PathBuf>,
    /// federated_oidc: the name of the application federated credential in IDaaS.
    #[arg(long, env = "IDAAS_PROJECTOR_FEDERATED_CREDENTIAL_NAME")]
    pub federated_credential_name: Option<String>,
    /// federated_oidc: the file holding the OIDC token sent as the client assertion, read again
    /// before every request (another agent keeps it fresh: a projected ServiceAccount token, a
    /// CI system's OIDC token).
    #[arg(long, env = "IDAAS_PROJECTOR_CLIENT_ASSERTION_FILE")]
    pub client_assertion_file: Option<PathBuf>,
    /// Token endpoint; default: OIDC discovery, else {issuer}/token.
    #[arg(long, env = "IDAAS_PROJECTOR_TOKEN_ENDPOINT")]
    pub token_endpoint: Option<String>,
    /// JWKS URL; default: OIDC discovery, else {issuer}/jwks.
    #[arg(long, env = "IDAAS_PROJECTOR_JWKS_URI")]
    pub jwks_uri: Option<String>,
    /// RAM's "earliest issuance time allowed" (1h..168h).
    #[arg(long, env = "IDAAS_PROJECTOR_MAX_TOKEN_AGE", default_value = "12h", value_parser = parse_duration)]
    pub max_token_age: Duration,
    /// Write the token to this file (mode 0600, replaced atomically, no trailing newline).
    #[arg(long, env = "IDAAS_PROJECTOR_OUT")]
    pub out: Option<PathBuf>,
    /// With --out: keep the file fresh by the projector's refresh rule until stopped.
    #[arg(long, env = "IDAAS_PROJECTOR_WATCH", requires = "out")]
    pub watch: bool,
    /// Print the token itself on stdout.
    #[arg(long, env = "IDAAS_PROJECTOR_SHOW_TOKEN")]
    pub show_token: bool,
    #[command(flatten)]
    pub http: HttpArgs,
}

fn read_secret_file(path: &Path, what: &str) -> Result<SecretString, CommandError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CommandError::Usage(format!("cannot read {what} file {}: {e}", path.display()))
    })?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(CommandError::Usage(format!(
            "{what} file {} is empty",
            path.display()
        )));
    }
    Ok(SecretString::from(trimmed.to_owned()))
}

fn request(args: &TokenArgs) -> Result<TokenRequest, CommandError> {
    let age = args.max_token_age;
    if age < Duration::from_secs(3600) || age > Duration::from_secs(168 * 3600) {
        return Err(CommandError::Usage(
            "--max-token-age must be between 1h and 168h".to_owned(),
        ));
    }
    let secret = || -> Result<SecretString, CommandError> {
        match (&args.client_secret_file, &args.client_secret) {
            (Some(_), Some(_)) => Err(CommandError::Usage(
                "the client secret is given twice, by --client-secret-file and by --client-secret \
                 (or IDAAS_PROJECTOR_CLIENT_SECRET): give it one way only, preferably the file"
                    .to_owned(),
            )),
            (Some(path), None) => read_secret_file(path, "client secret"),
            (None, Some(s)) if !s.trim().is_empty() => Ok(SecretString::from(s.trim().to_owned())),
            _ => Err(CommandError::Usage(
                "a client secret is needed: --client-secret-file FILE or IDAAS_PROJECTOR_CLIENT_SECRET"
                    .to_owned(),
            )),
        }
    };
    let credential = match args.auth_method {
        AuthMethod::ClientSecretPost => Credential::ClientSecretPost {
            client_secret: secret()?,
        },
        AuthMethod::ClientSecretBasic => Credential::ClientSecretBasic {
            client_secret: secret()?,
        },
        AuthMethod::PrivateKeyJwt => {
            let path = args.private_key_file.as_ref().ok_or_else(|| {
                CommandError::Usage(
                    "--auth-method private_key_jwt needs --private-key-file".to_owned(),
                )
            })?;
            Credential::PrivateKeyJwt {
                private_key_pem: read_secret_file(path, "private key")?,
            }
        }
        AuthMethod::FederatedOidc => federated(args)?,
    };
    Ok(TokenRequest {
        issuer: args.issuer.clone(),
        token_endpoint: args.token_endpoint.clone(),
        jwks_uri: args.jwks_uri.clone(),
        audience: args.audience.clone(),
        scopes: args.scopes.clone(),
        client_id: args.client_id.clone(),
        credential,
        max_token_age: age,
    })
}

/// `federated_oidc`: the credential's name and the assertion file (checked readable now; read
/// again before every request).
fn federated(args: &TokenArgs) -> Result<Credential, CommandError> {
    let usage =
        |what: &str| CommandError::Usage(format!("--auth-method federated_oidc needs {what}"));
    let name = args
        .federated_credential_name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| usage("--federated-credential-name NAME"))?;
    let path = args
        .client_assertion_file
        .clone()
        .ok_or_else(|| usage("--client-assertion-file FILE"))?;
    read_secret_file(&path, "client assertion")?;
    Ok(Credential::FederatedOidc {
        credential_name: name.to_owned(),
        assertion: Assertion::File(path),
    })
}

fn summary(t: &FetchedToken, max_age: i64) -> String {
    let c = &t.claims;
    let p = schedule::plan(c.iat, c.exp, max_age, 0.0);
    format!(
        "token_type: Bearer\nalg: {}\nkid: {}\niss: {}\nsub: {}\naud: {}\nissued_at: {}\nexpires_at: {}\nusable_until: {} (min of exp and iat + max token age)\nrefresh_at: {}",
        c.alg,
        c.kid.as_deref().unwrap_or("-"),
        c.iss,
        c.sub.as_deref().unwrap_or("-"),
        c.aud.join(","),
        rfc3339(c.iat),
        rfc3339(c.exp),
        rfc3339(p.deadline),
        rfc3339(p.refresh_at),
    )
}

/// Runs `token`.
pub async fn run(args: TokenArgs) -> Result<(), CommandError> {
    let req = request(&args)?;
    let client = IdaasClient::new(&args.http.config(AllowedOrigins::any()))
        .map_err(|e| CommandError::Usage(e.to_string()))?;
    let max_age = args.max_token_age.as_secs() as i64;

    if !args.watch {
        let t = client
            .fetch_token(&req, unix_now())
            .await
            .map_err(|e| CommandError::Failed(e.to_string()))?;
        println!("{}", summary(&t, max_age));
        if let Some(out) = &args.out {
            write_atomically(out, t.token.expose_secret().as_bytes()).map_err(|e| {
                CommandError::Failed(format!("cannot write {}: {e}", out.display()))
            })?;
            println!("written: {}", out.display());
        }
        if args.show_token {
            println!("access_token: {}", t.token.expose_secret());
        }
        return Ok(());
    }

    let out = args.out.clone().unwrap_or_default();
    keep_fresh(
        &client,
        &req,
        &out,
        schedule::Backoff::DEFAULT,
        crate::process::shutdown_signal(),
    )
    .await;
    Ok(())
}
