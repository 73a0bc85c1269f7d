//! `jitid bench`: a load generator for sizing deployments, in the spirit
//! of redis-benchmark. It drives a running server through the client
//! library: keys and CSRs are made before the clock starts, each worker
//! holds its own connection (or opens one per request), and the report
//! gives throughput, latency percentiles and errors by status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::client::{
    Client, ClientConfig, ClientError, Connector, CredentialClaims, RevocationCache, SvidRequest,
};
use crate::proto::v1 as pb;

pub mod cpu;
mod crypto;

pub use crypto::run as run_crypto_only;

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// IssueX509Svid from a pre-made CSR.
    X509,
    /// IssueJwtSvid.
    Jwt,
    /// Verify of a JWT-SVID (signature, expiry and liveness).
    Verify,
    /// What a CI job does: a new connection and a new key per request, an
    /// X.509-SVID for a new task, then CompleteTask of its grant.
    Exec,
    /// Time from a Revoke returning until a RevocationCache following the
    /// stream knows it; also checks that the strict Verify sees it at once.
    Revocation,
}

/// How to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The mode.
    pub mode: Mode,
    /// Concurrent workers (ignored by `Revocation`, which is sequential).
    pub concurrency: usize,
    /// How long to measure, unless `requests` is set.
    pub duration: Duration,
    /// How long to run before measuring starts (duration runs only).
    pub warmup: Duration,
    /// Stop after this many requests instead.
    pub requests: Option<u64>,
    /// Requests per second in all, spread evenly over the workers (open
    /// loop); `None` sends each request as soon as the last returned.
    /// Once a worker falls behind, latency counts from when a request was
    /// due, so a server that falls behind shows it.
    pub rate: Option<f64>,
    /// What to ask for.
    pub request: SvidRequest,
    /// A new TLS connection per request (the CI-job pattern; `Exec`
    /// always does this).
    pub new_connection: bool,
    /// New connections resume the TLS session of an earlier one, as a
    /// long-lived client that reconnects does; without it each is a full
    /// mTLS handshake, as a new process makes.
    pub resume: bool,
    /// Where the server is and who we are.
    pub client: ClientConfig,
    /// Processes on this host whose CPU time the report gives per request
    /// (the server, redis-server).
    pub watch: Vec<cpu::Process>,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// The mode.
    pub mode: Mode,
    /// Workers.
    pub concurrency: usize,
    /// Wall time of the measured part.
    pub elapsed: Duration,
    /// Successful requests.
    pub ok: u64,
    /// Failed requests by gRPC code (or "connect").
    pub errors: BTreeMap<String, u64>,
    /// Latencies of successful requests, sorted.
    pub latencies: Vec<Duration>,
    /// Revocation mode: strict `Verify` answers that were not REVOKED.
    pub strict_misses: u64,
    /// CPU time each watched process (and this one) used while measuring.
    pub cpu: Vec<(cpu::Process, Duration)>,
    /// Resident memory of each watched process at the end, and its peak,
    /// in bytes.
    pub memory: Vec<(cpu::Process, u64, u64)>,
    /// Whether this is the `--crypto-only` ceiling, with no RPC.
    pub crypto_only: bool,
}

/// Errors that stop a run before it starts.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// Connecting or a setup request failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Making keys failed.
    #[error("key generation: {0}")]
    Key(#[from] rcgen::Error),
    /// Something else needed before the clock starts failed.
    #[error("{0}")]
    Setup(String),
}

/// One unit of work a worker repeats.
#[derive(Clone)]
enum Work {
    X509 { csrs: Arc<Vec<Vec<u8>>> },
    Jwt,
    Verify { token: Arc<String> },
    Exec { csrs: Arc<Vec<Vec<u8>>> },
}

/// `count` DER CSRs, each for a new P-256 key, made before timing starts.
fn make_csrs(count: usize) -> Result<Vec<Vec<u8>>, rcgen::Error> {
    (0..count)
        .map(|_| Ok(crate::client::new_key_and_csr()?.1))
        .collect()
}

/// How late a paced request may start before its latency counts from
/// when it was due: Tokio's timer has millisecond granularity.
const TIMER_SLACK: Duration = Duration::from_millis(2);

/// Runs a benchmark.
pub async fn run(mut config: BenchConfig) -> Result<BenchReport, BenchError> {
    // Requests the server sheds are counted under errors, not retried.
    config.client.retry = crate::client::RetryPolicy::none();
    if config.mode == Mode::Revocation {
        return run_revocation(config).await;
    }
    let setup = Client::connect(config.client.clone()).await?;
    // Keys and CSRs are made before the clock starts; exec gets a key per
    // request, up to 4096, then cycles.
    let csr_count = |cap: u64| {
        config
            .requests
            .map_or(cap, |n| n.min(cap))
            .max(config.concurrency as u64) as usize
    };
    let work = match config.mode {
        Mode::X509 => Work::X509 {
            csrs: Arc::new(make_csrs(csr_count(512))?),
        },
        Mode::Exec => Work::Exec {
            csrs: Arc::new(make_csrs(csr_count(4096))?),
        },
        Mode::Jwt => Work::Jwt,
        Mode::Verify | Mode::Revocation => {
            let svid = setup
                .fetch_jwt_svid(&config.request, &["jitid-bench".to_owned()])
                .await?;
            Work::Verify {
                token: Arc::new(svid.token),
            }
        }
    };
    let new_connection = config.new_connection || config.mode == Mode::Exec;
    let connector = Connector::new(&config.client)?;

    let claimed = Arc::new(AtomicU64::new(0));
    let warmup = if config.requests.is_some() {
        Duration::ZERO
    } else {
        config.warmup
    };
    let start = Instant::now();
    let measure_from = start + warmup;
    let deadline = measure_from + config.duration;
    let mut workers = Vec::with_capacity(config.concurrency);
    for worker in 0..config.concurrency.max(1) {
        let client = if new_connection {
            None
        } else {
            Some(connector.connect().await?)
        };
        let (config, work, claimed, connector) = (
            config.clone(),
            work.clone(),
            claimed.clone(),
            connector.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            let mut n = worker;
            // Open loop: worker w sends at start + (w + k * workers) / rate.
            let interval = config
                .rate
                .filter(|rate| *rate > 0.0)
                .map(|rate| Duration::from_secs_f64(1.0 / rate));
            let mut due = interval.map(|interval| start + interval * worker as u32);
            loop {
                if let Some(at) = due {
                    tokio::time::sleep_until(at.into()).await;
                }
                let now = Instant::now();
                let measured = match config.requests {
                    Some(limit) => {
                        if claimed.fetch_add(1, Ordering::Relaxed) >= limit {
                            break;
                        }
                        true
                    }
                    None if now >= deadline => break,
                    None => now >= measure_from,
                };
                // Paced: counted from when the request was due once the
                // worker has fallen behind, so a slow server cannot hide
                // its queue; a timer firing late by its own granularity
                // (a millisecond) is not the server's.
                let began = match due {
                    Some(at) if now.saturating_duration_since(at) > TIMER_SLACK => at,
                    _ => now,
                };
                if let (Some(at), Some(interval)) = (&mut due, interval) {
                    *at += interval * config.concurrency as u32;
                }
                let result = match &client {
                    Some(client) => once(client, &config, &work, n).await,
                    None => {
                        let connected = if config.resume {
                            connector.connect().await
                        } else {
                            Client::connect(config.client.clone()).await
                        };
                        match connected {
                            Ok(client) => once(&client, &config, &work, n).await,
                            Err(error) => Err(error),
                        }
                    }
                };
                if measured {
                    match result {
                        Ok(()) => latencies.push(began.elapsed()),
                        Err(error) => *errors.entry(error_name(&error)).or_default() += 1,
                    }
                }
                n += config.concurrency;
            }
            (latencies, errors)
        }));
    }
    let mut watch = config.watch.clone();
    watch.extend(cpu::Process::current().filter(|me| !watch.contains(me)));
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_before: Vec<_> = watch.iter().map(cpu::Process::cpu_time).collect();
    let mut report = BenchReport::new(config.mode, config.concurrency);
    for worker in workers {
        if let Ok((latencies, errors)) = worker.await {
            report.merge(latencies, errors);
        }
    }
    report.finish(measure_from.elapsed());
    report.memory = config
        .watch
        .iter()
        .filter_map(|process| {
            let (rss, peak) = process.memory()?;
            Some((process.clone(), rss, peak))
        })
        .collect();
    report.cpu = watch
        .into_iter()
        .zip(cpu_before)
        .filter_map(|(process, before)| {
            let used = process.cpu_time()?.checked_sub(before?)?;
            Some((process, used))
        })
        .collect();
    Ok(report)
}

async fn once(
    client: &Client,
    config: &BenchConfig,
    work: &Work,
    n: usize,
) -> Result<(), ClientError> {
    match work {
        Work::X509 { csrs } => client
            .issue_x509_from_csr(&config.request, csrs[n % csrs.len()].clone())
            .await
            .map(drop),
        Work::Jwt => client
            .fetch_jwt_svid(&config.request, &["jitid-bench".to_owned()])
            .await
            .map(drop),
        Work::Exec { csrs } => {
            let svid = client
                .issue_x509_from_csr(&config.request, csrs[n % csrs.len()].clone())
                .await?;
            client
                .complete_task(pb::complete_task_request::Target::GrantId(
                    svid.grant.grant_id,
                ))
                .await
                .map(drop)
        }
        Work::Verify { token } => {
            let response = client.verify_jwt(token, "jitid-bench").await?;
            if response.status == pb::VerifyStatus::Valid as i32 {
                Ok(())
            } else {
                Err(ClientError::InvalidResponse(format!(
                    "verify answered {} ({})",
                    response.status, response.reason
                )))
            }
        }
    }
}

/// Sequential: fetch (untimed), revoke, then time until the cache knows.
async fn run_revocation(config: BenchConfig) -> Result<BenchReport, BenchError> {
    let client = Client::connect(config.client.clone()).await?;
    let (cache, follower) = RevocationCache::follow(client.clone(), Duration::from_secs(3600));
    let requests = config.requests.unwrap_or(200);
    let mut latencies = Vec::with_capacity(requests as usize);
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut strict_misses = 0;
    // Wait until the cache has caught up (its first heartbeat, with the
    // epoch) before anything is timed.
    let ready_by = Instant::now() + Duration::from_secs(10);
    while cache.epoch().is_none() && Instant::now() < ready_by {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let claims_epoch = cache.epoch().unwrap_or_default();
    let started = Instant::now();
    for _ in 0..requests {
        let svid = client
            .fetch_jwt_svid(&config.request, &["jitid-bench".to_owned()])
            .await?;
        let jti = svid.jti.clone();
        if let Err(error) = client
            .revoke(
                pb::revoke_request::Target::GrantId(svid.grant.grant_id.clone()),
                "bench",
            )
            .await
        {
            *errors.entry(error_name(&error)).or_default() += 1;
            continue;
        }
        let revoked_at = Instant::now();
        let claims = CredentialClaims {
            grant_id: &svid.grant.grant_id,
            credential_id: &jti,
            task_id: &svid.grant.task_id,
            epoch: &claims_epoch,
            parent_grant_ids: &[],
        };
        let give_up = revoked_at + Duration::from_secs(5);
        let known = || cache.is_revoked(&claims).unwrap_or(false);
        while !known() && Instant::now() < give_up {
            tokio::task::yield_now().await;
        }
        if known() {
            latencies.push(revoked_at.elapsed());
        } else {
            *errors.entry("cache-timeout".to_owned()).or_default() += 1;
        }
        let strict = client.verify_jwt(&svid.token, "jitid-bench").await?;
        if strict.status != pb::VerifyStatus::Revoked as i32 {
            strict_misses += 1;
        }
    }
    follower.abort();
    let mut report = BenchReport::new(Mode::Revocation, 1);
    report.merge(latencies, errors);
    report.finish(started.elapsed());
    report.strict_misses = strict_misses;
    Ok(report)
}

fn error_name(error: &ClientError) -> String {
    match error {
        ClientError::Connect { .. } => "connect".to_owned(),
        ClientError::Status { code, .. } => format!("{code:?}"),
        ClientError::InvalidResponse(_) => "invalid-response".to_owned(),
        _ => "other".to_owned(),
    }
}

// === impl BenchReport ===

impl BenchReport {
    fn new(mode: Mode, concurrency: usize) -> Self {
        Self {
            mode,
            concurrency,
            elapsed: Duration::ZERO,
            ok: 0,
            errors: BTreeMap::new(),
            latencies: Vec::new(),
            strict_misses: 0,
            cpu: Vec::new(),
            memory: Vec::new(),
            crypto_only: false,
        }
    }

    /// Adds one worker's results.
    fn merge(&mut self, latencies: Vec<Duration>, errors: BTreeMap<String, u64>) {
        self.latencies.extend(latencies);
        for (code, count) in errors {
            *self.errors.entry(code).or_default() += count;
        }
    }

    fn finish(&mut self, elapsed: Duration) {
        self.elapsed = elapsed;
        self.latencies.sort_unstable();
        self.ok = self.latencies.len() as u64;
    }

    /// CPU time per successful request and cores kept busy, for each
    /// watched process.
    pub fn cpu_per_request(&self) -> Vec<(&cpu::Process, Duration, f64)> {
        self.cpu
            .iter()
            .map(|(process, used)| {
                let per = Duration::from_secs_f64(used.as_secs_f64() / self.ok.max(1) as f64);
                let busy = used.as_secs_f64() / self.elapsed.as_secs_f64().max(f64::EPSILON);
                (process, per, busy)
            })
            .collect()
    }

    /// Successful requests per second.
    pub fn throughput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// The latency at quantile `q` (0 to 1) of successful requests.
    pub fn percentile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let index = ((self.latencies.len() as f64 - 1.0) * q).round() as usize;
        self.latencies[index.min(self.latencies.len() - 1)]
    }

    /// The report as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        json!({
            "mode": format!("{:?}", self.mode).to_lowercase(),
            "concurrency": self.concurrency,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "ok": self.ok,
            "errors": self.errors,
            "throughput_per_s": self.throughput(),
            "latency_ms": {
                "p50": ms(self.percentile(0.50)),
                "p90": ms(self.percentile(0.90)),
                "p99": ms(self.percentile(0.99)),
                "p99_9": ms(self.percentile(0.999)),
                "max": ms(self.latencies.last().copied().unwrap_or_default()),
            },
            "strict_verify_misses": self.strict_misses,
            "crypto_only": self.crypto_only,
            "cpu": self.cpu_per_request().iter().map(|(process, per, busy)| json!({
                "pid": process.pid,
                "name": process.name,
                "load_generator": process.pid == std::process::id(),
                "us_per_request": per.as_secs_f64() * 1e6,
                "cores_busy": busy,
            })).collect::<Vec<_>>(),
            "memory": self.memory.iter().map(|(process, rss, peak)| json!({
                "pid": process.pid,
                "name": process.name,
                "rss_bytes": rss,
                "peak_rss_bytes": peak,
            })).collect::<Vec<_>>(),
        })
    }

    /// The report as text.
    pub fn to_text(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let errors = if self.errors.is_empty() {
            "none".to_owned()
        } else {
            self.errors
                .iter()
                .map(|(code, count)| format!("{code} {count}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let what = if self.crypto_only {
            " (crypto only, no RPC)"
        } else {
            ""
        };
        let mut text = format!(
            "mode {:?}{what}, concurrency {}, {:.1} s\nok {}, errors: {errors}\nthroughput {:.0}/s\nlatency ms  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}\n",
            self.mode,
            self.concurrency,
            self.elapsed.as_secs_f64(),
            self.ok,
            self.throughput(),
            ms(self.percentile(0.50)),
            ms(self.percentile(0.90)),
            ms(self.percentile(0.99)),
            ms(self.percentile(0.999)),
            ms(self.latencies.last().copied().unwrap_or_default()),
        );
        for (process, per, busy) in self.cpu_per_request() {
            text.push_str(&format!(
                "cpu {} {} (pid {}): {:.0} µs/request, {:.2} cores busy\n",
                process.role(),
                process.name,
                process.pid,
                per.as_secs_f64() * 1e6,
                busy
            ));
        }
        for (process, rss, peak) in &self.memory {
            text.push_str(&format!(
                "memory {} {} (pid {}): {:.1} MiB resident, peak {:.1} MiB\n",
                process.role(),
                process.name,
                process.pid,
                *rss as f64 / 1_048_576.0,
                *peak as f64 / 1_048_576.0
            ));
        }
        if self.mode == Mode::Revocation {
            text.push_str(&format!(
                "strict Verify not yet REVOKED right after Revoke returned: {}\n",
                self.strict_misses
            ));
        }
        text
    }
}
