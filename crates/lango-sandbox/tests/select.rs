//! Spec §7.8: the probe chain and the executor wiring (T-I1, T-I2, T-I3, T-I5, T-I6) with a
//! fake runtime factory. The fake runtime really runs the requests it gets (through the
//! in-process executor over the built-in tools), so the startup self-test and the container
//! executor are exercised end to end; only the engine is replaced. The subprocess fallback
//! runs the real worker binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use lango_sandbox::{
    ContainerExecutor, ContainerRuntime, ErrorKind, Executor, InProcessExecutor, IsolationClass,
    RuntimeChoice, RuntimeKind, SandboxConfig, ToolRegistry,
    container::{CleanupReport, PoolState},
    protocol::WorkerRequest,
    select::{REQUIRED_UNAVAILABLE, RuntimeFactory, Selection, select, unavailable_message},
};
use serde_json::{Map, Value, json};

const WORKER: &str = env!("CARGO_BIN_EXE_lango-sandbox-worker");

/// A runtime that runs each request in process. `broken` makes it answer every call with
/// the wrong output (a runtime that is "up" but does not work).
struct FakeRuntime {
    kind: RuntimeKind,
    inner: InProcessExecutor,
    broken: bool,
    runs: AtomicUsize,
    shutdowns: Arc<AtomicUsize>,
}

#[async_trait]
impl ContainerRuntime for FakeRuntime {
    fn kind(&self) -> RuntimeKind {
        self.kind
    }

    async fn run(
        &self,
        request: &WorkerRequest,
    ) -> Result<Map<String, Value>, lango_sandbox::ExecError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        if self.broken {
            return Ok(json!({"not": "the params"}).as_object().cloned().unwrap());
        }
        let params = request.params.as_object().cloned().unwrap_or_default();
        self.inner.execute(&request.tool_name, params).await
    }

    async fn cleanup(&self, _id: &str) -> Result<(), lango_sandbox::Error> {
        Ok(())
    }

    async fn cleanup_orphans(&self, _force: bool) -> Result<CleanupReport, lango_sandbox::Error> {
        Ok(CleanupReport::default())
    }

    async fn engine_limits(&self) -> Result<(bool, bool), lango_sandbox::Error> {
        Ok((true, true))
    }

    async fn image_id(&self) -> Result<String, lango_sandbox::Error> {
        Ok("sha256:fake".into())
    }

    fn pool_state(&self) -> Option<PoolState> {
        None
    }

    async fn shutdown(&self) {
        self.shutdowns.fetch_add(1, Ordering::SeqCst);
    }
}

/// Offers the runtimes in `available`; records every probe.
#[derive(Default)]
struct FakeFactory {
    available: Vec<RuntimeKind>,
    broken: bool,
    probes: Mutex<Vec<RuntimeKind>>,
    shutdowns: Arc<AtomicUsize>,
}

impl FakeFactory {
    fn with(available: &[RuntimeKind]) -> Self {
        Self {
            available: available.to_vec(),
            ..Default::default()
        }
    }

    fn probes(&self) -> Vec<RuntimeKind> {
        self.probes.lock().unwrap().clone()
    }
}

#[async_trait]
impl RuntimeFactory for FakeFactory {
    async fn connect(&self, kind: RuntimeKind) -> Result<Arc<dyn ContainerRuntime>, String> {
        self.probes.lock().unwrap().push(kind);
        if !self.available.contains(&kind) {
            return Err(format!("fake: no {} here", kind.as_str()));
        }
        Ok(Arc::new(FakeRuntime {
            kind,
            inner: InProcessExecutor::new(Arc::new(ToolRegistry::builtin())),
            broken: self.broken,
            runs: AtomicUsize::new(0),
            shutdowns: self.shutdowns.clone(),
        }))
    }
}

fn config(container: bool, runtime: RuntimeChoice, require: bool) -> SandboxConfig {
    let mut cfg = SandboxConfig {
        timeout_per_tool: Duration::from_secs(10),
        // The subprocess fallback must be constructible on machines without bubblewrap too;
        // with bubblewrap it still runs under namespaces.
        require_os_isolation: false,
        ..Default::default()
    };
    cfg.container.enabled = container;
    cfg.container.runtime = runtime;
    cfg.container.require_container = require;
    cfg
}

async fn run_select(cfg: &SandboxConfig, factory: &FakeFactory) -> Selection {
    select(
        cfg,
        Arc::new(ToolRegistry::builtin()),
        PathBuf::from(WORKER),
        factory,
        true,
    )
    .await
}

fn echo_params() -> Map<String, Value> {
    json!({"msg": "wiring"}).as_object().cloned().unwrap()
}

/// The chosen executor really runs a call.
async fn assert_runs(sel: &Selection) {
    let ex = sel.executor.as_ref().expect("an executor");
    assert_eq!(
        ex.execute("sandbox_echo", echo_params()).await.unwrap(),
        echo_params()
    );
}

const NONE: &str = "none (remote tool calls refused)";

// --- T-I1 ---------------------------------------------------------------------------------

#[tokio::test]
async fn t_i1_auto_prefers_gvisor_then_docker_then_native() {
    use RuntimeKind::{Docker, Gvisor};
    // gVisor available: chosen, Docker never probed.
    let f = FakeFactory::with(&[Gvisor, Docker]);
    let sel = run_select(&config(true, RuntimeChoice::Auto, true), &f).await;
    assert_eq!(sel.effective, "container(gvisor)");
    assert_eq!(
        sel.log,
        "P2P tool isolation enabled (container mode: gvisor)"
    );
    assert_eq!(sel.error, None);
    assert_eq!(f.probes(), vec![Gvisor]);
    assert_eq!(sel.runtime.as_ref().unwrap().kind(), Gvisor);
    assert_runs(&sel).await;

    // Only Docker: gVisor skipped with its reason, Docker chosen.
    let f = FakeFactory::with(&[Docker]);
    let sel = run_select(&config(true, RuntimeChoice::Auto, true), &f).await;
    assert_eq!(sel.effective, "container(docker)");
    assert_eq!(f.probes(), vec![Gvisor, Docker]);
    assert_eq!(
        sel.skipped,
        vec![("gvisor".to_owned(), "fake: no gvisor here".to_owned())]
    );
    assert_runs(&sel).await;

    // Neither, requireContainer = false: native (the subprocess executor), with the reason.
    let f = FakeFactory::with(&[]);
    let sel = run_select(&config(true, RuntimeChoice::Auto, false), &f).await;
    assert!(
        sel.effective.starts_with("subprocess("),
        "{}",
        sel.effective
    );
    assert!(sel.runtime.is_none());
    assert_eq!(sel.error.as_deref(), Some(REQUIRED_UNAVAILABLE));
    assert_eq!(
        sel.log,
        format!(
            "Container sandbox unavailable, falling back to subprocess: {REQUIRED_UNAVAILABLE}"
        )
    );
    assert_eq!(sel.skipped.len(), 2);
    assert_runs(&sel).await;

    // Neither, requireContainer = true: the exact error and no executor.
    let f = FakeFactory::with(&[]);
    let sel = run_select(&config(true, RuntimeChoice::Auto, true), &f).await;
    assert!(sel.executor.is_none());
    assert!(sel.runtime.is_none());
    assert_eq!(sel.effective, NONE);
    assert_eq!(
        sel.error.as_deref(),
        Some("container runtime required but unavailable: container runtime unavailable")
    );
    assert_eq!(
        sel.log,
        format!("P2P tool isolation unavailable: {REQUIRED_UNAVAILABLE}")
    );
}

// --- T-I2 ---------------------------------------------------------------------------------

#[tokio::test]
async fn t_i2_explicit_runtime_unavailable_is_an_error_without_fallback() {
    use RuntimeKind::{Docker, Gvisor};
    // Docker requested; gVisor would be available but is never substituted.
    let f = FakeFactory::with(&[Gvisor]);
    let sel = run_select(&config(true, RuntimeChoice::Docker, false), &f).await;
    assert!(sel.executor.is_none());
    assert_eq!(sel.effective, NONE);
    assert_eq!(
        sel.error.as_deref(),
        Some("docker runtime requested but unavailable: container runtime unavailable")
    );
    assert_eq!(f.probes(), vec![Docker]);

    // gVisor requested; Docker available but never substituted.
    let f = FakeFactory::with(&[Docker]);
    let sel = run_select(&config(true, RuntimeChoice::Gvisor, false), &f).await;
    assert!(sel.executor.is_none());
    assert_eq!(
        sel.error.as_deref(),
        Some("gvisor runtime requested but unavailable: container runtime unavailable")
    );
    assert_eq!(
        sel.error.as_deref(),
        Some(unavailable_message("gvisor").as_str())
    );
    assert_eq!(f.probes(), vec![Gvisor]);

    // Available explicit runtimes are used as asked.
    let f = FakeFactory::with(&[Docker, Gvisor]);
    let sel = run_select(&config(true, RuntimeChoice::Docker, true), &f).await;
    assert_eq!(sel.effective, "container(docker)");
    let sel = run_select(&config(true, RuntimeChoice::Gvisor, true), &f).await;
    assert_eq!(sel.effective, "container(gvisor)");
}

// --- T-I3 ---------------------------------------------------------------------------------

#[tokio::test]
async fn t_i3_unknown_runtime_and_native_with_require_container_are_config_errors() {
    for ok in ["auto", "docker", "gvisor", "native"] {
        assert_eq!(RuntimeChoice::parse(ok).unwrap().as_str(), ok);
    }
    for bad in ["kata", "", "Docker", "runsc", "native "] {
        let e = RuntimeChoice::parse(bad).unwrap_err();
        assert!(e.contains("unknown runtime"), "{e}");
    }
    let cfg = config(true, RuntimeChoice::Native, true);
    let errs = cfg.validate("p2p.toolIsolation").unwrap_err();
    assert!(
        errs.iter()
            .any(|e| e.starts_with("p2p.toolIsolation.container.runtime:")
                && e.contains("contradicts requireContainer")),
        "{errs:?}"
    );
    // native without requireContainer is valid and never probes a container runtime.
    let cfg = config(true, RuntimeChoice::Native, false);
    cfg.validate("p2p.toolIsolation").unwrap();
    let f = FakeFactory::with(&[RuntimeKind::Docker, RuntimeKind::Gvisor]);
    let sel = run_select(&cfg, &f).await;
    assert!(f.probes().is_empty());
    assert!(
        sel.effective.starts_with("subprocess("),
        "{}",
        sel.effective
    );
    assert_eq!(
        sel.log,
        "P2P tool isolation enabled (container mode: native)"
    );
    assert_runs(&sel).await;
}

// --- T-I5 ---------------------------------------------------------------------------------

#[tokio::test]
async fn t_i5_wiring_matrix() {
    for isolation in [true, false] {
        for container in [true, false] {
            for available in [true, false] {
                for require in [true, false] {
                    let mut cfg = config(container, RuntimeChoice::Auto, require);
                    cfg.enabled = isolation;
                    let f = if available {
                        FakeFactory::with(&[RuntimeKind::Docker])
                    } else {
                        FakeFactory::with(&[])
                    };
                    let sel = run_select(&cfg, &f).await;
                    let case = format!(
                        "isolation={isolation} container={container} available={available} require={require}: {} / {}",
                        sel.effective, sel.log
                    );
                    match (isolation, container, available, require) {
                        (false, ..) => {
                            assert!(sel.executor.is_none(), "{case}");
                            assert_eq!(sel.effective, NONE, "{case}");
                            assert_eq!(
                                sel.log,
                                "P2P enabled but toolIsolation disabled, so inbound tool_invoke requests will be rejected",
                                "{case}"
                            );
                            assert!(f.probes().is_empty(), "{case}");
                        }
                        (true, false, ..) => {
                            assert!(sel.effective.starts_with("subprocess("), "{case}");
                            assert_eq!(
                                sel.log, "P2P tool isolation enabled (subprocess mode)",
                                "{case}"
                            );
                            assert!(f.probes().is_empty(), "{case}");
                            assert_runs(&sel).await;
                        }
                        (true, true, true, _) => {
                            assert_eq!(sel.effective, "container(docker)", "{case}");
                            assert_eq!(
                                sel.log, "P2P tool isolation enabled (container mode: docker)",
                                "{case}"
                            );
                            assert_runs(&sel).await;
                        }
                        (true, true, false, true) => {
                            assert!(sel.executor.is_none(), "{case}");
                            assert_eq!(sel.error.as_deref(), Some(REQUIRED_UNAVAILABLE), "{case}");
                        }
                        (true, true, false, false) => {
                            assert!(sel.effective.starts_with("subprocess("), "{case}");
                            assert!(
                                sel.log.starts_with(
                                    "Container sandbox unavailable, falling back to subprocess"
                                ),
                                "{case}"
                            );
                            assert_runs(&sel).await;
                        }
                    }
                }
            }
        }
    }
}

#[tokio::test]
async fn t_i5_a_runtime_that_fails_the_self_test_gives_no_executor() {
    let f = FakeFactory {
        available: vec![RuntimeKind::Docker],
        broken: true,
        ..Default::default()
    };
    let sel = run_select(&config(true, RuntimeChoice::Auto, false), &f).await;
    assert!(
        sel.executor.is_none(),
        "a broken runtime was kept: {}",
        sel.effective
    );
    assert!(sel.runtime.is_none());
    assert_eq!(sel.effective, NONE);
    let err = sel.error.unwrap();
    assert!(err.starts_with("startup self-test failed: "), "{err}");
    assert!(
        sel.log
            .starts_with("P2P tool isolation unavailable: startup self-test failed")
    );
    assert_eq!(
        f.shutdowns.load(Ordering::SeqCst),
        1,
        "the runtime was shut down"
    );
}

// --- T-I6 ---------------------------------------------------------------------------------

#[tokio::test]
async fn t_i6_container_executor_passes_outputs_and_errors() {
    let mut registry = ToolRegistry::builtin();
    registry
        .register_fn("fails", "", IsolationClass::WorkerSafe, |_| {
            Err("boom".into())
        })
        .unwrap();
    registry
        .register_fn("local", "", IsolationClass::LocalOnly, |_| Ok(json!(1)))
        .unwrap();
    let registry = Arc::new(registry);
    let runtime = Arc::new(FakeRuntime {
        kind: RuntimeKind::Docker,
        inner: InProcessExecutor::new(registry.clone()),
        broken: false,
        runs: AtomicUsize::new(0),
        shutdowns: Arc::default(),
    });
    let ex = ContainerExecutor::new(runtime.clone(), registry, Duration::from_secs(5));
    assert_eq!(ex.isolation(), "container(docker)");
    assert_eq!(
        ex.execute("sandbox_echo", echo_params()).await.unwrap(),
        echo_params()
    );
    let e = ex.execute("fails", Map::new()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ToolError);
    assert_eq!(e.peer_message(), "tool \"fails\": boom");
    // Local-only and unknown tools never reach the runtime.
    let runs = runtime.runs.load(Ordering::SeqCst);
    for tool in ["local", "unknown"] {
        let e = ex.execute(tool, Map::new()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotAvailable, "{tool}");
    }
    assert_eq!(runtime.runs.load(Ordering::SeqCst), runs);
    assert_eq!(ex.runtime().image_id().await.unwrap(), "sha256:fake");
}

// --- Recovery ------------------------------------------------------------------------------

/// A subprocess sandbox that cannot start (here: the worker is not installed yet; in the
/// field, a passing process shortage made bubblewrap fail) is re-checked with back-off: calls
/// are refused while it is unavailable, the state says so, and once the check passes calls
/// run without a restart.
#[tokio::test]
async fn t_i7_a_sandbox_that_fails_at_start_is_rechecked_until_it_works() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let worker = dir.path().join("lango-sandbox-worker");
    let sel = select(
        &config(false, RuntimeChoice::Auto, false),
        Arc::new(ToolRegistry::builtin()),
        worker.clone(),
        &FakeFactory::with(&[]),
        true,
    )
    .await;
    assert!(sel.executor.is_none());
    let recovery = sel.recovery.clone().expect("a sandbox being re-checked");
    let serving = sel
        .serving_executor()
        .expect("calls go to the re-checked sandbox");
    let e = serving
        .execute("sandbox_echo", echo_params())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotAvailable, "{e}");
    let st = recovery.state();
    assert!(!st.available);
    assert!(st.last_error.contains("worker binary"), "{st:?}");
    assert!(st.next_check_in.is_some());
    // The cause goes away.
    std::fs::copy(WORKER, &worker).unwrap();
    std::fs::set_permissions(&worker, std::fs::Permissions::from_mode(0o755)).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !recovery.state().available {
        assert!(
            std::time::Instant::now() < deadline,
            "not recovered: {:?}",
            recovery.state()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovery.state().attempts >= 1);
    assert_eq!(
        serving
            .execute("sandbox_echo", echo_params())
            .await
            .unwrap(),
        echo_params()
    );
    assert!(
        serving.isolation().starts_with("subprocess("),
        "{}",
        serving.isolation()
    );
}
