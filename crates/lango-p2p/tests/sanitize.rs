//! Response sanitizer and owner shield (protocol spec §3.5, §3.6, tests T-C1..T-C10).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use lango_p2p::config::P2pConfig;
use lango_p2p::sanitize::{
    DEPTH_LIMIT, KnownSecrets, MAX_DEPTH, OWNER_REDACTED, OwnerProtectionConfig, OwnerShield,
    PATH_REDACTED, ResponseFilter, SECRET_REDACTED, Sanitizer, compact, contains_mnemonic,
    is_conversation_key, is_sensitive_key, normalize, redact_paths,
};
use serde_json::{Value, json};

const R: &str = OWNER_REDACTED;

fn owner() -> OwnerProtectionConfig {
    OwnerProtectionConfig {
        owner_name: "Alice Kim".into(),
        owner_email: "alice@example.com".into(),
        owner_phone: "010-1234-5678".into(),
        extra_terms: vec!["".into(), "Project Falcon".into(), "   ".into()],
        block_conversations: None,
    }
}

fn filter() -> ResponseFilter {
    ResponseFilter::from_config(&owner())
}

/// The filtered value alone.
fn run(v: Value) -> Value {
    filter().filter_value(v).value
}

/// Asserts that the single string `s` is replaced whole by the owner placeholder.
fn assert_owner_redacted(s: &str) {
    let out = filter().filter_value(json!({ "v": s }));
    assert_eq!(out.value, json!({ "v": R }), "{s:?} was not redacted");
    assert_eq!(out.report.owner, vec!["v".to_owned()]);
}

// --- T-C1 -------------------------------------------------------------------------------------

#[test]
fn t_c1_private_key_removed() {
    let out = filter().filter_value(json!({"private_key": "k", "result": "ok"}));
    assert_eq!(out.value, json!({"result": "ok"}));
    assert_eq!(out.report.sanitized, vec!["private_key".to_owned()]);
}

#[test]
fn t_c1_nested_token_removed_value_kept() {
    let out = filter().filter_value(json!({"outer": {"token": "t0k3n", "value": "kept"}}));
    assert_eq!(out.value, json!({"outer": {"value": "kept"}}));
    assert_eq!(out.report.sanitized, vec!["outer.token".to_owned()]);
}

#[test]
fn t_c1_reference_path_redacted() {
    assert_eq!(
        run(json!({"p": "/home/user/.lango/data/bolt.db"})),
        json!({"p": PATH_REDACTED})
    );
    assert_eq!(
        run(json!({"p": "opened /home/user/.lango/data/bolt.db for reading"})),
        json!({"p": "opened [path-redacted] for reading"})
    );
}

#[test]
fn t_c1_owner_name_email_phone_and_generic_email_redacted() {
    let out = filter().filter_value(json!({
        "name": "Meeting with Alice Kim",
        "email": "write to alice@example.com",
        "phone": "call 010-1234-5678",
        "other": "bob@other.org",
        "fine": "nothing to see",
    }));
    assert_eq!(
        out.value,
        json!({"name": R, "email": R, "phone": R, "other": R, "fine": "nothing to see"})
    );
    assert_eq!(out.report.owner, ["email", "name", "other", "phone"]);
    // Case does not matter.
    assert_owner_redacted("ALICE KIM");
}

#[test]
fn t_c1_conversation_keys_redacted_unless_blocking_is_off() {
    let v = json!({
        "conversation": [{"role": "user", "text": "hi"}],
        "message_history": "...",
        "chat_log": 3,
        "session_history": {"a": 1},
        "chat_history": null,
        "value": 1,
    });
    let out = filter().filter_value(v.clone());
    assert_eq!(
        out.value,
        json!({
            "conversation": R, "message_history": R, "chat_log": R,
            "session_history": R, "chat_history": R, "value": 1,
        })
    );
    let off = ResponseFilter::from_config(&OwnerProtectionConfig {
        block_conversations: Some(false),
        ..owner()
    });
    assert_eq!(off.filter_value(v.clone()).value, v);
}

#[test]
fn t_c1_nested_maps_and_lists_with_paths() {
    let out = filter().filter_value(json!({
        "outer": {"inner": "Alice Kim"},
        "list": ["alice@example.com", "fine", {"deep": "Project Falcon"}],
    }));
    assert_eq!(
        out.value,
        json!({"outer": {"inner": R}, "list": [R, "fine", {"deep": R}]})
    );
    assert_eq!(out.report.owner, ["list[0]", "list[2].deep", "outer.inner"]);
}

#[test]
fn t_c1_clean_map_unchanged() {
    let v = json!({
        "result": "42 results",
        "items": [1, 2.5, true, null, "text", {"url": "https://example.com/a/b/c"}],
        "max_tokens": 128,
    });
    let out = filter().filter_value(v.clone());
    assert_eq!(out.value, v);
    assert!(out.report.is_clean(), "{:?}", out.report);
}

#[test]
fn t_c1_empty_extra_terms_ignored() {
    // "" and "   " are in extraTerms: they must not match every string.
    let v = json!({"a": "hello", "b": "", "c": "   "});
    assert_eq!(run(v.clone()), v);
    assert_owner_redacted("about project falcon");
}

// --- T-C2 -------------------------------------------------------------------------------------

#[test]
fn t_c2_arrays_are_walked() {
    let out = filter().filter_value(json!([
        {"api_key": "k", "ok": 1},
        "log at /var/log/app.log",
        [[{"password": "p"}]],
    ]));
    assert_eq!(
        out.value,
        json!([{"ok": 1}, "log at [path-redacted]", [[{}]]])
    );
    assert_eq!(
        out.report.sanitized,
        ["[0].api_key", "[1]", "[2][0][0].password"]
    );
}

// --- T-C3 -------------------------------------------------------------------------------------

#[test]
fn t_c3_sensitive_keys() {
    for key in [
        "apiKey",
        "api_key",
        "Authorization",
        "passphrase",
        "mnemonic",
        "cookie",
        "sessionToken",
        "access_token",
        "refresh-token",
        "token",
        "tokens",
        "password",
        "client_secret",
        "privateKey",
        "db_path",
        "filePath",
        "internal_id",
        "_internal",
        "x-api-key",
        "Set-Cookie",
        "bearer",
        "jwt",
        "seed_phrase",
        "signingKey",
        "csrftoken",
        "idToken",
        "ＡＰＩ＿ＫＥＹ",
    ] {
        assert!(is_sensitive_key(key), "{key} kept");
    }
    for key in [
        "max_tokens",
        "tokens_used",
        "token_count",
        "completionTokens",
        "prompt_tokens",
        "total_tokens",
        "maxtokens",
        "tokenizer",
        "value",
        "path",
        "id",
        "internal",
        "result",
    ] {
        assert!(!is_sensitive_key(key), "{key} removed");
    }
    let out = run(json!({
        "apiKey": 1, "api_key": 2, "Authorization": 3, "passphrase": 4, "mnemonic": 5,
        "cookie": 6, "sessionToken": 7, "max_tokens": 8, "tokens_used": 9, "token_count": 10,
    }));
    assert_eq!(
        out,
        json!({"max_tokens": 8, "tokens_used": 9, "token_count": 10})
    );
}

// --- T-C4 -------------------------------------------------------------------------------------

#[test]
fn t_c4_paths() {
    for (input, expected) in [
        ("/etc/passwd", PATH_REDACTED),
        ("~/.lango/x", PATH_REDACTED),
        (r"C:\Users\a\b", PATH_REDACTED),
        (r"\\srv\share\f", PATH_REDACTED),
        (
            "read /etc/passwd, then stop",
            "read [path-redacted], then stop",
        ),
        ("/tmp/x", PATH_REDACTED),
        ("/a/b/c", PATH_REDACTED),
        ("file:///etc/passwd", "file://[path-redacted]"),
        (
            "see https://example.com/a/b/c and /root/.ssh/id_ed25519",
            "see https://example.com/a/b/c and [path-redacted]",
        ),
    ] {
        assert_eq!(redact_paths(input), expected, "{input}");
    }
    for unchanged in [
        "https://example.com/a/b/c",
        "http://host:8080/home/user/x?y=/etc/z",
        "and/or",
        "1/2",
        "/api",
        "ratio 3/4/5",
    ] {
        assert_eq!(redact_paths(unchanged), unchanged);
    }
    assert_eq!(
        run(json!({"u": "https://example.com/a/b/c", "p": "/etc/passwd"})),
        json!({"u": "https://example.com/a/b/c", "p": PATH_REDACTED})
    );
}

// --- T-C5 -------------------------------------------------------------------------------------

#[test]
fn t_c5_value_based_secrets() {
    let hex = "0123456789abcdef".repeat(4);
    let mnemonic = "abandon abandon abandon abandon abandon abandon abandon abandon abandon \
                    abandon abandon about";
    let pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----";
    let ec_pem = "key:\n-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----";
    for secret in [
        hex.clone(),
        format!("0x{hex}"),
        format!("wallet key is 0x{}", hex.to_uppercase()),
        pem.to_owned(),
        ec_pem.to_owned(),
        mnemonic.to_owned(),
        format!("seed: {}", mnemonic.to_uppercase().replace(' ', ", ")),
    ] {
        assert_eq!(
            run(json!({"v": secret})),
            json!({"v": SECRET_REDACTED}),
            "{secret}"
        );
    }
    // Near misses stay.
    let eleven = mnemonic.rsplit_once(' ').unwrap().0;
    for fine in [
        &hex[..63],
        "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----",
        eleven,
        "the quick brown fox jumps over the lazy dog and then sleeps all day long in the sun",
    ] {
        assert_eq!(run(json!({"v": fine})), json!({"v": fine}), "{fine}");
    }
    assert!(contains_mnemonic(mnemonic));
    assert!(!contains_mnemonic(eleven));
}

#[test]
fn t_c5_known_secret_values() {
    let token = "sess_9f8e7d6c5b4a";
    let known = KnownSecrets::new([token, "pin1", ""]);
    assert_eq!(known.len(), 2);
    assert_eq!(format!("{known:?}"), "KnownSecrets([redacted]; 2 values)");
    let filter = ResponseFilter::new(
        Sanitizer::with_known_secrets(known),
        OwnerShield::new(&OwnerProtectionConfig::default()),
    );
    let out = filter.filter_value(json!({
        "a": token,
        "b": format!("header: Bearer {token}"),
        "c": "pin1",
        "d": "spin1ng",
        token: "a key that is a token",
    }));
    assert_eq!(
        out.value,
        json!({"a": SECRET_REDACTED, "b": SECRET_REDACTED, "c": SECRET_REDACTED, "d": "spin1ng"})
    );
    assert_eq!(
        filter.filter_error(&format!("session {token} expired")),
        SECRET_REDACTED
    );
}

// --- T-C6: bypass corpus ------------------------------------------------------------------------

#[test]
fn t_c6_spaced_letters() {
    assert_owner_redacted("A l i c e  K i m");
    assert_owner_redacted("signed: A.l.i.c.e-K.i.m");
}

#[test]
fn t_c6_zero_width_characters() {
    assert_owner_redacted("Alice\u{200b}Kim");
    assert_owner_redacted("Al\u{200d}ice\u{feff} Kim");
    assert_owner_redacted("Ali\u{00ad}ce Kim"); // soft hyphen (Cf)
}

#[test]
fn t_c6_full_width_letters() {
    assert_owner_redacted("Ａｌｉｃｅ Ｋｉｍ");
    assert_owner_redacted("ａｌｉｃｅ＠ｅｘａｍｐｌｅ．ｃｏｍ");
}

#[test]
fn t_c6_split_name_is_a_known_limitation() {
    // Not adjacent once serialised: passes through (current behaviour, asserted on purpose).
    let v = json!({"first": "Alice", "last": "Kim"});
    let out = filter().filter_value(v.clone());
    assert_eq!(out.value, v);
    assert!(!out.report.result_replaced);
    // Adjacent once serialised: the final check replaces the whole result.
    let out = filter().filter_value(json!({"parts": ["Alice", "Kim"], "other": 1}));
    assert_eq!(out.value, json!({"error": R}));
    assert!(out.report.result_replaced);
}

#[test]
fn t_c6_key_named_after_owner() {
    let out = filter().filter_value(json!({
        "Alice Kim": {"age": 40},
        "alice kim": "x",
        "[owner-data-redacted]": "already there",
        "ok": 1,
    }));
    assert_eq!(
        out.value,
        json!({
            "[owner-data-redacted]": "already there",
            "[owner-data-redacted]_2": R,
            "[owner-data-redacted]_3": R,
            "ok": 1,
        })
    );
    // The log never carries the owner's name.
    assert!(
        out.report
            .owner
            .iter()
            .all(|p| !p.to_lowercase().contains("alice"))
    );
    assert_eq!(out.report.owner.len(), 2);
}

#[test]
fn t_c6_phone_as_json_number() {
    let out = filter().filter_value(json!({"n": 1012345678u64, "m": 1012345678.0, "k": 7}));
    assert_eq!(out.value, json!({"n": R, "m": R, "k": 7}));
}

#[test]
fn t_c6_international_phone_format() {
    assert_owner_redacted("+82 10 1234 5678");
    // Without the `+` only the digit-sequence rule applies.
    assert_owner_redacted("82 10 1234 5678");
    assert_owner_redacted("tel: ８２－１０－１２３４－５６７８");
    // Someone else's number in E.164 form: only the E.164 pattern applies.
    assert_owner_redacted("+44 20 7946 0958");
}

#[test]
fn t_c6_parenthesised_phone() {
    assert_owner_redacted("(010) 1234-5678");
    assert_owner_redacted("010/1234.5678");
}

#[test]
fn t_c6_camel_case_conversation_keys() {
    let v = json!({
        "chatHistory": ["a"], "messageHistory": "b", "messages": [1], "history": {},
        "Transcript": "t", "conversationId": 9, "message": "kept", "historical": "kept",
    });
    assert_eq!(
        run(v),
        json!({
            "chatHistory": R, "messageHistory": R, "messages": R, "history": R,
            "Transcript": R, "conversationId": R, "message": "kept", "historical": "kept",
        })
    );
    assert!(is_conversation_key("chat.log"));
    assert!(!is_conversation_key("message"));
}

#[test]
fn international_owner_phone_matches_national_format() {
    let f = ResponseFilter::from_config(&OwnerProtectionConfig {
        owner_phone: "+82 10-1234-5678".into(),
        ..OwnerProtectionConfig::default()
    });
    for s in ["010 1234 5678", "1012345678", "+82 10 1234 5678"] {
        assert_eq!(
            f.filter_value(json!({"v": s})).value,
            json!({"v": R}),
            "{s}"
        );
    }
    let f = ResponseFilter::from_config(&OwnerProtectionConfig {
        owner_phone: "+1 (555) 123-4567".into(),
        ..OwnerProtectionConfig::default()
    });
    assert_eq!(
        f.filter_value(json!({"v": "555.123.4567"})).value,
        json!({"v": R})
    );
}

// --- T-C7 -------------------------------------------------------------------------------------

#[test]
fn t_c7_no_over_redaction_of_identifiers() {
    let v = json!({
        "a": "order 20260225123",
        "b": "id 1234567890",
        "c": "5551234567",
        "d": 20260225123u64,
        "e": "(555) 123-4567",
    });
    assert_eq!(run(v.clone()), v);
}

// --- T-C8 -------------------------------------------------------------------------------------

#[test]
fn t_c8_shield_active_with_extra_terms_only() {
    let f = ResponseFilter::from_config(&OwnerProtectionConfig {
        extra_terms: vec!["Falcon".into()],
        block_conversations: Some(false),
        ..OwnerProtectionConfig::default()
    });
    assert_eq!(
        f.filter_value(json!({"a": "the FALCON project", "history": "h"}))
            .value,
        json!({"a": R, "history": "h"})
    );
}

#[test]
fn t_c8_shield_active_with_conversation_blocking_only() {
    for cfg in [
        OwnerProtectionConfig {
            block_conversations: Some(true),
            ..OwnerProtectionConfig::default()
        },
        OwnerProtectionConfig::default(),
    ] {
        let f = ResponseFilter::from_config(&cfg);
        assert!(f.shield().blocks_conversations());
        assert_eq!(
            f.filter_value(json!({"chat_history": ["x"], "a": "b"}))
                .value,
            json!({"chat_history": R, "a": "b"})
        );
    }
}

#[test]
fn owner_protection_config_keys() {
    let c: P2pConfig = serde_json::from_str(
        r#"{"ownerProtection": {"ownerName": "Alice Kim", "ownerEmail": "a@b.co",
            "ownerPhone": "010-1234-5678", "extraTerms": ["x"], "blockConversations": false}}"#,
    )
    .unwrap();
    assert_eq!(c.owner_protection.owner_name, "Alice Kim");
    assert_eq!(c.owner_protection.block_conversations, Some(false));
    assert!(!c.owner_protection.blocks_conversations());
    c.validate("p2p").unwrap();
    assert!(P2pConfig::default().owner_protection.blocks_conversations());
    assert!(
        serde_json::from_str::<P2pConfig>(r#"{"ownerProtection": {"ownerNmae": "x"}}"#).is_err()
    );
    let bad = P2pConfig {
        owner_protection: OwnerProtectionConfig {
            owner_phone: "123".into(),
            extra_terms: vec!["!!!".into()],
            ..OwnerProtectionConfig::default()
        },
        ..P2pConfig::default()
    };
    assert_eq!(
        bad.validate("p2p").unwrap_err(),
        vec![
            "p2p.ownerProtection.extraTerms[0]: \"!!!\" has no letters or digits, so it would match nothing",
            "p2p.ownerProtection.ownerPhone: needs at least 7 digits",
        ]
    );
}

// --- T-C9 -------------------------------------------------------------------------------------

#[test]
fn t_c9_error_strings_cards_and_quotes() {
    let f = filter();
    assert_eq!(
        f.filter_error("tool \"fs_read\": open /home/alice/notes.txt: permission denied"),
        "tool \"fs_read\": open [path-redacted]: permission denied"
    );
    assert_eq!(f.filter_error("failed for Alice Kim"), R);
    assert_eq!(f.filter_error(&"ab".repeat(32)), SECRET_REDACTED);
    assert_eq!(f.filter_error("rate limit exceeded"), "rate limit exceeded");

    let card = json!({
        "name": "lango", "description": "Alice Kim's assistant",
        "capabilities": ["search"], "did": "did:lango:02ab", "apiKey": "k",
        "config": {"dbPath": "/home/a/.lango/lango.db"},
    });
    assert_eq!(
        f.filter_value(card).value,
        json!({
            "name": "lango", "description": R, "capabilities": ["search"],
            "did": "did:lango:02ab", "config": {},
        })
    );
    let quote = json!({"toolName": "echo", "price": "0.01", "payTo": "alice@example.com"});
    assert_eq!(
        f.filter_value(quote).value,
        json!({"toolName": "echo", "price": "0.01", "payTo": R})
    );
}

// --- T-C10 ------------------------------------------------------------------------------------

/// `levels` objects nested in `{"a": …}`, built without the parser (whose limit is 128)
/// and without `json!` (which would serialise the inner value recursively).
fn nested(levels: usize) -> Value {
    let mut v = json!("Alice Kim at the bottom");
    for _ in 0..levels {
        let mut m = serde_json::Map::new();
        m.insert("a".to_owned(), v);
        v = Value::Object(m);
    }
    v
}

#[test]
fn t_c10_depth_limit() {
    for levels in [1000, 100_000] {
        let out = filter().filter_value(nested(levels));
        let mut cur = &out.value;
        for depth in 0..MAX_DEPTH {
            cur = cur
                .get("a")
                .unwrap_or_else(|| panic!("missing level {depth}"));
        }
        assert_eq!(cur, &json!(DEPTH_LIMIT));
        assert_eq!(out.report.depth_limited.len(), 1);
        assert_eq!(out.report.depth_limited[0], vec!["a"; MAX_DEPTH].join("."));
    }
    // Arrays too, and the sanitizer alone.
    let mut v = json!(1);
    for _ in 0..100_000 {
        v = Value::Array(vec![v]);
    }
    let mut report = Default::default();
    let out = Sanitizer::new().sanitize(v, &mut report);
    let mut cur = &out;
    for _ in 0..MAX_DEPTH {
        cur = &cur[0];
    }
    assert_eq!(cur, &json!(DEPTH_LIMIT));
    // Content within the limit is kept as is.
    let shallow = nested(MAX_DEPTH - 1);
    let out = ResponseFilter::from_config(&OwnerProtectionConfig::default())
        .filter_value(shallow.clone());
    assert_eq!(out.value, shallow);
}

// --- normalisation ----------------------------------------------------------------------------

#[test]
fn normal_form() {
    assert_eq!(normalize("  Ａｌｉｃｅ\u{200b}--Kim!!  "), "alice kim");
    assert_eq!(normalize("Alice\t\n  KIM"), "alice kim");
    assert_eq!(compact("A l i c e  K i m"), "alicekim");
    assert_eq!(normalize("ﬁle"), "file");
    assert_eq!(normalize(""), "");
}
