//! `fingerprint`: the SHA-1 certificate fingerprint(s) RAM's OIDC identity provider wants for an
//! issuer URL.
//!
//! RAM's console asks for the fingerprint of the certificate at the top of the chain the issuer's
//! HTTPS server sends (the last certificate it sends), as 40 hexadecimal digits without colons.
//! This command connects with rustls (system roots plus `--ca-file`, the chain is verified),
//! prints every certificate the server sends and marks that one. When the issuer's OIDC
//! discovery document names a `jwks_uri` on another host (or port), that host is shown too: RAM
//! fetches the JWKS from there, and an OIDC IdP holds up to five fingerprints.
//!
//! `--compare FP` (repeatable) plans a rotation: it fails (exit 1) when the marked certificate of
//! some host is none of the given fingerprints, that is when RAM's IdP must be updated first.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use rustls_pki_types::{CertificateDer, ServerName};
use serde::Serialize;

use super::{CommandError, HttpArgs, OutputArgs, OutputFormat};
use crate::http::{display_url, error_chain};
use crate::time::rfc3339;

#[derive(Debug, Args)]
pub struct FingerprintArgs {
    /// The OIDC issuer URL (https), e.g. https://xxx.aliyunidaas.com/api/v2/iauths_system/oauth2.
    #[arg(env = "IDAAS_PROJECTOR_ISSUER")]
    pub url: String,
    /// A fingerprint RAM's OIDC IdP holds now (repeat for several; colons and case do not
    /// matter). Exit 1 when the certificate RAM wants is none of them.
    #[arg(
        long = "compare",
        env = "IDAAS_PROJECTOR_COMPARE",
        value_delimiter = ','
    )]
    pub compare: Vec<String>,
    /// Do not read the OIDC discovery document (only the issuer's own host is shown).
    #[arg(long, env = "IDAAS_PROJECTOR_NO_DISCOVERY")]
    pub no_discovery: bool,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub http: HttpArgs,
}

/// One certificate as the server sent it.
#[derive(Debug, Clone, Serialize)]
pub struct CertInfo {
    /// Position in the chain the server sent (0 = its own certificate).
    pub index: usize,
    pub subject: String,
    pub issuer: String,
    pub not_after: String,
    /// SHA-1 of the DER, 40 uppercase hex digits, no colons (RAM's console form).
    pub sha1: String,
    /// Whether this is the certificate RAM's OIDC IdP wants (the last one sent).
    pub ram: bool,
}

/// One host that was looked at.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointReport {
    /// `issuer` or `jwks_uri`.
    pub role: &'static str,
    pub url: String,
    pub host: String,
    pub port: u16,
    pub certificates: Vec<CertInfo>,
    /// The fingerprint RAM wants for this host.
    pub ram_fingerprint: String,
    /// With --compare: whether one of the given fingerprints equals it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matches: Option<bool>,
}

/// SHA-1 of `der` as 40 uppercase hex digits without colons.
pub fn sha1_hex(der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, der);
    digest.as_ref().iter().map(|b| format!("{b:02X}")).collect()
}

/// Normalises a user-given fingerprint (colons, spaces, any case) to RAM's form, or says why
/// it is not one.
pub fn normalize_fingerprint(fp: &str) -> Result<String, String> {
    let clean: String = fp
        .chars()
        .filter(|c| !matches!(c, ':' | ' ' | '-'))
        .collect::<String>()
        .to_ascii_uppercase();
    if clean.len() == 40 && clean.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(clean)
    } else {
        Err(format!(
            "--compare {fp:?} is not a SHA-1 fingerprint (40 hex digits, colons allowed)"
        ))
    }
}

fn describe_cert(index: usize, der: &[u8]) -> CertInfo {
    let sha1 = sha1_hex(der);
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => CertInfo {
            index,
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            not_after: rfc3339(cert.validity().not_after.timestamp()),
            sha1,
            ram: false,
        },
        Err(_) => CertInfo {
            index,
            subject: "(not parseable X.509)".to_owned(),
            issuer: "-".to_owned(),
            not_after: "-".to_owned(),
            sha1,
            ram: false,
        },
    }
}

fn tls_config(extra: &[CertificateDer<'static>]) -> Result<rustls::ClientConfig, CommandError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!(error = %e, "cannot load some system root certificates");
    }
    roots.add_parsable_certificates(native.certs);
    for cert in extra {
        roots.add(cert.clone()).map_err(|e| {
            CommandError::Usage(format!("a certificate of --ca-file is not usable: {e}"))
        })?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CommandError::Failed(format!("TLS configuration: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The host, port and TLS server name of an https URL.
fn target(raw: &str, what: &str) -> Result<(url::Url, String, u16, ServerName<'static>), String> {
    let url = url::Url::parse(raw).map_err(|e| format!("{what} {raw:?} is not a URL: {e}"))?;
    if url.scheme() != "https" {
        return Err(format!(
            "{what} {raw:?} is not https: RAM only accepts an https issuer"
        ));
    }
    let (host, name) = match url.host() {
        Some(url::Host::Domain(d)) => (
            d.to_owned(),
            ServerName::try_from(d.to_owned())
                .map_err(|e| format!("{what} {raw:?}: bad host name: {e}"))?,
        ),
        Some(url::Host::Ipv4(ip)) => (ip.to_string(), ServerName::IpAddress(ip.into())),
        Some(url::Host::Ipv6(ip)) => (ip.to_string(), ServerName::IpAddress(ip.into())),
        None => return Err(format!("{what} {raw:?} has no host")),
    };
    let port = url.port_or_known_default().unwrap_or(443);
    Ok((url, host, port, name))
}

/// Why a TLS handshake failed, in one line with a hint.
fn tls_reason(e: &std::io::Error) -> String {
    use rustls::{CertificateError, Error};
    match e.get_ref().and_then(|i| i.downcast_ref::<Error>()) {
        Some(Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {
            "the certificate chain does not lead to a trusted root (unknown issuer); if the issuer uses a private CA, pass its certificate with --ca-file".to_owned()
        }
        Some(Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => "the certificate is not valid for this host name".to_owned(),
        Some(Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        )) => "the certificate has expired".to_owned(),
        Some(other) => other.to_string(),
        None => e.to_string(),
    }
}

/// Connects to `host:port`, verifies the chain and returns the certificates the server sent.
async fn peer_chain(
    config: Arc<rustls::ClientConfig>,
    host: &str,
    port: u16,
    name: ServerName<'static>,
    timeout: Duration,
) -> Result<Vec<CertificateDer<'static>>, CommandError> {
    let failed = |m: String| CommandError::Failed(m);
    let addrs: Vec<_> =
        match tokio::time::timeout(timeout, tokio::net::lookup_host((host.to_owned(), port))).await
        {
            Err(_) => {
                return Err(failed(format!(
                    "DNS: resolving {host} timed out after {timeout:?}"
                )));
            }
            Ok(Err(e)) => return Err(failed(format!("DNS: cannot resolve {host}: {e}"))),
            Ok(Ok(addrs)) => addrs.collect(),
        };
    if addrs.is_empty() {
        return Err(failed(format!("DNS: {host} has no address")));
    }
    let mut last = String::new();
    let mut stream = None;
    for addr in &addrs {
        match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                stream = Some(s);
                break;
            }
            Ok(Err(e)) => last = format!("TCP: cannot connect to {host}:{port} ({addr}): {e}"),
            Err(_) => {
                last =
                    format!("TCP: connecting to {host}:{port} ({addr}) timed out after {timeout:?}")
            }
        }
    }
    let stream = stream.ok_or_else(|| failed(last))?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let tls = match tokio::time::timeout(timeout, connector.connect(name, stream)).await {
        Err(_) => {
            return Err(failed(format!(
                "TLS: the handshake with {host}:{port} timed out after {timeout:?}"
            )));
        }
        Ok(Err(e)) => {
            return Err(failed(format!(
                "TLS: handshake with {host}:{port} failed: {}",
                tls_reason(&e)
            )));
        }
        Ok(Ok(tls)) => tls,
    };
    let chain = tls
        .get_ref()
        .1
        .peer_certificates()
        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect::<Vec<_>>())
        .unwrap_or_default();
    if chain.is_empty() {
        return Err(failed(format!("TLS: {host}:{port} sent no certificate")));
    }
    Ok(chain)
}

async fn inspect(
    config: Arc<rustls::ClientConfig>,
    role: &'static str,
    raw: &str,
    timeout: Duration,
) -> Result<EndpointReport, CommandError> {
    let (url, host, port, name) = target(raw, role).map_err(CommandError::Failed)?;
    let chain = peer_chain(config, &host, port, name, timeout).await?;
    let mut certificates: Vec<CertInfo> = chain
        .iter()
        .enumerate()
        .map(|(i, der)| describe_cert(i, der))
        .collect();
    let last = certificates.last_mut().expect("non-empty chain");
    last.ram = true;
    let ram_fingerprint = last.sha1.clone();
    Ok(EndpointReport {
        role,
        url: display_url(url.as_str()),
        host,
        port,
        certificates,
        ram_fingerprint,
        matches: None,
    })
}

/// The `jwks_uri` of the issuer's discovery document; `Ok(None)` when none is served (404).
async fn discover_jwks_uri(args: &FingerprintArgs) -> Result<Option<String>, CommandError> {
    let http = args.http.client()?;
    let url = format!(
        "{}/.well-known/openid-configuration",
        args.url.trim_end_matches('/')
    );
    let shown = display_url(&url);
    let answer = http.get(&url).send().await.map_err(|e| {
        CommandError::Failed(format!(
            "HTTP: OIDC discovery GET {shown} failed: {}",
            error_chain(&e)
        ))
    })?;
    let status = answer.status();
    if status == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !status.is_success() {
        return Err(CommandError::Failed(format!(
            "HTTP: OIDC discovery GET {shown} answered {status}"
        )));
    }
    let body = answer.bytes().await.map_err(|e| {
        CommandError::Failed(format!(
            "HTTP: OIDC discovery GET {shown}: {}",
            error_chain(&e)
        ))
    })?;
    let doc: serde_json::Value = serde_json::from_slice(&body).map_err(|_| {
        CommandError::Failed(format!(
            "HTTP: OIDC discovery GET {shown} did not answer JSON"
        ))
    })?;
    Ok(doc
        .get("jwks_uri")
        .and_then(|v| v.as_str())
        .map(str::to_owned))
}

fn print_text(reports: &[EndpointReport]) {
    for r in reports {
        println!(
            "{} {} -> {}:{}: {} certificate(s) sent",
            r.role,
            r.url,
            r.host,
            r.port,
            r.certificates.len()
        );
        for c in &r.certificates {
            let mark = if c.ram {
                "   <- RAM OIDC IdP fingerprint (top of the chain the server sends)"
            } else {
                ""
            };
            println!("  [{}] subject:   {}", c.index, c.subject);
            println!("      issuer:    {}", c.issuer);
            println!("      not after: {}", c.not_after);
            println!("      SHA-1:     {}{mark}", c.sha1);
        }
        println!("fingerprint for RAM ({}): {}", r.role, r.ram_fingerprint);
    }
}

/// Runs `fingerprint`.
pub async fn run(args: FingerprintArgs) -> Result<(), CommandError> {
    target(&args.url, "the issuer URL").map_err(CommandError::Usage)?;
    let compare = args
        .compare
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| normalize_fingerprint(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(CommandError::Usage)?;
    let extra = match &args.http.ca_file {
        Some(path) => crate::http::load_ca_file(path).map_err(CommandError::Usage)?,
        None => Vec::new(),
    };
    let config = Arc::new(tls_config(&extra)?);

    let issuer = inspect(
        config.clone(),
        "issuer",
        &args.url,
        args.http.connect_timeout,
    )
    .await?;
    let mut reports = vec![issuer];
    if !args.no_discovery {
        match discover_jwks_uri(&args).await? {
            None => eprintln!(
                "note: the issuer serves no OIDC discovery document (404); only its own host is shown"
            ),
            Some(jwks_uri) => match target(&jwks_uri, "jwks_uri") {
                Err(why) => eprintln!("warning: {why}; its host is not shown"),
                Ok((_, host, port, _)) => {
                    if (host.as_str(), port) != (reports[0].host.as_str(), reports[0].port) {
                        reports.push(
                            inspect(
                                config.clone(),
                                "jwks_uri",
                                &jwks_uri,
                                args.http.connect_timeout,
                            )
                            .await?,
                        );
                    }
                }
            },
        }
    }

    let mut mismatched = Vec::new();
    if !compare.is_empty() {
        for r in &mut reports {
            let ok = compare.contains(&r.ram_fingerprint);
            r.matches = Some(ok);
            if !ok {
                mismatched.push(format!(
                    "{} {}: the certificate RAM checks is now {} (subject {}), which is none of the given fingerprints; add it to RAM's OIDC identity provider (it holds up to 5) before the rotation, or AssumeRoleWithOIDC will fail",
                    r.role,
                    r.host,
                    r.ram_fingerprint,
                    r.certificates.last().map(|c| c.subject.as_str()).unwrap_or("-"),
                ));
            }
        }
    }
    let ok = mismatched.is_empty();
    match args.output.output {
        OutputFormat::Text => {
            print_text(&reports);
            if !compare.is_empty() && ok {
                println!("compare: match (RAM's OIDC IdP already holds the expected fingerprint)");
            }
        }
        OutputFormat::Json => {
            let v = serde_json::json!({ "endpoints": reports, "ok": ok });
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
    }
    if ok {
        Ok(())
    } else {
        Err(CommandError::Failed(format!(
            "compare: no match: {}",
            mismatched.join("; ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_normalised() {
        let fp = "ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef:01";
        assert_eq!(
            normalize_fingerprint(fp).unwrap(),
            "ABCDEF0123456789ABCDEF0123456789ABCDEF01"
        );
        assert!(normalize_fingerprint("abc").is_err());
        assert!(normalize_fingerprint(&"g".repeat(40)).is_err());
    }

    #[test]
    fn sha1_of_empty_input() {
        assert_eq!(sha1_hex(b""), "DA39A3EE5E6B4B0D3255BFEF95601890AFD80709");
    }

    #[test]
    fn only_https_urls() {
        assert!(target("http://example.com", "u").is_err());
        assert!(target("not a url", "u").is_err());
        let (_, host, port, _) = target("https://example.com/a/b", "u").unwrap();
        assert_eq!((host.as_str(), port), ("example.com", 443));
    }
}
