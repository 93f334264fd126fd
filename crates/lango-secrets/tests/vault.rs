//! The vault end to end on real SQLCipher: first run, unlock sources, wrong passphrases,
//! the secrets store's bindings, passphrase change, database conversion, master-key rotation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use lango_crypto::{SecretString, aead::BlobPurpose, provider::AeadContext};
use lango_secrets::{
    Caller, Error, UnlockOptions, envelope::Envelope, passphrase::Source, unlock, vault::db_path,
};
use lango_store::{FileState, sqlx, state};
use support::*;

fn ring_digest(b: &[u8]) -> String {
    lango_crypto::wallet::keccak256(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

fn create() -> UnlockOptions {
    UnlockOptions {
        allow_create: true,
        ..UnlockOptions::default()
    }
}

#[tokio::test]
async fn first_run_then_unlock_with_each_source() {
    let (_t, dir) = data_dir();
    let cfg = config();
    // First run, interactive: the passphrase is asked twice.
    let s = Script::typing(&[PASS, PASS]);
    let v = unlock(&dir, &cfg, &s, create()).await.unwrap();
    assert!(v.report().created);
    assert_eq!(
        *s.prompts.lock().unwrap(),
        vec!["Enter new passphrase: ", "Confirm passphrase: "]
    );
    v.secrets()
        .unwrap()
        .put("api.key", b"v1", Caller::Operator)
        .await
        .unwrap();
    v.close().await;
    assert_eq!(
        state::detect(&db_path(&dir)).unwrap(),
        FileState::EncryptedOrForeign
    );
    let env = Envelope::load(&dir).unwrap().unwrap();
    assert_eq!(env.slots.len(), 1);
    assert!(env.db.encrypted);

    // Interactive.
    let v = unlock(
        &dir,
        &cfg,
        &Script::typing(&[PASS]),
        UnlockOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(v.report().source, Source::Interactive);
    assert_eq!(
        v.secrets()
            .unwrap()
            .get("api.key", Caller::Operator)
            .await
            .unwrap()
            .expose(),
        b"v1"
    );
    v.close().await;
    // Stdin.
    let v = unlock(
        &dir,
        &cfg,
        &Script::stdin(&format!("{PASS}\n")),
        UnlockOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(v.report().source, Source::Stdin);
    v.close().await;
    // Keyfile: used before the prompt, then shredded.
    let kf = keyfile(&dir, &format!("{PASS} \t\n"));
    let v = unlock(
        &dir,
        &cfg,
        &Script::typing(&["never asked"]),
        UnlockOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(v.report().source, Source::Keyfile);
    assert!(v.report().keyfile_shredded);
    assert!(!kf.exists());
    v.close().await;
}

#[tokio::test]
async fn no_source_lists_why() {
    let (_t, dir) = data_dir();
    let cfg = config();
    unlock(&dir, &cfg, &Script::stdin(PASS), create())
        .await
        .unwrap()
        .close()
        .await;
    let e = unlock(&dir, &cfg, &Script::none(), UnlockOptions::default())
        .await
        .unwrap_err();
    let Error::NoPassphraseSource { tried } = &e else {
        panic!("{e}")
    };
    assert_eq!(tried.len(), 4, "{e}");
    assert!(e.to_string().contains("keyfile:"), "{e}");
}

#[tokio::test]
async fn t24_wrong_passphrase_changes_nothing() {
    let (_t, dir) = data_dir();
    let cfg = config();
    let v = unlock(&dir, &cfg, &Script::stdin(PASS), create())
        .await
        .unwrap();
    v.secrets()
        .unwrap()
        .put("a", b"1", Caller::Operator)
        .await
        .unwrap();
    v.close().await;
    keyfile(&dir, "not the passphrase at all\n");
    let before = snapshot(&dir);
    let e = unlock(&dir, &cfg, &Script::none(), UnlockOptions::default())
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
    assert!(e.to_string().contains("keyfile"), "{e}");
    assert!(
        snapshot(&dir) == before,
        "a failed unlock must leave every file byte-identical"
    );

    // Three wrong interactive entries: WrongPassphrase, nothing changed either.
    std::fs::remove_file(dir.join("keyfile")).unwrap();
    let before = snapshot(&dir);
    let s = Script::typing(&["wrong one here", "wrong two here", "wrong three here", PASS]);
    let e = unlock(&dir, &cfg, &s, UnlockOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::WrongPassphrase {
                via: Source::Interactive,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(s.prompts.lock().unwrap().len(), 3);
    assert!(snapshot(&dir) == before, "files changed");
    // Retrying interactively within the three attempts works.
    let s = Script::typing(&["wrong one here", PASS]);
    unlock(&dir, &cfg, &s, UnlockOptions::default())
        .await
        .unwrap()
        .close()
        .await;
}

#[tokio::test]
async fn first_run_policy_is_checked_before_anything_is_written() {
    let (_t, dir) = data_dir();
    let cfg = config();
    let e = unlock(&dir, &cfg, &Script::stdin("short"), create())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::PassphrasePolicy { .. }), "{e}");
    assert!(!dir.join("key-envelope.json").exists());
    assert!(!db_path(&dir).exists());
    let e = unlock(
        &dir,
        &cfg,
        &Script::typing(&[PASS, "different passphrase", PASS, "x", PASS, "y"]),
        create(),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Error::PassphraseMismatch), "{e}");
    assert!(!dir.join("key-envelope.json").exists());
    // Without allow_create nothing is created at all.
    let e = unlock(&dir, &cfg, &Script::stdin(PASS), UnlockOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotInitialised(_)), "{e}");
}

#[tokio::test]
async fn t10_swapped_ciphertexts_fail_integrity_never_return_the_other_value() {
    let (_t, dir) = data_dir();
    let cfg = config();
    let v = unlock(&dir, &cfg, &Script::stdin(PASS), create())
        .await
        .unwrap();
    let s = v.secrets().unwrap();
    s.put("alpha", b"value-of-alpha", Caller::Operator)
        .await
        .unwrap();
    s.put("beta", b"value-of-beta", Caller::Operator)
        .await
        .unwrap();
    let pool = v.database().unwrap().pool().clone();
    let a: Vec<u8> = sqlx::query_scalar("SELECT encrypted_value FROM secrets WHERE name = 'alpha'")
        .fetch_one(&pool)
        .await
        .unwrap();
    let b: Vec<u8> = sqlx::query_scalar("SELECT encrypted_value FROM secrets WHERE name = 'beta'")
        .fetch_one(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE secrets SET encrypted_value = ?1 WHERE name = 'alpha'")
        .bind(&b)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE secrets SET encrypted_value = ?1 WHERE name = 'beta'")
        .bind(&a)
        .execute(&pool)
        .await
        .unwrap();
    for n in ["alpha", "beta"] {
        let e = s.get(n, Caller::Operator).await.unwrap_err();
        assert!(matches!(e, Error::Integrity(ref x) if x == n), "{e}");
    }
    // Renaming a row is the same attack.
    sqlx::query("UPDATE secrets SET encrypted_value = ?1 WHERE name = 'alpha'")
        .bind(&a)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE secrets SET name = 'gamma' WHERE name = 'alpha'")
        .execute(&pool)
        .await
        .unwrap();
    assert!(matches!(
        s.get("gamma", Caller::Operator).await,
        Err(Error::Integrity(_))
    ));
    v.close().await;
}

#[tokio::test]
async fn t11_cross_purpose_ciphertexts_do_not_open() {
    let (_t, dir) = data_dir();
    let v = unlock(&dir, &config(), &Script::stdin(PASS), create())
        .await
        .unwrap();
    let s = v.secrets().unwrap();
    s.put("k", b"secret", Caller::Operator).await.unwrap();
    let pool = v.database().unwrap().pool().clone();
    let row: Vec<u8> = sqlx::query_scalar("SELECT encrypted_value FROM secrets WHERE name = 'k'")
        .fetch_one(&pool)
        .await
        .unwrap();
    // A secrets-row ciphertext given to the tool-decrypt purpose fails.
    let tool = AeadContext {
        purpose: BlobPurpose::ToolEncrypt,
        context: b"k",
        max_blob_len: 1 << 20,
    };
    assert!(v.provider().decrypt_sync(&row, tool).is_err());
    // A tool ciphertext written into a secrets row fails.
    let t = v.provider().encrypt_sync(b"secret", tool).unwrap();
    sqlx::query("UPDATE secrets SET encrypted_value = ?1 WHERE name = 'k'")
        .bind(t)
        .execute(&pool)
        .await
        .unwrap();
    assert!(matches!(
        s.get("k", Caller::Operator).await,
        Err(Error::Integrity(_))
    ));
    v.close().await;
}

#[tokio::test]
async fn t12_concurrent_reads_count_exactly_and_reads_do_not_touch_updated_at() {
    let (_t, dir) = data_dir();
    let v = unlock(&dir, &config(), &Script::stdin(PASS), create())
        .await
        .unwrap();
    let s = v.secrets().unwrap();
    s.put("c", b"x", Caller::Operator).await.unwrap();
    let before = s.list().await.unwrap().remove(0);
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.get("c", Caller::Operator).await.unwrap()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().expose(), b"x");
    }
    let after = s.list().await.unwrap().remove(0);
    assert_eq!(after.access_count, 100);
    assert_eq!(
        after.updated_at, before.updated_at,
        "reads must not bump updated_at"
    );
    s.put("c", b"y", Caller::Operator).await.unwrap();
    let replaced = s.list().await.unwrap().remove(0);
    assert_eq!(replaced.access_count, 0);
    assert_eq!(replaced.created_at, before.created_at);
    v.close().await;
}

#[tokio::test]
async fn t13_t14_names_sizes_and_reserved_names() {
    let (_t, dir) = data_dir();
    let mut cfg = config();
    cfg.secrets.max_value_bytes = 16;
    let v = unlock(&dir, &cfg, &Script::stdin(PASS), create())
        .await
        .unwrap();
    let s = v.secrets().unwrap();
    assert!(matches!(
        s.put("bad name", b"x", Caller::Operator).await,
        Err(Error::InvalidName { .. })
    ));
    assert!(matches!(
        s.put("ok", &[0u8; 17], Caller::Operator).await,
        Err(Error::ValueTooLarge { len: 17, max: 16 })
    ));
    s.put("ok", &[0u8; 16], Caller::Operator).await.unwrap();
    // Reserved names: the operator may, agents may not.
    s.put("wallet.privatekey", &[1u8; 16], Caller::Operator)
        .await
        .unwrap();
    for r in [
        s.get("wallet.privatekey", Caller::Agent).await.map(|_| ()),
        s.put("wallet.privatekey", b"evil", Caller::Agent).await,
        s.delete("p2p.node.privatekey", Caller::Agent).await,
    ] {
        assert!(matches!(r, Err(Error::ReservedName(_))), "{r:?}");
    }
    assert_eq!(
        s.get("wallet.privatekey", Caller::Operator)
            .await
            .unwrap()
            .expose(),
        &[1u8; 16]
    );
    // create never overwrites.
    assert!(matches!(
        s.create("wallet.privatekey", b"x", Caller::Operator).await,
        Err(Error::AlreadyExists(_))
    ));
    // SS-8: a legacy row with an odd name stays readable, listable and deletable.
    let pool = v.database().unwrap().pool().clone();
    let key_id: String = sqlx::query_scalar("SELECT id FROM keys WHERE name = 'default'")
        .fetch_one(&pool)
        .await
        .unwrap();
    let blob = v
        .provider()
        .encrypt_sync(
            b"odd",
            AeadContext {
                purpose: BlobPurpose::Secrets,
                context: b"odd name!",
                max_blob_len: 1 << 16,
            },
        )
        .unwrap();
    sqlx::query("INSERT INTO secrets (id, name, encrypted_value, created_at, updated_at, access_count, key_secrets) VALUES ('x', 'odd name!', ?1, '2026-01-01 00:00:00+00:00', '2026-01-01 00:00:00+00:00', 0, ?2)")
        .bind(blob)
        .bind(&key_id)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        s.get("odd name!", Caller::Operator).await.unwrap().expose(),
        b"odd"
    );
    assert!(
        s.list()
            .await
            .unwrap()
            .iter()
            .any(|i| i.name == "odd name!")
    );
    s.delete("odd name!", Caller::Operator).await.unwrap();
    assert!(matches!(
        s.delete("odd name!", Caller::Operator).await,
        Err(Error::NotFound(_))
    ));
    v.close().await;
}

#[tokio::test]
async fn t16_registry_defaults_and_key_in_use() {
    let (_t, dir) = data_dir();
    let v = unlock(&dir, &config(), &Script::stdin(PASS), create())
        .await
        .unwrap();
    let reg = v.registry().unwrap();
    let d = reg.default_key().await.unwrap();
    assert_eq!(
        (d.name.as_str(), d.remote_key_id.as_str()),
        ("default", "local")
    );
    v.secrets()
        .unwrap()
        .put("s", b"v", Caller::Operator)
        .await
        .unwrap();
    assert!(matches!(
        reg.delete("default").await,
        Err(Error::KeyInUse { count: 1, .. })
    ));
    let again = reg
        .register("default", "local", "encryption")
        .await
        .unwrap();
    assert_eq!(again.created_at, d.created_at, "created_at never changes");
    reg.register("spare", "local", "encryption").await.unwrap();
    reg.delete("spare").await.unwrap();
    v.close().await;
}

#[tokio::test]
async fn t30_change_passphrase_rewraps_only() {
    let (_t, dir) = data_dir();
    let cfg = config();
    let v = unlock(&dir, &cfg, &Script::stdin(PASS), create())
        .await
        .unwrap();
    v.secrets()
        .unwrap()
        .put("s", b"kept", Caller::Operator)
        .await
        .unwrap();
    v.close().await;
    let digest = |p: &std::path::Path| ring_digest(&std::fs::read(p).unwrap());
    let db_before = digest(&db_path(&dir));
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(db_path(&dir)).unwrap().ino();

    let mut v = unlock(
        &dir,
        &cfg,
        &Script::stdin(PASS),
        UnlockOptions {
            exclusive: true,
            ..UnlockOptions::default()
        },
    )
    .await
    .unwrap();
    let new = SecretString::new("a brand new passphrase".into());
    assert!(matches!(
        v.change_passphrase(&SecretString::new("short".into()))
            .await,
        Err(Error::PassphrasePolicy { .. })
    ));
    v.change_passphrase(&new).await.unwrap();
    v.close().await;
    assert_eq!(std::fs::metadata(db_path(&dir)).unwrap().ino(), ino);
    assert!(
        digest(&db_path(&dir)) == db_before,
        "the database was not rewritten"
    );

    assert!(matches!(
        unlock(&dir, &cfg, &Script::stdin(PASS), UnlockOptions::default()).await,
        Err(Error::WrongPassphrase { .. })
    ));
    let v = unlock(
        &dir,
        &cfg,
        &Script::stdin(new.expose()),
        UnlockOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        v.secrets()
            .unwrap()
            .get("s", Caller::Operator)
            .await
            .unwrap()
            .expose(),
        b"kept"
    );
    v.close().await;
}

#[tokio::test]
async fn t34_db_migrate_and_decrypt_without_a_second_passphrase() {
    let (_t, dir) = data_dir();
    let mut cfg = config();
    cfg.db_encryption.enabled = false;
    let v = unlock(&dir, &cfg, &Script::stdin(PASS), create())
        .await
        .unwrap();
    v.secrets()
        .unwrap()
        .put("s", b"secret-value", Caller::Operator)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE notes (v TEXT)")
        .execute(v.database().unwrap().pool())
        .await
        .unwrap();
    sqlx::query("INSERT INTO notes VALUES ('canary-notes-4711')")
        .execute(v.database().unwrap().pool())
        .await
        .unwrap();
    v.close().await;
    assert_eq!(state::detect(&db_path(&dir)).unwrap(), FileState::Plaintext);

    let mut v = unlock(
        &dir,
        &cfg,
        &Script::stdin(PASS),
        UnlockOptions {
            exclusive: true,
            ..UnlockOptions::default()
        },
    )
    .await
    .unwrap();
    let steps = std::sync::Mutex::new(Vec::new());
    v.encrypt_database(&|s| steps.lock().unwrap().push(s))
        .await
        .unwrap();
    assert_eq!(steps.lock().unwrap().len(), 10, "progress for every step");
    assert!(v.envelope().db.encrypted);
    assert_eq!(
        v.secrets()
            .unwrap()
            .get("s", Caller::Operator)
            .await
            .unwrap()
            .expose(),
        b"secret-value"
    );
    assert!(matches!(
        v.encrypt_database(&|_| {}).await,
        Err(Error::Store(lango_store::Error::WrongState { .. }))
    ));
    v.close().await;
    assert_eq!(
        state::detect(&db_path(&dir)).unwrap(),
        FileState::EncryptedOrForeign
    );
    for (name, bytes) in snapshot(&dir) {
        assert!(
            !bytes.windows(17).any(|w| w == b"canary-notes-4711"),
            "{name} still holds plaintext"
        );
    }
    // The next unlock uses the same passphrase; the envelope knows the database is encrypted.
    let mut v = unlock(
        &dir,
        &cfg,
        &Script::stdin(PASS),
        UnlockOptions {
            exclusive: true,
            ..UnlockOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        v.secrets()
            .unwrap()
            .get("s", Caller::Operator)
            .await
            .unwrap()
            .expose(),
        b"secret-value"
    );
    v.decrypt_database(&|_| {}).await.unwrap();
    v.close().await;
    assert_eq!(state::detect(&db_path(&dir)).unwrap(), FileState::Plaintext);
    let v = unlock(&dir, &cfg, &Script::stdin(PASS), UnlockOptions::default())
        .await
        .unwrap();
    assert_eq!(
        v.secrets()
            .unwrap()
            .get("s", Caller::Operator)
            .await
            .unwrap()
            .expose(),
        b"secret-value"
    );
    v.close().await;
}

#[tokio::test]
async fn master_key_rotation_reencrypts_everything() {
    let (_t, dir) = data_dir();
    let cfg = config();
    let v = unlock(&dir, &cfg, &Script::stdin(PASS), create())
        .await
        .unwrap();
    for i in 0..20 {
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
    let old_id = v.envelope().mk_id.clone();
    v.close().await;
    let mut v = unlock(
        &dir,
        &cfg,
        &Script::stdin(PASS),
        UnlockOptions {
            exclusive: true,
            ..UnlockOptions::default()
        },
    )
    .await
    .unwrap();
    let r = v
        .rotate_master_key(&SecretString::new(PASS.into()), None, &|_| {})
        .await
        .unwrap();
    assert_eq!(r.generation, 2);
    assert_eq!(r.rows, 20);
    assert_ne!(v.envelope().mk_id, old_id);
    assert_eq!(
        v.secrets()
            .unwrap()
            .get("s7", Caller::Operator)
            .await
            .unwrap()
            .expose(),
        b"value-7"
    );
    v.close().await;
    assert!(!dir.join("key-envelope.json.next").exists());
    let v = unlock(&dir, &cfg, &Script::stdin(PASS), UnlockOptions::default())
        .await
        .unwrap();
    assert_eq!(v.envelope().generation, 2);
    let s = v.secrets().unwrap();
    for i in 0..20 {
        assert_eq!(
            s.get(&format!("s{i}"), Caller::Operator)
                .await
                .unwrap()
                .expose(),
            format!("value-{i}").as_bytes()
        );
    }
    v.close().await;
}

#[tokio::test]
async fn t65_newer_go_format_is_refused_without_changes() {
    let (_t, dir) = data_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("envelope.json"), b"{\"version\":1}").unwrap();
    let before = snapshot(&dir);
    let e = unlock(&dir, &config(), &Script::stdin(PASS), create())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NewerGoFormat(_)), "{e}");
    assert!(snapshot(&dir) == before, "files changed");
}

#[tokio::test]
async fn envelope_and_database_from_different_vaults_are_a_mismatch() {
    let (_t, a) = data_dir();
    let (_t2, b) = data_dir();
    let cfg = config();
    unlock(&a, &cfg, &Script::stdin(PASS), create())
        .await
        .unwrap()
        .close()
        .await;
    unlock(&b, &cfg, &Script::stdin(PASS), create())
        .await
        .unwrap()
        .close()
        .await;
    std::fs::copy(db_path(&b), db_path(&a)).unwrap();
    let e = unlock(&a, &cfg, &Script::stdin(PASS), UnlockOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::EnvelopeDbMismatch(_)), "{e}");
    // A missing envelope beside a v1 plaintext database is named as such.
    let (_t3, c) = data_dir();
    let mut plain = cfg.clone();
    plain.db_encryption.enabled = false;
    unlock(&c, &plain, &Script::stdin(PASS), create())
        .await
        .unwrap()
        .close()
        .await;
    std::fs::remove_file(c.join("key-envelope.json")).unwrap();
    let e = unlock(&c, &plain, &Script::stdin(PASS), create())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::EnvelopeMissing(_)), "{e}");
}

#[tokio::test]
async fn t55_keyfile_checks() {
    use std::os::unix::fs::PermissionsExt;
    let (_t, dir) = data_dir();
    let cfg = config();
    unlock(&dir, &cfg, &Script::stdin(PASS), create())
        .await
        .unwrap()
        .close()
        .await;
    let kf = keyfile(&dir, PASS);
    std::fs::set_permissions(&kf, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = unlock(&dir, &cfg, &Script::stdin(PASS), UnlockOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::KeyfileInsecure { .. }),
        "no fall-through to stdin: {e}"
    );
    std::fs::remove_file(&kf).unwrap();
    // Symlink refused.
    let target = dir.parent().unwrap().join("real-keyfile");
    std::fs::write(&target, PASS).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&target, &kf).unwrap();
    assert!(matches!(
        unlock(&dir, &cfg, &Script::none(), UnlockOptions::default()).await,
        Err(Error::KeyfileInsecure { .. })
    ));
    std::fs::remove_file(&kf).unwrap();
    // Empty and oversized.
    keyfile(&dir, " \n\t\n");
    assert!(matches!(
        unlock(&dir, &cfg, &Script::none(), UnlockOptions::default()).await,
        Err(Error::KeyfileEmpty(_))
    ));
    keyfile(&dir, &"x".repeat(5000));
    assert!(matches!(
        unlock(&dir, &cfg, &Script::none(), UnlockOptions::default()).await,
        Err(Error::KeyfileTooLarge(_))
    ));
    // Kept when configured.
    keyfile(&dir, &format!("{PASS}\n"));
    let mut keep = cfg.clone();
    keep.passphrase.keep_keyfile = true;
    let v = unlock(&dir, &keep, &Script::none(), UnlockOptions::default())
        .await
        .unwrap();
    assert!(!v.report().keyfile_shredded);
    v.close().await;
    assert!(dir.join("keyfile").exists());
    // Owned by another user (only root can arrange that).
    if nix::unistd::geteuid().is_root() {
        nix::unistd::chown(
            &dir.join("keyfile"),
            Some(nix::unistd::Uid::from_raw(65534)),
            None,
        )
        .unwrap();
        assert!(matches!(
            unlock(&dir, &keep, &Script::none(), UnlockOptions::default()).await,
            Err(Error::KeyfileInsecure { .. })
        ));
    }
}

#[tokio::test]
async fn data_dir_writable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let (_t, dir) = data_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = unlock(&dir, &config(), &Script::stdin(PASS), create())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InsecureDataDir { .. }), "{e}");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let s = Script::stdin(PASS);
    unlock(&dir, &config(), &s, create())
        .await
        .unwrap()
        .close()
        .await;
    assert!(
        s.warnings()
            .iter()
            .any(|w| w.contains("readable by group or others"))
    );
}

#[tokio::test]
async fn t46_exclusive_operations_refuse_while_another_process_holds_the_lock() {
    let (_t, dir) = data_dir();
    let cfg = config();
    unlock(&dir, &cfg, &Script::stdin(PASS), create())
        .await
        .unwrap()
        .close()
        .await;
    // A running node holds the shared lock.
    let node = unlock(&dir, &cfg, &Script::stdin(PASS), UnlockOptions::default())
        .await
        .unwrap();
    // Another reader is fine; an exclusive command is Busy, immediately.
    let reader = unlock(&dir, &cfg, &Script::stdin(PASS), UnlockOptions::default())
        .await
        .unwrap();
    reader.close().await;
    let e = unlock(
        &dir,
        &cfg,
        &Script::stdin(PASS),
        UnlockOptions {
            exclusive: true,
            ..UnlockOptions::default()
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Error::Busy(_)), "{e}");
    node.close().await;
}

/// Writes `value` as the key envelope (mode 0600), as a tampering process would.
fn write_envelope(dir: &std::path::Path, value: &serde_json::Value) {
    use std::os::unix::fs::PermissionsExt;
    let p = lango_secrets::envelope::path_in(dir);
    std::fs::write(&p, serde_json::to_vec_pretty(value).unwrap()).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// DB-6 / UN-7: a plaintext `lango.db` put where the envelope records an encrypted database
/// is refused with a typed error that says how to proceed; the envelope is not rewritten to
/// "plaintext" and nothing else changes. The planted file even carries this vault's mk_id
/// marker (the mk_id is public), so only the header check can catch it.
#[tokio::test]
async fn db6_plaintext_database_under_an_encrypted_envelope_is_refused() {
    let (_t, dir) = data_dir();
    let cfg = config();
    let v = unlock(&dir, &cfg, &Script::stdin(PASS), create())
        .await
        .unwrap();
    v.secrets()
        .unwrap()
        .put("api.key", b"v1", Caller::Operator)
        .await
        .unwrap();
    let mk_id = v.envelope().mk_id().0.to_vec();
    v.close().await;
    assert!(Envelope::load(&dir).unwrap().unwrap().db.encrypted);
    assert_eq!(
        state::detect(&db_path(&dir)).unwrap(),
        FileState::EncryptedOrForeign
    );

    // Replace lango.db with a plaintext SQLite file that looks like this vault's database.
    for side in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.join(format!("lango.db{side}")));
    }
    let planted = lango_store::Database::open(
        &db_path(&dir),
        lango_store::Keying::Plaintext,
        lango_store::OpenOptions {
            create: true,
            ..lango_store::OpenOptions::default()
        },
    )
    .await
    .unwrap();
    for sql in [
        "CREATE TABLE security_config (name TEXT PRIMARY KEY, value BLOB NOT NULL)",
        "INSERT INTO security_config VALUES ('format', CAST('v1' AS BLOB))",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(planted.pool())
            .await
            .unwrap();
    }
    sqlx::query("INSERT INTO security_config VALUES ('mk_id', ?1)")
        .bind(mk_id)
        .execute(planted.pool())
        .await
        .unwrap();
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(planted.pool())
        .await
        .unwrap();
    planted.close().await;
    assert_eq!(state::detect(&db_path(&dir)).unwrap(), FileState::Plaintext);

    let envelope_before = std::fs::read(lango_secrets::envelope::path_in(&dir)).unwrap();
    let before = snapshot(&dir);
    for opts in [
        UnlockOptions::default(),
        UnlockOptions {
            exclusive: true,
            ..UnlockOptions::default()
        },
    ] {
        let e = unlock(&dir, &cfg, &Script::stdin(PASS), opts)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::PlaintextDatabase { path, .. } if path == &db_path(&dir)),
            "{e}"
        );
        let msg = e.to_string();
        assert!(msg.contains("restore the encrypted lango.db"), "{msg}");
        assert!(msg.contains("\"encrypted\": false"), "{msg}");
        assert_eq!(
            std::fs::read(lango_secrets::envelope::path_in(&dir)).unwrap(),
            envelope_before,
            "the key envelope must stay byte-identical"
        );
        assert!(snapshot(&dir) == before, "a refused unlock changed files");
    }
}

/// The key envelope's slot count is bounded before any KDF runs (the per-slot KDF costs are
/// bounded too). The extra slots come first and each asks for Argon2id at its per-slot maximum
/// (1 GiB, 16 passes, 16 lanes): without the bound, unlock would grind through them and then
/// open the real slot; with it, unlock is refused with a typed error and nothing changes.
#[tokio::test]
async fn envelope_with_too_many_slots_is_refused_before_any_kdf() {
    let (_t, dir) = data_dir();
    let cfg = config();
    unlock(&dir, &cfg, &Script::stdin(PASS), create())
        .await
        .unwrap()
        .close()
        .await;
    let path = lango_secrets::envelope::path_in(&dir);
    let good: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let real = good["slots"][0].clone();
    let junk = |kind: &str, kdf: serde_json::Value| {
        let mut s = real.clone();
        s["id"] = serde_json::json!(uuid::Uuid::new_v4().to_string());
        s["kind"] = serde_json::json!(kind);
        s["kdf"] = kdf;
        s
    };
    let huge = serde_json::json!({
        "alg": "argon2id", "version": 19,
        "m_kib": lango_crypto::kdf::ARGON2_MAX_M_KIB,
        "t": lango_crypto::kdf::ARGON2_MAX_T,
        "p": lango_crypto::kdf::ARGON2_MAX_P,
    });
    let mut too_many_passphrase = good.clone();
    let mut slots: Vec<serde_json::Value> = (0..lango_secrets::envelope::MAX_PASSPHRASE_SLOTS)
        .map(|_| junk("passphrase", huge.clone()))
        .collect();
    slots.push(real.clone());
    too_many_passphrase["slots"] = serde_json::json!(slots);
    let mut too_many_slots = good.clone();
    let mut slots: Vec<serde_json::Value> = (0..lango_secrets::envelope::MAX_SLOTS)
        .map(|_| junk("keyring", serde_json::json!({"alg": "hkdf-sha256"})))
        .collect();
    slots.push(real.clone());
    too_many_slots["slots"] = serde_json::json!(slots);

    for (what, env) in [("passphrase", too_many_passphrase), ("key", too_many_slots)] {
        write_envelope(&dir, &env);
        let before = snapshot(&dir);
        let e = unlock(&dir, &cfg, &Script::stdin(PASS), UnlockOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::EnvelopeTooManySlots { what: w, .. } if *w == what),
            "{what}: {e}"
        );
        assert!(e.to_string().contains("restore key-envelope.json"), "{e}");
        assert!(snapshot(&dir) == before, "{what}: files changed");
    }
    // The original envelope still unlocks.
    write_envelope(&dir, &good);
    unlock(&dir, &cfg, &Script::stdin(PASS), UnlockOptions::default())
        .await
        .unwrap()
        .close()
        .await;
}

/// LK-1: concurrent first starts on an empty data directory. Exactly one creates the vault;
/// the others are refused with `Busy`, and a refused start never removes the lock file the
/// winner holds, so while the winner runs nobody else can lock the directory.
#[test]
fn concurrent_first_starts_one_wins_and_keeps_the_lock() {
    const STARTS: usize = 6;
    type Started = (
        tokio::runtime::Runtime,
        lango_secrets::Result<lango_secrets::Vault>,
    );
    for round in 0..20 {
        let (_t, dir) = data_dir();
        let gate = std::sync::Arc::new(std::sync::Barrier::new(STARTS));
        // Each start runs on its own thread with its own runtime, as separate processes would;
        // the runtimes are built before the gate so the starts really race.
        let tasks: Vec<_> = (0..STARTS)
            .map(|_| {
                let (dir, gate) = (dir.clone(), gate.clone());
                std::thread::spawn(move || -> Started {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    let opts = UnlockOptions {
                        allow_create: true,
                        exclusive: true,
                        ..UnlockOptions::default()
                    };
                    let cfg = config();
                    let script = Script::stdin(PASS);
                    gate.wait();
                    let r = rt.block_on(unlock(&dir, &cfg, &script, opts));
                    (rt, r)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            match t.join().unwrap() {
                (rt, Ok(v)) => winners.push((rt, v)),
                (_, Err(Error::Busy(_))) => {}
                (_, Err(e)) => panic!("round {round}: {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one start wins");
        let lock_file = dir.join(lango_store::lock::LOCK_FILE);
        assert!(
            lock_file.exists(),
            "round {round}: a refused start removed the lock file"
        );
        for mode in [
            lango_store::LockMode::Shared,
            lango_store::LockMode::Exclusive,
        ] {
            assert!(
                matches!(
                    lango_store::DataDirLock::acquire(&dir, mode),
                    Err(lango_store::Error::Busy(_))
                ),
                "round {round}: the directory could be locked ({mode:?}) while the winner runs"
            );
        }
        let (rt, v) = winners.pop().unwrap();
        rt.block_on(v.close());
    }
}
