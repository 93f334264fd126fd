//! The container's attach stream, demultiplexed (spec §2.3.3 step 6).
//!
//! The engine multiplexes stdout and stderr into frames (an 8-byte header: stream type, three
//! zero bytes, big-endian length; then the payload); the client library splits them. What
//! this module adds is the policy: only stdout feeds the result, up to `maxOutputBytes`, and
//! going over is an error at once (the container is then killed); stderr is kept for the local
//! log only, up to 64 KiB, and the rest is dropped, so a container cannot make the node buffer
//! without bound.

/// stdout went over its cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stdout over {0} bytes")]
pub struct TooLarge(pub usize);

/// The capped capture of one call.
#[derive(Debug)]
pub struct Capture {
    stdout_cap: usize,
    stderr_keep: usize,
    /// The result channel.
    pub stdout: Vec<u8>,
    /// The local-only stderr capture.
    pub stderr: Vec<u8>,
}

impl Capture {
    /// With the stdout cap and the stderr bytes kept.
    pub fn new(stdout_cap: usize, stderr_keep: usize) -> Self {
        Self {
            stdout_cap,
            stderr_keep,
            stdout: Vec::new(),
            stderr: Vec::new(),
        }
    }

    /// A stdout payload; refused (and nothing more buffered) once over the cap.
    pub fn stdout(&mut self, payload: &[u8]) -> Result<(), TooLarge> {
        if self.stdout.len() + payload.len() > self.stdout_cap {
            return Err(TooLarge(self.stdout_cap));
        }
        self.stdout.extend_from_slice(payload);
        Ok(())
    }

    /// A stderr payload: kept up to the limit, the rest dropped.
    pub fn stderr(&mut self, payload: &[u8]) {
        let room = self.stderr_keep.saturating_sub(self.stderr.len());
        self.stderr
            .extend_from_slice(&payload[..payload.len().min(room)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaved_streams_are_kept_apart() {
        let mut c = Capture::new(1024, 64);
        c.stdout(b"{\"a\"").unwrap();
        c.stderr(b"warning");
        c.stdout(b":1}").unwrap();
        assert_eq!(c.stdout, b"{\"a\":1}");
        assert_eq!(c.stderr, b"warning");
    }

    #[test]
    fn caps() {
        let mut c = Capture::new(16, 4);
        c.stdout(&[b'x'; 16]).unwrap();
        assert_eq!(c.stdout(b"y"), Err(TooLarge(16)));
        assert_eq!(c.stdout.len(), 16, "nothing buffered past the cap");
        c.stderr(&[b'e'; 100]);
        c.stderr(b"more");
        assert_eq!(c.stderr.len(), 4);
        let mut empty = Capture::new(0, 0);
        empty.stdout(b"").unwrap();
        assert!(empty.stdout(b"x").is_err());
    }
}
