//! What the forked child does between fork and exec (the only `unsafe` of the subprocess
//! executor): the drop to the call's unprivileged host uid (when the node is root), a fresh
//! session keyring, new session, parent-death signal, no-new-privileges, umask, rlimits, and
//! every descriptor from 3 up marked close-on-exec.

use nix::sys::resource::{Resource, setrlimit};
use tokio::process::Command;

/// Installs the pre-exec hook on `cmd`. With `run_as = Some(id)` the child first drops every
/// supplementary group and sets its real, effective and saved uid and gid to `id` (std does
/// that between fork and the hook; the node must be root), so bubblewrap and the tool run as
/// that unprivileged host uid, and the parent-death signal is set after the change (a change
/// of credentials clears it).
#[allow(unsafe_code)]
pub(crate) fn install<const N: usize>(
    cmd: &mut Command,
    limits: [(Resource, u64, u64); N],
    run_as: Option<u32>,
) {
    if let Some(id) = run_as {
        cmd.uid(id).gid(id);
    }
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // calls are allowed. It calls keyctl, setsid, prctl, getppid, umask, setrlimit,
    // close_range and fcntl through thin nix/libc wrappers; none allocates, locks or touches
    // shared state, and `limits` is a plain array copied into the closure before the fork.
    unsafe {
        cmd.pre_exec(move || {
            join_fresh_session_keyring()?;
            nix::unistd::setsid()?;
            #[cfg(target_os = "linux")]
            {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
                // The node may have died between fork and prctl: then nobody would kill us.
                if nix::unistd::getppid() != parent {
                    return Err(std::io::Error::other("parent exited"));
                }
                nix::sys::prctl::set_no_new_privs()?;
            }
            let _ = parent;
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
            cloexec_from_3()?;
            for (resource, soft, hard) in limits {
                setrlimit(resource, soft, hard)?;
            }
            Ok(())
        });
    }
}

/// Replaces the inherited session keyring (the node's, which may hold unlock secrets) with a
/// new, empty one owned by the caller, so neither `/proc/keys` nor `keyctl` inside the sandbox
/// sees a key of the node.
#[allow(unsafe_code)]
fn join_fresh_session_keyring() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
        // SAFETY: keyctl(JOIN_SESSION_KEYRING, NULL) creates an anonymous keyring; the null
        // name pointer is allowed and no other memory is passed.
        let r = unsafe {
            libc::syscall(
                libc::SYS_keyctl,
                KEYCTL_JOIN_SESSION_KEYRING,
                std::ptr::null::<libc::c_char>(),
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            // A kernel without keys has no keyring to leak.
            if e.raw_os_error() != Some(libc::ENOSYS) {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Marks every descriptor from 3 up close-on-exec, so only 0–2 reach the worker whatever a
/// library opened without `O_CLOEXEC` (W-31). Close-on-exec rather than close keeps the
/// runtime's own exec-error pipe working until exec.
#[allow(unsafe_code)]
fn cloexec_from_3() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
        // SAFETY: close_range with the CLOEXEC flag only sets a flag on descriptors of this
        // (single-threaded, just forked) process; it takes no pointers.
        let r = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                libc::c_uint::MAX,
                CLOSE_RANGE_CLOEXEC,
            )
        };
        if r == 0 {
            return Ok(());
        }
    }
    // Older kernels: walk the descriptor table up to RLIMIT_NOFILE (not yet lowered).
    let (_, hard) = nix::sys::resource::getrlimit(Resource::RLIMIT_NOFILE)?;
    let max = hard.min(1 << 16) as libc::c_int;
    for fd in 3..max {
        // SAFETY: fcntl(F_SETFD) on an integer descriptor; EBADF for closed ones is ignored.
        unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
    Ok(())
}
