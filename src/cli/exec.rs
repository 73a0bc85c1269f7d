//! `jitid exec`: runs one command (a CI job's step) with credentials for
//! exactly one task: fetched into a private directory before it starts,
//! renewed while it runs, and ended, with the directory wiped, when it
//! exits, whatever its status.
//!
//! The command exits first; then the key is zeroed and the directory
//! removed (local and fast, so it happens even if a CI runner kills `exec`
//! soon after), and last the task is completed at the issuer, which ends
//! every grant of the task and so revokes every credential fetched here.
//! `exec` exits with the command's status (128 + N when a signal N killed
//! it, as shells do). If the task cannot be completed, it says so on
//! stderr, with what stays valid until when, and exits non-zero.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::{ArgGroup, Args};
use jitid::client::{Client, ClientError, GrantInfo, JwtSvid, SvidRequest, X509Svid};
use jitid::keyfile::{self, KEY_MODE};
use jitid::proto::v1 as pb;
use rustix::process::{Pid, Signal};
use tokio::signal::unix::SignalKind;
use tokio::sync::mpsc;

use super::args::{ApprovalArgs, ConnArgs, RequestArgs, connect_attested};
use super::fetch::{BUNDLE_FILE, KEY_FILE, SVID_FILE, approved_request, write_svid_files};
use super::oidc::TokenArgs;

/// The variables that attest `jitid exec` itself, kept from its command.
const ATTESTATION_VARIABLES: &[&str] = &["JITID_CERT", "JITID_KEY", "JITID_OIDC_TOKEN_FILE"];
/// With `--github-actions`, what lets a step request ID tokens: kept from
/// the command too, or it could request one and mint beyond its task.
const GITHUB_TOKEN_VARIABLES: &[&str] = &[
    "ACTIONS_ID_TOKEN_REQUEST_URL",
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
];

#[derive(Args)]
#[command(group(
    ArgGroup::new("what").args(["entitlement", "actions"]).required(true).multiple(true)
))]
pub(crate) struct ExecArgs {
    #[command(flatten)]
    request: RequestArgs,
    #[command(flatten)]
    approval: ApprovalArgs,
    /// Also fetch a JWT-SVID for this audience (repeat for several), under
    /// the X.509-SVID's grant; its path is in JITID_JWT.
    #[arg(long = "jwt-audience", value_name = "AUDIENCE")]
    jwt_audiences: Vec<String>,
    #[command(flatten)]
    conn: ConnArgs,
    #[command(flatten)]
    token: TokenArgs,
    /// The command to run and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

/// The JWT-SVID, in the credential directory (0600: a bearer token).
const JWT_FILE: &str = "jwt_svid.token";

/// Renewal never comes sooner than this after an issuance, so a credential
/// that is about to expire (or has) does not make a busy loop.
const MIN_RENEW: Duration = Duration::from_secs(1);
/// The first wait after a failed renewal; it doubles up to [`MAX_RETRY`].
const MIN_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between renewal attempts that fail.
const MAX_RETRY: Duration = Duration::from_secs(30);
/// How many times completion is tried when the issuer is unavailable.
const COMPLETE_ATTEMPTS: u32 = 3;
/// How long completion may take in all: a CI runner that cancels a job
/// gives its processes a few seconds before it kills them.
const COMPLETE_DEADLINE: Duration = Duration::from_secs(10);

/// The signals `exec` passes on to its command instead of dying of them,
/// so the command can clean up and its status decides the task's outcome.
const FORWARDED: [(SignalKind, Signal); 6] = [
    (SignalKind::interrupt(), Signal::INT),
    (SignalKind::terminate(), Signal::TERM),
    (SignalKind::hangup(), Signal::HUP),
    (SignalKind::quit(), Signal::QUIT),
    (SignalKind::user_defined1(), Signal::USR1),
    (SignalKind::user_defined2(), Signal::USR2),
];

/// Runs `jitid exec`. An error before the command starts is returned (and
/// mapped to an exit code like `fetch`'s); once a grant exists, every path
/// ends its task and returns the exit code.
pub(crate) async fn run(args: ExecArgs) -> anyhow::Result<ExitCode> {
    // Listen first: from here on these signals are ours to forward, and a
    // Ctrl-C during the fetch stops the command from being started.
    let mut signals = listen_for_signals()?;
    let client = connect_attested(&args.conn, &args.token).await?;
    let by_token = args.token.oidc_token_file.is_some() || args.token.github_actions;
    let request = args.request.to_svid_request(&args.approval);
    // With --wait, the grant is requested and approved before anything
    // runs; the first credentials and every renewal are minted under it.
    let mut request = tokio::select! {
        approved = approved_request(&client, request, &args.approval) => approved?,
        Some(signal) = signals.recv() => {
            eprintln!(
                "jitid: signal {} while waiting for approval; not running the command \
                 (withdraw the pending request with `jitid revoke --grant ID`)",
                signal.as_raw()
            );
            return Ok(ExitCode::from(u8::try_from(128 + signal.as_raw()).unwrap_or(1)));
        }
    };
    let mut dir = CredentialDir::create()?;
    let first = match fetch(&client, &request, &args.jwt_audiences).await {
        Ok(issued) => issued,
        Err(failed) => {
            if let Some(grant) = &failed.made {
                // The X.509-SVID was issued but is not used: its grant
                // ends here with the task.
                let ledger = Ledger::new(grant);
                finish(&client, &ledger, TaskOutcome::Failed).await;
            }
            return Err(failed.source.into());
        }
    };
    if request.break_glass || by_token {
        // One break-glass grant, reviewed once, or the one grant a token
        // makes: everything after mints under it.
        request = SvidRequest::under_grant(&first.svid.grant.grant_id);
    } else if request.grant_id.is_empty() {
        // Renewals and completion name the task, also one the server made up.
        request.task_id.clone_from(&first.svid.grant.task_id);
    }
    let mut ledger = Ledger::new(&first.svid.grant);

    let ended = supervise(
        &args,
        Renewal {
            client: client.clone(),
            request,
            audiences: args.jwt_audiences.clone(),
        },
        &mut dir,
        &mut ledger,
        &mut signals,
        first,
    )
    .await;

    let mut code = ended.exit_code();
    if let Err(error) = dir.wipe() {
        eprintln!(
            "jitid: error: could not wipe {}: {error}; remove it by hand, it holds a private key",
            dir.path.display()
        );
        if code == 0 {
            code = 1;
        }
    }
    if !finish(&client, &ledger, ended.outcome()).await && code == 0 {
        code = 5;
    }
    Ok(ExitCode::from(code))
}

/// How the command ended, or why it never ran.
enum Ended {
    /// It ran and exited, or a signal killed it.
    Ran(ExitStatus),
    /// It never ran (or could not be waited for); `exec` exits with this.
    NotRun(u8),
}

/// The task's outcome, as the issuer will record it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TaskOutcome {
    /// The command succeeded.
    Completed,
    /// The command failed, was killed, or never ran.
    Failed,
}

/// One round of credentials: an X.509-SVID and, when audiences were asked
/// for, a JWT-SVID under the same grant.
struct Issued {
    svid: X509Svid,
    jwt: Option<JwtSvid>,
}

/// A fetch that failed, and the grant it had made already: the JWT-SVID
/// comes second, so its failure leaves the X.509-SVID's grant behind.
struct FetchFailed {
    source: ClientError,
    made: Option<GrantInfo>,
}

/// What a renewal asks for, again and again: the same entitlement,
/// actions and task, decided anew by the policy each time.
struct Renewal {
    client: Client,
    request: SvidRequest,
    audiences: Vec<String>,
}

/// The task and the grants fetched under it, for the report when the task
/// cannot be ended.
struct Ledger {
    task: String,
    grants: Vec<String>,
    /// The latest expiry of any credential fetched.
    valid_until: SystemTime,
}

/// The private directory (0700) the command reads its credentials from.
struct CredentialDir {
    path: PathBuf,
    /// Handles on the secret files the last renewal replaced. They are
    /// zeroed at the next renewal or at the wipe rather than at once, so a
    /// command that opened one just before it was replaced reads a key,
    /// not zeros.
    retired: Vec<File>,
    wiped: bool,
}

// === impl Ended ===

impl Ended {
    fn outcome(&self) -> TaskOutcome {
        match self {
            Self::Ran(status) if status.success() => TaskOutcome::Completed,
            _ => TaskOutcome::Failed,
        }
    }

    /// The command's status as a shell reports it: its exit code, or
    /// 128 + N when signal N killed it.
    fn exit_code(&self) -> u8 {
        match self {
            Self::Ran(status) => match (status.code(), status.signal()) {
                (Some(code), _) => u8::try_from(code).unwrap_or(1),
                (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(1),
                (None, None) => 1,
            },
            Self::NotRun(code) => *code,
        }
    }
}

// === impl TaskOutcome ===

impl TaskOutcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }
}

// === impl Ledger ===

impl Ledger {
    fn new(grant: &GrantInfo) -> Self {
        Self {
            task: grant.task_id.clone(),
            grants: vec![grant.grant_id.clone()],
            valid_until: grant.expires_at,
        }
    }

    fn record(&mut self, grant: &GrantInfo) {
        self.grants.push(grant.grant_id.clone());
        self.valid_until = self.valid_until.max(grant.expires_at);
    }
}

// === impl CredentialDir ===

impl CredentialDir {
    /// Creates a new directory under the temp dir (`TMPDIR`), mode 0700.
    /// It must not exist yet, so nobody else can have prepared it.
    fn create() -> anyhow::Result<Self> {
        let path =
            std::env::temp_dir().join(format!("jitid-exec-{}", uuid::Uuid::new_v4().simple()));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .with_context(|| {
                format!("cannot create the credential directory {}", path.display())
            })?;
        let dir = Self {
            path,
            retired: Vec::new(),
            wiped: false,
        };
        // The umask applies to `mode`; set exactly 0700 whatever it is.
        fs::set_permissions(&dir.path, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot set the mode of {}", dir.path.display()))?;
        Ok(dir)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes (or atomically replaces) every file of `issued`: key, chain,
    /// bundle, then the JWT-SVID.
    fn write(&mut self, issued: &Issued) -> anyhow::Result<()> {
        let replaced: Vec<File> = [KEY_FILE, JWT_FILE]
            .iter()
            .filter_map(|name| open_regular(&self.file(name)).ok().flatten())
            .collect();
        write_svid_files(&self.path, &issued.svid)?;
        if let Some(jwt) = &issued.jwt {
            keyfile::write_replace(&self.file(JWT_FILE), jwt.token.as_bytes(), KEY_MODE)?;
        }
        // Now no path leads to the files `replaced` holds: they retire, and
        // those the previous renewal retired are zeroed.
        for file in std::mem::replace(&mut self.retired, replaced) {
            if let Err(error) = zero(&file) {
                eprintln!("jitid: warning: could not zero a replaced key: {error}");
            }
        }
        Ok(())
    }

    /// Overwrites the secrets with zeros, then removes the directory and
    /// whatever the command left in it. Best effort against the disk: a
    /// copy-on-write or journaling file system may keep old blocks.
    fn wipe(&mut self) -> io::Result<()> {
        if self.wiped {
            return Ok(());
        }
        self.wiped = true;
        let mut result = Ok(());
        for file in self.retired.drain(..) {
            result = result.and(zero(&file));
        }
        for name in [KEY_FILE, JWT_FILE] {
            result = result.and(match open_regular(&self.file(name)) {
                Ok(Some(file)) => zero(&file),
                Ok(None) => Ok(()),
                Err(error) => Err(error),
            });
        }
        result.and(fs::remove_dir_all(&self.path))
    }
}

impl Drop for CredentialDir {
    /// Error paths wipe too; `run` wipes explicitly to report failures.
    fn drop(&mut self) {
        if let Err(error) = self.wipe() {
            eprintln!(
                "jitid: error: could not wipe {}: {error}",
                self.path.display()
            );
        }
    }
}

/// Opens `path` for writing if it is a regular file (`None` if missing),
/// never through a link the command may have put in its place: zeroing
/// must not reach a file outside the directory.
fn open_regular(path: &Path) -> io::Result<Option<File>> {
    let before = match fs::symlink_metadata(path) {
        Ok(metadata) if metadata.is_file() => metadata,
        Ok(_) => return Ok(None),
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let file = OpenOptions::new().write(true).open(path)?;
    // Swapped for a link between the two looks: not the file we checked.
    let opened = file.metadata()?;
    Ok((opened.dev() == before.dev() && opened.ino() == before.ino()).then_some(file))
}

/// Overwrites a file's contents with zeros, in place.
fn zero(file: &File) -> io::Result<()> {
    let length = usize::try_from(file.metadata()?.len()).unwrap_or(usize::MAX);
    file.write_all_at(&vec![0; length], 0)?;
    file.sync_all()
}

/// Fetches an X.509-SVID for `request` and, for `audiences`, a JWT-SVID
/// under the same grant: one grant per round, ended with the task.
async fn fetch(
    client: &Client,
    request: &SvidRequest,
    audiences: &[String],
) -> Result<Issued, FetchFailed> {
    let svid = client
        .fetch_x509_svid(request)
        .await
        .map_err(|source| FetchFailed { source, made: None })?;
    let jwt = if audiences.is_empty() {
        None
    } else {
        let under_grant = SvidRequest::under_grant(&svid.grant.grant_id);
        match client.fetch_jwt_svid(&under_grant, audiences).await {
            Ok(jwt) => Some(jwt),
            Err(source) => {
                return Err(FetchFailed {
                    source,
                    made: Some(svid.grant),
                });
            }
        }
    };
    Ok(Issued { svid, jwt })
}

/// Writes the first credentials, starts the command with their paths in
/// its environment, and until it exits forwards signals to it and writes
/// renewed credentials. Reports its own failures on stderr.
async fn supervise(
    args: &ExecArgs,
    renewal: Renewal,
    dir: &mut CredentialDir,
    ledger: &mut Ledger,
    signals: &mut mpsc::UnboundedReceiver<Signal>,
    first: Issued,
) -> Ended {
    if let Err(error) = dir.write(&first) {
        eprintln!("jitid: error: {}", super::exit::message(&error));
        return Ended::NotRun(1);
    }
    if let Ok(signal) = signals.try_recv() {
        eprintln!(
            "jitid: signal {} before the command started; not running it",
            signal.as_raw()
        );
        return Ended::NotRun(u8::try_from(128 + signal.as_raw()).unwrap_or(1));
    }
    let Some((program, program_args)) = args.command.split_first() else {
        eprintln!("jitid: error: no command to run after `--`");
        return Ended::NotRun(2);
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(program_args)
        .env("JITID_SVID", dir.file(SVID_FILE))
        .env("JITID_SVID_KEY", dir.file(KEY_FILE))
        .env("JITID_BUNDLE", dir.file(BUNDLE_FILE))
        .env("JITID_TASK", &ledger.task)
        .env("JITID_GRANT", &first.svid.grant.grant_id);
    // The command gets its task's credentials, never what attests exec
    // itself: with those it could mint beyond its task, after it.
    for name in ATTESTATION_VARIABLES {
        command.env_remove(name);
    }
    if args.token.github_actions {
        for name in GITHUB_TOKEN_VARIABLES {
            command.env_remove(name);
        }
    }
    if first.jwt.is_some() {
        command.env("JITID_JWT", dir.file(JWT_FILE));
    } else {
        // Never hand down a JWT path from an outer environment.
        command.env_remove("JITID_JWT");
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            eprintln!("jitid: error: cannot run {program:?}: {error}");
            // As env(1) and shells do.
            return Ended::NotRun(match error.kind() {
                io::ErrorKind::NotFound => 127,
                io::ErrorKind::PermissionDenied => 126,
                _ => 1,
            });
        }
    };
    // The pid stays the child's until it is reaped, which only `wait`
    // below does, and no signal is forwarded after that.
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(Pid::from_raw);
    announce(
        &first.svid.grant,
        &format!("task {}: running {program:?} with", ledger.task),
        dir,
    );

    let (renewed_sender, mut renewed) = mpsc::channel(1);
    let renewer = tokio::spawn(renew(renewal, first.svid.grant.expires_at, renewed_sender));
    let ended = loop {
        tokio::select! {
            status = child.wait() => break match status {
                Ok(status) => Ended::Ran(status),
                Err(error) => {
                    eprintln!("jitid: error: lost track of the command: {error}");
                    Ended::NotRun(1)
                }
            },
            Some(signal) = signals.recv() => {
                if let Some(pid) = pid
                    && let Err(error) = rustix::process::kill_process(pid, signal)
                {
                    eprintln!("jitid: warning: could not forward signal {}: {error}", signal.as_raw());
                }
            }
            Some(issued) = renewed.recv() => {
                ledger.record(&issued.svid.grant);
                match dir.write(&issued) {
                    Ok(()) => announce(&issued.svid.grant, "renewed", dir),
                    Err(error) => eprintln!(
                        "jitid: warning: could not write the renewed credentials: {}; the command keeps the current ones",
                        super::exit::message(&error)
                    ),
                }
            }
        }
    };
    // A renewal in flight is dropped: its key never left this process, so
    // its credential is of use to nobody, and completion ends its grant.
    renewer.abort();
    ended
}

/// One line on stderr about credentials just written.
fn announce(grant: &GrantInfo, what: &str, dir: &CredentialDir) {
    eprintln!(
        "jitid: {what} grant {} for {}, valid until {}, in {}",
        grant.grant_id,
        grant.spiffe_id,
        humantime::format_rfc3339_seconds(grant.expires_at),
        dir.path.display()
    );
}

/// Fetches fresh credentials at 70% of the current ones' lifetime and
/// sends them to be written. A failure (a refusal, or the issuer out of
/// reach) keeps the current files, warns, and tries again with backoff.
/// Runs until aborted or the receiver is gone, or until a renewal lives
/// no longer than what it replaces: under one grant (break-glass, or the
/// grant an OIDC token made) credentials end with the grant, so renewing
/// again would only mint more of them.
async fn renew(renewal: Renewal, mut expires_at: SystemTime, renewed: mpsc::Sender<Issued>) {
    let mut wait = renew_in(remaining(expires_at));
    let mut failures = 0;
    loop {
        tokio::time::sleep(wait).await;
        match fetch(&renewal.client, &renewal.request, &renewal.audiences).await {
            Ok(issued) => {
                failures = 0;
                let last = issued.svid.grant.expires_at <= expires_at;
                expires_at = issued.svid.grant.expires_at;
                wait = renew_in(remaining(expires_at));
                if renewed.send(issued).await.is_err() || last {
                    if last {
                        eprintln!(
                            "jitid: the credentials end with their grant at {}; no further renewal",
                            humantime::format_rfc3339_seconds(expires_at)
                        );
                    }
                    return;
                }
            }
            Err(failed) => {
                failures += 1;
                wait = retry_in(failures);
                let until = humantime::format_rfc3339_seconds(expires_at);
                let validity = if remaining(expires_at).is_zero() {
                    format!("which expired at {until}")
                } else {
                    format!("valid until {until}")
                };
                eprintln!(
                    "jitid: warning: renewing the credentials of task {} failed: {}; the command keeps the current ones, {validity}; trying again in {}s",
                    renewal.request.task_id,
                    failed.source,
                    wait.as_secs()
                );
            }
        }
    }
}

fn remaining(expires_at: SystemTime) -> Duration {
    expires_at
        .duration_since(SystemTime::now())
        .unwrap_or_default()
}

/// When to renew credentials that have `remaining` to live: at 70% of it
/// (as linkerd does), leaving 30% to ride out a slow or refused renewal.
fn renew_in(remaining: Duration) -> Duration {
    (remaining * 7 / 10).max(MIN_RENEW)
}

/// How long to wait after the `failures`-th failed renewal in a row.
fn retry_in(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(5);
    (MIN_RETRY * 2u32.pow(doublings)).min(MAX_RETRY)
}

/// Ends the task (retrying briefly while the issuer is unavailable) and
/// reports it. If it cannot, says so loudly, with the grants and until
/// when their credentials stay valid. Returns whether the task ended.
async fn finish(client: &Client, ledger: &Ledger, outcome: TaskOutcome) -> bool {
    let attempts = async {
        let mut attempt = 1;
        loop {
            match end_task(client, &ledger.task, outcome).await {
                Err(error) if error.is_retryable() && attempt < COMPLETE_ATTEMPTS => {
                    tokio::time::sleep(Duration::from_millis(500) * attempt).await;
                    attempt += 1;
                }
                result => return result.map_err(|error| error.to_string()),
            }
        }
    };
    let result = tokio::time::timeout(COMPLETE_DEADLINE, attempts)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {}s", COMPLETE_DEADLINE.as_secs())));
    match result {
        Ok(ended) => {
            eprintln!(
                "jitid: task {} ended ({}): {} grant(s) completed; its credentials are revoked",
                ledger.task,
                outcome.as_str(),
                ended.len()
            );
            true
        }
        Err(error) => {
            eprintln!(
                "jitid: error: could not complete task {} at the issuer: {error}",
                ledger.task
            );
            eprintln!(
                "jitid: error: its credentials stay valid until {} unless revoked (grants {})",
                humantime::format_rfc3339_seconds(ledger.valid_until),
                ledger.grants.join(", ")
            );
            eprintln!(
                "jitid: error: end them when the issuer is back: jitid complete --task {}",
                ledger.task
            );
            false
        }
    }
}

/// Ends every grant of `task`, and so every credential fetched for it.
/// The issuer records `outcome` on the grants and in the audit trail.
async fn end_task(
    client: &Client,
    task: &str,
    outcome: TaskOutcome,
) -> Result<Vec<String>, ClientError> {
    tracing::debug!(task, outcome = outcome.as_str(), "completing the task");
    let outcome = match outcome {
        TaskOutcome::Completed => pb::TaskOutcome::Completed,
        TaskOutcome::Failed => pb::TaskOutcome::Failed,
    };
    client
        .end_task(
            pb::complete_task_request::Target::TaskId(task.to_owned()),
            outcome,
        )
        .await
}

/// Listens for the [`FORWARDED`] signals; each arrives on the channel.
fn listen_for_signals() -> anyhow::Result<mpsc::UnboundedReceiver<Signal>> {
    let (sender, receiver) = mpsc::unbounded_channel();
    for (kind, signal) in FORWARDED {
        let mut stream = tokio::signal::unix::signal(kind)
            .with_context(|| format!("cannot listen for signal {}", signal.as_raw()))?;
        let sender = sender.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() && sender.send(signal).is_ok() {}
        });
    }
    Ok(receiver)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_comes_at_seventy_percent_and_never_in_a_busy_loop() {
        for (remaining, expected) in [
            (Duration::from_secs(300), Duration::from_secs(210)),
            (Duration::from_secs(10), Duration::from_secs(7)),
            (Duration::from_millis(500), MIN_RENEW),
            (Duration::ZERO, MIN_RENEW),
        ] {
            assert_eq!(renew_in(remaining), expected, "{remaining:?}");
        }
        let waits: Vec<u64> = (1..=8).map(|n| retry_in(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        let code = |raw| Ended::Ran(ExitStatus::from_raw(raw)).exit_code();
        assert_eq!(code(0), 0);
        assert_eq!(code(7 << 8), 7);
        assert_eq!(code(9), 137, "killed by SIGKILL");
        assert_eq!(code(15), 143, "killed by SIGTERM");
        assert_eq!(
            Ended::Ran(ExitStatus::from_raw(0)).outcome(),
            TaskOutcome::Completed
        );
        assert_eq!(
            Ended::Ran(ExitStatus::from_raw(9)).outcome(),
            TaskOutcome::Failed
        );
        assert_eq!(Ended::NotRun(127).outcome(), TaskOutcome::Failed);
    }
}
