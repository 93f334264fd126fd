//! Property tests: seal/open and sign/recover round trips, and binding of blobs to their row.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use lango_crypto::{
    Error, MasterKey, SecretKey32,
    aead::{self, BlobPurpose},
    provider::{AeadContext, CryptoProvider, LocalCryptoProvider},
    wallet::{self, LowS, WalletKey},
};
use proptest::prelude::*;

fn purpose() -> impl Strategy<Value = BlobPurpose> {
    prop_oneof![
        Just(BlobPurpose::Secrets),
        Just(BlobPurpose::ConfigProfiles),
        Just(BlobPurpose::ToolEncrypt)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn raw_seal_open_roundtrip(key in any::<[u8; 32]>(), aad in proptest::collection::vec(any::<u8>(), 0..64),
                               pt in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let k = SecretKey32::from_bytes(key);
        let sealed = aead::seal(&k, &aad, &pt).unwrap();
        prop_assert_eq!(sealed.len(), pt.len() + 28);
        let opened = aead::open(&k, &aad, &sealed).unwrap();
        prop_assert_eq!(opened.expose(), pt.as_slice());
    }

    #[test]
    fn v1_roundtrip_and_binding(key in any::<[u8; 32]>(), generation in 1u32..,
                                ctx in "[a-z.]{0,24}", other in "[a-z.]{0,24}",
                                p in purpose(), q in purpose(),
                                pt in proptest::collection::vec(any::<u8>(), 0..512)) {
        let k = SecretKey32::from_bytes(key);
        let blob = aead::seal_v1(&k, aead::ProviderTag::LocalMk, generation, p, ctx.as_bytes(), &pt).unwrap();
        let open = |purpose, c: &str| aead::open_v1(&blob, purpose, c.as_bytes(), 1 << 20, |g| (g == generation).then_some(&k));
        let opened = open(p, &ctx).unwrap();
        prop_assert_eq!(opened.expose(), pt.as_slice());
        if other != ctx {
            prop_assert_eq!(open(p, &other), Err(Error::Integrity));
        }
        if q != p {
            prop_assert_eq!(open(q, &ctx), Err(Error::Integrity));
        }
    }

    #[test]
    fn sign_recover_roundtrip(seed in any::<[u8; 32]>(), msg in proptest::collection::vec(any::<u8>(), 0..256)) {
        let Ok(key) = WalletKey::from_bytes(&seed) else { return Ok(()) };
        let sig = key.sign_message(&msg).unwrap();
        prop_assert!(sig.v() <= 1);
        let pk = wallet::recover(&wallet::keccak256(&msg), &sig.0, LowS::Require).unwrap();
        prop_assert_eq!(pk, key.public_key());
        wallet::verify_message(&key.public_key(), &msg, &sig.0, LowS::Require).unwrap();
        let mut flipped = msg.clone();
        flipped.push(1);
        prop_assert!(wallet::verify_message(&key.public_key(), &flipped, &sig.0, LowS::Require).is_err());
    }
}

#[tokio::test]
async fn local_provider_contract() {
    let mk = MasterKey::generate().unwrap();
    let p = LocalCryptoProvider::new(&mk, 3);
    let aad = AeadContext {
        purpose: BlobPurpose::Secrets,
        context: b"api.key",
        max_blob_len: 4096,
    };
    let blob = p.encrypt("local", b"value", aad).await.unwrap();
    assert_eq!(&blob[..3], b"LGO");
    assert_eq!(u32::from_be_bytes(blob[5..9].try_into().unwrap()), 3);
    assert_eq!(
        p.decrypt("default", &blob, aad).await.unwrap().expose(),
        b"value"
    );

    // Bound to the row: another name fails as DecryptionFailed.
    let other = AeadContext {
        context: b"api.other",
        ..aad
    };
    let e = p.decrypt("local", &blob, other).await.unwrap_err();
    assert_eq!(
        e.kind,
        lango_crypto::provider::ProviderErrorKind::DecryptionFailed
    );
    assert!(!e.is_transient());

    // Another generation of the same master key does not open it.
    let p4 = LocalCryptoProvider::new(&mk, 4);
    let e = p4.decrypt("local", &blob, aad).await.unwrap_err();
    assert_eq!(
        e.kind,
        lango_crypto::provider::ProviderErrorKind::InvalidInput
    );

    // Unknown key ids are refused instead of silently using the local key.
    let e = p.encrypt("arn:aws:kms:x", b"v", aad).await.unwrap_err();
    assert_eq!(
        e.kind,
        lango_crypto::provider::ProviderErrorKind::InvalidKey
    );

    // Signing is an HMAC and says so; there is no public key.
    let s = p.sign("local", b"payload").await.unwrap();
    assert_eq!(s.algorithm.id(), "hmac-sha256");
    assert_eq!(s.bytes.len(), 32);
    assert!(p.public_key("local").await.is_err());
    assert_eq!(p.health().await, lango_crypto::provider::Health::Healthy);
    assert!(!format!("{p:?}").contains(&hex::encode(
        mk.derive(lango_crypto::KeyPurpose::Secrets).expose()
    )));
}
