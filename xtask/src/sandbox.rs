//! What the sandbox tests need from the machine, and `cargo xtask sandbox-image`.
//!
//! - The Docker engine must answer (under `CI=true` its absence is an error).
//! - gVisor: when the engine does not list the `runsc` runtime, and we run as root, install
//!   Debian's `runsc`, register it in `/etc/docker/daemon.json` (existing keys kept) and make
//!   dockerd reload its configuration with SIGHUP (no restart). `runsc` is registered with
//!   `--network=none`: this Debian build refuses to start containers whose network namespace
//!   it cannot configure, and sandbox containers have no network anyway.
//! - The sandbox image, built locally from the worker binary by `lango-node p2p sandbox
//!   build-image` (no registry).

use std::{path::PathBuf, process::Command, time::Duration};

use anyhow::{Context, Result, bail};

use crate::env;

const DAEMON_JSON: &str = "/etc/docker/daemon.json";

/// Whether the Docker engine answers.
pub fn docker_up() -> bool {
    Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn runtimes() -> String {
    Command::new("docker")
        .args(["info", "--format", "{{json .Runtimes}}"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Makes sure the engine is up and lists `runsc`.
pub fn ensure_docker_and_gvisor() -> Result<()> {
    if !docker_up() {
        if env::in_ci() {
            bail!(
                "the Docker engine is not reachable (docker info failed); the container tests need it"
            );
        }
        eprintln!("xtask: Docker engine not reachable; container tests will skip");
        return Ok(());
    }
    if runtimes().contains("\"runsc\"") {
        return Ok(());
    }
    if !env::is_root() {
        eprintln!(
            "xtask: gVisor (runsc) is not registered with Docker and xtask is not root; gVisor tests will skip"
        );
        return Ok(());
    }
    env::ensure_apt(&["runsc"])?;
    let mut conf: serde_json::Value = match std::fs::read_to_string(DAEMON_JSON) {
        Ok(s) if !s.trim().is_empty() => {
            serde_json::from_str(&s).with_context(|| format!("parse {DAEMON_JSON}"))?
        }
        _ => serde_json::json!({}),
    };
    let Some(obj) = conf.as_object_mut() else {
        bail!("{DAEMON_JSON} is not a JSON object");
    };
    let runtimes = obj
        .entry("runtimes")
        .or_insert_with(|| serde_json::json!({}));
    let Some(r) = runtimes.as_object_mut() else {
        bail!("{DAEMON_JSON}: \"runtimes\" is not an object");
    };
    r.insert(
        "runsc".into(),
        serde_json::json!({"path": "/usr/bin/runsc", "runtimeArgs": ["--network=none"]}),
    );
    std::fs::write(DAEMON_JSON, serde_json::to_string_pretty(&conf)?)
        .with_context(|| format!("write {DAEMON_JSON}"))?;
    eprintln!("xtask: registered runsc in {DAEMON_JSON}; reloading dockerd (SIGHUP)");
    // SIGHUP to exactly the daemon's PID (from `pidof`): dockerd reloads its runtimes.
    let pid = Command::new("pidof")
        .arg("dockerd")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let pid = match pid.split_whitespace().collect::<Vec<_>>()[..] {
        [one] if one.parse::<u32>().is_ok() => one.to_owned(),
        _ => bail!("cannot find exactly one dockerd process to reload (pidof: {pid:?})"),
    };
    env::run("kill", &["-HUP", &pid])?;
    for _ in 0..40 {
        if self::runtimes().contains("\"runsc\"") {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    bail!("dockerd did not list runsc after reloading {DAEMON_JSON}")
}

/// The cargo target directory.
fn target_dir() -> Result<PathBuf> {
    crate::bench::target_dir()
}

/// `cargo xtask sandbox-image [--release] [--worker PATH] [--tag REPO]`: builds `lango-node`
/// and `lango-sandbox-worker` (or takes the worker at PATH), then the image from the worker
/// alone; prints its ID.
pub fn image(args: &[String]) -> Result<()> {
    let release = args.iter().any(|a| a == "--release");
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let repo = value("--tag").unwrap_or_else(|| "lango-sandbox".into());
    let given_worker = value("--worker").map(PathBuf::from);
    if let Some(w) = &given_worker
        && !w.is_file()
    {
        bail!("--worker {}: no such file", w.display());
    }
    let mut build = vec![
        "build",
        "-p",
        "lango-node",
        "-p",
        "lango-sandbox",
        "--bin",
        "lango-node",
        "--bin",
        "lango-sandbox-worker",
    ];
    if release {
        build.push("--release");
    }
    env::run("cargo", &build)?;
    let dir = target_dir()?.join(if release { "release" } else { "debug" });
    let worker = given_worker.unwrap_or_else(|| dir.join("lango-sandbox-worker"));
    let scratch = tempdir()?;
    env::run_with(
        Command::new(dir.join("lango-node"))
            .arg("--data-dir")
            .arg(&scratch)
            .args(["p2p", "sandbox", "build-image", "--tag", &repo, "--worker"])
            .arg(&worker),
    )?;
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

fn tempdir() -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("lango-xtask-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
