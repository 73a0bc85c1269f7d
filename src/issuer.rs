//! The use cases: turn an attested caller's request into a decision, a
//! grant, a signed credential and a store record. Knows nothing of gRPC,
//! TLS or Redis; everything arrives through plain types and traits.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::CertificateDer;

use crate::ca::{
    Authority, BACKDATE, CaError, CsrError, GrantExtension, JwtSvidClaims, LeafRequest,
    TrustBundle, VerifiedCsr,
};
use crate::clock::{Clock, unix_seconds, whole_seconds};
use crate::grant::{
    Action, Credential, CredentialId, Epoch, Grant, GrantId, GrantState, NameError, Shard, TaskId,
};
use crate::policy::{self, AccessRequest, Catalogue, Denial};
use crate::spiffe_id::SpiffeId;
use crate::store::{GrantStore, StoreError};

/// Most actions one request may name.
pub const MAX_ACTIONS: usize = 32;
/// Longest justification, in bytes.
pub const MAX_JUSTIFICATION_BYTES: usize = 1024;
/// Most audiences of one JWT-SVID.
pub const MAX_AUDIENCES: usize = 8;
/// Longest audience, in bytes.
pub const MAX_AUDIENCE_BYTES: usize = 256;
/// Longest entitlement name in a request, in bytes.
pub const MAX_ENTITLEMENT_BYTES: usize = 64;

/// The attested workload making a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Its SPIFFE ID, from its client certificate.
    pub spiffe_id: SpiffeId,
}

/// What a caller asks a grant for, as received (not yet validated).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantSpec {
    /// Entitlement name; empty means "find one covering `actions`".
    pub entitlement: String,
    /// Requested actions; empty means the entitlement's whole set.
    pub actions: Vec<String>,
    /// Task id; empty means "generate one".
    pub task_id: String,
    /// Requested TTL; `None` means the entitlement's default.
    pub ttl: Option<Duration>,
    /// Why the caller needs it.
    pub justification: String,
}

/// An issued X.509-SVID.
#[derive(Debug, Clone)]
pub struct X509Issued {
    /// DER chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's serial, lowercase hex.
    pub serial: String,
    /// The grant it was issued under.
    pub grant: Grant,
}

/// An issued JWT-SVID.
#[derive(Debug, Clone)]
pub struct JwtIssued {
    /// The compact JWS.
    pub token: String,
    /// Its `jti`.
    pub jti: String,
    /// The grant it was issued under.
    pub grant: Grant,
}

/// Why an issuance failed. Nothing was recorded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    /// Policy refused the request.
    #[error(transparent)]
    Denied(#[from] Denial),
    /// A request field is malformed.
    #[error("{field}: {message}")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The CSR is unusable.
    #[error(transparent)]
    Csr(#[from] CsrError),
    /// The grant store failed; nothing was issued.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Signing failed.
    #[error(transparent)]
    Ca(#[from] CaError),
}

/// The issuer: policy, CA, store and clock behind one API.
pub struct Issuer {
    authority: Arc<Authority>,
    catalogue: Catalogue,
    store: Arc<dyn GrantStore>,
    clock: Arc<dyn Clock>,
}

// === impl IssueError ===

impl IssueError {
    /// Whether the request itself was malformed (as opposed to refused,
    /// or failed on the server's side).
    pub fn is_invalid_argument(&self) -> bool {
        match self {
            Self::InvalidField { .. } | Self::Csr(_) => true,
            Self::Denied(denial) => matches!(
                denial,
                Denial::NothingRequested | Denial::TtlAboveMaximum { .. } | Denial::TtlTooShort
            ),
            _ => false,
        }
    }

    /// Whether policy refused the caller.
    pub fn is_permission_denied(&self) -> bool {
        matches!(self, Self::Denied(_)) && !self.is_invalid_argument()
    }

    /// Whether a dependency is down and a retry may succeed.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Store(StoreError::Unavailable(_)))
    }
}

// === impl Issuer ===

impl Issuer {
    /// Wires the issuer.
    pub fn new(
        authority: Arc<Authority>,
        catalogue: Catalogue,
        store: Arc<dyn GrantStore>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            authority,
            catalogue,
            store,
            clock,
        }
    }

    /// The certificate authority.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The trust bundle.
    pub fn bundle(&self) -> &TrustBundle {
        self.authority.bundle()
    }

    /// The clock the issuer reads.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Issues an X.509-SVID for `caller` from a DER CSR.
    pub async fn issue_x509(
        &self,
        caller: &Caller,
        spec: &GrantSpec,
        csr_der: &[u8],
    ) -> Result<X509Issued, IssueError> {
        let now = self.clock.now();
        let decided = self.decide(caller, spec, now)?;
        let csr = VerifiedCsr::from_der(csr_der)?;
        let mut epoch = self.store.epoch().await?;
        // A changed epoch is learnt at the write; mint once more under it.
        for attempt in 0..2 {
            let grant = Grant {
                epoch: epoch.clone(),
                ..decided.clone()
            };
            let (credential_id, serial) = CredentialId::new_x509(grant.id);
            let signed = self.authority.sign_x509_svid(
                &csr,
                LeafRequest {
                    spiffe_id: &grant.subject,
                    expires_at: grant.expires_at,
                    dns_names: &[],
                    ip_addresses: &[],
                },
                &GrantExtension {
                    grant_id: grant.id.to_string(),
                    task_id: grant.task_id.to_string(),
                    entitlement: grant.entitlement.clone(),
                    actions: grant
                        .actions
                        .iter()
                        .map(|a| a.as_str().to_owned())
                        .collect(),
                    epoch: epoch.to_string(),
                },
                &serial,
                now,
            )?;
            // The signing CA may expire before the grant; the grant never
            // outlives its credential's issuer.
            let grant = Grant {
                expires_at: signed.not_after,
                ..grant
            };
            let credential = Credential {
                id: credential_id,
                grant_id: grant.id,
                expires_at: signed.not_after,
                revoked: false,
            };
            match self.store.record_issuance(&grant, &credential).await {
                Ok(()) => {
                    return Ok(X509Issued {
                        chain: signed.chain,
                        serial: signed.serial,
                        grant,
                    });
                }
                Err(StoreError::EpochChanged(current)) if attempt == 0 => epoch = current,
                Err(error) => return Err(error.into()),
            }
        }
        Err(StoreError::Unavailable("store epoch keeps changing".into()).into())
    }

    /// Issues a JWT-SVID for `caller` with the given audiences.
    pub async fn issue_jwt(
        &self,
        caller: &Caller,
        spec: &GrantSpec,
        audiences: &[String],
    ) -> Result<JwtIssued, IssueError> {
        let now = self.clock.now();
        let audiences = validate_audiences(audiences)?;
        let decided = self.decide(caller, spec, now)?;
        let expires_at = decided.expires_at.min(self.authority.signing_not_after());
        let mut epoch = self.store.epoch().await?;
        for attempt in 0..2 {
            let grant = Grant {
                expires_at,
                epoch: epoch.clone(),
                ..decided.clone()
            };
            let credential_id = CredentialId::new_jwt(grant.id);
            let claims = JwtSvidClaims {
                sub: grant.subject.to_string(),
                aud: audiences.clone(),
                exp: unix_seconds(expires_at),
                iat: unix_seconds(now - BACKDATE),
                jti: credential_id.value().to_owned(),
                scope: grant
                    .actions
                    .iter()
                    .map(Action::as_str)
                    .collect::<Vec<_>>()
                    .join(" "),
                jitid_grant: grant.id.to_string(),
                jitid_task: grant.task_id.to_string(),
                jitid_entitlement: grant.entitlement.clone(),
                jitid_epoch: epoch.to_string(),
            };
            let token = self.authority.sign_jwt_svid(&claims)?;
            let credential = Credential {
                id: credential_id,
                grant_id: grant.id,
                expires_at,
                revoked: false,
            };
            match self.store.record_issuance(&grant, &credential).await {
                Ok(()) => {
                    return Ok(JwtIssued {
                        token,
                        jti: claims.jti,
                        grant,
                    });
                }
                Err(StoreError::EpochChanged(current)) if attempt == 0 => epoch = current,
                Err(error) => return Err(error.into()),
            }
        }
        Err(StoreError::Unavailable("store epoch keeps changing".into()).into())
    }

    /// Validates the request and asks policy; returns the grant to create.
    fn decide(
        &self,
        caller: &Caller,
        spec: &GrantSpec,
        now: SystemTime,
    ) -> Result<Grant, IssueError> {
        let entitlement = match spec.entitlement.as_str() {
            "" => None,
            name if name.len() > MAX_ENTITLEMENT_BYTES => {
                return Err(invalid(
                    "entitlement",
                    format!("is longer than {MAX_ENTITLEMENT_BYTES} bytes"),
                ));
            }
            name => Some(name),
        };
        if spec.actions.len() > MAX_ACTIONS {
            return Err(invalid(
                "actions",
                format!("more than {MAX_ACTIONS} actions"),
            ));
        }
        let actions = spec
            .actions
            .iter()
            .map(|action| Action::new(action).map_err(|error| name_error("actions", action, error)))
            .collect::<Result<Vec<_>, _>>()?;
        let task_id = match spec.task_id.as_str() {
            "" => TaskId::generate(),
            task => TaskId::new(task).map_err(|error| name_error("task_id", task, error))?,
        };
        if spec.justification.len() > MAX_JUSTIFICATION_BYTES {
            return Err(invalid(
                "justification",
                format!("is longer than {MAX_JUSTIFICATION_BYTES} bytes"),
            ));
        }

        let decision = policy::evaluate(
            &self.catalogue,
            &caller.spiffe_id,
            &AccessRequest {
                entitlement,
                actions: &actions,
                ttl: spec.ttl,
            },
        )?;
        Ok(Grant {
            id: GrantId::generate(Shard::of(&caller.spiffe_id)),
            subject: caller.spiffe_id.clone(),
            entitlement: decision.entitlement,
            actions: decision.actions,
            task_id,
            parent: None,
            justification: spec.justification.clone(),
            created_at: now,
            // Certificates and JWTs carry whole seconds; so does the grant.
            expires_at: whole_seconds(now + decision.ttl),
            state: GrantState::Active,
            end_reason: None,
            // Set by the caller once the store's epoch is known.
            epoch: Epoch::from_string(String::new()),
        })
    }
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("authority", &self.authority)
            .field("entitlements", &self.catalogue.entitlements().len())
            .finish_non_exhaustive()
    }
}

fn validate_audiences(audiences: &[String]) -> Result<Vec<String>, IssueError> {
    if audiences.is_empty() {
        return Err(invalid(
            "audiences",
            "at least one audience is required".to_owned(),
        ));
    }
    if audiences.len() > MAX_AUDIENCES {
        return Err(invalid(
            "audiences",
            format!("more than {MAX_AUDIENCES} audiences"),
        ));
    }
    let mut unique: Vec<String> = Vec::with_capacity(audiences.len());
    for audience in audiences {
        if audience.is_empty() {
            return Err(invalid("audiences", "an audience is empty".to_owned()));
        }
        if audience.len() > MAX_AUDIENCE_BYTES {
            return Err(invalid(
                "audiences",
                format!("an audience is longer than {MAX_AUDIENCE_BYTES} bytes"),
            ));
        }
        if !unique.contains(audience) {
            unique.push(audience.clone());
        }
    }
    Ok(unique)
}

fn invalid(field: &'static str, message: String) -> IssueError {
    IssueError::InvalidField { field, message }
}

fn name_error(field: &'static str, value: &str, error: NameError) -> IssueError {
    // Echo at most a short prefix of attacker-controlled input.
    let shown: String = value.chars().take(64).collect();
    invalid(field, format!("{shown:?} {error}"))
}
