//! `jitid bench --crypto-only`: the machine's ceiling for the cryptography
//! one issuance needs, measured through jitid's own CA code with no RPC,
//! no TLS and no store: verify a CSR and sign an X.509-SVID, or sign a
//! JWT-SVID. One OS thread per worker, so `--concurrency` set to the core
//! count gives the ceiling on those cores.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::ca::{self, Authority, GrantExtension, JwtSvidClaims, LeafRequest, VerifiedCsr};
use crate::spiffe_id::{SpiffeId, TrustDomain};

use super::{BenchError, BenchReport, Mode};

/// A throwaway CA in a private temporary directory, removed on drop.
struct ScratchCa {
    dir: std::path::PathBuf,
    authority: Authority,
}

impl ScratchCa {
    fn new(trust_domain: &TrustDomain, now: SystemTime) -> Result<Self, BenchError> {
        let dir = std::env::temp_dir().join(format!("jitid-bench-ca-{}", uuid::Uuid::new_v4()));
        let options = ca::InitOptions {
            root_ttl: Duration::from_secs(86_400),
            signing_ttl: Duration::from_secs(86_400),
        };
        let made = ca::init(&dir, trust_domain, now, &options)
            .and_then(|paths| Authority::load(&paths, trust_domain, now));
        match made {
            Ok(authority) => Ok(Self { dir, authority }),
            Err(error) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(BenchError::Setup(error.to_string()))
            }
        }
    }
}

impl Drop for ScratchCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs the crypto ceiling for `mode` (x509 and exec: CSR verify +
/// certificate signing; jwt: JWT signing).
pub fn run(
    mode: Mode,
    concurrency: usize,
    duration: Duration,
    requests: Option<u64>,
) -> Result<BenchReport, BenchError> {
    let now = SystemTime::now();
    let trust_domain = TrustDomain::new("example.org").map_err(setup)?;
    let scratch = ScratchCa::new(&trust_domain, now)?;
    let spiffe_id = SpiffeId::new("spiffe://example.org/ci/runner/task/bench").map_err(setup)?;
    let csrs = Arc::new(super::make_csrs(64)?);
    let op: Arc<dyn Fn(usize) -> Result<(), String> + Send + Sync> = match mode {
        Mode::X509 | Mode::Exec => {
            Arc::new(move |n| {
                let now = SystemTime::now();
                let csr =
                    VerifiedCsr::from_der(&csrs[n % csrs.len()]).map_err(|e| e.to_string())?;
                // A positive serial that does not start with a zero byte.
                let mut serial = uuid::Uuid::new_v4().into_bytes();
                serial[0] = (serial[0] & 0x7f) | 0x01;
                scratch
                    .authority
                    .sign_x509_svid(
                        &csr,
                        LeafRequest {
                            spiffe_id: &spiffe_id,
                            expires_at: now + Duration::from_secs(300),
                            dns_names: &[],
                            ip_addresses: &[],
                        },
                        &extension(),
                        &serial,
                        now,
                    )
                    .map(drop)
                    .map_err(|e| e.to_string())
            })
        }
        Mode::Jwt => Arc::new(move |_| {
            scratch
                .authority
                .sign_jwt_svid(&claims(&spiffe_id))
                .map(drop)
                .map_err(|e| e.to_string())
        }),
        Mode::Verify | Mode::Revocation => {
            return Err(BenchError::Setup(
                "--crypto-only measures issuance: use --mode x509, jwt or exec".to_owned(),
            ));
        }
    };

    let claimed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let threads: Vec<_> = (0..concurrency.max(1))
        .map(|worker| {
            let (op, claimed, limit) = (op.clone(), claimed.clone(), requests);
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                let mut errors: BTreeMap<String, u64> = BTreeMap::new();
                let mut n = worker;
                loop {
                    let claim = claimed.fetch_add(1, Ordering::Relaxed);
                    if limit.map_or(Instant::now() >= deadline, |limit| claim >= limit) {
                        break;
                    }
                    let began = Instant::now();
                    match op(n) {
                        Ok(()) => latencies.push(began.elapsed()),
                        Err(error) => *errors.entry(error).or_default() += 1,
                    }
                    n += 1;
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut report = BenchReport::new(mode, concurrency.max(1));
    for thread in threads {
        if let Ok((latencies, errors)) = thread.join() {
            report.merge(latencies, errors);
        }
    }
    report.finish(started.elapsed());
    report.crypto_only = true;
    Ok(report)
}

fn setup(error: impl std::fmt::Display) -> BenchError {
    BenchError::Setup(error.to_string())
}

/// A grant extension the size of a typical one.
fn extension() -> GrantExtension {
    GrantExtension {
        grant_id: uuid::Uuid::new_v4().to_string(),
        task_id: "bench-task".to_owned(),
        entitlement: "ci-publish".to_owned(),
        actions: vec!["artifacts:write".to_owned(), "cache:write".to_owned()],
        epoch: uuid::Uuid::new_v4().to_string(),
        break_glass: false,
        parent_grant_ids: Vec::new(),
    }
}

/// Claims the size of a typical JWT-SVID.
fn claims(spiffe_id: &SpiffeId) -> JwtSvidClaims {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    JwtSvidClaims {
        sub: spiffe_id.to_string(),
        aud: vec!["jitid-bench".to_owned()],
        exp: now + 300,
        iat: now,
        jti: uuid::Uuid::new_v4().to_string(),
        scope: "artifacts:write cache:write".to_owned(),
        jitid_grant: uuid::Uuid::new_v4().to_string(),
        jitid_task: "bench-task".to_owned(),
        jitid_entitlement: "ci-publish".to_owned(),
        jitid_epoch: uuid::Uuid::new_v4().to_string(),
        jitid_break_glass: false,
        jitid_parents: Vec::new(),
        act: None,
        cnf: None,
    }
}
