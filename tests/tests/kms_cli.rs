//! `lango-node security kms …` against a real SoftHSM2 token, as an operator runs it (issue 9):
//! the token and its keys are made by the independent tools (softhsm2-util, OpenSC's
//! pkcs11-tool), `kms test --sign` reports a successful round trip, a wrong PIN fails with a
//! clear error, `kms status` reports the token as connected and `kms keys --remote` lists
//! what the token holds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use lango_e2e::{Node, component, stderr, stdout};
use serde_json::Value;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "1234";

/// A SoftHSM2 token in its own directory, with an AES key and a P-256 key pair made by
/// pkcs11-tool.
struct Token {
    _dir: tempfile::TempDir,
    conf: PathBuf,
    slot: u64,
}

fn tool(conf: &Path, program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .env("SOFTHSM2_CONF", conf)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    out
}

impl Token {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        tool(
            &conf,
            "softhsm2-util",
            &[
                "--init-token",
                "--free",
                "--label",
                "lango-e2e",
                "--pin",
                PIN,
                "--so-pin",
                "5678",
            ],
        );
        // `--free` puts the token in a new slot with a random id: read it back.
        let listing = stdout(&tool(&conf, "pkcs11-tool", &["--module", MODULE, "-L"]));
        let slot = listing
            .lines()
            .find_map(|l| {
                let hex = l.trim().strip_prefix("Slot ")?.split('(').nth(1)?;
                u64::from_str_radix(hex.trim_start_matches("0x").split(')').next()?, 16).ok()
            })
            .unwrap_or_else(|| panic!("no slot in:\n{listing}"));
        let keygen = |extra: &[&str]| {
            let mut args = vec!["--module", MODULE, "--login", "--pin", PIN];
            args.extend_from_slice(extra);
            tool(&conf, "pkcs11-tool", &args);
        };
        keygen(&["--keygen", "--key-type", "AES:32", "--label", "lango-aes"]);
        keygen(&[
            "--keypairgen",
            "--key-type",
            "EC:prime256v1",
            "--label",
            "lango-ec",
        ]);
        Self {
            _dir: dir,
            conf,
            slot,
        }
    }

    /// A node whose configuration points at this token.
    fn node(&self) -> Node {
        let n = Node::new();
        std::fs::write(
            n.data_dir().join("config.toml"),
            format!(
                "[security.signer]\nprovider = \"pkcs11\"\n\n\
                 [security.kms]\nsigningKeyId = \"lango-ec\"\nmaxRetries = 0\n\n\
                 [security.kms.pkcs11]\nmodulePath = \"{MODULE}\"\nslotId = {}\nkeyLabel = \"lango-aes\"\n",
                self.slot
            ),
        )
        .unwrap();
        n
    }

    fn run(&self, n: &Node, pin: &str, args: &[&str]) -> Output {
        n.cmd()
            .args(args)
            .env("SOFTHSM2_CONF", &self.conf)
            .env("LANGO_PKCS11_PIN", pin)
            .output()
            .unwrap()
    }
}

/// SoftHSM2, pkcs11-tool, and a binary built with the PKCS#11 backend.
fn ready(test: &str) -> bool {
    let tools = component::program("softhsm2-util")
        .and_then(|()| component::program("pkcs11-tool"))
        .and_then(|()| {
            Path::new(MODULE)
                .exists()
                .then_some(())
                .ok_or_else(|| format!("{MODULE} is missing"))
        });
    if !component::require(test, "SoftHSM2 and OpenSC", tools) {
        return false;
    }
    let n = Node::new();
    let out = n.run(&["--json", "security", "kms", "status"]);
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap_or(Value::Null);
    let compiled = v["compiled"]
        .as_array()
        .is_some_and(|c| c.iter().any(|x| x == "pkcs11"));
    component::require(
        test,
        "lango-node built with --features kms-pkcs11",
        if compiled {
            Ok(())
        } else {
            Err(format!("compiled backends: {}", v["compiled"]))
        },
    )
}

#[test]
fn kms_test_round_trips_with_a_softhsm_token_and_a_wrong_pin_fails_clearly() {
    if !ready("kms_test_round_trips_with_a_softhsm_token_and_a_wrong_pin_fails_clearly") {
        return;
    }
    let token = Token::new();
    let n = token.node();

    let out = token.run(&n, PIN, &["security", "kms", "test", "--sign"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    for want in [
        "Testing KMS roundtrip with key \"lango-aes\"...",
        "  Encrypt: OK (32 bytes → ",
        "  Decrypt: OK (32 bytes)",
        "  Roundtrip: PASS",
        "  Sign: OK (ecdsa-p256-sha256-raw, 64 bytes)",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }

    let out = token.run(&n, "9999", &["security", "kms", "test"]);
    assert!(
        !out.status.success(),
        "a wrong PIN passed:\n{}",
        stdout(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains("create KMS provider") && err.contains("login"),
        "unclear error for a wrong PIN:\n{err}"
    );
    assert!(!err.contains("9999"), "the PIN was echoed:\n{err}");
}

#[test]
fn kms_status_and_remote_keys_describe_the_token() {
    if !ready("kms_status_and_remote_keys_describe_the_token") {
        return;
    }
    let token = Token::new();
    let n = token.node();
    let out = token.run(&n, PIN, &["--json", "security", "kms", "status"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["provider"], "pkcs11");
    assert_eq!(v["status"], "connected", "{v}");
    assert_eq!(v["fallback"], "enabled");
    assert!(v["latency_ms"].as_f64().unwrap() > 0.0);

    let out = token.run(&n, PIN, &["--json", "security", "kms", "keys", "--remote"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let keys: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let ids: Vec<&str> = keys
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["key_id"].as_str())
        .collect();
    assert!(
        ids.contains(&"lango-aes") && ids.contains(&"lango-ec"),
        "{keys}"
    );

    // A module that does not exist: status says why, and exits 1.
    std::fs::write(
        n.data_dir().join("config.toml"),
        "[security.signer]\nprovider = \"pkcs11\"\n[security.kms.pkcs11]\nmodulePath = \"/nonexistent/libnone.so\"\n",
    )
    .unwrap();
    let out = token.run(&n, PIN, &["security", "kms", "status"]);
    assert!(!out.status.success());
    let text = stdout(&out);
    assert!(
        text.contains("Status:        error:") && text.contains("PKCS#11 module error"),
        "{text}"
    );
}

/// With `security.signer.provider = "pkcs11"` new secrets, the wallet key among them, are
/// sealed under the HSM key (registry entry `kms-default` → `lango-aes`) and read back through
/// the token; without the token's PIN the vault does not open at all (no silent start on the
/// local key).
#[test]
fn secrets_and_the_wallet_key_are_kept_under_the_hsm_key() {
    if !ready("secrets_and_the_wallet_key_are_kept_under_the_hsm_key") {
        return;
    }
    let token = Token::new();
    let n = token.node();
    n.keyfile("correct horse battery staple");
    let config = n.data_dir().join("config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text = text.replace(
        "[security.kms]\n",
        "[security.kms]\nfallbackToLocal = false\n",
    );
    text.push_str(
        "\n[security.passphrase]\nkeepKeyfile = true\n[security.keyring]\nenabled = false\n",
    );
    std::fs::write(&config, text).unwrap();

    // Create the vault by storing a secret (the value comes from stdin).
    let mut set = n
        .cmd()
        .args(["security", "secrets", "set", "api.token", "--stdin"])
        .env("SOFTHSM2_CONF", &token.conf)
        .env("LANGO_PKCS11_PIN", PIN)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        set.stdin
            .take()
            .unwrap()
            .write_all(b"s3cret-value")
            .unwrap();
    }
    let out = set.wait_with_output().unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));

    // The wallet is created and stored on the first call and decrypted on the second.
    let identity = |pin: &str| token.run(&n, pin, &["--json", "p2p", "identity"]);
    let first = identity(PIN);
    assert!(
        first.status.success(),
        "{}{}",
        stdout(&first),
        stderr(&first)
    );
    let second = identity(PIN);
    assert!(second.status.success(), "{}", stderr(&second));
    let did = |o: &Output| {
        serde_json::from_str::<Value>(&stdout(o)).unwrap()["did"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(did(&first), did(&second), "the wallet did not round-trip");

    let out = token.run(&n, PIN, &["--json", "security", "secrets", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let secrets: Value = serde_json::from_str(&stdout(&out)).unwrap();
    for prefix in ["wallet.", "api.token"] {
        let entry = secrets
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
            .unwrap_or_else(|| panic!("no {prefix} secret in {secrets}"));
        assert_eq!(entry["key_name"], "kms-default", "{secrets}");
    }

    let out = token.run(&n, PIN, &["--json", "security", "kms", "keys"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let keys: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(
        keys.as_array()
            .unwrap()
            .iter()
            .any(|k| k["Name"] == "kms-default" && k["RemoteKeyID"] == "lango-aes"),
        "{keys}"
    );

    let out = identity("0000");
    assert!(!out.status.success(), "opened without the token's PIN");
    let err = stderr(&out);
    assert!(
        err.contains("security init: KMS provider \"pkcs11\"") && err.contains("login"),
        "{err}"
    );
}

/// The rows of the secrets table, read by an independent SQLite client (Python's `sqlite3`,
/// the database being unencrypted in this test): name, the provider tag byte of the stored
/// blob's v1 header (`LGO`, version 1, tag), and the name of the registry key it is linked to.
fn sealed_rows(n: &Node) -> Vec<(String, u8, String)> {
    const SCRIPT: &str = "\
import json, sqlite3, sys
con = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True)
rows = con.execute(\"SELECT s.name, s.encrypted_value, COALESCE(k.name, '') FROM secrets s \
LEFT JOIN keys k ON k.id = s.key_secrets ORDER BY s.name\").fetchall()
print(json.dumps([[r[0], bytes(r[1]).hex(), r[2]] for r in rows]))
";
    let db = n.data_dir().join("lango.db");
    let out = Command::new("python3")
        .args(["-c", SCRIPT])
        .arg(&db)
        .output()
        .expect("run python3");
    assert!(out.status.success(), "sqlite3 client: {}", stderr(&out));
    let rows: Value = serde_json::from_str(&stdout(&out)).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let blob = r[1].as_str().unwrap();
            assert_eq!(&blob[..8], "4c474f01", "not a v1 blob: {blob}");
            (
                r[0].as_str().unwrap().to_owned(),
                u8::from_str_radix(&blob[8..10], 16).unwrap(),
                r[2].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The v1 provider tags (lango-crypto `ProviderTag`).
const TAG_LOCAL: u8 = 0x01;
const TAG_PKCS11: u8 = 0x05;

/// Issue 17: with the HSM's AES key deleted (the incident response of K-1), the default
/// `fallbackToLocal = true` must not let `security secrets set` seal new values under the
/// local master key. `kms status` names the key state; `secrets set` (new and existing names)
/// and a first `p2p identity` (which would create the wallet key) fail with an error naming
/// it; and the database holds exactly the row written before, sealed by the HSM.
#[test]
fn a_deleted_hsm_key_stops_new_secrets_instead_of_sealing_them_under_the_local_key() {
    const TEST: &str =
        "a_deleted_hsm_key_stops_new_secrets_instead_of_sealing_them_under_the_local_key";
    if !ready(TEST) {
        return;
    }
    if !component::require(
        TEST,
        "python3 (sqlite3 client)",
        component::program("python3"),
    ) {
        return;
    }
    let token = Token::new();
    let n = token.node();
    n.keyfile("correct horse battery staple");
    let config = n.data_dir().join("config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    assert!(
        !text.contains("fallbackToLocal"),
        "the default (true) is what issue 17 is about"
    );
    text.push_str(
        "\n[security.passphrase]\nkeepKeyfile = true\n[security.keyring]\nenabled = false\n\
         [security.dbEncryption]\nenabled = false\n",
    );
    std::fs::write(&config, text).unwrap();
    let set = |name: &str, value: &str| {
        let mut child = n
            .cmd()
            .args(["security", "secrets", "set", name, "--stdin"])
            .env("SOFTHSM2_CONF", &token.conf)
            .env("LANGO_PKCS11_PIN", PIN)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write as _;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(value.as_bytes())
                .unwrap();
        }
        child.wait_with_output().unwrap()
    };

    let out = set("api.before", "sealed-by-the-hsm");
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(
        sealed_rows(&n),
        [(
            "api.before".to_owned(),
            TAG_PKCS11,
            "kms-default".to_owned()
        )]
    );

    // The AES key is destroyed by an independent client.
    tool(
        &token.conf,
        "pkcs11-tool",
        &[
            "--module",
            MODULE,
            "--login",
            "--pin",
            PIN,
            "--delete-object",
            "--type",
            "secrkey",
            "--label",
            "lango-aes",
        ],
    );

    // `kms status` tells a refused key from an unreachable KMS.
    let out = token.run(&n, PIN, &["--json", "security", "kms", "status"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["status"], "key refused", "{v}");
    assert_eq!(v["key_state"], "not found or invalid", "{v}");
    assert_eq!(v["error_kind"], "InvalidKey", "{v}");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("no key with label \"lango-aes\"")),
        "{v}"
    );
    let out = token.run(&n, PIN, &["security", "kms", "status"]);
    let text = stdout(&out);
    assert!(
        text.contains("  Status:        key refused")
            && text.contains("  Key state:     not found or invalid"),
        "{text}"
    );

    // New values, a replaced value and a new wallet key are all refused, with the key state.
    for (what, out) in [
        ("a new secret", set("api.after", "must-not-be-stored")),
        ("a replaced secret", set("api.before", "must-not-replace")),
        (
            "a new wallet key",
            token.run(&n, PIN, &["--json", "p2p", "identity"]),
        ),
    ] {
        assert!(
            !out.status.success(),
            "{what} was accepted with the HSM key deleted:\n{}{}",
            stdout(&out),
            stderr(&out)
        );
        let err = stderr(&out);
        assert!(
            err.contains("key state: not found or invalid") && err.contains("lango-aes"),
            "{what}: the error does not name the key state:\n{err}"
        );
    }

    // Nothing was written: the only row is the one sealed by the HSM before.
    let rows = sealed_rows(&n);
    assert!(
        rows.iter().all(|(_, tag, _)| *tag != TAG_LOCAL),
        "a row is sealed under the local key: {rows:?}"
    );
    assert_eq!(
        rows,
        [(
            "api.before".to_owned(),
            TAG_PKCS11,
            "kms-default".to_owned()
        )]
    );
    // The store says the same.
    let out = token.run(&n, PIN, &["--json", "security", "secrets", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let listed: Vec<(&str, &str)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["key_name"].as_str().unwrap()))
        .collect();
    assert_eq!(listed, [("api.before", "kms-default")]);
}
