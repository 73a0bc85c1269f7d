//! The `jitid.v1.Issuer` gRPC service: proto → domain → proto, the one
//! mapping from [`IssueError`] to a gRPC status, and a tracing span per RPC
//! naming caller, entitlement and outcome.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::tls::PeerInfo;
use crate::ca::REFRESH_HINT;
use crate::grant::{Action, Grant};
use crate::issuer::{Caller, GrantSpec, IssueError, Issuer};
use crate::proto::v1::{
    self as pb, FetchBundleRequest, FetchBundleResponse, IssueJwtSvidRequest, IssueJwtSvidResponse,
    IssueX509SvidRequest, IssueX509SvidResponse, issuer_server::Issuer as IssuerApi,
};
use crate::store::StoreError;

/// The gRPC face of an [`Issuer`].
#[derive(Debug)]
pub(crate) struct IssuerService {
    issuer: Arc<Issuer>,
}

impl IssuerService {
    pub(crate) fn new(issuer: Arc<Issuer>) -> Self {
        Self { issuer }
    }

    fn authenticate<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let peer = request
            .extensions()
            .get::<PeerInfo>()
            .ok_or_else(|| Status::unauthenticated("no TLS peer information"))?;
        match &peer.attestation {
            Ok(attested) if attested.not_after > self.issuer.clock().now() => {
                Ok(attested.caller.clone())
            }
            Ok(_) => Err(Status::unauthenticated("client certificate has expired")),
            Err(error) => Err(Status::unauthenticated(error.to_string())),
        }
    }
}

#[tonic::async_trait]
impl IssuerApi for IssuerService {
    async fn issue_x509_svid(
        &self,
        request: Request<IssueX509SvidRequest>,
    ) -> Result<Response<IssueX509SvidResponse>, Status> {
        let caller = self.authenticate(&request);
        let request = request.into_inner();
        let span = rpc_span("IssueX509Svid", request.grant.as_ref());
        traced(span, async move {
            let caller = caller?;
            tracing::Span::current().record("caller", caller.spiffe_id.as_str());
            let spec = grant_spec(request.grant)?;
            let issued = self
                .issuer
                .issue_x509(&caller, &spec, &request.csr)
                .await
                .map_err(status)?;
            Ok(Response::new(IssueX509SvidResponse {
                cert_chain: issued.chain.iter().map(|cert| cert.to_vec()).collect(),
                bundle: self.issuer.bundle().x509_ders(),
                grant: Some(summary(&issued.grant)),
                serial: issued.serial,
            }))
        })
        .await
    }

    async fn issue_jwt_svid(
        &self,
        request: Request<IssueJwtSvidRequest>,
    ) -> Result<Response<IssueJwtSvidResponse>, Status> {
        let caller = self.authenticate(&request);
        let request = request.into_inner();
        let span = rpc_span("IssueJwtSvid", request.grant.as_ref());
        traced(span, async move {
            let caller = caller?;
            tracing::Span::current().record("caller", caller.spiffe_id.as_str());
            let spec = grant_spec(request.grant)?;
            let issued = self
                .issuer
                .issue_jwt(&caller, &spec, &request.audiences)
                .await
                .map_err(status)?;
            Ok(Response::new(IssueJwtSvidResponse {
                token: issued.token,
                grant: Some(summary(&issued.grant)),
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
                refresh_hint: Some(proto_duration(REFRESH_HINT)),
            }))
        })
        .await
    }
}

/// A span for one RPC; `caller` and `outcome` are recorded as they become
/// known.
fn rpc_span(rpc: &'static str, grant: Option<&pb::GrantSpec>) -> tracing::Span {
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
async fn traced<T>(
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
                tracing::info!(message = status.message(), "refused");
            }
        }
        result
    }
    .instrument(span)
    .await
}

/// Converts the wire request into a domain spec.
fn grant_spec(grant: Option<pb::GrantSpec>) -> Result<GrantSpec, Status> {
    let grant = grant.unwrap_or_default();
    let ttl = match grant.ttl {
        None => None,
        Some(ttl) if ttl.seconds < 0 || ttl.nanos < 0 => {
            return Err(Status::invalid_argument("ttl: must not be negative"));
        }
        Some(ttl) => Some(
            Duration::from_secs(ttl.seconds.unsigned_abs())
                + Duration::from_nanos(u64::from(ttl.nanos.unsigned_abs())),
        ),
    };
    Ok(GrantSpec {
        entitlement: grant.entitlement,
        actions: grant.actions,
        task_id: grant.task_id,
        ttl,
        justification: grant.justification,
    })
}

fn summary(grant: &Grant) -> pb::GrantSummary {
    pb::GrantSummary {
        grant_id: grant.id.to_string(),
        spiffe_id: grant.subject.to_string(),
        entitlement: grant.entitlement.clone(),
        actions: grant.actions.iter().map(Action::to_string).collect(),
        task_id: grant.task_id.to_string(),
        expires_at: Some(proto_timestamp(grant.expires_at)),
    }
}

/// The one mapping from issuer errors to gRPC statuses.
fn status(error: IssueError) -> Status {
    if error.is_invalid_argument() {
        Status::invalid_argument(error.to_string())
    } else if error.is_permission_denied() {
        Status::permission_denied(error.to_string())
    } else if error.is_unavailable() {
        tracing::warn!(error = %error_chain(&error), "store unavailable");
        Status::unavailable("grant store unavailable; nothing was issued")
    } else {
        // Signing failures and store conflicts: log the cause, tell the
        // caller only that nothing was issued.
        tracing::error!(error = %error_chain(&error), "issuance failed");
        match error {
            IssueError::Store(StoreError::Conflict(_)) => {
                Status::aborted("grant id collision; nothing was issued, retry")
            }
            _ => Status::internal("internal error; nothing was issued"),
        }
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn proto_timestamp(time: SystemTime) -> prost_types::Timestamp {
    let since_epoch = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    prost_types::Timestamp {
        seconds: i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since_epoch.subsec_nanos()).unwrap_or(0),
    }
}

fn proto_duration(duration: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(duration.subsec_nanos()).unwrap_or(0),
    }
}
