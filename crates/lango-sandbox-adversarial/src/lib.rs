//! Test-only adversarial tools for the sandbox (spec §7.6–7.7). Each tool does what a hostile
//! or broken tool would: fork bombs, memory bombs, escapes through `/proc`, the network or
//! inherited descriptors, output floods. They are compiled into `lango-adversarial-worker`
//! and run through the real executors by this crate's tests; no release binary links them.
//!
//! Tools that probe report what they observed as JSON rather than deciding pass or fail: the
//! tests make the assertions.
#![allow(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{TcpStream, ToSocketAddrs, UdpSocket},
    time::Duration,
};

use lango_sandbox::{IsolationClass, ToolRegistry};
use serde_json::{Map, Value, json};

type Params = Map<String, Value>;
type ToolFn = fn(&Params) -> Result<Value, String>;

fn num(p: &Params, key: &str, default: u64) -> u64 {
    p.get(key).and_then(Value::as_u64).unwrap_or(default)
}

fn strings(p: &Params, key: &str) -> Vec<String> {
    p.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn outcome<T, E: std::fmt::Display>(r: Result<T, E>) -> Value {
    match r {
        Ok(_) => json!("ok"),
        Err(e) => json!(format!("error: {e}")),
    }
}

/// The built-in registry plus every adversarial tool, all worker-safe.
pub fn registry() -> ToolRegistry {
    let mut r = ToolRegistry::builtin();
    let tools: &[(&str, ToolFn)] = &[
        ("adv_fork_bomb", fork_bomb),
        ("adv_memory_bomb", memory_bomb),
        ("adv_busy_loop", busy_loop),
        ("adv_spawn_daemon", spawn_daemon),
        ("adv_fd_probe", fd_probe),
        ("adv_read_env", read_env),
        ("adv_read_parent", read_parent),
        ("adv_write_outside", write_outside),
        ("adv_read_secrets", read_secrets),
        ("adv_net_connect", net_connect),
        ("adv_stdout_flood", stdout_flood),
        ("adv_stderr_flood", stderr_flood),
        ("adv_print_garbage", print_garbage),
        ("adv_exit_signal", exit_signal),
        ("adv_panic", panic_tool),
        ("adv_file_size_bomb", file_size_bomb),
        ("adv_open_many_files", open_many_files),
        ("adv_setuid_probe", setuid_probe),
        ("adv_limits_probe", limits_probe),
        ("adv_sleep", sleep),
        ("adv_syscalls", syscalls),
        ("adv_x32_syscall", x32_syscall),
        ("adv_i386_syscall", i386_syscall),
        ("adv_host_view", host_view),
        ("adv_fail", |p| {
            Err(p
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("failed")
                .to_owned())
        }),
    ];
    for (name, f) in tools {
        let f = *f;
        r.register_fn(name, "adversarial test tool", IsolationClass::WorkerSafe, f)
            .expect("unique adversarial tool names");
    }
    r
}

/// Forks until killed, but never more than [`FORK_BOMB_BOUND`] children: a sandbox whose
/// process cap fails must still leave the test machine usable (a real bomb filled the whole
/// process table of a host when the node ran as root).
pub const FORK_BOMB_BOUND: u64 = 1500;

fn fork_bomb(_: &Params) -> Result<Value, String> {
    let mut forked = 0u64;
    loop {
        // SAFETY: fork in a single-threaded worker; the child only pauses forever.
        match unsafe { libc::fork() } {
            0 => {
                set_comm(c"adv_fork_child");
                loop {
                    // SAFETY: pause has no preconditions.
                    unsafe { libc::pause() };
                }
            }
            -1 => std::thread::sleep(Duration::from_millis(1)),
            _ => forked += 1,
        }
        if forked >= FORK_BOMB_BOUND {
            // Keep the children alive until the deadline kills the call.
            loop {
                // SAFETY: pause has no preconditions.
                unsafe { libc::pause() };
            }
        }
    }
}

/// Names the calling process (its `comm`), so tests can find leftovers.
fn set_comm(name: &std::ffi::CStr) {
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
}

fn memory_bomb(p: &Params) -> Result<Value, String> {
    let mb = num(p, "mb", 1024);
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    for i in 0..mb {
        let mut c = vec![0u8; 1 << 20];
        // Touch every page so the memory is really used.
        for b in c.iter_mut().step_by(4096) {
            *b = i as u8 | 1;
        }
        chunks.push(c);
    }
    Ok(json!({"allocated_mb": chunks.len()}))
}

fn busy_loop(_: &Params) -> Result<Value, String> {
    // SAFETY: ignoring SIGTERM is the point of the test.
    unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    let mut x: u64 = 0;
    loop {
        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
    }
}

fn spawn_daemon(p: &Params) -> Result<Value, String> {
    let secs = num(p, "secs", 600) as u32;
    // SAFETY: double fork in a single-threaded worker; the children only call async-signal-
    // safe functions (setsid, sleep, _exit).
    unsafe {
        match libc::fork() {
            0 => {
                libc::setsid();
                if libc::fork() == 0 {
                    set_comm(c"adv_daemon");
                    // The grandchild keeps every inherited descriptor (stdout, the result
                    // channel) open while it sleeps.
                    libc::sleep(secs);
                }
                libc::_exit(0);
            }
            -1 => return Err("fork failed".into()),
            child => {
                let mut status = 0;
                libc::waitpid(child, &mut status, 0);
            }
        }
    }
    Ok(json!({"spawned": true}))
}

fn fd_probe(_: &Params) -> Result<Value, String> {
    let mut fds = BTreeMap::new();
    let dir = std::fs::read_dir("/proc/self/fd").map_err(|e| e.to_string())?;
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let target = std::fs::read_link(e.path())
            .map(|t| t.display().to_string())
            .unwrap_or_default();
        fds.insert(name, target);
    }
    Ok(json!({"fds": fds}))
}

fn read_env(_: &Params) -> Result<Value, String> {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    Ok(
        json!({"env": env, "cwd": std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default()}),
    )
}

fn read_parent(p: &Params) -> Result<Value, String> {
    // SAFETY: getppid has no preconditions.
    let ppid = unsafe { libc::getppid() };
    let mut pids = vec![i64::from(ppid)];
    if let Some(n) = p.get("pid").and_then(Value::as_i64) {
        pids.push(n);
    }
    let mut out = Map::new();
    for pid in pids {
        let environ = std::fs::read(format!("/proc/{pid}/environ"));
        let mem = std::fs::File::open(format!("/proc/{pid}/mem")).and_then(|mut f| {
            let mut b = [0u8; 16];
            f.read(&mut b)
        });
        // SAFETY: PTRACE_ATTACH with null addr/data; a success is detached at once.
        let attach =
            unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid as libc::pid_t, 0usize, 0usize) };
        let attach = if attach == 0 {
            // SAFETY: as above.
            unsafe { libc::ptrace(libc::PTRACE_DETACH, pid as libc::pid_t, 0usize, 0usize) };
            json!("ok")
        } else {
            json!(format!("error: {}", std::io::Error::last_os_error()))
        };
        out.insert(
            pid.to_string(),
            json!({
                "visible": std::path::Path::new(&format!("/proc/{pid}")).exists(),
                "environ": outcome(environ),
                "mem": outcome(mem),
                "ptrace": attach,
            }),
        );
    }
    Ok(json!({"ppid": ppid, "attempts": out}))
}

fn write_outside(p: &Params) -> Result<Value, String> {
    let mut out = Map::new();
    for path in strings(p, "paths") {
        out.insert(path.clone(), outcome(std::fs::write(&path, b"pwned")));
    }
    let inside = std::env::current_dir()
        .map_err(|e| e.to_string())?
        .join("inside.txt");
    out.insert("inside".into(), outcome(std::fs::write(&inside, b"fine")));
    Ok(
        json!({"results": out, "workdir": std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default()}),
    )
}

fn read_secrets(p: &Params) -> Result<Value, String> {
    let mut out = Map::new();
    for path in strings(p, "paths") {
        // At most 4 KiB: a device such as /dev/urandom never ends.
        let read = std::fs::File::open(&path).and_then(|f| {
            let mut buf = Vec::new();
            f.take(4096).read_to_end(&mut buf).map(|_| buf)
        });
        out.insert(path.clone(), outcome(read));
    }
    Ok(json!({"results": out}))
}

fn net_connect(p: &Params) -> Result<Value, String> {
    let mut out = Map::new();
    for addr in strings(p, "tcp") {
        let r = addr
            .parse()
            .map_err(|e: std::net::AddrParseError| std::io::Error::other(e))
            .and_then(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)));
        out.insert(format!("tcp {addr}"), outcome(r));
    }
    let udp = UdpSocket::bind("0.0.0.0:0").and_then(|s| s.send_to(b"x", "1.1.1.1:53"));
    out.insert("udp 1.1.1.1:53".into(), outcome(udp));
    let dns = "example.com:80".to_socket_addrs().map(|mut a| a.next());
    out.insert(
        "dns example.com".into(),
        match dns {
            Ok(Some(_)) => json!("ok"),
            Ok(None) => json!("error: no address"),
            Err(e) => json!(format!("error: {e}")),
        },
    );
    Ok(json!({"results": out}))
}

/// Writes `mb` MiB to stdout and to every other pipe descriptor above 2 (the private result
/// channel a compromised tool could find).
fn stdout_flood(p: &Params) -> Result<Value, String> {
    let mb = num(p, "mb", 100) as usize;
    let chunk = vec![b'A'; 1 << 20];
    let mut targets: Vec<i32> = vec![1];
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        for e in dir.flatten() {
            let fd: i32 = e.file_name().to_string_lossy().parse().unwrap_or(-1);
            let is_pipe = std::fs::read_link(e.path())
                .map(|t| t.to_string_lossy().starts_with("pipe:"))
                .unwrap_or(false);
            if fd > 2 && is_pipe {
                targets.push(fd);
            }
        }
    }
    for fd in targets {
        for _ in 0..mb {
            // SAFETY: write from a valid buffer to an integer descriptor.
            let n = unsafe { libc::write(fd, chunk.as_ptr().cast(), chunk.len()) };
            if n < 0 {
                break;
            }
        }
    }
    Ok(json!({"flooded_mb": mb}))
}

fn stderr_flood(p: &Params) -> Result<Value, String> {
    let mb = num(p, "mb", 10) as usize;
    let chunk = vec![b'E'; 1 << 20];
    let mut err = std::io::stderr();
    for _ in 0..mb {
        let _ = err.write_all(&chunk);
    }
    Ok(json!({"ok": true}))
}

fn print_garbage(_: &Params) -> Result<Value, String> {
    println!("this is not JSON {{{{");
    let _ = std::io::stdout().flush();
    Ok(json!({"ok": true}))
}

fn exit_signal(p: &Params) -> Result<Value, String> {
    // SIGKILL by default: Rust installs its own SIGSEGV handler, so a raised SIGSEGV returns.
    let sig = num(p, "signal", libc::SIGKILL as u64) as i32;
    // SAFETY: raising a signal at ourselves is the test.
    unsafe { libc::raise(sig) };
    Ok(json!({"survived": true}))
}

fn panic_tool(_: &Params) -> Result<Value, String> {
    panic!("adversarial panic with a secret path /home/owner/.lango")
}

fn file_size_bomb(p: &Params) -> Result<Value, String> {
    let mb = num(p, "mb", 100);
    let mut f = std::fs::File::create("big.bin").map_err(|e| e.to_string())?;
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..mb {
        f.write_all(&chunk).map_err(|e| e.to_string())?;
    }
    Ok(json!({"written_mb": mb}))
}

fn open_many_files(_: &Params) -> Result<Value, String> {
    let mut files = Vec::new();
    let err = loop {
        match std::fs::File::open("/dev/null") {
            Ok(f) => files.push(f),
            Err(e) => break e.to_string(),
        }
        if files.len() > 100_000 {
            break "no limit".into();
        }
    };
    Ok(json!({"opened": files.len(), "error": err}))
}

fn status_field(name: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{name}:"))
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default()
}

fn setuid_probe(_: &Params) -> Result<Value, String> {
    Ok(json!({
        "NoNewPrivs": status_field("NoNewPrivs"),
        "Seccomp": status_field("Seccomp"),
        "CapEff": status_field("CapEff"),
        // SAFETY: getuid has no preconditions.
        "uid": unsafe { libc::getuid() },
    }))
}

fn read_first(paths: &[&str]) -> String {
    paths
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn limits_probe(_: &Params) -> Result<Value, String> {
    let exec_tmp = std::fs::write("/tmp/x", b"#!/bin/sh\n").and_then(|_| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions("/tmp/x", std::fs::Permissions::from_mode(0o755))?;
        std::process::Command::new("/tmp/x").status()
    });
    Ok(json!({
        // SAFETY: getuid has no preconditions.
        "uid": unsafe { libc::getuid() },
        "memory_max": read_first(&["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]),
        "pids_max": read_first(&["/sys/fs/cgroup/pids.max", "/sys/fs/cgroup/pids/pids.max"]),
        "cpu_max": read_first(&["/sys/fs/cgroup/cpu.max", "/sys/fs/cgroup/cpu/cpu.cfs_quota_us"]),
        "write_etc": outcome(std::fs::write("/etc/x", b"x")),
        "write_tmp": outcome(std::fs::write("/tmp/y", b"y")),
        "exec_tmp": outcome(exec_tmp),
        "NoNewPrivs": status_field("NoNewPrivs"),
        "CapEff": status_field("CapEff"),
    }))
}

fn sleep(p: &Params) -> Result<Value, String> {
    std::thread::sleep(Duration::from_millis(num(p, "ms", 1000)));
    Ok(json!({"slept_ms": num(p, "ms", 1000)}))
}

/// The outcome of a raw syscall: `"ok"` or `"errno N"`.
fn sys_outcome(r: libc::c_long) -> Value {
    if r >= 0 {
        json!("ok")
    } else {
        json!(format!(
            "errno {}",
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
        ))
    }
}

/// Tries each syscall the seccomp filter refuses, with arguments the kernel itself would
/// accept where one exists, and reports what came back.
fn syscalls(_: &Params) -> Result<Value, String> {
    let mut out = Map::new();
    let mut put = |name: &str, r: libc::c_long| {
        out.insert(name.into(), sys_outcome(r));
    };
    // SAFETY (every block below): raw syscalls with null or valid pointers to locals; a
    // success is cleaned up (descriptors closed, clone children exit at once).
    unsafe {
        let mut params = [0u8; 120]; // struct io_uring_params
        put(
            "io_uring_setup",
            libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()),
        );
        put(
            "io_uring_enter",
            libc::syscall(libc::SYS_io_uring_enter, -1, 0, 0, 0, 0, 0),
        );
        put(
            "io_uring_register",
            libc::syscall(libc::SYS_io_uring_register, -1, 0, 0, 0),
        );
        put(
            "fsopen",
            libc::syscall(libc::SYS_fsopen, c"tmpfs".as_ptr(), 0),
        );
        put(
            "fsconfig",
            libc::syscall(libc::SYS_fsconfig, -1, 0, 0, 0, 0),
        );
        put("fsmount", libc::syscall(libc::SYS_fsmount, -1, 0, 0));
        put(
            "fspick",
            libc::syscall(libc::SYS_fspick, libc::AT_FDCWD, c".".as_ptr(), 0),
        );
        put(
            "open_tree",
            libc::syscall(
                libc::SYS_open_tree,
                libc::AT_FDCWD,
                c".".as_ptr(),
                1, /* OPEN_TREE_CLONE */
            ),
        );
        put(
            "move_mount",
            libc::syscall(libc::SYS_move_mount, -1, 0, -1, 0, 0),
        );
        put(
            "mount_setattr",
            libc::syscall(libc::SYS_mount_setattr, -1, 0, 0, 0, 0),
        );
        // UFFD_USER_MODE_ONLY: allowed to unprivileged callers by the kernel itself.
        put(
            "userfaultfd",
            libc::syscall(libc::SYS_userfaultfd, 1 | libc::O_CLOEXEC),
        );
        // Count this process's own user-space cycles: allowed by perf_event_paranoid <= 2.
        let mut attr = [0u8; 128];
        attr[0..4].copy_from_slice(&1u32.to_ne_bytes()); // PERF_TYPE_SOFTWARE
        attr[4..8].copy_from_slice(&128u32.to_ne_bytes()); // size
        attr[8..16].copy_from_slice(&0u64.to_ne_bytes()); // PERF_COUNT_SW_CPU_CLOCK
        attr[40..48].copy_from_slice(&(1u64 << 5 | 1u64 << 6).to_ne_bytes()); // exclude_kernel|hv
        put(
            "perf_event_open",
            libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), 0, -1, -1, 0),
        );
        put(
            "personality(PER_BSD)",
            libc::syscall(libc::SYS_personality, 6),
        );
        put(
            "personality(PER_LINUX)",
            libc::syscall(libc::SYS_personality, 0),
        );
        put(
            "unshare(CLONE_NEWUSER)",
            libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER),
        );
        let r = libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        );
        if r == 0 {
            libc::_exit(0);
        }
        put("clone(CLONE_NEWUSER)", r);
        let mut args = [0u64; 11]; // struct clone_args, flags = CLONE_NEWUSER
        args[0] = libc::CLONE_NEWUSER as u64;
        args[4] = libc::SIGCHLD as u64;
        let r = libc::syscall(libc::SYS_clone3, args.as_mut_ptr(), 88usize);
        if r == 0 {
            libc::_exit(0);
        }
        put("clone3", r);
        let ns = std::fs::File::open("/proc/self/ns/net");
        let fd = ns
            .as_ref()
            .map(std::os::fd::AsRawFd::as_raw_fd)
            .unwrap_or(-1);
        put("setns", libc::syscall(libc::SYS_setns, fd, 0));
        // An ordinary fork still works (clone without CLONE_NEWUSER).
        match libc::fork() {
            0 => libc::_exit(0),
            -1 => put("fork", -1),
            pid => {
                libc::waitpid(pid, std::ptr::null_mut(), 0);
                put("fork", 0);
            }
        }
    }
    Ok(json!({"results": out}))
}

/// `getpid` with the x32 bit: a seccomp filter without the x32 check lets it through to the
/// kernel (which answers ENOSYS when it has no x32 ABI).
fn x32_syscall(_: &Params) -> Result<Value, String> {
    // SAFETY: getpid takes no arguments.
    let r = unsafe { libc::syscall(0x4000_0000 | libc::SYS_getpid) };
    Ok(json!({"x32_getpid": sys_outcome(r)}))
}

/// `getpid` through the i386 entry (`int 0x80`): another audit architecture.
fn i386_syscall(_: &Params) -> Result<Value, String> {
    #[cfg(target_arch = "x86_64")]
    {
        let mut eax: u32 = 20; // __NR_getpid on i386
        // SAFETY: int 0x80 with eax = getpid reads and writes no memory; it only clobbers the
        // registers named here.
        unsafe {
            std::arch::asm!("int 0x80", inout("eax") eax, options(nostack));
        }
        Ok(json!({"i386_getpid": eax}))
    }
    #[cfg(not(target_arch = "x86_64"))]
    Err("i386 syscalls exist only on x86_64".into())
}

/// What the tool sees of the host: `/proc/keys`, whether `/proc/sys` opens for writing
/// (nothing is written), its uid map and its pid as the host numbers it.
fn host_view(p: &Params) -> Result<Value, String> {
    let open_sys = std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/sys/kernel/core_pattern")
        .map(|_| ());
    let hold = num(p, "hold_ms", 0);
    if hold > 0 {
        set_comm(c"adv_host_view");
        std::thread::sleep(Duration::from_millis(hold));
    }
    Ok(json!({
        "proc_keys": std::fs::read_to_string("/proc/keys").unwrap_or_else(|e| format!("error: {e}")),
        "proc_sys_write": outcome(open_sys),
        "uid_map": std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default(),
    }))
}
