//! Node and wallet keys against a real vault (SQLCipher database, key envelope): the rules
//! that keep an identity from ever being replaced silently (handshake spec K-1…K-7, C-6).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use lango_crypto::{KdfConfig, SecretString, kdf::Argon2Config, node_key::NodeKey};
use lango_p2p::identity::{
    self, KeyOrigin, KeyStorage, NODE_KEY_SECRET, WALLET_KEY_SECRET, load_node_key,
    load_or_create_wallet,
};
use lango_secrets::{
    Caller, UnlockOptions, Vault, VaultConfig,
    passphrase::{Given, NoPrompt},
};

const PASS: &str = "correct horse battery staple";

fn config() -> VaultConfig {
    let mut c = VaultConfig {
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
    c.keyring.enabled = false;
    c
}

async fn vault(dir: &Path) -> Vault {
    let given = Given::new(SecretString::new(PASS.into()), &NoPrompt);
    lango_secrets::unlock(
        dir,
        &config(),
        &given,
        UnlockOptions {
            allow_create: true,
            ..UnlockOptions::default()
        },
    )
    .await
    .unwrap()
}

fn write_legacy(key_dir: &Path, key: &NodeKey) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(key_dir).unwrap();
    std::fs::set_permissions(key_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let f = key_dir.join("node.key");
    std::fs::write(&f, key.to_protobuf().expose()).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    f
}

/// Replaces the stored ciphertext of `name` with garbage of the same length, the way a
/// corrupted disk or a foreign writer would.
async fn corrupt(v: &Vault, name: &str) -> Vec<u8> {
    let pool = v.database().unwrap().pool();
    let before: Vec<u8> = sqlx::query_scalar("SELECT encrypted_value FROM secrets WHERE name = ?1")
        .bind(name)
        .fetch_one(pool)
        .await
        .unwrap();
    let mut bad = before.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x55;
    sqlx::query("UPDATE secrets SET encrypted_value = ?1 WHERE name = ?2")
        .bind(&bad)
        .bind(name)
        .execute(pool)
        .await
        .unwrap();
    bad
}

async fn stored(v: &Vault, name: &str) -> Vec<u8> {
    sqlx::query_scalar("SELECT encrypted_value FROM secrets WHERE name = ?1")
        .bind(name)
        .fetch_one(v.database().unwrap().pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn generates_once_then_loads_the_same_key() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("lango");
    let v = vault(&dir).await;
    let store = v.secrets().unwrap();
    let key_dir = identity::key_dir(None, &dir);
    let first = load_node_key(Some(&store), &key_dir).await.unwrap();
    assert_eq!(first.origin, KeyOrigin::Generated);
    assert_eq!(first.storage, KeyStorage::SecretsStore);
    assert!(
        !key_dir.join("node.key").exists(),
        "no file is written (K-3 step 3)"
    );
    let raw = store.get(NODE_KEY_SECRET, Caller::Operator).await.unwrap();
    assert_eq!(raw.len(), 68);
    assert_eq!(&raw.expose()[..4], &[0x08, 0x01, 0x12, 0x40]);
    let second = load_node_key(Some(&store), &key_dir).await.unwrap();
    assert_eq!(second.origin, KeyOrigin::Stored);
    assert_eq!(second.key.peer_id(), first.key.peer_id());
    // Agents may not read key material.
    assert!(store.get(NODE_KEY_SECRET, Caller::Agent).await.is_err());
    v.close().await;
}

#[tokio::test]
async fn legacy_file_is_copied_verified_and_deleted() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("lango");
    let v = vault(&dir).await;
    let store = v.secrets().unwrap();
    let key_dir = identity::key_dir(None, &dir);
    let legacy = NodeKey::generate().unwrap();
    let file = write_legacy(&key_dir, &legacy);
    let got = load_node_key(Some(&store), &key_dir).await.unwrap();
    assert_eq!(got.origin, KeyOrigin::Migrated);
    assert_eq!(got.key.peer_id(), legacy.peer_id());
    assert!(!file.exists());
    let again = load_node_key(Some(&store), &key_dir).await.unwrap();
    assert_eq!(again.origin, KeyOrigin::Stored);
    assert_eq!(again.key.peer_id(), legacy.peer_id());
    v.close().await;
}

#[tokio::test]
async fn a_store_read_error_stops_startup_and_touches_neither_copy() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("lango");
    let v = vault(&dir).await;
    let store = v.secrets().unwrap();
    let key_dir = identity::key_dir(None, &dir);
    load_node_key(Some(&store), &key_dir).await.unwrap();
    // A legacy file is also present (e.g. restored from a backup).
    let legacy = NodeKey::generate().unwrap();
    let file = write_legacy(&key_dir, &legacy);
    let file_bytes = std::fs::read(&file).unwrap();
    let bad = corrupt(&v, NODE_KEY_SECRET).await;

    let err = load_node_key(Some(&store), &key_dir).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("read node key from secrets store"),
        "{err}"
    );
    // Nothing was replaced: the stored ciphertext and the file are byte-identical.
    assert_eq!(stored(&v, NODE_KEY_SECRET).await, bad);
    assert_eq!(std::fs::read(&file).unwrap(), file_bytes);
    v.close().await;
}

#[tokio::test]
async fn a_malformed_stored_key_is_fatal() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("lango");
    let v = vault(&dir).await;
    let store = v.secrets().unwrap();
    store
        .put(
            NODE_KEY_SECRET,
            &[0x08, 0x01, 0x12, 0x40, 1, 2, 3],
            Caller::Operator,
        )
        .await
        .unwrap();
    let err = load_node_key(Some(&store), &identity::key_dir(None, &dir))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("unmarshal node key from secrets store"),
        "{err}"
    );
    v.close().await;
}

#[tokio::test]
async fn a_wallet_read_error_never_generates_a_new_wallet() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("lango");
    let v = vault(&dir).await;
    let store = v.secrets().unwrap();
    let (w, created) = load_or_create_wallet(&store).await.unwrap();
    assert!(created);
    let (w2, created2) = load_or_create_wallet(&store).await.unwrap();
    assert!(!created2);
    assert_eq!(w.did(), w2.did());
    let bad = corrupt(&v, WALLET_KEY_SECRET).await;
    let err = load_or_create_wallet(&store).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("read wallet key from secrets store"),
        "{err}"
    );
    assert_eq!(
        stored(&v, WALLET_KEY_SECRET).await,
        bad,
        "the wallet was not overwritten"
    );
    v.close().await;
}

#[tokio::test]
async fn file_mode_without_a_store_creates_a_private_file_once() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    let key_dir = t.path().join("p2p");
    let first = load_node_key(None, &key_dir).await.unwrap();
    assert_eq!(first.storage, KeyStorage::File);
    assert_eq!(first.origin, KeyOrigin::Generated);
    let f = key_dir.join("node.key");
    assert_eq!(
        std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(&key_dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(std::fs::read(&f).unwrap().len(), 68);
    let second = load_node_key(None, &key_dir).await.unwrap();
    assert_eq!(second.origin, KeyOrigin::File);
    assert_eq!(second.key.peer_id(), first.key.peer_id());
    // A corrupt file is an error, never replaced.
    std::fs::write(&f, b"garbage").unwrap();
    let err = load_node_key(None, &key_dir).await.unwrap_err();
    assert!(err.to_string().starts_with("unmarshal node key"), "{err}");
    assert_eq!(std::fs::read(&f).unwrap(), b"garbage");
}

#[tokio::test]
async fn the_old_96_byte_form_is_accepted_and_rewritten_as_68_bytes() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("lango");
    let v = vault(&dir).await;
    let store = v.secrets().unwrap();
    let key_dir = identity::key_dir(None, &dir);
    let key = NodeKey::generate().unwrap();
    let pb = key.to_protobuf();
    let mut old = vec![0x08, 0x01, 0x12, 0x60];
    old.extend_from_slice(&pb.expose()[4..]);
    old.extend_from_slice(&key.public_key());
    std::fs::create_dir_all(&key_dir).unwrap();
    std::fs::write(key_dir.join("node.key"), &old).unwrap();
    let got = load_node_key(Some(&store), &key_dir).await.unwrap();
    assert_eq!(got.key.peer_id(), key.peer_id());
    let raw = store.get(NODE_KEY_SECRET, Caller::Operator).await.unwrap();
    assert_eq!(raw.len(), 68);
    v.close().await;
}
