//! Spec §7.7 (T-H1..T-H14) and T-I4: the container runtime against the REAL Docker engine,
//! with an image built (no registry, no pull) from `lango-adversarial-worker`.
//!
//! Every test works in its own `lango.sandbox.scope` label, so tests running in parallel
//! processes (nextest) never see, sweep or count each other's containers, and each removes
//! whatever is left in its scope when it ends (also on panic). Without an engine the tests
//! skip with a printed reason; with `CI=true` they fail instead.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bollard::{
    Docker,
    models::{ContainerCreateBody, ContainerInspectResponse, ContainerSummary, HostConfig},
    query_parameters::{
        BuildImageOptions, CreateContainerOptions, EventsOptions, InspectContainerOptions,
        KillContainerOptions, ListContainersOptions, RemoveContainerOptions,
    },
};
use futures::StreamExt;
use lango_sandbox::{
    ContainerExecutor, ContainerRuntime, ErrorKind, ExecError, Executor, RuntimeChoice,
    SandboxConfig,
    container::{
        RuntimeKind,
        docker::{
            DockerFactory, DockerRuntime, FactoryOptions, LABEL_CREATED, LABEL_INSTANCE,
            LABEL_POOL, LABEL_SANDBOX, LABEL_SCOPE, LABEL_TOOL, connect,
        },
        image::build_worker_image,
    },
    protocol::WorkerRequest,
    select::select,
};
use serde_json::{Map, Value, json};

const WORKER: &str = env!("CARGO_BIN_EXE_lango-adversarial-worker");
const TEST_REPO: &str = "lango-sandbox-adversarial-test";
const MIB: i64 = 1024 * 1024;

fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true" | "1"))
}

fn skip(why: &str) {
    if in_ci() {
        panic!("the Docker engine is required in CI: {why}");
    }
    eprintln!("skipped: {why}");
}

/// The engine, or `None` (skip) when there is none.
async fn engine() -> Option<Docker> {
    match connect().await {
        Ok(d) => Some(d),
        Err(e) => {
            skip(&e.to_string());
            None
        }
    }
}

/// The test image (built once per worker binary: it is tagged by the binary's hash).
async fn test_image(docker: &Docker) -> String {
    let built = build_worker_image(docker, Path::new(WORKER), TEST_REPO, |_| {})
        .await
        .expect("build the adversarial test image");
    built.tag
}

/// An image built on the test image whose `USER` is root (T-H13).
async fn root_image(docker: &Docker, base: &str) -> String {
    let tag = format!("{TEST_REPO}-root:{}", base.rsplit(':').next().unwrap());
    if docker.inspect_image(&tag).await.is_ok() {
        return tag;
    }
    let dockerfile = format!("FROM {base}\nUSER 0:0\n");
    let mut ar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(dockerfile.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    ar.append_data(&mut h, "Dockerfile", dockerfile.as_bytes())
        .unwrap();
    let body = ar.into_inner().unwrap();
    let mut stream = docker.build_image(
        BuildImageOptions {
            dockerfile: "Dockerfile".into(),
            t: Some(tag.clone()),
            rm: true,
            ..Default::default()
        },
        None,
        Some(bollard::body_full(body.into())),
    );
    while let Some(item) = stream.next().await {
        let info = item.expect("build the root-user image");
        assert!(info.error_detail.is_none(), "{:?}", info.error_detail);
    }
    let user = docker
        .inspect_image(&tag)
        .await
        .unwrap()
        .config
        .unwrap()
        .user;
    assert_eq!(user.as_deref(), Some("0:0"), "the image's USER is root");
    tag
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn config(image: &str, kind: RuntimeKind) -> SandboxConfig {
    let mut cfg = SandboxConfig {
        timeout_per_tool: Duration::from_secs(5),
        max_memory_mb: 128,
        ..Default::default()
    };
    cfg.container.enabled = true;
    cfg.container.image = image.into();
    cfg.container.runtime = match kind {
        RuntimeKind::Docker => RuntimeChoice::Docker,
        RuntimeKind::Gvisor => RuntimeChoice::Gvisor,
    };
    cfg.validate("p2p.toolIsolation").unwrap();
    cfg
}

/// Removes everything left in a test's scope when dropped (also when the test panics).
struct Scope {
    name: String,
}

impl Scope {
    fn new() -> Self {
        Self {
            name: format!("test-{}", uuid::Uuid::new_v4().simple()),
        }
    }

    fn filter(&self) -> String {
        format!("{LABEL_SCOPE}={}", self.name)
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        let ids = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("label={}", self.filter())])
            .output();
        if let Ok(out) = ids {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            if !ids.is_empty() {
                let _ = std::process::Command::new("docker")
                    .args(["rm", "-f"])
                    .args(&ids)
                    .output();
            }
        }
    }
}

struct Env {
    docker: Docker,
    image: String,
    scope: Scope,
}

async fn env() -> Option<Env> {
    let docker = engine().await?;
    let image = test_image(&docker).await;
    Some(Env {
        docker,
        image,
        scope: Scope::new(),
    })
}

impl Env {
    fn factory(&self, cfg: SandboxConfig, sweep: bool, pool: bool) -> DockerFactory {
        DockerFactory::new(
            cfg,
            FactoryOptions {
                sweep_orphans: sweep,
                start_pool: pool,
                scope: Some(self.scope.name.clone()),
            },
        )
    }

    async fn runtime(&self, cfg: SandboxConfig, kind: RuntimeKind) -> Arc<DockerRuntime> {
        self.factory(cfg, false, false).runtime(kind).await.unwrap()
    }

    /// Containers of this test's scope (all states), optionally narrowed by more labels.
    async fn containers(&self, more: &[String]) -> Vec<ContainerSummary> {
        let mut label = vec![self.scope.filter()];
        label.extend(more.iter().cloned());
        self.docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(HashMap::from([("label".to_owned(), label)])),
                ..Default::default()
            }))
            .await
            .unwrap()
    }

    async fn ids(&self) -> Vec<String> {
        self.containers(&[])
            .await
            .into_iter()
            .filter_map(|c| c.id)
            .collect()
    }

    /// Waits (at most `within`) until the scope has no container.
    async fn gone_within(&self, within: Duration) -> bool {
        let end = Instant::now() + within;
        loop {
            if self.ids().await.is_empty() {
                return true;
            }
            if Instant::now() > end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The running container of this scope, once there is one (during a slow call).
    async fn running_one(&self, within: Duration) -> ContainerInspectResponse {
        let end = Instant::now() + within;
        loop {
            for c in self.containers(&[]).await {
                if c.state.map(|s| s.to_string()).as_deref() == Some("running") {
                    return self
                        .docker
                        .inspect_container(
                            c.id.as_deref().unwrap(),
                            None::<InspectContainerOptions>,
                        )
                        .await
                        .unwrap();
                }
            }
            assert!(Instant::now() < end, "no running container appeared");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A container outside the sandbox runtime, from the test image, labelled as given and
    /// blocked on its open stdin (running) when `start`.
    async fn raw_container(&self, labels: HashMap<String, String>, start: bool) -> String {
        let body = ContainerCreateBody {
            image: Some(self.image.clone()),
            open_stdin: Some(true),
            labels: Some(labels),
            host_config: Some(HostConfig {
                network_mode: Some("none".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let id = self
            .docker
            .create_container(None::<CreateContainerOptions>, body)
            .await
            .unwrap()
            .id;
        if start {
            self.docker.start_container(&id, None).await.unwrap();
        }
        id
    }

    async fn exists(&self, id: &str) -> bool {
        self.docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .is_ok()
    }

    async fn remove(&self, id: &str) {
        let _ = self
            .docker
            .remove_container(
                id,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await;
    }
}

fn executor(rt: Arc<DockerRuntime>, cfg: &SandboxConfig) -> ContainerExecutor {
    ContainerExecutor::new(
        rt,
        Arc::new(lango_sandbox_adversarial::registry()),
        cfg.timeout(),
    )
}

fn request(tool: &str, params: Value, cfg: &SandboxConfig) -> WorkerRequest {
    WorkerRequest {
        version: 1,
        tool_name: tool.into(),
        params,
        timeout_ms: Some(cfg.timeout().as_millis() as u64),
        command: None,
        confine: None,
    }
}

async fn gvisor_registered(docker: &Docker) -> bool {
    docker
        .info()
        .await
        .ok()
        .and_then(|i| i.runtimes)
        .is_some_and(|r| r.contains_key("runsc"))
}

// --- T-H1 ---------------------------------------------------------------------------------

fn check_settings(c: &ContainerInspectResponse, instance: &str, tool: &str, kind: RuntimeKind) {
    let config = c.config.as_ref().unwrap();
    let labels = config.labels.as_ref().unwrap();
    assert_eq!(labels.get(LABEL_SANDBOX).map(String::as_str), Some("true"));
    assert_eq!(labels.get(LABEL_TOOL).map(String::as_str), Some(tool));
    assert_eq!(
        labels.get(LABEL_INSTANCE).map(String::as_str),
        Some(instance)
    );
    assert_eq!(labels.get(LABEL_POOL).map(String::as_str), Some("false"));
    let created: u64 = labels.get(LABEL_CREATED).unwrap().parse().unwrap();
    assert!(created.abs_diff(unix_now()) < 60, "created label {created}");
    assert_eq!(config.user.as_deref(), Some("65532:65532"));
    assert_eq!(
        config.entrypoint.as_deref(),
        Some(
            &[
                "/usr/local/bin/lango-sandbox-worker".to_owned(),
                "--sandbox-worker".to_owned()
            ][..]
        )
    );
    assert!(
        config.cmd.as_ref().is_none_or(Vec::is_empty),
        "{:?}",
        config.cmd
    );
    let env = config.env.clone().unwrap_or_default();
    for want in ["HOME=/tmp", "TMPDIR=/tmp", "LANG=C.UTF-8"] {
        assert!(env.iter().any(|e| e == want), "{env:?}");
    }
    // The engine adds its default PATH when the image has none; nothing else may appear.
    assert!(
        env.iter().all(|e| ["HOME=", "TMPDIR=", "LANG=", "PATH="]
            .iter()
            .any(|p| e.starts_with(p))),
        "{env:?}"
    );
    assert_eq!(config.working_dir.as_deref(), Some("/tmp"));
    assert_eq!(config.open_stdin, Some(true));
    assert_eq!(config.stdin_once, Some(true));
    assert_ne!(config.tty, Some(true));
    let h = c.host_config.as_ref().unwrap();
    assert_eq!(h.network_mode.as_deref(), Some("none"));
    assert_eq!(h.memory, Some(128 * MIB));
    assert_eq!(h.memory_swap, Some(128 * MIB));
    assert_eq!(h.cpu_quota, Some(100_000));
    assert_eq!(h.cpu_period, Some(100_000));
    assert_eq!(h.pids_limit, Some(64));
    assert_eq!(h.readonly_rootfs, Some(true));
    assert_eq!(h.cap_drop.as_deref(), Some(&["ALL".to_owned()][..]));
    assert!(h.cap_add.as_ref().is_none_or(Vec::is_empty));
    assert!(
        h.security_opt
            .as_ref()
            .unwrap()
            .iter()
            .any(|o| o == "no-new-privileges:true"),
        "{:?}",
        h.security_opt
    );
    assert!(
        !h.security_opt
            .as_ref()
            .unwrap()
            .iter()
            .any(|o| o.contains("unconfined"))
    );
    assert_eq!(h.privileged, Some(false));
    let tmp = h.tmpfs.as_ref().unwrap().get("/tmp").unwrap();
    for opt in ["noexec", "nosuid", "nodev", "size=64m"] {
        assert!(tmp.split(',').any(|o| o == opt), "{tmp}");
    }
    assert_eq!(h.tmpfs.as_ref().unwrap().len(), 1);
    assert!(h.binds.as_ref().is_none_or(Vec::is_empty));
    assert!(h.mounts.as_ref().is_none_or(Vec::is_empty));
    assert!(h.devices.as_ref().is_none_or(Vec::is_empty));
    assert!(
        c.mounts.as_ref().is_none_or(Vec::is_empty),
        "{:?}",
        c.mounts
    );
    assert_eq!(h.log_config.as_ref().unwrap().typ.as_deref(), Some("none"));
    assert_eq!(h.init, Some(true));
    assert_eq!(h.ipc_mode.as_deref(), Some("private"));
    assert_eq!(h.auto_remove, Some(false));
    let ulimits: HashMap<String, (i64, i64)> = h
        .ulimits
        .clone()
        .unwrap()
        .into_iter()
        .map(|u| (u.name.unwrap(), (u.soft.unwrap(), u.hard.unwrap())))
        .collect();
    assert_eq!(ulimits.get("nofile"), Some(&(64, 64)));
    assert_eq!(ulimits.get("core"), Some(&(0, 0)));
    assert_eq!(ulimits.get("fsize"), Some(&(16 * MIB, 16 * MIB)));
    match kind {
        RuntimeKind::Gvisor => assert_eq!(h.runtime.as_deref(), Some("runsc")),
        RuntimeKind::Docker => assert_ne!(h.runtime.as_deref(), Some("runsc")),
    }
}

#[tokio::test]
async fn t_h1_container_is_created_with_every_hardening_setting() {
    let Some(env) = env().await else { return };
    let cfg = config(&env.image, RuntimeKind::Docker);
    let rt = env.runtime(cfg.clone(), RuntimeKind::Docker).await;
    let ex = executor(rt.clone(), &cfg);
    let (out, inspected) = tokio::join!(
        ex.execute("adv_sleep", obj(json!({"ms": 2500}))),
        env.running_one(Duration::from_secs(5))
    );
    assert_eq!(out.unwrap(), obj(json!({"slept_ms": 2500})));
    check_settings(&inspected, rt.instance(), "adv_sleep", RuntimeKind::Docker);
    assert!(env.gone_within(Duration::from_secs(2)).await);
}

/// The host's view of a running container's memory cgroup: memory and memory+swap limits
/// (cgroup v1), or memory and swap limits (cgroup v2); `None` when neither layout is found.
fn host_memory_cgroup(id: &str) -> Option<(String, String)> {
    let read = |p: String| std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned());
    let v1 = format!("/sys/fs/cgroup/memory/docker/{id}");
    if let (Some(m), Some(sw)) = (
        read(format!("{v1}/memory.limit_in_bytes")),
        read(format!("{v1}/memory.memsw.limit_in_bytes")),
    ) {
        return Some((m, sw));
    }
    for v2 in [
        format!("/sys/fs/cgroup/system.slice/docker-{id}.scope"),
        format!("/sys/fs/cgroup/docker/{id}"),
    ] {
        if let (Some(m), Some(sw)) = (
            read(format!("{v2}/memory.max")),
            read(format!("{v2}/memory.swap.max")),
        ) {
            return Some((m, sw));
        }
    }
    None
}

#[tokio::test]
async fn t_h1_no_swap_on_the_host_cgroup() {
    let Some(env) = env().await else { return };
    let cfg = config(&env.image, RuntimeKind::Docker);
    let rt = env.runtime(cfg.clone(), RuntimeKind::Docker).await;
    let ex = executor(rt, &cfg);
    let (out, seen) = tokio::join!(ex.execute("adv_sleep", obj(json!({"ms": 2000}))), async {
        let c = env.running_one(Duration::from_secs(5)).await;
        host_memory_cgroup(c.id.as_deref().unwrap())
    });
    out.unwrap();
    let Some((memory, swap)) = seen else {
        return skip("the container's memory cgroup is not visible from here");
    };
    let limit = (128 * MIB).to_string();
    assert_eq!(memory, limit);
    // v1: memory+swap equals memory (no swap); v2: swap.max is 0.
    assert!(swap == limit || swap == "0", "swap allowed: {swap}");
}

// --- T-H2 ---------------------------------------------------------------------------------

async fn round_trip(kind: RuntimeKind) {
    let Some(env) = env().await else { return };
    if kind == RuntimeKind::Gvisor && !gvisor_registered(&env.docker).await {
        return skip("the daemon lists no runsc runtime");
    }
    let cfg = config(&env.image, kind);
    let rt = env.runtime(cfg.clone(), kind).await;
    let ex = executor(rt, &cfg);
    let p = obj(json!({"msg": "sandbox-smoke-test", "n": [1, 2, {"deep": true}], "u": "héllo"}));
    let t = Instant::now();
    assert_eq!(ex.execute("sandbox_echo", p.clone()).await.unwrap(), p);
    eprintln!("{} round trip: {:?}", kind.as_str(), t.elapsed());
    assert_eq!(
        ex.execute("sandbox_echo", Map::new()).await.unwrap(),
        Map::new()
    );
    assert_eq!(ex.isolation(), format!("container({})", kind.as_str()));
    let t = Instant::now();
    assert!(
        env.gone_within(Duration::from_secs(2)).await,
        "container left behind"
    );
    eprintln!("removed within {:?}", t.elapsed());
    // A tool-level error passes through as the tool's message.
    let e = ex
        .execute("adv_fail", obj(json!({"message": "nope"})))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ToolError);
    assert_eq!(e.peer_message(), "tool \"adv_fail\": nope");
    // The worker's isolation self-checks run inside the container too.
    let checks = ex.self_check().await.unwrap();
    assert!(!checks.is_empty());
    assert!(env.gone_within(Duration::from_secs(2)).await);
}

#[tokio::test]
async fn t_h2_round_trip_and_container_removed() {
    round_trip(RuntimeKind::Docker).await;
}

// --- T-H3 ---------------------------------------------------------------------------------

async fn limits_inside(kind: RuntimeKind) -> Option<Map<String, Value>> {
    let env = env().await?;
    if kind == RuntimeKind::Gvisor && !gvisor_registered(&env.docker).await {
        skip("the daemon lists no runsc runtime");
        return None;
    }
    let cfg = config(&env.image, kind);
    let rt = env.runtime(cfg.clone(), kind).await;
    let ex = executor(rt, &cfg);
    let out = ex.execute("adv_limits_probe", Map::new()).await.unwrap();
    eprintln!("{} limits: {}", kind.as_str(), Value::Object(out.clone()));
    assert_eq!(out["uid"], json!(65532));
    assert!(
        out["write_etc"].as_str().unwrap().starts_with("error"),
        "read-only root: {out:?}"
    );
    assert_eq!(out["write_tmp"], json!("ok"));
    assert!(
        out["exec_tmp"].as_str().unwrap().starts_with("error"),
        "noexec /tmp: {out:?}"
    );
    assert_eq!(out["CapEff"], json!("0000000000000000"));
    if kind == RuntimeKind::Docker {
        // gVisor's /proc/self/status has no NoNewPrivs line.
        assert_eq!(out["NoNewPrivs"], json!("1"));
    }
    Some(out)
}

#[tokio::test]
async fn t_h3_limits_are_applied_inside() {
    let Some(out) = limits_inside(RuntimeKind::Docker).await else {
        return;
    };
    // cgroup v2 (`memory.max`, `max 100000`) or v1 (`memory.limit_in_bytes`, cfs quota).
    assert_eq!(out["memory_max"], json!((128 * MIB).to_string()));
    assert_eq!(out["pids_max"], json!("64"));
    let cpu = out["cpu_max"].as_str().unwrap();
    assert!(cpu == "100000" || cpu == "100000 100000", "{cpu}");
}

// --- T-H4 ---------------------------------------------------------------------------------

/// Runs the memory bomb with maxMemoryMB 64 and watches the engine's events for the OOM kill.
async fn oom(kind: RuntimeKind) {
    let Some(env) = env().await else { return };
    if kind == RuntimeKind::Gvisor && !gvisor_registered(&env.docker).await {
        return skip("the daemon lists no runsc runtime");
    }
    let mut cfg = config(&env.image, kind);
    cfg.max_memory_mb = 64;
    cfg.timeout_per_tool = Duration::from_secs(20);
    let rt = env.runtime(cfg.clone(), kind).await;
    let ex = executor(rt.clone(), &cfg);
    let since = unix_now();
    let t = Instant::now();
    let e = ex
        .execute("adv_memory_bomb", obj(json!({"mb": 1024})))
        .await
        .unwrap_err();
    eprintln!("{} memory bomb: {e} after {:?}", kind.as_str(), t.elapsed());
    assert_eq!(e.kind(), ErrorKind::ResourceLimit, "{e}");
    assert_eq!(
        e.peer_message(),
        "tool \"adv_memory_bomb\" exceeded resource limits"
    );
    assert!(!e.to_string().contains("timed out"));
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    // The engine reported the OOM kill of exactly this runtime's container.
    let events = engine_events(
        &env.docker,
        since,
        &format!("{LABEL_INSTANCE}={}", rt.instance()),
    )
    .await;
    assert!(
        events.iter().any(|a| a == "oom"),
        "no oom event: {events:?}"
    );
    assert!(env.gone_within(Duration::from_secs(2)).await);
}

/// The actions of container events since `since` for containers labelled `label`.
async fn engine_events(docker: &Docker, since: u64, label: &str) -> Vec<String> {
    let until = unix_now() + 1;
    let opts = EventsOptions {
        since: Some(since.to_string()),
        until: Some(until.to_string()),
        filters: Some(HashMap::from([(
            "label".to_owned(),
            vec![label.to_owned()],
        )])),
    };
    let stream = docker.events(Some(opts));
    let items: Vec<_> = tokio::time::timeout(Duration::from_secs(10), stream.collect::<Vec<_>>())
        .await
        .expect("the events stream ends at `until`");
    items
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|e| e.action)
        .collect()
}

#[tokio::test]
async fn t_h4_oom_is_detected_from_the_engine_state() {
    oom(RuntimeKind::Docker).await;
}

// --- T-H5 ---------------------------------------------------------------------------------

#[tokio::test]
async fn t_h5_external_kill_is_a_worker_failure_not_oom() {
    let Some(env) = env().await else { return };
    let cfg = config(&env.image, RuntimeKind::Docker);
    let rt = env.runtime(cfg.clone(), RuntimeKind::Docker).await;
    let ex = executor(rt, &cfg);
    let killer = async {
        let c = env.running_one(Duration::from_secs(5)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        env.docker
            .kill_container(
                c.id.as_deref().unwrap(),
                Some(KillContainerOptions {
                    signal: "SIGKILL".into(),
                }),
            )
            .await
            .unwrap();
    };
    let t = Instant::now();
    let (r, ()) = tokio::join!(ex.execute("adv_sleep", obj(json!({"ms": 4000}))), killer);
    let e = r.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WorkerFailure, "{e}");
    assert_eq!(e.peer_message(), "tool \"adv_sleep\" execution failed");
    assert!(!e.to_string().to_lowercase().contains("memory"), "{e}");
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "classified before the deadline: {:?}",
        t.elapsed()
    );
    assert!(env.gone_within(Duration::from_secs(2)).await);
}

// --- T-H6 ---------------------------------------------------------------------------------

async fn timeout(kind: RuntimeKind) {
    let Some(env) = env().await else { return };
    if kind == RuntimeKind::Gvisor && !gvisor_registered(&env.docker).await {
        return skip("the daemon lists no runsc runtime");
    }
    let mut cfg = config(&env.image, kind);
    cfg.timeout_per_tool = Duration::from_secs(3);
    let rt = env.runtime(cfg.clone(), kind).await;
    let ex = executor(rt, &cfg);
    let t = Instant::now();
    let e = ex.execute("adv_busy_loop", Map::new()).await.unwrap_err();
    let took = t.elapsed();
    eprintln!("{} busy loop: {e} after {took:?}", kind.as_str());
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert_eq!(
        e.peer_message(),
        "tool \"adv_busy_loop\" timed out after 3s"
    );
    assert!(
        took < Duration::from_secs(3 + 2),
        "deadline + 2 s: {took:?}"
    );
    assert!(
        env.gone_within(Duration::from_secs(2)).await,
        "container left behind"
    );
}

#[tokio::test]
async fn t_h6_timeout_kills_and_removes_on_time() {
    timeout(RuntimeKind::Docker).await;
}

// --- T-H7 ---------------------------------------------------------------------------------

#[tokio::test]
async fn t_h7_network_is_denied() {
    let Some(env) = env().await else { return };
    let cfg = config(&env.image, RuntimeKind::Docker);
    let rt = env.runtime(cfg.clone(), RuntimeKind::Docker).await;
    let ex = executor(rt, &cfg);
    // The default bridge's gateway (the host) and a public resolver.
    let targets = ["172.17.0.1:2375", "172.17.0.1:22", "1.1.1.1:53"];
    let out = ex
        .execute("adv_net_connect", obj(json!({"tcp": targets})))
        .await
        .unwrap();
    let results = out["results"].as_object().unwrap();
    assert_eq!(results.len(), targets.len() + 2);
    for (what, r) in results {
        assert!(
            r.as_str().unwrap().starts_with("error"),
            "{what} reachable: {r}"
        );
    }
    // networkMode host or "" never gets this far: config load rejects it.
    for mode in ["host", "", "bridge", "container:abc"] {
        let mut bad = cfg.clone();
        bad.container.network_mode = mode.into();
        assert!(bad.validate("p").is_err(), "{mode:?} accepted");
    }
}

// --- T-H8 ---------------------------------------------------------------------------------

#[tokio::test]
async fn t_h8_stdout_and_stderr_are_demultiplexed_and_capped() {
    let Some(env) = env().await else { return };
    let cfg = config(&env.image, RuntimeKind::Docker);
    let rt = env.runtime(cfg.clone(), RuntimeKind::Docker).await;
    let ex = executor(rt, &cfg);
    // 1 MiB of stderr next to a valid result: the result parses, stderr stays local.
    let out = ex
        .execute("adv_stderr_flood", obj(json!({"mb": 1})))
        .await
        .unwrap();
    assert_eq!(out, obj(json!({"ok": true})));
    // A 100 MiB flood of the result channel is cut at maxOutputBytes (1 MiB).
    let t = Instant::now();
    let e = ex
        .execute("adv_stdout_flood", obj(json!({"mb": 100})))
        .await
        .unwrap_err();
    eprintln!("stdout flood: {e} after {:?}", t.elapsed());
    assert_eq!(e.kind(), ErrorKind::OutputTooLarge, "{e}");
    assert_eq!(
        e.peer_message(),
        "tool \"adv_stdout_flood\" output too large"
    );
    assert!(!e.peer_message().contains("AAAA"));
    assert!(t.elapsed() < cfg.timeout(), "{:?}", t.elapsed());
    // A tool that prints to its own stdout cannot corrupt the result: the worker points
    // descriptor 1 at stderr and keeps the result channel private.
    let out = ex.execute("adv_print_garbage", Map::new()).await.unwrap();
    assert_eq!(out, obj(json!({"ok": true})));
    assert!(env.gone_within(Duration::from_secs(2)).await);
}

// --- T-H9 ---------------------------------------------------------------------------------

fn labels(scope: &Scope, instance: &str, created: u64) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_SANDBOX.to_owned(), "true".to_owned()),
        (LABEL_TOOL.to_owned(), "orphan".to_owned()),
        (LABEL_INSTANCE.to_owned(), instance.to_owned()),
        (LABEL_CREATED.to_owned(), created.to_string()),
        (LABEL_POOL.to_owned(), "false".to_owned()),
        (LABEL_SCOPE.to_owned(), scope.name.clone()),
    ])
}

#[tokio::test]
async fn t_h9_cleanup_by_label_follows_the_policy_and_counts() {
    let Some(env) = env().await else { return };
    let cfg = config(&env.image, RuntimeKind::Docker);
    let rt = env.runtime(cfg.clone(), RuntimeKind::Docker).await;
    let now = unix_now();
    let stopped = env
        .raw_container(labels(&env.scope, "old-instance", now), false)
        .await;
    let stale = env
        .raw_container(labels(&env.scope, "old-instance", now - 3600), true)
        .await;
    let in_flight = env
        .raw_container(labels(&env.scope, rt.instance(), now), true)
        .await;
    // Unlabelled (no lango.sandbox), but in the scope so the test can find and remove it.
    let mut plain = HashMap::from([(LABEL_SCOPE.to_owned(), env.scope.name.clone())]);
    plain.insert("purpose".into(), "unrelated".into());
    let unlabelled = env.raw_container(plain, true).await;

    let report = rt.cleanup_orphans(false).await.unwrap();
    assert_eq!((report.removed, report.failed), (2, 0), "{report:?}");
    assert!(!env.exists(&stopped).await);
    assert!(!env.exists(&stale).await);
    assert!(
        env.exists(&in_flight).await,
        "the in-flight container was removed"
    );
    assert!(env.exists(&unlabelled).await);

    let report = rt.cleanup_orphans(true).await.unwrap();
    assert_eq!((report.removed, report.failed), (1, 0), "{report:?}");
    assert!(!env.exists(&in_flight).await);
    assert!(
        env.exists(&unlabelled).await,
        "force removed an unlabelled container"
    );

    // cleanup(id) removes exactly that ID.
    let a = rt.create("a").await.unwrap();
    let b = rt.create("b").await.unwrap();
    rt.cleanup(&a).await.unwrap();
    assert!(!env.exists(&a).await);
    assert!(env.exists(&b).await);
    assert!(env.exists(&unlabelled).await);
    rt.cleanup(&b).await.unwrap();
    // Removing what is already gone is not an error.
    rt.cleanup(&a).await.unwrap();
    env.remove(&unlabelled).await;
    assert!(env.ids().await.is_empty());
}

// --- T-H10 --------------------------------------------------------------------------------

#[tokio::test]
async fn t_h10_pool_containers_serve_one_call_each() {
    let Some(env) = env().await else { return };
    let mut cfg = config(&env.image, RuntimeKind::Docker);
    cfg.container.pool_size = 2;
    cfg.container.pool_idle_timeout = Duration::from_secs(300);
    let rt = env
        .factory(cfg.clone(), false, true)
        .runtime(RuntimeKind::Docker)
        .await
        .unwrap();
    let pool = rt.pool().expect("pool started with poolSize 2");
    assert!(pool.wait_full(Duration::from_secs(10)).await);
    let pooled = env.containers(&[format!("{LABEL_POOL}=true")]).await;
    assert_eq!(pooled.len(), 2);
    for c in &pooled {
        assert_eq!(c.state.map(|s| s.to_string()).as_deref(), Some("created"));
        assert_eq!(
            c.labels
                .as_ref()
                .unwrap()
                .get(LABEL_TOOL)
                .map(String::as_str),
            Some("pool")
        );
    }
    assert_eq!(rt.pool_state().map(|s| (s.current, s.target)), Some((2, 2)));

    let ex = executor(rt.clone(), &cfg);
    let mut used = Vec::new();
    for i in 0..3 {
        assert!(
            pool.wait_full(Duration::from_secs(10)).await,
            "refilled to 2"
        );
        let next = pool.ids()[0].clone();
        let p = obj(json!({"call": i}));
        assert_eq!(ex.execute("sandbox_echo", p.clone()).await.unwrap(), p);
        assert!(
            !pool.ids().contains(&next),
            "the used container went back to the pool"
        );
        used.push(next);
    }
    used.sort();
    used.dedup();
    assert_eq!(used.len(), 3, "three calls, three containers");
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in &used {
        assert!(!env.exists(id).await, "used container {id} not removed");
    }
    assert!(
        pool.wait_full(Duration::from_secs(10)).await,
        "pool refilled after the calls"
    );

    // Forced expiry: every waiting container is replaced by a new one.
    let before = pool.ids();
    assert_eq!(pool.expire_older_than(Duration::ZERO).await, 2);
    assert!(pool.wait_full(Duration::from_secs(10)).await);
    let after = pool.ids();
    assert!(
        after.iter().all(|id| !before.contains(id)),
        "{before:?} {after:?}"
    );
    for id in &before {
        assert!(!env.exists(id).await, "expired container {id} not removed");
    }

    // Close removes exactly the pool's containers, not another labelled one.
    let other = rt.create("other").await.unwrap();
    rt.shutdown().await;
    for id in &after {
        assert!(!env.exists(id).await, "pool container {id} survived close");
    }
    assert!(
        env.exists(&other).await,
        "close removed a container that was not the pool's"
    );
    rt.cleanup(&other).await.unwrap();
    assert!(env.ids().await.is_empty());
}

// --- T-H11 --------------------------------------------------------------------------------

#[tokio::test]
async fn t_h11_missing_image_is_a_clear_error_and_never_pulled() {
    let Some(env) = env().await else { return };
    let missing = format!(
        "lango-sandbox-missing-{}:latest",
        uuid::Uuid::new_v4().simple()
    );
    let cfg = config(&missing, RuntimeKind::Docker);
    let rt = env.runtime(cfg.clone(), RuntimeKind::Docker).await;
    let since = unix_now();
    let e = rt
        .run(&request("sandbox_echo", json!({}), &cfg))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WorkerFailure);
    let ExecError::WorkerFailure { detail, .. } = &e else {
        unreachable!()
    };
    assert!(
        detail.contains(&missing),
        "the error names the image: {detail}"
    );
    assert!(!e.peer_message().contains(&missing));
    let err = rt.image_id().await.unwrap_err().to_string();
    assert!(err.contains(&missing), "{err}");
    // No pull: the engine saw no image event for that name.
    let until = unix_now() + 1;
    let opts = EventsOptions {
        since: Some(since.to_string()),
        until: Some(until.to_string()),
        filters: Some(HashMap::from([(
            "type".to_owned(),
            vec!["image".to_owned()],
        )])),
    };
    let events: Vec<_> = tokio::time::timeout(
        Duration::from_secs(10),
        env.docker.events(Some(opts)).collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    let pulls: Vec<_> = events
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.action.as_deref() == Some("pull"))
        .filter(|e| {
            e.actor
                .as_ref()
                .and_then(|a| a.id.as_deref())
                .is_some_and(|id| id.contains("lango-sandbox-missing"))
        })
        .collect();
    assert!(pulls.is_empty(), "{pulls:?}");
    assert!(env.docker.inspect_image(&missing).await.is_err());
    assert!(env.ids().await.is_empty());
}

// --- T-H12 --------------------------------------------------------------------------------

#[tokio::test]
async fn t_h12_orphans_of_a_previous_instance_are_swept_at_start() {
    let Some(env) = env().await else { return };
    let cfg = config(&env.image, RuntimeKind::Docker);
    let now = unix_now();
    let a = env
        .raw_container(labels(&env.scope, "crashed-node", now - 2), true)
        .await;
    let b = env
        .raw_container(labels(&env.scope, "crashed-node", now - 2), false)
        .await;
    // "Created before this instance started": the label has one-second resolution.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let rt = env
        .factory(cfg, true, false)
        .runtime(RuntimeKind::Docker)
        .await
        .unwrap();
    assert!(
        !env.exists(&a).await,
        "running orphan survived the startup sweep"
    );
    assert!(
        !env.exists(&b).await,
        "stopped orphan survived the startup sweep"
    );
    // The new instance's own (running, in-flight) containers are not orphans.
    let own = env
        .raw_container(labels(&env.scope, rt.instance(), unix_now()), true)
        .await;
    assert_eq!(rt.cleanup_orphans(false).await.unwrap().removed, 0);
    assert!(env.exists(&own).await);
    rt.cleanup(&own).await.unwrap();
}

// --- T-H13 --------------------------------------------------------------------------------

#[tokio::test]
async fn t_h13_root_image_still_runs_as_the_configured_user() {
    let Some(env) = env().await else { return };
    let mut cfg = config(&env.image, RuntimeKind::Docker);
    cfg.container.user = "0".into();
    assert!(cfg.validate("p").is_err(), "user 0 accepted");
    cfg.container.user = "root".into();
    assert!(cfg.validate("p").is_err(), "user root accepted");
    let root = root_image(&env.docker, &env.image).await;
    let cfg = config(&root, RuntimeKind::Docker);
    let rt = env.runtime(cfg.clone(), RuntimeKind::Docker).await;
    let ex = executor(rt, &cfg);
    let out = ex.execute("adv_limits_probe", Map::new()).await.unwrap();
    assert_eq!(out["uid"], json!(65532), "{out:?}");
    let out = ex.execute("adv_setuid_probe", Map::new()).await.unwrap();
    assert_eq!(out["uid"], json!(65532));
    assert_eq!(out["CapEff"], json!("0000000000000000"));
}

// --- T-H14 [gvisor] -----------------------------------------------------------------------

#[tokio::test]
async fn t_h14_auto_selects_gvisor_and_inspect_shows_runsc() {
    let Some(env) = env().await else { return };
    if !gvisor_registered(&env.docker).await {
        return skip("the daemon lists no runsc runtime");
    }
    let mut cfg = config(&env.image, RuntimeKind::Gvisor);
    cfg.container.runtime = RuntimeChoice::Auto;
    let factory = env.factory(cfg.clone(), false, false);
    let sel = select(
        &cfg,
        Arc::new(lango_sandbox_adversarial::registry()),
        PathBuf::from(WORKER),
        &factory,
        true,
    )
    .await;
    assert_eq!(sel.error, None);
    assert_eq!(sel.effective, "container(gvisor)");
    assert_eq!(
        sel.log,
        "P2P tool isolation enabled (container mode: gvisor)"
    );
    assert!(sel.skipped.is_empty(), "{:?}", sel.skipped);
    let ex = sel.executor.unwrap();
    let rt = sel.runtime.unwrap();
    assert_eq!(rt.kind(), RuntimeKind::Gvisor);
    let (out, inspected) = tokio::join!(
        ex.execute("adv_sleep", obj(json!({"ms": 2500}))),
        env.running_one(Duration::from_secs(10))
    );
    assert_eq!(out.unwrap(), obj(json!({"slept_ms": 2500})));
    let instance =
        inspected.config.as_ref().unwrap().labels.as_ref().unwrap()[LABEL_INSTANCE].clone();
    check_settings(&inspected, &instance, "adv_sleep", RuntimeKind::Gvisor);
    assert!(env.gone_within(Duration::from_secs(2)).await);
}

#[tokio::test]
async fn t_h14_gvisor_round_trip() {
    round_trip(RuntimeKind::Gvisor).await;
}

#[tokio::test]
async fn t_h14_gvisor_oom() {
    oom(RuntimeKind::Gvisor).await;
}

#[tokio::test]
async fn t_h14_gvisor_timeout() {
    timeout(RuntimeKind::Gvisor).await;
}

#[tokio::test]
async fn t_h14_gvisor_limits_inside() {
    let Some(out) = limits_inside(RuntimeKind::Gvisor).await else {
        return;
    };
    // gVisor shows its own cgroup view; report it rather than assume the host's layout.
    eprintln!(
        "gVisor cgroup view: memory {} pids {} cpu {}",
        out["memory_max"], out["pids_max"], out["cpu_max"]
    );
}

// --- T-I4 ---------------------------------------------------------------------------------

/// A Unix-socket proxy to the engine that can be cut, as if the daemon went away.
struct Proxy {
    path: PathBuf,
    accept: tokio::task::JoinHandle<()>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    _dir: tempfile::TempDir,
}

impl Proxy {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let c = conns.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                let h = tokio::spawn(async move {
                    if let Ok(mut up) =
                        tokio::net::UnixStream::connect("/var/run/docker.sock").await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
                c.lock().unwrap().push(h);
            }
        });
        Self {
            path,
            accept,
            conns,
            _dir: dir,
        }
    }

    /// The daemon "goes away": no new connections, every open one cut.
    fn cut(&self) {
        self.accept.abort();
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

#[tokio::test]
async fn t_i4_engine_going_away_fails_calls_and_never_switches_to_native() {
    let Some(env) = env().await else { return };
    if std::env::var_os("DOCKER_HOST").is_some() || !Path::new("/var/run/docker.sock").exists() {
        return skip("T-I4 proxies the local socket /var/run/docker.sock");
    }
    let cfg = config(&env.image, RuntimeKind::Docker);
    let proxy = Proxy::start();
    let docker = Docker::connect_with_unix(
        proxy.path.to_str().unwrap(),
        30,
        bollard::API_DEFAULT_VERSION,
    )
    .unwrap()
    .negotiate_version()
    .await
    .unwrap();
    let rt = Arc::new(DockerRuntime::new(
        docker,
        RuntimeKind::Docker,
        cfg.clone(),
        Some(env.scope.name.clone()),
    ));
    let ex = executor(rt.clone(), &cfg);
    let p = obj(json!({"msg": "before"}));
    assert_eq!(ex.execute("sandbox_echo", p.clone()).await.unwrap(), p);

    // Mid-run: the engine disappears while the tool sleeps.
    let t = Instant::now();
    let (r, ()) = tokio::join!(ex.execute("adv_sleep", obj(json!({"ms": 3000}))), async {
        env.running_one(Duration::from_secs(5)).await;
        proxy.cut();
    });
    let e = r.unwrap_err();
    eprintln!("engine gone mid-run: {e} after {:?}", t.elapsed());
    assert_eq!(e.kind(), ErrorKind::WorkerFailure, "{e}");
    assert!(t.elapsed() < cfg.timeout() + Duration::from_secs(2));

    // After: every call fails, quickly, as a worker failure; nothing runs natively.
    for _ in 0..2 {
        let t = Instant::now();
        let e = ex
            .execute("sandbox_echo", obj(json!({"msg": "after"})))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::WorkerFailure, "{e}");
        assert_eq!(e.peer_message(), "tool \"sandbox_echo\" execution failed");
        assert!(t.elapsed() < Duration::from_secs(12), "{:?}", t.elapsed());
    }
    assert_eq!(ex.isolation(), "container(docker)");
    // The mid-run container could not be removed through the dead socket; the scope guard
    // removes it through the real one.
}

#[tokio::test]
async fn t_h10_pooled_container_removed_meanwhile_is_replaced_on_demand() {
    let Some(env) = env().await else { return };
    let mut cfg = config(&env.image, RuntimeKind::Docker);
    cfg.container.pool_size = 1;
    let rt = env
        .factory(cfg.clone(), false, true)
        .runtime(RuntimeKind::Docker)
        .await
        .unwrap();
    let pool = rt.pool().unwrap();
    assert!(pool.wait_full(Duration::from_secs(10)).await);
    // An operator's `sandbox cleanup` (default policy) removes created-but-not-started
    // containers of other processes: the next call must still run.
    let id = pool.ids()[0].clone();
    env.remove(&id).await;
    let ex = executor(rt.clone(), &cfg);
    let p = obj(json!({"after": "external removal"}));
    assert_eq!(ex.execute("sandbox_echo", p.clone()).await.unwrap(), p);
    rt.shutdown().await;
    assert!(env.gone_within(Duration::from_secs(2)).await);
}

#[tokio::test]
async fn t_h10_close_during_a_refill_leaves_nothing_behind() {
    let Some(env) = env().await else { return };
    let mut cfg = config(&env.image, RuntimeKind::Docker);
    cfg.container.pool_size = 2;
    for _ in 0..3 {
        let rt = env
            .factory(cfg.clone(), false, true)
            .runtime(RuntimeKind::Docker)
            .await
            .unwrap();
        assert!(rt.pool().unwrap().wait_full(Duration::from_secs(10)).await);
        let pool = rt.pool().unwrap();
        // Expiring everything wakes the refill; close while its creates are in flight.
        assert_eq!(pool.expire_older_than(Duration::ZERO).await, 2);
        tokio::time::sleep(Duration::from_millis(20)).await;
        rt.shutdown().await;
        assert!(
            env.gone_within(Duration::from_secs(2)).await,
            "a pool container leaked: {:?}",
            env.ids().await
        );
    }
}
