//! Signing a credential under a grant: the X.509-SVID from a verified CSR
//! or the JWT-SVID, carrying the grant, its task, actions, epoch and
//! delegation chain.

use std::time::SystemTime;

use rustls::pki_types::CertificateDer;

use super::decide::credential_id;
use super::{IssueError, Issuer};
use crate::ca::{
    Actor, BACKDATE, Confirmation, GrantExtension, JwtSvidClaims, LeafRequest, VerifiedCsr,
};
use crate::clock::unix_seconds;
use crate::grant::{Action, Credential, CredentialId, Grant};
use crate::spiffe_id::SpiffeId;

// === impl Issuer ===

impl Issuer {
    /// Signs an X.509-SVID under `grant`, expiring at `expires_at` (or
    /// when the signing CA does, if sooner).
    pub(super) fn sign_x509(
        &self,
        csr: &VerifiedCsr,
        spiffe_id: &SpiffeId,
        grant: &Grant,
        expires_at: SystemTime,
        now: SystemTime,
    ) -> Result<(Vec<CertificateDer<'static>>, String, Credential), IssueError> {
        let (credential_id, serial) = CredentialId::new_x509(grant.id);
        let signed = self.authority.sign_x509_svid(
            csr,
            LeafRequest {
                spiffe_id,
                expires_at,
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
                epoch: grant.epoch.to_string(),
                break_glass: grant.break_glass,
                parent_grant_ids: parent_grant_ids(grant),
            },
            &serial,
            now,
        )?;
        let credential = Credential {
            id: credential_id,
            grant_id: grant.id,
            expires_at: signed.not_after,
            revoked: false,
        };
        Ok((signed.chain, signed.serial, credential))
    }

    /// Signs a JWT-SVID under `grant`, expiring at `expires_at`, bound to
    /// the certificate with thumbprint `bound_to` if given.
    pub(super) fn sign_jwt(
        &self,
        spiffe_id: &SpiffeId,
        audiences: &[String],
        grant: &Grant,
        expires_at: SystemTime,
        bound_to: Option<&str>,
        now: SystemTime,
    ) -> Result<(String, String, Credential), IssueError> {
        let credential_id = CredentialId::new_jwt(grant.id);
        let claims = JwtSvidClaims {
            sub: spiffe_id.to_string(),
            aud: audiences.to_vec(),
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
            jitid_epoch: grant.epoch.to_string(),
            jitid_break_glass: grant.break_glass,
            jitid_parents: parent_grant_ids(grant),
            act: grant.delegation.as_ref().and_then(|delegation| {
                let actors: Vec<&str> = delegation
                    .chain
                    .iter()
                    .map(|ancestor| ancestor.spiffe_id.as_str())
                    .collect();
                Actor::chain(&actors)
            }),
            cnf: bound_to.map(|thumbprint| Confirmation {
                x5t_s256: thumbprint.to_owned(),
            }),
        };
        let token = self.authority.sign_jwt_svid(&claims)?;
        let credential = Credential {
            id: credential_id,
            grant_id: grant.id,
            expires_at,
            revoked: false,
        };
        Ok((token, claims.jti, credential))
    }
}

/// The SPIFFE ID credentials under `grant` carry.
pub(super) fn grant_spiffe_id(grant: &Grant) -> Result<SpiffeId, IssueError> {
    match &grant.delegation {
        Some(delegation) => Ok(delegation.spiffe_id.clone()),
        None => credential_id(&grant.subject, &grant.task_id, grant.per_task),
    }
}

/// A delegated grant's ancestors' ids, parent first, as credentials carry
/// them.
fn parent_grant_ids(grant: &Grant) -> Vec<String> {
    grant
        .delegation
        .iter()
        .flat_map(|delegation| &delegation.chain)
        .map(|ancestor| ancestor.grant_id.to_string())
        .collect()
}
