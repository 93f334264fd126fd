//! A moto server (`python -m moto.server`) for the kms-aws tests, plus the pieces every test
//! needs around it: dummy credentials in the environment, an admin client that talks to moto
//! directly (key creation, independent of the backend under test), and an independent ECDSA
//! verifier (Python `cryptography`, from the same venv as moto).
//!
//! The interpreter is `LANGO_TEST_PYTHON` (set by `cargo xtask test`), else `python3`. When it
//! cannot import moto (or `cryptography`), [`Moto::start`] prints why and returns `None`, and
//! the test passes without running, except under `CI=true`, where it panics.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Once,
    time::{Duration, Instant},
};

use aws_sdk_kms::{
    Client,
    config::{BehaviorVersion, Credentials, Region},
};

/// The region every test uses (moto keeps keys per region).
pub const REGION: &str = "us-east-1";
/// The dummy access key id put into the environment.
pub const ACCESS_KEY_ID: &str = "AKIDLANGOTESTONLY";
/// The dummy secret put into the environment; no log line or `Debug` output may contain it.
pub const SECRET_ACCESS_KEY: &str = "lango-dummy-secret-must-never-be-printed";
/// How long moto may take to answer `GET /moto-api/`.
const STARTUP_BUDGET: Duration = Duration::from_secs(30);

/// Whether the tests run under CI, where a missing moto is a failure.
pub fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true" | "1"))
}

/// Puts the dummy credentials into the environment, once per process, before any test of
/// this binary reads it: every test calls this first, so the write happens before any read by
/// another test thread (`cargo test`), and under nextest each test is its own process.
#[allow(unsafe_code)]
pub fn credentials_in_env() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: see above; no other thread of this process reads the environment while the
        // `Once` runs, because every test waits for it before doing anything else.
        unsafe {
            std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID);
            std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY);
            std::env::remove_var("AWS_SESSION_TOKEN");
            std::env::remove_var("AWS_PROFILE");
            std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        }
    });
}

/// The interpreter with moto and `cryptography`.
fn python() -> Result<PathBuf, String> {
    let py = std::env::var_os("LANGO_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| "python3".into());
    let out = Command::new(&py)
        .args(["-c", "import moto.server, cryptography"])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", py.display()))?;
    if out.status.success() {
        Ok(py)
    } else {
        Err(format!(
            "{} cannot import moto.server and cryptography (pip install \"moto[server]\" cryptography; cargo xtask test sets LANGO_TEST_PYTHON): {}",
            py.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// Whether `GET /moto-api/` answers 200.
fn answers(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /moto-api/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200"
}

/// A running moto server, killed on drop.
pub struct Moto {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    python: PathBuf,
}

impl Moto {
    /// Starts moto on a free port and waits until it answers, or applies the skip rule.
    pub fn start(test: &str) -> Option<Self> {
        credentials_in_env();
        let python = match python() {
            Ok(p) => p,
            Err(why) => {
                assert!(!in_ci(), "{test}: moto is required under CI: {why}");
                #[allow(clippy::print_stderr)]
                {
                    eprintln!("SKIP {test}: moto unavailable: {why}");
                }
                return None;
            }
        };
        let mut last = String::new();
        for _ in 0..3 {
            match Self::spawn(&python) {
                Ok(m) => return Some(m),
                Err(why) => last = why,
            }
        }
        panic!("{test}: moto did not start: {last}");
    }

    fn spawn(python: &PathBuf) -> Result<Self, String> {
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log =
            std::env::temp_dir().join(format!("lango-moto-{}-{port}.log", std::process::id()));
        let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(python)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", python.display()))?;
        let mut moto = Self {
            child,
            addr,
            log,
            python: python.clone(),
        };
        let deadline = Instant::now() + STARTUP_BUDGET;
        while Instant::now() < deadline {
            if answers(addr) {
                return Ok(moto);
            }
            if let Ok(Some(status)) = moto.child.try_wait() {
                return Err(format!("moto exited with {status}: {}", moto.log_text()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "moto did not answer GET /moto-api/ within {STARTUP_BUDGET:?}: {}",
            moto.log_text()
        ))
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// moto's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// moto's base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A KMS client talking to moto directly (not through any proxy), with explicit dummy
    /// credentials: the tests' independent way of creating and inspecting keys.
    pub fn admin(&self) -> Client {
        let conf = aws_sdk_kms::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .credentials_provider(Credentials::new(
                ACCESS_KEY_ID,
                SECRET_ACCESS_KEY,
                None,
                None,
                "lango-tests",
            ))
            .endpoint_url(self.url())
            .build();
        Client::from_conf(conf)
    }

    /// Verifies a DER ECDSA signature over SHA-256(`message`) with the SPKI `public_key`,
    /// using Python `cryptography` (independent of the Rust crates under test).
    pub fn verify_ecdsa_sha256(
        &self,
        public_key_spki: &[u8],
        message: &[u8],
        signature_der: &[u8],
    ) -> bool {
        const SCRIPT: &str = "\
import sys
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key
key = load_der_public_key(bytes.fromhex(sys.argv[1]))
try:
    key.verify(bytes.fromhex(sys.argv[3]), bytes.fromhex(sys.argv[2]), ec.ECDSA(hashes.SHA256()))
except InvalidSignature:
    print('INVALID')
    sys.exit(1)
print('VALID', key.curve.name)
";
        let out = Command::new(&self.python)
            .args([
                "-c",
                SCRIPT,
                &hex::encode(public_key_spki),
                &hex::encode(message),
                &hex::encode(signature_der),
            ])
            .output()
            .expect("run the Python verifier");
        let stdout = String::from_utf8_lossy(&out.stdout);
        match out.status.code() {
            Some(0) if stdout.starts_with("VALID") => true,
            Some(1) if stdout.starts_with("INVALID") => false,
            _ => panic!(
                "the Python verifier failed: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    /// The uncompressed SEC1 point of an SPKI, computed by Python `cryptography`.
    pub fn sec1_point_of(&self, public_key_spki: &[u8]) -> Vec<u8> {
        const SCRIPT: &str = "\
import sys
from cryptography.hazmat.primitives.serialization import load_der_public_key, Encoding, PublicFormat
key = load_der_public_key(bytes.fromhex(sys.argv[1]))
print(key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint).hex())
";
        let out = Command::new(&self.python)
            .args(["-c", SCRIPT, &hex::encode(public_key_spki)])
            .output()
            .expect("run Python");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        hex::decode(String::from_utf8_lossy(&out.stdout).trim()).expect("hex point")
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
