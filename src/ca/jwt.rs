//! JWT-SVIDs (JWT-SVID spec, shared/spiffe.md §1.3): ES256, header exactly
//! `alg`, `kid`, `typ: JWT`; claims `sub`, `aud`, integer `exp`, `iat`, `jti`,
//! the action set as `scope` and the grant as `jitid_*` claims. The key is
//! parsed once into an aws-lc-rs signer: `jsonwebtoken::encode` parses and
//! checks the PKCS#8 key on every call, which cost as much as the
//! signature itself. Verification stays with `jsonwebtoken`.

use std::fmt;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Header};
use serde::{Deserialize, Serialize};

use super::CaError;

/// Claims of a jitid JWT-SVID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwtSvidClaims {
    /// The workload's SPIFFE ID.
    pub sub: String,
    /// Every requested audience.
    pub aud: Vec<String>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issue time, seconds since the Unix epoch (back-dated a few seconds).
    pub iat: u64,
    /// Unique token id.
    pub jti: String,
    /// The action set, space-delimited (RFC 8693 §4.2 `scope`).
    pub scope: String,
    /// The grant the token was issued under.
    pub jitid_grant: String,
    /// The task the grant is for.
    pub jitid_task: String,
    /// The entitlement the grant uses.
    pub jitid_entitlement: String,
    /// The grant store's epoch when the token was minted.
    pub jitid_epoch: String,
    /// Present and true when the grant was issued on the break-glass path.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub jitid_break_glass: bool,
    /// For a delegated grant, its ancestors' ids, parent first: ending any
    /// of them ends this token too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jitid_parents: Vec<String>,
    /// For a delegated grant, who delegated (RFC 8693 §4.1): `act.sub` is
    /// the SPIFFE ID of the parent's credentials, `act.act.sub` the
    /// grandparent's, and so on to the root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Actor>,
    /// The certificate the token is bound to (RFC 8705 §3.1), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
}

/// An `act` claim: one actor and, nested, the one before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The actor's SPIFFE ID.
    pub sub: String,
    /// The actor that delegated to this one, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Box<Actor>>,
}

impl Actor {
    /// Nests `actors` (most recent first) as an `act` claim.
    pub fn chain<S: AsRef<str>>(actors: &[S]) -> Option<Self> {
        actors.iter().rev().fold(None, |inner, actor| {
            Some(Self {
                sub: actor.as_ref().to_owned(),
                act: inner.map(Box::new),
            })
        })
    }

    /// The actors, most recent first.
    pub fn flatten(&self) -> Vec<String> {
        let mut actors = vec![self.sub.clone()];
        let mut next = self.act.as_deref();
        while let Some(actor) = next {
            actors.push(actor.sub.clone());
            next = actor.act.as_deref();
        }
        actors
    }
}

/// A `cnf` claim binding a token to an mTLS client certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// base64url (no padding) SHA-256 of the certificate's DER.
    #[serde(rename = "x5t#S256")]
    pub x5t_s256: String,
}

/// An EC P-256 public key as JWK coordinates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcPublicJwk {
    /// Curve name, `P-256` or `P-384`.
    pub crv: &'static str,
    /// Base64url X coordinate.
    pub x: String,
    /// Base64url Y coordinate.
    pub y: String,
}

/// The key that signs JWT-SVIDs.
pub(crate) struct JwtKey {
    kid: String,
    signer: EcdsaKeyPair,
    /// The encoded header of a JWT-SVID (`typ: JWT`), made once.
    jwt_header: String,
    public: EcPublicJwk,
}

// === impl JwtKey ===

impl JwtKey {
    /// Loads a PKCS#8 P-256 key.
    pub(crate) fn from_pem(pem: &str) -> Result<Self, CaError> {
        let key_pair = rcgen::KeyPair::from_pem(pem)
            .map_err(|_| CaError::Invalid("jwt.key is not a PKCS#8 private key".to_owned()))?;
        if key_pair.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
            return Err(CaError::Invalid(
                "jwt.key must be an ECDSA P-256 key (ES256)".to_owned(),
            ));
        }
        let public = EcPublicJwk::from_uncompressed_point(key_pair.public_key_raw())
            .ok_or_else(|| CaError::Invalid("jwt.key has a malformed public key".to_owned()))?;
        let signer =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &key_pair.serialize_der())
                .map_err(|_| CaError::Invalid("jwt.key is not a valid P-256 key".to_owned()))?;
        let kid = public.thumbprint();
        let jwt_header = encoded_header(&kid, "JWT")?;
        Ok(Self {
            kid,
            signer,
            jwt_header,
            public,
        })
    }

    /// The key id: the RFC 7638 thumbprint of the public key.
    pub(crate) fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key.
    pub(crate) fn public(&self) -> &EcPublicJwk {
        &self.public
    }

    /// Signs claims into a compact JWS with header `typ`.
    pub(crate) fn sign(&self, typ: &str, claims: &impl Serialize) -> Result<String, CaError> {
        let header = match typ {
            "JWT" => self.jwt_header.clone(),
            typ => encoded_header(&self.kid, typ)?,
        };
        let payload = serde_json::to_vec(claims).map_err(|e| CaError::Jwt(e.to_string()))?;
        let mut token = header;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(payload, &mut token);
        let signature = self
            .signer
            .sign(&SystemRandom::new(), token.as_bytes())
            .map_err(|_| CaError::Jwt("ECDSA signing failed".to_owned()))?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut token);
        Ok(token)
    }
}

/// The base64url JOSE header `{"typ", "alg": "ES256", "kid"}`.
fn encoded_header(kid: &str, typ: &str) -> Result<String, CaError> {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.to_owned());
    header.typ = Some(typ.to_owned());
    let json = serde_json::to_vec(&header).map_err(|e| CaError::Jwt(e.to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(json))
}

impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtKey")
            .field("kid", &self.kid)
            .field("signer", &"<redacted>")
            .finish()
    }
}

// === impl EcPublicJwk ===

impl EcPublicJwk {
    /// From an uncompressed SEC1 point (`04 || X || Y`) of P-256 or P-384.
    pub fn from_uncompressed_point(point: &[u8]) -> Option<Self> {
        let crv = match point.len() {
            65 => "P-256",
            97 => "P-384",
            _ => return None,
        };
        if point[0] != 0x04 {
            return None;
        }
        let (x, y) = point[1..].split_at((point.len() - 1) / 2);
        Some(Self {
            crv,
            x: URL_SAFE_NO_PAD.encode(x),
            y: URL_SAFE_NO_PAD.encode(y),
        })
    }

    /// RFC 7638 JWK thumbprint: base64url SHA-256 of the canonical JWK.
    pub fn thumbprint(&self) -> String {
        let canonical = format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            self.crv, self.x, self.y
        );
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
        URL_SAFE_NO_PAD.encode(digest.as_ref())
    }
}
