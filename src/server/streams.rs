//! The long-lived streams: the revocation stream relying parties follow
//! (replay from a cursor, then events and heartbeats carrying the epoch),
//! and a grant's changes for a waiting requester.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::stream_slots::StreamSlot;
use tonic::Status;

use super::wire::{grant_record, status};
use crate::convert;
use crate::grant::{Grant, GrantId, GrantState};
use crate::issuer::{Caller, Issuer};
use crate::proto::v1 as pb;
use crate::store::RevocationFeed;

/// How often an idle revocation stream sends a heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// How often a grant stream looks at the store when nothing woke it.
const GRANT_POLL: Duration = Duration::from_millis(500);

/// Sends the revocation stream from `cursor` to `events` until the
/// receiver goes, the store fails, or the server shuts down.
pub(super) async fn follow_revocations(
    issuer: Arc<Issuer>,
    mut feed: Box<dyn RevocationFeed>,
    cursor: String,
    events: mpsc::Sender<Result<pb::RevocationEvent, Status>>,
    mut shutdown: watch::Receiver<bool>,
    permit: StreamSlot,
) {
    let _permit = permit;
    let mut cursor = if cursor.is_empty() {
        "0".to_owned()
    } else {
        cursor
    };
    let heartbeat = |cursor: &str, epoch: &str| pb::RevocationEvent {
        cursor: cursor.to_owned(),
        epoch: epoch.to_owned(),
        at: Some(convert::timestamp(issuer.clock().now())),
        heartbeat: true,
        ..Default::default()
    };
    // Replay what follows the cursor first; the first heartbeat
    // then tells the receiver it has caught up.
    let mut caught_up = false;
    loop {
        let wait = if caught_up {
            HEARTBEAT
        } else {
            Duration::from_millis(1)
        };
        let batch = tokio::select! {
            batch = feed.read(&cursor, wait) => batch,
            () = events.closed() => return,
            () = stopping(&mut shutdown) => return,
        };
        if matches!(&batch, Ok(batch) if batch.is_empty()) {
            caught_up = true;
        }
        match batch {
            Ok(batch) if batch.is_empty() => {
                // Heartbeats carry the epoch read afresh, so a
                // relying party learns of a lost dataset.
                let epoch = match issuer.current_epoch().await {
                    Ok(current) => current.to_string(),
                    Err(error) => {
                        tracing::warn!(%error, "revocation stream: epoch unavailable");
                        let _ = events
                            .send(Err(Status::unavailable(
                                "grant store unavailable; resume from the last cursor",
                            )))
                            .await;
                        return;
                    }
                };
                if events.send(Ok(heartbeat(&cursor, &epoch))).await.is_err() {
                    return;
                }
            }
            Ok(batch) => {
                for (next, event) in batch {
                    cursor = next;
                    let message = pb::RevocationEvent {
                        cursor: cursor.clone(),
                        epoch: event.epoch.to_string(),
                        at: Some(convert::timestamp(event.at)),
                        grant_ids: event.grants.iter().map(ToString::to_string).collect(),
                        credential_id: event
                            .credential
                            .map(|id| id.value().to_owned())
                            .unwrap_or_default(),
                        task_id: event.task.map(|task| task.to_string()).unwrap_or_default(),
                        reason: event.reason,
                        heartbeat: false,
                    };
                    if events.send(Ok(message)).await.is_err() {
                        return;
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "revocation stream failed");
                let _ = events
                    .send(Err(Status::unavailable(
                        "grant store unavailable; resume from the last cursor",
                    )))
                    .await;
                return;
            }
        }
    }
}

/// Sends grant `id` as `caller` sees it, and again at each change, until it
/// ends or expires.
pub(super) async fn follow_grant(
    issuer: Arc<Issuer>,
    caller: Caller,
    id: GrantId,
    first: Grant,
    records: mpsc::Sender<Result<pb::GrantRecord, Status>>,
    mut shutdown: watch::Receiver<bool>,
    permit: StreamSlot,
) {
    let _permit = permit;
    let changes = issuer.changes();
    let mut last = first;
    if records.send(Ok(grant_record(&last, &[]))).await.is_err() {
        return;
    }
    loop {
        if !matches!(last.state, GrantState::Pending | GrantState::Active) {
            return;
        }
        // Woken at once by changes made through this server; the
        // poll catches those made through other replicas.
        let changed = changes.notified();
        tokio::select! {
            () = changed => {}
            () = tokio::time::sleep(GRANT_POLL) => {}
            () = records.closed() => return,
            () = stopping(&mut shutdown) => return,
        }
        match issuer.watched_grant(&caller, id).await {
            Ok(Some(grant)) if grant == last => {}
            Ok(Some(grant)) => {
                last = grant;
                if records.send(Ok(grant_record(&last, &[]))).await.is_err() {
                    return;
                }
            }
            Ok(None) => {
                let mut expired = grant_record(&last, &[]);
                expired.state = pb::GrantState::Expired.into();
                let _ = records.send(Ok(expired)).await;
                return;
            }
            Err(error) => {
                let _ = records.send(Err(status(error))).await;
                return;
            }
        }
    }
}

/// Resolves once the server is shutting down.
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
