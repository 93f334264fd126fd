//! The A2A protocol on the wire (`/lango/a2a/1.0.0`, protocol spec §2.1).
//!
//! One stream carries one request and one response:
//!
//! ```text
//! client ──▶ {"type":"tool_invoke","sessionToken":"…","requestId":"<uuid>","payload":{…}}\n
//!            (the client does not half-close before reading)
//! server ◀── {"requestId":"<uuid>","status":"ok","result":{…},"timestamp":"…Z"}\n, then close
//! ```
//!
//! The server detects the end of the first JSON value as the bytes arrive (it never waits for
//! EOF, which Go clients do not send), tolerates leading whitespace and a missing newline, and
//! ignores anything after the value. Reading is bounded in size and time
//! ([`read_request`]); the response is written with `\n` ([`write_response`]). Field names,
//! the omission of empty fields, status strings and the peer-visible error texts are the Go
//! node's, so a Go peer interoperates.

use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The stream protocol ID.
pub const PROTOCOL: &str = "/lango/a2a/1.0.0";
/// Default cap of a request (`p2p.protocol.maxRequestBytes`).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1 << 20;
/// Default cap of a response on the client (`p2p.protocol.maxResponseBytes`).
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 4 << 20;
/// Default deadline for reading a request (`p2p.protocol.readTimeout`).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(15);
/// Deadline for writing a response.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest session token looked up (longer ones are refused unread).
pub const MAX_TOKEN_BYTES: usize = 256;

/// A request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    /// The request type (`tool_invoke`, `agent_card`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// The session token from the handshake (may be empty).
    #[serde(default)]
    pub session_token: String,
    /// UUID v4 chosen by the client, echoed back.
    #[serde(default)]
    pub request_id: String,
    /// Type-specific parameters; omitted when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Map<String, Value>>,
}

/// Response status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Success.
    Ok,
    /// The request failed.
    Error,
    /// The request was refused.
    Denied,
    /// A paid tool needs payment; the quote is in `result`.
    PaymentRequired,
}

/// Attestation data attached to a successful tool response (§2.1.6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attestation {
    /// Proof bytes (standard base64 with padding on the wire).
    #[serde(with = "b64")]
    pub proof: Vec<u8>,
    /// Serialised public inputs (base64 on the wire).
    #[serde(with = "b64")]
    pub public_inputs: Vec<u8>,
    /// Circuit identifier.
    pub circuit_id: String,
    /// Proof scheme.
    pub scheme: String,
    /// lango-rs (Go ignores unknown keys): the responder's time, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<u64>,
    /// lango-rs: the window's start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_timestamp: Option<u64>,
    /// lango-rs: the window's end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_timestamp: Option<u64>,
    /// lango-rs: the responder's 32-byte ZK identity commitment.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "b64_opt")]
    pub id_commitment: Option<Vec<u8>>,
    /// lango-rs: the proof's 32-byte tag.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "b64_opt")]
    pub tag: Option<Vec<u8>>,
    /// lango-rs: the verifying-key digest (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vk_digest: Option<String>,
    /// lango-rs: the responder wallet's 65-byte signature certifying `idCommitment`.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "b64_opt")]
    pub id_binding: Option<Vec<u8>>,
}

/// A response, fields in the order the Go node writes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    /// Echo of the request's ID (`""` when the request could not be decoded).
    #[serde(default)]
    pub request_id: String,
    /// Status.
    pub status: Status,
    /// Result object; omitted when absent or empty.
    #[serde(default, skip_serializing_if = "is_empty_result")]
    pub result: Option<Map<String, Value>>,
    /// Error text (Appendix A); omitted when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// Deprecated copy of `attestation.proof`.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "b64_opt")]
    pub attestation_proof: Option<Vec<u8>>,
    /// Attestation of the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<Attestation>,
    /// When the response was built: RFC 3339, UTC, nanoseconds (any offset accepted).
    #[serde(with = "rfc3339")]
    pub timestamp: time::OffsetDateTime,
    /// The exact bytes of `result` as received (set by [`exchange`]); what an attestation
    /// is checked against. Never serialised.
    #[serde(skip)]
    pub raw_result: Option<Vec<u8>>,
}

fn is_empty_result(r: &Option<Map<String, Value>>) -> bool {
    r.as_ref().is_none_or(Map::is_empty)
}

impl Response {
    /// A response with `status` and no result, stamped now.
    pub fn new(request_id: &str, status: Status) -> Self {
        Self {
            request_id: request_id.to_owned(),
            status,
            result: None,
            error: String::new(),
            attestation_proof: None,
            attestation: None,
            timestamp: time::OffsetDateTime::now_utc(),
            raw_result: None,
        }
    }

    /// `ok` with `result`.
    pub fn ok(request_id: &str, result: Map<String, Value>) -> Self {
        Self {
            result: Some(result),
            ..Self::new(request_id, Status::Ok)
        }
    }

    /// `status` with the peer-visible `error` text.
    pub fn failure(request_id: &str, status: Status, error: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            ..Self::new(request_id, status)
        }
    }
}

mod b64 {
    use base64::{Engine, engine::general_purpose::STANDARD};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

mod b64_opt {
    use base64::{Engine, engine::general_purpose::STANDARD};
    use serde::{Deserialize, Deserializer, Serializer};

    #[allow(clippy::ref_option)]
    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_str(&STANDARD.encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(t) if !t.is_empty() => STANDARD
                .decode(t)
                .map(Some)
                .map_err(serde::de::Error::custom),
            _ => Ok(None),
        }
    }
}

mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::{OffsetDateTime, UtcOffset, format_description::well_known::Rfc3339};

    pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        let text = t
            .to_offset(UtcOffset::UTC)
            .format(&Rfc3339)
            .map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let text = String::deserialize(d)?;
        OffsetDateTime::parse(&text, &Rfc3339).map_err(serde::de::Error::custom)
    }
}

/// Why a request could not be read. `Display` is the peer-visible text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// More than the cap before the value ended.
    #[error("request too large")]
    TooLarge,
    /// The value did not end within the deadline.
    #[error("request timeout")]
    Timeout,
    /// Not a request object (the text after `decode request: `).
    #[error("decode request: {0}")]
    Decode(String),
}

/// Tracks where the first JSON value of a stream ends, byte by byte, without parsing it.
#[derive(Debug, Default)]
struct ValueEnd {
    started: bool,
    depth: usize,
    in_string: bool,
    escaped: bool,
    scalar: bool,
}

impl ValueEnd {
    /// Feeds one byte; `true` when the value is complete after (or, for scalars, at) it.
    fn push(&mut self, b: u8) -> bool {
        if !self.started {
            if b.is_ascii_whitespace() {
                return false;
            }
            self.started = true;
            match b {
                b'{' | b'[' => {
                    self.depth = 1;
                    return false;
                }
                b'"' => {
                    self.in_string = true;
                    self.scalar = true;
                    return false;
                }
                // A bare scalar or garbage: let the decoder say what it is.
                _ => return true,
            }
        }
        if self.in_string {
            match (self.escaped, b) {
                (true, _) => self.escaped = false,
                (false, b'\\') => self.escaped = true,
                (false, b'"') => {
                    self.in_string = false;
                    if self.scalar {
                        return true;
                    }
                }
                _ => {}
            }
            return false;
        }
        match b {
            b'"' => self.in_string = true,
            b'{' | b'[' => self.depth += 1,
            b'}' | b']' => {
                self.depth = self.depth.saturating_sub(1);
                return self.depth == 0;
            }
            _ => {}
        }
        false
    }
}

/// Reads the first JSON value of `stream` within `timeout` and at most `max` bytes, and
/// decodes it as a [`Request`]. Bytes after the value are left unread.
pub async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
    max: usize,
    timeout: Duration,
) -> Result<Request, ReadError> {
    let bytes = read_value(
        stream,
        max,
        timeout,
        ReadError::TooLarge,
        ReadError::Timeout,
    )
    .await?;
    decode_request(&bytes)
}

/// Decodes one request value.
pub fn decode_request(bytes: &[u8]) -> Result<Request, ReadError> {
    let mut it = serde_json::Deserializer::from_slice(bytes).into_iter::<Request>();
    match it.next() {
        Some(Ok(r)) => Ok(r),
        Some(Err(e)) => Err(ReadError::Decode(e.to_string())),
        None => Err(ReadError::Decode("unexpected end of JSON input".into())),
    }
}

async fn read_value<S: AsyncRead + Unpin, E>(
    stream: &mut S,
    max: usize,
    timeout: Duration,
    too_large: E,
    timed_out: E,
) -> Result<Vec<u8>, E> {
    let read = async {
        let mut buf = Vec::new();
        let mut end = ValueEnd::default();
        let mut chunk = [0u8; 8192];
        loop {
            let n = match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return Ok(buf),
                Ok(n) => n,
            };
            for b in &chunk[..n] {
                if buf.len() >= max {
                    return Err(());
                }
                buf.push(*b);
                if end.push(*b) {
                    return Ok(buf);
                }
            }
        }
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(())) => Err(too_large),
        Err(_) => Err(timed_out),
    }
}

/// Writes `response` and `\n` within [`WRITE_TIMEOUT`], then closes the write side.
pub async fn write_response<S: AsyncWrite + Unpin>(
    stream: &mut S,
    response: &Response,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(response).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let write = async {
        stream.write_all(&line).await?;
        stream.flush().await?;
        stream.close().await
    };
    tokio::time::timeout(WRITE_TIMEOUT, write)
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "response write timed out")
        })?
}

/// Why a response could not be read (client side).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// Over `maxResponseBytes`.
    #[error("response too large")]
    TooLarge,
    /// No complete response within the deadline.
    #[error("response timeout")]
    Timeout,
    /// Not a response object.
    #[error("decode response: {0}")]
    Decode(String),
    /// The request could not be written: the peer reset the stream first. It never read the
    /// request, so sending it again on a new stream cannot run anything twice.
    #[error("send request: {0}")]
    NotSent(String),
    /// The peer closed or reset the stream without a single byte of a response: it refused
    /// the stream before reading (its inbound queue or per-peer stream limit was full).
    #[error("the peer closed the stream without answering")]
    NoAnswer,
    /// The response answers another request.
    #[error("response requestId {got:?} does not match {want:?}")]
    RequestIdMismatch {
        /// Sent.
        want: String,
        /// Received.
        got: String,
    },
}

/// Writes `request` and `\n` (without half-closing), then reads exactly one response value
/// within `timeout` and `max` bytes and checks its `requestId` (R-10.4). An unknown status is
/// a decode error.
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    request: &Request,
    max: usize,
    timeout: Duration,
) -> Result<Response, ResponseError> {
    let mut line = serde_json::to_vec(request).map_err(|e| ResponseError::Decode(e.to_string()))?;
    line.push(b'\n');
    let deadline = tokio::time::Instant::now() + timeout;
    tokio::time::timeout_at(deadline, async {
        stream.write_all(&line).await?;
        stream.flush().await
    })
    .await
    .map_err(|_| ResponseError::Timeout)?
    .map_err(|e| ResponseError::NotSent(e.to_string()))?;
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    let bytes = read_value(
        stream,
        max,
        left,
        ResponseError::TooLarge,
        ResponseError::Timeout,
    )
    .await?;
    if bytes.is_empty() {
        return Err(ResponseError::NoAnswer);
    }
    let mut response: Response =
        serde_json::from_slice(&bytes).map_err(|e| ResponseError::Decode(e.to_string()))?;
    #[derive(Deserialize)]
    struct Raw<'a> {
        #[serde(borrow, default)]
        result: Option<&'a serde_json::value::RawValue>,
    }
    response.raw_result = serde_json::from_slice::<Raw<'_>>(&bytes)
        .ok()
        .and_then(|r| r.result)
        .map(|r| r.get().as_bytes().to_vec());
    if response.request_id != request.request_id {
        return Err(ResponseError::RequestIdMismatch {
            want: request.request_id.clone(),
            got: response.request_id,
        });
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;
    use serde_json::json;
    use std::{
        pin::Pin,
        task::{Context, Poll},
    };

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    /// A peer that sends `data` and then neither sends more nor closes (like a Go client
    /// waiting for the response). Writes are collected.
    struct Stall {
        data: Vec<u8>,
        pos: usize,
        written: Vec<u8>,
    }

    impl Stall {
        fn new(data: &[u8]) -> Self {
            Self {
                data: data.to_vec(),
                pos: 0,
                written: Vec::new(),
            }
        }
    }

    impl AsyncRead for Stall {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<std::io::Result<usize>> {
            if self.pos >= self.data.len() {
                return Poll::Pending;
            }
            // Dribble: at most 7 bytes per read, so values span reads.
            let n = buf.len().min(7).min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Poll::Ready(Ok(n))
        }
    }

    impl AsyncWrite for Stall {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.written.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn t_a1_request_and_response_shapes() {
        let r: Request = serde_json::from_str(
            r#"{"type":"tool_invoke","sessionToken":"ab","requestId":"3f1d","payload":{"toolName":"t","params":{"q":1}},"future":true}"#,
        )
        .unwrap();
        assert_eq!(r.kind, "tool_invoke");
        assert_eq!(r.payload.as_ref().unwrap()["toolName"], "t");
        let no_payload = Request {
            kind: "agent_card".into(),
            session_token: String::new(),
            request_id: "x".into(),
            payload: None,
        };
        assert_eq!(
            serde_json::to_string(&no_payload).unwrap(),
            r#"{"type":"agent_card","sessionToken":"","requestId":"x"}"#
        );
        let mut ok = Response::ok("3f1d", obj(json!({"hits": 3})));
        ok.timestamp = time::macros::datetime!(2026-02-25 10:00:00.123456789 UTC);
        assert_eq!(
            serde_json::to_string(&ok).unwrap(),
            r#"{"requestId":"3f1d","status":"ok","result":{"hits":3},"timestamp":"2026-02-25T10:00:00.123456789Z"}"#
        );
        let mut denied =
            Response::failure("3f1d", Status::Denied, "invalid or expired session token");
        denied.timestamp = ok.timestamp;
        denied.result = Some(Map::new());
        assert_eq!(
            serde_json::to_string(&denied).unwrap(),
            r#"{"requestId":"3f1d","status":"denied","error":"invalid or expired session token","timestamp":"2026-02-25T10:00:00.123456789Z"}"#
        );
        // A Go response with a local offset and an attestation decodes.
        let go: Response = serde_json::from_str(
            r#"{"requestId":"r","status":"ok","result":{"a":1},"attestationProof":"AQID","attestation":{"proof":"AQID","publicInputs":"BA==","circuitId":"response_attestation","scheme":"plonk"},"timestamp":"2026-02-25T19:04:05.123456789+09:00"}"#,
        )
        .unwrap();
        assert_eq!(go.attestation.as_ref().unwrap().proof, vec![1, 2, 3]);
        assert_eq!(go.attestation_proof, Some(vec![1, 2, 3]));
        assert_eq!(
            go.timestamp,
            time::macros::datetime!(2026-02-25 10:04:05.123456789 UTC)
        );
        assert!(
            serde_json::from_str::<Response>(
                r#"{"requestId":"r","status":"weird","timestamp":"2026-02-25T10:00:00Z"}"#
            )
            .is_err()
        );
        assert_eq!(
            serde_json::to_value(Status::PaymentRequired).unwrap(),
            json!("payment_required")
        );
    }

    #[tokio::test]
    async fn t_a2_first_value_without_eof() {
        let mut s = Stall::new(
            b"  {\"type\":\"agent_card\",\"requestId\":\"a}\\\"b\",\"payload\":{\"x\":[1,{\"y\":\"}\"}]}}",
        );
        let r = read_request(&mut s, 1 << 20, Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(r.request_id, "a}\"b");
        // Trailing bytes are ignored; a missing newline is fine.
        let mut c = Cursor::new(b"{\"type\":\"t\"}garbage{{{".to_vec());
        assert_eq!(
            read_request(&mut c, 1024, Duration::from_secs(1))
                .await
                .unwrap()
                .kind,
            "t"
        );
    }

    #[tokio::test]
    async fn t_a3_a4_a5_bad_large_and_slow_requests() {
        let mut c = Cursor::new(b"xyz".to_vec());
        let e = read_request(&mut c, 1024, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(e.to_string().starts_with("decode request: "), "{e}");
        let mut c = Cursor::new(b"{\"type\": 5}".to_vec());
        assert!(matches!(
            read_request(&mut c, 1024, Duration::from_secs(1)).await,
            Err(ReadError::Decode(_))
        ));
        let mut big = b"{\"type\":\"t\",\"payload\":{\"x\":\"".to_vec();
        big.extend(std::iter::repeat_n(b'a', 2 << 20));
        let mut c = Cursor::new(big);
        let e = read_request(&mut c, 1 << 20, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "request too large");
        // A peer that sends half a value and stalls is cut off at the deadline.
        let mut s = Stall::new(b"{\"type\":");
        let e = read_request(&mut s, 1024, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "request timeout");
    }

    #[tokio::test]
    async fn client_writes_a_line_and_checks_request_id_and_size() {
        let req = Request {
            kind: "agent_card".into(),
            session_token: "t".into(),
            request_id: "want".into(),
            payload: None,
        };
        let good = r#"{"requestId":"want","status":"ok","result":{"a":1},"timestamp":"2026-02-25T10:00:00Z"}"#;
        let mut s = Stall::new(good.as_bytes());
        let r = exchange(&mut s, &req, 1024, Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(r.result.unwrap()["a"], 1);
        assert!(s.written.ends_with(b"}\n"), "object plus newline");
        let other = r#"{"requestId":"other","status":"ok","timestamp":"2026-02-25T10:00:00Z"}"#;
        let e = exchange(
            &mut Stall::new(other.as_bytes()),
            &req,
            1024,
            Duration::from_secs(2),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, ResponseError::RequestIdMismatch { .. }), "{e}");
        let e = exchange(
            &mut Stall::new(good.as_bytes()),
            &req,
            40,
            Duration::from_secs(2),
        )
        .await
        .unwrap_err();
        assert_eq!(e, ResponseError::TooLarge);
        let e = exchange(
            &mut Stall::new(b"{\"requestId\""),
            &req,
            1024,
            Duration::from_millis(200),
        )
        .await
        .unwrap_err();
        assert_eq!(e, ResponseError::Timeout);
    }

    /// A stream the peer refused: either the write fails (reset first) or the stream ends
    /// with no byte of answer. Both are told apart from a garbled answer, so the client can
    /// send the request again without risking a second execution.
    #[tokio::test]
    async fn refused_streams_are_told_apart_from_bad_answers() {
        struct Reset;
        impl AsyncRead for Reset {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                _: &mut [u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::task::Poll::Ready(Ok(0))
            }
        }
        impl AsyncWrite for Reset {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                _: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::task::Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()))
            }
            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::task::Poll::Ready(Ok(()))
            }
            fn poll_close(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::task::Poll::Ready(Ok(()))
            }
        }
        let req = Request {
            kind: "tool_invoke".into(),
            session_token: "t".into(),
            request_id: "r".into(),
            payload: None,
        };
        let e = exchange(&mut Reset, &req, 1024, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(e, ResponseError::NotSent(_)), "{e}");
        let e = exchange(
            &mut Cursor::new(Vec::new()),
            &req,
            1024,
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert_eq!(e, ResponseError::NoAnswer);
        let e = exchange(
            &mut Stall::new(b"xyz"),
            &req,
            1024,
            Duration::from_millis(200),
        )
        .await
        .unwrap_err();
        assert!(
            !matches!(e, ResponseError::NoAnswer | ResponseError::NotSent(_)),
            "{e}"
        );
    }
}
