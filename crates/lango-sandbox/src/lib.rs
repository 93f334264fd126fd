//! # lango-sandbox
//!
//! Isolated execution of tool calls from remote peers.
//!
//! ## What it owns
//! - the [`Executor`] seam with typed outcomes ([`ExecError`], [`ErrorKind`]) and the text a
//!   peer may see ([`ExecError::peer_message`]);
//! - the [`ToolRegistry`] with isolation classes: only worker-safe tools run for peers;
//! - the worker ([`worker`]): the process one call runs in, entered with exactly one argument,
//!   `--sandbox-worker`, and speaking the JSON protocol of [`protocol`];
//! - the [`SubprocessExecutor`]: a fresh worker per call in new user, mount, pid, net, ipc and
//!   uts namespaces (bubblewrap), rlimits, no-new-privileges, Landlock and a seccomp deny
//!   list, a private workdir, bounded pipes and a deadline that kills the whole group;
//! - the [`ContainerRuntime`] seam with Docker and gVisor (Docker with `runsc`) and a warm pool
//!   whose containers each serve exactly one call;
//! - the probe chain that picks the executor at startup ([`select`]).
//!
//! ## What it must never do
//! Run a peer's call in the node's own process, silently substitute a weaker runtime than the
//! one configured, or send a tool's raw output or error text to a peer.
//!
//! ## Example
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use lango_sandbox::{Executor, SandboxConfig, SubprocessExecutor, SubprocessOptions, ToolRegistry};
//!
//! let cfg = SandboxConfig { enabled: true, ..Default::default() };
//! let opts = SubprocessOptions::from_config(&cfg, "/usr/local/bin/lango-sandbox-worker".into());
//! let executor = SubprocessExecutor::new(opts, Arc::new(ToolRegistry::builtin()))?;
//! let params = serde_json::json!({"msg": "hi"}).as_object().cloned().unwrap_or_default();
//! match executor.execute("sandbox_echo", params).await {
//!     Ok(output) => println!("{output:?}"),
//!     Err(e) => println!("peer sees: {}", e.peer_message()),
//! }
//! # Ok(()) }
//! ```
//!
//! ## Unsafe code
//! The workspace denies `unsafe`; this crate allows it only where the OS interface leaves no
//! choice: the pre-exec hook between fork and exec ([`prelaunch`](crate::prelaunch) is
//! private) and two raw syscalls without a safe wrapper (Landlock ABI query, `close_range`).
//! Each block carries a `SAFETY:` argument.

pub mod config;
pub mod confine;
pub mod container;
pub mod executor;
pub mod outcome;
mod prelaunch;
pub mod protocol;
pub mod registry;
pub mod select;
pub mod subprocess;
pub mod uids;
pub mod worker;

pub use config::{ContainerConfig, RuntimeChoice, SandboxConfig};
pub use container::{ContainerExecutor, ContainerRuntime, RuntimeKind};
pub use executor::{Executor, InProcessExecutor};
pub use outcome::{ErrorKind, ExecError};
pub use registry::{CommandTool, IsolationClass, SANDBOX_ECHO, SafetyLevel, ToolRegistry};
pub use subprocess::{IsolationReport, SubprocessExecutor, SubprocessOptions};
pub use uids::UidRange;

/// Errors of setting the sandbox up (calls fail with [`ExecError`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configured runtime is not available on this machine.
    #[error("sandbox runtime {runtime} unavailable: {reason}")]
    RuntimeUnavailable {
        /// The runtime.
        runtime: String,
        /// Why.
        reason: String,
    },
    /// OS isolation was required but cannot be set up here.
    #[error("OS isolation required but unavailable: {0}")]
    IsolationUnavailable(String),
    /// A setting or registration is invalid.
    #[error("{0}")]
    Config(String),
    /// The container engine failed.
    #[error("container engine: {0}")]
    Engine(String),
}
