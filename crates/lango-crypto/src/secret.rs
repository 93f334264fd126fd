//! Types that hold secrets.
//!
//! Guarantees, for every type here:
//! - the memory is overwritten with zeros (volatile writes, `zeroize`) when the value drops;
//! - `Debug` and `Display` print `[redacted]` and nothing else;
//! - there is no `Clone` (a copy must be made on purpose, with [`SecretBytes::duplicate`]);
//! - `==` runs in constant time (through `subtle`).

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::{Error, Result};

const REDACTED: &str = "[redacted]";

macro_rules! redacted_fmt {
    ($ty:ty) => {
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(REDACTED)
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(REDACTED)
            }
        }
        impl PartialEq for $ty {
            fn eq(&self, other: &Self) -> bool {
                self.expose_bytes().ct_eq(other.expose_bytes()).into()
            }
        }
        impl Eq for $ty {}
    };
}

/// A 256-bit key: AES-256 keys, HMAC keys, KEKs, the master key, raw SQLCipher keys.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SecretKey32([u8; 32]);

impl SecretKey32 {
    /// Takes ownership of key bytes. The caller should zeroize any other copy it holds.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Copies a 32-byte slice into a key.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != 32 {
            return Err(Error::InvalidKey(format!(
                "expected 32 bytes, got {}",
                bytes.len()
            )));
        }
        // Copied straight into the key (no temporary array on the way).
        let mut k = Self([0u8; 32]);
        k.0.copy_from_slice(bytes);
        Ok(k)
    }

    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Result<Self> {
        let mut k = Self([0u8; 32]);
        crate::random::fill(&mut k.0)?;
        Ok(k)
    }

    /// An explicit copy (there is deliberately no `Clone`), e.g. to hand to a worker thread.
    pub fn duplicate(&self) -> Self {
        Self(self.0)
    }

    /// The key bytes. Keep the borrow short and never copy them into an unprotected buffer.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// An all-zero key to derive into in place (see [`SecretKey32::expose_mut`]), so a KDF's
    /// output never sits in a plain array first.
    pub(crate) fn zeroed() -> Self {
        Self([0u8; 32])
    }

    /// Mutable access to the key bytes, for writing a derived key in place.
    pub(crate) fn expose_mut(&mut self) -> &mut [u8; 32] {
        &mut self.0
    }

    fn expose_bytes(&self) -> &[u8] {
        &self.0
    }
}

redacted_fmt!(SecretKey32);

/// A variable-length secret: decrypted values, encoded private keys.
#[derive(Zeroize, ZeroizeOnDrop, Default)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Takes ownership of a buffer; it will be wiped on drop.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// Copies a slice into a new secret buffer.
    pub fn from_slice(bytes: &[u8]) -> Self {
        Self(bytes.to_vec())
    }

    /// The secret bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Mutable access, e.g. for decrypting in place.
    pub fn expose_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }

    /// Length in bytes (not secret).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// An explicit copy. There is deliberately no `Clone`.
    pub fn duplicate(&self) -> Self {
        Self(self.0.clone())
    }

    fn expose_bytes(&self) -> &[u8] {
        &self.0
    }
}

redacted_fmt!(SecretBytes);

/// A secret text: passphrases, tokens.
#[derive(Zeroize, ZeroizeOnDrop, Default)]
pub struct SecretString(String);

impl SecretString {
    /// Takes ownership of a string; it will be wiped on drop.
    pub fn new(s: String) -> Self {
        Self(s)
    }

    /// The secret text.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Mutable access, e.g. to trim a line read from a terminal in place.
    pub fn expose_mut(&mut self) -> &mut String {
        &mut self.0
    }

    /// Length in characters (not secret).
    pub fn char_count(&self) -> usize {
        self.0.chars().count()
    }

    /// An explicit copy. There is deliberately no `Clone`.
    pub fn duplicate(&self) -> Self {
        Self(self.0.clone())
    }

    fn expose_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

redacted_fmt!(SecretString);

impl From<String> for SecretString {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(v: Vec<u8>) -> Self {
        Self(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_is_redacted() {
        let k = SecretKey32::from_bytes([7u8; 32]);
        let b = SecretBytes::from_slice(b"hunter2-canary");
        let s = SecretString::new("correct horse battery staple".into());
        for out in [
            format!("{k:?}"),
            format!("{k}"),
            format!("{b:?}"),
            format!("{b}"),
            format!("{s:?}"),
            format!("{s}"),
            format!("{:?}", Some(&s)),
        ] {
            assert!(out.contains(REDACTED), "{out}");
            assert!(!out.contains("hunter2"));
            assert!(!out.contains("horse"));
            assert!(!out.contains("7, 7"));
        }
    }

    #[test]
    fn equality_compares_content() {
        assert_eq!(
            SecretKey32::from_bytes([1; 32]),
            SecretKey32::from_bytes([1; 32])
        );
        assert_ne!(
            SecretKey32::from_bytes([1; 32]),
            SecretKey32::from_bytes([2; 32])
        );
        assert_ne!(
            SecretBytes::from_slice(b"ab"),
            SecretBytes::from_slice(b"abc")
        );
    }

    #[test]
    fn zeroize_wipes() {
        let mut b = SecretBytes::from_slice(b"abc");
        b.zeroize();
        assert!(b.is_empty());
        let mut k = SecretKey32::from_bytes([9; 32]);
        k.zeroize();
        assert_eq!(k.expose(), &[0u8; 32]);
    }

    #[test]
    fn from_slice_checks_length() {
        assert!(SecretKey32::from_slice(&[0u8; 31]).is_err());
        assert!(SecretKey32::from_slice(&[0u8; 32]).is_ok());
    }

    // Type-level: key types must not be Clone (T-7). If one of them gains `Clone`, the
    // type inference below becomes ambiguous and this module stops compiling.
    trait AmbiguousIfClone<A> {
        fn check() {}
    }
    impl<T: ?Sized> AmbiguousIfClone<()> for T {}
    #[allow(dead_code)]
    struct IsClone;
    impl<T: Clone> AmbiguousIfClone<IsClone> for T {}
    const _: fn() = || {
        let _ = <SecretKey32 as AmbiguousIfClone<_>>::check;
        let _ = <SecretBytes as AmbiguousIfClone<_>>::check;
        let _ = <SecretString as AmbiguousIfClone<_>>::check;
    };
}
