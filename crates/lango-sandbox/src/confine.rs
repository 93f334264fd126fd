//! What the worker applies to itself before any tool code runs (Linux): a process cap inside
//! the user namespace, Landlock, and the seccomp deny list of spec §2.2.2 item 8. Everything
//! the tool starts inherits all three.

use crate::protocol::Confinement;

/// Applies `c` to the calling process. Any requested layer that cannot be applied is an error:
/// the worker then refuses the call rather than run it weaker than the parent believes.
pub fn apply(c: &Confinement) -> Result<(), String> {
    #[cfg(target_os = "linux")]
    {
        linux::apply(c)
    }
    #[cfg(not(target_os = "linux"))]
    {
        if c.landlock || c.seccomp {
            return Err("Landlock and seccomp exist only on Linux".into());
        }
        Ok(())
    }
}

/// The variables a tool sees; anything else (bubblewrap sets `PWD`) is removed.
pub const WORKER_ENV: [&str; 4] = ["PATH", "HOME", "TMPDIR", "LANG"];

/// Removes every variable but [`WORKER_ENV`] (the worker calls it first thing).
#[allow(unsafe_code)]
pub fn keep_only_worker_env() {
    let extra: Vec<_> = std::env::vars_os()
        .map(|(k, _)| k)
        .filter(|k| !WORKER_ENV.iter().any(|w| k == w))
        .collect();
    for k in extra {
        // SAFETY: the worker is single-threaded here: it runs before any tool code and has
        // started no thread, so nothing reads the environment concurrently.
        unsafe { std::env::remove_var(k) };
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::collections::BTreeMap;

    use landlock::{
        ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, LandlockStatus, PathBeneath,
        PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus,
    };
    use nix::sys::resource::{Resource, setrlimit};
    use seccompiler::{
        BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
        SeccompRule, TargetArch,
    };

    use crate::protocol::Confinement;

    pub(super) fn apply(c: &Confinement) -> Result<(), String> {
        if c.max_processes > 0 {
            setrlimit(Resource::RLIMIT_NPROC, c.max_processes, c.max_processes)
                .map_err(|e| format!("RLIMIT_NPROC: {e}"))?;
        }
        if c.landlock {
            landlock(c)?;
        }
        if c.seccomp {
            seccomp()?;
        }
        Ok(())
    }

    /// The newest ABI this crate knows; the kernel's own is negotiated down from it.
    const ABI_WANTED: ABI = ABI::V5;

    fn landlock(c: &Confinement) -> Result<(), String> {
        let err = |e: &dyn std::fmt::Display| format!("landlock: {e}");
        let mut ruleset = Ruleset::default()
            .set_compatibility(CompatLevel::BestEffort)
            .handle_access(AccessFs::from_all(ABI_WANTED))
            .map_err(|e| err(&e))?
            // Handled with no rule: no TCP bind or connect at all (kernels with ABI >= 4).
            .handle_access(AccessNet::from_all(ABI_WANTED))
            .map_err(|e| err(&e))?
            .create()
            .map_err(|e| err(&e))?;
        let read = AccessFs::from_read(ABI_WANTED);
        for p in &c.read_paths {
            // A path of the view that does not exist here is skipped, not an error: the view
            // lists /lib64 and friends that some systems lack.
            if let Ok(fd) = PathFd::new(p) {
                ruleset = ruleset
                    .add_rule(PathBeneath::new(fd, read))
                    .map_err(|e| err(&e))?;
            }
        }
        // Devices the tool legitimately uses: /dev/null, /dev/zero, /dev/urandom.
        for dev in ["/dev/null", "/dev/zero", "/dev/urandom"] {
            if let Ok(fd) = PathFd::new(dev) {
                let rw = AccessFs::ReadFile | AccessFs::WriteFile;
                ruleset = ruleset
                    .add_rule(PathBeneath::new(fd, rw))
                    .map_err(|e| err(&e))?;
            }
        }
        let fd = PathFd::new(&c.workdir).map_err(|e| err(&e))?;
        ruleset = ruleset
            .add_rule(PathBeneath::new(fd, AccessFs::from_all(ABI_WANTED)))
            .map_err(|e| err(&e))?;
        let status = ruleset.restrict_self().map_err(|e| err(&e))?;
        match (status.ruleset, status.landlock) {
            (RulesetStatus::NotEnforced, _) | (_, LandlockStatus::NotEnabled) => {
                Err("landlock: not enforced by this kernel".into())
            }
            _ => Ok(()),
        }
    }

    /// Syscalls a tool never needs and an escape would (spec §2.2.2 item 8).
    fn denied() -> Vec<i64> {
        vec![
            libc::SYS_ptrace,
            libc::SYS_process_vm_readv,
            libc::SYS_process_vm_writev,
            libc::SYS_mount,
            libc::SYS_umount2,
            libc::SYS_pivot_root,
            libc::SYS_keyctl,
            libc::SYS_add_key,
            libc::SYS_request_key,
            libc::SYS_bpf,
            libc::SYS_perf_event_open,
            libc::SYS_userfaultfd,
            libc::SYS_kexec_load,
            libc::SYS_kexec_file_load,
            libc::SYS_init_module,
            libc::SYS_finit_module,
            libc::SYS_open_by_handle_at,
        ]
    }

    fn arch() -> Result<TargetArch, String> {
        if cfg!(target_arch = "x86_64") {
            Ok(TargetArch::x86_64)
        } else if cfg!(target_arch = "aarch64") {
            Ok(TargetArch::aarch64)
        } else if cfg!(target_arch = "riscv64") {
            Ok(TargetArch::riscv64)
        } else {
            Err("seccomp: unsupported architecture".into())
        }
    }

    /// The compiled deny list: listed syscalls and `socket` for any family but `AF_UNIX` fail
    /// with `EPERM`; everything else is allowed.
    pub(crate) fn program() -> Result<BpfProgram, String> {
        let err = |e: &dyn std::fmt::Display| format!("seccomp: {e}");
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
            denied().into_iter().map(|s| (s, Vec::new())).collect();
        let not_unix = SeccompCondition::new(
            0,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::Ne,
            libc::AF_UNIX as u64,
        )
        .map_err(|e| err(&e))?;
        rules.insert(
            libc::SYS_socket,
            vec![SeccompRule::new(vec![not_unix]).map_err(|e| err(&e))?],
        );
        let filter = SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::EPERM as u32),
            arch()?,
        )
        .map_err(|e| err(&e))?;
        BpfProgram::try_from(filter).map_err(|e| err(&e))
    }

    fn seccomp() -> Result<(), String> {
        let prog = program()?;
        seccompiler::apply_filter_all_threads(&prog).map_err(|e| format!("seccomp: {e}"))
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn deny_list_compiles() {
            let p = super::program().unwrap();
            assert!(p.len() > 20);
        }
    }
}
