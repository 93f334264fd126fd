//! `lango-node`: a thin binary over the lango crates. It parses the command line, loads the
//! configuration, sets up logging and hands each command to the crate that owns the work.
#![forbid(unsafe_code)]

mod admin;
mod cli;
mod commands;
mod config;
mod context;
mod hardening;
mod kms;
mod output;
mod terminal;

use std::process::ExitCode;

use clap::Parser;

static LOCAL_OFFSET: std::sync::OnceLock<time::UtcOffset> = std::sync::OnceLock::new();

/// The local UTC offset, read once at start-up while the process is single-threaded.
pub(crate) fn local_offset() -> time::UtcOffset {
    *LOCAL_OFFSET.get().unwrap_or(&time::UtcOffset::UTC)
}

fn main() -> ExitCode {
    // Worker mode first, before any configuration, database, keyring or logging (spec §2.2.2).
    if lango_sandbox::worker::is_worker_invocation() {
        lango_sandbox::worker::main(&lango_sandbox::ToolRegistry::builtin());
    }
    let _ =
        LOCAL_OFFSET.set(time::UtcOffset::current_local_offset().unwrap_or(time::UtcOffset::UTC));
    let cli = cli::Cli::parse();
    let ctx = match context::Context::new(&cli.global) {
        Ok(ctx) => ctx,
        Err(e) => return output::fail(&e),
    };
    match commands::run(&ctx, cli.command) {
        Ok(code) => code,
        Err(e) => output::fail(&e),
    }
}
