//! Admission control: how many RPCs that do work the server takes on at
//! once, and how fast each caller may send them. A request past either
//! limit is refused at once, before any work, with RESOURCE_EXHAUSTED and
//! the gRPC retry pushback trailer (`grpc-retry-pushback-ms`, gRPC A6), so
//! overload shows as fast refusals rather than growing latency and memory.
//! Refusals are counted, not audited, and reported at most once a second.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::clock::Clock as _;
use governor::{DefaultKeyedRateLimiter, Quota};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;
use tonic::metadata::{MetadataMap, MetadataValue};

use crate::config::{AdmissionConfig, CallerRate};
use crate::issuer::Caller;
use crate::proto::RETRY_PUSHBACK_TRAILER as RETRY_PUSHBACK;
use crate::spiffe_id::SpiffeId;

/// The retry hint when the server is busy. An admitted issuance takes a
/// few milliseconds (p99 3 to 5 ms in docs/benchmarks.md), so the default 256
/// in flight drain in about 25 ms at the measured 10,000 a second: 50 ms
/// lets them drain about twice before the shed callers return, and adds
/// little to a caller's wait. Client jitter spreads the returns.
const BUSY_RETRY_AFTER: Duration = Duration::from_millis(50);

/// Callers whose bucket has filled up again are forgotten after every
/// this many rate checks, so the limiter holds the callers of the last
/// few seconds, not every caller ever seen.
const FORGET_EVERY: u64 = 1024;

/// How often shedding is reported in the log, at most.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Decides whether a request is worked on now or refused.
#[derive(Debug)]
pub(crate) struct Admission {
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    callers: Option<CallerLimits>,
    sheds: Sheds,
}

/// Proof that a request was admitted: it counts as in flight until
/// dropped.
#[derive(Debug)]
#[must_use = "the request counts as in flight only while this is held"]
pub(crate) struct Admitted {
    _permit: OwnedSemaphorePermit,
}

/// One token bucket per caller SPIFFE ID.
struct CallerLimits {
    limiter: DefaultKeyedRateLimiter<SpiffeId>,
    rate: CallerRate,
    checks: AtomicU64,
}

/// Refusals since the last report.
#[derive(Debug)]
struct Sheds {
    busy: AtomicU64,
    rate_limited: AtomicU64,
    started: Instant,
    /// Milliseconds after `started` before which no report is written.
    quiet_until: AtomicU64,
}

// === impl Admission ===

impl Admission {
    pub(crate) fn new(config: &AdmissionConfig) -> Self {
        Self {
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            max_in_flight: config.max_in_flight,
            callers: config.caller_rate.and_then(CallerLimits::new),
            sheds: Sheds {
                busy: AtomicU64::new(0),
                rate_limited: AtomicU64::new(0),
                started: Instant::now(),
                quiet_until: AtomicU64::new(0),
            },
        }
    }

    /// Admits a request that has no attested caller yet (a join token
    /// exchange), or refuses it at once when the server is working on
    /// `max_in_flight` requests already. Never waits.
    pub(crate) fn admit_unattested(&self) -> Result<Admitted, Status> {
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            self.sheds.count(&self.sheds.busy, self.max_in_flight);
            return Err(refusal(
                format!("server busy: {} requests in flight", self.max_in_flight),
                BUSY_RETRY_AFTER,
            ));
        };
        Ok(Admitted { _permit: permit })
    }

    /// Admits `caller`'s request, or refuses it at once: the server is
    /// working on `max_in_flight` requests already, or the caller is over
    /// its rate. Never waits.
    pub(crate) fn admit(&self, caller: &Caller) -> Result<Admitted, Status> {
        // The in-flight limit first, so a request refused for it does not
        // spend the caller's rate.
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            self.sheds.count(&self.sheds.busy, self.max_in_flight);
            return Err(refusal(
                format!("server busy: {} requests in flight", self.max_in_flight),
                BUSY_RETRY_AFTER,
            ));
        };
        if let Some(callers) = &self.callers
            && let Err(wait) = callers.check(&caller.spiffe_id)
        {
            self.sheds
                .count(&self.sheds.rate_limited, self.max_in_flight);
            return Err(refusal(
                format!(
                    "rate limit for {}: {} requests/s in bursts of {}",
                    caller.spiffe_id, callers.rate.per_second, callers.rate.burst
                ),
                wait,
            ));
        }
        Ok(Admitted { _permit: permit })
    }
}

/// Whether `status` is a refusal by [`Admission`].
pub(crate) fn is_shed(status: &Status) -> bool {
    status.code() == tonic::Code::ResourceExhausted
        && status.metadata().contains_key(RETRY_PUSHBACK)
}

/// RESOURCE_EXHAUSTED saying `why` and when to retry, in the message and
/// in the pushback trailer (whole milliseconds, rounded up).
fn refusal(why: String, retry_after: Duration) -> Status {
    let millis = u64::try_from(retry_after.as_micros().div_ceil(1000))
        .unwrap_or(u64::MAX)
        .max(1);
    let mut metadata = MetadataMap::new();
    metadata.insert(RETRY_PUSHBACK, MetadataValue::from(millis));
    Status::with_metadata(
        tonic::Code::ResourceExhausted,
        format!("{why}; retry after {millis} ms"),
        metadata,
    )
}

// === impl CallerLimits ===

impl CallerLimits {
    /// `None` for a rate too small to express (config validation keeps
    /// rates at or above 0.001 per second).
    fn new(rate: CallerRate) -> Option<Self> {
        let period = Duration::try_from_secs_f64(1.0 / rate.per_second).ok()?;
        let burst = NonZeroU32::new(rate.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period)?.allow_burst(burst);
        Some(Self {
            limiter: DefaultKeyedRateLimiter::keyed(quota),
            rate,
            checks: AtomicU64::new(0),
        })
    }

    /// Takes a token from `caller`'s bucket, or says how long until it has
    /// one.
    fn check(&self, caller: &SpiffeId) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % FORGET_EVERY == FORGET_EVERY - 1 {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(caller)
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }
}

impl fmt::Debug for CallerLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallerLimits")
            .field("rate", &self.rate)
            .field("callers", &self.limiter.len())
            .finish_non_exhaustive()
    }
}

// === impl Sheds ===

impl Sheds {
    /// Counts a refusal on `counter`, and reports the counts when the
    /// last report is more than [`REPORT_EVERY`] old. A refusal after a
    /// quiet spell is reported at once; those that follow within the
    /// second are reported with the first refusal after it.
    fn count(&self, counter: &AtomicU64, max_in_flight: usize) {
        counter.fetch_add(1, Ordering::Relaxed);
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let quiet_until = self.quiet_until.load(Ordering::Relaxed);
        let period = u64::try_from(REPORT_EVERY.as_millis()).unwrap_or(u64::MAX);
        if now < quiet_until
            || self
                .quiet_until
                .compare_exchange(
                    quiet_until,
                    now.saturating_add(period),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return;
        }
        let busy = self.busy.swap(0, Ordering::Relaxed);
        let rate_limited = self.rate_limited.swap(0, Ordering::Relaxed);
        tracing::warn!(
            busy,
            rate_limited,
            max_in_flight,
            "shedding load: refused {busy} requests at the in-flight limit and {rate_limited} at callers' rate limits since the last report"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(id: &str) -> Caller {
        Caller {
            spiffe_id: SpiffeId::new(id).unwrap(),
            source: None,
            certificate_thumbprint: None,
            attestation: crate::issuer::Attestation::Identity(crate::issuer::IdentityEvidence {
                serial: "01".to_owned(),
                not_before: std::time::SystemTime::UNIX_EPOCH,
                not_after: std::time::SystemTime::UNIX_EPOCH
                    + std::time::Duration::from_secs(4_000_000_000),
            }),
        }
    }

    fn pushback(status: &Status) -> u64 {
        status
            .metadata()
            .get(RETRY_PUSHBACK)
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    #[test]
    fn refuses_past_the_in_flight_limit_until_a_request_finishes() {
        let admission = Admission::new(&AdmissionConfig {
            max_in_flight: 2,
            caller_rate: None,
        });
        let ci = caller("spiffe://example.org/ci/runner");
        let first = admission.admit(&ci).unwrap();
        let _second = admission.admit(&ci).unwrap();
        let refused = admission.admit(&ci).unwrap_err();
        assert!(is_shed(&refused));
        assert_eq!(
            refused.message(),
            "server busy: 2 requests in flight; retry after 50 ms"
        );
        assert_eq!(pushback(&refused), 50);
        drop(first);
        let _third = admission.admit(&ci).unwrap();
    }

    #[test]
    fn rate_limits_each_caller_on_its_own() {
        // One request per 1000 s after a burst of 3: the wait is long
        // enough that no timing matters.
        let admission = Admission::new(&AdmissionConfig {
            max_in_flight: 10,
            caller_rate: Some(CallerRate {
                per_second: 0.001,
                burst: 3,
            }),
        });
        let ci = caller("spiffe://example.org/ci/runner");
        for _ in 0..3 {
            drop(admission.admit(&ci).unwrap());
        }
        let refused = admission.admit(&ci).unwrap_err();
        assert!(is_shed(&refused));
        assert!(
            refused.message().starts_with(
                "rate limit for spiffe://example.org/ci/runner: 0.001 requests/s in bursts of 3; retry after "
            ),
            "{}",
            refused.message()
        );
        let wait = pushback(&refused);
        assert!((990_000..=1_000_000).contains(&wait), "{wait}");
        // Another caller has its own bucket.
        let agent = caller("spiffe://example.org/agents/planner");
        let mut held: Vec<_> = (0..3).map(|_| admission.admit(&agent).unwrap()).collect();
        assert!(
            admission
                .admit(&agent)
                .unwrap_err()
                .message()
                .contains("rate limit")
        );
        // A request refused for its rate holds no slot: 7 more fit.
        for n in 0..7 {
            let worker = caller(&format!("spiffe://example.org/w/{n}"));
            held.push(admission.admit(&worker).unwrap());
        }
        // At the in-flight limit, even an over-rate caller is told the
        // server is busy (and keeps its rate for later).
        assert_eq!(
            admission.admit(&ci).unwrap_err().message(),
            "server busy: 10 requests in flight; retry after 50 ms"
        );
    }

    #[test]
    fn forgets_callers_whose_bucket_is_full_again() {
        let admission = Admission::new(&AdmissionConfig {
            max_in_flight: 1,
            caller_rate: Some(CallerRate {
                per_second: 1_000_000.0,
                burst: 1,
            }),
        });
        let callers = admission.callers.as_ref().unwrap();
        for n in 0..FORGET_EVERY * 3 {
            let _ = callers.check(&SpiffeId::new(&format!("spiffe://example.org/w/{n}")).unwrap());
        }
        // A microsecond refills a bucket, so the last purge kept few.
        assert!(
            callers.limiter.len() < 2 * FORGET_EVERY as usize,
            "{}",
            callers.limiter.len()
        );
    }

    #[test]
    fn other_statuses_are_not_sheds() {
        assert!(!is_shed(&Status::resource_exhausted(
            "too many revocation streams open; retry later"
        )));
        assert!(!is_shed(&Status::unavailable("down")));
    }
}
