//! The local admin socket: how the CLI talks to the running node.
//!
//! `<data-dir>/admin.sock` is a Unix stream socket created by `serve` with mode 0600 inside
//! the 0700 data directory, so only the owner can connect. As a second gate the server reads
//! the connecting process's credentials (`SO_PEERCRED`) and refuses any user ID other than
//! its own (root included: root can bypass file modes but is still refused here).
//!
//! Wire: one request per connection. The client writes one JSON object and a newline; the
//! server answers with one JSON object and a newline, then closes. Both sides bound the line
//! to [`MAX_LINE`] bytes and every read and write to [`IO_TIMEOUT`].
//!
//! ```text
//! → {"cmd":"peers"}
//! ← {"ok":true,"result":[{"peerId":"12D3KooW…","addrs":["/ip4/127.0.0.1/tcp/9000"]}]}
//! → {"cmd":"connect","addr":"/ip4/…/p2p/12D3KooW…"}
//! ← {"ok":false,"error":"connect to 12D3KooW…: …"}
//! ```

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
};

/// File name of the socket inside the data directory.
pub const SOCKET_NAME: &str = "admin.sock";
/// Longest request or response line.
pub const MAX_LINE: usize = 4 * 1024 * 1024;
/// Bound on each read and write.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the CLI waits for the answer to a request that reaches another node (a tool call,
/// a capability listing): longer than any deadline the nodes enforce themselves (the longest
/// `timeoutPerTool`, 10 min, plus an owner's approval and the handshake), so the caller sees
/// the remote node's own error, never this socket's.
pub const REMOTE_ANSWER_TIMEOUT: Duration = Duration::from_secs(20 * 60);

impl Request {
    /// How long the CLI waits for this request's answer.
    pub fn answer_timeout(&self) -> Duration {
        match self {
            Request::Invoke { .. } | Request::Tools { .. } => REMOTE_ANSWER_TIMEOUT,
            _ => IO_TIMEOUT,
        }
    }
}
/// Most connections served at once.
const MAX_CLIENTS: usize = 16;

/// The socket's path for a data directory.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}

/// A request to the running node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    /// Peer ID, DID, key storage, listen addresses.
    Identity,
    /// The node's status.
    Status,
    /// Connected peers.
    Peers,
    /// Dial a multiaddr ending in `/p2p/<peer-id>` and, unless `no_handshake`, run the
    /// handshake.
    Connect {
        /// The address.
        addr: String,
        /// Transport only.
        #[serde(default)]
        no_handshake: bool,
    },
    /// Close every connection to a peer.
    Disconnect {
        /// The peer ID.
        peer: String,
    },
    /// Known agent cards.
    Discover {
        /// Only cards announcing this capability.
        tag: Option<String>,
    },
    /// A peer's reputation record.
    Reputation {
        /// The peer's DID.
        did: String,
    },
    /// Revoke a DID.
    Revoke {
        /// The DID.
        did: String,
        /// Why (kept in the database).
        reason: String,
    },
    /// The revocation list.
    Revocations,
    /// Live sessions (no tokens).
    Sessions,
    /// Invalidate one peer's session (`manual_revoke`).
    SessionRevoke {
        /// The peer's DID.
        did: String,
        /// Also remove its downgrade pin.
        #[serde(default)]
        unpin: bool,
    },
    /// Invalidate every session (`manual_revoke`).
    SessionRevokeAll,
    /// The sandbox the node runs remote tool calls in.
    SandboxStatus,
    /// Invoke a tool on another node (handshake on demand).
    Invoke {
        /// Peer ID, or the DID of a peer with a live session.
        peer: String,
        /// The tool.
        tool: String,
        /// Its params (an object).
        params: serde_json::Value,
    },
    /// The tools another node lets this one call.
    Tools {
        /// Peer ID, or the DID of a peer with a live session.
        peer: String,
    },
    /// Calls waiting for the owner's approval.
    Approvals,
    /// Approve or deny a waiting call.
    ApprovalDecide {
        /// Its ID from `Approvals`.
        id: u64,
        /// Approve (`true`) or deny.
        approve: bool,
    },
    /// The firewall rules in effect.
    FirewallList,
    /// Add a firewall rule at runtime.
    FirewallAdd {
        /// The rule.
        rule: lango_p2p::firewall::Rule,
    },
    /// Remove every rule for a peer DID at runtime.
    FirewallRemove {
        /// The DID (`*` for wildcard rules).
        peer_did: String,
    },
    /// Remove orphaned sandbox containers with the node's own runtime.
    SandboxCleanup {
        /// Every sandbox container, in-flight ones included.
        #[serde(default)]
        force: bool,
    },
}

/// The answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request succeeded.
    pub ok: bool,
    /// The result on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The error on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What the server does with a request.
pub trait Handler: Send + Sync + 'static {
    /// Handles one request.
    fn handle(&self, req: Request) -> impl std::future::Future<Output = Result<Value>> + Send;
}

/// The listening socket; the file is removed on drop.
pub struct Server {
    path: PathBuf,
    listener: UnixListener,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Server {
    /// Binds `<data-dir>/admin.sock` (replacing a stale socket left by a crash) with mode 0600.
    /// The caller holds the data-directory lock, so no other node owns the socket.
    pub fn bind(data_dir: &Path) -> Result<Self> {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        let path = socket_path(data_dir);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_socket() => {
                std::fs::remove_file(&path)
                    .with_context(|| format!("remove stale socket {}", path.display()))?;
            }
            Ok(_) => bail!(
                "{} exists and is not a socket; remove it and start again",
                path.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("inspect {}", path.display())),
        }
        let listener =
            UnixListener::bind(&path).with_context(|| format!("bind {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restrict {}", path.display()))?;
        Ok(Self { path, listener })
    }

    /// Serves until the task is dropped.
    pub async fn run<H: Handler>(self, handler: Arc<H>) {
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS));
        let own_uid = nix::unistd::geteuid().as_raw();
        loop {
            let (stream, _) = match self.listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "admin socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let uid = match stream.peer_cred() {
                Ok(c) => c.uid(),
                Err(e) => {
                    tracing::warn!(error = %e, "admin socket: cannot read peer credentials; refused");
                    continue;
                }
            };
            if uid != own_uid {
                tracing::warn!(
                    event = "admin_refused",
                    uid,
                    "admin socket: refused a connection from another user"
                );
                continue;
            }
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                tracing::warn!("admin socket: too many clients; connection refused");
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                if let Err(e) = serve_one(stream, handler.as_ref()).await {
                    tracing::debug!(error = %e, "admin connection ended with an error");
                }
                drop(permit);
            });
        }
    }
}

async fn read_line(stream: &mut BufReader<UnixStream>, timeout: Duration) -> Result<Vec<u8>> {
    let mut line = Vec::new();
    let fut = async {
        loop {
            let buf = stream.fill_buf().await?;
            if buf.is_empty() {
                return Ok::<_, std::io::Error>(());
            }
            let (take, done) = match buf.iter().position(|b| *b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            line.extend_from_slice(&buf[..take]);
            stream.consume(take);
            if done {
                return Ok(());
            }
            if line.len() > MAX_LINE {
                return Err(std::io::Error::other(format!(
                    "line longer than {MAX_LINE} bytes"
                )));
            }
        }
    };
    tokio::time::timeout(timeout, fut).await.with_context(|| {
        format!(
            "timed out reading from the admin socket after {}s",
            timeout.as_secs()
        )
    })??;
    if line.len() > MAX_LINE {
        bail!("line longer than {MAX_LINE} bytes");
    }
    Ok(line)
}

async fn write_line(stream: &mut BufReader<UnixStream>, value: &impl Serialize) -> Result<()> {
    let mut bytes = serde_json::to_vec(value)?;
    bytes.push(b'\n');
    tokio::time::timeout(IO_TIMEOUT, stream.get_mut().write_all(&bytes))
        .await
        .context("timed out writing to the admin socket")??;
    Ok(())
}

async fn serve_one<H: Handler>(stream: UnixStream, handler: &H) -> Result<()> {
    let mut stream = BufReader::new(stream);
    let line = read_line(&mut stream, IO_TIMEOUT).await?;
    let response = match serde_json::from_slice::<Request>(&line) {
        Err(e) => Response {
            ok: false,
            result: None,
            error: Some(format!("bad request: {e}")),
        },
        Ok(req) => match handler.handle(req).await {
            Ok(v) => Response {
                ok: true,
                result: Some(v),
                error: None,
            },
            Err(e) => Response {
                ok: false,
                result: None,
                error: Some(format!("{e:#}")),
            },
        },
    };
    write_line(&mut stream, &response).await
}

/// Sends `req` to the node running on `data_dir`. `Ok(None)` when no node is running there
/// (no socket, or nobody listening).
pub async fn request(data_dir: &Path, req: &Request) -> Result<Option<Value>> {
    let path = socket_path(data_dir);
    let stream = match tokio::time::timeout(IO_TIMEOUT, UnixStream::connect(&path)).await {
        Err(_) => bail!("timed out connecting to {}", path.display()),
        Ok(Err(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Ok(Err(e)) => return Err(e).with_context(|| format!("connect to {}", path.display())),
        Ok(Ok(s)) => s,
    };
    let mut stream = BufReader::new(stream);
    write_line(&mut stream, req).await?;
    let line = read_line(&mut stream, req.answer_timeout()).await?;
    if line.is_empty() {
        bail!(
            "the node closed the admin connection without answering (is it running as another user?)"
        );
    }
    let resp: Response =
        serde_json::from_slice(&line).context("the node sent an unreadable answer")?;
    if resp.ok {
        Ok(Some(resp.result.unwrap_or(Value::Null)))
    } else {
        bail!("{}", resp.error.unwrap_or_else(|| "unknown error".into()))
    }
}

/// Like [`request`], but a missing node is an error that says how to start one.
pub async fn require(data_dir: &Path, req: &Request) -> Result<Value> {
    match request(data_dir, req).await? {
        Some(v) => Ok(v),
        None => bail!(
            "no lango node is running on {} (start one with `lango-node serve`)",
            data_dir.display()
        ),
    }
}
