//! Docker's multiplexed attach stream (spec §2.3.3 step 6): frames of an 8-byte header (stream
//! type, three zero bytes, big-endian u32 length) and a payload. Only stdout feeds the result,
//! up to a cap; stderr is kept locally up to 64 KiB; a malformed header or an oversized length
//! is an error at once, so a container cannot make the node buffer without bound.

/// Why demultiplexing stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DemuxError {
    /// The header's stream type is not 0, 1 or 2, or its padding is not zero.
    #[error("malformed frame header")]
    Malformed,
    /// stdout went over the cap.
    #[error("stdout over {0} bytes")]
    TooLarge(usize),
}

/// Incremental demultiplexer: feed it bytes as they arrive.
#[derive(Debug)]
pub struct Demux {
    stdout_cap: usize,
    stderr_keep: usize,
    header: Vec<u8>,
    /// (stream, bytes left) of the frame being read.
    current: Option<(u8, usize)>,
    /// The result channel.
    pub stdout: Vec<u8>,
    /// The local-only stderr capture.
    pub stderr: Vec<u8>,
}

impl Demux {
    /// With the stdout cap and the stderr bytes kept.
    pub fn new(stdout_cap: usize, stderr_keep: usize) -> Self {
        Self {
            stdout_cap,
            stderr_keep,
            header: Vec::with_capacity(8),
            current: None,
            stdout: Vec::new(),
            stderr: Vec::new(),
        }
    }

    /// Consumes `data`.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), DemuxError> {
        while !data.is_empty() {
            match self.current {
                None => {
                    let take = (8 - self.header.len()).min(data.len());
                    self.header.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.header.len() == 8 {
                        let h = &self.header;
                        if h[0] > 2 || h[1..4] != [0, 0, 0] {
                            return Err(DemuxError::Malformed);
                        }
                        let len = u32::from_be_bytes([h[4], h[5], h[6], h[7]]) as usize;
                        if h[0] == 1 && self.stdout.len() + len > self.stdout_cap {
                            return Err(DemuxError::TooLarge(self.stdout_cap));
                        }
                        self.current = (len > 0).then_some((h[0], len));
                        self.header.clear();
                    }
                }
                Some((stream, left)) => {
                    let take = left.min(data.len());
                    let chunk = &data[..take];
                    match stream {
                        1 => self.stdout.extend_from_slice(chunk),
                        2 => {
                            let room = self.stderr_keep.saturating_sub(self.stderr.len());
                            self.stderr.extend_from_slice(&chunk[..take.min(room)]);
                        }
                        _ => {}
                    }
                    data = &data[take..];
                    self.current = (left > take).then_some((stream, left - take));
                }
            }
        }
        Ok(())
    }

    /// Whether the stream ended on a frame boundary.
    pub fn complete(&self) -> bool {
        self.current.is_none() && self.header.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(stream: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![stream, 0, 0, 0];
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn single_and_multiple_frames() {
        let mut d = Demux::new(1024, 64);
        d.feed(&frame(1, b"{\"output\":{}}")).unwrap();
        assert_eq!(d.stdout, b"{\"output\":{}}");
        assert!(d.complete());
        let mut d = Demux::new(1024, 64);
        let mut all = frame(1, b"{\"a\"");
        all.extend(frame(2, b"warning"));
        all.extend(frame(1, b":1}"));
        // Byte by byte: headers and payloads split anywhere.
        for b in &all {
            d.feed(std::slice::from_ref(b)).unwrap();
        }
        assert_eq!(d.stdout, b"{\"a\":1}");
        assert_eq!(d.stderr, b"warning");
    }

    #[test]
    fn empty_truncated_and_bad() {
        let mut d = Demux::new(16, 4);
        d.feed(b"").unwrap();
        assert!(d.complete());
        d.feed(&[1, 0, 0]).unwrap();
        assert!(!d.complete(), "truncated header");
        assert_eq!(Demux::new(16, 4).feed(&[3, 0, 0, 0, 0, 0, 0, 1]), Err(DemuxError::Malformed));
        assert_eq!(Demux::new(16, 4).feed(&[1, 9, 0, 0, 0, 0, 0, 1]), Err(DemuxError::Malformed));
        // The oversized length is refused from the header, before any payload is buffered.
        assert_eq!(Demux::new(16, 4).feed(&[1, 0, 0, 0, 0, 0, 0, 17]), Err(DemuxError::TooLarge(16)));
        let mut d = Demux::new(16, 4);
        d.feed(&frame(2, &[b'e'; 100])).unwrap();
        assert_eq!(d.stderr.len(), 4, "stderr kept only up to its cap");
    }
}
