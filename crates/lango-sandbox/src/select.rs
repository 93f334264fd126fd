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
//!
//! A subprocess sandbox that fails at start (no bubblewrap yet, or a passing shortage such as
//! `bwrap: Can't fork for pid 1`) is not given up for the life of the node: a
//! [`Recovering`] executor re-checks it in the background with back-off (1 s doubling to
//! 60 s) and takes calls once the check and the self-test pass; until then calls are refused
//! and `p2p sandbox status` shows the state.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex, RwLock, Weak},
    time::{Duration, Instant},
};

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
    /// Set when the subprocess sandbox failed at start and is re-checked in the background.
    pub recovery: Option<Arc<Recovering>>,
}

impl Selection {
    /// The executor to hand calls to: the one selected, or the one being re-checked.
    pub fn serving_executor(&self) -> Option<Arc<dyn Executor>> {
        self.executor
            .clone()
            .or_else(|| self.recovery.clone().map(|r| r as Arc<dyn Executor>))
    }
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
            recovery: None,
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
                    recovery: None,
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
                    recovery: None,
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
            let subprocess_mode = selection.runtime.is_none();
            if let Some(rt) = selection.runtime.take() {
                rt.shutdown().await;
            }
            if subprocess_mode {
                none.recovery = Some(Recovering::start(cfg, registry, worker, e));
            }
            return none;
        }
    }
    // Only a serving node (the one that runs the self-test) re-checks; a status probe does not.
    if self_test
        && selection.executor.is_none()
        && selection.runtime.is_none()
        && subprocess_chosen(cfg)
    {
        let reason = selection.error.clone().unwrap_or_default();
        selection.recovery = Some(Recovering::start(cfg, registry, worker, reason));
    }
    selection
}

/// Whether the configuration asks for the subprocess sandbox (container mode off, or the
/// `native` runtime).
fn subprocess_chosen(cfg: &SandboxConfig) -> bool {
    cfg.enabled && (!cfg.container.enabled || cfg.container.runtime == RuntimeChoice::Native)
}

/// First wait before re-checking a sandbox that failed at start; doubled after each failure.
pub const RECHECK_FIRST: Duration = Duration::from_secs(1);
/// Longest wait between two re-checks.
pub const RECHECK_MAX: Duration = Duration::from_secs(60);

/// The state of a sandbox being re-checked, for status output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryState {
    /// Calls run (the re-check passed).
    pub available: bool,
    /// Re-checks made so far.
    pub attempts: u32,
    /// Why the sandbox is (or was last) unavailable.
    pub last_error: String,
    /// When the next re-check runs (while unavailable).
    pub next_check_in: Option<Duration>,
}

/// The subprocess sandbox that failed at start, re-checked with back-off until it works.
/// Calls are refused with [`ExecError::NotAvailable`](crate::ExecError) until then.
pub struct Recovering {
    ready: RwLock<Option<Arc<dyn Executor>>>,
    state: Mutex<(RecoveryState, Option<Instant>)>,
}

impl Recovering {
    fn start(
        cfg: &SandboxConfig,
        registry: Arc<ToolRegistry>,
        worker: PathBuf,
        reason: String,
    ) -> Arc<Self> {
        tracing::warn!(
            event = "sandbox_recheck_scheduled",
            reason = %reason,
            "sandbox unavailable at start; re-checking in the background"
        );
        let me = Arc::new(Self {
            ready: RwLock::new(None),
            state: Mutex::new((
                RecoveryState {
                    available: false,
                    attempts: 0,
                    last_error: reason,
                    next_check_in: Some(RECHECK_FIRST),
                },
                Some(Instant::now() + RECHECK_FIRST),
            )),
        });
        let weak = Arc::downgrade(&me);
        let opts = SubprocessOptions::from_config(cfg, worker);
        tokio::spawn(recheck(weak, opts, registry));
        me
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (RecoveryState, Option<Instant>)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state now.
    pub fn state(&self) -> RecoveryState {
        let g = self.lock();
        let mut s = g.0.clone();
        s.next_check_in = g.1.map(|at| at.saturating_duration_since(Instant::now()));
        s
    }

    fn current(&self) -> Option<Arc<dyn Executor>> {
        self.ready.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

async fn recheck(me: Weak<Recovering>, opts: SubprocessOptions, registry: Arc<ToolRegistry>) {
    let mut wait = RECHECK_FIRST;
    loop {
        tokio::time::sleep(wait).await;
        let Some(r) = me.upgrade() else { return };
        let attempt = async {
            let ex = SubprocessExecutor::new(opts.clone(), registry.clone())
                .map_err(|e| e.to_string())?;
            smoke_test(&ex).await?;
            Ok::<_, String>(ex)
        };
        match attempt.await {
            Ok(ex) => {
                tracing::info!(
                    event = "sandbox_recovered",
                    isolation = %ex.isolation(),
                    "sandbox available again; remote tool calls run"
                );
                *r.ready.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(ex));
                let mut g = r.lock();
                g.0.available = true;
                g.0.attempts += 1;
                g.1 = None;
                return;
            }
            Err(e) => {
                wait = (wait * 2).min(RECHECK_MAX);
                let mut g = r.lock();
                g.0.attempts += 1;
                tracing::warn!(
                    event = "sandbox_recheck_failed",
                    attempt = g.0.attempts,
                    error = %e,
                    next_in_secs = wait.as_secs(),
                    "sandbox still unavailable"
                );
                g.0.last_error = e;
                g.1 = Some(Instant::now() + wait);
            }
        }
    }
}

#[async_trait]
impl Executor for Recovering {
    async fn execute(
        &self,
        tool: &str,
        params: Map<String, Value>,
    ) -> Result<Map<String, Value>, crate::ExecError> {
        match self.current() {
            Some(ex) => ex.execute(tool, params).await,
            None => Err(crate::ExecError::NotAvailable {
                tool: tool.into(),
                reason: format!(
                    "sandbox unavailable, re-checking: {}",
                    self.lock().0.last_error
                ),
            }),
        }
    }

    fn isolation(&self) -> String {
        match self.current() {
            Some(ex) => ex.isolation(),
            None => "none (remote tool calls refused; re-checking)".into(),
        }
    }

    async fn self_check(&self) -> Result<Vec<(String, bool)>, crate::ExecError> {
        match self.current() {
            Some(ex) => ex.self_check().await,
            None => Err(crate::ExecError::NotAvailable {
                tool: crate::protocol::SELF_CHECK_TOOL.into(),
                reason: "sandbox unavailable, re-checking".into(),
            }),
        }
    }
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
