//! Retrying requests the server shed under load: the policy and the pure
//! arithmetic of its waits, the server's pushback plus exponential backoff
//! with full jitter. No clock and no randomness here: callers pass the
//! random sample in.

use std::time::Duration;

use super::rotating::unit;

/// How a [`Client`](super::Client) retries requests the server shed under
/// load: RESOURCE_EXHAUSTED with a `grpc-retry-pushback-ms` trailer
/// ([`ClientError::retry_after`](super::ClientError::retry_after)). The
/// server refuses those before doing any work, so retrying them is safe
/// for every RPC, issuing ones included. No other error is retried.
///
/// Before retry `n` (1 for the first) the client waits the server's
/// pushback plus a uniform random share of `base × 2^(n-1)` ("full
/// jitter"), so callers shed together do not return together; no wait is
/// longer than `max_delay`, and a pushback longer than that ends the
/// retries: the caller gets the error, with the pushback, and decides.
/// So one call waits at most `(max_attempts - 1) × max_delay` in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Most attempts of one call, the first included; 1 never retries.
    pub max_attempts: u32,
    /// The most jitter added to the first retry's wait; it doubles for
    /// each further retry.
    pub base: Duration,
    /// The longest wait before one retry.
    pub max_delay: Duration,
}

// === impl RetryPolicy ===

impl Default for RetryPolicy {
    /// 6 attempts, 100 ms base, 2 s cap. Against a busy server (a 50 ms
    /// pushback) the five waits are 50 ms plus up to 100, 200, 400, 800
    /// and 1,600 ms of jitter: under 3.5 seconds in all, with the retries
    /// of callers shed together spread over about 3 seconds.
    fn default() -> Self {
        Self {
            max_attempts: 6,
            base: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// Never retries: a shed request comes back as an error at once (for
    /// load generators such as `jitid bench`, which count them).
    pub const fn none() -> Self {
        Self {
            max_attempts: 1,
            base: Duration::ZERO,
            max_delay: Duration::ZERO,
        }
    }

    /// How long to wait before the next attempt, after attempt `attempt`
    /// (1 for the first) was shed with `pushback`; `None` to give up.
    /// `sample` is uniform in `[0, 1)`.
    pub fn delay(&self, attempt: u32, pushback: Duration, sample: f64) -> Option<Duration> {
        if attempt >= self.max_attempts || pushback > self.max_delay {
            return None;
        }
        let doublings = attempt.saturating_sub(1).min(31);
        let ceiling = self.base.saturating_mul(1 << doublings).min(self.max_delay);
        let jitter = Duration::try_from_secs_f64(ceiling.as_secs_f64() * unit(sample))
            .unwrap_or(ceiling)
            .min(ceiling);
        Some(pushback.saturating_add(jitter).min(self.max_delay))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn policy() -> RetryPolicy {
        RetryPolicy::default()
    }

    #[test]
    fn waits_the_pushback_plus_jitter_doubling_each_retry() {
        let pushback = 50 * MS;
        // No jitter drawn: the pushback alone.
        assert_eq!(policy().delay(1, pushback, 0.0), Some(pushback));
        // The most jitter: base, then doubling.
        assert_eq!(policy().delay(1, pushback, 1.0), Some(150 * MS));
        assert_eq!(policy().delay(2, pushback, 1.0), Some(250 * MS));
        assert_eq!(policy().delay(3, pushback, 1.0), Some(450 * MS));
        assert_eq!(policy().delay(4, pushback, 0.5), Some(450 * MS));
        assert_eq!(policy().delay(5, pushback, 1.0), Some(1650 * MS));
        // A pushback of 0 still gets jitter.
        assert_eq!(policy().delay(1, Duration::ZERO, 0.5), Some(50 * MS));
    }

    #[test]
    fn gives_up_after_max_attempts_or_on_a_pushback_past_the_cap() {
        assert!(policy().delay(5, 50 * MS, 0.5).is_some());
        assert_eq!(policy().delay(6, 50 * MS, 0.5), None);
        assert_eq!(policy().delay(u32::MAX, 50 * MS, 0.5), None);
        assert_eq!(policy().delay(1, 2001 * MS, 0.0), None);
        // A pushback of exactly the cap is waited, without jitter on top.
        assert_eq!(policy().delay(1, 2000 * MS, 1.0), Some(2000 * MS));
        for attempt in [0, 1, 2] {
            assert_eq!(RetryPolicy::none().delay(attempt, MS, 0.5), None);
        }
    }

    #[test]
    fn caps_every_wait_and_survives_nonsense() {
        let long = RetryPolicy {
            max_attempts: u32::MAX,
            base: Duration::MAX,
            max_delay: Duration::MAX,
        };
        assert_eq!(long.delay(40, Duration::MAX, 1.0), Some(Duration::MAX));
        assert_eq!(long.delay(1, MS, f64::NAN), Some(MS));
        let capped = RetryPolicy {
            max_attempts: 100,
            ..policy()
        };
        assert_eq!(capped.delay(60, 50 * MS, 1.0), Some(2000 * MS));
        assert_eq!(capped.delay(60, 50 * MS, 7.0), Some(2000 * MS));
        assert_eq!(capped.delay(1, 50 * MS, -3.0), Some(50 * MS));
    }

    proptest! {
        #[test]
        fn delays_are_within_pushback_and_cap(
            attempt in 1u32..10,
            pushback_ms in 0u64..3000,
            sample in 0.0f64..1.0,
            base_ms in 0u64..1000,
            max_ms in 0u64..5000,
        ) {
            let policy = RetryPolicy {
                max_attempts: 10,
                base: Duration::from_millis(base_ms),
                max_delay: Duration::from_millis(max_ms),
            };
            let pushback = Duration::from_millis(pushback_ms);
            match policy.delay(attempt, pushback, sample) {
                None => prop_assert!(pushback > policy.max_delay),
                Some(wait) => {
                    prop_assert!(wait >= pushback && wait <= policy.max_delay);
                    let ceiling = policy.base.saturating_mul(1 << (attempt - 1));
                    prop_assert!(wait <= pushback + ceiling);
                }
            }
        }
    }
}
