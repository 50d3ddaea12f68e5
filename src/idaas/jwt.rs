//! Pure token checks, as RAM's AssumeRoleWithOIDC applies them.
//!
//! Nothing here does I/O or reads the clock: the caller passes `now`. Error messages never
//! contain any part of the token itself (only claim values the checks are about: `iss`, `aud`,
//! `iat`, `exp`, `alg`, `kid`).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};

use super::CheckError;
use crate::ram::claims::ACCEPTED_ALGORITHMS;

/// The claims the projector and RAM care about.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TokenClaims {
    pub alg: String,
    pub kid: Option<String>,
    pub iss: String,
    pub sub: Option<String>,
    /// `aud` as a list (a single string becomes one element).
    pub aud: Vec<String>,
    pub iat: i64,
    pub exp: i64,
}

/// Splits a compact JWS into its three parts, or says why it is not one.
fn split(token: &str) -> Result<(&str, &str, &str), CheckError> {
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(s), None) => {
            if h.is_empty() || p.is_empty() {
                Err(not_jwt("empty header or payload"))
            } else {
                Ok((h, p, s))
            }
        }
        _ => Err(not_jwt("expected three dot-separated parts")),
    }
}

fn not_jwt(reason: &str) -> CheckError {
    CheckError::NotJwt(reason.to_owned())
}

/// Decodes one base64url part into a JSON object; `what` names the part in the error.
fn json_part(part: &str, what: &str) -> Result<Map<String, Value>, CheckError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| CheckError::NotJwt(format!("the {what} is not base64url")))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(CheckError::NotJwt(format!(
            "the {what} is not a JSON object"
        ))),
        Err(_) => Err(CheckError::NotJwt(format!("the {what} is not JSON"))),
    }
}

/// A required string member.
fn string(map: &Map<String, Value>, name: &str, what: &str) -> Result<String, CheckError> {
    match map.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) => Err(CheckError::NotJwt(format!("the {what} has no {name}"))),
        Some(_) => Err(CheckError::NotJwt(format!("{name} is not a string"))),
    }
}

/// An optional string member (`null` counts as absent).
fn opt_string(map: &Map<String, Value>, name: &str) -> Result<Option<String>, CheckError> {
    match map.get(name) {
        Some(Value::String(s)) => Ok(Some(s.clone())),
        None | Some(Value::Null) => Ok(None),
        Some(_) => Err(CheckError::NotJwt(format!("{name} is not a string"))),
    }
}

/// A required NumericDate: an integer or a float (truncated towards negative infinity).
fn numeric_date(map: &Map<String, Value>, name: &str) -> Result<i64, CheckError> {
    let n = match map.get(name) {
        Some(Value::Number(n)) => n,
        None | Some(Value::Null) => {
            return Err(CheckError::NotJwt(format!("the payload has no {name}")));
        }
        Some(_) => return Err(CheckError::NotJwt(format!("{name} is not a number"))),
    };
    if let Some(i) = n.as_i64() {
        return Ok(i);
    }
    match n.as_f64() {
        // The bounds keep the conversion exact enough and away from saturation.
        Some(f) if f.is_finite() && f.abs() < 9.0e15 => Ok(f.floor() as i64),
        _ => Err(CheckError::NotJwt(format!("{name} is out of range"))),
    }
}

/// Decodes a compact JWT without verifying anything: three base64url parts, a header with
/// `alg` (and optional `kid`), a payload with `iss`, `aud` (string or array of strings), `exp`
/// and `iat` (integers or floats) and an optional `sub`.
///
/// The token must not carry surrounding whitespace (trim a file's trailing newline first).
/// Errors are [`CheckError::NotJwt`] with a short reason that never quotes the token.
pub fn decode_unverified(token: &str) -> Result<TokenClaims, CheckError> {
    let (header, payload, _signature) = split(token)?;
    let header = json_part(header, "header")?;
    let payload = json_part(payload, "payload")?;

    let alg = string(&header, "alg", "header")?;
    let kid = opt_string(&header, "kid")?;
    let iss = string(&payload, "iss", "payload")?;
    let sub = opt_string(&payload, "sub")?;
    let aud = match payload.get("aud") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(not_jwt("aud holds a non-string")),
            })
            .collect::<Result<Vec<_>, _>>()?,
        None | Some(Value::Null) => return Err(not_jwt("the payload has no aud")),
        Some(_) => return Err(not_jwt("aud is neither a string nor an array of strings")),
    };
    let exp = numeric_date(&payload, "exp")?;
    let iat = numeric_date(&payload, "iat")?;
    Ok(TokenClaims {
        alg,
        kid,
        iss,
        sub,
        aud,
        iat,
        exp,
    })
}

/// Whether a JWK can verify signatures of `alg` (key type and, for EC, the curve).
fn compatible(jwk: &Jwk, alg: Algorithm) -> bool {
    match (&jwk.algorithm, alg) {
        (
            AlgorithmParameters::RSA(_),
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512,
        ) => true,
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES256) => {
            ec.curve == EllipticCurve::P256
        }
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES384) => {
            ec.curve == EllipticCurve::P384
        }
        _ => false,
    }
}

/// Verifies the token's signature against a JWKS.
///
/// The key is the one whose `kid` equals the header's `kid`; a token without `kid` uses the
/// set's only signing key of a compatible type, if there is exactly one. No such key gives
/// [`CheckError::UnknownKey`]; a symmetric or unknown `alg` gives
/// [`CheckError::SymmetricAlgorithm`] (an HMAC "key" in a JWKS is never used); a signature
/// that does not verify gives [`CheckError::InvalidSignature`]. Claims are not checked here:
/// see [`crate::ram::check_claims`].
pub fn verify_signature(token: &str, jwks: &JwkSet) -> Result<(), CheckError> {
    let (header_b64, payload_b64, signature) = split(token)?;
    let header = json_part(header_b64, "header")?;
    let alg_name = string(&header, "alg", "header")?;
    let kid = opt_string(&header, "kid")?;
    let alg = match alg_name.parse::<Algorithm>() {
        Ok(alg) if ACCEPTED_ALGORITHMS.contains(&alg_name.as_str()) => alg,
        _ => return Err(CheckError::SymmetricAlgorithm(alg_name)),
    };

    let jwk = match &kid {
        Some(kid) => jwks
            .find(kid)
            .ok_or_else(|| CheckError::UnknownKey(Some(kid.clone())))?,
        None => {
            let mut candidates = jwks.keys.iter().filter(|k| {
                compatible(k, alg) && k.common.public_key_use != Some(PublicKeyUse::Encryption)
            });
            match (candidates.next(), candidates.next()) {
                (Some(only), None) => only,
                _ => return Err(CheckError::UnknownKey(None)),
            }
        }
    };
    if !compatible(jwk, alg) {
        tracing::debug!(?kid, alg = %alg_name, "the JWKS key with this kid has another key type");
        return Err(CheckError::InvalidSignature);
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|e| {
        tracing::debug!(?kid, error = %e, "unusable JWKS key");
        CheckError::InvalidSignature
    })?;
    let message_len = header_b64.len() + 1 + payload_b64.len();
    let message = &token.as_bytes()[..message_len];
    match jsonwebtoken::crypto::verify(signature, message, &key, alg) {
        Ok(true) => Ok(()),
        Ok(false) => Err(CheckError::InvalidSignature),
        Err(e) => {
            tracing::debug!(?kid, error = %e, "signature verification failed");
            Err(CheckError::InvalidSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use crate::ram::{Expectations, check_claims};

    use jsonwebtoken::jwk::{CommonParameters, KeyAlgorithm};
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;

    const ISS: &str = "https://example.aliyunidaas.com/api/v2/iauths_system/oauth2";
    const NOW: i64 = 1_750_000_000;

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    fn raw(header: Value, payload: Value) -> String {
        format!("{}.{}.c2ln", b64(&header), b64(&payload))
    }

    fn payload() -> Value {
        json!({"iss": ISS, "aud": "api://payments", "sub": "app_1", "iat": NOW - 10, "exp": NOW + 3600})
    }

    fn expect() -> Expectations {
        Expectations {
            issuer: ISS.to_owned(),
            audiences: vec!["api://payments".to_owned()],
            max_token_age_secs: 12 * 3600,
            leeway_secs: 60,
        }
    }

    fn claims() -> TokenClaims {
        decode_unverified(&raw(json!({"alg": "RS256", "kid": "k1"}), payload())).unwrap()
    }

    /// One RSA key for the signature tests (RSA generation is slow in debug builds).
    fn rsa_key() -> &'static (EncodingKey, Jwk) {
        static KEY: OnceLock<(EncodingKey, Jwk)> = OnceLock::new();
        KEY.get_or_init(|| {
            let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
            let enc = EncodingKey::from_rsa_pem(kp.serialize_pem().as_bytes()).unwrap();
            let mut jwk = Jwk::from_encoding_key(&enc, Algorithm::RS256).unwrap();
            jwk.common.key_id = Some("rsa1".to_owned());
            (enc, jwk)
        })
    }

    fn ec_key() -> (EncodingKey, Jwk) {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let enc = EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap();
        let jwk = Jwk::from_encoding_key(&enc, Algorithm::ES256).unwrap();
        (enc, jwk)
    }

    fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, &payload(), key).unwrap()
    }

    #[test]
    fn decodes_a_token() {
        let c = claims();
        assert_eq!(
            c,
            TokenClaims {
                alg: "RS256".into(),
                kid: Some("k1".into()),
                iss: ISS.into(),
                sub: Some("app_1".into()),
                aud: vec!["api://payments".into()],
                iat: NOW - 10,
                exp: NOW + 3600,
            }
        );
        check_claims(&c, &expect(), NOW).unwrap();
    }

    #[test]
    fn decodes_aud_arrays_floats_and_no_sub() {
        let t = raw(
            json!({"alg": "ES256"}),
            json!({"iss": ISS, "aud": ["a", "api://payments"], "iat": 1.5e9, "exp": 1_600_000_000.9}),
        );
        let c = decode_unverified(&t).unwrap();
        assert_eq!(c.aud, vec!["a", "api://payments"]);
        assert_eq!((c.iat, c.exp), (1_500_000_000, 1_600_000_000));
        assert_eq!((c.sub, c.kid), (None, None));
    }

    #[test]
    fn not_jwt_reasons_never_quote_the_token() {
        let secretish = "c2VjcmV0LXRva2VuLWNvbnRlbnQ";
        let cases = [
            "".to_owned(),
            "abc".to_owned(),
            format!("{secretish}.{secretish}"),
            format!("a.b.c.d.{secretish}"),
            format!("{secretish}!.e30.sig"),
            format!("{}.{secretish}.sig", b64(&json!({"alg": "RS256"}))),
            format!("{}.{}.sig", b64(&json!(["RS256"])), b64(&payload())),
            raw(json!({"kid": "x"}), payload()),
            raw(json!({"alg": 256}), payload()),
            raw(json!({"alg": "RS256", "kid": 1}), payload()),
            raw(
                json!({"alg": "RS256"}),
                json!({"aud": "a", "iat": 1, "exp": 2}),
            ),
            raw(
                json!({"alg": "RS256"}),
                json!({"iss": 1, "aud": "a", "iat": 1, "exp": 2}),
            ),
            raw(
                json!({"alg": "RS256"}),
                json!({"iss": ISS, "iat": 1, "exp": 2}),
            ),
            raw(
                json!({"alg": "RS256"}),
                json!({"iss": ISS, "aud": [1], "iat": 1, "exp": 2}),
            ),
            raw(
                json!({"alg": "RS256"}),
                json!({"iss": ISS, "aud": {}, "iat": 1, "exp": 2}),
            ),
            raw(
                json!({"alg": "RS256"}),
                json!({"iss": ISS, "aud": "a", "exp": 2}),
            ),
            raw(
                json!({"alg": "RS256"}),
                json!({"iss": ISS, "aud": "a", "iat": "1", "exp": 2}),
            ),
            raw(
                json!({"alg": "RS256"}),
                json!({"iss": ISS, "aud": "a", "iat": 1}),
            ),
            raw(
                json!({"alg": "RS256"}),
                json!({"iss": ISS, "aud": "a", "iat": 1, "exp": 1e300}),
            ),
            raw(
                json!({"alg": "RS256"}),
                json!({"iss": ISS, "aud": "a", "iat": 1, "exp": u64::MAX}),
            ),
            raw(
                json!({"alg": "RS256"}),
                json!({"iss": ISS, "aud": "a", "sub": 7, "iat": 1, "exp": 2}),
            ),
        ];
        for t in cases {
            match decode_unverified(&t) {
                Err(e @ CheckError::NotJwt(_)) => {
                    let msg = e.to_string();
                    assert!(!msg.contains(secretish), "{msg}");
                    assert_eq!(e.ram_code(), "AuthenticationFail.OIDCToken.Invalid");
                }
                other => panic!("{t}: {other:?}"),
            }
        }
    }

    #[test]
    fn symmetric_and_none_algorithms() {
        for alg in ["HS256", "HS512", "none", "EdDSA", "ES512"] {
            let c = decode_unverified(&raw(json!({"alg": alg}), payload())).unwrap();
            assert_eq!(
                check_claims(&c, &expect(), NOW),
                Err(CheckError::SymmetricAlgorithm(alg.to_owned()))
            );
        }
        // An alg "none" token has an empty signature part.
        let t = format!("{}.{}.", b64(&json!({"alg": "none"})), b64(&payload()));
        assert_eq!(decode_unverified(&t).unwrap().alg, "none");
        for alg in ACCEPTED_ALGORITHMS {
            let c = TokenClaims {
                alg: alg.to_owned(),
                ..claims()
            };
            check_claims(&c, &expect(), NOW).unwrap();
        }
    }

    #[test]
    fn issuer_must_match_exactly() {
        let c = TokenClaims {
            iss: format!("{ISS}/"),
            ..claims()
        };
        assert_eq!(
            check_claims(&c, &expect(), NOW),
            Err(CheckError::IssuerNotMatch {
                got: format!("{ISS}/"),
                want: ISS.to_owned()
            })
        );
    }

    #[test]
    fn audience_must_be_contained() {
        let c = TokenClaims {
            aud: vec!["api://other".into()],
            ..claims()
        };
        let err = check_claims(&c, &expect(), NOW).unwrap_err();
        assert_eq!(
            err,
            CheckError::AudienceNotMatch {
                got: vec!["api://other".into()],
                want: "api://payments".into()
            }
        );
        assert_eq!(
            err.ram_code(),
            "AuthenticationFail.OIDCToken.AudienceNotMatch"
        );
        let mut e = expect();
        e.audiences = vec!["x".into(), "api://other".into()];
        check_claims(&c, &e, NOW).unwrap();
    }

    #[test]
    fn expiry() {
        let c = TokenClaims {
            exp: NOW,
            ..claims()
        };
        assert_eq!(
            check_claims(&c, &expect(), NOW),
            Err(CheckError::Expired { exp: NOW })
        );
        check_claims(&c, &expect(), NOW - 1).unwrap();
    }

    #[test]
    fn issued_in_future() {
        let c = TokenClaims {
            iat: NOW + 61,
            ..claims()
        };
        assert_eq!(
            check_claims(&c, &expect(), NOW),
            Err(CheckError::IssuedInFuture { iat: NOW + 61 })
        );
        let c = TokenClaims {
            iat: NOW + 60,
            ..claims()
        };
        check_claims(&c, &expect(), NOW).unwrap();
    }

    #[test]
    fn issued_too_long_ago() {
        let limit = 12 * 3600;
        let c = TokenClaims {
            iat: NOW - limit - 1,
            ..claims()
        };
        let err = check_claims(&c, &expect(), NOW).unwrap_err();
        assert_eq!(
            err,
            CheckError::IssuedTooLongAgo {
                iat: NOW - limit - 1,
                limit_secs: limit as u64
            }
        );
        assert_eq!(
            err.ram_code(),
            "AuthenticationFail.OIDCToken.IssueTimeInvalid"
        );
        let c = TokenClaims {
            iat: NOW - limit,
            ..claims()
        };
        check_claims(&c, &expect(), NOW).unwrap();
    }

    #[test]
    fn extreme_claims_do_not_overflow() {
        let c = TokenClaims {
            iat: i64::MIN,
            exp: i64::MAX,
            ..claims()
        };
        assert!(matches!(
            check_claims(&c, &expect(), i64::MAX - 1),
            Err(CheckError::IssuedTooLongAgo { .. })
        ));
        let c = TokenClaims {
            iat: i64::MAX,
            exp: i64::MAX,
            ..claims()
        };
        assert!(matches!(
            check_claims(&c, &expect(), i64::MIN),
            Err(CheckError::IssuedInFuture { .. })
        ));
    }

    #[test]
    fn rsa_signature_by_kid() {
        let (enc, jwk) = rsa_key();
        let set = JwkSet {
            keys: vec![ec_key().1, jwk.clone()],
        };
        for alg in [Algorithm::RS256, Algorithm::RS512, Algorithm::PS256] {
            let t = sign(alg, Some("rsa1"), enc);
            verify_signature(&t, &set).unwrap();
        }
    }

    #[test]
    fn tampered_payload_is_invalid_signature() {
        let (enc, jwk) = rsa_key();
        let set = JwkSet {
            keys: vec![jwk.clone()],
        };
        let t = sign(Algorithm::RS256, Some("rsa1"), enc);
        let parts: Vec<&str> = t.split('.').collect();
        let mut p = payload();
        p["aud"] = json!("api://evil");
        let forged = format!("{}.{}.{}", parts[0], b64(&p), parts[2]);
        let err = verify_signature(&forged, &set).unwrap_err();
        assert_eq!(err, CheckError::InvalidSignature);
        assert_eq!(
            err.ram_code(),
            "AuthenticationFail.OIDCToken.InvalidSignature"
        );
        // A garbage signature part is also just an invalid signature.
        let garbage = format!("{}.{}.!!", parts[0], parts[1]);
        assert_eq!(
            verify_signature(&garbage, &set),
            Err(CheckError::InvalidSignature)
        );
    }

    #[test]
    fn unknown_kid() {
        let (enc, jwk) = rsa_key();
        let set = JwkSet {
            keys: vec![jwk.clone()],
        };
        let t = sign(Algorithm::RS256, Some("rotated-away"), enc);
        assert_eq!(
            verify_signature(&t, &set),
            Err(CheckError::UnknownKey(Some("rotated-away".into())))
        );
        assert_eq!(
            verify_signature(&t, &JwkSet::default()),
            Err(CheckError::UnknownKey(Some("rotated-away".into())))
        );
    }

    #[test]
    fn no_kid_uses_the_only_compatible_key() {
        let (enc, jwk) = rsa_key();
        let (ec_enc, ec_jwk) = ec_key();
        let t = sign(Algorithm::RS256, None, enc);
        // One RSA key among others: used.
        let set = JwkSet {
            keys: vec![ec_jwk.clone(), jwk.clone()],
        };
        verify_signature(&t, &set).unwrap();
        let e = sign(Algorithm::ES256, None, &ec_enc);
        verify_signature(&e, &set).unwrap();
        // Two RSA keys: ambiguous.
        let mut second = jwk.clone();
        second.common.key_id = Some("rsa2".into());
        let set = JwkSet {
            keys: vec![jwk.clone(), second],
        };
        assert_eq!(
            verify_signature(&t, &set),
            Err(CheckError::UnknownKey(None))
        );
        // No compatible key.
        let set = JwkSet { keys: vec![ec_jwk] };
        assert_eq!(
            verify_signature(&t, &set),
            Err(CheckError::UnknownKey(None))
        );
    }

    #[test]
    fn key_of_another_type_is_invalid_signature() {
        let (ec_enc, mut ec_jwk) = ec_key();
        let (_, jwk) = rsa_key();
        ec_jwk.common.key_id = Some("ec".into());
        let mut rsa_as_ec = jwk.clone();
        rsa_as_ec.common.key_id = Some("ec".into());
        let t = sign(Algorithm::ES256, Some("ec"), &ec_enc);
        verify_signature(&t, &JwkSet { keys: vec![ec_jwk] }).unwrap();
        assert_eq!(
            verify_signature(
                &t,
                &JwkSet {
                    keys: vec![rsa_as_ec]
                }
            ),
            Err(CheckError::InvalidSignature)
        );
    }

    #[test]
    fn hmac_tokens_never_verify_against_an_oct_jwk() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let enc = EncodingKey::from_secret(secret).unwrap();
        let mut oct = Jwk::from_encoding_key(&enc, Algorithm::HS256).unwrap();
        oct.common = CommonParameters {
            key_id: Some("oct".into()),
            key_algorithm: Some(KeyAlgorithm::HS256),
            ..Default::default()
        };
        let t = sign(Algorithm::HS256, Some("oct"), &enc);
        assert_eq!(
            verify_signature(&t, &JwkSet { keys: vec![oct] }),
            Err(CheckError::SymmetricAlgorithm("HS256".into()))
        );
        let none = format!("{}.{}.", b64(&json!({"alg": "none"})), b64(&payload()));
        assert_eq!(
            verify_signature(&none, &JwkSet::default()),
            Err(CheckError::SymmetricAlgorithm("none".into()))
        );
    }

    #[test]
    fn verify_rejects_non_jwts() {
        assert!(matches!(
            verify_signature("a.b", &JwkSet::default()),
            Err(CheckError::NotJwt(_))
        ));
    }
}
