//! Command dispatch. Each module turns one command group into calls on the crates.

mod config;
pub mod kms;
pub mod p2p;
pub mod sandbox;
pub mod security;
pub mod serve;
pub mod zkp;

use std::process::ExitCode;

use anyhow::Result;
use clap::CommandFactory;

use crate::{cli::Command, context::Context};

/// Runs a command and returns the process exit code.
pub fn run(ctx: &Context, command: Command) -> Result<ExitCode> {
    match command {
        Command::Config(c) => {
            ctx.init_logging("warn", crate::config::LogFormat::Text);
            config::run(ctx, c)
        }
        Command::Security(c) => {
            ctx.init_logging("warn", crate::config::LogFormat::Text);
            security::run(ctx, c)
        }
        Command::Serve => serve::run(ctx),
        Command::P2p(c) => {
            ctx.init_logging("warn", crate::config::LogFormat::Text);
            p2p::run(ctx, c)
        }
        Command::Zkp(c) => {
            ctx.init_logging("warn", crate::config::LogFormat::Text);
            zkp::run(ctx, c)
        }
        Command::Completions { shell } => {
            let mut cmd = crate::cli::Cli::command();
            clap_complete::generate(shell, &mut cmd, "lango-node", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
    }
}
