//! Running commands and installing what is missing.

use std::process::Command;

use anyhow::{Context, Result, bail};

/// Runs a command, inheriting stdio; fails on a non-zero exit.
pub fn run(program: &str, args: &[&str]) -> Result<()> {
    let owned: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    run_with(Command::new(program).args(&owned))
}

/// Runs a prepared command; fails on a non-zero exit.
pub fn run_with(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    eprintln!("xtask: $ {shown}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

/// Whether `program` is on PATH.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null 2>&1")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Whether we run as root (and may install system packages).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Whether tests run under CI (`CI=true`): missing components are then failures.
pub fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| v == "true" || v == "1")
        .unwrap_or(false)
}

/// Installs a cargo subcommand from crates.io when it is not on PATH.
pub fn ensure_cargo_tool(binary: &str, krate: &str, version: &str) -> Result<()> {
    if have(binary) {
        return Ok(());
    }
    eprintln!("xtask: {binary} is missing; installing {krate} {version} from crates.io (one time)");
    run(
        "cargo",
        &["install", "--locked", krate, "--version", version],
    )
}

/// cargo-nextest runs the tests.
pub fn ensure_nextest() -> Result<()> {
    ensure_cargo_tool("cargo-nextest", "cargo-nextest", "0.9.151")
}

/// Installs Debian packages that are missing (only as root; otherwise reports them).
pub fn ensure_apt(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                .unwrap_or(false)
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing system packages: {} (install them with apt-get, or run xtask as root)",
            missing.join(" ")
        );
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    run_with(Command::new("apt-get").arg("update").arg("-q"))?;
    run_with(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}
