//! Authentication failures, recorded without letting a flood of them
//! crowd the audit trail: the first failure from an address in a window
//! is recorded at once; the rest from it in that window are counted and
//! recorded as one tally when the window closes. Past [`MAX_SOURCES`]
//! addresses in one window, further ones share one tally. So callers that
//! cannot authenticate write at most one event per address per window,
//! plus one, however many calls they make.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use crate::audit::Record;
use crate::audit::event::{AuthenticationFailure, Envelope, Event};
use crate::issuer::Issuer;

/// Most addresses tallied apart in one window.
const MAX_SOURCES: usize = 4096;

/// The address tallies past [`MAX_SOURCES`] are counted under.
const OTHER_SOURCES: &str = "other addresses";

/// The failures seen in the current window.
#[derive(Debug)]
pub(super) struct AuthFailures {
    issuer: Arc<Issuer>,
    window: Duration,
    seen: Mutex<HashMap<String, Tally>>,
}

/// One address's failures after its first, in the current window.
#[derive(Debug)]
struct Tally {
    actor: String,
    reason: String,
    repeated: u64,
}

// === impl AuthFailures ===

impl AuthFailures {
    /// Tallies over `window`, until `shutdown`, recording into `issuer`'s
    /// trail.
    pub(super) fn start(
        issuer: Arc<Issuer>,
        window: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) -> Arc<Self> {
        let failures = Arc::new(Self {
            issuer,
            window,
            seen: Mutex::default(),
        });
        let flusher = failures.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(window);
            ticks.tick().await;
            loop {
                tokio::select! {
                    _ = ticks.tick() => flusher.flush().await,
                    _ = shutdown.changed() => {
                        flusher.flush().await;
                        return;
                    }
                }
            }
        });
        failures
    }

    /// Notes a failure of `actor` from `remote` for `reason`: recorded at
    /// once if it is the address's first in this window, else counted.
    pub(super) fn note(&self, remote: IpAddr, actor: String, reason: String) {
        let remote = remote.to_string();
        {
            let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            let key = if seen.len() >= MAX_SOURCES && !seen.contains_key(&remote) {
                OTHER_SOURCES.to_owned()
            } else {
                remote.clone()
            };
            if let Some(tally) = seen.get_mut(&key) {
                tally.repeated += 1;
                return;
            }
            seen.insert(
                key,
                Tally {
                    actor: actor.clone(),
                    reason: reason.clone(),
                    repeated: 0,
                },
            );
        }
        self.record(actor, remote, reason, None);
    }

    /// Records the tallies of the window that just closed.
    async fn flush(&self) {
        let closed = std::mem::take(&mut *self.seen.lock().unwrap_or_else(PoisonError::into_inner));
        for (remote, tally) in closed {
            if tally.repeated > 0 {
                self.record(tally.actor, remote, tally.reason, Some(tally.repeated));
            }
        }
    }

    /// Records one event without holding up the caller; a failure to
    /// record is logged (the request is refused either way).
    fn record(&self, actor: String, remote: String, reason: String, repeated: Option<u64>) {
        let issuer = self.issuer.clone();
        let envelope = Envelope {
            at: issuer.clock().now(),
            actor,
            subject: None,
            grant: None,
            task: None,
        };
        let failure = Event::AuthenticationFailure(AuthenticationFailure {
            remote,
            reason,
            repeated,
            window_seconds: repeated.map(|_| self.window.as_secs().max(1)),
        });
        let record = Record::new(envelope, &failure);
        tokio::spawn(async move {
            if let Err(error) = issuer.audit(vec![record]).await {
                tracing::warn!(%error, "authentication failure not recorded in the audit trail");
            }
        });
    }
}
