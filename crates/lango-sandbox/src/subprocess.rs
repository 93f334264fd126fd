//! The subprocess executor: one worker process per call under OS isolation (spec §2.2.2).
//!
//! On Linux the worker runs inside new user, mount, pid, net, ipc and uts namespaces set up by
//! bubblewrap (`bwrap`), with a read-only view of the system directories, the worker binary and
//! its private workdir. Before exec the child leads a new session, gets `SIGKILL` when the
//! node dies, sets no-new-privileges, umask 077 and the rlimits, and marks every descriptor
//! from 3 up close-on-exec. The worker then applies Landlock, the seccomp deny list and the
//! process cap to itself before any tool code runs. At the deadline the whole process group
//! (and with it the pid namespace) is killed.
//!
//! A node running as root never runs a tool as host root: each call first drops to its own
//! unprivileged host uid from [`UidRange`](crate::UidRange) (see [`crate::uids`]), so the
//! kernel's process cap applies and one call's fork bomb cannot stop another call, the node or
//! the host from forking. Inside, `/proc/sys` is read-only, the session keyring is a fresh
//! empty one, and no nested user namespace can be made.

use std::{
    ffi::OsString,
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::{Arc, OnceLock},
    time::Duration,
};

use async_trait::async_trait;
use nix::{
    sys::{
        resource::Resource,
        signal::{Signal, killpg},
    },
    unistd::Pid,
};
use serde_json::{Map, Value};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    process::Command,
    time::Instant,
};

use crate::{
    Error,
    config::SandboxConfig,
    executor::Executor,
    outcome::ExecError,
    protocol::{
        CommandSpec, Confinement, EXIT_PANIC, EXIT_PROTOCOL, STDERR_KEEP_BYTES, WorkerRequest,
        decode_result,
    },
    registry::{ToolKind, ToolRegistry},
    uids::{UidLease, UidPool, UidRange, reachable_by_others},
};

/// Settings of the subprocess executor.
#[derive(Debug, Clone)]
pub struct SubprocessOptions {
    /// The worker binary (a program whose `main` calls [`crate::worker::main`]).
    pub worker: PathBuf,
    /// Deadline per call.
    pub timeout: Duration,
    /// `RLIMIT_AS` in MiB.
    pub max_memory_mb: u64,
    /// Cap of the result channel.
    pub max_output_bytes: usize,
    /// Process cap inside the sandbox.
    pub max_processes: u64,
    /// `RLIMIT_NOFILE`.
    pub max_open_files: u64,
    /// `RLIMIT_FSIZE` in MiB.
    pub max_file_size_mb: u64,
    /// Refuse to run without OS isolation.
    pub require_os_isolation: bool,
    /// Where per-call workdirs are created (default `$XDG_RUNTIME_DIR/lango-sbx`, else the
    /// system temp directory; for a root node `/run/lango-sbx`, which the calls' uids can
    /// traverse).
    pub sandbox_root: Option<PathBuf>,
    /// Host uids a root node runs calls as, one per running call.
    pub uid_range: UidRange,
}

impl SubprocessOptions {
    /// From the node's sandbox settings.
    pub fn from_config(cfg: &SandboxConfig, worker: PathBuf) -> Self {
        Self {
            worker,
            timeout: cfg.timeout(),
            max_memory_mb: cfg.subprocess_memory_mb(),
            max_output_bytes: cfg.max_output_bytes,
            max_processes: cfg.max_processes,
            max_open_files: cfg.max_open_files,
            max_file_size_mb: cfg.max_file_size_mb,
            require_os_isolation: cfg.require_os_isolation,
            sandbox_root: None,
            uid_range: cfg.uid_range,
        }
    }
}

/// What OS isolation this machine offers, probed once per process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsolationReport {
    /// bubblewrap and the namespaces it creates, or why not.
    pub namespaces: Result<PathBuf, String>,
    /// The kernel's Landlock ABI, or why none.
    pub landlock: Result<u32, String>,
    /// Seccomp filters, or why not.
    pub seccomp: Result<(), String>,
    /// Per-call cgroups, or why not.
    pub cgroup: Result<(), String>,
}

impl IsolationReport {
    /// Probes this machine. A probe that found the namespaces is kept for the life of the
    /// process; a failing one is not, so a passing shortage (no process slot for bubblewrap at
    /// that moment) is probed again next time.
    pub fn probe() -> Self {
        static CACHE: OnceLock<IsolationReport> = OnceLock::new();
        if let Some(r) = CACHE.get() {
            return r.clone();
        }
        let r = probe_uncached();
        if r.namespaces.is_ok() {
            let _ = CACHE.set(r.clone());
        }
        r
    }

    /// Whether the isolation `requireOsIsolation` asks for is there: namespaces on Linux.
    pub fn sufficient(&self) -> bool {
        self.namespaces.is_ok()
    }

    /// The layers a call gets, e.g. `namespaces+landlock+seccomp+rlimits`.
    pub fn backends(&self) -> String {
        let mut v = Vec::new();
        if self.namespaces.is_ok() {
            v.push("namespaces");
        }
        if self.landlock.is_ok() {
            v.push("landlock");
        }
        if self.seccomp.is_ok() {
            v.push("seccomp");
        }
        if self.cgroup.is_ok() {
            v.push("cgroup");
        }
        v.push("rlimits");
        v.join("+")
    }

    /// One line per layer: `namespaces: yes (/usr/bin/bwrap)`, `landlock: no (…)`.
    pub fn details(&self) -> Vec<(&'static str, String)> {
        fn show<T>(r: &Result<T, String>, ok: impl Fn(&T) -> String) -> String {
            match r {
                Ok(v) => format!("yes ({})", ok(v)),
                Err(e) => format!("no ({e})"),
            }
        }
        vec![
            (
                "user namespaces",
                show(&self.namespaces, |p| format!("bubblewrap {}", p.display())),
            ),
            ("landlock", show(&self.landlock, |abi| format!("ABI {abi}"))),
            ("seccomp", show(&self.seccomp, |_| "deny list".into())),
            ("cgroup delegation", show(&self.cgroup, |_| "v2".into())),
        ]
    }
}

const BWRAP_CANDIDATES: &[&str] = &["/usr/bin/bwrap", "/usr/local/bin/bwrap", "/bin/bwrap"];
const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];
const ETC_FILES: &[&str] = &["/etc/ld.so.cache", "/etc/localtime"];
/// The uid and gid a tool gets inside the user namespace when the node runs as root.
const SANDBOX_ID: &str = "65534";

fn probe_uncached() -> IsolationReport {
    IsolationReport {
        namespaces: probe_namespaces(),
        landlock: probe_landlock(),
        seccomp: probe_seccomp(),
        cgroup: probe_cgroup(),
    }
}

fn probe_namespaces() -> Result<PathBuf, String> {
    if !cfg!(target_os = "linux") {
        return Err("Linux only".into());
    }
    let bwrap = BWRAP_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| "bubblewrap (bwrap) is not installed; apt install bubblewrap".to_owned())?;
    let truth = ["/usr/bin/true", "/bin/true"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or("no /usr/bin/true to probe with")?;
    let dir = std::env::temp_dir().join(format!("lango-sbx-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("probe dir: {e}"))?;
    let args = bwrap_args(&bwrap, &dir, std::slice::from_ref(&truth));
    let mut cmd = std::process::Command::new(&bwrap);
    if nix::unistd::geteuid().is_root() {
        // A root node runs bubblewrap as an unprivileged uid: probe the same way, with a uid
        // of the default range (any unprivileged uid answers whether that works here).
        use std::os::unix::process::CommandExt;
        let id = UidRange::DEFAULT.first;
        cmd.uid(id).gid(id);
    }
    let out = cmd
        .args(&args)
        .arg(&truth)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    match out {
        Ok(o) if o.status.success() => Ok(bwrap),
        Ok(o) => Err(format!(
            "bubblewrap cannot create namespaces here: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run {}: {e}", bwrap.display())),
    }
}

#[allow(unsafe_code)]
fn probe_landlock() -> Result<u32, String> {
    #[cfg(target_os = "linux")]
    {
        const LANDLOCK_CREATE_RULESET_VERSION: libc::c_long = 1;
        // SAFETY: landlock_create_ruleset with a null attribute pointer, size 0 and the VERSION
        // flag only queries the ABI version; it reads no memory and creates no descriptor.
        let v = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                std::ptr::null::<libc::c_void>(),
                0usize,
                LANDLOCK_CREATE_RULESET_VERSION,
            )
        };
        if v > 0 {
            return Ok(v as u32);
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EOPNOTSUPP) => Err("built into the kernel but not enabled".into()),
            Some(libc::ENOSYS) => Err("not in this kernel".into()),
            _ => Err("unavailable".into()),
        }
    }
    #[cfg(not(target_os = "linux"))]
    Err("Linux only".into())
}

fn probe_seccomp() -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
    if status.lines().any(|l| l.starts_with("Seccomp:")) {
        Ok(())
    } else {
        Err("the kernel has no seccomp".into())
    }
}

fn probe_cgroup() -> Result<(), String> {
    if !Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        return Err("cgroup v2 is not mounted (this host uses cgroup v1)".into());
    }
    Err("per-call cgroups are not used; the rlimits and the pid namespace bound the call".into())
}

/// bubblewrap's arguments for a call whose writable directory is `workdir` and which needs
/// the files in `extra` (the worker, a command tool's program) visible read-only.
/// Whether this bubblewrap knows `--disable-userns` (0.8 and later), asked once.
fn supports_disable_userns(bwrap: &Path) -> bool {
    static CACHE: OnceLock<bool> = OnceLock::new();
    *CACHE.get_or_init(|| {
        std::process::Command::new(bwrap)
            .arg("--help")
            .env_clear()
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|o| contains(&o.stdout, b"--disable-userns"))
    })
}

fn bwrap_args(bwrap: &Path, workdir: &Path, extra: &[PathBuf]) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
    push(&[
        "--unshare-user",
        "--unshare-pid",
        "--unshare-net",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--cap-drop",
        "ALL",
        "--hostname",
        "sandbox",
    ]);
    if nix::unistd::geteuid().is_root() {
        push(&["--uid", SANDBOX_ID, "--gid", SANDBOX_ID]);
    }
    // No nested user namespace (user.max_user_namespaces = 0 inside). An older bubblewrap
    // lacks the option; seccomp refuses CLONE_NEWUSER either way.
    if supports_disable_userns(bwrap) {
        push(&["--disable-userns"]);
    }
    for d in SYSTEM_DIRS {
        match std::fs::symlink_metadata(d) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Ok(target) = std::fs::read_link(d) {
                    a.push("--symlink".into());
                    a.push(target.into_os_string());
                    a.push((*d).into());
                }
            }
            Ok(m) if m.is_dir() => {
                a.extend(["--ro-bind".into(), (*d).into(), (*d).into()]);
            }
            _ => {}
        }
    }
    for f in ETC_FILES {
        a.extend(["--ro-bind-try".into(), (*f).into(), (*f).into()]);
    }
    for p in extra {
        if !SYSTEM_DIRS.iter().any(|d| p.starts_with(d)) {
            a.extend([
                "--ro-bind".into(),
                p.clone().into_os_string(),
                p.clone().into_os_string(),
            ]);
        }
    }
    a.extend([
        "--proc".into(),
        "/proc".into(),
        // Kernel tunables stay read-only whatever uid the tool has (core_pattern and friends).
        "--ro-bind".into(),
        "/proc/sys".into(),
        "/proc/sys".into(),
        "--dev".into(),
        "/dev".into(),
    ]);
    a.extend([
        "--bind".into(),
        workdir.as_os_str().to_owned(),
        workdir.as_os_str().to_owned(),
        "--chdir".into(),
        workdir.as_os_str().to_owned(),
        "--remount-ro".into(),
        "/".into(),
        "--".into(),
    ]);
    a
}

/// Paths the worker's Landlock rules let it read besides the workdir.
fn read_paths(extra: &[PathBuf]) -> Vec<String> {
    let mut v: Vec<String> = SYSTEM_DIRS
        .iter()
        .chain(ETC_FILES)
        .map(|s| (*s).to_owned())
        .collect();
    v.push("/proc".into());
    v.extend(extra.iter().map(|p| p.display().to_string()));
    v
}

/// Runs each call in a fresh isolated worker process.
pub struct SubprocessExecutor {
    opts: SubprocessOptions,
    registry: Arc<ToolRegistry>,
    report: IsolationReport,
    root: PathBuf,
    /// The uids calls run as, when the node is root.
    uids: Option<Arc<UidPool>>,
    /// A copy of the worker made for the calls' uids (removed on drop).
    worker_copy: Option<PathBuf>,
}

impl Drop for SubprocessExecutor {
    fn drop(&mut self) {
        if let Some(copy) = &self.worker_copy {
            let _ = std::fs::remove_file(copy);
        }
    }
}

impl SubprocessExecutor {
    /// Probes the machine and builds the executor. With `require_os_isolation` and no
    /// namespaces this is [`Error::IsolationUnavailable`]: the node then has no sandbox
    /// executor and refuses remote calls. Also marks the calling process non-dumpable.
    pub fn new(opts: SubprocessOptions, registry: Arc<ToolRegistry>) -> Result<Self, Error> {
        Self::with_isolation(opts, registry, IsolationReport::probe())
    }

    /// As [`new`](Self::new) with a given probe result (tests force a failing probe).
    pub fn with_isolation(
        opts: SubprocessOptions,
        registry: Arc<ToolRegistry>,
        report: IsolationReport,
    ) -> Result<Self, Error> {
        if opts.require_os_isolation && !report.sufficient() {
            let why = report.namespaces.clone().err().unwrap_or_default();
            return Err(Error::IsolationUnavailable(why));
        }
        // Same-user processes (a tool among them) must not read this process's memory or
        // environment through /proc or attach to it (W-3).
        #[cfg(target_os = "linux")]
        nix::sys::prctl::set_dumpable(false).map_err(|e| {
            Error::IsolationUnavailable(format!("cannot make the node non-dumpable: {e}"))
        })?;
        let worker = std::fs::canonicalize(&opts.worker)
            .map_err(|e| Error::Config(format!("worker binary {}: {e}", opts.worker.display())))?;
        let as_root = nix::unistd::geteuid().is_root();
        let uids = if as_root {
            let locks = uid_lock_dir();
            create_private_dir(&locks, 0o700).map_err(|e| {
                Error::Config(format!("uid lock directory {}: {e}", locks.display()))
            })?;
            Some(UidPool::new(opts.uid_range, Some(locks)).map_err(Error::Config)?)
        } else {
            None
        };
        let root = match &opts.sandbox_root {
            Some(r) => r.clone(),
            None => default_root(as_root),
        };
        // The calls' uids must reach their workdirs: the root is traversable (0711) but not
        // listable by them, and so must be every directory above it.
        let mode = if as_root { 0o711 } else { 0o700 };
        create_private_dir(&root, mode)
            .map_err(|e| Error::Config(format!("sandbox root {}: {e}", root.display())))?;
        if as_root {
            reachable_by_others(&root, 0o001).map_err(|e| {
                Error::Config(format!(
                    "sandbox root {}: the sandbox uids cannot reach it: {e}",
                    root.display()
                ))
            })?;
            for tool in registry.command_programs() {
                reachable_by_others(tool, 0o001).map_err(|e| {
                    Error::Config(format!(
                        "command tool program {}: the sandbox uids cannot run it: {e}",
                        tool.display()
                    ))
                })?;
            }
        }
        // A worker the calls' uids cannot reach (a build under /root) is copied next to the
        // workdirs, owned by root and not writable by them.
        let worker_copy = if as_root && reachable_by_others(&worker, 0o005).is_err() {
            Some(copy_worker(&worker, &root).map_err(|e| {
                Error::Config(format!(
                    "copy the worker {} for the sandbox uids: {e}",
                    worker.display()
                ))
            })?)
        } else {
            None
        };
        let worker = worker_copy.clone().unwrap_or(worker);
        Ok(Self {
            opts: SubprocessOptions { worker, ..opts },
            registry,
            report,
            root,
            uids,
            worker_copy,
        })
    }

    /// The host uids calls run as: `Some` when the node is root.
    pub fn uid_range(&self) -> Option<UidRange> {
        self.uids.as_ref().map(|p| p.range())
    }

    /// The probe result this executor runs with.
    pub fn report(&self) -> &IsolationReport {
        &self.report
    }

    /// The settings.
    pub fn options(&self) -> &SubprocessOptions {
        &self.opts
    }

    fn command(&self, workdir: &Path, extra: &[PathBuf], run_as: Option<u32>) -> Command {
        let mut cmd = match &self.report.namespaces {
            Ok(bwrap) => {
                let mut c = Command::new(bwrap);
                c.args(bwrap_args(bwrap, workdir, extra));
                c.arg(&self.opts.worker);
                c
            }
            Err(_) => Command::new(&self.opts.worker),
        };
        cmd.arg(crate::protocol::WORKER_FLAG)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", workdir)
            .env("TMPDIR", workdir)
            .env("LANG", "C.UTF-8")
            .current_dir(workdir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mib = 1024 * 1024;
        let cpu = self.opts.timeout.as_secs() + u64::from(self.opts.timeout.subsec_nanos() > 0) + 1;
        let limits = [
            (
                Resource::RLIMIT_AS,
                self.opts.max_memory_mb * mib,
                self.opts.max_memory_mb * mib,
            ),
            (Resource::RLIMIT_CPU, cpu, cpu + 1),
            (
                Resource::RLIMIT_NOFILE,
                self.opts.max_open_files,
                self.opts.max_open_files,
            ),
            (
                Resource::RLIMIT_FSIZE,
                self.opts.max_file_size_mb * mib,
                self.opts.max_file_size_mb * mib,
            ),
            (Resource::RLIMIT_CORE, 0, 0),
            (Resource::RLIMIT_MEMLOCK, 0, 0),
        ];
        crate::prelaunch::install(&mut cmd, limits, run_as);
        cmd
    }

    async fn run(
        &self,
        tool: &str,
        params: Map<String, Value>,
        command: Option<CommandSpec>,
    ) -> Result<Map<String, Value>, ExecError> {
        let lease: Option<UidLease> = match &self.uids {
            Some(pool) => Some(
                pool.lease()
                    .map_err(|e| ExecError::failure(tool, format!("sandbox uid: {e}")))?
                    .ok_or_else(|| ExecError::NotAvailable {
                        tool: tool.into(),
                        reason: "every sandbox uid is in use by a running call".into(),
                    })?,
            ),
            None => None,
        };
        let run_as = lease.as_ref().map(UidLease::uid);
        let workdir = Workdir::create(&self.root, run_as)
            .map_err(|e| ExecError::failure(tool, format!("workdir setup: {e}")))?;
        let mut extra = vec![self.opts.worker.clone()];
        if let Some(c) = &command {
            extra.push(PathBuf::from(&c.program));
        }
        let timeout = self.opts.timeout;
        let request = WorkerRequest {
            version: 0,
            tool_name: tool.to_owned(),
            params: Value::Object(params),
            timeout_ms: Some(timeout.as_millis() as u64),
            command,
            confine: Some(Confinement {
                workdir: workdir.path.display().to_string(),
                read_paths: read_paths(&extra),
                // Counted per user namespace, or per call uid; without either it would count
                // every process of the node's uid.
                max_processes: if self.report.namespaces.is_ok() || run_as.is_some() {
                    self.opts.max_processes
                } else {
                    0
                },
                landlock: self.report.landlock.is_ok(),
                seccomp: self.report.seccomp.is_ok(),
            }),
        };
        let bytes = serde_json::to_vec(&request)
            .map_err(|e| ExecError::failure(tool, format!("encode request: {e}")))?;
        let mut child = self
            .command(&workdir.path, &extra, run_as)
            .spawn()
            .map_err(|e| ExecError::failure(tool, format!("spawn worker: {e}")))?;
        let group = GroupKill(child.id().map(|id| Pid::from_raw(id as i32)));
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(ExecError::failure(tool, "worker pipes missing"));
        };
        let writer = tokio::spawn(async move {
            // A worker that refuses the request closes its stdin early: not an error here.
            let _ = stdin.write_all(&bytes).await;
            let _ = stdin.shutdown().await;
        });
        let mut out_task = tokio::spawn(read_capped(stdout, self.opts.max_output_bytes));
        let err_task = tokio::spawn(read_keep(stderr, STDERR_KEEP_BYTES));
        let deadline = Instant::now() + timeout;

        let mut output: Option<Result<Vec<u8>, ()>> = None;
        let end = loop {
            tokio::select! {
                r = tokio::time::timeout_at(deadline, child.wait()) => break match r {
                    Ok(Ok(s)) => End::Exited(s),
                    Ok(Err(e)) => End::WaitFailed(e.to_string()),
                    Err(_) => End::Timeout,
                },
                r = &mut out_task, if output.is_none() => {
                    let r = r.unwrap_or(Err(()));
                    let too_large = r.is_err();
                    output = Some(r);
                    if too_large {
                        break End::TooLarge;
                    }
                }
            }
        };
        // Everything the call started goes, whatever the outcome.
        group.kill();
        writer.abort();
        let drain = Duration::from_secs(1);
        if !matches!(end, End::Exited(_)) {
            let _ = tokio::time::timeout(drain, child.wait()).await;
        }
        let output = match output {
            Some(o) => o,
            None => match tokio::time::timeout(drain, &mut out_task).await {
                Ok(Ok(o)) => o,
                _ => {
                    out_task.abort();
                    Err(())
                }
            },
        };
        let stderr = match tokio::time::timeout(drain, err_task).await {
            Ok(Ok(e)) => e,
            _ => Vec::new(),
        };
        drop(workdir);
        // Every process of the call is gone (group killed, pid namespace ended with its
        // init): its uid may serve another call.
        drop(lease);
        let result = match end {
            End::Timeout => Err(ExecError::Timeout {
                tool: tool.into(),
                after: timeout,
            }),
            End::TooLarge => Err(ExecError::OutputTooLarge {
                tool: tool.into(),
                limit: self.opts.max_output_bytes,
            }),
            End::WaitFailed(e) => Err(ExecError::failure(tool, format!("wait: {e}"))),
            End::Exited(status) => classify(
                tool,
                status,
                output.as_deref().ok(),
                &stderr,
                self.report.namespaces.is_ok(),
            ),
        };
        if let Err(e) = &result {
            tracing::warn!(
                event = "sandbox_call_failed",
                tool,
                error = %e,
                stderr = %String::from_utf8_lossy(&stderr[..stderr.len().min(2048)]),
                "sandboxed tool call failed"
            );
        }
        result
    }
}

enum End {
    Exited(ExitStatus),
    Timeout,
    TooLarge,
    WaitFailed(String),
}

/// Sends `SIGKILL` to the call's process group when asked and when dropped (a cancelled
/// request future must not leave the call running).
struct GroupKill(Option<Pid>);

impl GroupKill {
    fn kill(&self) {
        if let Some(pgid) = self.0 {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

impl Drop for GroupKill {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Turns a finished worker into the outcome of spec §2.2.2 item 14. Under bubblewrap a death
/// by signal `n` arrives as exit code `128 + n`; the worker itself only exits 0, 1 or 70.
pub(crate) fn classify(
    tool: &str,
    status: ExitStatus,
    stdout: Option<&[u8]>,
    stderr: &[u8],
    via_bwrap: bool,
) -> Result<Map<String, Value>, ExecError> {
    let signal = status.signal().or_else(|| {
        status
            .code()
            .filter(|c| via_bwrap && (129..160).contains(c))
            .map(|c| c - 128)
    });
    if let Some(sig) = signal {
        let limit = |detail: &str| ExecError::ResourceLimit {
            tool: tool.into(),
            detail: detail.into(),
        };
        return Err(match sig {
            libc::SIGXCPU => limit("CPU time limit (SIGXCPU)"),
            libc::SIGXFSZ => limit("file size limit (SIGXFSZ)"),
            libc::SIGABRT if contains(stderr, b"memory allocation of") => {
                limit("memory limit (allocation failed under RLIMIT_AS)")
            }
            s => ExecError::failure(tool, format!("worker killed by signal {s}")),
        });
    }
    let Some(stdout) = stdout else {
        return Err(ExecError::failure(
            tool,
            "result channel unreadable or held open",
        ));
    };
    match status.code() {
        Some(0) => result_output(tool, stdout),
        Some(EXIT_PROTOCOL) => Err(ExecError::failure(
            tool,
            format!(
                "worker refused the request: {}",
                decode_result(stdout).map(|r| r.error).unwrap_or_else(|e| e)
            ),
        )),
        Some(EXIT_PANIC) => Err(ExecError::failure(tool, "worker panic")),
        Some(c) => Err(ExecError::failure(tool, format!("worker exit status {c}"))),
        None => Err(ExecError::failure(tool, "worker ended without a status")),
    }
}

/// Reads a worker's result (exit 0): output, or a tool-level error.
pub(crate) fn result_output(tool: &str, stdout: &[u8]) -> Result<Map<String, Value>, ExecError> {
    match decode_result(stdout) {
        Ok(r) if !r.error.is_empty() => Err(ExecError::tool_error(tool, &r.error)),
        Ok(r) => Ok(r.output.unwrap_or_default()),
        Err(e) => Err(ExecError::failure(tool, format!("bad result: {e}"))),
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Reads to EOF; more than `cap` bytes is an error as soon as it happens.
pub(crate) async fn read_capped<R: AsyncRead + Unpin>(mut r: R, cap: usize) -> Result<Vec<u8>, ()> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) => return Ok(buf),
            Ok(n) if buf.len() + n > cap => return Err(()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return Err(()),
        }
    }
}

/// Reads to EOF keeping the first `keep` bytes (the rest is drained so the writer never blocks).
pub(crate) async fn read_keep<R: AsyncRead + Unpin>(mut r: R, keep: usize) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    while let Ok(n) = r.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        let room = keep.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..n.min(room)]);
    }
    buf
}

/// Where a root node's uid leases are locked, shared by every node on the host.
fn uid_lock_dir() -> PathBuf {
    if Path::new("/run").is_dir() {
        PathBuf::from("/run/lango-sbx-uids")
    } else {
        std::env::temp_dir().join("lango-sbx-uids-0")
    }
}

fn default_root(as_root: bool) -> PathBuf {
    if as_root {
        // $XDG_RUNTIME_DIR of root is 0700: the calls' uids could not reach their workdirs.
        return if Path::new("/run").is_dir() {
            PathBuf::from("/run/lango-sbx")
        } else {
            std::env::temp_dir().join("lango-sbx-0")
        };
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if Path::new(&d).is_absolute() => PathBuf::from(d).join("lango-sbx"),
        _ => std::env::temp_dir().join(format!("lango-sbx-{}", nix::unistd::geteuid())),
    }
}

/// Creates `dir` (owned by this user, mode `mode`), or checks and tightens an existing one.
fn create_private_dir(dir: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)?;
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() || meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(std::io::Error::other(
            "exists but is not a directory owned by this user",
        ));
    }
    if meta.permissions().mode() & 0o7777 != mode {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Copies the worker to `<root>/worker-<random>` (root-owned, 0755), written to a temporary
/// name first so no call ever sees a partial binary.
fn copy_worker(worker: &Path, root: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let tmp = root.join(format!(".worker-{id}.part"));
    let dest = root.join(format!("worker-{id}"));
    std::fs::copy(worker, &tmp)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&tmp, &dest)?;
    Ok(dest)
}

/// A fresh 0700 directory for one call, removed (whatever the tool left in it) on drop.
struct Workdir {
    path: PathBuf,
}

impl Workdir {
    /// A fresh directory under `root`, owned by `owner` (the call's uid) when given.
    fn create(root: &Path, owner: Option<u32>) -> std::io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let path = root.join(uuid::Uuid::new_v4().simple().to_string());
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        let dir = Self { path };
        if let Some(id) = owner {
            std::os::unix::fs::chown(&dir.path, Some(id), Some(id))?;
        }
        Ok(dir)
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if std::fs::remove_dir_all(&self.path).is_err() {
            // A tool may have left directories without permissions; open them up and retry.
            make_removable(&self.path);
            if let Err(e) = std::fs::remove_dir_all(&self.path) {
                tracing::warn!(dir = %self.path.display(), error = %e, "could not remove a sandbox workdir");
            }
        }
    }
}

fn make_removable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                make_removable(&e.path());
            }
        }
    }
}

#[async_trait]
impl Executor for SubprocessExecutor {
    async fn execute(
        &self,
        tool: &str,
        params: Map<String, Value>,
    ) -> Result<Map<String, Value>, ExecError> {
        let command = match self.registry.get(tool) {
            Some(t) if t.class == crate::IsolationClass::WorkerSafe => match &t.kind {
                ToolKind::Command(c) => Some(CommandSpec {
                    program: c.program.display().to_string(),
                    args: c.args.clone(),
                }),
                ToolKind::Function(_) => None,
            },
            _ => {
                return Err(ExecError::NotAvailable {
                    tool: tool.into(),
                    reason: "not a worker-safe tool".into(),
                });
            }
        };
        self.run(tool, params, command).await
    }

    fn isolation(&self) -> String {
        format!("subprocess({})", self.report.backends())
    }

    async fn self_check(&self) -> Result<Vec<(String, bool)>, ExecError> {
        let out = self
            .run(
                crate::protocol::SELF_CHECK_TOOL,
                crate::executor::self_check_params(),
                None,
            )
            .await?;
        Ok(crate::executor::self_check_results(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    #[test]
    fn classification_table() {
        let ok = classify("t", exit(0), Some(br#"{"output":{"a":1}}"#), b"", true).unwrap();
        assert_eq!(ok["a"], 1);
        assert!(
            classify("t", exit(0), Some(b"{}\n"), b"", true)
                .unwrap()
                .is_empty()
        );
        let tool = classify("t", exit(0), Some(br#"{"error":"bad"}"#), b"", true).unwrap_err();
        assert_eq!(tool.peer_message(), "tool \"t\": bad");
        let proto =
            classify("t", exit(1), Some(br#"{"error":"x"}"#), b"/home/me", true).unwrap_err();
        assert_eq!(proto.peer_message(), "tool \"t\" execution failed");
        assert!(proto.to_string().contains("refused the request: x"));
        let xcpu = classify("t", exit(128 + libc::SIGXCPU), Some(b""), b"", true).unwrap_err();
        assert_eq!(xcpu.peer_message(), "tool \"t\" exceeded resource limits");
        let xfsz = classify(
            "t",
            ExitStatus::from_raw(libc::SIGXFSZ),
            Some(b""),
            b"",
            false,
        )
        .unwrap_err();
        assert_eq!(xfsz.kind(), crate::ErrorKind::ResourceLimit);
        let oom = classify(
            "t",
            exit(128 + libc::SIGABRT),
            Some(b""),
            b"memory allocation of 1073741824 bytes failed\n",
            true,
        )
        .unwrap_err();
        assert_eq!(oom.kind(), crate::ErrorKind::ResourceLimit);
        let abrt = classify("t", exit(128 + libc::SIGABRT), Some(b""), b"", true).unwrap_err();
        assert_eq!(abrt.kind(), crate::ErrorKind::WorkerFailure);
        // Without bubblewrap, 134 is just an exit code.
        let plain = classify("t", exit(134), Some(b""), b"", false).unwrap_err();
        assert_eq!(plain.kind(), crate::ErrorKind::WorkerFailure);
        let garbage = classify("t", exit(0), Some(b"hello {}"), b"", true).unwrap_err();
        assert_eq!(garbage.peer_message(), "tool \"t\" execution failed");
        let panic = classify(
            "t",
            exit(70),
            Some(br#"{"error":"worker panic"}"#),
            b"",
            true,
        )
        .unwrap_err();
        assert!(panic.to_string().contains("panic"));
    }

    #[tokio::test]
    async fn capped_readers() {
        let data = vec![7u8; 100_000];
        assert!(read_capped(&data[..], 99_999).await.is_err());
        assert_eq!(
            read_capped(&data[..], 100_000).await.unwrap().len(),
            100_000
        );
        assert_eq!(read_keep(&data[..], 10).await.len(), 10);
    }
}
