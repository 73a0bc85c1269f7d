//! Issuance: one flow for X.509- and JWT-SVIDs, under a new grant decided
//! now or under an active grant the caller holds; and RequestGrant, which
//! creates a grant (pending or active) without minting.

use std::time::{Duration, SystemTime};

use rustls::pki_types::CertificateDer;

use super::decide::Decided;
use super::events::{issued, received};
use super::mint::grant_spiffe_id;
use super::request::{ExistingGrant, GrantRequest, NewGrant, invalid, validate_audiences};
use super::{Caller, IssueError, Issuer};
use crate::audit::event::Rpc;
use crate::ca::VerifiedCsr;
use crate::clock::whole_seconds;
use crate::grant::{Credential, Grant, GrantState};
use crate::policy::{self, Approval, Denial};
use crate::spiffe_id::SpiffeId;
use crate::store::{AddOutcome, CredentialRevocation, Ending, StoreError};

/// An issued X.509-SVID.
#[derive(Debug, Clone)]
pub struct X509Issued {
    /// DER chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's serial, lowercase hex.
    pub serial: String,
    /// The SPIFFE ID it carries.
    pub spiffe_id: SpiffeId,
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
    /// The SPIFFE ID it carries (`sub`).
    pub spiffe_id: SpiffeId,
    /// The grant it was issued under.
    pub grant: Grant,
}

/// What to mint.
enum Mint<'a> {
    X509(&'a VerifiedCsr),
    Jwt {
        audiences: &'a [String],
        /// Bind the token to the caller's certificate.
        bind: bool,
    },
}

/// A minted credential, before it is handed out.
enum Minted {
    X509 {
        chain: Vec<CertificateDer<'static>>,
        serial: String,
    },
    Jwt {
        token: String,
        jti: String,
    },
}

// === impl Issuer ===

impl Issuer {
    /// Issues an X.509-SVID for `caller` from a DER CSR: under a new grant
    /// decided now, or under the active grant the request names.
    pub async fn issue_x509(
        &self,
        caller: &Caller,
        request: &GrantRequest,
        csr_der: &[u8],
    ) -> Result<X509Issued, IssueError> {
        let csr = VerifiedCsr::from_der(csr_der)?;
        let (minted, grant, spiffe_id) = self
            .issue(caller, request, Rpc::IssueX509Svid, Mint::X509(&csr))
            .await?;
        let Minted::X509 { chain, serial } = minted else {
            unreachable!("an X.509 mint yields a certificate")
        };
        Ok(X509Issued {
            chain,
            serial,
            spiffe_id,
            grant,
        })
    }

    /// Issues a JWT-SVID for `caller` with the given audiences: under a new
    /// grant decided now, or under the active grant the request names.
    ///
    /// With `bind` (or on an entitlement with `bind_jwt`), the token is
    /// bound to the certificate `caller` authenticated with.
    pub async fn issue_jwt(
        &self,
        caller: &Caller,
        request: &GrantRequest,
        audiences: &[String],
        bind: bool,
    ) -> Result<JwtIssued, IssueError> {
        let audiences = validate_audiences(audiences)?;
        let mint = Mint::Jwt {
            audiences: &audiences,
            bind,
        };
        let (minted, grant, spiffe_id) =
            self.issue(caller, request, Rpc::IssueJwtSvid, mint).await?;
        let Minted::Jwt { token, jti } = minted else {
            unreachable!("a JWT mint yields a token")
        };
        Ok(JwtIssued {
            token,
            jti,
            spiffe_id,
            grant,
        })
    }

    /// Creates a grant without minting anything: a request that waits for
    /// approval, or (for an auto-approved or break-glass request) an active
    /// grant that credentials are minted under later.
    pub async fn request_grant(
        &self,
        caller: &Caller,
        request: &GrantRequest,
    ) -> Result<Grant, IssueError> {
        let GrantRequest::New(new) = request else {
            return Err(invalid(
                "grant_id",
                "must be empty: a request creates a new grant".to_owned(),
            ));
        };
        let now = self.clock.now();
        let decided = self
            .decide(caller, request, new, Rpc::RequestGrant, None, now)
            .await?;
        let break_glass = decided.grant.break_glass;
        if break_glass {
            self.open_review(&decided.grant).await?;
        }
        let mut epoch = self.store.epoch().await?;
        for attempt in 0..2 {
            let grant = Grant {
                epoch: epoch.clone(),
                ..decided.grant.clone()
            };
            match self.store.record_grant(&grant).await {
                Ok(()) => {
                    let records = decided.records(caller, &grant, None, now);
                    self.audit_or_undo(records, || self.discard_new(&grant))
                        .await?;
                    return Ok(grant);
                }
                Err(StoreError::EpochChanged(current)) if attempt == 0 => epoch = current,
                Err(error) => {
                    if break_glass && error.nothing_written() {
                        self.drop_review(grant.id).await;
                    }
                    return Err(error.into());
                }
            }
        }
        if break_glass {
            self.drop_review(decided.grant.id).await;
        }
        Err(StoreError::Unavailable("store epoch keeps changing".into()).into())
    }

    /// The one issuance flow: decide or find the grant, sign, record, audit
    /// (undoing the record if the trail refuses), and only then hand out.
    async fn issue(
        &self,
        caller: &Caller,
        request: &GrantRequest,
        rpc: Rpc,
        mint: Mint<'_>,
    ) -> Result<(Minted, Grant, SpiffeId), IssueError> {
        let now = self.clock.now();
        match request {
            GrantRequest::Existing(existing) => {
                self.issue_existing(caller, request, existing, rpc, mint, now)
                    .await
            }
            GrantRequest::New(new) => self.issue_new(caller, request, new, rpc, mint, now).await,
        }
    }

    /// Mints under an existing active grant.
    async fn issue_existing(
        &self,
        caller: &Caller,
        request: &GrantRequest,
        existing: &ExistingGrant,
        rpc: Rpc,
        mint: Mint<'_>,
        now: SystemTime,
    ) -> Result<(Minted, Grant, SpiffeId), IssueError> {
        let (grant, spiffe_id, expires_at) = self.approved_grant(caller, existing, now).await?;
        if let Mint::Jwt { audiences, .. } = &mint {
            let catalogue = self.catalogue();
            if let Some(allowed) = catalogue
                .entitlement(&grant.entitlement)
                .and_then(|entitlement| entitlement.audiences.as_ref())
                && let Some(audience) = audiences.iter().find(|a| !allowed.contains(a))
            {
                return Err(Denial::AudienceNotAllowed {
                    entitlement: grant.entitlement.clone(),
                    audience: audience.clone(),
                }
                .into());
            }
        }
        let expires_at = expires_at.min(self.authority.signing_not_after());
        let (minted, credential) = self.sign(caller, &mint, &spiffe_id, &grant, expires_at, now)?;
        self.add_credential(&grant, &credential).await?;
        let records = vec![
            received(caller, request, rpc, now),
            issued(caller, &grant, &credential, &spiffe_id, now),
        ];
        let ending = Ending {
            state: GrantState::Revoked,
            reason: "not issued: the audit trail refused it".to_owned(),
            at: now,
        };
        self.audit_or_undo(records, || async {
            self.store
                .revoke_credential(&credential.id, &ending)
                .await
                .map(|_: CredentialRevocation| ())
        })
        .await?;
        // The grant as the caller sees it: expiring when this credential
        // does.
        let grant = Grant {
            expires_at: credential.expires_at,
            ..grant
        };
        Ok((minted, grant, spiffe_id))
    }

    /// Decides a new grant and records it with its first credential; a
    /// break-glass grant opens its review first, so no break-glass
    /// credential exists without one.
    async fn issue_new(
        &self,
        caller: &Caller,
        request: &GrantRequest,
        new: &NewGrant,
        rpc: Rpc,
        mint: Mint<'_>,
        now: SystemTime,
    ) -> Result<(Minted, Grant, SpiffeId), IssueError> {
        let audiences = match &mint {
            Mint::X509(_) => None,
            Mint::Jwt { audiences, .. } => Some(*audiences),
        };
        let mut decided = self
            .decide(caller, request, new, rpc, audiences, now)
            .await?;
        // The grant never outlives its credentials' issuer.
        decided.grant.expires_at = decided
            .grant
            .expires_at
            .min(self.authority.signing_not_after());
        let (minted, grant, credential) = match decided.approval {
            Approval::Auto => self.mint_and_record(caller, &decided, &mint, now).await?,
            Approval::BreakGlass => {
                self.open_review(&decided.grant).await?;
                let issued = self.mint_and_record(caller, &decided, &mint, now).await;
                // Only when the grant was certainly not written: a timeout
                // may hide a write, and a break-glass grant must never be
                // without its review.
                if let Err(IssueError::Store(error)) = &issued
                    && error.nothing_written()
                {
                    self.drop_review(decided.grant.id).await;
                }
                issued?
            }
            Approval::Required { min_approvals, .. } => {
                return Err(IssueError::FailedPrecondition(format!(
                    "entitlement {:?} needs {min_approvals} approval(s): request a grant \
                     (RequestGrant, or `jitid fetch --wait` or `jitid exec --wait`), then issue under it once approved",
                    decided.grant.entitlement
                )));
            }
        };
        let records = decided.records(caller, &grant, Some((&credential, &decided.spiffe_id)), now);
        self.audit_or_undo(records, || self.discard_new(&grant))
            .await?;
        Ok((minted, grant, decided.spiffe_id))
    }

    /// Mints a credential under the store's epoch and records it with its
    /// grant. A changed epoch is learnt at the write (nothing was written);
    /// then it mints once more under the new one, so a credential never
    /// carries an epoch its store does not vouch for.
    async fn mint_and_record(
        &self,
        caller: &Caller,
        decided: &Decided,
        mint: &Mint<'_>,
        now: SystemTime,
    ) -> Result<(Minted, Grant, Credential), IssueError> {
        let mut epoch = self.store.epoch().await?;
        for attempt in 0..2 {
            let grant = Grant {
                epoch: epoch.clone(),
                ..decided.grant.clone()
            };
            let (minted, credential) = self.sign(
                caller,
                mint,
                &decided.spiffe_id,
                &grant,
                grant.expires_at,
                now,
            )?;
            // The signing CA may expire before the grant; the grant never
            // outlives its credential's issuer.
            let grant = Grant {
                expires_at: credential.expires_at,
                ..grant
            };
            match self.store.record_issuance(&grant, &credential).await {
                Ok(()) => return Ok((minted, grant, credential)),
                Err(StoreError::EpochChanged(current)) if attempt == 0 => epoch = current,
                Err(error) => return Err(error.into()),
            }
        }
        Err(StoreError::Unavailable("store epoch keeps changing".into()).into())
    }

    /// Signs what `mint` asks for under `grant`.
    fn sign(
        &self,
        caller: &Caller,
        mint: &Mint<'_>,
        spiffe_id: &SpiffeId,
        grant: &Grant,
        expires_at: SystemTime,
        now: SystemTime,
    ) -> Result<(Minted, Credential), IssueError> {
        match mint {
            Mint::X509(csr) => {
                let (chain, serial, credential) =
                    self.sign_x509(csr, spiffe_id, grant, expires_at, now)?;
                Ok((Minted::X509 { chain, serial }, credential))
            }
            Mint::Jwt { audiences, bind } => {
                let bound_to = self.binding(caller, &grant.entitlement, *bind)?;
                let (token, jti, credential) = self.sign_jwt(
                    spiffe_id,
                    audiences,
                    grant,
                    expires_at,
                    bound_to.as_deref(),
                    now,
                )?;
                Ok((Minted::Jwt { token, jti }, credential))
            }
        }
    }

    /// Takes back a grant the trail refused: never handed out, so it goes
    /// as if never written, with its review if it was break-glass.
    async fn discard_new(&self, grant: &Grant) -> Result<(), StoreError> {
        if grant.break_glass {
            self.drop_review(grant.id).await;
        }
        self.store.discard_grant(grant.id).await
    }

    /// The active grant `existing` names, owned by `caller`, with the
    /// SPIFFE ID its credentials carry and when the next one expires.
    async fn approved_grant(
        &self,
        caller: &Caller,
        existing: &ExistingGrant,
        now: SystemTime,
    ) -> Result<(Grant, SpiffeId, SystemTime), IssueError> {
        let id = existing.grant_id;
        let grant = self.owned_grant(caller, id).await?;
        self.check_token_grant(caller, &grant).await?;
        match grant.state {
            GrantState::Active => {}
            GrantState::Pending => {
                return Err(IssueError::FailedPrecondition(format!(
                    "grant {id} is pending approval ({} approval(s) so far)",
                    grant.approvals.len()
                )));
            }
            GrantState::Denied | GrantState::Completed | GrantState::Revoked => {
                return Err(IssueError::FailedPrecondition(format!(
                    "grant {id} is {}: {}",
                    grant.state.as_str(),
                    grant.end_reason.clone().unwrap_or_default()
                )));
            }
        }
        let catalogue = self.catalogue();
        let entitlement = self.still_requester(&catalogue, caller, &grant.entitlement)?;
        // Credentials carry what the entitlement allows now: a reload that
        // took actions away takes them from credentials minted after it.
        let grant = within_entitlement(grant, entitlement)?;
        let expires_at = within_grant(existing.ttl, &grant, now, "")?;
        let spiffe_id = grant_spiffe_id(&grant)?;
        Ok((grant, spiffe_id, expires_at))
    }

    async fn add_credential(
        &self,
        grant: &Grant,
        credential: &Credential,
    ) -> Result<(), IssueError> {
        match self.store.add_credential(grant, credential).await? {
            AddOutcome::Added => Ok(()),
            AddOutcome::NotActive => Err(IssueError::FailedPrecondition(format!(
                "grant {} ended while the credential was minted; nothing was issued",
                grant.id
            ))),
            AddOutcome::NotFound => {
                Err(IssueError::NotFound(format!("no live grant {}", grant.id)))
            }
            AddOutcome::Full => Err(IssueError::FailedPrecondition(format!(
                "grant {} already has {} credentials; request a new grant",
                grant.id,
                crate::store::MAX_CREDENTIALS_PER_GRANT
            ))),
        }
    }

    /// The thumbprint a JWT-SVID of `entitlement` is bound to: the
    /// caller's certificate's, when asked or when the entitlement binds
    /// every token.
    fn binding(
        &self,
        caller: &Caller,
        entitlement: &str,
        asked: bool,
    ) -> Result<Option<String>, IssueError> {
        let always = self
            .catalogue()
            .entitlement(entitlement)
            .is_some_and(|entitlement| entitlement.bind_jwt);
        if !asked && !always {
            return Ok(None);
        }
        caller
            .certificate_thumbprint
            .clone()
            .map(Some)
            .ok_or_else(|| {
                IssueError::FailedPrecondition(
                    "a bound JWT-SVID needs the caller's mTLS client certificate".to_owned(),
                )
            })
    }
}

/// When something asked for `ttl` under `grant` expires: the grant's
/// expiry when no TTL is asked; refused below [`policy::MIN_TTL`] or past
/// what is left of the grant (`why` ends the message), never shortened.
pub(super) fn within_grant(
    ttl: Option<Duration>,
    grant: &Grant,
    now: SystemTime,
    why: &str,
) -> Result<SystemTime, IssueError> {
    let left = grant.expires_at.duration_since(now).unwrap_or_default();
    match ttl.filter(|ttl| !ttl.is_zero()) {
        None => Ok(grant.expires_at),
        Some(ttl) if ttl < policy::MIN_TTL => Err(Denial::TtlTooShort.into()),
        Some(ttl) if ttl > left => Err(invalid(
            "ttl",
            format!(
                "{} exceeds what is left of grant {} ({}){why}",
                humantime::format_duration(ttl),
                grant.id,
                humantime::format_duration(Duration::from_secs(left.as_secs()))
            ),
        )),
        Some(ttl) => Ok(whole_seconds(now + ttl).min(grant.expires_at)),
    }
}

/// `grant` with only the actions `entitlement` still has; refused when
/// none are left.
pub(super) fn within_entitlement(
    mut grant: Grant,
    entitlement: &crate::policy::Entitlement,
) -> Result<Grant, IssueError> {
    grant
        .actions
        .retain(|action| entitlement.actions.contains(action));
    if grant.actions.is_empty() {
        return Err(IssueError::FailedPrecondition(format!(
            "grant {} has no action left that entitlement {:?} still allows; request a new grant",
            grant.id, grant.entitlement
        )));
    }
    Ok(grant)
}
