//! Data written by the Go node, made by independent clients the way the Go node makes it
//! (secrets spec 2.1), unlocked and migrated by lango-rs (T-22, T-23, T-24, T-45, T-59).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{
    io::Write,
    path::Path,
    process::{Command, Stdio},
};

use lango_crypto::{SecretString, aead::BlobPurpose, kdf, provider::AeadContext};
use lango_e2e::component;
use lango_secrets::{Caller, Error, UnlockOptions, passphrase::Source, unlock, vault::db_path};
use lango_store::{Database, FileState, Keying, OpenOptions, sqlx, state};
use support::*;

const GO_PASS: &str = "legacy passphrase 1";
const SALT: [u8; 16] = [
    0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
];
const KMS_BLOB: &str = "0badc0ffee0badc0ffee0badc0ffee0badc0ffee";

struct GoData {
    statements: Vec<String>,
    /// Byte strings that must not survive the migration anywhere on disk.
    legacy_bytes: Vec<Vec<u8>>,
}

fn go_data(with_checksum: bool) -> GoData {
    let p = SecretString::new(GO_PASS.into());
    let blob = |v: &[u8]| lango_secrets::legacy::seal_go_blob(&p, &SALT, v).unwrap();
    let api = blob(b"v-api");
    let wallet = blob(&[0x42; 32]);
    let profile = blob(br#"{"security":{"signer":{"provider":"local"}}}"#);
    let checksum = kdf::legacy_checksum(GO_PASS.as_bytes(), &SALT);
    let t = "2026-02-25 14:03:11.5+09:00";
    let mut s = vec![
        "CREATE TABLE security_config (name TEXT PRIMARY KEY, value BLOB NOT NULL, checksum BLOB)".to_owned(),
        "CREATE TABLE keys (id uuid NOT NULL, name text NOT NULL, remote_key_id text NOT NULL, type text NOT NULL DEFAULT 'encryption', created_at datetime NOT NULL, last_used_at datetime NULL, PRIMARY KEY (id))".into(),
        "CREATE UNIQUE INDEX keys_name_key ON keys (name)".into(),
        "CREATE TABLE secrets (id uuid NOT NULL, name text NOT NULL, encrypted_value blob NOT NULL, created_at datetime NOT NULL, updated_at datetime NOT NULL, access_count integer NOT NULL DEFAULT 0, key_secrets uuid NULL, PRIMARY KEY (id))".into(),
        "CREATE UNIQUE INDEX secrets_name_key ON secrets (name)".into(),
        "CREATE TABLE config_profiles (id uuid NOT NULL, name text NOT NULL, encrypted_data blob NOT NULL, active bool NOT NULL DEFAULT false, version integer NOT NULL DEFAULT 1, created_at datetime NOT NULL, updated_at datetime NOT NULL, PRIMARY KEY (id))".into(),
        "CREATE TABLE sessions (id integer PRIMARY KEY, key text, data blob)".into(),
        format!("INSERT INTO security_config VALUES ('default', x'{}', {})", hex::encode(SALT), if with_checksum { format!("x'{}'", hex::encode(checksum)) } else { "NULL".into() }),
        format!("INSERT INTO keys VALUES ('11111111-1111-4111-8111-111111111111', 'default', 'local', 'encryption', '{t}', NULL)"),
        format!("INSERT INTO keys VALUES ('22222222-2222-4222-8222-222222222222', 'kms-default', 'arn:aws:kms:eu-west-1:1:key/x', 'encryption', '{t}', NULL)"),
        format!("INSERT INTO secrets VALUES ('a1111111-1111-4111-8111-111111111111', 'api.key', x'{}', '{t}', '{t}', 3, '11111111-1111-4111-8111-111111111111')", hex::encode(&api)),
        format!("INSERT INTO secrets VALUES ('a2222222-2222-4222-8222-222222222222', 'wallet.privatekey', x'{}', '{t}', '{t}', 0, '11111111-1111-4111-8111-111111111111')", hex::encode(&wallet)),
        format!("INSERT INTO secrets VALUES ('a3333333-3333-4333-8333-333333333333', 'cloud.token', x'{KMS_BLOB}', '{t}', '{t}', 0, '22222222-2222-4222-8222-222222222222')"),
        format!("INSERT INTO config_profiles VALUES ('c1111111-1111-4111-8111-111111111111', 'default', x'{}', 1, 4, '{t}', '{t}')", hex::encode(&profile)),
        "INSERT INTO sessions VALUES (1, 'session-key', x'00ff00ff')".into(),
    ];
    s.shrink_to_fit();
    GoData {
        statements: s,
        legacy_bytes: vec![api, wallet, profile, checksum.to_vec()],
    }
}

async fn make_plaintext(dir: &Path, data: &GoData) {
    std::fs::create_dir_all(dir).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
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
    for st in &data.statements {
        sqlx::query(sqlx::AssertSqlSafe(st.clone()))
            .execute(db.pool())
            .await
            .unwrap();
    }
    db.close().await;
}

fn make_sqlcipher4(dir: &Path, data: &GoData, client: &component::SqlcipherClient) {
    std::fs::create_dir_all(dir).unwrap();
    let v = client.request(&serde_json::json!({
        "path": db_path(dir), "key": GO_PASS, "raw": false,
        "pragmas": ["cipher_page_size = 4096"], "statements": data.statements,
    }));
    assert!(v.get("error").is_none(), "{v}");
}

fn make_sqlcipher3(dir: &Path, data: &GoData) {
    std::fs::create_dir_all(dir).unwrap();
    let mut script = format!("PRAGMA key = '{GO_PASS}';\nPRAGMA cipher_page_size = 4096;\n");
    for st in &data.statements {
        script.push_str(st);
        script.push_str(";\n");
    }
    let mut child = Command::new("sqlcipher")
        .arg(db_path(dir))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
}

async fn check_migrated(dir: &Path, data: &GoData, expect_encrypted: bool) {
    let v = unlock(
        dir,
        &config(),
        &Script::stdin(GO_PASS),
        UnlockOptions::default(),
    )
    .await
    .unwrap();
    let s = v.secrets().unwrap();
    assert_eq!(
        s.get("api.key", Caller::Operator).await.unwrap().expose(),
        b"v-api"
    );
    assert_eq!(
        s.get("wallet.privatekey", Caller::Operator)
            .await
            .unwrap()
            .expose(),
        &[0x42; 32]
    );
    let pool = v.database().unwrap().pool().clone();
    // The KMS row is left byte for byte.
    let kms: Vec<u8> =
        sqlx::query_scalar("SELECT encrypted_value FROM secrets WHERE name = 'cloud.token'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(hex::encode(kms), KMS_BLOB);
    // The profile is a v1 blob bound to its name and purpose.
    let prof: Vec<u8> =
        sqlx::query_scalar("SELECT encrypted_data FROM config_profiles WHERE name = 'default'")
            .fetch_one(&pool)
            .await
            .unwrap();
    let aad = AeadContext {
        purpose: BlobPurpose::ConfigProfiles,
        context: b"default",
        max_blob_len: 1 << 20,
    };
    assert_eq!(
        v.provider().decrypt_sync(&prof, aad).unwrap().expose(),
        br#"{"security":{"signer":{"provider":"local"}}}"#
    );
    // The Go salt/checksum row is gone; the foreign table is intact.
    let rows: Vec<String> = sqlx::query_scalar("SELECT name FROM security_config ORDER BY name")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(rows, vec!["default_key", "format", "mk_id"]);
    let sess: Vec<u8> = sqlx::query_scalar("SELECT data FROM sessions WHERE id = 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(sess, vec![0x00, 0xff, 0x00, 0xff]);
    assert_eq!(v.envelope().state, lango_secrets::envelope::State::Active);
    v.close().await;
    let expected = if expect_encrypted {
        FileState::EncryptedOrForeign
    } else {
        FileState::Plaintext
    };
    assert_eq!(state::detect(&db_path(dir)).unwrap(), expected);
    // T-45: no legacy ciphertext and no checksum survives anywhere on disk.
    for (name, bytes) in snapshot(dir) {
        for needle in &data.legacy_bytes {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                "{name} still holds legacy bytes"
            );
        }
    }
}

#[tokio::test]
async fn plaintext_go_database_is_migrated() {
    let (_t, dir) = data_dir();
    let data = go_data(true);
    make_plaintext(&dir, &data).await;
    let v = unlock(
        &dir,
        &config(),
        &Script::stdin(GO_PASS),
        UnlockOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(v.report().legacy_migrated, Some((2, 1)));
    v.close().await;
    check_migrated(&dir, &data, false).await;
}

#[tokio::test]
async fn go_database_without_checksum_is_verified_by_trial_decryption() {
    let (_t, dir) = data_dir();
    let data = go_data(false);
    make_plaintext(&dir, &data).await;
    let e = unlock(
        &dir,
        &config(),
        &Script::stdin("another legacy pass"),
        UnlockOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Error::WrongPassphrase { .. }), "{e}");
    unlock(
        &dir,
        &config(),
        &Script::stdin(GO_PASS),
        UnlockOptions::default(),
    )
    .await
    .unwrap()
    .close()
    .await;
    check_migrated(&dir, &data, false).await;
}

#[tokio::test]
async fn t23_sqlcipher4_go_database_is_migrated_to_the_raw_key() {
    let Some(client) = component::sqlcipher_client("t23") else {
        return;
    };
    let (_t, dir) = data_dir();
    let data = go_data(true);
    make_sqlcipher4(&dir, &data, &client);
    check_migrated(&dir, &data, true).await;
    // The passphrase no longer opens the file as SQLCipher key: it is keyed with the raw key.
    let p = SecretString::new(GO_PASS.into());
    assert!(
        Database::open(
            &db_path(&dir),
            Keying::LegacyPassphrase {
                passphrase: &p,
                compatibility: 4,
                page_size: 4096
            },
            OpenOptions::default()
        )
        .await
        .is_err()
    );
}

#[tokio::test]
async fn t22_sqlcipher3_go_database_is_migrated_to_the_raw_key() {
    if !component::require(
        "t22",
        "Debian sqlcipher 3.x CLI",
        component::program("sqlcipher"),
    ) {
        return;
    }
    let (_t, dir) = data_dir();
    let data = go_data(true);
    make_sqlcipher3(&dir, &data);
    check_migrated(&dir, &data, true).await;
}

#[tokio::test]
async fn t24_wrong_passphrase_on_go_data_changes_nothing() {
    if !component::require(
        "t24",
        "Debian sqlcipher 3.x CLI",
        component::program("sqlcipher"),
    ) {
        return;
    }
    for sqlcipher in [false, true] {
        let (_t, dir) = data_dir();
        let data = go_data(true);
        if sqlcipher {
            make_sqlcipher3(&dir, &data);
        } else {
            make_plaintext(&dir, &data).await;
        }
        keyfile(&dir, "the wrong legacy passphrase\n");
        let before = snapshot(&dir);
        let e = unlock(&dir, &config(), &Script::none(), UnlockOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::WrongPassphrase {
                    via: Source::Keyfile,
                    ..
                }
            ),
            "{e}"
        );
        if sqlcipher {
            assert!(e.to_string().contains("or not a lango database"), "{e}");
        }
        assert!(
            snapshot(&dir) == before,
            "files changed after a wrong passphrase (sqlcipher={sqlcipher})"
        );
        assert!(
            dir.join("keyfile").exists(),
            "a wrong passphrase never shreds the keyfile"
        );
    }
}

#[tokio::test]
async fn auto_migration_can_be_switched_off() {
    let (_t, dir) = data_dir();
    let data = go_data(true);
    make_plaintext(&dir, &data).await;
    let mut cfg = config();
    cfg.legacy.auto_migrate = false;
    let e = unlock(
        &dir,
        &cfg,
        &Script::stdin(GO_PASS),
        UnlockOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Error::LegacyMigrationRequired), "{e}");
    let v = unlock(
        &dir,
        &cfg,
        &Script::stdin(GO_PASS),
        UnlockOptions {
            force_legacy_migration: true,
            ..UnlockOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(v.report().legacy_migrated, Some((2, 1)));
    v.close().await;
}

#[tokio::test]
async fn t59_go_keyring_entry_unlocks_and_is_converted() {
    let check = component::program("secret-tool").and_then(|()| {
        std::env::var("DBUS_SESSION_BUS_ADDRESS")
            .map(|_| ())
            .map_err(|_| "no D-Bus session".to_owned())
    });
    if !component::require("t59", "Secret Service (dbus + gnome-keyring)", check) {
        return;
    }
    let (_t, dir) = data_dir();
    let data = go_data(true);
    make_plaintext(&dir, &data).await;
    let mut store = Command::new("secret-tool")
        .args([
            "store",
            "--label=Password for 'master-passphrase' on 'lango'",
            "service",
            "lango",
            "username",
            "master-passphrase",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    store
        .stdin
        .take()
        .unwrap()
        .write_all(GO_PASS.as_bytes())
        .unwrap();
    assert!(store.wait().unwrap().success());

    let mut cfg = config();
    cfg.keyring.enabled = true;
    let v = unlock(&dir, &cfg, &Script::none(), UnlockOptions::default())
        .await
        .unwrap();
    assert_eq!(v.report().source, Source::Keyring);
    let account = v.envelope().keyring_account();
    assert!(
        v.envelope()
            .has_slot(lango_secrets::envelope::SlotKind::Keyring)
    );
    v.close().await;
    let lookup = |user: &str| {
        Command::new("secret-tool")
            .args(["lookup", "service", "lango", "username", user])
            .output()
            .unwrap()
    };
    assert!(
        !lookup("master-passphrase").status.success(),
        "the Go entry was removed"
    );
    let v1 = lookup(&account);
    assert!(v1.status.success());
    let stored = String::from_utf8_lossy(&v1.stdout);
    assert!(stored.starts_with("lango-unlock-v1:"));
    assert!(
        !stored.contains(GO_PASS),
        "the keyring holds an unlock key, never the passphrase"
    );
    // And the new entry unlocks without a prompt.
    let v = unlock(&dir, &cfg, &Script::none(), UnlockOptions::default())
        .await
        .unwrap();
    assert_eq!(v.report().source, Source::Keyring);
    v.close().await;
    let _ = Command::new("secret-tool")
        .args(["clear", "service", "lango", "username", &account])
        .status();
}
