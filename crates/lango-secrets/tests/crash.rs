//! Crash safety of the vault's multi-step operations (T-41, T-43, master-key rotation): a child
//! process is killed with SIGKILL at each named step; the next unlock must finish or roll back,
//! with every secret readable under the same passphrase.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{os::unix::process::ExitStatusExt, path::Path, process::Command};

use lango_crypto::SecretString;
use lango_secrets::{Caller, UnlockOptions, unlock, vault::db_path};
use lango_store::{Database, Keying, OpenOptions, sqlx};
use support::*;

const GO_PASS: &str = "legacy passphrase 1";

async fn go_plaintext(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let salt = [7u8; 16];
    let p = SecretString::new(GO_PASS.into());
    let db = Database::open(
        &db_path(dir),
        Keying::Plaintext,
        OpenOptions {
            create: true,
            ..OpenOptions::default()
        },
    )
    .await
    .unwrap();
    let stmts = [
        "CREATE TABLE security_config (name TEXT PRIMARY KEY, value BLOB NOT NULL, checksum BLOB)".to_owned(),
        "CREATE TABLE keys (id uuid NOT NULL PRIMARY KEY, name text NOT NULL UNIQUE, remote_key_id text NOT NULL, type text NOT NULL DEFAULT 'encryption', created_at datetime NOT NULL, last_used_at datetime NULL)".into(),
        "CREATE TABLE secrets (id uuid NOT NULL PRIMARY KEY, name text NOT NULL UNIQUE, encrypted_value blob NOT NULL, created_at datetime NOT NULL, updated_at datetime NOT NULL, access_count integer NOT NULL DEFAULT 0, key_secrets uuid NULL)".into(),
        format!("INSERT INTO security_config VALUES ('default', x'{}', x'{}')", hex::encode(salt), hex::encode(lango_crypto::kdf::legacy_checksum(GO_PASS.as_bytes(), &salt))),
        "INSERT INTO keys VALUES ('k1', 'default', 'local', 'encryption', '2026-01-01 00:00:00+00:00', NULL)".into(),
    ];
    for st in stmts {
        sqlx::query(sqlx::AssertSqlSafe(st))
            .execute(db.pool())
            .await
            .unwrap();
    }
    for i in 0..30 {
        let blob = lango_secrets::legacy::seal_go_blob(&p, &salt, format!("value-{i}").as_bytes())
            .unwrap();
        sqlx::query("INSERT INTO secrets VALUES (?1, ?2, ?3, '2026-01-01 00:00:00+00:00', '2026-01-01 00:00:00+00:00', 0, 'k1')")
            .bind(format!("id{i}"))
            .bind(format!("s{i}"))
            .bind(blob)
            .execute(db.pool())
            .await
            .unwrap();
    }
    db.close().await;
}

fn create() -> UnlockOptions {
    UnlockOptions {
        allow_create: true,
        ..UnlockOptions::default()
    }
}

fn exclusive() -> UnlockOptions {
    UnlockOptions {
        exclusive: true,
        ..UnlockOptions::default()
    }
}

/// In a child (LANGO_CHILD set) runs one operation that the parent kills at a fault point.
/// Run on its own it checks the same operations complete without faults.
#[tokio::test]
async fn child_entry() {
    let cfg = config();
    if let (Ok(what), Ok(dir)) = (
        std::env::var("LANGO_CHILD"),
        std::env::var("LANGO_CHILD_DIR"),
    ) {
        let dir = Path::new(&dir);
        match what.as_str() {
            "legacy" => {
                unlock(dir, &cfg, &Script::stdin(GO_PASS), UnlockOptions::default())
                    .await
                    .unwrap()
                    .close()
                    .await
            }
            "first-run" => {
                unlock(dir, &cfg, &Script::stdin(PASS), create())
                    .await
                    .unwrap()
                    .close()
                    .await
            }
            "rotate" => {
                let mut v = unlock(dir, &cfg, &Script::stdin(PASS), exclusive())
                    .await
                    .unwrap();
                v.rotate_master_key(&SecretString::new(PASS.into()), None, &|_| {})
                    .await
                    .unwrap();
                v.close().await;
            }
            other => panic!("unknown child operation {other}"),
        }
        return;
    }
    let (_t, dir) = data_dir();
    go_plaintext(&dir).await;
    unlock(
        &dir,
        &cfg,
        &Script::stdin(GO_PASS),
        UnlockOptions::default(),
    )
    .await
    .unwrap()
    .close()
    .await;
    let mut v = unlock(&dir, &cfg, &Script::stdin(GO_PASS), exclusive())
        .await
        .unwrap();
    v.rotate_master_key(&SecretString::new(GO_PASS.into()), None, &|_| {})
        .await
        .unwrap();
    v.close().await;
}

fn kill_child_at(what: &str, dir: &Path, point: &str) {
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env("LANGO_CHILD", what)
        .env("LANGO_CHILD_DIR", dir)
        .env("LANGO_FAULT_AT", point)
        .status()
        .unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "{what} at {point}: the child should have been killed"
    );
}

async fn all_readable(dir: &Path, pass: &str, n: usize) {
    let v = unlock(
        dir,
        &config(),
        &Script::stdin(pass),
        UnlockOptions::default(),
    )
    .await
    .unwrap();
    let s = v.secrets().unwrap();
    for i in 0..n {
        assert_eq!(
            s.get(&format!("s{i}"), Caller::Operator)
                .await
                .unwrap()
                .expose(),
            format!("value-{i}").as_bytes()
        );
    }
    assert_eq!(v.envelope().state, lango_secrets::envelope::State::Active);
    v.close().await;
    for (name, _) in snapshot(dir) {
        assert!(
            !name.contains(".tmp-")
                && !name.contains(".bak-")
                && !name.ends_with(".next")
                && !name.ends_with(".migrate.json"),
            "leftover {name}"
        );
    }
}

#[tokio::test]
async fn t41_legacy_migration_killed_at_each_step() {
    for point in ["L2", "L3", "L5"] {
        let (_t, dir) = data_dir();
        go_plaintext(&dir).await;
        kill_child_at("legacy", &dir, point);
        all_readable(&dir, GO_PASS, 30).await;
    }
}

#[tokio::test]
async fn t43_first_run_killed_between_envelope_and_database() {
    let (_t, dir) = data_dir();
    kill_child_at("first-run", &dir, "UN11");
    assert!(dir.join("key-envelope.json").exists());
    assert!(!db_path(&dir).exists());
    // Not a new first run: the same passphrase completes the vault (a different one fails).
    assert!(
        unlock(
            &dir,
            &config(),
            &Script::stdin("some other passphrase"),
            create()
        )
        .await
        .is_err()
    );
    let v = unlock(&dir, &config(), &Script::stdin(PASS), create())
        .await
        .unwrap();
    assert!(!v.report().created);
    v.secrets()
        .unwrap()
        .put("s0", b"value-0", Caller::Operator)
        .await
        .unwrap();
    v.close().await;
    all_readable(&dir, PASS, 1).await;
}

#[tokio::test]
async fn master_key_rotation_killed_at_each_step() {
    // R1: before the transaction; R2: after it; E8b: inside the SQLCipher re-key, after the
    // swap; R3: before the new envelope is installed.
    for point in ["R1", "R2", "E5", "E8b", "R3"] {
        let (_t, dir) = data_dir();
        let v = unlock(&dir, &config(), &Script::stdin(PASS), create())
            .await
            .unwrap();
        for i in 0..10 {
            v.secrets()
                .unwrap()
                .put(
                    &format!("s{i}"),
                    format!("value-{i}").as_bytes(),
                    Caller::Operator,
                )
                .await
                .unwrap();
        }
        v.close().await;
        kill_child_at("rotate", &dir, point);
        all_readable(&dir, PASS, 10).await;
    }
}
