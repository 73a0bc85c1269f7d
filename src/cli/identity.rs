//! `jitid identity renew|bootstrap|revoke|list`: attestation identities
//! renewed with themselves, bootstrapped with a join token, revoked (with
//! the grants of their SPIFFE ID) and listed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};
use jitid::client::{AttestationIdentity, IdentityTarget};
use jitid::keyfile;
use jitid::proto::v1 as pb;
use serde_json::json;

use super::args::{ConnArgs, ServerArgs, connect, connect_anonymous, duration};
use super::output::{Output, timestamp_text};

const RENEW_HELP: &str = "\
Examples:
  jitid identity renew --out /etc/jitid/identity     # with JITID_CERT/JITID_KEY from there: renewed in place
  jitid identity renew --ttl 8h --out ./identity

The key is generated here; only its CSR goes to the server. The files are
replaced atomically (the key first, mode 0600), so the command may renew the
very files it authenticates with. The old identity stays valid until it
expires or is revoked.";

const BOOTSTRAP_HELP: &str = "\
Examples:
  jitid identity bootstrap --token \"$JOIN_TOKEN\" --out /etc/jitid/identity
  JITID_JOIN_TOKEN=$(cat token) jitid identity bootstrap --out ./identity

Needs no client certificate, only --server and --ca. A token works once:
an unknown, expired or used one is refused (exit 3). It refuses to overwrite
an identity in DIR (checked before the token is spent).";

#[derive(Subcommand)]
pub(crate) enum IdentityCommand {
    /// Renew your attestation identity (--cert/--key): a fresh one for the
    /// same SPIFFE ID, with a new key made here.
    #[command(after_help = RENEW_HELP)]
    Renew {
        #[command(flatten)]
        conn: ConnArgs,
        /// Directory for identity.pem and identity.key (replaced if there).
        #[arg(long)]
        out: PathBuf,
        /// Lifetime (default: the server's [attestation] identity_ttl).
        #[arg(long, value_parser = duration)]
        ttl: Option<Duration>,
        /// What to print.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Exchange a one-time join token for a first attestation identity.
    #[command(after_help = BOOTSTRAP_HELP)]
    Bootstrap {
        #[command(flatten)]
        server: ServerArgs,
        /// The join token from `jitid token create` (or JITID_JOIN_TOKEN,
        /// which keeps it out of the process list).
        #[arg(long, env = "JITID_JOIN_TOKEN", hide_env_values = true)]
        token: String,
        /// Directory for identity.pem and identity.key (must not hold them).
        #[arg(long)]
        out: PathBuf,
        /// Lifetime (default: the server's [attestation] identity_ttl).
        #[arg(long, value_parser = duration)]
        ttl: Option<Duration>,
        /// What to print.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Revoke an attestation identity, or every one of a SPIFFE ID (admins);
    /// ends that SPIFFE ID's grants too.
    Revoke(RevokeArgs),
    /// List the attestation identities the server knows, with their state
    /// (admins).
    List {
        #[command(flatten)]
        conn: ConnArgs,
        /// What to print.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
}

#[derive(Args)]
#[group(id = "identity_target", required = true, multiple = false)]
pub(crate) struct RevokeArgs {
    /// Every identity of this SPIFFE ID issued before now.
    #[arg(long, group = "identity_target")]
    spiffe_id: Option<String>,
    /// One identity, by serial (hex, as `identity list` shows it).
    #[arg(long, group = "identity_target")]
    serial: Option<String>,
    /// Why; shown to the holder when it is refused.
    #[arg(long, default_value = "")]
    reason: String,
    /// What to print.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
    #[command(flatten)]
    conn: ConnArgs,
}

pub(crate) async fn run(command: IdentityCommand) -> anyhow::Result<()> {
    match command {
        IdentityCommand::Renew {
            conn,
            out,
            ttl,
            output,
        } => {
            let client = connect(&conn, true).await?;
            let renewed = client.renew_identity(ttl).await?;
            let (cert, key) = write(&out, &renewed)?;
            print_issued("renewed", &renewed, &cert, &key, output);
            Ok(())
        }
        IdentityCommand::Bootstrap {
            server,
            token,
            out,
            ttl,
            output,
        } => {
            let (cert, key) = paths(&out);
            for path in [&cert, &key] {
                if path.exists() {
                    bail!(
                        "{} already exists; refusing to overwrite it (the token is not spent): \
                         choose another --out, or renew that identity with `jitid identity renew`",
                        path.display()
                    );
                }
            }
            let client = connect_anonymous(&server).await?;
            let issued = client.bootstrap_identity(token.trim(), ttl).await?;
            let (cert, key) = write(&out, &issued)?;
            print_issued("bootstrapped", &issued, &cert, &key, output);
            Ok(())
        }
        IdentityCommand::Revoke(args) => revoke(args).await,
        IdentityCommand::List { conn, output } => {
            let client = connect(&conn, true).await?;
            let identities = client.list_identities().await?;
            match output {
                Output::Json => {
                    let list: Vec<serde_json::Value> =
                        identities.iter().map(identity_json).collect();
                    outln!("{}", serde_json::Value::Array(list));
                }
                Output::Text => {
                    if identities.is_empty() {
                        outln!("no attestation identities");
                    }
                    for identity in &identities {
                        print_identity_row(identity);
                    }
                }
            }
            Ok(())
        }
    }
}

async fn revoke(args: RevokeArgs) -> anyhow::Result<()> {
    let target = match (args.spiffe_id, args.serial) {
        (Some(id), _) => IdentityTarget::SpiffeId(id),
        (None, Some(serial)) => IdentityTarget::Serial(serial),
        (None, None) => bail!("name what to revoke: --spiffe-id or --serial"),
    };
    let client = connect(&args.conn, true).await?;
    let outcome = client.revoke_identity(target.clone(), &args.reason).await?;
    match args.output {
        Output::Json => outln!(
            "{}",
            json!({
                "spiffe_id": outcome.spiffe_id,
                "unseen": outcome.unseen,
                "already_revoked": outcome.already_revoked,
                "grant_ids": outcome.grant_ids,
            })
        ),
        Output::Text => {
            match &target {
                IdentityTarget::SpiffeId(id) => {
                    outln!("revoked every attestation identity of {id} issued before now");
                }
                IdentityTarget::Serial(serial) if outcome.unseen => outln!(
                    "revoked attestation identity {serial}; the server has not seen it yet, so \
                     it is refused whenever it shows"
                ),
                IdentityTarget::Serial(serial) if outcome.already_revoked => {
                    outln!("attestation identity {serial} was revoked already");
                }
                IdentityTarget::Serial(serial) => {
                    outln!(
                        "revoked attestation identity {serial} of {}",
                        outcome.spiffe_id
                    );
                }
            }
            for grant in &outcome.grant_ids {
                outln!("revoked grant {grant}");
            }
        }
    }
    Ok(())
}

/// `DIR/identity.pem` and `DIR/identity.key`.
fn paths(out: &Path) -> (PathBuf, PathBuf) {
    (out.join("identity.pem"), out.join("identity.key"))
}

/// Writes an identity into `out` (made 0700 if missing): the key (0600)
/// and then the chain, each replaced atomically.
fn write(out: &Path, identity: &AttestationIdentity) -> anyhow::Result<(PathBuf, PathBuf)> {
    keyfile::create_private_dir(out)?;
    let (cert, key) = paths(out);
    identity.write_files(&cert, &key)?;
    Ok((cert, key))
}

fn print_issued(
    how: &str,
    identity: &AttestationIdentity,
    cert: &Path,
    key: &Path,
    output: Output,
) {
    let not_after = humantime::format_rfc3339_seconds(identity.not_after).to_string();
    match output {
        Output::Json => outln!(
            "{}",
            json!({
                "spiffe_id": identity.spiffe_id,
                "serial": identity.serial,
                "not_after": not_after,
                "cert": cert.display().to_string(),
                "key": key.display().to_string(),
            })
        ),
        Output::Text => {
            outln!(
                "{how} attestation identity {} (serial {}), valid until {not_after}",
                identity.spiffe_id,
                identity.serial
            );
            outln!("  certificate  {}", cert.display());
            outln!("  key (0600)   {}", key.display());
        }
    }
}

/// An identity's state as `identity list` prints it.
fn state_name(identity: &pb::IdentityRecord) -> &'static str {
    match identity.state() {
        pb::IdentityState::Active => "active",
        pb::IdentityState::Expired => "expired",
        pb::IdentityState::Revoked => "revoked",
        pb::IdentityState::Unspecified => "unknown",
    }
}

fn print_identity_row(identity: &pb::IdentityRecord) {
    let spiffe_id = if identity.spiffe_id.is_empty() {
        "(not seen)"
    } else {
        identity.spiffe_id.as_str()
    };
    let mut line = format!(
        "{}  {:<8} {:<12} {}  until {}",
        identity.serial,
        state_name(identity),
        identity.issued_via,
        spiffe_id,
        timestamp_text(identity.not_after.as_ref())
    );
    if identity.state() == pb::IdentityState::Revoked {
        line.push_str(&format!(
            "  revoked {} by {}",
            timestamp_text(identity.revoked_at.as_ref()),
            identity.revoked_by
        ));
        if !identity.revoked_reason.is_empty() {
            line.push_str(&format!(": {}", identity.revoked_reason));
        }
    }
    outln!("{line}");
}

fn identity_json(identity: &pb::IdentityRecord) -> serde_json::Value {
    let revoked = (identity.state() == pb::IdentityState::Revoked).then(|| {
        json!({
            "at": timestamp_text(identity.revoked_at.as_ref()),
            "by": identity.revoked_by,
            "reason": identity.revoked_reason,
        })
    });
    json!({
        "serial": identity.serial,
        "spiffe_id": identity.spiffe_id,
        "state": state_name(identity),
        "issued_via": identity.issued_via,
        "issued_at": timestamp_text(identity.issued_at.as_ref()),
        "not_before": timestamp_text(identity.not_before.as_ref()),
        "not_after": timestamp_text(identity.not_after.as_ref()),
        "revoked": revoked,
    })
}
