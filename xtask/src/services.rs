//! What the tests need, prepared before they run and stopped afterwards (also when the tests
//! fail: stopping happens in `Drop`, and the session services end with their session).
//!
//! - Debian packages (installed when missing and xtask runs as root): SQLCipher 3 CLI (the
//!   independent legacy client), D-Bus, gnome-keyring (a real Secret Service), libsecret-tools
//!   (`secret-tool`, an independent Secret Service client), keyutils (`keyctl`).
//! - SoftHSM2, OpenSC and openssl for the PKCS#11 tests (each test initialises its own token).
//! - A Python venv under the target directory with `sqlcipher3-binary` (the independent
//!   SQLCipher 4 client), `moto[server]` (the local AWS KMS the kms-aws tests start) and
//!   `cryptography` (an independent signature verifier); its interpreter is passed to the
//!   tests as `LANGO_TEST_PYTHON`.
//! - The test command runs inside `keyctl session -` (a fresh kernel session keyring) and
//!   `dbus-run-session` with `gnome-keyring-daemon --unlock` started in it, with the XDG
//!   directories pointed into the scratch directory; the daemon ends with the bus.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};

use crate::env;

/// Debian packages the tests use.
pub const APT_PACKAGES: &[&str] = &[
    "libssl-dev",
    "sqlcipher",
    "dbus",
    "dbus-daemon",
    "gnome-keyring",
    "libsecret-tools",
    "keyutils",
    // The subprocess sandbox's namespaces.
    "bubblewrap",
    // PKCS#11: a software token (SoftHSM2), OpenSC's pkcs11-tool (keys made by an independent
    // client) and openssl (an independent signature verifier).
    "softhsm2",
    "opensc",
    "openssl",
];

/// Python packages the tests use (pinned to what was verified).
pub const PIP_PACKAGES: &[&str] = &[
    "sqlcipher3-binary==0.6.0",
    // A local AWS-KMS-compatible server for the kms-aws tests (`python -m moto.server`).
    "moto[server]==5.2.5",
    // An independent ECDSA verifier for the KMS/HSM signatures.
    "cryptography",
];

/// The prepared environment.
pub struct Services {
    vars: Vec<(String, String)>,
}

impl Services {
    /// Installs what is missing and prepares the scratch directory.
    pub fn start() -> Result<Self> {
        let dir = crate::bench::target_dir()?.join("xtask");
        std::fs::create_dir_all(&dir)?;
        env::ensure_apt(APT_PACKAGES)?;
        let python = ensure_venv(&dir)?;
        let xdg = dir.join("xdg");
        for sub in ["data", "cache", "config", "run"] {
            let p = xdg.join(sub);
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p)?;
        }
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(xdg.join("run"), std::fs::Permissions::from_mode(0o700))?;
        }
        let vars = vec![
            ("LANGO_TEST_PYTHON".to_owned(), python.display().to_string()),
            (
                "XDG_DATA_HOME".to_owned(),
                xdg.join("data").display().to_string(),
            ),
            (
                "XDG_CACHE_HOME".to_owned(),
                xdg.join("cache").display().to_string(),
            ),
            (
                "XDG_CONFIG_HOME".to_owned(),
                xdg.join("config").display().to_string(),
            ),
            (
                "XDG_RUNTIME_DIR".to_owned(),
                xdg.join("run").display().to_string(),
            ),
        ];
        Ok(Self { vars })
    }

    /// Runs `cargo <args>` inside the keyring session with the services' environment.
    pub fn cargo(&self, args: &[String]) -> Result<()> {
        // keyctl session - : a fresh session keyring for the kernel keyring tests.
        // dbus-run-session : a private session bus that ends (with the daemon) after the tests.
        let mut cmd = Command::new("keyctl");
        cmd.args(["session", "-", "dbus-run-session", "--", "sh", "-c"])
            .arg(
                "printf %s lango-test-keyring-password | \
                 gnome-keyring-daemon --unlock --components=secrets >/dev/null && exec \"$@\"",
            )
            .arg("sh")
            .arg("cargo")
            .args(args);
        for (k, v) in &self.vars {
            cmd.env(k, v);
        }
        if env::in_ci() {
            cmd.env("CI", "true");
        }
        env::run_with(&mut cmd)
    }
}

/// Creates (once) a venv with the test packages and returns its interpreter.
fn ensure_venv(dir: &Path) -> Result<PathBuf> {
    let venv = dir.join("venv");
    let python = venv.join("bin").join("python");
    let stamp = venv.join(".lango-packages");
    let wanted = PIP_PACKAGES.join(" ");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) && python.exists() {
        return Ok(python);
    }
    if !python.exists() {
        env::run_with(Command::new("python3").args(["-m", "venv"]).arg(&venv))
            .context("create the Python venv for the independent test clients")?;
    }
    env::run_with(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(PIP_PACKAGES),
    )
    .context("install the Python test clients")?;
    std::fs::write(&stamp, wanted)?;
    Ok(python)
}
