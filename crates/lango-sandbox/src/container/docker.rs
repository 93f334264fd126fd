//! Docker and gVisor (Docker with the `runsc` OCI runtime) through the engine API (bollard).
//!
//! One call is one fresh container, created with every setting of spec §2.3.2 (non-root
//! numeric user, read-only root, noexec tmpfs `/tmp`, network `none`, all capabilities
//! dropped, no-new-privileges, memory without swap, CPU quota, pid limit, ulimits, an init,
//! private IPC, no mounts, no logging) and removed afterwards, even when the caller's future is
//! dropped. The image must already exist: nothing is ever pulled. OOM is read from the
//! engine's state, never guessed from exit code 137.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
use bollard::{
    Docker,
    container::LogOutput,
    models::{
        ContainerCreateBody, ContainerInspectResponse, ContainerState, ContainerStateStatusEnum,
        HostConfig, HostConfigLogConfig, ResourcesUlimits,
    },
    query_parameters::{
        AttachContainerOptions, CreateContainerOptions, InspectContainerOptions,
        KillContainerOptions, ListContainersOptions, RemoveContainerOptions, WaitContainerOptions,
    },
};
use futures::StreamExt;
use serde_json::{Map, Value};
use tokio::{io::AsyncWriteExt, time::Instant};

use super::{CleanupReport, ContainerRuntime, PoolState, RuntimeKind, demux::Capture, pool::Pool};
use crate::{
    Error,
    config::SandboxConfig,
    outcome::ExecError,
    protocol::{STDERR_KEEP_BYTES, WorkerRequest},
    select::RuntimeFactory,
};

/// Label every sandbox container carries.
pub const LABEL_SANDBOX: &str = "lango.sandbox";
/// Label naming the tool (or `pool`).
pub const LABEL_TOOL: &str = "lango.tool";
/// Label with the creating process's random instance ID.
pub const LABEL_INSTANCE: &str = "lango.sandbox.instance";
/// Label with the creation time in unix seconds.
pub const LABEL_CREATED: &str = "lango.sandbox.created";
/// Label saying whether the container was created for the pool.
pub const LABEL_POOL: &str = "lango.sandbox.pool";
/// Label scoping containers to one node (its data directory), so nodes sharing an engine do
/// not sweep each other's containers.
pub const LABEL_SCOPE: &str = "lango.sandbox.scope";

/// How a runtime is set up.
#[derive(Debug, Clone, Default)]
pub struct FactoryOptions {
    /// Run `cleanup_orphans` (default policy) once when connecting: what `serve` does.
    pub sweep_orphans: bool,
    /// Start the warm pool when `poolSize > 0`: what `serve` does.
    pub start_pool: bool,
    /// Value of the `lango.sandbox.scope` label this runtime creates and sweeps; `None` means
    /// every sandbox container on the engine.
    pub scope: Option<String>,
}

/// Connects to Docker (and checks for `runsc`) as the probe chain asks.
pub struct DockerFactory {
    cfg: SandboxConfig,
    opts: FactoryOptions,
}

impl DockerFactory {
    /// For `cfg` with `opts`.
    pub fn new(cfg: SandboxConfig, opts: FactoryOptions) -> Self {
        Self { cfg, opts }
    }

    /// A runtime of `kind`, without the sweep and the pool unless the options ask for them.
    pub async fn runtime(&self, kind: RuntimeKind) -> Result<Arc<DockerRuntime>, Error> {
        let docker = connect().await?;
        if kind == RuntimeKind::Gvisor {
            let info = tokio::time::timeout(Duration::from_secs(2), docker.info())
                .await
                .map_err(|_| unavailable(kind, "the daemon did not answer within 2s"))?
                .map_err(|e| unavailable(kind, &e.to_string()))?;
            let has = info.runtimes.is_some_and(|r| r.contains_key("runsc"));
            if !has {
                return Err(unavailable(kind, "the daemon lists no runsc runtime"));
            }
        }
        let rt = Arc::new(DockerRuntime::new(
            docker,
            kind,
            self.cfg.clone(),
            self.opts.scope.clone(),
        ));
        if self.opts.sweep_orphans {
            match rt.cleanup_orphans(false).await {
                Ok(r) if r.removed + r.failed > 0 => tracing::info!(
                    event = "sandbox_orphans_swept",
                    removed = r.removed,
                    failed = r.failed,
                    "removed orphaned sandbox containers"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "orphan sweep failed"),
            }
        }
        if self.opts.start_pool && self.cfg.container.pool_size > 0 {
            rt.start_pool();
        }
        Ok(rt)
    }
}

fn unavailable(kind: RuntimeKind, why: &str) -> Error {
    Error::RuntimeUnavailable {
        runtime: kind.as_str().into(),
        reason: why.into(),
    }
}

/// A client from the standard environment (`DOCKER_HOST`…), version negotiated, answering a
/// ping within 2 s.
pub async fn connect() -> Result<Docker, Error> {
    let host =
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    let docker = Docker::connect_with_defaults()
        .map_err(|e| Error::Engine(format!("docker daemon is not reachable at {host}: {e}")))?;
    let ping = async {
        let d = docker.negotiate_version().await?;
        d.ping().await?;
        Ok::<_, bollard::errors::Error>(d)
    };
    match tokio::time::timeout(Duration::from_secs(2), ping).await {
        Ok(Ok(d)) => Ok(d),
        Ok(Err(e)) => Err(Error::Engine(format!(
            "docker daemon is not reachable at {host}: {e}"
        ))),
        Err(_) => Err(Error::Engine(format!(
            "docker daemon is not reachable at {host}: no answer within 2s"
        ))),
    }
}

#[async_trait]
impl RuntimeFactory for DockerFactory {
    async fn connect(&self, kind: RuntimeKind) -> Result<Arc<dyn ContainerRuntime>, String> {
        let rt = self.runtime(kind).await.map_err(|e| e.to_string())?;
        Ok(rt)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The engine side shared by the runtime and its pool.
pub(crate) struct Engine {
    pub(crate) docker: Docker,
    kind: RuntimeKind,
    cfg: SandboxConfig,
    instance: String,
    started: u64,
    scope: Option<String>,
}

impl Engine {
    fn labels(&self, tool: &str, pool: bool) -> HashMap<String, String> {
        let mut l = HashMap::from([
            (LABEL_SANDBOX.to_owned(), "true".to_owned()),
            (LABEL_TOOL.to_owned(), tool.to_owned()),
            (LABEL_INSTANCE.to_owned(), self.instance.clone()),
            (LABEL_CREATED.to_owned(), unix_now().to_string()),
            (LABEL_POOL.to_owned(), pool.to_string()),
        ]);
        if let Some(s) = &self.scope {
            l.insert(LABEL_SCOPE.to_owned(), s.clone());
        }
        l
    }

    /// The container settings of spec §2.3.2.
    pub(crate) fn body(&self, tool: &str, pool: bool) -> ContainerCreateBody {
        let c = &self.cfg.container;
        let mib = 1024 * 1024;
        let memory = self.cfg.container_memory_mb() as i64 * mib;
        let fsize = self.cfg.max_file_size_mb as i64 * mib;
        let ulimit = |name: &str, v: i64| ResourcesUlimits {
            name: Some(name.into()),
            soft: Some(v),
            hard: Some(v),
        };
        ContainerCreateBody {
            image: Some(c.image.clone()),
            entrypoint: Some(vec![
                "/usr/local/bin/lango-sandbox-worker".into(),
                crate::protocol::WORKER_FLAG.into(),
            ]),
            cmd: Some(Vec::new()),
            user: Some(c.user.clone()),
            env: Some(vec![
                "HOME=/tmp".into(),
                "TMPDIR=/tmp".into(),
                "LANG=C.UTF-8".into(),
            ]),
            working_dir: Some("/tmp".into()),
            open_stdin: Some(true),
            stdin_once: Some(true),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            labels: Some(self.labels(tool, pool)),
            host_config: Some(HostConfig {
                network_mode: Some(c.network_mode.clone()),
                memory: Some(memory),
                memory_swap: Some(memory),
                cpu_period: Some(100_000),
                cpu_quota: Some(if c.cpu_quota_us > 0 {
                    c.cpu_quota_us
                } else {
                    100_000
                }),
                pids_limit: Some(c.pids_limit),
                readonly_rootfs: Some(c.read_only_rootfs),
                tmpfs: Some(HashMap::from([(
                    "/tmp".to_owned(),
                    format!("rw,noexec,nosuid,nodev,size={}m,mode=1777", c.tmpfs_size_mb),
                )])),
                cap_drop: Some(vec!["ALL".into()]),
                privileged: Some(false),
                security_opt: Some(vec!["no-new-privileges:true".into()]),
                ulimits: Some(vec![
                    ulimit("nofile", 64),
                    ulimit("core", 0),
                    ulimit("fsize", fsize),
                ]),
                init: Some(true),
                ipc_mode: Some("private".into()),
                runtime: (self.kind == RuntimeKind::Gvisor).then(|| "runsc".to_owned()),
                log_config: Some(HostConfigLogConfig {
                    typ: Some("none".into()),
                    config: Some(HashMap::new()),
                }),
                auto_remove: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Creates a container; a missing image is a clear error and is never pulled.
    pub(crate) async fn create(&self, tool: &str, pool: bool) -> Result<String, Error> {
        let created = tokio::time::timeout(
            Duration::from_secs(10),
            self.docker
                .create_container(None::<CreateContainerOptions>, self.body(tool, pool)),
        )
        .await
        .map_err(|_| Error::Engine("create container: no answer within 10s".into()))?;
        match created {
            Ok(r) => Ok(r.id),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                message,
            }) => Err(Error::Engine(format!(
                "image {} is not present locally (it is never pulled; build it with `cargo xtask sandbox-image`): {message}",
                self.cfg.container.image
            ))),
            Err(e) => Err(Error::Engine(format!("create container: {e}"))),
        }
    }

    /// Whether `id` still exists and was never started (bounded by 5 s).
    pub(crate) async fn still_created(&self, id: &str) -> bool {
        let inspected = tokio::time::timeout(
            Duration::from_secs(5),
            self.docker
                .inspect_container(id, None::<InspectContainerOptions>),
        )
        .await;
        matches!(
            inspected,
            Ok(Ok(ContainerInspectResponse {
                state: Some(ContainerState {
                    status: Some(ContainerStateStatusEnum::CREATED),
                    ..
                }),
                ..
            }))
        )
    }

    /// Force-removes `id` (bounded by 10 s).
    pub(crate) async fn remove(&self, id: &str) -> Result<(), Error> {
        remove(&self.docker, id).await
    }

    /// Runs `request` in the created container `id` and classifies the outcome.
    async fn run_in(
        &self,
        id: &str,
        request: &WorkerRequest,
    ) -> Result<Map<String, Value>, ExecError> {
        let tool = request.tool_name.as_str();
        let timeout = self.cfg.timeout();
        let deadline = Instant::now() + timeout;
        let max_out = self.cfg.max_output_bytes;
        let docker = &self.docker;
        let mut line = serde_json::to_vec(request)
            .map_err(|e| ExecError::failure(tool, format!("encode request: {e}")))?;
        line.push(b'\n');
        let exchange = async {
            let attach = docker
                .attach_container(
                    id,
                    Some(AttachContainerOptions {
                        stream: true,
                        stdin: true,
                        stdout: true,
                        stderr: true,
                        ..Default::default()
                    }),
                )
                .await
                .map_err(|e| Stop::Engine(format!("attach container: {e}")))?;
            docker
                .start_container(id, None)
                .await
                .map_err(|e| Stop::Engine(format!("start container: {e}")))?;
            let mut input = attach.input;
            input
                .write_all(&line)
                .await
                .map_err(|e| Stop::Engine(format!("write to container stdin: {e}")))?;
            input
                .shutdown()
                .await
                .map_err(|e| Stop::Engine(format!("close container stdin: {e}")))?;
            let mut capture = Capture::new(max_out, STDERR_KEEP_BYTES);
            let mut output = attach.output;
            while let Some(item) = output.next().await {
                match item.map_err(|e| Stop::Engine(format!("read container output: {e}")))? {
                    LogOutput::StdOut { message } => {
                        capture.stdout(&message).map_err(|_| Stop::TooLarge)?
                    }
                    LogOutput::StdErr { message } => capture.stderr(&message),
                    _ => {}
                }
            }
            // Errors here include a non-zero exit code; the inspection below is authoritative.
            let _ = docker
                .wait_container(id, None::<WaitContainerOptions>)
                .next()
                .await;
            Ok::<_, Stop>(capture)
        };
        let outcome = tokio::time::timeout_at(deadline, exchange).await;
        let capture = match outcome {
            Err(_) => {
                self.kill(id).await;
                return Err(ExecError::Timeout {
                    tool: tool.into(),
                    after: timeout,
                });
            }
            Ok(Err(Stop::TooLarge)) => {
                self.kill(id).await;
                return Err(ExecError::OutputTooLarge {
                    tool: tool.into(),
                    limit: max_out,
                });
            }
            Ok(Err(Stop::Engine(e))) => {
                self.kill(id).await;
                return Err(ExecError::failure(
                    tool,
                    format!("container runtime unavailable: {e}"),
                ));
            }
            Ok(Ok(c)) => c,
        };
        let state = tokio::time::timeout(
            Duration::from_secs(5),
            docker.inspect_container(id, None::<InspectContainerOptions>),
        )
        .await
        .map_err(|_| ExecError::failure(tool, "inspect container: no answer within 5s"))?
        .map_err(|e| ExecError::failure(tool, format!("inspect container: {e}")))?
        .state
        .unwrap_or_default();
        if state.oom_killed == Some(true) {
            return Err(ExecError::ResourceLimit {
                tool: tool.into(),
                detail: "container killed by the engine's OOM killer".into(),
            });
        }
        let code = state.exit_code.unwrap_or(-1);
        let status = std::os::unix::process::ExitStatusExt::from_raw(((code as i32) & 0xff) << 8);
        // The worker exits 0, 1 or 70; 128 + n is death by signal n (137 without OOMKilled is a
        // kill from outside, not OOM: W-11).
        crate::subprocess::classify(tool, status, Some(&capture.stdout), &capture.stderr, true)
    }

    async fn kill(&self, id: &str) {
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            self.docker.kill_container(
                id,
                Some(KillContainerOptions {
                    signal: "SIGKILL".into(),
                }),
            ),
        )
        .await;
    }
}

enum Stop {
    TooLarge,
    Engine(String),
}

async fn remove(docker: &Docker, id: &str) -> Result<(), Error> {
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        docker.remove_container(
            id,
            Some(RemoveContainerOptions {
                force: true,
                v: true,
                ..Default::default()
            }),
        ),
    )
    .await
    .map_err(|_| Error::Engine(format!("remove container {id}: no answer within 10s")))?;
    match r {
        Ok(()) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(e) => Err(Error::Engine(format!("remove container {id}: {e}"))),
    }
}

/// Removes its container when dropped, from a detached task with its own timeout, so a call
/// whose future is dropped mid-run leaves nothing behind.
struct RemoveGuard {
    docker: Docker,
    id: Option<String>,
}

impl Drop for RemoveGuard {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let docker = self.docker.clone();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    if let Err(e) = remove(&docker, &id).await {
                        tracing::warn!(container = %id, error = %e, "could not remove a sandbox container");
                    }
                });
            }
        }
    }
}

/// Docker or gVisor.
pub struct DockerRuntime {
    engine: Arc<Engine>,
    pool: std::sync::Mutex<Option<Pool>>,
}

impl DockerRuntime {
    /// Over a connected client. `scope` labels (and limits the sweep to) this node's
    /// containers.
    pub fn new(
        docker: Docker,
        kind: RuntimeKind,
        cfg: SandboxConfig,
        scope: Option<String>,
    ) -> Self {
        Self {
            engine: Arc::new(Engine {
                docker,
                kind,
                cfg,
                instance: uuid::Uuid::new_v4().simple().to_string(),
                started: unix_now(),
                scope,
            }),
            pool: std::sync::Mutex::new(None),
        }
    }

    /// This process's instance ID (the `lango.sandbox.instance` label).
    pub fn instance(&self) -> &str {
        &self.engine.instance
    }

    /// Starts the warm pool (`poolSize` created-but-not-started containers).
    pub fn start_pool(&self) {
        let target = self.engine.cfg.container.pool_size;
        if target == 0 {
            return;
        }
        let pool = Pool::start(
            self.engine.clone(),
            target,
            self.engine.cfg.container.pool_idle_timeout,
        );
        if let Ok(mut p) = self.pool.lock() {
            *p = Some(pool);
        }
    }

    /// The pool, for tests and status.
    pub fn pool(&self) -> Option<Pool> {
        self.pool.lock().ok().and_then(|p| p.clone())
    }

    /// The create body a call would use (tests inspect it against the engine's view).
    pub fn create_body(&self, tool: &str) -> ContainerCreateBody {
        self.engine.body(tool, false)
    }

    /// Creates a container for `tool` without running it (tests).
    pub async fn create(&self, tool: &str) -> Result<String, Error> {
        self.engine.create(tool, false).await
    }

    /// The engine client.
    pub fn docker(&self) -> &Docker {
        &self.engine.docker
    }
}

#[async_trait]
impl ContainerRuntime for DockerRuntime {
    fn kind(&self) -> RuntimeKind {
        self.engine.kind
    }

    async fn run(&self, request: &WorkerRequest) -> Result<Map<String, Value>, ExecError> {
        let tool = request.tool_name.as_str();
        let pooled = match self.pool() {
            Some(p) => p.take().await,
            None => None,
        };
        // A pooled container may have been removed meanwhile (an operator's `sandbox cleanup`
        // counts created-but-not-started containers as orphans): then create one on demand.
        let pooled = match pooled {
            Some(id) if self.engine.still_created(&id).await => Some(id),
            Some(id) => {
                tracing::warn!(container = %id, "pooled container is gone or was started; creating a fresh one");
                let _ = self.engine.remove(&id).await;
                None
            }
            None => None,
        };
        let id = match pooled {
            Some(id) => id,
            None => self
                .engine
                .create(tool, false)
                .await
                .map_err(|e| ExecError::failure(tool, e.to_string()))?,
        };
        let mut guard = RemoveGuard {
            docker: self.engine.docker.clone(),
            id: Some(id.clone()),
        };
        let result = self.engine.run_in(&id, request).await;
        // Removed before returning; the guard only covers a future dropped mid-call.
        if let Err(e) = self.engine.remove(&id).await {
            tracing::warn!(container = %id, error = %e, "could not remove a sandbox container");
        } else {
            guard.id = None;
        }
        result
    }

    async fn cleanup(&self, id: &str) -> Result<(), Error> {
        self.engine.remove(id).await
    }

    async fn cleanup_orphans(&self, force: bool) -> Result<CleanupReport, Error> {
        let e = &self.engine;
        let mut label = vec![format!("{LABEL_SANDBOX}=true")];
        if let Some(s) = &e.scope {
            label.push(format!("{LABEL_SCOPE}={s}"));
        }
        let list = tokio::time::timeout(
            Duration::from_secs(10),
            e.docker.list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(HashMap::from([("label".to_owned(), label)])),
                ..Default::default()
            })),
        )
        .await
        .map_err(|_| Error::Engine("list containers: no answer within 10s".into()))?
        .map_err(|err| Error::Engine(format!("list containers: {err}")))?;
        let stale_after = 2 * e.cfg.timeout().as_secs() + 60;
        let now = unix_now();
        let mut report = CleanupReport::default();
        for c in list {
            let Some(id) = c.id else { continue };
            let labels = c.labels.unwrap_or_default();
            let created: u64 = labels
                .get(LABEL_CREATED)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let state = c.state.map(|s| s.to_string()).unwrap_or_default();
            let running = state == "running";
            let pooled = labels.get(LABEL_POOL).is_some_and(|p| p == "true");
            let ours = labels.get(LABEL_INSTANCE).is_some_and(|i| *i == e.instance);
            let remove_it = if force {
                true
            } else if ours {
                // Our own in-flight and pooled containers are ours to manage; a finished one
                // that escaped its guard goes.
                !(running || pooled && state == "created")
            } else {
                // Spec §2.3.4 default policy for everything else.
                !running || created + stale_after < now || created < e.started
            };
            if remove_it {
                match remove(&e.docker, &id).await {
                    Ok(()) => report.removed += 1,
                    Err(err) => {
                        tracing::warn!(container = %id, error = %err, "cleanup failed");
                        report.failed += 1;
                    }
                }
            }
        }
        Ok(report)
    }

    async fn engine_limits(&self) -> Result<(bool, bool), Error> {
        let e = &self.engine;
        let id = e.create("selfcheck", false).await?;
        let inspected = tokio::time::timeout(
            Duration::from_secs(5),
            e.docker
                .inspect_container(&id, None::<InspectContainerOptions>),
        )
        .await;
        let _ = e.remove(&id).await;
        let hc = inspected
            .map_err(|_| Error::Engine("inspect container: no answer within 5s".into()))?
            .map_err(|err| Error::Engine(format!("inspect container: {err}")))?
            .host_config
            .unwrap_or_default();
        let memory = hc.memory.is_some_and(|m| m > 0) && hc.memory_swap == hc.memory;
        let pids = hc.pids_limit.is_some_and(|p| p > 0);
        Ok((memory, pids))
    }

    async fn image_id(&self) -> Result<String, Error> {
        let image = &self.engine.cfg.container.image;
        let i = tokio::time::timeout(
            Duration::from_secs(5),
            self.engine.docker.inspect_image(image),
        )
        .await
        .map_err(|_| Error::Engine("inspect image: no answer within 5s".into()))?
        .map_err(|e| Error::Engine(format!("image {image}: {e}")))?;
        i.id.ok_or_else(|| Error::Engine(format!("image {image} has no ID")))
    }

    fn pool_state(&self) -> Option<PoolState> {
        self.pool().map(|p| p.state())
    }

    async fn shutdown(&self) {
        let pool = self.pool.lock().ok().and_then(|mut p| p.take());
        if let Some(p) = pool {
            p.close().await;
        }
    }
}
