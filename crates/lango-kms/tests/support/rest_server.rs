//! A minimal HTTP/1.1 server for the REST backend tests: binds 127.0.0.1 on a random port,
//! records every request, and answers with whatever the test's handler decides, including
//! dropping the connection without a response or answering late.
//!
//! Also the independent signature verifier (the `openssl` command line) the tests use.
#![allow(dead_code)]

use std::{
    net::SocketAddr,
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use http_body_util::{BodyExt, Full};
use hyper::{
    Request, Response,
    body::{Bytes, Incoming},
    header::HeaderMap,
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, task::JoinHandle};

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// The raw path, percent-encoding untouched (`/keys/k//sign`).
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The value of query parameter `name`.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.as_deref()?.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == name).then(|| v.to_owned())
        })
    }
}

/// What the server does with a request.
pub enum Reply {
    /// An HTTP response.
    Http {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Close the connection without answering.
    Drop,
    /// Wait, then do the inner reply.
    Delay(Duration, Box<Reply>),
}

impl Reply {
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Self::Http {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }

    #[must_use]
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        if let Self::Http { headers, .. } = &mut self {
            headers.push((name.to_owned(), value.to_owned()));
        }
        self
    }
}

pub type Handler = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

/// A running server; stops when dropped.
pub struct RestServer {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<Recorded>>>,
    task: JoinHandle<()>,
}

impl Drop for RestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RestServer {
    pub async fn start(handler: Handler) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let log2 = log.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (handler, log) = (handler.clone(), log2.clone());
                conns.spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (handler, log) = (handler.clone(), log.clone());
                        async move { serve(req, &handler, &log).await }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, log, task }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// Requests whose path ends with `suffix`.
    pub fn matching(&self, suffix: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.ends_with(suffix))
            .collect()
    }

    pub fn clear(&self) {
        self.log.lock().unwrap().clear();
    }
}

async fn serve(
    req: Request<Incoming>,
    handler: &Handler,
    log: &Mutex<Vec<Recorded>>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let rec = Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        body,
    };
    log.lock().unwrap().push(rec.clone());
    let mut reply = handler(&rec);
    loop {
        match reply {
            Reply::Delay(d, next) => {
                tokio::time::sleep(d).await;
                reply = *next;
            }
            // hyper closes the connection without writing a response when the service fails.
            Reply::Drop => return Err(std::io::Error::other("connection dropped by the test")),
            Reply::Http {
                status,
                headers,
                body,
            } => {
                let mut resp = Response::builder().status(status);
                for (k, v) in headers {
                    resp = resp.header(k, v);
                }
                return Ok(resp.body(Full::new(Bytes::from(body))).unwrap());
            }
        }
    }
}

/// PEM of a DER `SubjectPublicKeyInfo`.
pub fn spki_pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap());
        pem.push('\n');
    }
    pem.push_str("-----END PUBLIC KEY-----\n");
    pem
}

/// Verifies a DER ECDSA signature over SHA-256(`message`) with the `openssl` command line, an
/// implementation independent of the crates under test.
pub fn openssl_verify(public_key_pem: &str, message: &[u8], der_signature: &[u8]) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let (key, msg, sig) = (
        dir.path().join("key.pem"),
        dir.path().join("msg.bin"),
        dir.path().join("sig.der"),
    );
    std::fs::write(&key, public_key_pem).unwrap();
    std::fs::write(&msg, message).unwrap();
    std::fs::write(&sig, der_signature).unwrap();
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(&key)
        .arg("-signature")
        .arg(&sig)
        .arg(&msg)
        .output()
        .expect("the openssl command line is needed as the independent verifier");
    let stdout = String::from_utf8_lossy(&out.stdout);
    out.status.success() && stdout.contains("Verified OK")
}

/// A fast retry policy for the tests: 5 ms base delay, no jitter.
pub fn policy(max_retries: u32, per_attempt: std::time::Duration) -> lango_kms::RetryPolicy {
    lango_kms::RetryPolicy {
        max_retries,
        base: std::time::Duration::from_millis(5),
        jitter: lango_kms::retry::Jitter::None,
        per_attempt_timeout: per_attempt,
        ..lango_kms::RetryPolicy::default()
    }
}

/// `KmsProvider` over `backend` with 3 retries and a 5 s per-attempt deadline.
pub fn provider(
    backend: &std::sync::Arc<impl lango_kms::KmsBackend + 'static>,
) -> lango_kms::KmsProvider {
    lango_kms::KmsProvider::new(
        backend.clone(),
        policy(3, std::time::Duration::from_secs(5)),
    )
}

/// The associated data of a secrets row named `row`.
pub fn ctx(row: &[u8]) -> lango_crypto::provider::AeadContext<'_> {
    lango_crypto::provider::AeadContext {
        purpose: lango_crypto::aead::BlobPurpose::Secrets,
        context: row,
        max_blob_len: 4 * 1024 * 1024,
    }
}

/// A composite over `primary` with a local fallback and a health checker probing the
/// primary's encryption key every `interval` (the node's wiring with `fallbackToLocal`).
pub fn probed_composite(
    primary: std::sync::Arc<dyn lango_crypto::CryptoProvider>,
    interval: std::time::Duration,
) -> (
    lango_kms::CompositeProvider,
    std::sync::Arc<lango_kms::HealthChecker>,
) {
    let checker = std::sync::Arc::new(lango_kms::HealthChecker::new(
        primary.clone(),
        "",
        lango_kms::KeyRole::Encryption,
        Some(interval),
    ));
    let local = std::sync::Arc::new(lango_crypto::LocalCryptoProvider::new(
        &lango_crypto::MasterKey::generate().unwrap(),
        1,
    ));
    let composite = lango_kms::CompositeProvider::new(primary)
        .with_fallback(local)
        .with_checker(checker.clone());
    (composite, checker)
}

/// How a server refuses a key, and how the refusal must be reported.
pub struct Refusal<'a> {
    /// The kind at the seam.
    pub kind: lango_crypto::provider::ProviderErrorKind,
    /// The key state the error must name.
    pub key_state: &'a str,
    /// Text of the server's answer the error must carry.
    pub server_text: &'a str,
}

/// Issue 17, for one backend: with the key refused by the server (`refuse`), the health
/// probe reports the refusal, and the composite returns it with the key's state instead of
/// falling back; values sealed before are not opened by the local key; after `restore`, the
/// KMS serves again (reads at once, new values after the next probe).
pub async fn assert_refusal_fails_closed(
    composite: &lango_kms::CompositeProvider,
    checker: &lango_kms::HealthChecker,
    tag: lango_crypto::aead::ProviderTag,
    interval: std::time::Duration,
    refuse: impl Fn(),
    restore: impl Fn(),
    want: Refusal<'_>,
) {
    use lango_crypto::CryptoProvider as _;
    let Refusal {
        kind,
        key_state,
        server_text,
    } = want;
    let before = composite.encrypt("", b"before", ctx(b"r0")).await.unwrap();
    assert_eq!(before[4], tag as u8);
    assert!(checker.check().await);

    refuse();
    tokio::time::sleep(interval + std::time::Duration::from_millis(50)).await;
    let fallbacks = composite.fallback_count();
    let e = composite
        .encrypt("", b"after", ctx(b"r1"))
        .await
        .unwrap_err();
    let state = checker.state().await;
    assert!(
        matches!(state, lango_kms::Connection::Refused(_)),
        "{server_text}: the probe must see a refused key: {state:?}"
    );
    let f = state.failure().unwrap();
    assert_eq!(f.kind, kind, "{f}");
    assert_eq!(f.key_state(), key_state);
    assert_eq!(e.kind, kind, "{e}");
    let text = e.to_string();
    assert!(text.contains(server_text), "{text}");
    assert!(text.contains(&format!("key state: {key_state}")), "{text}");
    assert_eq!(composite.fallback_count(), fallbacks, "fell back: {text}");
    assert!(!composite.used_local());
    let e = composite
        .decrypt("", &before, ctx(b"r0"))
        .await
        .unwrap_err();
    assert_eq!(e.kind, kind, "{e}");
    assert!(!composite.used_local());

    restore();
    assert_eq!(
        composite
            .decrypt("", &before, ctx(b"r0"))
            .await
            .unwrap()
            .expose(),
        b"before"
    );
    tokio::time::sleep(interval + std::time::Duration::from_millis(50)).await;
    let again = composite.encrypt("", b"again", ctx(b"r2")).await.unwrap();
    assert_eq!(again[4], tag as u8);
    assert_eq!(composite.fallback_count(), fallbacks);
}
