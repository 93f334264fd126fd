//! Choosing the sandbox executor at startup with the runtime probe chain (§3.2).
//!
//! | config | result |
//! | --- | --- |
//! | isolation off | no executor: remote tool calls are refused |
//! | container off | subprocess executor, or none without the required OS isolation |
//! | runtime `auto` | gVisor, then Docker, then (only without `requireContainer`) native |
//! | runtime `docker` / `gvisor` | that runtime or an error, never a substitute |
//! | runtime `native` | the subprocess executor |
//!
//! Every runtime that was skipped is reported with its reason, and a startup self-test runs
//! `sandbox_echo` through the chosen executor (W-1): if it fails, there is no executor.

use std::{path::PathBuf, sync::Arc};

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use crate::{
    config::{RuntimeChoice, SandboxConfig},
    container::{ContainerExecutor, ContainerRuntime, RuntimeKind},
    executor::Executor,
    registry::{SANDBOX_ECHO, ToolRegistry},
    subprocess::{IsolationReport, SubprocessExecutor, SubprocessOptions},
};

/// Connects to a container runtime, or says why it is unavailable.
#[async_trait]
pub trait RuntimeFactory: Send + Sync {
    /// The runtime of `kind`, ready to run calls.
    async fn connect(&self, kind: RuntimeKind) -> Result<Arc<dyn ContainerRuntime>, String>;
}

/// The outcome of selection.
pub struct Selection {
    /// The executor remote calls run in; `None` means they are refused.
    pub executor: Option<Arc<dyn Executor>>,
    /// The container runtime, when container mode is active.
    pub runtime: Option<Arc<dyn ContainerRuntime>>,
    /// `container(gvisor)`, `container(docker)`, `subprocess(<layers>)` or
    /// `none (remote tool calls refused)`.
    pub effective: String,
    /// Runtimes tried and skipped, with the reason.
    pub skipped: Vec<(String, String)>,
    /// Why there is no executor, or why container mode fell back.
    pub error: Option<String>,
    /// The startup log line of.
    pub log: String,
    /// The OS isolation probe (subprocess mode).
    pub isolation: Option<IsolationReport>,
}

impl Selection {
    fn none(
        error: impl Into<String>,
        log: impl Into<String>,
        skipped: Vec<(String, String)>,
    ) -> Self {
        Self {
            executor: None,
            runtime: None,
            effective: "none (remote tool calls refused)".into(),
            skipped,
            error: Some(error.into()),
            log: log.into(),
            isolation: None,
        }
    }
}

/// The exact error of for a requested runtime that is unavailable.
pub fn unavailable_message(what: &str) -> String {
    format!("{what} runtime requested but unavailable: container runtime unavailable")
}

/// The exact error of when `auto` finds no container runtime and one is required.
pub const REQUIRED_UNAVAILABLE: &str =
    "container runtime required but unavailable: container runtime unavailable";

/// Selects the executor. `worker` is the worker binary the subprocess executor starts.
pub async fn select(
    cfg: &SandboxConfig,
    registry: Arc<ToolRegistry>,
    worker: PathBuf,
    factory: &dyn RuntimeFactory,
    self_test: bool,
) -> Selection {
    if !cfg.enabled {
        return Selection::none(
            "tool isolation is not enabled (set p2p.toolIsolation.enabled = true)",
            "P2P enabled but toolIsolation disabled, so inbound tool_invoke requests will be rejected",
            Vec::new(),
        );
    }
    let c = &cfg.container;
    let mut skipped = Vec::new();
    let subprocess = |skipped: Vec<(String, String)>, log: String, error: Option<String>| {
        let opts = SubprocessOptions::from_config(cfg, worker.clone());
        match SubprocessExecutor::new(opts, registry.clone()) {
            Ok(ex) => {
                let report = ex.report().clone();
                Selection {
                    effective: ex.isolation(),
                    executor: Some(Arc::new(ex)),
                    runtime: None,
                    skipped,
                    error,
                    log,
                    isolation: Some(report),
                }
            }
            Err(e) => {
                let mut s = Selection::none(
                    e.to_string(),
                    format!("P2P tool isolation unavailable: {e}"),
                    skipped,
                );
                s.isolation = Some(IsolationReport::probe());
                s
            }
        }
    };
    let mut selection = if !c.enabled {
        subprocess(
            skipped,
            "P2P tool isolation enabled (subprocess mode)".into(),
            None,
        )
    } else {
        let order: &[RuntimeKind] = match c.runtime {
            RuntimeChoice::Auto => &[RuntimeKind::Gvisor, RuntimeKind::Docker],
            RuntimeChoice::Docker => &[RuntimeKind::Docker],
            RuntimeChoice::Gvisor => &[RuntimeKind::Gvisor],
            RuntimeChoice::Native => &[],
        };
        let mut found = None;
        for kind in order {
            match factory.connect(*kind).await {
                Ok(rt) => {
                    found = Some(rt);
                    break;
                }
                Err(why) => skipped.push((kind.as_str().to_owned(), why)),
            }
        }
        match (found, c.runtime) {
            (Some(rt), _) => {
                let ex = ContainerExecutor::new(rt.clone(), registry.clone(), cfg.timeout());
                Selection {
                    effective: ex.isolation(),
                    log: format!(
                        "P2P tool isolation enabled (container mode: {})",
                        rt.kind().as_str()
                    ),
                    executor: Some(Arc::new(ex)),
                    runtime: Some(rt),
                    skipped,
                    error: None,
                    isolation: None,
                }
            }
            (None, RuntimeChoice::Native) => subprocess(
                skipped,
                "P2P tool isolation enabled (container mode: native)".into(),
                None,
            ),
            (None, RuntimeChoice::Docker) => {
                let e = unavailable_message("docker");
                Selection::none(
                    e.clone(),
                    format!("P2P tool isolation unavailable: {e}"),
                    skipped,
                )
            }
            (None, RuntimeChoice::Gvisor) => {
                let e = unavailable_message("gvisor");
                Selection::none(
                    e.clone(),
                    format!("P2P tool isolation unavailable: {e}"),
                    skipped,
                )
            }
            (None, RuntimeChoice::Auto) if c.require_container => Selection::none(
                REQUIRED_UNAVAILABLE,
                format!("P2P tool isolation unavailable: {REQUIRED_UNAVAILABLE}"),
                skipped,
            ),
            (None, RuntimeChoice::Auto) => subprocess(
                skipped,
                format!(
                    "Container sandbox unavailable, falling back to subprocess: {REQUIRED_UNAVAILABLE}"
                ),
                Some(REQUIRED_UNAVAILABLE.into()),
            ),
        }
    };
    if self_test
        && let Some(ex) = &selection.executor
        && let Err(e) = smoke_test(ex.as_ref()).await
    {
        {
            let mut none = Selection::none(
                format!("startup self-test failed: {e}"),
                format!("P2P tool isolation unavailable: startup self-test failed: {e}"),
                std::mem::take(&mut selection.skipped),
            );
            none.isolation = selection.isolation.take();
            if let Some(rt) = selection.runtime.take() {
                rt.shutdown().await;
            }
            return none;
        }
    }
    selection
}

/// Runs `sandbox_echo` with `{"msg":"sandbox-smoke-test"}` and checks the output equals the
/// params; returns the output.
pub async fn smoke_test(ex: &dyn Executor) -> Result<Map<String, Value>, String> {
    let params = match json!({"msg": "sandbox-smoke-test"}) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    let out = ex
        .execute(SANDBOX_ECHO, params.clone())
        .await
        .map_err(|e| e.to_string())?;
    if out != params {
        return Err(format!(
            "sandbox_echo returned {} instead of its params",
            Value::Object(out)
        ));
    }
    Ok(out)
}
