//! Fixtures shared by this crate's integration tests.
#![allow(dead_code, clippy::unwrap_used)]

/// A fresh plaintext node database in `dir`, with this crate's tables.
pub async fn plain_db(dir: &std::path::Path) -> lango_store::Database {
    let db = lango_store::Database::open(
        &dir.join("lango.db"),
        lango_store::Keying::Plaintext,
        lango_store::OpenOptions {
            create: true,
            ..lango_store::OpenOptions::default()
        },
    )
    .await
    .unwrap();
    lango_p2p::migrate(&db).await.unwrap();
    db
}
