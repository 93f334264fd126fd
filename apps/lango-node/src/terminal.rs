//! The operator's terminal: hidden prompts on the controlling TTY (never stdout),
//! confirmations, and the optional passphrase line on stdin (`--passphrase-stdin`).
#![allow(clippy::print_stderr)]

use std::io::{BufRead, IsTerminal, Write};

use lango_crypto::SecretString;
use lango_secrets::passphrase::{Prompter, STDIN_TIMEOUT, read_line_with_timeout};

/// The terminal prompter used by every command that unlocks.
pub struct Tty {
    /// `--non-interactive`: never prompt.
    pub non_interactive: bool,
    /// `--passphrase-stdin`: read one passphrase line from stdin.
    pub passphrase_stdin: bool,
}

/// Whether a controlling terminal can be opened and stdin is a terminal (PA-4).
pub fn interactive_available() -> bool {
    std::io::stdin().is_terminal()
        && std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty")
            .is_ok()
}

impl Prompter for Tty {
    fn interactive(&self) -> bool {
        !self.non_interactive && interactive_available()
    }

    fn prompt_hidden(&self, prompt: &str) -> lango_secrets::Result<Option<SecretString>> {
        match rpassword::prompt_password(prompt) {
            Ok(p) => Ok(Some(SecretString::new(p))),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(lango_secrets::Error::Io {
                context: "read from the terminal".into(),
                source: e,
            }),
        }
    }

    fn stdin_available(&self) -> bool {
        self.passphrase_stdin
    }

    fn read_stdin_line(&self) -> lango_secrets::Result<Option<SecretString>> {
        Ok(read_line_with_timeout(std::io::stdin(), STDIN_TIMEOUT))
    }

    fn warn(&self, message: &str) {
        eprintln!("{message}");
    }
}

/// Asks a yes/no question on the terminal; default no, `y`/`yes` in any case, EOF = no.
/// Without a terminal this returns `None` (the caller decides: `--force` or an error).
pub fn confirm(question: &str) -> Option<bool> {
    if !interactive_available() {
        return None;
    }
    let mut tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .ok()?;
    let _ = write!(tty, "{question} [y/N] ");
    let _ = tty.flush();
    let mut line = String::new();
    let mut reader = std::io::BufReader::new(tty);
    match reader.read_line(&mut line) {
        Ok(0) | Err(_) => Some(false),
        Ok(_) => Some(matches!(
            line.trim().to_ascii_lowercase().as_str(),
            "y" | "yes"
        )),
    }
}
