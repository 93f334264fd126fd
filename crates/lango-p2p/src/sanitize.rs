//! What a peer may see of a tool result: the response sanitizer (protocol spec §3.5,
//! R-5.1..R-5.4) and the owner shield (§3.6, R-6.1..R-6.7).
//!
//! Both work on the JSON value tree of a result, never on typed values, and walk objects and
//! arrays alike. [`ResponseFilter::filter_value`] runs the whole pipeline on a result, an agent
//! card or a price quote; [`ResponseFilter::filter_error`] on an error string.
//!
//! # Sanitizer ([`Sanitizer`])
//! * Keys that name secrets or internals are dropped with their value ([`is_sensitive_key`]).
//! * String values that carry a secret are replaced whole by [`SECRET_REDACTED`]: 64 hex digits
//!   (with or without `0x`), a PEM private-key header, a run of 12 or more BIP-39 English words,
//!   or a value from the injected [`KnownSecrets`] (session tokens, stored secrets).
//! * Local file paths inside other strings become [`PATH_REDACTED`] ([`redact_paths`]); URLs
//!   with a host are left alone.
//! * Content nested deeper than [`MAX_DEPTH`] containers becomes [`DEPTH_LIMIT`]. The walk's
//!   recursion is bounded by that limit, and cut-off subtrees are taken apart iteratively, so no
//!   nesting depth can exhaust the stack.
//!
//! # Owner shield ([`OwnerShield`])
//! * Text is compared after [`normalize`] (NFKC, lower case, format and zero-width characters
//!   removed, runs of whitespace, punctuation and symbols collapsed) and with the remaining
//!   spaces removed as well, so `A l i c e  K i m`, `Alice\u{200b}Kim` and full-width letters
//!   all match the term `Alice Kim`.
//! * A string that contains an owner term, an e-mail address, an E.164-style number or the
//!   owner's phone digits is replaced whole by [`OWNER_REDACTED`]; so is a number containing the
//!   owner's phone digits.
//! * An object key that contains owner data turns its entry into
//!   `"[owner-data-redacted]": "[owner-data-redacted]"` (later ones get `_2`, `_3`, …).
//! * With conversation blocking on (the default), conversation-like keys keep their name and
//!   lose their value.
//! * Finally the serialised result is checked once more; if a term still shows (for example a
//!   name split over two adjacent array elements), the whole result becomes
//!   `{"error": "[owner-data-redacted]"}`.
//!
//! Known limitation (T-C6): a name split over fields that do not end up adjacent in the
//! serialised result (`{"first": "Alice", "last": "Kim"}`) is not detected.
//!
//! Every step is linear in the size of the input (the `regex` crate is linear-time; terms and
//! known secrets are matched with Aho-Corasick automata).
//!
//! This module depends on nothing else in the crate, so the fuzz workspace compiles it alone.

use std::{
    borrow::Cow,
    collections::HashSet,
    fmt::{self, Write as _},
    sync::LazyLock,
};

use aho_corasick::AhoCorasick;
use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, GeneralCategoryGroup, UnicodeGeneralCategory};

/// Replacement of a local file path inside a string.
pub const PATH_REDACTED: &str = "[path-redacted]";
/// Replacement of a string value that carries a secret.
pub const SECRET_REDACTED: &str = "[secret-redacted]";
/// Replacement of content nested deeper than [`MAX_DEPTH`].
pub const DEPTH_LIMIT: &str = "[depth-limit]";
/// Replacement of owner data (values, keys, conversations, whole results).
pub const OWNER_REDACTED: &str = "[owner-data-redacted]";
/// Most nested containers kept: the root is at depth 0, and an object or array at depth
/// `MAX_DEPTH` or deeper is replaced by [`DEPTH_LIMIT`].
pub const MAX_DEPTH: usize = 64;
/// Most redaction paths recorded in a [`Report`]; further ones are only counted.
pub const MAX_RECORDED_PATHS: usize = 256;
/// Known secrets shorter than this are redacted only when a value equals them exactly; longer
/// ones also when a value contains them.
pub const MIN_SUBSTRING_SECRET_LEN: usize = 8;
/// Fewest digits an owner phone pattern needs before digit-sequence matching uses it.
pub const MIN_PHONE_DIGITS: usize = 7;
/// Length of a run of BIP-39 words that counts as a mnemonic.
const MNEMONIC_WORDS: usize = 12;
/// Longest key segment written into a recorded path.
const MAX_PATH_SEGMENT: usize = 64;

/// Compiles one of this module's constant patterns.
#[allow(clippy::expect_used)] // constant patterns, each exercised by the tests
fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("constant pattern compiles")
}

/// A URL with a non-empty host: its path is not a local path.
static URL: LazyLock<Regex> =
    LazyLock::new(|| re(r#"[A-Za-z][A-Za-z0-9+.-]*://[^\s/\\"'<>]+[^\s"'<>]*"#));

/// Local paths (R-5.3 and R-5.4 item 3), leftmost alternative first.
static PATH: LazyLock<Regex> = LazyLock::new(|| {
    const SEG: &str = r#"[^\s"'`<>|,;:()\[\]{}]"#;
    let roots = "home|Users|root|etc|var|tmp|opt|srv|private|proc|sys|run|mnt|media";
    re(&format!(
        concat!(
            r#"\b[A-Za-z]:\\[^\s"'<>|]*"#,         // C:\Users\a
            r#"|\\\\[^\s\\/"'<>|]+\\[^\s"'<>|]*"#, // \\host\share\f
            r"|~/{seg}+",                          // ~/.lango/x
            r"|/(?:{roots})/{seg}+",               // /etc/passwd
            r"|(?:/[A-Za-z0-9._-]+){{3,}}",        // the reference's rule
        ),
        seg = SEG,
        roots = roots
    ))
});

/// 64 hex digits (a `0x` in front changes nothing for a containment test).
static HEX64: LazyLock<Regex> = LazyLock::new(|| re(r"[0-9A-Fa-f]{64}"));
/// The header line of a PEM private key.
static PEM_PRIVATE: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)-----BEGIN [A-Z0-9 ]{0,64}PRIVATE KEY-----"));
/// The reference's generic e-mail pattern (R-6.3).
static EMAIL: LazyLock<Regex> = LazyLock::new(|| re(r"\b[\w.+-]+@[\w.-]+\.\w{2,}\b"));
/// E.164-style phone numbers (R-6.7 item 7).
static E164: LazyLock<Regex> = LazyLock::new(|| re(r"\+\d[\d\s().-]{7,17}\d"));

// ---------------------------------------------------------------------------------------------
// Keys

/// Key fragments that make a key sensitive, compared with `_`, `-`, `.` and spaces removed.
const SENSITIVE_FRAGMENTS: &[&str] = &[
    "password",
    "secret",
    "privatekey",
    "apikey",
    "accesskey",
    "authorization",
    "auth",
    "bearer",
    "cookie",
    "credential",
    "passphrase",
    "passwd",
    "mnemonic",
    "seedphrase",
    "privkey",
    "signingkey",
    "sessionkey",
    "secretkey",
    "jwt",
];

/// Whole keys (lower case) that name internals (the reference's list).
const SENSITIVE_KEYS: &[&str] = &[
    "db_path",
    "dbpath",
    "file_path",
    "filepath",
    "internal_id",
    "internalid",
    "_internal",
];

/// Words that make a `token` key a count rather than a credential (R-5.4 item 2).
const TOKEN_COUNT_WORDS: &[&str] = &[
    "max",
    "count",
    "used",
    "usage",
    "limit",
    "input",
    "output",
    "total",
    "num",
    "prompt",
    "completion",
];

/// Whether an object key names a secret or an internal value (R-5.2, R-5.4 item 2).
///
/// The key is compared after NFKC and lower-casing. It is sensitive when it is one of the
/// reference's internal names (`db_path`, `file_path`, `internal_id`, `_internal`, with or without
/// `_`), when it contains a fragment such as `password`, `apikey`, `auth`, `cookie` or `jwt`
/// once `_`, `-`, `.` and spaces are removed, or by the token-word rule: split into words (on
/// non-alphanumerics and lower-to-upper camelCase boundaries), a word `token`/`tokens` makes it
/// sensitive unless it has other words and all of them are counting words (`max_tokens`,
/// `tokens_used`, `completionTokens` are kept). A word that merely ends in `token(s)` counts as
/// a credential too (`csrftoken`, `idToken`), unless what precedes it is a counting word
/// (`maxtokens`).
pub fn is_sensitive_key(key: &str) -> bool {
    let folded: String = strip_ignorable(key)
        .nfkc()
        .flat_map(char::to_lowercase)
        .collect();
    if SENSITIVE_KEYS.contains(&folded.as_str()) {
        return true;
    }
    let squashed: String = folded
        .chars()
        .filter(|c| !matches!(c, '_' | '-' | '.') && !c.is_whitespace())
        .collect();
    if SENSITIVE_FRAGMENTS.iter().any(|f| squashed.contains(f)) {
        return true;
    }
    token_word_rule(&strip_ignorable(key).nfkc().collect::<String>())
}

/// The token-word rule of R-5.4 item 2 on an NFKC key (case kept for the camelCase split).
fn token_word_rule(key: &str) -> bool {
    let words = split_words(key);
    let mut has_token = false;
    let mut others_all_counting = true;
    let mut has_other = false;
    for w in &words {
        if w == "token" || w == "tokens" {
            has_token = true;
            continue;
        }
        let stem = w.strip_suffix("tokens").or_else(|| w.strip_suffix("token"));
        match stem {
            Some(prefix) if !prefix.is_empty() => {
                if !TOKEN_COUNT_WORDS.contains(&prefix) {
                    return true;
                }
                has_other = true;
            }
            _ => {
                has_other = true;
                if !TOKEN_COUNT_WORDS.contains(&w.as_str()) {
                    others_all_counting = false;
                }
            }
        }
    }
    has_token && !(has_other && others_all_counting)
}

/// Lower-cased words of a key: split on non-alphanumerics and lower-to-upper boundaries.
fn split_words(key: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for c in key.chars() {
        if !c.is_alphanumeric() {
            if !cur.is_empty() {
                words.push(std::mem::take(&mut cur));
            }
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower && !cur.is_empty() {
            words.push(std::mem::take(&mut cur));
        }
        prev_lower = c.is_lowercase() || c.is_numeric();
        cur.extend(c.to_lowercase());
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

// ---------------------------------------------------------------------------------------------
// Paths and secrets in strings

/// Replaces local file paths in `s` by [`PATH_REDACTED`] (R-5.3, R-5.4 item 3): runs of three
/// or more `/segment` parts, absolute paths under `/home`, `/Users`, `/root`, `/etc`, `/var`,
/// `/tmp`, `/opt`, `/srv`, `/private`, `/proc`, `/sys`, `/run`, `/mnt`, `/media`, `~/…` paths,
/// Windows drive paths and UNC paths. The path of a URL with a host (`https://host/a/b/c`) is
/// left alone; `file:///etc/passwd` has no host and is redacted.
pub fn redact_paths(s: &str) -> Cow<'_, str> {
    if !s.contains(['/', '\\']) {
        return Cow::Borrowed(s);
    }
    let mut out = String::new();
    let mut changed = false;
    let mut last = 0;
    for url in URL.find_iter(s) {
        changed |= redact_paths_in(&s[last..url.start()], &mut out);
        out.push_str(url.as_str());
        last = url.end();
    }
    changed |= redact_paths_in(&s[last..], &mut out);
    if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(s)
    }
}

/// Appends `s` to `out` with its paths redacted; whether any was.
fn redact_paths_in(s: &str, out: &mut String) -> bool {
    let mut last = 0;
    let mut changed = false;
    for m in PATH.find_iter(s) {
        out.push_str(&s[last..m.start()]);
        out.push_str(PATH_REDACTED);
        last = m.end();
        changed = true;
    }
    out.push_str(&s[last..]);
    changed
}

/// Whether `s` contains a run of at least 12 BIP-39 English words (words are runs of ASCII
/// letters; anything else separates them).
pub fn contains_mnemonic(s: &str) -> bool {
    let mut run = 0usize;
    for word in s.split(|c: char| !c.is_ascii_alphabetic()) {
        if word.is_empty() {
            continue;
        }
        if is_bip39_word(word) {
            run += 1;
            if run >= MNEMONIC_WORDS {
                return true;
            }
        } else {
            run = 0;
        }
    }
    false
}

/// Whether `word` (ASCII letters, any case) is in the BIP-39 English list.
fn is_bip39_word(word: &str) -> bool {
    let bytes = word.as_bytes();
    if !(3..=8).contains(&bytes.len()) {
        return false;
    }
    let mut buf = [0u8; 8];
    for (b, c) in buf.iter_mut().zip(bytes) {
        *b = c.to_ascii_lowercase();
    }
    std::str::from_utf8(&buf[..bytes.len()])
        .is_ok_and(|w| bip39::Language::English.find_word(w).is_some())
}

/// Exact secret values the sanitizer must never let through: the node's session tokens and the
/// values of the local secrets store (R-5.4 item 4).
///
/// The matcher keeps copies of the values for as long as it lives; rebuild it when the set
/// changes (a session is created or ends) and drop the old one.
#[derive(Clone, Default)]
pub struct KnownSecrets {
    /// Values of at least [`MIN_SUBSTRING_SECRET_LEN`] bytes, matched anywhere.
    long: Option<Matcher>,
    /// Shorter values, matched only as whole values.
    short: HashSet<Vec<u8>>,
    count: usize,
}

impl fmt::Debug for KnownSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KnownSecrets([redacted]; {} values)", self.count)
    }
}

impl KnownSecrets {
    /// A matcher for `values`; empty values are ignored.
    pub fn new<I, S>(values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<[u8]>,
    {
        let mut long = Vec::new();
        let mut short = HashSet::new();
        for v in values {
            let v = v.as_ref();
            if v.is_empty() {
                continue;
            }
            if v.len() >= MIN_SUBSTRING_SECRET_LEN {
                long.push(v.to_vec());
            } else {
                short.insert(v.to_vec());
            }
        }
        let count = long.len() + short.len();
        Self {
            long: Matcher::new(long),
            short,
            count,
        }
    }

    /// How many values are known.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no value is known.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether `s` is, or contains, a known secret.
    pub fn found_in(&self, s: &str) -> bool {
        self.short.contains(s.as_bytes()) || self.long.as_ref().is_some_and(|m| m.found_in(s))
    }
}

/// Substring search for several patterns at once: Aho-Corasick, or plain searches if the
/// automaton cannot be built.
#[derive(Clone)]
enum Matcher {
    Automaton(AhoCorasick),
    Plain(Vec<Vec<u8>>),
}

impl Matcher {
    fn new(patterns: Vec<Vec<u8>>) -> Option<Self> {
        if patterns.is_empty() {
            return None;
        }
        Some(match AhoCorasick::new(&patterns) {
            Ok(ac) => Self::Automaton(ac),
            Err(_) => Self::Plain(patterns),
        })
    }

    fn found_in(&self, s: &str) -> bool {
        match self {
            Self::Automaton(ac) => ac.is_match(s),
            Self::Plain(ps) => ps
                .iter()
                .any(|p| s.as_bytes().windows(p.len()).any(|w| w == p.as_slice())),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reports

/// What was redacted from one response, for the log line. Paths read `a.b` and `list[2].deep`;
/// keys replaced for carrying owner data appear under their placeholder name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Paths the sanitizer dropped (sensitive keys) or rewrote (paths, secrets).
    pub sanitized: Vec<String>,
    /// Paths the owner shield replaced.
    pub owner: Vec<String>,
    /// Paths cut at the depth limit.
    pub depth_limited: Vec<String>,
    /// Paths not recorded because [`MAX_RECORDED_PATHS`] was reached.
    pub unrecorded: usize,
    /// The final check replaced the whole result.
    pub result_replaced: bool,
}

impl Report {
    /// Whether nothing was redacted.
    pub fn is_clean(&self) -> bool {
        self.sanitized.is_empty()
            && self.owner.is_empty()
            && self.depth_limited.is_empty()
            && self.unrecorded == 0
            && !self.result_replaced
    }

    /// Emits the report as tracing events (nothing when clean).
    pub fn log(&self) {
        if !self.sanitized.is_empty() || !self.depth_limited.is_empty() {
            tracing::info!(
                event = "p2p_response_sanitized",
                paths = %self.sanitized.join(","),
                depth_limited = %self.depth_limited.join(","),
                "sensitive data removed from P2P response"
            );
        }
        if !self.owner.is_empty() {
            tracing::info!(
                event = "p2p_owner_data_redacted",
                paths = %self.owner.join(","),
                "owner data redacted from P2P response"
            );
        }
        if self.result_replaced {
            tracing::warn!(
                event = "p2p_owner_data_result_replaced",
                "owner data found in serialised P2P response; whole result replaced"
            );
        }
    }

    fn record(list: &mut Vec<String>, unrecorded: &mut usize, path: &PathStack) {
        if list.len() >= MAX_RECORDED_PATHS {
            *unrecorded += 1;
        } else {
            list.push(path.render());
        }
    }
}

/// A segment of a path in the value tree.
enum Seg {
    Key(String),
    Index(usize),
}

/// The path of the value being walked.
#[derive(Default)]
struct PathStack(Vec<Seg>);

impl PathStack {
    fn push_key(&mut self, key: &str) {
        let cut: String = key.chars().take(MAX_PATH_SEGMENT).collect();
        self.0.push(Seg::Key(cut));
    }

    fn push_index(&mut self, i: usize) {
        self.0.push(Seg::Index(i));
    }

    fn pop(&mut self) {
        self.0.pop();
    }

    fn render(&self) -> String {
        let mut out = String::new();
        for seg in &self.0 {
            match seg {
                Seg::Key(k) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(k);
                }
                Seg::Index(i) => {
                    let _ = write!(out, "[{i}]");
                }
            }
        }
        out
    }
}

/// Takes a value apart without recursion, so dropping a deep tree cannot exhaust the stack.
fn dismantle(v: Value) {
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => stack.extend(map.into_iter().map(|(_, v)| v)),
            _ => {}
        }
    }
}

/// The depth-limit replacement of a container at depth [`MAX_DEPTH`].
fn cut(v: Value, report: &mut Report, path: &PathStack) -> Value {
    Report::record(&mut report.depth_limited, &mut report.unrecorded, path);
    dismantle(v);
    Value::String(DEPTH_LIMIT.to_owned())
}

// ---------------------------------------------------------------------------------------------
// Sanitizer

/// The response sanitizer (R-5.4).
#[derive(Debug, Clone, Default)]
pub struct Sanitizer {
    known: KnownSecrets,
}

impl Sanitizer {
    /// A sanitizer without known secret values.
    pub fn new() -> Self {
        Self::default()
    }

    /// A sanitizer that also redacts the exact values in `known`.
    pub fn with_known_secrets(known: KnownSecrets) -> Self {
        Self { known }
    }

    /// Replaces the known secret values.
    pub fn set_known_secrets(&mut self, known: KnownSecrets) {
        self.known = known;
    }

    /// Whether `s` carries a secret by value (R-5.4 item 4).
    pub fn contains_secret(&self, s: &str) -> bool {
        HEX64.is_match(s)
            || PEM_PRIVATE.is_match(s)
            || contains_mnemonic(s)
            || self.known.found_in(s)
    }

    /// A string as a peer may see it: [`SECRET_REDACTED`] if it carries a secret, otherwise
    /// with its paths redacted. Used for string values and error strings. `Cow::Borrowed`
    /// means unchanged.
    pub fn sanitize_str<'a>(&self, s: &'a str) -> Cow<'a, str> {
        if self.contains_secret(s) {
            Cow::Owned(SECRET_REDACTED.to_owned())
        } else {
            redact_paths(s)
        }
    }

    /// Sanitizes a value tree, recording what changed in `report`.
    pub fn sanitize(&self, v: Value, report: &mut Report) -> Value {
        self.walk(v, 0, &mut PathStack::default(), report)
    }

    fn walk(&self, v: Value, depth: usize, path: &mut PathStack, report: &mut Report) -> Value {
        match v {
            Value::Object(_) | Value::Array(_) if depth >= MAX_DEPTH => cut(v, report, path),
            Value::Object(map) => {
                let mut out = Map::new();
                for (k, v) in map {
                    path.push_key(&k);
                    if is_sensitive_key(&k) || self.contains_secret(&k) {
                        Report::record(&mut report.sanitized, &mut report.unrecorded, path);
                        dismantle(v);
                    } else {
                        let v = self.walk(v, depth + 1, path, report);
                        out.insert(k, v);
                    }
                    path.pop();
                }
                Value::Object(out)
            }
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, v) in items.into_iter().enumerate() {
                    path.push_index(i);
                    out.push(self.walk(v, depth + 1, path, report));
                    path.pop();
                }
                Value::Array(out)
            }
            Value::String(s) => {
                let replaced = match self.sanitize_str(&s) {
                    Cow::Borrowed(_) => None,
                    Cow::Owned(o) => Some(o),
                };
                match replaced {
                    None => Value::String(s),
                    Some(o) => {
                        Report::record(&mut report.sanitized, &mut report.unrecorded, path);
                        Value::String(o)
                    }
                }
            }
            other => other,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Owner shield

/// `p2p.ownerProtection`: what the owner shield hides from peers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct OwnerProtectionConfig {
    /// The owner's name.
    pub owner_name: String,
    /// The owner's e-mail address.
    pub owner_email: String,
    /// The owner's phone number, in any format (`+82 10-1234-5678`, `010 1234 5678`).
    pub owner_phone: String,
    /// Further terms to hide (empty entries are ignored).
    pub extra_terms: Vec<String>,
    /// Hide the values of conversation-like keys (unset means true).
    pub block_conversations: Option<bool>,
}

/// Most `extraTerms` entries accepted.
const MAX_EXTRA_TERMS: usize = 1024;
/// Longest term accepted, in bytes.
const MAX_TERM_BYTES: usize = 1024;

impl OwnerProtectionConfig {
    /// Whether conversation keys are blocked (unset means true).
    pub fn blocks_conversations(&self) -> bool {
        self.block_conversations.unwrap_or(true)
    }

    /// Every problem, with its key path under `prefix` (`p2p.ownerProtection`).
    pub fn validate(&self, prefix: &str) -> Result<(), Vec<String>> {
        let mut p = Vec::new();
        let named = [
            ("ownerName", &self.owner_name),
            ("ownerEmail", &self.owner_email),
            ("ownerPhone", &self.owner_phone),
        ];
        let extra = self
            .extra_terms
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("extraTerms[{i}]"), t));
        let all = named
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .chain(extra);
        for (key, term) in all {
            if term.len() > MAX_TERM_BYTES {
                p.push(format!("{prefix}.{key}: at most {MAX_TERM_BYTES} bytes"));
            } else if !term.trim().is_empty() && compact(term).is_empty() {
                p.push(format!(
                    "{prefix}.{key}: {term:?} has no letters or digits, so it would match nothing"
                ));
            }
        }
        if self.extra_terms.len() > MAX_EXTRA_TERMS {
            p.push(format!(
                "{prefix}.extraTerms: at most {MAX_EXTRA_TERMS} entries"
            ));
        }
        let digits = self
            .owner_phone
            .chars()
            .filter(char::is_ascii_digit)
            .count();
        if !self.owner_phone.trim().is_empty() && digits < MIN_PHONE_DIGITS {
            p.push(format!(
                "{prefix}.ownerPhone: needs at least {MIN_PHONE_DIGITS} digits"
            ));
        }
        if p.is_empty() { Ok(()) } else { Err(p) }
    }
}

/// Whether `c` is dropped before comparison: format characters (Cf) and other default-ignorable
/// code points (zero-width, fillers, variation selectors).
fn is_ignorable(c: char) -> bool {
    matches!(
        c,
        '\u{034F}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{E0000}'..='\u{E0FFF}'
    ) || c.general_category() == GeneralCategory::Format
}

/// Whether `c` separates words for comparison: whitespace, punctuation, symbols, controls.
fn is_separator(c: char) -> bool {
    c.is_whitespace()
        || c.is_control()
        || matches!(
            c.general_category_group(),
            GeneralCategoryGroup::Punctuation
                | GeneralCategoryGroup::Symbol
                | GeneralCategoryGroup::Separator
        )
}

fn strip_ignorable(s: &str) -> impl Iterator<Item = char> + '_ {
    s.chars().filter(|c| !is_ignorable(*c))
}

/// The normal form of R-6.7 item 1: format and zero-width characters removed, NFKC, lower case,
/// each run of whitespace, punctuation and symbols turned into one space, no space at either end.
pub fn normalize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut gap = false;
    for c in strip_ignorable(s).nfkc() {
        if is_separator(c) {
            gap = !out.is_empty();
            continue;
        }
        if gap {
            out.push(' ');
            gap = false;
        }
        out.extend(c.to_lowercase());
    }
    out
}

/// [`normalize`] without the spaces: what terms are compared on, so that letters spread apart
/// (`A l i c e`) still match.
pub fn compact(s: &str) -> String {
    let mut n = normalize(s);
    n.retain(|c| c != ' ');
    n
}

/// Whether a key names a conversation (R-6.7 item 4): with `_`, `-` and `.` removed and lower
/// case, it contains `conversation`, `messagehistory`, `chatlog`, `chathistory`,
/// `sessionhistory` or `transcript`, or is exactly `messages` or `history`.
pub fn is_conversation_key(key: &str) -> bool {
    let k: String = strip_ignorable(key)
        .nfkc()
        .filter(|c| !matches!(c, '_' | '-' | '.'))
        .flat_map(char::to_lowercase)
        .collect();
    [
        "conversation",
        "messagehistory",
        "chatlog",
        "chathistory",
        "sessionhistory",
        "transcript",
    ]
    .iter()
    .any(|f| k.contains(f))
        || k == "messages"
        || k == "history"
}

/// ITU country calling codes of one and two digits; every other code has three. The codes are
/// prefix-free, so the length of the code at the start of an international number is known.
fn country_code_len(digits: &str) -> usize {
    const TWO: &[&str] = &[
        "20", "27", "30", "31", "32", "33", "34", "36", "39", "40", "41", "43", "44", "45", "46",
        "47", "48", "49", "51", "52", "53", "54", "55", "56", "57", "58", "60", "61", "62", "63",
        "64", "65", "66", "81", "82", "84", "86", "90", "91", "92", "93", "94", "95", "98",
    ];
    if digits.starts_with('1') || digits.starts_with('7') {
        1
    } else if digits.get(..2).is_some_and(|p| TWO.contains(&p)) {
        2
    } else {
        3
    }
}

/// The digit sequences of the owner's phone that must not appear in any value (R-6.7 item 2):
/// all its digits; without a national trunk `0`; and, for an international number (`+…`), the
/// national number after the country code.
fn phone_patterns(phone: &str) -> Vec<String> {
    let phone = phone.trim();
    let digits: String = phone.nfkc().filter(char::is_ascii_digit).collect();
    let mut patterns = vec![digits.clone()];
    if let Some(rest) = digits.strip_prefix('0') {
        patterns.push(rest.to_owned());
    }
    if phone.starts_with('+') || phone.starts_with('＋') {
        let national = digits.get(country_code_len(&digits)..).unwrap_or("");
        patterns.push(national.trim_start_matches('0').to_owned());
    }
    patterns.retain(|p| p.len() >= MIN_PHONE_DIGITS);
    patterns.sort();
    patterns.dedup();
    patterns
}

/// Separators allowed inside one number (R-6.7 item 2).
fn is_number_separator(c: char) -> bool {
    matches!(c, '-' | '.' | '(' | ')' | '/') || c.is_whitespace()
}

/// The digit strings of the numbers in `s`: digits joined across single runs of up to three
/// separators (` `, `-`, `.`, `(`, `)`, `/`), after NFKC (so full-width digits count).
fn digit_groups(s: &str) -> Vec<String> {
    let mut groups = Vec::new();
    let mut cur = String::new();
    let mut seps = 0usize;
    for c in strip_ignorable(s).nfkc() {
        if c.is_ascii_digit() {
            cur.push(c);
            seps = 0;
        } else if is_number_separator(c) && !cur.is_empty() && seps < 3 {
            seps += 1;
        } else if !cur.is_empty() {
            groups.push(std::mem::take(&mut cur));
            seps = 0;
        }
    }
    if !cur.is_empty() {
        groups.push(cur);
    }
    groups
}

/// The owner shield (R-6.1..R-6.7). Per R-6.1 (fix) it is always installed: with no terms it
/// still blocks conversations (unless turned off) and the generic e-mail and E.164 patterns.
#[derive(Clone)]
pub struct OwnerShield {
    /// Compact forms of the owner terms and phone digit patterns.
    terms: Option<Matcher>,
    term_count: usize,
    phone: Vec<String>,
    block_conversations: bool,
}

impl fmt::Debug for OwnerShield {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnerShield")
            .field("terms", &self.term_count)
            .field("phone_patterns", &self.phone.len())
            .field("block_conversations", &self.block_conversations)
            .finish()
    }
}

impl OwnerShield {
    /// The shield for `config`: the non-empty name, e-mail, phone and extra terms (R-6.2), in
    /// compact normal form, and the phone's digit patterns.
    pub fn new(config: &OwnerProtectionConfig) -> Self {
        let mut terms: Vec<String> = [&config.owner_name, &config.owner_email, &config.owner_phone]
            .into_iter()
            .chain(&config.extra_terms)
            .map(|t| compact(t))
            .filter(|t| !t.is_empty())
            .collect();
        let phone = if config.owner_phone.trim().is_empty() {
            Vec::new()
        } else {
            phone_patterns(&config.owner_phone)
        };
        terms.sort();
        terms.dedup();
        let term_count = terms.len();
        let final_terms: Vec<Vec<u8>> = terms
            .into_iter()
            .chain(phone.iter().cloned())
            .map(String::into_bytes)
            .collect();
        Self {
            terms: Matcher::new(final_terms),
            term_count,
            phone,
            block_conversations: config.blocks_conversations(),
        }
    }

    /// Whether conversation keys are blocked.
    pub fn blocks_conversations(&self) -> bool {
        self.block_conversations
    }

    /// Whether `s` shows owner data: an owner term (normalised), an e-mail address, an
    /// E.164-style number, or the owner's phone digits.
    pub fn matches_text(&self, s: &str) -> bool {
        if EMAIL.is_match(s) || E164.is_match(s) {
            return true;
        }
        if self.terms.as_ref().is_some_and(|m| m.found_in(&compact(s))) {
            return true;
        }
        !self.phone.is_empty()
            && digit_groups(s)
                .iter()
                .any(|g| self.phone.iter().any(|p| g.contains(p.as_str())))
    }

    /// Whether a JSON number shows the owner's phone digits.
    fn matches_number(&self, n: &serde_json::Number) -> bool {
        if self.phone.is_empty() {
            return false;
        }
        let digits: String = n.to_string().chars().filter(char::is_ascii_digit).collect();
        self.phone.iter().any(|p| digits.contains(p.as_str()))
    }

    /// A string as a peer may see it: [`OWNER_REDACTED`] if it shows owner data.
    /// `Cow::Borrowed` means unchanged.
    pub fn shield_str<'a>(&self, s: &'a str) -> Cow<'a, str> {
        if self.matches_text(s) {
            Cow::Owned(OWNER_REDACTED.to_owned())
        } else {
            Cow::Borrowed(s)
        }
    }

    /// Whether the serialised text of a result still shows an owner term (R-6.7 item 5). The
    /// placeholders themselves are not counted.
    pub fn leaks(&self, serialized: &str) -> bool {
        let Some(m) = &self.terms else {
            return false;
        };
        let mut text = Cow::Borrowed(serialized);
        for placeholder in [OWNER_REDACTED, PATH_REDACTED, SECRET_REDACTED, DEPTH_LIMIT] {
            if text.contains(placeholder) {
                text = Cow::Owned(text.replace(placeholder, " "));
            }
        }
        m.found_in(&compact(&text))
    }

    /// Applies the shield to a value tree, recording replaced paths in `report`.
    pub fn shield(&self, v: Value, report: &mut Report) -> Value {
        self.walk(v, 0, &mut PathStack::default(), report)
    }

    fn walk(&self, v: Value, depth: usize, path: &mut PathStack, report: &mut Report) -> Value {
        match v {
            Value::Object(_) | Value::Array(_) if depth >= MAX_DEPTH => cut(v, report, path),
            Value::Object(map) => self.walk_object(map, depth, path, report),
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, v) in items.into_iter().enumerate() {
                    path.push_index(i);
                    out.push(self.walk(v, depth + 1, path, report));
                    path.pop();
                }
                Value::Array(out)
            }
            Value::String(s) => {
                if self.matches_text(&s) {
                    Report::record(&mut report.owner, &mut report.unrecorded, path);
                    Value::String(OWNER_REDACTED.to_owned())
                } else {
                    Value::String(s)
                }
            }
            Value::Number(n) => {
                if self.matches_number(&n) {
                    Report::record(&mut report.owner, &mut report.unrecorded, path);
                    Value::String(OWNER_REDACTED.to_owned())
                } else {
                    Value::Number(n)
                }
            }
            other => other,
        }
    }

    fn walk_object(
        &self,
        map: Map<String, Value>,
        depth: usize,
        path: &mut PathStack,
        report: &mut Report,
    ) -> Value {
        enum Fate {
            /// The key shows owner data: the entry becomes placeholder: placeholder.
            Key,
            /// A conversation: the key stays, the value goes.
            Conversation,
            /// Walk the value.
            Keep,
        }
        let entries: Vec<(String, Value, Fate)> = map
            .into_iter()
            .map(|(k, v)| {
                let fate = if self.matches_text(&k) {
                    Fate::Key
                } else if self.block_conversations && is_conversation_key(&k) {
                    Fate::Conversation
                } else {
                    Fate::Keep
                };
                (k, v, fate)
            })
            .collect();
        let kept: HashSet<String> = entries
            .iter()
            .filter(|(_, _, f)| !matches!(f, Fate::Key))
            .map(|(k, _, _)| k.clone())
            .collect();
        let mut out = Map::new();
        let mut n = 1usize;
        for (k, v, fate) in entries {
            match fate {
                Fate::Key => {
                    let mut key = OWNER_REDACTED.to_owned();
                    while kept.contains(&key) || out.contains_key(&key) {
                        n += 1;
                        key = format!("{OWNER_REDACTED}_{n}");
                    }
                    path.push_key(&key);
                    Report::record(&mut report.owner, &mut report.unrecorded, path);
                    path.pop();
                    dismantle(v);
                    out.insert(key, Value::String(OWNER_REDACTED.to_owned()));
                }
                Fate::Conversation => {
                    path.push_key(&k);
                    Report::record(&mut report.owner, &mut report.unrecorded, path);
                    path.pop();
                    dismantle(v);
                    out.insert(k, Value::String(OWNER_REDACTED.to_owned()));
                }
                Fate::Keep => {
                    path.push_key(&k);
                    let v = self.walk(v, depth + 1, path, report);
                    path.pop();
                    out.insert(k, v);
                }
            }
        }
        Value::Object(out)
    }
}

// ---------------------------------------------------------------------------------------------
// The whole pipeline

/// A filtered value and what was done to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Filtered {
    /// What the peer may see.
    pub value: Value,
    /// What was redacted, for the log.
    pub report: Report,
}

/// The sanitizer followed by the owner shield and the final check: everything a tool result,
/// an agent card, a price quote or an error string passes through before a peer sees it.
#[derive(Debug, Clone)]
pub struct ResponseFilter {
    sanitizer: Sanitizer,
    shield: OwnerShield,
}

impl ResponseFilter {
    /// A filter of `sanitizer` and `shield`.
    pub fn new(sanitizer: Sanitizer, shield: OwnerShield) -> Self {
        Self { sanitizer, shield }
    }

    /// A filter for `owner` protection settings, without known secret values.
    pub fn from_config(owner: &OwnerProtectionConfig) -> Self {
        Self::new(Sanitizer::new(), OwnerShield::new(owner))
    }

    /// The sanitizer, to update its known secrets.
    pub fn sanitizer_mut(&mut self) -> &mut Sanitizer {
        &mut self.sanitizer
    }

    /// The owner shield.
    pub fn shield(&self) -> &OwnerShield {
        &self.shield
    }

    /// Sanitizes `v`, shields it, then checks its serialised form: if an owner term still
    /// shows, the result is `{"error": "[owner-data-redacted]"}`.
    pub fn filter_value(&self, v: Value) -> Filtered {
        let mut report = Report::default();
        let v = self.sanitizer.sanitize(v, &mut report);
        let v = self.shield.shield(v, &mut report);
        let leaked = match serde_json::to_string(&v) {
            Ok(text) => self.shield.leaks(&text),
            // A value that cannot be serialised cannot be sent either: hide it.
            Err(_) => true,
        };
        let value = if leaked {
            report.result_replaced = true;
            dismantle(v);
            let mut m = Map::new();
            m.insert("error".to_owned(), Value::String(OWNER_REDACTED.to_owned()));
            Value::Object(m)
        } else {
            v
        };
        Filtered { value, report }
    }

    /// An error string as a peer may see it (R-5.4 item 5, R-6.7 item 8): secrets and paths
    /// redacted, then [`OWNER_REDACTED`] if it shows owner data.
    pub fn filter_error(&self, s: &str) -> String {
        let sanitized = self.sanitizer.sanitize_str(s);
        // `leaks` also catches a term that a path placeholder split in two.
        if self.shield.matches_text(&sanitized) || self.shield.leaks(&sanitized) {
            OWNER_REDACTED.to_owned()
        } else {
            sanitized.into_owned()
        }
    }
}
