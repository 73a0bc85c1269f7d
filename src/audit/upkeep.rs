//! What the trail keeps besides its events, and the rules the
//! [`Auditor`](super::Auditor)'s writer follows to look after it:
//!
//! - **Expiry.** The trail remembers every grant its events show as active
//!   or pending, until an event ends it (revocation, completion, denial).
//!   A grant still remembered when its expiry passes gets a
//!   `grant_expired` event. What to remember or forget is read from the
//!   events themselves ([`expiry_effects`]), so it is written in the same
//!   atomic append as the event that caused it.
//! - **Retention.** Events older than [`Retention::max_age`], or beyond
//!   the newest [`Retention::max_events`], are cut from the central trail.
//!   The head of the last event cut is kept as a [`Checkpoint`] signed
//!   with the trust domain's JWT key, so what remains still verifies: from
//!   the checkpoint instead of from the genesis.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::event::{Decision, Envelope, Event, GrantExpired};
use super::{AuditEvent, EventKind, Head, Record, SYSTEM};
use crate::grant::GrantState;

/// A grant the trail will record as expired unless an event ends it
/// first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expiring {
    /// The grant id.
    pub grant: String,
    /// When it expires, RFC 3339.
    pub expires_at: String,
    /// Whose grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// The entitlement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entitlement: Option<String>,
    /// `active` or `pending`, as the last event left it.
    pub state: String,
}

/// What an event changes in the set of grants the trail watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpiryEffect {
    /// Watch this grant (or move its expiry).
    Watch(Expiring),
    /// This grant ended: forget it.
    Forget(String),
}

/// How much of the central trail to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Cut events older than this.
    pub max_age: Option<Duration>,
    /// Keep at most this many events.
    pub max_events: Option<u64>,
}

/// The head of the last event cut from the central trail: the remaining
/// chain starts after it. These are the claims of a JWS signed with the
/// trust domain's JWT key (header `typ` [`CHECKPOINT_TYP`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The trust domain whose key signed it.
    pub iss: String,
    /// The sequence number of the last event cut.
    pub seq: u64,
    /// Its hash.
    pub hash: String,
    /// Its time.
    pub time: String,
    /// When the checkpoint was signed, seconds since the Unix epoch.
    pub iat: u64,
}

/// The JWS `typ` of a signed checkpoint: never a JWT-SVID.
pub const CHECKPOINT_TYP: &str = "jitid-audit-checkpoint+jwt";

/// A checkpoint as the trail stores it: the sequence number it is at and
/// the JWS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// [`Checkpoint::seq`].
    pub seq: u64,
    /// The compact JWS.
    pub token: String,
}

/// Signs checkpoints; the certificate authority does, with its JWT key.
pub trait CheckpointSigner: Send + Sync + 'static {
    /// A compact JWS of the [`Checkpoint`] at `head`, the event of `time`,
    /// signed at `now`.
    fn sign_checkpoint(&self, head: &Head, time: &str, now: SystemTime) -> Result<String, String>;
}

// === impl Checkpoint ===

impl Checkpoint {
    /// The chain's head at the checkpoint.
    pub fn head(&self) -> Head {
        Head {
            seq: self.seq,
            hash: self.hash.clone(),
        }
    }
}

// === impl SignedCheckpoint ===

impl SignedCheckpoint {
    /// `"<seq> <token>"`, as stored.
    pub fn encode(&self) -> String {
        format!("{} {}", self.seq, self.token)
    }

    /// Parses [`SignedCheckpoint::encode`]'s form.
    pub fn decode(text: &str) -> Option<Self> {
        let (seq, token) = text.split_once(' ')?;
        Some(Self {
            seq: seq.parse().ok()?,
            token: token.to_owned(),
        })
    }
}

// === impl Expiring ===

impl Expiring {
    /// Its expiry in milliseconds since the Unix epoch (0 if unreadable:
    /// due at once).
    pub fn expires_ms(&self) -> u64 {
        humantime::parse_rfc3339(&self.expires_at)
            .ok()
            .and_then(|at| at.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |since| since.as_millis() as u64)
    }

    /// The `grant_expired` event for it.
    pub fn expired(&self, now: SystemTime) -> Record {
        let envelope = Envelope {
            at: now,
            actor: SYSTEM.to_owned(),
            subject: self.subject.clone(),
            grant: Some(self.grant.clone()),
            task: self.task.clone(),
        };
        Record::new(
            envelope,
            &Event::GrantExpired(GrantExpired {
                expires_at: self.expires_at.clone(),
                entitlement: self.entitlement.clone(),
                state: self.state.clone(),
            }),
        )
    }
}

/// What `event` changes in the set of grants the trail watches for
/// expiry: a decision or approval that leaves a grant active or pending
/// watches it until its `expires_at`; a denial, revocation, completion
/// or expiry forgets the grants it ended. An event whose details do not
/// fit its kind changes nothing, and is logged.
pub fn expiry_effects(event: &AuditEvent) -> Vec<ExpiryEffect> {
    let forget_own = || {
        event
            .grant
            .iter()
            .map(|grant| ExpiryEffect::Forget(grant.clone()))
            .collect()
    };
    // Only these kinds matter; the others are not read at all.
    match event.kind {
        EventKind::ApprovalDenied | EventKind::GrantExpired => return forget_own(),
        EventKind::Decision
        | EventKind::Approval
        | EventKind::Revocation
        | EventKind::TaskCompleted => {}
        _ => return Vec::new(),
    }
    let typed = match event.event() {
        Ok(typed) => typed,
        Err(error) => {
            tracing::warn!(%error, "audit event not understood; expiry tracking skips it");
            return Vec::new();
        }
    };
    let watch = |state: GrantState, expires_at: SystemTime, entitlement: &str| {
        let Some(grant) = &event.grant else {
            return Vec::new();
        };
        if !matches!(state, GrantState::Active | GrantState::Pending) {
            return Vec::new();
        }
        vec![ExpiryEffect::Watch(Expiring {
            grant: grant.clone(),
            expires_at: humantime::format_rfc3339_seconds(expires_at).to_string(),
            subject: event.subject.clone(),
            task: event.task.clone(),
            entitlement: Some(entitlement.to_owned()),
            state: state.as_str().to_owned(),
        })]
    };
    match &typed {
        Event::Decision(Decision::Granted(granted)) => {
            watch(granted.state, granted.expires_at, &granted.entitlement)
        }
        Event::Decision(Decision::Delegated(delegated)) => watch(
            GrantState::Active,
            delegated.expires_at,
            &delegated.entitlement,
        ),
        Event::Approval(approval) => {
            watch(approval.state, approval.expires_at, &approval.entitlement)
        }
        Event::Revocation(_) | Event::TaskCompleted(_) => typed
            .ended_grants()
            .iter()
            .map(|grant| ExpiryEffect::Forget(grant.clone()))
            .collect(),
        _ => Vec::new(),
    }
}

/// The last sequence number retention cuts, given the chain's `head`, the
/// last event already cut (`cut`, 0 for none), and `time_of(seq)` to read
/// an event's time. `None` when nothing is due. Age is found by binary
/// search: event times only grow, up to the clock skew between replicas.
pub async fn cut_point<F, Fut>(
    retention: &Retention,
    head: u64,
    cut: u64,
    now: SystemTime,
    mut time_of: F,
) -> Result<Option<u64>, super::log::AuditLogError>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Result<Option<String>, super::log::AuditLogError>>,
{
    let mut through = retention
        .max_events
        .map_or(0, |max| head.saturating_sub(max));
    if let Some(max_age) = retention.max_age {
        let cutoff = humantime::format_rfc3339_millis(now - max_age).to_string();
        // The last event older than the cutoff, in (cut, head].
        let (mut low, mut high) = (cut.max(through), head);
        while low < high {
            let mid = low + (high - low).div_ceil(2);
            match time_of(mid).await? {
                Some(time) if time < cutoff => low = mid,
                _ => high = mid - 1,
            }
        }
        through = through.max(low);
    }
    Ok((through > cut).then_some(through))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Head;
    use crate::audit::event::{ApprovalDenied, Granted, Refused, Revocation, Target};

    fn event(grant: &str, event: Event) -> AuditEvent {
        let envelope = Envelope {
            at: SystemTime::UNIX_EPOCH,
            actor: SYSTEM.to_owned(),
            subject: Some("spiffe://example.org/a".to_owned()),
            grant: Some(grant.to_owned()),
            task: Some("t".to_owned()),
        };
        AuditEvent::seal(Record::new(envelope, &event), &Head::genesis())
    }

    fn decided(state: GrantState) -> Event {
        Event::Decision(Decision::Granted(Granted {
            outcome: String::new(),
            entitlement: "e".to_owned(),
            state,
            ttl_seconds: 60,
            expires_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_428_000),
            explanation: serde_json::Value::Null,
        }))
    }

    #[test]
    fn events_watch_and_forget_grants() {
        let decided_event = event("g1", decided(GrantState::Pending));
        let [ExpiryEffect::Watch(watched)] = &expiry_effects(&decided_event)[..] else {
            panic!("not watched: {:?}", expiry_effects(&decided_event));
        };
        assert_eq!(watched.grant, "g1");
        assert_eq!(watched.entitlement.as_deref(), Some("e"));
        assert_eq!(watched.state, "pending");
        assert_eq!(watched.expires_at, "2026-11-23T10:00:00Z");
        assert_eq!(watched.expires_ms(), 1_795_428_000_000);
        let expired = watched.expired(SystemTime::UNIX_EPOCH);
        assert_eq!(expired.kind, EventKind::GrantExpired);
        assert_eq!(
            expired.event().unwrap(),
            Event::GrantExpired(GrantExpired {
                expires_at: "2026-11-23T10:00:00Z".to_owned(),
                entitlement: Some("e".to_owned()),
                state: "pending".to_owned(),
            })
        );
        // A grant decided in any other state, and a refusal, are not
        // watched.
        assert!(expiry_effects(&event("g2", decided(GrantState::Denied))).is_empty());
        let refused = event(
            "g2",
            Event::Decision(Decision::Refused(Refused {
                outcome: "refused: no".to_owned(),
                explanation: None,
            })),
        );
        assert!(expiry_effects(&refused).is_empty());
        let revoked = event(
            "g1",
            Event::Revocation(Revocation {
                target: Target::Subject,
                value: "spiffe://example.org/a".to_owned(),
                reason: String::new(),
                grants_ended: vec!["g1".to_owned(), "g3".to_owned()],
                credential_revoked: false,
                task_revoked: false,
                lag_ms: 0,
            }),
        );
        assert_eq!(
            expiry_effects(&revoked),
            [
                ExpiryEffect::Forget("g1".to_owned()),
                ExpiryEffect::Forget("g3".to_owned())
            ]
        );
        let denied = event(
            "g4",
            Event::ApprovalDenied(ApprovalDenied {
                reason: String::new(),
            }),
        );
        assert_eq!(
            expiry_effects(&denied),
            [ExpiryEffect::Forget("g4".to_owned())]
        );
        // Details that do not fit change nothing.
        let mut unreadable = event("g5", decided(GrantState::Active));
        unreadable.details = serde_json::json!({"state": "active"});
        assert!(expiry_effects(&unreadable).is_empty());
    }

    #[tokio::test]
    async fn retention_cuts_by_length_and_by_age() {
        // Event n happened n minutes after the epoch.
        let time_of = |seq: u64| async move {
            Ok(Some(
                humantime::format_rfc3339_millis(
                    SystemTime::UNIX_EPOCH + Duration::from_secs(60 * seq),
                )
                .to_string(),
            ))
        };
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(60 * 100);
        let by_length = Retention {
            max_events: Some(30),
            max_age: None,
        };
        assert_eq!(
            cut_point(&by_length, 100, 0, now, time_of).await.unwrap(),
            Some(70)
        );
        assert_eq!(
            cut_point(&by_length, 100, 70, now, time_of).await.unwrap(),
            None
        );
        let by_age = Retention {
            max_events: None,
            max_age: Some(Duration::from_secs(60 * 10) - Duration::from_millis(1)),
        };
        // Events 1..=90 are older than 10 minutes minus a millisecond.
        assert_eq!(
            cut_point(&by_age, 100, 0, now, time_of).await.unwrap(),
            Some(90)
        );
        assert_eq!(
            cut_point(&by_age, 100, 95, now, time_of).await.unwrap(),
            None
        );
        let both = Retention {
            max_events: Some(5),
            ..by_age
        };
        assert_eq!(
            cut_point(&both, 100, 0, now, time_of).await.unwrap(),
            Some(95)
        );
        assert_eq!(
            cut_point(&Retention::default(), 100, 0, now, time_of)
                .await
                .unwrap(),
            None
        );
    }

    #[test]
    fn checkpoints_round_trip() {
        let stored = SignedCheckpoint {
            seq: 7,
            token: "a.b.c".to_owned(),
        };
        assert_eq!(SignedCheckpoint::decode(&stored.encode()), Some(stored));
    }
}
