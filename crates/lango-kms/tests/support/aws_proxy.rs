//! A fault-injecting HTTP/1.1 proxy between the backend under test and moto (spec §5.2 AWS
//! item 4).
//!
//! Every request is recorded with its KMS operation (from `X-Amz-Target`, e.g.
//! `TrentService.Encrypt` → `Encrypt`) and body. For operations with a configured fault the
//! proxy answers itself — 400 `ThrottlingException`, 503 `ServiceUnavailableException`, 500
//! `KMSInternalException` or any other status and error code (AWS JSON 1.1 error bodies) — or
//! closes the connection without an answer, or waits before forwarding; anything else is
//! forwarded to moto unchanged. Each
//! connection carries one request (`Connection: close` both ways), so every request the client
//! makes reaches the proxy as a separate, countable exchange.
//!
//! [`FaultProxy::stop`] closes the listener and every open connection (the KMS is
//! unreachable: connection refused); [`FaultProxy::restart`] listens on the same port again.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use base64::Engine as _;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::{JoinHandle, JoinSet},
};

/// What the proxy does instead of forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 400 `{"__type":"ThrottlingException","message":"Rate exceeded"}`.
    Throttle,
    /// HTTP 503 `ServiceUnavailableException`.
    ServiceUnavailable,
    /// HTTP 500 `KMSInternalException`.
    Internal,
    /// Read the request, then close the connection without answering.
    Drop,
    /// Wait this long, then forward.
    Delay(Duration),
    /// Any other AWS JSON 1.1 error: HTTP status and `__type`, for the codes moto never
    /// produces (e.g. `IncorrectKeyException`, where moto answers `AccessDeniedException`).
    Error(u16, &'static str),
}

/// One request the proxy received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The KMS operation (`Encrypt`, `Decrypt`, `Sign`, `GetPublicKey`, ...).
    pub op: String,
    /// The request body (AWS JSON 1.1).
    pub body: Vec<u8>,
    /// The fault applied, if any.
    pub fault: Option<Fault>,
}

impl Seen {
    /// The decoded `Plaintext` field of an `Encrypt` request.
    pub fn plaintext(&self) -> Option<Vec<u8>> {
        json_string_field(&self.body, "Plaintext")
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
    }

    /// Whether the request carries an `EncryptionContext`.
    pub fn has_encryption_context(&self) -> bool {
        contains(&self.body, b"\"EncryptionContext\"")
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The string value of `"field":"…"` in a compact JSON body (the SDK's serialisation).
fn json_string_field<'a>(body: &'a [u8], field: &str) -> Option<&'a str> {
    let body = std::str::from_utf8(body).ok()?;
    let key = format!("\"{field}\":\"");
    let start = body.find(&key)? + key.len();
    let len = body[start..].find('"')?;
    Some(&body[start..start + len])
}

#[derive(Default)]
struct Shared {
    /// op → (fault, remaining uses; `None` = every request).
    rules: Mutex<HashMap<String, (Fault, Option<u32>)>>,
    seen: Mutex<Vec<Seen>>,
}

impl Shared {
    fn take_fault(&self, op: &str) -> Option<Fault> {
        let mut rules = self.rules.lock().unwrap();
        let (fault, remaining) = rules.get_mut(op)?;
        let fault = *fault;
        match remaining {
            None => Some(fault),
            Some(0) => None,
            Some(n) => {
                *n -= 1;
                Some(fault)
            }
        }
    }
}

/// The proxy. Dropping it stops it.
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` on a free local port.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared::default());
        let server = tokio::spawn(serve(listener, shared.clone(), upstream));
        Self {
            addr,
            upstream,
            shared,
            server: Mutex::new(Some(server)),
        }
    }

    /// The proxy's base URL (the backend's `endpoint`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Applies `fault` to the next `times` requests of `op` (`None`: to all of them).
    pub fn inject(&self, op: &str, fault: Fault, times: Option<u32>) {
        self.shared
            .rules
            .lock()
            .unwrap()
            .insert(op.to_owned(), (fault, times));
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        self.shared.rules.lock().unwrap().clear();
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// How many requests of `op` were received.
    pub fn count(&self, op: &str) -> usize {
        self.shared
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.op == op)
            .count()
    }

    /// Forgets the requests received so far.
    pub fn reset_log(&self) {
        self.shared.seen.lock().unwrap().clear();
    }

    /// Closes the listener and every open connection.
    pub async fn stop(&self) {
        let server = self.server.lock().unwrap().take();
        if let Some(server) = server {
            server.abort();
            let _ = server.await;
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&self) {
        self.stop().await;
        let mut last = None;
        for _ in 0..50 {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => {
                    let server = tokio::spawn(serve(listener, self.shared.clone(), self.upstream));
                    *self.server.lock().unwrap() = Some(server);
                    return;
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("cannot listen on {} again: {last:?}", self.addr);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(server) = self.server.lock().unwrap().take() {
            server.abort();
        }
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>, upstream: SocketAddr) {
    // Dropping the set (when this task is aborted) aborts every connection task.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    connections.spawn(handle(stream, shared.clone(), upstream));
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Reads one request: its head (up to the blank line) and a `Content-Length` body.
async fn read_request(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).ok()?;
    let len: usize = header(&head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    Some((head, body))
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// `head` with any `Connection` header replaced by `Connection: close`.
fn with_connection_close(head: &str) -> String {
    let mut out = String::new();
    for line in head.split("\r\n").filter(|l| !l.is_empty()) {
        let is_connection = line
            .split_once(':')
            .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("connection"));
        if !is_connection {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    out
}

async fn handle(mut client: TcpStream, shared: Arc<Shared>, upstream: SocketAddr) {
    let Some((head, body)) = read_request(&mut client).await else {
        return;
    };
    let op = header(&head, "x-amz-target")
        .and_then(|t| t.rsplit('.').next())
        .unwrap_or("")
        .to_owned();
    let fault = shared.take_fault(&op);
    shared.seen.lock().unwrap().push(Seen {
        op,
        body: body.clone(),
        fault,
    });
    let error = |status: &str, code: &str, message: &str| {
        let json = format!("{{\"__type\":\"{code}\",\"message\":\"{message}\"}}");
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/x-amz-json-1.1\r\nx-amzn-RequestId: lango-fault-proxy\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
            json.len()
        )
    };
    let canned = match fault {
        Some(Fault::Throttle) => Some(error(
            "400 Bad Request",
            "ThrottlingException",
            "Rate exceeded",
        )),
        Some(Fault::ServiceUnavailable) => Some(error(
            "503 Service Unavailable",
            "ServiceUnavailableException",
            "Service Unavailable",
        )),
        Some(Fault::Internal) => Some(error(
            "500 Internal Server Error",
            "KMSInternalException",
            "An internal error occurred",
        )),
        Some(Fault::Error(status, code)) => Some(error(
            &format!("{status} Injected"),
            code,
            "injected by the fault proxy",
        )),
        Some(Fault::Drop) => return,
        Some(Fault::Delay(d)) => {
            tokio::time::sleep(d).await;
            None
        }
        None => None,
    };
    if let Some(response) = canned {
        let _ = client.write_all(response.as_bytes()).await;
        let _ = client.shutdown().await;
        return;
    }
    // Forward to moto and relay its answer.
    let Ok(mut up) = TcpStream::connect(upstream).await else {
        return;
    };
    let mut request = with_connection_close(&head).into_bytes();
    request.extend_from_slice(&body);
    if up.write_all(&request).await.is_err() {
        return;
    }
    let mut response = Vec::new();
    if up.read_to_end(&mut response).await.is_err() {
        return;
    }
    let Some(i) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        return;
    };
    let head = String::from_utf8_lossy(&response[..i + 4]).into_owned();
    let mut out = with_connection_close(&head).into_bytes();
    out.extend_from_slice(&response[i + 4..]);
    let _ = client.write_all(&out).await;
    let _ = client.shutdown().await;
}
