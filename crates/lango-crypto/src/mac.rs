//! HMAC-SHA256 and constant-time comparison.

use ring::hmac;
use subtle::ConstantTimeEq;

/// Length of an HMAC-SHA256 tag.
pub const HMAC_SHA256_LEN: usize = 32;

/// HMAC-SHA256 of `msg` under `key` (any key length, as RFC 2104 allows).
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; HMAC_SHA256_LEN] {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let tag = hmac::sign(&k, msg);
    let mut out = [0u8; HMAC_SHA256_LEN];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Checks an HMAC-SHA256 tag in constant time. A tag of the wrong length never verifies.
pub fn verify_hmac_sha256(key: &[u8], msg: &[u8], tag: &[u8]) -> bool {
    let expected = hmac_sha256(key, msg);
    ct_eq(&expected, tag)
}

/// Constant-time equality of two byte strings. The lengths are not secret: unequal lengths
/// return `false` immediately; equal lengths are compared without data-dependent branches.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4231_case_2() {
        let tag = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(tag),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(verify_hmac_sha256(
            b"Jefe",
            b"what do ya want for nothing?",
            &tag
        ));
        assert!(!verify_hmac_sha256(
            b"Jefe",
            b"what do ya want for nothing!",
            &tag
        ));
        assert!(!verify_hmac_sha256(
            b"Jefe",
            b"what do ya want for nothing?",
            &tag[..31]
        ));
    }

    #[test]
    fn ct_eq_basics() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(ct_eq(b"", b""));
    }
}
