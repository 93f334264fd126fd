//! Output helpers. Results go to stdout (JSON when `--json`); diagnostics go to stderr.
#![allow(clippy::print_stderr, clippy::print_stdout)]

use std::process::ExitCode;

use serde::Serialize;

/// Prints `value` as two-space-indented JSON with a trailing newline.
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let s = serde_json::to_string_pretty(value)?;
    println!("{s}");
    Ok(())
}

/// Prints a result line on stdout.
pub fn line(s: impl std::fmt::Display) {
    println!("{s}");
}

/// Prints a human-oriented note on stderr (never captured by `--json` consumers).
pub fn note(s: impl std::fmt::Display) {
    eprintln!("{s}");
}

/// Reports an error with its chain of causes and returns exit code 1.
pub fn fail(e: &anyhow::Error) -> ExitCode {
    eprintln!("error: {e:#}");
    ExitCode::FAILURE
}
