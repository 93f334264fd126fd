//! lango-store against the real bundled SQLCipher and independent clients (secrets spec §7.3).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    io::Write,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use lango_crypto::{SecretKey32, SecretString};
use lango_e2e::component;
use lango_store::{
    DataDirLock, Database, Error, FileState, Keying, LockMode, OpenOptions,
    export::{self, ExportHooks, Operation, Target},
    state,
};
use serde_json::json;

const CANARY: &str = "canary-7f3a9c-do-not-leak";

fn key(b: u8) -> SecretKey32 {
    SecretKey32::from_bytes([b; 32])
}

fn raw(k: &SecretKey32) -> Keying<'_> {
    Keying::RawKey {
        key: k,
        page_size: 4096,
    }
}

fn create() -> OpenOptions {
    OpenOptions {
        create: true,
        ..OpenOptions::default()
    }
}

async fn exec(db: &Database, sql: &'static str) {
    sqlx::query(sql).execute(db.pool()).await.unwrap();
}

fn hex_key(k: &SecretKey32) -> String {
    format!("x'{}'", hex::encode_upper(k.expose()))
}

fn file_contains(path: &Path, needle: &[u8]) -> bool {
    let data = std::fs::read(path).unwrap_or_default();
    data.windows(needle.len()).any(|w| w == needle)
}

fn all_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

struct NoEnvelope;
impl ExportHooks for NoEnvelope {
    fn database_replaced(&self, _encrypted: bool, _page_size: u32) -> lango_store::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn t28_bundled_sqlcipher_is_version_4() {
    let v = lango_store::db::cipher_version().await.unwrap();
    assert!(v.starts_with("4."), "{v}");
    assert!(lango_store::db::check_cipher_version(None).is_err());
    assert!(lango_store::db::check_cipher_version(Some("")).is_err());
    assert!(lango_store::db::check_cipher_version(Some("3.4.1")).is_err());
    assert!(lango_store::db::check_cipher_version(Some("4.10.0 community")).is_ok());
}

#[tokio::test]
async fn t20_encrypted_file_has_no_plaintext_and_opens_in_an_independent_client() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lango.db");
    let k = key(0x42);
    let db = Database::open(&path, raw(&k), create()).await.unwrap();
    exec(&db, "CREATE TABLE t (v TEXT)").await;
    sqlx::query("INSERT INTO t VALUES (?1)")
        .bind(CANARY)
        .execute(db.pool())
        .await
        .unwrap();
    db.close().await;

    assert_eq!(state::detect(&path).unwrap(), FileState::EncryptedOrForeign);
    for f in all_files(dir.path()) {
        assert!(
            !file_contains(&f, CANARY.as_bytes()),
            "{} holds the canary",
            f.display()
        );
        assert!(
            !file_contains(&f, b"SQLite format 3"),
            "{} has a plaintext header",
            f.display()
        );
    }
    // Reopen: right key works, wrong key is WrongKey, plaintext keying is refused.
    let db = Database::open(&path, raw(&k), OpenOptions::default())
        .await
        .unwrap();
    db.close().await;
    let wrong = key(0x43);
    assert!(matches!(
        Database::open(&path, raw(&wrong), OpenOptions::default()).await,
        Err(Error::WrongKey)
    ));
    assert!(matches!(
        Database::open(&path, Keying::Plaintext, OpenOptions::default()).await,
        Err(Error::WrongState { .. })
    ));

    let Some(client) = component::sqlcipher_client("t20") else {
        return;
    };
    let r = client.request(&json!({
        "path": path, "key": hex_key(&k), "raw": true,
        "pragmas": ["cipher_compatibility = 4", "cipher_page_size = 4096"],
        "query": "SELECT v FROM t"
    }));
    assert!(
        r["cipher_version"].as_str().unwrap().starts_with("4."),
        "{r}"
    );
    assert_eq!(r["rows"][0][0], CANARY, "{r}");
    let mut one_bit = *k.expose();
    one_bit[31] ^= 1;
    let r = client.request(&json!({
        "path": path, "key": hex_key(&SecretKey32::from_bytes(one_bit)), "raw": true,
        "pragmas": ["cipher_compatibility = 4", "cipher_page_size = 4096"],
        "query": "SELECT v FROM t"
    }));
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("file is not a database"),
        "{r}"
    );
}

#[tokio::test]
async fn t21_rust_opens_a_database_made_by_the_independent_client() {
    let Some(client) = component::sqlcipher_client("t21") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lango.db");
    let k = key(0x11);
    let r = client.request(&json!({
        "path": path, "key": hex_key(&k), "raw": true,
        "pragmas": ["cipher_compatibility = 4", "cipher_page_size = 4096"],
        "statements": ["CREATE TABLE t (v TEXT)", format!("INSERT INTO t VALUES ('{CANARY}')")],
    }));
    assert!(r.get("error").is_none(), "{r}");
    let db = Database::open(&path, raw(&k), OpenOptions::default())
        .await
        .unwrap();
    let v: String = sqlx::query_scalar("SELECT v FROM t")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(v, CANARY);
    db.close().await;
}

#[tokio::test]
async fn t27_legacy_passphrase_with_quotes_opens_and_cannot_inject() {
    let Some(client) = component::sqlcipher_client("t27") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lango.db");
    let pass = "it's a \"pass\"; DROP TABLE t; --";
    let r = client.request(&json!({
        "path": path, "key": pass, "raw": false,
        "pragmas": ["cipher_page_size = 4096"],
        "statements": ["CREATE TABLE t (v TEXT)", "INSERT INTO t VALUES ('x')"],
    }));
    assert!(r.get("error").is_none(), "{r}");
    let p = SecretString::new(pass.to_owned());
    let db = Database::open(
        &path,
        Keying::LegacyPassphrase {
            passphrase: &p,
            compatibility: 4,
            page_size: 4096,
        },
        OpenOptions::default(),
    )
    .await
    .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(n, 1, "table intact: nothing was injected");
    db.close().await;
    let wrong = SecretString::new("it's a \"pass\"".to_owned());
    assert!(matches!(
        Database::open(
            &path,
            Keying::LegacyPassphrase {
                passphrase: &wrong,
                compatibility: 4,
                page_size: 4096
            },
            OpenOptions::default()
        )
        .await,
        Err(Error::WrongKey)
    ));
}

#[tokio::test]
async fn t22_debian_sqlcipher3_database_opens_with_compatibility_3() {
    if !component::require(
        "t22",
        "Debian sqlcipher 3.x CLI",
        component::program("sqlcipher"),
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lango.db");
    let mut child = Command::new("sqlcipher")
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"PRAGMA key = 'legacy passphrase';\nPRAGMA cipher_page_size = 4096;\nCREATE TABLE t (v TEXT);\nINSERT INTO t VALUES ('v3');\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    let p = SecretString::new("legacy passphrase".to_owned());
    // v4 settings do not open it; compatibility 3 does.
    assert!(matches!(
        Database::open(
            &path,
            Keying::LegacyPassphrase {
                passphrase: &p,
                compatibility: 4,
                page_size: 4096
            },
            OpenOptions::default()
        )
        .await,
        Err(Error::WrongKey)
    ));
    let db = Database::open(
        &path,
        Keying::LegacyPassphrase {
            passphrase: &p,
            compatibility: 3,
            page_size: 4096,
        },
        OpenOptions::default(),
    )
    .await
    .unwrap();
    let v: String = sqlx::query_scalar("SELECT v FROM t")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(v, "v3");
    db.close().await;
}

#[tokio::test]
async fn t25_every_pooled_connection_is_keyed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lango.db");
    let k = key(0x25);
    let db = Database::open(
        &path,
        raw(&k),
        OpenOptions {
            create: true,
            max_connections: 6,
            ..OpenOptions::default()
        },
    )
    .await
    .unwrap();
    exec(&db, "CREATE TABLE t (v INTEGER)").await;
    exec(&db, "INSERT INTO t VALUES (1)").await;
    // Hold six connections at once: each must have been keyed to read.
    let mut held = Vec::new();
    for _ in 0..6 {
        held.push(db.pool().acquire().await.unwrap());
    }
    for c in &mut held {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
            .fetch_one(&mut **c)
            .await
            .unwrap();
        assert_eq!(n, 1);
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut **c)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        let sd: i64 = sqlx::query_scalar("PRAGMA secure_delete")
            .fetch_one(&mut **c)
            .await
            .unwrap();
        assert_eq!(sd, 1);
        let ts: i64 = sqlx::query_scalar("PRAGMA temp_store")
            .fetch_one(&mut **c)
            .await
            .unwrap();
        assert_eq!(ts, 2, "temp_store = MEMORY");
    }
    drop(held);
    db.close().await;
}

#[test]
fn t29_state_detection() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.db");
    assert_eq!(state::detect(&p).unwrap(), FileState::Absent);
    std::fs::write(&p, b"").unwrap();
    assert_eq!(state::detect(&p).unwrap(), FileState::Empty);
    std::fs::write(&p, b"0123456789").unwrap();
    assert_eq!(state::detect(&p).unwrap(), FileState::Truncated);
    assert!(state::detect_usable(&p).is_err());
    let mut plain = b"SQLite format 3\0".to_vec();
    plain.extend_from_slice(&[0u8; 100]);
    std::fs::write(&p, &plain).unwrap();
    assert_eq!(state::detect(&p).unwrap(), FileState::Plaintext);
    std::fs::write(&p, [7u8; 64]).unwrap();
    assert_eq!(state::detect(&p).unwrap(), FileState::EncryptedOrForeign);
    let link = dir.path().join("link.db");
    std::os::unix::fs::symlink(&p, &link).unwrap();
    assert_eq!(state::detect(&link).unwrap(), FileState::NotRegularFile);
    let sub = dir.path().join("d.db");
    std::fs::create_dir(&sub).unwrap();
    assert_eq!(state::detect(&sub).unwrap(), FileState::NotRegularFile);
    assert!(state::detect_usable(&sub).is_err());
}

async fn plaintext_db_with_data(path: &Path) {
    let db = Database::open(path, Keying::Plaintext, create())
        .await
        .unwrap();
    exec(
        &db,
        "CREATE TABLE secrets (id TEXT, name TEXT, encrypted_value BLOB)",
    )
    .await;
    exec(&db, "CREATE TABLE foreign_blob (b BLOB)").await;
    exec(&db, "CREATE TABLE notes (v TEXT)").await;
    sqlx::query("INSERT INTO secrets VALUES ('1', 'a', x'00ff10')")
        .execute(db.pool())
        .await
        .unwrap();
    sqlx::query("INSERT INTO foreign_blob VALUES (?1)")
        .bind((0u8..=255).collect::<Vec<u8>>())
        .execute(db.pool())
        .await
        .unwrap();
    sqlx::query("INSERT INTO notes VALUES (?1)")
        .bind(CANARY)
        .execute(db.pool())
        .await
        .unwrap();
    exec(&db, "PRAGMA user_version = 7").await;
    db.close().await;
}

#[tokio::test]
async fn export_roundtrip_keeps_every_byte_and_leaves_no_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lango.db");
    plaintext_db_with_data(&path).await;
    let lock = DataDirLock::acquire(dir.path(), LockMode::Exclusive).unwrap();
    let k = key(0x31);
    let report = export::export(
        &path,
        Operation::Encrypt,
        Keying::Plaintext,
        Target { keying: raw(&k) },
        &lock,
        &NoEnvelope,
    )
    .await
    .unwrap();
    assert_eq!(report.rows["notes"], 1);
    assert!(report.old_was_plaintext);
    // T-45: the canary is nowhere on disk; no side files of the old file remain.
    for f in all_files(dir.path()) {
        assert!(
            !file_contains(&f, CANARY.as_bytes()),
            "{} holds the canary",
            f.display()
        );
        let n = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !n.contains(".tmp-") && !n.contains(".bak-") && !n.ends_with(".migrate.json"),
            "leftover {n}"
        );
    }
    assert_eq!(state::detect(&path).unwrap(), FileState::EncryptedOrForeign);

    // And back (T-32: the foreign blob table survives byte for byte; user_version too).
    let report = export::export(
        &path,
        Operation::Decrypt,
        raw(&k),
        Target {
            keying: Keying::Plaintext,
        },
        &lock,
        &NoEnvelope,
    )
    .await
    .unwrap();
    assert!(!report.old_was_plaintext);
    drop(lock);
    let db = Database::open(&path, Keying::Plaintext, OpenOptions::default())
        .await
        .unwrap();
    let b: Vec<u8> = sqlx::query_scalar("SELECT b FROM foreign_blob")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(b, (0u8..=255).collect::<Vec<u8>>());
    let v: Vec<u8> = sqlx::query_scalar("SELECT encrypted_value FROM secrets")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(v, vec![0x00, 0xff, 0x10]);
    let uv: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(uv, 7);
    db.close().await;
}

#[tokio::test]
async fn t31_page_size_comes_from_the_caller_not_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lango.db");
    plaintext_db_with_data(&path).await;
    let lock = DataDirLock::acquire(dir.path(), LockMode::Exclusive).unwrap();
    let k = key(0x32);
    export::export(
        &path,
        Operation::Encrypt,
        Keying::Plaintext,
        Target {
            keying: Keying::RawKey {
                key: &k,
                page_size: 8192,
            },
        },
        &lock,
        &NoEnvelope,
    )
    .await
    .unwrap();
    drop(lock);
    // Opening with 4096 fails as a wrong key; with the recorded 8192 it works.
    assert!(
        Database::open(&path, raw(&k), OpenOptions::default())
            .await
            .is_err()
    );
    let db = Database::open(
        &path,
        Keying::RawKey {
            key: &k,
            page_size: 8192,
        },
        OpenOptions::default(),
    )
    .await
    .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM notes")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(n, 1);
    db.close().await;
}

#[tokio::test]
async fn t46_export_needs_the_exclusive_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lango.db");
    plaintext_db_with_data(&path).await;
    let before = std::fs::read(&path).unwrap();
    let shared = DataDirLock::acquire(dir.path(), LockMode::Shared).unwrap();
    assert!(matches!(
        DataDirLock::acquire(dir.path(), LockMode::Exclusive),
        Err(Error::Busy(_))
    ));
    let k = key(1);
    assert!(matches!(
        export::export(
            &path,
            Operation::Encrypt,
            Keying::Plaintext,
            Target { keying: raw(&k) },
            &shared,
            &NoEnvelope
        )
        .await,
        Err(Error::Busy(_))
    ));
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[tokio::test]
async fn t33_files_are_private_under_umask_000() {
    // nextest runs each test in its own process, so changing the umask is contained.
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    lango_store::fsutil::ensure_private_dir(&data).unwrap();
    let path = data.join("lango.db");
    let k = key(0x33);
    let db = Database::open(&path, raw(&k), create()).await.unwrap();
    exec(&db, "CREATE TABLE t (v TEXT)").await;
    exec(&db, "INSERT INTO t VALUES ('x')").await;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    for f in all_files(&data) {
        if f.file_name().unwrap() != ".lock" {
            assert_eq!(mode(&f), 0o600, "{}", f.display());
        }
    }
    assert!(data.join("lango.db-wal").exists());
    db.close().await;
    let lock = DataDirLock::acquire(&data, LockMode::Exclusive).unwrap();
    assert_eq!(mode(&data.join(".lock")), 0o600);
    export::export(
        &path,
        Operation::Decrypt,
        raw(&k),
        Target {
            keying: Keying::Plaintext,
        },
        &lock,
        &NoEnvelope,
    )
    .await
    .unwrap();
    for f in all_files(&data) {
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
}

#[tokio::test]
async fn leftovers_without_a_journal_are_never_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lango.db");
    std::fs::write(dir.path().join("lango.db.bak-0011223344556677"), b"x").unwrap();
    assert!(matches!(
        export::recover(&path, &NoEnvelope),
        Err(Error::RecoveryNeeded { .. })
    ));
}
