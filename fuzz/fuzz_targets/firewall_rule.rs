//! Arbitrary strings through lango-p2p's firewall rule validator and tool-pattern matcher
//! (protocol spec T-K4).
//!
//! Input: NUL-separated fields `peerDid`, `action`, comma-separated `tools`, `rateLimit`
//! (decimal), the peer asking and the tool asked for.
//!
//! Invariants (each a panic): no panic; `validate_rule` accepts exactly the rules
//! `rule_problems` finds nothing wrong with; every pattern matches itself and `"*"` matches
//! everything; a rule round-trips through JSON; a firewall built from a valid rule answers the
//! ACL exactly as the rule's own matchers say, and its runtime add/remove/list agree.
#![no_main]

use lango_fuzz::firewall::{
    Action, Firewall, FirewallConfig, Rule, rule_problems, tool_matches, validate_rule,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut f = data.split(|b| *b == 0).map(String::from_utf8_lossy);
    let peer_did = f.next().unwrap_or_default().into_owned();
    let action = f.next().unwrap_or_default().into_owned();
    let tools_field = f.next();
    let rate = f
        .next()
        .and_then(|r| r.trim().parse::<i64>().ok())
        .unwrap_or(0);
    let asker = f.next().unwrap_or_default().into_owned();
    let tool = f.next().unwrap_or_default().into_owned();

    let tools = tools_field.map(|t| t.split(',').map(str::to_owned).collect::<Vec<_>>());
    for p in tools.iter().flatten() {
        assert!(tool_matches(p, p), "{p:?} does not match itself");
        let _ = tool_matches(p, &tool);
        let _ = tool_matches(&tool, p);
    }
    assert!(tool_matches("*", &tool));

    let rule = Rule {
        peer_did,
        action,
        tools,
        rate_limit: rate,
    };
    let valid = validate_rule(&rule).is_ok();
    assert_eq!(valid, rule_problems(&rule).is_empty());
    for p in rule_problems(&rule) {
        let _ = (p.field(), p.to_string());
    }

    let json = serde_json::to_string(&rule).expect("rules serialise");
    let back: Rule = serde_json::from_str(&json).expect("serialised rules parse");
    assert_eq!(back, rule);

    let built = Firewall::new(FirewallConfig {
        rules: vec![rule.clone()],
        ..FirewallConfig::default()
    });
    assert_eq!(built.is_ok(), valid);
    let Ok(fw) = built else { return };

    let expected = rule.parsed_action() == Some(Action::Allow)
        && rule.matches_peer(&asker)
        && rule.matches_tool(&tool);
    assert_eq!(fw.acl(&asker, &tool).is_ok(), expected);
    assert_eq!(
        fw.allowed_tools(&asker, [tool.as_str()]).len(),
        usize::from(expected)
    );
    // Full bucket at creation: the first call is never rate limited.
    assert_eq!(fw.check(&asker, &tool).is_ok(), expected);
    let _ = fw.check_meta(&asker);
    let _ = fw.check_price_query(&asker, &tool);

    assert_eq!(fw.rules(), vec![rule.clone()]);
    assert!(fw.add_rule(rule.clone()).is_ok());
    assert_eq!(fw.remove_rules(&rule.peer_did), 2);
    assert!(fw.rules().is_empty());
});
