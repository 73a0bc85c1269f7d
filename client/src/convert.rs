//! Conversions between the wire's types and the standard library's, in
//! one place for the server, the client and the CLI: times, durations and
//! grant states.

use std::time::{Duration, SystemTime};

use crate::proto::v1 as pb;

/// A time on the wire: seconds and nanoseconds since 1970 (a time before
/// 1970 becomes 1970; one past `i64` seconds saturates).
pub fn timestamp(time: SystemTime) -> prost_types::Timestamp {
    let since_epoch = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    prost_types::Timestamp {
        seconds: i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since_epoch.subsec_nanos()).unwrap_or(0),
    }
}

/// The time a wire timestamp names; `None` before 1970 or when its
/// nanoseconds are out of range.
pub fn system_time(timestamp: &prost_types::Timestamp) -> Option<SystemTime> {
    let seconds = u64::try_from(timestamp.seconds).ok()?;
    let nanos = u32::try_from(timestamp.nanos)
        .ok()
        .filter(|nanos| *nanos < 1_000_000_000)?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(seconds, nanos))
}

/// A duration on the wire (one past `i64` seconds saturates).
pub fn duration(duration: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(duration.subsec_nanos()).unwrap_or(0),
    }
}

/// The duration a wire duration names; `None` when it is negative or its
/// nanoseconds are outside 0..=999,999,999 (as the protobuf
/// well-known type requires).
pub fn std_duration(duration: &prost_types::Duration) -> Option<Duration> {
    let seconds = u64::try_from(duration.seconds).ok()?;
    let nanos = u32::try_from(duration.nanos)
        .ok()
        .filter(|nanos| *nanos < 1_000_000_000)?;
    Some(Duration::new(seconds, nanos))
}

/// A grant state's name as people read it: `pending`, `active`, `denied`,
/// `completed`, `revoked`, `expired`, or `unknown`.
pub fn state_name(state: i32) -> &'static str {
    match pb::GrantState::try_from(state) {
        Ok(pb::GrantState::Pending) => "pending",
        Ok(pb::GrantState::Active) => "active",
        Ok(pb::GrantState::Denied) => "denied",
        Ok(pb::GrantState::Completed) => "completed",
        Ok(pb::GrantState::Revoked) => "revoked",
        Ok(pb::GrantState::Expired) => "expired",
        Ok(pb::GrantState::Unspecified) | Err(_) => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations_round_trip_and_bad_ones_are_refused() {
        let at = SystemTime::UNIX_EPOCH + Duration::new(1_795_392_000, 123);
        assert_eq!(system_time(&timestamp(at)), Some(at));
        let ttl = Duration::new(300, 5);
        assert_eq!(std_duration(&duration(ttl)), Some(ttl));
        for (seconds, nanos) in [(-1, 0), (1, -1), (1, 1_000_000_000)] {
            let wire = prost_types::Duration { seconds, nanos };
            assert_eq!(std_duration(&wire), None, "{wire:?}");
            let wire = prost_types::Timestamp { seconds, nanos };
            assert_eq!(system_time(&wire), None, "{wire:?}");
        }
        assert_eq!(
            timestamp(SystemTime::UNIX_EPOCH - Duration::from_secs(1)).seconds,
            0
        );
    }

    #[test]
    fn every_state_has_a_name() {
        assert_eq!(state_name(pb::GrantState::Revoked.into()), "revoked");
        assert_eq!(state_name(99), "unknown");
    }
}
