//! The container runtime seam and the container executor (spec §2.3, §3.2).
//!
//! A [`ContainerRuntime`] runs one worker request in one fresh container and reports the
//! outcome with the same classification as the subprocess executor. Docker and gVisor (Docker
//! with the `runsc` OCI runtime) live in [`docker`]; the native runtime is the subprocess
//! executor under the container executor's name.

pub mod demux;
pub mod docker;
pub mod image;
pub mod pool;

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::{
    Error,
    executor::Executor,
    outcome::ExecError,
    protocol::WorkerRequest,
    registry::{ToolKind, ToolRegistry},
};

/// Which container runtime an implementation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    /// Docker with its default OCI runtime.
    Docker,
    /// Docker with `runsc`.
    Gvisor,
}

impl RuntimeKind {
    /// `docker` or `gvisor`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Docker => "docker",
            Self::Gvisor => "gvisor",
        }
    }
}

/// What a cleanup removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Containers removed.
    pub removed: usize,
    /// Containers that could not be removed.
    pub failed: usize,
}

/// Pool sizes for status output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolState {
    /// Containers waiting.
    pub current: usize,
    /// Target size.
    pub target: usize,
}

/// A container engine that runs one worker request per container.
#[async_trait]
pub trait ContainerRuntime: Send + Sync {
    /// `docker` or `gvisor`.
    fn kind(&self) -> RuntimeKind;

    /// Runs `request` in a fresh container (from the pool when there is one) and removes it.
    async fn run(&self, request: &WorkerRequest) -> Result<Map<String, Value>, ExecError>;

    /// Removes exactly the container `id`.
    async fn cleanup(&self, id: &str) -> Result<(), Error>;

    /// Removes orphaned sandbox containers: by the default policy of spec §2.3.4, or every
    /// container labelled `lango.sandbox=true` with `force`.
    async fn cleanup_orphans(&self, force: bool) -> Result<CleanupReport, Error>;

    /// Whether the engine holds a memory limit without swap and a process limit for a
    /// container created with this runtime's settings (created, inspected, removed).
    async fn engine_limits(&self) -> Result<(bool, bool), Error>;

    /// The resolved ID of the configured image.
    async fn image_id(&self) -> Result<String, Error>;

    /// The warm pool's sizes, when there is a pool.
    fn pool_state(&self) -> Option<PoolState>;

    /// Stops the pool and removes its containers (by ID).
    async fn shutdown(&self);
}

/// Runs worker-safe Rust tools in containers. Command tools are not available here: their
/// programs are not in the worker-only image and containers get no mounts.
pub struct ContainerExecutor {
    runtime: Arc<dyn ContainerRuntime>,
    registry: Arc<ToolRegistry>,
    timeout: std::time::Duration,
}

impl ContainerExecutor {
    /// Over `runtime`.
    pub fn new(
        runtime: Arc<dyn ContainerRuntime>,
        registry: Arc<ToolRegistry>,
        timeout: std::time::Duration,
    ) -> Self {
        Self {
            runtime,
            registry,
            timeout,
        }
    }

    /// The runtime.
    pub fn runtime(&self) -> &Arc<dyn ContainerRuntime> {
        &self.runtime
    }
}

#[async_trait]
impl Executor for ContainerExecutor {
    async fn execute(
        &self,
        tool: &str,
        params: Map<String, Value>,
    ) -> Result<Map<String, Value>, ExecError> {
        match self.registry.get(tool) {
            Some(t) if t.class == crate::IsolationClass::WorkerSafe => {
                if let ToolKind::Command(_) = t.kind {
                    return Err(ExecError::NotAvailable {
                        tool: tool.into(),
                        reason: "command tools run only in subprocess mode".into(),
                    });
                }
            }
            _ => {
                return Err(ExecError::NotAvailable {
                    tool: tool.into(),
                    reason: "not a worker-safe tool".into(),
                });
            }
        }
        let request = WorkerRequest {
            version: 1,
            tool_name: tool.into(),
            params: Value::Object(params),
            timeout_ms: Some(self.timeout.as_millis() as u64),
            command: None,
            confine: None,
        };
        self.runtime.run(&request).await
    }

    fn isolation(&self) -> String {
        format!("container({})", self.runtime.kind().as_str())
    }

    async fn self_check(&self) -> Result<Vec<(String, bool)>, ExecError> {
        let request = WorkerRequest {
            version: 1,
            tool_name: crate::protocol::SELF_CHECK_TOOL.into(),
            params: Value::Object({
                let mut p = crate::executor::self_check_params();
                p.insert("mode".into(), Value::from("container"));
                p
            }),
            timeout_ms: Some(self.timeout.as_millis() as u64),
            command: None,
            confine: None,
        };
        let mut out = self.runtime.run(&request).await?;
        // Under gVisor the cgroup files are not visible inside; the engine's record of the
        // container's limits is then what is checked.
        let memory = "memory limit enforced";
        let pids = "process limit enforced";
        if out.get(memory) != Some(&Value::Bool(true)) || out.get(pids) != Some(&Value::Bool(true))
        {
            let (m, p) =
                self.runtime.engine_limits().await.map_err(|e| {
                    ExecError::failure(crate::protocol::SELF_CHECK_TOOL, e.to_string())
                })?;
            out.insert(memory.into(), Value::Bool(m));
            out.insert(pids.into(), Value::Bool(p));
        }
        Ok(crate::executor::self_check_results(out))
    }
}
