//! `jitid grants list` and `jitid grants show`: reading grants.

use clap::{Subcommand, ValueEnum};
use jitid::proto::v1 as pb;

use super::args::{ConnArgs, connect};
use super::output::{Output, grant_record_json, print_grant_record, print_grant_row};

#[derive(Subcommand)]
pub(crate) enum GrantsCommand {
    /// List unexpired grants (yours, or a subject's if you are an admin).
    #[command(after_help = super::help::GRANTS_LIST)]
    List {
        #[command(flatten)]
        conn: ConnArgs,
        /// Whose grants (admins only; default: yours).
        #[arg(long)]
        subject: Option<String>,
        /// Only this task.
        #[arg(long)]
        task: Option<String>,
        /// Only this state.
        #[arg(long, value_enum)]
        state: Option<StateArg>,
        /// Instead: pending requests, of anyone, that you may approve now.
        #[arg(long, conflicts_with_all = ["subject", "task", "state"])]
        awaiting_approval: bool,
        /// What to print.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Show one grant and its credentials.
    Show {
        #[command(flatten)]
        conn: ConnArgs,
        /// The grant id.
        grant_id: String,
        /// What to print.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum StateArg {
    Pending,
    Active,
    Denied,
    Completed,
    Revoked,
}

pub(crate) async fn run(command: GrantsCommand) -> anyhow::Result<()> {
    match command {
        GrantsCommand::List {
            conn,
            subject,
            task,
            state,
            awaiting_approval,
            output,
        } => {
            let client = connect(&conn, true).await?;
            let state = match state {
                None => pb::GrantState::Unspecified,
                Some(StateArg::Pending) => pb::GrantState::Pending,
                Some(StateArg::Active) => pb::GrantState::Active,
                Some(StateArg::Denied) => pb::GrantState::Denied,
                Some(StateArg::Completed) => pb::GrantState::Completed,
                Some(StateArg::Revoked) => pb::GrantState::Revoked,
            };
            let grants = client
                .list_grants(pb::ListGrantsRequest {
                    subject: subject.unwrap_or_default(),
                    task_id: task.unwrap_or_default(),
                    state: state.into(),
                    awaiting_my_approval: awaiting_approval,
                    ..Default::default()
                })
                .await?;
            match output {
                Output::Json => {
                    let list: Vec<serde_json::Value> =
                        grants.iter().map(grant_record_json).collect();
                    outln!("{}", serde_json::Value::Array(list));
                }
                Output::Text => {
                    for grant in &grants {
                        print_grant_row(grant);
                    }
                }
            }
            Ok(())
        }
        GrantsCommand::Show {
            conn,
            grant_id,
            output,
        } => {
            let client = connect(&conn, true).await?;
            let grant = client.get_grant(&grant_id).await?;
            match output {
                Output::Json => outln!("{}", grant_record_json(&grant)),
                Output::Text => print_grant_record(&grant),
            }
            Ok(())
        }
    }
}
