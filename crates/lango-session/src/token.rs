//! Session tokens: minting (spec §2.6), the wire format check (T-1, R-13) and the
//! constant-time comparison every token check goes through.

use std::fmt;

use lango_crypto::{SecretKey32, SecretString, mac};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::Error;

/// Number of characters of a token on the wire: 64 lowercase hex digits (256 bits).
pub const TOKEN_HEX_LEN: usize = 64;

/// Number of fresh random bytes that go into each token (256 bits).
pub const TOKEN_RANDOM_BYTES: usize = 32;

/// A session bearer token.
///
/// - On the wire it is 64 lowercase hex characters ([`SessionToken::expose`]).
/// - `Debug` and `Display` print `[redacted]`, never the token.
/// - The text is overwritten with zeros when the value drops (it lives in a
///   [`lango_crypto::SecretString`]); the session store drops its copy when the session is
///   removed, replaced, expires or is invalidated.
/// - There is no `Clone`: copies are made on purpose with [`SessionToken::duplicate`].
/// - `==` is constant time.
#[derive(PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct SessionToken(SecretString);

impl SessionToken {
    /// Parses a token received from a peer (a SessionAck, a 1.2 Finish, an A2A request).
    ///
    /// Accepts exactly `^[0-9a-f]{64}$`; anything else is [`Error::MalformedToken`]. The error
    /// never contains the input.
    pub fn parse(s: &str) -> Result<Self, Error> {
        if is_well_formed(s) {
            Ok(Self(SecretString::new(s.to_owned())))
        } else {
            Err(Error::MalformedToken)
        }
    }

    /// The 64 hex characters, for the wire. Keep the borrow short; never log it.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    /// An explicit copy. There is deliberately no `Clone`.
    pub fn duplicate(&self) -> Self {
        Self(self.0.duplicate())
    }

    /// Constant-time comparison with a presented token string. The length is not secret
    /// (every well-formed token has 64 characters); the content is compared without
    /// data-dependent branches.
    pub fn matches(&self, presented: &str) -> bool {
        mac::ct_eq(self.expose().as_bytes(), presented.as_bytes())
    }

    pub(crate) fn from_secret(s: SecretString) -> Self {
        Self(s)
    }
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionToken([redacted])")
    }
}

impl fmt::Display for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Whether `s` has the wire form of a token: exactly 64 characters from `[0-9a-f]`.
/// Runs in time that depends only on the length (every byte is examined).
pub(crate) fn is_well_formed(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != TOKEN_HEX_LEN {
        return false;
    }
    // Fold over every byte instead of returning at the first bad one.
    b.iter().fold(true, |ok, c| {
        ok & (c.is_ascii_digit() | (b'a'..=b'f').contains(c))
    })
}

/// The token of §2.6: `lowercase_hex(HMAC-SHA256(key, random ‖ UTF-8(peer_did)))`.
///
/// The HMAC adds nothing over the 256 random bits (it is kept for parity with the
/// reference); every intermediate buffer is wiped.
pub(crate) fn mint(
    key: &SecretKey32,
    random: &[u8; TOKEN_RANDOM_BYTES],
    peer_did: &str,
) -> SessionToken {
    let mut msg = Zeroizing::new(Vec::with_capacity(TOKEN_RANDOM_BYTES + peer_did.len()));
    msg.extend_from_slice(random);
    msg.extend_from_slice(peer_did.as_bytes());
    let tag = Zeroizing::new(mac::hmac_sha256(key.expose(), &msg));
    let mut text = String::with_capacity(TOKEN_HEX_LEN);
    for byte in tag.iter() {
        text.push(hex_digit(byte >> 4));
        text.push(hex_digit(byte & 0x0f));
    }
    SessionToken::from_secret(SecretString::new(text))
}

/// Mints a token from fresh operating-system randomness.
pub(crate) fn mint_random(key: &SecretKey32, peer_did: &str) -> Result<SessionToken, Error> {
    let mut random = Zeroizing::new([0u8; TOKEN_RANDOM_BYTES]);
    lango_crypto::random::fill(random.as_mut_slice()).map_err(|_| Error::Rng)?;
    Ok(mint(key, &random, peer_did))
}

/// The key of the token index: HMAC-SHA256 of the token under a per-store random key.
/// Keyed, so the index reveals nothing about tokens and cannot be precomputed.
pub(crate) fn index_key(key: &SecretKey32, token: &str) -> [u8; 32] {
    mac::hmac_sha256(key.expose(), token.as_bytes())
}

fn hex_digit(n: u8) -> char {
    // `n` is a nibble (0..=15); `from_digit` cannot fail for it.
    char::from_digit(u32::from(n), 16).unwrap_or('0')
}

#[cfg(test)]
mod tests {
    use super::*;

    const DID_R: &str =
        "did:lango:02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5";

    fn bytes(start: u8) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = start + i as u8;
        }
        out
    }

    /// Spec §2.8 V4: the token minted with injected randomness.
    #[test]
    fn v4_token_vector() {
        let key = SecretKey32::from_bytes(bytes(0x20));
        let token = mint(&key, &bytes(0x40), DID_R);
        assert_eq!(
            token.expose(),
            "95e9defda3cea475c7459a95ea0bbe012a8ee78f7f42ad2465063cf40ea33b76"
        );
    }

    #[test]
    fn minted_tokens_are_well_formed_and_distinct() {
        let key = SecretKey32::generate().unwrap();
        let a = mint_random(&key, DID_R).unwrap();
        let b = mint_random(&key, DID_R).unwrap();
        assert!(is_well_formed(a.expose()));
        assert!(is_well_formed(b.expose()));
        assert_ne!(a, b);
    }

    #[test]
    fn format_check() {
        let good = "0123456789abcdef".repeat(4);
        assert!(is_well_formed(&good));
        assert!(SessionToken::parse(&good).is_ok());
        for bad in [
            String::new(),
            good[..63].to_owned(),
            format!("{good}0"),
            good.to_uppercase(),
            format!("{}g", &good[..63]),
            format!("{} ", &good[..63]),
            format!("{}é", &good[..62]),
        ] {
            assert!(!is_well_formed(&bad), "{bad:?} accepted");
            assert_eq!(SessionToken::parse(&bad).err(), Some(Error::MalformedToken));
        }
    }

    /// T-1 "uses the constant-time compare": every token comparison goes through
    /// `SessionToken::matches`, which is `lango_crypto::mac::ct_eq`.
    #[test]
    fn matches_goes_through_the_constant_time_helper() {
        let t = SessionToken::parse(&"ab".repeat(32)).unwrap();
        assert!(t.matches(&"ab".repeat(32)));
        assert!(!t.matches(&format!("{}ac", "ab".repeat(31))));
        assert!(!t.matches(&"ab".repeat(31)));
        assert!(!t.matches(""));
        // Same result as the helper on every input.
        for s in ["", "ab", &"ab".repeat(32), &"ba".repeat(32)] {
            assert_eq!(
                t.matches(s),
                mac::ct_eq(t.expose().as_bytes(), s.as_bytes())
            );
        }
    }

    #[test]
    fn formatting_is_redacted() {
        let hex = "c0ffee".repeat(10) + "c0ff";
        let t = SessionToken::parse(&hex).unwrap();
        for out in [format!("{t:?}"), format!("{t}"), format!("{:?}", Some(&t))] {
            assert!(!out.contains(&hex), "{out}");
            assert!(!out.contains("c0ffee"), "{out}");
            assert!(out.contains("redacted"), "{out}");
        }
    }

    #[test]
    fn zeroize_wipes_the_token() {
        let mut t = SessionToken::parse(&"ab".repeat(32)).unwrap();
        t.zeroize();
        assert_eq!(t.expose(), "");
    }

    #[test]
    fn index_is_keyed() {
        let k1 = SecretKey32::from_bytes([1; 32]);
        let k2 = SecretKey32::from_bytes([2; 32]);
        let tok = "ab".repeat(32);
        assert_eq!(index_key(&k1, &tok), index_key(&k1, &tok));
        assert_ne!(index_key(&k1, &tok), index_key(&k2, &tok));
    }

    proptest::proptest! {
        /// The format check is exactly `^[0-9a-f]{64}$`: every valid token passes, and one
        /// bad character anywhere, or one character too many or too few, fails it.
        #[test]
        fn format_check_is_exactly_the_regex(
            good in "[0-9a-f]{64}",
            pos in 0usize..64,
            bad in proptest::option::of("[g-zA-F \\n\\-]"),
            len_change in proptest::option::of(proptest::bool::ANY),
        ) {
            let mut s = good.clone();
            if let Some(b) = &bad {
                s.replace_range(pos..=pos, b);
            }
            match len_change {
                Some(true) => s.push('0'),
                Some(false) => { s.pop(); }
                None => {}
            }
            let expected = bad.is_none() && len_change.is_none();
            proptest::prop_assert_eq!(is_well_formed(&s), expected);
            proptest::prop_assert_eq!(SessionToken::parse(&s).is_ok(), expected);
        }

        #[test]
        fn any_string_is_checked_without_panicking(s in ".{0,80}") {
            let _ = is_well_formed(&s);
        }
    }

    // Type-level: a SessionToken is wiped on drop and is not Clone.
    const _: fn() = || {
        fn zeroize_on_drop<T: ZeroizeOnDrop>() {}
        zeroize_on_drop::<SessionToken>();
    };
    trait AmbiguousIfClone<A> {
        fn check() {}
    }
    impl<T: ?Sized> AmbiguousIfClone<()> for T {}
    #[allow(dead_code)]
    struct IsClone;
    impl<T: Clone> AmbiguousIfClone<IsClone> for T {}
    const _: fn() = || {
        let _ = <SessionToken as AmbiguousIfClone<_>>::check;
    };
}
