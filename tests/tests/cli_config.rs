//! The `lango-node` binary as a new user meets it: help, version, config init / validate.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use lango_e2e::{Node, stderr, stdout};

#[test]
fn help_shows_the_command_tree() {
    let n = Node::new();
    let o = n.run(&["--help"]);
    assert!(o.status.success());
    let out = stdout(&o);
    for word in [
        "config",
        "completions",
        "--data-dir",
        "--json",
        "--verbose",
        "--quiet",
        "--config",
    ] {
        assert!(out.contains(word), "help lacks {word}:\n{out}");
    }
    let o = n.run(&["config", "--help"]);
    let out = stdout(&o);
    for word in ["init", "show", "validate", "path"] {
        assert!(out.contains(word), "config help lacks {word}:\n{out}");
    }
}

#[test]
fn version_is_printed() {
    let o = Node::new().run(&["--version"]);
    assert!(o.status.success());
    assert!(stdout(&o).starts_with("lango-node "), "{}", stdout(&o));
}

#[test]
fn init_then_validate() {
    let n = Node::new();
    let o = n.run(&["config", "init"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let path = n.data_dir().join("config.toml");
    let meta = std::fs::metadata(&path).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    let o = n.run(&["config", "validate"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("is valid"));

    // A second init refuses to overwrite.
    let o = n.run(&["config", "init"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));

    // JSON output is machine-readable.
    let o = n.run(&["--json", "config", "validate"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], true);
}

#[test]
fn unknown_key_fails_naming_the_key() {
    let n = Node::new();
    assert!(n.run(&["config", "init"]).status.success());
    let path = n.data_dir().join("config.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text = text.replace("memoryKib", "memoryKb");
    std::fs::write(&path, text).unwrap();
    let o = n.run(&["config", "validate"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("unknown key `security.kdf.argon2.memoryKb`"),
        "{err}"
    );
    assert!(
        err.contains("did you mean `security.kdf.argon2.memoryKib`"),
        "{err}"
    );

    let o = n.run(&["--json", "config", "validate"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert!(
        v["errors"][0]
            .as_str()
            .unwrap()
            .contains("security.kdf.argon2.memoryKb")
    );
}

#[test]
fn env_override_shows_in_config_show() {
    let n = Node::new();
    let o = n
        .cmd()
        .args(["--json", "config", "show"])
        .env("LANGO_SECURITY_KDF_ARGON2_TIMECOST", "4")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["config"]["security"]["kdf"]["argon2"]["timeCost"], 4);
    assert_eq!(v["envOverrides"][0], "security.kdf.argon2.timeCost");
}

#[test]
fn completions_are_generated() {
    let o = Node::new().run(&["completions", "bash"]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("lango-node"));
}
