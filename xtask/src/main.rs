//! `cargo xtask <command>`: the project's automation, in Rust rather than loose shell scripts.
//!
//! - `test`  — prepares everything the tests need (system and Python packages when missing,
//!   local services), runs every test with cargo-nextest plus the doc tests, and stops the
//!   services again even when tests fail. This is the README's test command.
//! - `lint`  — `cargo fmt --check`, clippy with `-D warnings` on all targets for every feature
//!   set that builds here, and `cargo deny check` (licenses, bans, sources) offline.
//! - `ci`    — `lint`, then `test`.
//! - `bench` — the criterion benches; writes `target/bench-report.md` with the medians.
//! - `sandbox-image` — builds the sandbox container image locally from the worker binary.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod bench;
mod env;
mod sandbox;
mod services;

use std::process::ExitCode;

use anyhow::{Result, bail};

/// Feature sets clippy covers: the default build (no cloud SDK) and every KMS backend.
pub const LINT_FEATURE_SETS: &[&[&str]] = &[&[], &["lango-node/kms-all", "lango-e2e/kms-all"]];

/// Feature sets the workspace tests run with: every KMS backend compiled in, so the backend
/// tests run against their servers. The default build's own KMS behaviour (every backend
/// reports `NotCompiled`) is tested by a second, lango-kms-only run without features.
pub const TEST_FEATURE_SETS: &[&[&str]] = &[&["lango-node/kms-all", "lango-e2e/kms-all"]];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("lint") => lint(),
        Some("ci") => lint().and_then(|()| test(&[])),
        Some("bench") => bench::run(&args[1..]),
        Some("sandbox-image") => sandbox::image(&args[1..]),
        Some("-h" | "--help" | "help") | None => {
            println!("{}", HELP);
            Ok(())
        }
        Some(other) => Err(anyhow::anyhow!("unknown xtask command {other:?}\n\n{HELP}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

const HELP: &str = "usage: cargo xtask <command>

commands:
  test [-- <nextest args>]  prepare services, run every test (nextest + doc tests)
  lint                      fmt check, clippy -D warnings (all feature sets), cargo deny
  ci                        lint, then test
  bench [<filter>]          criterion benches; writes target/bench-report.md
  sandbox-image [--release] [--worker PATH] [--tag REPO]
                            build the sandbox image locally from lango-sandbox-worker
                            (no registry); tags REPO:<hash> and REPO:latest";

fn test(extra: &[String]) -> Result<()> {
    env::ensure_nextest()?;
    let services = services::Services::start()?;
    sandbox::ensure_docker_and_gvisor()?;
    if sandbox::docker_up() {
        // The production image, built the way an operator builds it.
        sandbox::image(&[])?;
    }
    let mut failures = Vec::new();
    let passthrough: Vec<String> = extra.iter().skip_while(|a| *a == "--").cloned().collect();
    for features in TEST_FEATURE_SETS {
        let mut args = vec![
            "nextest".to_owned(),
            "run".to_owned(),
            "--workspace".to_owned(),
            "--no-fail-fast".to_owned(),
        ];
        if !features.is_empty() {
            args.push("--features".to_owned());
            args.push(features.join(","));
        }
        args.extend(passthrough.iter().cloned());
        if let Err(e) = services.cargo(&args) {
            failures.push(format!("tests with features {features:?}: {e:#}"));
        }
    }
    if passthrough.is_empty() {
        let default_kms = ["nextest", "run", "-p", "lango-kms", "--no-fail-fast"].map(String::from);
        if let Err(e) = services.cargo(&default_kms) {
            failures.push(format!("lango-kms without features: {e:#}"));
        }
        let doc = ["test", "--doc", "--workspace"].map(String::from);
        if let Err(e) = services.cargo(&doc) {
            failures.push(format!("doc tests: {e:#}"));
        }
    }
    drop(services);
    if failures.is_empty() {
        Ok(())
    } else {
        bail!("{}", failures.join("\n"))
    }
}

fn lint() -> Result<()> {
    env::run("cargo", &["fmt", "--all", "--", "--check"])?;
    for features in LINT_FEATURE_SETS {
        let mut args = vec!["clippy", "--workspace", "--all-targets"];
        let joined = features.join(",");
        if !features.is_empty() {
            args.extend(["--features", &joined]);
        }
        args.extend(["--", "-D", "warnings"]);
        env::run("cargo", &args)?;
    }
    env::ensure_cargo_tool("cargo-deny", "cargo-deny", "0.19.4")?;
    // The offline check reads every package of every target; fetch them (crates.io) first.
    env::run("cargo", &["fetch", "--quiet"])?;
    env::run(
        "cargo",
        &[
            "deny",
            "--offline",
            "--all-features",
            "check",
            "licenses",
            "bans",
            "sources",
        ],
    )
}
