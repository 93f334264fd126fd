//! Wall clocks. Every time-dependent rule of this crate (TTL, expiry, cool-down, history
//! timestamps) reads an injectable [`Clock`] (spec H-4), so tests move time instead of
//! sleeping.

use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;
}

/// The operating system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told to, for tests and simulations.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<SystemTime>,
}

impl ManualClock {
    /// A clock set to `t`.
    pub fn new(t: SystemTime) -> Self {
        Self { now: Mutex::new(t) }
    }

    /// A clock set to `secs` seconds after the Unix epoch.
    pub fn at_unix(secs: u64) -> Self {
        Self::new(UNIX_EPOCH + Duration::from_secs(secs))
    }

    /// Sets the time.
    pub fn set(&self, t: SystemTime) {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner) = t;
    }

    /// Moves the time forward by `d` (saturating at the largest representable time).
    pub fn advance(&self, d: Duration) {
        let mut g = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        *g = add_saturating(*g, d);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `t + d`, or `t` itself if the sum is not representable (only possible for absurd clocks;
/// every duration this crate adds is bounded by configuration validation).
pub(crate) fn add_saturating(t: SystemTime, d: Duration) -> SystemTime {
    t.checked_add(d).unwrap_or(t)
}

/// RFC 3339 text of a time in UTC with nanosecond precision (`2023-11-14T22:13:20.5Z`).
pub(crate) fn rfc3339(t: SystemTime) -> Result<String, String> {
    let nanos: i128 = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i128::try_from(d.as_nanos()).map_err(|e| e.to_string())?,
        Err(e) => -i128::try_from(e.duration().as_nanos()).map_err(|e| e.to_string())?,
    };
    let odt = time::OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|e| e.to_string())?;
    odt.format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| e.to_string())
}

/// Serde helper: a `SystemTime` as RFC 3339 text.
pub(crate) mod serde_rfc3339 {
    use std::time::SystemTime;

    use serde::Serializer;

    pub(crate) fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        let text = super::rfc3339(*t).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves() {
        let c = ManualClock::at_unix(100);
        c.advance(Duration::from_secs(5));
        assert_eq!(c.now(), UNIX_EPOCH + Duration::from_secs(105));
        c.set(UNIX_EPOCH);
        assert_eq!(c.now(), UNIX_EPOCH);
    }

    #[test]
    fn rfc3339_is_utc_with_nanoseconds() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 500_000_000);
        assert_eq!(rfc3339(t).unwrap(), "2023-11-14T22:13:20.5Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(rfc3339(t).unwrap(), "2023-11-14T22:13:20Z");
    }
}
