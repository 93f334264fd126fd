//! `lango-node security …` as a new user meets it, in real processes: a pseudo-terminal for
//! prompts, real keyfiles and pipes, the real Secret Service when the session has one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use lango_e2e::{Node, component, stderr, stdout};
use serde_json::Value;

const PASS: &str = "correct horse battery staple";

fn json(o: &std::process::Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", stdout(o), stderr(o)))
}

/// A vault created non-interactively from a keyfile (kept for later commands).
fn vault_with_keyfile() -> Node {
    let n = Node::new();
    n.keyfile(PASS);
    std::fs::write(
        n.data_dir().join("config.toml"),
        "[security.passphrase]\nkeepKeyfile = true\n[security.keyring]\nenabled = false\n",
    )
    .unwrap();
    let o = n.run_stdin(
        &["security", "secrets", "set", "api.key", "--stdin"],
        "value-1\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    n
}

#[test]
fn status_on_an_empty_data_dir_explains_what_is_missing() {
    let n = Node::new();
    let o = n.run(&["security", "status"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("Key Envelope:       absent"), "{out}");
    assert!(out.contains("SQLCipher:          4."), "{out}");
    assert!(stderr(&o).contains("No vault in"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("security secrets set"),
        "{}",
        stderr(&o)
    );
    // Status never creates anything.
    assert!(!n.data_dir().join("key-envelope.json").exists());
}

#[test]
fn t54_first_secret_asks_for_a_new_passphrase_twice_on_the_terminal() {
    let n = Node::new();
    let Some(r) = n.pty(
        "t54",
        &["security", "secrets", "set", "api.key"],
        &[
            ("Enter secret value: ", "s3cret-value"),
            ("Enter new passphrase: ", PASS),
            ("Confirm passphrase: ", PASS),
        ],
    ) else {
        return;
    };
    assert_eq!(r.exit, 0, "{}", r.terminal);
    assert_eq!(r.unanswered, 0, "{}", r.terminal);
    assert!(
        r.stdout.contains("Secret 'api.key' stored successfully."),
        "{r:?}"
    );
    // Prompts go to the terminal, never to stdout; nothing typed is echoed.
    assert!(!r.stdout.contains("passphrase"), "{r:?}");
    assert!(
        !r.terminal.contains(PASS) && !r.terminal.contains("s3cret-value"),
        "echoed: {}",
        r.terminal
    );

    // status --json now reports an encrypted database, the cipher version, the KDF and the slot.
    let o = n.run(&["--json", "security", "status"]);
    let v = json(&o);
    assert_eq!(v["db_encryption"], "encrypted (active)");
    assert!(v["cipher_version"].as_str().unwrap().starts_with("4."));
    assert!(
        v["kdf"]
            .as_str()
            .unwrap()
            .starts_with("argon2id (m=65536 KiB, t=3, p=4)"),
        "{v}"
    );
    assert_eq!(v["slots"][0]["kind"], "passphrase");
    assert_eq!(
        v["stored_secrets"],
        Value::Null,
        "counts are locked without --unlock"
    );
    assert!(
        v["key_envelope"]
            .as_str()
            .unwrap()
            .starts_with("v1 (generation 1, 1 slots)")
    );

    // A wrong passphrase typed three times: exit code 3.
    let Some(r) = n.pty(
        "t63",
        &["security", "secrets", "list"],
        &[
            ("Enter passphrase: ", "wrong one 1"),
            ("Enter passphrase: ", "wrong one 2"),
            ("Enter passphrase: ", "wrong one 3"),
        ],
    ) else {
        return;
    };
    assert_eq!(r.exit, 3, "{}", r.terminal);
}

#[test]
fn keyfile_unlock_list_json_and_no_values_anywhere() {
    let n = vault_with_keyfile();
    let o = n.run_stdin(
        &[
            "security",
            "secrets",
            "set",
            "wallet.privatekey",
            "--stdin",
            "--hex",
        ],
        "0x1111111111111111111111111111111111111111111111111111111111111111\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("reserved"), "{}", stderr(&o));
    let o = n.run(&["--json", "security", "secrets", "list"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["api.key", "wallet.privatekey"]);
    assert_eq!(v[0]["key_name"], "default");
    let text = n.run(&["security", "secrets", "list"]);
    let out = stdout(&text);
    assert!(out.starts_with("NAME"), "{out}");
    assert!(out.contains("ACCESS_COUNT"));
    for o in [&o, &text] {
        let all = format!("{}{}", stdout(o), stderr(o));
        assert!(
            !all.contains("value-1") && !all.contains("1111111111"),
            "a value leaked: {all}"
        );
    }
    // Replacing a reserved secret without a terminal needs --force.
    let o = n.run_stdin(
        &[
            "security",
            "secrets",
            "set",
            "wallet.privatekey",
            "--stdin",
            "--hex",
        ],
        "22",
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    // Delete needs --force without a terminal.
    let o = n.run(&["security", "secrets", "delete", "api.key"]);
    assert!(
        stderr(&o).contains("use --force for non-interactive deletion"),
        "{}",
        stderr(&o)
    );
    let o = n.run(&["security", "secrets", "delete", "api.key", "--force"]);
    assert!(
        stdout(&o).contains("Secret 'api.key' deleted."),
        "{}",
        stderr(&o)
    );
    let o = n.run(&["security", "secrets", "delete", "api.key", "--force"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("secret not found: api.key"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn t57_no_secret_in_argv_or_environment() {
    let n = vault_with_keyfile();
    let o = n.run(&["security", "secrets", "set", "x", "--value-hex", "00ff"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--stdin --hex"), "{}", stderr(&o));
    // LANGO_PASSPHRASE is ignored with a warning: with the keyfile gone, it does not unlock.
    std::fs::remove_file(n.data_dir().join("keyfile")).unwrap();
    let o = n
        .cmd()
        .args(["--non-interactive", "security", "secrets", "list"])
        .env("LANGO_PASSPHRASE", PASS)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("LANGO_PASSPHRASE is ignored"),
        "{}",
        stderr(&o)
    );
    // --passphrase-stdin works; a wrong one exits 3.
    let o = n.run_stdin(
        &["--passphrase-stdin", "security", "secrets", "list"],
        &format!("{PASS}\n"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = n.run_stdin(
        &["--passphrase-stdin", "security", "secrets", "list"],
        "not the passphrase\n",
    );
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("stdin"), "{}", stderr(&o));
}

#[test]
fn t34_db_decrypt_and_migrate_without_a_terminal_or_second_passphrase() {
    let n = vault_with_keyfile();
    let o = n
        .cmd()
        .args(["security", "db-decrypt", "--force"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("Database decrypted successfully."));
    let o = n
        .cmd()
        .args(["security", "db-decrypt", "--force"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        stderr(&o).contains("database is not encrypted"),
        "{}",
        stderr(&o)
    );
    let o = n
        .cmd()
        .args(["security", "db-migrate"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        stderr(&o).contains("use --force for non-interactive"),
        "{}",
        stderr(&o)
    );
    let o = n
        .cmd()
        .args(["security", "db-migrate", "--force"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("Database encrypted successfully."));
    assert!(
        stderr(&o).contains("copies of the old plaintext database may survive"),
        "{}",
        stderr(&o)
    );
    let v = json(&n.run(&["--json", "security", "status"]));
    assert_eq!(v["db_encryption"], "encrypted (active)");
    let o = n.run_stdin(&["security", "secrets", "set", "after", "--stdin"], "x");
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn keyring_store_then_a_new_process_unlocks_without_a_prompt() {
    let check = component::program("secret-tool").and_then(|()| {
        std::env::var("DBUS_SESSION_BUS_ADDRESS")
            .map(|_| ())
            .map_err(|_| "no D-Bus session".to_owned())
    });
    if !component::require(
        "keyring_store",
        "Secret Service (dbus + gnome-keyring)",
        check,
    ) {
        return;
    }
    let n = Node::new();
    n.keyfile(PASS);
    let o = n.run_stdin(&["security", "secrets", "set", "api.key", "--stdin"], "v");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        !n.data_dir().join("keyfile").exists(),
        "the keyfile was shredded after use"
    );
    let o = n.run_stdin(
        &["--passphrase-stdin", "security", "keyring", "store"],
        &format!("{PASS}\n"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("Unlock key stored in OS keyring (secret-service)."),
        "{}",
        stdout(&o)
    );
    // No terminal, no keyfile, no stdin: the keyring unlocks.
    let o = n
        .cmd()
        .args(["--non-interactive", "--json", "security", "secrets", "list"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o)[0]["name"], "api.key");
    let v = json(&n.run(&["--json", "security", "keyring", "status"]));
    assert_eq!(v["available"], true);
    assert_eq!(v["has_unlock_key"], true);
    // The item is a random unlock key, not the passphrase.
    let items = std::process::Command::new("secret-tool")
        .args(["search", "--all", "service", "lango"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&items.stdout).contains(PASS));
    // Clear: the slot is gone too, and the keyring no longer unlocks.
    let o = n.run(&["security", "keyring", "clear", "--force"]);
    assert!(
        stdout(&o).contains("Unlock key removed from OS keyring."),
        "{}",
        stderr(&o)
    );
    let o = n
        .cmd()
        .args(["--non-interactive", "security", "secrets", "list"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!o.status.success());
    let o = n.run(&["security", "keyring", "clear", "--force"]);
    assert!(
        stdout(&o).contains("No unlock key stored in keyring."),
        "{}",
        stdout(&o)
    );
}

#[test]
fn t60_without_a_session_bus_the_keyring_is_unavailable_and_unlock_moves_on() {
    let n = vault_with_keyfile();
    std::fs::write(
        n.data_dir().join("config.toml"),
        "[security.passphrase]\nkeepKeyfile = true\n",
    )
    .unwrap();
    let o = n
        .cmd()
        .args(["--json", "security", "keyring", "status"])
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env("XDG_RUNTIME_DIR", "/nonexistent")
        .output()
        .unwrap();
    let v = json(&o);
    assert_eq!(v["available"], false);
    assert!(v["error"].as_str().unwrap().contains("unavailable"), "{v}");
    let o = n
        .cmd()
        .args(["security", "keyring", "store"])
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env("XDG_RUNTIME_DIR", "/nonexistent")
        .output()
        .unwrap();
    assert!(
        stderr(&o).contains("OS keyring not available"),
        "{}",
        stderr(&o)
    );
    let o = n
        .cmd()
        .args(["security", "secrets", "list"])
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env("XDG_RUNTIME_DIR", "/nonexistent")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).is_empty(),
        "no keyring noise on a keyfile unlock: {}",
        stderr(&o)
    );
}

#[test]
fn change_passphrase_on_a_terminal() {
    let n = vault_with_keyfile();
    std::fs::remove_file(n.data_dir().join("keyfile")).unwrap();
    let new = "a completely new passphrase";
    let Some(r) = n.pty(
        "change_passphrase",
        &["security", "change-passphrase"],
        &[
            ("Enter passphrase: ", PASS),
            ("Enter NEW passphrase: ", new),
            ("Confirm NEW passphrase: ", new),
        ],
    ) else {
        return;
    };
    assert_eq!(r.exit, 0, "{}", r.terminal);
    assert!(r.stdout.contains("Passphrase changed."), "{r:?}");
    let o = n.run_stdin(
        &["--passphrase-stdin", "security", "secrets", "list"],
        &format!("{PASS}\n"),
    );
    assert_eq!(o.status.code(), Some(3));
    let o = n.run_stdin(
        &["--passphrase-stdin", "security", "secrets", "list"],
        &format!("{new}\n"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // Without a terminal the command refuses.
    let o = n.run_stdin(&["security", "change-passphrase"], "");
    assert!(
        stderr(&o).contains("requires an interactive terminal"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn rotate_master_key_from_stdin() {
    let n = vault_with_keyfile();
    std::fs::remove_file(n.data_dir().join("keyfile")).unwrap();
    let o = n.run_stdin(
        &[
            "--passphrase-stdin",
            "security",
            "rotate-master-key",
            "--force",
        ],
        &format!("{PASS}\n"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("Master key rotated (generation 2, 1 values re-encrypted)."),
        "{}",
        stdout(&o)
    );
    let o = n.run_stdin(
        &[
            "--passphrase-stdin",
            "--json",
            "security",
            "secrets",
            "list",
        ],
        &format!("{PASS}\n"),
    );
    assert_eq!(json(&o)[0]["name"], "api.key");
}

#[test]
fn t64_the_process_is_not_dumpable_and_has_no_core_limit() {
    if !nix_is_root() {
        component::require(
            "t64",
            "root (to observe /proc ownership of another uid's process)",
            Err("not root".into()),
        );
        return;
    }
    if !component::require("t64", "setpriv", component::program("setpriv")) {
        return;
    }
    // A vault that belongs to nobody, so the node can run as nobody and wait for its
    // passphrase; a non-dumpable process's /proc entries belong to root.
    let n = vault_with_keyfile();
    let data = n.data_dir().to_owned();
    std::fs::remove_file(data.join("keyfile")).unwrap();
    // Only the test's own data directory changes owner (never its parent, /tmp).
    assert!(data.starts_with(std::env::temp_dir()) && data != std::env::temp_dir());
    assert!(
        std::process::Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(&data)
            .status()
            .unwrap()
            .success()
    );
    // Start with core dumps allowed, so a limit of 0 can only come from lango-node itself.
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(
            "ulimit -c unlimited && exec setpriv --reuid=65534 --regid=65534 --clear-groups \"$@\"",
        )
        .arg("sh")
        .arg(lango_e2e::node_bin())
        .args(["--data-dir"])
        .arg(&data)
        .args(["--passphrase-stdin", "security", "secrets", "list"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // It now waits for the passphrase line (after hardening).
    let pid = child.id();
    let status_path = format!("/proc/{pid}/status");
    // /proc/<pid>/exe is the resolved path; the target directory may be reached through a
    // symbolic link (CI keeps it outside the clone).
    let bin = std::fs::canonicalize(lango_e2e::node_bin()).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut seen = false;
    while std::time::Instant::now() < deadline {
        use std::os::unix::fs::MetadataExt;
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
        let core_zero = limits.lines().any(|l| {
            l.starts_with("Max core file size") && l.split_whitespace().nth(4) == Some("0")
        });
        let owner = std::fs::metadata(format!("/proc/{pid}/environ"))
            .map(|m| m.uid())
            .unwrap_or(65534);
        let uid_line = std::fs::read_to_string(&status_path).unwrap_or_default();
        // Only once the process image is lango-node (not the shell or setpriv before exec).
        let is_node = std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| p == bin);
        if is_node && core_zero && owner == 0 && uid_line.contains("65534") {
            seen = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen,
        "the process never showed core limit 0 and a root-owned /proc entry"
    );
}

fn nix_is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// DB-6 / UN-7 through the CLI: an old plaintext copy of lango.db (from before `db-migrate`)
/// restored over the encrypted database is refused by every command that unlocks, with what
/// to do; `status` reports it without opening it; the key envelope stays byte-identical.
#[test]
fn plaintext_database_restored_under_an_encrypted_envelope_is_refused() {
    let n = vault_with_keyfile();
    let db = n.data_dir().join("lango.db");
    let envelope = n.data_dir().join("key-envelope.json");
    let run = |args: &[&str]| {
        n.cmd()
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let o = run(&["security", "db-decrypt", "--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let plaintext_copy = std::fs::read(&db).unwrap();
    assert!(plaintext_copy.starts_with(b"SQLite format 3\0"));
    let o = run(&["security", "db-migrate", "--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::write(&db, &plaintext_copy).unwrap();
    let envelope_before = std::fs::read(&envelope).unwrap();

    for args in [
        &["security", "secrets", "list"][..],
        &["security", "secrets", "delete", "api.key", "--force"][..],
        &["security", "status", "--unlock"][..],
    ] {
        let o = run(args);
        assert!(!o.status.success(), "{args:?} accepted the plaintext file");
        let err = stderr(&o);
        assert!(
            err.contains("is a plaintext SQLite database"),
            "{args:?}: {err}"
        );
        assert!(
            err.contains("restore the encrypted lango.db"),
            "{args:?}: {err}"
        );
        assert!(!stdout(&o).contains("value-1"), "{args:?}");
        assert_eq!(
            std::fs::read(&envelope).unwrap(),
            envelope_before,
            "{args:?}: the key envelope was rewritten"
        );
        assert_eq!(std::fs::read(&db).unwrap(), plaintext_copy, "{args:?}");
    }
    let v = json(&run(&["--json", "security", "status"]));
    assert!(
        v["db_encryption"].as_str().unwrap().starts_with("refused:"),
        "{v}"
    );
    assert!(
        v["stored_secrets"].is_null(),
        "status counted the refused file: {v}"
    );
    assert_eq!(std::fs::read(&envelope).unwrap(), envelope_before);
}
