//! The executor seam and the in-process executor.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::{
    outcome::ExecError,
    protocol::wrap_output,
    registry::{ToolKind, ToolRegistry},
};

/// Runs tool calls. The output is always a JSON object (non-objects are wrapped as
/// `{"result": v}`).
#[async_trait]
pub trait Executor: Send + Sync {
    /// Runs `tool` with `params`.
    async fn execute(
        &self,
        tool: &str,
        params: Map<String, Value>,
    ) -> Result<Map<String, Value>, ExecError>;

    /// How calls are isolated, for status output: `subprocess(namespaces+…)`,
    /// `container(docker)`, `in-process`.
    fn isolation(&self) -> String;

    /// Runs the worker's isolation self-checks (empty environment, private workdir, network
    /// denied, writes outside the workdir denied, the node's /proc entry hidden, memory and
    /// process limits) inside this executor's sandbox: `(check, passed)` pairs.
    async fn self_check(&self) -> Result<Vec<(String, bool)>, ExecError> {
        Err(ExecError::NotAvailable {
            tool: crate::protocol::SELF_CHECK_TOOL.into(),
            reason: "this executor has no sandbox to check".into(),
        })
    }
}

/// The self-check request's params and the reading of its output.
pub(crate) fn self_check_params() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("nodePid".into(), Value::from(std::process::id()));
    m
}

/// `(check, passed)` pairs from the self-check tool's output.
pub(crate) fn self_check_results(out: Map<String, Value>) -> Vec<(String, bool)> {
    out.into_iter()
        .map(|(k, v)| (k, v.as_bool().unwrap_or(false)))
        .collect()
}

/// Calls a tool function in the caller's process, for the owner's own agent only.
/// It must never serve a remote peer: it has no isolation at all.
pub struct InProcessExecutor {
    registry: Arc<ToolRegistry>,
}

impl InProcessExecutor {
    /// Over the Rust functions of `registry` (any isolation class).
    pub fn new(registry: Arc<ToolRegistry>) -> Self {
        Self { registry }
    }
}

#[async_trait]
impl Executor for InProcessExecutor {
    async fn execute(
        &self,
        tool: &str,
        params: Map<String, Value>,
    ) -> Result<Map<String, Value>, ExecError> {
        match self.registry.get(tool).map(|t| &t.kind) {
            Some(ToolKind::Function(f)) => f(&params)
                .map(wrap_output)
                .map_err(|m| ExecError::tool_error(tool, &m)),
            Some(ToolKind::Command(_)) => Err(ExecError::NotAvailable {
                tool: tool.into(),
                reason: "command tools run only in the sandbox".into(),
            }),
            None => Err(ExecError::NotAvailable {
                tool: tool.into(),
                reason: "not registered".into(),
            }),
        }
    }

    fn isolation(&self) -> String {
        "in-process".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::IsolationClass;
    use serde_json::json;

    // Port of the reference's TestInProcessExecutor_Execute.
    #[tokio::test]
    async fn in_process_executes_and_wraps() {
        let mut r = ToolRegistry::builtin();
        r.register_fn("answer", "", IsolationClass::LocalOnly, |_| Ok(json!(42)))
            .unwrap();
        r.register_fn("fails", "", IsolationClass::LocalOnly, |_| {
            Err("boom".into())
        })
        .unwrap();
        let ex = InProcessExecutor::new(Arc::new(r));
        let p = json!({"msg": "hi"}).as_object().unwrap().clone();
        assert_eq!(ex.execute("sandbox_echo", p.clone()).await.unwrap(), p);
        assert_eq!(
            Value::Object(ex.execute("answer", Map::new()).await.unwrap()),
            json!({"result": 42})
        );
        let e = ex.execute("fails", Map::new()).await.unwrap_err();
        assert_eq!(e.peer_message(), "tool \"fails\": boom");
        assert!(ex.execute("nope", Map::new()).await.is_err());
    }
}
