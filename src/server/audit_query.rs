//! `QueryAudit`: the request checked into a [`Selector`], then a task that
//! scans the trail in pages and streams what it selects.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};
use tonic::Status;

use crate::audit::AuditLog;
use crate::audit::EventKind;
use crate::audit::query::{Filter, Selector};
use crate::grant::GrantId;
use crate::proto::v1 as pb;
use crate::spiffe_id::SpiffeId;

/// Events read from the trail per round trip.
const PAGE: usize = 1000;
/// How often a followed trail is read again when it had nothing new.
const FOLLOW_POLL: Duration = Duration::from_millis(500);

/// A checked `QueryAuditRequest`.
pub(super) struct Query {
    selector: Selector,
    after: u64,
    last: u64,
    limit: u64,
    follow: bool,
}

impl Query {
    /// Checks the request; every field it names must make sense.
    pub(super) fn parse(request: pb::QueryAuditRequest) -> Result<Self, Status> {
        let invalid =
            |field: &str, message: String| Status::invalid_argument(format!("{field}: {message}"));
        if !request.grant_id.is_empty() && GrantId::parse(&request.grant_id).is_none() {
            return Err(invalid("grant_id", "is not a grant id (a UUID)".to_owned()));
        }
        if !request.subject.is_empty() {
            SpiffeId::new(&request.subject)
                .map_err(|error| invalid("subject", error.to_string()))?;
        }
        let kinds = request
            .kinds
            .iter()
            .map(|name| {
                EventKind::parse(name)
                    .ok_or_else(|| invalid("kinds", format!("{name:?} is not an event kind")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if request.follow && request.limit > 0 {
            return Err(invalid(
                "limit",
                "cannot be combined with follow".to_owned(),
            ));
        }
        if request.last > 0 && request.after_seq > 0 {
            return Err(invalid(
                "last",
                "cannot be combined with after_seq".to_owned(),
            ));
        }
        let since = match request.since {
            None => None,
            Some(since) => {
                let at = crate::convert::system_time(&since)
                    .ok_or_else(|| invalid("since", "is before 1970 or malformed".to_owned()))?;
                Some(humantime::format_rfc3339_millis(at).to_string())
            }
        };
        let some = |text: String| Some(text).filter(|text| !text.is_empty());
        let selector = Selector::new(Filter {
            grant: some(request.grant_id),
            task: some(request.task_id),
            subject: some(request.subject),
            kinds,
            since,
        })
        .map_err(|message| invalid("since", message))?;
        Ok(Self {
            selector,
            after: request.after_seq,
            last: request.last,
            limit: request.limit,
            follow: request.follow,
        })
    }

    /// Scans `log` and sends what it selects to `out`, until the scan (or
    /// the limit) is done, or, when following, until `out` or the server
    /// closes.
    pub(super) async fn run(
        mut self,
        log: Arc<dyn AuditLog>,
        out: mpsc::Sender<Result<pb::QueryAuditResponse, Status>>,
        mut shutdown: watch::Receiver<bool>,
        _permit: OwnedSemaphorePermit,
    ) {
        let unavailable = |error: crate::audit::log::AuditLogError| {
            Status::unavailable(format!("audit trail unavailable: {error}"))
        };
        let mut after = self.after;
        if self.last > 0 {
            match log.head().await {
                Ok(head) => after = head.seq.saturating_sub(self.last),
                Err(error) => {
                    let _ = out.send(Err(unavailable(error))).await;
                    return;
                }
            }
        }
        let mut opening = pb::QueryAuditResponse::default();
        match log.checkpoint().await {
            Ok(Some(checkpoint)) if after <= checkpoint.seq => {
                after = checkpoint.seq;
                opening.checkpoint = checkpoint.token;
            }
            Ok(_) => {}
            Err(error) => {
                let _ = out.send(Err(unavailable(error))).await;
                return;
            }
        }
        let mut sent = 0u64;
        let mut pending = Some(opening);
        loop {
            let page = match log.read(after, PAGE).await {
                Ok(page) => page,
                Err(error) => {
                    let _ = out.send(Err(unavailable(error))).await;
                    return;
                }
            };
            let full = page.len() == PAGE;
            let first = pending.is_some();
            let mut response = pending.take().unwrap_or_default();
            for event in &page {
                after = event.seq;
                if self.limit > 0 && sent >= self.limit {
                    break;
                }
                if self.selector.select(event) {
                    response.events.push(event.to_line());
                    sent += 1;
                }
            }
            response.scanned_through = after;
            let done = !full && !self.follow || self.limit > 0 && sent >= self.limit;
            // The first response goes out even when empty (it carries the
            // checkpoint and where the scan got to); later ones only with
            // events.
            if (first || done || !response.events.is_empty())
                && out.send(Ok(response)).await.is_err()
            {
                return;
            }
            if done {
                return;
            }
            if !full {
                tokio::select! {
                    () = tokio::time::sleep(FOLLOW_POLL) => {}
                    () = out.closed() => return,
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
            }
        }
    }
}
