//! Helpers shared by this crate's unit tests.

use lango_crypto::{SecretKey32, wallet::WalletKey};
use lango_store::{Database, Keying, OpenOptions, db::DEFAULT_PAGE_SIZE};

/// The SQLCipher file `name` in `dir` (created when `create`), keyed with a fixed test key,
/// migrated, with a pool of 8 connections.
pub(crate) async fn open_db(dir: &std::path::Path, name: &str, create: bool) -> Database {
    let key = SecretKey32::from_bytes([0x3c; 32]);
    let db = Database::open(
        &dir.join(name),
        Keying::RawKey {
            key: &key,
            page_size: DEFAULT_PAGE_SIZE,
        },
        OpenOptions {
            create,
            max_connections: 8,
            ..OpenOptions::default()
        },
    )
    .await
    .unwrap();
    assert!(db.is_encrypted());
    crate::migrate(&db).await.unwrap();
    db
}

/// A fresh canonical DID.
pub(crate) fn did() -> String {
    WalletKey::generate().unwrap().did().as_str().to_owned()
}
