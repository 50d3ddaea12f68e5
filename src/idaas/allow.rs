//! Where the IDaaS client may send requests: a list of allowed origins (`--allowed-issuers`).
//! Pure: parsing the patterns and matching a URL against them.
//!
//! A pattern is an origin `https://HOST[:PORT]`. `HOST` is a DNS name or an IP literal; a DNS name
//! may start with `*.`, which stands for one or more labels (`https://*.aliyunidaas.com` matches
//! `https://a.aliyunidaas.com` and `https://a.b.aliyunidaas.com`, not `https://aliyunidaas.com`).
//! Without a port the pattern matches port 443 only. Hosts compare case-insensitively (URLs are
//! parsed as the HTTP client parses them, so `https://evil.com\@x.aliyunidaas.com` is a URL of
//! `evil.com`). A URL with userinfo never matches.
//!
//! The one exception to `https`: `http://IP:PORT` with a loopback IP literal (`127.0.0.0/8` or
//! `[::1]`) and an explicit port, given literally, no wildcard: for local emulators (`dev`, the
//! tests). The default list, [`DEFAULT_ALLOWED_ISSUERS`], is https only.

use std::net::IpAddr;

use url::{Host, Url};

/// The default of `--allowed-issuers`.
pub const DEFAULT_ALLOWED_ISSUERS: &str = "https://*.aliyunidaas.com";

/// The valid form, for messages.
const VALID_FORM: &str = "an origin https://HOST[:PORT] whose HOST may start with \"*.\" \
     (e.g. https://*.aliyunidaas.com), or http://127.0.0.1:PORT for a local emulator";

/// One allowed origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPattern {
    scheme: String,
    /// A DNS name (lowercase, the part after `*.` for a wildcard) or an IP literal.
    host: Host<String>,
    /// `*.` in front of the host.
    wildcard: bool,
    port: u16,
    /// As given, for messages.
    text: String,
}

impl OriginPattern {
    /// Parses one pattern; the error says what is wrong and gives the valid form.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let text = raw.trim();
        let bad = |what: &str| format!("allowed issuer {text:?}: {what}; expected {VALID_FORM}");
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(bad("no scheme"));
        };
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "https" && scheme != "http" {
            return Err(bad("the scheme must be https"));
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@', '\\']) || rest.is_empty() {
            return Err(bad("only scheme, host and port are allowed"));
        }
        let (wildcard, hostport) = match rest.strip_prefix("*.") {
            Some(h) => (true, h),
            None => (false, rest),
        };
        if hostport.contains('*') {
            return Err(bad("\"*.\" may only start the host"));
        }
        let url =
            Url::parse(&format!("{scheme}://{hostport}/")).map_err(|e| bad(&e.to_string()))?;
        let host = url
            .host()
            .map(|h| h.to_owned())
            .ok_or_else(|| bad("no host"))?;
        let port = url.port_or_known_default().ok_or_else(|| bad("no port"))?;
        if wildcard {
            match &host {
                Host::Domain(d) if d.split('.').filter(|l| !l.is_empty()).count() >= 2 => {}
                _ => return Err(bad("\"*.\" needs a domain of at least two labels after it")),
            }
        }
        if scheme == "http" {
            let loopback = match &host {
                Host::Ipv4(ip) => IpAddr::V4(*ip).is_loopback(),
                Host::Ipv6(ip) => IpAddr::V6(*ip).is_loopback(),
                Host::Domain(_) => false,
            };
            if wildcard || !loopback || url.port().is_none() {
                return Err(bad(
                    "http is allowed only for a loopback IP with an explicit port",
                ));
            }
        }
        Ok(Self {
            scheme,
            host,
            wildcard,
            port,
            text: text.to_owned(),
        })
    }

    fn allows(&self, url: &Url) -> bool {
        if url.scheme() != self.scheme
            || url.port_or_known_default() != Some(self.port)
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return false;
        }
        match (url.host(), &self.host) {
            (Some(Host::Domain(d)), Host::Domain(want)) => {
                let d = d.to_ascii_lowercase();
                if self.wildcard {
                    d.len() > want.len() + 1
                        && d.ends_with(want.as_str())
                        && d[..d.len() - want.len()].ends_with('.')
                        && !d.starts_with('.')
                        && !d.contains("..")
                } else {
                    d == *want
                }
            }
            (Some(Host::Ipv4(a)), Host::Ipv4(b)) => !self.wildcard && a == *b,
            (Some(Host::Ipv6(a)), Host::Ipv6(b)) => !self.wildcard && a == *b,
            _ => false,
        }
    }
}

impl std::fmt::Display for OriginPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// The origins the client may send requests to; or any URL at all ([`AllowedOrigins::any`], for
/// the one-shot commands where the user types the URL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedOrigins {
    patterns: Option<Vec<OriginPattern>>,
}

impl Default for AllowedOrigins {
    /// [`DEFAULT_ALLOWED_ISSUERS`].
    fn default() -> Self {
        Self::parse(DEFAULT_ALLOWED_ISSUERS).expect("the default pattern is valid")
    }
}

impl AllowedOrigins {
    /// Comma-separated patterns (at least one).
    pub fn parse(list: &str) -> Result<Self, String> {
        let patterns = list
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(OriginPattern::parse)
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_patterns(patterns)
    }

    /// The given patterns (at least one).
    pub fn from_patterns(patterns: Vec<OriginPattern>) -> Result<Self, String> {
        if patterns.is_empty() {
            return Err(format!("no allowed issuer given; expected {VALID_FORM}"));
        }
        Ok(Self {
            patterns: Some(patterns),
        })
    }

    /// No restriction.
    pub fn any() -> Self {
        Self { patterns: None }
    }

    /// Whether a request may go to `url`.
    pub fn allows(&self, url: &Url) -> bool {
        match &self.patterns {
            None => true,
            Some(p) => p.iter().any(|p| p.allows(url)),
        }
    }

    /// Whether a request may go to the URL `raw` (an unparsable URL is not allowed).
    pub fn allows_str(&self, raw: &str) -> bool {
        Url::parse(raw).is_ok_and(|u| self.allows(&u))
    }
}

impl std::fmt::Display for AllowedOrigins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.patterns {
            None => f.write_str("*"),
            Some(p) => {
                let list: Vec<String> = p.iter().map(ToString::to_string).collect();
                f.write_str(&list.join(","))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(list: &str, url: &str) -> bool {
        AllowedOrigins::parse(list).unwrap().allows_str(url)
    }

    #[test]
    fn the_default_allows_idaas_instances_only() {
        let d = AllowedOrigins::default();
        for ok in [
            "https://abc.aliyunidaas.com/api/v2/iauths_system/oauth2",
            "https://a.b.aliyunidaas.com/token",
            "https://ABC.AliyunIDaaS.com/x",
            "https://abc.aliyunidaas.com:443/x",
        ] {
            assert!(d.allows_str(ok), "{ok}");
        }
        for no in [
            "https://aliyunidaas.com/x",
            "http://abc.aliyunidaas.com/x",
            "https://abc.aliyunidaas.com:8443/x",
            "https://x.aliyunidaas.com.evil.com/x",
            "https://evil.com\\@x.aliyunidaas.com/x",
            "https://evil.com#@x.aliyunidaas.com/x",
            "https://evil.com?@x.aliyunidaas.com/x",
            "https://user:pw@abc.aliyunidaas.com/x",
            "https://x.aliyunidaas.com@evil.com/x",
            "https://xaliyunidaas.com/x",
            "https://evil-aliyunidaas.com/x",
            "https://1.2.3.4/x",
            "not a url",
        ] {
            assert!(!d.allows_str(no), "{no}");
        }
    }

    #[test]
    fn literal_hosts_ports_and_ips() {
        assert!(allows(
            "https://idaas.example.com",
            "https://IDAAS.example.com/t"
        ));
        assert!(!allows(
            "https://idaas.example.com",
            "https://a.idaas.example.com/t"
        ));
        assert!(allows(
            "https://idaas.example.com:8443",
            "https://idaas.example.com:8443/"
        ));
        assert!(!allows(
            "https://idaas.example.com:8443",
            "https://idaas.example.com/"
        ));
        assert!(allows("https://10.0.0.1", "https://10.0.0.1/t"));
        // The HTTP client reads 0x0a.1 as 10.0.0.1, and so does the matcher.
        assert!(allows("https://10.0.0.1", "https://0x0a.0.0.1/t"));
        assert!(!allows("https://10.0.0.1", "https://10.0.0.2/t"));
        assert!(allows(
            "https://a.example/,https://b.example",
            "https://b.example/t"
        ));
        assert!(allows(
            "http://127.0.0.1:18080",
            "http://127.0.0.1:18080/api"
        ));
        assert!(!allows(
            "http://127.0.0.1:18080",
            "http://127.0.0.1:18081/api"
        ));
        assert!(!allows(
            "http://127.0.0.1:18080",
            "https://127.0.0.1:18080/api"
        ));
        assert!(!allows(
            "http://127.0.0.1:18080",
            "http://localhost:18080/api"
        ));
        assert!(allows("http://[::1]:9", "http://[::1]:9/"));
        assert!(AllowedOrigins::any().allows_str("http://anything.example/"));
    }

    #[test]
    fn bad_patterns_say_the_valid_form() {
        for bad in [
            "",
            "aliyunidaas.com",
            "ftp://x.example",
            "https://*.com",
            "https://*",
            "https://a.*.example.com",
            "https://*.example.com/path",
            "https://u@x.example.com",
            "https://x.example.com?q",
            "http://x.example.com",
            "http://127.0.0.1",
            "http://10.0.0.1:80",
            "http://*.0.0.1:80",
            "https://*.1.2.3.4",
            "https://exa mple.com",
        ] {
            let e = AllowedOrigins::parse(bad).unwrap_err();
            assert!(
                e.contains("expected an origin https://HOST[:PORT]"),
                "{bad}: {e}"
            );
        }
        assert!(OriginPattern::parse("https://*.aliyunidaas.com/").is_ok());
    }

    #[test]
    fn display_lists_the_patterns() {
        let a = AllowedOrigins::parse("https://*.aliyunidaas.com, https://x.example:8443").unwrap();
        assert_eq!(
            a.to_string(),
            "https://*.aliyunidaas.com,https://x.example:8443"
        );
    }
}
