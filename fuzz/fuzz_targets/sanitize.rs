//! Arbitrary bytes through lango-p2p's response filter (protocol spec T-K3).
//!
//! Input: three lines give the owner name, one extra term and the owner phone; the rest is
//! parsed as JSON and filtered as a tool result, and also filtered as an error string.
//!
//! Invariants (each a panic): no panic anywhere; no configured term, in compact normal form,
//! appears in the compact normal form of the serialised output or of the filtered error
//! string (redaction placeholders removed first). Terms that are part of the fixed
//! replacement texts themselves (`error`, `owner data redacted`, …) are not checked.
#![no_main]

use lango_fuzz::sanitize::{
    DEPTH_LIMIT, OWNER_REDACTED, OwnerProtectionConfig, PATH_REDACTED, ResponseFilter,
    SECRET_REDACTED, compact,
};
use libfuzzer_sys::fuzz_target;

/// The replacement texts, compact: a term inside one of them cannot be kept out.
const FIXED: &[&str] = &[
    "error",
    "ownerdataredacted",
    "pathredacted",
    "secretredacted",
    "depthlimit",
];

fn visible(text: &str) -> String {
    let mut t = text.to_owned();
    for p in [OWNER_REDACTED, PATH_REDACTED, SECRET_REDACTED, DEPTH_LIMIT] {
        t = t.replace(p, " ");
    }
    compact(&t)
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(4, |b| *b == b'\n');
    let name = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let term = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let phone = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let body = parts.next().unwrap_or_default();

    let config = OwnerProtectionConfig {
        owner_name: name.clone(),
        owner_email: String::new(),
        owner_phone: phone.clone(),
        extra_terms: vec![term.clone()],
        block_conversations: None,
    };
    let filter = ResponseFilter::from_config(&config);
    let terms: Vec<String> = [name, term, phone]
        .iter()
        .map(|t| compact(t))
        .filter(|t| !t.is_empty() && !FIXED.iter().any(|f| f.contains(t.as_str())))
        .collect();

    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        let out = filter.filter_value(value);
        let text = serde_json::to_string(&out.value).expect("filtered values serialise");
        let seen = visible(&text);
        for t in &terms {
            assert!(!seen.contains(t.as_str()), "term {t:?} in output {text}");
        }
    }

    let error = String::from_utf8_lossy(body);
    let out = filter.filter_error(&error);
    let seen = visible(&out);
    for t in &terms {
        assert!(!seen.contains(t.as_str()), "term {t:?} in error {out:?}");
    }
});
