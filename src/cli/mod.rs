//! The `jitid` command line: the server (`serve`, `dev`), the CA (`ca`),
//! and the client side (`fetch`, `bundle`, `exec`, `grants`, ...). This
//! module holds the top-level [`Cli`] and [`Command`] and dispatches each
//! command to its file; the flags several commands share are in
//! [`args`], what they print in [`output`], and the exit codes in [`exit`].

// First: its `out!` and `outln!` macros are used by every command.
#[macro_use]
mod output;

mod approvals;
mod args;
mod audit;
mod bench;
mod ca;
mod exec;
pub(crate) mod exit;
mod fetch;
mod grants;
mod help;
mod identity;
mod oidc;
mod policy;
mod revocation;
mod revoke;
mod serve;
mod token;
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
    /// Log filter for diagnostics on stderr (tracing env-filter syntax);
    /// useful with serve, dev, exec and bench.
    #[arg(
        long,
        global = true,
        env = "JITID_LOG",
        default_value = "info",
        help_heading = "Logging",
        display_order = 1000
    )]
    pub(crate) log: String,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run a development server on a local trust domain, created on first use.
    #[command(after_help = help::DEV)]
    Dev(serve::DevArgs),
    /// Run the server from a config file.
    #[command(after_help = help::SERVE)]
    Serve(serve::ServeArgs),
    /// Manage the certificate authority.
    #[command(subcommand)]
    Ca(ca::CaCommand),
    /// Fetch a credential from the server.
    #[command(subcommand)]
    Fetch(fetch::FetchCommand),
    /// Run a command with credentials for one task, renewed while it runs
    /// and revoked when it exits.
    #[command(after_help = help::EXEC)]
    Exec(exec::ExecArgs),
    /// Print the trust bundle served by the server.
    Bundle(fetch::BundleArgs),
    /// Inspect grants.
    #[command(subcommand)]
    Grants(grants::GrantsCommand),
    /// Revoke a credential, a grant, a task or a subject at once.
    #[command(after_help = help::REVOKE)]
    Revoke(revoke::RevokeArgs),
    /// Say a task (or one grant) is done: its credentials stop being live.
    Complete(revoke::CompleteArgs),
    /// Check a credential as a relying party would; exit 0 only if valid.
    #[command(after_help = help::VERIFY)]
    Verify(verify::VerifyArgs),
    /// Load-test a running server.
    Bench(bench::BenchArgs),
    /// Work with the entitlement catalogue.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Approve a pending grant (approvers only; never your own request).
    #[command(after_help = help::APPROVE)]
    Approve(approvals::ApproveArgs),
    /// Deny a pending grant (approvers only).
    #[command(after_help = help::APPROVE)]
    Deny(approvals::DenyArgs),
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
    /// Attestation identities: renew yours, bootstrap one with a join
    /// token, revoke and list them (admins).
    #[command(subcommand)]
    Identity(identity::IdentityCommand),
    /// Join tokens for a new host's first attestation identity (admins).
    #[command(subcommand)]
    Token(token::TokenCommand),
}

/// Parses the command line. Help and version go to stdout (exit 0); a
/// usage error is one `jitid: error:` line on stderr that points to the
/// command's `--help`, without the usage dump, and exits 2.
pub(crate) fn parse() -> Result<Cli, ExitCode> {
    use clap::error::ErrorKind;
    let error = match Cli::try_parse() {
        Ok(cli) => return Ok(cli),
        Err(error) => error,
    };
    match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            // A closed stdout is not worth a word.
            let _ = error.print();
            return Err(ExitCode::SUCCESS);
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let rendered = error.to_string();
            match missing_subcommand(&rendered) {
                // `jitid fetch`: one line naming the choices.
                Some(line) => eprintln!("jitid: error: {line}"),
                // `jitid` alone: its help is the answer.
                None => {
                    let _ = error.print();
                }
            }
            return Err(ExitCode::from(2));
        }
        _ => {}
    }
    eprintln!("jitid: error: {}", usage_line(&error.to_string()));
    Err(ExitCode::from(2))
}

/// clap's rendered usage error as one line: the message, its tips, and
/// which `--help` to read (the command named in clap's usage line).
fn usage_line(rendered: &str) -> String {
    let mut lines = rendered
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty());
    let first = lines.next().unwrap_or("invalid command line");
    let mut text = first.strip_prefix("error: ").unwrap_or(first).to_owned();
    let mut command = "jitid".to_owned();
    for line in lines {
        if let Some(tip) = line.strip_prefix("tip: ") {
            text.push_str("; ");
            text.push_str(tip);
        } else if let Some(usage) = line.strip_prefix("Usage: ") {
            command = usage
                .split_whitespace()
                .take_while(|word| !word.starts_with(['[', '<', '-']))
                .collect::<Vec<_>>()
                .join(" ");
        } else if !line.starts_with("For more information") {
            // The rest of the message (the missing arguments, one a line).
            text.push(' ');
            text.push_str(line);
        }
    }
    format!("{text} (see `{command} --help`)")
}

/// For a command group given without its subcommand (`jitid fetch`), the
/// line that says which ones there are; `None` for `jitid` alone.
fn missing_subcommand(help: &str) -> Option<String> {
    let lines: Vec<&str> = help.lines().map(str::trim).collect();
    let command: Vec<&str> = lines
        .iter()
        .find_map(|line| line.strip_prefix("Usage: "))?
        .split_whitespace()
        .take_while(|word| !word.starts_with(['[', '<', '-']))
        .collect();
    if command.len() < 2 {
        return None;
    }
    let choices: Vec<&str> = lines
        .iter()
        .skip_while(|line| **line != "Commands:")
        .skip(1)
        .take_while(|line| !line.is_empty())
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .collect();
    let command = command.join(" ");
    Some(format!(
        "`{command}` needs a subcommand: {} (see `{command} --help`)",
        choices.join(", ")
    ))
}

/// Whether writing to stdout failed other than by a closed pipe.
pub(crate) use output::stdout_failed;

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
        Command::Approve(args) => approvals::approve(args).await,
        Command::Deny(args) => approvals::deny(args).await,
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
        Command::Identity(command) => identity::run(command).await,
        Command::Token(command) => token::run(command).await,
    }?;
    Ok(ExitCode::SUCCESS)
}
