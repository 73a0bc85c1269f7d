//! The trust bundle of a trust domain, as a SPIFFE bundle (an RFC 7517 JWK
//! Set with `x509-svid` and `jwt-svid` keys) and as PEM.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustls::pki_types::CertificateDer;
use serde_json::{Value, json};

use super::jwt::EcPublicJwk;
use crate::crypto::der_to_pem;
use crate::spiffe_id::TrustDomain;

/// How often relying parties should refetch the bundle.
pub const REFRESH_HINT: Duration = Duration::from_secs(300);

/// A JWT signing key in the bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtAuthority {
    /// Key id, as in the `kid` header of tokens it signs.
    pub kid: String,
    /// The public key.
    pub key: EcPublicJwk,
}

/// An X.509 authority in the bundle: a root certificate and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X509Authority {
    /// The DER certificate.
    pub cert: CertificateDer<'static>,
    /// Its public key.
    pub key: EcPublicJwk,
}

/// The keys relying parties need to verify SVIDs of one trust domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustBundle {
    /// The trust domain.
    pub trust_domain: TrustDomain,
    /// Root certificates.
    pub x509_authorities: Vec<X509Authority>,
    /// JWT signing keys.
    pub jwt_authorities: Vec<JwtAuthority>,
    /// Increases whenever the content changes (`spiffe_sequence`).
    pub sequence: u64,
}

impl TrustBundle {
    /// The SPIFFE bundle JSON.
    pub fn to_spiffe_json(&self) -> Vec<u8> {
        let mut keys: Vec<Value> = self
            .x509_authorities
            .iter()
            .map(|authority| {
                // x509-svid keys carry exactly one x5c and no kid (§6.1).
                json!({
                    "kty": "EC",
                    "crv": authority.key.crv,
                    "x": authority.key.x,
                    "y": authority.key.y,
                    "use": "x509-svid",
                    "x5c": [STANDARD.encode(authority.cert.as_ref())],
                })
            })
            .collect();
        keys.extend(self.jwt_authorities.iter().map(|authority| {
            json!({
                "kty": "EC",
                "crv": authority.key.crv,
                "x": authority.key.x,
                "y": authority.key.y,
                "use": "jwt-svid",
                "kid": authority.kid,
                "alg": "ES256",
            })
        }));
        let bundle = json!({
            "keys": keys,
            "spiffe_sequence": self.sequence,
            "spiffe_refresh_hint": REFRESH_HINT.as_secs(),
        });
        let mut text = serde_json::to_vec_pretty(&bundle).unwrap_or_default();
        text.push(b'\n');
        text
    }

    /// The JWT authorities alone, as a plain JWK Set (Workload API style).
    pub fn jwks_json(&self) -> Vec<u8> {
        let keys: Vec<Value> = self
            .jwt_authorities
            .iter()
            .map(|authority| {
                json!({
                    "kty": "EC",
                    "crv": authority.key.crv,
                    "x": authority.key.x,
                    "y": authority.key.y,
                    "kid": authority.kid,
                    "alg": "ES256",
                    "use": "jwt-svid",
                })
            })
            .collect();
        serde_json::to_vec(&json!({ "keys": keys })).unwrap_or_default()
    }

    /// The root certificates as PEM.
    pub fn to_pem(&self) -> String {
        self.x509_authorities
            .iter()
            .map(|authority| der_to_pem("CERTIFICATE", authority.cert.as_ref()))
            .collect()
    }

    /// The `jwt-svid` keys of a SPIFFE bundle or JWK Set (JSON), as
    /// [`TrustBundle::to_spiffe_json`] and [`TrustBundle::jwks_json`]
    /// write them.
    pub fn jwt_authorities_from_json(json: &[u8]) -> Result<Vec<JwtAuthority>, String> {
        Self::keys_from_json(json, &["jwt-svid"])
    }

    /// The keys that check the audit trail's checkpoints in a JWK Set, as
    /// `jitid ca audit-key` prints it (`use: audit`); `jwt-svid` keys too,
    /// which signed checkpoints before they had their own key.
    pub fn document_authorities_from_json(json: &[u8]) -> Result<Vec<JwtAuthority>, String> {
        Self::keys_from_json(json, &["audit", "jwt-svid"])
    }

    fn keys_from_json(json: &[u8], uses: &[&str]) -> Result<Vec<JwtAuthority>, String> {
        let set: Value =
            serde_json::from_slice(json).map_err(|error| format!("not a JWK Set: {error}"))?;
        let keys = set
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| "not a JWK Set: no \"keys\" array".to_owned())?;
        let field =
            |key: &Value, name: &str| key.get(name).and_then(Value::as_str).map(str::to_owned);
        let authorities: Vec<JwtAuthority> = keys
            .iter()
            .filter(|key| field(key, "use").is_some_and(|value| uses.contains(&value.as_str())))
            .filter(|key| field(key, "crv").as_deref() == Some("P-256"))
            .filter_map(|key| {
                Some(JwtAuthority {
                    kid: field(key, "kid")?,
                    key: EcPublicJwk {
                        crv: "P-256",
                        x: field(key, "x")?,
                        y: field(key, "y")?,
                    },
                })
            })
            .collect();
        if authorities.is_empty() {
            return Err(format!("the bundle has no P-256 {} key", uses.join(" or ")));
        }
        Ok(authorities)
    }

    /// The root certificates as DER.
    pub fn x509_ders(&self) -> Vec<Vec<u8>> {
        self.x509_authorities
            .iter()
            .map(|authority| authority.cert.to_vec())
            .collect()
    }
}
