//! The checks of one token, as RFC 8725 and Vault's JWT auth make them:
//! its header read by hand first (so `alg: none` and HMAC are refused by
//! name, before any key is looked at), then the signature with
//! `jsonwebtoken` against the one JWK its `kid` names, whose key type must
//! fit the `alg`, then `iss`, `aud`, `exp`, `nbf` and `iat` against `now`.
//!
//! Only RS256 and ES256 are accepted. `exp` is required and has no leeway
//! (a grant never outlives its token, so an expired token could attest
//! nothing); `nbf` and `iat` may be up to the provider's clock skew in the
//! future.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

use super::OidcError;

/// Longest token accepted, in bytes (a GitHub Actions token is about 1.5 KiB).
pub(crate) const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Longest `jti` used as the token's id, in bytes.
const MAX_JTI_BYTES: usize = 256;

/// The two signature algorithms accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alg {
    Rs256,
    Es256,
}

/// A token's header and claims, read but not yet verified.
#[derive(Debug)]
pub(crate) struct Unverified {
    pub(crate) alg: Alg,
    pub(crate) kid: String,
    /// The `iss` claim, to pick the provider by.
    pub(crate) issuer: String,
}

#[derive(Deserialize)]
struct RawHeader {
    alg: Option<String>,
    kid: Option<String>,
    crit: Option<Value>,
}

#[derive(Deserialize)]
struct RawIssuer {
    iss: Option<Value>,
}

// === impl Alg ===

impl Alg {
    fn algorithm(self) -> Algorithm {
        match self {
            Self::Rs256 => Algorithm::RS256,
            Self::Es256 => Algorithm::ES256,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
        }
    }

    /// Whether `jwk` is a key this algorithm verifies with: RSA for RS256,
    /// P-256 for ES256, and no other `alg` or `use` stated on it.
    pub(crate) fn fits(self, jwk: &Jwk) -> bool {
        let kind = match (&jwk.algorithm, self) {
            (AlgorithmParameters::RSA(_), Self::Rs256) => true,
            (AlgorithmParameters::EllipticCurve(params), Self::Es256) => {
                params.curve == EllipticCurve::P256
            }
            _ => false,
        };
        let stated = match jwk.common.key_algorithm {
            None => true,
            Some(KeyAlgorithm::RS256) => self == Self::Rs256,
            Some(KeyAlgorithm::ES256) => self == Self::Es256,
            Some(_) => false,
        };
        let usable = matches!(
            jwk.common.public_key_use,
            None | Some(PublicKeyUse::Signature)
        );
        kind && stated && usable
    }
}

/// Reads a token's header and `iss` without trusting them: enough to
/// refuse a disallowed `alg` by name and to find the provider and key.
pub(crate) fn read(token: &str) -> Result<Unverified, OidcError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(OidcError::Malformed(format!(
            "longer than {MAX_TOKEN_BYTES} bytes"
        )));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(OidcError::Malformed(
            "not a compact JWS (three base64url parts separated by '.')".to_owned(),
        ));
    };
    let header: RawHeader = decode_part(header, "header")?;
    let alg = match header.alg.as_deref() {
        None => return Err(OidcError::Malformed("its header has no alg".to_owned())),
        Some(alg) if alg.eq_ignore_ascii_case("none") => return Err(OidcError::AlgNone),
        Some("RS256") => Alg::Rs256,
        Some("ES256") => Alg::Es256,
        Some(other) => return Err(OidcError::AlgNotAllowed(shown(other))),
    };
    if header.crit.is_some() {
        // RFC 7515 §4.1.11: extensions we do not understand must be refused.
        return Err(OidcError::Malformed(
            "its header has crit extensions, which are not supported".to_owned(),
        ));
    }
    let kid = header
        .kid
        .filter(|kid| !kid.is_empty())
        .ok_or(OidcError::NoKid)?;
    let claims: RawIssuer = decode_part(payload, "payload")?;
    let issuer = match claims.iss {
        Some(Value::String(issuer)) => issuer,
        Some(_) => return Err(OidcError::Malformed("iss is not a string".to_owned())),
        None => return Err(OidcError::Malformed("it has no iss".to_owned())),
    };
    Ok(Unverified { alg, kid, issuer })
}

fn decode_part<T: serde::de::DeserializeOwned>(part: &str, what: &str) -> Result<T, OidcError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| OidcError::Malformed(format!("its {what} is not base64url")))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| OidcError::Malformed(format!("its {what} is not a JSON object")))
}

/// Checks the signature with `jwk` and returns the claims. The caller has
/// checked that `jwk` fits `alg`.
pub(crate) fn verify_signature(
    token: &str,
    alg: Alg,
    jwk: &Jwk,
) -> Result<BTreeMap<String, Value>, OidcError> {
    let key = DecodingKey::from_jwk(jwk)
        .map_err(|error| OidcError::BadKey(format!("the issuer's key cannot be used: {error}")))?;
    let mut validation = Validation::new(alg.algorithm());
    // Time, issuer and audience are checked below against `now` and the
    // provider, with messages that say which.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<BTreeMap<String, Value>>(token, &key, &validation)
        .map(|data| data.claims)
        .map_err(|error| match error.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => OidcError::BadSignature,
            jsonwebtoken::errors::ErrorKind::Json(_)
            | jsonwebtoken::errors::ErrorKind::Utf8(_)
            | jsonwebtoken::errors::ErrorKind::Base64(_) => {
                OidcError::Malformed("its claims are not a JSON object".to_owned())
            }
            _ => OidcError::BadSignature,
        })
}

/// What the time claims allow: until when the token is good.
pub(crate) fn check_time(
    claims: &BTreeMap<String, Value>,
    now: SystemTime,
    skew: Duration,
) -> Result<SystemTime, OidcError> {
    let exp = match claims.get("exp") {
        None => return Err(OidcError::NoExpiry),
        Some(value) => seconds(value, "exp")?,
    };
    if exp <= now {
        return Err(OidcError::Expired);
    }
    if let Some(value) = claims.get("nbf")
        && seconds(value, "nbf")? > now + skew
    {
        return Err(OidcError::NotYetValid);
    }
    if let Some(value) = claims.get("iat")
        && seconds(value, "iat")? > now + skew
    {
        return Err(OidcError::IssuedInFuture);
    }
    Ok(exp)
}

/// A NumericDate claim as a time (fractions are cut: whole seconds).
fn seconds(value: &Value, claim: &'static str) -> Result<SystemTime, OidcError> {
    let whole = match value {
        Value::Number(number) => number
            .as_u64()
            .or_else(|| number.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        _ => None,
    };
    whole
        .map(|secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs.min(u64::from(u32::MAX) * 4)))
        .ok_or_else(|| OidcError::Malformed(format!("{claim} is not a NumericDate")))
}

/// Whether the token's `aud` (a string or a list) names one of `accepted`.
pub(crate) fn check_audience(
    claims: &BTreeMap<String, Value>,
    accepted: &[String],
) -> Result<(), OidcError> {
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(audience)) => vec![audience.as_str()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
        _ => return Err(OidcError::NoAudience),
    };
    if audiences
        .iter()
        .any(|audience| accepted.iter().any(|a| a == audience))
    {
        return Ok(());
    }
    Err(OidcError::AudienceNotAccepted(
        audiences.first().map(|a| shown(a)).unwrap_or_default(),
    ))
}

/// The token's id: its `jti`, or the SHA-256 of the token where it has
/// none (hex).
pub(crate) fn token_id(claims: &BTreeMap<String, Value>, token: &str) -> Result<String, OidcError> {
    match claims.get("jti") {
        None => {
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
            Ok(digest
                .as_ref()
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect())
        }
        Some(Value::String(jti))
            if !jti.is_empty()
                && jti.len() <= MAX_JTI_BYTES
                && !jti.chars().any(char::is_control) =>
        {
            Ok(jti.clone())
        }
        Some(_) => Err(OidcError::Malformed(format!(
            "jti is not a string of 1 to {MAX_JTI_BYTES} printable bytes"
        ))),
    }
}

/// A value from the token, cut short and quoted, for a message.
pub(crate) fn shown(text: &str) -> String {
    let cut: String = text.chars().take(80).collect();
    format!("{cut:?}")
}
