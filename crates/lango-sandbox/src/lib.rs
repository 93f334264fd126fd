//! # lango-sandbox
//!
//! Isolated execution of tool calls from remote peers.
//!
//! ## What it owns
//! The executor seam with typed outcomes, the subprocess executor (worker mode, OS isolation:
//! namespaces, rlimits, seccomp, Landlock, cgroups), the container runtime seam with Docker and
//! gVisor, a warm pool that never reuses a container, and the registry of tools that may run
//! for peers.
//!
//! ## What it must never do
//! Run a peer's call in the node's own process, silently substitute a weaker runtime than the
//! one configured, or send a tool's raw output or error text to a peer.
//!
//! ## Place in the layers
//! Independent of the networking crates; `lango-p2p` routes remote calls into it.
#![forbid(unsafe_code)]

/// Errors of the sandbox.
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
}
