//! The JSON-lines audit file's defence against losing its tail: the
//! writer seals the file now and then (every upkeep interval with new
//! events, and at shutdown) with a signed head line, `{"head": "<JWS>"}`,
//! and keeps the latest one in a head file beside it (`<file>.head`).
//! [`check_tail`] then tells whether the file still reaches that head: a
//! server refuses to append to a file that is behind it, and
//! `jitid audit verify --file` fails on one.
//!
//! A head line says nothing new about the events before it (they are
//! chained); it is a signed statement of where the file ended, so a copy
//! of the head file kept elsewhere (shipped with the logs) shows what a
//! cut took away even if the head file went with it.

use std::path::{Path, PathBuf};

use super::upkeep::Checkpoint;
use super::{AuditEvent, Head};
use crate::keyfile;

/// The head file's mode: readable by the operator's group, like the file.
const HEAD_FILE_MODE: u32 = 0o640;

/// A line of the file that is not an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seal {
    /// `{"checkpoint": ...}`, first: the file starts after the event it
    /// names (an export of a trail cut by retention).
    Checkpoint(String),
    /// `{"head": ...}`: the file reached the event it names.
    Head(String),
}

/// Why a file does not reach its known head.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TailError {
    /// The file ends before the head it is known to have reached.
    #[error(
        "{path} ends at event {ends} but its head file says it reached event {head}: events were removed from its end"
    )]
    Behind {
        /// The file.
        path: PathBuf,
        /// Its last event.
        ends: u64,
        /// The head it reached.
        head: u64,
    },
    /// The file holds another event where its head is.
    #[error("{path}: event {seq} is not the one its head file names: the file was rewritten")]
    Diverged {
        /// The file.
        path: PathBuf,
        /// Where.
        seq: u64,
    },
    /// The head file is unreadable or unsigned.
    #[error("{path}: {message}")]
    BadHead {
        /// The head file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

// === impl Seal ===

impl Seal {
    /// Reads a line that is a seal rather than an event.
    pub fn parse(line: &str) -> Option<Self> {
        let value: serde_json::Value = serde_json::from_str(line).ok()?;
        let object = value.as_object()?;
        if object.len() != 1 {
            return None;
        }
        match (object.get("checkpoint"), object.get("head")) {
            (Some(token), None) => Some(Self::Checkpoint(token.as_str()?.to_owned())),
            (None, Some(token)) => Some(Self::Head(token.as_str()?.to_owned())),
            _ => None,
        }
    }

    /// Its line, without the newline.
    pub fn to_line(&self) -> String {
        match self {
            Self::Checkpoint(token) => serde_json::json!({ "checkpoint": token }).to_string(),
            Self::Head(token) => serde_json::json!({ "head": token }).to_string(),
        }
    }
}

/// Where the head file of the audit file `path` is.
pub fn head_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".head");
    PathBuf::from(name)
}

/// Reads the head file beside `path`: its signed head, if there is one.
pub fn read_head(path: &Path) -> Result<Option<String>, TailError> {
    let head_path = head_path(path);
    match std::fs::read_to_string(&head_path) {
        Ok(text) => Ok(Some(text.trim().to_owned())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(TailError::BadHead {
            path: head_path,
            message: error.to_string(),
        }),
    }
}

/// Replaces the head file beside `path` with `token`, atomically.
pub fn write_head(path: &Path, token: &str) -> Result<(), keyfile::KeyFileError> {
    keyfile::write_replace(&head_path(path), token.as_bytes(), HEAD_FILE_MODE)
}

/// Checks that `events`, the events of the file at `path` in order, reach
/// `head` (its head file's checkpoint, already verified): the file holds
/// the event `head` names, with the same hash.
pub fn check_tail(path: &Path, events: &[AuditEvent], head: &Checkpoint) -> Result<(), TailError> {
    let ends = events.last().map_or(0, |event| event.seq);
    if head.seq == 0 {
        return Ok(());
    }
    if ends < head.seq {
        return Err(TailError::Behind {
            path: path.to_owned(),
            ends,
            head: head.seq,
        });
    }
    match events.iter().rev().find(|event| event.seq == head.seq) {
        Some(event) if event.head() == head.head() => Ok(()),
        // A file cut at its start by retention no longer holds the event;
        // its checkpoint line vouches for what came before.
        None if events.first().is_some_and(|first| first.seq > head.seq) => Ok(()),
        _ => Err(TailError::Diverged {
            path: path.to_owned(),
            seq: head.seq,
        }),
    }
}

/// Whether `head` is where `events` (in order) stand right after the
/// event it names: a head line must follow the event it seals.
pub fn seals(events: &[AuditEvent], head: &Head) -> bool {
    events.last().is_some_and(|event| event.head() == *head)
}
