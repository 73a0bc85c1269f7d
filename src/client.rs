//! The client library workloads embed, as the server crate sees it: the
//! whole `jitid_client` crate (client/), plus reading audit events through
//! it, which needs the audit trail's types and so cannot live in the client
//! crate.

use std::future::Future;

pub use jitid_client::*;

use crate::audit::AuditEvent;
use crate::proto::v1 as pb;

/// What [`AuditEventsExt::audit_events`] found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditEvents {
    /// The signed checkpoint the trail starts after (a JWS).
    pub checkpoint: Option<String>,
    /// The events, in chain order.
    pub events: Vec<AuditEvent>,
}

/// Reading the audit trail through a [`Client`], each event checked.
pub trait AuditEventsExt {
    /// Every event a query selects (it must not follow), each checked
    /// against its hash, and the signed checkpoint the trail starts
    /// after, if the scan began there.
    fn audit_events(
        &self,
        request: pb::QueryAuditRequest,
    ) -> impl Future<Output = Result<AuditEvents, ClientError>> + Send;
}

impl AuditEventsExt for Client {
    async fn audit_events(
        &self,
        request: pb::QueryAuditRequest,
    ) -> Result<AuditEvents, ClientError> {
        let found = self.audit_lines(request).await?;
        Ok(AuditEvents {
            checkpoint: found.checkpoint,
            events: found
                .lines
                .iter()
                .map(|line| checked_event(line))
                .collect::<Result<_, _>>()?,
        })
    }
}

/// Parses an event line from `QueryAudit` and checks it matches its hash.
pub fn checked_event(line: &str) -> Result<AuditEvent, ClientError> {
    let event = AuditEvent::from_line(line)
        .map_err(|error| ClientError::InvalidResponse(format!("audit event: {error}")))?;
    if event.computed_hash() != event.hash {
        return Err(ClientError::InvalidResponse(format!(
            "audit event {} does not match its hash",
            event.seq
        )));
    }
    Ok(event)
}
