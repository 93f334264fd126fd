//! Crash safety of the export procedure (secrets spec T-40, T-42): a child process running the
//! export is killed with SIGKILL at each journaled step; recovery then leaves the database
//! readable with the old or the new keying — never neither — and no leftovers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use lango_crypto::SecretKey32;
use lango_store::{
    DataDirLock, Database, Error, Keying, LockMode, OpenOptions,
    export::{self, ExportHooks, Operation, Recovery, Target},
};

struct NoEnvelope;
impl ExportHooks for NoEnvelope {
    fn database_replaced(&self, _encrypted: bool, _page_size: u32) -> lango_store::Result<()> {
        Ok(())
    }
}

const ROWS: i64 = 500;
const KEY: [u8; 32] = [0x5c; 32];

async fn make_db(path: &Path, keying: Keying<'_>) {
    let db = Database::open(
        path,
        keying,
        OpenOptions {
            create: true,
            ..OpenOptions::default()
        },
    )
    .await
    .unwrap();
    sqlx::query("CREATE TABLE secrets (name TEXT PRIMARY KEY, encrypted_value BLOB)")
        .execute(db.pool())
        .await
        .unwrap();
    for i in 0..ROWS {
        sqlx::query("INSERT INTO secrets VALUES (?1, randomblob(200))")
            .bind(format!("s{i}"))
            .execute(db.pool())
            .await
            .unwrap();
    }
    db.close().await;
}

async fn run_export(path: &Path, decrypt: bool) -> lango_store::Result<()> {
    let k = SecretKey32::from_bytes(KEY);
    let raw = Keying::RawKey {
        key: &k,
        page_size: 4096,
    };
    let dir = path.parent().unwrap();
    let lock = DataDirLock::acquire(dir, LockMode::Exclusive)?;
    let (op, src, dst) = if decrypt {
        (Operation::Decrypt, raw, Keying::Plaintext)
    } else {
        (Operation::Encrypt, Keying::Plaintext, raw)
    };
    export::export(path, op, src, Target { keying: dst }, &lock, &NoEnvelope)
        .await
        .map(|_| ())
}

/// In a child process (LANGO_CHILD_DB set) this runs the export that the parent kills at a
/// fault point. Run on its own it checks that an export without fault injection completes.
#[tokio::test]
async fn export_child() {
    if let Ok(db) = std::env::var("LANGO_CHILD_DB") {
        let decrypt = std::env::var("LANGO_CHILD_DECRYPT").is_ok();
        run_export(Path::new(&db), decrypt).await.unwrap();
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lango.db");
    make_db(&path, Keying::Plaintext).await;
    run_export(&path, false).await.unwrap();
    assert!(export::leftovers(&path).unwrap().is_empty());
}

fn child(db: &Path, point: &str, decrypt: bool) -> std::process::ExitStatus {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", "export_child", "--nocapture", "--test-threads=1"])
        .env("LANGO_CHILD_DB", db)
        .env("LANGO_FAULT_AT", point);
    if decrypt {
        c.env("LANGO_CHILD_DECRYPT", "1");
    }
    c.status().unwrap()
}

async fn readable_rows(path: &Path) -> (i64, &'static str) {
    let k = SecretKey32::from_bytes(KEY);
    for (keying, name) in [
        (Keying::Plaintext, "old/plaintext"),
        (
            Keying::RawKey {
                key: &k,
                page_size: 4096,
            },
            "raw key",
        ),
    ] {
        if let Ok(db) = Database::open(path, keying, OpenOptions::default()).await {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM secrets")
                .fetch_one(db.pool())
                .await
                .unwrap();
            db.close().await;
            return (n, name);
        }
    }
    panic!("database opens with neither the old nor the new keying");
}

fn leftovers(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.contains(".tmp-") || n.contains(".bak-") || n.ends_with(".migrate.json")
        })
        .collect()
}

const POINTS: [&str; 9] = ["E2", "E3", "E5", "E6", "E7", "E8a", "E8b", "E9", "E10"];

async fn crash_at_every_step(decrypt: bool) {
    for point in POINTS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lango.db");
        let k = SecretKey32::from_bytes(KEY);
        if decrypt {
            make_db(
                &path,
                Keying::RawKey {
                    key: &k,
                    page_size: 4096,
                },
            )
            .await;
        } else {
            make_db(&path, Keying::Plaintext).await;
        }
        let status = child(&path, point, decrypt);
        assert!(
            !status.success(),
            "{point}: the child was supposed to be killed"
        );
        {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(status.signal(), Some(9), "{point}: killed by SIGKILL");
        }
        let _lock = DataDirLock::acquire(dir.path(), LockMode::Exclusive).unwrap();
        let action = export::recover(&path, &NoEnvelope).unwrap();
        let (rows, keying) = readable_rows(&path).await;
        assert_eq!(rows, ROWS, "{point}: rows after recovery ({keying})");
        assert!(
            leftovers(dir.path()).is_empty(),
            "{point}: leftovers {:?}",
            leftovers(dir.path())
        );
        let expect_new = matches!(point, "E8b" | "E9" | "E10");
        match action {
            Recovery::RolledBack => assert!(!expect_new, "{point}: rolled back after the swap"),
            Recovery::Completed { encrypted, .. } => assert_eq!(encrypted, !decrypt, "{point}"),
            Recovery::CleanedUp => assert!(expect_new, "{point}"),
            Recovery::Nothing => panic!("{point}: recovery found nothing to do"),
        }
        // A second recovery has nothing left to do.
        assert_eq!(
            export::recover(&path, &NoEnvelope).unwrap(),
            Recovery::Nothing
        );
    }
}

#[tokio::test]
async fn t40_encrypt_killed_at_each_step_recovers() {
    crash_at_every_step(false).await;
}

#[tokio::test]
async fn t40_decrypt_killed_at_each_step_recovers_and_leaves_no_plaintext_copy() {
    crash_at_every_step(true).await;
}

#[tokio::test]
async fn t42_missing_database_with_a_backup_is_restored_not_first_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lango.db");
    make_db(&path, Keying::Plaintext).await;
    let status = child(&path, "E8a", false);
    assert!(!status.success());
    assert!(
        !path.exists(),
        "after the first rename the database is missing"
    );
    let _lock = DataDirLock::acquire(dir.path(), LockMode::Exclusive).unwrap();
    let action = export::recover(&path, &NoEnvelope).unwrap();
    assert!(
        matches!(
            action,
            Recovery::Completed {
                encrypted: true,
                ..
            }
        ),
        "{action:?}"
    );
    assert_eq!(readable_rows(&path).await.0, ROWS);

    // Without the journal, the same leftovers are refused rather than guessed at.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lango.db");
    make_db(&path, Keying::Plaintext).await;
    assert!(!child(&path, "E8a", false).success());
    std::fs::remove_file(export::journal_path(&path)).unwrap();
    assert!(matches!(
        export::recover(&path, &NoEnvelope),
        Err(Error::RecoveryNeeded { .. })
    ));
}

/// Records whether E9 (the envelope update) was asked for.
#[derive(Default)]
struct Recording(std::sync::Mutex<Vec<bool>>);
impl ExportHooks for Recording {
    fn database_replaced(&self, encrypted: bool, _page_size: u32) -> lango_store::Result<()> {
        self.0.lock().unwrap().push(encrypted);
        Ok(())
    }
}

/// DB-6 during recovery: the swap of an encrypt put an encrypted file in place; finding a
/// plaintext file there instead (e.g. the plaintext backup moved back over it) is refused with
/// a typed error, the envelope is never told "plaintext" and nothing is changed.
#[tokio::test]
async fn recovery_refuses_a_plaintext_file_where_the_encrypted_copy_was_swapped_in() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lango.db");
    make_db(&path, Keying::Plaintext).await;
    assert!(!child(&path, "E8b", false).success());
    // The swap happened: lango.db is the encrypted copy, the plaintext original is the backup.
    let backup = leftovers(dir.path())
        .into_iter()
        .find(|p| p.to_string_lossy().contains(".bak-"))
        .unwrap();
    std::fs::copy(&backup, &path).unwrap();
    let before: Vec<(PathBuf, Vec<u8>)> = {
        let mut v: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .map(|p| {
                let b = std::fs::read(&p).unwrap();
                (p, b)
            })
            .collect();
        v.sort();
        v
    };
    let _lock = DataDirLock::acquire(dir.path(), LockMode::Exclusive).unwrap();
    let hook = Recording::default();
    let e = export::recover(&path, &hook).unwrap_err();
    assert!(
        matches!(&e, Error::UnexpectedPlaintext { path: p } if p == &path),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("restore the encrypted lango.db"),
        "{e}"
    );
    assert!(
        hook.0.lock().unwrap().is_empty(),
        "the envelope must not be updated"
    );
    let mut after: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    after.sort();
    assert!(after == before, "recovery changed files");
}
