//! `jitid delegate` and `jitid revocation status`: narrower grants for
//! sub-tasks, and proof that a revocation reached every relying party.

use std::time::Duration;

use clap::{Args, Subcommand};
use jitid::proto::v1 as pb;
use serde_json::json;

use super::args::{ConnArgs, connect, duration};
use super::exit::Overdue;
use super::output::{Output, millis, state_proto_name, timestamp};

#[derive(Args)]
pub(crate) struct DelegateArgs {
    /// Your grant to delegate from.
    #[arg(long)]
    grant: String,
    /// The child's name: its SPIFFE ID is the parent's with `/sub/<name>`.
    #[arg(long)]
    name: String,
    /// Actions, a subset of the parent's (default: all of them).
    #[arg(long, value_delimiter = ',')]
    actions: Vec<String>,
    /// Lifetime (default: until the parent expires; never later).
    #[arg(long, value_parser = duration)]
    ttl: Option<Duration>,
    /// Why, recorded on the child grant.
    #[arg(long, default_value = "")]
    justification: String,
    #[command(flatten)]
    conn: ConnArgs,
    /// What to print.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

#[derive(Subcommand)]
pub(crate) enum RevocationCommand {
    /// For an ended grant: which registered relying parties have applied
    /// its revocation and how long each took. Exit 6 if one is overdue.
    Status {
        /// The grant.
        #[arg(long)]
        grant: String,
        #[command(flatten)]
        conn: ConnArgs,
        /// What to print.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
}

pub(crate) async fn delegate(args: DelegateArgs) -> anyhow::Result<()> {
    let client = connect(&args.conn, true).await?;
    let grant = client
        .delegate(pb::DelegateRequest {
            parent_grant_id: args.grant,
            name: args.name,
            actions: args.actions,
            ttl: args.ttl.map(|ttl| prost_types::Duration {
                seconds: i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
                nanos: 0,
            }),
            justification: args.justification,
        })
        .await?;
    let summary = grant.summary.clone().unwrap_or_default();
    let delegation = grant.delegation.unwrap_or_default();
    let expires = summary
        .expires_at
        .map(|at| timestamp(&at))
        .unwrap_or_default();
    match args.output {
        Output::Json => outln!(
            "{}",
            json!({
                "grant_id": summary.grant_id,
                "spiffe_id": delegation.spiffe_id,
                "actions": summary.actions,
                "task_id": summary.task_id,
                "expires_at": expires,
                "parent_grant_ids": delegation.parent_grant_ids,
                "actors": delegation.actors,
            })
        ),
        Output::Text => {
            outln!("grant {}", summary.grant_id);
            outln!("  spiffe id: {}", delegation.spiffe_id);
            outln!("  actions:   {}", summary.actions.join(", "));
            outln!("  task:      {}", summary.task_id);
            outln!("  expires:   {expires}");
            outln!("  parents:   {}", delegation.parent_grant_ids.join(" <- "));
        }
    }
    Ok(())
}

pub(crate) async fn run(command: RevocationCommand) -> anyhow::Result<()> {
    let RevocationCommand::Status {
        grant,
        conn,
        output,
    } = command;
    let client = connect(&conn, true).await?;
    let status = client.revocation_status(&grant).await?;
    let state = state_proto_name(status.state);
    let bound = status.ack_bound.map(millis).unwrap_or_default();
    let applied = status
        .relying_parties
        .iter()
        .filter(|party| party.applied)
        .count();
    let overdue = status
        .relying_parties
        .iter()
        .filter(|party| party.overdue)
        .count();
    let slowest = status
        .relying_parties
        .iter()
        .filter(|party| party.applied)
        .filter_map(|party| party.took.map(millis))
        .max();
    match output {
        Output::Json => outln!(
            "{}",
            json!({
                "grant_id": status.grant_id,
                "state": state,
                "reason": status.reason,
                "cursor": status.cursor,
                "ended_at": status.ended_at.map(|at| timestamp(&at)),
                "all_applied": status.all_applied,
                "ack_bound_ms": bound,
                "relying_parties": status.relying_parties.iter().map(|party| json!({
                    "name": party.name,
                    "spiffe_id": party.spiffe_id,
                    "applied": party.applied,
                    "took_ms": party.took.map(millis),
                    "overdue": party.overdue,
                })).collect::<Vec<_>>(),
            })
        ),
        Output::Text => {
            outln!("grant {} {state}: {}", status.grant_id, status.reason);
            if status.cursor.is_empty() {
                outln!("no revocation of it on the stream: nothing to apply");
            } else {
                let total = status.relying_parties.len();
                match slowest {
                    Some(slowest) => {
                        outln!("visible at {applied}/{total} relying parties, slowest {slowest} ms")
                    }
                    None => outln!("visible at {applied}/{total} relying parties"),
                }
                for party in &status.relying_parties {
                    let took = party.took.map(millis).unwrap_or_default();
                    if party.applied {
                        outln!("  {:<24} applied after {took} ms", party.name);
                    } else if party.overdue {
                        outln!(
                            "  {:<24} NOT APPLIED after {took} ms (bound {bound} ms): overdue",
                            party.name
                        );
                    } else {
                        outln!("  {:<24} pending for {took} ms", party.name);
                    }
                }
            }
        }
    }
    if overdue > 0 {
        return Err(Overdue(overdue).into());
    }
    Ok(())
}
