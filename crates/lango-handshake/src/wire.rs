//! Framing and JSON encoding with Go `encoding/json` parity (spec §2.3, rules W-1…W-4).
//!
//! **Producing.** [`encode_line`] writes one compact JSON object followed by one LF, with the
//! fields in the Go struct declaration order, `[]byte` as padded standard base64, `int64` as a
//! plain decimal, and Go's string escaping (`<`, `>`, `&`, U+2028 and U+2029 as `\u003c`,
//! `\u003e`, `\u0026`, `\u2028`, `\u2029`; control characters as `\b \f \n \r \t` or
//! `\u00xx`). The bytes are what Go's `json.Encoder.Encode` produces for the same message.
//!
//! **Consuming.** [`MessageReader`] reads exactly one JSON object at a time from a
//! [`futures::io::AsyncRead`] (the trait libp2p streams implement). It keeps the bytes that
//! follow an object for the next message, skips leading whitespace, accepts an object that ends
//! at EOF without its LF, rejects a top-level value that is not an object at its first byte, and
//! never holds more than the size limit in memory: a message (leading whitespace, the object and
//! its terminating LF) larger than the limit is refused with [`Error::MessageTooLarge`] without
//! reading further. Field rules (absent or `null` bytes and strings mean empty, absent or `null`
//! integers mean 0, integers with a fraction or exponent, strings for integers and invalid base64
//! are refused, unknown keys are ignored, duplicate keys are refused) live in the serde helpers
//! of this module and are used by every message type.

use std::io;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use serde::{Serialize, de::DeserializeOwned};
use zeroize::Zeroizing;

use crate::Error;

/// The default per-message size limit (`p2p.handshakeMaxMessageBytes`), LF included.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 65_536;
/// The smallest limit a [`MessageReader`] accepts; smaller values are raised to it.
pub const MIN_MAX_MESSAGE_BYTES: usize = 64;
/// How much a [`MessageReader`] asks the stream for at once (never more than the limit allows).
const READ_CHUNK: usize = 4096;

/// Go's `base64.StdEncoding`: standard alphabet, `=` padding required; like Go's non-strict
/// decoder, non-zero trailing bits are tolerated. CR/LF inside the string (which Go skips) are
/// refused.
const GO_STD_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical)
        .with_decode_allow_trailing_bits(true),
);

/// Encodes bytes as Go encodes a `[]byte`: padded standard base64.
pub fn base64_encode(bytes: &[u8]) -> String {
    GO_STD_BASE64.encode(bytes)
}

/// Decodes a Go `[]byte` JSON string (padded standard base64).
pub fn base64_decode(s: &str) -> Result<Vec<u8>, Error> {
    GO_STD_BASE64
        .decode(s)
        .map_err(|e| Error::Decode(format!("illegal base64 data: {e}")))
}

/// Serde helpers that reproduce Go's field encodings. Used through `#[serde(with = …)]`.
pub(crate) mod go {
    use std::fmt;

    use serde::de::{self, Deserializer, Visitor};
    use serde::ser::Serializer;

    use super::GO_STD_BASE64;
    use base64::Engine as _;

    /// `[]byte`: base64 string; empty encodes as `null` (a nil slice). Accepts `null`, `""` and
    /// padded standard base64. Fields with `omitempty` add `skip_serializing_if`.
    pub mod bytes {
        use super::*;

        pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
            if v.is_empty() {
                s.serialize_none()
            } else {
                s.serialize_str(&GO_STD_BASE64.encode(v))
            }
        }

        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a base64 string or null")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Vec<u8>, E> {
                Ok(Vec::new())
            }
            fn visit_none<E: de::Error>(self) -> Result<Vec<u8>, E> {
                Ok(Vec::new())
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
                GO_STD_BASE64
                    .decode(v)
                    .map_err(|e| E::custom(format_args!("illegal base64 data: {e}")))
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
            d.deserialize_any(V)
        }
    }

    /// `[]string`: a JSON array of strings; `null` or absent reads as empty. At most
    /// [`MAX_STRINGS`] entries (the whole message is size-bounded as well).
    pub mod strings {
        use super::*;

        /// The longest list accepted.
        pub const MAX_STRINGS: usize = 16;

        pub fn serialize<S: Serializer>(v: &[String], s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeSeq;
            let mut seq = s.serialize_seq(Some(v.len()))?;
            for x in v {
                seq.serialize_element(x)?;
            }
            seq.end()
        }

        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Vec<String>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of strings or null")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Vec<String>, E> {
                Ok(Vec::new())
            }
            fn visit_none<E: de::Error>(self) -> Result<Vec<String>, E> {
                Ok(Vec::new())
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut a: A) -> Result<Vec<String>, A::Error> {
                let mut out = Vec::new();
                while let Some(x) = a.next_element::<String>()? {
                    if out.len() == MAX_STRINGS {
                        return Err(de::Error::custom("too many entries"));
                    }
                    out.push(x);
                }
                Ok(out)
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
            d.deserialize_any(V)
        }
    }

    /// `int64`: a plain decimal. Accepts `null` (Go leaves the field at 0). Refuses fractions,
    /// exponents, strings and values outside the `i64` range.
    pub mod int64 {
        use super::*;

        pub fn serialize<S: Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_i64(*v)
        }

        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = i64;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer in the int64 range")
            }
            fn visit_unit<E: de::Error>(self) -> Result<i64, E> {
                Ok(0)
            }
            fn visit_none<E: de::Error>(self) -> Result<i64, E> {
                Ok(0)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
                Ok(v)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
                i64::try_from(v).map_err(|_| E::custom("integer out of the int64 range"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<i64, E> {
                Err(E::custom(
                    "number with a fraction or exponent where an int64 is expected",
                ))
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
            d.deserialize_any(V)
        }
    }

    /// `string`: accepts `null` (Go leaves the field at "").
    pub mod string {
        use super::*;

        pub fn serialize<S: Serializer>(v: &str, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(v)
        }

        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = String;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or null")
            }
            fn visit_unit<E: de::Error>(self) -> Result<String, E> {
                Ok(String::new())
            }
            fn visit_none<E: de::Error>(self) -> Result<String, E> {
                Ok(String::new())
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
                Ok(v.to_owned())
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
                Ok(v)
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
            d.deserialize_any(V)
        }
    }

    pub fn is_zero(v: &i64) -> bool {
        *v == 0
    }
}

/// A session token on the wire: wiped from memory on drop, never shown by `Debug`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct WireToken(Zeroizing<String>);

impl WireToken {
    /// Wraps a token string.
    pub fn new(token: String) -> Self {
        Self(Zeroizing::new(token))
    }

    /// The token. Handle with care: it is a bearer credential.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the token has the only accepted form: 64 lowercase hex characters (S-2, R-13).
    pub fn is_well_formed(&self) -> bool {
        is_well_formed_token(&self.0)
    }
}

/// Whether `s` is 64 lowercase hex characters (the only accepted token form, R-13).
pub fn is_well_formed_token(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

impl std::fmt::Debug for WireToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WireToken([redacted])")
    }
}

impl Serialize for WireToken {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for WireToken {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        go::string::deserialize(d).map(Self::new)
    }
}

/// A serde_json formatter that escapes strings as Go's `encoding/json` does.
///
/// serde_json already escapes `"`, `\`, and control characters exactly as Go ≥ 1.22 does
/// (`\b \f \n \r \t`, otherwise `\u00xx` with lowercase hex). Go additionally escapes `<`, `>`,
/// `&` (HTML safety) and U+2028/U+2029; those are handled here.
struct GoFormatter;

impl serde_json::ser::Formatter for GoFormatter {
    fn write_string_fragment<W>(&mut self, writer: &mut W, fragment: &str) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let esc: &[u8] = match c {
                '<' => b"\\u003c",
                '>' => b"\\u003e",
                '&' => b"\\u0026",
                '\u{2028}' => b"\\u2028",
                '\u{2029}' => b"\\u2029",
                _ => continue,
            };
            writer.write_all(&fragment.as_bytes()[start..i])?;
            writer.write_all(esc)?;
            start = i + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

/// Appends `s` as a JSON string escaped exactly as Go's `encoding/json` escapes it (also used
/// for the Go-canonical agent cards that lango-p2p signs).
pub fn write_go_string(out: &mut Vec<u8>, s: &str) {
    let mut ser = serde_json::Serializer::with_formatter(&mut *out, GoFormatter);
    // Serialising a &str into a Vec cannot fail: no I/O error and no non-string keys.
    let _ = s.serialize(&mut ser);
}

/// Encodes a message exactly as Go's `json.NewEncoder(w).Encode(msg)` does: compact JSON in
/// struct field order, Go string escaping, then one LF (W-1).
pub fn encode_line<T: Serialize + ?Sized>(msg: &T) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, GoFormatter);
    msg.serialize(&mut ser)
        .map_err(|e| Error::InvalidInput(format!("encode message: {e}")))?;
    out.push(b'\n');
    Ok(out)
}

/// Writes one message and its LF, then flushes.
pub async fn write_message<W, T>(w: &mut W, msg: &T) -> Result<(), Error>
where
    W: AsyncWrite + Unpin + ?Sized,
    T: Serialize + ?Sized,
{
    let line = encode_line(msg)?;
    w.write_all(&line).await.map_err(|e| Error::io(&e))?;
    w.flush().await.map_err(|e| Error::io(&e))
}

fn is_json_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Finds where one top-level JSON object ends, one byte at a time. It only tracks strings,
/// escapes and nesting; the full grammar is checked by serde_json on the complete object.
#[derive(Debug, Default)]
struct Scanner {
    started: bool,
    depth: usize,
    in_string: bool,
    escape: bool,
}

enum Scan {
    More,
    Done,
}

impl Scanner {
    fn push(&mut self, b: u8) -> Result<Scan, Error> {
        if !self.started {
            if is_json_ws(b) {
                return Ok(Scan::More);
            }
            if b != b'{' {
                return Err(Error::Decode(
                    "top-level value is not a JSON object".to_owned(),
                ));
            }
            self.started = true;
            self.depth = 1;
            return Ok(Scan::More);
        }
        if self.in_string {
            if self.escape {
                self.escape = false;
            } else if b == b'\\' {
                self.escape = true;
            } else if b == b'"' {
                self.in_string = false;
            }
            return Ok(Scan::More);
        }
        match b {
            b'"' => self.in_string = true,
            b'{' | b'[' => self.depth += 1,
            b'}' | b']' => {
                self.depth -= 1;
                if self.depth == 0 {
                    return Ok(Scan::Done);
                }
            }
            _ => {}
        }
        Ok(Scan::More)
    }
}

/// Decodes one complete message from bytes: optional leading whitespace, one JSON object,
/// optional trailing whitespace. The same field rules as [`MessageReader`] apply; no size
/// limit is applied here.
pub fn decode_message<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let start = bytes
        .iter()
        .position(|b| !is_json_ws(*b))
        .unwrap_or(bytes.len());
    if bytes.get(start) != Some(&b'{') {
        return Err(Error::Decode(
            "top-level value is not a JSON object".to_owned(),
        ));
    }
    parse_object(&bytes[start..])
}

fn parse_object<T: DeserializeOwned>(obj: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(obj).map_err(|e| {
        // serde_json messages name the offending field and position; cap their length.
        let mut m = e.to_string();
        if m.len() > 200 {
            let mut cut = 200;
            while !m.is_char_boundary(cut) {
                cut -= 1;
            }
            m.truncate(cut);
        }
        Error::Decode(m)
    })
}

/// Reads newline-delimited JSON messages from one stream, one object at a time, with a hard
/// per-message size limit. Keep one reader per stream for the whole exchange (W-2): bytes after
/// an object belong to the next message.
#[derive(Debug)]
pub struct MessageReader<R> {
    inner: R,
    buf: Vec<u8>,
    limit: usize,
    eof: bool,
}

impl<R> MessageReader<R> {
    /// A reader with the default limit ([`DEFAULT_MAX_MESSAGE_BYTES`]).
    pub fn new(inner: R) -> Self {
        Self::with_limit(inner, DEFAULT_MAX_MESSAGE_BYTES)
    }

    /// A reader with a limit in bytes per message, terminating LF included. A value below
    /// [`MIN_MAX_MESSAGE_BYTES`] is raised to it.
    pub fn with_limit(inner: R, limit: usize) -> Self {
        let limit = limit.max(MIN_MAX_MESSAGE_BYTES);
        Self {
            inner,
            buf: Vec::with_capacity(limit.min(READ_CHUNK)),
            limit,
            eof: false,
        }
    }

    /// The per-message limit in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The stream, for writing replies on the same stream.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The stream.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Bytes already read from the stream that belong to messages not yet returned.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// The stream and any bytes read ahead of it.
    pub fn into_parts(self) -> (R, Vec<u8>) {
        (self.inner, self.buf)
    }
}

impl<R: AsyncRead + Unpin> MessageReader<R> {
    /// Reads one message.
    ///
    /// Budget: leading whitespace + the object + one byte for its LF must fit in the limit, so
    /// an object of `limit − 1` bytes is the largest accepted, whether or not its LF arrives.
    ///
    /// Errors: [`Error::MessageTooLarge`] (nothing beyond the limit is read),
    /// [`Error::Decode`] (not an object, malformed or truncated JSON, a field that breaks the
    /// encoding rules), [`Error::Io`] (a read error, or `UnexpectedEof` when the stream ends
    /// before a message starts).
    pub async fn read_message<T: DeserializeOwned>(&mut self) -> Result<T, Error> {
        let mut scanner = Scanner::default();
        let mut scanned = 0usize;
        let mut obj_start = None;
        loop {
            while scanned < self.buf.len() {
                let b = self.buf[scanned];
                let step = scanner.push(b)?;
                if scanner.started && obj_start.is_none() {
                    obj_start = Some(scanned);
                }
                scanned += 1;
                if scanned >= self.limit {
                    return Err(Error::MessageTooLarge { limit: self.limit });
                }
                if let Scan::Done = step {
                    let start = obj_start.unwrap_or(0);
                    let parsed = parse_object(&self.buf[start..scanned]);
                    // Consume the terminating LF when it has already arrived; otherwise it is
                    // leading whitespace of the next message.
                    let mut end = scanned;
                    if self.buf.get(end) == Some(&b'\n') {
                        end += 1;
                    }
                    self.buf.drain(..end);
                    return parsed;
                }
            }
            if self.eof {
                return Err(if scanner.started {
                    Error::Decode("unexpected EOF inside a message".to_owned())
                } else {
                    Error::Io {
                        kind: io::ErrorKind::UnexpectedEof,
                        message: "stream closed before a message arrived".to_owned(),
                    }
                });
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> Result<(), Error> {
        let room = self.limit.saturating_sub(self.buf.len()).min(READ_CHUNK);
        if room == 0 {
            return Err(Error::MessageTooLarge { limit: self.limit });
        }
        let old = self.buf.len();
        self.buf.resize(old + room, 0);
        let res = loop {
            match self.inner.read(&mut self.buf[old..]).await {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        match res {
            Ok(n) => {
                self.buf.truncate(old + n);
                if n == 0 {
                    self.eof = true;
                }
                Ok(())
            }
            Err(e) => {
                self.buf.truncate(old);
                Err(Error::io(&e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_formatter_escapes_like_go() {
        #[derive(Serialize)]
        struct S {
            s: String,
        }
        let line = encode_line(&S {
            s: "<a&b>\u{2028}\u{2029}\"\\\n\r\t\u{8}\u{c}\u{1}\u{7f}é".to_owned(),
        })
        .unwrap_or_default();
        assert_eq!(
            String::from_utf8_lossy(&line),
            "{\"s\":\"\\u003ca\\u0026b\\u003e\\u2028\\u2029\\\"\\\\\\n\\r\\t\\b\\f\\u0001\u{7f}é\"}\n"
        );
    }

    #[test]
    fn scanner_handles_braces_in_strings() {
        let mut sc = Scanner::default();
        let input = br#" {"a":"}{\"}","b":[{"c":1}]}"#;
        let mut done_at = None;
        for (i, b) in input.iter().enumerate() {
            if let Ok(Scan::Done) = sc.push(*b) {
                done_at = Some(i);
                break;
            }
        }
        assert_eq!(done_at, Some(input.len() - 1));
    }
}
