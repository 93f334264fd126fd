//! The data-directory lock (LK-1, LK-2, LK-3) and the bounded, wiping read of secret files,
//! checked from outside through the public API.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    path::Path,
    sync::{
        Arc, Barrier,
        atomic::{AtomicUsize, Ordering},
    },
};

use lango_store::{DataDirLock, Error, LockMode, fsutil, lock::LOCK_FILE};

/// A refused upgrade must leave the shared lock held: there is no moment in which this
/// process holds nothing and another one could take the directory exclusively.
#[test]
fn refused_upgrade_keeps_the_shared_lock() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = DataDirLock::acquire(dir.path(), LockMode::Shared).unwrap();
    let reader = DataDirLock::acquire(dir.path(), LockMode::Shared).unwrap();
    assert!(matches!(node.try_upgrade(), Err(Error::Busy(_))));
    assert_eq!(node.mode(), LockMode::Shared);
    drop(reader);
    // Still held by `node`: nobody else gets it exclusively.
    assert!(
        matches!(
            DataDirLock::acquire(dir.path(), LockMode::Exclusive),
            Err(Error::Busy(_))
        ),
        "the refused upgrade released the shared lock"
    );
    // Alone now: the upgrade succeeds, and excludes even readers.
    node.try_upgrade().unwrap();
    assert_eq!(node.mode(), LockMode::Exclusive);
    assert!(matches!(
        DataDirLock::acquire(dir.path(), LockMode::Shared),
        Err(Error::Busy(_))
    ));
    node.downgrade().unwrap();
    let _reader = DataDirLock::acquire(dir.path(), LockMode::Shared).unwrap();
    assert!(matches!(
        DataDirLock::acquire(dir.path(), LockMode::Exclusive),
        Err(Error::Busy(_))
    ));
}

/// Concurrent first starts on a directory without a lock file: exactly one gets the lock.
#[test]
fn concurrent_first_starts_exactly_one_gets_the_lock() {
    const THREADS: usize = 8;
    for _ in 0..25 {
        let dir = tempfile::tempdir().unwrap();
        let data = Arc::new(dir.path().join("data"));
        fsutil::ensure_private_dir(&data).unwrap();
        let gate = Arc::new(Barrier::new(THREADS));
        let held = Arc::new(Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let (data, gate, held) = (data.clone(), gate.clone(), held.clone());
                std::thread::spawn(move || {
                    gate.wait();
                    let r = DataDirLock::acquire(&data, LockMode::Exclusive);
                    // Keep the winner's lock until everyone has tried.
                    held.wait();
                    match r {
                        Ok(_) => true,
                        Err(Error::Busy(_)) => false,
                        Err(e) => panic!("{e}"),
                    }
                })
            })
            .collect();
        let winners = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|w| *w)
            .count();
        assert_eq!(winners, 1);
    }
}

/// The lock file may be removed by the holder of the exclusive lock (a failed first start
/// leaving the directory as it found it). Whoever opened the old file in the meantime must not
/// end up "holding" a lock on a file nobody else looks at: at no time may two exclusive holders
/// coexist, however the removals interleave with other starts.
#[test]
fn removing_the_lock_file_never_gives_two_holders() {
    const THREADS: usize = 8;
    const ROUNDS: usize = 3000;
    let dir = tempfile::tempdir().unwrap();
    let data = Arc::new(dir.path().to_owned());
    let inside = Arc::new(AtomicUsize::new(0));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (data, inside, overlaps) = (data.clone(), inside.clone(), overlaps.clone());
            std::thread::spawn(move || {
                for round in 0..ROUNDS {
                    let Ok(lock) = DataDirLock::acquire(&data, LockMode::Exclusive) else {
                        continue;
                    };
                    if inside.fetch_add(1, Ordering::SeqCst) != 0 {
                        overlaps.fetch_add(1, Ordering::SeqCst);
                    }
                    for _ in 0..4 {
                        std::thread::yield_now();
                    }
                    inside.fetch_sub(1, Ordering::SeqCst);
                    if (t + round) % 2 == 0 {
                        lock.release_and_remove().unwrap();
                    } else {
                        drop(lock);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(
        overlaps.load(Ordering::SeqCst),
        0,
        "two processes held the exclusive lock at once"
    );
}

/// `release_and_remove` needs the exclusive lock, and never removes a file another holder
/// uses.
#[test]
fn lock_file_is_removed_only_under_the_exclusive_lock() {
    let dir = tempfile::tempdir().unwrap();
    let lock_file = dir.path().join(LOCK_FILE);
    let shared = DataDirLock::acquire(dir.path(), LockMode::Shared).unwrap();
    assert!(!shared.release_and_remove().unwrap());
    assert!(lock_file.exists());
    let x = DataDirLock::acquire(dir.path(), LockMode::Exclusive).unwrap();
    assert!(x.release_and_remove().unwrap());
    assert!(!lock_file.exists());
    // The next start creates a new lock file and locks it as usual.
    let a = DataDirLock::acquire(dir.path(), LockMode::Exclusive).unwrap();
    assert!(matches!(
        DataDirLock::acquire(dir.path(), LockMode::Shared),
        Err(Error::Busy(_))
    ));
    drop(a);
}

fn write_private(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A secret file is read into one wiping buffer allocated once at `max + 1` bytes: its
/// capacity shows that no reallocation happened (each one would leave a copy of the secret in
/// freed memory). Freed memory cannot be inspected from safe Rust; the allocation can.
#[test]
fn secret_files_are_read_into_one_presized_wiping_buffer() {
    const MAX: usize = 4096;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyfile");
    for len in [0usize, 1, 31, 32, 33, 1000, 4095, 4096] {
        let content: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
        write_private(&path, &content);
        let buf: zeroize::Zeroizing<Vec<u8>> = fsutil::read_secret_nofollow(&path, MAX).unwrap();
        assert_eq!(buf.as_slice(), content.as_slice(), "{len}");
        assert_eq!(
            buf.capacity(),
            MAX + 1,
            "{len} bytes: the buffer was reallocated"
        );
    }
    write_private(&path, &vec![b'x'; MAX + 1]);
    assert!(matches!(
        fsutil::read_secret_nofollow(&path, MAX),
        Err(Error::TooLarge { max: MAX, .. })
    ));
    // Symlinks are not followed; FIFOs neither block nor are read.
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    assert!(fsutil::read_secret_nofollow(&link, MAX).is_err());
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    assert!(matches!(
        fsutil::read_secret_nofollow(&fifo, MAX),
        Err(Error::BadFile { .. })
    ));
}
