//! Grants and credentials as plain data: what the store records and what
//! credentials carry. No I/O.

use std::fmt;
use std::time::{Duration, SystemTime};

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

/// Unique id of a grant: a UUID (version 4) whose first 16 bits are the
/// [`Shard`] of the grant's subject, so every key about a subject's grants
/// can live in one Redis Cluster slot and any id leads to its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GrantId(uuid::Uuid);

/// Which of 65536 shards a subject's grants live in: the first 16 bits of
/// SHA-256 of its SPIFFE ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Shard(u16);

/// A random id of a grant store's dataset. Every credential carries the
/// epoch it was minted under; when the dataset is lost and a new epoch
/// starts, everything minted before is no longer live.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Epoch(String);

/// Where a grant is in its life: `Pending` → `Active` → `Completed` or
/// `Revoked`; or `Pending` → `Denied`. (A grant that expires is dropped.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GrantState {
    /// Waiting for approvals; nothing can be minted under it yet.
    Pending,
    /// An approver denied it; nothing can be minted under it.
    Denied,
    /// Credentials under it are live until they expire.
    Active,
    /// Its owner said the task is done; nothing under it is live.
    Completed,
    /// An admin or its owner revoked it; nothing under it is live.
    Revoked,
}

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
    /// The grant this one was delegated from, if any. Ending a grant ends
    /// every grant delegated from it, transitively.
    pub parent: Option<GrantId>,
    /// Why the subject asked for it.
    pub justification: String,
    /// The change or incident ticket it was requested under, if any.
    pub ticket: String,
    /// When the grant was created.
    pub created_at: SystemTime,
    /// When the grant, and every credential under it, expires.
    pub expires_at: SystemTime,
    /// Active, completed or revoked.
    pub state: GrantState,
    /// Why it ended, when it has.
    pub end_reason: Option<String>,
    /// The store epoch it was created under.
    pub epoch: Epoch,
    /// Whether it was issued on the break-glass path.
    pub break_glass: bool,
    /// Whether its credentials carry a per-task SPIFFE ID (the subject's
    /// with `/task/<task>` appended).
    pub per_task: bool,
    /// The lifetime granted; a pending grant's expiry is its request's, and
    /// approval starts this lifetime.
    pub ttl: Duration,
    /// Who approved it, in order.
    pub approvals: Vec<ApprovalRecord>,
    /// The decision that created it: its inputs and the rules that
    /// matched, as JSON (see `policy::Explanation`).
    pub decision: String,
    /// Where it sits in a delegation chain, if it was delegated.
    pub delegation: Option<Delegation>,
}

/// How deep a delegation chain may be, and be followed.
pub const MAX_DELEGATION_DEPTH: usize = 8;

/// How a delegated grant descends from the grant its owner delegated it
/// from. Its credentials carry their own SPIFFE ID, one path step below
/// the parent's (`<parent's ID>/sub/<name>`), and name every ancestor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delegation {
    /// The SPIFFE ID credentials under this grant carry.
    pub spiffe_id: SpiffeId,
    /// Its ancestors, parent first, root last: who delegated to whom.
    pub chain: Vec<Ancestor>,
}

/// One grant up a delegation chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ancestor {
    /// The ancestor grant.
    pub grant_id: GrantId,
    /// The SPIFFE ID its credentials carry: the actor that delegated.
    pub spiffe_id: SpiffeId,
}

impl Delegation {
    /// How many delegations separate the grant from its root (1 for a
    /// child of an undelegated grant).
    pub fn depth(&self) -> usize {
        self.chain.len()
    }

    /// Whether `id` is one of the grant's ancestors.
    pub fn descends_from(&self, id: GrantId) -> bool {
        self.chain.iter().any(|ancestor| ancestor.grant_id == id)
    }
}

/// One approval of a pending grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRecord {
    /// The attested approver.
    pub approver: SpiffeId,
    /// When.
    pub at: SystemTime,
    /// What the approver said (may be empty).
    pub comment: String,
}

/// How a credential is identified. Both forms embed the grant id, so a
/// credential id alone leads to its grant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CredentialId {
    /// An X.509-SVID, by serial number: 20 bytes, lowercase hex; byte 0 is
    /// random and positive, bytes 1 to 16 the grant id, the rest random.
    X509Serial(String),
    /// A JWT-SVID, by `jti`: the grant id as 32 hex digits, `.`, then 8
    /// random hex digits.
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
    /// Whether it was revoked on its own (its grant may still be active).
    pub revoked: bool,
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
    /// A fresh random grant id in `shard`.
    pub fn generate(shard: Shard) -> Self {
        let mut bytes = uuid::Uuid::new_v4().into_bytes();
        bytes[..2].copy_from_slice(&shard.0.to_be_bytes());
        Self(uuid::Uuid::from_bytes(bytes))
    }

    /// Parses a grant id (a UUID, hyphenated or not).
    pub fn parse(text: &str) -> Option<Self> {
        uuid::Uuid::try_parse(text).ok().map(Self)
    }

    /// The shard of the grant's subject.
    pub fn shard(&self) -> Shard {
        let bytes = self.0.as_bytes();
        Shard(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    /// The id as 32 lowercase hex digits.
    pub fn simple(&self) -> String {
        self.0.simple().to_string()
    }

    /// The 16 bytes of the id.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
}

impl fmt::Display for GrantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

// === impl Shard ===

impl Shard {
    /// The shard of `subject`.
    pub fn of(subject: &SpiffeId) -> Self {
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, subject.as_str().as_bytes());
        let bytes = digest.as_ref();
        Self(u16::from_be_bytes([bytes[0], bytes[1]]))
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}", self.0)
    }
}

// === impl Epoch ===

impl Epoch {
    /// A fresh random epoch.
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string()[..16].to_owned())
    }

    /// An epoch read back from storage or a credential.
    pub fn from_string(text: String) -> Self {
        Self(text)
    }

    /// The epoch as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl GrantState ===

impl GrantState {
    /// The state's name as shown to users.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Denied => "denied",
            Self::Active => "active",
            Self::Completed => "completed",
            Self::Revoked => "revoked",
        }
    }
}

// === impl CredentialId ===

impl CredentialId {
    /// A fresh X.509 serial under `grant`; returns the id and the serial's
    /// 20 bytes.
    pub fn new_x509(grant: GrantId) -> (Self, [u8; 20]) {
        let random = uuid::Uuid::new_v4().into_bytes();
        let mut serial = [0u8; 20];
        // Positive and exactly 20 octets: RFC 5280's maximum.
        serial[0] = (random[0] & 0x7f).max(1);
        serial[1..17].copy_from_slice(grant.as_bytes());
        serial[17..].copy_from_slice(&random[1..4]);
        let hex: String = serial.iter().map(|byte| format!("{byte:02x}")).collect();
        (Self::X509Serial(hex), serial)
    }

    /// A fresh `jti` under `grant`.
    pub fn new_jwt(grant: GrantId) -> Self {
        let random = uuid::Uuid::new_v4().simple().to_string();
        Self::JwtId(format!("{}.{}", grant.0.simple(), &random[..8]))
    }

    /// Parses a credential id as shown by jitid: an X.509 serial (40 hex
    /// digits, colons allowed) or a `jti` (32 hex digits, `.`, 8 hex
    /// digits). An `x509:` or `jwt:` prefix is accepted.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text
            .strip_prefix("x509:")
            .or_else(|| text.strip_prefix("jwt:"))
            .unwrap_or(text)
            .to_ascii_lowercase();
        let id = match text.split_once('.') {
            Some((grant, random)) => {
                let hex = |part: &str, len| {
                    part.len() == len && part.chars().all(|c| c.is_ascii_hexdigit())
                };
                if !hex(grant, 32) || !hex(random, 8) {
                    return None;
                }
                Self::JwtId(text)
            }
            None => {
                let serial = text.replace(':', "");
                if serial.len() != 40 || !serial.chars().all(|c| c.is_ascii_hexdigit()) {
                    return None;
                }
                Self::X509Serial(serial)
            }
        };
        id.grant_id().map(|_| id)
    }

    /// The grant the credential was minted under.
    pub fn grant_id(&self) -> Option<GrantId> {
        match self {
            Self::X509Serial(hex) => hex.get(2..34).and_then(GrantId::parse),
            Self::JwtId(jti) => jti.get(..32).and_then(GrantId::parse),
        }
    }

    /// The id without its kind.
    pub fn value(&self) -> &str {
        match self {
            Self::X509Serial(value) | Self::JwtId(value) => value,
        }
    }
}

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

    #[test]
    fn ids_lead_to_their_grant_and_shard() {
        let subject = SpiffeId::new("spiffe://example.org/ci/runner").unwrap();
        let shard = Shard::of(&subject);
        let grant = GrantId::generate(shard);
        assert_eq!(grant.shard(), shard);
        assert_eq!(GrantId::parse(&grant.to_string()), Some(grant));

        let (serial, bytes) = CredentialId::new_x509(grant);
        assert!(bytes[0] > 0 && bytes[0] < 0x80);
        assert_eq!(serial.grant_id(), Some(grant));
        assert_eq!(CredentialId::parse(serial.value()), Some(serial.clone()));
        let colons: Vec<String> = bytes.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(CredentialId::parse(&colons.join(":")), Some(serial));

        let jti = CredentialId::new_jwt(grant);
        assert_eq!(jti.grant_id(), Some(grant));
        assert_eq!(
            CredentialId::parse(&format!("jwt:{}", jti.value())),
            Some(jti)
        );
        assert_eq!(CredentialId::parse("nonsense"), None);
    }
}
