//! Where unlock material comes from (rules PA, KF).
//!
//! Sources are tried in the fixed order keyring → keyfile → interactive → stdin;
//! `security.passphrase.sources` can remove sources but not reorder them. The binary never
//! reads a passphrase from argv or from an environment variable.
//!
//! The application implements [`Prompter`] (terminal prompts without echo, stdin); this crate
//! implements the keyfile rules and the policy for new passphrases.

use std::{fmt, io::Read, path::Path, sync::mpsc, time::Duration};

use lango_crypto::SecretString;
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::{Error, Result};

/// A source of unlock material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The OS keyring (an unlock secret for a keyring slot; or the Go passphrase entry).
    Keyring,
    /// The keyfile.
    Keyfile,
    /// A prompt on the controlling terminal.
    Interactive,
    /// One line on standard input.
    Stdin,
}

impl Source {
    /// Every source, in the fixed order.
    pub const ALL: [Source; 4] = [
        Source::Keyring,
        Source::Keyfile,
        Source::Interactive,
        Source::Stdin,
    ];

    /// The name used in configuration and messages.
    pub fn name(self) -> &'static str {
        match self {
            Source::Keyring => "keyring",
            Source::Keyfile => "keyfile",
            Source::Interactive => "interactive",
            Source::Stdin => "stdin",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Terminal and stdin access, implemented by the application.
pub trait Prompter: Send + Sync {
    /// Whether an interactive prompt can be shown (stdin is a terminal and a controlling
    /// terminal can be opened, and `--non-interactive` was not given).
    fn interactive(&self) -> bool;
    /// Shows `prompt` on the terminal and reads a line without echo. `Ok(None)` on EOF.
    fn prompt_hidden(&self, prompt: &str) -> Result<Option<SecretString>>;
    /// Whether stdin is not a terminal (a pipe or a file) and may hold a passphrase.
    fn stdin_available(&self) -> bool;
    /// Reads one passphrase line from stdin (PA-5); `Ok(None)` when nothing usable came.
    fn read_stdin_line(&self) -> Result<Option<SecretString>>;
    /// Shows a warning to the operator (stderr, never stdout).
    fn warn(&self, message: &str);
}

/// A prompter for non-interactive embedders: no terminal, no stdin.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoPrompt;

impl Prompter for NoPrompt {
    fn interactive(&self) -> bool {
        false
    }
    fn prompt_hidden(&self, _prompt: &str) -> Result<Option<SecretString>> {
        Ok(None)
    }
    fn stdin_available(&self) -> bool {
        false
    }
    fn read_stdin_line(&self) -> Result<Option<SecretString>> {
        Ok(None)
    }
    fn warn(&self, message: &str) {
        tracing::warn!("{message}");
    }
}

/// Answers every passphrase prompt with a passphrase the caller already holds (read once for
/// an operation that needs it again, so the operator is not asked twice). Warnings go to
/// `inner`.
pub struct Given<'a> {
    value: SecretString,
    inner: &'a dyn Prompter,
}

impl<'a> Given<'a> {
    /// A prompter that always answers `value`.
    pub fn new(value: SecretString, inner: &'a dyn Prompter) -> Self {
        Self { value, inner }
    }
}

impl Prompter for Given<'_> {
    fn interactive(&self) -> bool {
        true
    }
    fn prompt_hidden(&self, _prompt: &str) -> Result<Option<SecretString>> {
        Ok(Some(self.value.duplicate()))
    }
    fn stdin_available(&self) -> bool {
        false
    }
    fn read_stdin_line(&self) -> Result<Option<SecretString>> {
        Ok(None)
    }
    fn warn(&self, message: &str) {
        self.inner.warn(message);
    }
}

/// Longest stdin passphrase line (PA-5).
pub const STDIN_MAX: usize = 1024;
/// How long stdin is waited for (PA-5).
pub const STDIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest keyfile (KF-2).
pub const KEYFILE_MAX: u64 = 4096;

/// Reads exactly one line of at most [`STDIN_MAX`] bytes from `reader` on a helper thread,
/// waiting at most `timeout`. One trailing `\n` or `\r\n` is removed, nothing else. Empty,
/// EOF without data, over-long, non-UTF-8 or timed out → `None`.
pub fn read_line_with_timeout<R: Read + Send + 'static>(
    mut reader: R,
    timeout: Duration,
) -> Option<SecretString> {
    let (tx, rx) = mpsc::sync_channel::<Option<SecretString>>(1);
    let spawned = std::thread::Builder::new()
        .name("lango-stdin".into())
        .spawn(move || {
            // Room for the longest line we look at (STDIN_MAX + 2 bytes: over-long lines are
            // cut there), so the buffer never reallocates and leaves no copy behind.
            let mut buf = Vec::with_capacity(STDIN_MAX + 2);
            let mut byte = [0u8; 1];
            let mut ok = true;
            loop {
                match reader.read(&mut byte) {
                    Ok(0) => break,
                    Ok(_) if byte[0] == b'\n' => break,
                    Ok(_) => {
                        buf.push(byte[0]);
                        if buf.len() > STDIN_MAX + 1 {
                            ok = false;
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        ok = false;
                        break;
                    }
                }
            }
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            let result = if ok && !buf.is_empty() && buf.len() <= STDIN_MAX {
                match String::from_utf8(std::mem::take(&mut buf)) {
                    Ok(s) => Some(SecretString::new(s)),
                    Err(e) => {
                        e.into_bytes().zeroize();
                        None
                    }
                }
            } else {
                None
            };
            buf.zeroize();
            let _ = tx.send(result);
        });
    if spawned.is_err() {
        return None;
    }
    rx.recv_timeout(timeout).ok().flatten()
}

/// Reads the keyfile under KF-1..KF-3: a regular file (no symlink) owned by us, no group or
/// other bits, in a directory not writable by others, at most 4 KiB, no NUL; trailing
/// `\n`, `\r`, space and tab removed. `Ok(None)` when it does not exist.
pub fn read_keyfile(path: &Path) -> Result<Option<SecretString>> {
    let check = lango_store::fsutil::check_private_file(path).map_err(Error::from)?;
    match check {
        None => return Ok(None),
        Some(Err(problem)) => {
            return Err(Error::KeyfileInsecure {
                path: path.to_owned(),
                reason: problem.to_string(),
            });
        }
        Some(Ok(len)) if len > KEYFILE_MAX => return Err(Error::KeyfileTooLarge(path.to_owned())),
        Some(Ok(_)) => {}
    }
    // One pre-sized, wiping buffer (KEYFILE_MAX + 1 bytes, never reallocated): no copy of
    // the passphrase is left in freed memory, on success or on any error below.
    let mut bytes = match lango_store::fsutil::read_secret_nofollow(path, KEYFILE_MAX as usize) {
        Ok(b) => b,
        Err(lango_store::Error::TooLarge { .. }) => {
            return Err(Error::KeyfileTooLarge(path.to_owned()));
        }
        Err(lango_store::Error::BadFile { reason, .. }) => {
            return Err(Error::KeyfileInsecure {
                path: path.to_owned(),
                reason,
            });
        }
        Err(e) => return Err(e.into()),
    };
    if bytes.contains(&0) {
        return Err(Error::KeyfileInsecure {
            path: path.to_owned(),
            reason: "contains a NUL byte".into(),
        });
    }
    while matches!(bytes.last(), Some(b'\n' | b'\r' | b' ' | b'\t')) {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Err(Error::KeyfileEmpty(path.to_owned()));
    }
    // Moves the allocation (not its bytes) into the string; on invalid UTF-8 it comes back
    // into the wiping buffer.
    match String::from_utf8(std::mem::take(&mut *bytes)) {
        Ok(s) => Ok(Some(SecretString::new(s))),
        Err(e) => {
            *bytes = e.into_bytes();
            Err(Error::KeyfileInsecure {
                path: path.to_owned(),
                reason: "is not UTF-8 text".into(),
            })
        }
    }
}

/// Shreds the keyfile after a verified unlock (KF-5): zeros of its length, fsync, unlink,
/// fsync the directory. Failure is a warning, never an error.
pub fn shred_keyfile(path: &Path, prompter: &dyn Prompter) {
    match lango_store::fsutil::overwrite_and_remove(path) {
        Ok(()) => {
            tracing::info!(event = "secrets.keyfile.shredded", path = %path.display(), "keyfile shredded")
        }
        Err(e) => {
            tracing::warn!(event = "secrets.keyfile.shred_failed", path = %path.display(), error = %e, "could not shred keyfile");
            prompter.warn(&format!(
                "warning: could not shred keyfile {}: {e}",
                path.display()
            ));
        }
    }
}

/// Writes a kept keyfile atomically (KF-6): the passphrase and one newline, mode 0600.
pub fn write_keyfile(path: &Path, passphrase: &SecretString) -> Result<()> {
    let mut text = format!("{}\n", passphrase.expose());
    let r = lango_store::fsutil::write_atomic_private(path, text.as_bytes());
    text.zeroize();
    r.map_err(Error::from)
}

/// Checks a new or changed passphrase against PA-10.
pub fn check_policy(p: &SecretString, min_length: u32) -> Result<()> {
    let s = p.expose();
    let n = s.chars().count();
    let fail = |reason: String| Err(Error::PassphrasePolicy { reason });
    if n < min_length.max(8) as usize {
        return fail(format!(
            "it must be at least {} characters long",
            min_length.max(8)
        ));
    }
    if s.chars().any(|c| c == '\0' || c == '\r' || c == '\n') {
        return fail("it must not contain NUL, CR or LF".into());
    }
    if s.starts_with(char::is_whitespace) || s.ends_with(char::is_whitespace) {
        return fail("it must not start or end with whitespace".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy() {
        let ok = SecretString::new("correct horse battery staple".into());
        check_policy(&ok, 12).unwrap();
        for bad in [
            "short",
            " leading space here",
            "trailing space here ",
            "has\nnewline inside",
        ] {
            assert!(
                check_policy(&SecretString::new(bad.into()), 12).is_err(),
                "{bad:?}"
            );
        }
        // The floor is 8 whatever the configuration says.
        assert!(check_policy(&SecretString::new("1234567".into()), 4).is_err());
        // Characters, not bytes.
        check_policy(&SecretString::new("ééééééééééééé".into()), 12).unwrap();
    }

    #[test]
    fn stdin_line_rules() {
        let r = |s: &'static [u8]| {
            read_line_with_timeout(s, Duration::from_secs(5)).map(|p| p.expose().to_owned())
        };
        assert_eq!(r(b"secret\n").as_deref(), Some("secret"));
        assert_eq!(r(b"secret\r\n").as_deref(), Some("secret"));
        assert_eq!(r(b"  spaced  \n").as_deref(), Some("  spaced  "));
        assert_eq!(r(b"first\nsecond\n").as_deref(), Some("first"));
        assert_eq!(r(b"no newline").as_deref(), Some("no newline"));
        assert_eq!(r(b"\n"), None);
        assert_eq!(r(b""), None);
        let long: &'static [u8] = Box::leak(vec![b'a'; 1025].into_boxed_slice());
        assert_eq!(r(long), None);
        let max: &'static [u8] = Box::leak(vec![b'a'; 1024].into_boxed_slice());
        assert_eq!(r(max).map(|s| s.len()), Some(1024));
        // The line stays in the one buffer it was read into (no reallocation left copies).
        let mut p = read_line_with_timeout(max, Duration::from_secs(5)).unwrap();
        assert_eq!(p.expose_mut().capacity(), STDIN_MAX + 2);
    }

    /// The keyfile is read into one wiping buffer allocated once (KEYFILE_MAX + 1 bytes) and
    /// the passphrase is that very allocation: no reallocation while reading, trimming or
    /// converting left a copy of it in freed memory. (Freed memory cannot be inspected from
    /// safe Rust; the allocation's capacity can.)
    #[test]
    fn keyfile_is_read_into_one_presized_buffer() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let path = dir.path().join("keyfile");
        let long = "x".repeat(4000);
        for content in [
            "correct horse battery staple\n",
            "trailing blanks \t\r\n\n",
            long.as_str(),
        ] {
            std::fs::write(&path, content).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            let mut p = read_keyfile(&path).unwrap().unwrap();
            assert_eq!(
                p.expose(),
                content.trim_end_matches(['\n', '\r', ' ', '\t'])
            );
            assert_eq!(
                p.expose_mut().capacity(),
                KEYFILE_MAX as usize + 1,
                "the keyfile buffer was reallocated or copied"
            );
        }
        std::fs::write(&path, "x".repeat(KEYFILE_MAX as usize + 1)).unwrap();
        assert!(matches!(
            read_keyfile(&path),
            Err(Error::KeyfileTooLarge(_))
        ));
        std::fs::write(&path, "a\0b").unwrap();
        assert!(matches!(
            read_keyfile(&path),
            Err(Error::KeyfileInsecure { .. })
        ));
        std::fs::write(&path, [0xff, 0xfe, b'a']).unwrap();
        assert!(matches!(
            read_keyfile(&path),
            Err(Error::KeyfileInsecure { .. })
        ));
        std::fs::write(&path, " \n").unwrap();
        assert!(matches!(read_keyfile(&path), Err(Error::KeyfileEmpty(_))));
    }

    #[test]
    fn stdin_timeout() {
        struct Never;
        impl Read for Never {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                std::thread::sleep(Duration::from_secs(30));
                Ok(0)
            }
        }
        let t = std::time::Instant::now();
        assert!(read_line_with_timeout(Never, Duration::from_millis(100)).is_none());
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
