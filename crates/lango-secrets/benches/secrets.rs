//! Secrets store throughput on a real SQLCipher database (`cargo xtask bench`).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lango_crypto::{KdfConfig, kdf::Argon2Config};
use lango_secrets::{Caller, UnlockOptions, VaultConfig, passphrase::NoPrompt, unlock};

fn secrets(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    std::fs::create_dir(&dir).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(dir.join("keyfile"), "correct horse battery staple\n").unwrap();
        std::fs::set_permissions(dir.join("keyfile"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
    }
    let mut cfg = VaultConfig {
        kdf: KdfConfig {
            argon2: Argon2Config {
                memory_kib: 19_456,
                time_cost: 2,
                parallelism: 1,
            },
            ..KdfConfig::default()
        },
        ..VaultConfig::default()
    };
    cfg.keyring.enabled = false;
    cfg.passphrase.keep_keyfile = true;
    let vault = rt
        .block_on(unlock(
            &dir,
            &cfg,
            &NoPrompt,
            UnlockOptions {
                allow_create: true,
                ..UnlockOptions::default()
            },
        ))
        .unwrap();
    let store = vault.secrets().unwrap();
    let value = vec![0x5au8; 64];
    rt.block_on(store.put("bench.secret", &value, Caller::Operator))
        .unwrap();

    let mut g = c.benchmark_group("secrets_store");
    g.throughput(Throughput::Elements(1));
    let mut i = 0u64;
    g.bench_function("put/64B", |b| {
        b.iter(|| {
            i += 1;
            rt.block_on(store.put(
                &format!("bench.{}", i % 1000),
                black_box(&value),
                Caller::Operator,
            ))
            .unwrap()
        })
    });
    g.bench_function("get/64B", |b| {
        b.iter(|| {
            rt.block_on(store.get(black_box("bench.secret"), Caller::Operator))
                .unwrap()
        })
    });
    g.finish();
    rt.block_on(vault.close());
}

criterion_group!(benches, secrets);
criterion_main!(benches);
