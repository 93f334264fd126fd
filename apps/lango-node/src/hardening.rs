//! Process hardening before any key material is loaded (MEM-5): no core dumps, and on Linux
//! the process is not dumpable, which also stops other processes of the same user from
//! attaching with ptrace or reading /proc/<pid>/mem.

/// Applies the hardening; failures are logged, never fatal (a container may forbid them).
pub fn apply() {
    use nix::sys::resource::{Resource, setrlimit};
    if let Err(e) = setrlimit(Resource::RLIMIT_CORE, 0, 0) {
        tracing::warn!(error = %e, "could not disable core dumps");
    }
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!(error = %e, "could not make the process non-dumpable");
    }
}
