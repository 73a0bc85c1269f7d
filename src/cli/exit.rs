//! Exit codes, in one place: the errors that stand for an outcome rather
//! than a failure, and the mapping of every error to its code.
//!
//! Exit codes: 0 success; 1 error; 2 usage (clap's, and a missing `--ca`
//! or `--cert`/`--key`); 3 the server refused the caller
//! (unauthenticated or permission denied); 4 the server found the request
//! invalid; 5 the server is unreachable or unavailable; 6 `verify` found the
//! credential not valid (or `audit verify` a broken chain, or `audit grant` a
//! `Verify` that answered VALID after the grant ended, or `revocation
//! status` a relying party overdue); 7 the named grant or credential does
//! not exist (or the audit trail holds nothing about it); 8 the grant is
//! not in a state that allows it (pending, denied, ended) or the
//! entitlement needs approval first. `exec` exits with its command's status
//! once the command ran (see `cli/exec.rs`).
//!
//! A verdict (`verify`'s REVOKED, ...) is printed on stdout and not said
//! again on stderr ([`is_verdict`]); every other error is one
//! `jitid: error:` line ([`message`]). A closed stdout is not an error:
//! output stops and the command exits with its own code (see
//! `cli/output.rs`).

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

/// Something the command needs besides the server is out of reach (a CI
/// platform's token endpoint): exit 5, as an unavailable server.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Unavailable(pub(crate) String);

/// The command line is wrong (a missing flag clap cannot see): exit 2,
/// as clap's own usage errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Usage(pub(crate) String);

/// Maps an error to the documented exit codes.
pub(crate) fn exit_code(error: &anyhow::Error) -> u8 {
    if error.chain().any(|e| {
        e.is::<NotValid>() || e.is::<ChainBroken>() || e.is::<NotRemoved>() || e.is::<Overdue>()
    }) {
        return 6;
    }
    if error.chain().any(|e| e.is::<Usage>()) {
        return 2;
    }
    if error.chain().any(|e| e.is::<NothingFound>()) {
        return 7;
    }
    if error.chain().any(|e| e.is::<Refused>()) {
        return 3;
    }
    if error.chain().any(|e| e.is::<Unavailable>()) {
        return 5;
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

/// Whether the error is a verdict the command printed as its output
/// already (`verify`'s REVOKED, EXPIRED, ...): it sets the exit code and
/// is not said again on stderr.
pub(crate) fn is_verdict(error: &anyhow::Error) -> bool {
    error.chain().any(|e| e.is::<NotValid>())
}

/// The error as one line: its causes joined by `: `, each said once (a
/// cause whose text its parent already includes is skipped), and, for the
/// errors a new user meets, what to do.
pub(crate) fn message(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let part = cause.to_string();
        let part = part.trim();
        if part.is_empty() || text.contains(part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(part);
    }
    let text = text.replace('\n', " ");
    match hint(error, &text) {
        Some(hint) => format!("{text}; {hint}"),
        None => text,
    }
}

/// What to do about a common error, from its text and type.
fn hint(error: &anyhow::Error, text: &str) -> Option<&'static str> {
    let connect = error
        .chain()
        .filter_map(|e| e.downcast_ref::<ClientError>())
        .any(|e| matches!(e, ClientError::Connect { .. }));
    if text.contains("UnknownIssuer") || text.contains("unknown issuer") {
        return Some(
            "the server's certificate is not signed by the roots in --ca (JITID_CA): \
             give jitid's root certificate (the JITID_CA that `jitid dev` prints, or the root.pem `jitid ca init` wrote)",
        );
    }
    if connect && text.contains("Connection refused") {
        return Some("is the server running there? check --server (JITID_SERVER)");
    }
    if connect {
        return Some("check --server (JITID_SERVER) and that the server is up");
    }
    None
}
