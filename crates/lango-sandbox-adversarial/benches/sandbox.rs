//! Sandbox call latency (`cargo xtask bench sandbox`).
//!
//! - `sandbox/subprocess_echo`: one `sandbox_echo` call through the real subprocess executor
//!   (bubblewrap namespaces, rlimits, Landlock, seccomp, a fresh workdir) — criterion.
//! - Tail latency: 300 calls timed one by one; p50 and p99 are printed and written as metric
//!   files (`<criterion dir>/sandbox/subprocess_p50.json`, `subprocess_p99.json`).
//!
//! - Containers (when the Docker engine answers): `sandbox_echo` in a fresh container created
//!   per call (cold: create + attach + start + wait + remove) and through the warm pool (the
//!   container was created ahead of time), in one run; medians and the cold/warm ratio are
//!   written as metric files (`container_cold_ms.json`, `container_warm_ms.json`,
//!   `container_cold_over_warm.json`). The image is built from the adversarial worker.
//!
//! Skips with a message when the machine has no user namespaces (bubblewrap).
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr
)]

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use criterion::Criterion;
use lango_sandbox::{Executor, IsolationReport, SubprocessExecutor, SubprocessOptions};
use serde_json::{Map, json};

fn criterion_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("criterion")
}

/// Writes one metric file for `cargo xtask bench` (format documented in xtask/src/bench.rs).
fn write_metric(dir: &Path, file: &str, metric: &str, value: f64, unit: &str, note: &str) {
    let body = json!({ "metric": metric, "value": value, "unit": unit, "note": note });
    if std::fs::create_dir_all(dir).is_ok() {
        let _ = std::fs::write(dir.join(file), body.to_string());
    }
}

fn params() -> Map<String, serde_json::Value> {
    json!({"msg": "sandbox-smoke-test"})
        .as_object()
        .cloned()
        .unwrap()
}

fn main() {
    if let Err(why) = IsolationReport::probe().namespaces {
        eprintln!("sandbox benches skipped: {why}");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    // A root node's calls run as other uids: they must traverse the scratch directory.
    std::fs::set_permissions(
        root.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    let ex = Arc::new(
        SubprocessExecutor::new(
            SubprocessOptions {
                worker: env!("CARGO_BIN_EXE_lango-adversarial-worker").into(),
                timeout: Duration::from_secs(30),
                max_memory_mb: 256,
                max_output_bytes: 1 << 20,
                max_processes: 32,
                max_open_files: 64,
                max_file_size_mb: 16,
                require_os_isolation: true,
                sandbox_root: Some(root.path().join("sbx")),
                uid_range: lango_sandbox::UidRange::DEFAULT,
            },
            Arc::new(lango_sandbox_adversarial::registry()),
        )
        .unwrap(),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut c = Criterion::default().configure_from_args();
    {
        let mut g = c.benchmark_group("sandbox");
        g.sample_size(30).measurement_time(Duration::from_secs(10));
        g.bench_function("subprocess_echo", |b| {
            b.iter(|| rt.block_on(ex.execute("sandbox_echo", params())).unwrap())
        });
        g.finish();
    }
    let mut samples: Vec<f64> = (0..300)
        .map(|_| {
            let t = Instant::now();
            rt.block_on(ex.execute("sandbox_echo", params())).unwrap();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    let p50 = samples[samples.len() / 2];
    let p99 = samples[samples.len() * 99 / 100];
    eprintln!("subprocess sandbox_echo: p50 {p50:.2} ms, p99 {p99:.2} ms (300 calls)");
    let dir = criterion_dir().join("sandbox");
    let note = "sandbox_echo through bwrap namespaces + Landlock + seccomp, 300 sequential calls";
    write_metric(
        &dir,
        "subprocess_p50.json",
        "subprocess sandbox_echo p50",
        p50,
        "ms",
        note,
    );
    write_metric(
        &dir,
        "subprocess_p99.json",
        "subprocess sandbox_echo p99",
        p99,
        "ms",
        note,
    );
    containers(&rt, &dir);
    c.final_summary();
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn containers(rt: &tokio::runtime::Runtime, dir: &Path) {
    use lango_sandbox::{
        ContainerRuntime, SandboxConfig,
        container::{
            RuntimeKind,
            docker::{DockerFactory, FactoryOptions},
            image::build_worker_image,
        },
        protocol::WorkerRequest,
    };
    let Ok(docker) = rt.block_on(lango_sandbox::container::docker::connect()) else {
        eprintln!("container benches skipped: the Docker engine is not reachable");
        return;
    };
    let worker = Path::new(env!("CARGO_BIN_EXE_lango-adversarial-worker"));
    let image = rt
        .block_on(build_worker_image(
            &docker,
            worker,
            "lango-sandbox-bench",
            |_| {},
        ))
        .unwrap();
    let mut cfg = SandboxConfig::default();
    cfg.container.enabled = true;
    cfg.container.image = image.tag.clone();
    cfg.container.pool_size = 1;
    cfg.container.pool_idle_timeout = Duration::from_secs(600);
    let factory = |pool: bool| {
        DockerFactory::new(
            cfg.clone(),
            FactoryOptions {
                sweep_orphans: false,
                start_pool: pool,
                scope: Some(format!("bench-{}", std::process::id())),
            },
        )
    };
    let request = WorkerRequest {
        version: 1,
        tool_name: "sandbox_echo".into(),
        params: json!({"msg": "sandbox-smoke-test"}),
        timeout_ms: Some(30_000),
        command: None,
        confine: None,
    };
    const CALLS: usize = 20;
    let cold_rt = rt
        .block_on(factory(false).runtime(RuntimeKind::Docker))
        .unwrap();
    let cold: Vec<f64> = (0..CALLS)
        .map(|_| {
            let t = Instant::now();
            rt.block_on(cold_rt.run(&request)).unwrap();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let warm_rt = rt
        .block_on(factory(true).runtime(RuntimeKind::Docker))
        .unwrap();
    let pool = warm_rt.pool().unwrap();
    let warm: Vec<f64> = (0..CALLS)
        .map(|_| {
            // Measure only calls that really take a pooled container.
            assert!(rt.block_on(pool.wait_full(Duration::from_secs(30))));
            let t = Instant::now();
            rt.block_on(warm_rt.run(&request)).unwrap();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    rt.block_on(warm_rt.shutdown());
    let (c, w) = (median(cold), median(warm));
    eprintln!(
        "container sandbox_echo: cold {c:.1} ms, warm pool {w:.1} ms, ratio {:.2}",
        c / w
    );
    let note = format!("sandbox_echo, Docker (runc), {CALLS} sequential calls each");
    write_metric(
        dir,
        "container_cold_ms.json",
        "container call cold (create+start) median",
        c,
        "ms",
        &note,
    );
    write_metric(
        dir,
        "container_warm_ms.json",
        "container call from the warm pool median",
        w,
        "ms",
        &note,
    );
    write_metric(
        dir,
        "container_cold_over_warm.json",
        "container cold / warm ratio",
        c / w,
        "x",
        &note,
    );
}
