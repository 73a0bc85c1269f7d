//! What the commands print, in one place: the `--output` switch, grant
//! formatting (text and JSON), state names, timestamps and durations.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use clap::ValueEnum;
use jitid::client::GrantInfo;
use jitid::convert;
use jitid::proto::v1 as pb;
use serde_json::json;

/// Set once stdout is gone (its reader closed the pipe): from then on
/// output is dropped, as coreutils stop writing on `EPIPE`.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
/// Set when writing to stdout failed for another reason (disk full).
static STDOUT_FAILED: AtomicBool = AtomicBool::new(false);

/// Writes to stdout; what [`out!`] and [`outln!`] expand to. A closed pipe
/// is not an error: the rest of the output is dropped quietly and the
/// command goes on to exit with its own status (a `verify` that found the
/// credential revoked still exits 6 under `| head -1`). Any other write
/// error is said once on stderr and makes the command exit 1.
pub(crate) fn write_stdout(args: std::fmt::Arguments<'_>) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) || STDOUT_FAILED.load(Ordering::Relaxed) {
        return;
    }
    let mut stdout = io::stdout().lock();
    let written = stdout.write_fmt(args).and_then(|()| stdout.flush());
    settle(written);
}

/// Records how a write to stdout went.
fn settle(written: io::Result<()>) {
    match written {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
        }
        Err(error) => {
            if !STDOUT_FAILED.swap(true, Ordering::Relaxed) {
                eprintln!("jitid: error: cannot write to stdout: {error}");
            }
        }
    }
}

/// Whether stdout's reader is gone: a command that streams (`audit tail
/// --follow`) stops.
pub(crate) fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(Ordering::Relaxed)
}

/// Stdout as an [`io::Write`] with [`write_stdout`]'s rules: a closed pipe
/// drops the rest quietly; another error is said once and exits 1.
pub(crate) struct QuietStdout;

impl Write for QuietStdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !STDOUT_CLOSED.load(Ordering::Relaxed) && !STDOUT_FAILED.load(Ordering::Relaxed) {
            settle(io::stdout().lock().write_all(buf));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !STDOUT_CLOSED.load(Ordering::Relaxed) && !STDOUT_FAILED.load(Ordering::Relaxed) {
            settle(io::stdout().lock().flush());
        }
        Ok(())
    }
}

/// Whether writing to stdout failed other than by a closed pipe; the
/// command then exits 1 whatever it found.
pub(crate) fn stdout_failed() -> bool {
    STDOUT_FAILED.load(Ordering::Relaxed)
}

/// `print!` that stops quietly when stdout is closed (see
/// [`write_stdout`]).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::output::write_stdout(format_args!($($arg)*))
    };
}

/// `outln!` that stops quietly when stdout is closed (see
/// [`write_stdout`]).
macro_rules! outln {
    () => {
        $crate::cli::output::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `--output`: for people, or for programs.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Output {
    Text,
    Json,
}

/// A grant state as `grants`, `approve` and `deny` print it.
pub(crate) use jitid::convert::state_name;

/// How a completed grant's task ended: `failed` when the task was
/// completed as failed (`jitid exec` of a command that failed, `jitid
/// complete --outcome failed`), `succeeded` otherwise; `None` for a grant
/// that is not completed. The issuer records the outcome as the first word
/// of the end reason (`failed by <caller>`).
pub(crate) fn task_outcome(grant: &pb::GrantRecord) -> Option<&'static str> {
    if grant.state() != pb::GrantState::Completed {
        return None;
    }
    Some(if grant.end_reason.starts_with("failed") {
        "failed"
    } else {
        "succeeded"
    })
}

/// The state as `grants list` and `grants show` print it: a failed task's
/// grant is `completed (failed)`.
pub(crate) fn state_text(grant: &pb::GrantRecord) -> String {
    match task_outcome(grant) {
        Some("failed") => format!("{} (failed)", state_name(grant.state)),
        _ => state_name(grant.state).to_owned(),
    }
}

/// A grant state as `revocation status` prints it: the proto name,
/// lowercase (`unspecified` for an unknown value).
pub(crate) fn state_proto_name(state: i32) -> String {
    pb::GrantState::try_from(state)
        .unwrap_or_default()
        .as_str_name()
        .trim_start_matches("GRANT_STATE_")
        .to_lowercase()
}

/// RFC 3339 to the second; empty when absent or before 1970.
pub(crate) fn timestamp_text(timestamp: Option<&prost_types::Timestamp>) -> String {
    timestamp
        .and_then(convert::system_time)
        .map(|time| humantime::format_rfc3339_seconds(time).to_string())
        .unwrap_or_default()
}

/// RFC 3339 to the second; 1970 for a time before it.
pub(crate) fn timestamp(at: &prost_types::Timestamp) -> String {
    let time = convert::system_time(at).unwrap_or(SystemTime::UNIX_EPOCH);
    humantime::format_rfc3339_seconds(time).to_string()
}

/// Whole milliseconds; 0 for a negative duration.
pub(crate) fn millis(duration: prost_types::Duration) -> u64 {
    convert::std_duration(&duration)
        .map(|duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The grant a credential was minted under, as `fetch --output json`
/// prints it.
pub(crate) fn grant_json(grant: &GrantInfo) -> serde_json::Value {
    json!({
        "grant_id": grant.grant_id,
        "spiffe_id": grant.spiffe_id,
        "entitlement": grant.entitlement,
        "actions": grant.actions,
        "task_id": grant.task_id,
        "expires_at": humantime::format_rfc3339_seconds(grant.expires_at).to_string(),
    })
}

/// The grant a credential was minted under, as `fetch` prints it.
pub(crate) fn print_grant(grant: &GrantInfo) {
    outln!("spiffe id    {}", grant.spiffe_id);
    outln!("grant        {}", grant.grant_id);
    outln!("entitlement  {}", grant.entitlement);
    outln!("actions      {}", grant.actions.join(" "));
    outln!("task         {}", grant.task_id);
    outln!(
        "expires      {}",
        humantime::format_rfc3339_seconds(grant.expires_at)
    );
}

/// A grant record, as `grants`, `approve` and `deny` print it in JSON.
pub(crate) fn grant_record_json(grant: &pb::GrantRecord) -> serde_json::Value {
    let summary = grant.summary.clone().unwrap_or_default();
    json!({
        "grant_id": summary.grant_id,
        "state": state_name(grant.state),
        "outcome": task_outcome(grant),
        "end_reason": grant.end_reason,
        "spiffe_id": summary.spiffe_id,
        "entitlement": summary.entitlement,
        "actions": summary.actions,
        "task_id": summary.task_id,
        "created_at": timestamp_text(grant.created_at.as_ref()),
        "expires_at": timestamp_text(summary.expires_at.as_ref()),
        "justification": grant.justification,
        "ticket": grant.ticket,
        "break_glass": grant.break_glass,
        "approvals": grant.approvals.iter().map(|a| json!({
            "approver": a.approver,
            "at": timestamp_text(a.at.as_ref()),
            "comment": a.comment,
        })).collect::<Vec<_>>(),
        "decision": serde_json::from_str::<serde_json::Value>(&grant.decision).unwrap_or_default(),
        "credentials": grant.credentials.iter().map(|c| json!({
            "id": c.id,
            "kind": c.kind,
            "revoked": c.revoked,
            "expires_at": timestamp_text(c.expires_at.as_ref()),
        })).collect::<Vec<_>>(),
    })
}

/// One grant record in the `grants list` table.
pub(crate) fn print_grant_row(grant: &pb::GrantRecord) {
    let summary = grant.summary.clone().unwrap_or_default();
    outln!(
        "{}  {:<18}  {}  task {}  {}  expires {}",
        summary.grant_id,
        state_text(grant),
        summary.entitlement,
        summary.task_id,
        summary.spiffe_id,
        timestamp_text(summary.expires_at.as_ref()),
    );
}

/// One grant record and its credentials, as `grants show` prints it.
pub(crate) fn print_grant_record(grant: &pb::GrantRecord) {
    let summary = grant.summary.clone().unwrap_or_default();
    outln!("grant        {}", summary.grant_id);
    outln!("state        {}", state_text(grant));
    if !grant.end_reason.is_empty() {
        outln!("ended        {}", grant.end_reason);
    }
    outln!("spiffe id    {}", summary.spiffe_id);
    outln!("entitlement  {}", summary.entitlement);
    outln!("actions      {}", summary.actions.join(" "));
    outln!("task         {}", summary.task_id);
    outln!("created      {}", timestamp_text(grant.created_at.as_ref()));
    outln!(
        "expires      {}",
        timestamp_text(summary.expires_at.as_ref())
    );
    if !grant.justification.is_empty() {
        outln!("why          {}", grant.justification);
    }
    if !grant.ticket.is_empty() {
        outln!("ticket       {}", grant.ticket);
    }
    if grant.break_glass {
        outln!("break-glass  yes (reviewed after use)");
    }
    for approval in &grant.approvals {
        outln!(
            "approved by  {} at {}",
            approval.approver,
            timestamp_text(approval.at.as_ref())
        );
    }
    if let Ok(decision) = serde_json::from_str::<serde_json::Value>(&grant.decision) {
        outln!(
            "decision     {}",
            decision["outcome"].as_str().unwrap_or("")
        );
        for rule in decision["matched"].as_array().into_iter().flatten() {
            outln!("  matched    {}", rule.as_str().unwrap_or(""));
        }
    }
    for credential in &grant.credentials {
        outln!(
            "credential   {} {}{} expires {}",
            credential.kind,
            credential.id,
            if credential.revoked { " (revoked)" } else { "" },
            timestamp_text(credential.expires_at.as_ref()),
        );
    }
}

/// A `Verify` answer's status as `verify` prints it.
pub(crate) fn verify_status_name(status: i32) -> &'static str {
    match pb::VerifyStatus::try_from(status) {
        Ok(pb::VerifyStatus::Valid) => "VALID",
        Ok(pb::VerifyStatus::Revoked) => "REVOKED",
        Ok(pb::VerifyStatus::Expired) => "EXPIRED",
        Ok(pb::VerifyStatus::Unknown) => "UNKNOWN",
        Ok(pb::VerifyStatus::Invalid) => "INVALID",
        _ => "UNSPECIFIED",
    }
}
