//! Host uids for tool calls when the node runs as root.
//!
//! The kernel does not apply `RLIMIT_NPROC` to host uid 0, and a user namespace made by root
//! maps the tool's uid onto host root: a tool started by a root node would act as host root
//! inside its namespaces (a fork bomb then fills the host's process table; `/proc/keys` shows
//! root's keyrings). So a root node drops every call to an unprivileged host uid taken from a
//! configured range before bubblewrap starts, and no two running calls share a uid: each call
//! has its own process budget, its own signal and ptrace domain, and nothing it leaves behind
//! is owned by the next call's uid (uids are handed out round-robin over the whole range, so
//! a uid comes back only after every other one was used).
//!
//! Several root nodes on one host (or several executors in one process) share the range: a
//! lease also holds an exclusive `flock` on `<lock dir>/<uid>.lock`, so a uid serves one
//! running call on the whole host, and each pool starts at a random place in the range.
//!
//! A node that is not root already runs its tools as its own unprivileged uid; the range is
//! not used then (an unprivileged process cannot change its uid).

use std::{
    collections::HashSet,
    fs::File,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use nix::fcntl::{Flock, FlockArg};

/// A range of host uids (and gids of the same numbers) reserved for sandboxed calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UidRange {
    /// The first uid.
    pub first: u32,
    /// How many uids.
    pub count: u32,
}

impl UidRange {
    /// The default range: 65,536 uids from 1,900,000,000, above the ranges distributions and
    /// systemd hand out (system, regular, dynamic users and nspawn containers stay below it).
    pub const DEFAULT: UidRange = UidRange {
        first: 1_900_000_000,
        count: 65_536,
    };

    /// Checks the range: at least one uid, none of them 0 or the overflow ids, no wrap-around,
    /// below 2^31 (some tools treat larger ids as negative).
    pub fn validate(&self) -> Result<(), String> {
        if self.count == 0 {
            return Err("the sandbox uid range is empty (sandboxUidCount = 0)".into());
        }
        let Some(last) = self.first.checked_add(self.count - 1) else {
            return Err("the sandbox uid range wraps past 2^32".into());
        };
        if self.first < 1000 {
            return Err(format!(
                "the sandbox uid range must start at 1000 or above (got {}): low uids belong to \
                 system accounts",
                self.first
            ));
        }
        if last >= 1 << 31 {
            return Err(format!(
                "the sandbox uid range must end below 2147483648 (ends at {last})"
            ));
        }
        if (self.first..=last).contains(&65534) {
            return Err("the sandbox uid range may not contain 65534 (nobody)".into());
        }
        Ok(())
    }

    fn last(&self) -> u32 {
        self.first + (self.count - 1)
    }
}

impl Default for UidRange {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Hands out one uid per running call.
#[derive(Debug)]
pub(crate) struct UidPool {
    range: UidRange,
    /// Where the host-wide lease locks live (root-only directory).
    lock_dir: Option<PathBuf>,
    state: Mutex<PoolState>,
}

#[derive(Debug)]
struct PoolState {
    next: u32,
    in_use: HashSet<u32>,
}

/// A uid held by one call; given back on drop.
#[derive(Debug)]
pub(crate) struct UidLease {
    pool: Arc<UidPool>,
    uid: u32,
    /// The host-wide claim on `uid`, released (unlocked and closed) on drop.
    _lock: Option<Flock<File>>,
}

impl UidLease {
    /// The host uid (and gid) of the call.
    pub(crate) fn uid(&self) -> u32 {
        self.uid
    }
}

impl Drop for UidLease {
    fn drop(&mut self) {
        self.pool.lock().in_use.remove(&self.uid);
    }
}

impl UidPool {
    /// A pool over `range` whose leases also lock `<lock_dir>/<uid>.lock` when a directory is
    /// given (it must exist and be writable only by this user).
    pub(crate) fn new(range: UidRange, lock_dir: Option<PathBuf>) -> Result<Arc<Self>, String> {
        range.validate()?;
        let offset = u32::from_le_bytes(
            uuid::Uuid::new_v4().as_bytes()[..4]
                .try_into()
                .unwrap_or([0; 4]),
        ) % range.count;
        Ok(Arc::new(Self {
            range,
            lock_dir,
            state: Mutex::new(PoolState {
                next: range.first + offset,
                in_use: HashSet::new(),
            }),
        }))
    }

    /// Claims `uid` host-wide: `Ok(None)` when another process holds it.
    fn claim(&self, uid: u32) -> Result<Option<Option<Flock<File>>>, String> {
        let Some(dir) = &self.lock_dir else {
            return Ok(Some(None));
        };
        let path = dir.join(format!("{uid}.lock"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| format!("uid lock {}: {e}", path.display()))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(Some(lock))),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(format!("uid lock {}: {e}", path.display())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next free uid after the last one handed out, or `Ok(None)` when every uid of the
    /// range is held by a running call (of this or another process).
    pub(crate) fn lease(self: &Arc<Self>) -> Result<Option<UidLease>, String> {
        let mut s = self.lock();
        for _ in 0..self.range.count {
            let uid = s.next;
            s.next = if uid >= self.range.last() {
                self.range.first
            } else {
                uid + 1
            };
            if s.in_use.contains(&uid) {
                continue;
            }
            if let Some(lock) = self.claim(uid)? {
                s.in_use.insert(uid);
                return Ok(Some(UidLease {
                    pool: self.clone(),
                    uid,
                    _lock: lock,
                }));
            }
        }
        Ok(None)
    }

    pub(crate) fn range(&self) -> UidRange {
        self.range
    }
}

/// Whether a process of uid `uid` that is not the owner of any component can reach `path`:
/// every directory on the way needs the other-execute bit, the file itself `want` (a mask of
/// other-permission bits, e.g. `0o005` for read and execute). Returns the first component
/// that stops it.
pub(crate) fn reachable_by_others(path: &Path, want: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.permissions().mode() & want != want {
        return Err(format!(
            "{} (mode {:o}) is not {} by other users",
            path.display(),
            meta.permissions().mode() & 0o7777,
            if want & 0o4 != 0 {
                "readable and executable"
            } else {
                "executable"
            },
        ));
    }
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d.as_os_str().is_empty() {
            break;
        }
        let m = std::fs::metadata(d).map_err(|e| format!("{}: {e}", d.display()))?;
        if m.permissions().mode() & 0o001 == 0 {
            return Err(format!(
                "directory {} (mode {:o}) is not traversable by other users",
                d.display(),
                m.permissions().mode() & 0o7777
            ));
        }
        dir = d.parent();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_distinct_round_robin_and_bounded() {
        let pool = UidPool::new(
            UidRange {
                first: 5000,
                count: 3,
            },
            None,
        )
        .unwrap();
        let lease = || pool.lease().unwrap();
        let a = lease().unwrap();
        let b = lease().unwrap();
        let c = lease().unwrap();
        let mut got = [a.uid(), b.uid(), c.uid()];
        // Consecutive from a random start, wrapping around.
        assert_eq!(got[1], if got[0] == 5002 { 5000 } else { got[0] + 1 });
        got.sort_unstable();
        assert_eq!(got, [5000, 5001, 5002]);
        assert!(lease().is_none(), "every uid is held");
        let freed = b.uid();
        drop(b);
        // The freed uid is the only one left.
        let d = lease().unwrap();
        assert_eq!(d.uid(), freed);
    }

    #[test]
    fn a_uid_held_by_another_pool_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let range = UidRange {
            first: 7000,
            count: 2,
        };
        let one = UidPool::new(range, Some(dir.path().into())).unwrap();
        let two = UidPool::new(range, Some(dir.path().into())).unwrap();
        let a = one.lease().unwrap().unwrap();
        let b = two.lease().unwrap().unwrap();
        assert_ne!(a.uid(), b.uid(), "two pools handed out the same uid");
        assert!(one.lease().unwrap().is_none());
        assert!(two.lease().unwrap().is_none());
        let freed = a.uid();
        drop(a);
        assert_eq!(two.lease().unwrap().unwrap().uid(), freed);
    }

    #[test]
    fn ranges_are_validated() {
        assert!(UidRange::DEFAULT.validate().is_ok());
        for bad in [
            UidRange {
                first: 0,
                count: 10,
            },
            UidRange {
                first: 5000,
                count: 0,
            },
            UidRange {
                first: 60000,
                count: 10000,
            },
            UidRange {
                first: u32::MAX - 1,
                count: 5,
            },
            UidRange {
                first: 2_147_483_000,
                count: 1000,
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reachability_walks_every_directory() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let inner = d.path().join("inner");
        std::fs::create_dir(&inner).unwrap();
        let f = inner.join("prog");
        std::fs::write(&f, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o711)).unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let e = reachable_by_others(&f, 0o005).unwrap_err();
        assert!(e.contains("not traversable"), "{e}");
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        // /tmp and its parents are traversable on any sane system.
        reachable_by_others(&f, 0o005).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o750)).unwrap();
        assert!(reachable_by_others(&f, 0o005).is_err());
    }
}
