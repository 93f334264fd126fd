//! What the worker applies to itself before any tool code runs (Linux): a process cap inside
//! the user namespace, Landlock, and the seccomp filter. Everything the tool starts inherits
//! all three.
//!
//! The seccomp filter is a deny list, not an allow-list: command tools are arbitrary programs
//! (interpreters, shells) whose syscall set is not ours to know, and an allow-list that misses
//! one breaks them in ways that look like bugs of the tool. The deny list is therefore closed
//! at the edges where a deny list usually leaks: every foreign architecture and every x32
//! number kills the process (a deny list keyed by number alone is bypassed through them),
//! `clone3` is `ENOSYS` so the C library falls back to `clone`, whose flags are checked, and
//! the escalation surfaces (io_uring, the new mount API, `userfaultfd`, `perf_event_open`,
//! `bpf`, nested user namespaces, `setns`, personalities) are refused with `EPERM`.

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
        SeccompRule, TargetArch, sock_filter,
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

    /// Syscalls a tool never needs and an escape would: spec §2.2.2 item 8, and the kernel
    /// surfaces that keep producing privilege escalations (io_uring, the new mount API,
    /// `setns`).
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
            libc::SYS_io_uring_setup,
            libc::SYS_io_uring_enter,
            libc::SYS_io_uring_register,
            libc::SYS_fsopen,
            libc::SYS_fsconfig,
            libc::SYS_fsmount,
            libc::SYS_fspick,
            libc::SYS_open_tree,
            libc::SYS_move_mount,
            libc::SYS_mount_setattr,
            SYS_OPEN_TREE_ATTR,
            libc::SYS_setns,
        ]
    }

    /// `open_tree_attr` (Linux 6.15), the same number on every architecture; not in libc yet.
    const SYS_OPEN_TREE_ATTR: i64 = 467;
    /// `personality(0xffffffff)` only reads the persona.
    const PERSONALITY_QUERY: u64 = 0xffff_ffff;

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

    /// The x32 ABI's syscall numbers carry this bit (`__X32_SYSCALL_BIT`) and the native
    /// audit architecture, so a deny list keyed by number alone would let them through.
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;

    /// Kills the process for any syscall of another architecture (i386 through `int 0x80`)
    /// and for any number with the x32 bit, before the deny list looks at the number.
    fn prologue(arch: TargetArch) -> Vec<sock_filter> {
        // BPF_LD | BPF_W | BPF_ABS, BPF_JMP | BPF_JEQ | BPF_K, BPF_JMP | BPF_JGE | BPF_K,
        // BPF_RET | BPF_K (linux/bpf_common.h).
        const LD_W_ABS: u16 = 0x20;
        const JEQ_K: u16 = 0x15;
        const JGE_K: u16 = 0x35;
        const RET_K: u16 = 0x06;
        let audit_arch = match arch {
            TargetArch::x86_64 => 0xC000_003E,  // AUDIT_ARCH_X86_64
            TargetArch::aarch64 => 0xC000_00B7, // AUDIT_ARCH_AARCH64
            TargetArch::riscv64 => 0xC000_00F3, // AUDIT_ARCH_RISCV64
        };
        let f = |code, jt, jf, k| sock_filter { code, jt, jf, k };
        vec![
            f(LD_W_ABS, 0, 0, 4), // seccomp_data.arch
            f(JEQ_K, 1, 0, audit_arch),
            f(RET_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
            f(LD_W_ABS, 0, 0, 0), // seccomp_data.nr
            f(JGE_K, 0, 1, X32_SYSCALL_BIT),
            f(RET_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
        ]
    }

    /// The compiled deny list: the prologue, then the listed syscalls, `socket` for any family
    /// but `AF_UNIX`, `clone`/`unshare` with `CLONE_NEWUSER` and `personality` other than
    /// `PER_LINUX` (or the read-only query) fail with `EPERM`; everything else is allowed.
    pub(crate) fn program() -> Result<BpfProgram, String> {
        let err = |e: &dyn std::fmt::Display| format!("seccomp: {e}");
        let cond = |arg, op, value| {
            SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value).map_err(|e| err(&e))
        };
        let rule = |conds| SeccompRule::new(conds).map_err(|e| err(&e));
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
            denied().into_iter().map(|s| (s, Vec::new())).collect();
        rules.insert(
            libc::SYS_socket,
            vec![rule(vec![cond(
                0,
                SeccompCmpOp::Ne,
                libc::AF_UNIX as u64,
            )?])?],
        );
        let newuser = libc::CLONE_NEWUSER as u64;
        for sys in [libc::SYS_clone, libc::SYS_unshare] {
            // clone's flags are its first argument on x86_64, aarch64 and riscv64.
            rules.insert(
                sys,
                vec![rule(vec![cond(
                    0,
                    SeccompCmpOp::MaskedEq(newuser),
                    newuser,
                )?])?],
            );
        }
        rules.insert(
            libc::SYS_personality,
            vec![rule(vec![
                cond(0, SeccompCmpOp::Ne, 0)?, // PER_LINUX
                cond(0, SeccompCmpOp::Ne, PERSONALITY_QUERY)?,
            ])?],
        );
        let arch = arch()?;
        let filter = SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::EPERM as u32),
            arch,
        )
        .map_err(|e| err(&e))?;
        let mut prog = prologue(arch);
        prog.extend(BpfProgram::try_from(filter).map_err(|e| err(&e))?);
        Ok(prog)
    }

    /// `clone3` passes its flags in memory that seccomp cannot read, so it fails with
    /// `ENOSYS` and the C library falls back to `clone`, whose flags the deny list checks.
    fn clone3_program() -> Result<BpfProgram, String> {
        let err = |e: &dyn std::fmt::Display| format!("seccomp: {e}");
        let rules = BTreeMap::from([(libc::SYS_clone3, Vec::new())]);
        let filter = SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::ENOSYS as u32),
            arch()?,
        )
        .map_err(|e| err(&e))?;
        BpfProgram::try_from(filter).map_err(|e| err(&e))
    }

    fn seccomp() -> Result<(), String> {
        let apply = |p: &BpfProgram| {
            seccompiler::apply_filter_all_threads(p).map_err(|e| format!("seccomp: {e}"))
        };
        apply(&clone3_program()?)?;
        apply(&program()?)
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
