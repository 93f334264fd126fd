//! Criterion benches of the primitives (`cargo xtask bench`).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lango_crypto::{
    KdfParams, SecretKey32,
    aead::{self, BlobPurpose, ProviderTag},
    kdf,
    node_key::{self, NodeKey},
    wallet::{self, LowS, WalletKey},
};

fn aes_gcm(c: &mut Criterion) {
    let key = SecretKey32::from_bytes([7; 32]);
    let mut g = c.benchmark_group("aes256gcm_v1");
    for size in [64usize, 4096] {
        let pt = vec![0xabu8; size];
        let blob = aead::seal_v1(
            &key,
            ProviderTag::LocalMk,
            1,
            BlobPurpose::Secrets,
            b"bench",
            &pt,
        )
        .unwrap();
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("seal/{size}B"), |b| {
            b.iter(|| {
                aead::seal_v1(
                    &key,
                    ProviderTag::LocalMk,
                    1,
                    BlobPurpose::Secrets,
                    b"bench",
                    black_box(&pt),
                )
                .unwrap()
            })
        });
        g.bench_function(format!("open/{size}B"), |b| {
            b.iter(|| {
                aead::open_v1(
                    black_box(&blob),
                    BlobPurpose::Secrets,
                    b"bench",
                    1 << 20,
                    |_| Some(&key),
                )
                .unwrap()
            })
        });
    }
    g.finish();
}

fn kdfs(c: &mut Criterion) {
    let mut g = c.benchmark_group("kdf");
    g.sample_size(10);
    let salt = [3u8; 16];
    for it in [100_000u32, 600_000] {
        g.bench_function(format!("pbkdf2_sha256/{it}"), |b| {
            b.iter(|| {
                let mut out = [0u8; 32];
                kdf::pbkdf2_sha256(
                    black_box(b"correct horse battery staple"),
                    &salt,
                    it,
                    &mut out,
                )
                .unwrap();
                out
            })
        });
    }
    let p = KdfParams::argon2id_default();
    g.bench_function("argon2id/m65536_t3_p4", |b| {
        b.iter(|| {
            p.derive_kek(black_box(b"correct horse battery staple"), &salt)
                .unwrap()
        })
    });
    g.finish();
}

fn secp256k1(c: &mut Criterion) {
    let key = WalletKey::from_bytes(&[0x11; 32]).unwrap();
    let msg = [0x5au8; 116];
    let sig = key.sign_message(&msg).unwrap();
    let digest = wallet::keccak256(&msg);
    let mut g = c.benchmark_group("secp256k1");
    g.bench_function("sign_message", |b| {
        b.iter(|| key.sign_message(black_box(&msg)).unwrap())
    });
    g.bench_function("recover", |b| {
        b.iter(|| wallet::recover(black_box(&digest), &sig.0, LowS::Require).unwrap())
    });
    g.bench_function("keccak256/116B", |b| {
        b.iter(|| wallet::keccak256(black_box(&msg)))
    });
    g.finish();
}

fn ed25519(c: &mut Criterion) {
    let key = NodeKey::from_seed(&SecretKey32::from_bytes([9; 32]));
    let msg = [1u8; 64];
    let sig = key.sign(&msg);
    let public = key.public_key();
    let mut g = c.benchmark_group("ed25519");
    g.bench_function("sign", |b| b.iter(|| key.sign(black_box(&msg))));
    g.bench_function("verify", |b| {
        b.iter(|| node_key::verify(&public, black_box(&msg), &sig).unwrap())
    });
    g.finish();
}

criterion_group!(benches, aes_gcm, kdfs, secp256k1, ed25519);
criterion_main!(benches);
