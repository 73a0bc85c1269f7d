//! `jitid approve`, `jitid deny` and `jitid reviews`: deciding pending
//! grants and closing break-glass reviews.

use clap::{Args, Subcommand};
use serde_json::json;

use super::args::{ConnArgs, connect};
use super::output::{Output, grant_record_json, state_name, timestamp_text};

#[derive(Args)]
pub(crate) struct ApproveArgs {
    /// The pending grant.
    grant: String,
    /// A note, recorded with the approval.
    #[arg(long, alias = "reason", default_value = "")]
    comment: String,
    #[command(flatten)]
    decide: DecideArgs,
}

#[derive(Args)]
pub(crate) struct DenyArgs {
    /// The pending grant.
    grant: String,
    /// Why, recorded on the grant (`--comment` is an old name).
    #[arg(long, alias = "comment", default_value = "")]
    reason: String,
    #[command(flatten)]
    decide: DecideArgs,
}

/// What `approve` and `deny` share.
#[derive(Args)]
pub(crate) struct DecideArgs {
    /// What to print.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
    #[command(flatten)]
    conn: ConnArgs,
}

#[derive(Subcommand)]
pub(crate) enum ReviewsCommand {
    /// Break-glass uses waiting for review (of entitlements you review).
    List {
        /// Also list acknowledged reviews.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        conn: ConnArgs,
        /// What to print.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Close a review with what you found (reviewers only; not the user).
    Ack {
        /// The break-glass grant.
        grant: String,
        /// What the review found.
        #[arg(long)]
        comment: String,
        #[command(flatten)]
        conn: ConnArgs,
    },
}

pub(crate) async fn approve(args: ApproveArgs) -> anyhow::Result<()> {
    let client = connect(&args.decide.conn, true).await?;
    let grant = client.approve(&args.grant, &args.comment).await?;
    print_decided(&grant, args.decide.output);
    Ok(())
}

pub(crate) async fn deny(args: DenyArgs) -> anyhow::Result<()> {
    let client = connect(&args.decide.conn, true).await?;
    let grant = client.deny(&args.grant, &args.reason).await?;
    print_decided(&grant, args.decide.output);
    Ok(())
}

/// A grant just approved or denied.
fn print_decided(grant: &jitid::proto::v1::GrantRecord, output: Output) {
    match output {
        Output::Json => outln!("{}", grant_record_json(grant)),
        Output::Text => {
            let summary = grant.summary.clone().unwrap_or_default();
            outln!(
                "grant {} is {} ({} approval(s))",
                summary.grant_id,
                state_name(grant.state),
                grant.approvals.len()
            );
        }
    }
}

pub(crate) async fn reviews(command: ReviewsCommand) -> anyhow::Result<()> {
    match command {
        ReviewsCommand::List { all, conn, output } => {
            let client = connect(&conn, true).await?;
            let reviews = client.list_reviews(all).await?;
            match output {
                Output::Json => {
                    let list: Vec<serde_json::Value> = reviews
                        .iter()
                        .map(|review| {
                            json!({
                                "grant_id": review.grant_id,
                                "subject": review.subject,
                                "entitlement": review.entitlement,
                                "actions": review.actions,
                                "task_id": review.task_id,
                                "justification": review.justification,
                                "ticket": review.ticket,
                                "opened_at": timestamp_text(review.opened_at.as_ref()),
                                "acknowledged": review.acknowledged,
                                "acknowledged_by": review.acknowledged_by,
                                "comment": review.comment,
                            })
                        })
                        .collect();
                    outln!("{}", serde_json::Value::Array(list));
                }
                Output::Text => {
                    for review in &reviews {
                        outln!(
                            "{}  {}  {}  {}  {:?}{}",
                            review.grant_id,
                            timestamp_text(review.opened_at.as_ref()),
                            review.entitlement,
                            review.subject,
                            review.justification,
                            if review.acknowledged {
                                format!("  acked by {}: {}", review.acknowledged_by, review.comment)
                            } else {
                                "  OPEN".to_owned()
                            }
                        );
                    }
                }
            }
            Ok(())
        }
        ReviewsCommand::Ack {
            grant,
            comment,
            conn,
        } => {
            let client = connect(&conn, true).await?;
            let review = client.ack_review(&grant, &comment).await?;
            outln!(
                "review of grant {} acknowledged by {}",
                review.grant_id,
                review.acknowledged_by
            );
            Ok(())
        }
    }
}
