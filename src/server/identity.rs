//! The attestation identity RPCs (`RenewIdentity`, `BootstrapIdentity`,
//! `CreateJoinToken`, `RevokeIdentity`, `ListIdentities`): proto to the
//! `issuer::identity` use cases and back, each in its tracing span. The
//! service in `grpc.rs` authenticates and hands over here.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use tonic::{Response, Status};

use super::admission::Admission;
use super::grpc::{record_caller, rpc_span, traced};
use super::wire::{duration_of, status};
use crate::convert;
use crate::issuer::{Caller, IdentityIssuedOut, IdentityTarget, Issuer};
use crate::proto::v1 as pb;
use crate::store::identities::IdentityRecord;

/// Renewal signs, so it is shed under load like issuance.
pub(super) async fn renew(
    issuer: &Arc<Issuer>,
    admission: &Admission,
    caller: Result<Caller, Status>,
    request: pb::RenewIdentityRequest,
) -> Result<Response<pb::IdentityResponse>, Status> {
    traced(rpc_span("RenewIdentity", None), async move {
        let caller = record_caller(caller?);
        let _admitted = admission.admit(&caller)?;
        let ttl = request.ttl.map(duration_of).transpose()?;
        let issued = issuer
            .renew_identity(&caller, &request.csr, ttl)
            .await
            .map_err(status)?;
        Ok(Response::new(identity_response(issued)))
    })
    .await
}

/// Anyone may try a join token, so the exchange is shed under load (by the
/// in-flight limit: there is no caller to rate yet).
pub(super) async fn bootstrap(
    issuer: &Arc<Issuer>,
    admission: &Admission,
    source: Option<IpAddr>,
    request: pb::BootstrapIdentityRequest,
) -> Result<Response<pb::IdentityResponse>, Status> {
    traced(rpc_span("BootstrapIdentity", None), async move {
        let _admitted = admission.admit_unattested()?;
        let ttl = request.ttl.map(duration_of).transpose()?;
        let issued = issuer
            .bootstrap_identity(&request.join_token, &request.csr, ttl, source)
            .await
            .map_err(status)?;
        tracing::Span::current().record("caller", issued.spiffe_id.as_str());
        Ok(Response::new(identity_response(issued)))
    })
    .await
}

pub(super) async fn create_join_token(
    issuer: &Arc<Issuer>,
    caller: Result<Caller, Status>,
    request: pb::CreateJoinTokenRequest,
) -> Result<Response<pb::CreateJoinTokenResponse>, Status> {
    traced(rpc_span("CreateJoinToken", None), async move {
        let caller = record_caller(caller?);
        let ttl = request.ttl.map(duration_of).transpose()?;
        let created = issuer
            .create_join_token(&caller, &request.spiffe_id, ttl)
            .await
            .map_err(status)?;
        // The token itself is never logged: its id is.
        tracing::info!(token = %created.id, spiffe_id = %created.spiffe_id, "join token created");
        Ok(Response::new(pb::CreateJoinTokenResponse {
            token: created.token,
            token_id: created.id,
            spiffe_id: created.spiffe_id.to_string(),
            expires_at: Some(convert::timestamp(created.expires_at)),
        }))
    })
    .await
}

pub(super) async fn revoke(
    issuer: &Arc<Issuer>,
    caller: Result<Caller, Status>,
    request: pb::RevokeIdentityRequest,
) -> Result<Response<pb::RevokeIdentityResponse>, Status> {
    traced(rpc_span("RevokeIdentity", None), async move {
        let caller = record_caller(caller?);
        let target = match request.target {
            Some(pb::revoke_identity_request::Target::Serial(serial)) => {
                IdentityTarget::Serial(serial)
            }
            Some(pb::revoke_identity_request::Target::SpiffeId(id)) => IdentityTarget::SpiffeId(id),
            None => {
                return Err(Status::invalid_argument(
                    "target: name a serial or a spiffe_id",
                ));
            }
        };
        let outcome = issuer
            .revoke_identity(&caller, &target, &request.reason)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::RevokeIdentityResponse {
            spiffe_id: outcome
                .spiffe_id
                .map(|id| id.to_string())
                .unwrap_or_default(),
            unseen: outcome.unseen,
            already_revoked: outcome.already_revoked,
            grant_ids: outcome
                .grants_ended
                .iter()
                .map(ToString::to_string)
                .collect(),
        }))
    })
    .await
}

pub(super) async fn list(
    issuer: &Arc<Issuer>,
    caller: Result<Caller, Status>,
) -> Result<Response<pb::ListIdentitiesResponse>, Status> {
    traced(rpc_span("ListIdentities", None), async move {
        let caller = record_caller(caller?);
        let records = issuer.list_identities(&caller).await.map_err(status)?;
        let now = issuer.clock().now();
        Ok(Response::new(pb::ListIdentitiesResponse {
            identities: records
                .iter()
                .map(|record| identity_record(record, now))
                .collect(),
        }))
    })
    .await
}

fn identity_response(issued: IdentityIssuedOut) -> pb::IdentityResponse {
    pb::IdentityResponse {
        cert_chain: issued.chain.iter().map(|cert| cert.to_vec()).collect(),
        serial: issued.serial,
        spiffe_id: issued.spiffe_id.to_string(),
        not_after: Some(convert::timestamp(issued.not_after)),
    }
}

fn identity_record(record: &IdentityRecord, now: SystemTime) -> pb::IdentityRecord {
    let state = match &record.revoked {
        Some(_) => pb::IdentityState::Revoked,
        None if record.not_after <= now => pb::IdentityState::Expired,
        None => pb::IdentityState::Active,
    };
    let known = |at: SystemTime| (at > SystemTime::UNIX_EPOCH).then(|| convert::timestamp(at));
    pb::IdentityRecord {
        serial: record.serial.clone(),
        spiffe_id: record
            .spiffe_id
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        not_before: known(record.not_before),
        not_after: known(record.not_after),
        issued_via: record.via.to_string(),
        issued_at: known(record.issued_at),
        state: state.into(),
        revoked_reason: record
            .revoked
            .as_ref()
            .map(|revoked| revoked.reason.clone())
            .unwrap_or_default(),
        revoked_by: record
            .revoked
            .as_ref()
            .map(|revoked| revoked.by.clone())
            .unwrap_or_default(),
        revoked_at: record
            .revoked
            .as_ref()
            .map(|revoked| convert::timestamp(revoked.at)),
    }
}
