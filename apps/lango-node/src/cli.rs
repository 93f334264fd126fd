//! The command-line interface (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// lango-node: an agent node on a peer-to-peer network, with keys at rest you can trust.
///
/// The node keeps its keys encrypted in a data directory (default ~/.lango), proves who it is
/// to peers, and runs their tool calls in a sandbox.
#[derive(Debug, Parser)]
#[command(
    name = "lango-node",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Data directory holding config.toml, the encrypted database and the key envelope.
    #[arg(long, global = true, env = "LANGO_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Configuration file [default: <data-dir>/config.toml].
    #[arg(long, global = true, env = "LANGO_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print machine-readable JSON on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    /// More log output (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Only errors in the log output.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, show and check the configuration file.
    #[command(subcommand)]
    Config(ConfigCommand),

    /// Print a shell completion script.
    ///
    /// Example: lango-node completions bash > /etc/bash_completion.d/lango-node
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Write a configuration file with every default, ready to edit.
    Init {
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Print the effective configuration (file, then environment overrides, then defaults).
    Show,
    /// Check the configuration file: unknown keys, types and ranges. Exits 1 when invalid.
    Validate,
    /// Print the path of the configuration file in use.
    Path,
}
