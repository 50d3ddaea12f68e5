//! The `token_response` fuzz harness, run by `fuzz/fuzz_targets/token_response.rs` and by
//! `tests/fuzz_regressions.rs`, so a crash found by the fuzzer replays through exactly the same
//! code under plain `cargo test`.
//!
//! Input: a token endpoint response body, optionally followed by a NUL byte and a JWKS body.
//! The body goes through [`parse_token_response`]; its `access_token` through
//! [`jwt::decode_unverified`], [`crate::ram::check_claims`] (fixed expectations and clock) and
//! [`jwt::verify_signature`] against the input's JWKS when it parses, else [`fixed_jwks`].
//! Besides "never panics", the harness checks that nothing but `verify_signature`'s yes/no
//! depends on the token's signature part: the same token with a canary signature decodes to the
//! same claims or error, fails verification with the same error, and no message or `Debug`
//! output quotes the canary. A token that verifies against the fixed keys must also decode (only
//! the seeds are signed with them).

use crate::idaas::client::parse_token_response;
use crate::idaas::jwt;
use crate::ram::Expectations;
use jsonwebtoken::jwk::JwkSet;
use secrecy::{ExposeSecret as _, SecretString};

/// The clock of every check: 2025-06-15T15:06:40Z.
pub const NOW: i64 = 1_750_000_000;

/// The issuer the seed tokens are minted for.
pub const ISSUER: &str = "https://fuzz.aliyunidaas.com/api/v2/iauths_system/oauth2";

/// Public halves of an RSA-2048 and a P-256 key generated once to sign the seed tokens (the
/// private halves were discarded).
const FIXED_JWKS: &str = r#"{"keys": [{"kty": "RSA", "use": "sig", "alg": "RS256", "kid": "fuzz-rsa-1", "n": "r1zUoQGSnluJLHneeXWILP2siDgyxZQZwkgsJJs9-7olm0QQU2gYoHGBGF9962LpgAHRwLC7yqln6TvtIljTg8Is-wOfdKnQPV5vZAtT3pg6qw0usmdJutdxKOkM2qLGogAz1NBPQjaTxGWHviF7AWdisweD8wwyyx5PXBpV_8rHw_smKCLgyFcRTDYf2xf-faAjE4ivNSviaI-mVVaOBegC8zqwPFRY4HLf4yDCQQsuhTGFXVsZzJfU7DdQOLdLmXX6HID4Fraz35q3bH_pR2r_dJ2Bw-QrDKBYXgTrSqYAoWLHgFEvhA_EsJ27qT7bexrlGnCrCzDHknxwX1PIvw", "e": "AQAB"}, {"kty": "EC", "use": "sig", "alg": "ES256", "kid": "fuzz-ec-1", "crv": "P-256", "x": "Rvb28Wth8_JmwqiVw7MOLCaMG7CsvEJmdJJ6dQfyhWw", "y": "0P2MUAFqzU3oUXc-AWdmwt2DEpupswcrmdLyUynTm1E"}]}"#;

/// The JWKS used when the input carries none (or one that does not parse).
pub fn fixed_jwks() -> JwkSet {
    serde_json::from_str(FIXED_JWKS).expect("the fixed JWKS parses")
}

/// What RAM is told to expect.
pub fn expectations() -> Expectations {
    Expectations {
        issuer: ISSUER.to_owned(),
        audiences: vec!["api://payments".to_owned()],
        max_token_age_secs: 12 * 3600,
        leeway_secs: 60,
    }
}

/// What one input led to, for regression tests that assert more than "no panic".
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// `parse_token_response` accepted the body.
    pub parsed: bool,
    pub expires_in: Option<i64>,
    /// `decode_unverified` accepted the token.
    pub decoded: bool,
    /// `check_claims` passed.
    pub claims_ok: bool,
    /// `verify_signature` passed.
    pub signature_ok: bool,
}

/// A signature part no token carries and no signature verifies: swapped in for the token's own
/// to show that nothing but `verify_signature`'s yes/no depends on the signature.
const CANARY: &str = "ZnV6ei1jYW5hcnktc2lnbmF0dXJl";

/// Runs the parse and every check; panics on any violated property.
pub fn run(data: &[u8]) -> Outcome {
    let (body, jwks) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (
            &data[..nul],
            serde_json::from_slice::<JwkSet>(&data[nul + 1..]).ok(),
        ),
        None => (data, None),
    };
    let own_jwks = jwks.is_some();
    let jwks = jwks.unwrap_or_else(fixed_jwks);

    let mut outcome = Outcome::default();
    let response = match parse_token_response(body) {
        Ok(r) => r,
        Err(_static_reason) => return outcome,
    };
    outcome.parsed = true;
    outcome.expires_in = response.expires_in;
    let token = response.access_token.expose_secret();
    assert!(!token.is_empty(), "an empty access_token is refused");
    assert_eq!(
        format!("{:?}", response.access_token),
        format!("{:?}", SecretString::from("x")),
        "the access_token's Debug depends on the token"
    );
    // The same token with the canary as its last dot-separated part, when it has one and the
    // rest does not already contain the canary.
    let canary_token = token
        .rsplit_once('.')
        .filter(|(signed, _)| !signed.contains(CANARY))
        .map(|(signed, _)| format!("{signed}.{CANARY}"));
    let assert_no_canary = |message: String, what: &str| {
        assert!(
            !message.contains(CANARY),
            "{what} quotes the signature part"
        );
    };

    let decoded = jwt::decode_unverified(token);
    if let Some(canary_token) = &canary_token {
        let with_canary = jwt::decode_unverified(canary_token);
        assert_eq!(
            decoded, with_canary,
            "decoding depends on the signature part"
        );
        match with_canary {
            Ok(claims) => assert_no_canary(format!("{claims:?}"), "TokenClaims' Debug"),
            Err(e) => assert_no_canary(e.to_string(), "a decode error"),
        }
    }
    if let Ok(claims) = &decoded {
        outcome.decoded = true;
        outcome.claims_ok = crate::ram::check_claims(claims, &expectations(), NOW).is_ok();
    }

    let verified = jwt::verify_signature(token, &jwks);
    if let Some(canary_token) = &canary_token {
        let with_canary = jwt::verify_signature(canary_token, &jwks);
        let e = with_canary.expect_err("the canary signature never verifies");
        if verified.is_err() {
            assert_eq!(
                verified,
                Err(e.clone()),
                "a signature error depends on the signature part"
            );
        }
        assert_no_canary(e.to_string(), "a signature error");
    }
    if verified.is_ok() {
        outcome.signature_ok = true;
        if !own_jwks {
            // Only the seeds are signed with the fixed keys, and no one can forge RSA or ECDSA:
            // a token that verifies has a seed's header and payload, which decode.
            assert!(outcome.decoded, "a verified seed token also decodes");
        }
    }
    outcome
}
