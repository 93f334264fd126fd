//! The node's two identities and where they are kept.
//!
//! - The **node key** (Ed25519) is the libp2p identity: the network peer ID and the key noise
//!   authenticates with. It lives in the secrets store as `p2p.node.privatekey`, in the libp2p
//!   protobuf encoding (`08 01 12 40 ‖ seed ‖ public`, 68 bytes).
//! - The **wallet key** (secp256k1) is the agent's identity: its DID `did:lango:<hex>` and the
//!   key that signs handshakes and agent cards. It lives in the secrets store as
//!   `wallet.privatekey` (the 32-byte scalar).
//!
//! ## The rule that protects both
//! Only a *not found* answer from the store ever leads to generating a key (handshake spec
//! K-3, C-6). A decryption error, a database error or a malformed value stops start-up with
//! the key copies untouched: the Go node would generate a new key and overwrite the old one,
//! silently replacing the node's identity or losing a wallet.
//!
//! ## Legacy `node.key`
//! A Go node kept the node key as a plaintext file `<keyDir>/node.key`. When a secrets store
//! exists, the file is copied into it, read back and compared, and only then deleted
//! (K-4). If the copy fails the node runs on the file key and retries on the next start.
//! Without a secrets store the file *is* the storage (K-5): created 0600 in a 0700 directory,
//! written atomically.

use std::path::{Path, PathBuf};

use lango_crypto::{mac::ct_eq, node_key::NodeKey, wallet::Did, wallet::WalletKey};
use lango_secrets::{Caller, SecretsStore};

use crate::{Error, Result};

/// Secrets-store name of the node key (a constant; `p2p.nodeKeyName` is ignored).
pub const NODE_KEY_SECRET: &str = "p2p.node.privatekey";
/// Secrets-store name of the wallet key.
pub const WALLET_KEY_SECRET: &str = "wallet.privatekey";
/// File name of the legacy plaintext node key inside the key directory.
pub const LEGACY_NODE_KEY_FILE: &str = "node.key";
/// Largest legacy key file read (the 96-byte form is 100 bytes).
const MAX_KEY_FILE: u64 = 4096;

/// Where the node key is kept (reported as `keyStorage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum KeyStorage {
    /// In the encrypted secrets store.
    #[serde(rename = "secrets-store")]
    SecretsStore,
    /// In the plaintext legacy file.
    #[serde(rename = "file")]
    File,
}

impl KeyStorage {
    /// `secrets-store` or `file`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SecretsStore => "secrets-store",
            Self::File => "file",
        }
    }
}

/// How this start obtained the node key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyOrigin {
    /// Read from the secrets store.
    Stored,
    /// Generated now (nothing was stored).
    Generated,
    /// Copied from the legacy file into the store, verified, file deleted.
    Migrated,
    /// Copied into the store, but the legacy file could not be deleted.
    MigratedFileKept,
    /// Read from the legacy file; copying it into the store failed (retried next start).
    MigrationPending,
    /// Read from the key file (no secrets store).
    File,
}

/// The node key and where it came from.
pub struct NodeIdentity {
    /// The key.
    pub key: NodeKey,
    /// Where it is kept now.
    pub storage: KeyStorage,
    /// What this start did to get it.
    pub origin: KeyOrigin,
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("peer_id", &self.key.peer_id())
            .field("storage", &self.storage)
            .field("origin", &self.origin)
            .finish()
    }
}

/// The key directory: `p2p.keyDir` with a leading `~` expanded, or `<data-dir>/p2p`.
pub fn key_dir(configured: Option<&str>, data_dir: &Path) -> PathBuf {
    match configured {
        None | Some("") => data_dir.join("p2p"),
        Some(s) => match (s.strip_prefix('~'), std::env::home_dir()) {
            (Some(rest), Some(home)) => home.join(rest.trim_start_matches('/')),
            _ => PathBuf::from(s),
        },
    }
}

/// Parses a DID, accepting only the canonical form (lowercase hex, compressed key).
pub fn canonical_did(s: &str) -> Result<Did> {
    Did::parse(s).map_err(|e| Error::InvalidDid {
        did: s.chars().take(80).collect(),
        reason: e.to_string(),
    })
}

fn identity_err(context: &'static str, e: impl std::fmt::Display) -> Error {
    Error::Identity {
        context,
        message: e.to_string(),
    }
}

/// Reads the legacy key file; `Ok(None)` if it does not exist. Any other problem is an error.
fn read_key_file(path: &Path) -> Result<Option<NodeKey>> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(identity_err("read node key", e)),
        Ok(_) => {}
    }
    if let Ok(Some(Err(problem))) = lango_store::fsutil::check_private_file(path) {
        tracing::warn!(
            event = "node_key_file_exposed",
            path = %path.display(),
            "node key file {}: {problem}",
            path.display()
        );
    }
    let bytes = lango_crypto::SecretBytes::new(
        lango_store::fsutil::read_bounded_nofollow(path, MAX_KEY_FILE)
            .map_err(|e| identity_err("read node key", e))?,
    );
    NodeKey::from_protobuf(bytes.expose())
        .map(Some)
        .map_err(|e| identity_err("unmarshal node key", e))
}

/// Loads the node key following K-3/K-4 when `store` is given, K-5 otherwise.
pub async fn load_node_key(store: Option<&SecretsStore>, key_dir: &Path) -> Result<NodeIdentity> {
    let file = key_dir.join(LEGACY_NODE_KEY_FILE);
    let Some(store) = store else {
        return load_file_mode(&file);
    };
    // K-3 step 1: only NotFound moves on.
    match store.get(NODE_KEY_SECRET, Caller::Operator).await {
        Ok(bytes) => {
            let key = NodeKey::from_protobuf(bytes.expose())
                .map_err(|e| identity_err("unmarshal node key from secrets store", e))?;
            if file.exists() {
                tracing::warn!(
                    event = "node_key_legacy_file_present",
                    path = %file.display(),
                    "a legacy node key file exists although the secrets store holds the node key; \
                     it is not used (delete it once you have a backup)"
                );
            }
            return Ok(NodeIdentity {
                key,
                storage: KeyStorage::SecretsStore,
                origin: KeyOrigin::Stored,
            });
        }
        Err(lango_secrets::Error::NotFound(_)) => {}
        Err(e) => return Err(identity_err("read node key from secrets store", e)),
    }
    // Step 2: the legacy file.
    if let Some(key) = read_key_file(&file)? {
        let origin = migrate_file_key(store, &key, &file).await;
        let storage = match origin {
            KeyOrigin::MigrationPending => KeyStorage::File,
            _ => KeyStorage::SecretsStore,
        };
        return Ok(NodeIdentity {
            key,
            storage,
            origin,
        });
    }
    // Step 3: generate; `create` never overwrites a key another process stored meanwhile.
    let key = NodeKey::generate().map_err(|e| identity_err("generate node key", e))?;
    store
        .create(
            NODE_KEY_SECRET,
            key.to_protobuf().expose(),
            Caller::Operator,
        )
        .await
        .map_err(|e| identity_err("store node key in secrets store", e))?;
    tracing::info!(event = "node_key_generated", peer_id = %key.peer_id(), "generated a new node key");
    Ok(NodeIdentity {
        key,
        storage: KeyStorage::SecretsStore,
        origin: KeyOrigin::Generated,
    })
}

/// K-4: store, read back, compare, then delete the file. Never fails start-up.
async fn migrate_file_key(store: &SecretsStore, key: &NodeKey, file: &Path) -> KeyOrigin {
    let encoded = key.to_protobuf();
    if let Err(e) = store
        .create(NODE_KEY_SECRET, encoded.expose(), Caller::Operator)
        .await
    {
        tracing::warn!(event = "node_key_migration_failed", error = %e,
            "node key migration to secrets store failed (will retry on next restart)");
        return KeyOrigin::MigrationPending;
    }
    let same = match store.get(NODE_KEY_SECRET, Caller::Operator).await {
        Ok(back) => ct_eq(back.expose(), encoded.expose()),
        Err(e) => {
            tracing::warn!(event = "node_key_migration_failed", error = %e,
                "node key migration: reading the stored copy back failed; the legacy file is kept");
            false
        }
    };
    if !same {
        tracing::warn!(
            event = "node_key_migration_failed",
            "node key migration: the stored copy differs from the file; the legacy file is kept"
        );
        return KeyOrigin::MigratedFileKept;
    }
    match lango_store::fsutil::overwrite_and_remove(file) {
        Ok(()) => {
            tracing::info!(event = "node_key_migrated", path = %file.display(),
                "migrated P2P node key from plaintext file to encrypted secrets store");
            KeyOrigin::Migrated
        }
        Err(e) => {
            tracing::warn!(event = "node_key_migration_incomplete", error = %e,
                "stored key in secrets store but could not remove legacy file");
            KeyOrigin::MigratedFileKept
        }
    }
}

/// K-5: the file is the storage.
fn load_file_mode(file: &Path) -> Result<NodeIdentity> {
    if let Some(key) = read_key_file(file)? {
        return Ok(NodeIdentity {
            key,
            storage: KeyStorage::File,
            origin: KeyOrigin::File,
        });
    }
    let dir = lango_store::fsutil::parent_dir(file);
    lango_store::fsutil::ensure_private_dir(dir).map_err(|e| identity_err("create key dir", e))?;
    let key = NodeKey::generate().map_err(|e| identity_err("generate node key", e))?;
    lango_store::fsutil::write_atomic_private(file, key.to_protobuf().expose())
        .map_err(|e| identity_err("write node key", e))?;
    tracing::info!(event = "node_key_generated", peer_id = %key.peer_id(), path = %file.display(),
        "generated a new node key (file mode: no secrets store)");
    Ok(NodeIdentity {
        key,
        storage: KeyStorage::File,
        origin: KeyOrigin::Generated,
    })
}

/// Loads the wallet key, generating it only when the store says *not found* (C-6). Returns
/// the key and whether it was created now.
pub async fn load_or_create_wallet(store: &SecretsStore) -> Result<(WalletKey, bool)> {
    match store.get(WALLET_KEY_SECRET, Caller::Operator).await {
        Ok(bytes) => {
            let key = WalletKey::from_bytes(bytes.expose())
                .map_err(|e| identity_err("parse wallet key from secrets store", e))?;
            Ok((key, false))
        }
        Err(lango_secrets::Error::NotFound(_)) => {
            let key = WalletKey::generate().map_err(|e| identity_err("generate wallet key", e))?;
            store
                .create(WALLET_KEY_SECRET, key.to_bytes().expose(), Caller::Operator)
                .await
                .map_err(|e| identity_err("store wallet key in secrets store", e))?;
            tracing::info!(event = "wallet_generated", did = %key.did(), "generated a new wallet key");
            Ok((key, true))
        }
        Err(e) => Err(identity_err("read wallet key from secrets store", e)),
    }
}

/// Loads the ZK identity secret (kms-and-zk spec §3.10.5), generating it only when the store
/// says *not found*.
pub async fn load_or_create_zk_identity(store: &SecretsStore) -> Result<lango_zkp::IdentitySecret> {
    match store
        .get(crate::zk::IDENTITY_SECRET_NAME, Caller::Operator)
        .await
    {
        Ok(bytes) => lango_zkp::IdentitySecret::from_bytes(bytes.expose())
            .map_err(|e| identity_err("parse the ZK identity from the secrets store", e)),
        Err(lango_secrets::Error::NotFound(_)) => {
            let sk = lango_zkp::IdentitySecret::generate()
                .map_err(|e| identity_err("generate a ZK identity", e))?;
            store
                .create(
                    crate::zk::IDENTITY_SECRET_NAME,
                    &sk.to_bytes()[..],
                    Caller::Operator,
                )
                .await
                .map_err(|e| identity_err("store the ZK identity in the secrets store", e))?;
            tracing::info!(event = "zk_identity_generated", "generated a ZK identity");
            Ok(sk)
        }
        Err(e) => Err(identity_err(
            "read the ZK identity from the secrets store",
            e,
        )),
    }
}

/// The libp2p keypair for a node key (the seed is copied through a wiped buffer).
pub fn libp2p_keypair(key: &NodeKey) -> Result<libp2p::identity::Keypair> {
    let mut seed = *key.seed().expose();
    let kp = libp2p::identity::Keypair::ed25519_from_bytes(&mut seed)
        .map_err(|e| identity_err("convert node key", e));
    zeroize::Zeroize::zeroize(&mut seed);
    kp
}
