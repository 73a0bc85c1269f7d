//! Attestation identities that renew and can be revoked, and join tokens:
//! the check made at every attestation (the denylist, failing closed),
//! renewal with the current identity, bootstrap with a join token, join
//! token creation, revocation (which also ends the grants of the SPIFFE
//! ID) and the list of identities.
//!
//! An identity is signed from a CSR (the key never leaves the workload) by
//! the attestation CA, for the caller's own SPIFFE ID (renewal) or the one
//! the join token names (bootstrap), recorded in the registry, audited, and
//! only then handed out; a refused audit forgets it (and puts a used join
//! token back). A join token is kept as the SHA-256 of its text and taken
//! once, atomically.

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use rustls::pki_types::CertificateDer;

use super::events::record;
use super::request::{MAX_JUSTIFICATION_BYTES, invalid};
use super::revoke::RevokeTarget;
use super::{Attestation, Caller, IssueError, Issuer};
use crate::audit::Record;
use crate::audit::event::{
    self, Envelope, Event, IdentityIssued, IdentityRevoked, IdentityTargetKind, JoinTokenCreated,
    JoinTokenUsed,
};
use crate::ca::{BACKDATE, VerifiedCsr};
use crate::grant::GrantId;
use crate::spiffe_id::SpiffeId;
use crate::store::identities::{
    IdentityCheck, IdentityRecord, IdentityRevocation, IdentityStore, IssuedVia, JoinToken,
    PresentedIdentity, SerialRevocation,
};

/// Default lifetime of a join token.
pub const DEFAULT_JOIN_TOKEN_TTL: Duration = Duration::from_secs(10 * 60);
/// Longest lifetime of a join token.
pub const MAX_JOIN_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// What every join token starts with, so it is recognised (by people and
/// by secret scanners).
pub const JOIN_TOKEN_PREFIX: &str = "jitid-jt-";
/// Longest join token accepted, in bytes.
const MAX_JOIN_TOKEN_BYTES: usize = 128;
/// Longest serial accepted, in hex digits (20 bytes, RFC 5280).
const MAX_SERIAL_HEX: usize = 40;

/// How long attestation identities live: what the server issues unless
/// asked for less, and the longest it issues or accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentityLimits {
    /// The default lifetime of an identity the server issues.
    pub ttl: Duration,
    /// The longest lifetime the server issues, or accepts at attestation.
    pub max_ttl: Duration,
}

/// Why an identity-attested caller is refused at attestation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttestationRefusal {
    /// The identity is on the denylist.
    #[error("attestation identity {serial} of {spiffe_id} was revoked: {reason}")]
    Revoked {
        /// Its serial.
        serial: String,
        /// Its SPIFFE ID.
        spiffe_id: SpiffeId,
        /// Why, and by whom.
        reason: String,
    },
    /// The identity lives longer than the server accepts (a revocation is
    /// kept only that long).
    #[error(
        "attestation identity {serial} of {spiffe_id} lives {lifetime}, longer than this \
         server accepts ({max}, [attestation] identity_max_ttl); get a shorter one \
         (jitid identity renew, or jitid ca issue-identity --ttl)"
    )]
    TooLong {
        /// Its serial.
        serial: String,
        /// Its SPIFFE ID.
        spiffe_id: SpiffeId,
        /// Its lifetime, for people.
        lifetime: String,
        /// The maximum, for people.
        max: String,
    },
    /// The denylist could not be read: refused, fail closed.
    #[error("attestation denylist unavailable; the request was refused")]
    Unavailable(#[source] IssueError),
}

/// An attestation identity the server issued: the chain (leaf, then the
/// attestation CA) for the key in the caller's CSR.
#[derive(Debug, Clone)]
pub struct IdentityIssuedOut {
    /// DER certificates, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's serial, lowercase hex.
    pub serial: String,
    /// The SPIFFE ID it carries.
    pub spiffe_id: SpiffeId,
    /// Its NotAfter.
    pub not_after: SystemTime,
}

/// A join token, as created: its text is shown once and kept nowhere.
#[derive(Clone)]
pub struct CreatedJoinToken {
    /// The token's text (secret).
    pub token: String,
    /// Its id: the first 12 hex digits of its SHA-256.
    pub id: String,
    /// The SPIFFE ID it bootstraps.
    pub spiffe_id: SpiffeId,
    /// When it expires, unused.
    pub expires_at: SystemTime,
}

/// What to revoke: one identity by serial, or every identity of a SPIFFE
/// ID issued before now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityTarget {
    /// A serial, hex.
    Serial(String),
    /// A SPIFFE ID.
    SpiffeId(String),
}

/// What revoking identities did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityRevokeOutcome {
    /// The SPIFFE ID revoked, when known.
    pub spiffe_id: Option<SpiffeId>,
    /// A serial the registry had not seen: revoked for whenever it shows.
    pub unseen: bool,
    /// The serial was revoked before (a retry).
    pub already_revoked: bool,
    /// The grants of that SPIFFE ID ended.
    pub grants_ended: Vec<GrantId>,
}

// === impl Issuer ===

impl Issuer {
    /// Sets how long attestation identities live (default 24 h, at most
    /// 24 h).
    pub fn with_identity_limits(mut self, limits: IdentityLimits) -> Self {
        self.identity_limits = limits;
        self
    }

    /// How long attestation identities live.
    pub fn identity_limits(&self) -> IdentityLimits {
        self.identity_limits
    }

    fn identity_store(&self) -> Result<&dyn IdentityStore, IssueError> {
        self.store.identities().ok_or_else(|| {
            IssueError::FailedPrecondition(
                "this grant store keeps no attestation identity registry".to_owned(),
            )
        })
    }

    /// How long the registry keeps what it must: a revocation by SPIFFE ID
    /// covers identities issued before it, which live at most this long.
    fn identity_keep(&self) -> Duration {
        self.identity_limits.max_ttl + BACKDATE
    }

    /// The check made at every RPC of a caller attested by an attestation
    /// identity, before its use case: the identity must not live longer
    /// than the server accepts nor be on the denylist (by serial, or by
    /// SPIFFE ID for identities issued before the revocation). An identity
    /// the registry has not seen (minted offline) is registered, in the
    /// same round trip. Callers attested otherwise pass. A store that
    /// cannot answer refuses the caller (fail closed).
    pub async fn check_attestation(&self, caller: &Caller) -> Result<(), AttestationRefusal> {
        let Attestation::Identity(identity) = &caller.attestation else {
            return Ok(());
        };
        let lifetime = identity
            .not_after
            .duration_since(identity.not_before)
            .unwrap_or_default();
        if lifetime > self.identity_keep() {
            return Err(AttestationRefusal::TooLong {
                serial: identity.serial.clone(),
                spiffe_id: caller.spiffe_id.clone(),
                lifetime: humantime::format_duration(lifetime).to_string(),
                max: humantime::format_duration(self.identity_limits.max_ttl).to_string(),
            });
        }
        let store = self
            .identity_store()
            .map_err(AttestationRefusal::Unavailable)?;
        let presented = PresentedIdentity {
            serial: &identity.serial,
            spiffe_id: &caller.spiffe_id,
            not_before: identity.not_before,
            not_after: identity.not_after,
            issued_at: identity.not_before + BACKDATE,
        };
        match store
            .check_identity(&presented, self.identity_keep())
            .await
            .map_err(|error| AttestationRefusal::Unavailable(error.into()))?
        {
            IdentityCheck::Good => Ok(()),
            IdentityCheck::Revoked(revocation) => Err(AttestationRefusal::Revoked {
                serial: identity.serial.clone(),
                spiffe_id: caller.spiffe_id.clone(),
                reason: revocation_reason(&revocation),
            }),
        }
    }

    /// A fresh attestation identity for the caller's own SPIFFE ID, for
    /// the key in `csr`, living `ttl` (default `identity_ttl`, at most
    /// `identity_max_ttl`). Only a caller attested by an identity may
    /// renew.
    pub async fn renew_identity(
        &self,
        caller: &Caller,
        csr: &[u8],
        ttl: Option<Duration>,
    ) -> Result<IdentityIssuedOut, IssueError> {
        let Attestation::Identity(current) = &caller.attestation else {
            return Err(IssueError::Forbidden(format!(
                "{} is not attested by an attestation identity: only an identity renews itself \
                 (a new host bootstraps one with a join token)",
                caller.spiffe_id
            )));
        };
        let ttl = self.identity_ttl(ttl)?;
        let csr = VerifiedCsr::from_der(csr)?;
        let issued = self
            .sign_identity(&csr, &caller.spiffe_id, ttl, IssuedVia::Renewed)
            .await?;
        let event = Event::IdentityIssued(IdentityIssued {
            via: event::IssuedVia::Renewed,
            serial: issued.serial.clone(),
            spiffe_id: issued.spiffe_id.to_string(),
            not_after: issued.not_after,
            renewed_from: Some(current.serial.clone()),
            join_token: None,
        });
        let records = vec![record(
            caller,
            self.clock.now(),
            Some(caller.spiffe_id.to_string()),
            None,
            None,
            event,
        )];
        let store = self.identity_store()?;
        self.audit_or_undo(records, || store.discard_identity(&issued.serial))
            .await?;
        Ok(issued)
    }

    /// Exchanges a join token, once, for an attestation identity of the
    /// SPIFFE ID it names, for the key in `csr`. Needs no attestation: the
    /// token is the proof. An unknown, expired or used token is refused
    /// alike (PERMISSION_DENIED), and a malformed request before the token
    /// is taken, so it is not spent on a bad CSR.
    pub async fn bootstrap_identity(
        &self,
        join_token: &str,
        csr: &[u8],
        ttl: Option<Duration>,
        source: Option<IpAddr>,
    ) -> Result<IdentityIssuedOut, IssueError> {
        if join_token.is_empty() {
            return Err(invalid("join_token", "is empty".to_owned()));
        }
        if join_token.len() > MAX_JOIN_TOKEN_BYTES {
            return Err(invalid(
                "join_token",
                format!("is longer than {MAX_JOIN_TOKEN_BYTES} bytes"),
            ));
        }
        let ttl = self.identity_ttl(ttl)?;
        let csr = VerifiedCsr::from_der(csr)?;
        let store = self.identity_store()?;
        let hash = token_hash(join_token);
        let token = match store.take_join_token(&hash).await? {
            Some(token) if token.expires_at > self.clock.now() => token,
            _ => {
                return Err(IssueError::Forbidden(
                    "join token is unknown, expired or already used; ask an admin for a new one \
                     (jitid token create)"
                        .to_owned(),
                ));
            }
        };
        let issued = match self
            .sign_identity(&csr, &token.spiffe_id, ttl, IssuedVia::Bootstrapped)
            .await
        {
            Ok(issued) => issued,
            Err(error) => {
                // Not spent: the identity was never made.
                restore_token(store, &token).await;
                return Err(error);
            }
        };
        let token_id = token_id(&hash);
        let envelope = Envelope {
            at: self.clock.now(),
            actor: token.spiffe_id.to_string(),
            subject: Some(token.spiffe_id.to_string()),
            grant: None,
            task: None,
        };
        let records = vec![
            Record::new(
                envelope.clone(),
                &Event::JoinTokenUsed(JoinTokenUsed {
                    token: token_id.clone(),
                    created_by: token.created_by.clone(),
                    serial: issued.serial.clone(),
                    source: source.map(|ip| ip.to_string()),
                }),
            ),
            Record::new(
                envelope,
                &Event::IdentityIssued(IdentityIssued {
                    via: event::IssuedVia::Bootstrapped,
                    serial: issued.serial.clone(),
                    spiffe_id: issued.spiffe_id.to_string(),
                    not_after: issued.not_after,
                    renewed_from: None,
                    join_token: Some(token_id),
                }),
            ),
        ];
        self.audit_or_undo(records, || async {
            restore_token(store, &token).await;
            store.discard_identity(&issued.serial).await
        })
        .await?;
        Ok(issued)
    }

    /// Creates a join token for `spiffe_id` (admins only), good once for
    /// `ttl` (default 10 minutes, at most 24 hours). The token's text is
    /// returned here and nowhere else: the store keeps its hash, the trail
    /// its id.
    pub async fn create_join_token(
        &self,
        caller: &Caller,
        spiffe_id: &str,
        ttl: Option<Duration>,
    ) -> Result<CreatedJoinToken, IssueError> {
        self.require_admin(caller, "create join tokens")?;
        let spiffe_id = self.member_id("spiffe_id", spiffe_id)?;
        let ttl = match ttl {
            None => DEFAULT_JOIN_TOKEN_TTL,
            Some(ttl) if ttl.is_zero() => DEFAULT_JOIN_TOKEN_TTL,
            Some(ttl) if ttl > MAX_JOIN_TOKEN_TTL => {
                return Err(invalid(
                    "ttl",
                    format!(
                        "is above the longest join token lifetime, {}",
                        humantime::format_duration(MAX_JOIN_TOKEN_TTL)
                    ),
                ));
            }
            Some(ttl) => ttl,
        };
        let token = new_token();
        let hash = token_hash(&token);
        let now = self.clock.now();
        let stored = JoinToken {
            hash: hash.clone(),
            spiffe_id: spiffe_id.clone(),
            created_by: caller.spiffe_id.to_string(),
            created_at: now,
            expires_at: now + ttl,
        };
        let store = self.identity_store()?;
        store.put_join_token(&stored).await?;
        let created = CreatedJoinToken {
            token,
            id: token_id(&hash),
            spiffe_id,
            expires_at: stored.expires_at,
        };
        let records = vec![record(
            caller,
            now,
            Some(created.spiffe_id.to_string()),
            None,
            None,
            Event::JoinTokenCreated(JoinTokenCreated {
                token: created.id.clone(),
                spiffe_id: created.spiffe_id.to_string(),
                expires_at: created.expires_at,
            }),
        )];
        self.audit_or_undo(records, || async {
            store.take_join_token(&hash).await.map(|_| ())
        })
        .await?;
        Ok(created)
    }

    /// Revokes one attestation identity by serial, or every identity of a
    /// SPIFFE ID issued before now (admins only): each is refused at its
    /// next attestation. The grants of that SPIFFE ID end too (the revoke
    /// by subject use case, with its own event on the revocation stream
    /// and in the trail). Never undone: a refused audit fails the call, and
    /// a retry records it again.
    pub async fn revoke_identity(
        &self,
        caller: &Caller,
        target: &IdentityTarget,
        reason: &str,
    ) -> Result<IdentityRevokeOutcome, IssueError> {
        self.require_admin(caller, "revoke attestation identities")?;
        if reason.len() > MAX_JUSTIFICATION_BYTES {
            return Err(invalid(
                "reason",
                format!("is longer than {MAX_JUSTIFICATION_BYTES} bytes"),
            ));
        }
        let store = self.identity_store()?;
        let revocation = IdentityRevocation {
            at: self.clock.now(),
            by: caller.spiffe_id.to_string(),
            reason: reason.to_owned(),
        };
        let mut outcome = IdentityRevokeOutcome::default();
        let (kind, value) = match target {
            IdentityTarget::Serial(text) => {
                let serial = parse_serial(text)?;
                match store
                    .revoke_identity_serial(&serial, &revocation, self.identity_keep())
                    .await?
                {
                    SerialRevocation::Revoked(id) => outcome.spiffe_id = Some(id),
                    SerialRevocation::AlreadyRevoked(id) => {
                        outcome.spiffe_id = id;
                        outcome.already_revoked = true;
                    }
                    SerialRevocation::Unseen => outcome.unseen = true,
                }
                (IdentityTargetKind::Serial, serial)
            }
            IdentityTarget::SpiffeId(text) => {
                let id = self.member_id("spiffe_id", text)?;
                store
                    .revoke_identity_id(&id, &revocation, self.identity_keep())
                    .await?;
                outcome.spiffe_id = Some(id.clone());
                (IdentityTargetKind::SpiffeId, id.to_string())
            }
        };
        if let Some(id) = &outcome.spiffe_id {
            let mut why = if reason.is_empty() {
                format!("attestation identity {kind} {value} revoked")
            } else {
                format!("attestation identity {kind} {value} revoked: {reason}")
            };
            // Within what the revocation of the grants takes.
            if why.len() > MAX_JUSTIFICATION_BYTES {
                let mut end = MAX_JUSTIFICATION_BYTES;
                while !why.is_char_boundary(end) {
                    end -= 1;
                }
                why.truncate(end);
            }
            outcome.grants_ended = self
                .revoke(caller, &RevokeTarget::Subject(id.to_string()), &why)
                .await?
                .grants;
        }
        self.audit(vec![record(
            caller,
            revocation.at,
            outcome.spiffe_id.as_ref().map(ToString::to_string),
            None,
            None,
            Event::IdentityRevoked(IdentityRevoked {
                target: kind,
                value,
                spiffe_id: outcome.spiffe_id.as_ref().map(ToString::to_string),
                reason: reason.to_owned(),
                grants_ended: outcome
                    .grants_ended
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            }),
        )])
        .await?;
        Ok(outcome)
    }

    /// Every attestation identity the registry keeps, with its state
    /// (admins only).
    pub async fn list_identities(
        &self,
        caller: &Caller,
    ) -> Result<Vec<IdentityRecord>, IssueError> {
        self.require_admin(caller, "list attestation identities")?;
        Ok(self.identity_store()?.identities().await?)
    }

    fn require_admin(&self, caller: &Caller, what: &str) -> Result<(), IssueError> {
        if self.is_admin(caller) {
            Ok(())
        } else {
            Err(IssueError::Forbidden(format!(
                "{} may not {what}: only admins may",
                caller.spiffe_id
            )))
        }
    }

    /// A SPIFFE ID of this trust domain, from a request field.
    fn member_id(&self, field: &'static str, text: &str) -> Result<SpiffeId, IssueError> {
        let shown: String = text.chars().take(80).collect();
        let id = SpiffeId::new(text)
            .map_err(|error| invalid(field, format!("{shown:?} is not a SPIFFE ID: {error}")))?;
        if !id.is_member_of(self.authority.trust_domain()) {
            return Err(invalid(
                field,
                format!(
                    "{id} is not in trust domain {}",
                    self.authority.trust_domain()
                ),
            ));
        }
        Ok(id)
    }

    /// The lifetime asked for, or the default; above the maximum is
    /// refused, never shortened.
    fn identity_ttl(&self, ttl: Option<Duration>) -> Result<Duration, IssueError> {
        match ttl {
            None => Ok(self.identity_limits.ttl),
            Some(ttl) if ttl.is_zero() => Ok(self.identity_limits.ttl),
            Some(ttl) if ttl > self.identity_limits.max_ttl => Err(invalid(
                "ttl",
                format!(
                    "is above the longest attestation identity lifetime, {} \
                     ([attestation] identity_max_ttl)",
                    humantime::format_duration(self.identity_limits.max_ttl)
                ),
            )),
            Some(ttl) => Ok(ttl),
        }
    }

    /// Signs an identity of `spiffe_id` for `csr`'s key and records it.
    async fn sign_identity(
        &self,
        csr: &VerifiedCsr,
        spiffe_id: &SpiffeId,
        ttl: Duration,
        via: IssuedVia,
    ) -> Result<IdentityIssuedOut, IssueError> {
        let now = self.clock.now();
        let signed = self
            .authority
            .sign_attestation_identity(csr, spiffe_id, now + ttl, now)?;
        let record = IdentityRecord {
            serial: signed.serial.clone(),
            spiffe_id: Some(spiffe_id.clone()),
            not_before: now - BACKDATE,
            not_after: signed.not_after,
            via,
            issued_at: now,
            revoked: None,
        };
        self.identity_store()?
            .record_identity(&record, self.identity_keep())
            .await?;
        Ok(IdentityIssuedOut {
            chain: signed.chain,
            serial: signed.serial,
            spiffe_id: spiffe_id.clone(),
            not_after: signed.not_after,
        })
    }
}

// === impl CreatedJoinToken ===

impl fmt::Debug for CreatedJoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedJoinToken")
            .field("token", &"<redacted>")
            .field("id", &self.id)
            .field("spiffe_id", &self.spiffe_id)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// How a revocation reads at attestation: why, and by whom.
fn revocation_reason(revocation: &IdentityRevocation) -> String {
    if revocation.reason.is_empty() {
        format!("revoked by {}", revocation.by)
    } else {
        format!("{} (revoked by {})", revocation.reason, revocation.by)
    }
}

/// Puts a taken join token back (its identity was never handed out); a
/// failure is logged: the token is then spent.
async fn restore_token(store: &dyn IdentityStore, token: &JoinToken) {
    if let Err(error) = store.put_join_token(token).await {
        tracing::warn!(%error, token = %token_id(&token.hash), "a join token could not be put back");
    }
}

/// A new join token: 256 random bits, base64url, after the prefix.
fn new_token() -> String {
    let mut bytes = [0u8; 32];
    // The system RNG failing is unrecoverable; uuid's v4 generator uses the
    // same source, so fall back to two of those rather than panic.
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    }
    format!(
        "{JOIN_TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// SHA-256 of a token's text, lowercase hex: how the store knows it.
fn token_hash(token: &str) -> String {
    crate::ca::serial_hex(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()).as_ref(),
    )
}

/// A token's id in the trail and in logs: a short prefix of its hash,
/// which tells tokens apart and reveals nothing of them.
fn token_id(hash: &str) -> String {
    hash.chars().take(12).collect()
}

/// A serial as jitid writes them: lowercase hex, without colons or a
/// leading zero byte.
fn parse_serial(text: &str) -> Result<String, IssueError> {
    let serial = text.trim().replace(':', "").to_ascii_lowercase();
    let serial = serial.trim_start_matches("00").to_owned();
    if serial.is_empty()
        || serial.len() > MAX_SERIAL_HEX
        || !serial.bytes().all(|b| b.is_ascii_hexdigit())
    {
        let shown: String = text.chars().take(64).collect();
        return Err(invalid(
            "serial",
            format!("{shown:?} is not a certificate serial (hex, at most 20 bytes)"),
        ));
    }
    Ok(serial)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_known_by_hash_only() {
        let one = new_token();
        let two = new_token();
        assert_ne!(one, two);
        assert!(one.starts_with(JOIN_TOKEN_PREFIX));
        assert_eq!(one.len(), JOIN_TOKEN_PREFIX.len() + 43);
        let hash = token_hash(&one);
        assert_eq!(hash.len(), 64);
        assert!(!hash.contains(&one));
        assert_eq!(token_id(&hash).len(), 12);
    }

    #[test]
    fn serials_are_read_as_jitid_writes_them() {
        assert_eq!(parse_serial("0A:1b").unwrap(), "0a1b");
        assert_eq!(parse_serial("00ff").unwrap(), "ff");
        assert!(parse_serial("").is_err());
        assert!(parse_serial("xyz").is_err());
        assert!(parse_serial(&"a".repeat(41)).is_err());
    }
}
