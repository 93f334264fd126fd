//! Worker mode: the process the executors start for one call (spec §2.2.2).
//!
//! A binary that embeds tools calls [`is_worker_invocation`] first thing in `main`, before any
//! configuration, database, keyring or logging, and hands over to [`main`]:
//!
//! ```no_run
//! // First thing in `main`:
//! if lango_sandbox::worker::is_worker_invocation() {
//!     lango_sandbox::worker::main(&lango_sandbox::ToolRegistry::builtin());
//! }
//! // ... the normal program
//! ```
//!
//! The worker keeps the tool's own writes off the result channel: it moves its stdout to a
//! private descriptor and points descriptor 1 at stderr, so whatever a tool prints lands in
//! the (local-only) stderr capture.

use std::{
    fs::File,
    io::{Read, Write},
    process::{Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use serde_json::{Map, Value};

use crate::{
    protocol::{
        CommandSpec, EXIT_PANIC, EXIT_PROTOCOL, MAX_WORKER_REQUEST_BYTES, WORKER_FLAG,
        WorkerRequest, WorkerResult, wrap_output,
    },
    registry::{ToolKind, ToolRegistry},
};

/// Whether this process was started as a worker: exactly one argument, `--sandbox-worker`
/// (W-30: the flag anywhere else does not count).
pub fn is_worker_invocation() -> bool {
    let mut args = std::env::args_os().skip(1);
    matches!((args.next(), args.next()), (Some(a), None) if a == WORKER_FLAG)
}

/// Runs the worker with `registry` and exits the process with the protocol's exit code.
pub fn main(registry: &ToolRegistry) -> ! {
    let code = run(registry);
    std::process::exit(code)
}

static RESULT: OnceLock<File> = OnceLock::new();

fn write_result(r: &WorkerResult) {
    if let Some(mut f) = RESULT.get() {
        let _ = f.write_all(&r.to_line());
        let _ = f.flush();
    }
}

/// Moves stdout to a private close-on-exec descriptor and points descriptor 1 at stderr.
fn take_result_channel() -> Result<(), String> {
    #[cfg(unix)]
    {
        use nix::fcntl::{FcntlArg, FdFlag, fcntl};
        let fd = nix::unistd::dup(std::io::stdout()).map_err(|e| format!("dup stdout: {e}"))?;
        fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(|e| format!("cloexec: {e}"))?;
        nix::unistd::dup2_stdout(std::io::stderr()).map_err(|e| format!("dup2: {e}"))?;
        let _ = RESULT.set(File::from(fd));
        Ok(())
    }
    #[cfg(not(unix))]
    {
        Err("the worker runs only on unix".into())
    }
}

/// Runs one call and returns the exit code: 0 (result written), 1 (protocol error, JSON error
/// written), 70 (panic).
pub fn run(registry: &ToolRegistry) -> i32 {
    if let Err(e) = take_result_channel() {
        let _ = writeln!(std::io::stderr(), "lango worker: {e}");
        return EXIT_PROTOCOL;
    }
    std::panic::set_hook(Box::new(|_| {
        write_result(&WorkerResult::err("worker panic"));
        std::process::exit(EXIT_PANIC);
    }));
    // Whatever the launcher added (bubblewrap's PWD, Docker's HOSTNAME) goes before any tool.
    crate::confine::keep_only_worker_env();
    // A command tool runs as the worker's uid: it must not read or write the worker's memory
    // through /proc/<pid>/mem or attach to it (a non-dumpable process needs CAP_SYS_PTRACE,
    // which nothing in the sandbox has). The tool's own exec makes it dumpable again, which
    // only exposes the tool to itself.
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        write_result(&WorkerResult::err(format!(
            "isolation setup failed: dumpable: {e}"
        )));
        return EXIT_PROTOCOL;
    }
    let req = match read_request() {
        Ok(r) => r,
        Err(e) => {
            write_result(&WorkerResult::err(format!("decode request: {e}")));
            return EXIT_PROTOCOL;
        }
    };
    if let Some(c) = &req.confine
        && let Err(e) = crate::confine::apply(c)
    {
        write_result(&WorkerResult::err(format!("isolation setup failed: {e}")));
        return EXIT_PROTOCOL;
    }
    let params = match req.params {
        Value::Object(m) => m,
        Value::Null => Map::new(),
        _ => {
            write_result(&WorkerResult::err(
                "decode request: params must be an object",
            ));
            return EXIT_PROTOCOL;
        }
    };
    if req.tool_name == crate::protocol::SELF_CHECK_TOOL && req.command.is_none() {
        write_result(&WorkerResult::ok(self_check(&params)));
        return 0;
    }
    let outcome = match (&req.command, registry.get(&req.tool_name).map(|t| &t.kind)) {
        (Some(cmd), _) => run_command(cmd, &params, req.timeout_ms),
        (None, Some(ToolKind::Function(f))) => Ok(f(&params)),
        (None, Some(ToolKind::Command(c))) => run_command(
            &CommandSpec {
                program: c.program.display().to_string(),
                args: c.args.clone(),
            },
            &params,
            req.timeout_ms,
        ),
        (None, None) => {
            write_result(&WorkerResult::err(format!(
                "tool \"{}\" not registered in worker",
                req.tool_name
            )));
            return EXIT_PROTOCOL;
        }
    };
    match outcome {
        Ok(Ok(v)) => write_result(&WorkerResult::ok(wrap_output(v))),
        Ok(Err(msg)) => write_result(&WorkerResult::err(if msg.is_empty() {
            "tool failed".to_owned()
        } else {
            msg
        })),
        Err(code) => return code,
    }
    0
}

fn read_request() -> Result<WorkerRequest, String> {
    let mut buf = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_WORKER_REQUEST_BYTES as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("read stdin: {e}"))?;
    if buf.len() > MAX_WORKER_REQUEST_BYTES {
        return Err(format!(
            "request larger than {MAX_WORKER_REQUEST_BYTES} bytes"
        ));
    }
    let mut it = serde_json::Deserializer::from_slice(&buf).into_iter::<WorkerRequest>();
    match it.next() {
        Some(Ok(r)) => Ok(r),
        Some(Err(e)) => Err(e.to_string()),
        None => Err("empty request".into()),
    }
}

/// Output a command tool may write before it is cut off.
const MAX_COMMAND_OUTPUT: usize = 1 << 20;

/// Runs a command tool: params as JSON on stdin, a JSON value expected on stdout, stderr passed
/// through to the worker's (local-only) stderr. `Ok(Err(msg))` is a tool-level error. `Err(code)`
/// means the child was killed by a limit signal; the worker then exits with `128 + signal` so
/// the parent classifies it as it would the worker's own death.
fn run_command(
    cmd: &CommandSpec,
    params: &Map<String, Value>,
    timeout_ms: Option<u64>,
) -> Result<Result<Value, String>, i32> {
    let input = serde_json::to_vec(params).unwrap_or_default();
    let mut child = match Command::new(&cmd.program)
        .args(&cmd.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return Ok(Err(format!("cannot start command: {}", e.kind()))),
    };
    let writer = child.stdin.take().map(|mut stdin| {
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        })
    });
    let mut out = Vec::new();
    let read = child.stdout.take().map(|s| {
        s.take(MAX_COMMAND_OUTPUT as u64 + 1)
            .read_to_end(&mut out)
            .is_ok()
    });
    let deadline = timeout_ms.map(|ms| Instant::now() + Duration::from_millis(ms));
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if deadline.is_some_and(|d| Instant::now() >= d) => {
                let _ = child.kill();
                let _ = child.wait();
                return Ok(Err("command timed out".into()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Ok(Err(format!("wait: {}", e.kind()))),
        }
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal()
            && (sig == libc::SIGXCPU || sig == libc::SIGXFSZ)
        {
            return Err(128 + sig);
        }
    }
    if read != Some(true) || out.len() > MAX_COMMAND_OUTPUT {
        return Ok(Err("command output too large or unreadable".into()));
    }
    if !status.success() {
        return Ok(Err(match status.code() {
            Some(c) => format!("command exited with status {c}"),
            None => "command was killed".into(),
        }));
    }
    let text = String::from_utf8_lossy(&out);
    if text.trim().is_empty() {
        return Ok(Ok(Value::Object(Map::new())));
    }
    match serde_json::from_str::<Value>(text.trim()) {
        Ok(v) => Ok(Ok(v)),
        Err(_) => Ok(Err("command output is not JSON".into())),
    }
}

/// Whether `path` is a tmpfs mount point (from /proc/self/mountinfo).
fn is_tmpfs(path: &str) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|m| {
        m.lines().any(|l| {
            let mount_point = l.split(' ').nth(4);
            let fstype = l.split(" - ").nth(1).and_then(|r| r.split(' ').next());
            mount_point == Some(path) && fstype == Some("tmpfs")
        })
    })
}

/// The isolation self-checks of `p2p sandbox test --isolation` (spec §5.2), run inside the
/// sandbox after confinement: each entry is `true` when the isolation held.
fn self_check(params: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    let mut put = |k: &str, ok: bool| {
        out.insert(k.into(), Value::Bool(ok));
    };
    let keys: Vec<String> = std::env::vars_os()
        .map(|(k, _)| k.to_string_lossy().into_owned())
        .collect();
    put(
        "empty environment",
        keys.len() == 4
            && crate::confine::WORKER_ENV
                .iter()
                .all(|w| keys.iter().any(|k| k == w)),
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let cwd = std::env::current_dir().ok();
        let container = params.get("mode").and_then(Value::as_str) == Some("container");
        let home_is_cwd = std::env::var_os("HOME").map(std::path::PathBuf::from) == cwd;
        let private = if container {
            // A fresh tmpfs of this container alone.
            cwd.as_deref() == Some(std::path::Path::new("/tmp")) && is_tmpfs("/tmp")
        } else {
            cwd.as_ref()
                .and_then(|d| std::fs::metadata(d).ok())
                .is_some_and(|m| {
                    m.permissions().mode() & 0o077 == 0 && m.uid() == nix::unistd::getuid().as_raw()
                })
        };
        put("private workdir", private && home_is_cwd);
        let connect = |ip: [u8; 4], port| {
            std::net::TcpStream::connect_timeout(
                &std::net::SocketAddr::from((ip, port)),
                Duration::from_millis(500),
            )
            .is_err()
        };
        put(
            "network denied",
            connect([1, 1, 1, 1], 53) && connect([8, 8, 8, 8], 53),
        );
        let outside: &[&str] = if container {
            &[
                "/lango-selfcheck",
                "/etc/lango-selfcheck",
                "/usr/lango-selfcheck",
            ]
        } else {
            &[
                "/lango-selfcheck",
                "/tmp/lango-selfcheck",
                "/usr/lango-selfcheck",
            ]
        };
        put(
            "write outside workdir denied",
            outside.iter().all(|p| std::fs::write(p, b"x").is_err()),
        );
        let node = params.get("nodePid").and_then(Value::as_u64).unwrap_or(0);
        put(
            "parent /proc not visible",
            node > 0
                && std::fs::read(format!("/proc/{node}/environ")).is_err()
                && std::fs::read(format!("/proc/{node}/cmdline")).map_or(true, |c| c.is_empty()),
        );
        use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit};
        let finite = |r| getrlimit(r).is_ok_and(|(soft, _)| soft != RLIM_INFINITY);
        // A subprocess is bounded by rlimits; a container by its cgroup (v2 or v1 files).
        let cgroup_limited = |files: &[&str]| {
            files.iter().any(|f| {
                std::fs::read_to_string(f).is_ok_and(|v| {
                    let v = v.trim();
                    v != "max" && v.parse::<u64>().is_ok_and(|n| n < 1 << 60)
                })
            })
        };
        put(
            "memory limit enforced",
            finite(Resource::RLIMIT_AS)
                || cgroup_limited(&[
                    "/sys/fs/cgroup/memory.max",
                    "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                ]),
        );
        put(
            "process limit enforced",
            if container {
                cgroup_limited(&["/sys/fs/cgroup/pids.max", "/sys/fs/cgroup/pids/pids.max"])
            } else {
                finite(Resource::RLIMIT_NPROC)
            },
        );
    }
    out
}
