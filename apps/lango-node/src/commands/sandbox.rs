//! `lango-node p2p sandbox status|test|cleanup` (protocol spec §5.1–5.3) and the sandbox
//! selection `serve` runs at start. The reference lines come first, byte for byte; lango-rs
//! additions follow them.

use std::{path::PathBuf, process::ExitCode, sync::Arc, time::Instant};

use anyhow::{Result, bail};
use lango_sandbox::{
    SandboxConfig, ToolRegistry,
    container::{
        ContainerRuntime, RuntimeKind,
        docker::{DockerFactory, FactoryOptions},
    },
    outcome::go_secs,
    select::{Selection, select, smoke_test},
};
use serde_json::{Value, json};

use crate::{
    admin::{self, Request},
    cli::SandboxCommand,
    config::NodeConfig,
    context::Context,
    output,
};

/// The worker binary: `lango-sandbox-worker` next to this executable when it is there (the
/// minimal worker the image is built from), else this executable in worker mode. Resolved once.
pub fn worker_binary() -> PathBuf {
    static WORKER: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    WORKER
        .get_or_init(|| {
            let me = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
            let sibling = me.with_file_name("lango-sandbox-worker");
            if sibling.is_file() { sibling } else { me }
        })
        .clone()
}

/// The `lango.sandbox.scope` label of this node's containers: derived from its data
/// directory, so nodes sharing a Docker engine never sweep each other's containers.
pub fn scope(data_dir: &std::path::Path) -> String {
    use sha2::Digest;
    let dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    hex::encode(&sha2::Sha256::digest(dir.as_os_str().as_encoded_bytes())[..8])
}

/// Selects the executor as `serve` does (`for_server`: startup orphan sweep and warm pool) or
/// as a CLI probe (neither: a probe must not touch a running node's containers).
pub async fn select_for(
    ctx: &Context,
    config: &NodeConfig,
    for_server: bool,
    self_test: bool,
) -> Result<(SandboxConfig, Arc<ToolRegistry>, Selection)> {
    let ti = &config.p2p.tool_isolation;
    let cfg = ti.sandbox_config();
    let registry = Arc::new(ti.tool_registry().map_err(anyhow::Error::msg)?);
    let factory = DockerFactory::new(
        cfg.clone(),
        FactoryOptions {
            sweep_orphans: for_server,
            start_pool: for_server,
            scope: Some(scope(&ctx.data_dir)),
        },
    );
    let selection = select(&cfg, registry.clone(), worker_binary(), &factory, self_test).await;
    Ok((cfg, registry, selection))
}

/// The status document (`--json`, and what a running node answers).
pub async fn status_json(
    cfg: &SandboxConfig,
    registry: &ToolRegistry,
    sel: &Selection,
    source: &str,
) -> Value {
    let c = &cfg.container;
    let (image_id, image_error) = match &sel.runtime {
        Some(rt) => match rt.image_id().await {
            Ok(id) => (Some(id), None),
            Err(e) => (
                None,
                Some(format!("{e} (build it with `cargo xtask sandbox-image`)")),
            ),
        },
        None => (None, None),
    };
    let active = match (&sel.runtime, &sel.executor) {
        (Some(rt), _) => Some(rt.kind().as_str().to_owned()),
        (None, Some(_)) if c.enabled => Some("native".to_owned()),
        _ => None,
    };
    json!({
        "enabled": cfg.enabled,
        "timeoutPerTool": go_secs(cfg.timeout()),
        "maxMemoryMB": cfg.max_memory_mb,
        "containerMode": c.enabled,
        "runtimeConfig": c.runtime.as_str(),
        "image": c.image,
        "networkMode": c.network_mode,
        "activeRuntime": active,
        "error": sel.error,
        "poolSize": c.pool_size,
        "pool": sel.runtime.as_ref().and_then(|rt| rt.pool_state()).map(|p| json!({"current": p.current, "target": p.target})),
        "requireContainer": c.require_container,
        "requireOsIsolation": cfg.require_os_isolation,
        "effectiveIsolation": sel.effective,
        "workerTools": registry.worker_safe().map(|t| t.name.clone()).collect::<Vec<_>>(),
        "workerBinary": worker_binary(),
        "imageId": image_id,
        "imageError": image_error,
        "skipped": sel.skipped.iter().map(|(r, why)| json!({"runtime": r, "reason": why})).collect::<Vec<_>>(),
        "osIsolation": sel.isolation.as_ref().map(|r| r.details().into_iter().map(|(k, v)| json!({"layer": k, "state": v})).collect::<Vec<_>>()),
        "recovery": sel.recovery.as_ref().map(|r| {
            let st = r.state();
            json!({
                "available": st.available,
                "attempts": st.attempts,
                "lastError": st.last_error,
                "nextCheckInSecs": st.next_check_in.map(|d| d.as_secs()),
                "isolation": lango_sandbox::Executor::isolation(r.as_ref()),
            })
        }),
        "sandboxUids": sandbox_uids(cfg),
        "source": source,
    })
}

pub async fn run(ctx: &Context, config: &NodeConfig, cmd: SandboxCommand) -> Result<ExitCode> {
    match cmd {
        SandboxCommand::Status => status(ctx, config).await,
        SandboxCommand::Test { isolation } => test(ctx, config, isolation).await,
        SandboxCommand::Cleanup { force } => cleanup(ctx, config, force).await,
        SandboxCommand::BuildImage { worker, tag } => build_image(ctx, worker, &tag).await,
    }
}

async fn status(ctx: &Context, config: &NodeConfig) -> Result<ExitCode> {
    // A running node reports what it really uses; otherwise probe as it would.
    let v = match admin::request(&ctx.data_dir, &Request::SandboxStatus).await? {
        Some(v) => v,
        None => {
            let (cfg, registry, sel) = select_for(ctx, config, false, false).await?;
            status_json(&cfg, &registry, &sel, "probe (no node running)").await
        }
    };
    if ctx.json {
        output::json(&v)?;
        return Ok(ExitCode::SUCCESS);
    }
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let b = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
    if !b("enabled") {
        output::line("Tool isolation: disabled");
        output::line("  Remote tool calls are refused (set p2p.toolIsolation.enabled = true).");
        return Ok(ExitCode::SUCCESS);
    }
    output::line("Tool isolation: enabled");
    output::line(format!("  Timeout per tool: {}", s("timeoutPerTool")));
    output::line(format!("  Max memory (MB):  {}", v["maxMemoryMB"]));
    if !b("containerMode") {
        output::line("  Container mode:   disabled (subprocess fallback)");
    } else {
        output::line("  Container mode:   enabled");
        output::line(format!("  Runtime config:   {}", s("runtimeConfig")));
        output::line(format!("  Image:            {}", s("image")));
        output::line(format!("  Network mode:     {}", s("networkMode")));
        match v.get("activeRuntime").and_then(Value::as_str) {
            Some(rt) => {
                output::line(format!("  Active runtime:   {rt}"));
                output::line(format!("  Pool size:        {}", v["poolSize"]));
            }
            None => output::line(format!("  Active runtime:   unavailable ({})", s("error"))),
        }
    }
    // lango-rs additions.
    output::line(format!("  Require container: {}", b("requireContainer")));
    output::line(format!(
        "  Effective isolation: {}",
        s("effectiveIsolation")
    ));
    let tools = v["workerTools"].as_array().cloned().unwrap_or_default();
    output::line(format!("  Worker tools:     {} registered", tools.len()));
    if let Some(err) = v.get("error").and_then(Value::as_str)
        && !b("containerMode")
    {
        output::line(format!("  Why:              {err}"));
    }
    for sk in v["skipped"].as_array().into_iter().flatten() {
        output::line(format!(
            "  Skipped runtime:  {}: {}",
            sk["runtime"].as_str().unwrap_or(""),
            sk["reason"].as_str().unwrap_or("")
        ));
    }
    if let Some(id) = v.get("imageId").and_then(Value::as_str) {
        output::line(format!("  Image ID:         {id}"));
    }
    if let Some(e) = v.get("imageError").and_then(Value::as_str) {
        output::line(format!("  Image ID:         unavailable: {e}"));
    }
    if let Some(p) = v.get("pool").filter(|p| !p.is_null()) {
        output::line(format!(
            "  Pool:             {} of {} ready",
            p["current"], p["target"]
        ));
    }
    for layer in v["osIsolation"].as_array().into_iter().flatten() {
        output::line(format!(
            "  {:<17} {}",
            format!("{}:", layer["layer"].as_str().unwrap_or("")),
            layer["state"].as_str().unwrap_or("")
        ));
    }
    if let Some(r) = v.get("recovery").filter(|r| !r.is_null()) {
        if r["available"].as_bool().unwrap_or(false) {
            output::line(format!(
                "  Re-check:         recovered after {} attempt(s): {}",
                r["attempts"],
                r["isolation"].as_str().unwrap_or("")
            ));
        } else {
            output::line(format!(
                "  Re-check:         unavailable after {} attempt(s), next in {}s: {}",
                r["attempts"],
                r["nextCheckInSecs"],
                r["lastError"].as_str().unwrap_or("")
            ));
        }
    }
    if let Some(u) = v.get("sandboxUids").and_then(Value::as_str) {
        output::line(format!("  Tool uids:        {u}"));
    }
    output::line(format!("  Worker binary:    {}", s("workerBinary")));
    output::line(format!("  Source:           {}", s("source")));
    Ok(ExitCode::SUCCESS)
}

async fn test(ctx: &Context, config: &NodeConfig, isolation: bool) -> Result<ExitCode> {
    let (cfg, _registry, sel) = select_for(ctx, config, false, false).await?;
    if !cfg.enabled {
        bail!("tool isolation is not enabled (set p2p.toolIsolation.enabled = true)");
    }
    let Some(executor) = sel.executor.clone() else {
        bail!(
            "{}",
            sel.error
                .clone()
                .unwrap_or_else(|| "no sandbox executor".into())
        );
    };
    let using = match (&sel.runtime, cfg.container.enabled, &sel.error) {
        (Some(rt), _, _) => format!("Using container runtime: {}", rt.kind().as_str()),
        (None, true, Some(e)) => format!("Container sandbox unavailable, using subprocess: {e}"),
        (None, true, None) => "Using container runtime: native".to_owned(),
        (None, false, _) => "Using subprocess sandbox".to_owned(),
    };
    let started = Instant::now();
    let result = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        smoke_test(executor.as_ref()),
    )
    .await;
    let took = started.elapsed();
    let checks = if isolation && matches!(result, Ok(Ok(_))) {
        Some(executor.self_check().await)
    } else {
        None
    };
    if let Some(rt) = &sel.runtime {
        rt.shutdown().await;
    }
    let out = match result {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => bail!("smoke test: {e}"),
        Err(_) => bail!("smoke test: timed out after 30s"),
    };
    let shown = serde_json::to_string(&out)?;
    let checks = match checks {
        Some(Ok(c)) => Some(c),
        Some(Err(e)) => bail!("isolation self-checks: {e}"),
        None => None,
    };
    let all_pass = checks.iter().flatten().all(|(_, ok)| *ok);
    if ctx.json {
        output::json(&json!({
            "executor": sel.effective,
            "runtime": sel.runtime.as_ref().map(|r| r.kind().as_str()),
            "output": out,
            "millis": took.as_secs_f64() * 1e3,
            "checks": checks.as_ref().map(|c| c.iter().map(|(k, ok)| json!({"check": k, "pass": ok})).collect::<Vec<_>>()),
        }))?;
    } else {
        output::line(using);
        output::line(format!("Smoke test passed: {shown}"));
        output::line(format!("  Isolation: {}", sel.effective));
        output::line(format!("  Took:      {:.1} ms", took.as_secs_f64() * 1e3));
        for (check, ok) in checks.iter().flatten() {
            output::line(format!("{} {check}", if *ok { "PASS" } else { "FAIL" }));
        }
    }
    Ok(if all_pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn cleanup(ctx: &Context, config: &NodeConfig, force: bool) -> Result<ExitCode> {
    // A running node sweeps with its own instance, so its in-flight and pooled containers stay.
    let counts = match admin::request(&ctx.data_dir, &Request::SandboxCleanup { force }).await? {
        Some(v) if v.get("removed").is_some() => v,
        _ => {
            let cfg = config.p2p.tool_isolation.sandbox_config();
            let factory = DockerFactory::new(
                cfg,
                FactoryOptions {
                    sweep_orphans: false,
                    start_pool: false,
                    // --all: every sandbox container on the engine; else this node's.
                    scope: (!force).then(|| scope(&ctx.data_dir)),
                },
            );
            let runtime = factory.runtime(RuntimeKind::Docker).await?;
            let r = runtime
                .cleanup_orphans(force)
                .await
                .map_err(|e| anyhow::anyhow!("cleanup: {e}"))?;
            json!({"removed": r.removed, "failed": r.failed})
        }
    };
    let (removed, failed) = (
        counts["removed"].as_u64().unwrap_or(0),
        counts["failed"].as_u64().unwrap_or(0),
    );
    if ctx.json {
        output::json(&counts)?;
    } else {
        output::line("Orphaned sandbox containers cleaned up.");
        output::line(format!("Removed {removed} container(s), {failed} failed."));
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// What `serve` answers to `SandboxCleanup`: its runtime sweeps (keeping its own in-flight
/// and pooled containers), or `{"containerMode": false}` when it runs none.
pub async fn cleanup_on_node(sel: &Selection, force: bool) -> Result<Value> {
    match &sel.runtime {
        Some(rt) => {
            let r = rt
                .cleanup_orphans(force)
                .await
                .map_err(|e| anyhow::anyhow!("cleanup: {e}"))?;
            Ok(json!({"removed": r.removed, "failed": r.failed}))
        }
        None => Ok(json!({"containerMode": false})),
    }
}

async fn build_image(ctx: &Context, worker: Option<PathBuf>, repo: &str) -> Result<ExitCode> {
    let worker = worker.unwrap_or_else(worker_binary);
    if !worker.is_file() {
        bail!("worker binary {} not found", worker.display());
    }
    let docker = lango_sandbox::container::docker::connect().await?;
    let quiet = ctx.json;
    let built =
        lango_sandbox::container::image::build_worker_image(&docker, &worker, repo, |line| {
            if !quiet {
                output::note(format!("  {line}"));
            }
        })
        .await?;
    if ctx.json {
        output::json(
            &json!({"id": built.id, "tag": built.tag, "latest": format!("{repo}:latest")}),
        )?;
    } else {
        output::line(format!("Built {} ({repo}:latest)", built.tag));
        output::line(format!("  Image ID: {}", built.id));
        output::line(format!(
            "  Pin it: p2p.toolIsolation.container.image = \"{}\"",
            built.tag
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// Which host uids tools run as: a range when the node is root, else the node's own uid.
fn sandbox_uids(cfg: &SandboxConfig) -> String {
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        let r = cfg.uid_range;
        format!(
            "{}-{} (one per running call; the node runs as root)",
            r.first,
            u64::from(r.first) + u64::from(r.count) - 1
        )
    } else {
        format!("{uid} (the node's own uid; not root)")
    }
}
