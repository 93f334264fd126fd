//! The export procedure (secrets spec §2.4.1): the one mechanism that encrypts, decrypts and
//! re-keys the database, journaled so a crash at any point leaves data readable with the old or
//! the new keying, never neither.
//!
//! ```text
//! E1 journal `<db>.migrate.json` (state exporting)      E6 verify the copy with a fresh connection
//! E2 quiesce the source (checkpoint, journal DELETE)    E7 fsync copy + directory; state swapping
//! E3 temp file `<db>.tmp-<r>` (O_EXCL, 0600)            E8 rename db → backup, temp → db, fsync dir
//! E4 ATTACH temp KEY ? (bound parameters)              E9 caller updates the key envelope
//! E5 counts + ciphertext hashes, sqlcipher_export       E10 state cleanup; remove backup; journal
//! ```
//!
//! [`recover`] runs before anything else at every unlock and finishes or rolls back an
//! interrupted export from the journal's state.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use sqlx::{Connection, Executor, Row, SqliteConnection};

use crate::{
    Error, Result,
    db::{self, Keying},
    fsutil,
    lock::{DataDirLock, LockMode},
    state::{self, FileState},
};

/// Largest journal accepted.
const MAX_JOURNAL_BYTES: u64 = 64 * 1024;
/// Name of the attached target database.
const ATTACHED: &str = "lango_export";

/// What an export does (recorded in the journal and the event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Operation {
    /// Plaintext → encrypted.
    Encrypt,
    /// Encrypted → plaintext.
    Decrypt,
    /// Raw key → another raw key (master-key rotation).
    Rekey,
    /// Legacy passphrase-keyed SQLCipher → raw key.
    LegacyRekey,
}

/// The steps, for progress reports and fault injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// E1
    Journal,
    /// E2
    Quiesce,
    /// E3
    TempFile,
    /// E4
    Attach,
    /// E5
    Export,
    /// E6
    Verify,
    /// E7
    Durable,
    /// E8
    Swap,
    /// E9
    Envelope,
    /// E10
    Cleanup,
}

impl Step {
    /// All steps in order.
    pub const ALL: [Step; 10] = [
        Step::Journal,
        Step::Quiesce,
        Step::TempFile,
        Step::Attach,
        Step::Export,
        Step::Verify,
        Step::Durable,
        Step::Swap,
        Step::Envelope,
        Step::Cleanup,
    ];

    /// A short description for progress bars.
    pub fn describe(self) -> &'static str {
        match self {
            Step::Journal => "writing the conversion journal",
            Step::Quiesce => "checkpointing the source database",
            Step::TempFile => "creating the new database file",
            Step::Attach => "attaching the new database",
            Step::Export => "copying every table",
            Step::Verify => "verifying the copy",
            Step::Durable => "syncing the copy to disk",
            Step::Swap => "swapping the files",
            Step::Envelope => "recording the new database keying",
            Step::Cleanup => "removing the old file",
        }
    }
}

/// Receives progress and performs the one step the store does not own (E9: the envelope).
pub trait ExportHooks {
    /// Called as each step starts.
    fn step(&self, _step: Step) {}
    /// E9: record that the database at the path is now `encrypted` with `page_size`.
    fn database_replaced(&self, encrypted: bool, page_size: u32) -> Result<()>;
}

/// What the target should look like.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    /// [`Keying::Plaintext`] or [`Keying::RawKey`].
    pub keying: Keying<'a>,
}

/// A finished export.
#[derive(Debug, Clone)]
pub struct ExportReport {
    /// What was done.
    pub operation: Operation,
    /// Rows per table, equal in source and copy.
    pub rows: BTreeMap<String, i64>,
    /// Whether the old file was plaintext (then copies of it may survive outside our reach).
    pub old_was_plaintext: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum JournalState {
    Exporting,
    Swapping,
    Cleanup,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Journal {
    operation: Operation,
    state: JournalState,
    /// File name (not path) of the temp file.
    temp: String,
    /// File name of the backup.
    backup: String,
    /// Whether the new database is encrypted.
    target_encrypted: bool,
    /// The new page size.
    target_page_size: u32,
    /// Whether the backup (the old file) is plaintext.
    backup_plaintext: bool,
    created_at: String,
}

/// The journal path of a database.
pub fn journal_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(".migrate.json");
    PathBuf::from(s)
}

fn sibling(db: &Path, name: &str) -> PathBuf {
    fsutil::parent_dir(db).join(name)
}

fn write_journal(db: &Path, j: &Journal, create: bool) -> Result<()> {
    let path = journal_path(db);
    let bytes = serde_json::to_vec_pretty(j).map_err(|e| Error::Journal {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    if create {
        use std::io::Write;
        let mut f = fsutil::create_private_file(&path)?;
        f.write_all(&bytes)
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
        fsutil::fsync_dir(fsutil::parent_dir(db))
    } else {
        fsutil::write_atomic_private(&path, &bytes)
    }
}

fn read_journal(db: &Path) -> Result<Option<Journal>> {
    let path = journal_path(db);
    match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("inspect {}", path.display()), e)),
        Ok(_) => {}
    }
    let bytes = fsutil::read_bounded_nofollow(&path, MAX_JOURNAL_BYTES)?;
    let j: Journal = serde_json::from_slice(&bytes).map_err(|e| Error::Journal {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let prefix = format!(
        "{}.",
        db.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    );
    for name in [&j.temp, &j.backup] {
        let ok = name.starts_with(&prefix)
            && !name.contains('/')
            && (name[prefix.len()..].starts_with("tmp-")
                || name[prefix.len()..].starts_with("bak-"));
        if !ok {
            return Err(Error::Journal {
                path,
                reason: format!("names a file that is not a conversion leftover: {name:?}"),
            });
        }
    }
    Ok(Some(j))
}

/// Kills the process with SIGKILL (a real `kill -9`, no cleanup) at `point` when built with
/// the `fault-injection` feature and `LANGO_FAULT_AT` names the point. Used by crash-safety
/// tests only; without the feature this does nothing.
#[inline]
pub fn fault(point: &str) {
    #[cfg(feature = "fault-injection")]
    if std::env::var("LANGO_FAULT_AT").is_ok_and(|v| v == point) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
        std::process::abort();
    }
    #[cfg(not(feature = "fault-injection"))]
    let _ = point;
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

async fn table_counts(conn: &mut SqliteConnection, schema: &str) -> Result<BTreeMap<String, i64>> {
    let q = format!(
        "SELECT name FROM {schema}.sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
    );
    let names: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(q))
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| Error::sql("list tables", e))?;
    let mut out = BTreeMap::new();
    for n in names {
        let q = format!(
            "SELECT count(*) FROM {schema}.\"{}\"",
            n.replace('"', "\"\"")
        );
        let c: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(q))
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| Error::sql(format!("count rows of {n}"), e))?;
        out.insert(n, c);
    }
    Ok(out)
}

/// SHA-256 of every encrypted value in the tables that hold ciphertexts, sorted (a multiset).
async fn ciphertext_hashes(conn: &mut SqliteConnection, schema: &str) -> Result<Vec<[u8; 32]>> {
    let mut out = Vec::new();
    for (table, column) in [
        ("secrets", "encrypted_value"),
        ("config_profiles", "encrypted_data"),
    ] {
        let exists: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {schema}.sqlite_master WHERE type = 'table' AND name = ?1"
        )))
        .bind(table)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| Error::sql("inspect schema", e))?;
        if exists == 0 {
            continue;
        }
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {column} FROM {schema}.{table}"
        )))
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| Error::sql(format!("read {table}"), e))?;
        for r in rows {
            let v: Option<Vec<u8>> = r
                .try_get(0)
                .map_err(|e| Error::sql(format!("read {table}"), e))?;
            let d = ring::digest::digest(&ring::digest::SHA256, v.as_deref().unwrap_or_default());
            let mut h = [0u8; 32];
            h.copy_from_slice(d.as_ref());
            out.push(h);
        }
    }
    out.sort_unstable();
    Ok(out)
}

async fn pragma_text(conn: &mut SqliteConnection, sql: &'static str) -> Result<String> {
    sqlx::query_scalar::<_, String>(sql)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| Error::sql(sql, e))
}

/// Runs the export procedure. The caller holds `lock` exclusively and has closed every
/// connection to the database in this process (E0).
pub async fn export(
    db_path: &Path,
    operation: Operation,
    source: Keying<'_>,
    target: Target<'_>,
    lock: &DataDirLock,
    hooks: &dyn ExportHooks,
) -> Result<ExportReport> {
    if lock.mode() != LockMode::Exclusive {
        return Err(Error::Busy(fsutil::parent_dir(db_path).to_owned()));
    }
    let (target_encrypted, target_page_size) = match target.keying {
        Keying::Plaintext => (false, db::DEFAULT_PAGE_SIZE),
        Keying::RawKey { page_size, .. } => (true, page_size),
        Keying::LegacyPassphrase { .. } => {
            return Err(Error::Verification(
                "the export target must be plaintext or a raw key".into(),
            ));
        }
    };
    let src_state = state::detect_usable(db_path)?;
    if !src_state.is_present() {
        return Err(Error::WrongState {
            what: "there is no database to convert",
            path: db_path.to_owned(),
            found: src_state,
        });
    }
    if read_journal(db_path)?.is_some() {
        return Err(Error::RecoveryNeeded {
            files: vec![journal_path(db_path)],
        });
    }
    let dir = fsutil::parent_dir(db_path);

    // E1
    hooks.step(Step::Journal);
    let tmp = fsutil::unique_sibling(db_path, "tmp")?;
    let bak_name = {
        let t = tmp
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        t.replacen(".tmp-", ".bak-", 1)
    };
    let mut journal = Journal {
        operation,
        state: JournalState::Exporting,
        temp: tmp
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        backup: bak_name.clone(),
        target_encrypted,
        target_page_size,
        backup_plaintext: src_state == FileState::Plaintext,
        created_at: now_rfc3339(),
    };
    write_journal(db_path, &journal, true)?;
    let bak = sibling(db_path, &bak_name);

    let result = async {
        // E2
        hooks.step(Step::Quiesce);
        let mut conn = db::connect_verified(db_path, &source).await?;
        let steps = async {
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                .await
                .map_err(|e| Error::sql("checkpoint", e))?;
            let mode = pragma_text(&mut conn, "PRAGMA journal_mode = DELETE").await?;
            if !mode.eq_ignore_ascii_case("delete") {
                return Err(Error::Verification(format!("journal_mode stayed {mode}")));
            }
            fault("E2");

            // E3
            hooks.step(Step::TempFile);
            drop(fsutil::create_private_file(&tmp)?);
            fault("E3");

            // E4
            hooks.step(Step::Attach);
            let key = target.keying.attach_key()?;
            let tmp_str = tmp.to_str().ok_or_else(|| Error::BadFile {
                path: tmp.clone(),
                reason: "path is not valid UTF-8".into(),
            })?;
            sqlx::query("ATTACH DATABASE ?1 AS lango_export KEY ?2")
                .bind(tmp_str)
                .bind(key.expose())
                .execute(&mut conn)
                .await
                .map_err(|e| Error::sql("attach the new database", e))?;
            drop(key);
            if target_encrypted {
                conn.execute("PRAGMA lango_export.cipher_compatibility = 4")
                    .await
                    .map_err(|e| Error::sql("set cipher_compatibility", e))?;
                conn.execute(sqlx::AssertSqlSafe(format!(
                    "PRAGMA lango_export.cipher_page_size = {target_page_size}"
                )))
                .await
                .map_err(|e| Error::sql("set cipher_page_size", e))?;
            }

            // E5
            hooks.step(Step::Export);
            let counts = table_counts(&mut conn, "main").await?;
            let hashes = ciphertext_hashes(&mut conn, "main").await?;
            sqlx::query("SELECT sqlcipher_export(?1)")
                .bind(ATTACHED)
                .fetch_all(&mut conn)
                .await
                .map_err(|e| Error::sql("sqlcipher_export", e))?;
            let user_version: i64 = sqlx::query_scalar("PRAGMA main.user_version")
                .fetch_one(&mut conn)
                .await
                .map_err(|e| Error::sql("read user_version", e))?;
            let app_id: i64 = sqlx::query_scalar("PRAGMA main.application_id")
                .fetch_one(&mut conn)
                .await
                .map_err(|e| Error::sql("read application_id", e))?;
            conn.execute(sqlx::AssertSqlSafe(format!(
                "PRAGMA lango_export.user_version = {user_version}; PRAGMA lango_export.application_id = {app_id};"
            )))
            .await
            .map_err(|e| Error::sql("copy user_version", e))?;
            conn.execute("DETACH DATABASE lango_export")
                .await
                .map_err(|e| Error::sql("detach", e))?;
            fault("E5");
            Ok::<_, Error>((counts, hashes))
        }
        .await;
        let _ = conn.close().await;
        let (counts, hashes) = steps?;

        // E6
        hooks.step(Step::Verify);
        let mut v = db::connect_verified(&tmp, &target.keying).await?;
        let verified = async {
            let ic = pragma_text(&mut v, "PRAGMA integrity_check").await?;
            if ic != "ok" {
                return Err(Error::Verification(format!("integrity_check: {ic}")));
            }
            if target_encrypted {
                let problems = sqlx::query("PRAGMA cipher_integrity_check")
                    .fetch_all(&mut v)
                    .await
                    .map_err(|e| Error::sql("cipher_integrity_check", e))?;
                if !problems.is_empty() {
                    return Err(Error::Verification(format!(
                        "cipher_integrity_check reported {} problems",
                        problems.len()
                    )));
                }
            }
            let c2 = table_counts(&mut v, "main").await?;
            if c2 != counts {
                return Err(Error::Verification("row counts differ between source and copy".into()));
            }
            if ciphertext_hashes(&mut v, "main").await? != hashes {
                return Err(Error::Verification("encrypted values differ between source and copy".into()));
            }
            let mode = pragma_text(&mut v, "PRAGMA journal_mode = WAL").await?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(Error::Verification(format!("journal_mode stayed {mode}")));
            }
            Ok(())
        }
        .await;
        let _ = v.close().await;
        verified?;
        fault("E6");

        // E7
        hooks.step(Step::Durable);
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(format!("fsync {}", tmp.display()), e))?;
        fsutil::fsync_dir(dir)?;
        journal.state = JournalState::Swapping;
        write_journal(db_path, &journal, false)?;
        fault("E7");
        Ok(counts)
    }
    .await;

    let counts = match result {
        Ok(c) => c,
        Err(e) => {
            // Anything before the swap leaves the original untouched: remove our files.
            let _ = fsutil::remove_if_exists(&tmp);
            for side in ["-wal", "-shm", "-journal"] {
                let mut s = tmp.as_os_str().to_owned();
                s.push(side);
                let _ = fsutil::remove_if_exists(Path::new(&s));
            }
            let _ = fsutil::remove_if_exists(&journal_path(db_path));
            let _ = fsutil::fsync_dir(dir);
            return Err(e);
        }
    };

    // E8
    hooks.step(Step::Swap);
    std::fs::rename(db_path, &bak).map_err(|e| {
        Error::io(
            format!("rename {} to {}", db_path.display(), bak.display()),
            e,
        )
    })?;
    fault("E8a");
    std::fs::rename(&tmp, db_path).map_err(|e| {
        Error::io(
            format!("rename {} to {}", tmp.display(), db_path.display()),
            e,
        )
    })?;
    fsutil::fsync_dir(dir)?;
    fault("E8b");

    // E9
    hooks.step(Step::Envelope);
    hooks.database_replaced(target_encrypted, target_page_size)?;
    fault("E9");

    // E10
    hooks.step(Step::Cleanup);
    journal.state = JournalState::Cleanup;
    write_journal(db_path, &journal, false)?;
    cleanup(db_path, &journal)?;

    tracing::info!(
        event = if target_encrypted { "store.db.encrypted" } else { "store.db.decrypted" },
        operation = ?operation,
        tables = counts.len(),
        "database converted"
    );
    Ok(ExportReport {
        operation,
        rows: counts,
        old_was_plaintext: src_state == FileState::Plaintext,
    })
}

fn cleanup(db_path: &Path, j: &Journal) -> Result<()> {
    let bak = sibling(db_path, &j.backup);
    if j.backup_plaintext {
        fsutil::overwrite_and_remove(&bak)?;
    } else {
        fsutil::remove_if_exists(&bak)?;
    }
    fault("E10");
    for side in ["-wal", "-shm", "-journal"] {
        let mut s = bak.as_os_str().to_owned();
        s.push(side);
        fsutil::remove_if_exists(Path::new(&s))?;
    }
    let dir = fsutil::parent_dir(db_path);
    fsutil::fsync_dir(dir)?;
    fsutil::remove_if_exists(&journal_path(db_path))?;
    fsutil::fsync_dir(dir)
}

/// What [`recover`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// No journal and no leftovers.
    Nothing,
    /// The export had not swapped files: the temp file and journal were removed.
    RolledBack,
    /// The swap had happened (or was completed now): the new file is in place.
    Completed {
        /// Whether the database is now encrypted.
        encrypted: bool,
        /// Its page size.
        page_size: u32,
    },
    /// Only the cleanup was left, and is now done.
    CleanedUp,
}

/// Finishes or rolls back an interrupted export (run by every unlock before anything else,
/// holding the exclusive lock). Leftover temp/backup files without a journal are
/// [`Error::RecoveryNeeded`]: never treated as a first run.
pub fn recover(db_path: &Path, hooks: &dyn ExportHooks) -> Result<Recovery> {
    remove_stale_journal_temps(db_path)?;
    let Some(mut j) = read_journal(db_path)? else {
        let leftovers = leftovers(db_path)?;
        if leftovers.is_empty() {
            return Ok(Recovery::Nothing);
        }
        return Err(Error::RecoveryNeeded { files: leftovers });
    };
    let dir = fsutil::parent_dir(db_path);
    let tmp = sibling(db_path, &j.temp);
    let bak = sibling(db_path, &j.backup);
    let exists = |p: &Path| std::fs::symlink_metadata(p).is_ok();
    let action = match j.state {
        JournalState::Exporting => {
            remove_with_sides(&tmp)?;
            fsutil::remove_if_exists(&journal_path(db_path))?;
            fsutil::fsync_dir(dir)?;
            Recovery::RolledBack
        }
        JournalState::Swapping => {
            let (db_there, tmp_there, bak_there) = (exists(db_path), exists(&tmp), exists(&bak));
            match (db_there, tmp_there, bak_there) {
                (true, true, true) => {
                    return Err(Error::RecoveryNeeded {
                        files: vec![db_path.to_owned(), tmp, bak],
                    });
                }
                (true, true, false) => {
                    // The first rename did not happen.
                    remove_with_sides(&tmp)?;
                    fsutil::remove_if_exists(&journal_path(db_path))?;
                    fsutil::fsync_dir(dir)?;
                    Recovery::RolledBack
                }
                (false, true, true) => {
                    std::fs::rename(&tmp, db_path).map_err(|e| {
                        Error::io(
                            format!("rename {} to {}", tmp.display(), db_path.display()),
                            e,
                        )
                    })?;
                    fsutil::fsync_dir(dir)?;
                    finish_after_swap(db_path, &mut j, hooks)?
                }
                (true, false, true) => finish_after_swap(db_path, &mut j, hooks)?,
                (false, false, true) => {
                    std::fs::rename(&bak, db_path).map_err(|e| {
                        Error::io(
                            format!("rename {} to {}", bak.display(), db_path.display()),
                            e,
                        )
                    })?;
                    fsutil::fsync_dir(dir)?;
                    fsutil::remove_if_exists(&journal_path(db_path))?;
                    fsutil::fsync_dir(dir)?;
                    Recovery::RolledBack
                }
                _ => {
                    return Err(Error::RecoveryNeeded {
                        files: [db_path.to_owned(), tmp, bak, journal_path(db_path)]
                            .into_iter()
                            .filter(|p| exists(p))
                            .collect(),
                    });
                }
            }
        }
        JournalState::Cleanup => {
            cleanup(db_path, &j)?;
            Recovery::CleanedUp
        }
    };
    tracing::warn!(event = "store.migration.recovered", action = ?action, "recovered an interrupted database conversion");
    Ok(action)
}

fn finish_after_swap(db_path: &Path, j: &mut Journal, hooks: &dyn ExportHooks) -> Result<Recovery> {
    // DB-6: the header decides whether the file is encrypted, but a plaintext file where the
    // journal says the new file is encrypted is not ours (the swap put an encrypted file
    // there): refuse it rather than record the database as plaintext.
    let encrypted = state::detect_usable(db_path)? == FileState::EncryptedOrForeign;
    if j.target_encrypted && !encrypted {
        return Err(Error::UnexpectedPlaintext {
            path: db_path.to_owned(),
        });
    }
    hooks.database_replaced(encrypted, j.target_page_size)?;
    j.state = JournalState::Cleanup;
    write_journal(db_path, j, false)?;
    cleanup(db_path, j)?;
    Ok(Recovery::Completed {
        encrypted,
        page_size: j.target_page_size,
    })
}

fn remove_with_sides(p: &Path) -> Result<()> {
    fsutil::remove_if_exists(p)?;
    for side in ["-wal", "-shm", "-journal"] {
        let mut s = p.as_os_str().to_owned();
        s.push(side);
        fsutil::remove_if_exists(Path::new(&s))?;
    }
    Ok(())
}

/// A crash while the journal itself was being rewritten leaves `<journal>.tmp-*`; the journal
/// (old or new) is intact, so those are simply removed.
fn remove_stale_journal_temps(db_path: &Path) -> Result<()> {
    let jp = journal_path(db_path);
    let Some(prefix) = jp
        .file_name()
        .map(|n| format!("{}.tmp-", n.to_string_lossy()))
    else {
        return Ok(());
    };
    let dir = fsutil::parent_dir(db_path);
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in rd.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            fsutil::remove_if_exists(&entry.path())?;
        }
    }
    Ok(())
}

/// `<db>.tmp-*` and `<db>.bak-*` files next to the database.
pub fn leftovers(db_path: &Path) -> Result<Vec<PathBuf>> {
    let dir = fsutil::parent_dir(db_path);
    let Some(name) = db_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
    else {
        return Ok(Vec::new());
    };
    let tmp = format!("{name}.tmp-");
    let bak = format!("{name}.bak-");
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(format!("list {}", dir.display()), e)),
    };
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(format!("list {}", dir.display()), e))?;
        let n = entry.file_name().to_string_lossy().into_owned();
        if n.starts_with(&tmp) || n.starts_with(&bak) {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}
