//! Exit codes, in one place: the errors that stand for an outcome rather
//! than a failure, and the mapping of every error to its code.
//!
//! Exit codes: 0 success; 1 error; 2 usage; 3 the server refused the caller
//! (unauthenticated or permission denied); 4 the server found the request
//! invalid; 5 the server is unreachable or unavailable; 6 `verify` found the
//! credential not valid (or `audit verify` a broken chain, or `audit grant` a
//! `Verify` that answered VALID after the grant ended, or `revocation
//! status` a relying party overdue); 7 the named grant or credential does
//! not exist (or the audit trail holds nothing about it); 8 the grant is
//! not in a state that allows it (pending, denied, ended) or the
//! entitlement needs approval first. `exec` exits with its command's status
//! once the command ran (see `cli/exec.rs`).

use jitid::client::ClientError;

/// `verify` found the credential not valid.
#[derive(Debug, thiserror::Error)]
#[error("credential is {status}: {reason}")]
pub(crate) struct NotValid {
    pub(crate) status: &'static str,
    pub(crate) reason: String,
}

/// `audit verify` found the chain broken.
#[derive(Debug, thiserror::Error)]
#[error("audit trail broken: {0}")]
pub(crate) struct ChainBroken(pub(crate) String);

/// `fetch --wait` or `policy explain` ended in a refusal.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Refused(pub(crate) String);

/// `audit grant` found a `Verify` that answered VALID after the grant
/// ended.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct NotRemoved(pub(crate) String);

/// The trail holds nothing about what was asked.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct NothingFound(pub(crate) String);

/// A relying party has not applied a revocation within the bound.
#[derive(Debug, thiserror::Error)]
#[error("{0} relying part(ies) overdue")]
pub(crate) struct Overdue(pub(crate) usize);

/// Maps an error to the documented exit codes.
pub(crate) fn exit_code(error: &anyhow::Error) -> u8 {
    if error.chain().any(|e| {
        e.is::<NotValid>() || e.is::<ChainBroken>() || e.is::<NotRemoved>() || e.is::<Overdue>()
    }) {
        return 6;
    }
    if error.chain().any(|e| e.is::<NothingFound>()) {
        return 7;
    }
    if error.chain().any(|e| e.is::<Refused>()) {
        return 3;
    }
    let client_error = error.chain().find_map(|e| e.downcast_ref::<ClientError>());
    match client_error {
        Some(ClientError::Connect { .. }) => 5,
        Some(ClientError::Status { code, .. }) => match code {
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => 3,
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => 4,
            tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::ResourceExhausted => 5,
            tonic::Code::NotFound => 7,
            tonic::Code::FailedPrecondition => 8,
            _ => 1,
        },
        _ => 1,
    }
}
