//! When to renew: the pure arithmetic of the renewal schedule (a fraction
//! of the remaining lifetime with jitter, clamped) and of the backoff after
//! failures. No clock and no randomness here: callers pass both in.

use std::time::Duration;

/// When a [`RotatingIdentity`](super::RotatingIdentity) renews its SVID,
/// refreshes its bundle, and retries after a failure.
///
/// Every function takes the random `sample` (uniform in `[0, 1)`) as an
/// argument, so the schedule is deterministic under test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RenewalSchedule {
    /// Renew after this fraction of the remaining lifetime, in `(0, 1]`.
    pub fraction: f64,
    /// Up to this fraction of the wait is taken off at random, in `[0, 1)`,
    /// so that replicas started together do not renew together.
    pub jitter: f64,
    /// The shortest wait between two renewals (or bundle refreshes).
    pub min_wait: Duration,
    /// The longest wait between two renewals (or bundle refreshes).
    pub max_wait: Duration,
    /// The first retry delay after a failure; it doubles on each further
    /// failure.
    pub backoff_initial: Duration,
    /// The longest retry delay.
    pub backoff_max: Duration,
}

// === impl RenewalSchedule ===

impl Default for RenewalSchedule {
    /// Renew at 70% of the remaining lifetime, up to 10% earlier at random,
    /// never sooner than 1 s nor later than 1 h after the last renewal;
    /// retry after 500 ms, doubling up to 30 s.
    fn default() -> Self {
        Self {
            fraction: 0.7,
            jitter: 0.1,
            min_wait: Duration::from_secs(1),
            max_wait: Duration::from_secs(3600),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
        }
    }
}

impl RenewalSchedule {
    /// How long to wait before renewing a credential with `remaining`
    /// lifetime left: `remaining × fraction`, minus up to `jitter` of it,
    /// clamped to `[min_wait, max_wait]`. Monotone in `remaining`.
    pub fn renew_in(&self, remaining: Duration, sample: f64) -> Duration {
        self.clamp(remaining.mul_f64(self.fraction() * self.keep(sample)))
    }

    /// How long to wait before refreshing a bundle whose issuer asks to be
    /// polled every `hint`: the hint minus up to `jitter` of it, clamped to
    /// `[min_wait, max_wait]`.
    pub fn refresh_in(&self, hint: Duration, sample: f64) -> Duration {
        self.clamp(hint.mul_f64(self.keep(sample)))
    }

    /// How long to wait before the next attempt after `failures`
    /// consecutive failures (at least 1): exponential from
    /// `backoff_initial`, capped at `backoff_max`, with "equal jitter"
    /// (between half and all of that).
    pub fn retry_in(&self, failures: u32, sample: f64) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        let ceiling = self
            .backoff_initial
            .saturating_mul(1 << doublings)
            .min(self.backoff_max);
        ceiling.mul_f64(0.5 + 0.5 * unit(sample))
    }

    fn fraction(&self) -> f64 {
        if self.fraction.is_finite() {
            self.fraction.clamp(f64::EPSILON, 1.0)
        } else {
            1.0
        }
    }

    /// The share of the wait kept after jitter, in `(0, 1]`.
    fn keep(&self, sample: f64) -> f64 {
        let jitter = if self.jitter.is_finite() {
            self.jitter.clamp(0.0, 0.99)
        } else {
            0.0
        };
        1.0 - jitter * unit(sample)
    }

    fn clamp(&self, wait: Duration) -> Duration {
        wait.min(self.max_wait).max(self.min_wait)
    }
}

/// `sample` forced into `[0, 1]`, NaN as 0.
pub(crate) fn unit(sample: f64) -> f64 {
    if sample.is_nan() {
        0.0
    } else {
        sample.clamp(0.0, 1.0)
    }
}

/// A uniform random number in `[0, 1)` from the system's CSPRNG; 0.5 if it
/// fails (the schedule then just loses its jitter).
pub(crate) fn random_sample() -> f64 {
    let mut bytes = [0u8; 8];
    match aws_lc_rs::rand::fill(&mut bytes) {
        // 53 random bits: exactly the precision of an f64 in [0, 1).
        Ok(()) => (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 0.5,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn schedule() -> RenewalSchedule {
        RenewalSchedule::default()
    }

    #[test]
    fn renews_at_the_fraction_of_the_remaining_lifetime_minus_jitter() {
        let minute = Duration::from_secs(60);
        // No jitter drawn: exactly 70%.
        assert_eq!(schedule().renew_in(minute, 0.0), Duration::from_secs(42));
        // The most jitter: 10% earlier.
        let earliest = schedule().renew_in(minute, 1.0);
        assert!((earliest.as_secs_f64() - 37.8).abs() < 1e-9, "{earliest:?}");
        // A configured fraction.
        let quick = RenewalSchedule {
            fraction: 0.1,
            jitter: 0.0,
            ..schedule()
        };
        assert_eq!(quick.renew_in(minute, 0.7), Duration::from_secs(6));
    }

    #[test]
    fn clamps_to_the_minimum_and_maximum_wait() {
        let clamped = RenewalSchedule {
            min_wait: 2 * SECOND,
            max_wait: 10 * SECOND,
            ..schedule()
        };
        assert_eq!(clamped.renew_in(Duration::ZERO, 0.5), 2 * SECOND);
        assert_eq!(clamped.renew_in(SECOND, 0.5), 2 * SECOND);
        assert_eq!(
            clamped.renew_in(Duration::from_secs(3600), 0.5),
            10 * SECOND
        );
        assert_eq!(
            clamped.refresh_in(Duration::from_secs(300), 0.0),
            10 * SECOND
        );
        assert_eq!(clamped.refresh_in(Duration::ZERO, 0.0), 2 * SECOND);
    }

    #[test]
    fn refreshes_bundles_at_the_hint_minus_jitter() {
        let hint = Duration::from_secs(300);
        assert_eq!(schedule().refresh_in(hint, 0.0), hint);
        assert_eq!(schedule().refresh_in(hint, 0.5), Duration::from_secs(285));
    }

    #[test]
    fn backs_off_exponentially_with_jitter_up_to_the_cap() {
        let half = Duration::from_millis(500);
        // Equal jitter: half to all of the ceiling.
        assert_eq!(schedule().retry_in(1, 0.0), half / 2);
        assert_eq!(schedule().retry_in(1, 1.0), half);
        assert_eq!(schedule().retry_in(2, 1.0), 2 * half);
        assert_eq!(schedule().retry_in(3, 1.0), 4 * half);
        assert_eq!(schedule().retry_in(7, 1.0), Duration::from_secs(30));
        assert_eq!(schedule().retry_in(u32::MAX, 1.0), Duration::from_secs(30));
        assert_eq!(schedule().retry_in(u32::MAX, 0.0), Duration::from_secs(15));
        // Failure 0 is treated as the first.
        assert_eq!(schedule().retry_in(0, 1.0), half);
    }

    #[test]
    fn nonsense_settings_and_samples_stay_in_bounds() {
        let odd = RenewalSchedule {
            fraction: f64::NAN,
            jitter: 7.0,
            ..schedule()
        };
        let wait = odd.renew_in(Duration::from_secs(100), f64::NAN);
        assert_eq!(wait, Duration::from_secs(100));
        let wait = odd.renew_in(Duration::from_secs(100), 2.0);
        assert_eq!(wait, Duration::from_secs(1));
        let negative = RenewalSchedule {
            fraction: -1.0,
            ..schedule()
        };
        assert_eq!(negative.renew_in(Duration::from_secs(100), 0.0), SECOND);
    }

    #[test]
    fn random_samples_are_in_the_unit_interval() {
        for _ in 0..1000 {
            let sample = random_sample();
            assert!((0.0..1.0).contains(&sample), "{sample}");
        }
    }

    proptest! {
        #[test]
        fn renew_in_is_bounded_and_monotone(
            remaining in 0u64..10_000_000,
            more in 0u64..10_000_000,
            fraction in 0.01f64..=1.0,
            jitter in 0.0f64..0.99,
            sample in 0.0f64..1.0,
            min_ms in 0u64..10_000,
            span_ms in 0u64..10_000_000,
        ) {
            let schedule = RenewalSchedule {
                fraction,
                jitter,
                min_wait: Duration::from_millis(min_ms),
                max_wait: Duration::from_millis(min_ms + span_ms),
                ..RenewalSchedule::default()
            };
            let remaining = Duration::from_millis(remaining);
            let wait = schedule.renew_in(remaining, sample);
            prop_assert!(wait >= schedule.min_wait && wait <= schedule.max_wait);
            // Never later than the fraction asks, unless the minimum says so.
            prop_assert!(wait <= remaining.mul_f64(fraction).max(schedule.min_wait));
            let later = schedule.renew_in(remaining + Duration::from_millis(more), sample);
            prop_assert!(later >= wait);
        }

        #[test]
        fn retry_in_is_bounded_and_grows(failures in 1u32..100, sample in 0.0f64..1.0) {
            let schedule = RenewalSchedule::default();
            let wait = schedule.retry_in(failures, sample);
            prop_assert!(wait <= schedule.backoff_max);
            prop_assert!(wait >= schedule.backoff_initial / 2);
            prop_assert!(schedule.retry_in(failures + 1, sample) >= wait);
        }
    }
}
