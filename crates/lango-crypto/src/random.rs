//! Randomness, always from the operating system's CSPRNG (`getrandom(2)` through ring).

use ring::rand::{SecureRandom, SystemRandom};

use crate::{Error, Result};

/// Fills `buf` with random bytes from the operating system.
pub fn fill(buf: &mut [u8]) -> Result<()> {
    SystemRandom::new().fill(buf).map_err(|_| Error::Rng)
}

/// Returns `N` random bytes from the operating system.
pub fn bytes<const N: usize>() -> Result<[u8; N]> {
    let mut out = [0u8; N];
    fill(&mut out)?;
    Ok(out)
}

/// Lowercase hex of `n` random bytes, for unique temporary names and identifiers.
pub fn hex_string(n: usize) -> Result<String> {
    let mut buf = vec![0u8; n];
    fill(&mut buf)?;
    Ok(hex::encode(buf))
}
