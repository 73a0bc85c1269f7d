//! `jitid revoke` and `jitid complete`: ending credentials, grants, tasks
//! and subjects early, or saying a task is done.

use anyhow::bail;
use clap::{Args, ValueEnum};
use jitid::proto::v1 as pb;

use super::args::{ConnArgs, connect};

#[derive(Args)]
#[group(id = "revoke_target", required = true, multiple = false)]
pub(crate) struct RevokeTargetArgs {
    /// A credential: X.509 serial (hex) or JWT jti.
    #[arg(long, group = "revoke_target")]
    credential: Option<String>,
    /// A grant and every credential under it.
    #[arg(long, group = "revoke_target")]
    grant: Option<String>,
    /// A task (admins: whoever holds it; others: your grants of it).
    #[arg(long, group = "revoke_target")]
    task: Option<String>,
    /// Everything a subject holds now.
    #[arg(long, group = "revoke_target")]
    subject: Option<String>,
}

#[derive(Args)]
pub(crate) struct RevokeArgs {
    #[command(flatten)]
    target: RevokeTargetArgs,
    /// Why; recorded on the grants.
    #[arg(long, default_value = "")]
    reason: String,
    #[command(flatten)]
    conn: ConnArgs,
}

#[derive(Args)]
#[group(id = "complete_target", required = true, multiple = false)]
pub(crate) struct CompleteArgs {
    /// One of your grants.
    #[arg(long, group = "complete_target")]
    grant: Option<String>,
    /// Your grants of a task.
    #[arg(long, group = "complete_target")]
    task: Option<String>,
    /// How the task ended; both end its grants.
    #[arg(long, value_enum, default_value = "completed")]
    outcome: OutcomeArg,
    #[command(flatten)]
    conn: ConnArgs,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum OutcomeArg {
    Completed,
    Failed,
}

pub(crate) async fn revoke(args: RevokeArgs) -> anyhow::Result<()> {
    use pb::revoke_request::Target;
    let target = match args.target {
        RevokeTargetArgs {
            credential: Some(id),
            ..
        } => Target::CredentialId(id),
        RevokeTargetArgs {
            grant: Some(id), ..
        } => Target::GrantId(id),
        RevokeTargetArgs { task: Some(id), .. } => Target::TaskId(id),
        RevokeTargetArgs {
            subject: Some(id), ..
        } => Target::Subject(id),
        _ => bail!("name what to revoke: --credential, --grant, --task or --subject"),
    };
    let client = connect(&args.conn, true).await?;
    let outcome = client.revoke(target, &args.reason).await?;
    if outcome.credential_revoked {
        outln!("revoked credential");
    }
    if outcome.task_revoked {
        outln!("revoked the task for every holder");
    }
    for grant in &outcome.grant_ids {
        outln!("revoked grant {grant}");
    }
    if !outcome.credential_revoked && !outcome.task_revoked && outcome.grant_ids.is_empty() {
        outln!("nothing was live to revoke");
    }
    Ok(())
}

pub(crate) async fn complete(args: CompleteArgs) -> anyhow::Result<()> {
    use pb::complete_task_request::Target;
    let target = match (args.grant, args.task) {
        (Some(id), _) => Target::GrantId(id),
        (None, Some(task)) => Target::TaskId(task),
        (None, None) => bail!("name what is done: --grant or --task"),
    };
    let outcome = match args.outcome {
        OutcomeArg::Completed => pb::TaskOutcome::Completed,
        OutcomeArg::Failed => pb::TaskOutcome::Failed,
    };
    let client = connect(&args.conn, true).await?;
    let ended = client.end_task(target, outcome).await?;
    for grant in &ended {
        outln!("completed grant {grant}");
    }
    if ended.is_empty() {
        outln!("no active grant to complete");
    }
    Ok(())
}
