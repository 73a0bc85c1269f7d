//! Verify: a relying party's check of a presented credential,
//! authenticity and expiry offline, then liveness in the store (UNKNOWN,
//! never VALID, when the store cannot answer); a sample of the answers is
//! audited.

use rustls::pki_types::CertificateDer;

use super::events::record;
use super::{Caller, IssueError, Issuer};
use crate::audit::event::{Event, LivenessChecked};
use crate::ca::{PresentedCredential, PresentedError, certificate_thumbprint};
use crate::grant::{CredentialId, Epoch, TaskId};
use crate::store::{Liveness, LivenessQuery};

/// A credential presented to a relying party.
#[derive(Debug, Clone)]
pub enum Presented {
    /// An X.509-SVID chain, leaf first.
    X509(Vec<CertificateDer<'static>>),
    /// A JWT-SVID and the relying party's audience.
    Jwt {
        /// The token.
        token: String,
        /// The audience it is presented to.
        audience: String,
        /// The DER certificate its presenter authenticated with, if any:
        /// a bound token is valid only with the certificate it is bound to.
        presenter: Option<Vec<u8>>,
    },
}

/// The verdict on a presented credential: valid, revoked, expired,
/// unknown (liveness could not be established) or invalid.
pub use crate::audit::event::LivenessStatus as VerifyStatus;

/// A verdict with its reason and what the credential claims.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The verdict.
    pub status: VerifyStatus,
    /// Why, in words.
    pub reason: String,
    /// What the credential claims, when it is authentic.
    pub credential: Option<PresentedCredential>,
}

// === impl Issuer ===

impl Issuer {
    /// Records a `Verify` answer, if it falls in the sample: the
    /// credential's id, grant and task, and the verdict with its reason.
    pub async fn audit_liveness(
        &self,
        caller: &Caller,
        verdict: &Verdict,
    ) -> Result<(), IssueError> {
        if self.auditor.is_none() || self.liveness_sample <= 0.0 {
            return Ok(());
        }
        if self.liveness_sample < 1.0 {
            let draw = f64::from(uuid::Uuid::new_v4().as_bytes()[0]) / 256.0;
            if draw >= self.liveness_sample {
                return Ok(());
            }
        }
        let claimed = verdict.credential.as_ref();
        self.audit(vec![record(
            caller,
            self.clock.now(),
            claimed.map(|c| c.spiffe_id.clone()),
            claimed.map(|c| c.grant.grant_id.clone()),
            claimed.map(|c| c.grant.task_id.clone()),
            Event::LivenessChecked(LivenessChecked {
                status: verdict.status,
                reason: verdict.reason.clone(),
                credential: claimed.map(|c| c.credential_id.clone()),
            }),
        )])
        .await
    }

    /// `Verify` as a relying party asks it: [`Issuer::verify`], with the
    /// answer recorded in the trail when it falls in the sample. An answer
    /// that cannot be recorded (the trail is down, often with the store it
    /// shares) is still given, but never VALID: UNKNOWN is what a relying
    /// party can act on, and a refusal (REVOKED, EXPIRED, ...) stays one.
    pub async fn verify_for(&self, caller: &Caller, presented: &Presented) -> Verdict {
        let mut verdict = self.verify(presented).await;
        if let Err(error) = self.audit_liveness(caller, &verdict).await {
            // The cause is logged, not told to the caller.
            tracing::warn!(%error, "liveness check not recorded; not answering VALID");
            if verdict.status == VerifyStatus::Valid {
                verdict.status = VerifyStatus::Unknown;
                verdict.reason = "liveness could not be recorded in the audit trail; treat the \
                                  credential as not valid"
                    .to_owned();
            }
        }
        verdict
    }

    /// Checks a presented credential: authenticity and expiry offline, then
    /// liveness in the store. A store that cannot be reached gives
    /// [`VerifyStatus::Unknown`], never `Valid`.
    pub async fn verify(&self, presented: &Presented) -> Verdict {
        let now = self.clock.now();
        let checked = match presented {
            Presented::X509(chain) => self.authority.verify_x509_svid(chain, now),
            Presented::Jwt {
                token,
                audience,
                presenter,
            } => self
                .authority
                .verify_jwt_svid(token, audience, now)
                .and_then(|credential| {
                    check_confirmation(&credential, presenter.as_deref())?;
                    Ok(credential)
                }),
        };
        let credential = match checked {
            Ok(credential) => credential,
            Err(PresentedError::Expired(credential)) => {
                return Verdict {
                    status: VerifyStatus::Expired,
                    reason: "credential expired".to_owned(),
                    credential: Some(*credential),
                };
            }
            Err(error) => {
                return Verdict {
                    status: VerifyStatus::Invalid,
                    reason: error.to_string(),
                    credential: None,
                };
            }
        };
        let verdict = |status, reason: String| Verdict {
            status,
            reason,
            credential: Some(credential.clone()),
        };
        let id = if credential.is_x509 {
            CredentialId::parse(&credential.credential_id)
        } else {
            CredentialId::parse(&format!("jwt:{}", credential.credential_id))
        };
        let (Some(id), Ok(task)) = (id, TaskId::new(&credential.grant.task_id)) else {
            return verdict(
                VerifyStatus::Invalid,
                "credential id or task is malformed".to_owned(),
            );
        };
        let epoch = Epoch::from_string(credential.grant.epoch.clone());
        let liveness = self
            .store
            .liveness(LivenessQuery {
                credential: &id,
                epoch: &epoch,
                task: &task,
            })
            .await;
        match liveness {
            Ok(Liveness::Live(_)) => verdict(VerifyStatus::Valid, "live".to_owned()),
            Ok(Liveness::GrantEnded(grant)) => verdict(
                VerifyStatus::Revoked,
                format!(
                    "grant {} {}: {}",
                    grant.id,
                    grant.state.as_str(),
                    grant.end_reason.unwrap_or_default()
                ),
            ),
            Ok(Liveness::CredentialRevoked(_)) => {
                verdict(VerifyStatus::Revoked, "credential revoked".to_owned())
            }
            Ok(Liveness::TaskRevoked { reason }) => {
                verdict(VerifyStatus::Revoked, format!("task revoked: {reason}"))
            }
            Ok(Liveness::EpochReset) => verdict(
                VerifyStatus::Revoked,
                "epoch reset: minted before the grant store lost its data".to_owned(),
            ),
            Ok(Liveness::NotFound) => verdict(
                VerifyStatus::Unknown,
                "the grant store has no record of it".to_owned(),
            ),
            Err(error) => {
                tracing::warn!(%error, "liveness check failed; answering UNKNOWN");
                verdict(VerifyStatus::Unknown, "grant store unavailable".to_owned())
            }
        }
    }
}

/// A bound token must come with the certificate it is bound to.
fn check_confirmation(
    credential: &PresentedCredential,
    presenter: Option<&[u8]>,
) -> Result<(), PresentedError> {
    let Some(expected) = &credential.confirmation else {
        return Ok(());
    };
    match presenter {
        None => Err(PresentedError::Invalid(
            "token is bound to a certificate (cnf x5t#S256); present the certificate it was \
             presented with"
                .to_owned(),
        )),
        Some(der) if certificate_thumbprint(der) != *expected => Err(PresentedError::Invalid(
            "token is bound to another certificate than its presenter's".to_owned(),
        )),
        Some(_) => Ok(()),
    }
}
