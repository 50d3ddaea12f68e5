//! Outbound HTTPS, in one place: the `User-Agent`, CA files (`--ca-file`, `spec`-level private
//! CAs), the one `reqwest` client builder, error chains fit for one line, and URLs shown without
//! secrets.
//!
//! Used by the IDaaS client, the commands that call IDaaS or STS, and the STS emulator.

use std::path::Path;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

/// The `User-Agent` of every request.
pub const USER_AGENT: &str = concat!("idaas-projector/", env!("CARGO_PKG_VERSION"));

/// Server-provided text in a message is cut to this many characters.
pub const MAX_SERVER_TEXT: usize = 200;

/// Reads the PEM certificates of a CA file. Every block must parse as X.509 and at least one
/// must be there. The error names the file and says what is wrong with it.
pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bad = |what: String| format!("CA file {}: {what}", path.display());
    let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let mut certs = Vec::new();
    for der in CertificateDer::pem_slice_iter(&pem) {
        let der = der.map_err(|e| bad(format!("bad PEM: {e}")))?;
        x509_parser::parse_x509_certificate(&der).map_err(|_| {
            bad(format!(
                "certificate {} is not valid X.509",
                certs.len() + 1
            ))
        })?;
        certs.push(der);
    }
    if certs.is_empty() {
        return Err(bad("no PEM CERTIFICATE block".to_owned()));
    }
    Ok(certs)
}

/// How a client connects.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP + TLS connect.
    pub connect: Duration,
    /// The whole request.
    pub request: Duration,
}

/// The one way this crate builds an HTTP client: the given timeouts, the project's
/// `User-Agent`, the system roots plus `extra_roots`, and no redirects (a token endpoint that
/// redirects would get the client's credentials re-sent elsewhere).
pub fn client(
    timeouts: Timeouts,
    extra_roots: &[CertificateDer<'static>],
) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(timeouts.connect)
        .timeout(timeouts.request)
        .user_agent(USER_AGENT)
        .redirect(reqwest::redirect::Policy::none());
    if !extra_roots.is_empty() {
        let certs = extra_roots
            .iter()
            .map(|c| reqwest::Certificate::from_der(c))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| error_chain(&e))?;
        builder = builder.tls_certs_merge(certs);
    }
    builder.build().map_err(|e| error_chain(&e))
}

/// An error and its sources, `: `-joined on one line, each part once, without reqwest's
/// ` for url (...)` (the caller names the URL, without its secrets: [`display_url`]).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = match err.downcast_ref::<reqwest::Error>() {
            Some(r) => {
                let s = r.to_string();
                match s.find(" for url (") {
                    Some(i) => s[..i].to_owned(),
                    None => s,
                }
            }
            None => err.to_string(),
        };
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(server_text(&text));
        }
        next = err.source();
    }
    parts.join(": ")
}

/// Text from a server (or an error that may quote one) made one line and at most
/// [`MAX_SERVER_TEXT`] characters, with `…` where it was cut.
pub fn server_text(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_SERVER_TEXT)
        .collect();
    if s.chars().count() > MAX_SERVER_TEXT {
        out.push('…');
    }
    out.trim().to_owned()
}

/// A URL fit for messages and logs: no userinfo, query or fragment.
pub fn display_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "<invalid URL>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_url_strips_secrets() {
        assert_eq!(
            display_url("https://user:pw@host:8443/p/token?client_secret=x#f"),
            "https://host:8443/p/token"
        );
        assert_eq!(display_url("::"), "<invalid URL>");
    }

    #[test]
    fn server_text_is_one_short_line() {
        assert_eq!(server_text(" a\nb\tc "), "a b c");
        let long = "x".repeat(MAX_SERVER_TEXT + 5);
        assert_eq!(server_text(&long).chars().count(), MAX_SERVER_TEXT + 1);
        assert!(server_text(&long).ends_with('…'));
    }

    #[test]
    fn ca_files_must_hold_certificates() {
        let dir = std::env::temp_dir().join(format!("idaas-projector-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "nothing here\n").unwrap();
        assert!(
            load_ca_file(&empty)
                .unwrap_err()
                .contains("no PEM CERTIFICATE block")
        );
        let junk = dir.join("junk.pem");
        std::fs::write(
            &junk,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(load_ca_file(&junk).unwrap_err().contains("not valid X.509"));
        assert!(
            load_ca_file(&dir.join("missing.pem"))
                .unwrap_err()
                .contains("cannot read it")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
