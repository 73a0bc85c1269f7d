//! The `jitid.v1.Issuer` gRPC service: each RPC authenticates, admits,
//! converts (through [`wire`](super::wire)), calls its use case, and runs
//! in a tracing span naming caller, entitlement and outcome.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Semaphore, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::admission::{self, Admission};
use super::audit_query::Query;
use super::auth_failures::AuthFailures;
use super::bearer::TokenAttestation;
use super::identity;
use super::stream_slots::StreamSlots;
use super::streams;
use super::tls::PeerInfo;
use super::wire::{
    duration_of, grant_page, grant_record, grant_spec, removal_status, review_record, state_filter,
    status, summary,
};
use crate::attest::AttestationError;
use crate::ca::REFRESH_HINT;
use crate::config::StreamLimits;
use crate::convert;
use crate::grant::GrantId;
use crate::issuer::{
    Attestation, AttestationRefusal, Caller, CompleteTarget, DelegationRequest, GrantFilter,
    Issuer, Outcome, Presented, RevokeTarget, VerifyStatus,
};
use crate::proto::v1::{
    self as pb, FetchBundleRequest, FetchBundleResponse, IssueJwtSvidRequest, IssueJwtSvidResponse,
    IssueX509SvidRequest, IssueX509SvidResponse, issuer_server::Issuer as IssuerApi,
};
use rustls::pki_types::CertificateDer;

/// Most audit queries served at once (each scans the trail).
const MAX_AUDIT_READERS: usize = 16;

/// The gRPC face of an [`Issuer`].
#[derive(Debug)]
pub(crate) struct IssuerService {
    issuer: Arc<Issuer>,
    /// Turns true when the server shuts down, so long streams end.
    shutdown: watch::Receiver<bool>,
    /// Revocation streams; grant streams apart, so waiting requesters
    /// cannot starve relying parties of revocation streams.
    watchers: StreamSlots,
    grant_watchers: StreamSlots,
    audit_readers: Arc<Semaphore>,
    /// Bounds the unary RPCs that do work: issuing, requesting a grant,
    /// delegating and verifying.
    admission: Admission,
    /// Authentication failures, tallied per address so they cannot flood
    /// the trail.
    failures: Arc<AuthFailures>,
}

impl IssuerService {
    pub(crate) fn new(
        issuer: Arc<Issuer>,
        shutdown: watch::Receiver<bool>,
        admission: Admission,
        streams: StreamLimits,
        failure_window: std::time::Duration,
    ) -> Self {
        Self {
            failures: AuthFailures::start(issuer.clone(), failure_window, shutdown.clone()),
            issuer,
            shutdown,
            admission,
            watchers: StreamSlots::new(
                "revocation streams",
                streams.max_revocation_streams,
                streams.max_streams_per_caller,
            ),
            grant_watchers: StreamSlots::new(
                "grant streams",
                streams.max_grant_streams,
                streams.max_streams_per_caller,
            ),
            audit_readers: Arc::new(Semaphore::new(MAX_AUDIT_READERS)),
        }
    }

    /// The attested caller of `request`, or the refusal to send: the
    /// connection's client certificate or the request's bearer token
    /// (`bearer.rs`), never both, still valid now; for an attestation
    /// identity, not on the denylist (one store round trip; UNAVAILABLE
    /// when the store cannot say, fail closed).
    pub(super) fn authenticate<T>(
        &self,
        request: &Request<T>,
    ) -> impl Future<Output = Result<Caller, Status>> + Send + '_ {
        // Taken now, so the future does not hold the request.
        let peer = request.extensions().get::<PeerInfo>().cloned();
        let token = request.extensions().get::<TokenAttestation>().cloned();
        self.attest(peer, token)
    }

    async fn attest(
        &self,
        peer: Option<PeerInfo>,
        token: Option<TokenAttestation>,
    ) -> Result<Caller, Status> {
        let peer = peer.ok_or_else(|| Status::unauthenticated("no TLS peer information"))?;
        let certificate = !matches!(peer.attestation, Err(AttestationError::NoCertificate));
        let now = self.issuer.clock().now();
        // An IPv4 client of a dual-stack listener shows as ::ffff:a.b.c.d;
        // conditions see a.b.c.d.
        let source = Some(peer.remote_addr.ip().to_canonical());
        let (actor, reason, code) = match (token, &peer.attestation) {
            (Some(_), _) if certificate => (
                "unauthenticated".to_owned(),
                "present one attestation: a client certificate or an OIDC token \
                 (authorization: Bearer), not both"
                    .to_owned(),
                tonic::Code::InvalidArgument,
            ),
            (Some(TokenAttestation(Ok(caller))), _) if still_attested(&caller, now) => {
                return Ok(Caller { source, ..caller });
            }
            (Some(TokenAttestation(Ok(caller))), _) => (
                caller.spiffe_id.to_string(),
                "OIDC token: it has expired".to_owned(),
                tonic::Code::Unauthenticated,
            ),
            (Some(TokenAttestation(Err(error))), _) => (
                "unauthenticated".to_owned(),
                error.to_string(),
                if error.is_permission_denied() {
                    tonic::Code::PermissionDenied
                } else if error.is_unavailable() {
                    tonic::Code::Unavailable
                } else {
                    tonic::Code::Unauthenticated
                },
            ),
            (None, Ok(caller)) if still_attested(caller, now) => {
                let caller = Caller {
                    source,
                    ..caller.clone()
                };
                match self.issuer.check_attestation(&caller).await {
                    Ok(()) => return Ok(caller),
                    Err(AttestationRefusal::Unavailable(error)) => {
                        tracing::warn!(error = %super::wire::error_chain(&error), "attestation denylist unavailable; refusing");
                        return Err(Status::unavailable(
                            "attestation denylist unavailable; nothing was done, retry",
                        ));
                    }
                    Err(refusal) => (
                        caller.spiffe_id.to_string(),
                        refusal.to_string(),
                        tonic::Code::Unauthenticated,
                    ),
                }
            }
            (None, Ok(caller)) => (
                caller.spiffe_id.to_string(),
                "client certificate has expired".to_owned(),
                tonic::Code::Unauthenticated,
            ),
            (None, Err(error)) => (
                "unauthenticated".to_owned(),
                error.to_string(),
                tonic::Code::Unauthenticated,
            ),
        };
        self.failures
            .note(peer.remote_addr.ip().to_canonical(), actor, reason.clone());
        Err(Status::new(code, reason))
    }
}

#[tonic::async_trait]
impl IssuerApi for IssuerService {
    type WatchRevocationsStream = ReceiverStream<Result<pb::RevocationEvent, Status>>;

    async fn watch_revocations(
        &self,
        request: Request<pb::WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        let caller = self.authenticate(&request).await;
        let pb::WatchRevocationsRequest {
            cursor,
            relying_party,
        } = request.into_inner();
        let (feed, permit) = traced(rpc_span("WatchRevocations", None), async {
            let caller = record_caller(caller?);
            let well_formed = cursor.len() <= 64
                && cursor.split('-').count() <= 2
                && cursor
                    .split('-')
                    .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()));
            if !cursor.is_empty() && !well_formed {
                return Err(Status::invalid_argument(
                    "cursor: not a cursor from this stream (digits, or digits-digits)",
                ));
            }
            // A relying party under its configured name has places of its
            // own; anyone else shares the rest.
            let permit = if relying_party.is_empty() {
                self.watchers.for_caller(caller.spiffe_id.as_str())?
            } else {
                self.issuer
                    .register_relying_party(&caller, &relying_party, &cursor)
                    .await
                    .map_err(status)?;
                self.watchers.for_relying_party(&relying_party)?
            };
            let feed = self.issuer.revocation_feed().await.map_err(status)?;
            Ok((feed, permit))
        })
        .await?;
        let (events, receiver) = tokio::sync::mpsc::channel(64);
        tokio::spawn(streams::follow_revocations(
            self.issuer.clone(),
            feed,
            cursor,
            events,
            self.shutdown.clone(),
            permit,
        ));
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn issue_x509_svid(
        &self,
        request: Request<IssueX509SvidRequest>,
    ) -> Result<Response<IssueX509SvidResponse>, Status> {
        let caller = self.authenticate(&request).await;
        let request = request.into_inner();
        let span = rpc_span("IssueX509Svid", request.grant.as_ref());
        traced(span, async move {
            let caller = record_caller(caller?);
            let _admitted = self.admission.admit(&caller)?;
            let spec = grant_spec(request.grant)?;
            let issued = self
                .issuer
                .issue_x509(&caller, &spec, &request.csr)
                .await
                .map_err(status)?;
            Ok(Response::new(IssueX509SvidResponse {
                cert_chain: issued.chain.iter().map(|cert| cert.to_vec()).collect(),
                bundle: self.issuer.bundle().x509_ders(),
                grant: Some(summary(&issued.grant, &issued.spiffe_id)),
                serial: issued.serial,
            }))
        })
        .await
    }

    async fn issue_jwt_svid(
        &self,
        request: Request<IssueJwtSvidRequest>,
    ) -> Result<Response<IssueJwtSvidResponse>, Status> {
        let caller = self.authenticate(&request).await;
        let request = request.into_inner();
        let span = rpc_span("IssueJwtSvid", request.grant.as_ref());
        traced(span, async move {
            let caller = record_caller(caller?);
            let _admitted = self.admission.admit(&caller)?;
            let spec = grant_spec(request.grant)?;
            let issued = self
                .issuer
                .issue_jwt(
                    &caller,
                    &spec,
                    &request.audiences,
                    request.bind_to_certificate,
                )
                .await
                .map_err(status)?;
            Ok(Response::new(IssueJwtSvidResponse {
                token: issued.token,
                grant: Some(summary(&issued.grant, &issued.spiffe_id)),
                jti: issued.jti,
            }))
        })
        .await
    }

    async fn fetch_bundle(
        &self,
        _request: Request<FetchBundleRequest>,
    ) -> Result<Response<FetchBundleResponse>, Status> {
        // The bundle is public: no attestation needed.
        traced(rpc_span("FetchBundle", None), async {
            let bundle = self.issuer.bundle();
            Ok(Response::new(FetchBundleResponse {
                trust_domain: bundle.trust_domain.to_string(),
                spiffe_bundle: bundle.to_spiffe_json(),
                x509_authorities: bundle.x509_ders(),
                sequence: bundle.sequence,
                refresh_hint: Some(convert::duration(REFRESH_HINT)),
            }))
        })
        .await
    }

    async fn revoke(
        &self,
        request: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeResponse>, Status> {
        let caller = self.authenticate(&request).await;
        let request = request.into_inner();
        traced(rpc_span("Revoke", None), async move {
            let caller = record_caller(caller?);
            let target = match request.target {
                Some(pb::revoke_request::Target::CredentialId(id)) => RevokeTarget::Credential(id),
                Some(pb::revoke_request::Target::GrantId(id)) => RevokeTarget::Grant(id),
                Some(pb::revoke_request::Target::TaskId(id)) => RevokeTarget::Task(id),
                Some(pb::revoke_request::Target::Subject(id)) => RevokeTarget::Subject(id),
                None => {
                    return Err(Status::invalid_argument(
                        "target: name a credential_id, grant_id, task_id or subject",
                    ));
                }
            };
            let outcome = self
                .issuer
                .revoke(&caller, &target, &request.reason)
                .await
                .map_err(status)?;
            Ok(Response::new(pb::RevokeResponse {
                grant_ids: outcome.grants.iter().map(ToString::to_string).collect(),
                credential_revoked: outcome.credential_revoked,
                task_revoked: outcome.task_revoked,
            }))
        })
        .await
    }

    async fn complete_task(
        &self,
        request: Request<pb::CompleteTaskRequest>,
    ) -> Result<Response<pb::CompleteTaskResponse>, Status> {
        let caller = self.authenticate(&request).await;
        let request = request.into_inner();
        traced(rpc_span("CompleteTask", None), async move {
            let caller = record_caller(caller?);
            let target = match request.target {
                Some(pb::complete_task_request::Target::GrantId(id)) => CompleteTarget::Grant(id),
                Some(pb::complete_task_request::Target::TaskId(id)) => CompleteTarget::Task(id),
                None => {
                    return Err(Status::invalid_argument(
                        "target: name a grant_id or task_id",
                    ));
                }
            };
            let outcome = match pb::TaskOutcome::try_from(request.outcome) {
                Ok(pb::TaskOutcome::Unspecified | pb::TaskOutcome::Completed) => Outcome::Completed,
                Ok(pb::TaskOutcome::Failed) => Outcome::Failed,
                Err(_) => {
                    return Err(Status::invalid_argument(
                        "outcome: not a TaskOutcome (COMPLETED or FAILED)",
                    ));
                }
            };
            let ended = self
                .issuer
                .complete(&caller, &target, outcome)
                .await
                .map_err(status)?;
            Ok(Response::new(pb::CompleteTaskResponse {
                grant_ids: ended.iter().map(ToString::to_string).collect(),
            }))
        })
        .await
    }

    async fn verify(
        &self,
        request: Request<pb::VerifyRequest>,
    ) -> Result<Response<pb::VerifyResponse>, Status> {
        let caller = self.authenticate(&request).await;
        let request = request.into_inner();
        traced(rpc_span("Verify", None), async move {
            let caller = record_caller(caller?);
            let _admitted = self.admission.admit(&caller)?;
            let presented = match request.credential {
                Some(pb::verify_request::Credential::X509(x509)) => {
                    if x509.cert_chain.is_empty() || x509.cert_chain.len() > 8 {
                        return Err(Status::invalid_argument(
                            "x509.cert_chain: 1 to 8 certificates",
                        ));
                    }
                    Presented::X509(
                        x509.cert_chain
                            .into_iter()
                            .map(CertificateDer::from)
                            .collect(),
                    )
                }
                Some(pb::verify_request::Credential::Jwt(jwt)) => {
                    if jwt.token.is_empty() {
                        return Err(Status::invalid_argument("jwt.token: is empty"));
                    }
                    if jwt.audience.is_empty() {
                        return Err(Status::invalid_argument("jwt.audience: is empty"));
                    }
                    if jwt.presenter_certificate.len() > crate::ca::MAX_CSR_BYTES {
                        return Err(Status::invalid_argument(format!(
                            "jwt.presenter_certificate: at most {} bytes",
                            crate::ca::MAX_CSR_BYTES
                        )));
                    }
                    Presented::Jwt {
                        token: jwt.token,
                        audience: jwt.audience,
                        presenter: (!jwt.presenter_certificate.is_empty())
                            .then_some(jwt.presenter_certificate),
                    }
                }
                None => return Err(Status::invalid_argument("credential: send x509 or jwt")),
            };
            let verdict = self.issuer.verify_for(&caller, &presented).await;
            let status = match verdict.status {
                VerifyStatus::Valid => pb::VerifyStatus::Valid,
                VerifyStatus::Revoked => pb::VerifyStatus::Revoked,
                VerifyStatus::Expired => pb::VerifyStatus::Expired,
                VerifyStatus::Unknown => pb::VerifyStatus::Unknown,
                VerifyStatus::Invalid => pb::VerifyStatus::Invalid,
            };
            tracing::Span::current().record(
                "entitlement",
                verdict
                    .credential
                    .as_ref()
                    .map(|c| c.grant.entitlement.as_str())
                    .unwrap_or_default(),
            );
            let mut response = pb::VerifyResponse {
                status: status.into(),
                reason: verdict.reason,
                ..Default::default()
            };
            if let Some(credential) = verdict.credential {
                response.spiffe_id = credential.spiffe_id;
                response.grant_id = credential.grant.grant_id;
                response.entitlement = credential.grant.entitlement;
                response.actions = credential.grant.actions;
                response.task_id = credential.grant.task_id;
                response.credential_id = credential.credential_id;
                response.expires_at = Some(convert::timestamp(credential.expires_at));
                response.actors = credential.actors;
                response.parent_grant_ids = credential.grant.parent_grant_ids;
                response.certificate_bound = credential.confirmation.is_some();
            }
            Ok(Response::new(response))
        })
        .await
    }

    async fn list_grants(
        &self,
        request: Request<pb::ListGrantsRequest>,
    ) -> Result<Response<pb::ListGrantsResponse>, Status> {
        let caller = self.authenticate(&request).await;
        let request = request.into_inner();
        traced(rpc_span("ListGrants", None), async move {
            let caller = record_caller(caller?);
            if request.awaiting_my_approval {
                if !request.subject.is_empty() || !request.task_id.is_empty() || request.state != 0
                {
                    return Err(Status::invalid_argument(
                        "awaiting_my_approval: leave subject, task_id and state unset",
                    ));
                }
                let grants = self
                    .issuer
                    .awaiting_approval(&caller)
                    .await
                    .map_err(status)?;
                let (grants, next_page_token) =
                    grant_page(grants, request.page_size, &request.page_token)?;
                return Ok(Response::new(pb::ListGrantsResponse {
                    grants: grants
                        .iter()
                        .map(|grant| grant_record(grant, &[]))
                        .collect(),
                    next_page_token,
                }));
            }
            let state = state_filter(request.state)?;
            let filter = GrantFilter {
                subject: Some(request.subject).filter(|s| !s.is_empty()),
                task: Some(request.task_id).filter(|t| !t.is_empty()),
                state,
            };
            let grants = self
                .issuer
                .list_grants(&caller, &filter)
                .await
                .map_err(status)?;
            let (grants, next_page_token) =
                grant_page(grants, request.page_size, &request.page_token)?;
            Ok(Response::new(pb::ListGrantsResponse {
                grants: grants
                    .iter()
                    .map(|grant| grant_record(grant, &[]))
                    .collect(),
                next_page_token,
            }))
        })
        .await
    }

    async fn get_grant(
        &self,
        request: Request<pb::GetGrantRequest>,
    ) -> Result<Response<pb::GetGrantResponse>, Status> {
        let caller = self.authenticate(&request).await;
        let request = request.into_inner();
        traced(rpc_span("GetGrant", None), async move {
            let caller = record_caller(caller?);
            let (grant, credentials) = self
                .issuer
                .get_grant(&caller, &request.grant_id)
                .await
                .map_err(status)?;
            Ok(Response::new(pb::GetGrantResponse {
                grant: Some(grant_record(&grant, &credentials)),
            }))
        })
        .await
    }

    async fn request_grant(
        &self,
        request: Request<pb::RequestGrantRequest>,
    ) -> Result<Response<pb::RequestGrantResponse>, Status> {
        let caller = self.authenticate(&request).await;
        let request = request.into_inner();
        let span = rpc_span("RequestGrant", request.grant.as_ref());
        traced(span, async move {
            let caller = record_caller(caller?);
            let _admitted = self.admission.admit(&caller)?;
            let spec = grant_spec(request.grant)?;
            let grant = self
                .issuer
                .request_grant(&caller, &spec)
                .await
                .map_err(status)?;
            Ok(Response::new(pb::RequestGrantResponse {
                grant: Some(grant_record(&grant, &[])),
            }))
        })
        .await
    }

    async fn approve(
        &self,
        request: Request<pb::ApproveRequest>,
    ) -> Result<Response<pb::ApproveResponse>, Status> {
        let caller = self.authenticate(&request).await;
        let request = request.into_inner();
        traced(rpc_span("Approve", None), async move {
            let caller = record_caller(caller?);
            let grant = self
                .issuer
                .approve(&caller, &request.grant_id, &request.comment)
                .await
                .map_err(status)?;
            Ok(Response::new(pb::ApproveResponse {
                grant: Some(grant_record(&grant, &[])),
            }))
        })
        .await
    }

    async fn deny(
        &self,
        request: Request<pb::DenyRequest>,
    ) -> Result<Response<pb::DenyResponse>, Status> {
        let caller = self.authenticate(&request).await;
        let request = request.into_inner();
        traced(rpc_span("Deny", None), async move {
            let caller = record_caller(caller?);
            let grant = self
                .issuer
                .deny(&caller, &request.grant_id, &request.reason)
                .await
                .map_err(status)?;
            Ok(Response::new(pb::DenyResponse {
                grant: Some(grant_record(&grant, &[])),
            }))
        })
        .await
    }

    type WatchGrantStream = ReceiverStream<Result<pb::GrantRecord, Status>>;

    async fn watch_grant(
        &self,
        request: Request<pb::WatchGrantRequest>,
    ) -> Result<Response<Self::WatchGrantStream>, Status> {
        let caller = self.authenticate(&request).await;
        let request = request.into_inner();
        let (caller, id, first, permit) = traced(rpc_span("WatchGrant", None), async {
            let caller = record_caller(caller?);
            let id = GrantId::parse(&request.grant_id)
                .ok_or_else(|| Status::invalid_argument("grant_id: is not a grant id (a UUID)"))?;
            let first = self
                .issuer
                .watched_grant(&caller, id)
                .await
                .map_err(status)?
                .ok_or_else(|| Status::not_found(format!("no live grant {id}")))?;
            let permit = self.grant_watchers.for_caller(caller.spiffe_id.as_str())?;
            Ok((caller, id, first, permit))
        })
        .await?;
        let (records, receiver) = tokio::sync::mpsc::channel(8);
        tokio::spawn(streams::follow_grant(
            self.issuer.clone(),
            caller,
            id,
            first,
            records,
            self.shutdown.clone(),
            permit,
        ));
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn list_reviews(
        &self,
        request: Request<pb::ListReviewsRequest>,
    ) -> Result<Response<pb::ListReviewsResponse>, Status> {
        let caller = self.authenticate(&request).await;
        let request = request.into_inner();
        traced(rpc_span("ListReviews", None), async move {
            let caller = record_caller(caller?);
            let reviews = self
                .issuer
                .reviews(&caller, request.include_acknowledged)
                .await
                .map_err(status)?;
            Ok(Response::new(pb::ListReviewsResponse {
                reviews: reviews.iter().map(review_record).collect(),
            }))
        })
        .await
    }

    async fn ack_review(
        &self,
        request: Request<pb::AckReviewRequest>,
    ) -> Result<Response<pb::AckReviewResponse>, Status> {
        let caller = self.authenticate(&request).await;
        let request = request.into_inner();
        traced(rpc_span("AckReview", None), async move {
            let caller = record_caller(caller?);
            let review = self
                .issuer
                .ack_review(&caller, &request.grant_id, &request.comment)
                .await
                .map_err(status)?;
            Ok(Response::new(pb::AckReviewResponse {
                review: Some(review_record(&review)),
            }))
        })
        .await
    }

    type QueryAuditStream = ReceiverStream<Result<pb::QueryAuditResponse, Status>>;

    async fn query_audit(
        &self,
        request: Request<pb::QueryAuditRequest>,
    ) -> Result<Response<Self::QueryAuditStream>, Status> {
        let caller = self.authenticate(&request).await;
        let request = request.into_inner();
        let (log, query, permit) = traced(rpc_span("QueryAudit", None), async {
            let caller = record_caller(caller?);
            let log = self.issuer.audit_trail(&caller).map_err(status)?;
            let query = Query::parse(request)?;
            let permit = self
                .audit_readers
                .clone()
                .try_acquire_owned()
                .map_err(|_| {
                    Status::resource_exhausted("too many audit queries running; retry later")
                })?;
            Ok((log, query, permit))
        })
        .await?;
        let (out, receiver) = tokio::sync::mpsc::channel(4);
        tokio::spawn(query.run(log, out, self.shutdown.clone(), permit));
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn delegate(
        &self,
        request: Request<pb::DelegateRequest>,
    ) -> Result<Response<pb::DelegateResponse>, Status> {
        let caller = self.authenticate(&request).await;
        let request = request.into_inner();
        traced(rpc_span("Delegate", None), async move {
            let caller = record_caller(caller?);
            let _admitted = self.admission.admit(&caller)?;
            let spec = DelegationRequest::parse(
                &request.parent_grant_id,
                request.name,
                &request.actions,
                request.ttl.map(duration_of).transpose()?,
                request.justification,
            )
            .map_err(status)?;
            let grant = self.issuer.delegate(&caller, &spec).await.map_err(status)?;
            Ok(Response::new(pb::DelegateResponse {
                grant: Some(grant_record(&grant, &[])),
            }))
        })
        .await
    }

    async fn ack_revocations(
        &self,
        request: Request<pb::AckRevocationsRequest>,
    ) -> Result<Response<pb::AckRevocationsResponse>, Status> {
        let caller = self.authenticate(&request).await;
        let request = request.into_inner();
        traced(rpc_span("AckRevocations", None), async move {
            let caller = record_caller(caller?);
            if request.cursor.len() > 64 {
                return Err(Status::invalid_argument("cursor: at most 64 bytes"));
            }
            let applied = self
                .issuer
                .ack_revocations(&caller, &request.relying_party, &request.cursor)
                .await
                .map_err(status)?;
            Ok(Response::new(pb::AckRevocationsResponse {
                applied: u32::try_from(applied).unwrap_or(u32::MAX),
            }))
        })
        .await
    }

    async fn renew_identity(
        &self,
        request: Request<pb::RenewIdentityRequest>,
    ) -> Result<Response<pb::IdentityResponse>, Status> {
        let caller = self.authenticate(&request).await;
        identity::renew(&self.issuer, &self.admission, caller, request.into_inner()).await
    }

    async fn bootstrap_identity(
        &self,
        request: Request<pb::BootstrapIdentityRequest>,
    ) -> Result<Response<pb::IdentityResponse>, Status> {
        // No attestation: the join token is the proof.
        let source = request
            .extensions()
            .get::<PeerInfo>()
            .map(|peer| peer.remote_addr.ip().to_canonical());
        identity::bootstrap(&self.issuer, &self.admission, source, request.into_inner()).await
    }

    async fn create_join_token(
        &self,
        request: Request<pb::CreateJoinTokenRequest>,
    ) -> Result<Response<pb::CreateJoinTokenResponse>, Status> {
        let caller = self.authenticate(&request).await;
        identity::create_join_token(&self.issuer, caller, request.into_inner()).await
    }

    async fn revoke_identity(
        &self,
        request: Request<pb::RevokeIdentityRequest>,
    ) -> Result<Response<pb::RevokeIdentityResponse>, Status> {
        let caller = self.authenticate(&request).await;
        identity::revoke(&self.issuer, caller, request.into_inner()).await
    }

    async fn list_identities(
        &self,
        request: Request<pb::ListIdentitiesRequest>,
    ) -> Result<Response<pb::ListIdentitiesResponse>, Status> {
        let caller = self.authenticate(&request).await;
        identity::list(&self.issuer, caller).await
    }

    async fn revocation_status(
        &self,
        request: Request<pb::RevocationStatusRequest>,
    ) -> Result<Response<pb::RevocationStatusResponse>, Status> {
        let caller = self.authenticate(&request).await;
        let request = request.into_inner();
        traced(rpc_span("RevocationStatus", None), async move {
            let caller = record_caller(caller?);
            let removal = self
                .issuer
                .revocation_status(&caller, &request.grant_id)
                .await
                .map_err(status)?;
            Ok(Response::new(removal_status(removal)))
        })
        .await
    }
}

/// Whether a connection's attestation identity is still valid at `now`.
fn still_attested(caller: &Caller, now: std::time::SystemTime) -> bool {
    match &caller.attestation {
        Attestation::Identity(identity) => identity.not_after > now,
        Attestation::Oidc(token) => token.expires_at > now,
    }
}

pub(super) fn record_caller(caller: Caller) -> Caller {
    tracing::Span::current().record("caller", caller.spiffe_id.as_str());
    caller
}

/// A span for one RPC; `caller` and `outcome` are recorded as they become
/// known.
pub(super) fn rpc_span(rpc: &'static str, grant: Option<&pb::GrantSpec>) -> tracing::Span {
    tracing::info_span!(
        "rpc",
        rpc,
        caller = tracing::field::Empty,
        entitlement = grant
            .map(|grant| grant.entitlement.as_str())
            .unwrap_or_default(),
        outcome = tracing::field::Empty,
    )
}

/// Runs one RPC inside `span` and logs its outcome once.
pub(super) async fn traced<T>(
    span: tracing::Span,
    work: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    async move {
        let result = work.await;
        match &result {
            Ok(_) => {
                tracing::Span::current().record("outcome", "ok");
                tracing::info!("ok");
            }
            Err(status) => {
                tracing::Span::current().record("outcome", format!("{:?}", status.code()));
                // Sheds are counted and reported by `Admission`; a line
                // each would add work exactly when there is too much.
                if admission::is_shed(status) {
                    tracing::debug!(message = status.message(), "shed");
                } else {
                    tracing::info!(message = status.message(), "refused");
                }
            }
        }
        result
    }
    .instrument(span)
    .await
}
