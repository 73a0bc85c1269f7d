//! Signing and checking the trail's [`Checkpoint`]s. The format (claims,
//! `typ` [`CHECKPOINT_TYP`]) is the audit trail's; the certificate
//! authority only lends its JWT key, through the generic
//! [`Authority::sign_jws`] and [`ca::verify_jws`].

use std::time::SystemTime;

use super::Head;
use super::upkeep::{CHECKPOINT_TYP, Checkpoint, CheckpointSigner};
use crate::ca::{self, Authority, JwsError, JwtAuthority};
use crate::clock::unix_seconds;

impl CheckpointSigner for Authority {
    fn sign_checkpoint(&self, head: &Head, time: &str, now: SystemTime) -> Result<String, String> {
        let checkpoint = Checkpoint {
            iss: self.trust_domain().id_string(),
            seq: head.seq,
            hash: head.hash.clone(),
            time: time.to_owned(),
            iat: unix_seconds(now),
        };
        self.sign_jws(CHECKPOINT_TYP, &checkpoint)
            .map_err(|error| error.to_string())
    }
}

/// Checks a signed audit [`Checkpoint`] against the JWT keys of a trust
/// bundle.
pub fn verify_checkpoint(token: &str, authorities: &[JwtAuthority]) -> Result<Checkpoint, String> {
    ca::verify_jws(token, CHECKPOINT_TYP, authorities).map_err(|error| match error {
        JwsError::Malformed(error) => format!("malformed checkpoint: {error}"),
        JwsError::WrongType => "not a jitid audit checkpoint".to_owned(),
        JwsError::NoKid => "checkpoint has no kid".to_owned(),
        JwsError::UnknownKey(kid) => {
            format!("checkpoint signed by a key not in the bundle (kid {kid})")
        }
        JwsError::BadKey(error) => format!("bundle key: {error}"),
        JwsError::Invalid(error) => format!("checkpoint does not verify: {error}"),
    })
}

/// Reads a checkpoint's claims without checking its signature: for
/// checking a file's structure when no keys were given (the caller says
/// so).
pub fn read_checkpoint_unverified(token: &str) -> Result<Checkpoint, String> {
    use base64::Engine as _;
    let payload = token
        .split('.')
        .nth(1)
        .ok_or_else(|| "malformed checkpoint: not a compact JWS".to_owned())?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|error| format!("malformed checkpoint: {error}"))?;
    serde_json::from_slice(&json).map_err(|error| format!("malformed checkpoint: {error}"))
}
