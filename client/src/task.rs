//! Per-task identities for agent frameworks: a grant for one task, minted
//! into SVIDs on demand, delegated to narrower child identities for the
//! tools it calls, and completed (revoking every descendant) when the task
//! ends, or when the handle is dropped.
//!
//! ```no_run
//! # async fn run(client: jitid_client::Client) -> Result<(), jitid_client::ClientError> {
//! use std::time::Duration;
//! use jitid_client::{SvidRequest, TaskIdentity};
//! let task = TaskIdentity::request(
//!     &client,
//!     &SvidRequest::entitlement("agent-research").task("ticket-4711"),
//! )
//! .await?;
//! let token = task.jwt_svid(&["kb.example.org".to_owned()]).await?;
//! // A tool gets only what it needs, for as long as it needs it.
//! let search = task
//!     .delegate("search", &["tool:search"], Some(Duration::from_secs(60)))
//!     .await?;
//! let tool_token = search.jwt_svid(&["search.example.org".to_owned()]).await?;
//! # let _ = (token, tool_token);
//! task.complete().await?; // ends the task and every delegation under it
//! # Ok(()) }
//! ```

use std::time::{Duration, SystemTime};

use super::{Client, ClientError, JwtSvid, SvidRequest, X509Svid};
use crate::crypto::certificate_thumbprint;
use crate::proto::v1::{self as pb, complete_task_request::Target};

/// An identity for one task: an active grant that SVIDs are minted under.
/// Completes its grant (and every grant delegated from it) when dropped,
/// unless completed, failed or detached first.
#[derive(Debug)]
pub struct TaskIdentity {
    client: Client,
    grant: pb::GrantRecord,
    /// Whether dropping it still ends the grant.
    armed: bool,
}

impl TaskIdentity {
    /// Requests a grant for the task `request` describes (RequestGrant). If
    /// the entitlement needs approval, waits until it is approved; fails if
    /// it is denied or expires first.
    pub async fn request(client: &Client, request: &SvidRequest) -> Result<Self, ClientError> {
        let mut grant = client.request_grant(request).await?;
        if grant.state == i32::from(pb::GrantState::Pending) {
            let id = grant_id(&grant)?.to_owned();
            grant = client.wait_for_grant(&id).await?;
        }
        if grant.state != i32::from(pb::GrantState::Active) {
            return Err(ClientError::Status {
                code: tonic::Code::FailedPrecondition,
                message: format!(
                    "grant is {:?}: {}",
                    pb::GrantState::try_from(grant.state).unwrap_or_default(),
                    grant.end_reason
                ),
                retry_after: None,
            });
        }
        Ok(Self {
            client: client.clone(),
            grant,
            armed: true,
        })
    }

    /// The grant's id.
    pub fn grant_id(&self) -> &str {
        grant_id(&self.grant).unwrap_or_default()
    }

    /// The grant as the server recorded it.
    pub fn grant(&self) -> &pb::GrantRecord {
        &self.grant
    }

    /// The task's id.
    pub fn task_id(&self) -> &str {
        self.grant
            .summary
            .as_ref()
            .map_or("", |summary| summary.task_id.as_str())
    }

    /// The actions credentials under it are good for.
    pub fn actions(&self) -> &[String] {
        self.grant
            .summary
            .as_ref()
            .map_or(&[], |summary| summary.actions.as_slice())
    }

    /// When it (and every credential under it) expires.
    pub fn expires_at(&self) -> Option<SystemTime> {
        let expires = self.grant.summary.as_ref()?.expires_at.as_ref()?;
        crate::convert::system_time(expires)
    }

    /// For a delegated identity, the SPIFFE ID its credentials carry;
    /// `None` for a task's root identity (its SVIDs name it).
    pub fn delegated_spiffe_id(&self) -> Option<&str> {
        self.grant
            .delegation
            .as_ref()
            .map(|delegation| delegation.spiffe_id.as_str())
    }

    /// How many delegations separate it from the task's root identity.
    pub fn depth(&self) -> usize {
        self.grant
            .delegation
            .as_ref()
            .map_or(0, |delegation| delegation.parent_grant_ids.len())
    }

    /// Mints an X.509-SVID under the grant (key generated here).
    pub async fn x509_svid(&self) -> Result<X509Svid, ClientError> {
        self.client
            .fetch_x509_svid(&SvidRequest::under_grant(self.grant_id()))
            .await
    }

    /// Mints a JWT-SVID under the grant for `audiences`.
    pub async fn jwt_svid(&self, audiences: &[String]) -> Result<JwtSvid, ClientError> {
        self.client
            .fetch_jwt_svid(&SvidRequest::under_grant(self.grant_id()), audiences)
            .await
    }

    /// Delegates a narrower identity named `name` (the last segment of its
    /// SPIFFE ID): `actions` a subset of this one's (empty: all of them),
    /// living `ttl` (`None`: as long as this one). The child completes on
    /// drop like any `TaskIdentity`; completing this one ends it too.
    pub async fn delegate<S: AsRef<str>>(
        &self,
        name: &str,
        actions: &[S],
        ttl: Option<Duration>,
    ) -> Result<TaskIdentity, ClientError> {
        let grant = self
            .client
            .delegate(pb::DelegateRequest {
                parent_grant_id: self.grant_id().to_owned(),
                name: name.to_owned(),
                actions: actions.iter().map(|a| a.as_ref().to_owned()).collect(),
                ttl: ttl.map(|ttl| prost_types::Duration {
                    seconds: i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
                    nanos: i32::try_from(ttl.subsec_nanos()).unwrap_or(0),
                }),
                justification: String::new(),
            })
            .await?;
        Ok(TaskIdentity {
            client: self.client.clone(),
            grant,
            armed: true,
        })
    }

    /// Ends the task as completed: the grant and every grant delegated
    /// from it. Returns the grants ended.
    pub async fn complete(self) -> Result<Vec<String>, ClientError> {
        self.end(pb::TaskOutcome::Completed).await
    }

    /// Ends the task as failed; its credentials stop being live all the
    /// same.
    pub async fn fail(self) -> Result<Vec<String>, ClientError> {
        self.end(pb::TaskOutcome::Failed).await
    }

    /// Keeps the grant alive past this handle (until it expires or is
    /// completed by id).
    pub fn detach(mut self) -> pb::GrantRecord {
        self.armed = false;
        std::mem::take(&mut self.grant)
    }

    async fn end(mut self, outcome: pb::TaskOutcome) -> Result<Vec<String>, ClientError> {
        self.armed = false;
        self.client
            .end_task(Target::GrantId(self.grant_id().to_owned()), outcome)
            .await
    }
}

impl Drop for TaskIdentity {
    /// Completes the grant in the background, if a Tokio runtime is there
    /// to do it; otherwise the grant still ends when it expires.
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                grant = self.grant_id(),
                "no runtime to complete a dropped task identity; it ends when it expires"
            );
            return;
        };
        let client = self.client.clone();
        let grant = self.grant_id().to_owned();
        runtime.spawn(async move {
            if let Err(error) = client
                .end_task(Target::GrantId(grant.clone()), pb::TaskOutcome::Completed)
                .await
            {
                tracing::warn!(%grant, %error, "could not complete a dropped task identity");
            }
        });
    }
}

fn grant_id(grant: &pb::GrantRecord) -> Result<&str, ClientError> {
    grant
        .summary
        .as_ref()
        .map(|summary| summary.grant_id.as_str())
        .ok_or_else(|| ClientError::InvalidResponse("grant without summary".to_owned()))
}

/// For relying parties: whether a JWT-SVID's `cnf` (if any) matches the
/// DER certificate its presenter authenticated with over mTLS. Reads the
/// token's claims without checking its signature: use it together with
/// signature verification (`Verify`, or a SPIFFE library), never instead.
/// A token with no `cnf` is unbound and passes.
pub fn check_confirmation(token: &str, presenter_der: &[u8]) -> Result<(), ClientError> {
    use base64::Engine as _;
    let payload = token
        .split('.')
        .nth(1)
        .ok_or_else(|| ClientError::InvalidResponse("not a compact JWS".to_owned()))?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| ClientError::InvalidResponse("JWT payload is not base64url".to_owned()))?;
    let claims: serde_json::Value = serde_json::from_slice(&json)
        .map_err(|_| ClientError::InvalidResponse("JWT payload is not JSON".to_owned()))?;
    let Some(bound) = claims.pointer("/cnf/x5t#S256") else {
        return Ok(());
    };
    if bound.as_str() == Some(certificate_thumbprint(presenter_der).as_str()) {
        Ok(())
    } else {
        Err(ClientError::InvalidResponse(
            "token is bound to another certificate than its presenter's".to_owned(),
        ))
    }
}

impl Client {
    /// Creates a child grant under one of our grants (see
    /// [`TaskIdentity::delegate`]).
    pub async fn delegate(
        &self,
        request: pb::DelegateRequest,
    ) -> Result<pb::GrantRecord, ClientError> {
        self.unary(request, |mut grpc, request| async move {
            grpc.delegate(request).await
        })
        .await?
        .grant
        .ok_or_else(|| ClientError::InvalidResponse("no grant in response".to_owned()))
    }

    /// Tells the issuer relying party `relying_party` has applied every
    /// revocation up to `cursor`; returns how many it recorded.
    pub async fn ack_revocations(
        &self,
        relying_party: &str,
        cursor: &str,
    ) -> Result<u32, ClientError> {
        let request = pb::AckRevocationsRequest {
            relying_party: relying_party.to_owned(),
            cursor: cursor.to_owned(),
        };
        let response = self
            .unary(request, |mut grpc, request| async move {
                grpc.ack_revocations(request).await
            })
            .await?;
        Ok(response.applied)
    }

    /// Proof of removal for a grant: which relying parties have applied
    /// the revocation that ended it.
    pub async fn revocation_status(
        &self,
        grant_id: &str,
    ) -> Result<pb::RevocationStatusResponse, ClientError> {
        let request = pb::RevocationStatusRequest {
            grant_id: grant_id.to_owned(),
        };
        self.unary(request, |mut grpc, request| async move {
            grpc.revocation_status(request).await
        })
        .await
    }
}
