//! Every applicable Wycheproof vector, run through lango-crypto's public API.
//!
//! A vector marked `valid` must pass, `invalid` must fail, `acceptable` may do either. Each test
//! prints how many vectors it ran so a silently empty set is visible, and asserts a minimum.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use lango_crypto::{
    SecretKey32,
    aead::{self, testing},
    kdf, mac, node_key,
    wallet::{EcdsaSignature, LowS, PublicKey},
};
use sha2::{Digest as _, Sha256, Sha512};
use sha3::{Sha3_256, Sha3_512};
use shake::{ExtendableOutput, Shake128, Shake256, Update, XofReader};
use wycheproof::TestResult;

#[test]
fn aes_256_gcm() {
    let set = wycheproof::aead::TestSet::load(wycheproof::aead::TestName::AesGcm).unwrap();
    let (mut ran, mut not_applicable) = (0, 0);
    for g in &set.test_groups {
        let applicable = g.key_size == 256 && g.nonce_size == 96 && g.tag_size == 128;
        for t in &g.tests {
            if !applicable {
                // AES-128/192, or a nonce/tag size lango's fixed 96-bit-nonce, 128-bit-tag
                // layout cannot express.
                not_applicable += 1;
                continue;
            }
            ran += 1;
            let key = SecretKey32::from_slice(&t.key).unwrap();
            let nonce: [u8; 12] = t.nonce.as_slice().try_into().unwrap();
            let mut sealed = nonce.to_vec();
            sealed.extend_from_slice(&t.ct);
            sealed.extend_from_slice(&t.tag);
            let opened = aead::open(&key, &t.aad, &sealed);
            match t.result {
                TestResult::Valid => {
                    let ours = testing::seal_with_nonce(&key, nonce, &t.aad, &t.pt).unwrap();
                    assert_eq!(ours, sealed, "tc {} seal", t.tc_id);
                    assert_eq!(
                        opened.unwrap().expose(),
                        t.pt.as_slice(),
                        "tc {} open",
                        t.tc_id
                    );
                }
                TestResult::Invalid => assert!(opened.is_err(), "tc {} must fail", t.tc_id),
                TestResult::Acceptable => {}
            }
        }
    }
    println!("aes_256_gcm: {ran} vectors run, {not_applicable} for other key/nonce/tag sizes");
    assert!(ran >= 60, "only {ran} AES-256-GCM vectors ran");
}

fn digest(hash: &wycheproof::HashFunction, msg: &[u8]) -> Vec<u8> {
    use wycheproof::HashFunction as H;
    match hash {
        H::Sha2_256 => Sha256::digest(msg).to_vec(),
        H::Sha2_512 => Sha512::digest(msg).to_vec(),
        H::Sha3_256 => {
            sha3::Digest::finalize(sha3::Digest::chain_update(Sha3_256::default(), msg)).to_vec()
        }
        H::Sha3_512 => {
            sha3::Digest::finalize(sha3::Digest::chain_update(Sha3_512::default(), msg)).to_vec()
        }
        H::Shake128 => {
            let mut h = Shake128::default();
            h.update(msg);
            let mut out = vec![0u8; 32];
            h.finalize_xof().read(&mut out);
            out
        }
        H::Shake256 => {
            let mut h = Shake256::default();
            h.update(msg);
            let mut out = vec![0u8; 64];
            h.finalize_xof().read(&mut out);
            out
        }
        other => panic!("hash {other:?} not expected for secp256k1"),
    }
}

#[test]
fn ecdsa_secp256k1_verify() {
    use wycheproof::ecdsa::{TestName as N, TestSet};
    let sets = [
        (N::EcdsaSecp256k1Sha256, false, LowS::Allow),
        (N::EcdsaSecp256k1Sha256P1363, true, LowS::Allow),
        (N::EcdsaSecp256k1Sha256Bitcoin, false, LowS::Require),
        (N::EcdsaSecp256k1Sha3_256, false, LowS::Allow),
        (N::EcdsaSecp256k1Sha3_512, false, LowS::Allow),
        (N::EcdsaSecp256k1Sha512, false, LowS::Allow),
        (N::EcdsaSecp256k1Sha512P1363, true, LowS::Allow),
        (N::EcdsaSecp256k1Shake128, false, LowS::Allow),
        (N::EcdsaSecp256k1Shake128P1363, true, LowS::Allow),
        (N::EcdsaSecp256k1Shake256, false, LowS::Allow),
        (N::EcdsaSecp256k1Shake256P1363, true, LowS::Allow),
    ];
    let mut total = 0;
    for (name, raw, low_s) in sets {
        let set = TestSet::load(name).unwrap();
        let mut ran = 0;
        for g in &set.test_groups {
            let pk = PublicKey::from_sec1(&g.key.key).unwrap();
            for t in &g.tests {
                ran += 1;
                let sig = if raw {
                    EcdsaSignature::from_raw(&t.sig)
                } else {
                    EcdsaSignature::from_der(&t.sig)
                };
                let ok = sig
                    .and_then(|s| pk.verify_prehash(&digest(&g.hash, &t.msg), &s, low_s))
                    .is_ok();
                match t.result {
                    TestResult::Valid => assert!(ok, "{name:?} tc {} must verify", t.tc_id),
                    TestResult::Invalid => assert!(!ok, "{name:?} tc {} must fail", t.tc_id),
                    TestResult::Acceptable => {}
                }
            }
        }
        assert_eq!(ran, set.number_of_tests);
        total += ran;
    }
    println!("ecdsa_secp256k1: {total} vectors run");
    assert!(total > 4000);
}

#[test]
fn hmac_sha256() {
    let set = wycheproof::mac::TestSet::load(wycheproof::mac::TestName::HmacSha256).unwrap();
    let mut ran = 0;
    for g in &set.test_groups {
        for t in &g.tests {
            ran += 1;
            let full = mac::hmac_sha256(&t.key, &t.msg);
            let n = g.tag_size / 8;
            let ok = t.tag.len() == n && mac::ct_eq(&full[..n], &t.tag);
            if n == 32 {
                assert_eq!(
                    ok,
                    mac::verify_hmac_sha256(&t.key, &t.msg, &t.tag),
                    "tc {}",
                    t.tc_id
                );
            }
            match t.result {
                TestResult::Valid => assert!(ok, "tc {} must verify", t.tc_id),
                TestResult::Invalid => assert!(!ok, "tc {} must fail", t.tc_id),
                TestResult::Acceptable => {}
            }
        }
    }
    println!("hmac_sha256: {ran} vectors run");
    assert_eq!(ran, set.number_of_tests);
}

#[test]
fn hkdf_sha256() {
    let set = wycheproof::hkdf::TestSet::load(wycheproof::hkdf::TestName::HkdfSha256).unwrap();
    let mut ran = 0;
    for g in &set.test_groups {
        for t in &g.tests {
            ran += 1;
            let out = kdf::hkdf_sha256(&t.ikm, &t.salt, &t.info, t.size);
            match t.result {
                TestResult::Valid => {
                    assert_eq!(out.unwrap().expose(), t.okm.as_slice(), "tc {}", t.tc_id)
                }
                TestResult::Invalid => assert!(out.is_err(), "tc {} must fail", t.tc_id),
                TestResult::Acceptable => {}
            }
        }
    }
    println!("hkdf_sha256: {ran} vectors run");
    assert_eq!(ran, set.number_of_tests);
}

#[test]
fn pbkdf2_hmac_sha256() {
    let set =
        wycheproof::pbkdf2::TestSet::load(wycheproof::pbkdf2::TestName::Pbkdf2HmacSha256).unwrap();
    let mut ran = 0;
    for g in &set.test_groups {
        for t in &g.tests {
            ran += 1;
            let mut out = vec![0u8; t.dk_len];
            let r = kdf::pbkdf2_sha256(&t.password, &t.salt, t.iteration_count as u32, &mut out);
            match t.result {
                TestResult::Valid => {
                    r.unwrap();
                    assert_eq!(out, t.dk.as_slice(), "tc {}", t.tc_id);
                }
                TestResult::Invalid => {
                    assert!(r.is_err() || out != t.dk.as_slice(), "tc {}", t.tc_id)
                }
                TestResult::Acceptable => {}
            }
        }
    }
    println!("pbkdf2_hmac_sha256: {ran} vectors run");
    assert_eq!(ran, set.number_of_tests);
}

#[test]
fn ed25519_verify() {
    let set = wycheproof::eddsa::TestSet::load(wycheproof::eddsa::TestName::Ed25519).unwrap();
    let mut ran = 0;
    for g in &set.test_groups {
        for t in &g.tests {
            ran += 1;
            let ok = node_key::verify(&g.key.pk, &t.msg, &t.sig).is_ok();
            match t.result {
                TestResult::Valid => assert!(ok, "tc {} must verify", t.tc_id),
                TestResult::Invalid => assert!(!ok, "tc {} must fail", t.tc_id),
                TestResult::Acceptable => {}
            }
        }
    }
    println!("ed25519: {ran} vectors run");
    assert_eq!(ran, set.number_of_tests);
}
