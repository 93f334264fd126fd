//! The worker protocol: one JSON request on the worker's stdin, one JSON result on its result
//! descriptor (spec §2.2, Appendix B).
//!
//! ```text
//! parent ──stdin──▶ {"version":1,"toolName":"sandbox_echo","params":{"msg":"hi"},"timeoutMs":30000}
//! parent ◀─stdout── {"output":{"msg":"hi"}}\n          exit 0
//!                   {"error":"query must not be empty"}\n   exit 0   (tool-level error)
//!                   {"error":"tool \"x\" not registered in worker"}\n exit 1 (protocol error)
//!                   {"error":"worker panic"}\n          exit 70
//! ```
//!
//! The shapes are the Go reference's, so fixtures can be shared. Two optional fields are ours:
//! `command` (an operator-configured command tool the worker runs as its child) and `confine`
//! (the isolation the worker applies to itself before any tool code runs).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The only argument that selects worker mode; it must be the sole argument.
pub const WORKER_FLAG: &str = "--sandbox-worker";

/// Largest request the worker accepts: the A2A request cap (1 MiB) plus room for the envelope.
pub const MAX_WORKER_REQUEST_BYTES: usize = (1 << 20) + (64 << 10);

/// Bytes of a worker's stderr kept for the local log; the rest is drained and dropped.
pub const STDERR_KEEP_BYTES: usize = 64 << 10;

/// Longest tool-level error message passed on (spec §2.2.2 item 14).
pub const MAX_TOOL_ERROR_BYTES: usize = 1024;

/// The worker's own isolation self-check. It is not in any registry, so no peer request can
/// reach it (unknown tools are refused before the executor); only
/// [`Executor::self_check`](crate::Executor::self_check) sends it.
pub const SELF_CHECK_TOOL: &str = "__lango_self_check";

/// Exit code of a worker whose request could not be served (a JSON error was still written).
pub const EXIT_PROTOCOL: i32 = 1;
/// Exit code of a worker that panicked (it writes `{"error":"worker panic"}`).
pub const EXIT_PANIC: i32 = 70;

/// Parent → worker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkerRequest {
    /// Protocol version; the subprocess executor sends none (0), containers send 1. Ignored.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub version: u32,
    /// The tool to run.
    pub tool_name: String,
    /// Its parameters: an object or null.
    #[serde(default)]
    pub params: Value,
    /// The deadline the worker enforces on a command tool's child, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Set for an operator-configured command tool: what the worker executes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandSpec>,
    /// Isolation the worker applies to itself before running the tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confine: Option<Confinement>,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// A command tool as the worker runs it: `program args…` with the params as JSON on stdin and
/// a JSON value expected on stdout.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CommandSpec {
    /// Absolute path of the program.
    pub program: String,
    /// Fixed arguments (never taken from the peer).
    #[serde(default)]
    pub args: Vec<String>,
}

/// What the worker locks itself into (Linux): the parent decides, the worker applies it before
/// the first line of tool code, so the tool and everything it starts inherit it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Confinement {
    /// The only writable directory.
    pub workdir: String,
    /// Paths readable (and executable) besides the workdir.
    #[serde(default)]
    pub read_paths: Vec<String>,
    /// `RLIMIT_NPROC`, set inside the user namespace where it counts only the sandbox's
    /// processes. 0 leaves it unset.
    #[serde(default)]
    pub max_processes: u64,
    /// Apply Landlock (must succeed when set).
    #[serde(default)]
    pub landlock: bool,
    /// Apply the seccomp deny list (must succeed when set).
    #[serde(default)]
    pub seccomp: bool,
}

/// Worker → parent. Written as one object and a newline.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct WorkerResult {
    /// The tool's output (always an object; other values are wrapped as `{"result": v}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Map<String, Value>>,
    /// A tool-level or protocol error.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

impl WorkerResult {
    /// A successful result.
    pub fn ok(output: Map<String, Value>) -> Self {
        Self {
            output: (!output.is_empty()).then_some(output),
            error: String::new(),
        }
    }

    /// An error result.
    pub fn err(message: impl Into<String>) -> Self {
        Self {
            output: None,
            error: message.into(),
        }
    }

    /// The JSON line the worker writes.
    pub fn to_line(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_else(|_| br#"{"error":"encode"}"#.to_vec());
        v.push(b'\n');
        v
    }
}

/// Wraps a non-object tool result as `{"result": v}` (R-1.4).
pub fn wrap_output(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(m) => m,
        Value::Null => Map::new(),
        other => {
            let mut m = Map::new();
            m.insert("result".into(), other);
            m
        }
    }
}

/// Decodes the worker's result channel: exactly one JSON object, optionally followed by a
/// newline, nothing else.
pub fn decode_result(bytes: &[u8]) -> Result<WorkerResult, String> {
    let mut it = serde_json::Deserializer::from_slice(bytes).into_iter::<WorkerResult>();
    let first = match it.next() {
        Some(Ok(r)) => r,
        Some(Err(e)) => return Err(format!("result is not a JSON object: {e}")),
        None => return Err("no result written".into()),
    };
    let rest = &bytes[it.byte_offset()..];
    if rest.iter().any(|b| !b.is_ascii_whitespace()) {
        return Err("trailing bytes after the result".into());
    }
    Ok(first)
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Tool names a peer may use (R-1.6): `^[A-Za-z0-9_.:-]{1,128}$`.
pub fn valid_tool_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn appendix_b_shapes() {
        let req: WorkerRequest = serde_json::from_str(
            r#"{"version":1,"toolName":"sandbox_echo","params":{"msg":"sandbox-smoke-test"},"timeoutMs":30000}"#,
        )
        .unwrap();
        assert_eq!(req.tool_name, "sandbox_echo");
        assert_eq!(req.timeout_ms, Some(30000));
        let ok = WorkerResult::ok(wrap_output(json!({"msg":"sandbox-smoke-test"})));
        assert_eq!(
            ok.to_line(),
            b"{\"output\":{\"msg\":\"sandbox-smoke-test\"}}\n"
        );
        assert_eq!(
            WorkerResult::ok(wrap_output(json!(42))).to_line(),
            b"{\"output\":{\"result\":42}}\n"
        );
        assert_eq!(WorkerResult::ok(Map::new()).to_line(), b"{}\n");
        assert_eq!(
            WorkerResult::err("query must not be empty").to_line(),
            b"{\"error\":\"query must not be empty\"}\n"
        );
        // The subprocess executor's request carries no version (Go sends 0 and omits it).
        let plain = WorkerRequest {
            version: 0,
            tool_name: "t".into(),
            params: json!({}),
            timeout_ms: None,
            command: None,
            confine: None,
        };
        assert_eq!(
            serde_json::to_string(&plain).unwrap(),
            r#"{"toolName":"t","params":{}}"#
        );
    }

    #[test]
    fn result_decoding_is_strict() {
        assert_eq!(decode_result(b"{}\n").unwrap(), WorkerResult::default());
        assert!(decode_result(b"").is_err());
        assert!(decode_result(b"[1]").is_err());
        assert!(decode_result(b"{} {}").is_err());
        assert!(decode_result(b"{}garbage").is_err());
        assert_eq!(decode_result(br#"{"error":"x"}"#).unwrap().error, "x");
    }

    #[test]
    fn tool_names() {
        assert!(valid_tool_name("sandbox_echo"));
        assert!(valid_tool_name("ns:tool-1.2"));
        assert!(!valid_tool_name(""));
        assert!(!valid_tool_name("a b"));
        assert!(!valid_tool_name("../x"));
        assert!(!valid_tool_name(&"a".repeat(129)));
        assert_eq!(truncate_utf8("héllo", 2), "h");
    }
}
