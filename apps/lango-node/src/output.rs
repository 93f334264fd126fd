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

/// Reports an error with its chain of causes and returns its exit code.
pub fn fail(e: &anyhow::Error) -> ExitCode {
    eprintln!("error: {e:#}");
    exit_code_for(e)
}

/// Prints rows as a table: columns before the last padded to their widest cell plus two
/// spaces (the Go tab-writer layout the reference CLI used).
pub fn table(rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 < r.len() {
                line.push_str(&format!("{c:<w$}  ", w = widths[i]));
            } else {
                line.push_str(c);
            }
        }
        println!("{}", line.trim_end());
    }
}

/// Reports an error and returns its exit code: 3 for a rejected passphrase (WP-4), else 1.
pub fn exit_code_for(e: &anyhow::Error) -> ExitCode {
    let wrong = e.chain().any(|c| {
        c.downcast_ref::<lango_secrets::Error>()
            .is_some_and(lango_secrets::Error::is_wrong_passphrase)
    });
    if wrong {
        ExitCode::from(3)
    } else {
        ExitCode::FAILURE
    }
}
