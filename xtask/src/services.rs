//! Local services the tests use, started before the tests and stopped afterwards (also when
//! the tests fail: stopping happens in `Drop`).

use std::{path::PathBuf, process::Command};

use anyhow::Result;

use crate::env;

/// The running services and the environment the tests need to find them.
pub struct Services {
    /// Extra environment for the test processes.
    vars: Vec<(String, String)>,
    /// Scratch directory of this run.
    #[allow(dead_code)]
    dir: PathBuf,
}

impl Services {
    /// Prepares and starts every service.
    pub fn start() -> Result<Self> {
        let dir = workspace_root().join("target").join("xtask");
        std::fs::create_dir_all(&dir)?;
        let vars = Vec::new();
        Ok(Self { vars, dir })
    }

    /// Runs `cargo <args>` with the services' environment.
    pub fn cargo(&self, args: &[String]) -> Result<()> {
        let mut cmd = Command::new("cargo");
        cmd.args(args);
        for (k, v) in &self.vars {
            cmd.env(k, v);
        }
        if env::in_ci() {
            cmd.env("CI", "true");
        }
        env::run_with(&mut cmd)
    }
}

/// The workspace root (the parent of the xtask crate).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}
