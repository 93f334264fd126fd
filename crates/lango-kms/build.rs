//! Registers the backend feature names with `check-cfg`.
//!
//! The factory switches on `cfg(feature = "kms-aws")` and friends. Those features are declared
//! in `Cargo.toml` together with the backend modules they enable; until then this keeps the
//! `unexpected_cfgs` lint quiet without weakening it for any other name.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!(
        "cargo::rustc-check-cfg=cfg(feature, values(\"kms-aws\", \"kms-gcp\", \"kms-azure\", \"kms-pkcs11\", \"kms-all\"))"
    );
}
