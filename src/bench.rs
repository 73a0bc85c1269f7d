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
    Client, ClientConfig, ClientError, CredentialClaims, RevocationCache, SvidRequest,
};
use crate::proto::v1 as pb;

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// IssueX509Svid from a pre-made CSR.
    X509,
    /// IssueJwtSvid.
    Jwt,
    /// Verify of a JWT-SVID (signature, expiry and liveness).
    Verify,
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
    /// How long to run, unless `requests` is set.
    pub duration: Duration,
    /// Stop after this many requests instead.
    pub requests: Option<u64>,
    /// What to ask for.
    pub request: SvidRequest,
    /// A new TLS connection per request (the CI-job pattern).
    pub new_connection: bool,
    /// Where the server is and who we are.
    pub client: ClientConfig,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// The mode.
    pub mode: Mode,
    /// Workers.
    pub concurrency: usize,
    /// Wall time of the timed part.
    pub elapsed: Duration,
    /// Successful requests.
    pub ok: u64,
    /// Failed requests by gRPC code (or "connect").
    pub errors: BTreeMap<String, u64>,
    /// Latencies of successful requests, sorted.
    pub latencies: Vec<Duration>,
    /// Revocation mode: strict `Verify` answers that were not REVOKED.
    pub strict_misses: u64,
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
}

/// One unit of work a worker repeats.
#[derive(Clone)]
enum Work {
    X509 { csrs: Arc<Vec<Vec<u8>>> },
    Jwt,
    Verify { token: Arc<String> },
}

/// Runs a benchmark.
pub async fn run(mut config: BenchConfig) -> Result<BenchReport, BenchError> {
    // Requests the server sheds are counted under errors, not retried.
    config.client.retry = crate::client::RetryPolicy::none();
    if config.mode == Mode::Revocation {
        return run_revocation(config).await;
    }
    let setup = Client::connect(config.client.clone()).await?;
    let work = match config.mode {
        Mode::X509 => {
            // Keys and CSRs are made before the clock starts.
            let count = config
                .requests
                .map_or(512, |n| n.min(512))
                .max(config.concurrency as u64) as usize;
            let mut csrs = Vec::with_capacity(count);
            for _ in 0..count {
                let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
                let mut params = rcgen::CertificateParams::default();
                params.distinguished_name = rcgen::DistinguishedName::new();
                csrs.push(params.serialize_request(&key)?.der().to_vec());
            }
            Work::X509 {
                csrs: Arc::new(csrs),
            }
        }
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

    let issued = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + config.duration;
    let started = Instant::now();
    let mut workers = Vec::with_capacity(config.concurrency);
    for worker in 0..config.concurrency.max(1) {
        let client = if config.new_connection {
            None
        } else {
            Some(Client::connect(config.client.clone()).await?)
        };
        let config = config.clone();
        let work = work.clone();
        let issued = issued.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            let mut n = worker;
            loop {
                let claimed = issued.fetch_add(1, Ordering::Relaxed);
                if config.requests.is_some_and(|limit| claimed >= limit)
                    || (config.requests.is_none() && Instant::now() >= deadline)
                {
                    break;
                }
                let began = Instant::now();
                let result = match &client {
                    Some(client) => once(client, &config, &work, n).await,
                    None => match Client::connect(config.client.clone()).await {
                        Ok(client) => once(&client, &config, &work, n).await,
                        Err(error) => Err(error),
                    },
                };
                match result {
                    Ok(()) => latencies.push(began.elapsed()),
                    Err(error) => *errors.entry(error_name(&error)).or_default() += 1,
                }
                n += config.concurrency;
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for worker in workers {
        if let Ok((worker_latencies, worker_errors)) = worker.await {
            latencies.extend(worker_latencies);
            for (code, count) in worker_errors {
                *errors.entry(code).or_default() += count;
            }
        }
    }
    let elapsed = started.elapsed();
    latencies.sort();
    Ok(BenchReport {
        mode: config.mode,
        concurrency: config.concurrency,
        elapsed,
        ok: latencies.len() as u64,
        errors,
        latencies,
        strict_misses: 0,
    })
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
    let elapsed = started.elapsed();
    latencies.sort();
    Ok(BenchReport {
        mode: Mode::Revocation,
        concurrency: 1,
        elapsed,
        ok: latencies.len() as u64,
        errors,
        latencies,
        strict_misses,
    })
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
        let mut text = format!(
            "mode {:?}, concurrency {}, {:.1} s\nok {}, errors: {errors}\nthroughput {:.0}/s\nlatency ms  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}\n",
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
        if self.mode == Mode::Revocation {
            text.push_str(&format!(
                "strict Verify not yet REVOKED right after Revoke returned: {}\n",
                self.strict_misses
            ));
        }
        text
    }
}
