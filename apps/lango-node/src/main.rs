//! `lango-node`: a thin binary over the lango crates. It parses the command line, loads the
//! configuration, sets up logging and hands each command to the crate that owns the work.
#![forbid(unsafe_code)]

mod cli;
mod commands;
mod config;
mod context;
mod output;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
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
