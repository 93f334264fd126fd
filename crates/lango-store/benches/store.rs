//! Encrypted (SQLCipher, raw key) versus plaintext SQLite in the same run
//! (`cargo xtask bench`): insert and select throughput; the report shows the ratio.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lango_crypto::SecretKey32;
use lango_store::{Database, Keying, OpenOptions};

const ROWS: usize = 1000;

fn open(
    rt: &tokio::runtime::Runtime,
    dir: &std::path::Path,
    name: &str,
    key: Option<&SecretKey32>,
) -> Database {
    let keying = match key {
        Some(k) => Keying::RawKey {
            key: k,
            page_size: 4096,
        },
        None => Keying::Plaintext,
    };
    let db = rt
        .block_on(Database::open(
            &dir.join(name),
            keying,
            OpenOptions {
                create: true,
                ..OpenOptions::default()
            },
        ))
        .unwrap();
    rt.block_on(sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)").execute(db.pool()))
        .unwrap();
    db
}

async fn insert_batch(db: &Database) {
    let mut tx = db.pool().begin().await.unwrap();
    for _ in 0..ROWS {
        sqlx::query("INSERT INTO t (v) VALUES (randomblob(100))")
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
}

fn store(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let key = SecretKey32::from_bytes([9; 32]);
    let mut g = c.benchmark_group("sqlite");
    g.sample_size(20);
    g.throughput(Throughput::Elements(ROWS as u64));
    for (label, key) in [("plaintext", None), ("sqlcipher", Some(&key))] {
        let db = open(&rt, tmp.path(), &format!("{label}.db"), key);
        g.bench_function(format!("insert_1000/{label}"), |b| {
            b.iter(|| rt.block_on(insert_batch(&db)))
        });
        g.bench_function(format!("select_1000/{label}"), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let rows: Vec<(i64, Vec<u8>)> =
                        sqlx::query_as("SELECT id, v FROM t ORDER BY id DESC LIMIT 1000")
                            .fetch_all(db.pool())
                            .await
                            .unwrap();
                    assert_eq!(rows.len(), ROWS);
                })
            })
        });
        rt.block_on(db.close());
    }
    g.finish();
}

criterion_group!(benches, store);
criterion_main!(benches);
