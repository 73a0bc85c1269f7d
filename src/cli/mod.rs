//! The `jitid` command line: the server (`serve`, `dev`), the CA (`ca`),
//! and the client side (`fetch`, `bundle`, `exec`, `grants`, ...). This
//! module holds the top-level [`Cli`] and [`Command`] and dispatches each
//! command to its file; the flags several commands share are in
//! [`args`], what they print in [`output`], and the exit codes in [`exit`].

mod approvals;
mod args;
mod audit;
mod bench;
mod ca;
mod exec;
pub(crate) mod exit;
mod fetch;
mod grants;
mod output;
mod policy;
mod revocation;
mod revoke;
mod serve;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "jitid",
    version,
    about = "Just-in-time workload identity issuer: minute-scale SPIFFE SVIDs for one task"
)]
pub(crate) struct Cli {
    /// Log filter for the server (tracing env-filter syntax).
    #[arg(long, global = true, env = "JITID_LOG", default_value = "info")]
    pub(crate) log: String,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run a development server on a local trust domain, created on first use.
    Dev(serve::DevArgs),
    /// Run the server from a config file.
    Serve(serve::ServeArgs),
    /// Manage the certificate authority.
    #[command(subcommand)]
    Ca(ca::CaCommand),
    /// Fetch a credential from the server.
    #[command(subcommand)]
    Fetch(fetch::FetchCommand),
    /// Run a command with credentials for one task, renewed while it runs
    /// and revoked when it exits.
    Exec(exec::ExecArgs),
    /// Print the trust bundle served by the server.
    Bundle(fetch::BundleArgs),
    /// Inspect grants.
    #[command(subcommand)]
    Grants(grants::GrantsCommand),
    /// Revoke a credential, a grant, a task or a subject at once.
    Revoke(revoke::RevokeArgs),
    /// Say a task (or one grant) is done: its credentials stop being live.
    Complete(revoke::CompleteArgs),
    /// Check a credential as a relying party would; exit 0 only if valid.
    Verify(verify::VerifyArgs),
    /// Load-test a running server.
    Bench(bench::BenchArgs),
    /// Work with the entitlement catalogue.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Approve a pending grant (approvers only; never your own request).
    Approve(approvals::DecideArgs),
    /// Deny a pending grant (approvers only).
    Deny(approvals::DecideArgs),
    /// Break-glass reviews.
    #[command(subcommand)]
    Reviews(approvals::ReviewsCommand),
    /// The audit trail.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Delegate a narrower grant from one of yours (delegable entitlements).
    Delegate(revocation::DelegateArgs),
    /// Proof of removal: which relying parties applied a revocation.
    #[command(subcommand)]
    Revocation(revocation::RevocationCommand),
}

/// Runs one command. An error is mapped to its exit code by
/// [`exit::exit_code`]; success is 0, except for `exec`, which exits with
/// its command's status.
pub(crate) async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        // The one command whose success is not always 0.
        Command::Exec(args) => return exec::run(args).await,
        Command::Dev(args) => serve::dev(args).await,
        Command::Serve(args) => serve::serve(args).await,
        Command::Policy(command) => policy::run(command),
        Command::Approve(args) => approvals::decide_grant(args, true).await,
        Command::Deny(args) => approvals::decide_grant(args, false).await,
        Command::Reviews(command) => approvals::reviews(command).await,
        Command::Audit(command) => audit::run(command).await,
        Command::Ca(command) => ca::run(command),
        Command::Fetch(command) => fetch::run(command).await,
        Command::Bundle(args) => fetch::bundle(args).await,
        Command::Grants(command) => grants::run(command).await,
        Command::Revoke(args) => revoke::revoke(args).await,
        Command::Complete(args) => revoke::complete(args).await,
        Command::Delegate(args) => revocation::delegate(args).await,
        Command::Revocation(command) => revocation::run(command).await,
        Command::Verify(args) => verify::verify(args).await,
        Command::Bench(args) => bench::bench(args).await,
    }?;
    Ok(ExitCode::SUCCESS)
}
