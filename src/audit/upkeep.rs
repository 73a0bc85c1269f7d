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

use super::{AuditEvent, EventKind, Head, Record, SYSTEM};

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
        Record {
            kind: EventKind::GrantExpired,
            at: now,
            actor: SYSTEM.to_owned(),
            subject: self.subject.clone(),
            grant: Some(self.grant.clone()),
            task: self.task.clone(),
            details: serde_json::json!({
                "expires_at": self.expires_at,
                "entitlement": self.entitlement,
                "state": self.state,
            }),
        }
    }
}

/// What `event` changes in the set of grants the trail watches for
/// expiry: a decision or approval that leaves a grant active or pending
/// watches it until its `expires_at`; a denial, revocation, completion
/// or expiry forgets the grants it ended.
pub fn expiry_effects(event: &AuditEvent) -> Vec<ExpiryEffect> {
    let details = &event.details;
    let text = |key: &str| details.get(key).and_then(|value| value.as_str());
    match event.kind {
        EventKind::Decision | EventKind::Approval => {
            let (Some(grant), Some(state), Some(expires_at)) =
                (&event.grant, text("state"), text("expires_at"))
            else {
                return Vec::new();
            };
            if state != "active" && state != "pending" {
                return Vec::new();
            }
            vec![ExpiryEffect::Watch(Expiring {
                grant: grant.clone(),
                expires_at: expires_at.to_owned(),
                subject: event.subject.clone(),
                task: event.task.clone(),
                entitlement: text("entitlement").map(str::to_owned),
                state: state.to_owned(),
            })]
        }
        EventKind::ApprovalDenied | EventKind::GrantExpired => event
            .grant
            .iter()
            .map(|grant| ExpiryEffect::Forget(grant.clone()))
            .collect(),
        EventKind::Revocation | EventKind::TaskCompleted => ended_grants(event)
            .map(|grant| ExpiryEffect::Forget(grant.to_owned()))
            .collect(),
        _ => Vec::new(),
    }
}

/// The grants an event says it ended (`details.grants_ended`).
pub fn ended_grants(event: &AuditEvent) -> impl Iterator<Item = &str> {
    event
        .details
        .get("grants_ended")
        .and_then(|value| value.as_array())
        .into_iter()
        .flatten()
        .filter_map(|value| value.as_str())
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

    fn event(kind: EventKind, grant: &str, details: serde_json::Value) -> AuditEvent {
        AuditEvent::seal(
            Record {
                kind,
                at: SystemTime::UNIX_EPOCH,
                actor: SYSTEM.to_owned(),
                subject: Some("spiffe://example.org/a".to_owned()),
                grant: Some(grant.to_owned()),
                task: Some("t".to_owned()),
                details,
            },
            &Head::genesis(),
        )
    }

    #[test]
    fn events_watch_and_forget_grants() {
        let decided = event(
            EventKind::Decision,
            "g1",
            serde_json::json!({"state": "active", "expires_at": "2026-11-23T10:00:00Z", "entitlement": "e"}),
        );
        let [ExpiryEffect::Watch(watched)] = &expiry_effects(&decided)[..] else {
            panic!("not watched: {:?}", expiry_effects(&decided));
        };
        assert_eq!(watched.grant, "g1");
        assert_eq!(watched.entitlement.as_deref(), Some("e"));
        assert_eq!(watched.expires_ms(), 1_795_428_000_000);
        assert_eq!(
            watched.expired(SystemTime::UNIX_EPOCH).kind,
            EventKind::GrantExpired
        );
        let refused = event(
            EventKind::Decision,
            "g2",
            serde_json::json!({"state": "denied"}),
        );
        assert!(expiry_effects(&refused).is_empty());
        let revoked = event(
            EventKind::Revocation,
            "g1",
            serde_json::json!({"grants_ended": ["g1", "g3"]}),
        );
        assert_eq!(
            expiry_effects(&revoked),
            [
                ExpiryEffect::Forget("g1".to_owned()),
                ExpiryEffect::Forget("g3".to_owned())
            ]
        );
        let denied = event(EventKind::ApprovalDenied, "g4", serde_json::json!({}));
        assert_eq!(
            expiry_effects(&denied),
            [ExpiryEffect::Forget("g4".to_owned())]
        );
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
