//! Grants and credentials as plain data: what the store records and what
//! credentials carry. No I/O.

use std::fmt;
use std::time::SystemTime;

use crate::spiffe_id::{self, SpiffeId};

/// Longest accepted action, in bytes.
pub const MAX_ACTION_BYTES: usize = 128;
/// Longest accepted task id, in bytes.
pub const MAX_TASK_ID_BYTES: usize = 128;

/// Why a string is not a valid action or task id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The value is empty.
    #[error("is empty")]
    Empty,
    /// The value is longer than allowed.
    #[error("is longer than {0} bytes")]
    TooLong(usize),
    /// The value contains a character that is not allowed.
    #[error("contains {0:?}, which is not allowed")]
    BadChar(char),
}

/// One action a credential is good for, e.g. `deploy:prod/payments`.
///
/// An action is an OAuth 2.0 scope token (RFC 6749 §3.3): printable ASCII
/// without space, `"` or `\`, so an action set joins into a `scope` claim and
/// splits back unambiguously.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Action(String);

/// The task a grant is for, e.g. a CI job id: letters, digits, `.`, `-`, `_`
/// (a valid SPIFFE ID path segment), at most 128 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TaskId(String);

/// Unique id of a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GrantId(uuid::Uuid);

/// One approved use of one entitlement by one subject for one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The grant's id.
    pub id: GrantId,
    /// The attested workload the grant is for.
    pub subject: SpiffeId,
    /// Name of the entitlement the grant uses.
    pub entitlement: String,
    /// Actions credentials under the grant are good for.
    pub actions: Vec<Action>,
    /// The task the grant is for.
    pub task_id: TaskId,
    /// Why the subject asked for it.
    pub justification: String,
    /// When the grant was created.
    pub created_at: SystemTime,
    /// When the grant, and every credential under it, expires.
    pub expires_at: SystemTime,
}

/// How a credential is identified.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CredentialId {
    /// An X.509-SVID, by serial number (lowercase hex).
    X509Serial(String),
    /// A JWT-SVID, by `jti`.
    JwtId(String),
}

/// A credential minted under a grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The credential's id.
    pub id: CredentialId,
    /// The grant it was minted under.
    pub grant_id: GrantId,
    /// When it expires; never after its grant.
    pub expires_at: SystemTime,
}

// === impl Action ===

impl Action {
    /// Validates an action.
    pub fn new(action: &str) -> Result<Self, NameError> {
        if action.is_empty() {
            return Err(NameError::Empty);
        }
        if action.len() > MAX_ACTION_BYTES {
            return Err(NameError::TooLong(MAX_ACTION_BYTES));
        }
        if let Some(bad) = action
            .chars()
            .find(|&c| !(c.is_ascii_graphic() && c != '"' && c != '\\'))
        {
            return Err(NameError::BadChar(bad));
        }
        Ok(Self(action.to_owned()))
    }

    /// The action as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl TaskId ===

impl TaskId {
    /// Validates a task id.
    pub fn new(task_id: &str) -> Result<Self, NameError> {
        if task_id.len() > MAX_TASK_ID_BYTES {
            return Err(NameError::TooLong(MAX_TASK_ID_BYTES));
        }
        spiffe_id::validate_segment(task_id).map_err(|error| match error {
            spiffe_id::SpiffeIdError::EmptySegment => NameError::Empty,
            spiffe_id::SpiffeIdError::BadPathChar(bad) => NameError::BadChar(bad),
            _ => NameError::BadChar('.'),
        })?;
        Ok(Self(task_id.to_owned()))
    }

    /// A fresh random task id, for requests that name none.
    pub fn generate() -> Self {
        Self(format!("task-{}", uuid::Uuid::new_v4().simple()))
    }

    /// The task id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl GrantId ===

impl GrantId {
    /// A fresh random grant id.
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4())
    }

    /// Parses a grant id (a hyphenated UUID).
    pub fn parse(text: &str) -> Option<Self> {
        uuid::Uuid::try_parse(text).ok().map(Self)
    }
}

impl fmt::Display for GrantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

// === impl CredentialId ===

impl fmt::Display for CredentialId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::X509Serial(serial) => write!(f, "x509:{serial}"),
            Self::JwtId(jti) => write!(f, "jwt:{jti}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_are_scope_tokens() {
        assert!(Action::new("deploy:prod/payments").is_ok());
        assert!(Action::new("a*b-c_d.e~f").is_ok());
        assert_eq!(Action::new(""), Err(NameError::Empty));
        assert_eq!(Action::new("a b"), Err(NameError::BadChar(' ')));
        assert_eq!(Action::new("a\"b"), Err(NameError::BadChar('"')));
        assert_eq!(Action::new("é"), Err(NameError::BadChar('é')));
        assert_eq!(
            Action::new(&"a".repeat(129)),
            Err(NameError::TooLong(MAX_ACTION_BYTES))
        );
    }

    #[test]
    fn task_ids_are_path_segments() {
        assert!(TaskId::new("build-1234.5_a").is_ok());
        assert_eq!(TaskId::new(""), Err(NameError::Empty));
        assert_eq!(TaskId::new("a/b"), Err(NameError::BadChar('/')));
        assert!(TaskId::new("..").is_err());
        assert!(TaskId::new(TaskId::generate().as_str()).is_ok());
    }
}
