//! Known-answer vectors from the specs: secrets-and-storage §2.2.8 (T-1, T-2) and
//! handshake-and-sessions §2.8 (V1–V6), plus the C-3 rejection list.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use lango_crypto::{
    Error, MasterKey, SecretKey32,
    aead::{self, BlobPurpose, ProviderTag, testing},
    hierarchy::{self, KeyPurpose},
    kdf, mac,
    node_key::NodeKey,
    wallet::{self, Did, LowS, PublicKey, WalletKey},
};

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.replace([' ', '\n'], "")).unwrap()
}

fn k32(s: &str) -> SecretKey32 {
    SecretKey32::from_slice(&h(s)).unwrap()
}

const PASS: &[u8] = b"correct horse battery staple";

// ---------------------------------------------------------------- secrets §2.2.8, legacy

#[test]
fn t1_legacy_blobs_decrypt_and_detect_tampering() {
    let salt = h("000102030405060708090a0b0c0d0e0f");
    let key = kdf::legacy_key(PASS, &salt).unwrap();
    assert_eq!(
        key,
        k32("49d49c25f597846209f0d92e7770ab64e1c75e94b4ce6c509265ee67175d2a1e")
    );

    let blob1 = h(
        "a0a1a2a3a4a5a6a7a8a9aaab 453215322a6b8c52f4fca2628ea802fb0b73 4a1c26c4c47423b909e1ace375965ec9",
    );
    assert_eq!(
        aead::open_legacy(&key, &blob1).unwrap().expose(),
        b"lango-secret-value"
    );
    let blob2 = h(
        "b0b1b2b3b4b5b6b7b8b9babbb8e76344b68531aafabe70fcdcbb987b1d9f2241746d0f82072f31270b20516d81dc696d4b380dc8c89082391d37ac00201efac8df4ff4623e785d6a",
    );
    assert_eq!(
        aead::open_legacy(&key, &blob2).unwrap().expose(),
        br#"{"security":{"signer":{"provider":"local"}}}"#
    );
    // Writing produces the same bytes for the same nonce.
    let nonce: [u8; 12] = h("a0a1a2a3a4a5a6a7a8a9aaab").try_into().unwrap();
    assert_eq!(
        testing::seal_with_nonce(&key, nonce, &[], b"lango-secret-value").unwrap(),
        blob1
    );

    for blob in [&blob1, &blob2] {
        for byte in 0..blob.len() {
            for bit in 0..8 {
                let mut t = blob.clone();
                t[byte] ^= 1 << bit;
                assert_eq!(
                    aead::open_legacy(&key, &t),
                    Err(Error::Integrity),
                    "byte {byte} bit {bit}"
                );
            }
        }
    }
    assert!(matches!(
        aead::open_legacy(&key, &blob1[..11]),
        Err(Error::TooShort { .. })
    ));
}

// ---------------------------------------------------------------- secrets §2.2.8, v1

const MK: &str = "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f";

fn mk() -> MasterKey {
    MasterKey::from_key(k32(MK))
}

#[test]
fn t2_hkdf_purpose_keys_and_mk_id() {
    let mk = mk();
    let cases = [
        (
            KeyPurpose::Secrets,
            "ffe1153534b422a90f4356ced01ed038278fb8f529c9e481c8fb3ef7e4075616",
        ),
        (
            KeyPurpose::ConfigProfiles,
            "a109d1359178091d2070eaeb3ace9e62f8d10633ac753511493d777ca3ba25f5",
        ),
        (
            KeyPurpose::ToolEncrypt,
            "0df320b2b57cfac82f5f230f1bd9d18db987d222a53b93fbcbdba7af2d8729ff",
        ),
        (
            KeyPurpose::ToolSign,
            "b5cd8c4dbf79d223757f2b87624896a94f9f689f1ad55c82082618efb229e683",
        ),
        (
            KeyPurpose::Sqlcipher,
            "559141c1d889f7e5fd9c1b1ecc13d282be39a5b4cbec8374afe6a2d74b835ae1",
        ),
    ];
    for (p, want) in cases {
        assert_eq!(mk.derive(p), k32(want), "{p:?}");
    }
    assert_eq!(mk.mk_id().to_hex(), "bbf8b6f81dd102efa2ede2682cb8e879");
}

#[test]
fn t2_v1_secret_blob() {
    let key = mk().derive(KeyPurpose::Secrets);
    let header = aead::BlobHeader {
        provider: ProviderTag::LocalMk,
        generation: 1,
    }
    .encode();
    assert_eq!(header.to_vec(), h("4c474f010100000001"));
    assert_eq!(
        aead::v1_aad(&header, BlobPurpose::Secrets, b"wallet.privatekey"),
        h("4c474f010100000001 7365637265747300 77616c6c65742e707269766174656b6579")
    );
    let nonce: [u8; 12] = h("c0c1c2c3c4c5c6c7c8c9cacb").try_into().unwrap();
    let blob = testing::seal_v1_with_nonce(
        &key,
        ProviderTag::LocalMk,
        1,
        BlobPurpose::Secrets,
        b"wallet.privatekey",
        &[0x11; 32],
        nonce,
    )
    .unwrap();
    let want = h("4c474f010100000001 c0c1c2c3c4c5c6c7c8c9cacb
                  1541271a4cc1daa29b9881af268792e91510f9de67e10e10cf9b3ad25ab08bff
                  fcdab179ae7e170cf4de87fe25dae3c9");
    assert_eq!(blob, want);
    assert_eq!(blob.len(), 69);
    let open = |ctx: &[u8]| {
        aead::open_v1(&blob, BlobPurpose::Secrets, ctx, 1 << 16, |g| {
            (g == 1).then_some(&key)
        })
    };
    assert_eq!(open(b"wallet.privatekey").unwrap().expose(), &[0x11; 32]);
    assert_eq!(open(b"p2p.node.privatekey"), Err(Error::Integrity));
}

#[test]
fn t2_master_key_wrap() {
    let kek = k32("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
    let slot = "00000000-0000-4000-8000-000000000001";
    assert_eq!(
        hierarchy::wrap_aad(slot),
        h(
            "6c616e676f2f76312f6d6b2d777261700030303030303030302d303030302d343030302d383030302d303030303030303030303031"
        )
    );
    let nonce: [u8; 12] = h("d0d1d2d3d4d5d6d7d8d9dadb").try_into().unwrap();
    let wrapped = hierarchy::wrap_with_nonce_for_tests(&mk(), &kek, slot, nonce).unwrap();
    assert_eq!(
        wrapped,
        h(
            "e0daee11dcf4783ee862c2695d189e697ba510576b5f4fa2dca9008e4718112768bb151b533cd648576439c2b64a8e9b"
        )
    );
    let back = MasterKey::unwrap_slot(&kek, slot, &nonce, &wrapped).unwrap();
    assert_eq!(back, mk());
    // Another slot id, another key, or a flipped bit: Integrity.
    assert_eq!(
        MasterKey::unwrap_slot(
            &kek,
            "00000000-0000-4000-8000-000000000002",
            &nonce,
            &wrapped
        ),
        Err(Error::Integrity)
    );
    assert_eq!(
        MasterKey::unwrap_slot(&SecretKey32::from_bytes([0; 32]), slot, &nonce, &wrapped),
        Err(Error::Integrity)
    );
    let mut bad = wrapped.clone();
    bad[0] ^= 1;
    assert_eq!(
        MasterKey::unwrap_slot(&kek, slot, &nonce, &bad),
        Err(Error::Integrity)
    );
    assert!(matches!(
        MasterKey::unwrap_slot(&kek, slot, &nonce, &wrapped[..47]),
        Err(Error::UnsupportedFormat(_))
    ));
}

#[test]
fn t6_nonces_are_distinct() {
    let key = SecretKey32::from_bytes([5; 32]);
    let mut seen = std::collections::HashSet::with_capacity(100_000);
    for _ in 0..100_000 {
        let blob = aead::seal(&key, b"", b"x").unwrap();
        let nonce: [u8; 12] = blob[..12].try_into().unwrap();
        assert!(seen.insert(nonce), "nonce repeated");
    }
}

#[test]
fn node_key_encoding_secrets_spec() {
    let seed: [u8; 32] = core::array::from_fn(|i| i as u8);
    let key = NodeKey::from_seed(&SecretKey32::from_bytes(seed));
    assert_eq!(
        hex::encode(key.public_key()),
        "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
    );
    let pb = key.to_protobuf();
    assert_eq!(pb.len(), 68);
    assert_eq!(&pb.expose()[..4], &[0x08, 0x01, 0x12, 0x40]);
    assert_eq!(&pb.expose()[4..36], &seed);
}

// ---------------------------------------------------------------- handshake §2.8

fn wallet(n: u8) -> WalletKey {
    let mut b = [0u8; 32];
    b[31] = n;
    WalletKey::from_bytes(&b).unwrap()
}

const NONCE: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const DID_I: &str = "did:lango:0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";
const DID_R: &str = "did:lango:02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5";

fn challenge_payload() -> Vec<u8> {
    let mut cp = h(NONCE);
    cp.extend_from_slice(&1_700_000_000i64.to_be_bytes());
    cp.extend_from_slice(DID_I.as_bytes());
    cp
}

#[test]
fn v1_challenge_signature() {
    let (ki, kr) = (wallet(1), wallet(2));
    assert_eq!(ki.did().as_str(), DID_I);
    assert_eq!(kr.did().as_str(), DID_R);
    let cp = challenge_payload();
    assert_eq!(cp.len(), 116);
    assert_eq!(
        hex::encode(wallet::keccak256(&cp)),
        "698d9a37e6b4b3f41c1d8e8667dc0142f55b31b78c7fb768f511eff7ac7de8c9"
    );
    let sig = ki.sign_message(&cp).unwrap();
    assert_eq!(
        sig.to_bytes().to_vec(),
        h(
            "2ef332667c6d44c5fa3087b99270a57f481988f82b7af71a6ea9ca88c71451e6
           08aec75dc458dd8c8e9002da4c8c076bf43074ebc6d5077b50f9a816fcb5dbe8 00"
        )
    );
    wallet::verify_message(&ki.public_key(), &cp, &sig.0, LowS::Require).unwrap();
    assert!(wallet::verify_message(&kr.public_key(), &cp, &sig.0, LowS::Require).is_err());
}

#[test]
fn v2_double_hash_form_does_not_authenticate() {
    let ki = wallet(1);
    let cp = challenge_payload();
    let h1 = wallet::keccak256(&cp);
    assert_eq!(
        hex::encode(wallet::keccak256(&h1)),
        "11ce531088ad85f8cc69cb17f5506611ea1e92d4b0d30070ba97a31ad30b6fd0"
    );
    // What a 2856d8a9 Go initiator sends: sign_message(Keccak(CP)).
    let double = ki.sign_message(&h1).unwrap();
    let want = h(
        "c76592dc73cd7efcf44b071917cd77aa857b924c8ea05c20fe67f01d93d2fbdc
                  3dd68e62da6a96919801296797144e006a0be80317e7b31ee87fb4425e1305d4 01",
    );
    assert_eq!(double.to_bytes().to_vec(), want);
    let recovered = wallet::recover(&h1, &want, LowS::Require).unwrap();
    assert_eq!(
        hex::encode(recovered.to_compressed()),
        "03ef4bbdeec18110d6008041de2a9642d0516db0bee4678490ac8e44e294dd360b"
    );
    assert!(wallet::verify_message(&ki.public_key(), &cp, &want, LowS::Require).is_err());
}

#[test]
fn v3_response_signature() {
    let kr = wallet(2);
    let nonce = h(NONCE);
    assert_eq!(
        hex::encode(wallet::keccak256(&nonce)),
        "8ae1aa597fa146ebd3aa2ceddf360668dea5e526567e92b0321816a4e895bd2d"
    );
    let sig = kr.sign_message(&nonce).unwrap();
    assert_eq!(
        sig.to_bytes().to_vec(),
        h(
            "ea3be0b6beff1ffb98a6ce21bae88abbe9a6a5cc88e354d0c33a49aa273b0869
           00ef988d6bc18ee1a8883f4058b726a157aee21bb1f33a2add65e3a61852ef56 01"
        )
    );
}

#[test]
fn v4_session_token_hmac() {
    let key = h("202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f");
    let mut msg = h("404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f");
    msg.extend_from_slice(DID_R.as_bytes());
    assert_eq!(
        hex::encode(mac::hmac_sha256(&key, &msg)),
        "95e9defda3cea475c7459a95ea0bbe012a8ee78f7f42ad2465063cf40ea33b76"
    );
}

#[test]
fn v5_wallet_peer_ids() {
    assert_eq!(
        Did::parse(DID_I).unwrap().wallet_peer_id().unwrap(),
        "16Uiu2HAm3cuhhRL2msUuLF62KRSfneFDx94RsuouyW25Ho42cFMq"
    );
    assert_eq!(
        Did::parse(DID_R).unwrap().wallet_peer_id().unwrap(),
        "16Uiu2HAm8kegYGp6XeybmZAuNcnLosyjsRwZ44yLgfEuqLqYL9zt"
    );
}

#[test]
fn v6_node_keys() {
    let seed = k32("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
    let key = NodeKey::from_seed(&seed);
    assert_eq!(
        hex::encode(key.public_key()),
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    );
    let stored = h(
        "080112409d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
    );
    assert_eq!(key.to_protobuf().expose(), stored.as_slice());
    assert_eq!(
        key.peer_id(),
        "12D3KooWQK1wnefoLrcVHbbnf5tLzbopUd3K3bFAoJpA7YJgL5pV"
    );
    let parsed = NodeKey::from_protobuf(&stored).unwrap();
    assert_eq!(parsed.public_key(), key.public_key());

    // The legacy 96-byte data form is accepted when the redundancy checks out.
    let mut long = vec![0x08, 0x01, 0x12, 0x60];
    long.extend_from_slice(&stored[4..]);
    long.extend_from_slice(&stored[36..]);
    assert_eq!(
        NodeKey::from_protobuf(&long).unwrap().public_key(),
        key.public_key()
    );
    let mut bad_long = long.clone();
    bad_long[99] ^= 1;
    assert!(NodeKey::from_protobuf(&bad_long).is_err());
    // A public key that does not match the seed is refused.
    let mut bad = stored.clone();
    bad[67] ^= 1;
    assert!(NodeKey::from_protobuf(&bad).is_err());
    assert!(NodeKey::from_protobuf(&stored[..67]).is_err());

    let second = NodeKey::from_seed(&k32(
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
    ));
    assert_eq!(
        hex::encode(second.public_key()),
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c"
    );
    assert_eq!(
        second.peer_id(),
        "12D3KooWDwTirQce1RRKnasT5fPVFgzXCy6SiRgSwrwPGLC7zE91"
    );
}

// ---------------------------------------------------------------- C-3

#[test]
fn c3_recovery_rejections() {
    let ki = wallet(1);
    let msg = b"message";
    let digest = wallet::keccak256(msg);
    let good = ki.sign_message(msg).unwrap().to_bytes();
    wallet::recover(&digest, &good, LowS::Require).unwrap();

    assert!(wallet::recover(&digest, &good[..64], LowS::Allow).is_err());
    let mut long = good.to_vec();
    long.push(0);
    assert!(wallet::recover(&digest, &long, LowS::Allow).is_err());
    for v in [2u8, 3, 27, 28] {
        let mut s = good;
        s[64] = v;
        assert!(
            wallet::recover(&digest, &s, LowS::Allow).is_err(),
            "v = {v}"
        );
    }
    let n = h("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141");
    for (range, what) in [(0..32, "r"), (32..64, "s")] {
        let mut zero = good;
        zero[range.clone()].fill(0);
        assert!(
            wallet::recover(&digest, &zero, LowS::Allow).is_err(),
            "{what} = 0"
        );
        let mut big = good;
        big[range.clone()].copy_from_slice(&n);
        assert!(
            wallet::recover(&digest, &big, LowS::Allow).is_err(),
            "{what} = n"
        );
        let mut bigger = good;
        bigger[range].fill(0xff);
        assert!(
            wallet::recover(&digest, &bigger, LowS::Allow).is_err(),
            "{what} > n"
        );
    }

    // High-S twin: s' = n - s with v flipped recovers the same key, but is rejected under
    // LowS::Require.
    let s_low = num_sub(&n, &good[32..64]);
    let mut twin = good;
    twin[32..64].copy_from_slice(&s_low);
    twin[64] ^= 1;
    let pk = wallet::recover(&digest, &twin, LowS::Allow).unwrap();
    assert_eq!(pk, ki.public_key());
    assert!(wallet::recover(&digest, &twin, LowS::Require).is_err());
    assert!(wallet::verify_message(&ki.public_key(), msg, &twin, LowS::Require).is_err());
}

/// a - b for 32-byte big-endian integers with a > b.
fn num_sub(a: &[u8], b: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = a[i] as i16 - b[i] as i16 - borrow;
        borrow = if d < 0 {
            d += 256;
            1
        } else {
            0
        };
        out[i] = d as u8;
    }
    out
}

#[test]
fn compressed_key_parsing() {
    let pk = wallet(1).public_key();
    assert_eq!(PublicKey::from_compressed(&pk.to_compressed()).unwrap(), pk);
    assert!(PublicKey::from_compressed(&pk.to_uncompressed()).is_err());
    let mut bad = pk.to_compressed();
    bad[0] = 0x04;
    assert!(PublicKey::from_compressed(&bad).is_err());
}
