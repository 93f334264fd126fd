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
