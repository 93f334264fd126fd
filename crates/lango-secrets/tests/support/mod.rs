//! Shared helpers for the vault tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
    sync::Mutex,
};

use lango_crypto::{KdfConfig, SecretString, kdf::Argon2Config};
use lango_secrets::{Result, VaultConfig, passphrase::Prompter};

/// A scripted terminal: answers prompts from a queue and records warnings. It stands in for a
/// human at a terminal only; keyfiles, stdin pipes, SQLCipher and keyrings are real.
#[derive(Default)]
pub struct Script {
    pub answers: Mutex<VecDeque<String>>,
    pub interactive: bool,
    pub stdin: Mutex<Option<String>>,
    pub warnings: Mutex<Vec<String>>,
    pub prompts: Mutex<Vec<String>>,
}

impl Script {
    pub fn typing(answers: &[&str]) -> Self {
        Self {
            answers: Mutex::new(answers.iter().map(|s| s.to_string()).collect()),
            interactive: true,
            ..Self::default()
        }
    }

    pub fn stdin(line: &str) -> Self {
        Self {
            stdin: Mutex::new(Some(line.to_owned())),
            ..Self::default()
        }
    }

    pub fn none() -> Self {
        Self::default()
    }

    pub fn warnings(&self) -> Vec<String> {
        self.warnings.lock().unwrap().clone()
    }
}

impl Prompter for Script {
    fn interactive(&self) -> bool {
        self.interactive
    }
    fn prompt_hidden(&self, prompt: &str) -> Result<Option<SecretString>> {
        self.prompts.lock().unwrap().push(prompt.to_owned());
        Ok(self
            .answers
            .lock()
            .unwrap()
            .pop_front()
            .map(SecretString::new))
    }
    fn stdin_available(&self) -> bool {
        self.stdin.lock().unwrap().is_some()
    }
    fn read_stdin_line(&self) -> Result<Option<SecretString>> {
        let line = self.stdin.lock().unwrap().take();
        Ok(line.and_then(|l| {
            lango_secrets::passphrase::read_line_with_timeout(
                std::io::Cursor::new(l.into_bytes()),
                std::time::Duration::from_secs(5),
            )
        }))
    }
    fn warn(&self, message: &str) {
        self.warnings.lock().unwrap().push(message.to_owned());
    }
}

pub const PASS: &str = "correct horse battery staple";

/// A configuration with the cheapest Argon2id the envelope accepts, no keyring.
pub fn config() -> VaultConfig {
    let mut c = VaultConfig {
        kdf: KdfConfig {
            argon2: Argon2Config {
                memory_kib: 19_456,
                time_cost: 2,
                parallelism: 1,
            },
            ..KdfConfig::default()
        },
        ..VaultConfig::default()
    };
    c.keyring.enabled = false;
    c
}

/// A private data directory inside a temp dir.
pub fn data_dir() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("lango");
    (t, d)
}

/// Every file in a directory with its bytes (for byte-identical checks).
pub fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Writes a keyfile with mode 0600.
pub fn keyfile(dir: &Path, content: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let p = dir.join("keyfile");
    std::fs::write(&p, content).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}
