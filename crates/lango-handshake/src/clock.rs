//! Wall clocks (injectable, H-4) and the challenge timestamp window.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::Error;

/// How far in the past a challenge timestamp may be: 5 minutes (strict, R-2).
pub const MAX_TIMESTAMP_AGE: Duration = Duration::from_secs(300);
/// How far in the future a challenge timestamp may be: 30 seconds (strict, R-2).
pub const MAX_TIMESTAMP_AHEAD: Duration = Duration::from_secs(30);

/// The clock seam (H-4), shared with `lango-session` so that one [`ManualClock`] can drive the
/// handshake, the replay cache and the session store together.
pub use lango_session::{Clock, ManualClock, SystemClock};

/// Nanoseconds since the Unix epoch (negative before it).
pub(crate) fn unix_nanos(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i128::try_from(d.as_nanos()).unwrap_or(i128::MAX),
        Err(e) => i128::try_from(e.duration().as_nanos()).map_or(i128::MIN, |n| -n),
    }
}

/// Unix seconds, rounded down (what Go's `time.Unix()` returns), saturating at the `i64` range.
pub fn unix_seconds(t: SystemTime) -> i64 {
    let secs = unix_nanos(t).div_euclid(1_000_000_000);
    i64::try_from(secs).unwrap_or(if secs < 0 { i64::MIN } else { i64::MAX })
}

fn duration_from_nanos(n: i128) -> Duration {
    let n = u128::try_from(n).unwrap_or(0);
    let secs = u64::try_from(n / 1_000_000_000).unwrap_or(u64::MAX);
    // The remainder is below 10^9 and fits in u32.
    let sub = u32::try_from(n % 1_000_000_000).unwrap_or(0);
    Duration::new(secs, sub)
}

/// Checks a peer's Unix-seconds timestamp against `now` (rule R-2):
///
/// - `ts ≤ 0` or `ts > i64::MAX / 2` → [`Error::InvalidTimestamp`];
/// - more than [`MAX_TIMESTAMP_AGE`] old, measured against the sub-second `now` →
///   [`Error::TimestampTooOld`];
/// - more than [`MAX_TIMESTAMP_AHEAD`] ahead → [`Error::TimestampInFuture`].
///
/// Both comparisons are strict: exactly 300 s old or exactly 30 s ahead is accepted.
pub fn check_timestamp(ts: i64, now: SystemTime) -> Result<(), Error> {
    if ts <= 0 || ts > i64::MAX / 2 {
        return Err(Error::InvalidTimestamp(ts));
    }
    let ts_ns = i128::from(ts) * 1_000_000_000;
    let age_ns = unix_nanos(now) - ts_ns;
    let max_age = i128::try_from(MAX_TIMESTAMP_AGE.as_nanos()).unwrap_or(i128::MAX);
    let max_ahead = i128::try_from(MAX_TIMESTAMP_AHEAD.as_nanos()).unwrap_or(i128::MAX);
    if age_ns > max_age {
        return Err(Error::TimestampTooOld {
            age: duration_from_nanos(age_ns),
        });
    }
    if -age_ns > max_ahead {
        return Err(Error::TimestampInFuture {
            ahead: duration_from_nanos(-age_ns),
        });
    }
    Ok(())
}

/// Whether a Unix-seconds expiry lies strictly after `now` (sub-second precision).
pub fn is_in_future(expires_at: i64, now: SystemTime) -> bool {
    i128::from(expires_at) * 1_000_000_000 > unix_nanos(now)
}

/// Formats a duration the way Go's `time.Duration.String` does (`5m0s`, `1.5s`, `300ms`),
/// for log parity with the reference error strings.
pub fn go_duration(d: Duration) -> String {
    lango_session::config::go_duration::format(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_duration_matches_go() {
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(go_duration(Duration::from_secs(300)), "5m0s");
        assert_eq!(go_duration(Duration::from_secs(30)), "30s");
        assert_eq!(go_duration(Duration::from_millis(301_500)), "5m1.5s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(go_duration(Duration::from_millis(300)), "300ms");
        assert_eq!(go_duration(Duration::from_micros(1500)), "1.5ms");
        assert_eq!(go_duration(Duration::from_nanos(1500)), "1.5µs");
        assert_eq!(go_duration(Duration::from_nanos(7)), "7ns");
        assert_eq!(go_duration(Duration::new(1, 1)), "1.000000001s");
    }

    #[test]
    fn unix_seconds_floors() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_999);
        assert_eq!(unix_seconds(t), 1_700_000_000);
        let before = UNIX_EPOCH - Duration::from_millis(500);
        assert_eq!(unix_seconds(before), -1);
    }

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn timestamp_window_is_strict_at_nanosecond_precision() {
        let ts = 1_700_000_000i64;
        assert_eq!(check_timestamp(ts, at(1_700_000_300, 0)), Ok(()));
        assert_eq!(
            check_timestamp(ts, at(1_700_000_300, 1)),
            Err(Error::TimestampTooOld {
                age: Duration::new(300, 1)
            })
        );
        assert_eq!(check_timestamp(ts, at(1_699_999_970, 0)), Ok(()));
        assert_eq!(
            check_timestamp(ts, at(1_699_999_969, 999_999_999)),
            Err(Error::TimestampInFuture {
                ahead: Duration::new(30, 1)
            })
        );
        // Sub-second `now`: 300.5 s old is too old even though whole seconds say 300.
        assert!(matches!(
            check_timestamp(ts, at(1_700_000_300, 500_000_000)),
            Err(Error::TimestampTooOld { .. })
        ));
    }

    #[test]
    fn timestamp_validity_bounds() {
        let now = at(1_700_000_000, 0);
        for ts in [0, -1, i64::MIN, i64::MAX / 2 + 1, i64::MAX] {
            assert_eq!(check_timestamp(ts, now), Err(Error::InvalidTimestamp(ts)));
        }
        // i64::MAX / 2 is a valid value (far in the future, so refused as such).
        assert!(matches!(
            check_timestamp(i64::MAX / 2, now),
            Err(Error::TimestampInFuture { .. })
        ));
        // A clock before the epoch does not panic.
        assert!(matches!(
            check_timestamp(100, UNIX_EPOCH - Duration::from_secs(10)),
            Err(Error::TimestampInFuture { .. })
        ));
    }

    #[test]
    fn error_text_keeps_the_reference_wording() {
        let e = check_timestamp(1_700_000_000, at(1_700_000_301, 0)).unwrap_err();
        assert_eq!(e.to_string(), "timestamp too old: 5m1s ago (max 5m0s)");
        let e = check_timestamp(1_700_000_031, at(1_700_000_000, 0)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "timestamp too far in future: 31s ahead (max 30s)"
        );
        assert_eq!(
            check_timestamp(0, at(1, 0)).unwrap_err().to_string(),
            "invalid timestamp value: 0"
        );
    }

    #[test]
    fn expiry_in_future_is_strict() {
        assert!(!is_in_future(100, at(100, 0)));
        assert!(!is_in_future(100, at(100, 1)));
        assert!(is_in_future(100, at(99, 999_999_999)));
    }
}
