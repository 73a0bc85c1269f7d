//! The tamper-evident audit trail: one typed event per step (request,
//! decision, approval, issuance, revocation, review, ...), each carrying
//! the SHA-256 of the one before it, so that deleting, reordering or
//! editing any event breaks the chain.
//!
//! This module is the pure core: events, their canonical encoding and
//! hash, and [`verify_chain`]. [`event`] defines every kind's details as
//! Rust types ([`Event`]): writers build one and make it a [`Record`] with
//! [`Record::new`]; readers ([`query`], [`upkeep`], the CLI) read one with
//! [`AuditEvent::event`]. [`log`] holds the central trail (memory or
//! Redis) and [`writer`] the [`Auditor`] that appends to it.
//!
//! The canonical encoding of an event is its JSON object without `hash`,
//! keys in a fixed order (`seq`, `time`, `kind`, `actor`, `subject`,
//! `grant`, `task`, `details`, `prev`), absent optional ids left out, and
//! `details` with its keys sorted. `hash` is the lowercase hex SHA-256 of
//! that text; the first event's `prev` is 64 zeros. A JSON-lines export is
//! each event's JSON, `hash` last, one a line.

/// An enum whose values are written by name: one spelling per value,
/// used by `as_str`, `parse`, `Display` and serde alike.
macro_rules! named {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $($(#[$variant_meta:meta])* $variant:ident => $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$variant_meta])* $variant,)+
        }

        impl $name {
            /// Every value.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)+];
            const NAMES: &'static [&'static str] = &[$($text,)+];

            /// Its name, as the trail writes it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }

            /// Parses [`Self::as_str`]'s names.
            pub fn parse(name: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|value| value.as_str() == name)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, out: S) -> Result<S::Ok, S::Error> {
                out.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(input: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(input)?;
                Self::parse(&text).ok_or_else(|| {
                    <D::Error as serde::de::Error>::unknown_variant(&text, Self::NAMES)
                })
            }
        }
    };
}

pub mod checkpoint;
pub mod event;
pub mod file;
pub mod log;
pub mod query;
pub mod upkeep;
pub mod writer;

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

pub use self::event::{Envelope, Event, EventError};
pub use self::log::{AppendOutcome, AuditLog, MemoryAuditLog, RedisAuditLog};
pub use self::writer::{AuditError, AuditMode, Auditor, JsonLinesSink, Upkeep};

/// `prev` of the first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The actor of events nobody in particular caused (expiry, reload).
pub const SYSTEM: &str = "system";

named! {
/// What happened.
pub enum EventKind {
    /// A request arrived (what was asked).
    RequestReceived => "request_received",
    /// Policy decided it (inputs, matched rules, TTL or denial reason).
    Decision => "decision",
    /// An approver approved a pending grant.
    Approval => "approval",
    /// An approver denied a pending grant.
    ApprovalDenied => "approval_denied",
    /// A grant was issued on the break-glass path.
    BreakGlass => "break_glass",
    /// A credential was minted (serial or jti, expiry, grant).
    CredentialIssued => "credential_issued",
    /// A credential, grant, task or subject was revoked.
    Revocation => "revocation",
    /// A task or grant was completed by its owner.
    TaskCompleted => "task_completed",
    /// A grant expired.
    GrantExpired => "grant_expired",
    /// A reviewer acknowledged a break-glass use.
    ReviewAcknowledged => "review_acknowledged",
    /// The entitlement catalogue was reloaded (or a reload refused).
    CatalogueReloaded => "catalogue_reloaded",
    /// A caller failed attestation.
    AuthenticationFailure => "authentication_failure",
    /// A relying party's liveness check (sampled).
    LivenessChecked => "liveness_checked",
    /// Every registered relying party had applied a revocation.
    RevocationApplied => "revocation_applied",
    /// An attestation identity was issued (renewed or bootstrapped).
    IdentityIssued => "identity_issued",
    /// An attestation identity (or every one of a SPIFFE ID) was revoked.
    IdentityRevoked => "identity_revoked",
    /// A join token was created.
    JoinTokenCreated => "join_token_created",
    /// A join token was exchanged for an attestation identity.
    JoinTokenUsed => "join_token_used",
}
}

/// An event as reported, before it takes its place in the chain.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// What happened.
    pub kind: EventKind,
    /// When.
    pub at: SystemTime,
    /// The attested SPIFFE ID that caused it, or [`SYSTEM`].
    pub actor: String,
    /// Whose grant it concerns.
    pub subject: Option<String>,
    /// The grant.
    pub grant: Option<String>,
    /// The task.
    pub task: Option<String>,
    /// Everything else, as a JSON object ([`Event::details`]; build
    /// records with [`Record::new`]). Never secret material: no keys, no
    /// whole tokens (a token is named by its `jti`).
    pub details: serde_json::Value,
}

/// One event of the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEvent {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// When, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// What happened.
    pub kind: EventKind,
    /// Who caused it: an attested SPIFFE ID, or `system`.
    pub actor: String,
    /// Whose grant it concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    /// The task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Everything else, as stored and hashed; read it typed with
    /// [`AuditEvent::event`].
    pub details: serde_json::Value,
    /// `hash` of the event before (64 zeros for the first).
    pub prev: String,
    /// SHA-256 of this event's canonical encoding, lowercase hex.
    pub hash: String,
}

/// Events chained one after the other, each with its JSON line (what the
/// trail and the sink store).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Chained {
    /// The events, in order.
    pub events: Vec<AuditEvent>,
    /// `lines[i]` is `events[i].to_line()`.
    pub lines: Vec<String>,
}

impl Chained {
    /// Seals `records`, in order, after `after`.
    pub fn seal(records: Vec<Record>, after: &Head) -> Self {
        let mut chained = Self {
            events: Vec::with_capacity(records.len()),
            lines: Vec::with_capacity(records.len()),
        };
        let mut last = after.clone();
        for record in records {
            let (event, line) = AuditEvent::seal_with_line(record, &last);
            last = event.head();
            chained.events.push(event);
            chained.lines.push(line);
        }
        chained
    }

    /// Chains the same events after `after` instead.
    pub fn rechain(&mut self, after: &Head) {
        let mut last = after.clone();
        for (event, line) in self.events.iter_mut().zip(self.lines.iter_mut()) {
            *line = event.rechain(&last);
            last = event.head();
        }
    }

    /// The head after the last event, if any.
    pub fn head(&self) -> Option<Head> {
        self.events.last().map(AuditEvent::head)
    }
}

/// Where a chain ends: the last event's sequence number and hash (0 and
/// [`GENESIS`] for an empty chain).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Head {
    /// The last sequence number.
    pub seq: u64,
    /// The last hash.
    pub hash: String,
}

/// The first place a chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainBreak {
    /// The event's content does not match its hash: it was edited.
    #[error("event {seq}: content does not match its hash (edited)")]
    Edited {
        /// The event.
        seq: u64,
    },
    /// The event does not follow the one before it: one was deleted,
    /// inserted or moved here.
    #[error("event {seq}: does not follow event {after} (deleted, inserted or reordered)")]
    Unlinked {
        /// The event.
        seq: u64,
        /// The sequence number of the event before it.
        after: u64,
    },
    /// A line or entry is not an event.
    #[error("entry {position}: not an audit event: {message}")]
    Malformed {
        /// 1-based position in the input.
        position: u64,
        /// Why.
        message: String,
    },
}

/// The fields that are hashed, in their canonical order.
#[derive(Serialize)]
struct Body<'a> {
    seq: u64,
    time: &'a str,
    kind: EventKind,
    actor: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    grant: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    task: &'a Option<String>,
    details: &'a serde_json::Value,
    prev: &'a str,
}

// === impl AuditEvent ===

impl AuditEvent {
    /// Places `record` in the chain after `prev`.
    pub fn seal(record: Record, prev: &Head) -> Self {
        Self::seal_with_line(record, prev).0
    }

    /// [`AuditEvent::seal`], and the event's JSON line, from one
    /// serialization.
    pub fn seal_with_line(record: Record, prev: &Head) -> (Self, String) {
        let mut details = record.details;
        sort_keys(&mut details);
        let mut event = Self {
            seq: 0,
            time: humantime::format_rfc3339_millis(record.at).to_string(),
            kind: record.kind,
            actor: record.actor,
            subject: record.subject,
            grant: record.grant,
            task: record.task,
            details,
            prev: String::new(),
            hash: String::new(),
        };
        let line = event.rechain(prev);
        (event, line)
    }

    /// Moves the event to just after `prev` (sequence number, `prev`,
    /// `hash`) and returns its new JSON line.
    pub fn rechain(&mut self, prev: &Head) -> String {
        self.seq = prev.seq + 1;
        self.prev.clone_from(&prev.hash);
        let mut body = self.canonical();
        self.hash = hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &body).as_ref());
        // The line is the canonical object with `hash` added last.
        body.pop();
        body.extend_from_slice(b",\"hash\":\"");
        body.extend_from_slice(self.hash.as_bytes());
        body.extend_from_slice(b"\"}");
        String::from_utf8(body).unwrap_or_else(|_| self.to_line())
    }

    /// The hash its content should have.
    pub fn computed_hash(&self) -> String {
        hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &self.canonical()).as_ref())
    }

    /// The canonical encoding: the event without `hash`.
    fn canonical(&self) -> Vec<u8> {
        let body = Body {
            seq: self.seq,
            time: &self.time,
            kind: self.kind,
            actor: &self.actor,
            subject: &self.subject,
            grant: &self.grant,
            task: &self.task,
            details: &self.details,
            prev: &self.prev,
        };
        serde_json::to_vec(&body).unwrap_or_default()
    }

    /// The event as one line of JSON (no newline).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses one line of JSON.
    pub fn from_line(line: &str) -> Result<Self, String> {
        serde_json::from_str(line).map_err(|error| error.to_string())
    }

    /// The chain's head after this event.
    pub fn head(&self) -> Head {
        Head {
            seq: self.seq,
            hash: self.hash.clone(),
        }
    }
}

// === impl Head ===

impl Head {
    /// The head of an empty chain.
    pub fn genesis() -> Self {
        Self {
            seq: 0,
            hash: GENESIS.to_owned(),
        }
    }

    /// `"<seq> <hash>"`, as stored.
    pub fn encode(&self) -> String {
        format!("{} {}", self.seq, self.hash)
    }

    /// Parses [`Head::encode`]'s form.
    pub fn decode(text: &str) -> Option<Self> {
        let (seq, hash) = text.split_once(' ')?;
        Some(Self {
            seq: seq.parse().ok()?,
            hash: hash.to_owned(),
        })
    }
}

/// Checks that `events` continue the chain from `start`: each event's hash
/// matches its content, its `prev` is the hash before it, and sequence
/// numbers follow one another. Returns the new head, or the first break.
pub fn verify_chain<'a>(
    start: &Head,
    events: impl IntoIterator<Item = &'a AuditEvent>,
) -> Result<Head, ChainBreak> {
    let mut head = start.clone();
    for event in events {
        if event.computed_hash() != event.hash {
            return Err(ChainBreak::Edited { seq: event.seq });
        }
        if event.prev != head.hash || event.seq != head.seq + 1 {
            return Err(ChainBreak::Unlinked {
                seq: event.seq,
                after: head.seq,
            });
        }
        head = event.head();
    }
    Ok(head)
}

/// Sorts object keys at every level, in place (serde_json's map keeps
/// insertion order when a crate in the build turns on `preserve_order`, as
/// one here does).
fn sort_keys(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.sort_keys();
            map.values_mut().for_each(sort_keys);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(sort_keys),
        _ => {}
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn record(n: u64) -> Record {
        Record {
            kind: EventKind::CredentialIssued,
            at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_392_000_000 + n),
            actor: "spiffe://example.org/ci/runner".to_owned(),
            subject: Some("spiffe://example.org/ci/runner".to_owned()),
            grant: Some(format!("g{n}")),
            task: None,
            details: serde_json::json!({"serial": format!("{n:02x}"), "a": {"z": 1, "b": 2}}),
        }
    }

    fn chain(n: u64) -> Vec<AuditEvent> {
        let mut head = Head::genesis();
        (1..=n)
            .map(|i| {
                let event = AuditEvent::seal(record(i), &head);
                head = event.head();
                event
            })
            .collect()
    }

    #[test]
    fn a_chain_verifies_and_round_trips_through_json_lines() {
        let events = chain(3);
        assert_eq!(events[0].prev, GENESIS);
        assert_eq!(events[1].prev, events[0].hash);
        let head = verify_chain(&Head::genesis(), &events).unwrap();
        assert_eq!(head, events[2].head());
        let lines: Vec<String> = events.iter().map(AuditEvent::to_line).collect();
        // Sealing writes the same line from its one serialization.
        let (resealed, line) = AuditEvent::seal_with_line(record(1), &Head::genesis());
        assert_eq!((&resealed, &line), (&events[0], &lines[0]));
        assert!(lines[0].starts_with("{\"seq\":1,\"time\":\"2026-11-23T00:00:00.001Z\""));
        assert!(lines[0].contains("\"details\":{\"a\":{\"b\":2,\"z\":1},\"serial\":\"01\"}"));
        assert!(lines[0].ends_with(&format!("\"hash\":\"{}\"}}", events[0].hash)));
        let parsed: Vec<AuditEvent> = lines
            .iter()
            .map(|line| AuditEvent::from_line(line).unwrap())
            .collect();
        assert_eq!(parsed, events);
        assert_eq!(Head::decode(&head.encode()), Some(head));
    }

    #[test]
    fn rechaining_after_another_head_is_sealing_there() {
        let earlier = chain(2);
        let records = vec![record(3), record(4)];
        let mut chained = Chained::seal(records.clone(), &Head::genesis());
        chained.rechain(&earlier[1].head());
        assert_eq!(chained, Chained::seal(records, &earlier[1].head()));
        assert_eq!(chained.events[0].seq, 3);
        assert_eq!(chained.lines[1], chained.events[1].to_line());
    }

    #[test]
    fn edits_deletions_and_reordering_break_the_chain() {
        let events = chain(4);
        let mut edited = events.clone();
        edited[1].details["serial"] = serde_json::json!("ff");
        assert_eq!(
            verify_chain(&Head::genesis(), &edited),
            Err(ChainBreak::Edited { seq: 2 })
        );
        // Rehashing the edited event does not help: the next link breaks.
        edited[1].hash = edited[1].computed_hash();
        assert_eq!(
            verify_chain(&Head::genesis(), &edited),
            Err(ChainBreak::Unlinked { seq: 3, after: 2 })
        );
        let mut deleted = events.clone();
        deleted.remove(1);
        assert_eq!(
            verify_chain(&Head::genesis(), &deleted),
            Err(ChainBreak::Unlinked { seq: 3, after: 1 })
        );
        let mut reordered = events.clone();
        reordered.swap(1, 2);
        assert_eq!(
            verify_chain(&Head::genesis(), &reordered),
            Err(ChainBreak::Unlinked { seq: 3, after: 1 })
        );
        // A trimmed chain verifies from its checkpoint.
        assert_eq!(
            verify_chain(&events[1].head(), &events[2..]),
            Ok(events[3].head())
        );
    }
}
