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
    ToolRegistry, UidRange,
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
        uid_range: UidRange::DEFAULT,
    }
}

/// A scratch directory the sandbox uids of a root node can traverse (tempdirs are 0700).
fn scratch() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    d
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
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
    let root = scratch();
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

/// A process as the host sees it: pid, real uid, `comm`.
struct HostProc {
    uid: u32,
    comm: String,
}

fn host_processes() -> Vec<HostProc> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if !e
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
                .unwrap_or_default()
        };
        let uid = field("Uid:")
            .split_whitespace()
            .next()
            .and_then(|u| u.parse().ok())
            .unwrap_or(u32::MAX);
        v.push(HostProc {
            uid,
            comm: field("Name:"),
        });
    }
    v
}

/// Samples, from outside, the processes of each sandbox uid (without bubblewrap's own
/// supervisor processes) and the bomb children, and forks from the host the whole time.
struct Watch {
    stop: Arc<std::sync::atomic::AtomicBool>,
    sampler: std::thread::JoinHandle<(std::collections::HashMap<u32, usize>, usize)>,
    forker: std::thread::JoinHandle<(u32, u32)>,
}

impl Watch {
    fn start() -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let range = UidRange::DEFAULT;
        let s = stop.clone();
        let sampler = std::thread::spawn(move || {
            let mut peak_per_uid = std::collections::HashMap::<u32, usize>::new();
            let mut peak_children = 0;
            while !s.load(Ordering::Relaxed) {
                let procs = host_processes();
                let mut now = std::collections::HashMap::<u32, usize>::new();
                for p in &procs {
                    if (range.first..range.first + range.count).contains(&p.uid)
                        && p.comm != "bwrap"
                    {
                        *now.entry(p.uid).or_default() += 1;
                    }
                }
                for (uid, n) in now {
                    let e = peak_per_uid.entry(uid).or_default();
                    *e = (*e).max(n);
                }
                let children = procs.iter().filter(|p| p.comm == "adv_fork_child").count();
                peak_children = peak_children.max(children);
                std::thread::sleep(Duration::from_millis(5));
            }
            (peak_per_uid, peak_children)
        });
        let s = stop.clone();
        let forker = std::thread::spawn(move || {
            let (mut ok, mut failed) = (0u32, 0u32);
            while !s.load(Ordering::Relaxed) {
                match std::process::Command::new("/bin/true").status() {
                    Ok(st) if st.success() => ok += 1,
                    _ => failed += 1,
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            (ok, failed)
        });
        Self {
            stop,
            sampler,
            forker,
        }
    }

    /// (peak processes per sandbox uid, peak bomb children, host forks ok, host forks failed)
    fn finish(self) -> (std::collections::HashMap<u32, usize>, usize, u32, u32) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (peaks, children) = self.sampler.join().unwrap();
        let (ok, failed) = self.forker.join().unwrap();
        (peaks, children, ok, failed)
    }
}

/// Spec T-G2, as the attack happens: the bomb is counted from outside, and the host (this
/// test process) keeps forking throughout. Run as root (as CI does), the calls run as
/// unprivileged host uids, so the kernel's process cap holds for them.
#[tokio::test]
async fn t_g2_fork_bomb_is_contained() {
    let Some(s) = sandbox() else { return };
    let watch = Watch::start();
    let started = Instant::now();
    let (bomb, echo) = tokio::join!(s.ex.execute("adv_fork_bomb", Map::new()), async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let t = Instant::now();
        let r =
            s.ex.execute("sandbox_echo", obj(json!({"during": "bomb"})))
                .await;
        (r, t.elapsed())
    });
    let (peaks, children, forks_ok, forks_failed) = watch.finish();
    eprintln!(
        "fork bomb: peak per sandbox uid {peaks:?}, peak children {children}, host forks {forks_ok} ok / {forks_failed} failed"
    );
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
    // The worker and its children: at most maxProcesses (16) processes. The bomb tests run
    // one at a time (the `fork-bombs` group in .config/nextest.toml), so every bomb child on
    // the host is this call's.
    assert!(
        children < 16,
        "the bomb made {children} processes (maxProcesses = 16)"
    );
    if is_root() {
        assert!(!peaks.is_empty(), "no process ran as a sandbox uid");
        let worst = peaks.values().copied().max().unwrap_or(0);
        assert!(
            worst <= 16,
            "a sandbox uid held {worst} processes (maxProcesses = 16): {peaks:?}"
        );
    }
    assert_eq!(forks_failed, 0, "the host could not fork during the bomb");
    assert!(forks_ok > 50, "the host forked only {forks_ok} times");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        processes_named("adv_fork_child"),
        0,
        "fork bomb children survived"
    );
}

/// Two bombs at once each get their own process budget (their own uid when the node is
/// root): a third call still runs, and the host still forks.
#[tokio::test]
async fn t_g2b_two_bombs_do_not_stop_a_third_call() {
    let Some(s) = sandbox() else { return };
    let watch = Watch::start();
    let (a, b, echo) = tokio::join!(
        s.ex.execute("adv_fork_bomb", Map::new()),
        s.ex.execute("adv_fork_bomb", Map::new()),
        async {
            tokio::time::sleep(Duration::from_millis(800)).await;
            // Long enough to be seen from outside by the sampler.
            s.ex.execute("adv_sleep", obj(json!({"ms": 300}))).await
        }
    );
    let (peaks, children, _, forks_failed) = watch.finish();
    eprintln!("two bombs: peak per sandbox uid {peaks:?}, peak children {children}");
    assert!(a.is_err() && b.is_err());
    assert_eq!(echo.unwrap(), obj(json!({"slept_ms": 300})));
    assert!(children < 2 * 16, "two bombs made {children} processes");
    if is_root() {
        assert!(
            peaks.len() >= 3,
            "the three calls did not get three uids: {peaks:?}"
        );
        assert!(peaks.values().all(|n| *n <= 16), "{peaks:?}");
    }
    assert_eq!(forks_failed, 0, "the host could not fork during the bombs");
}

/// The tool is never host root: seen from outside, its uid (and the host side of its uid
/// map) is an unprivileged uid; inside, `/proc/keys` shows none of the node's keys and
/// `/proc/sys` does not open for writing.
#[tokio::test]
async fn t_g20_the_tool_is_not_host_root_and_sees_nothing_of_the_host() {
    let Some(s) = sandbox() else { return };
    // A key in this process's session keyring (the node's, in production).
    let marker = format!("lango-host-key-{}", std::process::id());
    let added = std::process::Command::new("keyctl")
        .args(["add", "user", &marker, "host-secret", "@s"])
        .output();
    let key_id = match added {
        Ok(o) if o.status.success() => Some(String::from_utf8_lossy(&o.stdout).trim().to_owned()),
        _ => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("keyctl (keyutils) is missing in CI");
            }
            eprintln!("keyctl unavailable: the keyring part is not checked");
            None
        }
    };
    let call = s.ex.execute("adv_host_view", obj(json!({"hold_ms": 1500})));
    let outside = async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let mut seen = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            if std::fs::read_to_string(e.path().join("comm"))
                .is_ok_and(|c| c.trim() == "adv_host_view")
            {
                let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
                let uid_map = std::fs::read_to_string(e.path().join("uid_map")).unwrap_or_default();
                seen.push((status, uid_map));
            }
        }
        seen
    };
    let (out, seen) = tokio::join!(call, outside);
    if let Some(id) = key_id {
        let _ = std::process::Command::new("keyctl")
            .args(["unlink", &id, "@s"])
            .status();
    }
    let out = out.unwrap();
    assert!(
        !seen.is_empty(),
        "the tool's process was not found from outside"
    );
    for (status, uid_map) in &seen {
        let uids: Vec<u32> = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .unwrap()
            .split_whitespace()
            .map(|u| u.parse().unwrap())
            .collect();
        assert!(
            uids.iter().all(|u| *u != 0),
            "the tool runs as host root: {status}"
        );
        // The host side of every line of the map (second field, as the host reads it).
        for line in uid_map.lines() {
            let host: u32 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
            assert_ne!(host, 0, "uid map reaches host uid 0: {uid_map}");
        }
        if is_root() {
            let r = UidRange::DEFAULT;
            assert!((r.first..r.first + r.count).contains(&uids[0]), "{status}");
        }
    }
    let keys = out["proc_keys"].as_str().unwrap();
    assert!(!keys.contains(&marker), "the node's key is visible: {keys}");
    assert!(
        !keys.contains("_uid.0") && !keys.contains("_uid_ses.0"),
        "{keys}"
    );
    assert!(
        out["proc_sys_write"].as_str().unwrap().starts_with("error"),
        "/proc/sys opens for writing: {out:?}"
    );
}

/// Even without the namespaces and seccomp (an explicitly degraded sandbox), the tool gets a
/// fresh session keyring: the node's session keyring, and what it holds, is not the tool's.
#[tokio::test]
async fn t_g20b_the_tool_does_not_inherit_the_nodes_session_keyring() {
    if IsolationReport::probe().namespaces.is_err() && std::env::var("CI").as_deref() != Ok("true")
    {
        eprintln!("skipped: OS isolation unavailable");
        return;
    }
    let marker = format!("lango-session-key-{}", std::process::id());
    let added = std::process::Command::new("keyctl")
        .args(["add", "user", &marker, "host-secret", "@s"])
        .output();
    let key_id = match added {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        other => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("keyctl add failed in CI: {other:?}");
            }
            eprintln!("skipped: keyctl unavailable");
            return;
        }
    };
    let degraded = IsolationReport {
        namespaces: Err("forced: no namespaces".into()),
        seccomp: Err("forced: no seccomp".into()),
        ..IsolationReport::probe()
    };
    let root = scratch();
    let mut opts = options(root.path().join("sbx"));
    opts.require_os_isolation = false;
    let ex = SubprocessExecutor::with_isolation(
        opts,
        Arc::new(lango_sandbox_adversarial::registry()),
        degraded,
    )
    .unwrap();
    let out = ex.execute("adv_host_view", Map::new()).await;
    let _ = std::process::Command::new("keyctl")
        .args(["unlink", &key_id, "@s"])
        .status();
    let out = out.unwrap();
    let keys = out["proc_keys"].as_str().unwrap();
    assert!(
        !keys.contains(&marker),
        "the node's session key is visible: {keys}"
    );
}

/// Each syscall of the extended deny list is refused, with arguments the kernel itself would
/// accept where there are such; clone3 is ENOSYS (the C library falls back to clone); an
/// ordinary fork still works.
#[tokio::test]
async fn t_g21_dangerous_syscalls_are_refused() {
    let Some(s) = sandbox() else { return };
    let out = s.ex.execute("adv_syscalls", Map::new()).await.unwrap();
    let r = out["results"].as_object().unwrap();
    for name in [
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        "fsopen",
        "fsconfig",
        "fsmount",
        "fspick",
        "open_tree",
        "move_mount",
        "mount_setattr",
        "userfaultfd",
        "perf_event_open",
        "personality(PER_BSD)",
        "unshare(CLONE_NEWUSER)",
        "clone(CLONE_NEWUSER)",
        "setns",
    ] {
        assert_eq!(
            r[name], "errno 1",
            "{name} was not refused by seccomp: {out:?}"
        );
    }
    assert_eq!(r["clone3"], "errno 38", "{out:?}");
    assert_eq!(r["personality(PER_LINUX)"], "ok", "{out:?}");
    assert_eq!(r["fork"], "ok", "{out:?}");
}

/// A syscall with the x32 bit and one through the i386 entry kill the worker (SIGSYS): a deny
/// list keyed by number would let both through.
#[tokio::test]
async fn t_g22_x32_and_foreign_architecture_syscalls_kill_the_call() {
    let Some(s) = sandbox() else { return };
    for tool in ["adv_x32_syscall", "adv_i386_syscall"] {
        let e = s.ex.execute(tool, Map::new()).await.unwrap_err();
        assert!(
            e.to_string().contains(&format!("signal {}", libc::SIGSYS)),
            "{tool}: {e}"
        );
    }
    let kernel_x32 = std::fs::read("/proc/config.gz").is_ok()
        && std::process::Command::new("sh")
            .args([
                "-c",
                "zcat /proc/config.gz | grep -q '^CONFIG_X86_X32_ABI=y'",
            ])
            .status()
            .is_ok_and(|s| s.success());
    eprintln!("kernel x32 ABI: {kernel_x32} (the filter kills x32 numbers either way)");
}

/// A command tool runs as the worker's uid: it cannot open the worker's memory.
#[tokio::test]
async fn t_g23_a_command_tool_cannot_open_its_workers_memory() {
    let mut registry = lango_sandbox_adversarial::registry();
    registry
        .register_command(CommandTool {
            name: "peek_worker".into(),
            description: "opens /proc/$PPID/mem".into(),
            program: "/bin/sh".into(),
            args: vec![
                "-c".into(),
                "if ( exec 3</proc/$PPID/mem ) 2>/dev/null; then echo '{\"mem\":\"open\"}'; \
                 else echo '{\"mem\":\"denied\"}'; fi"
                    .into(),
            ],
        })
        .unwrap();
    let Some(s) = sandbox_with(registry) else {
        return;
    };
    let out = s.ex.execute("peek_worker", Map::new()).await.unwrap();
    assert_eq!(out["mem"], "denied", "{out:?}");
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
    let root = scratch();
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
