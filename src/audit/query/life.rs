//! The life of one grant as the trail tells it ([`GrantLife`]): its
//! events, credentials, how it ended, and whether any `Verify` answered
//! VALID for it after the end.

use std::fmt::Write as _;

use super::line;
use crate::audit::event::{Event, LivenessStatus, Target};
use crate::audit::{AuditEvent, EventKind};
use crate::grant::GrantState;

/// How a grant's life ended, as the trail tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// Still active or pending as far as the trail shows.
    Open,
    /// Ended by the event of this sequence number (revocation,
    /// completion, denial, expiry).
    Ended {
        /// The event.
        seq: u64,
        /// Its kind.
        kind: EventKind,
        /// Its time.
        time: String,
    },
}

/// Everything the trail holds about one grant, and whether any `Verify`
/// answered VALID for it after it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct GrantLife {
    /// The grant.
    pub grant: String,
    /// Its events in chain order.
    pub events: Vec<AuditEvent>,
    /// How it ended.
    pub ending: Ending,
    /// Credentials issued under it (kind and serial or jti).
    pub credentials: Vec<String>,
    /// Liveness checks recorded after it ended.
    pub checks_after_end: u64,
    /// Of those, the ones answered VALID (must be none): their sequence
    /// numbers.
    pub valid_after_end: Vec<u64>,
}

// === impl GrantLife ===

impl GrantLife {
    /// The life of `grant` from the events a [`Filter`](super::Filter) on
    /// it selected. Events whose details do not fit their kind count by
    /// their kind alone.
    pub fn of(grant: &str, events: Vec<AuditEvent>) -> Self {
        let mut ending = Ending::Open;
        let mut credentials = Vec::new();
        let mut checks_after_end = 0;
        let mut valid_after_end = Vec::new();
        for event in &events {
            let typed = event.event().ok();
            let ends = match &typed {
                Some(revocation @ (Event::Revocation(_) | Event::TaskCompleted(_))) => {
                    revocation.ended_grants().iter().any(|ended| ended == grant)
                        || revocation.ends().is_some_and(|(target, _)| {
                            matches!(target, Target::Task | Target::Subject)
                        })
                }
                Some(Event::Decision(decision)) => !matches!(
                    decision.state(),
                    Some(GrantState::Active | GrantState::Pending)
                ),
                _ => matches!(
                    event.kind,
                    EventKind::ApprovalDenied | EventKind::GrantExpired
                ),
            };
            match &typed {
                Some(Event::CredentialIssued(issued)) => {
                    credentials.push(format!("{} {}", issued.credential, issued.id));
                }
                Some(Event::LivenessChecked(checked)) if ending != Ending::Open => {
                    checks_after_end += 1;
                    if checked.status == LivenessStatus::Valid {
                        valid_after_end.push(event.seq);
                    }
                }
                _ => {}
            }
            if ends && ending == Ending::Open {
                ending = Ending::Ended {
                    seq: event.seq,
                    kind: event.kind,
                    time: event.time.clone(),
                };
            }
        }
        Self {
            grant: grant.to_owned(),
            events,
            ending,
            credentials,
            checks_after_end,
            valid_after_end,
        }
    }

    /// The life as `jitid audit grant` prints it: each event on its
    /// [`line()`](super::line) (a decision followed by its inputs and rules), the
    /// credentials, the end, and the checks after it.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(out, "grant {}", self.grant);
        for event in &self.events {
            let _ = writeln!(out, "{}", line(event));
            if let Ok(Event::Decision(decision)) = event.event() {
                let explanation = decision.explanation();
                if !explanation.is_null() {
                    let _ = writeln!(out, "           inputs and rules: {explanation}");
                }
            }
        }
        let _ = writeln!(out, "credentials: {}", self.credentials.len());
        for credential in &self.credentials {
            let _ = writeln!(out, "  {credential}");
        }
        match &self.ending {
            Ending::Open => {
                let _ = writeln!(out, "ended: not yet (active or pending)");
            }
            Ending::Ended { seq, kind, time } => {
                let _ = writeln!(out, "ended: {kind} at {time} (event {seq})");
                let _ = writeln!(
                    out,
                    "Verify after the end: {} liveness check(s) recorded, {} answered VALID",
                    self.checks_after_end,
                    self.valid_after_end.len()
                );
            }
        }
        out
    }
}
