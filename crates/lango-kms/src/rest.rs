//! HTTP plumbing shared by the REST backends: GCP Cloud KMS (`kms-gcp`) and Azure Key Vault
//! (`kms-azure`).
//!
//! - [`TokenSource`] is the seam for bearer tokens: production backends use `gcp_auth` or the
//!   Azure credential chain, tests inject a [`StaticToken`] and assert it at their server.
//! - The internal client sends exactly one request per call: reqwest's own retries and
//!   redirects are off, the connect phase is bounded, and response bodies are read up to
//!   [`MAX_RESPONSE_BYTES`]. Transport failures (connect, reset, dropped connection, timeout)
//!   are classified [`KmsErrorKind::Unavailable`]; HTTP error statuses are classified by each
//!   backend.
//! - [`HttpStatus`] is attached as the source of every error built from an HTTP error
//!   response; it carries the server's `Retry-After` (see [`retry_after`]).
//!
//! Tokens never appear in errors, logs or `Debug` output: the `Authorization` header is marked
//! sensitive, and token types print as `[redacted]`.

use std::{
    error::Error as StdError,
    fmt,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
use lango_crypto::{SecretBytes, SecretString};
use reqwest::{Method, Url, header::HeaderMap};
use serde::de::DeserializeOwned;

use crate::error::{KmsError, KmsErrorKind};

/// Largest response body a REST backend reads (1 MiB); longer bodies fail the call.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Bound on establishing a TCP/TLS connection. The whole attempt is bounded by the retry
/// policy's per-attempt deadline.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A source of OAuth2 bearer tokens for one backend.
///
/// Implementations cache tokens themselves (both `gcp_auth` and `azure_identity` do) and are
/// asked once per request. A failure is returned as a [`KmsError`] whose `op` and `key_id` the
/// backend replaces with the call's own.
#[async_trait]
pub trait TokenSource: Send + Sync {
    /// A currently valid access token.
    async fn token(&self) -> Result<SecretString, KmsError>;
}

/// A fixed bearer token: tests, or tokens minted by a sidecar and passed in.
pub struct StaticToken(SecretString);

impl StaticToken {
    /// A source that always returns `token`.
    pub fn new(token: impl Into<String>) -> Self {
        Self(SecretString::new(token.into()))
    }
}

impl fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StaticToken([redacted])")
    }
}

#[async_trait]
impl TokenSource for StaticToken {
    async fn token(&self) -> Result<SecretString, KmsError> {
        Ok(self.0.duplicate())
    }
}

/// The HTTP status of a failed REST call, attached as the source of its [`KmsError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpStatus {
    /// The HTTP status code.
    pub status: u16,
    /// How long the server asked the client to wait (`Retry-After`, `retry-after-ms` or
    /// `x-ms-retry-after-ms`), when it said so.
    pub retry_after: Option<Duration>,
}

impl fmt::Display for HttpStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        if let Some(d) = self.retry_after {
            write!(f, " (retry after {} ms)", d.as_millis())?;
        }
        Ok(())
    }
}

impl StdError for HttpStatus {}

/// The delay a server asked for before retrying, when `err` came from an HTTP error response
/// that carried one.
///
/// [`crate::RetryPolicy`] does not use it (its delays are its own); a caller or a future
/// policy can, by calling this on the error of a throttled attempt.
pub fn retry_after(err: &KmsError) -> Option<Duration> {
    http_status(err).and_then(|s| s.retry_after)
}

/// The HTTP status behind `err`, when it came from an HTTP error response.
pub fn http_status(err: &KmsError) -> Option<&HttpStatus> {
    let mut cur: Option<&(dyn StdError + 'static)> = err.source.as_deref().map(|e| e as _);
    while let Some(e) = cur {
        if let Some(s) = e.downcast_ref::<HttpStatus>() {
            return Some(s);
        }
        cur = e.source();
    }
    None
}

/// Parses the server's requested delay from `retry-after-ms`, `x-ms-retry-after-ms` (both in
/// milliseconds) or `Retry-After` (delta-seconds or an IMF-fixdate HTTP date).
pub(crate) fn parse_retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    for name in ["retry-after-ms", "x-ms-retry-after-ms"] {
        if let Some(ms) = text(name).and_then(|v| v.parse::<u64>().ok()) {
            return Some(Duration::from_millis(ms));
        }
    }
    let v = text("retry-after")?;
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = parse_http_date(v)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the HTTP date format servers must
/// send.
fn parse_http_date(s: &str) -> Option<SystemTime> {
    let rest = s.split_once(", ")?.1;
    let mut parts = rest.split(' ');
    let day: u32 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':');
    let h: u64 = hms.next()?.parse().ok()?;
    let m: u64 = hms.next()?.parse().ok()?;
    let sec: u64 = hms.next()?.parse().ok()?;
    if parts.next()? != "GMT" || parts.next().is_some() || hms.next().is_some() {
        return None;
    }
    if !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 || year < 1970 {
        return None;
    }
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
    let (y, mo) = if month <= 2 {
        (year - 1, i64::from(month) + 9)
    } else {
        (year, i64::from(month) - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * mo + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(days * 86_400 + h * 3600 + m * 60 + sec))
}

/// Turns `raw` into a base URL without a trailing slash: `host[:port]` means
/// `https://host[:port]`; `http://` is accepted only with `allow_insecure` (K-12).
///
/// `setting` names the configuration key in the error message.
pub(crate) fn base_url(raw: &str, setting: &str, allow_insecure: bool) -> Result<String, String> {
    let raw = raw.trim();
    let lower = raw.to_ascii_lowercase();
    let full = if lower.starts_with("https://") {
        raw.to_owned()
    } else if lower.starts_with("http://") {
        if !allow_insecure {
            return Err(format!(
                "{setting} uses plain http:// ({raw}); set security.kms.allowInsecureEndpoint to allow it (tests only)"
            ));
        }
        raw.to_owned()
    } else if raw.contains("://") {
        return Err(format!("{setting} must be an https:// URL, got {raw:?}"));
    } else {
        format!("https://{raw}")
    };
    let url = Url::parse(&full).map_err(|e| format!("{setting} is not a valid URL: {e}"))?;
    if url.host_str().is_none_or(str::is_empty)
        || !url.username().is_empty()
        || url.password().is_some()
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(format!(
            "{setting} must be a bare URL (scheme, host, optional port and path), got {raw:?}"
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// The scheme, host and port of `url`, to keep follow-up links (pagination) on the origin the
/// token was meant for.
#[cfg(feature = "kms-azure")]
pub(crate) fn origin(url: &str) -> Option<String> {
    let u = Url::parse(url).ok()?;
    Some(u.origin().ascii_serialization())
}

/// A successful (2xx) or failed HTTP response, body fully read.
pub(crate) struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    /// The body; wiped on drop because decrypt responses carry plaintext.
    pub body: SecretBytes,
}

impl Response {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The [`HttpStatus`] of this response, for the source of its error.
    pub fn http_status(&self) -> HttpStatus {
        HttpStatus {
            status: self.status,
            retry_after: parse_retry_after(&self.headers, SystemTime::now()),
        }
    }
}

/// An HTTP client for one backend: one request per call, bounded bodies, bearer tokens.
pub(crate) struct RestClient {
    http: reqwest::Client,
    tokens: Arc<dyn TokenSource>,
    provider: &'static str,
}

impl fmt::Debug for RestClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestClient")
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

impl RestClient {
    /// A client for `provider` (the short name used in errors). `allow_insecure` permits
    /// plain-http URLs; otherwise reqwest refuses them as well.
    pub fn new(
        provider: &'static str,
        tokens: Arc<dyn TokenSource>,
        allow_insecure: bool,
    ) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .retry(reqwest::retry::never())
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .https_only(!allow_insecure)
            .user_agent(concat!("lango-kms/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Self {
            http,
            tokens,
            provider,
        })
    }

    pub fn error(
        &self,
        op: &'static str,
        key_id: &str,
        kind: KmsErrorKind,
        message: impl Into<String>,
    ) -> KmsError {
        KmsError::new(self.provider, op, key_id, kind, message)
    }

    /// Sends one request with a bearer token and reads the whole (bounded) response, whatever
    /// its status. Only token and transport failures are errors here.
    pub async fn send(
        &self,
        op: &'static str,
        key_id: &str,
        method: Method,
        url: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response, KmsError> {
        let token = self.tokens.token().await.map_err(|mut e| {
            e.op = op.into();
            e.key_id = key_id.to_owned();
            e.message = format!("acquiring an access token: {}", e.message);
            e
        })?;
        let mut req = self
            .http
            .request(method, url)
            .bearer_auth(token.expose())
            .header(reqwest::header::ACCEPT, "application/json");
        drop(token);
        if let Some(body) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let mut resp = req
            .send()
            .await
            .map_err(|e| self.transport_error(op, key_id, e))?;
        let status = resp.status().as_u16();
        let headers = std::mem::take(resp.headers_mut());
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
        {
            return Err(self.error(op, key_id, KmsErrorKind::Other, too_large(status)));
        }
        let mut body = SecretBytes::new(Vec::new());
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| self.transport_error(op, key_id, e))?
        {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(self.error(op, key_id, KmsErrorKind::Other, too_large(status)));
            }
            body.expose_mut().extend_from_slice(&chunk);
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    fn transport_error(&self, op: &'static str, key_id: &str, e: reqwest::Error) -> KmsError {
        // Builder errors (a URL reqwest refuses) are configuration faults; everything else is
        // a failure to talk to the service: connect, TLS, reset, dropped connection, timeout.
        let kind = if e.is_builder() {
            KmsErrorKind::Other
        } else {
            KmsErrorKind::Unavailable
        };
        let mut message = e.to_string();
        let mut src = e.source();
        while let Some(s) = src {
            message.push_str(": ");
            message.push_str(&s.to_string());
            src = s.source();
        }
        self.error(op, key_id, kind, message).with_source(e)
    }

    /// Parses a JSON body into `T`. The error message never quotes the body, which may hold
    /// plaintext.
    pub fn json<T: DeserializeOwned>(
        &self,
        op: &'static str,
        key_id: &str,
        body: &[u8],
    ) -> Result<T, KmsError> {
        serde_json::from_slice(body).map_err(|e| {
            self.error(
                op,
                key_id,
                KmsErrorKind::Other,
                format!(
                    "malformed response from the service ({:?} error at line {}, column {})",
                    e.classify(),
                    e.line(),
                    e.column()
                ),
            )
        })
    }
}

fn too_large(status: u16) -> String {
    format!("HTTP {status} response body exceeds {MAX_RESPONSE_BYTES} bytes")
}

/// Builds the [`KmsError`] of an HTTP error response: `message` is the service's description,
/// and the [`HttpStatus`] (with `Retry-After`) becomes its source.
pub(crate) fn status_error(
    client: &RestClient,
    op: &'static str,
    key_id: &str,
    kind: KmsErrorKind,
    resp: &Response,
    message: String,
) -> KmsError {
    let status = resp.http_status();
    let message = match status.retry_after {
        Some(d) => format!("{message} (retry after {} ms)", d.as_millis()),
        None => message,
    };
    client.error(op, key_id, kind, message).with_source(status)
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn base_url_rules() {
        let ok = |raw: &str, insecure| base_url(raw, "security.kms.endpoint", insecure);
        assert_eq!(
            ok("kms.example:8443", false).unwrap(),
            "https://kms.example:8443"
        );
        assert_eq!(
            ok("https://kms.example/", false).unwrap(),
            "https://kms.example"
        );
        assert_eq!(
            ok("HTTPS://kms.example/prefix/", false).unwrap(),
            "https://kms.example/prefix"
        );
        assert_eq!(
            ok("http://127.0.0.1:9", true).unwrap(),
            "http://127.0.0.1:9"
        );
        assert_eq!(
            ok("http://127.0.0.1:9", false).unwrap_err(),
            "security.kms.endpoint uses plain http:// (http://127.0.0.1:9); set security.kms.allowInsecureEndpoint to allow it (tests only)"
        );
        for bad in [
            "ftp://x",
            "https://user:pw@x",
            "https://x/?q=1",
            "https://x/#f",
            "https://",
        ] {
            assert!(ok(bad, true).is_err(), "{bad}");
        }
    }

    #[test]
    fn retry_after_forms() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, HeaderValue::from_static(v));
            }
            m
        };
        assert_eq!(
            parse_retry_after(&h(&[("retry-after", "7")]), now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_retry_after(&h(&[("retry-after", "Sun, 06 Nov 1994 08:49:47 GMT")]), now),
            Some(Duration::from_secs(10))
        );
        // A date in the past means "now".
        assert_eq!(
            parse_retry_after(&h(&[("retry-after", "Sun, 06 Nov 1994 08:49:27 GMT")]), now),
            Some(Duration::ZERO)
        );
        // Milliseconds win over the coarse header.
        assert_eq!(
            parse_retry_after(
                &h(&[("retry-after", "7"), ("x-ms-retry-after-ms", "1500")]),
                now
            ),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_retry_after(&h(&[("retry-after-ms", "20")]), now),
            Some(Duration::from_millis(20))
        );
        for junk in ["soon", "-1", "Sun, 06 Nov 1994 08:49:47 PST", ""] {
            let mut m = HeaderMap::new();
            m.insert("retry-after", HeaderValue::from_str(junk).unwrap());
            assert_eq!(parse_retry_after(&m, now), None, "{junk}");
        }
        assert_eq!(parse_retry_after(&HeaderMap::new(), now), None);
        assert_eq!(
            parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(UNIX_EPOCH)
        );
        assert_eq!(
            parse_http_date("Tue, 29 Feb 2000 12:00:00 GMT"),
            Some(UNIX_EPOCH + Duration::from_secs(951_825_600))
        );
    }

    #[test]
    fn retry_after_is_reachable_from_the_error() {
        let e = KmsError::new("azure", "sign", "k", KmsErrorKind::Throttled, "slow down")
            .with_source(HttpStatus {
                status: 429,
                retry_after: Some(Duration::from_secs(3)),
            });
        assert_eq!(retry_after(&e), Some(Duration::from_secs(3)));
        assert_eq!(http_status(&e).map(|s| s.status), Some(429));
        let plain = KmsError::new("azure", "sign", "k", KmsErrorKind::Throttled, "x");
        assert_eq!(retry_after(&plain), None);
    }

    #[test]
    fn static_token_debug_is_redacted() {
        let t = StaticToken::new("very-secret-token");
        assert!(!format!("{t:?}").contains("very-secret"));
    }

    #[cfg(feature = "kms-azure")]
    #[test]
    fn origin_of_urls() {
        assert_eq!(
            origin("https://v.vault.azure.net/keys?x=1").as_deref(),
            Some("https://v.vault.azure.net")
        );
        assert_eq!(
            origin("http://127.0.0.1:8080/keys").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_ne!(
            origin("https://evil.example/keys"),
            origin("https://v.vault.azure.net/")
        );
    }
}
