//! Firewall rule model, evaluation order, rate limits and reputation gate (protocol spec §3.4,
//! tests T-B1..T-B11). Every denial is compared with the exact peer-visible text of Appendix A.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{sync::Arc, time::Duration};

use lango_p2p::config::P2pConfig;
use lango_p2p::firewall::{
    Denial, DenialKind, Firewall, FirewallConfig, IDLE_EVICTION, ManualClock,
    PERMISSIVE_RULE_MESSAGE, ReputationCheck, Rule, RuleError, tool_matches, validate_rule,
};

const P: &str = "did:lango:02aaaa";
const Q: &str = "did:lango:02bbbb";

fn firewall(rules: Vec<Rule>) -> Firewall {
    Firewall::new(FirewallConfig {
        rules,
        ..FirewallConfig::default()
    })
    .unwrap()
}

fn clocked(config: FirewallConfig) -> (Firewall, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new());
    let fw = Firewall::with_clock(config, clock.clone()).unwrap();
    (fw, clock)
}

fn denied(r: Result<(), Denial>) -> String {
    r.expect_err("expected a denial").message().to_owned()
}

fn no_allow(peer: &str, tool: &str) -> String {
    format!("query denied: no matching allow rule for peer {peer}, tool {tool}")
}

fn deny_rule(peer: &str, tool: &str) -> String {
    format!("query denied by firewall rule for peer {peer}, tool {tool}")
}

/// A fixed reputation answer.
struct Fixed(Result<Option<f64>, &'static str>);

impl ReputationCheck for Fixed {
    type Error = &'static str;
    fn trust_score(&self, _peer_did: &str) -> Result<Option<f64>, &'static str> {
        self.0
    }
}

#[test]
fn t_b1_default_policy_is_deny_all() {
    let fw = firewall(Vec::new());
    let err = fw.check(P, "echo").unwrap_err();
    assert_eq!(err.message(), no_allow(P, "echo"));
    assert_eq!(err.kind(), DenialKind::NoAllowRule);
    assert_eq!(err.to_string(), no_allow(P, "echo"));
}

#[test]
fn t_b2_exact_allow_and_wildcards() {
    // Exact peer, exact tool.
    let fw = firewall(vec![Rule::allow(P, ["echo"])]);
    fw.check(P, "echo").unwrap();
    assert_eq!(denied(fw.check(P, "exec")), no_allow(P, "exec"));
    assert_eq!(denied(fw.check(Q, "echo")), no_allow(Q, "echo"));

    // "*" peer with a specific tool.
    let fw = firewall(vec![Rule::allow("*", ["echo"])]);
    fw.check(P, "echo").unwrap();
    fw.check(Q, "echo").unwrap();
    assert_eq!(denied(fw.check(Q, "exec")), no_allow(Q, "exec"));

    // A specific peer with "*".
    let fw = firewall(vec![Rule::allow(P, ["*"])]);
    fw.check(P, "anything").unwrap();
    assert_eq!(denied(fw.check(Q, "anything")), no_allow(Q, "anything"));

    // An empty tool list (unset or []) means all tools.
    let fw = firewall(vec![Rule::allow(P, Vec::<String>::new())]);
    fw.check(P, "a").unwrap();
    fw.check(P, "b").unwrap();
    let mut rule = Rule::allow(Q, Vec::<String>::new());
    rule.tools = Some(Vec::new());
    let fw = firewall(vec![rule]);
    fw.check(Q, "c").unwrap();

    // Peer matching is exact and case-sensitive.
    let fw = firewall(vec![Rule::allow(P, ["echo"])]);
    let upper = P.to_uppercase();
    assert_eq!(denied(fw.check(&upper, "echo")), no_allow(&upper, "echo"));
}

#[test]
fn t_b3_prefix_patterns() {
    for tool in ["search", "search_web", "search_local"] {
        assert!(tool_matches("search*", tool), "{tool}");
    }
    assert!(!tool_matches("search*", "web_search"));
    assert!(!tool_matches("search*", "Search_web"), "case-sensitive");
    assert!(!tool_matches("search", "Search"), "case-sensitive");
    // A star that is not trailing is literal.
    assert!(!tool_matches("*search", "web_search"));
    assert!(tool_matches("*search", "*search"));
    assert!(tool_matches("*", "anything"));

    let fw = firewall(vec![Rule::allow(P, ["search*"])]);
    fw.check(P, "search").unwrap();
    fw.check(P, "search_web").unwrap();
    fw.check(P, "search_local").unwrap();
    assert_eq!(denied(fw.check(P, "web_search")), no_allow(P, "web_search"));
    assert_eq!(denied(fw.check(P, "SEARCH")), no_allow(P, "SEARCH"));
}

#[test]
fn t_b4_deny_overrides_allow_in_either_order() {
    for rules in [
        vec![Rule::allow(P, ["*"]), Rule::deny(P, ["exec"])],
        vec![Rule::deny(P, ["exec"]), Rule::allow(P, ["*"])],
        vec![
            Rule::allow("*", ["exec"]),
            Rule::deny(P, Vec::<String>::new()),
        ],
    ] {
        let fw = firewall(rules.clone());
        let err = fw.check(P, "exec").unwrap_err();
        assert_eq!(err.message(), deny_rule(P, "exec"), "{rules:?}");
        assert_eq!(err.kind(), DenialKind::DenyRule);
    }
    let fw = firewall(vec![Rule::deny(P, ["exec"]), Rule::allow(P, ["*"])]);
    fw.check(P, "echo").unwrap();
}

#[test]
fn t_b5_validate_rule_table() {
    let permissive = [
        Rule::allow("*", Vec::<String>::new()),
        Rule::allow("*", ["*"]),
        Rule::allow("*", ["echo", "*"]),
        Rule {
            tools: Some(Vec::new()),
            ..Rule::allow("*", Vec::<String>::new())
        },
    ];
    for rule in &permissive {
        let err = validate_rule(rule).unwrap_err();
        assert_eq!(err, RuleError::OverlyPermissive, "{rule:?}");
        assert_eq!(err.to_string(), PERMISSIVE_RULE_MESSAGE);
        assert_eq!(
            err.to_string(),
            "overly permissive rule: allow all peers with all tools is prohibited"
        );
    }
    for rule in [
        Rule::deny("*", Vec::<String>::new()),
        Rule::deny("*", ["*"]),
        Rule::allow(P, ["*"]),
        Rule::allow("*", ["echo"]),
        Rule::allow(P, ["search*"]).with_rate_limit(10),
    ] {
        validate_rule(&rule).unwrap_or_else(|e| panic!("{rule:?}: {e}"));
    }

    // Rust additions.
    for action in ["Allow", "permit", "", "DENY", "allow "] {
        let rule = Rule {
            action: action.into(),
            ..Rule::allow(P, ["echo"])
        };
        let err = validate_rule(&rule).unwrap_err();
        assert_eq!(err, RuleError::InvalidAction(action.into()));
        assert_eq!(
            err.to_string(),
            format!("invalid action {action:?}: must be exactly \"allow\" or \"deny\"")
        );
    }
    assert_eq!(
        validate_rule(&Rule::allow("", ["echo"])).unwrap_err(),
        RuleError::EmptyPeerDid
    );
    let err = validate_rule(&Rule::allow(P, ["echo"]).with_rate_limit(-1)).unwrap_err();
    assert_eq!(err, RuleError::NegativeRateLimit(-1));
    assert_eq!(err.to_string(), "rateLimit must not be negative, got -1");
    assert_eq!(
        validate_rule(&Rule::allow(P, ["echo", ""])).unwrap_err(),
        RuleError::EmptyToolPattern
    );
    for pattern in ["a*b*", "*a", "a*b", "**"] {
        let err = validate_rule(&Rule::allow(P, [pattern])).unwrap_err();
        assert_eq!(
            err,
            RuleError::InvalidToolPattern(pattern.into()),
            "{pattern}"
        );
    }
    // The permissive message wins over other problems of the same rule.
    let rule = Rule::allow("*", ["*", ""]).with_rate_limit(-5);
    assert_eq!(
        validate_rule(&rule).unwrap_err(),
        RuleError::OverlyPermissive
    );
}

#[test]
fn t_b6_permissive_rule_in_config_fails_at_load() {
    let config: P2pConfig = serde_json::from_str(&format!(
        r#"{{"firewallRules": [
            {{"peerDid": "{}", "action": "allow", "tools": ["echo"], "rateLimit": 5}},
            {{"peerDid": "*", "action": "allow", "tools": ["*"], "rateLimit": 0}}
        ]}}"#,
        real_did(1).to_uppercase()
    ))
    .unwrap();
    let problems = config.validate("p2p").unwrap_err();
    assert_eq!(
        problems,
        vec![
            "p2p.firewallRules[1]: overly permissive rule: allow all peers with all tools is prohibited"
                .to_owned()
        ]
    );
    // Building the firewall from the same keys refuses it too.
    let err = Firewall::new(config.firewall_config()).unwrap_err();
    assert_eq!(err.index, 1);
    assert_eq!(err.error.to_string(), PERMISSIVE_RULE_MESSAGE);
    let crate_err: lango_p2p::Error = err.into();
    assert_eq!(
        crate_err.to_string(),
        "configuration p2p.firewallRules[1]: overly permissive rule: allow all peers with all tools is prohibited"
    );

    // The other Rust rejections, each with its key path.
    let config: P2pConfig = serde_json::from_str(
        r#"{"firewallRules": [
            {"peerDid": "", "action": "permit", "tools": ["a*b*", ""], "rateLimit": -1}
        ]}"#,
    )
    .unwrap();
    let problems = config.validate("p2p").unwrap_err();
    assert_eq!(
        problems,
        vec![
            "p2p.firewallRules[0].peerDid: peerDid must not be empty (use \"*\" for every peer)",
            "p2p.firewallRules[0].action: invalid action \"permit\": must be exactly \"allow\" or \"deny\"",
            "p2p.firewallRules[0].tools: invalid tool pattern \"a*b*\": \"*\" may appear only once, as the last character",
            "p2p.firewallRules[0].tools: tool patterns must not be empty",
            "p2p.firewallRules[0].rateLimit: rateLimit must not be negative, got -1",
        ]
    );

    // A peerDid that is not a DID of a valid key (issue 17).
    let config: P2pConfig = serde_json::from_str(
        r#"{"firewallRules": [
            {"peerDid": "did:lango:02aaaa", "action": "allow", "tools": ["echo"]},
            {"peerDid": "DID:LANGO:zz", "action": "deny"}
        ]}"#,
    )
    .unwrap();
    let problems = config.validate("p2p").unwrap_err();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].starts_with("p2p.firewallRules[0].peerDid: invalid DID \"did:lango:02aaaa\""),
        "{problems:?}"
    );
    assert!(
        problems[1].starts_with("p2p.firewallRules[1].peerDid: invalid DID \"DID:LANGO:zz\""),
        "{problems:?}"
    );

    // Unknown rule fields are refused by the parser.
    assert!(
        serde_json::from_str::<P2pConfig>(
            r#"{"firewallRules": [{"peerDid": "*", "action": "deny", "tool": ["x"]}]}"#
        )
        .is_err()
    );

    // Defaults of the new keys.
    let d = P2pConfig::default();
    assert!(d.firewall_rules.is_empty());
    assert_eq!(d.meta_rate_limit, 60);
    assert_eq!(d.global_rate_limit, 0);
    d.validate("p2p").unwrap();
}

#[test]
fn rule_json_names_and_null_tools() {
    let rule = Rule::deny(P, Vec::<String>::new()).with_rate_limit(3);
    assert_eq!(
        serde_json::to_value(&rule).unwrap(),
        serde_json::json!({"peerDid": P, "action": "deny", "tools": null, "rateLimit": 3})
    );
    let rule = Rule::allow(P, ["echo", "search*"]);
    assert_eq!(
        serde_json::to_string(&rule).unwrap(),
        format!(r#"{{"peerDid":"{P}","action":"allow","tools":["echo","search*"],"rateLimit":0}}"#)
    );
    let back: Rule = serde_json::from_value(serde_json::to_value(&rule).unwrap()).unwrap();
    assert_eq!(back, rule);
}

#[test]
fn t_b7_token_bucket_refills_continuously() {
    let (fw, clock) = clocked(FirewallConfig {
        rules: vec![Rule::allow(P, ["echo"]).with_rate_limit(3)],
        ..FirewallConfig::default()
    });
    for _ in 0..3 {
        fw.check(P, "echo").unwrap();
    }
    let err = fw.check(P, "echo").unwrap_err();
    assert_eq!(err.message(), format!("rate limit exceeded for peer {P}"));
    assert_eq!(err.kind(), DenialKind::PeerRateLimit);

    // 3 per minute: one token after 20 s, not before.
    clock.advance(Duration::from_secs(19));
    assert_eq!(
        denied(fw.check(P, "echo")),
        format!("rate limit exceeded for peer {P}")
    );
    clock.advance(Duration::from_secs(1));
    fw.check(P, "echo").unwrap();
    assert_eq!(
        denied(fw.check(P, "echo")),
        format!("rate limit exceeded for peer {P}")
    );

    // The limiter covers every tool of the peer, denied calls included: a call refused by
    // the ACL still takes a token.
    clock.advance(Duration::from_secs(60));
    assert_eq!(denied(fw.check(P, "exec")), no_allow(P, "exec"));
    fw.check(P, "echo").unwrap();
    fw.check(P, "echo").unwrap();
    assert_eq!(
        denied(fw.check(P, "echo")),
        format!("rate limit exceeded for peer {P}")
    );
    // Never more than the capacity, however long the wait.
    clock.advance(Duration::from_secs(3600));
    for _ in 0..3 {
        fw.check(P, "echo").unwrap();
    }
    assert!(fw.check(P, "echo").is_err());
    // Other peers are not limited by P's rule.
    let fw2 = firewall(vec![
        Rule::allow(P, ["echo"]).with_rate_limit(1),
        Rule::allow(Q, ["echo"]),
    ]);
    fw2.check(P, "echo").unwrap();
    assert!(fw2.check(P, "echo").is_err());
    for _ in 0..10 {
        fw2.check(Q, "echo").unwrap();
    }
}

#[test]
fn t_b7_deny_rules_create_limiters_too() {
    let (fw, _clock) = clocked(FirewallConfig {
        rules: vec![
            Rule::deny(P, ["exec"]).with_rate_limit(2),
            Rule::allow(P, ["echo"]),
        ],
        ..FirewallConfig::default()
    });
    fw.check(P, "echo").unwrap();
    assert_eq!(denied(fw.check(P, "exec")), deny_rule(P, "exec"));
    assert_eq!(
        denied(fw.check(P, "echo")),
        format!("rate limit exceeded for peer {P}")
    );
}

#[test]
fn t_b8_wildcard_limit_is_per_peer_and_global_limit_is_shared() {
    let (fw, clock) = clocked(FirewallConfig {
        rules: vec![Rule::allow("*", ["echo"]).with_rate_limit(2)],
        ..FirewallConfig::default()
    });
    fw.check(P, "echo").unwrap();
    fw.check(P, "echo").unwrap();
    assert_eq!(
        denied(fw.check(P, "echo")),
        format!("rate limit exceeded for peer {P}")
    );
    // P's burst does not deny Q.
    fw.check(Q, "echo").unwrap();
    fw.check(Q, "echo").unwrap();
    assert_eq!(
        denied(fw.check(Q, "echo")),
        format!("rate limit exceeded for peer {Q}")
    );
    assert_eq!(fw.tracked_peers().0, 2);
    // Idle buckets are evicted after 10 minutes.
    clock.advance(IDLE_EVICTION + Duration::from_secs(1));
    fw.check("did:lango:02cccc", "echo").unwrap();
    assert_eq!(fw.tracked_peers().0, 1);

    // The optional global bucket is shared by every peer.
    let (fw, clock) = clocked(FirewallConfig {
        rules: vec![Rule::allow("*", ["echo"])],
        global_rate_limit: 3,
        ..FirewallConfig::default()
    });
    fw.check(P, "echo").unwrap();
    fw.check(Q, "echo").unwrap();
    fw.check(P, "echo").unwrap();
    let err = fw.check(Q, "echo").unwrap_err();
    assert_eq!(err.message(), "global rate limit exceeded");
    assert_eq!(err.kind(), DenialKind::GlobalRateLimit);
    clock.advance(Duration::from_secs(20));
    fw.check(Q, "echo").unwrap();
    assert_eq!(denied(fw.check(P, "echo")), "global rate limit exceeded");
}

#[test]
fn t_b8_per_peer_step_comes_before_wildcard_and_tokens_are_not_refunded() {
    let (fw, _clock) = clocked(FirewallConfig {
        rules: vec![
            Rule::allow(P, ["echo"]).with_rate_limit(5),
            Rule::allow("*", ["echo"]).with_rate_limit(1),
        ],
        global_rate_limit: 100,
        ..FirewallConfig::default()
    });
    fw.check(P, "echo").unwrap();
    // The exact-DID bucket had a token, the wildcard bucket of P has none.
    assert_eq!(
        denied(fw.check(P, "echo")),
        format!("rate limit exceeded for peer {P}")
    );
    // Three more calls: the exact bucket (5) runs dry after its fifth token although the
    // wildcard step refused each call.
    fw.check(P, "echo").unwrap_err();
    fw.check(P, "echo").unwrap_err();
    fw.check(P, "echo").unwrap_err();
    assert_eq!(
        denied(fw.check(P, "echo")),
        format!("rate limit exceeded for peer {P}")
    );
}

#[test]
fn t_b9_replace_remove_and_list() {
    let (fw, _clock) = clocked(FirewallConfig {
        rules: vec![
            Rule::allow(P, ["echo"]).with_rate_limit(1),
            Rule::allow(Q, ["echo"]),
        ],
        ..FirewallConfig::default()
    });
    fw.check(P, "echo").unwrap();
    assert!(fw.check(P, "echo").is_err());
    // A later rule for the same DID replaces the limiter: full again, with its own capacity.
    fw.add_rule(Rule::deny(P, ["exec"]).with_rate_limit(2))
        .unwrap();
    fw.check(P, "echo").unwrap();
    fw.check(P, "echo").unwrap();
    assert_eq!(
        denied(fw.check(P, "echo")),
        format!("rate limit exceeded for peer {P}")
    );

    // Runtime rules are validated and apply to the next check.
    assert_eq!(
        fw.add_rule(Rule::allow("*", ["*"])).unwrap_err(),
        RuleError::OverlyPermissive
    );
    assert_eq!(denied(fw.check(Q, "search")), no_allow(Q, "search"));
    fw.add_rule(Rule::allow(Q, ["search*"])).unwrap();
    fw.check(Q, "search_web").unwrap();

    // Listing is a copy.
    let mut listed = fw.rules();
    assert_eq!(listed.len(), 4);
    listed.clear();
    listed.push(Rule::allow("*", ["exec"]));
    assert_eq!(fw.rules().len(), 4);
    assert_eq!(denied(fw.check(Q, "exec")), no_allow(Q, "exec"));

    // Removing returns the count and drops the rules and the limiter.
    assert_eq!(fw.remove_rules(P), 2);
    assert_eq!(fw.remove_rules(P), 0);
    assert_eq!(fw.rules().len(), 2);
    assert_eq!(denied(fw.check(P, "echo")), no_allow(P, "echo"));
    fw.add_rule(Rule::allow(P, ["echo"])).unwrap();
    for _ in 0..5 {
        fw.check(P, "echo").unwrap();
    }

    // "*" removes only the wildcard rules, and the wildcard limiter.
    fw.add_rule(Rule::allow("*", ["echo"]).with_rate_limit(1))
        .unwrap();
    fw.check(Q, "echo").unwrap();
    assert!(fw.check(Q, "echo").is_err());
    assert_eq!(fw.remove_rules("*"), 1);
    for _ in 0..5 {
        fw.check(Q, "echo").unwrap(); // Q's own allow rule, no limiter left
        fw.check(P, "echo").unwrap();
    }
    assert_eq!(fw.tracked_peers().0, 0);
}

#[test]
fn t_b10_reputation_gate() {
    let rules = vec![Rule::allow(P, ["echo"])];
    let build = |answer| {
        Firewall::new(FirewallConfig {
            rules: rules.clone(),
            min_trust_score: 0.3,
            ..FirewallConfig::default()
        })
        .unwrap()
        .with_reputation(Fixed(answer))
    };
    // No record: a new peer is allowed.
    build(Ok(None)).check(P, "echo").unwrap();
    // A record with score 0 is refused (Rust).
    let err = build(Ok(Some(0.0))).check(P, "echo").unwrap_err();
    assert_eq!(
        err.message(),
        format!("peer {P} reputation 0.00 below minimum 0.30")
    );
    assert_eq!(err.kind(), DenialKind::Reputation);
    assert_eq!(
        denied(build(Ok(Some(0.29))).check(P, "echo")),
        format!("peer {P} reputation 0.29 below minimum 0.30")
    );
    // Equal to the threshold: allowed.
    build(Ok(Some(0.3))).check(P, "echo").unwrap();
    build(Ok(Some(0.9))).check(P, "echo").unwrap();
    // Not a number: refused.
    assert!(build(Ok(Some(f64::NAN))).check(P, "echo").is_err());
    // Checker error: refused.
    let err = build(Err("database is locked"))
        .check(P, "echo")
        .unwrap_err();
    assert_eq!(err.message(), "reputation check failed");
    assert_eq!(err.kind(), DenialKind::ReputationCheckFailed);

    // The gate comes before the ACL: a trusted peer still needs an allow rule, and an
    // untrusted one gets the reputation text even where a deny rule would match.
    assert_eq!(
        denied(build(Ok(Some(0.9))).check(P, "exec")),
        no_allow(P, "exec")
    );
    assert_eq!(
        denied(build(Ok(Some(0.1))).check(P, "exec")),
        format!("peer {P} reputation 0.10 below minimum 0.30")
    );

    // A lookup made beforehand (async callers) through check_with.
    let fw = firewall(rules.clone());
    let prefetched: Result<Option<f64>, String> = Ok(Some(0.29));
    assert_eq!(
        denied(fw.check_with(P, "echo", &prefetched)),
        format!("peer {P} reputation 0.29 below minimum 0.30")
    );
    let failed: Result<Option<f64>, String> = Err("boom".into());
    assert_eq!(
        denied(fw.check_with(P, "echo", &failed)),
        "reputation check failed"
    );
    let fresh: Result<Option<f64>, String> = Ok(None);
    fw.check_with(P, "echo", &fresh).unwrap();

    // A threshold ≤ 0 means 0.3.
    let fw = Firewall::new(FirewallConfig {
        rules,
        min_trust_score: 0.0,
        ..FirewallConfig::default()
    })
    .unwrap();
    assert_eq!(fw.min_trust_score(), 0.3);
}

#[test]
fn t_b11_meta_rate_limit() {
    let (fw, clock) = clocked(FirewallConfig {
        rules: vec![Rule::allow(P, ["echo"]).with_rate_limit(100)],
        meta_rate_limit: 3,
        ..FirewallConfig::default()
    });
    // agent_card, capability_query and price_query draw from one bucket per peer.
    fw.check_meta(P).unwrap(); // agent_card
    fw.check_meta(P).unwrap(); // capability_query
    fw.check_price_query(P, "echo").unwrap(); // price_query
    assert_eq!(
        denied(fw.check_meta(P)),
        format!("rate limit exceeded for peer {P}")
    );
    assert_eq!(
        denied(fw.check_price_query(P, "echo")),
        format!("rate limit exceeded for peer {P}")
    );
    // Separate from tool calls, and per peer.
    fw.check(P, "echo").unwrap();
    fw.check_meta(Q).unwrap();
    clock.advance(Duration::from_secs(20));
    fw.check_meta(P).unwrap();
    assert!(fw.check_meta(P).is_err());

    // price_query applies the ACL for the tool.
    clock.advance(Duration::from_secs(60));
    assert_eq!(denied(fw.check_price_query(P, "exec")), no_allow(P, "exec"));
    // The default is 60 per minute; 0 turns it off.
    let fw = firewall(Vec::new());
    for _ in 0..60 {
        fw.check_meta(P).unwrap();
    }
    assert!(fw.check_meta(P).is_err());
    let fw = Firewall::new(FirewallConfig {
        meta_rate_limit: 0,
        ..FirewallConfig::default()
    })
    .unwrap();
    for _ in 0..500 {
        fw.check_meta(P).unwrap();
    }
}

#[test]
fn capability_filter_uses_the_acl_without_tokens() {
    let fw = firewall(vec![
        Rule::allow(P, ["search*", "echo"]).with_rate_limit(1),
        Rule::deny(P, ["search_local"]),
    ]);
    let tools = ["echo", "exec", "search_web", "search_local", "fs_read"];
    for _ in 0..5 {
        assert_eq!(fw.allowed_tools(P, tools), vec!["echo", "search_web"]);
    }
    assert!(fw.allowed_tools(Q, tools).is_empty());
    // No token was taken by the filter.
    fw.check(P, "echo").unwrap();
    assert!(fw.check(P, "echo").is_err());
}

#[test]
fn firewall_is_shared_across_threads() {
    let fw = Arc::new(firewall(vec![
        Rule::allow("*", ["echo"]).with_rate_limit(50),
    ]));
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let fw = fw.clone();
            std::thread::spawn(move || {
                let peer = format!("did:lango:02{i:04}");
                (0..100).filter(|_| fw.check(&peer, "echo").is_ok()).count()
            })
        })
        .collect();
    for h in handles {
        // Each peer has its own bucket of 50 (refill over the test's few milliseconds is
        // at most a fraction of a token per ms).
        let ok = h.join().unwrap();
        assert!((50..=52).contains(&ok), "{ok}");
    }
}

/// ZK spec §3.14.3 / W-9: attestation work is limited per peer, refills over the minute,
/// does not draw from the tool-call buckets, and 0 turns the limit off.
#[test]
fn attestation_work_is_rate_limited_per_peer() {
    let (fw, clock) = clocked(FirewallConfig {
        rules: vec![Rule::allow("*", ["echo"])],
        attest_rate_limit: 2,
        ..FirewallConfig::default()
    });
    fw.check_attest(P).unwrap();
    fw.check_attest(P).unwrap();
    let err = fw.check_attest(P).unwrap_err();
    assert_eq!(err.kind(), DenialKind::PeerRateLimit);
    assert_eq!(err.message(), format!("rate limit exceeded for peer {P}"));
    // Another peer has its own bucket, and tool calls are unaffected.
    fw.check_attest(Q).unwrap();
    fw.check(P, "echo").unwrap();
    // Two per minute: a token after 30 s, not before.
    clock.advance(Duration::from_secs(29));
    assert!(fw.check_attest(P).is_err());
    clock.advance(Duration::from_secs(2));
    fw.check_attest(P).unwrap();

    let (off, _clock) = clocked(FirewallConfig {
        attest_rate_limit: 0,
        ..FirewallConfig::default()
    });
    for _ in 0..1000 {
        off.check_attest(P).unwrap();
    }
    assert_eq!(
        P2pConfig::default().firewall_config().attest_rate_limit,
        lango_p2p::firewall::DEFAULT_ATTEST_RATE_LIMIT
    );
}

/// A SQLCipher-keyed node database in `dir`, with this crate's tables.
async fn keyed_db(dir: &std::path::Path) -> lango_store::Database {
    let key = lango_crypto::SecretKey32::generate().unwrap();
    let db = lango_store::Database::open(
        &dir.join("lango.db"),
        lango_store::Keying::RawKey {
            key: &key,
            page_size: lango_store::db::DEFAULT_PAGE_SIZE,
        },
        lango_store::OpenOptions {
            create: true,
            ..lango_store::OpenOptions::default()
        },
    )
    .await
    .unwrap();
    lango_p2p::migrate(&db).await.unwrap();
    db
}

/// Writes a row around [`RuleStore::add`]'s checks (as a damaged or hand-edited file would).
/// `rate` is bound as text: SQLite's integer affinity turns `"0"` into 0 and keeps `"fast"`.
async fn insert_raw_rule(
    db: &lango_store::Database,
    peer: &str,
    action: &str,
    tools: &str,
    rate: &str,
) {
    sqlx::query(
        "INSERT INTO firewall_rules (peer_did, action, tools, rate_limit, created_at) \
         VALUES (?1, ?2, ?3, ?4, '2026-01-01T00:00:00Z')",
    )
    .bind(peer)
    .bind(action)
    .bind(tools)
    .bind(rate)
    .execute(db.pool())
    .await
    .unwrap();
}

/// A stored allow row whose `tools` is not a JSON list (or whose rate limit is not a number)
/// gives the peer no tool: it used to load as "every tool" (issue 17).
#[tokio::test]
async fn corrupt_stored_allow_rule_grants_nothing() {
    use lango_p2p::rules::RuleStore;
    let (p, q) = (real_did(1), real_did(2));
    let (p, q) = (p.as_str(), q.as_str());
    let dir = tempfile::tempdir().unwrap();
    let db = keyed_db(dir.path()).await;
    insert_raw_rule(&db, p, "allow", "[\"echo\"", "0").await;
    insert_raw_rule(&db, p, "allow", "{\"echo\":1}", "0").await;
    insert_raw_rule(&db, q, "allow", "[\"echo\"]", "fast").await;
    let store = RuleStore::new(db.pool().clone());
    let loaded = store.load().await.unwrap();
    assert_eq!(loaded.damaged, 3, "{loaded:?}");
    assert!(loaded.rules.is_empty(), "{loaded:?}");
    let fw = firewall(loaded.rules);
    for tool in ["echo", "shell", "anything"] {
        assert_eq!(denied(fw.check(p, tool)), no_allow(p, tool));
        assert_eq!(denied(fw.check(q, tool)), no_allow(q, tool));
    }

    // A good row next to them still loads.
    store.add(&Rule::allow(q, ["echo"])).await.unwrap();
    let loaded = store.load().await.unwrap();
    assert_eq!(loaded.rules, vec![Rule::allow(q, ["echo"])]);
    assert_eq!(loaded.damaged, 3);
}

/// A stored deny row that cannot be read still denies, and for every tool of its peer.
#[tokio::test]
async fn corrupt_stored_deny_rule_denies_every_tool() {
    use lango_p2p::rules::RuleStore;
    let p = real_did(1);
    let p = p.as_str();
    let dir = tempfile::tempdir().unwrap();
    let db = keyed_db(dir.path()).await;
    let store = RuleStore::new(db.pool().clone());
    store
        .add(&Rule::allow(p, ["echo", "search"]))
        .await
        .unwrap();
    insert_raw_rule(&db, p, "deny", "[\"search\"", "x").await;
    let loaded = store.load().await.unwrap();
    assert_eq!(loaded.damaged, 1);
    let fw = firewall(loaded.rules);
    assert_eq!(denied(fw.check(p, "echo")), deny_rule(p, "echo"));
    assert_eq!(denied(fw.check(p, "search")), deny_rule(p, "search"));
}

/// The DID of the test wallet key `n` (a valid key, unlike `P` and `Q`).
fn real_did(n: u8) -> String {
    let mut b = [0u8; 32];
    b[31] = n;
    lango_crypto::wallet::WalletKey::from_bytes(&b)
        .unwrap()
        .did()
        .as_str()
        .to_owned()
}

/// A rule written with an upper-case (or uncompressed) spelling of a DID is stored and applied
/// under the canonical DID, so it matches the DID a peer authenticates with; an invalid DID is
/// refused with a clear error (issue 17).
#[tokio::test]
async fn rule_dids_are_canonicalised_and_invalid_ones_refused() {
    use lango_p2p::rules::{RuleStore, canonical_peer, canonical_rule};
    let did = real_did(1);
    let upper = did.to_uppercase();
    let mixed = format!("did:lango:{}", did["did:lango:".len()..].to_uppercase());
    assert_eq!(canonical_peer(&upper).unwrap(), did);
    assert_eq!(canonical_peer(&mixed).unwrap(), did);
    assert_eq!(canonical_peer("*").unwrap(), "*");
    let pk = lango_crypto::wallet::WalletKey::from_bytes(&{
        let mut b = [0u8; 32];
        b[31] = 1;
        b
    })
    .unwrap()
    .public_key();
    let long = format!("did:lango:{}", hex_upper(&pk.to_uncompressed()));
    assert_eq!(canonical_peer(&long).unwrap(), did);

    let dir = tempfile::tempdir().unwrap();
    let db = keyed_db(dir.path()).await;
    let store = RuleStore::new(db.pool().clone());
    let stored = store.add(&Rule::allow(&upper, ["echo"])).await.unwrap();
    assert_eq!(stored.peer_did, did);
    let loaded = store.load().await.unwrap();
    assert_eq!(loaded.rules, vec![Rule::allow(&did, ["echo"])]);
    fw_allows(&firewall(loaded.rules), &did);

    // A row written by an older node with a non-canonical spelling is read canonically.
    insert_raw_rule(&db, &mixed, "deny", "[\"echo\"]", "0").await;
    let loaded = store.load().await.unwrap();
    assert_eq!(loaded.damaged, 0);
    assert_eq!(
        denied(firewall(loaded.rules).check(&did, "echo")),
        deny_rule(&did, "echo")
    );

    // Config rules too.
    let config = P2pConfig {
        firewall_rules: vec![Rule::allow(&mixed, ["search"])],
        ..P2pConfig::default()
    };
    let fw = Firewall::new(config.firewall_config()).unwrap();
    fw.check(&did, "search").unwrap();

    // Removal in any spelling.
    assert_eq!(store.remove(&upper).await.unwrap(), 2);

    for bad in [
        "did:lango:02aaaa",
        "did:key:z6Mk",
        "did:lango:v2:abcd",
        "DID:LANGO:zz",
        "",
    ] {
        let err = canonical_rule(&Rule::allow(bad, ["echo"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("DID") || err.contains("did"), "{bad:?}: {err}");
        assert!(
            store.add(&Rule::allow(bad, ["echo"])).await.is_err(),
            "{bad:?}"
        );
    }
    assert!(store.load().await.unwrap().rules.is_empty());
}

fn fw_allows(fw: &Firewall, did: &str) {
    fw.check(did, "echo").unwrap();
    assert_eq!(denied(fw.check(did, "shell")), no_allow(did, "shell"));
}

fn hex_upper(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}
