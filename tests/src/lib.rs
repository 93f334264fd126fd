//! Helpers for end-to-end tests: locating the `lango-node` binary that cargo built, running it
//! in a throwaway data directory, and reading its output.
//!
//! The tests in `tests/` start real `lango-node` processes; nothing is mocked.
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// The `lango-node` binary of this build (built on demand by `cargo build -p lango-node`, with
/// the `lango-sandbox-worker` it runs tool calls in next to it; with this crate's `kms-all`
/// feature, the binary has every KMS backend).
pub fn node_bin() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let target = target_dir();
            let profile = if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            };
            let bin = target.join(profile).join("lango-node");
            let mut build = Command::new(env!("CARGO"));
            build.args([
                "build",
                "--quiet",
                "-p",
                "lango-node",
                "-p",
                "lango-sandbox",
                "--bin",
                "lango-node",
                "--bin",
                "lango-sandbox-worker",
            ]);
            if !cfg!(debug_assertions) {
                build.arg("--release");
            }
            // The binary gets the KMS backends when the tests were built with them, so that
            // `cargo nextest run --workspace --features lango-e2e/kms-all,...` tests them.
            if cfg!(feature = "kms-all") {
                build.args(["--features", "lango-node/kms-all"]);
            }
            let status = build.status().expect("run cargo build -p lango-node");
            assert!(
                status.success(),
                "cargo build of lango-node and its worker failed"
            );
            bin
        })
        .clone()
}

fn target_dir() -> PathBuf {
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(t);
    }
    // The running test is `<target>/<profile>/deps/<test>-<hash>`: the binary under test
    // is built into the same target directory. (A path compiled in from CARGO_MANIFEST_DIR
    // goes stale when one target directory serves several checkouts, as the CI cache does.)
    if let Some(target) = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.to_path_buf()))
    {
        return target;
    }
    // tests/ is one level below the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("target")
}

/// A throwaway data directory and a way to run `lango-node` against it.
pub struct Node {
    /// The temporary data directory (removed on drop).
    pub dir: tempfile::TempDir,
}

impl Default for Node {
    fn default() -> Self {
        Self::new()
    }
}

impl Node {
    /// A fresh, empty data directory.
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// A `lango-node` command with `--data-dir` set and a clean `LANGO_*` environment.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(node_bin());
        for (k, _) in std::env::vars() {
            if k.starts_with("LANGO_") || k == "RUST_LOG" {
                c.env_remove(k);
            }
        }
        c.arg("--data-dir").arg(self.data_dir());
        c
    }

    /// Runs `lango-node <args>` and returns its output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run lango-node")
    }
}

/// stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Real components a test may need, and the rule for their absence: skip with a printed
/// reason when run by hand, fail when `CI=true`.
pub mod component {
    /// Whether tests run under CI (`CI=true`).
    pub fn in_ci() -> bool {
        std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
    }

    /// Returns `true` when `check` says the component is there. Otherwise prints
    /// `SKIP <test>: <reason>` and returns `false`, or panics under CI.
    pub fn require(test: &str, component: &str, check: Result<(), String>) -> bool {
        match check {
            Ok(()) => true,
            Err(reason) => {
                assert!(
                    !in_ci(),
                    "{test}: required component {component} is missing under CI: {reason}"
                );
                #[allow(clippy::print_stderr)]
                {
                    eprintln!("SKIP {test}: {component} unavailable: {reason}");
                }
                false
            }
        }
    }

    /// Whether bubblewrap (the subprocess sandbox's namespaces) is installed, after the
    /// skip/fail rule.
    pub fn bubblewrap(test: &str) -> bool {
        require(
            test,
            "bubblewrap (user namespaces)",
            if std::path::Path::new("/usr/bin/bwrap").exists() {
                Ok(())
            } else {
                Err("/usr/bin/bwrap missing (apt install bubblewrap)".into())
            },
        )
    }

    /// The independent SQLCipher 4 client (the PyPI `sqlcipher3` binding).
    #[derive(Debug, Clone)]
    pub struct SqlcipherClient {
        /// The interpreter that can import `sqlcipher3`.
        pub python: std::path::PathBuf,
    }

    /// The independent SQLCipher client, or `None` after the skip/fail rule.
    pub fn sqlcipher_client(test: &str) -> Option<SqlcipherClient> {
        match sqlcipher_python() {
            Ok(python) => Some(SqlcipherClient { python }),
            Err(e) => {
                require(test, "independent SQLCipher 4 client (sqlcipher3)", Err(e));
                None
            }
        }
    }

    /// The Python interpreter that has the independent SQLCipher 4 client (`sqlcipher3`):
    /// `LANGO_TEST_PYTHON` (set by `cargo xtask test`) or `python3`.
    pub fn sqlcipher_python() -> Result<std::path::PathBuf, String> {
        let py = std::env::var_os("LANGO_TEST_PYTHON")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| "python3".into());
        let out = std::process::Command::new(&py)
            .args(["-c", "import sqlcipher3"])
            .output()
            .map_err(|e| format!("cannot run {}: {e}", py.display()))?;
        if out.status.success() {
            Ok(py)
        } else {
            Err(format!(
                "{} cannot import sqlcipher3 (pip install sqlcipher3-binary)",
                py.display()
            ))
        }
    }

    /// Whether a program is on PATH.
    pub fn program(name: &str) -> Result<(), String> {
        let ok = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            Ok(())
        } else {
            Err(format!("{name} is not installed"))
        }
    }
}

impl Node {
    /// Runs `lango-node <args>` with `input` on stdin.
    pub fn run_stdin(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .cmd()
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn lango-node");
        let mut stdin = child.stdin.take().expect("stdin");
        let _ = stdin.write_all(input.as_bytes());
        drop(stdin);
        child.wait_with_output().expect("wait for lango-node")
    }

    /// Writes a keyfile (mode 0600) into the data directory, creating it 0700.
    pub fn keyfile(&self, passphrase: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(self.data_dir()).unwrap();
        std::fs::set_permissions(self.data_dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let p = self.data_dir().join("keyfile");
        std::fs::write(&p, format!("{passphrase}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    /// Runs `lango-node <args>` on a real pseudo-terminal, typing `send` after each `expect`.
    /// Returns `None` (after the skip/fail rule) when Python is unavailable.
    pub fn pty(&self, test: &str, args: &[&str], steps: &[(&str, &str)]) -> Option<PtyRun> {
        let python = match component::program("python3") {
            Ok(()) => std::path::PathBuf::from("python3"),
            Err(e) => {
                component::require(test, "python3 (pty driver)", Err(e));
                return None;
            }
        };
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("support/pty_drive.py");
        let mut argv = vec![
            node_bin().display().to_string(),
            "--data-dir".into(),
            self.data_dir().display().to_string(),
        ];
        argv.extend(args.iter().map(|s| (*s).to_owned()));
        let req = serde_json::json!({
            "argv": argv,
            "env": {},
            "steps": steps.iter().map(|(e, s)| serde_json::json!({"expect": e, "send": s})).collect::<Vec<_>>(),
            "timeout": 60,
        });
        let mut driver = Command::new(python);
        for (k, _) in std::env::vars() {
            if k.starts_with("LANGO_") || k == "RUST_LOG" {
                driver.env_remove(k);
            }
        }
        let mut child = driver
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn the pty driver");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(req.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("pty driver output");
        Some(PtyRun {
            exit: v["exit"].as_i64().unwrap_or(-1),
            terminal: v["terminal"].as_str().unwrap_or_default().to_owned(),
            stdout: v["stdout"].as_str().unwrap_or_default().to_owned(),
            unanswered: v["unanswered"].as_array().map(|a| a.len()).unwrap_or(0),
        })
    }
}

/// The result of a run on a pseudo-terminal.
#[derive(Debug)]
pub struct PtyRun {
    /// Exit code.
    pub exit: i64,
    /// What appeared on the terminal (prompts, stderr).
    pub terminal: String,
    /// What went to the real stdout.
    pub stdout: String,
    /// Prompts that never appeared.
    pub unanswered: usize,
}

impl component::SqlcipherClient {
    /// Runs the independent SQLCipher 4 client (`tests/support/sqlcipher_client.py`) with one
    /// JSON request on stdin (keys never go to argv) and returns its JSON answer.
    pub fn request(&self, req: &serde_json::Value) -> serde_json::Value {
        use std::io::Write;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("support/sqlcipher_client.py");
        let mut child = Command::new(&self.python)
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run the SQLCipher client");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(req.to_string().as_bytes())
            .expect("write request");
        let out = child
            .wait_with_output()
            .expect("wait for the SQLCipher client");
        assert!(out.status.success(), "the SQLCipher client failed");
        serde_json::from_slice(&out.stdout).expect("SQLCipher client output")
    }
}

/// A `lango-node serve` process, stopped with SIGTERM on drop.
pub struct Serving {
    child: std::process::Child,
    /// The `started` JSON line `serve --json` printed.
    pub started: serde_json::Value,
    stderr_path: PathBuf,
}

impl Node {
    /// A data directory prepared for non-interactive `serve`: a keyfile (kept), no OS keyring,
    /// the node listening on 127.0.0.1 (TCP and QUIC, ephemeral ports), gossip every second.
    /// `extra` is appended to config.toml (TOML; may reopen `[p2p]` keys via dotted names).
    pub fn for_serve(p2p_extra: &str, extra: &str) -> Self {
        let n = Self::new();
        n.keyfile("correct horse battery staple");
        std::fs::write(
            n.data_dir().join("config.toml"),
            format!(
                "[security.passphrase]\nkeepKeyfile = true\n[security.keyring]\nenabled = false\n\
                 [p2p]\nlistenAddrs = [\"/ip4/127.0.0.1/tcp/0\", \"/ip4/127.0.0.1/udp/0/quic-v1\"]\n\
                 gossipInterval = \"1s\"\n{p2p_extra}\n{extra}\n"
            ),
        )
        .unwrap();
        n
    }

    /// Starts `lango-node serve --json` and waits (at most 90 s) for its `started` line.
    pub fn serve(&self) -> Serving {
        use std::io::BufRead;
        let stderr_path = self.data_dir().join(format!(
            "serve-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let err = std::fs::File::create(&stderr_path).unwrap();
        let mut child = self
            .cmd()
            .args(["--json", "-v", "serve"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(err)
            .spawn()
            .expect("spawn lango-node serve");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(out).lines();
            if let Some(Ok(l)) = lines.next() {
                let _ = tx.send(l);
            }
            for _ in lines {}
        });
        let line = match rx.recv_timeout(std::time::Duration::from_secs(90)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "serve did not start:\n{}",
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                );
            }
        };
        let started: serde_json::Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("serve printed {line:?}: {e}");
            }
        };
        Serving {
            child,
            started,
            stderr_path,
        }
    }
}

impl Serving {
    /// The node's peer ID.
    pub fn peer_id(&self) -> &str {
        self.started["peerId"].as_str().unwrap()
    }

    /// The node's DID.
    pub fn did(&self) -> &str {
        self.started["did"].as_str().unwrap()
    }

    /// The node's TCP listen address with `/p2p/<peer-id>`.
    pub fn tcp_addr(&self) -> String {
        let a = self.started["listenAddrs"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a.as_str())
            .find(|a| a.contains("/tcp/"))
            .unwrap()
            .to_owned();
        format!("{a}/p2p/{}", self.peer_id())
    }

    /// What the node logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Sends SIGTERM and waits (at most 30 s) for a clean exit; returns the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.terminate()
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                return self.child.wait().unwrap();
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

/// Polls `f` every 250 ms until it returns `Some` or `secs` pass.
pub fn wait_for<T>(secs: u64, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}
