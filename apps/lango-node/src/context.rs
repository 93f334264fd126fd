//! What every command needs: resolved paths, output mode, logging.

use std::path::PathBuf;

use anyhow::{Context as _, Result};

use crate::{cli::GlobalArgs, config};

/// Resolved global options.
pub struct Context {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The configuration file.
    pub config_path: PathBuf,
    /// Whether `--json` was given.
    pub json: bool,
    verbose: u8,
    quiet: bool,
    /// `--non-interactive`.
    pub non_interactive: bool,
    /// `--passphrase-stdin`.
    pub passphrase_stdin: bool,
}

impl Context {
    /// Resolves the data directory (`--data-dir`, `LANGO_DATA_DIR`, `~/.lango`) and the
    /// configuration file (`--config`, `LANGO_CONFIG`, `<data-dir>/config.toml`).
    pub fn new(g: &GlobalArgs) -> Result<Self> {
        let data_dir = match &g.data_dir {
            Some(d) => d.clone(),
            None => std::env::home_dir()
                .map(|h| h.join(".lango"))
                .context("cannot find the home directory; pass --data-dir or set LANGO_DATA_DIR")?,
        };
        let config_path = g
            .config
            .clone()
            .unwrap_or_else(|| data_dir.join("config.toml"));
        Ok(Self {
            data_dir,
            config_path,
            json: g.json,
            verbose: g.verbose,
            quiet: g.quiet,
            non_interactive: g.non_interactive,
            passphrase_stdin: g.passphrase_stdin,
        })
    }

    /// The log filter: `RUST_LOG` if set, else `-v`/`-q`, else `default`.
    fn filter(&self, default: &str) -> tracing_subscriber::EnvFilter {
        use tracing_subscriber::EnvFilter;
        if let Ok(f) = EnvFilter::try_from_default_env() {
            return f;
        }
        let level = match (self.quiet, self.verbose) {
            (true, _) => "error",
            (false, 0) => default,
            (false, 1) => "debug",
            (false, _) => "trace",
        };
        // libp2p's own crates are chatty at info (and warn about routine states such as
        // an empty routing table); below -vv they only report errors, unless the level
        // already names them.
        let level = if self.verbose < 2 && !level.contains("libp2p") {
            format!("{level},libp2p_swarm=error,libp2p_kad=error,libp2p_gossipsub=error")
        } else {
            level.to_owned()
        };
        EnvFilter::try_new(&level).unwrap_or_else(|_| EnvFilter::new("warn"))
    }

    /// Starts logging to stderr. Short commands log warnings only unless asked; `default`
    /// is their level (long-running commands pass the configured `log.level`).
    pub fn init_logging(&self, default: &str, format: config::LogFormat) {
        let builder = tracing_subscriber::fmt()
            .with_env_filter(self.filter(default))
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(self.verbose > 0);
        let _ = match format {
            config::LogFormat::Text => builder.try_init(),
            config::LogFormat::Json => builder.json().try_init(),
        };
    }

    /// The terminal prompter for unlocking.
    pub fn prompter(&self) -> crate::terminal::Tty {
        crate::terminal::Tty {
            non_interactive: self.non_interactive,
            passphrase_stdin: self.passphrase_stdin,
        }
    }

    /// Loads the configuration, logging its warnings.
    pub fn load_config(&self) -> Result<config::Loaded, config::ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        let loaded = config::load(&self.config_path, &env)?;
        for w in &loaded.warnings {
            tracing::warn!(event = "config_warning", "{w}");
        }
        Ok(loaded)
    }
}
