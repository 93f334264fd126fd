//! The session keys of the `p2p` configuration section (spec §4).
//!
//! Keys are camelCase. Durations accept Go's syntax (`24h`, `5m`, `1h30m`, `1.5h`, `300ms`)
//! and, as Go profiles store them, integer nanoseconds; they are written back as Go strings.
//! A duration or count of zero **or less** (Go allows negative values) means the default,
//! as the reference does for `sessionTokenTtl` and `sessionMaxFailures`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default session lifetime: 24 hours (the reference code default; §4, X-21).
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest accepted session lifetime: 30 days.
pub const MAX_SESSION_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Shortest accepted explicit session lifetime: 1 second.
pub const MIN_SESSION_TTL: Duration = Duration::from_secs(1);
/// Default consecutive-failure threshold (E-1).
pub const DEFAULT_MAX_FAILURES: u32 = 5;
/// Largest accepted consecutive-failure threshold.
pub const MAX_MAX_FAILURES: i64 = 1000;
/// Default revoke cool-down (V-9): 5 minutes.
pub const DEFAULT_REVOKE_COOLDOWN: Duration = Duration::from_secs(300);
/// Longest accepted revoke cool-down: 7 days.
pub const MAX_REVOKE_COOLDOWN: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default number of invalidation records kept (V-5).
pub const DEFAULT_HISTORY_LIMIT: usize = 1000;
/// Largest accepted invalidation history limit.
pub const MAX_HISTORY_LIMIT: i64 = 100_000;

/// Session settings: `p2p.sessionTokenTtl`, `p2p.sessionMaxFailures`,
/// `p2p.sessionRevokeCooldown` and `p2p.invalidationHistoryLimit`.
///
/// `maxConsecutiveFailures` and `invalidationCooldown` (the names the protocol spec uses for
/// the same two settings, §4.3 there) are accepted as aliases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Lifetime of a new session. Zero or less means 24 h. At most 30 days.
    #[serde(with = "go_duration")]
    pub session_token_ttl: Duration,
    /// Consecutive tool failures that invalidate a peer's session. Zero or less means 5.
    /// At most 1000.
    #[serde(alias = "maxConsecutiveFailures")]
    pub session_max_failures: i64,
    /// How long a DID (and the peer ID of its session) is refused new sessions after a
    /// `repeated_failures`, `reputation_drop` or `manual_revoke` invalidation. Zero or less
    /// means 5 min. At most 7 days.
    #[serde(with = "go_duration", alias = "invalidationCooldown")]
    pub session_revoke_cooldown: Duration,
    /// Invalidation records kept, oldest dropped first. Between 1 and 100 000.
    pub invalidation_history_limit: i64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            session_token_ttl: DEFAULT_SESSION_TTL,
            session_max_failures: i64::from(DEFAULT_MAX_FAILURES),
            session_revoke_cooldown: DEFAULT_REVOKE_COOLDOWN,
            invalidation_history_limit: DEFAULT_HISTORY_LIMIT as i64,
        }
    }
}

impl SessionConfig {
    /// The session lifetime in effect (zero means 24 h).
    pub fn effective_ttl(&self) -> Duration {
        if self.session_token_ttl.is_zero() {
            DEFAULT_SESSION_TTL
        } else {
            self.session_token_ttl
        }
    }

    /// The failure threshold in effect (≤ 0 means 5; capped at 1000).
    pub fn effective_max_failures(&self) -> u32 {
        effective_max_failures(self.session_max_failures)
    }

    /// The revoke cool-down in effect (zero means 5 min).
    pub fn effective_revoke_cooldown(&self) -> Duration {
        if self.session_revoke_cooldown.is_zero() {
            DEFAULT_REVOKE_COOLDOWN
        } else {
            self.session_revoke_cooldown
        }
    }

    /// The history limit in effect (clamped into 1..=100 000; `validate` reports values
    /// outside that range).
    pub fn effective_history_limit(&self) -> usize {
        let v = self.invalidation_history_limit.clamp(1, MAX_HISTORY_LIMIT);
        usize::try_from(v).unwrap_or(DEFAULT_HISTORY_LIMIT)
    }

    /// Checks every key; `prefix` is the section's path (`p2p`). Each problem names its key.
    pub fn validate(&self, prefix: &str) -> Result<(), Vec<String>> {
        let mut p = Vec::new();
        let ttl = self.session_token_ttl;
        if !ttl.is_zero() && ttl < MIN_SESSION_TTL {
            p.push(format!(
                "{prefix}.sessionTokenTtl: must be at least 1s (or 0 for the 24h default)"
            ));
        }
        if ttl > MAX_SESSION_TTL {
            p.push(format!(
                "{prefix}.sessionTokenTtl: at most 720h, got {}",
                go_duration::format(ttl)
            ));
        }
        if self.session_max_failures > MAX_MAX_FAILURES {
            p.push(format!(
                "{prefix}.sessionMaxFailures: at most {MAX_MAX_FAILURES}, got {}",
                self.session_max_failures
            ));
        }
        if self.session_revoke_cooldown > MAX_REVOKE_COOLDOWN {
            p.push(format!(
                "{prefix}.sessionRevokeCooldown: at most 168h, got {}",
                go_duration::format(self.session_revoke_cooldown)
            ));
        }
        if !(1..=MAX_HISTORY_LIMIT).contains(&self.invalidation_history_limit) {
            p.push(format!(
                "{prefix}.invalidationHistoryLimit: must be between 1 and {MAX_HISTORY_LIMIT}, got {}",
                self.invalidation_history_limit
            ));
        }
        if p.is_empty() { Ok(()) } else { Err(p) }
    }
}

/// The failure threshold for a raw setting: ≤ 0 means 5, capped at 1000 (E-1).
pub(crate) fn effective_max_failures(raw: i64) -> u32 {
    if raw <= 0 {
        DEFAULT_MAX_FAILURES
    } else {
        u32::try_from(raw.min(MAX_MAX_FAILURES)).unwrap_or(DEFAULT_MAX_FAILURES)
    }
}

/// Go durations: Go's `time.ParseDuration` text or integer nanoseconds, written back in
/// `Duration.String()` form. Usable as `#[serde(with = "go_duration")]` on a `Duration`.
/// Negative values are accepted and read as zero ("use the default"), as Go's `≤ 0` rules
/// for these keys intend. The one implementation for every crate's configuration.
pub mod go_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Longest duration accepted at all (about 317 years), so arithmetic cannot overflow.
    const MAX_NANOS: u128 = 10_000_000_000 * 1_000_000_000;

    /// Serialises as Go text.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*d))
    }

    /// Deserialises Go text or integer nanoseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Nanos(i64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Nanos(n) => Ok(Duration::from_nanos(u64::try_from(n).unwrap_or(0))),
            Raw::Text(t) => parse(&t).map_err(serde::de::Error::custom),
        }
    }

    /// Parses Go's duration syntax: an optional sign, then one or more `<number><unit>`
    /// with units `ns`, `us`/`µs`/`μs`, `ms`, `s`, `m`, `h`; or a bare `0`. Negative values
    /// give zero.
    pub fn parse(s: &str) -> Result<Duration, String> {
        let t = s.trim();
        let (negative, body) = match t.as_bytes().first() {
            Some(b'-') => (true, &t[1..]),
            Some(b'+') => (false, &t[1..]),
            _ => (false, t),
        };
        if body == "0" {
            return Ok(Duration::ZERO);
        }
        if body.is_empty() {
            return Err(format!(
                "{s:?} is not a duration (expected e.g. 30s, 5m, 24h)"
            ));
        }
        let mut total: u128 = 0;
        let mut rest = body;
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            let (num, after) = rest.split_at(num_len);
            if num.is_empty() || num == "." || num.matches('.').count() > 1 {
                return Err(format!(
                    "{s:?} is not a duration (expected e.g. 30s, 5m, 24h)"
                ));
            }
            let unit_len = after
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(after.len());
            let (unit, next) = after.split_at(unit_len);
            let unit_nanos: u128 = match unit {
                "ns" => 1,
                "us" | "µs" | "μs" => 1_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60_000_000_000,
                "h" => 3_600_000_000_000,
                "" => return Err(format!("{s:?}: missing unit (ns, us, ms, s, m, h)")),
                u => return Err(format!("{s:?}: unknown unit {u:?}")),
            };
            let (int_text, frac_text) = num.split_once('.').unwrap_or((num, ""));
            let out_of_range = || format!("{s:?} is out of range");
            let int: u128 = if int_text.is_empty() {
                0
            } else {
                int_text.parse().map_err(|_| out_of_range())?
            };
            // Fraction digits beyond the 18th cannot change a nanosecond count; like Go,
            // they are dropped and the result is truncated.
            let (mut frac, mut scale) = (0u128, 1u128);
            for digit in frac_text.bytes().take(18) {
                frac = frac * 10 + u128::from(digit - b'0');
                scale *= 10;
            }
            total = int
                .checked_mul(unit_nanos)
                .and_then(|v| v.checked_add(frac * unit_nanos / scale))
                .and_then(|v| total.checked_add(v))
                .ok_or_else(out_of_range)?;
            if total > MAX_NANOS {
                return Err(out_of_range());
            }
            rest = next;
        }
        if negative {
            return Ok(Duration::ZERO);
        }
        Ok(Duration::from_nanos(
            u64::try_from(total).map_err(|_| format!("{s:?} is out of range"))?,
        ))
    }

    /// Go's `Duration.String()` form: `24h0m0s`, `5m0s`, `1.5s`, `300ms`, `0s`.
    pub fn format(d: Duration) -> String {
        fn frac(mut v: u128, mut width: usize) -> String {
            while width > 0 && v.is_multiple_of(10) {
                v /= 10;
                width -= 1;
            }
            if width == 0 {
                String::new()
            } else {
                format!(".{v:0width$}")
            }
        }
        let ns = d.as_nanos();
        if ns == 0 {
            return "0s".to_owned();
        }
        if ns < 1_000 {
            return format!("{ns}ns");
        }
        if ns < 1_000_000 {
            return format!("{}{}µs", ns / 1_000, frac(ns % 1_000, 3));
        }
        if ns < 1_000_000_000 {
            return format!("{}{}ms", ns / 1_000_000, frac(ns % 1_000_000, 6));
        }
        let secs = d.as_secs();
        let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
        let mut out = String::new();
        if h > 0 {
            out.push_str(&format!("{h}h"));
        }
        if h > 0 || m > 0 {
            out.push_str(&format!("{m}m"));
        }
        out.push_str(&format!("{s}{}s", frac(u128::from(d.subsec_nanos()), 9)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_spec_defaults() {
        let c = SessionConfig::default();
        assert_eq!(c.effective_ttl(), Duration::from_secs(86_400));
        assert_eq!(c.effective_max_failures(), 5);
        assert_eq!(c.effective_revoke_cooldown(), Duration::from_secs(300));
        assert_eq!(c.effective_history_limit(), 1000);
        c.validate("p2p").unwrap();
    }

    #[test]
    fn empty_object_gives_defaults_and_unknown_keys_are_rejected() {
        let c: SessionConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, SessionConfig::default());
        let err = serde_json::from_str::<SessionConfig>(r#"{"sessionTokenTTL":"1h"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("sessionTokenTTL"), "{err}");
    }

    #[test]
    fn go_strings_and_nanoseconds_are_accepted() {
        let c: SessionConfig = serde_json::from_str(
            r#"{"sessionTokenTtl":"1h30m","sessionRevokeCooldown":600000000000,
                "sessionMaxFailures":3,"invalidationHistoryLimit":50}"#,
        )
        .unwrap();
        assert_eq!(c.effective_ttl(), Duration::from_secs(5400));
        assert_eq!(c.effective_revoke_cooldown(), Duration::from_secs(600));
        assert_eq!(c.effective_max_failures(), 3);
        assert_eq!(c.effective_history_limit(), 50);
        c.validate("p2p").unwrap();
    }

    #[test]
    fn aliases_from_the_protocol_spec() {
        let c: SessionConfig =
            serde_json::from_str(r#"{"maxConsecutiveFailures":7,"invalidationCooldown":"10m"}"#)
                .unwrap();
        assert_eq!(c.effective_max_failures(), 7);
        assert_eq!(c.effective_revoke_cooldown(), Duration::from_secs(600));
    }

    /// §4: `sessionTokenTtl` ≤ 0 means 24 h; E-1: `sessionMaxFailures` ≤ 0 means 5.
    #[test]
    fn zero_or_negative_means_default() {
        let c: SessionConfig = serde_json::from_str(
            r#"{"sessionTokenTtl":"-5m","sessionMaxFailures":-1,"sessionRevokeCooldown":-1}"#,
        )
        .unwrap();
        assert_eq!(c.effective_ttl(), DEFAULT_SESSION_TTL);
        assert_eq!(c.effective_max_failures(), 5);
        assert_eq!(c.effective_revoke_cooldown(), DEFAULT_REVOKE_COOLDOWN);
        c.validate("p2p").unwrap();
        let c: SessionConfig =
            serde_json::from_str(r#"{"sessionTokenTtl":0,"sessionMaxFailures":0}"#).unwrap();
        assert_eq!(c.effective_ttl(), DEFAULT_SESSION_TTL);
        assert_eq!(c.effective_max_failures(), 5);
    }

    #[test]
    fn out_of_range_values_are_reported_with_their_path() {
        let c = SessionConfig {
            session_token_ttl: Duration::from_secs(31 * 86_400),
            session_max_failures: 1001,
            session_revoke_cooldown: Duration::from_secs(8 * 86_400),
            invalidation_history_limit: 0,
        };
        let problems = c.validate("p2p").unwrap_err().join("\n");
        for needle in [
            "p2p.sessionTokenTtl: at most 720h",
            "p2p.sessionMaxFailures: at most 1000",
            "p2p.sessionRevokeCooldown: at most 168h",
            "p2p.invalidationHistoryLimit: must be between 1 and 100000",
        ] {
            assert!(
                problems.contains(needle),
                "{needle} missing in:\n{problems}"
            );
        }
        let tiny = SessionConfig {
            session_token_ttl: Duration::from_millis(10),
            ..SessionConfig::default()
        };
        assert!(tiny.validate("p2p").unwrap_err()[0].contains("at least 1s"));
        let big_history = SessionConfig {
            invalidation_history_limit: 100_001,
            ..SessionConfig::default()
        };
        assert!(big_history.validate("p2p").is_err());
    }

    #[test]
    fn bad_duration_text_is_rejected() {
        for bad in [
            "",
            "abc",
            "10",
            "1x",
            "5s3",
            ".s",
            "1..2s",
            "1e3s",
            "99999999999h",
        ] {
            assert!(go_duration::parse(bad).is_err(), "{bad:?} accepted");
            let json = format!(r#"{{"sessionTokenTtl":{}}}"#, serde_json::json!(bad));
            assert!(
                serde_json::from_str::<SessionConfig>(&json).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn durations_round_trip_as_go_strings() {
        for (d, s) in [
            (Duration::ZERO, "0s"),
            (Duration::from_secs(300), "5m0s"),
            (Duration::from_secs(86_400), "24h0m0s"),
            (Duration::from_secs(5400), "1h30m0s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_millis(300), "300ms"),
        ] {
            assert_eq!(go_duration::format(d), s);
            assert_eq!(go_duration::parse(s).unwrap(), d);
        }
        let c = SessionConfig::default();
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["sessionTokenTtl"], "24h0m0s");
        assert_eq!(json["sessionRevokeCooldown"], "5m0s");
        assert_eq!(json["sessionMaxFailures"], 5);
        assert_eq!(json["invalidationHistoryLimit"], 1000);
        let back: SessionConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back, c);
    }

    proptest::proptest! {
        #[test]
        fn formatted_durations_parse_back(ms in 0u64..10_000_000_000) {
            let d = Duration::from_millis(ms);
            proptest::prop_assert_eq!(go_duration::parse(&go_duration::format(d)).unwrap(), d);
        }
    }
}
