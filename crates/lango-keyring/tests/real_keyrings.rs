//! The backends against the real services: a Secret Service (gnome-keyring on a D-Bus session,
//! started by `cargo xtask test`) checked with `secret-tool`, and the kernel keyring checked
//! with `keyctl` — independent clients in both cases.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg(target_os = "linux")]

use std::process::Command;

use lango_crypto::SecretString;
use lango_e2e::component;
use lango_keyring::{Backend, Keyring, open_backend};

fn unique(tag: &str) -> String {
    format!(
        "lango-test-{tag}-{}",
        lango_crypto::random::hex_string(6).unwrap()
    )
}

fn secret_service(test: &str) -> Option<Box<dyn Keyring>> {
    let check = component::program("secret-tool").and_then(|()| {
        std::env::var("DBUS_SESSION_BUS_ADDRESS")
            .map(|_| ())
            .map_err(|_| "no D-Bus session bus (DBUS_SESSION_BUS_ADDRESS unset)".to_owned())
    });
    if !component::require(test, "Secret Service (dbus + gnome-keyring)", check) {
        return None;
    }
    let kr = open_backend(Backend::SecretService).unwrap();
    let probe = kr
        .probe("lango-test", "availability")
        .map(|_| ())
        .map_err(|e| e.to_string());
    if !component::require(test, "Secret Service (dbus + gnome-keyring)", probe) {
        return None;
    }
    Some(kr)
}

/// Runs secret-tool; returns success and stdout followed by stderr (it prints attributes on
/// stderr).
fn secret_tool(args: &[&str]) -> (bool, String) {
    let o = Command::new("secret-tool").args(args).output().unwrap();
    let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&o.stderr));
    (o.status.success(), text)
}

#[test]
fn secret_service_roundtrip_seen_by_secret_tool() {
    let Some(kr) = secret_service("secret_service_roundtrip") else {
        return;
    };
    let service = unique("ss");
    let account = "unlock-key/00112233445566778899aabbccddeeff";
    assert!(!kr.probe(&service, account).unwrap().entry_present);
    let value = SecretString::new("lango-unlock-v1:c2VjcmV0".into());
    kr.set(&service, account, "lango unlock key 0011", &value)
        .unwrap();
    assert!(kr.probe(&service, account).unwrap().entry_present);
    assert_eq!(
        kr.get(&service, account).unwrap().unwrap().expose(),
        value.expose()
    );

    // The independent client sees exactly the two attributes and the label.
    let o = Command::new("secret-tool")
        .args(["lookup", "service", &service, "username", account])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim_end(),
        value.expose()
    );
    let (_, listing) = secret_tool(&["search", "--all", "service", &service]);
    assert!(
        listing.contains("label = lango unlock key 0011"),
        "{listing}"
    );
    assert!(listing.contains("attribute.username = unlock-key/00112233445566778899aabbccddeeff"));

    // Replacing keeps one item.
    let v2 = SecretString::new("lango-unlock-v1:b3RoZXI=".into());
    kr.set(&service, account, "lango unlock key 0011", &v2)
        .unwrap();
    assert_eq!(
        kr.get(&service, account).unwrap().unwrap().expose(),
        v2.expose()
    );

    assert!(kr.delete(&service, account).unwrap());
    assert!(!kr.delete(&service, account).unwrap());
    assert!(kr.get(&service, account).unwrap().is_none());
    let (ok, _) = secret_tool(&["lookup", "service", &service, "username", account]);
    assert!(!ok, "the item is gone for the independent client too");
}

#[test]
fn t61_probe_writes_nothing() {
    let Some(kr) = secret_service("t61_probe_writes_nothing") else {
        return;
    };
    let service = unique("probe");
    for _ in 0..3 {
        assert!(!kr.probe(&service, "unlock-key/x").unwrap().entry_present);
    }
    let (_, listing) = secret_tool(&["search", "--all", "service", &service]);
    assert!(listing.trim().is_empty(), "probe created items: {listing}");
    let (_, probe_items) = secret_tool(&["search", "--all", "username", "__lango_probe__"]);
    assert!(probe_items.trim().is_empty());
}

#[test]
fn secret_service_reads_entries_made_by_other_tools() {
    let Some(kr) = secret_service("secret_service_reads_foreign_entries") else {
        return;
    };
    let service = unique("legacy");
    let mut child = Command::new("secret-tool")
        .args([
            "store",
            "--label=Password for 'master-passphrase' on 'lango'",
            "service",
            &service,
            "username",
            "master-passphrase",
        ])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"legacy passphrase")
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(
        kr.get(&service, "master-passphrase")
            .unwrap()
            .unwrap()
            .expose(),
        "legacy passphrase"
    );
    assert!(kr.delete(&service, "master-passphrase").unwrap());
}

#[test]
fn t62_keyutils_entry_found_by_keyctl() {
    if !component::require("t62_keyutils", "keyctl", component::program("keyctl")) {
        return;
    }
    let kr = open_backend(Backend::Keyutils).unwrap();
    let service = unique("ku");
    let account = "unlock-key/aabb";
    let desc = format!("{service}:{account}");
    if let Err(e) = kr.probe(&service, account) {
        component::require("t62_keyutils", "kernel keyring", Err(e.to_string()));
        return;
    }
    let value = SecretString::new("lango-unlock-v1:a2V5dXRpbHM=".into());
    kr.set(&service, account, "", &value).unwrap();
    let o = Command::new("keyctl")
        .args(["search", "@u", "user", &desc])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "keyctl search: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let id = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    let o = Command::new("keyctl")
        .args(["print", &id])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim_end(),
        value.expose()
    );
    // Nobody but the owner: group and other have no permissions at all.
    let o = Command::new("keyctl")
        .args(["rdescribe", &id])
        .output()
        .unwrap();
    let perm = String::from_utf8_lossy(&o.stdout)
        .split(';')
        .nth(3)
        .unwrap_or_default()
        .to_owned();
    let bits = u32::from_str_radix(perm.trim(), 16).unwrap();
    assert_eq!(bits & 0x0000_ffff, 0, "group/other permissions {perm}");
    assert_eq!(
        bits & 0x0020_0000,
        0,
        "the user cannot change the key's attributes"
    );

    assert_eq!(
        kr.get(&service, account).unwrap().unwrap().expose(),
        value.expose()
    );
    assert!(kr.probe(&service, account).unwrap().entry_present);
    assert!(kr.delete(&service, account).unwrap());
    assert!(kr.get(&service, account).unwrap().is_none());
    assert!(!kr.delete(&service, account).unwrap());
}
