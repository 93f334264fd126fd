//! Spec §7.6: the adversarial tools through the real subprocess executor (bubblewrap
//! namespaces, rlimits, Landlock, seccomp) with timeoutPerTool = 3 s, maxMemoryMB = 128,
//! maxProcesses = 16. Without bubblewrap these tests skip with a printed reason, and fail
//! when `CI=true`.
#![allow(unsafe_code)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use lango_sandbox::{
    CommandTool, ErrorKind, Executor, IsolationReport, SubprocessExecutor, SubprocessOptions,
    ToolRegistry,
};
use serde_json::{Map, Value, json};

const WORKER: &str = env!("CARGO_BIN_EXE_lango-adversarial-worker");

struct Sandbox {
    ex: SubprocessExecutor,
    _root: tempfile::TempDir,
}

fn options(root: PathBuf) -> SubprocessOptions {
    SubprocessOptions {
        worker: WORKER.into(),
        timeout: Duration::from_secs(3),
        max_memory_mb: 128,
        max_output_bytes: 1 << 20,
        max_processes: 16,
        max_open_files: 64,
        max_file_size_mb: 16,
        require_os_isolation: true,
        sandbox_root: Some(root),
    }
}

fn sandbox_with(registry: ToolRegistry) -> Option<Sandbox> {
    let report = IsolationReport::probe();
    if let Err(why) = &report.namespaces {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("OS isolation unavailable in CI: {why}");
        }
        eprintln!("skipped: OS isolation unavailable: {why}");
        return None;
    }
    let root = tempfile::tempdir().unwrap();
    let ex = SubprocessExecutor::new(options(root.path().join("sbx")), Arc::new(registry)).unwrap();
    Some(Sandbox { ex, _root: root })
}

fn sandbox() -> Option<Sandbox> {
    sandbox_with(lango_sandbox_adversarial::registry())
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

/// Processes whose `comm` is `name` (the adversarial tools name their children).
fn processes_named(name: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm"))
                .map(|c| c.trim() == name)
                .unwrap_or(false)
        })
        .count()
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn t_g1_echo_returns_params_and_empty_is_empty_object() {
    let Some(s) = sandbox() else { return };
    let p = obj(json!({"msg": "sandbox-smoke-test", "n": [1, 2]}));
    assert_eq!(s.ex.execute("sandbox_echo", p.clone()).await.unwrap(), p);
    assert_eq!(
        s.ex.execute("sandbox_echo", Map::new()).await.unwrap(),
        Map::new()
    );
    assert!(
        s.ex.isolation().starts_with("subprocess(namespaces"),
        "{}",
        s.ex.isolation()
    );
}

#[tokio::test]
async fn t_g2_fork_bomb_is_contained() {
    let Some(s) = sandbox() else { return };
    let started = Instant::now();
    let (bomb, echo) = tokio::join!(s.ex.execute("adv_fork_bomb", Map::new()), async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let t = Instant::now();
        let r =
            s.ex.execute("sandbox_echo", obj(json!({"during": "bomb"})))
                .await;
        (r, t.elapsed())
    });
    let e = bomb.unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::ResourceLimit | ErrorKind::Timeout),
        "{e}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let (echo, took) = echo;
    assert_eq!(echo.unwrap(), obj(json!({"during": "bomb"})));
    assert!(took < Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        processes_named("adv_fork_child"),
        0,
        "fork bomb children survived"
    );
}

#[tokio::test]
async fn t_g3_memory_bomb_hits_the_limit_not_the_node() {
    let Some(s) = sandbox() else { return };
    let before = rss_kib();
    let started = Instant::now();
    let e =
        s.ex.execute("adv_memory_bomb", obj(json!({"mb": 1024})))
            .await
            .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ResourceLimit, "{e}");
    assert_eq!(
        e.peer_message(),
        "tool \"adv_memory_bomb\" exceeded resource limits"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        rss_kib().saturating_sub(before) < 16 * 1024,
        "parent RSS grew"
    );
}

#[tokio::test]
async fn t_g4_busy_loop_times_out_on_time() {
    let Some(s) = sandbox() else { return };
    let started = Instant::now();
    let e = s.ex.execute("adv_busy_loop", Map::new()).await.unwrap_err();
    assert_eq!(
        e.peer_message(),
        "tool \"adv_busy_loop\" timed out after 3s"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn t_g5_background_daemon_dies_with_the_call() {
    let Some(s) = sandbox() else { return };
    let started = Instant::now();
    let _ =
        s.ex.execute("adv_spawn_daemon", obj(json!({"secs": 600})))
            .await;
    assert!(
        started.elapsed() < Duration::from_secs(4 + 2),
        "{:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        processes_named("adv_daemon"),
        0,
        "the daemon outlived the call"
    );
}

#[tokio::test]
async fn t_g6_only_stdio_and_the_result_channel_are_open() {
    let Some(s) = sandbox() else { return };
    // A descriptor without close-on-exec in the parent: it must not reach the worker.
    // SAFETY: dup of stderr; closed below.
    let leaked = unsafe { libc::dup(2) };
    assert!(leaked > 2);
    let out = s.ex.execute("adv_fd_probe", Map::new()).await.unwrap();
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(leaked) };
    let fds = out["fds"].as_object().unwrap();
    let others: Vec<_> = fds
        .iter()
        .filter(|(fd, target)| {
            fd.parse::<i32>().unwrap() > 2 && !target.as_str().unwrap().ends_with("/fd")
        })
        .collect();
    assert_eq!(
        others.len(),
        1,
        "only the result channel beyond 0-2: {fds:?}"
    );
    assert!(
        others[0].1.as_str().unwrap().starts_with("pipe:"),
        "{fds:?}"
    );
}

#[tokio::test]
async fn t_g7_environment_is_fixed() {
    let Some(s) = sandbox() else { return };
    // SAFETY: set before the call; no other thread of this test reads the environment.
    unsafe { std::env::set_var("LANGO_TEST_SECRET", "s3cr3t") };
    let out = s.ex.execute("adv_read_env", Map::new()).await.unwrap();
    let env = out["env"].as_object().unwrap();
    let keys: Vec<&str> = env.keys().map(String::as_str).collect();
    assert_eq!(keys, ["HOME", "LANG", "PATH", "TMPDIR"]);
    assert_eq!(env["PATH"], "/usr/local/bin:/usr/bin:/bin");
    assert_eq!(env["HOME"], out["cwd"], "HOME is the private workdir");
    assert_ne!(env["HOME"].as_str(), std::env::var("HOME").ok().as_deref());
    assert!(!serde_json::to_string(&out).unwrap().contains("s3cr3t"));
}

#[tokio::test]
async fn t_g8_parent_memory_environ_and_ptrace_are_out_of_reach() {
    let Some(s) = sandbox() else { return };
    let me = std::process::id();
    let out =
        s.ex.execute("adv_read_parent", obj(json!({"pid": me})))
            .await
            .unwrap();
    let attempts = out["attempts"].as_object().unwrap();
    let node = &attempts[&me.to_string()];
    assert_eq!(node["visible"], false, "the node's pid is visible: {out:?}");
    for (pid, a) in attempts {
        for k in ["environ", "mem", "ptrace"] {
            assert!(
                a[k].as_str().unwrap().starts_with("error"),
                "{pid} {k}: {out:?}"
            );
        }
    }
}

#[tokio::test]
async fn t_g9_writes_outside_the_workdir_fail_and_the_workdir_goes() {
    let Some(s) = sandbox() else { return };
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join(".lango")).unwrap();
    let worker_dir = PathBuf::from(WORKER).parent().unwrap().to_path_buf();
    let paths = [
        std::env::current_dir().unwrap().join("pwned-by-sandbox"),
        home.path().join("pwned"),
        home.path().join(".lango/pwned"),
        std::env::temp_dir().join(format!("pwned-{}", std::process::id())),
        worker_dir.join("pwned-by-sandbox"),
    ];
    let out =
        s.ex.execute("adv_write_outside", obj(json!({"paths": paths})))
            .await
            .unwrap();
    let results = out["results"].as_object().unwrap();
    assert_eq!(results["inside"], "ok");
    for p in &paths {
        assert!(
            results[&p.display().to_string()]
                .as_str()
                .unwrap()
                .starts_with("error"),
            "{out:?}"
        );
        assert!(!p.exists(), "{} was written", p.display());
    }
    let workdir = PathBuf::from(out["workdir"].as_str().unwrap());
    assert!(!workdir.exists(), "workdir left behind");
}

#[tokio::test]
async fn t_g10_secrets_are_unreadable() {
    let Some(s) = sandbox() else { return };
    let home = tempfile::tempdir().unwrap();
    let decoys = [".lango/lango.db", ".ssh/id_ed25519", ".lango/config.toml"];
    let mut paths = Vec::new();
    for d in decoys {
        let p = home.path().join(d);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"decoy secret").unwrap();
        paths.push(p.display().to_string());
    }
    let out =
        s.ex.execute("adv_read_secrets", obj(json!({"paths": paths})))
            .await
            .unwrap();
    for p in &paths {
        assert!(
            out["results"][p].as_str().unwrap().starts_with("error"),
            "{out:?}"
        );
    }
    // Inside the namespace view, Landlock still narrows reads: /dev/random is mounted by
    // bubblewrap but is not among the devices the worker's rules allow.
    let dev =
        s.ex.execute(
            "adv_read_secrets",
            obj(json!({"paths": ["/dev/random", "/dev/urandom"]})),
        )
        .await
        .unwrap();
    assert!(
        dev["results"]["/dev/random"]
            .as_str()
            .unwrap()
            .starts_with("error"),
        "{dev:?}"
    );
    assert_eq!(dev["results"]["/dev/urandom"], "ok", "{dev:?}");
}

#[tokio::test]
async fn t_g11_no_network() {
    let Some(s) = sandbox() else { return };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = listener.local_addr().unwrap().to_string();
    let out =
        s.ex.execute(
            "adv_net_connect",
            obj(json!({"tcp": [local, "1.1.1.1:53"]})),
        )
        .await
        .unwrap();
    for (what, r) in out["results"].as_object().unwrap() {
        assert!(r.as_str().unwrap().starts_with("error"), "{what}: {out:?}");
    }
    let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
    assert!(accepted.is_err(), "the listener saw a connection");
}

#[tokio::test]
async fn t_g12_output_floods_are_cut() {
    let Some(s) = sandbox() else { return };
    let before = rss_kib();
    let e =
        s.ex.execute("adv_stdout_flood", obj(json!({"mb": 100})))
            .await
            .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::OutputTooLarge, "{e}");
    assert_eq!(
        e.peer_message(),
        "tool \"adv_stdout_flood\" output too large"
    );
    assert!(rss_kib().saturating_sub(before) < 16 * 1024);
    let ok =
        s.ex.execute("adv_stderr_flood", obj(json!({"mb": 10})))
            .await
            .unwrap();
    assert_eq!(ok, obj(json!({"ok": true})));
}

#[tokio::test]
async fn t_g13_garbage_signals_and_panics() {
    let Some(s) = sandbox() else { return };
    let ok = s.ex.execute("adv_print_garbage", Map::new()).await.unwrap();
    assert_eq!(
        ok,
        obj(json!({"ok": true})),
        "tool writes are kept off the result channel"
    );
    let e =
        s.ex.execute("adv_exit_signal", Map::new())
            .await
            .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WorkerFailure);
    assert_eq!(
        e.peer_message(),
        "tool \"adv_exit_signal\" execution failed"
    );
    let e = s.ex.execute("adv_panic", Map::new()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WorkerFailure);
    assert!(e.to_string().contains("worker panic"), "{e}");
    assert!(!e.peer_message().contains(".lango"));
    let e =
        s.ex.execute("adv_fail", obj(json!({"message": "bad input"})))
            .await
            .unwrap_err();
    assert_eq!(e.peer_message(), "tool \"adv_fail\": bad input");
}

#[tokio::test]
async fn t_g14_file_size_limit() {
    let Some(s) = sandbox() else { return };
    let e =
        s.ex.execute("adv_file_size_bomb", obj(json!({"mb": 100})))
            .await
            .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ResourceLimit, "{e}");
}

#[tokio::test]
async fn t_g15_open_files_stop_at_the_limit() {
    let Some(s) = sandbox() else { return };
    let out =
        s.ex.execute("adv_open_many_files", Map::new())
            .await
            .unwrap();
    let n = out["opened"].as_u64().unwrap();
    assert!(n > 0 && n < 64, "{out:?}");
    // The node is unaffected.
    assert!(std::fs::File::open("/dev/null").is_ok());
}

#[tokio::test]
async fn t_g16_no_new_privs_and_seccomp() {
    let Some(s) = sandbox() else { return };
    let out = s.ex.execute("adv_setuid_probe", Map::new()).await.unwrap();
    assert_eq!(out["NoNewPrivs"], "1", "{out:?}");
    assert_eq!(out["Seccomp"], "2", "{out:?}");
    assert_eq!(out["CapEff"], "0000000000000000", "{out:?}");
}

#[test]
fn t_g17_worker_mode_is_strict() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let loose = Command::new(WORKER)
        .args(["foo", "--sandbox-worker"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(loose.status.code(), Some(2), "not worker mode");
    let mut child = Command::new(WORKER)
        .arg("--sandbox-worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"{}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["error"].as_str().unwrap().starts_with("decode request"),
        "{v}"
    );
}

#[tokio::test]
async fn t_g18_oversized_request_is_refused_by_the_worker() {
    let Some(s) = sandbox() else { return };
    let big = "x".repeat(2 << 20);
    let e =
        s.ex.execute("sandbox_echo", obj(json!({"blob": big})))
            .await
            .unwrap_err();
    assert_eq!(e.peer_message(), "tool \"sandbox_echo\" execution failed");
    assert!(e.to_string().contains("request larger than"), "{e}");
}

#[tokio::test]
async fn t_g19_required_isolation_missing_means_no_executor() {
    let forced = IsolationReport {
        namespaces: Err("forced failure".into()),
        ..IsolationReport::probe()
    };
    let root = tempfile::tempdir().unwrap();
    let registry = Arc::new(lango_sandbox_adversarial::registry());
    let refused = SubprocessExecutor::with_isolation(
        options(root.path().into()),
        registry.clone(),
        forced.clone(),
    );
    assert!(
        matches!(refused, Err(lango_sandbox::Error::IsolationUnavailable(ref w)) if w == "forced failure"),
        "{:?}",
        refused.err()
    );
    // Explicitly degraded: the executor runs, and says so.
    let mut opts = options(root.path().into());
    opts.require_os_isolation = false;
    let degraded = SubprocessExecutor::with_isolation(opts, registry, forced).unwrap();
    assert!(!degraded.isolation().contains("namespaces"));
    let p = obj(json!({"msg": "degraded"}));
    assert_eq!(
        degraded.execute("sandbox_echo", p.clone()).await.unwrap(),
        p
    );
}

#[tokio::test]
async fn command_tools_run_inside_the_sandbox() {
    let mut registry = lango_sandbox_adversarial::registry();
    registry
        .register_command(CommandTool {
            name: "json_cat".into(),
            description: "echoes its params".into(),
            program: "/bin/sh".into(),
            args: vec!["-c".into(), "cat".into()],
        })
        .unwrap();
    registry
        .register_command(CommandTool {
            name: "whoami_net".into(),
            description: "tries the network and reports".into(),
            program: "/bin/sh".into(),
            args: vec!["-c".into(), "echo probe >&2; exit 3".into()],
        })
        .unwrap();
    let Some(s) = sandbox_with(registry) else {
        return;
    };
    let p = obj(json!({"q": "hello", "n": 2}));
    assert_eq!(s.ex.execute("json_cat", p.clone()).await.unwrap(), p);
    let e = s.ex.execute("whoami_net", Map::new()).await.unwrap_err();
    assert_eq!(
        e.peer_message(),
        "tool \"whoami_net\": command exited with status 3"
    );
    let e =
        s.ex.execute("not_registered", Map::new())
            .await
            .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotAvailable);
}

#[tokio::test]
async fn isolation_self_checks_pass_and_peers_cannot_call_them() {
    let Some(s) = sandbox() else { return };
    let checks = s.ex.self_check().await.unwrap();
    assert_eq!(checks.len(), 7, "{checks:?}");
    for (name, passed) in &checks {
        assert!(passed, "self-check failed: {name} ({checks:?})");
    }
    let e =
        s.ex.execute("__lango_self_check", Map::new())
            .await
            .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotAvailable);
}
