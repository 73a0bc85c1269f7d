//! `jitid audit`: verify the chain (from a JSON-lines file or Redis), and
//! read the trail through `QueryAudit`: tail, search, export, report, and
//! the life of one grant.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use jitid::audit::file::{Seal, check_tail, read_head, seals};
use jitid::audit::query::{Ending, GrantLife, Report};
use jitid::audit::upkeep::Checkpoint;
use jitid::audit::{AuditEvent, AuditLog, ChainBreak, Head, RedisAuditLog, verify_chain};
use jitid::ca::{Authority, JwtAuthority, TrustBundle};
use jitid::client::{AuditEventsExt as _, checked_event};
use jitid::config::{Config, StoreConfig};
use jitid::proto::v1 as pb;
use jitid::store::RedisStore;

use super::args::{ConnArgs, connect};
use super::exit::{ChainBroken, NotRemoved, NothingFound};
use super::output::{Output, QuietStdout, stdout_closed};
use serde_json::json;

#[derive(Subcommand)]
pub(crate) enum AuditCommand {
    /// Walk the hash chain and report the first break (exit 6), from a
    /// JSON-lines file or from the Redis trail of a config's store. A trail
    /// cut by retention starts at a checkpoint whose signature is checked
    /// with the JWT keys of --bundle, or of the config's CA.
    Verify {
        /// A JSON-lines export or sink file.
        #[arg(long, conflicts_with = "config")]
        file: Option<PathBuf>,
        /// A server config whose store is Redis.
        #[arg(long, env = "JITID_CONFIG")]
        config: Option<PathBuf>,
        /// The JWK Set of the trust domain's audit key (as `jitid ca
        /// audit-key` prints it) that checks checkpoints and head lines.
        #[arg(long)]
        bundle: Option<PathBuf>,
    },
    /// The newest events (admins and auditors).
    Tail {
        /// How many.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: u64,
        /// Then keep printing new events as they are appended.
        #[arg(short, long)]
        follow: bool,
        #[command(flatten)]
        filter: FilterArgs,
        /// What to print: a line per event, or the events' canonical JSON
        /// lines (`--format` is an old name).
        #[arg(long, value_enum, default_value = "text", alias = "format")]
        output: EventFormat,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Events that match every condition given (admins and auditors).
    Search {
        #[command(flatten)]
        filter: FilterArgs,
        /// At most this many.
        #[arg(long)]
        limit: Option<u64>,
        /// What to print: a line per event, or the events' canonical JSON
        /// lines (`--format` is an old name).
        #[arg(long, value_enum, default_value = "text", alias = "format")]
        output: EventFormat,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// The whole central trail as JSON lines, verifiable with
    /// `audit verify --file` (a trail cut by retention starts with a
    /// `{"checkpoint": ...}` line).
    Export {
        /// What to write: the events' canonical JSON lines, the one format
        /// (`--format` is an old name).
        #[arg(long, value_enum, default_value = "json", alias = "format")]
        output: ExportFormat,
        /// Write here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Per entitlement: requests, grants, approvals, break-glass uses,
    /// unreviewed reviews, credentials still live, how grants ended and the
    /// revocation lag, and any VALID answer after an end.
    Report {
        /// The period: a duration back from now (24h) or an RFC 3339 time.
        #[arg(long, default_value = "24h")]
        since: String,
        /// What to print.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// The whole life of one grant: request, decision with its inputs,
    /// approvals, credentials, its end, and whether any `Verify` answered
    /// VALID for it after the end (exit 6 if one did).
    Grant {
        /// The grant id.
        grant: String,
        /// What to print.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
        #[command(flatten)]
        conn: ConnArgs,
    },
}

#[derive(Args)]
pub(crate) struct FilterArgs {
    /// Events about this grant (with the revocations that ended it).
    #[arg(long)]
    grant: Option<String>,
    /// Events about this task.
    #[arg(long)]
    task: Option<String>,
    /// Events whose subject or actor is this SPIFFE ID.
    #[arg(long)]
    subject: Option<String>,
    /// Events of these kinds (comma-separated or repeated), e.g.
    /// credential_issued,revocation.
    #[arg(long = "type", value_delimiter = ',')]
    kinds: Vec<String>,
    /// Events since a duration ago (1h) or an RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum EventFormat {
    /// One line per event for people.
    Text,
    /// The events' canonical JSON lines.
    #[value(alias = "jsonl")]
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum ExportFormat {
    /// One canonical JSON event a line.
    #[value(alias = "jsonl")]
    Json,
}

pub(crate) async fn run(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Verify {
            file,
            config,
            bundle,
        } => verify(file, config, bundle).await,
        AuditCommand::Tail {
            lines,
            follow,
            filter,
            output,
            conn,
        } => {
            let request = pb::QueryAuditRequest {
                last: lines.max(1),
                follow,
                ..filter.request()?
            };
            print_query(&conn, request, output).await
        }
        AuditCommand::Search {
            filter,
            limit,
            output,
            conn,
        } => {
            let request = pb::QueryAuditRequest {
                limit: limit.unwrap_or(0),
                ..filter.request()?
            };
            print_query(&conn, request, output).await
        }
        AuditCommand::Export { output, out, conn } => export(&conn, output, out.as_deref()).await,
        AuditCommand::Report {
            since,
            output,
            conn,
        } => report(&conn, &since, output).await,
        AuditCommand::Grant {
            grant,
            output,
            conn,
        } => grant_life(&conn, &grant, output).await,
    }
}

impl FilterArgs {
    fn request(self) -> anyhow::Result<pb::QueryAuditRequest> {
        Ok(pb::QueryAuditRequest {
            grant_id: self.grant.unwrap_or_default(),
            task_id: self.task.unwrap_or_default(),
            subject: self.subject.unwrap_or_default(),
            kinds: self.kinds,
            since: self.since.as_deref().map(since).transpose()?,
            ..pb::QueryAuditRequest::default()
        })
    }
}

/// A duration back from now (`24h`) or an RFC 3339 time.
fn since(text: &str) -> anyhow::Result<prost_types::Timestamp> {
    let at = match humantime::parse_duration(text) {
        Ok(back) => SystemTime::now()
            .checked_sub(back)
            .unwrap_or(SystemTime::UNIX_EPOCH),
        Err(_) => humantime::parse_rfc3339_weak(text).map_err(|_| {
            anyhow::anyhow!("--since {text:?}: not a duration (24h) or an RFC 3339 time")
        })?,
    };
    Ok(jitid::convert::timestamp(at))
}

fn print_event(event: &AuditEvent, format: EventFormat) {
    match format {
        EventFormat::Json => outln!("{}", event.to_line()),
        EventFormat::Text => outln!("{}", jitid::audit::query::line(event)),
    }
}

/// Prints what a query streams, as it streams.
async fn print_query(
    conn: &ConnArgs,
    request: pb::QueryAuditRequest,
    format: EventFormat,
) -> anyhow::Result<()> {
    let client = connect(conn, true).await?;
    let mut stream = client.query_audit(request).await?;
    while let Some(response) = stream
        .message()
        .await
        .map_err(jitid::client::ClientError::from)?
    {
        for line in &response.events {
            print_event(&checked_event(line)?, format);
        }
        if stdout_closed() {
            // Nobody reads any more (`audit tail -f | head`): stop.
            break;
        }
    }
    Ok(())
}

async fn export(conn: &ConnArgs, _format: ExportFormat, out: Option<&Path>) -> anyhow::Result<()> {
    let client = connect(conn, true).await?;
    let mut stream = client.query_audit(pb::QueryAuditRequest::default()).await?;
    // Streamed: a trail of a million events is never held in memory.
    let mut writer: Box<dyn Write> = match out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot write {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(QuietStdout)),
    };
    while let Some(response) = stream
        .message()
        .await
        .map_err(jitid::client::ClientError::from)?
    {
        if !response.checkpoint.is_empty() {
            writeln!(
                writer,
                "{}",
                serde_json::json!({ "checkpoint": response.checkpoint })
            )?;
        }
        for line in &response.events {
            writeln!(writer, "{}", checked_event(line)?.to_line())?;
        }
    }
    writer.flush()?;
    Ok(())
}

async fn report(conn: &ConnArgs, since_text: &str, output: Output) -> anyhow::Result<()> {
    let from = since(since_text)?;
    let client = connect(conn, true).await?;
    let found = client
        .audit_events(pb::QueryAuditRequest {
            since: Some(from),
            ..pb::QueryAuditRequest::default()
        })
        .await?;
    let report = Report::of(&found.events, SystemTime::now());
    let from = jitid::convert::system_time(&from).unwrap_or(SystemTime::UNIX_EPOCH);
    match output {
        Output::Text => out!("{}", report.render(from)),
        Output::Json => outln!("{}", report_json(&report, from)),
    }
    Ok(())
}

async fn grant_life(conn: &ConnArgs, grant: &str, output: Output) -> anyhow::Result<()> {
    let client = connect(conn, true).await?;
    let found = client
        .audit_events(pb::QueryAuditRequest {
            grant_id: grant.to_owned(),
            ..pb::QueryAuditRequest::default()
        })
        .await?;
    if found.events.is_empty() {
        return Err(NothingFound(format!(
            "the audit trail holds no events about grant {grant} (never issued, or cut by retention)"
        ))
        .into());
    }
    let life = GrantLife::of(grant, found.events);
    match output {
        Output::Text => out!("{}", life.render()),
        Output::Json => outln!("{}", life_json(&life)),
    }
    if !life.valid_after_end.is_empty() {
        return Err(NotRemoved(format!(
            "grant {grant}: Verify answered VALID after the grant ended (events {:?})",
            life.valid_after_end
        ))
        .into());
    }
    Ok(())
}

/// `audit report --output json`: the period, the event counts, and per
/// entitlement the counts the text report shows.
fn report_json(report: &Report, since: SystemTime) -> serde_json::Value {
    let entitlements: serde_json::Map<String, serde_json::Value> = report
        .entitlements
        .iter()
        .map(|(name, e)| {
            (
                name.clone(),
                json!({
                    "requests": e.requests,
                    "granted": e.granted,
                    "refused": e.refused,
                    "approvals": e.approvals,
                    "break_glass": e.break_glass,
                    "unreviewed": e.unreviewed,
                    "credentials": e.credentials,
                    "live": e.live,
                    "revoked": e.revoked,
                    "completed": e.completed,
                    "expired": e.expired,
                    "end_lags_ms": e.end_lags_ms,
                    "valid_after_end": e.valid_after_end,
                }),
            )
        })
        .collect();
    json!({
        "since": humantime::format_rfc3339_seconds(since).to_string(),
        "events": report.events,
        "unreadable": report.unreadable,
        "entitlements": entitlements,
    })
}

/// `audit grant --output json`: the grant's events (their canonical
/// JSON), how it ended, its credentials, and the `Verify` checks after
/// the end.
fn life_json(life: &GrantLife) -> serde_json::Value {
    let ending = match &life.ending {
        Ending::Open => serde_json::Value::Null,
        Ending::Ended { seq, kind, time } => json!({
            "seq": seq,
            "kind": kind.as_str(),
            "time": time,
        }),
    };
    json!({
        "grant_id": life.grant,
        "ending": ending,
        "credentials": life.credentials,
        "checks_after_end": life.checks_after_end,
        "valid_after_end": life.valid_after_end,
        "events": life
            .events
            .iter()
            .map(|event| serde_json::from_str(&event.to_line()).unwrap_or(serde_json::Value::Null))
            .collect::<Vec<serde_json::Value>>(),
    })
}

/// `jitid audit verify`: the chain from a file or from Redis.
async fn verify(
    file: Option<PathBuf>,
    config: Option<PathBuf>,
    bundle: Option<PathBuf>,
) -> anyhow::Result<()> {
    let broken = |error: ChainBreak| ChainBroken(error.to_string());
    let config = config
        .map(|path| Config::load(&path).map(|config| (path, config)))
        .transpose()?;
    // The keys that check a checkpoint, loaded only if there is one.
    let authorities = || -> anyhow::Result<Vec<JwtAuthority>> {
        match (&bundle, &config) {
            (Some(path), _) => {
                let json = std::fs::read(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                TrustBundle::document_authorities_from_json(&json)
                    .map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))
            }
            (None, Some((_, config))) => {
                let authority =
                    Authority::load(&config.ca, &config.trust_domain, SystemTime::now())
                        .context("loading the CA's keys to check the checkpoint")?;
                // Checkpoints signed before they had their own key were
                // signed with the JWT-SVID key: the operator's CA has both.
                let mut keys = authority.document_authorities();
                keys.extend(authority.bundle().jwt_authorities.iter().cloned());
                Ok(keys)
            }
            (None, None) => bail!(
                "the trail starts at a signed checkpoint: pass --bundle with the audit key (the output of `jitid ca audit-key`) to check it"
            ),
        }
    };
    let checkpoint = |token: &str| -> anyhow::Result<Checkpoint> {
        jitid::audit::checkpoint::verify_checkpoint(token, &authorities()?)
            .map_err(|error| ChainBroken(format!("the checkpoint: {error}")).into())
    };
    let (start, head, source) = match (file, &config) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            // Head lines are checked with the keys when given; otherwise
            // only against the chain, and the summary says so.
            let keyed = bundle.is_some();
            let head_claims = |token: &str| -> anyhow::Result<Checkpoint> {
                if keyed {
                    checkpoint(token)
                } else {
                    jitid::audit::checkpoint::read_checkpoint_unverified(token)
                        .map_err(|error| ChainBroken(format!("a head line: {error}")).into())
                }
            };
            let mut start = None;
            let mut events = Vec::new();
            // Each head line with the number of events before it.
            let mut heads = Vec::new();
            for (index, line) in text.lines().enumerate() {
                match Seal::parse(line) {
                    Some(Seal::Checkpoint(token)) if index == 0 => {
                        start = Some(checkpoint(&token)?)
                    }
                    Some(Seal::Checkpoint(_)) => {
                        return Err(broken(ChainBreak::Malformed {
                            position: index as u64 + 1,
                            message: "a checkpoint line may only come first".to_owned(),
                        })
                        .into());
                    }
                    Some(Seal::Head(token)) => {
                        heads.push((index + 1, events.len(), head_claims(&token)?));
                    }
                    None => events.push(AuditEvent::from_line(line).map_err(|message| {
                        broken(ChainBreak::Malformed {
                            position: index as u64 + 1,
                            message,
                        })
                    })?),
                }
            }
            let from = start.as_ref().map_or_else(Head::genesis, Checkpoint::head);
            let head = verify_chain(&from, &events).map_err(broken)?;
            for (line, before, sealed) in &heads {
                if !seals(&events[..*before], &sealed.head()) {
                    return Err(ChainBroken(format!(
                        "line {line}: a head line names event {} but does not follow it",
                        sealed.seq
                    ))
                    .into());
                }
            }
            // The head file beside it says how far the file got.
            let known = match read_head(&path)? {
                Some(token) => {
                    let known = head_claims(&token)?;
                    check_tail(&path, &events, &known)
                        .map_err(|error| ChainBroken(error.to_string()))?;
                    format!("reaches its head file (event {})", known.seq)
                }
                None => "no head file beside it, so a cut at its end would not show".to_owned(),
            };
            let checked = if keyed || heads.is_empty() {
                ""
            } else {
                "; head lines not signature-checked (pass --bundle)"
            };
            (start, head, format!("{}; {known}{checked}", path.display()))
        }
        (None, Some((path, config))) => {
            let StoreConfig::Redis(redis) = &config.store else {
                bail!(
                    "{}: the memory store's trail lives in the server process; verify its JSON-lines file with --file, or an `audit export`",
                    path.display()
                );
            };
            let store = Arc::new(RedisStore::connect(redis.clone()).await?);
            let log = RedisAuditLog::new(store);
            let stored_head = log.head().await?;
            let start = match log.checkpoint().await? {
                Some(stored) => Some(checkpoint(&stored.token)?),
                None => None,
            };
            let mut head = start.as_ref().map_or_else(Head::genesis, Checkpoint::head);
            loop {
                let page = log.read(head.seq, 1000).await?;
                if page.is_empty() {
                    break;
                }
                head = verify_chain(&head, &page).map_err(broken)?;
            }
            if head != stored_head {
                return Err(ChainBroken(format!(
                    "the chain ends at event {} but the trail's head is event {} (events removed from the end)",
                    head.seq, stored_head.seq
                ))
                .into());
            }
            (start, head, "Redis".to_owned())
        }
        (None, None) => {
            bail!("name the trail: --file FILE, or --config FILE (JITID_CONFIG) for Redis")
        }
    };
    match start {
        None => outln!(
            "audit trail ok ({source}): {} events, head {}",
            head.seq,
            head.hash
        ),
        Some(start) => outln!(
            "audit trail ok ({source}): events {} to {} after a checkpoint signed by {} at {}, head {}",
            start.seq + 1,
            head.seq,
            start.iss,
            humantime::format_rfc3339_seconds(
                SystemTime::UNIX_EPOCH + Duration::from_secs(start.iat)
            ),
            head.hash
        ),
    }
    Ok(())
}
