//! The `jitid` command line: the server (`serve`, `dev`), the CA (`ca`),
//! and the client side (`fetch`, `bundle`, `exec`).
//!
//! Exit codes: 0 success; 1 error; 2 usage; 3 the server refused the caller
//! (unauthenticated or permission denied); 4 the server found the request
//! invalid; 5 the server is unreachable or unavailable; 6 `verify` found the
//! credential not valid (or `audit verify` a broken chain, or `audit grant` a
//! `Verify` that answered VALID after the grant ended); 7 the named grant or
//! credential does not exist (or the audit trail holds nothing about it);
//! 8 the grant is not in a state that allows it (pending, denied, ended) or
//! the entitlement needs approval first. `exec` exits with its command's
//! status once the command ran (see `exec_cmd`).

mod audit_cmd;
mod exec_cmd;
mod revocation_cmd;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use serde_json::json;
use tokio::net::TcpListener;

use jitid::audit::upkeep::{CheckpointSigner, SignedCheckpoint};
use jitid::audit::{AuditLog, Auditor, JsonLinesSink, MemoryAuditLog, RedisAuditLog, Upkeep};
use jitid::ca::{self, Authority, InitOptions, LeafRequest};
use jitid::client::{Client, ClientConfig, ClientError, GrantInfo, SvidRequest};
use jitid::clock::{Clock, SystemClock};
use jitid::config::{AuditSinkConfig, Config, StoreConfig, parse_duration};
use jitid::issuer::Issuer;
use jitid::keyfile::{self, KEY_MODE, PUBLIC_MODE};
use jitid::proto::v1 as pb;
use jitid::server::{self, ServerSettings};
use jitid::spiffe_id::{SpiffeId, TrustDomain};
use jitid::store::{GrantStore, MemoryStore, RedisStore, RedisStoreConfig};

#[derive(Parser)]
#[command(
    name = "jitid",
    version,
    about = "Just-in-time workload identity issuer: minute-scale SPIFFE SVIDs for one task"
)]
struct Cli {
    /// Log filter for the server (tracing env-filter syntax).
    #[arg(long, global = true, env = "JITID_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a development server on a local trust domain, created on first use.
    Dev(DevArgs),
    /// Run the server from a config file.
    Serve(ServeArgs),
    /// Manage the certificate authority.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Fetch a credential from the server.
    #[command(subcommand)]
    Fetch(FetchCommand),
    /// Run a command with credentials for one task, renewed while it runs
    /// and revoked when it exits.
    Exec(exec_cmd::ExecArgs),
    /// Print the trust bundle served by the server.
    Bundle(BundleArgs),
    /// Inspect grants.
    #[command(subcommand)]
    Grants(GrantsCommand),
    /// Revoke a credential, a grant, a task or a subject at once.
    Revoke(RevokeArgs),
    /// Say a task (or one grant) is done: its credentials stop being live.
    Complete(CompleteArgs),
    /// Check a credential as a relying party would; exit 0 only if valid.
    Verify(VerifyArgs),
    /// Load-test a running server.
    Bench(BenchArgs),
    /// Work with the entitlement catalogue.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Approve a pending grant (approvers only; never your own request).
    Approve(DecideArgs),
    /// Deny a pending grant (approvers only).
    Deny(DecideArgs),
    /// Break-glass reviews.
    #[command(subcommand)]
    Reviews(ReviewsCommand),
    /// The audit trail.
    #[command(subcommand)]
    Audit(audit_cmd::AuditCommand),
    /// Delegate a narrower grant from one of yours (delegable entitlements).
    Delegate(revocation_cmd::DelegateArgs),
    /// Proof of removal: which relying parties applied a revocation.
    #[command(subcommand)]
    Revocation(revocation_cmd::RevocationCommand),
}

#[derive(Args)]
struct DecideArgs {
    /// The pending grant.
    grant: String,
    /// A note (approve) or the reason (deny), recorded on the grant.
    #[arg(long, alias = "reason", default_value = "")]
    comment: String,
    #[command(flatten)]
    conn: ConnArgs,
    /// What to print.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

#[derive(Subcommand)]
enum ReviewsCommand {
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

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate a config file's catalogue; errors name file, entry and field.
    Check {
        /// The config file.
        file: PathBuf,
    },
    /// Decide a request against a config file's catalogue, and print the
    /// decision with its inputs and the rules that produced it. Issues
    /// nothing; exit 0 when allowed (or needing approval), 3 when denied.
    Explain(ExplainArgs),
}

#[derive(Args)]
struct ExplainArgs {
    /// The config file.
    #[arg(long, env = "JITID_CONFIG")]
    config: PathBuf,
    /// The caller's SPIFFE ID.
    #[arg(long = "as")]
    caller: String,
    /// Entitlement to ask for.
    #[arg(long)]
    entitlement: Option<String>,
    /// Actions (comma-separated or repeated).
    #[arg(long, value_delimiter = ',')]
    actions: Vec<String>,
    /// Requested lifetime.
    #[arg(long, value_parser = duration)]
    ttl: Option<Duration>,
    /// Justification.
    #[arg(long, default_value = "")]
    justification: String,
    /// Ticket reference.
    #[arg(long, default_value = "")]
    ticket: String,
    /// Ask for break-glass.
    #[arg(long)]
    break_glass: bool,
    /// Context as key=value (repeat): `environment` and `source` (an IP)
    /// set those; any other key is a label.
    #[arg(long = "context", value_parser = key_value)]
    context: Vec<(String, String)>,
    /// Decide as of this time (RFC 3339), instead of now.
    #[arg(long)]
    at: Option<String>,
    /// What to print.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

#[derive(Clone, Copy, ValueEnum)]
enum BenchMode {
    X509,
    Jwt,
    Verify,
    /// A CI job: new connection, new key, X.509-SVID, CompleteTask.
    Exec,
    Revocation,
}

#[derive(Args)]
struct BenchArgs {
    /// What to measure: issuance (x509, jwt), Verify of a JWT, a CI job
    /// (exec: new connection and key, X.509-SVID, CompleteTask), or how
    /// soon a revocation reaches a RevocationCache.
    #[arg(long, value_enum, default_value = "x509")]
    mode: BenchMode,
    /// Concurrent workers, each with its own connection (with
    /// --crypto-only: threads).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// How long to measure.
    #[arg(long, default_value = "10s", value_parser = duration)]
    duration: Duration,
    /// How long to run before measuring (not with --requests).
    #[arg(long, default_value = "1s", value_parser = duration)]
    warmup: Duration,
    /// Stop after this many requests instead.
    #[arg(long)]
    requests: Option<u64>,
    /// Send this many requests per second in all (open loop; latency
    /// counts from when each was due) instead of as fast as answered.
    #[arg(long)]
    rate: Option<f64>,
    /// A new TLS connection per request (as a CI job makes).
    #[arg(long)]
    new_connection: bool,
    /// With --new-connection (or --mode exec): resume the TLS session of
    /// an earlier connection, as a long-lived client that reconnects does.
    #[arg(long)]
    resume: bool,
    /// No RPC: the machine's ceiling for the same cryptography (x509:
    /// verify a CSR and sign a certificate; jwt: sign a JWT) through
    /// jitid's CA code, on --concurrency threads.
    #[arg(long)]
    crypto_only: bool,
    /// Also report the CPU time per request of this process (repeatable;
    /// the server listening on a loopback --server is found by itself).
    #[arg(long = "server-pid")]
    server_pids: Vec<u32>,
    /// Entitlement to request.
    #[arg(long, default_value = "ci-publish")]
    entitlement: String,
    /// TTL to request (default: the entitlement's).
    #[arg(long, value_parser = duration)]
    ttl: Option<Duration>,
    /// What to print.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
    #[command(flatten)]
    conn: ConnArgs,
}

#[derive(Subcommand)]
enum GrantsCommand {
    /// List unexpired grants (yours, or a subject's if you are an admin).
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
enum StateArg {
    Pending,
    Active,
    Denied,
    Completed,
    Revoked,
}

#[derive(Args)]
#[group(id = "revoke_target", required = true, multiple = false)]
struct RevokeTargetArgs {
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
struct RevokeArgs {
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
struct CompleteArgs {
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
enum OutcomeArg {
    Completed,
    Failed,
}

#[derive(Args)]
struct VerifyArgs {
    /// A PEM X.509-SVID chain, leaf first.
    #[arg(long, conflicts_with_all = ["jwt"], required_unless_present = "jwt")]
    x509: Option<PathBuf>,
    /// A JWT-SVID.
    #[arg(long, requires = "audience")]
    jwt: Option<String>,
    /// Your own audience, which the JWT must name.
    #[arg(long)]
    audience: Option<String>,
    /// What to print.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
    #[command(flatten)]
    conn: ConnArgs,
}

#[derive(Args)]
struct DevArgs {
    /// Directory of the dev trust domain.
    #[arg(long, default_value = "certs/dev")]
    dir: PathBuf,
    /// Address to listen on (default: the config's, 127.0.0.1:8443).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Keep grants in Redis at this URL (redis://, rediss://, unix://)
    /// instead of in memory.
    #[arg(long)]
    redis: Option<String>,
    /// Keep no audit trail: only to measure what auditing costs (`jitid
    /// bench` against a server with and one without).
    #[arg(long)]
    no_audit: bool,
}

#[derive(Args)]
struct ServeArgs {
    /// Config file (TOML).
    #[arg(long, env = "JITID_CONFIG")]
    config: PathBuf,
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create a root CA, a signing intermediate and a JWT key (ECDSA P-256).
    Init {
        /// Trust domain, e.g. example.org.
        #[arg(long)]
        trust_domain: String,
        /// Directory to write into; existing files are never overwritten.
        #[arg(long)]
        dir: PathBuf,
        /// Lifetime of the root.
        #[arg(long, default_value = "87600h", value_parser = duration)]
        root_ttl: Duration,
        /// Lifetime of the signing intermediate.
        #[arg(long, default_value = "8760h", value_parser = duration)]
        signing_ttl: Duration,
    },
    /// Mint an attestation identity (certificate + key) for a workload.
    IssueIdentity {
        /// The workload's SPIFFE ID.
        #[arg(long)]
        spiffe_id: String,
        /// Lifetime.
        #[arg(long, default_value = "720h", value_parser = duration)]
        ttl: Duration,
        /// Directory for identity.pem and identity.key.
        #[arg(long)]
        out: PathBuf,
        /// The CA directory (signing.pem, signing.key).
        #[arg(long, env = "JITID_CA_DIR", default_value = "certs/dev")]
        ca_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum FetchCommand {
    /// Fetch an X.509-SVID: the key is generated here and never sent.
    X509(FetchX509Args),
    /// Fetch a JWT-SVID and print it.
    Jwt(FetchJwtArgs),
}

#[derive(Args)]
struct ConnArgs {
    /// Server URL.
    #[arg(long, env = "JITID_SERVER", default_value = "https://127.0.0.1:8443")]
    server: String,
    /// Attestation certificate (PEM chain).
    #[arg(long, env = "JITID_CERT")]
    cert: Option<PathBuf>,
    /// Attestation key (PEM, mode 0600).
    #[arg(long, env = "JITID_KEY")]
    key: Option<PathBuf>,
    /// Root certificate(s) to verify the server with (PEM). Required.
    #[arg(long, env = "JITID_CA")]
    ca: Option<PathBuf>,
}

impl ConnArgs {
    /// The server roots file; its absence is a usage error, as clap
    /// reports a missing argument (`bench --crypto-only` needs none).
    fn ca(&self) -> &Path {
        match &self.ca {
            Some(ca) => ca,
            None => Cli::command()
                .error(
                    clap::error::ErrorKind::MissingRequiredArgument,
                    "the following required argument was not provided: --ca <CA> (or JITID_CA)",
                )
                .exit(),
        }
    }
}

/// What to ask for: the grant flags `fetch` and `exec` share.
#[derive(Args)]
struct RequestArgs {
    /// Entitlement to use.
    #[arg(long)]
    entitlement: Option<String>,
    /// Actions (comma-separated or repeated); default: the whole entitlement.
    #[arg(long, value_delimiter = ',')]
    actions: Vec<String>,
    /// Lifetime, e.g. 5m (default: the entitlement's).
    #[arg(long, value_parser = duration)]
    ttl: Option<Duration>,
    /// Task id (default: generated by the server).
    #[arg(long)]
    task: Option<String>,
    /// Why you need it; recorded on the grant.
    #[arg(long)]
    justification: Option<String>,
    /// A change or incident ticket reference; recorded on the grant.
    #[arg(long)]
    ticket: Option<String>,
    /// A label for the entitlement's conditions, key=value (repeat).
    #[arg(long = "label", value_parser = key_value)]
    labels: Vec<(String, String)>,
}

#[derive(Args)]
struct GrantArgs {
    #[command(flatten)]
    request: RequestArgs,
    /// Emergency path: issued at once, flagged, and reviewed afterwards
    /// (needs --justification and an entitlement that allows it).
    #[arg(long)]
    break_glass: bool,
    /// Mint under this existing active grant (e.g. an approved one).
    #[arg(long, conflicts_with_all = ["entitlement", "actions", "task", "justification", "ticket", "break_glass", "labels", "wait"])]
    grant: Option<String>,
    /// When the entitlement needs approval: request the grant, wait until
    /// it is approved (or denied, or expires), then mint under it.
    #[arg(long)]
    wait: bool,
}

fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("{text:?} is not key=value"))
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Args)]
struct FetchX509Args {
    #[command(flatten)]
    grant: GrantArgs,
    #[command(flatten)]
    conn: ConnArgs,
    /// Directory for svid.pem (chain), svid.key (0600) and bundle.pem.
    #[arg(long)]
    out: PathBuf,
    /// What to print.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

#[derive(Args)]
struct FetchJwtArgs {
    #[command(flatten)]
    grant: GrantArgs,
    #[command(flatten)]
    conn: ConnArgs,
    /// Audience (repeat for several).
    #[arg(long, required = true)]
    audience: Vec<String>,
    /// Bind the token to the --cert identity (`cnf`, RFC 8705): relying
    /// parties accept it only from a peer presenting that certificate.
    #[arg(long)]
    bind: bool,
    /// What to print: the token alone, or JSON with the grant.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

#[derive(Clone, Copy, ValueEnum)]
enum BundleFormat {
    Spiffe,
    Pem,
}

#[derive(Args)]
struct BundleArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "spiffe")]
    format: BundleFormat,
}

fn duration(text: &str) -> Result<Duration, String> {
    parse_duration(text)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("jitid: error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("jitid: error: {error:#}");
            ExitCode::from(exit_code(&error))
        }
    }
}

fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// `verify` found the credential not valid.
#[derive(Debug, thiserror::Error)]
#[error("credential is {status}: {reason}")]
struct NotValid {
    status: &'static str,
    reason: String,
}

/// Maps an error to the documented exit codes.
fn exit_code(error: &anyhow::Error) -> u8 {
    if error.chain().any(|e| {
        e.is::<NotValid>()
            || e.is::<ChainBroken>()
            || e.is::<audit_cmd::NotRemoved>()
            || e.is::<revocation_cmd::Overdue>()
    }) {
        return 6;
    }
    if error.chain().any(|e| e.is::<audit_cmd::NothingFound>()) {
        return 7;
    }
    if error.chain().any(|e| e.is::<Refused>()) {
        return 3;
    }
    let client_error = error.chain().find_map(|e| e.downcast_ref::<ClientError>());
    match client_error {
        Some(ClientError::Connect { .. }) => 5,
        Some(ClientError::Status { code, .. }) => match code {
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => 3,
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => 4,
            tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::ResourceExhausted => 5,
            tonic::Code::NotFound => 7,
            tonic::Code::FailedPrecondition => 8,
            _ => 1,
        },
        _ => 1,
    }
}

/// `audit verify` found the chain broken.
#[derive(Debug, thiserror::Error)]
#[error("audit trail broken: {0}")]
struct ChainBroken(String);

/// `fetch --wait` or `policy explain` ended in a refusal.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(String);

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        // The one command whose success is not always 0.
        Command::Exec(args) => return exec_cmd::run(args).await,
        Command::Dev(args) => dev(args).await,
        Command::Serve(args) => {
            let config = Config::load(&args.config)?;
            run_server(config, &args.config, |addr| {
                tracing::info!(%addr, "listening");
            })
            .await
        }
        Command::Policy(PolicyCommand::Check { file }) => policy_check(&file),
        Command::Policy(PolicyCommand::Explain(args)) => policy_explain(args),
        Command::Approve(args) => decide_grant(args, true).await,
        Command::Deny(args) => decide_grant(args, false).await,
        Command::Reviews(command) => reviews(command).await,
        Command::Audit(command) => audit_cmd::run(command).await,
        Command::Ca(command) => ca_command(command),
        Command::Fetch(FetchCommand::X509(args)) => fetch_x509(args).await,
        Command::Fetch(FetchCommand::Jwt(args)) => fetch_jwt(args).await,
        Command::Bundle(args) => bundle(args).await,
        Command::Grants(command) => grants(command).await,
        Command::Revoke(args) => revoke(args).await,
        Command::Complete(args) => complete(args).await,
        Command::Delegate(args) => revocation_cmd::delegate(args).await,
        Command::Revocation(command) => revocation_cmd::run(command).await,
        Command::Verify(args) => verify(args).await,
        Command::Bench(args) => bench(args).await,
    }?;
    Ok(ExitCode::SUCCESS)
}

async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    use jitid::bench::{self, Mode, cpu};
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if args
        .rate
        .is_some_and(|rate| !(rate.is_finite() && rate > 0.0))
    {
        bail!("--rate must be a positive number of requests per second");
    }
    let mode = match args.mode {
        BenchMode::X509 => Mode::X509,
        BenchMode::Jwt => Mode::Jwt,
        BenchMode::Verify => Mode::Verify,
        BenchMode::Exec => Mode::Exec,
        BenchMode::Revocation => Mode::Revocation,
    };
    let report = if args.crypto_only {
        let (concurrency, duration, requests) = (args.concurrency, args.duration, args.requests);
        tokio::task::spawn_blocking(move || {
            bench::run_crypto_only(mode, concurrency, duration, requests)
        })
        .await??
    } else {
        let (Some(cert), Some(key)) = (&args.conn.cert, &args.conn.key) else {
            bail!("no attestation identity: set --cert and --key (or JITID_CERT and JITID_KEY)");
        };
        let client =
            ClientConfig::from_files(&args.conn.server, args.conn.ca(), Some((cert, key)))?;
        let mut watch = Vec::new();
        for pid in args.server_pids {
            watch.push(cpu::Process::new(pid).with_context(|| format!("no process {pid}"))?);
        }
        let listener = server_addr(&args.conn.server).and_then(cpu::listener_of);
        watch.extend(listener.filter(|found| !watch.contains(found)));
        bench::run(bench::BenchConfig {
            mode,
            concurrency: args.concurrency,
            duration: args.duration,
            warmup: args.warmup,
            requests: args.requests,
            rate: args.rate,
            request: SvidRequest {
                entitlement: args.entitlement,
                ttl: args.ttl,
                ..SvidRequest::default()
            },
            new_connection: args.new_connection,
            resume: args.resume,
            client,
            watch,
        })
        .await?
    };
    match args.output {
        Output::Json => println!("{}", report.to_json()),
        Output::Text => print!("{}", report.to_text()),
    }
    Ok(())
}

/// The socket address of an `https://ip:port` server URL, if it names an
/// IP address (or localhost).
fn server_addr(server: &str) -> Option<std::net::SocketAddr> {
    let uri: tonic::codegen::http::Uri = server.parse().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    let ip = match host {
        "localhost" => std::net::IpAddr::from([127, 0, 0, 1]),
        host => host.parse().ok()?,
    };
    Some((ip, uri.port_u16().unwrap_or(443)).into())
}

async fn dev(args: DevArgs) -> anyhow::Result<()> {
    let env = jitid::dev::ensure(&args.dir, SystemTime::now())
        .with_context(|| format!("setting up the dev trust domain in {}", args.dir.display()))?;
    let mut config = Config::load(&env.config_path)?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(url) = &args.redis {
        config.store = StoreConfig::Redis(RedisStoreConfig::new(url));
    }
    config.audit.enabled = !args.no_audit;
    let store_name = match &config.store {
        StoreConfig::Memory => "in-memory store",
        StoreConfig::Redis(_) => "Redis store",
    };
    let exe = std::env::current_exe()
        .map(|path| path.display().to_string())
        .unwrap_or_else(|_| "jitid".to_owned());
    let identity = env
        .identities
        .first()
        .context("dev trust domain has no demo identity")?
        .clone();
    let env_for_banner = env.clone();
    let config_path = env.config_path.clone();
    run_server(config, &config_path, move |addr| {
        let root = env_for_banner.ca.root_cert.display();
        let out = std::env::temp_dir().join("jitid-svid");
        let out = out.display();
        // The banner goes to stdout so it can be pasted; logs go to stderr.
        // A closed stdout must not stop the server, so write errors are
        // ignored rather than panicking as println! would.
        let mut banner = format!(
            "# jitid dev: trust domain {} on {addr}, {store_name}\n\
             # config {}\n\
             # In another shell, act as the demo CI runner ({}):\n\
             export JITID_SERVER=https://{addr}\n\
             export JITID_CA={root}\n\
             export JITID_CERT={}\n\
             export JITID_KEY={}\n\
             {exe} fetch x509 --entitlement ci-publish --task build-1 --ttl 5m --out {out}\n\
             openssl verify -CAfile {root} -untrusted {out}/svid.pem {out}/svid.pem\n\
             {exe} fetch jwt --entitlement ci-publish --audience artifacts.example.org\n\
             # Other demo identities:\n",
            jitid::dev::DEV_TRUST_DOMAIN,
            env_for_banner.config_path.display(),
            identity.spiffe_id,
            identity.cert.display(),
            identity.key.display(),
        );
        for other in env_for_banner.identities.iter().skip(1) {
            banner.push_str(&format!(
                "#   {} {} {}\n",
                other.spiffe_id,
                other.cert.display(),
                other.key.display()
            ));
        }
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(banner.as_bytes());
        let _ = stdout.flush();
    })
    .await
}

async fn run_server(
    config: Config,
    config_path: &Path,
    on_bound: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let authority = Arc::new(
        Authority::load(&config.ca, &config.trust_domain, clock.now())
            .context("loading the certificate authority")?,
    );
    let mut anchors = Vec::new();
    for path in &config.attestation_trust_anchors {
        anchors.extend(ca::read_certs(path).context("loading attestation trust anchors")?);
    }
    let (store, audit_log, store_kind): (Arc<dyn GrantStore>, Arc<dyn AuditLog>, &str) =
        match &config.store {
            StoreConfig::Memory => {
                // The memory trail dies with the process; its JSON-lines
                // file, if any, is the lasting copy, so continue its chain,
                // from a checkpoint of where the file ends.
                let start = match &config.audit.jsonl {
                    Some(AuditSinkConfig::File(path)) => last_audit_head(path)?,
                    _ => None,
                };
                let log = MemoryAuditLog::starting_at(
                    start
                        .as_ref()
                        .map_or_else(jitid::audit::Head::genesis, |(head, _)| head.clone()),
                );
                if let Some((head, time)) = start {
                    let token = authority
                        .sign_checkpoint(&head, &time, clock.now())
                        .map_err(|error| {
                            anyhow::anyhow!("signing the audit checkpoint: {error}")
                        })?;
                    log.trim(&SignedCheckpoint {
                        seq: head.seq,
                        token,
                    })
                    .await?;
                }
                (
                    Arc::new(MemoryStore::new(clock.clone())),
                    Arc::new(log),
                    "memory",
                )
            }
            StoreConfig::Redis(redis) => {
                let store = Arc::new(
                    RedisStore::connect(redis.clone())
                        .await
                        .context("cannot connect to Redis (jitid fails closed: it never issues untracked credentials)")?,
                );
                (store.clone(), Arc::new(RedisAuditLog::new(store)), "redis")
            }
        };
    let sink = match &config.audit.jsonl {
        _ if !config.audit.enabled => None,
        None => None,
        Some(AuditSinkConfig::Stdout) => Some(JsonLinesSink::stdout()),
        Some(AuditSinkConfig::File(path)) => Some(
            JsonLinesSink::file(path)
                .with_context(|| format!("cannot open the audit file {}", path.display()))?,
        ),
    };
    let upkeep = Upkeep {
        clock: clock.clone(),
        interval: config.audit.upkeep_interval,
        retention: config.audit.retention(&config.store),
        signer: authority.clone(),
    };
    let mut issuer = Issuer::new(authority, config.catalogue.clone(), store, clock)
        .with_admins(config.admins.clone())
        .with_auditors(config.audit.auditors.clone())
        .with_environment(config.environment.clone())
        .with_liveness_sample(config.audit.liveness_sample)
        .with_relying_parties(
            config.revocation.ack_bound,
            config.revocation.relying_party_ttl,
        );
    if config.audit.enabled {
        issuer = issuer.with_auditor(Auditor::start(
            audit_log,
            sink,
            config.audit.mode,
            Some(upkeep),
        ));
    } else {
        tracing::warn!("no audit trail (--no-audit): for measuring its cost only");
    }
    let issuer = Arc::new(issuer);
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        trust_domain = %config.trust_domain,
        %addr,
        entitlements = config.catalogue.entitlements().len(),
        store = store_kind,
        "jitid server starting"
    );
    on_bound(addr);
    let settings = ServerSettings {
        identity: config.server.clone(),
        attestation_anchors: anchors,
        max_request_bytes: config.max_request_bytes,
        admission: config.admission,
    };
    let reloader = tokio::spawn(reload_on_hangup(issuer.clone(), config_path.to_owned()));
    let served = server::serve(listener, issuer, settings, shutdown_signal()).await;
    reloader.abort();
    served?;
    Ok(())
}

/// On SIGHUP, reads the config file again and puts its entitlement
/// catalogue in force; a file that does not load is reported and the
/// catalogue in force stays.
async fn reload_on_hangup(issuer: Arc<Issuer>, config_path: PathBuf) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(stream) => stream,
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGHUP; the catalogue will not reload");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        let details = match Config::load(&config_path) {
            Ok(config) => {
                let count = config.catalogue.entitlements().len();
                issuer.replace_catalogue(config.catalogue);
                tracing::info!(entitlements = count, "catalogue reloaded");
                json!({ "file": config_path, "reloaded": true, "entitlements": count })
            }
            Err(error) => {
                let error = format!("{error:#}");
                tracing::error!(%error, "catalogue reload failed; keeping the catalogue in force");
                json!({ "file": config_path, "reloaded": false, "error": error })
            }
        };
        let record = jitid::audit::Record {
            kind: jitid::audit::EventKind::CatalogueReloaded,
            at: SystemTime::now(),
            actor: jitid::audit::SYSTEM.to_owned(),
            subject: None,
            grant: None,
            task: None,
            details,
        };
        if let Err(error) = issuer.audit(vec![record]).await {
            tracing::error!(%error, "catalogue reload not recorded in the audit trail");
        }
    }
}

/// The head and time of the last event of a JSON-lines audit file (none
/// for a missing or empty file).
fn last_audit_head(path: &Path) -> anyhow::Result<Option<(jitid::audit::Head, String)>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(error).with_context(|| format!("cannot read {}", path.display()));
        }
    };
    match text.lines().rev().find(|line| !line.trim().is_empty()) {
        None => Ok(None),
        Some(line) => jitid::audit::AuditEvent::from_line(line)
            .map(|event| Some((event.head(), event.time)))
            .map_err(|error| {
                anyhow::anyhow!(
                    "{}: the last line is not an audit event ({error}); refusing to continue a chain I cannot read",
                    path.display()
                )
            }),
    }
}

/// `jitid policy explain`: decides a request against a config's catalogue
/// locally and prints the decision, its inputs and the rules that matched.
fn policy_explain(args: ExplainArgs) -> anyhow::Result<()> {
    use jitid::policy::{AccessRequest, RequestContext};
    let config = Config::load(&args.config)?;
    let caller = SpiffeId::new(&args.caller).context("--as")?;
    let actions = args
        .actions
        .iter()
        .map(|action| {
            jitid::grant::Action::new(action).with_context(|| format!("--actions {action:?}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut context = RequestContext {
        environment: config.environment.clone(),
        ..RequestContext::default()
    };
    for (key, value) in args.context {
        match key.as_str() {
            "environment" => context.environment = value,
            "source" => {
                context.source = Some(
                    value
                        .parse()
                        .with_context(|| format!("--context source={value}: not an IP address"))?,
                );
            }
            _ => {
                context.labels.insert(key, value);
            }
        }
    }
    let now = match &args.at {
        Some(text) => humantime::parse_rfc3339_weak(text)
            .with_context(|| format!("--at {text:?}: not an RFC 3339 time"))?,
        None => SystemTime::now(),
    };
    let request = AccessRequest {
        entitlement: args.entitlement.as_deref(),
        actions: &actions,
        ttl: args.ttl,
        justification: &args.justification,
        ticket: &args.ticket,
        audiences: None,
        break_glass: args.break_glass,
        live_grants: &[],
    };
    let mut evaluation =
        jitid::policy::evaluate(&config.catalogue, &caller, &request, &context, now);
    // Explain reads no live grants, so it counted none.
    evaluation.explanation.active_grants = None;
    let explanation = &evaluation.explanation;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(explanation)?),
        Output::Text => {
            println!("decision     {}", explanation.outcome);
            for rule in &explanation.matched {
                println!("  matched    {rule}");
            }
            println!("inputs");
            println!("  caller     {}", explanation.caller);
            println!("  groups     {}", explanation.groups.join(" "));
            println!(
                "  time       {} ({})",
                humantime::format_rfc3339_seconds(now),
                jitid::policy::window::weekday(now)
            );
            for (window, open) in &explanation.windows {
                println!(
                    "  window     {window}: {}",
                    if *open { "open" } else { "closed" }
                );
            }
            println!("  environment {:?}", explanation.context.environment);
            for (key, value) in &explanation.context.labels {
                println!("  label      {key}={value}");
            }
            println!("  note       max_active is not counted: explain does not read live grants");
        }
    }
    match evaluation.result {
        Ok(_) => Ok(()),
        Err(denial) => Err(Refused(format!("denied: {denial}")).into()),
    }
}

async fn decide_grant(args: DecideArgs, approve: bool) -> anyhow::Result<()> {
    let client = connect(&args.conn, true).await?;
    let grant = if approve {
        client.approve(&args.grant, &args.comment).await?
    } else {
        client.deny(&args.grant, &args.comment).await?
    };
    match args.output {
        Output::Json => println!("{}", grant_record_json(&grant)),
        Output::Text => {
            let summary = grant.summary.clone().unwrap_or_default();
            println!(
                "grant {} is {} ({} approval(s))",
                summary.grant_id,
                state_name(grant.state),
                grant.approvals.len()
            );
        }
    }
    Ok(())
}

async fn reviews(command: ReviewsCommand) -> anyhow::Result<()> {
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
                    println!("{}", serde_json::Value::Array(list));
                }
                Output::Text => {
                    for review in &reviews {
                        println!(
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
            println!(
                "review of grant {} acknowledged by {}",
                review.grant_id, review.acknowledged_by
            );
            Ok(())
        }
    }
}

/// `jitid policy check FILE`: loads a config and reports its catalogue.
fn policy_check(file: &Path) -> anyhow::Result<()> {
    let config = Config::load(file)?;
    let entitlements = config.catalogue.entitlements();
    println!(
        "{}: ok, {} entitlements",
        file.display(),
        entitlements.len()
    );
    for entitlement in entitlements {
        let actions: Vec<&str> = entitlement.actions.iter().map(|a| a.as_str()).collect();
        let approval = match &entitlement.approval {
            jitid::policy::ApprovalRule::Auto => "auto".to_owned(),
            jitid::policy::ApprovalRule::Approvers {
                names,
                min_approvals,
                ..
            } => format!("{min_approvals} of {}", names.join(",")),
        };
        println!(
            "  {:<24} {:<8} ttl {} (max {})  approval {approval}{}{}  actions {}",
            entitlement.name,
            entitlement.risk.as_str(),
            humantime::format_duration(entitlement.default_ttl),
            humantime::format_duration(entitlement.max_ttl),
            if entitlement.break_glass.is_some() {
                "  break-glass"
            } else {
                ""
            },
            match &entitlement.conditions {
                Some(conditions) => format!(
                    "  conditions {}",
                    conditions.policy_ids().collect::<Vec<_>>().join(",")
                ),
                None => String::new(),
            },
            actions.join(" ")
        );
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(stream) => stream,
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the server");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
    }
}

fn ca_command(command: CaCommand) -> anyhow::Result<()> {
    match command {
        CaCommand::Init {
            trust_domain,
            dir,
            root_ttl,
            signing_ttl,
        } => {
            let trust_domain = TrustDomain::new(&trust_domain)
                .with_context(|| format!("invalid trust domain {trust_domain:?}"))?;
            let paths = ca::init(
                &dir,
                &trust_domain,
                SystemTime::now(),
                &InitOptions {
                    root_ttl,
                    signing_ttl,
                },
            )?;
            println!(
                "created CA for trust domain {trust_domain} in {}",
                dir.display()
            );
            println!("  root certificate     {}", paths.root_cert.display());
            println!(
                "  root key (0600)      {}  (move it offline; the server does not need it)",
                ca::root_key_path(&dir).display()
            );
            println!("  signing certificate  {}", paths.signing_cert.display());
            println!("  signing key (0600)   {}", paths.signing_key.display());
            println!("  JWT signing key      {}", paths.jwt_key.display());
            Ok(())
        }
        CaCommand::IssueIdentity {
            spiffe_id,
            ttl,
            out,
            ca_dir,
        } => {
            let spiffe_id = SpiffeId::new(&spiffe_id)
                .with_context(|| format!("invalid SPIFFE ID {spiffe_id:?}"))?;
            let trust_domain = TrustDomain::new(spiffe_id.trust_domain_name())?;
            let now = SystemTime::now();
            let authority =
                Authority::load(&jitid::config::CaPaths::in_dir(&ca_dir), &trust_domain, now)
                    .with_context(|| format!("loading the CA in {}", ca_dir.display()))?;
            let cert_path = out.join("identity.pem");
            let key_path = out.join("identity.key");
            for path in [&cert_path, &key_path] {
                if path.exists() {
                    bail!(
                        "{} already exists; refusing to overwrite it",
                        path.display()
                    );
                }
            }
            let issued = authority.issue_identity(
                LeafRequest {
                    spiffe_id: &spiffe_id,
                    expires_at: now + ttl,
                    dns_names: &[],
                    ip_addresses: &[],
                },
                now,
            )?;
            keyfile::create_private_dir(&out)?;
            keyfile::write_new(&key_path, issued.key_pem().as_bytes(), KEY_MODE)?;
            keyfile::write_new(&cert_path, issued.chain_pem().as_bytes(), PUBLIC_MODE)?;
            println!(
                "issued attestation identity {spiffe_id}, valid until {}",
                humantime::format_rfc3339_seconds(issued.not_after)
            );
            println!("  certificate  {}", cert_path.display());
            println!("  key (0600)   {}", key_path.display());
            Ok(())
        }
    }
}

async fn connect(conn: &ConnArgs, need_identity: bool) -> anyhow::Result<Client> {
    let identity = match (&conn.cert, &conn.key) {
        (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
        (None, None) if !need_identity => None,
        (None, None) => {
            bail!("no attestation identity: set --cert and --key (or JITID_CERT and JITID_KEY)")
        }
        _ => bail!("--cert and --key (JITID_CERT, JITID_KEY) go together"),
    };
    let config = ClientConfig::from_files(&conn.server, conn.ca(), identity)?;
    Ok(Client::connect(config).await?)
}

fn svid_request(args: &GrantArgs) -> SvidRequest {
    SvidRequest {
        break_glass: args.break_glass,
        grant_id: args.grant.clone().unwrap_or_default(),
        ..args.request.to_svid_request()
    }
}

// === impl RequestArgs ===

impl RequestArgs {
    /// The request these flags describe, for a new grant.
    fn to_svid_request(&self) -> SvidRequest {
        SvidRequest {
            entitlement: self.entitlement.clone().unwrap_or_default(),
            actions: self.actions.clone(),
            task_id: self.task.clone().unwrap_or_default(),
            ttl: self.ttl,
            justification: self.justification.clone().unwrap_or_default(),
            ticket: self.ticket.clone().unwrap_or_default(),
            labels: self.labels.iter().cloned().collect(),
            ..SvidRequest::default()
        }
    }
}

/// The request to mint with: as given, or with `--wait`, under a grant
/// requested now and approved while we wait.
async fn approved_request(client: &Client, args: &GrantArgs) -> anyhow::Result<SvidRequest> {
    let request = svid_request(args);
    if !args.wait {
        return Ok(request);
    }
    let grant = client.request_grant(&request).await?;
    let summary = grant.summary.clone().unwrap_or_default();
    let grant = if grant.state() == pb::GrantState::Pending {
        eprintln!(
            "grant {} for {} is pending approval; an approver runs: jitid approve {}",
            summary.grant_id, summary.entitlement, summary.grant_id
        );
        client.wait_for_grant(&summary.grant_id).await?
    } else {
        grant
    };
    match grant.state() {
        pb::GrantState::Active => {}
        state => {
            return Err(Refused(format!(
                "grant {} was not approved: {}{}",
                summary.grant_id,
                state_name(state.into()),
                if grant.end_reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", grant.end_reason)
                }
            ))
            .into());
        }
    }
    // The TTL went into the grant; the credential lasts as long as it.
    Ok(SvidRequest::under_grant(&summary.grant_id))
}

async fn fetch_x509(args: FetchX509Args) -> anyhow::Result<()> {
    let client = connect(&args.conn, true).await?;
    let request = approved_request(&client, &args.grant).await?;
    let svid = client.fetch_x509_svid(&request).await?;
    write_svid_files(&args.out, &svid)?;
    match args.output {
        Output::Json => {
            let mut value = grant_json(&svid.grant);
            value["serial"] = json!(svid.serial);
            value["files"] = json!({
                "svid": args.out.join(SVID_FILE),
                "key": args.out.join(KEY_FILE),
                "bundle": args.out.join(BUNDLE_FILE),
            });
            println!("{value}");
        }
        Output::Text => {
            print_grant(&svid.grant);
            println!("serial       {}", svid.serial);
            println!(
                "wrote        {}/svid.pem (chain), svid.key (0600), bundle.pem",
                args.out.display()
            );
        }
    }
    Ok(())
}

/// The X.509-SVID chain, leaf first, in a directory `fetch x509` or `exec`
/// writes.
const SVID_FILE: &str = "svid.pem";
/// Its private key (0600).
const KEY_FILE: &str = "svid.key";
/// The trust anchors.
const BUNDLE_FILE: &str = "bundle.pem";

/// Writes key first, then chain, then bundle, each atomically, so a reader
/// that sees the new chain also finds the new key.
fn write_svid_files(out: &Path, svid: &jitid::client::X509Svid) -> anyhow::Result<()> {
    keyfile::create_private_dir(out)?;
    keyfile::write_replace(&out.join(KEY_FILE), svid.key_pem().as_bytes(), KEY_MODE)?;
    keyfile::write_replace(
        &out.join(SVID_FILE),
        svid.chain_pem().as_bytes(),
        PUBLIC_MODE,
    )?;
    keyfile::write_replace(
        &out.join(BUNDLE_FILE),
        svid.bundle_pem().as_bytes(),
        PUBLIC_MODE,
    )?;
    Ok(())
}

async fn fetch_jwt(args: FetchJwtArgs) -> anyhow::Result<()> {
    let client = connect(&args.conn, true).await?;
    let mut request = approved_request(&client, &args.grant).await?;
    request.bind_to_certificate = args.bind;
    let svid = client.fetch_jwt_svid(&request, &args.audience).await?;
    match args.output {
        Output::Json => {
            let mut value = grant_json(&svid.grant);
            value["jti"] = json!(svid.jti);
            value["token"] = json!(svid.token);
            println!("{value}");
        }
        Output::Text => println!("{}", svid.token),
    }
    Ok(())
}

async fn bundle(args: BundleArgs) -> anyhow::Result<()> {
    let client = connect(&args.conn, false).await?;
    let bundle = client.fetch_bundle().await?;
    match args.format {
        BundleFormat::Spiffe => print!("{}", String::from_utf8_lossy(&bundle.spiffe_json)),
        BundleFormat::Pem => {
            for cert in &bundle.x509_authorities {
                print!(
                    "{}",
                    jitid::crypto::der_to_pem("CERTIFICATE", cert.as_ref())
                );
            }
        }
    }
    Ok(())
}

fn grant_json(grant: &GrantInfo) -> serde_json::Value {
    json!({
        "grant_id": grant.grant_id,
        "spiffe_id": grant.spiffe_id,
        "entitlement": grant.entitlement,
        "actions": grant.actions,
        "task_id": grant.task_id,
        "expires_at": humantime::format_rfc3339_seconds(grant.expires_at).to_string(),
    })
}

fn print_grant(grant: &GrantInfo) {
    println!("spiffe id    {}", grant.spiffe_id);
    println!("grant        {}", grant.grant_id);
    println!("entitlement  {}", grant.entitlement);
    println!("actions      {}", grant.actions.join(" "));
    println!("task         {}", grant.task_id);
    println!(
        "expires      {}",
        humantime::format_rfc3339_seconds(grant.expires_at)
    );
}

async fn grants(command: GrantsCommand) -> anyhow::Result<()> {
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
                })
                .await?;
            match output {
                Output::Json => {
                    let list: Vec<serde_json::Value> =
                        grants.iter().map(grant_record_json).collect();
                    println!("{}", serde_json::Value::Array(list));
                }
                Output::Text => {
                    for grant in &grants {
                        let summary = grant.summary.clone().unwrap_or_default();
                        println!(
                            "{}  {:<9}  {}  task {}  {}  expires {}",
                            summary.grant_id,
                            state_name(grant.state),
                            summary.entitlement,
                            summary.task_id,
                            summary.spiffe_id,
                            timestamp_text(summary.expires_at.as_ref()),
                        );
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
                Output::Json => println!("{}", grant_record_json(&grant)),
                Output::Text => {
                    let summary = grant.summary.clone().unwrap_or_default();
                    println!("grant        {}", summary.grant_id);
                    println!("state        {}", state_name(grant.state));
                    if !grant.end_reason.is_empty() {
                        println!("ended        {}", grant.end_reason);
                    }
                    println!("spiffe id    {}", summary.spiffe_id);
                    println!("entitlement  {}", summary.entitlement);
                    println!("actions      {}", summary.actions.join(" "));
                    println!("task         {}", summary.task_id);
                    println!("created      {}", timestamp_text(grant.created_at.as_ref()));
                    println!(
                        "expires      {}",
                        timestamp_text(summary.expires_at.as_ref())
                    );
                    if !grant.justification.is_empty() {
                        println!("why          {}", grant.justification);
                    }
                    if !grant.ticket.is_empty() {
                        println!("ticket       {}", grant.ticket);
                    }
                    if grant.break_glass {
                        println!("break-glass  yes (reviewed after use)");
                    }
                    for approval in &grant.approvals {
                        println!(
                            "approved by  {} at {}",
                            approval.approver,
                            timestamp_text(approval.at.as_ref())
                        );
                    }
                    if let Ok(decision) = serde_json::from_str::<serde_json::Value>(&grant.decision)
                    {
                        println!(
                            "decision     {}",
                            decision["outcome"].as_str().unwrap_or("")
                        );
                        for rule in decision["matched"].as_array().into_iter().flatten() {
                            println!("  matched    {}", rule.as_str().unwrap_or(""));
                        }
                    }
                    for credential in &grant.credentials {
                        println!(
                            "credential   {} {}{} expires {}",
                            credential.kind,
                            credential.id,
                            if credential.revoked { " (revoked)" } else { "" },
                            timestamp_text(credential.expires_at.as_ref()),
                        );
                    }
                }
            }
            Ok(())
        }
    }
}

async fn revoke(args: RevokeArgs) -> anyhow::Result<()> {
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
        println!("revoked credential");
    }
    if outcome.task_revoked {
        println!("revoked the task for every holder");
    }
    for grant in &outcome.grant_ids {
        println!("revoked grant {grant}");
    }
    if !outcome.credential_revoked && !outcome.task_revoked && outcome.grant_ids.is_empty() {
        println!("nothing was live to revoke");
    }
    Ok(())
}

async fn complete(args: CompleteArgs) -> anyhow::Result<()> {
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
        println!("completed grant {grant}");
    }
    if ended.is_empty() {
        println!("no active grant to complete");
    }
    Ok(())
}

async fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let client = connect(&args.conn, true).await?;
    let response = match (&args.x509, &args.jwt) {
        (Some(path), _) => {
            let chain = ca::read_certs(path)?;
            client.verify_x509(&chain).await?
        }
        (None, Some(token)) => {
            let audience = args.audience.as_deref().unwrap_or_default();
            client.verify_jwt(token.trim(), audience).await?
        }
        (None, None) => bail!("give --x509 FILE or --jwt TOKEN --audience AUD"),
    };
    let status = match pb::VerifyStatus::try_from(response.status) {
        Ok(pb::VerifyStatus::Valid) => "VALID",
        Ok(pb::VerifyStatus::Revoked) => "REVOKED",
        Ok(pb::VerifyStatus::Expired) => "EXPIRED",
        Ok(pb::VerifyStatus::Unknown) => "UNKNOWN",
        Ok(pb::VerifyStatus::Invalid) => "INVALID",
        _ => "UNSPECIFIED",
    };
    match args.output {
        Output::Json => println!(
            "{}",
            json!({
                "status": status,
                "reason": response.reason,
                "spiffe_id": response.spiffe_id,
                "grant_id": response.grant_id,
                "entitlement": response.entitlement,
                "actions": response.actions,
                "task_id": response.task_id,
                "credential_id": response.credential_id,
                "expires_at": timestamp_text(response.expires_at.as_ref()),
            })
        ),
        Output::Text => {
            println!("{status}: {}", response.reason);
            if !response.spiffe_id.is_empty() {
                println!("spiffe id    {}", response.spiffe_id);
                println!("grant        {}", response.grant_id);
                println!("actions      {}", response.actions.join(" "));
                println!("task         {}", response.task_id);
                println!(
                    "expires      {}",
                    timestamp_text(response.expires_at.as_ref())
                );
            }
        }
    }
    if status != "VALID" {
        return Err(NotValid {
            status,
            reason: response.reason,
        }
        .into());
    }
    Ok(())
}

fn state_name(state: i32) -> &'static str {
    match pb::GrantState::try_from(state) {
        Ok(pb::GrantState::Pending) => "pending",
        Ok(pb::GrantState::Active) => "active",
        Ok(pb::GrantState::Denied) => "denied",
        Ok(pb::GrantState::Completed) => "completed",
        Ok(pb::GrantState::Revoked) => "revoked",
        Ok(pb::GrantState::Expired) => "expired",
        _ => "unknown",
    }
}

fn timestamp_text(timestamp: Option<&prost_types::Timestamp>) -> String {
    timestamp
        .and_then(|t| u64::try_from(t.seconds).ok())
        .map(|seconds| {
            humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds))
                .to_string()
        })
        .unwrap_or_default()
}

fn grant_record_json(grant: &pb::GrantRecord) -> serde_json::Value {
    let summary = grant.summary.clone().unwrap_or_default();
    json!({
        "grant_id": summary.grant_id,
        "state": state_name(grant.state),
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
