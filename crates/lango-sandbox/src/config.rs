//! Sandbox settings (`p2p.toolIsolation.*`, spec §4). The node's config file maps onto these
//! types in `lango-p2p`; defaults live here and nowhere else.

use std::time::Duration;

/// Default and ceiling of `timeoutPerTool`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// `timeoutPerTool` may not exceed this.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);

/// `p2p.toolIsolation`.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxConfig {
    /// Remote tool calls run isolated; off means they are refused. On by default in lango-rs
    /// (the Go node defaults to off and then ran calls in process): with it on, only
    /// worker-safe tools run, in the sandbox, and without the required isolation calls are
    /// still refused.
    pub enabled: bool,
    /// Deadline of one call; zero means 30 s.
    pub timeout_per_tool: Duration,
    /// Memory cap in MiB (at least 64 for a subprocess, 32 for a container).
    pub max_memory_mb: u64,
    /// Refuse to run subprocess calls without OS isolation.
    pub require_os_isolation: bool,
    /// Cap of the result channel.
    pub max_output_bytes: usize,
    /// Process cap (`RLIMIT_NPROC` inside the user namespace).
    pub max_processes: u64,
    /// `RLIMIT_NOFILE`.
    pub max_open_files: u64,
    /// `RLIMIT_FSIZE` in MiB.
    pub max_file_size_mb: u64,
    /// Host uids a node running as root runs calls as (one per running call); unused by a
    /// node that is not root.
    pub uid_range: crate::UidRange,
    /// Container mode.
    pub container: ContainerConfig,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            timeout_per_tool: DEFAULT_TIMEOUT,
            max_memory_mb: 256,
            require_os_isolation: true,
            max_output_bytes: 1 << 20,
            max_processes: 32,
            max_open_files: 64,
            max_file_size_mb: 16,
            uid_range: crate::UidRange::DEFAULT,
            container: ContainerConfig::default(),
        }
    }
}

/// Which container runtime to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeChoice {
    /// gVisor, then Docker, then (only without `requireContainer`) native.
    Auto,
    /// Docker only.
    Docker,
    /// Docker with the `runsc` runtime only.
    Gvisor,
    /// The subprocess executor under the container executor's name.
    Native,
}

impl RuntimeChoice {
    /// Parses the config value; unknown values are an error.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "docker" => Ok(Self::Docker),
            "gvisor" => Ok(Self::Gvisor),
            "native" => Ok(Self::Native),
            other => Err(format!(
                "unknown runtime {other:?} (expected auto, docker, gvisor or native)"
            )),
        }
    }

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Docker => "docker",
            Self::Gvisor => "gvisor",
            Self::Native => "native",
        }
    }
}

/// `p2p.toolIsolation.container`.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerConfig {
    /// Container mode on.
    pub enabled: bool,
    /// Runtime choice.
    pub runtime: RuntimeChoice,
    /// Image (must exist locally; pin it by ID or digest).
    pub image: String,
    /// `none` or a network named in `allowed_networks`.
    pub network_mode: String,
    /// Read-only root file system.
    pub read_only_rootfs: bool,
    /// CPU quota per 100 ms period; 0 means one CPU.
    pub cpu_quota_us: i64,
    /// Warm pool size; 0 disables the pool.
    pub pool_size: usize,
    /// Age at which an unused pooled container is replaced.
    pub pool_idle_timeout: Duration,
    /// No container runtime is an error rather than a fallback to the subprocess executor.
    pub require_container: bool,
    /// `uid:gid` the tool runs as; never root.
    pub user: String,
    /// Process cap.
    pub pids_limit: i64,
    /// Size of the `/tmp` tmpfs in MiB.
    pub tmpfs_size_mb: u64,
    /// Networks besides `none` that `network_mode` may name.
    pub allowed_networks: Vec<String>,
}

impl Default for ContainerConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            runtime: RuntimeChoice::Auto,
            image: "lango-sandbox:latest".into(),
            network_mode: "none".into(),
            read_only_rootfs: true,
            cpu_quota_us: 0,
            pool_size: 0,
            pool_idle_timeout: Duration::from_secs(300),
            require_container: true,
            user: "65532:65532".into(),
            pids_limit: 64,
            tmpfs_size_mb: 64,
            allowed_networks: Vec::new(),
        }
    }
}

impl SandboxConfig {
    /// The deadline actually applied: zero means the 30 s default.
    pub fn timeout(&self) -> Duration {
        if self.timeout_per_tool.is_zero() {
            DEFAULT_TIMEOUT
        } else {
            self.timeout_per_tool.min(MAX_TIMEOUT)
        }
    }

    /// The subprocess memory cap in MiB (at least 64).
    pub fn subprocess_memory_mb(&self) -> u64 {
        self.max_memory_mb.max(64)
    }

    /// The container memory cap in MiB (at least 32).
    pub fn container_memory_mb(&self) -> u64 {
        self.max_memory_mb.max(32)
    }

    /// Every problem, each with its key path under `prefix` (`p2p.toolIsolation`).
    pub fn validate(&self, prefix: &str) -> Result<(), Vec<String>> {
        let mut p = Vec::new();
        if self.timeout_per_tool > MAX_TIMEOUT {
            p.push(format!("{prefix}.timeoutPerTool: at most 10m0s"));
        }
        if self.max_memory_mb > 1 << 20 {
            p.push(format!("{prefix}.maxMemoryMB: at most 1048576"));
        }
        if !(1024..=(64 << 20)).contains(&self.max_output_bytes) {
            p.push(format!(
                "{prefix}.maxOutputBytes: between 1024 and 67108864"
            ));
        }
        if !(1..=4096).contains(&self.max_processes) {
            p.push(format!("{prefix}.maxProcesses: between 1 and 4096"));
        }
        if !(16..=65536).contains(&self.max_open_files) {
            p.push(format!("{prefix}.maxOpenFiles: between 16 and 65536"));
        }
        if !(1..=65536).contains(&self.max_file_size_mb) {
            p.push(format!("{prefix}.maxFileSizeMB: between 1 and 65536"));
        }
        if let Err(e) = self.uid_range.validate() {
            p.push(format!("{prefix}.sandboxUidFirst/sandboxUidCount: {e}"));
        }
        let c = &self.container;
        let cp = format!("{prefix}.container");
        if let Err(e) = validate_user(&c.user) {
            p.push(format!("{cp}.user: {e}"));
        }
        if let Err(e) = validate_network(&c.network_mode, &c.allowed_networks) {
            p.push(format!("{cp}.networkMode: {e}"));
        }
        for n in &c.allowed_networks {
            if let Err(e) = validate_network_name(n) {
                p.push(format!("{cp}.allowedNetworks: {e}"));
            }
        }
        if c.image.trim().is_empty() {
            p.push(format!("{cp}.image: must not be empty"));
        }
        if c.cpu_quota_us < 0 || (c.cpu_quota_us > 0 && c.cpu_quota_us < 1000) {
            p.push(format!(
                "{cp}.cpuQuotaUs: 0 (one CPU) or at least 1000 microseconds"
            ));
        }
        if !(1..=32768).contains(&c.pids_limit) {
            p.push(format!("{cp}.pidsLimit: between 1 and 32768"));
        }
        if !(1..=65536).contains(&c.tmpfs_size_mb) {
            p.push(format!("{cp}.tmpfsSizeMB: between 1 and 65536"));
        }
        if c.pool_size > 64 {
            p.push(format!("{cp}.poolSize: at most 64"));
        }
        if c.pool_size > 0 && c.pool_idle_timeout < Duration::from_secs(1) {
            p.push(format!(
                "{cp}.poolIdleTimeout: at least 1s when the pool is on"
            ));
        }
        if c.enabled && c.runtime == RuntimeChoice::Native && c.require_container {
            p.push(format!(
                "{cp}.runtime: \"native\" contradicts requireContainer = true (native is not a container)"
            ));
        }
        if p.is_empty() { Ok(()) } else { Err(p) }
    }
}

/// `uid:gid` or `uid`, numeric, not root (W-10, T-H13).
pub fn validate_user(user: &str) -> Result<(), String> {
    let (uid, gid) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    if uid == "root" || uid.parse::<u32>() == Ok(0) {
        return Err(format!(
            "{user:?} is root; tools must run as an unprivileged user"
        ));
    }
    if uid.parse::<u32>().is_err() {
        return Err(format!(
            "{user:?}: use a numeric uid[:gid], e.g. 65532:65532"
        ));
    }
    if let Some(g) = gid
        && g.parse::<u32>().is_err()
    {
        return Err(format!("{user:?}: the gid must be numeric"));
    }
    Ok(())
}

/// `none`, or a named network the operator allow-listed. `""`, `host`, `bridge`, `default` and
/// `container:*` are refused (W-9).
pub fn validate_network(mode: &str, allowed: &[String]) -> Result<(), String> {
    match mode {
        "none" => Ok(()),
        "" => Err("empty means Docker's default bridge with outbound access; use \"none\"".into()),
        "host" | "bridge" | "default" => Err(format!(
            "{mode:?} is not allowed: tools get no network; use \"none\" or an allow-listed network"
        )),
        m if m.starts_with("container:") => Err(format!(
            "{m:?} is not allowed: it joins another container's network"
        )),
        m if allowed.iter().any(|a| a == m) => Ok(()),
        m => Err(format!(
            "{m:?} is not in allowedNetworks; use \"none\" or list it there"
        )),
    }
}

fn validate_network_name(n: &str) -> Result<(), String> {
    if matches!(n, "" | "host" | "bridge" | "default" | "none") || n.starts_with("container:") {
        return Err(format!("{n:?} cannot be allow-listed"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        SandboxConfig::default().validate("p").unwrap();
        assert_eq!(SandboxConfig::default().timeout(), Duration::from_secs(30));
        let zero = SandboxConfig {
            timeout_per_tool: Duration::ZERO,
            max_memory_mb: 0,
            ..Default::default()
        };
        assert_eq!(zero.timeout(), DEFAULT_TIMEOUT);
        assert_eq!(zero.subprocess_memory_mb(), 64);
        assert_eq!(zero.container_memory_mb(), 32);
    }

    #[test]
    fn rejections() {
        for u in ["0", "root", "0:0", "root:1", "0:65532", "abc"] {
            assert!(validate_user(u).is_err(), "{u}");
        }
        validate_user("65532:65532").unwrap();
        validate_user("1000").unwrap();
        for n in ["", "host", "bridge", "default", "container:abc", "mynet"] {
            assert!(validate_network(n, &[]).is_err(), "{n}");
        }
        validate_network("mynet", &["mynet".into()]).unwrap();
        assert!(RuntimeChoice::parse("kata").is_err());
        let mut c = SandboxConfig::default();
        c.container.enabled = true;
        c.container.runtime = RuntimeChoice::Native;
        let errs = c.validate("p2p.toolIsolation").unwrap_err();
        assert!(errs[0].contains("contradicts requireContainer"), "{errs:?}");
        c.container.require_container = false;
        c.validate("p").unwrap();
        c.container.user = "0".into();
        c.container.network_mode = "host".into();
        c.timeout_per_tool = Duration::from_secs(601);
        assert_eq!(c.validate("p").unwrap_err().len(), 3);
    }
}
