//! `lango-node config init|show|validate|path`.

use std::{io::Write, os::unix::fs::OpenOptionsExt, path::Path, process::ExitCode};

use anyhow::{Context as _, Result, bail};
use serde_json::json;

use crate::{cli::ConfigCommand, config, context::Context, output};

pub fn run(ctx: &Context, cmd: ConfigCommand) -> Result<ExitCode> {
    match cmd {
        ConfigCommand::Init { force } => init(ctx, force),
        ConfigCommand::Show => show(ctx),
        ConfigCommand::Validate => validate(ctx),
        ConfigCommand::Path => {
            if ctx.json {
                output::json(&json!({
                    "path": ctx.config_path,
                    "exists": ctx.config_path.exists(),
                    "dataDir": ctx.data_dir,
                }))?;
            } else {
                output::line(ctx.config_path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn init(ctx: &Context, force: bool) -> Result<ExitCode> {
    let path = &ctx.config_path;
    if path.exists() && !force {
        bail!(
            "{} already exists; edit it, or pass --force to replace it with the defaults",
            path.display()
        );
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir)?;
    }
    write_private_atomic(path, config::default_document().as_bytes())?;
    if ctx.json {
        output::json(&json!({ "path": path, "written": true }))?;
    } else {
        output::line(format!("wrote {}", path.display()));
        output::note("Edit it, then run `lango-node config validate`.");
    }
    Ok(ExitCode::SUCCESS)
}

fn show(ctx: &Context) -> Result<ExitCode> {
    let loaded = ctx.load_config()?;
    if ctx.json {
        output::json(&json!({
            "source": loaded.source,
            "envOverrides": loaded.env_overrides,
            "config": loaded.config,
        }))?;
    } else {
        match &loaded.source {
            Some(p) => output::note(format!("# from {}", p.display())),
            None => output::note(format!(
                "# {} does not exist: defaults",
                ctx.config_path.display()
            )),
        }
        for o in &loaded.env_overrides {
            output::note(format!("# {o} set from the environment"));
        }
        output::line(toml::to_string_pretty(&loaded.config)?.trim_end());
    }
    Ok(ExitCode::SUCCESS)
}

fn validate(ctx: &Context) -> Result<ExitCode> {
    match ctx.load_config() {
        Ok(loaded) => {
            if ctx.json {
                output::json(&json!({
                    "valid": true,
                    "path": ctx.config_path,
                    "exists": loaded.source.is_some(),
                    "warnings": loaded.warnings,
                    "envOverrides": loaded.env_overrides,
                }))?;
            } else if loaded.source.is_some() {
                output::line(format!("{} is valid", ctx.config_path.display()));
            } else {
                output::line(format!(
                    "{} does not exist; the defaults are valid (create it with `lango-node config init`)",
                    ctx.config_path.display()
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            if ctx.json {
                let problems = match &e {
                    config::ConfigError::Invalid { problems, .. } => problems.clone(),
                    other => vec![other.to_string()],
                };
                output::json(
                    &json!({ "valid": false, "path": ctx.config_path, "errors": problems }),
                )?;
                Ok(ExitCode::FAILURE)
            } else {
                Err(e.into())
            }
        }
    }
}

/// Creates `dir` (and parents) with mode 0700 when it does not exist.
fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("create {}", dir.display()))
}

/// Writes `bytes` to a fresh 0600 temporary file beside `path`, syncs it and renames it over
/// `path`, so a crash leaves either the old file or the new one.
fn write_private_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .context("configuration path has no file name")?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        lango_crypto::random::hex_string(8)?
    ));
    let result = (|| -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("create {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path).with_context(|| format!("rename into {}", path.display()))?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
