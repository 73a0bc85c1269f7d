//! `jitid bench`: load-test a running server (or, with `--crypto-only`,
//! the machine's ceiling for the same cryptography).

use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use jitid::client::{ClientConfig, SvidRequest};

use super::args::{ConnArgs, duration};
use super::output::Output;

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum BenchMode {
    X509,
    Jwt,
    Verify,
    /// A CI job: new connection, new key, X.509-SVID, CompleteTask.
    Exec,
    Revocation,
}

#[derive(Args)]
pub(crate) struct BenchArgs {
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

pub(crate) async fn bench(args: BenchArgs) -> anyhow::Result<()> {
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
        let client = ClientConfig::from_files(
            &args.conn.server.server,
            args.conn.server.ca()?,
            Some((cert, key)),
        )?;
        let mut watch = Vec::new();
        for pid in args.server_pids {
            watch.push(cpu::Process::new(pid).with_context(|| format!("no process {pid}"))?);
        }
        let listener = server_addr(&args.conn.server.server).and_then(cpu::listener_of);
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
        Output::Json => outln!("{}", report.to_json()),
        Output::Text => out!("{}", report.to_text()),
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
