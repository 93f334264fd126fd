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

/// The `lango-node` binary of this build (built on demand by `cargo build -p lango-node`).
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
            build.args(["build", "--quiet", "-p", "lango-node"]);
            if !cfg!(debug_assertions) {
                build.arg("--release");
            }
            let status = build.status().expect("run cargo build -p lango-node");
            assert!(status.success(), "cargo build -p lango-node failed");
            bin
        })
        .clone()
}

fn target_dir() -> PathBuf {
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(t);
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
