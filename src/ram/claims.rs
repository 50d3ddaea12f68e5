//! The claim checks RAM's AssumeRoleWithOIDC applies to a token, implemented once: every check
//! gives one [`Check`] (passed, failed with the [`CheckError`] and a detail, or skipped and why).
//! `check` renders the list; the projector and the STS emulator enforce it with
//! [`check_claims`]. Pure: the caller passes `now`.

use serde::Serialize;

use super::code;
use crate::idaas::{CheckError, TokenClaims};
use crate::time::rfc3339;

/// The signature algorithms RAM accepts (asymmetric only; RAM rejects HS256).
pub const ACCEPTED_ALGORITHMS: [&str; 8] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
];

/// Clock skew RAM allows for an `iat` in the future.
pub const IAT_LEEWAY_SECS: u64 = 60;

/// What a token must satisfy (the projector's and the STS emulator's view: everything known).
#[derive(Debug, Clone)]
pub struct Expectations {
    pub issuer: String,
    /// `aud` must contain one of these (RAM's OIDC provider allows up to 50 client IDs).
    pub audiences: Vec<String>,
    /// RAM's "earliest issuance time allowed", in seconds.
    pub max_token_age_secs: u64,
    /// Allowed clock skew for `iat` in the future.
    pub leeway_secs: u64,
}

/// What the checks compare with; `None` or empty skips that check (`check` without
/// `--issuer` or `--audience`).
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    pub issuer: Option<&'a str>,
    pub audiences: &'a [String],
    pub issuance_limit_secs: u64,
    pub leeway_secs: u64,
}

impl Expectations {
    /// What the projector enforces on an M2MToken's token (and `doctor` checks the token in its
    /// Secret against): `iss` is `spec.issuer`, `aud` contains `spec.audience`, issued within
    /// `maxTokenAge`, with RAM's clock skew.
    pub fn new(issuer: &str, audience: &str, max_token_age: std::time::Duration) -> Self {
        Self {
            issuer: issuer.to_owned(),
            audiences: vec![audience.to_owned()],
            max_token_age_secs: max_token_age.as_secs(),
            leeway_secs: IAT_LEEWAY_SECS,
        }
    }

    /// Every check enforced.
    pub fn rules(&self) -> Rules<'_> {
        Rules {
            issuer: Some(&self.issuer),
            audiences: &self.audiences,
            issuance_limit_secs: self.max_token_age_secs,
            leeway_secs: self.leeway_secs,
        }
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pass,
    Fail,
    /// Not run: a flag was not given or an earlier check makes it meaningless.
    Skipped,
    /// Could not be run although RAM will run it (the signature, when no JWKS was available).
    Warning,
}

impl Outcome {
    /// `PASS`, `FAIL`, `SKIP`, `WARN`: how `check` and `doctor` print it.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::Skipped => "SKIP",
            Outcome::Warning => "WARN",
        }
    }
}

/// One check, named by RAM's error code for it.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ram_code: &'static str,
    pub result: Outcome,
    pub detail: String,
    /// The rejection, when the check failed.
    #[serde(skip)]
    pub error: Option<CheckError>,
}

impl Check {
    pub fn new(
        name: &'static str,
        ram_code: &'static str,
        result: Outcome,
        detail: String,
    ) -> Self {
        Self {
            name,
            ram_code,
            result,
            detail,
            error: None,
        }
    }

    fn pass(name: &'static str, detail: String) -> Self {
        Self::new(name, code_of(name), Outcome::Pass, detail)
    }

    fn skipped(name: &'static str, detail: String) -> Self {
        Self::new(name, code_of(name), Outcome::Skipped, detail)
    }

    fn fail(name: &'static str, error: CheckError, detail: String) -> Self {
        Self {
            ram_code: error.ram_code(),
            error: Some(error),
            ..Self::new(name, code_of(name), Outcome::Fail, detail)
        }
    }
}

/// The check names, in the order they run, with RAM's code for each.
pub const CHECKS: [(&str, &str); 7] = [
    ("jwt", code::INVALID),
    ("algorithm", code::INVALID),
    ("issuer", code::ISSUER_NOT_MATCH),
    ("audience", code::AUDIENCE_NOT_MATCH),
    ("expiry", code::EXPIRED),
    ("issuance_time", code::ISSUE_TIME_INVALID),
    ("signature", code::INVALID_SIGNATURE),
];

/// RAM's code for a check name.
pub fn code_of(name: &str) -> &'static str {
    CHECKS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(code::INVALID, |(_, c)| c)
}

/// The claim checks, in RAM's order: asymmetric `alg`, `iss`, `aud`, `exp`, then `iat` (at
/// most `leeway_secs` in the future and at most `issuance_limit_secs` in the past).
pub fn claim_checks(claims: &TokenClaims, rules: &Rules<'_>, now: i64) -> Vec<Check> {
    vec![
        algorithm(claims),
        issuer(claims, rules.issuer),
        audience(claims, rules.audiences),
        expiry(claims, now),
        issuance_time(claims, rules, now),
    ]
}

/// Enforces the claim checks: the first failure, if any.
pub fn check_claims(
    claims: &TokenClaims,
    expect: &Expectations,
    now: i64,
) -> Result<(), CheckError> {
    match claim_checks(claims, &expect.rules(), now)
        .into_iter()
        .find_map(|c| c.error)
    {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn algorithm(claims: &TokenClaims) -> Check {
    if ACCEPTED_ALGORITHMS.contains(&claims.alg.as_str()) {
        Check::pass("algorithm", format!("alg {} is asymmetric", claims.alg))
    } else {
        let e = CheckError::SymmetricAlgorithm(claims.alg.clone());
        let detail = e.to_string();
        Check::fail("algorithm", e, detail)
    }
}

fn issuer(claims: &TokenClaims, want: Option<&str>) -> Check {
    match want {
        None => Check::skipped(
            "issuer",
            format!(
                "no --issuer given (the token's iss is {:?}; RAM compares it with the IdP's issuer URL)",
                claims.iss
            ),
        ),
        Some(want) if claims.iss == want => Check::pass("issuer", format!("iss equals {want:?}")),
        Some(want) => {
            let e = CheckError::IssuerNotMatch {
                got: claims.iss.clone(),
                want: want.to_owned(),
            };
            let detail = e.to_string();
            Check::fail("issuer", e, detail)
        }
    }
}

fn audience(claims: &TokenClaims, audiences: &[String]) -> Check {
    if audiences.is_empty() {
        return Check::skipped(
            "audience",
            format!(
                "no --audience given (the token's aud is {:?}; RAM requires one of the IdP's Client IDs)",
                claims.aud
            ),
        );
    }
    match claims.aud.iter().find(|a| audiences.contains(a)) {
        Some(a) => Check::pass("audience", format!("aud contains the client ID {a:?}")),
        None => Check::fail(
            "audience",
            CheckError::AudienceNotMatch {
                got: claims.aud.clone(),
                want: audiences.join(", "),
            },
            format!(
                "aud {:?} contains none of the client IDs {:?}{}",
                claims.aud,
                audiences,
                app_id_hint(audiences, &claims.aud).unwrap_or_default()
            ),
        ),
    }
}

/// An IDaaS M2M application ID (`app_...`, the token's client) given where RAM wants an
/// audience: the usual mix-up between IDaaS's client ID and RAM's "Client ID".
fn app_id_hint(audiences: &[String], aud: &[String]) -> Option<String> {
    let app = audiences.iter().find(|a| a.starts_with("app_"))?;
    Some(format!(
        "; {app:?} looks like an IDaaS M2M application ID: RAM's Client ID is an audience the \
         token carries in aud (the resource server's identifier, here {aud:?}); add that to the \
         OIDC provider's Client IDs and pass it to --audience"
    ))
}

fn expiry(claims: &TokenClaims, now: i64) -> Check {
    // i128 arithmetic: claims come from outside and may be extreme.
    let (now, exp) = (now as i128, claims.exp as i128);
    if exp <= now {
        Check::fail(
            "expiry",
            CheckError::Expired { exp: claims.exp },
            format!(
                "the token expired at {} ({} s ago)",
                rfc3339(claims.exp),
                now - exp
            ),
        )
    } else {
        Check::pass(
            "expiry",
            format!("expires at {} (in {} s)", rfc3339(claims.exp), exp - now),
        )
    }
}

fn issuance_time(claims: &TokenClaims, rules: &Rules<'_>, now: i64) -> Check {
    let (now, iat) = (now as i128, claims.iat as i128);
    let limit = rules.issuance_limit_secs;
    if iat > now + rules.leeway_secs as i128 {
        Check::fail(
            "issuance_time",
            CheckError::IssuedInFuture { iat: claims.iat },
            format!(
                "iat {} is {} s in the future (more than {} s of clock skew)",
                rfc3339(claims.iat),
                iat - now,
                rules.leeway_secs
            ),
        )
    } else if now - iat > limit as i128 {
        Check::fail(
            "issuance_time",
            CheckError::IssuedTooLongAgo {
                iat: claims.iat,
                limit_secs: limit,
            },
            format!(
                "issued at {} ({} s ago), longer ago than the issuance limit of {limit} s; fetch a new token",
                rfc3339(claims.iat),
                now - iat,
            ),
        )
    } else {
        Check::pass(
            "issuance_time",
            format!(
                "issued at {} ({} s ago), within the issuance limit of {limit} s",
                rfc3339(claims.iat),
                (now - iat).max(0),
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> TokenClaims {
        TokenClaims {
            alg: "RS256".into(),
            kid: Some("k".into()),
            iss: "https://i".into(),
            sub: None,
            aud: vec!["a".into()],
            iat: 1000,
            exp: 5000,
        }
    }

    fn rules<'a>(issuer: Option<&'a str>, audiences: &'a [String], limit: u64) -> Rules<'a> {
        Rules {
            issuer,
            audiences,
            issuance_limit_secs: limit,
            leeway_secs: IAT_LEEWAY_SECS,
        }
    }

    #[test]
    fn every_claim_check_reports() {
        let a = ["a".to_owned()];
        let c = claim_checks(&claims(), &rules(Some("https://i"), &a, 3600), 2000);
        assert!(c.iter().all(|c| c.result == Outcome::Pass), "{c:?}");
        let c = claim_checks(&claims(), &rules(None, &[], 3600), 2000);
        assert_eq!(c[1].result, Outcome::Skipped);
        assert_eq!(c[2].result, Outcome::Skipped);
        let b = ["b".to_owned()];
        let c = claim_checks(&claims(), &rules(Some("x"), &b, 600), 6000);
        let failed: Vec<_> = c
            .iter()
            .filter(|c| c.result == Outcome::Fail)
            .map(|c| c.ram_code)
            .collect();
        assert_eq!(
            failed,
            [
                code::ISSUER_NOT_MATCH,
                code::AUDIENCE_NOT_MATCH,
                code::EXPIRED,
                "AuthenticationFail.OIDCToken.IssueTimeInvalid"
            ]
        );
        assert!(
            c.iter()
                .all(|c| (c.result == Outcome::Fail) == c.error.is_some())
        );
    }

    #[test]
    fn enforcement_is_the_first_failure() {
        let expect = Expectations {
            issuer: "https://i".into(),
            audiences: vec!["b".into()],
            max_token_age_secs: 600,
            leeway_secs: IAT_LEEWAY_SECS,
        };
        assert_eq!(
            check_claims(&claims(), &expect, 6000),
            Err(CheckError::AudienceNotMatch {
                got: vec!["a".into()],
                want: "b".into()
            })
        );
        let future = TokenClaims {
            iat: 2100,
            ..claims()
        };
        let expect = Expectations {
            audiences: vec!["a".into()],
            ..expect
        };
        assert_eq!(
            check_claims(&future, &expect, 2000),
            Err(CheckError::IssuedInFuture { iat: 2100 })
        );
        assert_eq!(check_claims(&claims(), &expect, 1500), Ok(()));
    }

    #[test]
    fn an_app_id_given_as_audience_gets_a_hint() {
        let app = ["app_payments".to_owned()];
        let c = audience(&claims(), &app);
        assert_eq!(c.result, Outcome::Fail);
        assert!(
            c.detail.contains("looks like an IDaaS M2M application ID")
                && c.detail.contains(r#"["a"]"#),
            "{}",
            c.detail
        );
        // An audience that is not an app ID: no hint.
        let other = ["api://other".to_owned()];
        assert!(
            !audience(&claims(), &other)
                .detail
                .contains("application ID")
        );
        // An app ID the token does carry in aud passes, with no hint.
        let token = TokenClaims {
            aud: vec!["app_payments".into()],
            ..claims()
        };
        let c = audience(&token, &app);
        assert_eq!(c.result, Outcome::Pass);
        assert!(!c.detail.contains("application ID"));
    }

    #[test]
    fn every_check_has_its_code() {
        for (name, c) in CHECKS {
            assert_eq!(code_of(name), c);
        }
    }
}
