//! Typed outcomes of one execution and the text a peer may see (spec §2.2.2 item 14).
//!
//! [`ExecError`]'s `Display` is for the local log and may carry details (exit status, the
//! worker's own error, engine errors). [`ExecError::peer_message`] is the only text that may
//! leave the node: it never contains raw stdout, stderr or engine messages.

use std::time::Duration;

use crate::protocol::{MAX_TOOL_ERROR_BYTES, truncate_utf8};

/// The class of a failed execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The deadline passed; everything the call started was killed.
    Timeout,
    /// A CPU, memory, file-size or process limit ended the call (SIGXCPU, allocation failure
    /// under `RLIMIT_AS`, SIGXFSZ, the engine's OOM kill).
    ResourceLimit,
    /// The result channel carried more than `maxOutputBytes`.
    OutputTooLarge,
    /// The tool ran and reported an error of its own.
    ToolError,
    /// The worker or runtime failed: crash, protocol error, engine error.
    WorkerFailure,
    /// The call was not attempted: the tool may not run here.
    NotAvailable,
}

/// A failed execution.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ExecError {
    /// See [`ErrorKind::Timeout`].
    #[error("tool {tool:?} timed out after {}", go_secs(*.after))]
    Timeout {
        /// Tool name.
        tool: String,
        /// The deadline.
        after: Duration,
    },
    /// See [`ErrorKind::ResourceLimit`].
    #[error("tool {tool:?} exceeded resource limits: {detail}")]
    ResourceLimit {
        /// Tool name.
        tool: String,
        /// Which limit (local log only).
        detail: String,
    },
    /// See [`ErrorKind::OutputTooLarge`].
    #[error("tool {tool:?} output too large (over {limit} bytes)")]
    OutputTooLarge {
        /// Tool name.
        tool: String,
        /// The cap.
        limit: usize,
    },
    /// See [`ErrorKind::ToolError`].
    #[error("tool {tool:?}: {message}")]
    ToolError {
        /// Tool name.
        tool: String,
        /// The tool's message, at most 1024 bytes.
        message: String,
    },
    /// See [`ErrorKind::WorkerFailure`].
    #[error("tool {tool:?} execution failed: {detail}")]
    WorkerFailure {
        /// Tool name.
        tool: String,
        /// What happened (local log only).
        detail: String,
    },
    /// See [`ErrorKind::NotAvailable`].
    #[error("tool {tool:?} is not available here: {reason}")]
    NotAvailable {
        /// Tool name.
        tool: String,
        /// Why.
        reason: String,
    },
}

impl ExecError {
    /// The class.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Timeout { .. } => ErrorKind::Timeout,
            Self::ResourceLimit { .. } => ErrorKind::ResourceLimit,
            Self::OutputTooLarge { .. } => ErrorKind::OutputTooLarge,
            Self::ToolError { .. } => ErrorKind::ToolError,
            Self::WorkerFailure { .. } => ErrorKind::WorkerFailure,
            Self::NotAvailable { .. } => ErrorKind::NotAvailable,
        }
    }

    /// The tool-level error, truncated to 1024 bytes on a character boundary.
    pub fn tool_error(tool: &str, message: &str) -> Self {
        Self::ToolError {
            tool: tool.into(),
            message: truncate_utf8(message, MAX_TOOL_ERROR_BYTES).to_owned(),
        }
    }

    /// A worker failure with a local-only detail.
    pub fn failure(tool: &str, detail: impl Into<String>) -> Self {
        Self::WorkerFailure {
            tool: tool.into(),
            detail: detail.into(),
        }
    }

    /// The text a remote peer may see. Tool errors still go through the sanitizer and the owner
    /// shield of the A2A layer before they leave.
    pub fn peer_message(&self) -> String {
        match self {
            Self::Timeout { tool, after } => {
                format!("tool \"{tool}\" timed out after {}", go_secs(*after))
            }
            Self::ResourceLimit { tool, .. } => format!("tool \"{tool}\" exceeded resource limits"),
            Self::OutputTooLarge { tool, .. } => format!("tool \"{tool}\" output too large"),
            Self::ToolError { tool, message } => format!("tool \"{tool}\": {message}"),
            Self::WorkerFailure { tool, .. } => format!("tool \"{tool}\" execution failed"),
            Self::NotAvailable { .. } => "tool not available to remote peers".into(),
        }
    }
}

/// A deadline as Go prints whole-second and millisecond durations (`3s`, `1m30s`, `1.5s`):
/// the reference's timeout text is kept byte for byte.
pub fn go_secs(d: Duration) -> String {
    let total_ms = d.as_millis();
    let (h, rem) = (total_ms / 3_600_000, total_ms % 3_600_000);
    let (m, rem) = (rem / 60_000, rem % 60_000);
    let (s, ms) = (rem / 1000, rem % 1000);
    let secs = if ms == 0 {
        format!("{s}s")
    } else {
        let frac = format!("{ms:03}");
        format!("{s}.{}s", frac.trim_end_matches('0'))
    };
    match (h, m) {
        (0, 0) if s == 0 && ms == 0 => "0s".into(),
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_messages_match_the_table() {
        let t = "adv";
        assert_eq!(
            ExecError::Timeout {
                tool: t.into(),
                after: Duration::from_secs(3)
            }
            .peer_message(),
            "tool \"adv\" timed out after 3s"
        );
        assert_eq!(
            ExecError::ResourceLimit {
                tool: t.into(),
                detail: "SIGXCPU".into()
            }
            .peer_message(),
            "tool \"adv\" exceeded resource limits"
        );
        let f = ExecError::failure(t, "exit 1 (stderr: /home/secret)");
        assert_eq!(f.peer_message(), "tool \"adv\" execution failed");
        assert!(!f.peer_message().contains("secret"));
        let long = "é".repeat(1000);
        let e = ExecError::tool_error(t, &long);
        let ExecError::ToolError { message, .. } = &e else {
            unreachable!()
        };
        assert!(message.len() <= 1024 && message.len() >= 1022);
    }

    #[test]
    fn go_duration_text() {
        assert_eq!(go_secs(Duration::from_secs(30)), "30s");
        assert_eq!(go_secs(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_secs(Duration::from_secs(600)), "10m0s");
        assert_eq!(go_secs(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_secs(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(go_secs(Duration::ZERO), "0s");
    }
}
